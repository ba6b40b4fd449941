//! `Lock`, `RLock`, `Semaphore`, `Condition`, `Barrier`, `Event`, `Value` and `Array`: the first of Python's `multiprocessing.synchronize`
//! and `sharedctypes`, on shared memory.
//!
//! Each object is a small memfd region; a handle travels to a child inside its target's
//! arguments, and every handle, in any process, names the same memory.
//!
//! # Examples
//!
//! ```no_run
//! use procvisor::{Process, Value};
//!
//! fn add_one(counter: Value<i64>) {
//!     for _ in 0..1000 {
//!         *counter.get_lock().unwrap() += 1;
//!     }
//! }
//!
//! let counter = Value::new(0i64)?;
//! let mut ps: Vec<Process> = (0..2).map(|_| Process::new(add_one, counter.clone())).collect();
//! for p in &mut ps {
//!     p.start()?;
//! }
//! for p in &ps {
//!     p.join(None)?;
//! }
//! assert_eq!(counter.get()?, 2000);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Robust where CPython deadlocks
//!
//! The locks are robust: when a process dies holding one, the next `acquire` does not block
//! for ever, it succeeds with [`AcquireError::OwnerDied`], which carries the guard: the new
//! owner looks at what the dead one may have left half-done, then carries on. A
//! [`Semaphore`] records its holders by pid and gives back the permits of a holder that
//! died, with the same `OwnerDied` to the acquirer that gets one; a [`Barrier`] whose
//! party died breaks.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use procvisor_worker::handles;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::sys::shm::Pod;
use crate::sys::shm::{Locked, Region, SyncHeader, futex_wait, futex_wake};

/// Marks an initialised region ("pvsync01").
const MAGIC: u64 = u64::from_le_bytes(*b"pvsync01");

/// Where a value's data starts: after the header, on its own cache line.
const DATA_OFFSET: usize = size_of::<SyncHeader>().next_multiple_of(64);

/// A shared-object call failed: creating or opening the memory, or (for [`Array::get`]
/// and [`Array::set`]) an index past the end.
///
/// ```
/// let a = procvisor::Array::new(&[1u8, 2])?;
/// let e = a.get(2).unwrap_err();
/// assert_eq!(e.index_out_of_range().map(|e| (e.index, e.len)), Some((2, 2)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct SyncError(SyncErrorKind);

#[derive(Debug)]
enum SyncErrorKind {
    Os(Errno),
    Index(IndexOutOfRange),
}

impl SyncError {
    fn os(e: Errno) -> SyncError {
        SyncError(SyncErrorKind::Os(e))
    }

    /// The index and length, when the call named an element past the array's end (and
    /// touched nothing).
    pub fn index_out_of_range(&self) -> Option<IndexOutOfRange> {
        match self.0 {
            SyncErrorKind::Index(e) => Some(e),
            SyncErrorKind::Os(_) => None,
        }
    }
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            SyncErrorKind::Os(e) => write!(f, "shared memory operation failed: {}", e.desc()),
            SyncErrorKind::Index(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl std::error::Error for SyncError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0 {
            SyncErrorKind::Os(e) => Some(e),
            SyncErrorKind::Index(e) => Some(e),
        }
    }
}

impl From<IndexOutOfRange> for SyncError {
    fn from(e: IndexOutOfRange) -> SyncError {
        SyncError(SyncErrorKind::Index(e))
    }
}

/// An [`Array`] index at or past its length (Python's `IndexError: array index out of
/// range`). The call that returns it has read and written nothing.
///
/// ```
/// use procvisor::synchronize::IndexOutOfRange;
///
/// let a = procvisor::Array::new(&[7i32, 8, 9])?;
/// let mut g = a.get_lock().unwrap();
/// assert_eq!(g.set(3, 0), Err(IndexOutOfRange { index: 3, len: 3 }));
/// assert_eq!(g.get(2), Ok(9));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexOutOfRange {
    /// The index asked for.
    pub index: usize,
    /// The array's length.
    pub len: usize,
}

impl fmt::Display for IndexOutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "array index {} out of range for length {}",
            self.index, self.len
        )
    }
}

impl std::error::Error for IndexOutOfRange {}

/// An `acquire` that did not simply succeed.
pub enum AcquireError<G> {
    /// The previous holder died holding the lock. The lock is ours now (the guard is here);
    /// what it protects may be half-changed.
    OwnerDied(G),
    /// The system call failed (should not happen).
    Os(Errno),
}

impl<G> AcquireError<G> {
    /// The guard, when the lock was acquired after all (owner died).
    ///
    /// ```
    /// let lock = procvisor::Lock::new()?;
    /// let guard = lock.acquire().or_else(|e| e.into_guard().ok_or("lock failed"))?;
    /// drop(guard);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_guard(self) -> Option<G> {
        match self {
            AcquireError::OwnerDied(g) => Some(g),
            AcquireError::Os(_) => None,
        }
    }
}

impl<G> fmt::Debug for AcquireError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcquireError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
            AcquireError::Os(e) => f.debug_tuple("Os").field(e).finish(),
        }
    }
}

impl<G> fmt::Display for AcquireError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcquireError::OwnerDied(_) => f.write_str("the previous owner died holding the lock"),
            AcquireError::Os(e) => write!(f, "lock failed: {}", e.desc()),
        }
    }
}

impl<G> std::error::Error for AcquireError<G> {}

/// `release()` of a lock this thread does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseError;

impl fmt::Display for ReleaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("release of an unheld lock")
    }
}

impl std::error::Error for ReleaseError {}

/// One shared region with a [`SyncHeader`] and `data_len` bytes after it.
#[derive(Debug)]
struct Shared {
    region: Region,
}

impl Shared {
    fn create(data_len: usize) -> Result<Arc<Shared>, SyncError> {
        Self::create_with(data_len, false)
    }

    fn create_with(data_len: usize, recursive: bool) -> Result<Arc<Shared>, SyncError> {
        let region = Region::create(c"procvisor-sync", DATA_OFFSET + data_len.max(1))
            .map_err(SyncError::os)?;
        let h: &SyncHeader = region.header();
        if recursive {
            h.mutex.init_recursive().map_err(SyncError::os)?;
        } else {
            h.mutex.init().map_err(SyncError::os)?;
        }
        h.data_len.store(data_len as u64, Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
        Ok(Arc::new(Shared { region }))
    }

    fn header(&self) -> &SyncHeader {
        self.region.header()
    }

    fn lock(&self, timeout: Option<Duration>) -> Result<Option<(Locked<'_>, bool)>, Errno> {
        let m = &self.header().mutex;
        match timeout {
            None => m.lock().map(Some),
            Some(t) => m.lock_timeout(t),
        }
    }
}

/// How a shared object travels inside a process's arguments.
#[derive(Serialize, Deserialize)]
struct Wire {
    shared: u32,
}

fn ser_shared<S: Serializer>(shared: &Shared, serializer: S) -> Result<S::Ok, S::Error> {
    let index = handles::push(shared.region.fd()).map_err(serde::ser::Error::custom)?;
    Wire { shared: index }.serialize(serializer)
}

fn de_shared<'de, D: Deserializer<'de>>(
    deserializer: D,
    data_len: impl FnOnce(u64) -> bool,
) -> Result<Arc<Shared>, D::Error> {
    let wire = Wire::deserialize(deserializer)?;
    open_shared(wire.shared, data_len).map_err(serde::de::Error::custom)
}

/// Opens the region received as handle `index`, checking that it is one of ours and that
/// its data length suits the caller.
fn open_shared(index: u32, data_len: impl FnOnce(u64) -> bool) -> Result<Arc<Shared>, String> {
    let fd = handles::take(index).map_err(|e| e.to_string())?;
    let region = Region::open(fd).map_err(|e| e.to_string())?;
    let h: &SyncHeader = region.header();
    if h.magic.load(Ordering::Acquire) != MAGIC {
        return Err("the descriptor is not a procvisor lock or value".into());
    }
    let len = h.data_len.load(Ordering::Relaxed);
    if DATA_OFFSET as u64 + len > region.len() as u64 || !data_len(len) {
        return Err("shared object of the wrong size".into());
    }
    Ok(Arc::new(Shared { region }))
}

/// A lock shared by processes: Python's `multiprocessing.Lock`, robust against a holder
/// that dies.
#[derive(Clone)]
pub struct Lock {
    shared: Arc<Shared>,
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Lock")
    }
}

/// Holds a [`Lock`]; releases it when dropped.
pub struct LockGuard<'a> {
    locked: Locked<'a>,
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LockGuard")
    }
}

impl LockGuard<'_> {
    /// Keeps the lock held after the guard is gone, for Python-style code that calls
    /// [`Lock::release`] later.
    ///
    /// ```
    /// let lock = procvisor::Lock::new()?;
    /// lock.acquire().unwrap().forget();
    /// lock.release()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn forget(self) {
        self.locked.keep_locked();
    }
}

type LockResult<'a> = Result<LockGuard<'a>, AcquireError<LockGuard<'a>>>;

impl Lock {
    /// A new, unlocked lock.
    ///
    /// ```
    /// let lock = procvisor::Lock::new()?;
    /// drop(lock.acquire().unwrap());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new() -> Result<Lock, SyncError> {
        Ok(Lock {
            shared: Shared::create(0)?,
        })
    }

    fn wrap(r: Result<(Locked<'_>, bool), Errno>) -> LockResult<'_> {
        match r {
            Ok((locked, false)) => Ok(LockGuard { locked }),
            Ok((locked, true)) => Err(AcquireError::OwnerDied(LockGuard { locked })),
            Err(e) => Err(AcquireError::Os(e)),
        }
    }

    /// Waits for the lock as long as it takes.
    pub fn acquire(&self) -> LockResult<'_> {
        Self::wrap(self.shared.header().mutex.lock())
    }

    /// Waits for the lock at most `timeout`; `None` when it passed (Python's
    /// `acquire(timeout=..)` returning False).
    ///
    /// ```
    /// use std::time::Duration;
    /// let lock = procvisor::Lock::new()?;
    /// let held = lock.acquire().unwrap();
    /// let other = procvisor::Lock::clone(&lock);
    /// let t = std::thread::spawn(move || other.acquire_timeout(Duration::from_millis(20)).map(|g| g.is_some()).unwrap_or(true));
    /// assert!(!t.join().unwrap());
    /// drop(held);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire_timeout(
        &self,
        timeout: Duration,
    ) -> Result<Option<LockGuard<'_>>, AcquireError<LockGuard<'_>>> {
        match self.shared.lock(Some(timeout)) {
            Ok(None) => Ok(None),
            Ok(Some(r)) => Self::wrap(Ok(r)).map(Some),
            Err(e) => Err(AcquireError::Os(e)),
        }
    }

    /// Releases a lock held through a forgotten guard ([`LockGuard::forget`]); an error when
    /// this thread does not hold it.
    ///
    /// ```
    /// let lock = procvisor::Lock::new()?;
    /// assert!(lock.release().is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn release(&self) -> Result<(), ReleaseError> {
        self.shared
            .header()
            .mutex
            .unlock_held()
            .map_err(|_| ReleaseError)
    }
}

impl Serialize for Lock {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ser_shared(&self.shared, serializer)
    }
}

impl<'de> Deserialize<'de> for Lock {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Lock {
            shared: de_shared(deserializer, |_| true)?,
        })
    }
}

/// A lock its owner may take again, and only its owner releases: Python's
/// `multiprocessing.RLock`, robust against a holder that dies like [`Lock`].
///
/// ```
/// let lock = procvisor::RLock::new()?;
/// let outer = lock.acquire().unwrap();
/// let inner = lock.acquire().unwrap(); // the same thread again: no deadlock
/// drop(inner);
/// drop(outer);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct RLock {
    lock: Lock,
}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RLock")
    }
}

impl RLock {
    /// A new, unlocked recursive lock.
    pub fn new() -> Result<RLock, SyncError> {
        Ok(RLock {
            lock: Lock {
                shared: Shared::create_with(0, true)?,
            },
        })
    }

    /// Takes one level of the lock, waiting as long as it takes; a thread that holds it
    /// already gets it at once.
    pub fn acquire(&self) -> LockResult<'_> {
        self.lock.acquire()
    }

    /// As [`acquire`](RLock::acquire), waiting at most `timeout`.
    pub fn acquire_timeout(
        &self,
        timeout: Duration,
    ) -> Result<Option<LockGuard<'_>>, AcquireError<LockGuard<'_>>> {
        self.lock.acquire_timeout(timeout)
    }

    /// Releases one level held through a forgotten guard; an error when this thread does
    /// not own the lock (only the owner releases an `RLock`).
    ///
    /// ```
    /// let lock = procvisor::RLock::new()?;
    /// assert!(lock.release().is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn release(&self) -> Result<(), ReleaseError> {
        self.lock.release()
    }
}

impl Serialize for RLock {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.lock.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RLock {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Lock::deserialize(deserializer).map(|lock| RLock { lock })
    }
}

/// A counter of permits shared by processes: Python's `multiprocessing.Semaphore` (and,
/// bounded, `BoundedSemaphore`).
///
/// # Robust where CPython hangs
///
/// A permit taken with [`acquire`](Semaphore::acquire) is *held* by the process that took
/// it until that process [`release`](Semaphore::release)s one. The holders are recorded
/// by pid (and start time, so a reused pid is not mistaken for the holder) in the
/// semaphore's shared memory. When a process ends — killed, crashed, or simply exited —
/// holding permits, they come back: an acquirer that finds no permit looks for dead
/// holders (at once, and every 100 ms while it waits), takes their permits back, and the
/// one that gets a permit this way is told so with [`AcquireError::OwnerDied`]. CPython's
/// acquirers wait for ever there.
///
/// A semaphore used to *count events* — released by producers, acquired by consumers that
/// never give the permit back — must not return a consumer's permits when it exits: make
/// it with [`Semaphore::counting`], which tracks no holders (CPython's behaviour).
///
/// At most [`Semaphore::TRACKED_HOLDERS`] processes are recorded as holders at once. A
/// process that acquires while that many others hold permits still gets its permit, but an
/// untracked one: it is not given back if that process dies holding it (CPython's
/// behaviour for every permit). The table lives in the semaphore's shared memory, so its
/// size is fixed when the semaphore is made.
///
/// ```
/// let s = procvisor::Semaphore::new(1)?;
/// let guard = s.permit(None).unwrap().expect("a permit is free");
/// assert_eq!(s.value(), 0);
/// drop(guard); // released
/// assert_eq!(s.value(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Semaphore {
    shared: Arc<Shared>,
    bound: Option<u32>,
}

impl Semaphore {
    /// Holder processes recorded at once (see the type's docs).
    ///
    /// ```
    /// assert_eq!(procvisor::Semaphore::TRACKED_HOLDERS, 64);
    /// ```
    pub const TRACKED_HOLDERS: usize = HOLDER_SLOTS;
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("value", &self.value())
            .field("bound", &self.bound)
            .finish()
    }
}

/// `release()` of a bounded semaphore already at its initial value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverReleaseError;

impl fmt::Display for OverReleaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("semaphore released too many times")
    }
}

impl std::error::Error for OverReleaseError {}

/// Holds one permit of a [`Semaphore`]; releases it when dropped.
pub struct SemaphoreGuard<'a> {
    sem: &'a Semaphore,
}

impl fmt::Debug for SemaphoreGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SemaphoreGuard")
    }
}

impl SemaphoreGuard<'_> {
    /// Keeps the permit after the guard is gone, for Python-style code that calls
    /// [`Semaphore::release`] later. The permit stays recorded as held by this process.
    ///
    /// ```
    /// let s = procvisor::Semaphore::new(1)?;
    /// s.permit(None).unwrap().unwrap().forget();
    /// assert_eq!(s.value(), 0);
    /// s.release()?;
    /// assert_eq!(s.value(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        // Cannot fail for a permit we hold: it is recorded, or (untracked) the value is
        // below the bound by that very permit.
        let _ = self.sem.release();
    }
}

/// Words of a semaphore's data: a flags word, the journal of the change in progress, then
/// the holder slots.
const S_FLAGS: usize = 0;
/// Pid of the process changing the state now (0: none); set last, cleared last.
const S_PENDING: usize = 1;
/// The value before that change.
const S_OLD_VALUE: usize = 2;
/// The holder slot that change touches (`u64::MAX`: none).
const S_OLD_SLOT: usize = 3;
/// That slot's count before the change.
const S_OLD_COUNT: usize = 4;
/// The first slot: `[pid, start time, permits held]`, free when the count is 0.
const S_SLOTS: usize = 8;
/// Holders recorded at once; more holders at once than this take untracked permits.
const HOLDER_SLOTS: usize = 64;
/// `S_FLAGS` bit: holders are tracked (not [`Semaphore::counting`]).
const TRACKED: u64 = 1;
/// How often a waiter looks for dead holders.
const SEMAPHORE_CHECK: Duration = Duration::from_millis(100);

/// This process's identity as a holder: (pid, start time in clock ticks since boot).
fn holder_identity() -> (u64, u64) {
    static CACHE: std::sync::Mutex<Option<(u64, u64)>> = std::sync::Mutex::new(None);
    let pid = std::process::id() as u64;
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    match *cache {
        Some((p, start)) if p == pid => (p, start),
        _ => {
            let start = proc_stat(pid).map_or(0, |(_, start)| start);
            *cache = Some((pid, start));
            (pid, start)
        }
    }
}

/// The state letter and start time of process `pid`, from `/proc/<pid>/stat`.
fn proc_stat(pid: u64) -> std::io::Result<(u8, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces and parentheses: the fields after it
    // start after the last ')'. Field 3 is the state, field 22 the start time.
    let rest = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields
        .next()
        .and_then(|s| s.bytes().next())
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let start = fields
        .nth(18)
        .and_then(|s| s.parse().ok())
        .ok_or(std::io::ErrorKind::InvalidData)?;
    Ok((state, start))
}

/// Whether the holder recorded as (`pid`, `start`) is gone: no such process, a zombie, or
/// another process that reuses its pid.
fn holder_is_dead(pid: u64, start: u64) -> bool {
    match proc_stat(pid) {
        Ok((state, now_start)) => state == b'Z' || state == b'X' || now_start != start,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        // /proc hidden from us (hidepid): fall back on the pid alone.
        Err(_) => {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None)
                == Err(Errno::ESRCH)
        }
    }
}

impl Semaphore {
    /// A semaphore with `value` permits, whose holders are tracked (see the type's docs).
    ///
    /// ```
    /// let s = procvisor::Semaphore::new(2)?;
    /// assert!(s.try_acquire().unwrap());
    /// assert!(s.try_acquire().unwrap());
    /// assert!(!s.try_acquire().unwrap());
    /// s.release()?;
    /// assert_eq!(s.value(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(value: u32) -> Result<Semaphore, SyncError> {
        Self::create(value, None, true)
    }

    /// A semaphore whose `release` may not raise it above `value` (Python's
    /// `BoundedSemaphore`), with tracked holders.
    ///
    /// ```
    /// let s = procvisor::Semaphore::bounded(1)?;
    /// assert!(s.release().is_err()); // over-release
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bounded(value: u32) -> Result<Semaphore, SyncError> {
        Self::create(value, Some(value), true)
    }

    /// A semaphore that counts events and tracks no holders: a permit taken is taken for
    /// good, even when its taker ends (CPython's semaphore). For producers that `release`
    /// and consumers that `acquire` without giving back.
    ///
    /// ```
    /// let items = procvisor::Semaphore::counting(0)?;
    /// items.release()?; // a producer posts an item
    /// assert!(items.acquire(None).unwrap()); // a consumer takes it
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn counting(value: u32) -> Result<Semaphore, SyncError> {
        Self::create(value, None, false)
    }

    fn create(value: u32, bound: Option<u32>, tracked: bool) -> Result<Semaphore, SyncError> {
        let shared = Shared::create((S_SLOTS + 3 * HOLDER_SLOTS) * size_of::<u64>())?;
        {
            let (g, _) = shared.header().mutex.lock().map_err(SyncError::os)?;
            let flags = if tracked { TRACKED } else { 0 };
            shared.region.write_pod(&g, DATA_OFFSET, S_FLAGS, flags);
        }
        shared.header().flag.store(value, Ordering::SeqCst);
        Ok(Semaphore { shared, bound })
    }

    /// The permits available now.
    pub fn value(&self) -> u32 {
        self.word().load(Ordering::SeqCst)
    }

    fn word(&self) -> &std::sync::atomic::AtomicU32 {
        &self.shared.header().flag
    }

    fn get(&self, g: &Locked<'_>, i: usize) -> u64 {
        self.shared.region.read_pod(g, DATA_OFFSET, i)
    }

    fn set(&self, g: &Locked<'_>, i: usize, v: u64) {
        self.shared.region.write_pod(g, DATA_OFFSET, i, v)
    }

    fn tracked(&self, g: &Locked<'_>) -> bool {
        self.get(g, S_FLAGS) & TRACKED != 0
    }

    /// Takes the semaphore's mutex; when its holder died mid-change, rolls that change
    /// back and returns the dead process's permits. Returns whether permits came back.
    fn lock(&self) -> Result<(Locked<'_>, bool), Errno> {
        let (g, owner_died) = self.shared.header().mutex.lock()?;
        if !owner_died {
            return Ok((g, false));
        }
        if self.get(&g, S_PENDING) != 0 {
            // The journal is complete once S_PENDING is set: undo the half-made change.
            self.word()
                .store(self.get(&g, S_OLD_VALUE) as u32, Ordering::SeqCst);
            let slot = self.get(&g, S_OLD_SLOT);
            if (slot as usize) < HOLDER_SLOTS {
                let count = self.get(&g, S_OLD_COUNT);
                self.set(&g, S_SLOTS + 3 * slot as usize + 2, count);
            }
            self.set(&g, S_PENDING, 0);
        }
        let reclaimed = self.sweep(&g);
        Ok((g, reclaimed))
    }

    /// Gives back the permits of dead holders; returns whether there were any.
    fn sweep(&self, g: &Locked<'_>) -> bool {
        if !self.tracked(g) {
            return false;
        }
        let (me, _) = holder_identity();
        let mut back = 0u64;
        for i in 0..HOLDER_SLOTS {
            let base = S_SLOTS + 3 * i;
            let count = self.get(g, base + 2);
            let pid = self.get(g, base);
            if count == 0 || pid == me || !holder_is_dead(pid, self.get(g, base + 1)) {
                continue;
            }
            back += count;
            self.set(g, base + 2, 0);
        }
        if back == 0 {
            return false;
        }
        let mut value = self.value() as u64 + back;
        if let Some(b) = self.bound {
            value = value.min(b as u64);
        }
        self.word()
            .store(value.min(u32::MAX as u64) as u32, Ordering::SeqCst);
        futex_wake(self.word(), i32::MAX);
        true
    }

    /// This process's slot: the one it holds permits in, else a free one.
    fn my_slot(&self, g: &Locked<'_>, want_free: bool) -> Option<usize> {
        let (me, start) = holder_identity();
        let mut free = None;
        for i in 0..HOLDER_SLOTS {
            let base = S_SLOTS + 3 * i;
            let count = self.get(g, base + 2);
            if count > 0 && self.get(g, base) == me && self.get(g, base + 1) == start {
                return Some(i);
            }
            if count == 0 && free.is_none() {
                free = Some(i);
            }
        }
        if want_free { free } else { None }
    }

    /// Changes the value to `value` and slot `slot`'s count by `delta`, journaled so that
    /// a process killed half-way is rolled back by the next locker.
    fn change(&self, g: &Locked<'_>, value: u32, slot: Option<usize>, delta: i64) {
        let (me, start) = holder_identity();
        let old_count = slot.map_or(0, |s| self.get(g, S_SLOTS + 3 * s + 2));
        self.set(g, S_OLD_VALUE, self.value() as u64);
        self.set(g, S_OLD_SLOT, slot.map_or(u64::MAX, |s| s as u64));
        self.set(g, S_OLD_COUNT, old_count);
        self.set(g, S_PENDING, me);
        self.word().store(value, Ordering::SeqCst);
        if let Some(s) = slot {
            let base = S_SLOTS + 3 * s;
            self.set(g, base, me);
            self.set(g, base + 1, start);
            self.set(g, base + 2, old_count.saturating_add_signed(delta));
        }
        self.set(g, S_PENDING, 0);
    }

    /// Takes a permit if one is available now (after giving back the permits of dead
    /// holders); `Err(OwnerDied(()))` when the permit taken came from a dead holder.
    pub fn try_acquire(&self) -> Result<bool, AcquireError<()>> {
        self.acquire(Some(Duration::ZERO))
    }

    /// Takes a permit, waiting at most `timeout` (`None`: for ever); `Ok(true)` when it got
    /// one, `Ok(false)` when the timeout passed, and `Err(OwnerDied(()))` when it got one
    /// that a dead holder had left (see the type's docs).
    ///
    /// ```
    /// use std::time::Duration;
    /// let s = procvisor::Semaphore::new(0)?;
    /// assert!(!s.acquire(Some(Duration::from_millis(10))).unwrap());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn acquire(&self, timeout: Option<Duration>) -> Result<bool, AcquireError<()>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut came_back = false;
        loop {
            let tracked;
            {
                let (g, died) = self.lock().map_err(AcquireError::Os)?;
                came_back |= died;
                tracked = self.tracked(&g);
                if self.value() == 0 {
                    came_back |= self.sweep(&g);
                }
                let v = self.value();
                if v > 0 {
                    let slot = if tracked {
                        self.my_slot(&g, true)
                    } else {
                        None
                    };
                    self.change(&g, v - 1, slot, 1);
                    return if came_back {
                        Err(AcquireError::OwnerDied(()))
                    } else {
                        Ok(true)
                    };
                }
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return Ok(false);
            }
            // Tracked: wake up now and then to look for dead holders, whose death wakes
            // nobody.
            let slice = match (left, tracked) {
                (Some(l), true) => Some(l.min(SEMAPHORE_CHECK)),
                (None, true) => Some(SEMAPHORE_CHECK),
                (l, false) => l,
            };
            futex_wait(self.word(), 0, slice);
        }
    }

    /// As [`acquire`](Semaphore::acquire), with a guard that releases the permit when
    /// dropped; `Ok(None)` when the timeout passed.
    ///
    /// ```
    /// let s = procvisor::Semaphore::bounded(1)?;
    /// {
    ///     let _permit = s.permit(None).unwrap().unwrap();
    ///     assert_eq!(s.value(), 0);
    /// }
    /// assert_eq!(s.value(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[allow(clippy::type_complexity)] // reason: the shape of Lock::acquire_timeout's result
    pub fn permit(
        &self,
        timeout: Option<Duration>,
    ) -> Result<Option<SemaphoreGuard<'_>>, AcquireError<SemaphoreGuard<'_>>> {
        match self.acquire(timeout) {
            Ok(true) => Ok(Some(SemaphoreGuard { sem: self })),
            Ok(false) => Ok(None),
            Err(AcquireError::OwnerDied(())) => {
                Err(AcquireError::OwnerDied(SemaphoreGuard { sem: self }))
            }
            Err(AcquireError::Os(e)) => Err(AcquireError::Os(e)),
        }
    }

    /// Gives a permit back and wakes the waiters: one this process holds, if it holds any,
    /// else a new one (Python lets any process release); for a bounded semaphore, an error
    /// when that would exceed its initial value.
    pub fn release(&self) -> Result<(), OverReleaseError> {
        {
            let (g, _) = self.lock().map_err(|_| OverReleaseError)?;
            let v = self.value();
            if self.bound.is_some_and(|b| v >= b) || v == u32::MAX {
                return Err(OverReleaseError);
            }
            let slot = if self.tracked(&g) {
                self.my_slot(&g, false)
            } else {
                None
            };
            self.change(&g, v + 1, slot, -1);
        }
        // Every waiter, not one: a single woken waiter killed before it takes the permit
        // would leave the others asleep beside a free permit.
        futex_wake(self.word(), i32::MAX);
        Ok(())
    }
}

/// How a semaphore travels: its region and its bound.
#[derive(Serialize, Deserialize)]
struct SemaphoreWire {
    shared: u32,
    bound: Option<u32>,
}

impl Serialize for Semaphore {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let shared = handles::push(self.shared.region.fd()).map_err(serde::ser::Error::custom)?;
        SemaphoreWire {
            shared,
            bound: self.bound,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Semaphore {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = SemaphoreWire::deserialize(deserializer)?;
        let shared = open_shared(wire.shared, |_| true).map_err(serde::de::Error::custom)?;
        Ok(Semaphore {
            shared,
            bound: wire.bound,
        })
    }
}

/// A condition variable shared by processes, over its own [`Lock`]: Python's
/// `multiprocessing.Condition`.
///
/// ```
/// use std::time::Duration;
/// let cond = procvisor::Condition::new()?;
/// let guard = cond.acquire().unwrap();
/// // Nobody notifies: the wait times out, and the lock is held again afterwards.
/// let (guard, notified) = cond.wait(guard, Some(Duration::from_millis(10))).unwrap();
/// assert!(!notified);
/// drop(guard);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Condition {
    lock: Lock,
    /// Its event word counts notifications: a waiter sleeps until it moves.
    seq: Arc<Shared>,
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Condition")
    }
}

impl Condition {
    /// A condition with a new lock of its own.
    pub fn new() -> Result<Condition, SyncError> {
        Self::with_lock(Lock::new()?)
    }

    /// A condition over an existing lock (shared with code that takes the lock directly).
    ///
    /// ```
    /// let lock = procvisor::Lock::new()?;
    /// let cond = procvisor::Condition::with_lock(lock.clone())?;
    /// drop(cond.acquire().unwrap());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_lock(lock: Lock) -> Result<Condition, SyncError> {
        Ok(Condition {
            lock,
            seq: Shared::create(0)?,
        })
    }

    /// Takes the condition's lock.
    pub fn acquire(&self) -> LockResult<'_> {
        self.lock.acquire()
    }

    /// Releases the lock, waits for a notification or `timeout` (`None`: for ever), and
    /// takes the lock again; returns the guard and whether a notification came. As in
    /// Python, a wake-up may come without the condition holding: re-check it (or use
    /// [`wait_for`](Condition::wait_for)).
    pub fn wait<'a>(
        &'a self,
        guard: LockGuard<'a>,
        timeout: Option<Duration>,
    ) -> Result<(LockGuard<'a>, bool), AcquireError<LockGuard<'a>>> {
        let word = &self.seq.header().flag;
        // Read before unlocking: a notify that comes after the unlock moves the word, and
        // FUTEX_WAIT then returns at once instead of missing it.
        let seen = word.load(Ordering::SeqCst);
        drop(guard);
        futex_wait(word, seen, timeout);
        let notified = word.load(Ordering::SeqCst) != seen;
        self.lock.acquire().map(|g| (g, notified))
    }

    /// Waits until `ready()` holds (checked under the lock) or `timeout` passes; returns the
    /// guard and the last result of `ready`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let cond = procvisor::Condition::new()?;
    /// let guard = cond.acquire().unwrap();
    /// let (_guard, ok) = cond.wait_for(guard, || true, Some(Duration::from_secs(1))).unwrap();
    /// assert!(ok);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_for<'a>(
        &'a self,
        mut guard: LockGuard<'a>,
        mut ready: impl FnMut() -> bool,
        timeout: Option<Duration>,
    ) -> Result<(LockGuard<'a>, bool), AcquireError<LockGuard<'a>>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if ready() {
                return Ok((guard, true));
            }
            let left = match deadline {
                None => None,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok((guard, false));
                    }
                    Some(left)
                }
            };
            guard = self.wait(guard, left)?.0;
        }
    }

    /// Wakes up to `n` waiters.
    pub fn notify(&self, n: u32) {
        let word = &self.seq.header().flag;
        word.fetch_add(1, Ordering::SeqCst);
        futex_wake(word, n.min(i32::MAX as u32) as i32);
    }

    /// Wakes every waiter.
    ///
    /// ```
    /// procvisor::Condition::new()?.notify_all(); // nobody waits: nothing happens
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn notify_all(&self) {
        self.notify(u32::MAX);
    }
}

/// How a condition travels: its lock and its notification word.
#[derive(Serialize, Deserialize)]
struct ConditionWire {
    lock: Lock,
    seq: u32,
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let seq = handles::push(self.seq.region.fd()).map_err(serde::ser::Error::custom)?;
        ConditionWire {
            lock: self.lock.clone(),
            seq,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = ConditionWire::deserialize(deserializer)?;
        let seq = open_shared(wire.seq, |_| true).map_err(serde::de::Error::custom)?;
        Ok(Condition {
            lock: wire.lock,
            seq,
        })
    }
}

/// Slots of a barrier's data: the number of parties, how many wait now, whether it is
/// broken, how many times it has released, then one pid per party waiting.
const B_PARTIES: usize = 0;
const B_COUNT: usize = 1;
const B_BROKEN: usize = 2;
const B_RELEASED: usize = 3;
const B_PIDS: usize = 4;

/// How often a waiting party looks for a dead one.
const BARRIER_CHECK: Duration = Duration::from_millis(100);

/// A barrier was broken: by a timeout, `abort()`, `reset()`, or a party that died waiting
/// (Python's `BrokenBarrierError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenBarrierError;

impl fmt::Display for BrokenBarrierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the barrier is broken")
    }
}

impl std::error::Error for BrokenBarrierError {}

/// A meeting point for a fixed number of processes: Python's `multiprocessing.Barrier`.
///
/// Better than CPython: a party that dies while waiting (or while holding the barrier's
/// lock) breaks the barrier for the others within about 100 ms, instead of leaving them
/// waiting for ever.
///
/// ```
/// let b = procvisor::Barrier::new(1)?;
/// assert_eq!(b.wait(None)?, 0); // one party: released at once
/// assert_eq!(b.parties(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Barrier {
    array: Array<u64>,
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .field("n_waiting", &self.n_waiting())
            .finish()
    }
}

impl Barrier {
    /// A barrier for `parties` processes (at least 1).
    pub fn new(parties: usize) -> Result<Barrier, SyncError> {
        let parties = parties.max(1);
        let mut init = vec![0u64; B_PIDS + parties];
        init[B_PARTIES] = parties as u64;
        Ok(Barrier {
            array: Array::new(&init)?,
        })
    }

    /// The number of parties.
    pub fn parties(&self) -> usize {
        self.array.len() - B_PIDS
    }

    /// How many parties wait now.
    pub fn n_waiting(&self) -> usize {
        self.array
            .to_vec()
            .map(|v| v[B_COUNT] as usize)
            .unwrap_or(0)
    }

    /// Whether the barrier is broken.
    pub fn broken(&self) -> bool {
        self.array
            .to_vec()
            .map(|v| v[B_BROKEN] != 0)
            .unwrap_or(true)
    }

    fn guard(&self) -> ArrayGuard<'_, u64> {
        match self.array.get_lock() {
            Ok(g) => g,
            // A party died holding the lock: what it was doing cannot be trusted, so the
            // barrier breaks (the others are woken below by the caller's break).
            Err(AcquireError::OwnerDied(mut g)) => {
                g.put(B_BROKEN, 1);
                g
            }
            // Only EINVAL-class failures are left, which a mutex initialised at creation
            // cannot produce.
            Err(AcquireError::Os(e)) => {
                panic!("the barrier's mutex, initialised at creation, locks: {e}")
            }
        }
    }

    fn word(&self) -> &std::sync::atomic::AtomicU32 {
        &self.array.shared.header().flag
    }

    fn break_locked(&self, g: &mut ArrayGuard<'_, u64>) {
        g.put(B_BROKEN, 1);
        g.put(B_COUNT, 0);
        for i in 0..self.parties() {
            g.put(B_PIDS + i, 0);
        }
        self.word().fetch_add(1, Ordering::SeqCst);
        futex_wake(self.word(), i32::MAX);
    }

    /// Waits until every party has called `wait`, or `timeout` passes (which breaks the
    /// barrier); returns this party's arrival index, from 0 to `parties - 1`.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<usize, BrokenBarrierError> {
        self.wait_with(timeout, || {})
    }

    /// As [`wait`](Barrier::wait); the last party to arrive runs `action` before the others
    /// are released (Python's `action`, supplied at the call since code cannot be shared
    /// between processes).
    ///
    /// ```
    /// let b = procvisor::Barrier::new(1)?;
    /// let mut ran = false;
    /// b.wait_with(None, || ran = true)?;
    /// assert!(ran);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_with(
        &self,
        timeout: Option<Duration>,
        action: impl FnOnce(),
    ) -> Result<usize, BrokenBarrierError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let me = std::process::id() as u64;
        let (index, released) = {
            let mut g = self.guard();
            if g.at(B_BROKEN) != 0 {
                self.break_locked(&mut g);
                return Err(BrokenBarrierError);
            }
            let index = g.at(B_COUNT) as usize;
            let released = g.at(B_RELEASED);
            if index + 1 == self.parties() {
                action();
                g.put(B_COUNT, 0);
                for i in 0..self.parties() {
                    g.put(B_PIDS + i, 0);
                }
                g.put(B_RELEASED, released + 1);
                self.word().fetch_add(1, Ordering::SeqCst);
                futex_wake(self.word(), i32::MAX);
                return Ok(index);
            }
            g.put(B_COUNT, index as u64 + 1);
            g.put(B_PIDS + index, me);
            (index, released)
        };
        loop {
            let seen = self.word().load(Ordering::SeqCst);
            {
                let mut g = self.guard();
                if g.at(B_RELEASED) > released {
                    return Ok(index);
                }
                if g.at(B_BROKEN) != 0 {
                    self.break_locked(&mut g);
                    return Err(BrokenBarrierError);
                }
                let dead = (0..self.parties()).map(|i| g.at(B_PIDS + i)).any(|pid| {
                    pid != 0
                        && pid != me
                        && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None)
                            == Err(Errno::ESRCH)
                });
                let late = deadline.is_some_and(|d| Instant::now() >= d);
                if dead || late {
                    self.break_locked(&mut g);
                    return Err(BrokenBarrierError);
                }
            }
            let slice = match deadline {
                Some(d) => d
                    .saturating_duration_since(Instant::now())
                    .min(BARRIER_CHECK),
                None => BARRIER_CHECK,
            };
            futex_wait(self.word(), seen, Some(slice));
        }
    }

    /// Breaks the barrier: every waiting party, and every later `wait`, fails until
    /// [`reset`](Barrier::reset).
    ///
    /// ```
    /// let b = procvisor::Barrier::new(2)?;
    /// b.abort();
    /// assert!(b.broken());
    /// assert!(b.wait(None).is_err());
    /// b.reset();
    /// assert!(!b.broken());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn abort(&self) {
        let mut g = self.guard();
        self.break_locked(&mut g);
    }

    /// Returns the barrier to its initial state; parties waiting now fail with
    /// [`BrokenBarrierError`].
    pub fn reset(&self) {
        let mut g = self.guard();
        if g.at(B_COUNT) > 0 {
            self.break_locked(&mut g);
        }
        g.put(B_BROKEN, 0);
    }
}

impl Serialize for Barrier {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.array.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Barrier {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let array = Array::<u64>::deserialize(deserializer)?;
        if array.len() <= B_PIDS {
            return Err(serde::de::Error::custom("not a barrier"));
        }
        Ok(Barrier { array })
    }
}

/// A flag shared by processes that others can wait for: Python's `multiprocessing.Event`.
#[derive(Clone)]
pub struct Event {
    shared: Arc<Shared>,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish()
    }
}

impl Event {
    /// A new event, not set.
    ///
    /// ```
    /// let e = procvisor::Event::new()?;
    /// assert!(!e.is_set());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new() -> Result<Event, SyncError> {
        Ok(Event {
            shared: Shared::create(0)?,
        })
    }

    /// Sets the flag and wakes every waiter, in every process.
    ///
    /// ```
    /// let e = procvisor::Event::new()?;
    /// e.set();
    /// assert!(e.wait(None));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set(&self) {
        let flag = &self.shared.header().flag;
        if flag.swap(1, Ordering::SeqCst) == 0 {
            futex_wake(flag, i32::MAX);
        }
    }

    /// Clears the flag.
    ///
    /// ```
    /// let e = procvisor::Event::new()?;
    /// e.set();
    /// e.clear();
    /// assert!(!e.is_set());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn clear(&self) {
        self.shared.header().flag.store(0, Ordering::SeqCst);
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.shared.header().flag.load(Ordering::SeqCst) != 0
    }

    /// Waits until the flag is set or `timeout` passes (`None`: for ever); returns whether
    /// it is set.
    ///
    /// ```
    /// use std::time::Duration;
    /// let e = procvisor::Event::new()?;
    /// assert!(!e.wait(Some(Duration::from_millis(10))));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let flag = &self.shared.header().flag;
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if flag.load(Ordering::SeqCst) != 0 {
                return true;
            }
            let left = match deadline {
                None => None,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    Some(left)
                }
            };
            futex_wait(flag, 0, left);
        }
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ser_shared(&self.shared, serializer)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Event {
            shared: de_shared(deserializer, |_| true)?,
        })
    }
}

/// `N` numbers in shared memory, with a lock: Python's `multiprocessing.Array` (and, with
/// one element, [`Value`]).
///
/// # Indexing
///
/// Every method that takes an index — [`get`](Array::get) and [`set`](Array::set) here,
/// [`ArrayGuard::get`] and [`ArrayGuard::set`] under the lock — checks it first: an index
/// at or past [`len`](Array::len) is an [`IndexOutOfRange`] error (Python's `IndexError`),
/// and no shared memory is read or written. Nothing panics. There is no `a[i]` (`Index`)
/// on purpose: other processes write these elements, so procvisor hands out copies, never
/// a `&T` into the shared memory.
///
/// ```
/// let a = procvisor::Array::new(&[1i32, 2, 3])?;
/// a.set(0, -1)?; // a[0] = -1
/// assert_eq!(a.get(0)?, -1);
/// let err = a.set(3, 4).unwrap_err();
/// assert_eq!(err.to_string(), "array index 3 out of range for length 3");
/// assert_eq!(a.to_vec()?, [-1, 2, 3]); // untouched
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Array<T: Pod> {
    shared: Arc<Shared>,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Pod> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array {
            shared: self.shared.clone(),
            len: self.len,
            _t: PhantomData,
        }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_vec() {
            Ok(v) => f.debug_tuple("Array").field(&v).finish(),
            Err(_) => f.write_str("Array(<lock failed>)"),
        }
    }
}

/// Holds an [`Array`]'s (or a [`Value`]'s) lock and gives access to its elements.
pub struct ArrayGuard<'a, T: Pod> {
    array: &'a Array<T>,
    locked: Locked<'a>,
}

impl<T: Pod> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ArrayGuard")
    }
}

impl<T: Pod> ArrayGuard<'_, T> {
    /// The number of elements.
    pub fn len(&self) -> usize {
        self.array.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.array.len == 0
    }

    /// Element `i` (Python's `a[i]` inside `with a.get_lock():`), or
    /// [`IndexOutOfRange`] when `i >= len()`, reading nothing.
    ///
    /// ```
    /// let a = procvisor::Array::new(&[5u16, 6])?;
    /// let g = a.get_lock().unwrap();
    /// assert_eq!(g.get(1), Ok(6));
    /// assert!(g.get(2).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(&self, i: usize) -> Result<T, IndexOutOfRange> {
        self.array.check(i)?;
        Ok(self
            .array
            .shared
            .region
            .read_pod(&self.locked, DATA_OFFSET, i))
    }

    /// Sets element `i` (Python's `a[i] = value`), or returns [`IndexOutOfRange`] when
    /// `i >= len()`, writing nothing.
    ///
    /// ```
    /// let a = procvisor::Array::new(&[0i64; 2])?;
    /// let mut g = a.get_lock().unwrap();
    /// g.set(1, -4)?;
    /// assert!(g.set(2, 9).is_err()); // nothing written
    /// drop(g);
    /// assert_eq!(a.to_vec()?, [0, -4]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set(&mut self, i: usize, value: T) -> Result<(), IndexOutOfRange> {
        self.array.check(i)?;
        self.array
            .shared
            .region
            .write_pod(&self.locked, DATA_OFFSET, i, value);
        Ok(())
    }

    /// A copy of every element.
    ///
    /// ```
    /// let a = procvisor::Array::new(&[1u8, 2, 3])?;
    /// assert_eq!(a.get_lock().unwrap().to_vec(), [1, 2, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_vec(&self) -> Vec<T> {
        (0..self.len()).map(|i| self.at(i)).collect()
    }

    /// Element `i`, for an index procvisor's own code knows is in range.
    fn at(&self, i: usize) -> T {
        self.get(i)
            .expect("procvisor indexes its own arrays within their length")
    }

    /// Sets element `i`, for an index procvisor's own code knows is in range.
    fn put(&mut self, i: usize, value: T) {
        self.set(i, value)
            .expect("procvisor indexes its own arrays within their length")
    }
}

impl<T: Pod> Array<T> {
    /// A shared array holding `values`.
    ///
    /// ```
    /// let a = procvisor::Array::new(&[1i32, 2, 3])?;
    /// assert_eq!(a.to_vec()?, [1, 2, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(values: &[T]) -> Result<Array<T>, SyncError> {
        let array = Array {
            shared: Shared::create(size_of_val(values))?,
            len: values.len(),
            _t: PhantomData,
        };
        {
            let mut g = array.get_lock().map_err(|e| match e {
                AcquireError::Os(e) => SyncError::os(e),
                AcquireError::OwnerDied(_) => SyncError::os(Errno::EOWNERDEAD),
            })?;
            for (i, v) in values.iter().enumerate() {
                g.put(i, *v);
            }
        }
        Ok(array)
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes the array's lock (Python's `get_lock()` used in a `with`): read and write
    /// elements through the guard.
    ///
    /// ```
    /// let a = procvisor::Array::new(&[0u8; 4])?;
    /// let mut g = a.get_lock().unwrap();
    /// for i in 0..g.len() {
    ///     g.set(i, i as u8 * 2)?;
    /// }
    /// drop(g);
    /// assert_eq!(a.to_vec()?, [0, 2, 4, 6]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_lock(&self) -> Result<ArrayGuard<'_, T>, AcquireError<ArrayGuard<'_, T>>> {
        match self.shared.header().mutex.lock() {
            Ok((locked, false)) => Ok(ArrayGuard {
                array: self,
                locked,
            }),
            Ok((locked, true)) => Err(AcquireError::OwnerDied(ArrayGuard {
                array: self,
                locked,
            })),
            Err(e) => Err(AcquireError::Os(e)),
        }
    }

    /// A copy of every element, read under the lock (recovering it from a dead holder).
    pub fn to_vec(&self) -> Result<Vec<T>, SyncError> {
        Ok(self.lock_recovering()?.to_vec())
    }

    /// Element `i`, read under the lock (Python's `a[i]`); an index at or past
    /// [`len`](Array::len) is an error ([`SyncError::index_out_of_range`]) that touches
    /// nothing. To read several elements consistently, hold [`get_lock`](Array::get_lock).
    ///
    /// ```
    /// let a = procvisor::Array::new(&[10i32, 20, 30])?;
    /// assert_eq!(a.get(2)?, 30);
    /// assert!(a.get(3).unwrap_err().index_out_of_range().is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(&self, i: usize) -> Result<T, SyncError> {
        self.check(i)?;
        Ok(self.lock_recovering()?.get(i)?)
    }

    /// Sets element `i` under the lock (Python's `a[i] = value`); an index at or past
    /// [`len`](Array::len) is an error ([`SyncError::index_out_of_range`]) that writes
    /// nothing.
    ///
    /// ```
    /// let a = procvisor::Array::new(&[0u32; 3])?;
    /// a.set(1, 7)?;
    /// assert!(a.set(3, 9).is_err());
    /// assert_eq!(a.to_vec()?, [0, 7, 0]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set(&self, i: usize, value: T) -> Result<(), SyncError> {
        self.check(i)?;
        Ok(self.lock_recovering()?.set(i, value)?)
    }

    fn check(&self, i: usize) -> Result<(), IndexOutOfRange> {
        if i < self.len {
            Ok(())
        } else {
            Err(IndexOutOfRange {
                index: i,
                len: self.len,
            })
        }
    }

    /// The lock, taken over from a dead holder if need be: for a single read or write,
    /// which a half-done change of the dead holder's cannot make worse.
    fn lock_recovering(&self) -> Result<ArrayGuard<'_, T>, SyncError> {
        self.get_lock()
            .or_else(|e| e.into_guard().ok_or(SyncError::os(Errno::EIO)))
    }
}

impl<T: Pod> Serialize for Array<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ser_shared(&self.shared, serializer)
    }
}

impl<'de, T: Pod> Deserialize<'de> for Array<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut len = 0;
        let shared = de_shared(deserializer, |bytes| {
            len = bytes as usize / size_of::<T>().max(1);
            bytes as usize % size_of::<T>().max(1) == 0
        })?;
        Ok(Array {
            shared,
            len,
            _t: PhantomData,
        })
    }
}

/// One number in shared memory, with a lock: Python's `multiprocessing.Value`.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Value<T: Pod>(Array<T>);

impl<T: Pod> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value(self.0.clone())
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.get() {
            Ok(v) => f.debug_tuple("Value").field(&v).finish(),
            Err(_) => f.write_str("Value(<lock failed>)"),
        }
    }
}

/// Holds a [`Value`]'s lock; dereferences to a copy of the number that is written back
/// when the guard is dropped.
pub struct ValueGuard<'a, T: Pod> {
    inner: ArrayGuard<'a, T>,
    value: T,
}

impl<T: Pod> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ValueGuard")
    }
}

impl<T: Pod> Deref for ValueGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: Pod> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T: Pod> Drop for ValueGuard<'_, T> {
    fn drop(&mut self) {
        self.inner.put(0, self.value);
    }
}

impl<T: Pod> Value<T> {
    /// A shared number holding `value`.
    ///
    /// ```
    /// let v = procvisor::Value::new(3.5f64)?;
    /// assert_eq!(v.get()?, 3.5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(value: T) -> Result<Value<T>, SyncError> {
        Array::new(&[value]).map(Value)
    }

    /// Reads the number under its lock (Python's `v.value`).
    pub fn get(&self) -> Result<T, SyncError> {
        self.0.get(0)
    }

    /// Writes the number under its lock (Python's `v.value = x`).
    ///
    /// ```
    /// let v = procvisor::Value::new(0u32)?;
    /// v.set(7)?;
    /// assert_eq!(v.get()?, 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set(&self, value: T) -> Result<(), SyncError> {
        self.0.set(0, value)
    }

    /// Takes the lock for a read-modify-write (Python's `with v.get_lock(): v.value += 1`).
    ///
    /// ```
    /// let v = procvisor::Value::new(1i64)?;
    /// *v.get_lock().unwrap() += 41;
    /// assert_eq!(v.get()?, 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_lock(&self) -> Result<ValueGuard<'_, T>, AcquireError<ValueGuard<'_, T>>> {
        fn wrap<T: Pod>(inner: ArrayGuard<'_, T>) -> ValueGuard<'_, T> {
            let value = inner.at(0);
            ValueGuard { inner, value }
        }
        match self.0.get_lock() {
            Ok(g) => Ok(wrap(g)),
            Err(AcquireError::OwnerDied(g)) => Err(AcquireError::OwnerDied(wrap(g))),
            Err(AcquireError::Os(e)) => Err(AcquireError::Os(e)),
        }
    }
}
