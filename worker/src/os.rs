//! The system calls procvisor needs beyond what `std` and `nix` wrap safely: pidfds,
//! descriptor passing, the parent-death signal, and leaving with `_exit`.
//!
//! Every `unsafe` block of this crate lives in the private `imp` module behind this one.
//!
//! ```
//! use std::os::fd::AsFd;
//! let me = procvisor_worker::os::pidfd_open(std::process::id() as i32)?;
//! // Signal 0 checks that the process exists without disturbing it.
//! procvisor_worker::os::pidfd_check(me.as_fd())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use nix::unistd::ForkResult;
use procvisor_protocol::{FrameDecoder, HEADER_LEN, Message, ReadError};

#[cfg(target_os = "linux")]
#[path = "sys/unix.rs"]
mod imp;

pub(crate) use imp::{
    anchor_addr, conjure_zst, ensure_ctor_linked, entry_at, fd_is_open, remove_env_before_main,
    write_raw,
};

/// Opens a pidfd for `pid` (`pidfd_open(2)`): a descriptor that becomes readable when the
/// process ends and that signals exactly that process, whatever later reuses its pid.
pub fn pidfd_open(pid: i32) -> nix::Result<OwnedFd> {
    imp::pidfd_open(pid)
}

/// Sends `signal` through a pidfd (`pidfd_send_signal(2)`).
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: Signal) -> nix::Result<()> {
    imp::pidfd_send_signal(pidfd, signal as i32)
}

/// Checks that the process behind a pidfd still exists (signal 0); `ESRCH` once it has
/// ended.
pub fn pidfd_check(pidfd: BorrowedFd<'_>) -> nix::Result<()> {
    imp::pidfd_send_signal(pidfd, 0)
}

/// `waitpid(pid)` for one known child, returning its raw wait status; `None` when
/// `nohang` is set and the child is still running. Retries on `EINTR`.
pub fn waitpid_raw(pid: i32, nohang: bool) -> nix::Result<Option<i32>> {
    imp::waitpid_raw(pid, nohang)
}

/// Asks for SIGKILL when the thread that forked us ends, and closes the race where that
/// already happened before the request: if our parent is no longer `expected_parent`, we
/// kill ourselves at once.
pub fn die_with_parent(expected_parent: i32) {
    imp::die_with_parent(expected_parent)
}

/// Closes `fd` with a plain `close(2)`, ignoring errors: for a `fork` child closing the
/// numbers it inherited without their owners. Async-signal-safe; and one function for all
/// such closes, so that a child maps one page of code for them, not one per wrapper.
pub fn close_fd(fd: RawFd) {
    imp::close_inherited(fd)
}

/// Whether the calling thread blocks any signal: a `fork` child starts with the mask of the
/// thread that forked it, and one that blocks SIGTERM could not be terminated.
pub fn signals_blocked() -> bool {
    imp::signals_blocked()
}

/// Unblocks every signal for the calling thread (see [`signals_blocked`]).
pub fn unblock_signals() {
    imp::unblock_signals()
}

/// Ends the process at once with `code`, running no `atexit` handler and no destructor.
pub fn exit_now(code: i32) -> ! {
    imp::exit_now(code)
}

/// Ignores `signal` in this process.
pub fn ignore_signal(signal: Signal) {
    imp::set_disposition(signal, false)
}

/// Restores the default action of `signal` in this process.
pub fn default_signal(signal: Signal) {
    imp::set_disposition(signal, true)
}

/// Names this process (its `comm`: what `ps`, `top` and `pkill` match) after its program
/// file, as an exec by the file's path would have. A process started through
/// `/proc/self/exe` is otherwise named `exe`.
pub(crate) fn name_after_program() {
    use std::os::unix::ffi::OsStrExt;
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let Some(name) = exe.file_name() else {
        return;
    };
    let name = name.as_bytes();
    // The kernel's mark of a program file replaced or removed since it started.
    imp::set_comm(name.strip_suffix(b" (deleted)").unwrap_or(name));
}

pub(crate) fn ignore_sigpipe() {
    ignore_signal(Signal::SIGPIPE)
}

/// Forks a process that has exactly one thread.
pub(crate) fn fork_single_threaded() -> nix::Result<ForkResult> {
    imp::fork_single_threaded()
}

/// Sends all of `data` on a Unix socket with `fds` attached to the first byte.
/// `MSG_NOSIGNAL` keeps a closed peer an `EPIPE` error instead of a signal.
pub fn send_with_fds(sock: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> nix::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let mut sent = 0;
    while sent < data.len() {
        let cmsg = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage<'_>] = if sent == 0 && !raw.is_empty() {
            &cmsg
        } else {
            &[]
        };
        match sendmsg::<()>(
            sock.as_raw_fd(),
            &[IoSlice::new(&data[sent..])],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(n) => sent += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads frames, and the descriptors sent with them, from a blocking Unix socket, keeping
/// bytes that arrived beyond one frame for the next call.
///
/// Which frame a descriptor belongs to: a sender attaches descriptors to the first
/// `sendmsg` of a frame, and the kernel ends a `recvmsg` right after a segment that carried
/// descriptors, so they belong to the frame holding the *last* byte that `recvmsg`
/// returned — even when bytes of an earlier frame came in the same read.
///
/// ```
/// use std::os::fd::AsFd;
/// use std::os::unix::net::UnixStream;
/// use procvisor_protocol::{encode, Message};
/// use procvisor_worker::os::{send_with_fds, FrameReader};
/// let (a, b) = UnixStream::pair()?;
/// send_with_fds(a.as_fd(), &encode(&Message::Ping(1))?, &[])?;
/// send_with_fds(a.as_fd(), &encode(&Message::Ping(2))?, &[a.as_fd()])?;
/// let mut reader = FrameReader::new(1 << 20);
/// let (first, fds) = reader.read(b.as_fd())?;
/// assert_eq!((first, fds.len()), (Message::Ping(1), 0));
/// assert!(reader.has_buffered());
/// let (second, fds) = reader.read(b.as_fd())?;
/// assert_eq!((second, fds.len()), (Message::Ping(2), 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct FrameReader {
    decoder: FrameDecoder,
    buf: Vec<u8>,
    have: usize,
    /// Descriptors received, each with the buffer position of the frame byte it came with.
    fds: Vec<(usize, OwnedFd)>,
}

impl FrameReader {
    /// A reader whose frames may carry at most `max_len` payload bytes.
    pub fn new(max_len: usize) -> Self {
        FrameReader {
            decoder: FrameDecoder::with_max_len(max_len),
            buf: vec![0; 4096],
            have: 0,
            fds: Vec::new(),
        }
    }

    /// Whether bytes of a next frame are already here: a caller that polls the socket
    /// before calling [`read`](Self::read) again must not wait for them to arrive twice.
    pub fn has_buffered(&self) -> bool {
        self.have > 0
    }

    /// Blocks until one whole frame has arrived; returns it with the descriptors that were
    /// sent with it.
    pub fn read(&mut self, sock: BorrowedFd<'_>) -> Result<(Message, Vec<OwnedFd>), ReadError> {
        loop {
            match self.decoder.decode(&self.buf[..self.have]) {
                Ok(Some((msg, used))) => {
                    self.buf.copy_within(used..self.have, 0);
                    self.have -= used;
                    let (mine, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.fds)
                        .into_iter()
                        .partition(|(at, _)| *at < used);
                    self.fds = later.into_iter().map(|(at, fd)| (at - used, fd)).collect();
                    return Ok((msg, mine.into_iter().map(|(_, fd)| fd).collect()));
                }
                Ok(None) => {}
                Err(e) => return Err(e.into()),
            }
            let want = match self.buf[..self.have].first_chunk::<HEADER_LEN>() {
                Some(h) => HEADER_LEN + self.decoder.payload_len(*h)?,
                None => HEADER_LEN,
            };
            if self.buf.len() < want {
                self.buf.resize(want, 0);
            }
            let mut fds = Vec::new();
            let n = match imp::recv_with_fds(sock, &mut self.buf[self.have..], &mut fds) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(ReadError::Io(e.into())),
            };
            if n == 0 {
                self.decoder.finish(&self.buf[..self.have])?;
                return Err(ReadError::Eof);
            }
            let last = self.have + n - 1;
            self.fds.extend(fds.into_iter().map(|fd| (last, fd)));
            self.have += n;
        }
    }
}
