//! A supervision tree under each OTP strategy: three workers `a`, `b`, `c` started in
//! order; `b` crashes once (exit code 3) shortly after it starts, and the event stream shows
//! what each strategy does about it:
//!
//! - one_for_one restarts `b` alone;
//! - one_for_all stops `c` then `a` (last-started first) and starts `a`, `b`, `c` again;
//! - rest_for_one stops `c` and starts `b`, `c` again.
//!
//! Then the tree is stopped: `c`, `b`, `a`, each with SIGTERM. Pids vary from run to run.
//!
//! ```text
//! cargo run -p procvisor-examples --example supervisor_tree
//! ```

use std::path::PathBuf;
use std::time::Duration;

use procvisor::restart::{Backoff, Strategy};
use procvisor::tree::{ChildSpec, Event, EventKind, Spec};

/// A long-running worker; with `crash_once`, the first run (the marker file does not exist
/// yet) exits with code 3 after 50 ms.
fn worker((crash_once, marker): (bool, PathBuf)) {
    if crash_once && std::fs::File::create_new(&marker).is_ok() {
        std::thread::sleep(Duration::from_millis(50));
        std::process::exit(3);
    }
    std::thread::sleep(Duration::from_secs(3600));
}

fn show(e: &Event) {
    let who = e.child.as_deref().unwrap_or("(supervisor)");
    let what = match &e.kind {
        EventKind::Started { .. } => "started".to_owned(),
        EventKind::Exited { exit, .. } => format!("exited: {exit}"),
        EventKind::Restarting { attempt, .. } => format!("restarting (attempt {attempt})"),
        EventKind::Stopped => "stopped".to_owned(),
        other => format!("{other:?}"),
    };
    println!("  {:<12} {who:<3} {what}", e.supervisor);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("supervisor_tree-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for (label, strategy) in [
        ("one_for_one", Strategy::OneForOne),
        ("one_for_all", Strategy::OneForAll),
        ("rest_for_one", Strategy::RestForOne),
    ] {
        println!("{label}:");
        let marker = dir.join(label);
        let child = |name: &str, crash: bool| {
            ChildSpec::process(name, worker, (crash, marker.clone())).backoff(Backoff::none())
        };
        let spec = Spec::new(label)
            .strategy(strategy)
            .child(child("a", false))
            .child(child("b", true))
            .child(child("c", false));
        let events = spec.events();
        let tree = spec.start()?;
        // Until the crash has been handled: `b` started again and every child running.
        let mut restarted = 0;
        let expected = match strategy {
            Strategy::OneForOne => 1,
            Strategy::OneForAll => 3,
            Strategy::RestForOne => 2,
        };
        let mut crashed = false;
        while restarted < expected {
            let e = events
                .next_timeout(Duration::from_secs(10))
                .ok_or("no event within 10 s")?;
            show(&e);
            match e.kind {
                EventKind::Exited { exit, .. } if !exit.requested => crashed = true,
                EventKind::Started { .. } if crashed => restarted += 1,
                _ => {}
            }
        }
        let running = tree.children()?;
        println!(
            "  restarts: {}",
            running
                .iter()
                .map(|c| format!("{}={}", c.name, c.restarts))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let outcome = tree.stop();
        for e in events {
            show(&e);
        }
        println!("  outcome: {outcome:?}");
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
