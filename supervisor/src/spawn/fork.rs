//! The `fork` start method: a copy of this process runs the target.
//!
//! See the hazard on [`StartMethod::Fork`](crate::StartMethod::Fork).

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::unistd::ForkResult;
use procvisor_protocol::{RemoteError, Start};
use procvisor_worker::os as wos;

use super::{Launched, forkserver, on_spawner, spawn_error};
use crate::child::Sentinel;
use crate::error::Error;

pub(crate) fn launch<F>(start: Start, handles: Vec<OwnedFd>, body: F) -> Result<Launched, Error>
where
    F: FnOnce(&[u8]) -> Result<Vec<u8>, RemoteError> + Send + 'static,
{
    let (parent_end, child_end) =
        UnixStream::pair().map_err(|e| spawn_error(super::exec::io_errno(&e)))?;
    let parent_raw = parent_end.as_raw_fd();
    let (pid, pidfd) = on_spawner(move || {
        let parent = nix::unistd::getpid().as_raw();
        // What pthread_atfork's "prepare" does: hold procvisor's own locks across the fork,
        // so that no thread of ours holds one at that instant and the child starts with all
        // of them free (it drops the copies it inherits, held by its only thread). Locks of
        // other code remain the documented hazard of this start method.
        let guards = (
            crate::child::registry::lock_for_fork(),
            forkserver::lock_for_fork(),
            procvisor_worker::identity::lock_for_fork(),
        );
        let forked = crate::sys::fork_for_fork_method();
        drop(guards);
        match forked {
            Ok(ForkResult::Child) => {
                let _ = nix::unistd::close(parent_raw);
                forkserver::close_inherited();
                wos::die_with_parent(parent);
                procvisor_worker::run::run_child(&start, child_end.into(), handles, body)
            }
            Ok(ForkResult::Parent { child }) => {
                drop(child_end);
                drop(handles);
                let pidfd = wos::pidfd_open(child.as_raw()).map_err(spawn_error)?;
                Ok((child.as_raw(), pidfd))
            }
            Err(e) => Err(spawn_error(e)),
        }
    })?;
    Ok(Launched {
        pid,
        pidfd,
        sentinel: Sentinel::Pidfd,
        control: parent_end,
    })
}
