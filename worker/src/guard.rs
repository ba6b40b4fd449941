//! The group guard: a tiny single-threaded re-exec of the program that kills the process
//! groups of supervised commands once the program is gone, however it went (SIGKILL
//! included), the way systemd's `KillMode=control-group` does, without cgroups.
//!
//! Why it exists: a supervised command runs in a process group of its own and dies with the
//! program through `PR_SET_PDEATHSIG`, but that signal reaches only the command itself.
//! What the command left in its group (`sh -c 'sleep 300 & exec sleep 301'`: the background
//! `sleep 300`) is re-parented to init when the program is SIGKILLed, and lives on. The
//! guard outlives the program by an instant: it holds one end of a `SOCK_SEQPACKET`
//! socket pair, and when the program's end closes (every copy of it: the program's, and a
//! command child's between fork and exec) it reads what is left, `killpg(pgid, SIGKILL)`s
//! every group still tracked, and exits.
//!
//! The conversation is one-way, in [`Note`]s of [`NOTE_LEN`] bytes:
//!
//! - [`Note::Track`] is sent **by the command's child itself**, between fork and exec, after
//!   it has made its process group: the guard knows of the group before the command can
//!   start anything in it. The guard opens a pidfd on the leader at once.
//! - [`Note::Untrack`] is sent by the program when the leader has ended, after it has killed
//!   the rest of the group and *before* it reaps the leader: until then the leader's pid —
//!   the group's id — cannot be reused, so the guard never kills a stranger's group that
//!   got the same number.
//!
//! A child whose exec fails is reaped inside `std`'s `spawn` without a `Note::Untrack`;
//! the guard drops such an entry by itself: every few seconds, and at every note, it
//! forgets the groups whose leader has been reaped (its pidfd says `ESRCH`) and which have no
//! member left, long before a pid could wrap around to the same number.
//!
//! The guard runs no child of its own and never calls `waitpid`; it sits in a process group
//! of its own (a `kill -9 -PGID` of the program's group does not take it with the program)
//! and ignores the terminal's signals: only its socket ends it.
//!
//! ```
//! use procvisor_worker::guard::Note;
//! let note = Note::Track(4242);
//! assert_eq!(Note::from_bytes(&note.to_bytes()), Some(note));
//! ```

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, killpg};
use nix::sys::socket::{MsgFlags, recv, send};
use nix::unistd::Pid;

use crate::os;

/// Environment variable naming the socket of a group guard (see [`crate::boot`]).
pub const GUARD_ENV: &str = "PROCVISOR_GROUP_GUARD_FD";

/// The length of every note on the wire: a little-endian `u32` kind (1 track, 2 untrack)
/// and a little-endian `i32` process group id.
///
/// ```
/// assert_eq!(procvisor_worker::guard::NOTE_LEN, 8);
/// ```
pub const NOTE_LEN: usize = 8;

/// How often the guard looks for groups that ended without a [`Note::Untrack`].
const PRUNE_EVERY_MS: u16 = 5000;

/// One message to the guard.
///
/// ```
/// use procvisor_worker::guard::Note;
/// assert_eq!(Note::Untrack(7).to_bytes(), [2, 0, 0, 0, 7, 0, 0, 0]);
/// assert_eq!(Note::from_bytes(&[9, 0, 0, 0, 7, 0, 0, 0]), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// A command leads this new process group: kill it if the program dies.
    Track(i32),
    /// The group's leader has ended and the rest of the group has been killed: forget it.
    Untrack(i32),
}

impl Note {
    /// The note's bytes on the wire.
    ///
    /// ```
    /// use procvisor_worker::guard::Note;
    /// assert_eq!(Note::Track(1).to_bytes(), [1, 0, 0, 0, 1, 0, 0, 0]);
    /// ```
    pub fn to_bytes(self) -> [u8; NOTE_LEN] {
        let (kind, pgid) = match self {
            Note::Track(p) => (1u32, p),
            Note::Untrack(p) => (2u32, p),
        };
        let mut out = [0; NOTE_LEN];
        out[..4].copy_from_slice(&kind.to_le_bytes());
        out[4..].copy_from_slice(&pgid.to_le_bytes());
        out
    }

    /// The note in `bytes`; `None` for anything but a well-formed note of a valid group id.
    ///
    /// ```
    /// use procvisor_worker::guard::Note;
    /// assert_eq!(Note::from_bytes(&Note::Untrack(3).to_bytes()), Some(Note::Untrack(3)));
    /// assert_eq!(Note::from_bytes(&Note::Track(0).to_bytes()), None);
    /// assert_eq!(Note::from_bytes(&[1, 0, 0]), None);
    /// ```
    pub fn from_bytes(bytes: &[u8]) -> Option<Note> {
        let bytes: &[u8; NOTE_LEN] = bytes.try_into().ok()?;
        let kind = u32::from_le_bytes(bytes[..4].try_into().expect("four bytes"));
        let pgid = i32::from_le_bytes(bytes[4..].try_into().expect("four bytes"));
        // 0 and 1 are never a command's group: 0 means "ours" to kill(2), 1 is init's.
        if pgid <= 1 {
            return None;
        }
        match kind {
            1 => Some(Note::Track(pgid)),
            2 => Some(Note::Untrack(pgid)),
            _ => None,
        }
    }
}

/// Sends `note` on the program's end of the guard's socket.
///
/// Async-signal-safe (`send` and `poll`, no allocation, no lock), so a child may call it
/// between fork and exec. The socket is not blocking: a full one (the guard has fallen
/// hundreds of notes behind, which its reading loop makes unlikely) is waited on for up to
/// one second, then `EAGAIN` is returned. `MSG_NOSIGNAL`: a guard that is gone is `EPIPE`.
///
/// ```
/// use std::os::fd::AsFd;
/// use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
/// use procvisor_worker::guard::{send_note, Note};
/// let (a, b) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::empty())?;
/// send_note(a.as_fd(), Note::Track(42))?;
/// let mut buf = [0; 16];
/// let n = nix::sys::socket::recv(std::os::fd::AsRawFd::as_raw_fd(&b), &mut buf, nix::sys::socket::MsgFlags::empty())?;
/// assert_eq!(Note::from_bytes(&buf[..n]), Some(Note::Track(42)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn send_note(sock: BorrowedFd<'_>, note: Note) -> nix::Result<()> {
    let bytes = note.to_bytes();
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    let mut waited = false;
    loop {
        match send(sock.as_raw_fd(), &bytes, flags) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) if !waited => {
                waited = true;
                let mut fds = [PollFd::new(sock, PollFlags::POLLOUT)];
                let _ = poll(&mut fds, PollTimeout::from(1000u16));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Called from boot with the guard's end of the socket; never returns.
pub(crate) fn serve(sock: OwnedFd) -> ! {
    // Ctrl-C, a hang-up or a TERM to the terminal's group is for the program; its end is
    // what ends us.
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        os::ignore_signal(s);
    }
    // The process group and the pidfd of its leader.
    let mut groups: HashMap<i32, OwnedFd> = HashMap::new();
    loop {
        let wait = if groups.is_empty() {
            PollTimeout::NONE
        } else {
            PollTimeout::from(PRUNE_EVERY_MS)
        };
        let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, wait) {
            Ok(0) => prune(&mut groups),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => break,
        }
        if !read_notes(sock.as_fd(), &mut groups) {
            break;
        }
    }
    for &pgid in groups.keys() {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
    os::exit_now(0)
}

/// Applies every note waiting on the socket; false once the program's end has closed.
fn read_notes(sock: BorrowedFd<'_>, groups: &mut HashMap<i32, OwnedFd>) -> bool {
    let mut buf = [0u8; 64];
    let mut any = false;
    loop {
        match recv(sock.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            // A zero-length read on a SOCK_SEQPACKET socket is its end (we send no empty
            // notes).
            Ok(0) => return false,
            Ok(n) => {
                any = true;
                match Note::from_bytes(&buf[..n]) {
                    Some(Note::Track(pgid)) => {
                        // ESRCH: the child's exec failed and std has reaped it already.
                        if let Ok(pidfd) = os::pidfd_open(pgid) {
                            groups.insert(pgid, pidfd);
                        }
                    }
                    Some(Note::Untrack(pgid)) => {
                        groups.remove(&pgid);
                    }
                    // Only our own program holds the other end; ignore what it cannot mean.
                    None => {}
                }
            }
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                if any {
                    prune(groups);
                }
                return true;
            }
            Err(_) => return false,
        }
    }
}

/// Forgets the groups whose leader was reaped without a [`Note::Untrack`] and that have no
/// member left: their number is free for the kernel to give to a stranger.
fn prune(groups: &mut HashMap<i32, OwnedFd>) {
    groups.retain(|&pgid, leader| {
        let reaped = os::pidfd_check(leader.as_fd()) == Err(Errno::ESRCH);
        let empty = || killpg(Pid::from_raw(pgid), None) == Err(Errno::ESRCH);
        !(reaped && empty())
    });
}
