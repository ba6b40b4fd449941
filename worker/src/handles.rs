//! Handles in arguments: how descriptors (a `Connection`'s socket, later a queue's or a
//! lock's memory) travel to a child inside the serde arguments of its target.
//!
//! Encoding the arguments runs inside [`collect`]: a handle type's `Serialize` calls
//! [`push`], which duplicates its descriptor into the collection and writes the index
//! instead. The parent sends the collected descriptors with the start request (attached
//! with `SCM_RIGHTS`, or inherited by a `fork` child), and the child installs them with
//! [`install`] before decoding; the handle type's `Deserialize` then calls [`take`] with
//! the index it reads.
//!
//! The parent keeps its own handle: the child gets a duplicate, as Python's pickling of a
//! `Connection` for a child does.
//!
//! ```
//! use std::os::fd::AsFd;
//! let (a, _b) = std::os::unix::net::UnixStream::pair()?;
//! let (index, fds) = procvisor_worker::handles::collect(|| procvisor_worker::handles::push(a.as_fd()));
//! assert_eq!(index?, 0);
//! assert_eq!(fds.len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cell::RefCell;
use std::fmt;
use std::os::fd::{BorrowedFd, OwnedFd};

/// The most descriptors one start request may carry: what one `SCM_RIGHTS` message holds
/// on Linux (`SCM_MAX_FD`, 253), less the two the request needs for itself.
pub const MAX_HANDLES: usize = 251;

thread_local! {
    /// Descriptors collected while encoding arguments; `None` outside [`collect`].
    static OUTGOING: RefCell<Option<Vec<OwnedFd>>> = const { RefCell::new(None) };
    /// Descriptors received with this worker's start request, by index.
    static INCOMING: RefCell<Vec<Option<OwnedFd>>> = const { RefCell::new(Vec::new()) };
}

/// Why a handle could not travel.
#[derive(Debug)]
#[non_exhaustive]
pub enum HandleError {
    /// The handle was serialized outside the arguments of a process.
    NotInArguments,
    /// More than [`MAX_HANDLES`] handles in one set of arguments.
    TooMany,
    /// Duplicating the descriptor failed.
    Dup(nix::errno::Errno),
    /// The child found no descriptor at this index (already taken, or never sent).
    Missing(u32),
}

impl fmt::Display for HandleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandleError::NotInArguments => {
                f.write_str("a handle can only be serialized as an argument of a process")
            }
            HandleError::TooMany => write!(f, "more than {MAX_HANDLES} handles in one call"),
            HandleError::Dup(e) => write!(f, "could not duplicate a descriptor: {}", e.desc()),
            HandleError::Missing(i) => write!(f, "no descriptor was received for handle {i}"),
        }
    }
}

impl std::error::Error for HandleError {}

/// Runs `encode` with a collection active and returns what it produced together with the
/// descriptors that handles pushed meanwhile.
pub fn collect<T>(encode: impl FnOnce() -> T) -> (T, Vec<OwnedFd>) {
    let previous = OUTGOING.with(|o| o.borrow_mut().replace(Vec::new()));
    let value = encode();
    let fds = OUTGOING
        .with(|o| std::mem::replace(&mut *o.borrow_mut(), previous))
        .unwrap_or_default();
    (value, fds)
}

/// Adds a duplicate of `fd` to the active collection and returns its index.
pub fn push(fd: BorrowedFd<'_>) -> Result<u32, HandleError> {
    OUTGOING.with(|o| {
        let mut o = o.borrow_mut();
        let list = o.as_mut().ok_or(HandleError::NotInArguments)?;
        if list.len() >= MAX_HANDLES {
            return Err(HandleError::TooMany);
        }
        let dup = fd.try_clone_to_owned().map_err(|e| {
            HandleError::Dup(nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)))
        })?;
        list.push(dup);
        Ok(list.len() as u32 - 1)
    })
}

/// Makes `fds` available to [`take`] in this thread: called by the worker before it
/// decodes its target's arguments.
pub fn install(fds: Vec<OwnedFd>) {
    INCOMING.with(|i| *i.borrow_mut() = fds.into_iter().map(Some).collect());
}

/// Sets up this thread's table of received descriptors now, destructor and all, so that a
/// process forked from this thread finds it ready. Set up in each child instead, the
/// registration of its destructor (`__cxa_thread_atexit_impl`) makes every child bind
/// libc's `calloc` and `_dl_find_dso_for_object` lazily anew, a symbol lookup that touches
/// a few dozen pages of the dynamic loader and libc.
///
/// ```
/// procvisor_worker::handles::prepare_thread();
/// assert!(procvisor_worker::handles::take(0).is_err());
/// ```
pub fn prepare_thread() {
    INCOMING.with(|_| ());
}

/// Takes the descriptor sent as handle `index`; each is taken once.
pub fn take(index: u32) -> Result<OwnedFd, HandleError> {
    INCOMING.with(|i| {
        i.borrow_mut()
            .get_mut(index as usize)
            .and_then(Option::take)
            .ok_or(HandleError::Missing(index))
    })
}
