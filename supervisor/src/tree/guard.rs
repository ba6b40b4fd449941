//! The program's side of the group guard (see `procvisor_worker::guard`): the process that
//! kills what supervised commands left in their process groups once this program is gone,
//! however it went.
//!
//! The guard is started on the first command launch and restarted, told every group still
//! tracked, if it is found dead at a later launch. Who tells it what:
//!
//! - a command's child, between fork and exec, sends `Track(its pid)` (see `arm`): before the
//!   command can fork anything into its group;
//! - the leader's collection (`Child::try_collect`) calls [`untrack`] after killing the
//!   rest of the group and before reaping the leader, so the number is still the group's.
//!
//! The lock is held across the spawn of a command: the descriptor number that the child
//! writes to must not be closed (a dead guard replaced) and reused meanwhile.
//!
//! # Caveats
//!
//! A guard found dead is replaced at the next launch, not at once: while it is dead,
//! nothing is guarded. A copy of this program's end of the socket kept by a process that
//! forked from this one without exec (other than procvisor's own `fork` children, which
//! close it) keeps the guard waiting until that process is gone.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use procvisor_worker::GUARD_ENV;
use procvisor_worker::guard::{Note, send_note};

struct Guard {
    pid: i32,
    sock: OwnedFd,
}

struct State {
    /// The process these entries belong to: a `fork` child inherits its parent's copy.
    owner: u32,
    guard: Option<Guard>,
    /// The groups the guard has been told of, to tell a new guard, and for [`guarded_groups`].
    groups: BTreeSet<i32>,
}

static STATE: Mutex<State> = Mutex::new(State {
    owner: 0,
    guard: None,
    groups: BTreeSet::new(),
});

/// The number of this program's end of the guard's socket, so that a child made by `fork`
/// can close its inherited copy without touching the lock above, which another thread may
/// have held at the moment of the fork.
static GUARD_FD: AtomicI32 = AtomicI32::new(-1);

fn lock() -> MutexGuard<'static, State> {
    let mut st = STATE.lock().unwrap_or_else(|p| p.into_inner());
    let me = std::process::id();
    if st.owner != me {
        st.owner = me;
        // Inherited through `fork`: the socket was closed in the child (see
        // `close_inherited`), and the groups are our parent's.
        std::mem::forget(st.guard.take());
        st.groups.clear();
    }
    st
}

/// Closes the copy of the guard's socket that a `fork` child inherited: otherwise the guard
/// would not see this program's end while the child lives. Async-signal-safe.
pub(crate) fn close_inherited() {
    crate::spawn::forkserver::close_recorded(&GUARD_FD);
}

/// Holds the lock across a `fork` (see `spawn::fork`).
pub(crate) fn lock_for_fork() -> impl Sized {
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// A live guard, locked for one command launch.
pub(crate) struct Armed(MutexGuard<'static, State>);

impl Armed {
    /// The descriptor a command's child sends its `Track` note on, between fork and exec.
    pub(crate) fn fd(&self) -> RawFd {
        let guard = self.0.guard.as_ref().expect("an armed state has a guard");
        guard.sock.as_raw_fd()
    }

    /// Records that the command `pgid` started (its child has told the guard itself).
    pub(crate) fn track(mut self, pgid: i32) {
        self.0.groups.insert(pgid);
    }
}

/// Makes sure a guard is running, starting one (and telling it every group still tracked)
/// if there is none or it died, and locks it for a launch.
pub(crate) fn arm() -> io::Result<Armed> {
    let mut st = lock();
    if st.guard.as_ref().is_some_and(|g| !alive(g)) {
        let dead = st.guard.take().expect("checked above");
        GUARD_FD.store(-1, Ordering::Relaxed);
        // Its end closed: it has exited or is exiting. Ours to reap, by its pid only.
        let _ = procvisor_worker::os::waitpid_raw(dead.pid, false);
    }
    if st.guard.is_none() {
        let guard = start()?;
        for &pgid in &st.groups {
            let _ = send_note(guard.sock.as_fd(), Note::Track(pgid));
        }
        GUARD_FD.store(guard.sock.as_raw_fd(), Ordering::Relaxed);
        st.guard = Some(guard);
    }
    Ok(Armed(st))
}

/// Forgets the group `pgid`, whose leader has ended and whose other members were killed.
/// Call before reaping the leader: after that the number may go to a stranger's group.
pub(crate) fn untrack(pgid: i32) {
    let mut st = lock();
    if st.groups.remove(&pgid) {
        if let Some(guard) = &st.guard {
            // A guard that is gone cannot kill anything; one started later is told only the
            // groups still tracked.
            let _ = send_note(guard.sock.as_fd(), Note::Untrack(pgid));
        }
    }
}

/// The process groups of supervised commands that the group guard will SIGKILL if this
/// program dies now: one per command that is running (its pid), none for a command that
/// has ended.
///
/// The guard is a small process, a re-exec of this program started with the first
/// command, that outlives the program by an instant: when the program is gone, SIGKILL
/// included, it kills every process group still listed here, so what commands leave behind
/// (`sh -c 'sleep 300 & exec sleep 301'`) does not live on under init.
///
/// ```no_run
/// use procvisor::tree::{guarded_groups, ChildSpec, Command, EventKind, Spec};
/// use std::time::Duration;
/// let spec = Spec::new("top").child(ChildSpec::command("s", Command::new("sleep").arg("60")));
/// let events = spec.events();
/// let tree = spec.start()?;
/// let e = events.wait_for(Duration::from_secs(5), |e| matches!(e.kind, EventKind::Started { .. }));
/// if let Some(EventKind::Started { pid }) = e.map(|e| e.kind) {
///     assert!(guarded_groups().contains(&pid));
/// }
/// drop(tree);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn guarded_groups() -> Vec<i32> {
    lock().groups.iter().copied().collect()
}

/// Whether the guard's end of the socket is still open.
fn alive(guard: &Guard) -> bool {
    let mut fds = [PollFd::new(guard.sock.as_fd(), PollFlags::empty())];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) => true,
        Ok(_) => !fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)),
        Err(_) => false,
    }
}

/// Starts a guard: this program, re-executed in guard mode, in a process group of its own.
fn start() -> io::Result<Guard> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    // No parent-death signal: it would kill the guard before it can do its work. It ends
    // when its socket says this program is gone. `arm` reaps it by its pid if it dies
    // before us.
    procvisor_worker::boot::ensure_linked();
    let pid = crate::spawn::spawn_self(GUARD_ENV, theirs.as_fd(), None, true)?;
    Ok(Guard { pid, sock: ours })
}
