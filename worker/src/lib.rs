//! The child side of procvisor: how a process learns it is a worker, what it runs, and how
//! it reports back.
//!
//! # Brief overview
//!
//! Users never call this crate directly; they depend on `procvisor`, whose `Process`
//! builds on the pieces here:
//!
//! - [`boot`]: a constructor that runs before `main` in every program linked with
//!   procvisor. When the program was started as a procvisor worker or forkserver (told by
//!   an environment variable the parent set), the constructor takes over and never
//!   returns to `main`; otherwise it returns at once and the program runs as usual.
//! - [`entry`]: how a parent names a target to a child: the offset of a monomorphised
//!   trampoline from an anchor function, valid because parent and child run the same
//!   executable. A child only ever runs an offset that came from its own parent over a
//!   private channel.
//! - [`run`]: runs a target under `catch_unwind`, sends its result or its panic (message,
//!   location, backtrace) to the parent, and exits with Python's exit codes.
//! - [`identity`]: `current_process()` and `parent_process()` as Python numbers them.
//! - the forkserver loop: a single-threaded process, a re-exec of the program, that forks
//!   workers on request and reports their exit status.
//! - [`guard`]: the group guard, a re-exec of the program that kills what supervised
//!   commands left in their process groups once the program is gone, SIGKILL included.
//! - [`handles`]: descriptors that travel inside a target's arguments.
//! - [`os`]: the few system calls the parent side shares with us (pidfds, fd passing).
//!
//! ```no_run
//! // What a child reports, seen from the parent: see the `procvisor` crate.
//! let me = procvisor_worker::identity::current();
//! println!("{} ({})", me.name, me.pid);
//! ```
#![doc(test(no_crate_inject, attr(deny(warnings))))]

pub mod boot;
pub mod entry;
mod forkserver;
pub mod guard;
pub mod handles;
pub mod identity;
pub mod os;
pub mod run;

pub use boot::{FORKSERVER_ENV, GUARD_ENV, WORKER_ENV};
