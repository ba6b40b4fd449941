//! Linux system calls with `unsafe` in them: the only such code in procvisor-worker.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::Signal;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use nix::unistd::ForkResult;

use crate::entry::EntryFn;

/// The boot constructor, run by the C runtime before `main` (`.init_array`).
///
/// `#[used]` keeps the compiler from dropping it; [`ensure_ctor_linked`] keeps the linker
/// from leaving its object file out.
#[used]
#[unsafe(link_section = ".init_array")]
static BOOT_CTOR: extern "C" fn() = boot_ctor;

extern "C" fn boot_ctor() {
    // A panic cannot unwind out of an `extern "C"` function: it aborts, which is what a
    // broken boot should do.
    crate::boot::on_load();
}

pub(crate) fn ensure_ctor_linked() {
    std::hint::black_box(&BOOT_CTOR);
}

/// The anchor that entry offsets are measured from.
pub(crate) fn anchor_addr() -> usize {
    boot_ctor as extern "C" fn() as usize
}

pub(crate) fn entry_at(offset: i64) -> EntryFn {
    let addr = anchor_addr().wrapping_add_signed(offset as isize);
    // SAFETY: `offset` came from `entry::offset_of` in a process running this same
    // executable (the trust rule in `entry`): the image moves as a whole under ASLR, so
    // anchor + offset is the address of that same `EntryFn` here, and a fn pointer has the
    // size and representation of a usize.
    unsafe { std::mem::transmute::<usize, EntryFn>(addr) }
}

pub(crate) fn conjure_zst<F>() -> F {
    assert_eq!(std::mem::size_of::<F>(), 0);
    // SAFETY: `F` is zero-sized (checked above) and, per `entry::zero_sized_callable`, a fn
    // item or a closure capturing nothing of size: an inhabited type with no bytes, so the
    // dangling aligned pointer reads no memory and yields a valid value.
    unsafe { std::ptr::NonNull::<F>::dangling().as_ptr().read() }
}

pub(crate) fn remove_env_before_main(name: &str) {
    // SAFETY: called from the `.init_array` constructor, before `main` and before any
    // thread of ours exists, so nothing reads the environment concurrently.
    unsafe { std::env::remove_var(name) }
}

pub(crate) fn fd_is_open(fd: RawFd) -> bool {
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_ok()
}

pub(crate) fn pidfd_open(pid: i32) -> nix::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1; no memory
    // is passed. PIDFD_NONBLOCK is not asked for; the descriptor is close-on-exec.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just created this descriptor for us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

pub(crate) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: i32) -> nix::Result<()> {
    // SAFETY: a valid descriptor, a signal number, a null siginfo (allowed: the kernel
    // fills in a default one) and no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    Errno::result(r).map(drop)
}

pub(crate) fn waitpid_raw(pid: i32, nohang: bool) -> nix::Result<Option<i32>> {
    let flags = if nohang { libc::WNOHANG } else { 0 };
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid place for the kernel to write the status into; `pid`
        // is positive, so this waits for that one child only.
        let r = unsafe { libc::waitpid(pid, &mut status, flags) };
        match r {
            0 => return Ok(None),
            -1 if Errno::last() == Errno::EINTR => continue,
            -1 => return Err(Errno::last()),
            _ => return Ok(Some(status)),
        }
    }
}

pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` has no preconditions; it ends the process without running atexit
    // handlers, which belong to the parent we may have been forked from.
    unsafe { libc::_exit(code) }
}

/// Closes a descriptor number that this process owns and nothing else will close: the
/// server's and the siblings' descriptors in a forkserver child, which inherits the
/// numbers without the owners that would close them. A plain `close(2)` here, rather than
/// `nix`'s, keeps the child's path in this crate's code (a child maps every page of code it
/// runs, and each page it touches maps its neighbours too).
pub(crate) fn close_inherited(fd: RawFd) {
    // SAFETY: `close` takes any number; the caller owns `fd`, and no `OwnedFd` or other
    // owner of it runs in this process any more (it leaves with `_exit`), so it is closed
    // once.
    let _ = unsafe { libc::close(fd) };
}

// The next two run in every forkserver child, so they call libc directly: `nix`'s wrappers
// would be more pages of code for the child to map (see `close_inherited`).

pub(crate) fn set_disposition(signal: Signal, default: bool) {
    let handler = if default {
        libc::SIG_DFL
    } else {
        libc::SIG_IGN
    };
    // SAFETY: SIG_DFL and SIG_IGN are not handler functions, so no code of ours can run in
    // signal context because of this call; `signal` is a valid signal number.
    unsafe { libc::signal(signal as libc::c_int, handler) };
}

pub(crate) fn set_comm(name: &[u8]) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes, which `buf` is
    // (its last byte stays 0), and keeps no pointer to it.
    unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr()) };
}

pub(crate) fn die_with_parent(expected_parent: i32) {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and touches no memory of ours;
    // `getppid` and `kill` of our own pid take plain integers.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        if libc::getppid() != expected_parent {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

pub(crate) fn signals_blocked() -> bool {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::zeroed();
    // SAFETY: with a null new set, `pthread_sigmask` only writes the current mask into
    // `set`, a valid, writable `sigset_t`.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), set.as_mut_ptr()) };
    // SAFETY: `set` was zero-initialised and is plain bytes; any bit set is a signal.
    let bytes: [u8; std::mem::size_of::<libc::sigset_t>()] = unsafe { std::mem::transmute(set) };
    bytes.iter().any(|&b| b != 0)
}

pub(crate) fn unblock_signals() {
    // On Linux an all-zero `sigset_t` is the empty set (what `sigemptyset` writes); made
    // here without calling it, since a `fork` child maps each libc page it runs.
    let set = std::mem::MaybeUninit::<libc::sigset_t>::zeroed();
    // SAFETY: `set` is initialised (all zero); a null old-set pointer is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut()) };
}

pub(crate) fn fork_single_threaded() -> nix::Result<ForkResult> {
    // SAFETY: only the forkserver calls this, and the forkserver never starts a thread (it
    // runs from the boot constructor, before `main`, and serves in a plain loop), so the
    // child is a whole copy of a single-threaded process and may run any code.
    unsafe { nix::unistd::fork() }
}

pub(crate) fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> nix::Result<usize> {
    let mut cmsg = nix::cmsg_space!([RawFd; 8]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let n = msg.bytes;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            for fd in raw {
                // SAFETY: SCM_RIGHTS installed these descriptors in our table for this
                // message alone; nothing else knows their numbers yet.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Ok(n)
}

/// Writes all of `bytes` to a descriptor known only by number; false on any error.
pub(crate) fn write_raw(fd: RawFd, bytes: &[u8]) -> bool {
    if !fd_is_open(fd) {
        return false;
    }
    // SAFETY: the descriptor was checked to be open just above and is only borrowed for
    // this call; the caller (a test hook) names this worker's own control socket.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let mut done = 0;
    while done < bytes.len() {
        match nix::unistd::write(borrowed, &bytes[done..]) {
            Ok(n) => done += n,
            Err(Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
    true
}
