use std::time::Duration;

use procvisor::{Process, current_process, parent_process};
use procvisor_integration::{process_exists, wait_until};

use crate::lifecycle::METHODS;

/// What a child sees of itself and of its parent.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Seen {
    name: String,
    pid: i32,
    daemon: bool,
    parent_pid: Option<i32>,
    parent_name: Option<String>,
    grandchild_name: String,
    grandchild_parent: Option<String>,
}

fn who_am_i(_: ()) -> (String, Option<String>) {
    let me = current_process();
    (me.name, parent_process().map(|p| p.name))
}

fn look(_: ()) -> Seen {
    let me = current_process();
    let parent = parent_process();
    let mut g = Process::new(who_am_i, ());
    let default_name = g.name().to_owned();
    g.start().unwrap();
    g.join(None).unwrap();
    let (gname, gparent) = g.result().unwrap();
    assert_eq!(gname, default_name);
    Seen {
        name: me.name,
        pid: me.pid,
        daemon: me.daemon,
        parent_pid: parent.as_ref().map(|p| p.pid),
        parent_name: parent.map(|p| p.name),
        grandchild_name: gname,
        grandchild_parent: gparent,
    }
}

#[test]
fn names_identities_and_parents_follow_python() {
    assert_eq!(current_process().name, "MainProcess");
    assert!(parent_process().is_none());
    for m in METHODS {
        let mut p = Process::new(look, ()).with_start_method(m);
        let name = p.name().to_owned();
        let n: u32 = name
            .strip_prefix("Process-")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("default name {name:?} is not Process-N"));
        p.start().unwrap();
        p.join(None).unwrap();
        let seen = p.result().unwrap();
        assert_eq!(seen.name, name);
        assert_eq!(Some(seen.pid), p.pid().unwrap());
        assert!(!seen.daemon);
        assert_eq!(seen.parent_pid, Some(std::process::id() as i32));
        assert_eq!(seen.parent_name.as_deref(), Some("MainProcess"));
        // The child's first child is Process-N:1, as CPython numbers it.
        assert_eq!(seen.grandchild_name, format!("Process-{n}:1"), "{m}");
        assert_eq!(seen.grandchild_parent.as_deref(), Some(name.as_str()));
    }
}

#[test]
fn custom_names_reach_the_child() {
    for m in METHODS {
        let mut p = Process::new(who_am_i, ())
            .with_start_method(m)
            .with_name("worker α");
        p.start().unwrap();
        p.join(None).unwrap();
        assert_eq!(p.result().unwrap().0, "worker α");
    }
}

fn start_grandchild(_: ()) -> String {
    let mut g = Process::new(who_am_i, ());
    match g.start() {
        Ok(()) => "started".to_owned(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn daemonic_processes_may_not_have_children() {
    let mut p = Process::new(start_grandchild, ()).with_daemon(true);
    p.start().unwrap();
    p.join(None).unwrap();
    assert_eq!(
        p.result().unwrap(),
        "daemonic processes are not allowed to have children"
    );
}

fn long_sleep(_: ()) {
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn active_children_lists_running_children_and_reaps_finished_ones() {
    let mut p = Process::new(long_sleep, ()).with_name("listed-child");
    p.start().unwrap();
    let pid = p.pid().unwrap().unwrap();
    let listed = procvisor::active_children();
    let me = listed
        .iter()
        .find(|c| c.pid == pid)
        .expect("listed while running");
    assert_eq!(me.name, "listed-child");
    p.kill().unwrap();
    // Without join: active_children() itself collects the exit.
    assert!(wait_until(Duration::from_secs(10), || {
        !procvisor::active_children().iter().any(|c| c.pid == pid)
    }));
    assert!(!process_exists(pid));
    assert_eq!(p.exitcode().unwrap(), Some(-9));
}

#[test]
fn cpu_count_matches_the_machine() {
    let n = procvisor::cpu_count();
    let online = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    assert!(
        n >= online,
        "cpu_count {n} < available parallelism {online}"
    );
}

fn my_comm(_: ()) -> String {
    std::fs::read_to_string("/proc/self/comm").unwrap()
}

#[test]
fn a_child_is_named_after_the_program_as_ps_shows_it() {
    // A process started through /proc/self/exe would be named "exe" by the kernel; `ps`,
    // `top` and `pkill NAME` must find workers under the program's own name, as this
    // process's (the kernel's from its exec) is.
    let ours = std::fs::read_to_string("/proc/self/comm").unwrap();
    assert_ne!(ours.trim(), "exe");
    for m in METHODS {
        let mut p = Process::new(my_comm, ()).with_start_method(m);
        p.start().unwrap();
        p.join(None).unwrap();
        assert_eq!(p.result().unwrap(), ours, "{m}");
    }
}
