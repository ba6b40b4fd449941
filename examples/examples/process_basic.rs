//! Creating processes with the `Process` constructor, and telling the main process from
//! its children with `current_process()`.
//!
//! Mirrors the first script of §1.2 ("Create Process object") of the Python seed
//! `/work/shared/seeds/000_97308c8aaf6075b9.txt`: the main process prints its pid and
//! name, then starts three processes named `core business - {item}`, keeps them in a
//! list, and joins them; each child prints five counts with its own pid and name.
//!
//! To keep the example fast each child sleeps 0.2 s between counts instead of the
//! Python's 1 s.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release -p procvisor-examples --example process_basic
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
//! 【count = 1】Process ID : 4102 , Process Name : core business - 0 execute ....
//! ...
//! 【count = 4】Process ID : 4104 , Process Name : core business - 2 execute ....
//! ```

use std::time::Duration;

use procvisor::{Process, current_process};

/// Simulates the processing of core business functions: `count` rounds, `delay` seconds
/// apart, each printing this process's pid and name.
fn process_core((delay, count): (f64, u32)) {
    for num in 0..count {
        let me = current_process();
        println!(
            "【count = {num}】Process ID : {} , Process Name : {} execute .... ",
            me.pid, me.name
        );
        std::thread::sleep(Duration::from_secs_f64(delay));
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

    // Sub processes, kept in a list.
    let mut process_arr = Vec::new();
    for item in 0..3 {
        let mut p =
            Process::new(process_core, (0.2, 5)).with_name(format!("core business - {item}"));
        p.start()?;
        process_arr.push(p);
    }
    for p in &process_arr {
        p.join(None)?;
    }
    Ok(())
}
