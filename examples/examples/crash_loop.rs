//! A child that always crashes: each restart waits longer (exponential backoff), and after
//! more than 5 restarts in 10 s (the default intensity) the supervisor stops trying and
//! says why.
//!
//! ```text
//! cargo run -p procvisor-examples --example crash_loop
//! ```
//!
//! Prints (each delay is 50 ms × 2^(attempt − 1), moved by up to ±10 % of jitter):
//!
//! ```text
//! flaky started
//! flaky exited: exit code 1 [failed start]
//! flaky restarting in 52 ms (attempt 1)
//! …
//! flaky restarting in 786 ms (attempt 5)
//! flaky exited: exit code 1 [failed start]
//! gave up: more than 5 restarts in 10s; "flaky" last ended: exit code 1
//! outcome: GaveUp(…)
//! ```

use std::time::Duration;

use procvisor::restart::Backoff;
use procvisor::tree::{ChildSpec, EventKind, Outcome, Spec};

/// Fails at once, every time.
fn flaky(_: ()) {
    eprintln!("flaky: cannot reach the database");
    std::process::exit(1);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let backoff = Backoff {
        initial: Duration::from_millis(50),
        ..Backoff::default()
    };
    let spec = Spec::new("app").child(ChildSpec::process("flaky", flaky, ()).backoff(backoff));
    let events = spec.events();
    let tree = spec.start()?;
    for e in &mut events.into_iter() {
        match e.kind {
            EventKind::Started { .. } => println!("flaky started"),
            EventKind::Exited {
                exit, failed_start, ..
            } => {
                let tag = if failed_start { " [failed start]" } else { "" };
                println!("flaky exited: {exit}{tag}");
            }
            EventKind::Restarting { attempt, delay } => {
                println!(
                    "flaky restarting in {} ms (attempt {attempt})",
                    delay.as_millis()
                );
            }
            EventKind::GaveUp { reason } => println!("gave up: {reason}"),
            _ => {}
        }
    }
    let outcome = tree
        .wait(Some(Duration::from_secs(30)))
        .ok_or("no outcome")?;
    println!("outcome: {outcome:?}");
    assert!(matches!(outcome, Outcome::GaveUp(_)));
    Ok(())
}
