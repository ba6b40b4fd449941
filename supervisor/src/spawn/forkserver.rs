//! The `forkserver` start method, parent side: starting the server and asking it for
//! workers. The server itself lives in `procvisor-worker`.
//!
//! The server is started on first use and shared by every thread of this process; one
//! request is in flight at a time (a `Spawn` frame out, a `Spawned` frame back). If the
//! server has died — someone killed it — the next request starts a new one.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use procvisor_protocol::{
    DEFAULT_MAX_FRAME_LEN, Hello, Message, ReadError, Start, encode, encode_into,
};
use procvisor_worker::FORKSERVER_ENV;
use procvisor_worker::os::{self as wos, FrameReader};

use super::{Launched, spawn_error};
use crate::child::Sentinel;
use crate::error::{Error, Kind};

struct Server {
    owner: u32,
    pid: i32,
    sock: UnixStream,
    reader: FrameReader,
}

/// The server of this process; `None` until first use or after it died.
static SERVER: Mutex<Option<Server>> = Mutex::new(None);

/// The raw number of the server socket, so that a child made by `fork` can close its
/// inherited copy without touching the lock above, which another thread may have held at
/// the moment of the fork.
static SERVER_FD: AtomicI32 = AtomicI32::new(-1);

/// Closes the copy of the server socket that a `fork` child inherited: otherwise the server
/// would not see the parent's exit while the child lives.
pub(crate) fn close_inherited() {
    close_recorded(&SERVER_FD);
}

/// Closes the descriptor whose number `slot` holds (-1: none), in a `fork` child, and
/// forgets the number: the child may reuse it for a descriptor of its own, which a fork of
/// the child must not close as if it were this one. Async-signal-safe: one atomic swap and
/// `close`.
pub(crate) fn close_recorded(slot: &AtomicI32) {
    let fd = slot.swap(-1, Ordering::Relaxed);
    if fd >= 0 {
        wos::close_fd(fd);
    }
}

/// Holds the server lock across a `fork` (see `spawn::fork`).
pub(crate) fn lock_for_fork() -> impl Sized {
    SERVER.lock().unwrap_or_else(|p| p.into_inner())
}

enum Failure {
    /// The server is gone; a new one may do better.
    ServerGone(String),
    /// The server answered that it could not fork.
    Refused(Errno),
}

pub(crate) fn launch(start: Start, handles: Vec<OwnedFd>) -> Result<Launched, Error> {
    let mut request = Vec::with_capacity(start.args.len() + 256);
    encode_into(&Message::Spawn(start), &mut request, DEFAULT_MAX_FRAME_LEN)
        .map_err(|e| Error::new(Kind::Serialize(e)))?;
    let (parent_end, child_end) = super::control_pair()?;
    let (status_r, status_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(spawn_error)?;

    let mut guard = SERVER.lock().unwrap_or_else(|p| p.into_inner());
    let me = std::process::id();
    if guard.as_ref().is_some_and(|s| s.owner != me) {
        // Inherited through `fork`: the socket was closed in the child; forget it.
        std::mem::forget(guard.take());
    }
    let mut last = String::new();
    for _attempt in 0..2 {
        if guard.is_none() {
            *guard = Some(start_server()?);
        }
        let server = guard.as_mut().expect("just set");
        let mut fds = vec![child_end.as_fd(), status_w.as_fd()];
        fds.extend(handles.iter().map(|h| h.as_fd()));
        match server.request(&request, &fds) {
            Ok((pid, pidfd)) => {
                return Ok(Launched {
                    pid,
                    pidfd,
                    sentinel: Sentinel::StatusPipe(status_r),
                    control: parent_end,
                    spent: None,
                });
            }
            Err(Failure::Refused(errno)) => return Err(spawn_error(errno)),
            Err(Failure::ServerGone(why)) => {
                let dead = guard.take().expect("just used");
                SERVER_FD.store(-1, Ordering::Relaxed);
                let _ = wos::waitpid_raw(dead.pid, true);
                last = why;
            }
        }
    }
    Err(Error::new(Kind::ForkServer(last)))
}

impl Server {
    fn request(
        &mut self,
        frame: &[u8],
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> Result<(i32, OwnedFd), Failure> {
        wos::send_with_fds(self.sock.as_fd(), frame, fds)
            .map_err(|e| Failure::ServerGone(format!("sending a request: {e}")))?;
        // Wait in `poll` for the answer, not in a blocking read: a thread blocked reading a
        // Unix stream socket also wakes when the peer consumes what it sent (the freed send
        // buffer wakes every waiter on the socket), so it would wake, find nothing and
        // sleep again as the server reads the request. `poll` waits for input alone. On
        // this VM each needless wake of an idle vCPU costs ~25 µs.
        // Whatever else `poll` says, the read below tells what the socket holds.
        let mut ready = [PollFd::new(self.sock.as_fd(), PollFlags::POLLIN)];
        while let Err(Errno::EINTR) = poll(&mut ready, PollTimeout::NONE) {}
        match self.reader.read(self.sock.as_fd()) {
            Ok((Message::Spawned { pid }, mut fds)) if fds.len() == 1 => {
                Ok((pid, fds.pop().expect("one descriptor")))
            }
            Ok((Message::SpawnFailed { errno }, _)) => {
                Err(Failure::Refused(Errno::from_raw(errno)))
            }
            Ok((other, _)) => Err(Failure::ServerGone(format!("unexpected answer {other:?}"))),
            Err(ReadError::Eof) => Err(Failure::ServerGone("the server exited".into())),
            Err(e) => Err(Failure::ServerGone(format!("reading its answer: {e:?}"))),
        }
    }
}

fn start_server() -> Result<Server, Error> {
    let gone = |what: &str| Error::new(Kind::ForkServer(what.to_owned()));
    let (ours, theirs) = super::control_pair()?;
    // No parent-death signal: the server may be started from a short-lived thread. It
    // watches its socket instead, which closes when this process ends in any way.
    let pid = super::exec::spawn_self(FORKSERVER_ENV, theirs.as_fd(), None, false)
        .map_err(spawn_error)?;
    drop(theirs);
    let mut server = Server {
        owner: std::process::id(),
        pid,
        sock: ours,
        reader: FrameReader::new(DEFAULT_MAX_FRAME_LEN),
    };
    let hello = encode(&Message::Hello(Hello::current())).expect("a hello always encodes");
    wos::send_with_fds(server.sock.as_fd(), &hello, &[]).map_err(|_| gone("it did not start"))?;
    match server.reader.read(server.sock.as_fd()) {
        Ok((Message::Hello(_), _)) => {}
        Ok(_) | Err(_) => {
            let _ = wos::waitpid_raw(pid, false);
            return Err(gone("it did not answer the handshake"));
        }
    }
    SERVER_FD.store(server.sock.as_raw_fd(), Ordering::Relaxed);
    Ok(server)
}
