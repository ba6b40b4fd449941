//! One started child, as the parent tracks it, and the registry of live children.
//!
//! A [`Child`] is shared by its `Process` handle, its `Worker` actor and the registry.
//! Whoever notices first that something happened — a blocking `join`, the actor woken by
//! the reactor, `active_children()` — calls [`Child::progress`], which reads what the child
//! wrote on its control socket and collects its exit status, without blocking and under
//! one lock, so every observer sees the same story once.
//!
//! The exit is learnt without polling and without `waitpid(-1)`: a pidfd for children of
//! this process (then `waitpid(pid)` for that pid only), or the status pipe that the
//! forkserver writes when it has reaped one of its own.

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, OnceLock, Weak};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use procvisor_protocol::{DecodeError, FrameDecoder, Message, RemoteError, Start};
use procvisor_worker::os as wos;

use crate::connection::poll_fds;
use crate::spawn::Launched;
use crate::status::ExitStatus;

/// The most bytes `pump` reads from a control socket before decoding them: a child that
/// streams garbage is caught by the decoder after at most this much.
const READ_CHUNK: u64 = 64 * 1024;

/// How the parent learns that a child ended.
#[derive(Debug)]
pub(crate) enum Sentinel {
    /// Our own child: its pidfd becomes readable, then `waitpid(pid)` reaps it.
    Pidfd,
    /// The forkserver's child: the server writes the raw wait status here.
    StatusPipe(OwnedFd),
}

/// What the child reported over its control socket.
#[derive(Debug, Clone)]
pub(crate) enum Report {
    Value(Vec<u8>),
    Panic(RemoteError),
    Protocol(DecodeError),
}

#[derive(Debug)]
struct State {
    exit: Option<ExitStatus>,
    report: Option<Report>,
    buf: Vec<u8>,
    control_done: bool,
    /// A `fork` child's start request, freed once the child has ended (see
    /// `Launched::spent`).
    spent: Option<Start>,
}

/// A started child process.
#[derive(Debug)]
pub(crate) struct Child {
    pub(crate) pid: i32,
    pub(crate) name: String,
    pub(crate) daemon: bool,
    pidfd: OwnedFd,
    sentinel: Sentinel,
    /// The worker protocol's socket; `None` for an external command, which speaks none.
    control: Option<UnixStream>,
    /// Leads a process group of its own (an external command): what is left of the group
    /// is killed when the leader ends, before the leader is reaped.
    group_leader: bool,
    /// Terminated (not only joined) by the exit rule, like a daemonic child: set for the
    /// children of a supervision tree, which would otherwise keep the program from ending.
    stop_at_exit: AtomicBool,
    /// Its Worker actor when that starts only on demand (see `worker::Lazy`): the
    /// Supervisor starts those of running children before it lists them.
    lazy_worker: OnceLock<Weak<crate::worker::Lazy>>,
    state: Mutex<State>,
}

impl Child {
    /// A worker child, from what its start method made.
    pub(crate) fn new(launched: Launched, name: String, daemon: bool) -> io::Result<Arc<Child>> {
        let Launched {
            pid,
            pidfd,
            sentinel,
            control,
            spent,
        } = launched;
        control.set_nonblocking(true)?;
        Ok(Self::build(
            pid,
            name,
            daemon,
            pidfd,
            sentinel,
            Some((control, spent)),
        ))
    }

    /// An external command of ours (no worker protocol), leading its own process group.
    pub(crate) fn command(pid: i32, name: String, pidfd: OwnedFd) -> Arc<Child> {
        Self::build(pid, name, false, pidfd, Sentinel::Pidfd, None)
    }

    /// `worker`: a worker's control socket and start request to keep; `None` for an
    /// external command, which leads a group of its own.
    fn build(
        pid: i32,
        name: String,
        daemon: bool,
        pidfd: OwnedFd,
        sentinel: Sentinel,
        worker: Option<(UnixStream, Option<Start>)>,
    ) -> Arc<Child> {
        let group_leader = worker.is_none();
        let (control, spent) = worker.map_or((None, None), |(c, s)| (Some(c), s));
        Arc::new(Child {
            pid,
            name,
            daemon,
            pidfd,
            sentinel,
            control,
            group_leader,
            stop_at_exit: AtomicBool::new(false),
            lazy_worker: OnceLock::new(),
            state: Mutex::new(State {
                exit: None,
                report: None,
                buf: Vec::new(),
                control_done: group_leader,
                spent,
            }),
        })
    }

    /// Has the exit rule terminate this child rather than wait for it.
    pub(crate) fn set_stop_at_exit(&self) {
        self.stop_at_exit.store(true, Ordering::Relaxed);
    }

    /// Records the on-demand Worker of this child (once).
    pub(crate) fn set_lazy_worker(&self, lazy: Weak<crate::worker::Lazy>) {
        let _ = self.lazy_worker.set(lazy);
    }

    /// The on-demand Worker of this child, if it has one that is still around.
    pub(crate) fn lazy_worker(&self) -> Option<Arc<crate::worker::Lazy>> {
        self.lazy_worker.get().and_then(Weak::upgrade)
    }

    fn stops_at_exit(&self) -> bool {
        self.daemon || self.stop_at_exit.load(Ordering::Relaxed)
    }

    /// Whether the child leads a process group of its own.
    pub(crate) fn is_group_leader(&self) -> bool {
        self.group_leader
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state whole; a panic inside one cannot tear it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The descriptor that becomes readable when the child ends.
    pub(crate) fn sentinel(&self) -> BorrowedFd<'_> {
        match &self.sentinel {
            Sentinel::Pidfd => self.pidfd.as_fd(),
            Sentinel::StatusPipe(fd) => fd.as_fd(),
        }
    }

    /// The control socket; a command has none, and its sentinel stands in (the control
    /// side of a command is never watched: `control_open` is false from the start).
    pub(crate) fn control_fd(&self) -> BorrowedFd<'_> {
        match &self.control {
            Some(c) => c.as_fd(),
            None => self.sentinel(),
        }
    }

    pub(crate) fn exit_status(&self) -> Option<ExitStatus> {
        self.lock().exit
    }

    pub(crate) fn report(&self) -> Option<Report> {
        self.lock().report.clone()
    }

    /// Whether the control socket still needs watching: it is open and the report has not
    /// come yet. The protocol has the child write nothing after its report, so what is left
    /// (the end of the stream, when the child closes it on its way out) is read when the
    /// exit is collected, rather than costing the watchers a wake-up of its own.
    pub(crate) fn control_open(&self) -> bool {
        let st = self.lock();
        !st.control_done && st.report.is_none()
    }

    /// Sends `signal` to the child unless it has already been reaped. The pidfd makes this
    /// safe against pid reuse.
    pub(crate) fn signal(&self, signal: Signal) -> nix::Result<()> {
        if self.lock().exit.is_some() {
            return Ok(());
        }
        match wos::pidfd_send_signal(self.pidfd.as_fd(), signal) {
            Err(Errno::ESRCH) => Ok(()),
            other => other,
        }
    }

    /// Reads what the child wrote and collects its exit, without blocking. Returns the exit
    /// status once the child has ended.
    pub(crate) fn progress(&self) -> Option<ExitStatus> {
        let mut st = self.lock();
        if st.exit.is_none() {
            self.pump(&mut st);
            if let Some(status) = self.try_collect() {
                st.exit = Some(status);
                st.spent = None;
                // The child is gone: whatever it wrote is in the socket by now, so what the
                // drain leaves unfinished is a torn frame — even when the drain ends on
                // EAGAIN rather than EOF because another process (a sibling between fork and
                // exec) briefly holds a copy of the child's end.
                self.pump(&mut st);
                Self::end_of_control(&mut st);
                drop(st);
                registry::forget(self);
                return Some(status);
            }
        }
        st.exit
    }

    fn try_collect(&self) -> Option<ExitStatus> {
        match &self.sentinel {
            Sentinel::Pidfd if self.group_leader => {
                // Kill what is left of the group while the leader is a zombie: its pid, which
                // is the group's id, cannot be reused until it is reaped. For the same
                // reason the group guard forgets the group now, not after the reap. A
                // leader still running is not reaped here at all: one that ended between
                // the check and a `WNOHANG` reap would skip both.
                match exited_unreaped(self.pid) {
                    Some(false) => return None,
                    Some(true) => {
                        let _ = nix::sys::signal::killpg(
                            nix::unistd::Pid::from_raw(self.pid),
                            Signal::SIGKILL,
                        );
                    }
                    // Not our child any more (reaped elsewhere): `reap` says so.
                    None => {}
                }
                crate::tree::untrack_group(self.pid);
                self.reap()
            }
            Sentinel::Pidfd => self.reap(),
            Sentinel::StatusPipe(fd) => {
                let mut raw = [0u8; 4];
                match nix::unistd::read(fd.as_raw_fd(), &mut raw) {
                    Ok(4) => Some(ExitStatus::from_raw(i32::from_le_bytes(raw))),
                    // The pipe closed without a status: the forkserver died first.
                    Ok(_) => Some(ExitStatus::lost()),
                    Err(Errno::EAGAIN) => None,
                    Err(_) => Some(ExitStatus::lost()),
                }
            }
        }
    }

    fn reap(&self) -> Option<ExitStatus> {
        match wos::waitpid_raw(self.pid, true) {
            Ok(Some(raw)) => Some(ExitStatus::from_raw(raw)),
            Ok(None) => None,
            // ECHILD: someone else reaped our child (a `waitpid(-1)` elsewhere in the
            // program). The status is lost; report it as such rather than hang.
            Err(_) => Some(ExitStatus::lost()),
        }
    }

    /// Drains the control socket into the buffer and decodes the frames in it.
    fn pump(&self, st: &mut State) {
        if st.control_done {
            return;
        }
        let Some(mut control) = self.control.as_ref() else {
            return;
        };
        // Read into the buffer's spare room rather than through a stack array: after each
        // `fork` every page this process writes takes a copy-on-write fault (and, with
        // other threads of ours on other CPUs, a TLB shootdown), and the zeroed 16 KiB
        // array this used to be was four such pages on every call, on two threads.
        st.buf.reserve(256);
        loop {
            let read = Read::by_ref(&mut control)
                .take(READ_CHUNK)
                .read_to_end(&mut st.buf);
            // What arrived is decoded before the end is judged: an end with bytes left over
            // is a torn frame only once the whole frames before it are out.
            let broke = self.decode(st);
            match read {
                // Short of the limit: the end of the stream.
                Ok(n) if (n as u64) < READ_CHUNK => {
                    Self::end_of_control(st);
                    break;
                }
                Ok(_) if broke => break,
                Ok(_) => continue,
                // (`read_to_end` retries `EINTR` itself.)
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    st.control_done = true;
                    break;
                }
            }
        }
    }

    /// Nothing more will come from the child: leftover bytes are a torn frame.
    fn end_of_control(st: &mut State) {
        if st.control_done {
            return;
        }
        st.control_done = true;
        if st.report.is_none() {
            if let Err(e) = FrameDecoder::new().finish(&st.buf) {
                st.report = Some(Report::Protocol(e));
            }
        }
    }

    /// Decodes whole frames; returns true when the child broke the protocol.
    fn decode(&self, st: &mut State) -> bool {
        let decoder = FrameDecoder::new();
        loop {
            match decoder.decode(&st.buf) {
                Ok(None) => return false,
                Ok(Some((msg, used))) => {
                    st.buf.drain(..used);
                    match msg {
                        Message::Hello(_) | Message::Pong(_) => {}
                        Message::Result(v) if st.report.is_none() => {
                            st.report = Some(Report::Value(v))
                        }
                        Message::Panic(r) if st.report.is_none() => {
                            st.report = Some(Report::Panic(r))
                        }
                        other => {
                            let reason = format!("unexpected message from a worker: {other:?}");
                            self.protocol_error(st, DecodeError::Malformed { reason });
                            return true;
                        }
                    }
                }
                Err(e) => {
                    self.protocol_error(st, e);
                    return true;
                }
            }
        }
    }

    fn protocol_error(&self, st: &mut State, e: DecodeError) {
        st.report = Some(Report::Protocol(e));
        st.control_done = true;
        st.buf = Vec::new();
        if st.exit.is_none() {
            // A child that speaks garbage cannot be trusted to stop on its own.
            let _ = wos::pidfd_send_signal(self.pidfd.as_fd(), Signal::SIGKILL);
        }
    }

    /// Blocks until the child has ended or `timeout` has passed; returns its status if it
    /// ended.
    pub(crate) fn wait(&self, timeout: Option<Duration>) -> Option<ExitStatus> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut yielded = false;
        loop {
            if let Some(status) = self.progress() {
                return Some(status);
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return None;
            }
            let control_open = self.control_open();
            if !control_open && !yielded {
                // The report is the last thing a child writes before it leaves. Its write
                // woke us, and the kernel, expecting the writer to sleep next, moved us to
                // the child's CPU: were we to sleep now, the child's exit would wake us
                // again, most often onto the other CPU. Yielding once lets the child
                // finish leaving here first. When it runs elsewhere, or has more to do
                // (its own exit rule joining its children), the yield returns at once and
                // we wait below as before. In 2,000 fork start+joins, the median went from
                // 289/299 to 231/238 us per start+join.
                yielded = true;
                std::thread::yield_now();
                continue;
            }
            // The control socket is watched too: a result larger than the socket buffer
            // must be drained for the child to finish writing it and exit.
            let mut fds = vec![self.sentinel()];
            if control_open {
                fds.push(self.control_fd());
            }
            poll_fds(&fds, left).expect("poll on a child's own descriptors does not fail");
        }
    }
}

/// Whether our child `pid` has ended but is not reaped yet (`waitid` with `WNOWAIT` leaves
/// it a zombie); `None` when it is not our child to wait for (reaped elsewhere).
fn exited_unreaped(pid: i32) -> Option<bool> {
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    match waitid(Id::Pid(nix::unistd::Pid::from_raw(pid)), flags) {
        Ok(WaitStatus::StillAlive) => Some(false),
        Ok(_) => Some(true),
        Err(_) => None,
    }
}

/// The live children of this process: what `active_children()` lists and what the exit
/// function waits for.
pub(crate) mod registry {
    use super::*;

    struct Registry {
        /// The process that owns these entries: a child made by `fork` inherits a copy of
        /// its parent's registry, which it must not mistake for its own children.
        owner: u32,
        children: Vec<Arc<Child>>,
    }

    static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
        owner: 0,
        children: Vec::new(),
    });

    fn lock() -> MutexGuard<'static, Registry> {
        let mut g = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
        let me = std::process::id();
        if g.owner != me {
            g.owner = me;
            // Inherited through fork: these are our siblings, not our children.
            g.children.clear();
        }
        g
    }

    /// Holds the registry lock across a `fork` (see `spawn::fork`).
    pub(crate) fn lock_for_fork() -> impl Sized {
        REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn add(child: Arc<Child>) {
        static AT_EXIT: Once = Once::new();
        AT_EXIT.call_once(|| crate::sys::at_exit(exit_function_c));
        // In every process that starts children, not only the first: see `set_exit_hook`.
        procvisor_worker::run::set_exit_hook(exit_function);
        lock().children.push(child);
    }

    pub(crate) fn forget(child: &Child) {
        lock()
            .children
            .retain(|c| !std::ptr::eq(Arc::as_ptr(c), child));
    }

    /// Every child still running, after collecting those that have ended.
    pub(crate) fn live() -> Vec<Arc<Child>> {
        let all: Vec<Arc<Child>> = lock().children.clone();
        all.into_iter().filter(|c| c.progress().is_none()).collect()
    }

    extern "C" fn exit_function_c() {
        exit_function();
    }

    /// Python's rule at exit: terminate daemonic children, then join every child.
    pub(crate) fn exit_function() {
        let live = live();
        for c in live.iter().filter(|c| c.stops_at_exit()) {
            let _ = c.signal(Signal::SIGTERM);
        }
        for c in &live {
            c.wait(None);
        }
    }
}
