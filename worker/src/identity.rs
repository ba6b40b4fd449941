//! Who this process is, as Python's `current_process()` and `parent_process()` tell it.
//!
//! The main process is `MainProcess` with an empty identity. Its children are numbered
//! from 1 in start order (`Process-1`, `Process-2`, …), and a child's children append to
//! their parent's identity (`Process-1:1`), as CPython does.
//!
//! ```
//! let me = procvisor_worker::identity::current();
//! assert_eq!(me.name, "MainProcess");
//! assert!(me.parent.is_none());
//! ```

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use procvisor_protocol::{Peer, Start};

/// A snapshot of this process's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The process name.
    pub name: String,
    /// Python's `_identity`: empty in the main process.
    pub identity: Vec<u32>,
    /// The daemon flag this process was started with.
    pub daemon: bool,
    /// This process's pid.
    pub pid: i32,
    /// The process that started this one; `None` in the main process.
    pub parent: Option<Peer>,
    /// How this process was started; `None` in the main process.
    pub start_method: Option<String>,
}

struct State {
    name: String,
    identity: Vec<u32>,
    daemon: bool,
    parent: Option<Peer>,
    start_method: Option<String>,
}

impl State {
    /// The name, which is `MainProcess` until this process becomes a child.
    fn display_name(&self) -> String {
        if self.name.is_empty() {
            "MainProcess".to_owned()
        } else {
            self.name.clone()
        }
    }
}

/// Held only for field copies; never across a call out.
static STATE: Mutex<State> = Mutex::new(State {
    name: String::new(),
    identity: Vec::new(),
    daemon: false,
    parent: None,
    start_method: None,
});

/// Numbers this process's children, from 1.
static CHILDREN: AtomicU32 = AtomicU32::new(1);

fn lock() -> std::sync::MutexGuard<'static, State> {
    // A panic while holding this lock can only leave a half-copied snapshot behind; the
    // state itself is always whole, so poisoning is ignored.
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// This process's identity.
pub fn current() -> Identity {
    let s = lock();
    Identity {
        name: s.display_name(),
        identity: s.identity.clone(),
        daemon: s.daemon,
        pid: std::process::id() as i32,
        parent: s.parent.clone(),
        start_method: s.start_method.clone(),
    }
}

/// Whether this process was started as a daemon (without copying the rest of its
/// identity).
///
/// ```
/// assert!(!procvisor_worker::identity::is_daemon());
/// ```
pub fn is_daemon() -> bool {
    lock().daemon
}

/// This process as a [`Peer`], to tell a child who its parent is.
///
/// ```
/// let me = procvisor_worker::identity::as_peer();
/// assert_eq!(me.pid, std::process::id() as i32);
/// ```
pub fn as_peer() -> Peer {
    let s = lock();
    Peer {
        pid: std::process::id() as i32,
        name: s.display_name(),
    }
}

/// The identity and default name of the next child this process starts.
///
/// ```
/// let (id, name) = procvisor_worker::identity::next_child();
/// assert_eq!(name, format!("Process-{}", id[0]));
/// ```
pub fn next_child() -> (Vec<u32>, String) {
    let n = CHILDREN.fetch_add(1, Ordering::Relaxed);
    let mut identity = lock().identity.clone();
    identity.push(n);
    let numbers: Vec<String> = identity.iter().map(u32::to_string).collect();
    let name = format!("Process-{}", numbers.join(":"));
    (identity, name)
}

/// Renames this process (Python's `current_process().name = ...`).
///
/// ```
/// procvisor_worker::identity::set_name("renamed");
/// assert_eq!(procvisor_worker::identity::current().name, "renamed");
/// ```
pub fn set_name(name: &str) {
    lock().name = name.to_owned();
}

/// Holds the identity lock across a `fork`, so that the child never inherits it locked by
/// a thread it does not have. Drop the guard on both sides after the fork.
#[doc(hidden)]
pub fn lock_for_fork() -> impl Sized {
    lock()
}

/// Becomes the worker that `start` describes: called first thing in every child. The
/// identity fields move out of `start` (its arguments stay): a child copies nothing it
/// can take.
pub(crate) fn become_child(start: &mut Start) {
    let mut s = lock();
    s.name = std::mem::take(&mut start.name);
    s.identity = std::mem::take(&mut start.identity);
    s.daemon = start.daemon;
    s.parent = Some(Peer {
        pid: start.parent.pid,
        name: std::mem::take(&mut start.parent.name),
    });
    s.start_method = Some(std::mem::take(&mut start.start_method));
    CHILDREN.store(1, Ordering::Relaxed);
}
