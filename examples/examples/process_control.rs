//! Process control: `join`, `is_alive`, `terminate` and `kill`, and the `exitcode` each
//! leaves behind.
//!
//! Mirrors §1.3 ("Process Control") of the Python seed
//! `/work/shared/seeds/000_97308c8aaf6075b9.txt`, in four scenarios:
//!
//! 1. `join()`: the child runs to the end before the main process goes on (exitcode 0).
//! 2. The main process sleeps longer than the child, so `is_alive()` is false and nothing
//!    is terminated (exitcode 0).
//! 3. The main process sleeps less than the child, so `is_alive()` is true and the child
//!    is stopped with `terminate()` (SIGTERM) before it prints (exitcode -15).
//! 4. As 3, but with `kill()` (SIGKILL) (exitcode -9).
//!
//! After each scenario the child is joined and its exitcode printed: the values Python's
//! `Process.exitcode` would show. The sleeps are scaled down from the Python's 1 s / 2 s to
//! 0.3 s / 0.6 s, keeping which side sleeps longer. (The Python labels its fourth scenario
//! "Main Process 3" again, a copy-paste slip; here it is numbered 4.)
//!
//! Run it with:
//!
//! ```text
//! cargo run --release -p procvisor-examples --example process_control
//! ```
//!
//! Expected output (pids vary):
//!
//! ```text
//! 【Main Process 1】Process ID : 4100 , Process Name : MainProcess start ....
//!
//! 【Sub Process 1】Process ID : 4102 , Process Name : core business execute ....
//!
//! 【Main Process 1】Process ID : 4100 , Process Name : MainProcess End ....
//! exitcode of core business: 0
//! ######################################################################
//! 【Main Process 2】Process ID : 4100 , Process Name : MainProcess start ....
//!
//! 【Sub Process 2】Process ID : 4103 , Process Name : core business execute ....
//!
//! 【Main Process 2】Process ID : 4100 , Process Name : MainProcess End ....
//! exitcode of core business: 0
//! ######################################################################
//! 【Main Process 3】Process ID : 4100 , Process Name : MainProcess start ....
//! After 0.3 second(s) , core business is still alive. but now core business Process will Terminate.
//!
//! 【Main Process 3】Process ID : 4100 , Process Name : MainProcess End ....
//! exitcode of core business: -15
//! ######################################################################
//! 【Main Process 4】Process ID : 4100 , Process Name : MainProcess start ....
//! After 0.3 second(s) , core business is still alive. but now core business Process will Terminate.
//!
//! 【Main Process 4】Process ID : 4100 , Process Name : MainProcess End ....
//! exitcode of core business: -9
//! ```

use std::time::Duration;

use procvisor::{Process, current_process};

/// Sleeps `delay` seconds, then prints this process's pid and name.
fn process_core((id, delay): (u32, f64)) {
    std::thread::sleep(Duration::from_secs_f64(delay));
    let me = current_process();
    println!(
        "【Sub Process {id}】Process ID : {} , Process Name : {} execute .... ",
        me.pid, me.name
    );
}

/// How a scenario stops a child that is still alive.
#[derive(Clone, Copy)]
enum Stop {
    Terminate,
    Kill,
}

fn banner(n: u32, what: &str) {
    let me = current_process();
    println!(
        "【Main Process {n}】Process ID : {} , Process Name : {} {what} ....",
        me.pid, me.name
    );
}

fn report_exitcode(p: &Process) -> Result<(), procvisor::Error> {
    p.join(None)?;
    let code = p.exitcode()?.expect("the child has been joined");
    println!("exitcode of {}: {code}", p.name());
    Ok(())
}

/// Scenarios 2 to 4: the main process sleeps `sleep_second`, the child `p_sleep_second`;
/// if the child is still alive after the main process's sleep, it is stopped with `stop`.
fn race(
    n: u32,
    sleep_second: f64,
    p_sleep_second: f64,
    stop: Stop,
) -> Result<(), procvisor::Error> {
    banner(n, "start");
    println!();
    let mut p2 = Process::new(process_core, (n, p_sleep_second)).with_name("core business");
    p2.start()?;
    std::thread::sleep(Duration::from_secs_f64(sleep_second));
    if p2.is_alive()? {
        match stop {
            Stop::Terminate => p2.terminate()?,
            Stop::Kill => p2.kill()?,
        }
        println!(
            "After {sleep_second} second(s) , {} is still alive. but now {} Process will Terminate.",
            p2.name(),
            p2.name()
        );
    }
    println!();
    banner(n, "End");
    report_exitcode(&p2)
}

fn main() -> Result<(), procvisor::Error> {
    // 1: join() makes the main process wait for the child, so "Sub Process" prints first.
    banner(1, "start");
    println!();
    let mut p = Process::new(process_core, (1, 0.3)).with_name("core business");
    p.start()?;
    p.join(None)?;
    println!();
    banner(1, "End");
    report_exitcode(&p)?;

    println!("######################################################################");
    // 2: the child has finished before the is_alive check, so it is not terminated.
    race(2, 0.6, 0.3, Stop::Terminate)?;

    println!("######################################################################");
    // 3: the child is still running at the check: terminate() (SIGTERM).
    race(3, 0.3, 0.6, Stop::Terminate)?;

    println!("######################################################################");
    // 4: the child is still running at the check: kill() (SIGKILL).
    race(4, 0.3, 0.6, Stop::Kill)?;
    Ok(())
}
