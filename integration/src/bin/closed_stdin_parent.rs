//! A child test program that closes its standard input and output, so that the sockets it
//! makes for its children take the lowest free numbers, 0 and 1. It first starts one child
//! with each start method (so that procvisor's own long-lived descriptors exist by then),
//! closes descriptors 0 and 1, then starts a child with each method again, whose target
//! prints to its standard output before it returns, and prints on standard error what each
//! returned (`spawn 42`). A socket numbered 0 or 1 must still reach the child, and must not
//! be its standard output: what the target prints would land in the protocol.

use procvisor::{Process, StartMethod};
use procvisor_integration::START_METHODS;

fn answer(x: u32) -> u32 {
    println!("a line on standard output, which must not reach the parent's socket");
    x * 2
}

fn run(m: StartMethod) -> String {
    let mut p = Process::new(answer, 21).with_start_method(m);
    p.start().expect("start");
    p.join(None).expect("join");
    match p.result() {
        Ok(v) => format!("{m} {v}"),
        Err(e) => format!("{m} failed: {e}; exit code {:?}", p.exitcode()),
    }
}

fn main() {
    for m in START_METHODS {
        run(m);
    }
    nix::unistd::close(0).expect("close standard input");
    nix::unistd::close(1).expect("close standard output");
    for m in START_METHODS {
        eprintln!("{}", run(m));
    }
}
