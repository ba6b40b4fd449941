//! Reaping what supervised commands leave behind.
//!
//! A command runs in a process group of its own, and when it ends the rest of its group is
//! SIGKILLed. Those processes were its children or grandchildren, not ours: their parent
//! gone, the kernel hands them to the nearest subreaper, or to init. With
//! [`set_child_subreaper`] on, that is this process, and a SIGCHLD-driven reaper collects
//! them — only them: a pid is reaped only when it is our child, sits in the process group of
//! a command we started, and is not that group's leader (which its own Worker reaps). It
//! never calls `waitpid(-1)`, so children the rest of the program made are left alone.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};

use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

/// The process groups of the commands this process started.
static GROUPS: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// Orphans reaped so far.
static REAPED: AtomicU64 = AtomicU64::new(0);

/// How many processes left behind by supervised commands this process has reaped as their
/// subreaper (see [`set_child_subreaper`]).
///
/// ```
/// let before = procvisor::tree::orphans_reaped();
/// assert!(procvisor::tree::orphans_reaped() >= before);
/// ```
pub fn orphans_reaped() -> u64 {
    REAPED.load(Ordering::Relaxed)
}

/// Records the process group that a command leads (its pid).
pub(crate) fn track_group(pgid: i32) {
    GROUPS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert_with(HashSet::new)
        .insert(pgid);
}

/// Makes this process a child subreaper (`PR_SET_CHILD_SUBREAPER`), or stops being one.
///
/// On, the processes that supervised commands leave behind are re-parented to this
/// process rather than to init, and reaped here; nothing outlives its supervisor unseen. Off
/// by default in the library, since it changes which process inherits orphans for the
/// whole program; the `procvisor` command turns it on.
///
/// Processes that leave their command's process group (a `setsid` daemon) are not reaped:
/// the reaper cannot tell them from children the rest of the program made.
///
/// ```no_run
/// procvisor::tree::set_child_subreaper(true)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn set_child_subreaper(on: bool) -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(on)?;
    if on {
        start_reaper()?;
        // Orphans may have arrived before the handler.
        reap_orphans();
    }
    Ok(())
}

fn start_reaper() -> io::Result<()> {
    static START: Once = Once::new();
    let mut result = Ok(());
    START.call_once(|| {
        let signals = match signal_hook::iterator::Signals::new([signal_hook::consts::SIGCHLD]) {
            Ok(s) => s,
            Err(e) => {
                result = Err(e);
                return;
            }
        };
        let spawned = std::thread::Builder::new()
            .name("procvisor-reaper".into())
            .spawn(move || {
                let mut signals = signals;
                for _ in signals.forever() {
                    reap_orphans();
                }
            });
        if let Err(e) = spawned {
            result = Err(e);
        }
    });
    result
}

/// Reaps every zombie child of ours that belongs to a command's group and is not its leader.
pub(crate) fn reap_orphans() {
    let groups = match GROUPS.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        Some(g) if !g.is_empty() => g.clone(),
        _ => return,
    };
    for pid in our_children() {
        let Some((state, pgid)) = stat(pid) else {
            continue;
        };
        if state == 'Z' && pgid != pid && groups.contains(&pgid) {
            if let Ok(
                nix::sys::wait::WaitStatus::Exited(..) | nix::sys::wait::WaitStatus::Signaled(..),
            ) = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG))
            {
                REAPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The pids whose parent is this process, from `/proc/self/task/*/children`.
fn our_children() -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return pids;
    };
    for task in tasks.flatten() {
        if let Ok(list) = fs::read_to_string(task.path().join("children")) {
            pids.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    pids
}

/// The state letter and process group of `pid`, from `/proc/<pid>/stat`.
pub(crate) fn stat(pid: i32) -> Option<(char, i32)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold anything: fields follow the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}
