//! The error of every `Pool` call.

use std::fmt;
use std::sync::Arc;

use procvisor_protocol::{DecodeError, EncodeError, RemoteError};

use crate::status::ExitStatus;

/// Why a pool call or a task failed.
///
/// An opaque, cheaply cloned struct (the same error may be handed to several `get`s and an
/// error callback): ask it what it is with the `is_*` methods and the accessors.
///
/// ```
/// use procvisor::pool::PoolError;
/// fn check(err: &PoolError) -> &'static str {
///     if err.is_timeout() {
///         "late"
///     } else if let Some(pid) = err.worker_pid() {
///         let _ = pid;
///         "worker died"
///     } else if err.is_remote() {
///         "the task failed"
///     } else {
///         "other"
///     }
/// }
/// # let _ = check;
/// ```
#[derive(Clone)]
pub struct PoolError {
    kind: Arc<Kind>,
}

#[derive(Debug)]
pub(crate) enum Kind {
    /// The task panicked or returned `Err` in the worker.
    Remote(RemoteError),
    /// The worker running the task died before reporting.
    WorkerDied { pid: i32, status: ExitStatus },
    /// `get(timeout)` ran out of time; the task goes on.
    Timeout,
    /// A task submitted after `close` or `terminate`.
    NotRunning { terminated: bool },
    /// The pool was terminated before the task completed.
    Terminated,
    /// `join` before `close` or `terminate`.
    JoinWhileRunning,
    /// `successful` before the result is ready.
    NotReady,
    /// The arguments could not be serialized in this process.
    Serialize(EncodeError),
    /// The worker could not decode the arguments.
    Arguments(RemoteError),
    /// The worker could not serialize the result.
    Result(RemoteError),
    /// The result did not decode as the expected type.
    Decode {
        expected: &'static str,
        err: DecodeError,
    },
    /// The initializer failed (panicked or returned `Err`) in every attempt.
    Initializer(RemoteError),
    /// A worker could not be started.
    Spawn(crate::Error),
    /// A worker broke the pool's wire protocol and was killed.
    Protocol(String),
}

impl PoolError {
    pub(crate) fn new(kind: Kind) -> Self {
        PoolError {
            kind: Arc::new(kind),
        }
    }

    /// `get(timeout)` or `wait`-like calls ran out of time; the task is still running
    /// and the pool stays usable (Python's `multiprocessing.TimeoutError`).
    pub fn is_timeout(&self) -> bool {
        matches!(*self.kind, Kind::Timeout)
    }

    /// The task panicked, or returned `Err` through [`fallible`](super::fallible); see
    /// [`PoolError::remote`].
    pub fn is_remote(&self) -> bool {
        matches!(*self.kind, Kind::Remote(_))
    }

    /// What failed in the worker, with message and location: the task's panic or `Err`,
    /// the initializer's failure, or a (de)serialization failure of arguments or result
    /// there.
    pub fn remote(&self) -> Option<&RemoteError> {
        match &*self.kind {
            Kind::Remote(r) | Kind::Arguments(r) | Kind::Result(r) | Kind::Initializer(r) => {
                Some(r)
            }
            _ => None,
        }
    }

    /// The pid of the worker that died while it held the task.
    pub fn worker_pid(&self) -> Option<i32> {
        match *self.kind {
            Kind::WorkerDied { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// How the worker that held the task ended (the signal that killed it, or its exit
    /// code).
    pub fn worker_status(&self) -> Option<ExitStatus> {
        match *self.kind {
            Kind::WorkerDied { status, .. } => Some(status),
            _ => None,
        }
    }

    /// The task was submitted after `close` or `terminate`.
    pub fn is_not_running(&self) -> bool {
        matches!(*self.kind, Kind::NotRunning { .. })
    }

    /// The pool was terminated (or dropped) before the task completed.
    pub fn is_terminated(&self) -> bool {
        matches!(*self.kind, Kind::Terminated)
    }

    /// `join` was called on a pool neither closed nor terminated, or `successful` on a
    /// result not ready yet: a misuse, as Python's `ValueError`.
    pub fn is_misuse(&self) -> bool {
        matches!(*self.kind, Kind::JoinWhileRunning | Kind::NotReady)
    }

    /// Arguments or a result could not be serialized or deserialized (here or in the
    /// worker); that task failed and the pool goes on.
    pub fn is_serde(&self) -> bool {
        matches!(
            *self.kind,
            Kind::Serialize(_) | Kind::Arguments(_) | Kind::Result(_) | Kind::Decode { .. }
        )
    }

    /// The pool's initializer failed in every attempt; the pool is broken.
    pub fn is_initializer(&self) -> bool {
        matches!(*self.kind, Kind::Initializer(_))
    }

    /// A worker could not be started; see [`Error`](crate::Error) for why.
    pub fn spawn_error(&self) -> Option<&crate::Error> {
        match &*self.kind {
            Kind::Spawn(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Debug for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.kind, f)
    }
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.kind {
            Kind::Remote(r) => write!(f, "the task failed: {r}"),
            Kind::WorkerDied { pid, status } => {
                write!(f, "the worker (pid {pid}) died holding the task: {status}")
            }
            Kind::Timeout => f.write_str("timed out waiting for the result"),
            Kind::NotRunning { terminated: false } => f.write_str("pool is closed"),
            Kind::NotRunning { terminated: true } => f.write_str("pool is terminated"),
            Kind::Terminated => f.write_str("pool was terminated before the task completed"),
            Kind::JoinWhileRunning => f.write_str("pool must be closed or terminated before join"),
            Kind::NotReady => f.write_str("result is not ready"),
            Kind::Serialize(_) => f.write_str("arguments could not be serialized"),
            Kind::Arguments(r) => write!(f, "the worker could not decode the arguments: {r}"),
            Kind::Result(r) => write!(f, "the worker could not serialize the result: {r}"),
            Kind::Decode { expected, .. } => write!(f, "result did not decode as {expected}"),
            Kind::Initializer(r) => write!(f, "the pool initializer failed: {r}"),
            Kind::Spawn(e) => write!(f, "a pool worker could not be started: {e}"),
            Kind::Protocol(why) => write!(f, "a pool worker broke the protocol: {why}"),
        }
    }
}

impl std::error::Error for PoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.kind {
            Kind::Remote(r) | Kind::Arguments(r) | Kind::Result(r) | Kind::Initializer(r) => {
                Some(r)
            }
            Kind::Serialize(e) => Some(e),
            Kind::Decode { err, .. } => Some(err),
            Kind::Spawn(e) => Some(e),
            _ => None,
        }
    }
}
