//! Boot: deciding, before `main`, whether this process is a worker.
//!
//! The parent starts a `spawn` worker, the forkserver or the group guard by executing its
//! own program (`/proc/self/exe`) with one of three environment variables set to the number
//! of an inherited socket, optionally followed by `:` and the parent's pid (`7:4242`). With
//! a pid, the process first asks for SIGKILL when its parent thread ends
//! (`PR_SET_PDEATHSIG`), and kills itself at once if its parent is no longer that pid:
//! the parent may have died between the start and the request.
//!
//! - [`WORKER_ENV`]: read a `Hello` and a `Start` frame from that socket, run the target,
//!   report, exit.
//! - [`FORKSERVER_ENV`]: serve fork requests on that socket until it closes.
//! - [`GUARD_ENV`]: guard the process groups of supervised commands until it closes (see
//!   [`guard`](crate::guard)).
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
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};

use procvisor_protocol::{DEFAULT_MAX_FRAME_LEN, Message, RemoteError};

pub use crate::guard::GUARD_ENV;
use crate::os::FrameReader;
use crate::{entry, forkserver, guard, os, run};

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
    if let Some(fd) = take_fd_var(GUARD_ENV) {
        os::ignore_sigpipe();
        guard::serve(fd);
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
    let value = value.to_str()?;
    let fd = match value.split_once(':') {
        Some((fd, parent)) => {
            os::die_with_parent(parent.parse().ok()?);
            fd
        }
        None => value,
    };
    let fd: RawFd = fd.parse().ok()?;
    if fd < 0 || !os::fd_is_open(fd) {
        return None;
    }
    os::name_after_program();
    // SAFETY: the parent passed this descriptor to us for our exclusive use and named it in
    // the variable we just removed, so nothing else in this process owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A `spawn` worker: the start frame, and the handles in its arguments, come over the
/// socket.
fn spawned_worker(fd: OwnedFd) -> ! {
    let mut reader = FrameReader::new(DEFAULT_MAX_FRAME_LEN);
    let fail = |what: String| RemoteError {
        message: format!("worker boot failed: {what}"),
        location: None,
        thread: None,
        backtrace: None,
    };
    let start = match reader.read(fd.as_fd()) {
        Ok((Message::Hello(_), _)) => match reader.read(fd.as_fd()) {
            Ok((Message::Start(start), handles)) => Ok((start, handles)),
            Ok((other, _)) => Err(fail(format!("expected start, got {other:?}"))),
            Err(e) => Err(fail(format!("reading start: {e} ({e:?})"))),
        },
        Ok((other, _)) => Err(fail(format!("expected hello, got {other:?}"))),
        Err(e) => Err(fail(format!("reading hello: {e} ({e:?})"))),
    };
    match start {
        Ok((mut start, handles)) => {
            let target = entry::resolve(start.entry);
            run::run_child(&mut start, fd, handles, target)
        }
        Err(err) => run::report_boot_failure(fd, err),
    }
}
