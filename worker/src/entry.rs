//! Entry points: how a parent names the target a child runs.
//!
//! A target travels as the offset of an [`EntryFn`] from an anchor function in this crate.
//! Parent and child run the same executable, so the offset is the same in both even when
//! the loader placed the program at another address (ASLR moves the image as a whole).
//!
//! Trust: a child resolves only the offset in the `Start` frame that its own parent wrote
//! into a private socketpair (or, for the forkserver, handed over in memory). No remote
//! peer can name an address.
//!
//! ```
//! use procvisor_worker::entry::{offset_of, EntryFn};
//! fn echo(args: &[u8]) -> Result<Vec<u8>, procvisor_protocol::RemoteError> {
//!     Ok(args.to_vec())
//! }
//! let f: EntryFn = echo;
//! let off = offset_of(f);
//! assert_eq!(procvisor_worker::entry::resolve(off)(b"hi").unwrap(), b"hi");
//! ```

use procvisor_protocol::RemoteError;

use crate::os;

/// The shape of every entry point: msgpack arguments in, msgpack result (or a remote
/// error) out.
pub type EntryFn = fn(&[u8]) -> Result<Vec<u8>, RemoteError>;

/// The offset of `f` from the anchor, to put in a `Start` frame.
pub fn offset_of(f: EntryFn) -> i64 {
    (f as usize as i64).wrapping_sub(os::anchor_addr() as i64)
}

/// Turns an offset from [`offset_of`], computed by this same executable, back into the
/// function.
///
/// The offset must come from `offset_of` in a process running this very executable —
/// which is what the trust rule above guarantees for every `Start` frame a worker accepts.
pub fn resolve(offset: i64) -> EntryFn {
    os::entry_at(offset)
}

/// Produces a value of a zero-sized callable type: the target of a `Process`.
///
/// On stable Rust only function items, closures and function pointers implement `Fn`, and
/// of those only function items and closures that capture nothing of size can be
/// zero-sized, so the parent's `Process::new` (which checks the size at compile time)
/// guarantees that `F` is one of them. The parent held a value of `F`, so the type is
/// inhabited, and the child makes exactly one.
///
/// # Panics
///
/// Panics when `F` is not zero-sized.
///
/// ```
/// let f = procvisor_worker::entry::zero_sized_callable::<fn(u8) -> u8, _, _>;
/// # let _ = f;
/// let double = |x: u32| x * 2;
/// fn make<F: Fn(u32) -> u32 + Copy>(_: F) -> F {
///     procvisor_worker::entry::zero_sized_callable::<F, u32, u32>()
/// }
/// assert_eq!(make(double)(21), 42);
/// ```
pub fn zero_sized_callable<F: Fn(A) -> R, A, R>() -> F {
    assert_eq!(
        std::mem::size_of::<F>(),
        0,
        "a procvisor target must be a fn item or a non-capturing closure"
    );
    os::conjure_zst::<F>()
}
