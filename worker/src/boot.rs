//! Boot: deciding, before `main`, whether this process is a worker.
//!
//! The parent starts a `spawn` worker or the forkserver by executing its own program
//! (`/proc/self/exe`) with one of two environment variables set to the number of an
//! inherited socket:
//!
//! - [`WORKER_ENV`]: read a `Hello` and a `Start` frame from that socket, run the target,
//!   report, exit.
//! - [`FORKSERVER_ENV`]: serve fork requests on that socket until it closes.
//!
//! The check runs from an `.init_array` constructor, so it works in any program that links
//! procvisor, including `cargo test` binaries whose `main` is not ours. The variable is
//! removed at once so that programs the worker itself runs do not inherit it.
//!
//! # Caveats
//!
//! A worker runs before `main`: Rust's runtime set-up that `main` would have done (naming
//! the main thread, the stack-overflow message) has not happened. `SIGPIPE` is set to
//! ignored, as Rust's runtime would have, so a write to a closed pipe is an `EPIPE` error
//! rather than a silent death.
//!
//! ```no_run
//! // Nothing to call: linking procvisor installs the constructor.
//! assert!(std::env::var_os(procvisor_worker::WORKER_ENV).is_none());
//! ```

use std::ffi::OsString;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use procvisor_protocol::{DEFAULT_MAX_FRAME_LEN, Message, RemoteError, read_frame};

use crate::{entry, forkserver, os, run};

/// Environment variable naming the control socket of a `spawn` worker.
pub const WORKER_ENV: &str = "PROCVISOR_WORKER_FD";

/// Environment variable naming the request socket of a forkserver.
pub const FORKSERVER_ENV: &str = "PROCVISOR_FORKSERVER_FD";

/// Called by the constructor in `os`, before `main`.
pub(crate) fn on_load() {
    if let Some(fd) = take_fd_var(FORKSERVER_ENV) {
        os::ignore_sigpipe();
        forkserver::serve(fd);
    }
    if let Some(fd) = take_fd_var(WORKER_ENV) {
        os::ignore_sigpipe();
        spawned_worker(fd);
    }
}

/// Makes sure the boot constructor is linked into the final program.
///
/// The linker keeps an object file of a library only when something in it is used; the
/// parent side calls this on every start so the object holding the constructor is always
/// part of a program that starts workers.
pub fn ensure_linked() {
    os::ensure_ctor_linked();
}

fn take_fd_var(name: &str) -> Option<OwnedFd> {
    let value: OsString = std::env::var_os(name)?;
    os::remove_env_before_main(name);
    let fd: RawFd = value.to_str()?.parse().ok()?;
    if fd < 0 || !os::fd_is_open(fd) {
        return None;
    }
    // SAFETY: the parent passed this descriptor to us for our exclusive use and named it in
    // the variable we just removed, so nothing else in this process owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A `spawn` worker: the start frame comes over the socket.
fn spawned_worker(fd: OwnedFd) -> ! {
    let mut sock = UnixStream::from(fd);
    let start = match read_start(&mut sock) {
        Ok(start) => start,
        Err(message) => run::report_boot_failure(sock.into(), message),
    };
    let target = entry::resolve(start.entry);
    run::run_child(&start, sock.into(), target)
}

fn read_start(sock: &mut UnixStream) -> Result<procvisor_protocol::Start, RemoteError> {
    let fail = |what: String| RemoteError {
        message: format!("worker boot failed: {what}"),
        location: None,
        thread: None,
        backtrace: None,
    };
    match read_frame(sock, DEFAULT_MAX_FRAME_LEN) {
        Ok(Message::Hello(_)) => {}
        Ok(other) => return Err(fail(format!("expected hello, got {other:?}"))),
        Err(e) => return Err(fail(format!("reading hello: {e} ({e:?})"))),
    }
    match read_frame(sock, DEFAULT_MAX_FRAME_LEN) {
        Ok(Message::Start(start)) => Ok(start),
        Ok(other) => Err(fail(format!("expected start, got {other:?}"))),
        Err(e) => Err(fail(format!("reading start: {e} ({e:?})"))),
    }
}
