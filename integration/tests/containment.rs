use std::process::Command;
use std::time::{Duration, Instant};

use procvisor::{Process, StartMethod};
use procvisor_integration::{children_of, pid_present, process_exists, wait_until};

use crate::lifecycle::METHODS;

fn quick(_: ()) {}

#[test]
fn finished_children_are_reaped_without_join() {
    for m in METHODS {
        let mut p = Process::new(quick, ()).with_start_method(m);
        p.start().unwrap();
        let pid = p.pid().unwrap().unwrap();
        // Nobody joins: the Worker actor (or the forkserver) must collect the exit, so the
        // pid disappears entirely — not even a zombie is left.
        assert!(
            wait_until(Duration::from_secs(10), || !pid_present(pid)),
            "{m}: pid {pid} still present as {:?}",
            procvisor_integration::process_state(pid)
        );
        assert_eq!(p.exitcode().unwrap(), Some(0));
    }
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

#[test]
fn a_child_whose_join_timed_out_is_still_reaped_without_another_join() {
    for m in METHODS {
        let mut p = Process::new(sleep_ms, 1000).with_start_method(m);
        p.start().unwrap();
        let pid = p.pid().unwrap().unwrap();
        // The join takes the child's descriptors from the doorbell while it waits, and must
        // give them back when it returns with the child still running.
        p.join(Some(Duration::from_millis(20))).unwrap();
        assert_eq!(p.exitcode().unwrap(), None, "{m}: still running");
        assert!(
            wait_until(Duration::from_secs(10), || !pid_present(pid)),
            "{m}: pid {pid} still present as {:?}",
            procvisor_integration::process_state(pid)
        );
        assert_eq!(p.exitcode().unwrap(), Some(0), "{m}");
    }
}

/// Every descendant of `pid`, depth first.
fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for c in children_of(pid) {
        out.push(c);
        out.extend(descendants(c));
    }
    out
}

#[test]
fn sigkill_of_the_parent_leaves_no_child_alive_after_one_second() {
    let (mut parent, pids) =
        procvisor_integration::spawn_reporting_pids(env!("CARGO_BIN_EXE_orphan_parent"));
    assert_eq!(pids.len(), 3);
    // The forkserver and every worker, whatever their depth.
    let all = descendants(parent.id() as i32);
    for pid in &pids {
        assert!(all.contains(pid), "{pid} is not a descendant: {all:?}");
        assert!(process_exists(*pid));
    }
    assert!(all.len() >= 4, "the forkserver is missing from {all:?}");

    let t = Instant::now();
    parent.kill().unwrap();
    parent.wait().unwrap();
    let gone = wait_until(Duration::from_secs(1), || {
        all.iter().all(|p| !process_exists(*p))
    });
    let survivors: Vec<_> = all.iter().filter(|p| process_exists(**p)).collect();
    assert!(gone, "survivors after {:?}: {survivors:?}", t.elapsed());
}

#[test]
fn at_exit_daemons_are_terminated_and_other_children_joined() {
    let dir = std::env::temp_dir().join(format!("procvisor-exit-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("marker");
    let _ = std::fs::remove_file(&marker);
    let out = Command::new(env!("CARGO_BIN_EXE_exit_rules"))
        .arg(&marker)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit_rules failed: {out:?}");
    let pid_of = |tag: &str| -> i32 {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(tag))
            .unwrap_or_else(|| panic!("no {tag} in {stdout}"))
            .trim()
            .parse()
            .unwrap()
    };
    let (daemon, worker) = (pid_of("DAEMON "), pid_of("WORKER "));
    // The program returned only after the non-daemonic worker finished its work.
    assert_eq!(std::fs::read(&marker).unwrap(), b"done");
    assert!(!process_exists(worker));
    // And its daemon was terminated, not left running.
    assert!(
        !process_exists(daemon),
        "daemon {daemon} outlived its parent"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_child_does_not_inherit_the_signals_its_starting_thread_blocks() {
    // A program whose starting thread blocks SIGTERM (as one that waits for signals with
    // `sigwait` does): each method's child still dies of `terminate`, where an inherited
    // mask would keep it alive until the 10 s join timed out.
    each_method_says(env!("CARGO_BIN_EXE_masked_parent"), "Some(-15)");
}

#[test]
fn a_program_with_its_standard_streams_closed_still_talks_to_its_children() {
    // Its control sockets would take numbers 0 and 1: each method's child must still get
    // its start request and report, and what its target prints must not reach the socket.
    each_method_says(env!("CARGO_BIN_EXE_closed_stdin_parent"), "42");
}

/// Runs a child test program that tries each start method and prints `METHOD OUTCOME`
/// lines (on standard output or error), and checks that it succeeded with `outcome` for
/// every method.
fn each_method_says(program: &str, outcome: &str) {
    let out = Command::new(program).output().unwrap();
    assert!(out.status.success(), "{program} failed: {out:?}");
    let printed = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    for m in ["forkserver", "spawn", "fork"] {
        let line = format!("{m} {outcome}");
        assert!(
            printed.lines().any(|l| l == line),
            "no {line:?} in {printed}"
        );
    }
}

fn sleeps(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

#[test]
fn many_children_at_once_all_complete() {
    for m in [StartMethod::ForkServer, StartMethod::Spawn] {
        let mut ps: Vec<Process> = (0..50)
            .map(|_| Process::new(sleeps, 50).with_start_method(m))
            .collect();
        for p in &mut ps {
            p.start().unwrap();
        }
        for p in &ps {
            p.join(Some(Duration::from_secs(60))).unwrap();
            assert_eq!(p.exitcode().unwrap(), Some(0), "{m}");
        }
    }
}
