//! The Supervisor actor: owns a Worker actor per child and hears of every exit.
//!
//! This is the root of the tree. For now it records its children and their exits; restart
//! strategies build on exactly this ownership and exit path.
//!
//! ```no_run
//! # #[allow(dead_code)]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! fn noop(_: ()) {}
//! let mut p = procvisor::Process::new(noop, ());
//! p.start()?;
//! let children = procvisor::supervisor().send(procvisor::ListChildren).await?;
//! assert!(children.iter().any(|c| Some(c.pid) == p.pid().ok().flatten()));
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;

use actix::{Actor, Addr, Context, Handler, Message};

use crate::status::ExitStatus;
use crate::worker::{Worker, WorkerId};

/// A child as its supervisor knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildInfo {
    /// The worker's id, unique in this process.
    pub id: WorkerId,
    /// The child's pid.
    pub pid: i32,
    /// The child's name.
    pub name: String,
    /// The daemon flag.
    pub daemon: bool,
}

/// The root supervisor of this process.
#[derive(Debug, Default)]
pub struct Supervisor {
    children: BTreeMap<WorkerId, (ChildInfo, Addr<Worker>)>,
    exited: u64,
}

impl Actor for Supervisor {
    type Context = Context<Self>;
}

/// A Worker actor reports for duty.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Adopted {
    pub(crate) info: ChildInfo,
    pub(crate) addr: Addr<Worker>,
}

impl Handler<Adopted> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: Adopted, _: &mut Context<Self>) {
        self.children.insert(msg.info.id, (msg.info, msg.addr));
    }
}

/// A Worker actor's child has ended.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Exited {
    pub(crate) id: WorkerId,
    pub(crate) status: ExitStatus,
}

impl Handler<Exited> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: Exited, _: &mut Context<Self>) {
        let _ = msg.status;
        self.children.remove(&msg.id);
        self.exited += 1;
    }
}

/// Asks the supervisor for its running children, in start order.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Vec<ChildInfo>")]
pub struct ListChildren;

impl Handler<ListChildren> for Supervisor {
    type Result = Vec<ChildInfo>;

    fn handle(&mut self, _: ListChildren, _: &mut Context<Self>) -> Vec<ChildInfo> {
        // Running children whose Worker starts on demand (see `worker::Lazy`) are listed
        // too: their actors start now, and are entered here rather than when their
        // `Adopted` arrives, after this answer.
        for child in crate::child::registry::live() {
            if let Some(lazy) = child.lazy_worker() {
                let info = ChildInfo {
                    id: lazy.id(),
                    pid: child.pid,
                    name: child.name.clone(),
                    daemon: child.daemon,
                };
                self.children.insert(info.id, (info, lazy.addr()));
            }
        }
        self.children.values().map(|(i, _)| i.clone()).collect()
    }
}

/// The address of this process's root supervisor (starting the runtime if needed).
pub fn supervisor() -> Addr<Supervisor> {
    crate::runtime::get().supervisor
}
