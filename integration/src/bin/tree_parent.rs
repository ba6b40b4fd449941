//! A child test program: starts a supervision tree (a Rust worker, a command, a nested
//! supervisor with a command), prints every pid
//! on one line (`PIDS …`) once all are running, then blocks until killed. The supervision
//! test SIGKILLs it and checks that nothing the tree started survives it by more than 1 s.

use std::io::Write;
use std::time::Duration;

use procvisor::tree::{ChildSpec, Command, EventKind, Spec};
use procvisor_integration::sleep_forever;

fn main() {
    let spec = Spec::new("top")
        .child(ChildSpec::process("rust", sleep_forever, ()))
        .child(ChildSpec::command(
            "shell",
            Command::new("sh").args(["-c", "exec sleep 3600"]),
        ))
        .child(ChildSpec::supervisor(Spec::new("nested").child(
            ChildSpec::command("sleeper", Command::new("sleep").arg("3600")),
        )));
    let events = spec.events();
    let tree = spec.start().expect("start");
    let mut pids = Vec::new();
    while pids.len() < 3 {
        let e = events
            .next_timeout(Duration::from_secs(10))
            .expect("events");
        if let EventKind::Started { pid } = e.kind {
            if pid != 0 {
                pids.push(pid.to_string());
            }
        }
    }
    println!("PIDS {}", pids.join(" "));
    std::io::stdout().flush().expect("flush");
    // Keep the tree (dropping the handle would stop it) until the test kills us.
    let _tree = tree;
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
