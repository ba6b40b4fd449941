//! The messages a parent, a worker and the forkserver exchange.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{DecodeError, MAGIC, VERSION};

/// One control message: the payload of one frame.
///
/// Who sends what:
///
/// | message | from → to | meaning |
/// |---|---|---|
/// | [`Hello`](Message::Hello) | both ways, first | magic and version |
/// | [`Start`](Message::Start) | parent → worker | run this entry point with these arguments |
/// | [`Spawn`](Message::Spawn) | parent → forkserver | fork a worker that runs this start |
/// | [`Spawned`](Message::Spawned) | forkserver → parent | the worker's pid |
/// | [`SpawnFailed`](Message::SpawnFailed) | forkserver → parent | fork failed with this errno |
/// | [`Result`](Message::Result) | worker → parent | the target returned this value |
/// | [`Panic`](Message::Panic) | worker → parent | the target panicked |
/// | [`Ping`](Message::Ping) / [`Pong`](Message::Pong) | either way | liveness check, echoing the token |
/// | [`Shutdown`](Message::Shutdown) | parent → worker or forkserver | stop cleanly |
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// The first frame on every connection.
    Hello(Hello),
    /// Run a target.
    Start(Start),
    /// Ask the forkserver for a worker.
    Spawn(Start),
    /// The forkserver forked a worker with this pid.
    Spawned {
        /// Process id of the new worker.
        pid: i32,
    },
    /// The forkserver could not fork.
    SpawnFailed {
        /// The `errno` of the failed `fork`.
        errno: i32,
    },
    /// The target returned; its value, msgpack-encoded.
    Result(#[serde(with = "crate::bytes")] Vec<u8>),
    /// The target panicked (or its arguments did not decode).
    Panic(RemoteError),
    /// Liveness check.
    Ping(u64),
    /// Answer to [`Message::Ping`] with the same token.
    Pong(u64),
    /// Stop cleanly.
    Shutdown,
}

/// The handshake frame: who is speaking and which version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`].
    pub magic: String,
    /// The sender's [`VERSION`].
    pub version: u16,
    /// The sender's process id.
    pub pid: u32,
}

impl Hello {
    /// The hello this process sends.
    ///
    /// ```
    /// let h = procvisor_protocol::Hello::current();
    /// assert!(h.check().is_ok());
    /// ```
    pub fn current() -> Hello {
        Hello {
            magic: MAGIC.to_owned(),
            version: VERSION,
            pid: std::process::id(),
        }
    }

    /// Checks a peer's hello: the magic must match and the version must be ours.
    ///
    /// ```
    /// use procvisor_protocol::{Hello, DecodeError};
    /// let mut h = Hello::current();
    /// h.version = 99;
    /// assert!(matches!(h.check(), Err(DecodeError::UnknownVersion { got: 99, .. })));
    /// ```
    pub fn check(&self) -> Result<(), DecodeError> {
        if self.magic != MAGIC {
            return Err(DecodeError::Malformed {
                reason: format!("bad magic {:?} in hello", self.magic),
            });
        }
        if self.version != VERSION {
            return Err(DecodeError::UnknownVersion {
                got: self.version,
                supported: VERSION,
            });
        }
        Ok(())
    }
}

/// A process as its child knows it: Python's `parent_process()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// Process id.
    pub pid: i32,
    /// Process name (`MainProcess`, `Process-1`, …).
    pub name: String,
}

/// What a worker needs to run its target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    /// Which entry point: the offset of the entry trampoline from the worker crate's
    /// anchor, valid only within the same executable. Only ever taken from the trusted
    /// parent over a private channel.
    pub entry: i64,
    /// The target's arguments, msgpack-encoded.
    #[serde(with = "crate::bytes")]
    pub args: Vec<u8>,
    /// The worker's name.
    pub name: String,
    /// Python's `_identity`: `[1]` for `Process-1`, `[1, 2]` for `Process-1:2`.
    pub identity: Vec<u32>,
    /// The daemon flag.
    pub daemon: bool,
    /// The process that asked for this worker.
    pub parent: Peer,
    /// Which start method made this worker (`forkserver`, `spawn`, `fork`).
    pub start_method: String,
}

/// A failure inside a worker, carried back to the parent: Python's `RemoteTraceback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    /// The panic message.
    pub message: String,
    /// Where the panic happened, when known.
    pub location: Option<Location>,
    /// The name of the thread that panicked, when it has one.
    pub thread: Option<String>,
    /// A captured backtrace, when `RUST_BACKTRACE` asked for one.
    pub backtrace: Option<String>,
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(loc) = &self.location {
            write!(f, " at {loc}")?;
        }
        if f.alternate() {
            if let Some(bt) = &self.backtrace {
                write!(f, "\n{bt}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for RemoteError {}

/// A source location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// Source file.
    pub file: String,
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub column: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}
