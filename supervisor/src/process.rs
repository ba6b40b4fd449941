//! `Process`: Python's `multiprocessing.Process`.
//!
//! # Examples
//!
//! ```no_run
//! use procvisor::Process;
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! let mut p = Process::new(square, 12);
//! p.start()?;
//! p.join(None)?;
//! assert_eq!(p.exitcode()?, Some(0));
//! assert_eq!(p.result()?, 144);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # States
//!
//! `Created → Started → Ended → Closed`. `start` moves from Created to Started (once);
//! the child's exit, noticed by `join`, `is_alive`, `exitcode`, `active_children` or the
//! Worker actor, moves to Ended; `close` (only when not running) moves to Closed, after
//! which every method but the name and daemon accessors is an error.
//!
//! # Caveats
//!
//! - Dropping a `Process` does not stop its child, as in Python: the child stays in
//!   [`active_children`] and is joined (or, if daemonic, terminated) when the program
//!   exits. Its exit is collected by its Worker actor as soon as it happens, so it never
//!   lingers as a zombie.
//! - When this program is killed with SIGKILL, every child goes with it (a parent-death
//!   signal, and the forkserver kills its workers when its socket to us closes).
//! - The target of [`Process::new`] must be a `fn` item or a closure that captures
//!   nothing: the child finds it in its own copy of the program. A capturing closure needs
//!   [`Process::from_closure`] and the `fork` start method.
//!
//! ```compile_fail
//! let offset = 5;
//! // A capturing closure is refused at compile time.
//! let p = procvisor::Process::new(move |x: i32| x + offset, 1);
//! ```

use std::any::{Any, TypeId, type_name};
use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use nix::sys::signal::Signal;
use procvisor_protocol::frame::decode_value;
use procvisor_protocol::{EncodeError, Peer, RemoteError, Start, encode_value};
use procvisor_worker::entry::{self, EntryFn};
use procvisor_worker::{handles, identity};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::child::{Child, Report, registry};
use crate::error::{Error, Kind};
use crate::spawn::{self, StartMethod, Target};
use crate::status::ExitStatus;
use crate::worker::Worker;

/// A child process running a Rust function: Python's `multiprocessing.Process`.
///
/// `R` is the type the target returns; read it with [`Process::result`] once the child
/// has ended.
pub struct Process<R = ()> {
    name: String,
    daemon: bool,
    method: StartMethod,
    identity: Vec<u32>,
    /// What the child will run; `None` once started.
    target: Option<Pending>,
    child: Option<Arc<Child>>,
    worker: Option<crate::worker::Slot>,
    closed: bool,
    _result: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for Process<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("daemon", &self.daemon)
            .field("start_method", &self.method)
            .field("pid", &self.child.as_ref().map(|c| c.pid))
            .field("exit", &self.child.as_ref().and_then(|c| c.exit_status()))
            .field("closed", &self.closed)
            .finish()
    }
}

/// A process not started yet: what it runs, its encoded arguments, and the descriptors of
/// the handles in them (duplicates, sent with the start request and closed here after it).
struct Pending {
    target: Target,
    args: Result<Vec<u8>, EncodeError>,
    handles: Vec<OwnedFd>,
}

/// The entry point a child runs for `Process::new(f, args)`: decode the arguments, call
/// the zero-sized `F`, encode what it returns.
fn trampoline<F, A, R>(args: &[u8]) -> Result<Vec<u8>, RemoteError>
where
    F: Fn(A) -> R,
    A: DeserializeOwned,
    R: Serialize + 'static,
{
    let args: A = decode_value(args).map_err(|e| {
        remote(format!(
            "arguments did not decode as {}: {e}",
            type_name::<A>()
        ))
    })?;
    let f: F = entry::zero_sized_callable::<F, A, R>();
    encode_result(&f(args))
}

/// Encodes what a target returned, for its report. A `()` is not encoded at all: the
/// empty value tells the child it has nothing to report (no encoding is empty), and the
/// parent takes the child's clean exit as that `()` (see [`Process::result`]). The child
/// then writes nothing, and its parent wakes once, at its exit, rather than at its report
/// and again at its exit.
fn encode_result<R: Serialize + 'static>(value: &R) -> Result<Vec<u8>, RemoteError> {
    if returns_unit::<R>() {
        return Ok(Vec::new());
    }
    encode_value(value).map_err(|e| {
        remote(format!(
            "the result ({}) could not be serialized: {e}",
            type_name::<R>()
        ))
    })
}

/// Whether a target returning `R` returns nothing, and so reports nothing when it returns.
fn returns_unit<R: 'static>() -> bool {
    TypeId::of::<R>() == TypeId::of::<()>()
}

fn remote(message: String) -> RemoteError {
    RemoteError {
        message,
        location: None,
        thread: None,
        backtrace: None,
    }
}

impl<R: Serialize + DeserializeOwned + 'static> Process<R> {
    /// A process that will run `target(args)`, with the default name (`Process-N`), not
    /// daemonic, and the program's default start method.
    ///
    /// `target` must be a `fn` item or a non-capturing closure; this is checked at compile
    /// time. `args` is serialized with serde (a tuple for several arguments); an error there
    /// is reported by [`start`](Process::start).
    ///
    /// ```no_run
    /// fn greet((who, times): (String, u32)) {
    ///     for _ in 0..times {
    ///         println!("hello {who}");
    ///     }
    /// }
    /// let mut p = procvisor::Process::new(greet, ("bob".to_owned(), 2));
    /// p.start()?;
    /// p.join(None)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new<F, A>(target: F, args: A) -> Self
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
    {
        const {
            assert!(
                std::mem::size_of::<F>() == 0,
                "Process::new needs a fn item or a non-capturing closure; \
                 use Process::from_closure with the fork start method to capture"
            )
        };
        // The child makes its own `F`; this one is not needed.
        drop(target);
        let entry: EntryFn = trampoline::<F, A, R>;
        let (args, handles) = handles::collect(|| encode_value(&args));
        Self::with_target(
            Target::Entry(entry),
            args,
            handles,
            spawn::get_start_method(),
        )
    }

    /// A process that runs a capturing closure, with the `fork` start method (the only one
    /// that can: the child is a copy of this process). Read the hazard on
    /// [`StartMethod::Fork`] first.
    ///
    /// ```no_run
    /// let greeting = String::from("hello from a closure");
    /// let mut p = procvisor::Process::from_closure(move || greeting.len());
    /// p.start()?;
    /// p.join(None)?;
    /// assert_eq!(p.result()?, 20);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_closure<F>(f: F) -> Self
    where
        F: FnOnce() -> R + Send + 'static,
    {
        let body: spawn::Closure = Box::new(move || encode_result(&f()));
        Self::with_target(
            Target::Closure(body),
            Ok(Vec::new()),
            Vec::new(),
            StartMethod::Fork,
        )
    }

    fn with_target(
        target: Target,
        args: Result<Vec<u8>, EncodeError>,
        handles: Vec<OwnedFd>,
        method: StartMethod,
    ) -> Self {
        let (identity, name) = identity::next_child();
        Process {
            name,
            daemon: false,
            method,
            identity,
            target: Some(Pending {
                target,
                args,
                handles,
            }),
            child: None,
            worker: None,
            closed: false,
            _result: PhantomData,
        }
    }

    /// Sets the name (builder style).
    ///
    /// ```
    /// fn noop(_: ()) {}
    /// let p = procvisor::Process::new(noop, ()).with_name("indexer");
    /// assert_eq!(p.name(), "indexer");
    /// ```
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the daemon flag (builder style): a daemonic child is terminated when its parent
    /// exits, and may not start children of its own.
    ///
    /// ```
    /// fn noop(_: ()) {}
    /// assert!(procvisor::Process::new(noop, ()).with_daemon(true).daemon());
    /// ```
    pub fn with_daemon(mut self, daemon: bool) -> Self {
        self.daemon = daemon;
        self
    }

    /// Sets the start method of this process (builder style).
    ///
    /// ```
    /// use procvisor::{Process, StartMethod};
    /// fn noop(_: ()) {}
    /// let p = Process::new(noop, ()).with_start_method(StartMethod::Spawn);
    /// assert_eq!(p.start_method(), StartMethod::Spawn);
    /// ```
    pub fn with_start_method(mut self, method: StartMethod) -> Self {
        self.method = method;
        self
    }

    /// The name: `Process-N` unless set.
    ///
    /// ```
    /// fn noop(_: ()) {}
    /// assert!(procvisor::Process::new(noop, ()).name().starts_with("Process-"));
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Renames the process; a started child keeps the name it was started with.
    ///
    /// ```
    /// fn noop(_: ()) {}
    /// let mut p = procvisor::Process::new(noop, ());
    /// p.set_name("renamed");
    /// assert_eq!(p.name(), "renamed");
    /// ```
    pub fn set_name(&mut self, name: impl Into<String>) {
        self.name = name.into();
    }

    /// The daemon flag (false unless set).
    ///
    /// ```
    /// fn noop(_: ()) {}
    /// assert!(!procvisor::Process::new(noop, ()).daemon());
    /// ```
    pub fn daemon(&self) -> bool {
        self.daemon
    }

    /// Sets the daemon flag; an error once the process has started.
    ///
    /// ```no_run
    /// fn noop(_: ()) {}
    /// let mut p = procvisor::Process::new(noop, ());
    /// p.set_daemon(true)?;
    /// p.start()?;
    /// assert!(p.set_daemon(false).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_daemon(&mut self, daemon: bool) -> Result<(), Error> {
        self.check_open()?;
        if self.target.is_none() {
            return Err(Error::new(Kind::DaemonAfterStart));
        }
        self.daemon = daemon;
        Ok(())
    }

    /// The start method this process uses: the program's default unless set.
    ///
    /// ```
    /// fn noop(_: ()) {}
    /// let p = procvisor::Process::new(noop, ());
    /// assert_eq!(p.start_method(), procvisor::get_start_method());
    /// ```
    pub fn start_method(&self) -> StartMethod {
        self.method
    }

    /// Starts the child. A second call is an error; so is starting from a daemonic process,
    /// or arguments that failed to serialize (then no process is created).
    ///
    /// ```no_run
    /// fn noop(_: ()) {}
    /// let mut p = procvisor::Process::new(noop, ());
    /// p.start()?;
    /// assert!(p.start().is_err());
    /// # Ok::<(), procvisor::Error>(())
    /// ```
    pub fn start(&mut self) -> Result<(), Error> {
        self.start_in(crate::worker::Home::Caller)
    }

    /// `start`, with the child's Worker actor where `home` says.
    pub(crate) fn start_in(&mut self, home: crate::worker::Home) -> Result<(), Error> {
        self.check_open()?;
        if self.target.is_none() {
            return Err(Error::new(Kind::AlreadyStarted));
        }
        if identity::is_daemon() {
            return Err(Error::new(Kind::DaemonicParent));
        }
        let Pending {
            target,
            args,
            handles,
        } = self.target.take().expect("checked above");
        let args = args.map_err(|e| Error::new(Kind::Serialize(e)))?;
        procvisor_worker::boot::ensure_linked();
        let entry = match &target {
            Target::Entry(f) => entry::offset_of(*f),
            Target::Closure(_) => 0,
        };
        let start = Start {
            entry,
            args,
            name: self.name.clone(),
            identity: self.identity.clone(),
            daemon: self.daemon,
            parent: identity::as_peer(),
            start_method: self.method.as_str().to_owned(),
        };
        let launched = spawn::launch(self.method, start, target, handles)?;
        let child = Child::new(launched, self.name.clone(), self.daemon)
            .map_err(|e| Error::spawn_io(&e))?;
        self.worker = Some(crate::worker::adopt(child.clone(), home));
        self.child = Some(child);
        Ok(())
    }

    /// The started child and its Worker actor, taken out of this handle (for a supervision
    /// tree, which keeps them instead).
    pub(crate) fn into_started(self) -> Option<(Arc<Child>, Addr<Worker>)> {
        Some((self.child?, self.worker?.addr()))
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.closed {
            Err(Error::new(Kind::Closed))
        } else {
            Ok(())
        }
    }

    fn started(&self, what: &'static str) -> Result<&Arc<Child>, Error> {
        self.check_open()?;
        self.child
            .as_ref()
            .ok_or(Error::new(Kind::NotStarted(what)))
    }

    /// The child's pid; `None` before `start`.
    ///
    /// ```no_run
    /// fn noop(_: ()) {}
    /// let mut p = procvisor::Process::new(noop, ());
    /// assert_eq!(p.pid()?, None);
    /// p.start()?;
    /// assert!(p.pid()?.is_some());
    /// # Ok::<(), procvisor::Error>(())
    /// ```
    pub fn pid(&self) -> Result<Option<i32>, Error> {
        self.check_open()?;
        Ok(self.child.as_ref().map(|c| c.pid))
    }

    /// Whether the child is running: false before `start` and after it ended.
    ///
    /// ```no_run
    /// fn nap(_: ()) { std::thread::sleep(std::time::Duration::from_secs(1)) }
    /// let mut p = procvisor::Process::new(nap, ());
    /// p.start()?;
    /// assert!(p.is_alive()?);
    /// p.join(None)?;
    /// assert!(!p.is_alive()?);
    /// # Ok::<(), procvisor::Error>(())
    /// ```
    pub fn is_alive(&self) -> Result<bool, Error> {
        self.check_open()?;
        Ok(self.child.as_ref().is_some_and(|c| c.progress().is_none()))
    }

    /// Python's `exitcode`: `None` while running (or before `start`), 0 after a normal
    /// return, 1 after a panic, N after `std::process::exit(N)`, `-signum` after death by a
    /// signal.
    ///
    /// ```no_run
    /// fn fail(_: ()) { std::process::exit(3) }
    /// let mut p = procvisor::Process::new(fail, ());
    /// p.start()?;
    /// p.join(None)?;
    /// assert_eq!(p.exitcode()?, Some(3));
    /// # Ok::<(), procvisor::Error>(())
    /// ```
    pub fn exitcode(&self) -> Result<Option<i32>, Error> {
        Ok(self.exit_status()?.map(|s| s.exitcode()))
    }

    /// The full exit status (exit code, or signal and core dump), once the child ended.
    ///
    /// ```no_run
    /// fn nap(_: ()) { std::thread::sleep(std::time::Duration::from_secs(60)) }
    /// let mut p = procvisor::Process::new(nap, ());
    /// p.start()?;
    /// p.kill()?;
    /// p.join(None)?;
    /// assert_eq!(p.exit_status()?.and_then(|s| s.signal()), Some(9));
    /// # Ok::<(), procvisor::Error>(())
    /// ```
    pub fn exit_status(&self) -> Result<Option<ExitStatus>, Error> {
        self.check_open()?;
        Ok(self.child.as_ref().and_then(|c| c.progress()))
    }

    /// Blocks until the child has ended, or until `timeout` has passed with the child still
    /// running (which is not an error: check [`exitcode`](Process::exitcode)).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// fn nap(_: ()) { std::thread::sleep(Duration::from_secs(60)) }
    /// let mut p = procvisor::Process::new(nap, ());
    /// p.start()?;
    /// p.join(Some(Duration::from_millis(100)))?;
    /// assert_eq!(p.exitcode()?, None); // still running
    /// p.terminate()?;
    /// p.join(None)?;
    /// # Ok::<(), procvisor::Error>(())
    /// ```
    pub fn join(&self, timeout: Option<Duration>) -> Result<(), Error> {
        let child = self.started("join")?;
        match &self.worker {
            Some(crate::worker::Slot::Lazy(lazy)) => lazy.join(timeout),
            _ => {
                child.wait(timeout);
            }
        }
        Ok(())
    }

    /// Waits for the child to end without blocking a thread: for actix and other async
    /// code. The future does not borrow the process.
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # async fn demo() -> Result<(), procvisor::Error> {
    /// fn noop(_: ()) {}
    /// let mut p = procvisor::Process::new(noop, ());
    /// p.start()?;
    /// let status = p.join_async()?.await;
    /// assert!(status.success());
    /// # Ok(()) }
    /// ```
    pub fn join_async(
        &self,
    ) -> Result<impl std::future::Future<Output = ExitStatus> + Send + 'static, Error> {
        let child = self.started("join")?.clone();
        let worker = match child.progress() {
            Some(_) => None,
            None => self.worker.as_ref().map(crate::worker::Slot::addr),
        };
        Ok(async move {
            if let Some(status) = child.progress() {
                return status;
            }
            match worker {
                Some(addr) => match addr.send(crate::worker::WaitExit).await {
                    Ok(status) => status,
                    // The Worker's arbiter stopped before the child ended: watch it here.
                    Err(_) if tokio::runtime::Handle::try_current().is_ok() => {
                        crate::worker::watch(child).await
                    }
                    Err(_) => child.wait(None).expect("waits until the end"),
                },
                None => child.wait(None).expect("waits until the end"),
            }
        })
    }

    /// Sends SIGTERM (Python's `terminate`). Nothing happens if the child already ended.
    ///
    /// ```no_run
    /// fn nap(_: ()) { std::thread::sleep(std::time::Duration::from_secs(60)) }
    /// let mut p = procvisor::Process::new(nap, ());
    /// p.start()?;
    /// p.terminate()?;
    /// p.join(None)?;
    /// assert_eq!(p.exitcode()?, Some(-15));
    /// # Ok::<(), procvisor::Error>(())
    /// ```
    pub fn terminate(&self) -> Result<(), Error> {
        self.signal(Signal::SIGTERM)
    }

    /// Sends SIGKILL (Python's `kill`). Nothing happens if the child already ended.
    ///
    /// ```no_run
    /// fn nap(_: ()) { std::thread::sleep(std::time::Duration::from_secs(60)) }
    /// let mut p = procvisor::Process::new(nap, ());
    /// p.start()?;
    /// p.kill()?;
    /// p.join(None)?;
    /// assert_eq!(p.exitcode()?, Some(-9));
    /// # Ok::<(), procvisor::Error>(())
    /// ```
    pub fn kill(&self) -> Result<(), Error> {
        self.signal(Signal::SIGKILL)
    }

    /// Sends any signal to the child, safely against pid reuse (through its pidfd).
    ///
    /// ```no_run
    /// use nix::sys::signal::Signal;
    /// fn nap(_: ()) { std::thread::sleep(std::time::Duration::from_secs(60)) }
    /// let mut p = procvisor::Process::new(nap, ());
    /// p.start()?;
    /// p.signal(Signal::SIGINT)?;
    /// p.join(None)?;
    /// assert_eq!(p.exitcode()?, Some(-2));
    /// # Ok::<(), procvisor::Error>(())
    /// ```
    pub fn signal(&self, signal: Signal) -> Result<(), Error> {
        self.started("signal")?
            .signal(signal)
            .map_err(|e| Error::new(Kind::Spawn(e)))
    }

    /// A descriptor that becomes readable when the child ends: usable with `poll`.
    ///
    /// ```no_run
    /// use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    /// fn noop(_: ()) {}
    /// let mut p = procvisor::Process::new(noop, ());
    /// p.start()?;
    /// let mut fds = [PollFd::new(p.sentinel()?, PollFlags::POLLIN)];
    /// poll(&mut fds, PollTimeout::NONE)?;
    /// assert!(!p.is_alive()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sentinel(&self) -> Result<BorrowedFd<'_>, Error> {
        Ok(self.started("get the sentinel of")?.sentinel())
    }

    /// The Worker actor that owns this child, for actix applications; `None` before
    /// `start`. It runs on the arbiter `start` was called from when that was inside an actix
    /// System, else on procvisor's runtime thread (see [`crate::worker`]).
    ///
    /// ```
    /// fn noop(_: ()) {}
    /// assert!(procvisor::Process::new(noop, ()).worker().is_none());
    /// ```
    pub fn worker(&self) -> Option<Addr<Worker>> {
        self.worker.as_ref().map(crate::worker::Slot::addr)
    }

    /// Attaches a mailbox to this child's [`Worker`] actor: from then on a
    /// [`Call<Req, Resp>`](crate::mailbox::Call) sent to [`worker()`](Process::worker) is
    /// forwarded to the child's handler loop ([`mailbox::serve`](crate::mailbox::serve)) and
    /// its reply resolves the sender's future. The mailbox holds up to `capacity` waiting
    /// requests: a full one makes `send` wait. A `Call` of types with no mailbox attached
    /// fails with [`MailboxError::NoMailbox`](crate::mailbox::MailboxError::NoMailbox).
    ///
    /// The mailbox runs where the Worker does: start the process from inside the actix
    /// System that sends the requests, and a request never leaves that System's thread
    /// (started outside it, every request crosses to procvisor's runtime thread and back).
    ///
    /// ```no_run
    /// use procvisor::mailbox::{self, Call};
    /// use procvisor::{Connection, Process};
    ///
    /// fn square_server(conn: Connection) {
    ///     mailbox::serve(conn, |x: u64| x * x).unwrap();
    /// }
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let (end, child_end) = mailbox::channel::<u64, u64>()?;
    /// let mut p = Process::new(square_server, child_end);
    /// p.start()?;
    /// p.attach_mailbox(end, 16)?;
    /// let worker = p.worker().expect("started");
    /// actix::System::new().block_on(async move {
    ///     let reply = worker.send(Call::<u64, u64>::new(12)).await.unwrap().unwrap();
    ///     assert_eq!(reply, 144);
    /// });
    /// # Ok(()) }
    /// ```
    pub fn attach_mailbox<Req, Resp>(
        &self,
        end: crate::mailbox::MailboxEnd<Req, Resp>,
        capacity: usize,
    ) -> Result<(), Error>
    where
        Req: serde::Serialize + Unpin + Send + 'static,
        Resp: serde::de::DeserializeOwned + Unpin + Send + 'static,
    {
        self.started("attach a mailbox to")?;
        // Started and open: the Worker is there (it goes only with `close`).
        if let Some(worker) = &self.worker {
            worker
                .addr()
                .do_send(crate::mailbox::AttachMailbox::new(end, capacity));
        }
        Ok(())
    }

    /// Detaches the mailbox of these types from this child's [`Worker`]: requests already
    /// sent are answered, and then the child's [`serve`](crate::mailbox::serve) loop sees
    /// the end of its stream and returns, as when a [`Mailbox`](crate::mailbox::Mailbox)
    /// actor of one's own is dropped.
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # fn demo(p: &procvisor::Process<u64>) -> Result<(), procvisor::Error> {
    /// p.detach_mailbox::<u64, u64>()?;
    /// # Ok(()) }
    /// ```
    pub fn detach_mailbox<Req: 'static, Resp: 'static>(&self) -> Result<(), Error> {
        self.started("detach a mailbox from")?;
        if let Some(worker) = &self.worker {
            worker
                .addr()
                .do_send(crate::mailbox::DetachMailbox::<Req, Resp>::default());
        }
        Ok(())
    }

    /// What the target returned, once the child has ended.
    ///
    /// Errors: [not finished](Error::is_running), [the target panicked](Error::is_remote)
    /// (with message and location), [ended without reporting](Error::exitcode) (killed, or
    /// `std::process::exit`), the child broke the protocol, or the value did not decode.
    ///
    /// For a target that returns `()`, a child that exited with 0 succeeded: the result is
    /// `Ok(())` whether the target returned or called `std::process::exit(0)`.
    ///
    /// ```no_run
    /// fn fails(_: ()) -> u8 { panic!("no luck") }
    /// let mut p = procvisor::Process::new(fails, ());
    /// p.start()?;
    /// p.join(None)?;
    /// let err = p.result().unwrap_err();
    /// assert_eq!(err.remote().map(|r| r.message.as_str()), Some("no luck"));
    /// # Ok::<(), procvisor::Error>(())
    /// ```
    pub fn result(&self) -> Result<R, Error> {
        let child = self.started("get the result of")?;
        let Some(status) = child.progress() else {
            return Err(Error::new(Kind::NotFinished));
        };
        match child.report() {
            Some(Report::Value(bytes)) => decode_value(&bytes).map_err(|err| {
                Error::new(Kind::Decode {
                    expected: type_name::<R>(),
                    err,
                })
            }),
            Some(Report::Panic(r)) => Err(Error::new(Kind::Remote(r))),
            Some(Report::Protocol(e)) => Err(Error::new(Kind::Protocol(e))),
            // A target returning `()` that returned reports nothing (see `encode_result`);
            // nor does one that called `std::process::exit(0)`. Both succeeded, with nothing
            // to return.
            None => match (Box::new(()) as Box<dyn Any>).downcast::<R>() {
                Ok(unit) if status.exitcode() == 0 => Ok(*unit),
                _ => Err(Error::new(Kind::NoResult {
                    exitcode: status.exitcode(),
                })),
            },
        }
    }

    /// Releases the process's resources. An error while the child is running; afterwards
    /// every method reports that the process is closed. Closing twice is fine.
    ///
    /// ```no_run
    /// fn noop(_: ()) {}
    /// let mut p = procvisor::Process::new(noop, ());
    /// p.start()?;
    /// p.join(None)?;
    /// p.close()?;
    /// assert!(p.pid().unwrap_err().is_closed());
    /// # Ok::<(), procvisor::Error>(())
    /// ```
    pub fn close(&mut self) -> Result<(), Error> {
        if self.closed {
            return Ok(());
        }
        if let Some(c) = &self.child {
            if c.progress().is_none() {
                return Err(Error::new(Kind::StillRunning));
            }
        }
        self.child = None;
        self.worker = None;
        self.target = None;
        self.closed = true;
        Ok(())
    }
}

/// This process, as Python's `current_process()` describes it.
///
/// ```
/// let me = procvisor::current_process();
/// assert_eq!(me.name, "MainProcess");
/// assert_eq!(me.pid, std::process::id() as i32);
/// ```
pub fn current_process() -> identity::Identity {
    identity::current()
}

/// The process that started this one; `None` in the main process.
///
/// ```
/// assert!(procvisor::parent_process().is_none());
/// ```
pub fn parent_process() -> Option<Peer> {
    identity::current().parent
}

/// A running child of this process, as [`active_children`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveChild {
    /// The child's pid.
    pub pid: i32,
    /// Its name.
    pub name: String,
    /// Its daemon flag.
    pub daemon: bool,
}

/// The children of this process that are still running; collects the exit of those that
/// have ended (Python's `active_children()`).
///
/// ```
/// assert!(procvisor::active_children().is_empty());
/// ```
pub fn active_children() -> Vec<ActiveChild> {
    registry::live()
        .into_iter()
        .map(|c| ActiveChild {
            pid: c.pid,
            name: c.name.clone(),
            daemon: c.daemon,
        })
        .collect()
}

/// The number of CPUs online (Python's `cpu_count()`).
///
/// ```
/// assert!(procvisor::cpu_count() >= 1);
/// ```
pub fn cpu_count() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)
        .ok()
        .flatten()
        .map(|n| n.max(1) as usize)
        .unwrap_or(1)
}
