//! The "subclass `Process` and override `run()`" style, in Rust: a serializable struct
//! carries the process's attributes and a small `Run` trait carries its logic.
//!
//! Mirrors the second script of §1.2 ("Create Process object") of the Python seed
//! `/work/shared/seeds/000_97308c8aaf6075b9.txt`, where `ExecCoreBusiness(Process)` keeps
//! `delay` and `count` as attributes and prints them from `run()`. Rust has no class
//! inheritance, so the struct is the process's argument: it is serialized to the child,
//! and the generic entry point `run_it::<ExecCoreBusiness>` (a `fn` item, hence
//! zero-sized, as `Process::new` requires) calls its `run()` there. The name goes on the
//! `Process` with `with_name`, as Python passes it to `Process.__init__`.
//!
//! To keep the example fast each child sleeps 0.2 s between counts instead of the
//! Python's 2 s.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release -p procvisor-examples --example process_subclass
//! ```
//!
//! Expected output (pids vary; the three children interleave in any order):
//!
//! ```text
//! 【Main】Process ID : 4100 , Process Name : MainProcess execute ....
//!
//! 【count = 0】Process ID : 4102 , Process Name : core business - 0 execute ....
//! 【count = 0】Process ID : 4103 , Process Name : core business - 1 execute ....
//! 【count = 0】Process ID : 4104 , Process Name : core business - 2 execute ....
//! ...
//! 【count = 4】Process ID : 4103 , Process Name : core business - 1 execute ....
//! ```

use std::time::Duration;

use procvisor::{Process, current_process};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// What Python's `Process.run()` is: the logic of a process whose state travels to the
/// child with it.
trait Run: Serialize + DeserializeOwned {
    /// The process's business logic, run in the child.
    fn run(&self);
}

/// The child's entry point for any [`Run`] type: a `fn` item once `T` is fixed.
fn run_it<T: Run>(t: T) {
    t.run()
}

/// The custom process: Python's `ExecCoreBusiness(Process)` and its attributes.
#[derive(Debug, Serialize, Deserialize)]
struct ExecCoreBusiness {
    /// Seconds between counts.
    delay: f64,
    /// How many counts.
    count: u32,
}

impl ExecCoreBusiness {
    /// Python's `ExecCoreBusiness(name=..., delay=..., count=...)`: a process, not yet
    /// started, that will run this object's `run()`.
    fn process(name: impl Into<String>, delay: f64, count: u32) -> Process {
        Process::new(
            run_it::<ExecCoreBusiness>,
            ExecCoreBusiness { delay, count },
        )
        .with_name(name)
    }
}

impl Run for ExecCoreBusiness {
    fn run(&self) {
        for num in 0..self.count {
            let me = current_process();
            println!(
                "【count = {num}】Process ID : {} , Process Name : {} execute .... ",
                me.pid, me.name
            );
            std::thread::sleep(Duration::from_secs_f64(self.delay));
        }
    }
}

fn main() -> Result<(), procvisor::Error> {
    // Main process.
    let me = current_process();
    println!(
        "【Main】Process ID : {} , Process Name : {} execute ....",
        me.pid, me.name
    );
    println!();

    // Sub processes, created from the custom process type.
    let mut process_arr = Vec::new();
    for item in 0..3 {
        let mut p = ExecCoreBusiness::process(format!("core business - {item}"), 0.2, 5);
        p.start()?;
        process_arr.push(p);
    }
    for p in &process_arr {
        p.join(None)?;
    }
    Ok(())
}
