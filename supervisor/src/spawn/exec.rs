//! The `spawn` start method: fork and exec of this program, which boots as a worker.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use procvisor_protocol::{DEFAULT_MAX_FRAME_LEN, Hello, Message, Start, encode_into};
use procvisor_worker::os as wos;
use std::os::fd::AsFd;

use super::{Launched, on_lasting_thread, spawn_error};
use crate::child::Sentinel;
use crate::error::{Error, Kind};

pub(crate) fn launch(start: Start, handles: Vec<OwnedFd>) -> Result<Launched, Error> {
    // Encode first: arguments too large for a frame fail before any process exists.
    let mut hello = Vec::with_capacity(64);
    encode_into(
        &Message::Hello(Hello::current()),
        &mut hello,
        DEFAULT_MAX_FRAME_LEN,
    )
    .expect("a hello always fits in a frame");
    let mut request = Vec::with_capacity(start.args.len() + 256);
    encode_into(&Message::Start(start), &mut request, DEFAULT_MAX_FRAME_LEN)
        .map_err(|e| Error::new(Kind::Serialize(e)))?;

    let (parent_end, child_end) = UnixStream::pair().map_err(|e| spawn_error(io_errno(&e)))?;
    let (pid, pidfd) = on_lasting_thread(move || {
        let mut cmd = command(child_end.as_raw_fd());
        crate::sys::inherit_fd(&mut cmd, child_end.as_raw_fd(), Some(nix::unistd::getpid()));
        let child = cmd.spawn().map_err(|e| spawn_error(io_errno(&e)))?;
        drop(child_end);
        let pid = child.id() as i32;
        // std's handle never waits for the child: the pidfd and waitpid(pid) do.
        drop(child);
        let pidfd = wos::pidfd_open(pid).map_err(spawn_error)?;
        Ok::<_, Error>((pid, pidfd))
    })?;
    // A child that died before reading gets nothing: join() will tell how it ended. The
    // handles go with the start frame, which the child reads with them.
    let fds: Vec<_> = handles.iter().map(|h| h.as_fd()).collect();
    let _ = wos::send_with_fds(parent_end.as_fd(), &hello, &[])
        .and_then(|()| wos::send_with_fds(parent_end.as_fd(), &request, &fds));
    Ok(Launched {
        pid,
        pidfd,
        sentinel: Sentinel::Pidfd,
        control: parent_end,
    })
}

/// This program, re-executed as a worker on descriptor `fd`. Python gives its children
/// `/dev/null` as standard input; so do we.
pub(super) fn command(fd: i32) -> Command {
    reexec(procvisor_worker::WORKER_ENV, fd)
}

/// This program, re-executed in the mode that the boot variable `var` names (a worker, the
/// forkserver, the group guard: see `procvisor_worker::boot`) on descriptor `fd`, with
/// `/dev/null` as standard input. The caller makes `fd` inheritable.
pub(crate) fn reexec(var: &str, fd: i32) -> Command {
    let mut cmd = Command::new("/proc/self/exe");
    if let Some(arg0) = std::env::args_os().next() {
        cmd.arg0(arg0);
    }
    for other in [
        procvisor_worker::WORKER_ENV,
        procvisor_worker::FORKSERVER_ENV,
        procvisor_worker::GUARD_ENV,
    ] {
        cmd.env_remove(other);
    }
    cmd.env(var, fd.to_string()).stdin(Stdio::null());
    cmd
}

pub(super) fn io_errno(e: &std::io::Error) -> nix::errno::Errno {
    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(nix::libc::EIO))
}
