//! The crate's error type.

use std::fmt;

use nix::errno::Errno;
use procvisor_protocol::{DecodeError, EncodeError, RemoteError};

/// What went wrong in a procvisor call.
///
/// An opaque struct: ask it what it is with the `is_*` methods and the accessors, which
/// keep the data (the errno, the child's remote error, its exit code) rather than a string.
///
/// ```
/// use procvisor::Process;
/// fn noop(_: ()) {}
/// let p = Process::new(noop, ());
/// let err = p.join(None).unwrap_err();
/// assert!(err.is_not_started());
/// assert_eq!(err.to_string(), "can only join a started process");
/// ```
#[derive(Debug)]
pub struct Error {
    // Boxed: an `Error` is one pointer wide, so `Result<T, Error>` stays small on the
    // success path.
    kind: Box<Kind>,
}

#[derive(Debug)]
pub(crate) enum Kind {
    NotStarted(&'static str),
    AlreadyStarted,
    Closed,
    StillRunning,
    DaemonAfterStart,
    DaemonicParent,
    Serialize(EncodeError),
    Spawn(Errno),
    ForkServer(String),
    NotFinished,
    Remote(RemoteError),
    NoResult {
        exitcode: i32,
    },
    Decode {
        expected: &'static str,
        err: DecodeError,
    },
    Protocol(DecodeError),
    ClosureNeedsFork,
}

impl Error {
    pub(crate) fn new(kind: Kind) -> Self {
        Error {
            kind: Box::new(kind),
        }
    }

    /// A start that failed on an I/O error (EIO when it carries no errno).
    pub(crate) fn spawn_io(e: &std::io::Error) -> Self {
        Error::new(Kind::Spawn(Errno::from_raw(
            e.raw_os_error().unwrap_or(nix::libc::EIO),
        )))
    }

    /// The process was used before `start()`.
    pub fn is_not_started(&self) -> bool {
        matches!(*self.kind, Kind::NotStarted(_))
    }

    /// `close()` was called, and the process can no longer be used.
    pub fn is_closed(&self) -> bool {
        matches!(*self.kind, Kind::Closed)
    }

    /// The process has not finished yet (for `result()` and `close()`).
    pub fn is_running(&self) -> bool {
        matches!(*self.kind, Kind::NotFinished | Kind::StillRunning)
    }

    /// The target panicked in the child; see [`Error::remote`].
    pub fn is_remote(&self) -> bool {
        matches!(*self.kind, Kind::Remote(_))
    }

    /// The child's panic, with message and location: Python's `RemoteTraceback`.
    pub fn remote(&self) -> Option<&RemoteError> {
        match &*self.kind {
            Kind::Remote(r) => Some(r),
            _ => None,
        }
    }

    /// The child's exit code when it ended without reporting a result (killed by a
    /// signal: `-signum`; `std::process::exit(n)`: `n`).
    pub fn exitcode(&self) -> Option<i32> {
        match *self.kind {
            Kind::NoResult { exitcode } => Some(exitcode),
            _ => None,
        }
    }

    /// The system error behind a failed start.
    pub fn errno(&self) -> Option<Errno> {
        match *self.kind {
            Kind::Spawn(e) => Some(e),
            _ => None,
        }
    }

    /// The arguments (or the result) could not be serialized.
    pub fn is_serialize(&self) -> bool {
        matches!(*self.kind, Kind::Serialize(_))
    }

    /// The child broke the wire protocol (a malformed or oversized frame) and was killed.
    pub fn is_protocol(&self) -> bool {
        matches!(*self.kind, Kind::Protocol(_))
    }

    /// A value did not decode into the requested type.
    pub fn is_decode(&self) -> bool {
        matches!(*self.kind, Kind::Decode { .. })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.kind {
            Kind::NotStarted(what) => write!(f, "can only {what} a started process"),
            Kind::AlreadyStarted => f.write_str("cannot start a process twice"),
            Kind::Closed => f.write_str("process object is closed"),
            Kind::StillRunning => f.write_str("cannot close a process while it is still running"),
            Kind::DaemonAfterStart => {
                f.write_str("cannot set the daemon flag of a started process")
            }
            Kind::DaemonicParent => {
                f.write_str("daemonic processes are not allowed to have children")
            }
            Kind::Serialize(_) => f.write_str("arguments could not be serialized"),
            Kind::Spawn(e) => write!(f, "could not start the process: {}", e.desc()),
            Kind::ForkServer(why) => write!(f, "forkserver failed: {why}"),
            Kind::NotFinished => f.write_str("the process has not finished"),
            Kind::Remote(r) => write!(f, "the target panicked: {r}"),
            Kind::NoResult { exitcode } => {
                write!(
                    f,
                    "the process ended without a result (exitcode {exitcode})"
                )
            }
            Kind::Decode { expected, .. } => write!(f, "value did not decode as {expected}"),
            Kind::Protocol(_) => f.write_str("the child broke the protocol and was killed"),
            Kind::ClosureNeedsFork => {
                f.write_str("a capturing closure can only run with the fork start method")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.kind {
            Kind::Serialize(e) => Some(e),
            Kind::Spawn(e) => Some(e),
            Kind::Remote(e) => Some(e),
            Kind::Decode { err, .. } | Kind::Protocol(err) => Some(err),
            _ => None,
        }
    }
}
