//! The `spawn` start method: this program, started afresh with `posix_spawn` (a vfork-style
//! clone and an exec, with no copy of the parent's memory map), boots as a worker.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use procvisor_protocol::{DEFAULT_MAX_FRAME_LEN, Hello, Message, Start, encode_into};
use procvisor_worker::os as wos;
use procvisor_worker::{FORKSERVER_ENV, GUARD_ENV, WORKER_ENV};

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

    let (parent_end, child_end) = super::control_pair()?;
    let (pid, pidfd) = on_lasting_thread(move || {
        let parent = std::process::id() as i32;
        let pid =
            spawn_self(WORKER_ENV, child_end.as_fd(), Some(parent), false).map_err(spawn_error)?;
        drop(child_end);
        match wos::pidfd_open(pid) {
            Ok(pidfd) => Ok::<_, Error>((pid, pidfd)),
            Err(e) => {
                // Nothing could wait for it: end it here rather than leave it behind.
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
                let _ = wos::waitpid_raw(pid, false);
                Err(spawn_error(e))
            }
        }
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
        spent: None,
    })
}

/// Starts this program again (`/proc/self/exe`, with this program's `argv[0]` and
/// environment) in the mode that the boot variable `var` names — a worker, the forkserver,
/// the group guard: see `procvisor_worker::boot` — on the inherited descriptor `fd`, with
/// `/dev/null` as standard input, as Python gives its children. With `die_with`, the
/// calling process's pid, the child dies (SIGKILL) when the calling thread ends: it asks
/// for the parent-death signal itself, first thing after the exec, and checks that its
/// parent is still `die_with` (the race of a parent that died before the request). With
/// `own_group` it leads a process group of its own. Returns its pid.
///
/// The start is a `posix_spawn`: see [`crate::sys::spawn`].
pub(crate) fn spawn_self(
    var: &str,
    fd: BorrowedFd<'_>,
    die_with: Option<i32>,
    own_group: bool,
) -> nix::Result<i32> {
    // Standard input, output and error are the child's own: a socket that happens to have
    // one of their numbers (in a program started with them closed) is passed as a copy
    // numbered 3 or above, which the copy's close-on-exec keeps out of every other child.
    let moved = super::above_stdio(fd).map_err(|e| io_errno(&e))?;
    let fd: RawFd = moved.as_ref().map_or(fd.as_raw_fd(), |m| m.as_raw_fd());
    let value = match die_with {
        Some(parent) => format!("{fd}:{parent}"),
        None => fd.to_string(),
    };
    let boot_vars = [WORKER_ENV, FORKSERVER_ENV, GUARD_ENV];
    let mut envp: Vec<CString> = std::env::vars_os()
        .filter(|(name, _)| !boot_vars.iter().any(|v| name.as_bytes() == v.as_bytes()))
        .filter_map(|(name, value)| {
            let mut entry = name.into_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            CString::new(entry).ok()
        })
        .collect();
    envp.push(CString::new(format!("{var}={value}")).map_err(|_| Errno::EINVAL)?);
    let arg0 = std::env::args_os()
        .next()
        .and_then(|a| CString::new(a.into_vec()).ok())
        .unwrap_or_else(|| c"procvisor-worker".to_owned());
    crate::sys::spawn(c"/proc/self/exe", &[arg0], &envp, fd, own_group)
}

pub(super) fn io_errno(e: &std::io::Error) -> nix::errno::Errno {
    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(nix::libc::EIO))
}
