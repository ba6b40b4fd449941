//! A short tour of procvisor (a few seconds): start methods, results, panics, signals,
//! timeouts, and use from an actix application.
//!
//! Not a port of one Python script but of the seed's main job as a whole
//! (`/work/shared/seeds/000_97308c8aaf6075b9.txt`, §1: `Process`, `start`, `join`,
//! `terminate`, `exitcode`), in four sections:
//!
//! 1. The three start methods (`forkserver`, `spawn`, `fork`), each running a small
//!    computation in a child that reports its pid and start method with the result.
//! 2. A panicking child: `result()` is an error carrying the panic message and location,
//!    and the exitcode is 1. (The child's own panic message also appears on stderr.)
//! 3. `join` with a timeout returning while the child is still alive, then `terminate()`
//!    on the sleeping child: exitcode -15.
//! 4. Inside an actix `System`: `join_async().await`, and the root supervisor actor
//!    queried with `ListChildren`.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release -p procvisor-examples --example tour
//! ```
//!
//! Expected output (pids and timings vary):
//!
//! ```text
//! == 1. Three start methods ==
//! main process: MainProcess (pid 4100)
//! forkserver: primes below 200000 = 17984, computed by primes-forkserver (pid 4103, started by forkserver), exitcode 0
//! spawn: primes below 200000 = 17984, computed by primes-spawn (pid 4104, started by spawn), exitcode 0
//! fork: primes below 200000 = 17984, computed by primes-fork (pid 4105, started by fork), exitcode 0
//!
//! == 2. A panicking child ==
//! thread '<unnamed>' (4106) panicked at examples/examples/tour.rs:79:9:   <- child's stderr
//! the answer is not 41                      <- (a backtrace follows if RUST_BACKTRACE is set)
//! result(): error: the target panicked: the answer is not 41 at examples/examples/tour.rs:79:9
//!   message:  the answer is not 41
//!   location: examples/examples/tour.rs:79:9
//!   exitcode: 1
//!
//! == 3. join with a timeout, then terminate() ==
//! join(timeout=0.2s) returned after 0.20s: is_alive = true, exitcode = None
//! after terminate() and join(): is_alive = false, exitcode = Some(-15) (killed by SIGTERM)
//!
//! == 4. Inside an actix System ==
//! actix-square joined without blocking: exit code 0, result 144
//! the root supervisor lists 1 running child(ren):
//!   worker WorkerId(6): actix-sleeper (pid 4108, daemon false)
//! actix-sleeper joined without blocking: exit code 0
//!
//! tour done in 0.70s; active_children() = []
//! ```

use std::time::{Duration, Instant};

use procvisor::{ListChildren, Process, StartMethod, current_process};

/// What a child reports: who computed what.
type Report = (String, i32, Option<String>, u64);

/// Counts the primes below `n`, and says which process did it and how it was started.
fn count_primes(n: u64) -> Report {
    let mut sieve = vec![true; n as usize];
    let mut count = 0;
    for i in 2..n as usize {
        if sieve[i] {
            count += 1;
            for j in (i * i..n as usize).step_by(i) {
                sieve[j] = false;
            }
        }
    }
    let me = current_process();
    (me.name, me.pid, me.start_method, count)
}

/// A target that fails.
fn deep_thought(answer: u32) -> u32 {
    if answer != 42 {
        panic!("the answer is not {answer}");
    }
    answer
}

/// A target that sleeps for `secs` seconds.
fn sleepy(secs: f64) {
    std::thread::sleep(Duration::from_secs_f64(secs));
}

fn square(x: u64) -> u64 {
    x * x
}

fn section(title: &str) {
    println!();
    println!("== {title} ==");
}

fn start_methods() -> Result<(), procvisor::Error> {
    let me = current_process();
    println!("main process: {} (pid {})", me.name, me.pid);
    let mut children = Vec::new();
    for method in [
        StartMethod::ForkServer,
        StartMethod::Spawn,
        StartMethod::Fork,
    ] {
        let mut p = Process::new(count_primes, 200_000)
            .with_start_method(method)
            .with_name(format!("primes-{method}"));
        p.start()?;
        children.push(p);
    }
    for p in &children {
        p.join(None)?;
        let (name, pid, how, count) = p.result()?;
        println!(
            "{}: primes below 200000 = {count}, computed by {name} (pid {pid}, started by {}), exitcode {}",
            p.start_method(),
            how.as_deref().unwrap_or("?"),
            p.exitcode()?.unwrap_or(255)
        );
    }
    Ok(())
}

fn panicking_child() -> Result<(), procvisor::Error> {
    let mut p = Process::new(deep_thought, 41).with_name("deep-thought");
    p.start()?;
    p.join(None)?;
    match p.result() {
        Ok(v) => println!("unexpected result: {v}"),
        Err(e) => {
            println!("result(): error: {e}");
            if let Some(remote) = e.remote() {
                println!("  message:  {}", remote.message);
                if let Some(loc) = &remote.location {
                    println!("  location: {loc}");
                }
            }
        }
    }
    println!("  exitcode: {}", p.exitcode()?.unwrap_or(255));
    Ok(())
}

fn timeout_and_terminate() -> Result<(), procvisor::Error> {
    let mut p = Process::new(sleepy, 30.0).with_name("sleeper");
    p.start()?;
    let t = Instant::now();
    p.join(Some(Duration::from_millis(200)))?;
    println!(
        "join(timeout=0.2s) returned after {:.2}s: is_alive = {}, exitcode = {:?}",
        t.elapsed().as_secs_f64(),
        p.is_alive()?,
        p.exitcode()?
    );
    p.terminate()?;
    p.join(None)?;
    let status = p.exit_status()?.expect("joined");
    println!(
        "after terminate() and join(): is_alive = {}, exitcode = {:?} ({status})",
        p.is_alive()?,
        p.exitcode()?
    );
    Ok(())
}

fn inside_actix() -> Result<(), Box<dyn std::error::Error>> {
    actix::System::new().block_on(async {
        let mut sleeper = Process::new(sleepy, 0.4).with_name("actix-sleeper");
        sleeper.start()?;
        let mut sq = Process::new(square, 12).with_name("actix-square");
        sq.start()?;

        let status = sq.join_async()?.await;
        println!(
            "{} joined without blocking: {status}, result {}",
            sq.name(),
            sq.result()?
        );

        let children = procvisor::supervisor().send(ListChildren).await?;
        println!(
            "the root supervisor lists {} running child(ren):",
            children.len()
        );
        for c in &children {
            println!(
                "  worker {:?}: {} (pid {}, daemon {})",
                c.id, c.name, c.pid, c.daemon
            );
        }

        let status = sleeper.join_async()?.await;
        println!("{} joined without blocking: {status}", sleeper.name());
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let t = Instant::now();
    section("1. Three start methods");
    start_methods()?;
    section("2. A panicking child");
    panicking_child()?;
    section("3. join with a timeout, then terminate()");
    timeout_and_terminate()?;
    section("4. Inside an actix System");
    inside_actix()?;
    println!();
    println!(
        "tour done in {:.2}s; active_children() = {:?}",
        t.elapsed().as_secs_f64(),
        procvisor::active_children()
    );
    Ok(())
}
