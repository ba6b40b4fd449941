//! The opt-in subreaper: what a supervised command leaves behind is reaped by this process
//! instead of lingering under init.
//!
//! Its own binary: becoming a child subreaper and handling SIGCHLD change the whole process.

use std::time::Duration;

use procvisor::restart::RestartType;
use procvisor::tree::{
    ChildSpec, Command, EventKind, LogFile, Output, Spec, orphans_reaped, set_child_subreaper,
};
use procvisor_integration::{process_exists, wait_until};

#[test]
fn leftovers_of_a_command_are_killed_and_reaped_here() {
    set_child_subreaper(true).unwrap();
    let dir = std::env::temp_dir().join(format!("procvisor-subreaper-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("out.log");
    // The shell starts a grandchild, reports its pid, and exits with 3.
    let spec = Spec::new("reaper").child(
        ChildSpec::command(
            "leaver",
            Command::new("sh")
                .args(["-c", "sleep 3600 & echo $!; exit 3"])
                .stdout(Output::File(LogFile::new(&log))),
        )
        .restart(RestartType::Temporary),
    );
    let events = spec.events();
    let tree = spec.start().unwrap();
    let exited = events
        .wait_for(Duration::from_secs(15), |e| {
            matches!(e.kind, EventKind::Exited { .. })
        })
        .expect("the shell exits");
    let EventKind::Exited { exit, .. } = exited.kind else {
        unreachable!()
    };
    assert_eq!(exit.status.code(), Some(3));
    let mut grandchild = None;
    assert!(wait_until(Duration::from_secs(15), || {
        grandchild = std::fs::read_to_string(&log)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        grandchild.is_some()
    }));
    let grandchild = grandchild.unwrap();
    // Killed with the rest of the group when the shell ended, re-parented to us (not to
    // init), and reaped here: gone entirely, not a zombie.
    assert!(
        wait_until(Duration::from_secs(5), || !process_exists(grandchild)),
        "{grandchild} is still there: state {:?}",
        procvisor_integration::process_state(grandchild)
    );
    // The count follows the reap by a moment.
    assert!(
        wait_until(Duration::from_secs(5), || orphans_reaped() == 1),
        "the grandchild was reaped elsewhere: {} reaped here",
        orphans_reaped()
    );
    drop(tree);
    std::fs::remove_dir_all(dir).unwrap();
}
