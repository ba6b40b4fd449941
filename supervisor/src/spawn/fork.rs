//! The `fork` start method: a copy of this process runs the target.
//!
//! See the hazard on [`StartMethod::Fork`](crate::StartMethod::Fork).

use std::os::fd::{AsRawFd, OwnedFd};

use nix::unistd::ForkResult;
use procvisor_protocol::{RemoteError, Start};
use procvisor_worker::os as wos;

use super::{Launched, forkserver, on_lasting_thread, spawn_error};
use crate::child::Sentinel;
use crate::error::Error;

/// Arguments larger than this are freed at once rather than kept until the child ends
/// (see `Launched::spent`).
const SPENT_MAX_ARGS: usize = 64 * 1024;

/// Forks a child that runs `body`. With `isolate`, the child closes the connections it
/// inherited but was not given (for `fn` targets, which can only reach their arguments), so
/// that a pipe end the parent keeps is not held open by the child too; without it, it keeps
/// everything (for closures, which may have captured connections).
///
/// Only connections are closed, not every descriptor: libraries keep descriptors in
/// process-wide state (tokio's signal driver, for one) that a child still needs.
pub(crate) fn launch<F>(
    mut start: Start,
    handles: Vec<OwnedFd>,
    isolate: bool,
    body: F,
) -> Result<Launched, Error>
where
    F: FnOnce(&[u8]) -> Result<Vec<u8>, RemoteError> + Send + 'static,
{
    let (parent_end, child_end) = super::control_pair()?;
    let parent_raw = parent_end.as_raw_fd();
    // From the main thread itself when that is the caller (see `on_lasting_thread`).
    let (pid, pidfd, spent) = on_lasting_thread(move || {
        let parent = std::process::id() as i32;
        // The child starts with this thread's signal mask; most often empty, then it has
        // nothing to undo (and no libc code to map for it).
        let masked = wos::signals_blocked();
        // What pthread_atfork's "prepare" does: hold procvisor's own locks across the fork,
        // so that no thread of ours holds one at that instant and the child starts with all
        // of them free (it drops the copies it inherits, held by its only thread). Locks of
        // other code remain the documented hazard of this start method, except std's
        // stdout and stderr, held here as C's stdio holds its streams across a fork: a
        // thread printing at that instant (a test harness reporting, a logger) would leave
        // the child's copy locked forever, and the child would hang at its first print or
        // at the flush on its way out.
        let stdio = (std::io::stdout().lock(), std::io::stderr().lock());
        procvisor_worker::handles::prepare_thread();
        let mut live = crate::connection::live_for_fork();
        let guards = (
            crate::child::registry::lock_for_fork(),
            forkserver::lock_for_fork(),
            procvisor_worker::identity::lock_for_fork(),
            crate::tree::guard_lock_for_fork(),
        );
        let forked = crate::sys::fork_for_fork_method();
        if let Ok(ForkResult::Child) = forked {
            // Done while the child still holds the connection registry, and it has one
            // thread: no list to allocate, no second lock to take. An empty registry (the
            // most common case) runs no code to walk or clear it.
            if !live.is_empty() {
                if isolate {
                    let given = |fd: i32| handles.iter().any(|h| h.as_raw_fd() == fd);
                    for &fd in live.iter().filter(|&&fd| !given(fd)) {
                        // The `Connection` owning this number lives on in our copy of the
                        // parent's memory, owned by threads that do not exist here: nothing
                        // runs its destructor (the child leaves with `_exit`), so nothing
                        // closes the number a second time.
                        wos::close_fd(fd);
                    }
                }
                // Our connections are the ones our arguments will make.
                live.clear();
            }
        }
        drop(live);
        drop(guards);
        drop(stdio);
        match forked {
            Ok(ForkResult::Child) => {
                wos::close_fd(parent_raw);
                forkserver::close_inherited();
                crate::doorbell::close_inherited();
                crate::tree::close_inherited_guard();
                wos::die_with_parent(parent);
                if masked {
                    // As a spawned child starts, and as `terminate` expects.
                    wos::unblock_signals();
                }
                procvisor_worker::run::run_child(&mut start, child_end.into(), handles, body)
            }
            Ok(ForkResult::Parent { child }) => {
                drop(child_end);
                drop(handles);
                let pidfd = wos::pidfd_open(child.as_raw()).map_err(spawn_error)?;
                // Freed now, the request's strings would have `malloc` write into pages
                // that the child still shares, and each such page would be copied for us.
                let spent = (start.args.capacity() <= SPENT_MAX_ARGS).then_some(start);
                Ok((child.as_raw(), pidfd, spent))
            }
            Err(e) => Err(spawn_error(e)),
        }
    })?;
    Ok(Launched {
        pid,
        pidfd,
        sentinel: Sentinel::Pidfd,
        control: parent_end,
        spent,
    })
}
