//! The procvisor runtime: one thread running an actix `System` that hosts the Supervisor
//! actor and a Worker actor per child.
//!
//! It starts on the first `Process::start` of a process, so a plain `fn main` never has to
//! start a System itself; an actix application simply gets addresses into it, which work
//! from any thread and any System.

use std::sync::mpsc;

use actix::{Actor, Addr};
use actix_rt::ArbiterHandle;

use crate::per_process::PerProcess;
use crate::supervisor::Supervisor;

/// Handles to the runtime of this process.
#[derive(Clone)]
pub(crate) struct Runtime {
    pub(crate) arbiter: ArbiterHandle,
    pub(crate) supervisor: Addr<Supervisor>,
    /// The runtime's tokio handle, to register descriptors with its reactor from other
    /// threads (see `crate::doorbell`).
    pub(crate) tokio: tokio::runtime::Handle,
}

static RUNTIME: PerProcess<Runtime> = PerProcess::new();

/// The runtime thread's name: blocking calls that need the runtime refuse to run on it.
pub(crate) const THREAD_NAME: &str = "procvisor-runtime";

pub(crate) fn get() -> Runtime {
    RUNTIME.get_or_init(|| {
        let (tx, rx) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || {
                let system = actix::System::new();
                system.block_on(async move {
                    let supervisor = Supervisor::default().start();
                    let _ = tx.send(Runtime {
                        arbiter: actix_rt::Arbiter::current(),
                        supervisor,
                        tokio: tokio::runtime::Handle::current(),
                    });
                });
                // Runs for the rest of the program; the thread never joins.
                let _ = system.run();
            })
            .expect("the runtime thread can be created");
        rx.recv().expect("the runtime thread sends its handles")
    })
}
