//! An actix actor that sends typed requests to two worker processes and prints the replies.
//!
//! Shows `procvisor::mailbox`: each worker process runs a handler loop (`mailbox::serve`)
//! on its end of a mailbox; the parent attaches the other end to the process's Worker actor
//! (`Process::attach_mailbox`), and an application actor (`Dispatcher`) sends `Call`s to
//! the two Worker addresses and awaits the typed replies. The mailboxes are bounded
//! (capacity 4 here): a full one makes `send` wait.
//!
//! There is no Python original: CPython has no actors. The closest is a pair of
//! `multiprocessing.Pipe`s with a loop in each child, which is what runs underneath.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release -p procvisor-examples --example actor_messaging
//! ```
//!
//! Expected output (pids vary):
//!
//! ```text
//! worker upper (pid 4101) and worker count (pid 4102) are serving
//! upper("hello") = "HELLO" from worker 4101
//! count("hello") = 5 from worker 4102
//! upper("procvisor") = "PROCVISOR" from worker 4101
//! count("procvisor") = 9 from worker 4102
//! upper("actors") = "ACTORS" from worker 4101
//! count("actors") = 6 from worker 4102
//! worker upper served 3 requests and exited with 0
//! worker count served 3 requests and exited with 0
//! ```

use actix::prelude::*;
use procvisor::mailbox::{self, Call};
use procvisor::worker::Worker;
use procvisor::{Connection, Process};

/// Worker process: upper-cases words, replying with its pid.
fn upper_worker(conn: Connection) -> u64 {
    let pid = std::process::id();
    mailbox::serve(conn, |word: String| (word.to_uppercase(), pid)).expect("serve")
}

/// Worker process: counts characters, replying with its pid.
fn count_worker(conn: Connection) -> u64 {
    let pid = std::process::id();
    mailbox::serve(conn, |word: String| (word.chars().count(), pid)).expect("serve")
}

/// The application actor: holds the two workers' addresses.
struct Dispatcher {
    upper: Addr<Worker>,
    count: Addr<Worker>,
}

impl Actor for Dispatcher {
    type Context = Context<Self>;
}

/// Ask both workers about one word.
struct Word(String);

impl Message for Word {
    type Result = ();
}

impl Handler<Word> for Dispatcher {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, Word(word): Word, _: &mut Context<Self>) -> Self::Result {
        let (upper, count) = (self.upper.clone(), self.count.clone());
        Box::pin(async move {
            let (up, up_pid) = upper
                .send(Call::<String, (String, u32)>::new(word.clone()))
                .await
                .expect("the worker actor is running")
                .expect("the upper worker answers");
            println!("upper({word:?}) = {up:?} from worker {up_pid}");
            let (n, n_pid) = count
                .send(Call::<String, (usize, u32)>::new(word.clone()))
                .await
                .expect("the worker actor is running")
                .expect("the count worker answers");
            println!("count({word:?}) = {n} from worker {n_pid}");
        })
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (upper_end, upper_child) = mailbox::channel::<String, (String, u32)>()?;
    let (count_end, count_child) = mailbox::channel::<String, (usize, u32)>()?;
    let mut upper = Process::new(upper_worker, upper_child).with_name("upper");
    let mut count = Process::new(count_worker, count_child).with_name("count");
    upper.start()?;
    count.start()?;
    upper.attach_mailbox(upper_end, 4)?;
    count.attach_mailbox(count_end, 4)?;
    println!(
        "worker upper (pid {}) and worker count (pid {}) are serving",
        upper.pid()?.unwrap_or(0),
        count.pid()?.unwrap_or(0)
    );

    let (upper_addr, count_addr) = (upper.worker(), count.worker());
    actix::System::new().block_on(async move {
        let dispatcher = Dispatcher {
            upper: upper_addr.expect("started"),
            count: count_addr.expect("started"),
        }
        .start();
        for word in ["hello", "procvisor", "actors"] {
            dispatcher
                .send(Word(word.to_owned()))
                .await
                .expect("the dispatcher is running");
        }
    });
    // Detached, each mailbox closes: its worker sees the end of its stream, returns how
    // many requests it served, and exits.
    upper.detach_mailbox::<String, (String, u32)>()?;
    count.detach_mailbox::<String, (usize, u32)>()?;
    for p in [&upper, &count] {
        p.join(None)?;
        println!(
            "worker {} served {} requests and exited with {}",
            p.name(),
            p.result()?,
            p.exitcode()?.unwrap_or(-1)
        );
    }
    Ok(())
}
