//! The Worker actor: one per child. It watches the child's sentinel and control socket
//! through the reactor (no polling loop), records the exit, wakes every async joiner, and
//! tells the Supervisor.
//!
//! # Where it runs
//!
//! A child started from inside an actix System (an actor, or a future an arbiter drives)
//! gets its Worker on that same arbiter: requests to it, and to the mailboxes it holds
//! ([`Process::attach_mailbox`](crate::Process::attach_mailbox)), stay on the caller's
//! thread, with no hop to another thread and back. A child started anywhere else (a plain
//! `fn main`, a thread of its own) gets it on procvisor's runtime thread, started there
//! when first needed (its address asked for, the Supervisor listing its children, or the
//! child ending with no `join` waiting), so that starting a child does not wake that
//! thread. The children of supervision trees, pools and managers get theirs on the
//! runtime at once. Should the caller's System stop while the child runs, the runtime
//! takes over the watch: the exit is still collected and the Supervisor still told; the
//! old address answers no more.
//!
//! # States
//!
//! `Running → Exited → Stopped`. At the exit the actor wakes every `WaitExit`, tells the
//! Supervisor (which forgets the child), and keeps answering: a `WaitExit` or `Status` sent
//! later is answered at once with the recorded status. It stops when the last address to
//! it is dropped (the `Process` handle holds one), releasing the child's descriptors.
//!
//! ```no_run
//! # #[allow(dead_code)]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use procvisor::{Process, worker::{Signal, WaitExit}};
//! fn sleepy(_: ()) { std::thread::sleep(std::time::Duration::from_secs(60)) }
//! let mut p = Process::new(sleepy, ());
//! p.start()?;
//! let addr = p.worker().expect("started");
//! addr.send(Signal(nix::sys::signal::Signal::SIGTERM)).await??;
//! let status = addr.send(WaitExit).await?;
//! assert_eq!(status.exitcode(), -15);
//! # Ok(()) }
//! ```

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use actix::{
    Actor, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, ResponseFuture,
    WrapFuture,
};
use tokio::sync::oneshot;

use crate::child::Child;
use crate::status::ExitStatus;
use crate::supervisor::{Adopted, ChildInfo, Exited, Supervisor};

/// A worker's id: unique within this process, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerId(pub u64);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl WorkerId {
    fn next() -> Self {
        WorkerId(NEXT_ID.fetch_add(1, Ordering::Relaxed))
    }
}

/// The actor that owns one child process.
pub struct Worker {
    id: WorkerId,
    child: Arc<Child>,
    supervisor: Addr<Supervisor>,
    waiters: Vec<oneshot::Sender<ExitStatus>>,
    /// The mailboxes to the child, by the (request, reply) types they carry: each an
    /// `Addr<Mailbox<Req, Resp>>` (see [`crate::mailbox`]).
    pub(crate) mailboxes: HashMap<TypeId, Box<dyn Any>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.id)
            .field("pid", &self.child.pid)
            .finish()
    }
}

impl Worker {
    pub(crate) fn new(id: WorkerId, child: Arc<Child>, supervisor: Addr<Supervisor>) -> Self {
        Worker {
            id,
            child,
            supervisor,
            waiters: Vec::new(),
            mailboxes: HashMap::new(),
        }
    }

    fn info(&self) -> ChildInfo {
        ChildInfo {
            id: self.id,
            pid: self.child.pid,
            name: self.child.name.clone(),
            daemon: self.child.daemon,
        }
    }

    fn finish(&mut self, status: ExitStatus) {
        for w in self.waiters.drain(..) {
            let _ = w.send(status);
        }
        self.supervisor.do_send(Exited {
            id: self.id,
            status,
        });
        // No `ctx.stop()`: late questions still get answers; actix stops the actor when its
        // last address is dropped.
    }
}

/// Where a child's Worker actor runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Home {
    /// On the arbiter of the calling actor or future when there is one (so that its
    /// requests to the Worker stay on its own thread), else on procvisor's runtime.
    Caller,
    /// On procvisor's runtime (a supervision tree keeps its workers there).
    Runtime,
}

/// A started child's Worker actor, as its `Process` holds it.
#[derive(Debug)]
pub(crate) enum Slot {
    /// The actor runs.
    Started(Addr<Worker>),
    /// The actor starts on procvisor's runtime when first needed.
    Lazy(Arc<Lazy>),
}

impl Slot {
    /// The actor's address, starting it if it has not started yet.
    pub(crate) fn addr(&self) -> Addr<Worker> {
        match self {
            Slot::Started(addr) => addr.clone(),
            Slot::Lazy(lazy) => lazy.addr(),
        }
    }
}

/// Registers a started child (for the exit rule and `active_children`) and gives it a Worker
/// actor where `home` says.
///
/// A child started outside any actix System (a plain `fn main`, a thread of its own) gets a
/// [`Lazy`] Worker, which starts on procvisor's runtime only when something needs it; started
/// at once, it would wake the runtime thread while the child is being made and running, and
/// on this kind of machine that thread's work (page faults on memory the child still shares,
/// and the TLB shootdowns they send to the other CPU) cost more than the rest of a fork
/// start+join together.
pub(crate) fn adopt(child: Arc<Child>, home: Home) -> Slot {
    crate::child::registry::add(child.clone());
    let in_system = tokio::runtime::Handle::try_current().is_ok();
    if home == Home::Caller && !in_system {
        return Slot::Lazy(Lazy::new(child));
    }
    let rt = crate::runtime::get();
    let arbiter = match home {
        // Inside a running async context on an actix arbiter: an actor, or a future an
        // arbiter drives. A System built but not running has no tokio context here.
        Home::Caller => actix_rt::Arbiter::try_current().unwrap_or(rt.arbiter),
        Home::Runtime => rt.arbiter,
    };
    let supervisor = rt.supervisor;
    Slot::Started(Worker::start_in_arbiter(&arbiter, move |_| {
        Worker::new(WorkerId::next(), child, supervisor)
    }))
}

/// A Worker actor that starts on procvisor's runtime when first needed: when its address is
/// asked for ([`Process::worker`](crate::Process::worker), `join_async`, a mailbox), when the
/// Supervisor lists its children, or when the child writes or ends with no `join` waiting
/// for it.
///
/// Until then the child's sentinel and control socket sit in the doorbell, an epoll set of
/// procvisor's (see `crate::doorbell`), put there from the starting thread, which wakes
/// nobody: should either become readable, the runtime starts the actor, which collects the
/// exit at once, as a Worker started eagerly would, so that no child lingers as a zombie.
/// A blocking `join` takes the descriptors out of the set while it waits, so that the
/// child's end wakes the joiner alone, and puts them back if it returns with the child
/// still running.
///
/// A child whose exit a `join` collected before anything asked for its actor never starts
/// one: nobody can tell, since the actor would only have reported an exit already known.
pub(crate) struct Lazy {
    id: WorkerId,
    child: Arc<Child>,
    state: Mutex<LazyState>,
}

enum LazyState {
    /// No actor; the doorbell holds the descriptors (and this `Lazy`).
    Watched,
    /// No actor, and the doorbell holds nothing: a blocking `join` watches, or the exit has
    /// been collected.
    Quiet,
    /// The actor runs.
    Started(Addr<Worker>),
}

impl std::fmt::Debug for Lazy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &*self.lock() {
            LazyState::Watched => "watched",
            LazyState::Quiet => "quiet",
            LazyState::Started(_) => "started",
        };
        f.debug_struct("Lazy")
            .field("id", &self.id)
            .field("pid", &self.child.pid)
            .field("state", &state)
            .finish()
    }
}

impl Lazy {
    fn new(child: Arc<Child>) -> Arc<Lazy> {
        let lazy = Arc::new(Lazy {
            id: WorkerId::next(),
            child,
            state: Mutex::new(LazyState::Quiet),
        });
        lazy.child.set_lazy_worker(Arc::downgrade(&lazy));
        lazy.watch();
        lazy
    }

    fn lock(&self) -> MutexGuard<'_, LazyState> {
        // Each critical section leaves the state whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The worker's id (the one its actor will have).
    pub(crate) fn id(&self) -> WorkerId {
        self.id
    }

    /// The child it watches.
    pub(crate) fn child(&self) -> &Arc<Child> {
        &self.child
    }

    /// Puts the child's descriptors in the doorbell, unless the actor runs already; starts
    /// the actor at once when the doorbell cannot take them.
    fn watch(self: &Arc<Self>) {
        let mut st = self.lock();
        if !matches!(*st, LazyState::Quiet) {
            return;
        }
        if crate::doorbell::watch(self) {
            *st = LazyState::Watched;
        } else {
            drop(st);
            self.addr();
        }
    }

    /// Called by the doorbell, which has let go of the descriptors, when one of them became
    /// readable: starts the actor, unless a `join` took the watch over meanwhile.
    pub(crate) fn ring(&self) {
        if matches!(*self.lock(), LazyState::Watched) {
            self.addr();
        }
    }

    /// The actor's address, starting it on procvisor's runtime first if needed.
    pub(crate) fn addr(&self) -> Addr<Worker> {
        let mut st = self.lock();
        if let LazyState::Started(addr) = &*st {
            return addr.clone();
        }
        // Out of the doorbell first: the actor watches the same descriptors itself.
        if matches!(*st, LazyState::Watched) {
            drop(crate::doorbell::forget(self.id));
        }
        let rt = crate::runtime::get();
        let (id, child, supervisor) = (self.id, self.child.clone(), rt.supervisor);
        let addr =
            Worker::start_in_arbiter(&rt.arbiter, move |_| Worker::new(id, child, supervisor));
        *st = LazyState::Started(addr.clone());
        addr
    }

    /// A blocking join: the doorbell lets go of the descriptors while this thread waits on
    /// them itself, and gets them back if the child still runs when the wait ends.
    pub(crate) fn join(self: &Arc<Self>, timeout: Option<std::time::Duration>) {
        let took = {
            let mut st = self.lock();
            let watched = matches!(*st, LazyState::Watched);
            if watched {
                *st = LazyState::Quiet;
                drop(crate::doorbell::forget(self.id));
            }
            watched
        };
        // Also on unwinding: a child left unwatched could end up a zombie.
        struct Rewatch<'a>(&'a Arc<Lazy>, bool);
        impl Drop for Rewatch<'_> {
            fn drop(&mut self) {
                if self.1 && self.0.child.exit_status().is_none() {
                    self.0.watch();
                }
            }
        }
        let _rewatch = Rewatch(self, took);
        self.child.wait(timeout);
    }
}

/// Waits, through the reactor, until the child has ended.
pub(crate) async fn watch(child: Arc<Child>) -> ExitStatus {
    let register = |control| crate::sys::watch_readable(child.clone(), control);
    let (sentinel, control) = match (register(false), register(true)) {
        (Ok(s), Ok(c)) => (s, c),
        // The reactor refused the descriptors (it never should for a pidfd, a pipe and a
        // socket): fall back to a blocking wait on a thread of its own.
        _ => {
            let c = child.clone();
            return tokio::task::spawn_blocking(move || c.wait(None).expect("waits forever"))
                .await
                .expect("the blocking wait does not panic");
        }
    };
    loop {
        if let Some(status) = child.progress() {
            return status;
        }
        // Readiness is cleared before `progress` drains, so an event that lands after the
        // drain raises a fresh edge and wakes us again.
        tokio::select! {
            Ok(mut g) = sentinel.readable() => g.clear_ready(),
            Ok(mut g) = control.readable(), if child.control_open() => g.clear_ready(),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.child.exit_status().is_some() {
            return;
        }
        // The arbiter this Worker ran on stopped while the child lives on: procvisor's
        // runtime takes over the watch, so the exit is still collected (no zombie) and the
        // Supervisor still hears of it.
        let (child, supervisor, id) = (self.child.clone(), self.supervisor.clone(), self.id);
        crate::runtime::get().arbiter.spawn(async move {
            let status = watch(child).await;
            supervisor.do_send(Exited { id, status });
        });
    }
}

impl Actor for Worker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.supervisor.do_send(Adopted {
            info: self.info(),
            addr: ctx.address(),
        });
        ctx.spawn(
            watch(self.child.clone())
                .into_actor(self)
                .map(|status, act, _| act.finish(status)),
        );
    }
}

/// Resolves with the child's exit status once it has ended.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "ExitStatus")]
pub struct WaitExit;

impl Handler<WaitExit> for Worker {
    type Result = ResponseFuture<ExitStatus>;

    fn handle(&mut self, _: WaitExit, _: &mut Context<Self>) -> Self::Result {
        if let Some(status) = self.child.exit_status() {
            return Box::pin(async move { status });
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.push(tx);
        let child = self.child.clone();
        Box::pin(async move {
            match rx.await {
                Ok(status) => status,
                // The sender goes only with the actor, which outlives the exit while
                // anyone can ask; should it go anyway, the child can still be waited on.
                Err(_) => child.wait(None).expect("waits until the end"),
            }
        })
    }
}

/// Sends a signal to the child (a no-op once it has been reaped).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<(), nix::errno::Errno>")]
pub struct Signal(pub nix::sys::signal::Signal);

impl Handler<Signal> for Worker {
    type Result = Result<(), nix::errno::Errno>;

    fn handle(&mut self, msg: Signal, _: &mut Context<Self>) -> Self::Result {
        self.child.signal(msg.0)
    }
}

/// Asks for the child's description and, if it has ended, its exit status.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "WorkerStatus")]
pub struct Status;

/// The answer to [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, actix::MessageResponse)]
pub struct WorkerStatus {
    /// Who the child is.
    pub info: ChildInfo,
    /// How it ended, once it has.
    pub exit: Option<ExitStatus>,
}

impl Handler<Status> for Worker {
    type Result = WorkerStatus;

    fn handle(&mut self, _: Status, _: &mut Context<Self>) -> Self::Result {
        WorkerStatus {
            info: self.info(),
            exit: self.child.exit_status(),
        }
    }
}
