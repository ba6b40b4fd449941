//! Start methods: how a child process comes to exist.
//!
//! - [`forkserver`](StartMethod::ForkServer), the default: a single-threaded server
//!   process, started once from this program, forks workers on request.
//! - [`spawn`](StartMethod::Spawn): a fresh start (`posix_spawn`) of this program in worker
//!   mode.
//! - [`fork`](StartMethod::Fork): fork of the caller; the only method that can run a
//!   capturing closure, and the only one with a hazard (see [`StartMethod::Fork`]).
//!
//! `spawn` and `fork` children are started by one long-lived thread of ours, the spawner:
//! the kernel's parent-death signal fires when the *thread* that created a child ends, so a
//! child created from a short-lived thread (a test, a request handler) would die with it.
//!
//! ```
//! use procvisor::StartMethod;
//! assert_eq!(StartMethod::default(), StartMethod::ForkServer);
//! assert_eq!("spawn".parse::<StartMethod>(), Ok(StartMethod::Spawn));
//! ```

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc;

use procvisor_protocol::{RemoteError, Start};
use procvisor_worker::entry::EntryFn;

use crate::child::Sentinel;
use crate::error::{Error, Kind};
use crate::per_process::PerProcess;

mod exec;
pub(crate) use exec::spawn_self;
mod fork;
pub(crate) mod forkserver;

/// How a child process is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StartMethod {
    /// A single-threaded server process, started from this program on first use, forks
    /// each worker. Fast, and safe whatever threads this program runs. The default, as in
    /// CPython 3.14 on Linux.
    #[default]
    ForkServer,
    /// A fresh start of this program (`posix_spawn`: a vfork-style clone and an exec),
    /// which boots as a worker before `main`. The cleanest start: the child shares nothing
    /// with the parent but what the arguments carry, and its cost does not grow with the
    /// parent's memory.
    Spawn,
    /// Fork of this very process. The child is a copy of the parent, so a capturing
    /// closure can run in it.
    ///
    /// # Hazard
    ///
    /// A multi-threaded parent (any program with an actix runtime, a thread pool, or the
    /// test harness) copies only the forking thread. A lock that another thread held at
    /// that instant — inside `malloc`, a logger, a `Mutex` of your own — stays locked
    /// forever in the child, which can then deadlock on its first use. procvisor's own
    /// runtime thread exists in any program that has started a process. Use `fork` only for
    /// closures that touch no such lock, or prefer `forkserver` and `spawn`.
    ///
    /// procvisor's own locks, and std's stdout and stderr, are held across the fork (as
    /// C's stdio does with its streams), so a thread printing at that instant delays the
    /// fork instead of hanging the child.
    Fork,
}

impl StartMethod {
    /// The method's name, as Python spells it.
    ///
    /// ```
    /// assert_eq!(procvisor::StartMethod::ForkServer.as_str(), "forkserver");
    /// ```
    pub fn as_str(&self) -> &'static str {
        match self {
            StartMethod::ForkServer => "forkserver",
            StartMethod::Spawn => "spawn",
            StartMethod::Fork => "fork",
        }
    }

    fn to_u8(self) -> u8 {
        self as u8
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => StartMethod::Spawn,
            2 => StartMethod::Fork,
            _ => StartMethod::ForkServer,
        }
    }
}

impl fmt::Display for StartMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A start method name that is not one of `forkserver`, `spawn`, `fork`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownStartMethod(pub String);

impl fmt::Display for UnknownStartMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown start method {:?} (expected forkserver, spawn or fork)",
            self.0
        )
    }
}

impl std::error::Error for UnknownStartMethod {}

impl FromStr for StartMethod {
    type Err = UnknownStartMethod;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "forkserver" => Ok(StartMethod::ForkServer),
            "spawn" => Ok(StartMethod::Spawn),
            "fork" => Ok(StartMethod::Fork),
            other => Err(UnknownStartMethod(other.to_owned())),
        }
    }
}

/// The program-wide default; a `Process` may choose another for itself.
static DEFAULT_METHOD: AtomicU8 = AtomicU8::new(0);

/// Sets the start method of processes created from now on (Python's `set_start_method`).
///
/// ```
/// procvisor::set_start_method(procvisor::StartMethod::Spawn);
/// assert_eq!(procvisor::get_start_method(), procvisor::StartMethod::Spawn);
/// # procvisor::set_start_method(procvisor::StartMethod::ForkServer);
/// ```
pub fn set_start_method(method: StartMethod) {
    DEFAULT_METHOD.store(method.to_u8(), Ordering::Relaxed);
}

/// The start method new processes get by default.
pub fn get_start_method() -> StartMethod {
    StartMethod::from_u8(DEFAULT_METHOD.load(Ordering::Relaxed))
}

/// Code run in a child made by `fork`.
pub(crate) type Closure = Box<dyn FnOnce() -> Result<Vec<u8>, RemoteError> + Send>;

/// What a child runs.
pub(crate) enum Target {
    /// An entry point and its encoded arguments (any start method).
    Entry(EntryFn),
    /// A capturing closure (`fork` only).
    Closure(Closure),
}

/// A child that exists.
pub(crate) struct Launched {
    pub(crate) pid: i32,
    pub(crate) pidfd: OwnedFd,
    pub(crate) sentinel: Sentinel,
    pub(crate) control: UnixStream,
    /// The start request of a `fork` child, which the child reads from its copy of this
    /// process's memory: freed only once the child has ended (see `Child::new`).
    pub(crate) spent: Option<Start>,
}

/// Starts a child that runs `target`; `handles` are the descriptors of the handles in its
/// arguments, which the child receives in this order.
pub(crate) fn launch(
    method: StartMethod,
    start: Start,
    target: Target,
    handles: Vec<OwnedFd>,
) -> Result<Launched, Error> {
    match (method, target) {
        (StartMethod::ForkServer, Target::Entry(_)) => forkserver::launch(start, handles),
        (StartMethod::Spawn, Target::Entry(_)) => exec::launch(start, handles),
        (StartMethod::Fork, Target::Entry(entry)) => fork::launch(start, handles, true, entry),
        (StartMethod::Fork, Target::Closure(body)) => {
            fork::launch(start, handles, false, move |_: &[u8]| body())
        }
        (_, Target::Closure(_)) => Err(Error::new(Kind::ClosureNeedsFork)),
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The spawner thread of this process.
static SPAWNER: PerProcess<mpsc::Sender<Job>> = PerProcess::new();

/// Runs `job` on a thread that lives as long as the process, and returns its result: the
/// calling thread itself when it is the main thread (whose end is the process's end), the
/// spawner thread otherwise.
///
/// Used by `spawn`, where skipping the hand-off saves two context switches (1.5 → 1.3 ms
/// per start+join here), and by `fork`. Forking from the main thread once measured slower
/// than from the idle spawner: the Worker actor, then started at once, woke the runtime
/// thread right after the fork, and its copy-on-write faults (each a TLB shootdown to the
/// forking CPU) slowed both. With that Worker started on demand, the main thread forks,
/// sets up and sleeps, the child runs on the same CPU, and no other thread of ours runs in
/// between.
fn on_lasting_thread<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> T {
    if nix::unistd::gettid().as_raw() as u32 == std::process::id() {
        job()
    } else {
        on_spawner(job)
    }
}

/// Runs `job` on the spawner thread and returns its result.
fn on_spawner<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> T {
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(program_name())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })
            .expect("the spawner thread can be created");
        tx
    });
    let (reply_tx, reply_rx) = mpsc::sync_channel(1);
    tx.send(Box::new(move || {
        let _ = reply_tx.send(job());
    }))
    .expect("the spawner thread lives as long as the process");
    reply_rx
        .recv()
        .expect("the spawner thread answers every job it takes")
}

/// A connected pair of sockets between a parent and a child, neither numbered 0, 1 or 2.
/// A program may run with its standard streams closed; a socket that took one of their
/// numbers would be a `fork` child's standard stream (or a spawned one's, handed down), and
/// what the target prints would land in the protocol.
pub(crate) fn control_pair() -> Result<(UnixStream, UnixStream), Error> {
    let lift = |s: UnixStream| -> std::io::Result<UnixStream> {
        // The original, if copied, closes with `s`.
        Ok(above_stdio(s.as_fd())?.map_or(s, UnixStream::from))
    };
    UnixStream::pair()
        .and_then(|(a, b)| Ok((lift(a)?, lift(b)?)))
        .map_err(|e| spawn_error(exec::io_errno(&e)))
}

/// `None` when `fd` is numbered 3 or above; otherwise a copy of it that is (and, like every
/// descriptor of ours, closes on exec), for a socket that took the number of a standard
/// stream.
pub(crate) fn above_stdio(fd: BorrowedFd<'_>) -> std::io::Result<Option<OwnedFd>> {
    if fd.as_raw_fd() > 2 {
        Ok(None)
    } else {
        fd.try_clone_to_owned().map(Some)
    }
}

/// The name the kernel gave this program's main thread (`/proc/self/comm`), for the
/// spawner thread: a `fork` child takes the name of the thread that forked it, and `ps`,
/// `top` and `pkill NAME` should find it under the program's name, like every other child.
fn program_name() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .map(|name| name.trim_end_matches('\n').to_owned())
        .unwrap_or_else(|_| "procvisor-spawner".to_owned())
}

fn spawn_error(e: impl Into<nix::errno::Errno>) -> Error {
    Error::new(Kind::Spawn(e.into()))
}
