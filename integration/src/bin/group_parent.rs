//! A child test program: supervises one command that leaves a process behind in its own
//! process group (`sh -c 'sleep 300 & echo $! > FILE; exec sleep 301'`), waits for the
//! left-behind grandchild's pid to appear in FILE, prints `PIDS <command> <grandchild>`,
//! then blocks until killed. The supervision test SIGKILLs it and checks that the
//! grandchild — which the parent-death signal of the command does not reach — is gone
//! within 1 s too.

use std::io::Write;
use std::time::Duration;

use procvisor::tree::{ChildSpec, Command, EventKind, Spec};

fn main() {
    let dir = std::env::temp_dir().join(format!("procvisor-group-parent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let file = dir.join("grandchild.pid");
    let script = format!("sleep 300 & echo $! > '{}'; exec sleep 301", file.display());
    let spec = Spec::new("top").child(ChildSpec::command(
        "leaver",
        Command::new("sh").args(["-c", &script]),
    ));
    let events = spec.events();
    let tree = spec.start().expect("start");
    let started = events
        .wait_for(
            Duration::from_secs(10),
            |e| matches!(e.kind, EventKind::Started { pid } if pid != 0),
        )
        .expect("the command starts");
    let EventKind::Started { pid } = started.kind else {
        unreachable!("matched above")
    };
    let mut grandchild = None;
    let found = procvisor_integration::wait_until(Duration::from_secs(10), || {
        grandchild = std::fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        grandchild.is_some()
    });
    assert!(found, "the shell wrote its background pid");
    let _ = std::fs::remove_dir_all(&dir);
    println!("PIDS {pid} {}", grandchild.expect("found"));
    std::io::stdout().flush().expect("flush");
    // Keep the tree (dropping the handle would stop it) until the test kills us.
    let _tree = tree;
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
