//! procvisor: Python's `multiprocessing`, rebuilt in Rust as an actor-based process
//! supervisor.
//!
//! # Brief overview
//!
//! - [`Process`] runs a Rust function in a child process, with Python's semantics: a
//!   name, a daemon flag, `start`, `join(timeout)`, `terminate`, `kill`, `close`,
//!   `exitcode`, a `sentinel` descriptor, and the target's result or panic carried back.
//! - [`StartMethod`] chooses how children are made: `forkserver` (the default), `spawn`,
//!   `fork`.
//! - Behind every started child stands a [`Worker`](worker::Worker) actor, owned by the
//!   process's root [`Supervisor`](supervisor::Supervisor) actor, on a runtime thread of
//!   procvisor's own: a plain `fn main` needs no actix System, and an actix application
//!   gets actor addresses and `join_async`. A child started from inside an actix System
//!   gets its Worker on the caller's arbiter, so messages to it never leave that thread.
//! - [`pipe`] makes two connected [`Connection`]s that send typed (serde) messages; either
//!   end travels to a child inside its target's arguments. [`wait`] waits on connections,
//!   processes and descriptors at once.
//! - [`Listener`] and [`client`] make connections between unrelated processes, over Unix
//!   sockets (a path or an abstract name) or TCP, authenticated with a shared authkey.
//! - [`current_process`], [`parent_process`], [`active_children`], [`cpu_count`] as in
//!   Python.
//!
//! ```no_run
//! use procvisor::{current_process, Process};
//!
//! fn work((id, count): (u32, u32)) -> u32 {
//!     let me = current_process();
//!     println!("{} (pid {}) counts to {count}", me.name, me.pid);
//!     id * count
//! }
//!
//! let mut children: Vec<Process<u32>> = (0..3).map(|i| Process::new(work, (i, 5))).collect();
//! for p in &mut children {
//!     p.start()?;
//! }
//! for p in &children {
//!     p.join(None)?;
//!     println!("{} returned {}", p.name(), p.result()?);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Caveats
//!
//! Every program that links procvisor carries a constructor that runs before `main` and
//! lets the program boot as a worker when its parent asks. Children are never orphans:
//! they die with the program (SIGKILL included), daemonic ones are terminated and the
//! others joined when it exits normally, and their exits are collected through pidfds
//! without polling and without `waitpid(-1)`.
#![doc(test(no_crate_inject, attr(deny(warnings))))]
#![deny(unsafe_code)]

mod child;
pub mod connection;
mod doorbell;
mod error;
pub mod listener;
pub mod mailbox;
pub mod manager;
mod per_process;
pub mod pool;
pub mod process;
pub mod queues;
pub mod restart;
mod runtime;
pub mod shared_memory;
pub mod spawn;
mod status;
pub mod supervisor;
pub mod synchronize;
pub mod tree;
pub mod worker;

#[allow(unsafe_code)]
#[cfg(target_os = "linux")]
#[path = "sys/unix.rs"]
mod sys;

pub use connection::{Connection, ConnectionError, pipe, wait};
pub use error::Error;
pub use listener::{Address, AuthError, Client, Listener, ListenerError, client};
pub use manager::Manager;
pub use pool::{AsyncResult, Pool, PoolError};
pub use process::{
    ActiveChild, Process, active_children, cpu_count, current_process, parent_process,
};
pub use procvisor_protocol::{Peer, RemoteError};
pub use procvisor_worker::identity::Identity;
pub use queues::{JoinableQueue, Queue, SimpleQueue};
pub use shared_memory::SharedMemory;
pub use spawn::{StartMethod, get_start_method, set_start_method};
pub use status::ExitStatus;
pub use supervisor::{ChildInfo, ListChildren, Supervisor, supervisor};
pub use synchronize::{Array, Barrier, Condition, Event, Lock, RLock, Semaphore, Value};
pub use worker::{Worker, WorkerId};
