//! Daemonic processes: a helper process that dies with the process that started it.
//!
//! Mirrors §1.4 ("Daemon") of the Python seed `/work/shared/seeds/000_97308c8aaf6075b9.txt`:
//! the main process starts a (non-daemonic) `Core Business Process`, which itself starts a
//! daemonic `daemon_process` that checks in a loop forever. The core process goes through
//! two stages and ends; procvisor then terminates its daemonic child, as Python does, so the
//! daemon's checks stop when the core process ends. The main process sleeps past all this,
//! prints its end line, and finally shows that `active_children()` is empty and that the
//! daemon is gone.
//!
//! Times are scaled down from the Python: stages 0.5 s apart (2 s), the main process sleeps
//! 2.5 s (10 s), and checks every 0.3 s (1 s). The Python's checks fall due at the very
//! moment its core process ends (every 1 s against 4 s), so one more check may or may not
//! slip out before the daemon is terminated; 0.3 s keeps every check well clear of the
//! core process's end (1.0 s), and the output the same from run to run.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release -p procvisor-examples --example daemon
//! ```
//!
//! Expected output (pids vary; the daemon's four checks interleave with the stages, and
//! none comes after the core process's `End`):
//!
//! ```text
//! 【Sub Process】Process ID : 4102 , Process Name : Core Business Process , Current Stage: 1 / 2
//! 【Daemon daemon_process】The 1-th check
//! 【Daemon daemon_process】The 2-th check
//! 【Sub Process】Process ID : 4102 , Process Name : Core Business Process , Current Stage: 2 / 2
//! 【Daemon daemon_process】The 3-th check
//! 【Daemon daemon_process】The 4-th check
//! 【Sub Process】Process ID : 4102 , Process Name : Core Business Process , End
//! 【Main Process】Process ID : 4100 , Process Name : MainProcess End
//! Core Business Process: exitcode 0
//! daemon_process (pid 4105) still running: false
//! active_children(): []
//! ```

use std::time::Duration;

use procvisor::{Process, active_children, current_process};

/// The core business. Starts the daemonic checker, which dies when this process ends;
/// returns the checker's pid so that the main process can show it is gone.
fn process_core(_: ()) -> i32 {
    let mut daemon_p = Process::new(process_check, ())
        .with_name("daemon_process")
        .with_daemon(true);
    daemon_p
        .start()
        .expect("the core process can start its daemon");
    let me = current_process();
    for item in 0..2 {
        println!(
            "【Sub Process】Process ID : {} , Process Name : {} , Current Stage: {} / 2",
            me.pid,
            me.name,
            item + 1
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    println!(
        "【Sub Process】Process ID : {} , Process Name : {} , End",
        me.pid, me.name
    );
    daemon_p
        .pid()
        .expect("the daemon is not closed")
        .expect("the daemon has started")
}

/// The daemon: checks forever, until the process that started it ends.
fn process_check(_: ()) {
    let name = current_process().name;
    let mut count = 1;
    loop {
        println!("【Daemon {name}】The {count}-th check");
        count += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Whether `pid` is a live (not zombie) process.
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn main() -> Result<(), procvisor::Error> {
    let mut p = Process::new(process_core, ()).with_name("Core Business Process");
    p.start()?;
    std::thread::sleep(Duration::from_millis(2500));
    let me = current_process();
    println!(
        "【Main Process】Process ID : {} , Process Name : {} End",
        me.pid, me.name
    );

    p.join(None)?;
    println!("{}: exitcode {}", p.name(), p.exitcode()?.unwrap_or(255));
    let daemon_pid = p.result()?;
    println!(
        "daemon_process (pid {daemon_pid}) still running: {}",
        running(daemon_pid)
    );
    let children = active_children();
    println!("active_children(): {children:?}");
    assert!(children.is_empty(), "no child should be left running");
    Ok(())
}
