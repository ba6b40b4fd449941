//! The doorbell: one epoll set per process, where on-demand Workers (see `worker::Lazy`)
//! leave their child's descriptors, and one task on procvisor's runtime that wakes when any
//! of them becomes readable and starts that child's Worker.
//!
//! Each child could instead be registered with the runtime's tokio reactor, as it once
//! was. That costs more than it looks, and all of it in the thread that has just forked:
//! tokio allocates a record per descriptor, takes the reactor's locks and counts handles to
//! it, and frees a record only when the runtime thread next turns (which the starting
//! thread wakes it up for, every 16 deregistrations). Under `fork`, every page those
//! writes touch is copied while the child still shares it. Adding a descriptor to a set of
//! our own is one `epoll_ctl` and one map entry: in a loop of fork start+joins, page faults
//! went from 61 to 34 per start+join, and the runtime thread no longer wakes up at all.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use tokio::io::unix::AsyncFd;

use crate::per_process::PerProcess;
use crate::worker::{Lazy, WorkerId};

/// The set of this process, made on first use.
struct Doorbell {
    epoll: Epoll,
    /// The watched children by worker id (each descriptor's epoll data), with whether
    /// their control socket is in the set too. The entries keep the children's
    /// descriptors open while the set holds them, and keep a child that nobody joins
    /// watched after its `Process` is dropped.
    watched: Mutex<HashMap<u64, (Arc<Lazy>, bool)>>,
}

/// The set of this process; `None` if it could not be made, in which case on-demand
/// Workers start at once instead (slower, and just as correct).
static DOORBELL: PerProcess<Option<&'static Doorbell>> = PerProcess::new();

/// The number of the set's descriptor, for a `fork` child to close (-1: none yet).
static EPOLL_FD: AtomicI32 = AtomicI32::new(-1);

/// Puts `lazy`'s child in the set: its sentinel, and its control socket while that is
/// open. `false` when that cannot be done (no set, or a refused descriptor), in which case
/// the caller must start the Worker itself.
///
/// Called with `lazy`'s state locked, so that the ringer, which locks it after taking the
/// entry, sees the state this call's caller leaves.
pub(crate) fn watch(lazy: &Arc<Lazy>) -> bool {
    let Some(bell) = DOORBELL.get_or_init(Doorbell::open) else {
        return false;
    };
    let id = lazy.id().0;
    let control = lazy.child().control_open();
    let event = EpollEvent::new(EpollFlags::EPOLLIN, id);
    let mut watched = bell.lock();
    if bell.epoll.add(lazy.child().sentinel(), event).is_err() {
        return false;
    }
    if control && bell.epoll.add(lazy.child().control_fd(), event).is_err() {
        let _ = bell.epoll.delete(lazy.child().sentinel());
        return false;
    }
    watched.insert(id, (lazy.clone(), control));
    true
}

/// Takes the child of worker `id` out of the set, and returns its `Lazy` if the set still
/// held it (the ringer may have taken it first).
pub(crate) fn forget(id: WorkerId) -> Option<Arc<Lazy>> {
    DOORBELL.get().flatten()?.take(id.0)
}

/// Closes the copy of the set's descriptor that a `fork` child inherited. The child makes
/// its own set should it start children; the parent's stays the parent's.
pub(crate) fn close_inherited() {
    crate::spawn::forkserver::close_recorded(&EPOLL_FD);
}

impl Doorbell {
    /// Makes the set and its ringer on procvisor's runtime; `None` if the set cannot be
    /// made (the descriptor table is full) or the reactor refuses it (out of memory).
    fn open() -> Option<&'static Doorbell> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).ok()?;
        let raw = epoll.0.as_raw_fd();
        // One set per process, for the life of the process: leaked, so that the ringer
        // and every caller hold it without counting references. Should the reactor refuse
        // it, it stays unused, and `DOORBELL` remembers not to make another.
        let bell: &'static Doorbell = Box::leak(Box::new(Doorbell {
            epoll,
            watched: Mutex::new(HashMap::new()),
        }));
        let rt = crate::runtime::get();
        let registered = {
            let _in_runtime = rt.tokio.enter();
            crate::sys::watch_forever(bell.epoll.0.as_fd()).ok()?
        };
        EPOLL_FD.store(raw, Ordering::Relaxed);
        rt.arbiter.spawn(ring(bell, registered));
        Some(bell)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, (Arc<Lazy>, bool)>> {
        // Each critical section leaves the map whole.
        self.watched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes worker `id`'s child out of the set; what the set held, if anything.
    fn take(&self, id: u64) -> Option<Arc<Lazy>> {
        let (lazy, control) = self.lock().remove(&id)?;
        let _ = self.epoll.delete(lazy.child().sentinel());
        if control {
            let _ = self.epoll.delete(lazy.child().control_fd());
        }
        Some(lazy)
    }
}

/// The ringer: on the runtime thread, for the life of the process, starts the Worker of
/// each child whose descriptor becomes readable.
async fn ring(bell: &'static Doorbell, registered: AsyncFd<BorrowedFd<'static>>) {
    let mut events = [EpollEvent::empty(); 32];
    // `readable` fails only when the runtime's reactor is gone, that is when the program
    // ends, and its exit rule collects every child.
    while let Ok(mut ready) = registered.readable().await {
        // Cleared before the set is drained, so that a descriptor turning readable after
        // the drain raises a fresh edge and wakes us again.
        ready.clear_ready();
        loop {
            let n = match bell.epoll.wait(&mut events, EpollTimeout::ZERO) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(_) => break,
            };
            for event in &events[..n] {
                // Two events for one child (sentinel and control) find it once.
                if let Some(lazy) = bell.take(event.data()) {
                    lazy.ring();
                }
            }
            if n < events.len() {
                break;
            }
        }
    }
}
