//! A child test program for Python's rule at exit: a daemonic child is terminated and a
//! non-daemonic child is joined when the program returns from `main`.
//!
//! Usage: `exit_rules MARKER_PATH`. Prints `DAEMON pid` and `WORKER pid`, then returns at
//! once; the worker sleeps 300 ms and then creates MARKER_PATH.

use std::io::Write;
use std::time::Duration;

use procvisor::Process;

fn daemon_loop(_: ()) {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn slow_worker(marker: String) {
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(marker, b"done").expect("write marker");
}

fn main() {
    let marker = std::env::args()
        .nth(1)
        .expect("usage: exit_rules MARKER_PATH");
    let mut d = Process::new(daemon_loop, ()).with_daemon(true);
    d.start().expect("start daemon");
    let mut w = Process::new(slow_worker, marker);
    w.start().expect("start worker");
    println!("DAEMON {}", d.pid().expect("open").expect("started"));
    println!("WORKER {}", w.pid().expect("open").expect("started"));
    std::io::stdout().flush().expect("flush");
    // Dropping the handles does not stop the children: the exit rule does.
}
