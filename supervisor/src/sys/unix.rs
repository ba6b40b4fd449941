//! Linux system calls with `unsafe` in them: the only such code in the `procvisor` crate.

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::libc;
use nix::sys::signal::Signal;

use nix::unistd::{ForkResult, Pid, getppid};

/// Forks the calling process for the `fork` start method, and nothing else.
///
/// When the process has more than one thread, the child may only call async-signal-safe
/// functions until it execs or exits; anything else can deadlock on a lock another thread
/// held at the moment of the fork.
pub(crate) fn fork_for_fork_method() -> nix::Result<ForkResult> {
    // SAFETY: this is the documented `fork` start method, chosen by the user; its hazard in
    // a threaded parent is stated on `StartMethod::Fork`. Memory safety holds in the child
    // (it is a copy of this process); what can go wrong is a deadlock on an inherited lock,
    // which is the documented contract.
    unsafe { nix::unistd::fork() }
}

/// One of a child's descriptors, kept open by the `Arc` for as long as the reactor
/// watches it.
pub(crate) struct ChildFd {
    child: std::sync::Arc<crate::child::Child>,
    control: bool,
}

impl std::os::fd::AsRawFd for ChildFd {
    fn as_raw_fd(&self) -> RawFd {
        if self.control {
            self.child.control_fd().as_raw_fd()
        } else {
            self.child.sentinel().as_raw_fd()
        }
    }
}

/// Registers a child's sentinel (or, with `control`, its control socket) with the current
/// tokio reactor for readability.
pub(crate) fn watch_readable(
    child: std::sync::Arc<crate::child::Child>,
    control: bool,
) -> std::io::Result<tokio::io::unix::AsyncFd<ChildFd>> {
    let fd = ChildFd { child, control };
    // SAFETY: `ChildFd` holds an `Arc` of the `Child`, which owns both descriptors and
    // closes them only when dropped, and never replaces them: for the whole life of the
    // `AsyncFd` the number stays open and names the same open file description.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// Registers a descriptor that stays open for the rest of the process with the current
/// tokio reactor for readability.
pub(crate) fn watch_forever(
    fd: std::os::fd::BorrowedFd<'static>,
) -> std::io::Result<tokio::io::unix::AsyncFd<std::os::fd::BorrowedFd<'static>>> {
    // SAFETY: a descriptor borrowed for `'static` is never closed, so for the whole life of
    // the `AsyncFd` the number names the same open file description.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// Registers a socket with the current tokio reactor for `interest` alone.
pub(crate) fn register_socket(
    sock: std::os::unix::net::UnixStream,
    interest: tokio::io::Interest,
) -> std::io::Result<tokio::io::unix::AsyncFd<std::os::unix::net::UnixStream>> {
    // SAFETY: the `AsyncFd` owns the `UnixStream`, which owns its descriptor and closes it
    // only when dropped, after the `AsyncFd` has deregistered it; nothing can replace the
    // descriptor while it is registered, since no one else holds it.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(sock, interest) }
        .map_err(|e| e.into_parts().1)
}

/// Arranges for `cmd`, once spawned, to die (SIGKILL) when the thread that spawned it ends,
/// `parent` being the spawning process's pid, and then, as the last thing before exec, to
/// tell the group guard on `guard` that it leads a process group to kill if `parent` dies.
/// A supervised external command never outlives its supervisor, even one that is
/// SIGKILLed, and neither does what it leaves in its group.
///
/// `cmd` must make its own process group (`process_group(0)`, which std does before the
/// hooks run): the note names the child's pid as the group's id.
pub(crate) fn die_with_spawner(cmd: &mut Command, parent: Pid, guard: RawFd) {
    let hook = move || {
        die_with_parent(parent)?;
        // SAFETY: `guard` is the program's end of the guard's socket, open in the parent
        // for as long as the spawn lasts (the guard's lock is held across it), so open in
        // this copy of the parent's descriptor table until exec closes it (CLOEXEC).
        let guard = unsafe { std::os::fd::BorrowedFd::borrow_raw(guard) };
        // A guard that is gone is not a reason not to run: the command still dies with us,
        // only what it leaves behind may not. The parent tells a new guard.
        let note = procvisor_worker::guard::Note::Track(nix::unistd::getpid().as_raw());
        let _ = procvisor_worker::guard::send_note(guard, note);
        Ok(())
    };
    // SAFETY: the hook makes only async-signal-safe system calls (prctl, getppid, raise,
    // getpid, send, poll), allocates nothing and takes no lock, as `pre_exec` requires.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// Between fork and exec: SIGKILL on the spawning thread's end, and at once if the parent
/// is already gone.
fn die_with_parent(parent: Pid) -> nix::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    if getppid() != parent {
        // The parent died before the request: do what the signal would have.
        nix::sys::signal::raise(Signal::SIGKILL)?;
    }
    Ok(())
}

/// Starts the program at `path` with `argv` and `envp` through `posix_spawn(3)`, which
/// glibc makes with `clone(CLONE_VM | CLONE_VFORK)`: the parent's page tables are not
/// copied (a `fork` copies them, and a large parent pays for every mapping), and no code of
/// ours runs in the child before `exec`, so this is as safe in a threaded process as
/// `std::process::Command`.
///
/// The child inherits `keep_fd` (its close-on-exec flag is cleared in the child only, the
/// POSIX rule for a `dup2` file action onto itself), gets `/dev/null` as standard input,
/// and, as `Command` gives them, an empty signal mask and SIGPIPE at its default. With
/// `own_group` it leads a process group of its own. Returns the child's pid.
pub(crate) fn spawn(
    path: &CStr,
    argv: &[CString],
    envp: &[CString],
    keep_fd: RawFd,
    own_group: bool,
) -> nix::Result<i32> {
    fn check(rc: libc::c_int) -> nix::Result<()> {
        if rc == 0 {
            Ok(())
        } else {
            Err(nix::errno::Errno::from_raw(rc))
        }
    }
    let null_terminated = |strings: &[CString]| {
        let mut ptrs: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        ptrs
    };
    let (argv, envp) = (null_terminated(argv), null_terminated(envp));
    let mut actions = std::mem::MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit();
    let mut attr = std::mem::MaybeUninit::<libc::posix_spawnattr_t>::uninit();
    let (actions, attr) = (actions.as_mut_ptr(), attr.as_mut_ptr());
    // SAFETY: both objects are initialised in place before any other use and destroyed
    // once, when the guards drop, without having moved; every pointer passed lives until
    // `posix_spawn` returns (`/dev/null` is a static C string, `argv` and `envp` end in a
    // null pointer and point into `CString`s the caller holds); the signal set is
    // initialised by `sigemptyset` before use.
    unsafe {
        check(libc::posix_spawn_file_actions_init(actions))?;
        let _actions = OnDrop(|| {
            libc::posix_spawn_file_actions_destroy(actions);
        });
        check(libc::posix_spawnattr_init(attr))?;
        let _attr = OnDrop(|| {
            libc::posix_spawnattr_destroy(attr);
        });
        check(libc::posix_spawn_file_actions_adddup2(
            actions, keep_fd, keep_fd,
        ))?;
        check(libc::posix_spawn_file_actions_addopen(
            actions,
            0,
            c"/dev/null".as_ptr(),
            libc::O_RDONLY,
            0,
        ))?;
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(set.as_mut_ptr());
        check(libc::posix_spawnattr_setsigmask(attr, set.as_ptr()))?;
        libc::sigaddset(set.as_mut_ptr(), libc::SIGPIPE);
        check(libc::posix_spawnattr_setsigdefault(attr, set.as_ptr()))?;
        let mut flags = libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
        if own_group {
            check(libc::posix_spawnattr_setpgroup(attr, 0))?;
            flags |= libc::POSIX_SPAWN_SETPGROUP;
        }
        check(libc::posix_spawnattr_setflags(attr, flags as libc::c_short))?;
        let mut pid: libc::pid_t = 0;
        check(libc::posix_spawn(
            &mut pid,
            path.as_ptr(),
            actions,
            attr,
            argv.as_ptr().cast::<*mut libc::c_char>(),
            envp.as_ptr().cast::<*mut libc::c_char>(),
        ))?;
        Ok(pid)
    }
}

/// Runs its closure when dropped: the clean-up of a C object on every way out.
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// Registers `f` to run when the program exits normally (`atexit(3)`).
pub(crate) fn at_exit(f: extern "C" fn()) {
    // SAFETY: `f` is a plain function that lives for the whole program.
    unsafe {
        libc::atexit(f);
    }
}

/// This process's pid, cached; 0 until first asked, and again in a `fork` child.
static PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// In a fork child, before anything else runs: the cached pid is the parent's.
/// Async-signal-safe (one atomic store).
extern "C" fn forget_pid_in_child() {
    PID.store(0, std::sync::atomic::Ordering::Relaxed);
}

/// This process's pid, like `std::process::id()` but without a system call after the
/// first: for paths that check "is this still the process that made it?" on every call
/// (a manager proxy's cached connection). A `fork` child (through libc's `fork`, which is
/// how every fork of procvisor, nix and std is made) forgets the cached value before it
/// returns from `fork`, so it never sees its parent's pid.
///
/// Only such per-call paths use it. Once it has been called, every fork child runs the
/// handler that forgets the value, which maps one more page of code and copies one more
/// page of data in the child: about 4 us, against 0.1 us for a `getpid`. The start
/// paths call `getpid` a handful of times per start, and a program that never uses a
/// manager proxy forks without the handler. In 2,000 fork start+joins, 214 -> 200 us.
pub(crate) fn current_pid() -> u32 {
    use std::sync::atomic::Ordering::Relaxed;
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let cached = PID.load(Relaxed);
    if cached != 0 {
        return cached;
    }
    let me = std::process::id();
    let registered = *REGISTERED.get_or_init(|| {
        // SAFETY: `forget_pid_in_child` is a plain function that lives for the whole
        // program and only does an atomic store, which is async-signal-safe, as a fork
        // child handler must be.
        unsafe { libc::pthread_atfork(None, None, Some(forget_pid_in_child)) == 0 }
    });
    // Cached only once the handler is in place, so that no fork copies a cached pid
    // without forgetting it; without the handler (ENOMEM), every call asks the kernel.
    if registered {
        PID.store(me, Relaxed);
    }
    me
}

#[path = "shm.rs"]
pub(crate) mod shm;

#[cfg(test)]
mod tests {
    use nix::sys::wait::{WaitStatus, waitpid};

    use super::*;

    #[test]
    fn the_cached_pid_is_this_process_s_and_a_fork_child_s_own() {
        assert_eq!(current_pid(), std::process::id());
        assert_eq!(current_pid(), std::process::id(), "cached");
        // SAFETY: the test process has other threads, so the child calls only
        // async-signal-safe functions: `current_pid` (atomic loads, `getpid`, and no
        // registration, which happened above), `getpid` and `_exit`.
        match unsafe { nix::unistd::fork() }.unwrap() {
            ForkResult::Child => {
                // SAFETY: `getpid` is async-signal-safe and cannot fail.
                let ok = current_pid() == unsafe { libc::getpid() } as u32;
                // SAFETY: `_exit` is async-signal-safe and runs no cleanup of the parent's.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            ForkResult::Parent { child } => {
                assert_eq!(
                    waitpid(child, None).unwrap(),
                    WaitStatus::Exited(child, 0),
                    "the child saw its own pid, not its parent's"
                );
            }
        }
        assert_eq!(current_pid(), std::process::id());
    }
}
