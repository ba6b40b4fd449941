//! Supervision trees over OS processes, with Erlang/OTP's semantics.
//!
//! A [`Spec`] names a supervisor: its children in start order, a [`Strategy`], a restart
//! [`Intensity`]. Each child is a [`ChildSpec`]: a Rust function run in a child process (as
//! [`Process`](crate::Process) runs it), an external [`Command`], or a nested supervisor.
//! [`Spec::start`] checks everything, starts the children in order and returns a [`Tree`]:
//! the handle to stop it, wait for it, change its children and watch its [`Event`]s.
//!
//! # Semantics
//!
//! - **Restart types** ([`RestartType`]): a permanent child always comes back, a transient
//!   one only after an abnormal ending (a non-zero code, a signal we did not send, a failed
//!   exec), a temporary one never (and it leaves the tree when it ends, as in OTP).
//! - **Strategies**: one_for_one restarts the child that ended; one_for_all stops every
//!   other child (last-started first) and starts them all again in order; rest_for_one does
//!   the same for the child and those started after it.
//! - **Intensity**: at most `max_restarts` restarts in `period` per supervisor, by default
//!   5 in 10 s. One more and the supervisor stops its children (last-started first), emits
//!   [`EventKind::GaveUp`] and ends with [`Outcome::GaveUp`]; a parent supervisor takes
//!   that as its child's failure and applies its own policy.
//! - **Backoff** ([`Backoff`]): each restart of a child waits `initial × factor^(failures)`
//!   (capped, jittered; by default 100 ms doubling to 30 s, ±10 %), the count resetting
//!   after a stable run (10 s). An exit inside the start-success window (1 s) is a failed
//!   start. The supervisor's actor never blocks: delays are timers.
//! - **Shutdown** ([`Shutdown`]): the stop signal (SIGTERM), a grace period (5 s, OTP's
//!   worker default), then SIGKILL — to the command's whole process group. A child that
//!   does not die even then (uninterruptible sleep) is reported
//!   ([`EventKind::StopStuck`]) and left behind, and the supervisor goes on.
//! - **Exits lose nothing** ([`Exit`]): the code or the signal and core flag, whether we
//!   asked for it, whether the stop was escalated to SIGKILL, whether the kernel's OOM
//!   killer ran meanwhile; a failed exec is [`EventKind::StartFailed`] with its errno.
//! - **Containment**: a command runs in a process group of its own, dies with the
//!   supervising process (even a SIGKILLed one, through `PR_SET_PDEATHSIG`), and when it
//!   ends whatever is left of its group is killed, as systemd's `KillMode=control-group`
//!   does. When the supervising process dies in any way, SIGKILL included, a small group
//!   guard process kills every command's whole group within moments ([`guarded_groups`]).
//!   [`set_child_subreaper`] (opt-in) also reaps what such a group leaves behind.
//!   Stdout and stderr can go to size-rotated [`LogFile`]s.
//! - **Stop and start** (OTP's `terminate_child` / `restart_child`):
//!   [`Tree::stop_child`] stops a child with its shutdown and keeps its slot, spec and
//!   place in the start order; it is [`RunState::Stopped`], which is no crash: it is not
//!   restarted (not by a sibling's one_for_all or rest_for_one either), and it costs no
//!   intensity. Its `Exited` event says `requested`. [`Tree::start_child`] starts it again
//!   in its slot, [`Tree::restart_child`] does both. On a group's name they act on every
//!   member. A stopped temporary child stays (stopped) until it is started or removed.
//! - **Readiness** ([`Readiness`]): a child is [`RunState::Starting`] until it is ready,
//!   then [`RunState::Running`] with an [`EventKind::Ready`]: at once (the default, and no
//!   `Ready` event), when it sends `READY=1` to its `NOTIFY_SOCKET` (sd_notify), or when
//!   a TCP connect to its address succeeds. Readiness is reported, not waited for: the
//!   next child starts at once, and restarts and backoff count from the start. A
//!   `NOTIFY_SOCKET` that this process inherited is never passed on to a command (only a
//!   [`Readiness::Notify`] one gets one, its own); Rust targets inherit the environment
//!   as [`Process`](crate::Process) does.
//!
//! # Paths
//!
//! A child is addressed by its path: the names of the nested supervisors from the root
//! down, then its own, joined by `/` and without the root's name. In a tree `app` with a
//! child `db` and a nested supervisor `web` that has a child `api`, the paths are `db`,
//! `web` and `web/api`; replicas are `group.i` (`web/workers.0`), and the group's name
//! (`web/workers`) addresses them all where a call accepts a group. Names cannot hold `/`,
//! so a name is a path of one step. An unknown path is [`TreeError::NoSuchChild`] with
//! the path as given; one through a nested supervisor that is not running (stopped, or
//! waiting for its restart) is [`TreeError::NotRunning`], naming that supervisor. Events name the supervisor by its path *with* the root's name
//! (`app/web`), so that the root's own events have a name.
//!
//! ```no_run
//! use std::time::Duration;
//! use procvisor::restart::{Backoff, Strategy};
//! use procvisor::tree::{ChildSpec, Command, Spec};
//!
//! fn worker(id: u32) {
//!     println!("worker {id} up");
//!     std::thread::sleep(Duration::from_secs(3600));
//! }
//!
//! let spec = Spec::new("app")
//!     .strategy(Strategy::OneForOne)
//!     .child(ChildSpec::process("worker", worker, 1).backoff(Backoff::none()))
//!     .child(ChildSpec::command("sleeper", Command::new("sleep").arg("3600")));
//! let events = spec.events();
//! let tree = spec.start()?;
//! for event in events.iter().take(2) {
//!     println!("{event}"); // app/worker started (pid …), app/sleeper started (pid …)
//! }
//! tree.stop();
//! # Ok::<(), procvisor::tree::TreeError>(())
//! ```

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use actix::{Addr, Recipient};
use nix::sys::signal::Signal;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use crate::restart::{Backoff, Intensity, PolicyError, RestartType, Strategy};
use crate::spawn::StartMethod;
use crate::status::ExitStatus;

mod guard;
mod launch;
mod logs;
mod node;
mod ready;
mod reaper;

pub use guard::guarded_groups;
pub(crate) use guard::{
    close_inherited as close_inherited_guard, lock_for_fork as guard_lock_for_fork,
    untrack as untrack_group,
};
pub use logs::{LogFile, Output};
pub use node::{
    AddChild, Children, Node, RemoveChild, RestartChild, Scale, ShutdownTree, StartChild,
    StopChild, Walk,
};
pub use reaper::{orphans_reaped, set_child_subreaper};

/// How a child is stopped.
///
/// ```
/// use std::time::Duration;
/// use procvisor::tree::Shutdown;
/// let s = Shutdown::default();
/// assert_eq!(s, Shutdown::Graceful { signal: nix::sys::signal::Signal::SIGTERM, grace: Duration::from_secs(5) });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Send `signal`; after `grace`, SIGKILL (the whole process group of a command).
    Graceful {
        /// The stop signal.
        signal: Signal,
        /// How long the child has to exit on its own.
        grace: Duration,
    },
    /// SIGKILL at once (OTP's `brutal_kill`).
    Kill,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::Graceful {
            signal: Signal::SIGTERM,
            grace: Duration::from_secs(5),
        }
    }
}

/// An external program to supervise.
///
/// ```
/// use procvisor::tree::{Command, LogFile, Output};
/// let cmd = Command::new("python3")
///     .args(["-m", "http.server"])
///     .env("PYTHONUNBUFFERED", "1")
///     .cwd("/tmp")
///     .stdout(Output::File(LogFile::new("/tmp/http.log")));
/// assert_eq!(cmd.program(), "python3");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub(crate) program: OsString,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) stdout: Output,
    pub(crate) stderr: Output,
}

impl Command {
    /// A program, looked up in `PATH` when it has no slash.
    pub fn new(program: impl Into<OsString>) -> Self {
        Command {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            stdout: Output::Inherit,
            stderr: Output::Inherit,
        }
    }

    /// Adds an argument.
    ///
    /// ```
    /// let cmd = procvisor::tree::Command::new("sleep").arg("1");
    /// # let _ = cmd;
    /// ```
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    ///
    /// ```
    /// let cmd = procvisor::tree::Command::new("sh").args(["-c", "exit 3"]);
    /// # let _ = cmd;
    /// ```
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable (the rest is inherited).
    ///
    /// ```
    /// let cmd = procvisor::tree::Command::new("env").env("MODE", "test");
    /// # let _ = cmd;
    /// ```
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets the working directory.
    ///
    /// ```
    /// let cmd = procvisor::tree::Command::new("pwd").cwd("/");
    /// # let _ = cmd;
    /// ```
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Where stdout goes (inherited by default).
    ///
    /// ```
    /// let cmd = procvisor::tree::Command::new("true").stdout(procvisor::tree::Output::Null);
    /// # let _ = cmd;
    /// ```
    pub fn stdout(mut self, out: Output) -> Self {
        self.stdout = out;
        self
    }

    /// Where stderr goes (inherited by default). The same [`LogFile`] as stdout shares one
    /// file, lines interleaved as written.
    ///
    /// ```
    /// let cmd = procvisor::tree::Command::new("true").stderr(procvisor::tree::Output::Null);
    /// # let _ = cmd;
    /// ```
    pub fn stderr(mut self, out: Output) -> Self {
        self.stderr = out;
        self
    }

    /// The program.
    ///
    /// ```
    /// assert_eq!(procvisor::tree::Command::new("ls").program(), "ls");
    /// ```
    pub fn program(&self) -> &std::ffi::OsStr {
        &self.program
    }
}

/// Starts a Rust target in a child process; built by [`ChildSpec::process`].
pub(crate) type StartFn =
    Arc<dyn Fn(&str, StartMethod) -> Result<launch::Running, crate::Error> + Send + Sync>;

#[derive(Clone)]
pub(crate) enum Target {
    Process(StartFn),
    Command(Command),
    Supervisor(Box<Spec>),
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Process(_) => f.write_str("Process"),
            Target::Command(c) => f.debug_tuple("Command").field(c).finish(),
            Target::Supervisor(s) => f.debug_tuple("Supervisor").field(&s.name).finish(),
        }
    }
}

/// When a started child counts as running (see [`ChildSpec::ready`]).
///
/// ```
/// use procvisor::tree::Readiness;
/// assert_eq!(Readiness::default(), Readiness::Started);
/// let tcp = Readiness::Tcp("127.0.0.1:5432".parse().unwrap());
/// # let _ = tcp;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Readiness {
    /// Running as soon as it has started. The default; no [`EventKind::Ready`] is emitted.
    #[default]
    Started,
    /// Running once it says so, as systemd's `Type=notify`: the command gets
    /// `NOTIFY_SOCKET` naming a datagram socket of the supervisor (`@procvisor-…`, in the
    /// abstract namespace, as `sd_notify(3)` accepts), and is ready when a datagram there
    /// holds the line `READY=1`. Other lines (`STATUS=…`, `STOPPING=1`) are ignored.
    /// Datagrams are taken from the child itself or from a process of its process group
    /// only (checked with `SCM_CREDENTIALS`; a sender already gone when its datagram is
    /// read, such as a `systemd-notify` the script has reaped, counts if it ran as our
    /// user). Commands only.
    Notify,
    /// Running once a TCP connection to this address succeeds; tried every 100 ms while
    /// the child runs.
    Tcp(std::net::SocketAddr),
}

/// One child of a supervisor: what it runs, whether it comes back, how it stops.
///
/// ```
/// use procvisor::restart::{Backoff, RestartType};
/// use procvisor::tree::{ChildSpec, Command, Shutdown};
/// let spec = ChildSpec::command("cache", Command::new("memcached"))
///     .restart(RestartType::Transient)
///     .shutdown(Shutdown::Kill)
///     .backoff(Backoff::none());
/// assert_eq!(spec.name(), "cache");
/// ```
#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub(crate) name: String,
    pub(crate) target: Target,
    pub(crate) restart: RestartType,
    pub(crate) shutdown: Shutdown,
    pub(crate) backoff: Backoff,
    pub(crate) method: Option<StartMethod>,
    pub(crate) replicas: Option<usize>,
    pub(crate) ready: Readiness,
}

impl ChildSpec {
    fn with_target(name: impl Into<String>, target: Target) -> Self {
        ChildSpec {
            name: name.into(),
            target,
            restart: RestartType::Permanent,
            shutdown: Shutdown::default(),
            backoff: Backoff::default(),
            method: None,
            replicas: None,
            ready: Readiness::Started,
        }
    }

    /// A child that runs `target(args)` in a process of its own, as
    /// [`Process::new`](crate::Process::new) does; each restart runs it with a fresh copy
    /// of `args`. The child's process name is the child's name.
    ///
    /// ```
    /// fn serve(port: u16) { let _ = port; }
    /// let spec = procvisor::tree::ChildSpec::process("web", serve, 8080);
    /// assert_eq!(spec.name(), "web");
    /// ```
    pub fn process<F, A, R>(name: impl Into<String>, target: F, args: A) -> Self
    where
        F: Fn(A) -> R + Copy + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let start: StartFn = Arc::new(move |name: &str, method: StartMethod| {
            let p = crate::Process::<R>::new(target, args.clone())
                .with_name(name)
                .with_start_method(method);
            launch::Running::process(p)
        });
        Self::with_target(name, Target::Process(start))
    }

    /// A supervised worker that answers typed requests with `handler`, behind one mailbox
    /// address that survives its restarts (issue: messaging across restarts).
    ///
    /// Returns the spec and the address. Requests are served one at a time, in order; the
    /// mailbox holds at most `capacity` waiting ones (backpressure for `send`, `Full` for
    /// `try_send`). While the worker restarts, calls wait for the new one or fail at once
    /// with [`MailboxError::Restarting`](crate::mailbox::MailboxError::Restarting), as
    /// `while_restarting` says. Delivery is at most once: the request in flight when the
    /// worker dies fails with `WorkerGone` (it may or may not have been handled). Once the
    /// child has left the tree, calls fail with `WorkerGone`.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use procvisor::mailbox::{Call, WhileRestarting};
    /// use procvisor::tree::{ChildSpec, Spec};
    ///
    /// fn square(x: u64) -> u64 { x * x }
    ///
    /// let (spec, addr) = ChildSpec::service("square", square, 16, WhileRestarting::Wait(Duration::from_secs(5)));
    /// let tree = Spec::new("app").child(spec).start()?;
    /// actix::System::new().block_on(async {
    ///     assert_eq!(addr.send(Call::new(12)).await.unwrap().unwrap(), 144);
    /// });
    /// # drop(tree);
    /// # Ok::<(), procvisor::tree::TreeError>(())
    /// ```
    pub fn service<H, Req, Resp>(
        name: impl Into<String>,
        handler: H,
        capacity: usize,
        while_restarting: crate::mailbox::WhileRestarting,
    ) -> (Self, Addr<crate::mailbox::Mailbox<Req, Resp>>)
    where
        H: Fn(Req) -> Resp + Copy + Send + Sync + 'static,
        Req: Serialize + DeserializeOwned + Unpin + Send + 'static,
        Resp: Serialize + DeserializeOwned + Unpin + Send + 'static,
    {
        const {
            assert!(
                std::mem::size_of::<H>() == 0,
                "a service handler must be a fn item or a non-capturing closure"
            )
        };
        let _ = handler;
        let link = crate::mailbox::Link::new(while_restarting);
        let addr = crate::mailbox::Mailbox::<Req, Resp>::linked(link.clone(), capacity);
        let closer = Arc::new(CloseOnDrop(link.clone()));
        let start: StartFn = Arc::new(move |name: &str, method: StartMethod| {
            let _keep = &closer;
            let (end, conn) =
                crate::mailbox::channel::<Req, Resp>().map_err(|e| crate::Error::spawn_io(&e))?;
            let p = crate::Process::<u64>::new(serve::<H, Req, Resp>, conn)
                .with_name(name)
                .with_start_method(method);
            let running = launch::Running::process(p)?;
            link.attach(end.into_socket());
            Ok(running)
        });
        (Self::with_target(name, Target::Process(start)), addr)
    }

    /// A child that runs an external program.
    ///
    /// ```
    /// use procvisor::tree::{ChildSpec, Command};
    /// let spec = ChildSpec::command("tick", Command::new("sleep").arg("1"));
    /// assert_eq!(spec.name(), "tick");
    /// ```
    pub fn command(name: impl Into<String>, command: Command) -> Self {
        Self::with_target(name, Target::Command(command))
    }

    /// A nested supervisor, named as its spec. Its children stop before it does; it gives
    /// them no grace period of its own (OTP's `infinity` for supervisors).
    ///
    /// ```
    /// use procvisor::tree::{ChildSpec, Spec};
    /// let spec = ChildSpec::supervisor(Spec::new("db"));
    /// assert_eq!(spec.name(), "db");
    /// ```
    pub fn supervisor(spec: Spec) -> Self {
        let name = spec.name.clone();
        Self::with_target(name, Target::Supervisor(Box::new(spec)))
    }

    /// Sets the restart type (permanent by default).
    ///
    /// ```
    /// use procvisor::restart::RestartType;
    /// let s = procvisor::tree::ChildSpec::command("x", procvisor::tree::Command::new("true"))
    ///     .restart(RestartType::Temporary);
    /// # let _ = s;
    /// ```
    pub fn restart(mut self, restart: RestartType) -> Self {
        self.restart = restart;
        self
    }

    /// Sets how the child stops (SIGTERM, 5 s, SIGKILL by default).
    ///
    /// ```
    /// let s = procvisor::tree::ChildSpec::command("x", procvisor::tree::Command::new("true"))
    ///     .shutdown(procvisor::tree::Shutdown::Kill);
    /// # let _ = s;
    /// ```
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Sets the restart backoff ([`Backoff::default`] unless set).
    ///
    /// ```
    /// let s = procvisor::tree::ChildSpec::command("x", procvisor::tree::Command::new("true"))
    ///     .backoff(procvisor::restart::Backoff::none());
    /// # let _ = s;
    /// ```
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the start method of a Rust child (the program's default unless set).
    ///
    /// ```
    /// fn noop(_: ()) {}
    /// let s = procvisor::tree::ChildSpec::process("x", noop, ())
    ///     .start_method(procvisor::StartMethod::Spawn);
    /// # let _ = s;
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// Makes this spec a group of `n` identical children, named `name.0` … `name.<n-1>`,
    /// that [`Tree::scale`] grows and shrinks. A command's [`Output::File`] is one file per
    /// replica, its index before the extension (`w.log` → `w.0.log`, `w.1.log`, …), so that
    /// replicas never write or rotate one file together.
    ///
    /// ```
    /// let s = procvisor::tree::ChildSpec::command("w", procvisor::tree::Command::new("true"))
    ///     .replicas(4);
    /// # let _ = s;
    /// ```
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = Some(n);
        self
    }

    /// Sets when the child counts as running ([`Readiness::Started`] unless set). Until
    /// then it is [`RunState::Starting`]; when it becomes ready, [`EventKind::Ready`] is
    /// emitted. [`Readiness::Notify`] is for commands only: on a Rust target or a nested
    /// supervisor, [`Spec::start`] and [`Tree::add_child`] fail with
    /// [`TreeError::NotifyUnsupported`].
    ///
    /// ```
    /// use procvisor::tree::{ChildSpec, Command, Readiness};
    /// let web = ChildSpec::command("web", Command::new("my-server"))
    ///     .ready(Readiness::Tcp("127.0.0.1:8080".parse().unwrap()));
    /// let db = ChildSpec::command("db", Command::new("postgres")).ready(Readiness::Notify);
    /// # let _ = (web, db);
    /// ```
    pub fn ready(mut self, ready: Readiness) -> Self {
        self.ready = ready;
        self
    }

    /// The child's name.
    ///
    /// ```
    /// assert_eq!(procvisor::tree::ChildSpec::supervisor(procvisor::tree::Spec::new("s")).name(), "s");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self, names: &mut HashSet<String>) -> Result<(), TreeError> {
        check_name(&self.name)?;
        if !names.insert(self.name.clone()) {
            return Err(TreeError::DuplicateName(self.name.clone()));
        }
        self.backoff.validate().map_err(TreeError::Policy)?;
        if self.ready == Readiness::Notify && !matches!(self.target, Target::Command(_)) {
            return Err(TreeError::NotifyUnsupported(self.name.clone()));
        }
        match &self.target {
            Target::Command(c) if c.program.is_empty() => {
                Err(TreeError::EmptyCommand(self.name.clone()))
            }
            Target::Supervisor(s) => s.validate(),
            _ => Ok(()),
        }
    }
}

/// The target of a service child: serve requests with the zero-sized handler `H`.
fn serve<H, Req, Resp>(conn: crate::Connection) -> u64
where
    H: Fn(Req) -> Resp,
    Req: DeserializeOwned,
    Resp: Serialize,
{
    let handler = procvisor_worker::entry::zero_sized_callable::<H, Req, Resp>();
    crate::mailbox::serve(conn, handler).unwrap_or(0)
}

/// Closes a service's mailbox link when the last copy of its spec goes (the child left the
/// tree, or the tree ended): waiting calls then fail instead of waiting for a worker that
/// will not come.
struct CloseOnDrop(Arc<crate::mailbox::Link>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

fn check_name(name: &str) -> Result<(), TreeError> {
    if name.is_empty() || name.contains('/') || name.chars().any(char::is_control) {
        return Err(TreeError::BadName(name.to_owned()));
    }
    Ok(())
}

/// A supervisor: its name, children in start order, strategy and intensity.
///
/// ```
/// use procvisor::restart::{Intensity, Strategy};
/// use procvisor::tree::{ChildSpec, Command, Spec};
/// let spec = Spec::new("web")
///     .strategy(Strategy::RestForOne)
///     .intensity(Intensity { max_restarts: 3, period: std::time::Duration::from_secs(5) })
///     .child(ChildSpec::command("db", Command::new("sleep").arg("60")))
///     .child(ChildSpec::command("app", Command::new("sleep").arg("60")));
/// assert_eq!(spec.name(), "web");
/// ```
#[derive(Debug, Clone)]
pub struct Spec {
    pub(crate) name: String,
    pub(crate) strategy: Strategy,
    pub(crate) intensity: Intensity,
    pub(crate) children: Vec<ChildSpec>,
    pub(crate) bus: Bus,
}

impl Spec {
    /// A supervisor with no children, one_for_one, the default intensity.
    pub fn new(name: impl Into<String>) -> Self {
        Spec {
            name: name.into(),
            strategy: Strategy::default(),
            intensity: Intensity::default(),
            children: Vec::new(),
            bus: Bus::default(),
        }
    }

    /// Sets the strategy.
    ///
    /// ```
    /// let s = procvisor::tree::Spec::new("s").strategy(procvisor::restart::Strategy::OneForAll);
    /// # let _ = s;
    /// ```
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Sets the restart intensity.
    ///
    /// ```
    /// let s = procvisor::tree::Spec::new("s").intensity(procvisor::restart::Intensity::default());
    /// # let _ = s;
    /// ```
    pub fn intensity(mut self, intensity: Intensity) -> Self {
        self.intensity = intensity;
        self
    }

    /// Appends a child (children start in the order they are added).
    ///
    /// ```
    /// use procvisor::tree::{ChildSpec, Command, Spec};
    /// let s = Spec::new("s").child(ChildSpec::command("a", Command::new("true")));
    /// # let _ = s;
    /// ```
    pub fn child(mut self, child: ChildSpec) -> Self {
        self.children.push(child);
        self
    }

    /// The supervisor's name.
    ///
    /// ```
    /// assert_eq!(procvisor::tree::Spec::new("top").name(), "top");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A blocking iterator over the events of the whole tree this spec will start, from its
    /// very first `Started`. Subscribe before [`start`](Spec::start) to miss nothing.
    ///
    /// ```
    /// let spec = procvisor::tree::Spec::new("s");
    /// let _events = spec.events();
    /// ```
    pub fn events(&self) -> Events {
        self.bus.subscribe(DEFAULT_EVENT_BUFFER)
    }

    /// Sends every event of the tree to an actor too.
    ///
    /// ```no_run
    /// use actix::prelude::*;
    /// struct Log;
    /// impl Actor for Log { type Context = Context<Self>; }
    /// impl Handler<procvisor::tree::Event> for Log {
    ///     type Result = ();
    ///     fn handle(&mut self, e: procvisor::tree::Event, _: &mut Context<Self>) { println!("{e}"); }
    /// }
    /// # actix::System::new().block_on(async {
    /// let spec = procvisor::tree::Spec::new("s");
    /// spec.subscribe(Log.start().recipient());
    /// # });
    /// ```
    pub fn subscribe(&self, actor: Recipient<Event>) {
        self.bus.add_actor(actor);
    }

    fn validate(&self) -> Result<(), TreeError> {
        check_name(&self.name)?;
        self.intensity.validate().map_err(TreeError::Policy)?;
        let mut names = HashSet::new();
        for c in &self.children {
            c.validate(&mut names)?;
        }
        Ok(())
    }

    /// Checks the whole tree (typed errors, before anything starts), then starts it: the
    /// children in order, on procvisor's runtime.
    ///
    /// ```
    /// use procvisor::tree::{ChildSpec, Command, Spec, TreeError};
    /// let dup = Spec::new("s")
    ///     .child(ChildSpec::command("a", Command::new("true")))
    ///     .child(ChildSpec::command("a", Command::new("true")));
    /// assert!(matches!(dup.start(), Err(TreeError::DuplicateName(n)) if n == "a"));
    /// ```
    pub fn start(self) -> Result<Tree, TreeError> {
        self.validate()?;
        let bus = self.bus.clone();
        let outcome = Arc::new(Latch::new());
        let rt = crate::runtime::get();
        let latch = outcome.clone();
        let addr = actix::Actor::start_in_arbiter(&rt.arbiter, move |_| Node::root(self, latch));
        Ok(Tree { addr, bus, outcome })
    }
}

/// Why a tree could not start, or a request to it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TreeError {
    /// Two children of one supervisor share a name.
    DuplicateName(String),
    /// A name is empty, or holds a `/` or a control character.
    BadName(String),
    /// A command with an empty program.
    EmptyCommand(String),
    /// An invalid intensity or backoff.
    Policy(PolicyError),
    /// No child, supervisor or group at that path.
    NoSuchChild(String),
    /// `scale` on a child that is not a group.
    NotAGroup(String),
    /// [`Readiness::Notify`] on a child that is not a command.
    NotifyUnsupported(String),
    /// A path goes through a nested supervisor that is not running (stopped, or between a
    /// crash and its restart): its children cannot be reached. Names that supervisor.
    NotRunning(String),
    /// The tree has ended (it was stopped, or it gave up).
    Ended,
    /// A blocking call made on procvisor's runtime thread, which it would deadlock; use the
    /// actor messages there.
    OnRuntimeThread,
}

impl fmt::Display for TreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TreeError::DuplicateName(n) => write!(f, "two children are named {n:?}"),
            TreeError::BadName(n) => write!(
                f,
                "invalid name {n:?}: names are non-empty, without '/' or control characters"
            ),
            TreeError::EmptyCommand(n) => write!(f, "child {n:?} has an empty command"),
            TreeError::Policy(e) => write!(f, "{e}"),
            TreeError::NoSuchChild(n) => write!(f, "no child at {n:?}"),
            TreeError::NotAGroup(n) => write!(f, "child {n:?} is not a group of replicas"),
            TreeError::NotRunning(n) => write!(f, "supervisor {n:?} is not running"),
            TreeError::NotifyUnsupported(n) => write!(
                f,
                "child {n:?} is not a command: readiness by notification is for commands"
            ),
            TreeError::Ended => f.write_str("the supervisor has ended"),
            TreeError::OnRuntimeThread => {
                f.write_str("blocking tree call on procvisor's runtime thread")
            }
        }
    }
}

impl std::error::Error for TreeError {}

/// How a supervisor ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It was asked to stop, and its children stopped.
    Stopped,
    /// Its restart intensity was exceeded; the reason names the child and its last exit.
    GaveUp(String),
}

/// How a child ended, with nothing lost.
///
/// ```
/// use procvisor::{ExitStatus, tree::Exit};
/// let e = Exit { status: ExitStatus::from_raw(9), requested: true, escalated: true, oom_killed: false };
/// assert_eq!(e.to_string(), "killed by SIGKILL (stopped by us, after the grace period)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The exit code, or the signal and whether it dumped core.
    pub status: ExitStatus,
    /// The supervisor stopped it.
    pub requested: bool,
    /// The stop signal was not enough: SIGKILL after the grace period.
    pub escalated: bool,
    /// It died of a SIGKILL we did not send while the kernel's OOM killer ran: most likely
    /// out of memory.
    pub oom_killed: bool,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.status)?;
        match (self.requested, self.escalated) {
            (true, true) => f.write_str(" (stopped by us, after the grace period)")?,
            (true, false) => f.write_str(" (stopped by us)")?,
            _ => {}
        }
        if self.oom_killed {
            f.write_str(" (out of memory)")?;
        }
        Ok(())
    }
}

/// Something that happened in a tree.
#[derive(Debug, Clone, PartialEq, actix::Message)]
#[rtype(result = "()")]
pub struct Event {
    /// When.
    pub time: SystemTime,
    /// The supervisor's path from the root: `app`, `app/db`.
    pub supervisor: String,
    /// The child it is about; `None` for the supervisor itself.
    pub child: Option<String>,
    /// What happened.
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EventKind {
    /// The child is running (for a nested supervisor, `pid` is 0).
    Started {
        /// Its pid.
        pid: i32,
    },
    /// The child became ready (see [`Readiness`]; never emitted for
    /// [`Readiness::Started`], whose `Started` says it all).
    Ready {
        /// Its pid.
        pid: i32,
    },
    /// The child could not be started (a missing program, a failed exec, no fork): a failed
    /// start, handled like a crash that came at once.
    StartFailed {
        /// The errno, when the system said one.
        errno: Option<i32>,
        /// What went wrong.
        message: String,
    },
    /// The child ended.
    Exited {
        /// How.
        exit: Exit,
        /// How long it ran.
        ran_for: Duration,
        /// It ended on its own inside the start-success window (never for a stop we asked for).
        failed_start: bool,
    },
    /// A nested supervisor ended.
    SupervisorEnded {
        /// How.
        outcome: Outcome,
    },
    /// The child will start again after `delay`.
    Restarting {
        /// How many times this child has been restarted, this one included.
        attempt: u32,
        /// The backoff.
        delay: Duration,
    },
    /// The grace period passed: the child (and its group) get SIGKILL.
    StopTimedOut {
        /// Its pid.
        pid: i32,
    },
    /// Even SIGKILL did not end the child in time (uninterruptible sleep); the supervisor
    /// goes on without it.
    StopStuck {
        /// Its pid.
        pid: i32,
        /// Its state letter from `/proc/<pid>/stat` (`D`: uninterruptible sleep).
        state: Option<char>,
    },
    /// The supervisor exceeded its restart intensity and stops.
    GaveUp {
        /// Why, naming the child and its last exit.
        reason: String,
    },
    /// The supervisor has stopped all its children and ended.
    Stopped,
    /// A log stream of the child failed (a full disk); its output since is lost.
    LogFailed {
        /// What failed.
        message: String,
    },
    /// This subscriber fell behind by `missed` events, which were dropped for it alone.
    Lagged {
        /// How many.
        missed: u64,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.supervisor)?;
        if let Some(c) = &self.child {
            write!(f, "/{c}")?;
        }
        match &self.kind {
            EventKind::Started { pid } => write!(f, " started (pid {pid})"),
            EventKind::Ready { pid } => write!(f, " ready (pid {pid})"),
            EventKind::StartFailed { errno, message } => match errno {
                Some(e) => write!(f, " failed to start: {message} (errno {e})"),
                None => write!(f, " failed to start: {message}"),
            },
            EventKind::Exited {
                exit, failed_start, ..
            } => {
                write!(f, " exited: {exit}")?;
                if *failed_start {
                    f.write_str(" [failed start]")?;
                }
                Ok(())
            }
            EventKind::SupervisorEnded { outcome } => write!(f, " ended: {outcome:?}"),
            EventKind::Restarting { attempt, delay } => {
                write!(f, " restarting (attempt {attempt}, after {delay:?})")
            }
            EventKind::StopTimedOut { pid } => write!(f, " (pid {pid}) ignored its stop: SIGKILL"),
            EventKind::StopStuck { pid, state } => {
                write!(f, " (pid {pid}) survives SIGKILL, state {state:?}")
            }
            EventKind::GaveUp { reason } => write!(f, " gave up: {reason}"),
            EventKind::Stopped => f.write_str(" stopped"),
            EventKind::LogFailed { message } => write!(f, " log failed: {message}"),
            EventKind::Lagged { missed } => write!(f, " subscriber missed {missed} events"),
        }
    }
}

/// Room per blocking subscriber before events are dropped for it (and counted).
const DEFAULT_EVENT_BUFFER: usize = 4096;

/// One blocking subscriber: a bounded queue and the count of what it missed.
#[derive(Debug)]
struct Sink {
    tx: mpsc::SyncSender<Event>,
    missed: u64,
}

#[derive(Default)]
struct BusState {
    sinks: Vec<Sink>,
    actors: Vec<Recipient<Event>>,
    closed: bool,
}

/// The event fan-out of one tree, shared by all its supervisors.
#[derive(Clone, Default)]
pub(crate) struct Bus(Arc<Mutex<BusState>>);

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Bus")
    }
}

impl Bus {
    fn lock(&self) -> MutexGuard<'_, BusState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn subscribe(&self, capacity: usize) -> Events {
        let (tx, rx) = mpsc::sync_channel(capacity);
        let mut st = self.lock();
        if !st.closed {
            st.sinks.push(Sink { tx, missed: 0 });
        }
        Events { rx }
    }

    fn add_actor(&self, actor: Recipient<Event>) {
        let mut st = self.lock();
        if !st.closed {
            st.actors.push(actor);
        }
    }

    /// Delivers `event` to every subscriber. A full subscriber misses it, and is told how
    /// many it missed as soon as it has room again; a gone one is dropped.
    pub(crate) fn publish(&self, event: Event) {
        let mut st = self.lock();
        st.actors.retain(|a| a.connected());
        for a in &st.actors {
            a.do_send(event.clone());
        }
        st.sinks.retain_mut(|sink| {
            if sink.missed > 0 {
                let lagged = Event {
                    kind: EventKind::Lagged {
                        missed: sink.missed,
                    },
                    ..event.clone()
                };
                match sink.tx.try_send(lagged) {
                    Ok(()) => sink.missed = 0,
                    Err(mpsc::TrySendError::Full(_)) => {
                        sink.missed += 1;
                        return true;
                    }
                    Err(mpsc::TrySendError::Disconnected(_)) => return false,
                }
            }
            match sink.tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::TrySendError::Full(_)) => {
                    sink.missed += 1;
                    true
                }
                Err(mpsc::TrySendError::Disconnected(_)) => false,
            }
        });
    }

    /// The tree has ended: iterators end once drained.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.sinks.clear();
        st.actors.clear();
    }
}

/// A blocking iterator over a tree's events; it ends when the tree has ended and every
/// event has been read.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Event>,
}

impl Events {
    /// Iterates, blocking for each event.
    ///
    /// ```
    /// let events = procvisor::tree::Spec::new("s").events();
    /// # drop(events);
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.rx.iter()
    }

    /// The next event, waiting at most `timeout`; `None` on timeout or once the tree has
    /// ended and everything was read.
    ///
    /// ```
    /// let events = procvisor::tree::Spec::new("s").events();
    /// assert!(events.next_timeout(std::time::Duration::ZERO).is_none());
    /// ```
    pub fn next_timeout(&self, timeout: Duration) -> Option<Event> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// Waits (at most `timeout` in all) for an event that `pred` accepts, returning it and
    /// dropping the ones before it.
    ///
    /// ```
    /// let events = procvisor::tree::Spec::new("s").events();
    /// assert!(events.wait_for(std::time::Duration::ZERO, |_| true).is_none());
    /// ```
    pub fn wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&Event) -> bool,
    ) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = self.rx.recv_timeout(left).ok()?;
            if pred(&event) {
                return Some(event);
            }
        }
    }
}

impl Iterator for Events {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        self.rx.recv().ok()
    }
}

/// A value set once, awaited by blocking threads and by futures.
#[derive(Debug)]
pub(crate) struct Latch<T> {
    value: Mutex<Option<T>>,
    cond: Condvar,
    notify: tokio::sync::Notify,
}

impl<T: Clone> Latch<T> {
    fn new() -> Self {
        Latch {
            value: Mutex::new(None),
            cond: Condvar::new(),
            notify: tokio::sync::Notify::new(),
        }
    }

    pub(crate) fn set(&self, value: T) {
        let mut v = self.value.lock().unwrap_or_else(|p| p.into_inner());
        if v.is_none() {
            *v = Some(value);
        }
        self.cond.notify_all();
        self.notify.notify_waiters();
    }

    pub(crate) fn get(&self) -> Option<T> {
        self.value.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn wait(&self, timeout: Option<Duration>) -> Option<T> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut v = self.value.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(x) = v.as_ref() {
                return Some(x.clone());
            }
            v = match deadline {
                None => self.cond.wait(v).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    self.cond
                        .wait_timeout(v, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    async fn wait_async(&self) -> T {
        loop {
            let notified = self.notify.notified();
            if let Some(v) = self.get() {
                return v;
            }
            notified.await;
        }
    }
}

/// A running tree: the handle that stops it, waits for it, changes its children and
/// watches it. Dropping the handle stops the tree (in the background).
pub struct Tree {
    addr: Addr<Node>,
    bus: Bus,
    outcome: Arc<Latch<Outcome>>,
}

impl fmt::Debug for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tree")
            .field("outcome", &self.outcome.get())
            .finish()
    }
}

/// Sends `msg` to a node and waits for the answer on this thread.
fn call<M>(addr: &Addr<Node>, msg: M) -> Result<M::Result, TreeError>
where
    M: actix::Message + Send + 'static,
    M::Result: Send,
    Node: actix::Handler<M>,
{
    if std::thread::current().name() == Some(crate::runtime::THREAD_NAME) {
        return Err(TreeError::OnRuntimeThread);
    }
    let (tx, rx) = mpsc::sync_channel(1);
    let addr = addr.clone();
    crate::runtime::get().arbiter.spawn(async move {
        let _ = tx.send(addr.send(msg).await);
    });
    match rx.recv() {
        Ok(Ok(r)) => Ok(r),
        _ => Err(TreeError::Ended),
    }
}

impl Tree {
    /// The root supervisor's actor, for actix applications: send it [`Children`],
    /// [`Walk`], [`AddChild`], [`RemoveChild`], [`Scale`], [`StopChild`], [`StartChild`],
    /// [`RestartChild`] or [`ShutdownTree`].
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # async fn demo(tree: &procvisor::tree::Tree) -> Result<(), Box<dyn std::error::Error>> {
    /// let children = tree.addr().send(procvisor::tree::Children).await?;
    /// # let _ = children; Ok(()) }
    /// ```
    pub fn addr(&self) -> Addr<Node> {
        self.addr.clone()
    }

    /// A blocking iterator over the tree's events from now on.
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # fn demo(tree: &procvisor::tree::Tree) {
    /// for event in tree.events() {
    ///     println!("{event}");
    /// }
    /// # }
    /// ```
    pub fn events(&self) -> Events {
        self.bus.subscribe(DEFAULT_EVENT_BUFFER)
    }

    /// Sends the tree's events from now on to an actor too.
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # fn demo(tree: &procvisor::tree::Tree, r: actix::Recipient<procvisor::tree::Event>) {
    /// tree.subscribe(r);
    /// # }
    /// ```
    pub fn subscribe(&self, actor: Recipient<Event>) {
        self.bus.add_actor(actor);
    }

    /// The root's children, in start order, with their state.
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # fn demo(tree: &procvisor::tree::Tree) -> Result<(), procvisor::tree::TreeError> {
    /// for c in tree.children()? {
    ///     println!("{} {:?} restarts={}", c.name, c.pid, c.restarts);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn children(&self) -> Result<Vec<ChildState>, TreeError> {
        call(&self.addr, Children)
    }

    /// Every child of every supervisor of the tree, depth first in start order: a nested
    /// supervisor's own entry (with [`ChildState::supervisor`] set) comes before its
    /// children. Each entry carries its [path](self#paths).
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # fn demo(tree: &procvisor::tree::Tree) -> Result<(), procvisor::tree::TreeError> {
    /// for c in tree.walk()? {
    ///     println!("{:<20} {:?} {:?}", c.path, c.state, c.pid);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn walk(&self) -> Result<Vec<ChildState>, TreeError> {
        call(&self.addr, Walk)
    }

    /// Adds a child at the end of the root and starts it.
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # fn demo(tree: &procvisor::tree::Tree) -> Result<(), procvisor::tree::TreeError> {
    /// use procvisor::tree::{ChildSpec, Command};
    /// tree.add_child(ChildSpec::command("extra", Command::new("sleep").arg("60")))?;
    /// # Ok(()) }
    /// ```
    pub fn add_child(&self, spec: ChildSpec) -> Result<(), TreeError> {
        self.add_child_at("", spec)
    }

    /// Adds a child at the end of the supervisor at `supervisor_path` (`""`: the root,
    /// `"web"`: the root's nested supervisor `web`) and starts it.
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # fn demo(tree: &procvisor::tree::Tree) -> Result<(), procvisor::tree::TreeError> {
    /// use procvisor::tree::{ChildSpec, Command};
    /// tree.add_child_at("web", ChildSpec::command("api2", Command::new("sleep").arg("60")))?;
    /// # Ok(()) }
    /// ```
    pub fn add_child_at(&self, supervisor_path: &str, spec: ChildSpec) -> Result<(), TreeError> {
        call(&self.addr, AddChild::at(supervisor_path, spec))?
    }

    /// Stops the child at `path` (its shutdown, as configured) and removes it; returns
    /// once it has stopped.
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # fn demo(tree: &procvisor::tree::Tree) -> Result<(), procvisor::tree::TreeError> {
    /// tree.remove_child("extra")?;
    /// tree.remove_child("web/api2")?;
    /// # Ok(()) }
    /// ```
    pub fn remove_child(&self, path: &str) -> Result<(), TreeError> {
        call(&self.addr, RemoveChild(path.to_owned()))?
    }

    /// Grows or shrinks the group at `path`, made with [`ChildSpec::replicas`], to `n`
    /// children; returns once the removed ones have stopped.
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # fn demo(tree: &procvisor::tree::Tree) -> Result<(), procvisor::tree::TreeError> {
    /// tree.scale("workers", 8)?;
    /// tree.scale("web/handlers", 2)?;
    /// # Ok(()) }
    /// ```
    pub fn scale(&self, path: &str, n: usize) -> Result<(), TreeError> {
        call(&self.addr, Scale(path.to_owned(), n))?
    }

    /// Stops the child at `path` (or every member of the group at `path`) with its
    /// shutdown, and keeps its slot: it is [`RunState::Stopped`] until
    /// [`start_child`](Tree::start_child). Not a crash: no restart, no intensity charge.
    /// Returns once it has stopped; a stopped child is left as it is.
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # fn demo(tree: &procvisor::tree::Tree) -> Result<(), procvisor::tree::TreeError> {
    /// tree.stop_child("web/api")?;
    /// # Ok(()) }
    /// ```
    pub fn stop_child(&self, path: &str) -> Result<(), TreeError> {
        call(&self.addr, StopChild(path.to_owned()))?
    }

    /// Starts the stopped (or ended) child at `path`, or every member of the group at
    /// `path`, again in its slot; returns once it was launched (`Started` or `StartFailed`
    /// was emitted). A running child is left as it is.
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # fn demo(tree: &procvisor::tree::Tree) -> Result<(), procvisor::tree::TreeError> {
    /// tree.start_child("web/api")?;
    /// # Ok(()) }
    /// ```
    pub fn start_child(&self, path: &str) -> Result<(), TreeError> {
        call(&self.addr, StartChild(path.to_owned()))?
    }

    /// [`stop_child`](Tree::stop_child) then [`start_child`](Tree::start_child): a running
    /// child gets a new process, a stopped one is started.
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # fn demo(tree: &procvisor::tree::Tree) -> Result<(), procvisor::tree::TreeError> {
    /// tree.restart_child("workers")?; // every replica workers.0, workers.1, …
    /// # Ok(()) }
    /// ```
    pub fn restart_child(&self, path: &str) -> Result<(), TreeError> {
        call(&self.addr, RestartChild(path.to_owned()))?
    }

    /// How the tree ended, waiting at most `timeout` (`None`: forever); `None` if it is
    /// still running.
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # fn demo(tree: &procvisor::tree::Tree) {
    /// if let Some(outcome) = tree.wait(Some(std::time::Duration::from_secs(1))) {
    ///     println!("ended: {outcome:?}");
    /// }
    /// # }
    /// ```
    pub fn wait(&self, timeout: Option<Duration>) -> Option<Outcome> {
        self.outcome.wait(timeout)
    }

    /// How the tree ended, as a future.
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # async fn demo(tree: &procvisor::tree::Tree) {
    /// let outcome = tree.wait_async().await;
    /// # let _ = outcome; }
    /// ```
    pub async fn wait_async(&self) -> Outcome {
        self.outcome.wait_async().await
    }

    /// Stops every child, last-started first, each with its shutdown; returns how the tree
    /// ended (`GaveUp` if it had already given up).
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # fn demo(tree: procvisor::tree::Tree) {
    /// let outcome = tree.stop();
    /// # let _ = outcome; }
    /// ```
    pub fn stop(self) -> Outcome {
        self.addr.do_send(ShutdownTree);
        self.outcome.wait(None).expect("waits without a timeout")
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        self.addr.do_send(ShutdownTree);
    }
}

/// A child as its supervisor sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildState {
    /// Its name.
    pub name: String,
    /// Its [path](self#paths) from the root: `api`, `web/api`.
    pub path: String,
    /// Whether it is a nested supervisor.
    pub supervisor: bool,
    /// Its pid while running (0 for a running nested supervisor).
    pub pid: Option<i32>,
    /// What it is doing.
    pub state: RunState,
    /// How many times it has been restarted.
    pub restarts: u32,
    /// How it last ended.
    pub last_exit: Option<Exit>,
    /// For how long it has been running (or starting).
    pub uptime: Option<Duration>,
}

/// What a supervised child is doing.
///
/// ```text
///            start ┌──────────┐ ready  ┌─────────┐
///      ┌──────────►│ Starting ├───────►│ Running │
///      │           └────┬─────┘        └────┬────┘
///      │                │ stop (any cause)  │
///      │                ▼                   │
///      │           ┌──────────┐◄────────────┘
///      │           │ Stopping │
///      │           └────┬─────┘
///      │     ┌──────────┼─────────────┐
///      │     ▼          ▼             ▼
///  ┌───┴──────────┐ ┌───────┐  ┌──────────┐
///  │  Restarting  │ │ Ended │  │ Stopped  │ (stop_child; start_child starts it)
///  └──────────────┘ └───────┘  └──────────┘
/// ```
///
/// A child with [`Readiness::Started`] goes straight to `Running`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Started, not yet ready (see [`Readiness`]).
    Starting,
    /// Running (and ready).
    Running,
    /// Asked to stop, not yet gone.
    Stopping,
    /// Waiting out its backoff before a restart.
    Restarting,
    /// Not running and not coming back (a transient child that ended normally).
    Ended,
    /// Stopped by [`Tree::stop_child`]: not running until [`Tree::start_child`].
    Stopped,
}
