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
//! `fn main`, a thread of its own) gets it on procvisor's runtime thread, as do the
//! children of supervision trees, pools and managers. Should the caller's System stop
//! while the child runs, the runtime takes over the watch: the exit is still collected
//! and the Supervisor still told; the old address answers no more.
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
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
    pub(crate) fn new(child: Arc<Child>, supervisor: Addr<Supervisor>) -> Self {
        Worker {
            id: WorkerId(NEXT_ID.fetch_add(1, Ordering::Relaxed)),
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

/// Registers a started child (for the exit rule and `active_children`) and starts its Worker
/// actor where `home` says.
pub(crate) fn adopt(child: Arc<Child>, home: Home) -> Addr<Worker> {
    crate::child::registry::add(child.clone());
    let rt = crate::runtime::get();
    let supervisor = rt.supervisor.clone();
    let arbiter = match home {
        // Inside a running async context on an actix arbiter: an actor, or a future an
        // arbiter drives. A System built but not running has no tokio context here.
        Home::Caller if tokio::runtime::Handle::try_current().is_ok() => {
            actix_rt::Arbiter::try_current().unwrap_or(rt.arbiter)
        }
        _ => rt.arbiter,
    };
    Worker::start_in_arbiter(&arbiter, move |_| Worker::new(child, supervisor))
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
