//! Process-shared memory: memfd-backed regions, robust process-shared mutexes living in
//! them, and futex waits on words in them. Every `unsafe` of the shared-state code is here.
//!
//! A region is shared by mapping the same memfd in several processes (the descriptor travels
//! as a handle in a target's arguments). The kernel frees the memory when the last mapping
//! and descriptor are gone: nothing to unlink, nothing to leak.

use std::cell::UnsafeCell;
use std::ffi::CStr;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use nix::errno::Errno;
use nix::libc;
use nix::sys::memfd::{MemFdCreateFlag, memfd_create};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

/// A mapping of a memfd, shared with every process that maps the same descriptor.
#[derive(Debug)]
pub(crate) struct Region {
    fd: OwnedFd,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the region is plain shared memory; every access goes through atomics, the robust
// mutex, or `copy_in`/`copy_out`, which require the mutex's guard. Sharing the mapping
// between threads is no different from sharing it between processes.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    /// Creates a zero-filled region of `len` bytes.
    pub(crate) fn create(name: &CStr, len: usize) -> nix::Result<Region> {
        let fd = memfd_create(name, MemFdCreateFlag::MFD_CLOEXEC)?;
        nix::unistd::ftruncate(&fd, len as libc::off_t)?;
        Region::map(fd, len)
    }

    /// Maps a region received from another process; its length is the memfd's size.
    pub(crate) fn open(fd: OwnedFd) -> nix::Result<Region> {
        let len = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&fd))?.st_size as usize;
        Region::map(fd, len)
    }

    fn map(fd: OwnedFd, len: usize) -> nix::Result<Region> {
        let nz = NonZeroUsize::new(len).ok_or(Errno::EINVAL)?;
        // SAFETY: a fresh shared mapping of a memfd we own, at an address the kernel picks;
        // no existing memory is affected.
        let ptr = unsafe {
            mmap(
                None,
                nz,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )?
        };
        Ok(Region {
            fd,
            ptr: ptr.cast(),
            len,
        })
    }

    /// The memfd, to send to another process.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The region's length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The header at the start of the region.
    ///
    /// # Panics
    ///
    /// When `H` does not fit in the region.
    pub(crate) fn header<H: SharedHeader>(&self) -> &H {
        assert!(size_of::<H>() <= self.len, "header larger than its region");
        // SAFETY: the mapping is page-aligned (so aligned for any `H`), at least
        // `size_of::<H>()` long (checked), zero-filled at creation (a valid `H`, per the
        // `SharedHeader` contract) and lives as long as `self`. `H` is made only of atomics
        // and `RobustMutex`, so shared references from several processes are sound.
        unsafe { &*self.ptr.as_ptr().cast::<H>() }
    }

    /// Copies `src` into the region at `offset`. The guard proves the caller holds a lock
    /// of the region: the data mutex, or for the queue's ring the lock of the side that owns
    /// the range (ranges are handed between sides by atomic words). Another process may
    /// still touch the same bytes (a buggy or hostile one can map the memfd and write
    /// anywhere), so callers treat what they read back as untrusted bytes and validate it.
    ///
    /// # Panics
    ///
    /// When the range is outside the region.
    pub(crate) fn copy_in(&self, _locked: &Locked<'_>, offset: usize, src: &[u8]) {
        let end = offset.checked_add(src.len()).expect("no overflow");
        assert!(end <= self.len, "copy outside the region");
        // SAFETY: 1. the range is inside the mapping (checked), which lives as long as
        // `self`; 2. `src` is ordinary memory of ours, not inside the mapping, so the two do
        // not overlap; 3. the bytes are plain `u8`, valid whatever another process writes at
        // the same time, and no Rust reference into the mapping is made, so a concurrent
        // writer elsewhere can garble the bytes but not this process's memory safety.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(offset), src.len())
        }
    }

    /// Copies from the region at `offset` into `dst`, under a lock (see `copy_in`).
    ///
    /// # Panics
    ///
    /// When the range is outside the region.
    pub(crate) fn copy_out(&self, _locked: &Locked<'_>, offset: usize, dst: &mut [u8]) {
        let end = offset.checked_add(dst.len()).expect("no overflow");
        assert!(end <= self.len, "copy outside the region");
        // SAFETY: as in `copy_in`, reading instead of writing: the range is inside the
        // mapping, `dst` is ours and outside it, and any bit pattern is a valid `u8`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                dst.as_mut_ptr(),
                dst.len(),
            )
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `map`, and no reference into it
        // outlives `self` (`header` borrows `self`).
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

/// A header type that may live at the start of a shared region.
///
/// # Safety
///
/// All-zero bytes must be a valid value of the type, and it must consist only of atomics
/// and [`RobustMutex`]es (so that references to it may be shared across processes).
pub(crate) unsafe trait SharedHeader {}

/// Tries before a contended lock sleeps (see `RobustMutex::spin_trylock`).
const LOCK_SPINS: u32 = 20;

/// A process-shared, robust `pthread_mutex_t` inside a shared region.
///
/// Robust: when its holder dies, the next `lock` succeeds and says so, instead of blocking
/// for ever (CPython's locks deadlock there).
#[repr(C)]
pub(crate) struct RobustMutex {
    inner: UnsafeCell<libc::pthread_mutex_t>,
}

// SAFETY: a pthread mutex is designed to be used from several threads (and, initialised
// with PTHREAD_PROCESS_SHARED, several processes) at once.
unsafe impl Sync for RobustMutex {}

/// Proof that a [`RobustMutex`] is held; unlocks on drop.
#[derive(Debug)]
pub(crate) struct Locked<'a> {
    mutex: &'a RobustMutex,
}

impl std::fmt::Debug for RobustMutex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RobustMutex")
    }
}

impl RobustMutex {
    /// Makes the zero-filled mutex a robust, process-shared one. Only the creator of the
    /// region calls this, once, before the region is shared.
    pub(crate) fn init(&self) -> nix::Result<()> {
        self.init_with(false)
    }

    /// As [`init`](Self::init), for a mutex its owner may lock again (an `RLock`).
    pub(crate) fn init_recursive(&self) -> nix::Result<()> {
        self.init_with(true)
    }

    fn init_with(&self, recursive: bool) -> nix::Result<()> {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: the attribute object is initialised by pthread_mutexattr_init before use
        // and destroyed after; the mutex is initialised exactly once, before any process
        // other than ours can see the region.
        unsafe {
            Errno::result(libc::pthread_mutexattr_init(attr.as_mut_ptr()))?;
            let attr = attr.as_mut_ptr();
            let r = libc::pthread_mutexattr_setpshared(attr, libc::PTHREAD_PROCESS_SHARED);
            let r2 = libc::pthread_mutexattr_setrobust(attr, libc::PTHREAD_MUTEX_ROBUST);
            let kind = if recursive {
                libc::PTHREAD_MUTEX_RECURSIVE
            } else {
                libc::PTHREAD_MUTEX_NORMAL
            };
            let r4 = libc::pthread_mutexattr_settype(attr, kind);
            let r3 = libc::pthread_mutex_init(self.inner.get(), attr);
            libc::pthread_mutexattr_destroy(attr);
            for code in [r, r2, r4, r3] {
                if code != 0 {
                    return Err(Errno::from_raw(code));
                }
            }
        }
        Ok(())
    }

    /// Locks; the flag is true when the previous holder died holding it (the mutex has been
    /// made consistent again, and the caller must repair what the holder left half-done).
    pub(crate) fn lock(&self) -> nix::Result<(Locked<'_>, bool)> {
        if let Some(locked) = self.spin_trylock()? {
            return Ok(locked);
        }
        // SAFETY: the mutex was initialised by `init` in the region's creator.
        let r = unsafe { libc::pthread_mutex_lock(self.inner.get()) };
        self.locked(r)
    }

    /// Tries the lock a few times, spinning between tries: it is held for a microsecond or
    /// less at a time, so a short spin usually beats the futex sleep a contended lock costs
    /// (robust mutexes do not spin by themselves).
    fn spin_trylock(&self) -> nix::Result<Option<(Locked<'_>, bool)>> {
        for _ in 0..LOCK_SPINS {
            // SAFETY: the mutex was initialised by `init` in the region's creator.
            let r = unsafe { libc::pthread_mutex_trylock(self.inner.get()) };
            if r != libc::EBUSY {
                return self.locked(r).map(Some);
            }
            for _ in 0..32 {
                std::hint::spin_loop();
            }
        }
        Ok(None)
    }

    /// Locks, waiting at most `timeout`; `Ok(None)` when it passed with the mutex still held
    /// elsewhere (a holder that is stopped or hung, not dead).
    pub(crate) fn lock_timeout(
        &self,
        timeout: Duration,
    ) -> nix::Result<Option<(Locked<'_>, bool)>> {
        // pthread_mutex_timedlock measures against CLOCK_REALTIME, which SystemTime reads.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let until = now + timeout;
        let ts = libc::timespec {
            tv_sec: until.as_secs() as libc::time_t,
            tv_nsec: until.subsec_nanos() as libc::c_long,
        };
        // SAFETY: the mutex was initialised by `init`; `ts` is a live timespec on our stack.
        let r = unsafe { libc::pthread_mutex_timedlock(self.inner.get(), &ts) };
        if r == libc::ETIMEDOUT {
            return Ok(None);
        }
        self.locked(r).map(Some)
    }

    fn locked(&self, r: libc::c_int) -> nix::Result<(Locked<'_>, bool)> {
        match r {
            0 => Ok((Locked { mutex: self }, false)),
            libc::EOWNERDEAD => {
                // SAFETY: we hold the mutex (EOWNERDEAD means the lock was acquired).
                let c = unsafe { libc::pthread_mutex_consistent(self.inner.get()) };
                if c != 0 {
                    return Err(Errno::from_raw(c));
                }
                Ok((Locked { mutex: self }, true))
            }
            e => Err(Errno::from_raw(e)),
        }
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // SAFETY: this guard exists only while the mutex is held by this thread.
        unsafe {
            libc::pthread_mutex_unlock(self.mutex.inner.get());
        }
    }
}

/// Sleeps while `*word == expected`, for at most `timeout`. Returns on a wake, a change,
/// the timeout or a signal alike: callers re-check their condition.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call; FUTEX_WAIT (not
    // the private variant: the word may be shared with other processes) reads it and
    // compares with `expected`; the timeout pointer is null or points at a live timespec.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
        );
    }
}

/// Wakes up to `n` sleepers on `word`, in any process.
pub(crate) fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: `word` is a valid, aligned u32; FUTEX_WAKE only uses its address.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n);
    }
}

/// One side of a queue (its producers, or its consumers): the lock that serializes that
/// side, and what the side last read of the other side's published word. On a cache line
/// of its own, so that a side's bookkeeping never bounces to the other side's core.
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct QueueSide {
    /// Serializes this side's changes to the ring and to its published word.
    pub(crate) mutex: RobustMutex,
    /// The other side's published word as this side last read it: a stale copy is always
    /// safe (it shows less room, or fewer items), so it is re-read only when it says no.
    pub(crate) seen: std::sync::atomic::AtomicU64,
}

/// A word one side publishes (with one atomic store, the commit point of a put or a
/// get) and the futex word the other side sleeps on, bumped only when someone sleeps.
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct QueueWord {
    /// Byte position in the low half, items in the high half (both wrapping u32).
    pub(crate) word: std::sync::atomic::AtomicU64,
    /// Bumped after `word` changed while the other side had sleepers.
    pub(crate) seq: AtomicU32,
}

/// The header of a queue's shared region; the ring of records follows it.
///
/// A put is committed by one store of `tail.word`, a get by one store of `head.word`, and
/// a `task_done` by one compare-and-swap of `done.word`: a process killed at any point
/// leaves every word either before or after its change. Producers and consumers take
/// different locks, so they do not wait for each other.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct QueueHeader {
    /// Set once initialised; a region without it is not a queue.
    pub(crate) magic: std::sync::atomic::AtomicU64,
    /// Bytes in the ring (a power of two).
    pub(crate) capacity: std::sync::atomic::AtomicU64,
    /// Most items at once; 0 for no limit.
    pub(crate) maxsize: std::sync::atomic::AtomicU64,
    /// How many sleep on each futex word: a wake is a system call, skipped when nobody
    /// sleeps.
    pub(crate) consumers_waiting: AtomicU32,
    /// See `consumers_waiting`.
    pub(crate) producers_waiting: AtomicU32,
    /// See `consumers_waiting`.
    pub(crate) joiners_waiting: AtomicU32,
    /// The producers' side.
    pub(crate) producers: QueueSide,
    /// The consumers' side.
    pub(crate) consumers: QueueSide,
    /// Published by producers: tail position and items put.
    pub(crate) tail: QueueWord,
    /// Published by consumers: head position and items taken.
    pub(crate) head: QueueWord,
    /// Items marked done (JoinableQueue), wrapping; its `seq` wakes joiners.
    pub(crate) done: QueueWord,
}

// SAFETY: all-zero bytes are a valid `QueueHeader` (zero atomics; a zeroed pthread_mutex_t
// is glibc's PTHREAD_MUTEX_INITIALIZER, made robust and shared by `RobustMutex::init`), and
// it holds only atomics and `RobustMutex`es (and alignment padding, never read).
unsafe impl SharedHeader for QueueHeader {}

/// The header of a lock's or a shared value's region: a robust mutex, an event word, and
/// (for values) the bytes that follow.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct SyncHeader {
    /// Set once initialised.
    pub(crate) magic: std::sync::atomic::AtomicU64,
    /// The lock of a `Lock`, or a `Value`'s / `Array`'s own lock.
    pub(crate) mutex: RobustMutex,
    /// An `Event`'s flag (0 or 1); a futex word.
    pub(crate) flag: AtomicU32,
    /// Length in bytes of the data after the header (values and arrays).
    pub(crate) data_len: std::sync::atomic::AtomicU64,
}

// SAFETY: all-zero bytes are a valid `SyncHeader` (zero atomics; a zeroed pthread_mutex_t is
// glibc's PTHREAD_MUTEX_INITIALIZER, made robust and shared by `RobustMutex::init`), and it
// holds only atomics and a `RobustMutex`.
unsafe impl SharedHeader for SyncHeader {}

/// Plain old data that may live in shared memory and be read by any process: every bit
/// pattern of its size is a valid value, and it holds no pointers.
///
/// # Safety
///
/// Implement only for types for which every bit pattern is valid and that contain no
/// references, pointers or padding: numbers.
pub unsafe trait Pod: Copy + Send + Sync + 'static {}

macro_rules! pod {
    ($($t:ty),*) => {
        $(
            // SAFETY: a primitive number: every bit pattern is a value, no pointers, no
            // padding.
            unsafe impl Pod for $t {}
        )*
    };
}
pod!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize, f32, f64);

impl Region {
    /// Reads the `index`th `T` of the data that starts at `offset`, under the lock.
    ///
    /// # Panics
    ///
    /// When the element is outside the region.
    pub(crate) fn read_pod<T: Pod>(&self, locked: &Locked<'_>, offset: usize, index: usize) -> T {
        let mut value = std::mem::MaybeUninit::<T>::uninit();
        // SAFETY: a `MaybeUninit<T>` is `size_of::<T>()` writable bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(value.as_mut_ptr().cast::<u8>(), size_of::<T>())
        };
        self.copy_out(locked, offset + index * size_of::<T>(), bytes);
        // SAFETY: every byte was written by `copy_out`, and every bit pattern is a valid `T`
        // (the `Pod` contract).
        unsafe { value.assume_init() }
    }

    /// Writes the `index`th `T` of the data that starts at `offset`, under the lock.
    ///
    /// # Panics
    ///
    /// When the element is outside the region.
    pub(crate) fn write_pod<T: Pod>(
        &self,
        locked: &Locked<'_>,
        offset: usize,
        index: usize,
        value: T,
    ) {
        // SAFETY: a `Pod` has no padding, so all of its bytes are initialised.
        let bytes = unsafe {
            std::slice::from_raw_parts((&value as *const T).cast::<u8>(), size_of::<T>())
        };
        self.copy_in(locked, offset + index * size_of::<T>(), bytes);
    }
}

impl RobustMutex {
    /// Unlocks a mutex this thread holds, for a guard that was forgotten on purpose (a
    /// Python-style `release()` after `acquire()`); `EPERM` if this thread does not hold it.
    pub(crate) fn unlock_held(&self) -> nix::Result<()> {
        // SAFETY: the mutex was initialised by `init`; unlocking a robust mutex this thread
        // does not own is refused with EPERM, not undefined.
        let r = unsafe { libc::pthread_mutex_unlock(self.inner.get()) };
        if r == 0 {
            Ok(())
        } else {
            Err(Errno::from_raw(r))
        }
    }
}

impl Locked<'_> {
    /// Keeps the mutex locked after this guard is gone (see `RobustMutex::unlock_held`).
    pub(crate) fn keep_locked(self) {
        std::mem::forget(self);
    }
}

impl Region {
    /// The whole region as bytes that any process may read and write at any time.
    pub(crate) fn bytes(&self) -> &[std::sync::atomic::AtomicU8] {
        // SAFETY: 1. the mapping is `len` bytes, readable and writable, and lives as long as
        // `self` (the slice borrows `self`); 2. `AtomicU8` has the size and alignment of
        // `u8`, and every byte value is a valid `AtomicU8`; 3. atomics make concurrent
        // access from threads (and other processes, which see the same pages) sound.
        unsafe {
            std::slice::from_raw_parts(
                self.ptr.as_ptr().cast::<std::sync::atomic::AtomicU8>(),
                self.len,
            )
        }
    }
}

/// Receives one message of at most `buf.len()` bytes on a Unix stream socket, with at most
/// one descriptor attached (`SCM_RIGHTS`); extra descriptors are closed.
pub(crate) fn recv_with_fd(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> nix::Result<(usize, Option<OwnedFd>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fd = None;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raws) = cmsg {
            for raw in raws {
                // SAFETY: the kernel just installed `raw` in our table for this message
                // (SCM_RIGHTS); nobody else knows of it, so we are its only owner.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                if fd.is_none() {
                    fd = Some(owned);
                }
            }
        }
    }
    Ok((msg.bytes, fd))
}

/// This process's effective user id.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid takes nothing, touches no memory of ours and cannot fail.
    unsafe { libc::geteuid() }
}
