//! `Queue`, `SimpleQueue` and `JoinableQueue`: Python's `multiprocessing.queues`, typed
//! with serde, on shared memory.
//!
//! A queue is a ring of records in a memfd-backed shared region. Producers take one robust
//! process-shared mutex, consumers another, so a producer and a consumer never wait for each
//! other; each side commits a put or a get with one atomic store of a published word. A handle travels to a child inside its target's arguments, as in
//! Python: `Process::new(worker, (queue.clone(),))`.
//!
//! # Examples
//!
//! ```no_run
//! use procvisor::{Process, Queue};
//!
//! fn producer(q: Queue<(u32, String)>) {
//!     for i in 0..3 {
//!         q.put((i, format!("item {i}"))).unwrap();
//!     }
//! }
//!
//! let q = Queue::new(0)?;
//! let mut p = Process::new(producer, q.clone());
//! p.start()?;
//! for _ in 0..3 {
//!     let (i, text) = q.get()?;
//!     println!("{i}: {text}");
//! }
//! p.join(None)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Where it differs from CPython, on purpose
//!
//! - There is no feeder thread: `put` writes the item into shared memory before it
//!   returns. So `empty()` is false as soon as `put()` has returned, a producer can exit (or
//!   be joined) before the queue is drained without deadlocking, and `join_thread` /
//!   `cancel_join_thread` have nothing to wait for.
//! - A process killed in the middle of a `put` or `get` cannot corrupt the queue or leave
//!   it locked: the mutexes are robust, and a put or a get is committed by one atomic
//!   store, so the next process finds either the old state or the new one. An item whose
//!   `put` returned is never lost, and never delivered twice; an item a killed consumer had
//!   already taken is gone with it.
//! - Items are bounded by the ring's byte capacity (8 MiB unless
//!   [`with_capacity`](Queue::with_capacity) says otherwise, rounded up to a power of two,
//!   at most 1 GiB): a larger item is refused with
//!   [`PutError::TooLarge`], which hands it back. Memory is only touched as it is used.
//!
//! # Caveats
//!
//! Blocked calls spin for a moment, then sleep on futexes and re-check at least every 100 ms,
//! so a waker killed between committing and waking delays a sleeper by at most that much.
//! A put or a get makes no system call unless someone sleeps or a lock is contended.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use procvisor_protocol::frame::decode_value;
use procvisor_protocol::{DecodeError, EncodeError};
use procvisor_worker::handles;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::sys::shm::{
    Locked, QueueHeader, QueueWord, Region, RobustMutex, futex_wait, futex_wake,
};

/// Bytes in a queue's ring unless set otherwise.
pub const DEFAULT_CAPACITY: usize = 8 << 20;

/// Marks an initialised queue region ("pvqueue1").
const MAGIC: u64 = u64::from_le_bytes(*b"pvqueue2");

/// Where the ring starts: after the header, on its own cache line.
const DATA_OFFSET: usize = size_of::<QueueHeader>().next_multiple_of(64);

/// Bytes before each record's payload: its length.
const RECORD_HEADER: usize = 4;

/// The largest ring: positions are wrapping `u32`s, and a stale position must stay within
/// 2^31 bytes of the current one for the wrapping arithmetic to hold.
const MAX_CAPACITY: usize = 1 << 30;

/// A scratch buffer grown past this is not kept for the next item.
const MAX_SCRATCH: usize = 1 << 20;

/// How long a sleeper waits before re-checking on its own (see the caveats above).
const MAX_SLEEP: Duration = Duration::from_millis(100);

/// How long a `*_nowait` call waits for the lock itself: the lock is held for microseconds
/// at a time, so this only matters when its holder is stopped or hung.
const NOWAIT_LOCK: Duration = Duration::from_millis(10);

/// Spins before sleeping: a consumer on another core usually sees the next item within a
/// microsecond or two, far cheaper than a futex round trip.
const SPINS: u32 = 200;

/// A `put` that did not happen; the item comes back.
pub enum PutError<T> {
    /// The queue is full (maxsize items, or no room in the ring) and the call did not wait,
    /// or waited until its timeout.
    Full(T),
    /// This handle was closed with [`Queue::close`].
    Closed(T),
    /// The item, encoded, is larger than the ring can ever hold.
    TooLarge {
        /// The item.
        item: T,
        /// Its encoded length.
        len: usize,
        /// The ring's capacity.
        capacity: usize,
    },
    /// The item could not be serialized.
    Serialize(T, EncodeError),
    /// The shared mutex failed (should not happen).
    Os(T, Errno),
}

impl<T> PutError<T> {
    /// The item that was not put.
    ///
    /// ```
    /// let q = procvisor::Queue::new(1)?;
    /// q.put(1u8)?;
    /// assert_eq!(q.put_nowait(2).unwrap_err().into_inner(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_inner(self) -> T {
        match self {
            PutError::Full(t) | PutError::Closed(t) | PutError::Serialize(t, _) => t,
            PutError::Os(t, _) => t,
            PutError::TooLarge { item, .. } => item,
        }
    }

    /// Whether the queue was full.
    pub fn is_full(&self) -> bool {
        matches!(self, PutError::Full(_))
    }
}

impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("Full(..)"),
            PutError::Closed(_) => f.write_str("Closed(..)"),
            PutError::TooLarge { len, capacity, .. } => f
                .debug_struct("TooLarge")
                .field("len", len)
                .field("capacity", capacity)
                .finish_non_exhaustive(),
            PutError::Serialize(_, e) => f.debug_tuple("Serialize").field(e).finish(),
            PutError::Os(_, e) => f.debug_tuple("Os").field(e).finish(),
        }
    }
}

impl<T> fmt::Display for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PutError::Full(_) => f.write_str("queue is full"),
            PutError::Closed(_) => f.write_str("queue is closed"),
            PutError::TooLarge { len, capacity, .. } => {
                write!(
                    f,
                    "item of {len} bytes does not fit a queue of {capacity} bytes"
                )
            }
            PutError::Serialize(..) => f.write_str("item could not be serialized"),
            PutError::Os(_, e) => write!(f, "queue lock failed: {}", e.desc()),
        }
    }
}

impl<T> std::error::Error for PutError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PutError::Serialize(_, e) => Some(e),
            PutError::Os(_, e) => Some(e),
            _ => None,
        }
    }
}

/// A `get` that returned no item.
#[derive(Debug)]
#[non_exhaustive]
pub enum GetError {
    /// The queue is empty and the call did not wait, or waited until its timeout.
    Empty,
    /// This handle was closed with [`Queue::close`].
    Closed,
    /// The item did not decode as the queue's type (it was taken off the queue).
    Decode {
        /// The type asked for.
        expected: &'static str,
        /// What the decoder said.
        source: DecodeError,
    },
    /// The shared mutex failed (should not happen).
    Os(Errno),
}

impl fmt::Display for GetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GetError::Empty => f.write_str("queue is empty"),
            GetError::Closed => f.write_str("queue is closed"),
            GetError::Decode { expected, .. } => write!(f, "item did not decode as {expected}"),
            GetError::Os(e) => write!(f, "queue lock failed: {}", e.desc()),
        }
    }
}

impl std::error::Error for GetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GetError::Decode { source, .. } => Some(source),
            GetError::Os(e) => Some(e),
            _ => None,
        }
    }
}

/// Creating a queue failed.
#[derive(Debug)]
pub struct QueueError(Errno);

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "could not create the queue's shared memory: {}",
            self.0.desc()
        )
    }
}

impl std::error::Error for QueueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// `task_done()` was called more times than items were put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDoneError;

impl fmt::Display for TaskDoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("task_done() called too many times")
    }
}

impl std::error::Error for TaskDoneError {}

/// How long a call may wait.
#[derive(Clone, Copy)]
enum Wait {
    /// Not at all (`*_nowait`).
    No,
    /// Until this instant, or for ever.
    Until(Option<Instant>),
}

impl Wait {
    fn timeout(t: Option<Duration>) -> Wait {
        Wait::Until(t.map(|t| Instant::now() + t))
    }

    /// Takes a side's lock within this wait's limit; `Ok(None)` when the limit passed
    /// first, so that a timeout holds even against a stopped or hung lock holder. A holder
    /// that died needs no repair: it changed nothing the other processes can see before its
    /// one commit store.
    fn lock(self, mutex: &RobustMutex) -> Result<Option<Locked<'_>>, Errno> {
        let limit = match self {
            Wait::No => Some(NOWAIT_LOCK),
            Wait::Until(None) => None,
            Wait::Until(Some(d)) => Some(d.saturating_duration_since(Instant::now())),
        };
        match limit {
            None => mutex.lock().map(|(l, _)| Some(l)),
            Some(t) => mutex.lock_timeout(t).map(|l| l.map(|(l, _)| l)),
        }
    }
}

/// A published word: a byte position (low half) and an item count (high half), both
/// wrapping `u32`s.
fn split(word: u64) -> (u32, u32) {
    (word as u32, (word >> 32) as u32)
}

fn join(pos: u32, items: u32) -> u64 {
    u64::from(pos) | (u64::from(items) << 32)
}

thread_local! {
    /// Each thread's scratch buffer for encoding and reading items, so that a put or a get
    /// allocates nothing of its own beyond what the item's type needs.
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer, cleared. The buffer is taken out while `f`
/// runs, so a nested use (an item's `Serialize` that itself uses a queue) gets a fresh one,
/// as does a use from a thread-local's destructor, after the buffer is gone.
fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut buf = SCRATCH.try_with(Cell::take).unwrap_or_default();
    buf.clear();
    let r = f(&mut buf);
    if buf.capacity() <= MAX_SCRATCH {
        let _ = SCRATCH.try_with(|cell| cell.set(buf));
    }
    r
}

/// Why an encoded item was not pushed (the item itself is handed back by the caller).
enum Pushed {
    Serialize(rmp_serde::encode::Error),
    TooLarge(usize),
    Push(Option<Errno>),
}

/// The shared part of every handle to one queue.
///
/// The ring protocol: a producer, holding the producers' lock, writes a record (a 4-byte
/// length, then the payload) at the tail, past every published byte, then publishes the
/// new tail and put count in one store of `tail.word`. A consumer, holding the consumers'
/// lock, reads the record at the head, which the published tail covers, then publishes the
/// new head and get count in one store of `head.word`. Each side reads the other's word
/// only when its remembered copy (`seen`) says "full" or "empty". A process killed at any
/// point has either published its change or not: nothing is half-done.
#[derive(Debug)]
struct Shared {
    region: Region,
    capacity: u32,
}

impl Shared {
    fn create(maxsize: usize, capacity: usize) -> Result<Shared, Errno> {
        let capacity = capacity
            .clamp(RECORD_HEADER + 1, MAX_CAPACITY)
            .next_power_of_two();
        let region = Region::create(c"procvisor-queue", DATA_OFFSET + capacity)?;
        let h: &QueueHeader = region.header();
        h.producers.mutex.init()?;
        h.consumers.mutex.init()?;
        h.capacity.store(capacity as u64, Ordering::Relaxed);
        h.maxsize.store(maxsize as u64, Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
        Ok(Shared {
            region,
            capacity: capacity as u32,
        })
    }

    fn open(region: Region) -> Result<Shared, String> {
        if region.len() < DATA_OFFSET {
            return Err("the descriptor is not a procvisor queue".into());
        }
        let h: &QueueHeader = region.header();
        if h.magic.load(Ordering::Acquire) != MAGIC {
            return Err("the descriptor is not a procvisor queue".into());
        }
        let capacity = h.capacity.load(Ordering::Relaxed);
        if !capacity.is_power_of_two() || capacity > MAX_CAPACITY as u64 {
            return Err("the queue's capacity is not one this version makes".into());
        }
        if DATA_OFFSET as u64 + capacity > region.len() as u64 {
            return Err("the queue's region is shorter than its header says".into());
        }
        Ok(Shared {
            region,
            capacity: capacity as u32,
        })
    }

    fn header(&self) -> &QueueHeader {
        self.region.header()
    }

    /// Items in the queue. The consumers' word is read first and both counts only grow, so
    /// the figure is never below the real count at either read: `empty()` is false once a
    /// `put` has returned, until a `get` takes the item.
    fn count(&self) -> u32 {
        let h = self.header();
        let (_, gets) = split(h.head.word.load(Ordering::SeqCst));
        let (_, puts) = split(h.tail.word.load(Ordering::SeqCst));
        puts.wrapping_sub(gets).min(self.capacity)
    }

    /// Items put and not yet marked done (`done.word` first, as in `count`).
    fn unfinished(&self) -> u32 {
        let h = self.header();
        let done = h.done.word.load(Ordering::SeqCst) as u32;
        let (_, puts) = split(h.tail.word.load(Ordering::SeqCst));
        puts.wrapping_sub(done)
    }

    fn ring_write(&self, locked: &Locked<'_>, pos: u32, bytes: &[u8]) {
        let off = (pos & (self.capacity - 1)) as usize;
        let first = bytes.len().min(self.capacity as usize - off);
        self.region
            .copy_in(locked, DATA_OFFSET + off, &bytes[..first]);
        self.region.copy_in(locked, DATA_OFFSET, &bytes[first..]);
    }

    fn ring_read(&self, locked: &Locked<'_>, pos: u32, out: &mut [u8]) {
        let off = (pos & (self.capacity - 1)) as usize;
        let first = out.len().min(self.capacity as usize - off);
        let (a, b) = out.split_at_mut(first);
        self.region.copy_out(locked, DATA_OFFSET + off, a);
        self.region.copy_out(locked, DATA_OFFSET, b);
    }

    /// Whether a record of `record` bytes fits after `tail` (with `puts` items put), given
    /// the consumers' word `head`. A stale `head` only makes the answer "no" more often.
    fn fits(&self, tail: u32, puts: u32, head: u64, record: u32, maxsize: u64) -> bool {
        let (head, gets) = split(head);
        let used = tail.wrapping_sub(head);
        let count = puts.wrapping_sub(gets);
        used <= self.capacity
            && self.capacity - used >= record
            && (maxsize == 0 || u64::from(count) < maxsize)
    }

    /// Appends one record; `Err(None)` when full (and not waiting, or timed out).
    fn push(&self, payload: &[u8], wait: Wait) -> Result<(), Option<Errno>> {
        let h = self.header();
        let record = (RECORD_HEADER + payload.len()) as u32;
        let maxsize = h.maxsize.load(Ordering::Relaxed);
        loop {
            let Some(locked) = wait.lock(&h.producers.mutex).map_err(Some)? else {
                return Err(None);
            };
            // Only producers store this word, and we hold their lock.
            let (tail, puts) = split(h.tail.word.load(Ordering::Relaxed));
            let mut head = h.producers.seen.load(Ordering::Relaxed);
            if !self.fits(tail, puts, head, record, maxsize) {
                head = h.head.word.load(Ordering::Acquire);
                h.producers.seen.store(head, Ordering::Relaxed);
            }
            if self.fits(tail, puts, head, record, maxsize) {
                self.ring_write(&locked, tail, &(payload.len() as u32).to_le_bytes());
                self.ring_write(&locked, tail.wrapping_add(RECORD_HEADER as u32), payload);
                // The commit. SeqCst pairs with a consumer's (register, then re-read this
                // word) in `wait_for_change`: either it sees the new word, or we see it
                // registered and wake it.
                let word = join(tail.wrapping_add(record), puts.wrapping_add(1));
                h.tail.word.store(word, Ordering::SeqCst);
                drop(locked);
                wake(&h.tail.seq, &h.consumers_waiting);
                return Ok(());
            }
            drop(locked);
            let Wait::Until(deadline) = wait else {
                return Err(None);
            };
            if wait_for_change(&h.head, head, &h.producers_waiting, deadline) {
                return Err(None);
            }
        }
    }

    /// Takes the oldest record into `out`; `Err(None)` when empty.
    fn pop(&self, out: &mut Vec<u8>, wait: Wait) -> Result<(), Option<Errno>> {
        let h = self.header();
        loop {
            let Some(locked) = wait.lock(&h.consumers.mutex).map_err(Some)? else {
                return Err(None);
            };
            // Only consumers store this word, and we hold their lock.
            let (head, gets) = split(h.head.word.load(Ordering::Relaxed));
            let mut tail = h.consumers.seen.load(Ordering::Relaxed);
            if split(tail).1 == gets {
                tail = h.tail.word.load(Ordering::Acquire);
                h.consumers.seen.store(tail, Ordering::Relaxed);
            }
            let (tail_pos, puts) = split(tail);
            if puts != gets {
                // Published records are written whole; lengths that do not fit mean the
                // memory was changed behind the queue's back, and are clamped.
                let avail = tail_pos.wrapping_sub(head).min(self.capacity);
                let mut len = [0u8; RECORD_HEADER];
                self.ring_read(&locked, head, &mut len);
                let len = u32::from_le_bytes(len).min(avail.saturating_sub(RECORD_HEADER as u32));
                out.resize(len as usize, 0);
                self.ring_read(&locked, head.wrapping_add(RECORD_HEADER as u32), out);
                let next = head.wrapping_add(RECORD_HEADER as u32 + len);
                // The commit; SeqCst as in `push`, for sleeping producers.
                h.head
                    .word
                    .store(join(next, gets.wrapping_add(1)), Ordering::SeqCst);
                drop(locked);
                wake(&h.head.seq, &h.producers_waiting);
                return Ok(());
            }
            drop(locked);
            let Wait::Until(deadline) = wait else {
                return Err(None);
            };
            if wait_for_change(&h.tail, tail, &h.consumers_waiting, deadline) {
                return Err(None);
            }
        }
    }

    /// Marks one item done: one compare-and-swap, refused when nothing is unfinished.
    fn task_done(&self) -> Result<(), ()> {
        let h = self.header();
        let mut done = h.done.word.load(Ordering::SeqCst);
        loop {
            // `done` first, then the put count (which only grows): unfinished is never
            // under-counted, so a refusal is right. The consumers' remembered copy of the
            // put count is an older value of it: when it already shows items left, there
            // are at least that many, and the producers' busy cache line is not read.
            let (_, seen) = split(h.consumers.seen.load(Ordering::Relaxed));
            let stale = seen.wrapping_sub(done as u32);
            let left = if stale != 0 && stale < 1 << 31 {
                stale
            } else {
                split(h.tail.word.load(Ordering::SeqCst))
                    .1
                    .wrapping_sub(done as u32)
            };
            if left == 0 {
                return Err(());
            }
            let next = u64::from((done as u32).wrapping_add(1));
            match h
                .done
                .word
                .compare_exchange_weak(done, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => {
                    // `left` is never above the real count: when the real count reaches
                    // zero here, `left` is 1.
                    if left == 1 {
                        wake(&h.done.seq, &h.joiners_waiting);
                    }
                    return Ok(());
                }
                Err(now) => done = now,
            }
        }
    }

    fn join(&self) {
        let h = self.header();
        loop {
            if self.unfinished() == 0 {
                return;
            }
            // Registered first, then the count re-read: a task_done that makes it zero
            // either is seen here or sees us registered and wakes us (both SeqCst).
            spin_then_sleep(
                || self.unfinished() == 0,
                &h.done.seq,
                &h.joiners_waiting,
                None,
            );
        }
    }
}

/// Wakes every sleeper on `seq` if `waiting` says there is one; called after the commit
/// store (SeqCst) that the sleepers wait for. No system call when nobody sleeps.
fn wake(seq: &AtomicU32, waiting: &AtomicU32) {
    if waiting.load(Ordering::SeqCst) > 0 {
        seq.fetch_add(1, Ordering::SeqCst);
        futex_wake(seq, i32::MAX);
    }
}

/// Waits until the other side's word is no longer `seen` (or a slice or the deadline
/// ends). Returns true when the deadline passed with the word unmoved.
fn wait_for_change(
    word: &QueueWord,
    seen: u64,
    waiting: &AtomicU32,
    deadline: Option<Instant>,
) -> bool {
    !spin_then_sleep(
        || word.word.load(Ordering::SeqCst) != seen,
        &word.seq,
        waiting,
        deadline,
    )
}

/// Spins until `ready`, then registers in `waiting` and sleeps on `seq` for one slice (at
/// most [`MAX_SLEEP`], and not past `deadline`). Returns whether `ready` held (false: the
/// deadline passed without it); callers re-check under their lock either way.
///
/// Spinning comes first, unregistered: wakers make no system call for a waiter that sees
/// the change on its own within a microsecond or two. Then: register, read `seq`, re-check
/// `ready`, sleep. The waker's order is the mirror image (change, then read `waiting`),
/// all SeqCst: either it sees us registered and bumps `seq` (so FUTEX_WAIT returns at
/// once or is woken), or our re-check sees its change. No wake is lost.
fn spin_then_sleep(
    ready: impl Fn() -> bool,
    seq: &AtomicU32,
    waiting: &AtomicU32,
    deadline: Option<Instant>,
) -> bool {
    for _ in 0..SPINS {
        if ready() {
            return true;
        }
        std::hint::spin_loop();
    }
    waiting.fetch_add(1, Ordering::SeqCst);
    let seen = seq.load(Ordering::SeqCst);
    let outcome = if ready() {
        true
    } else {
        let slice = match deadline {
            None => Some(MAX_SLEEP),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                (!left.is_zero()).then(|| left.min(MAX_SLEEP))
            }
        };
        if let Some(slice) = slice {
            futex_wait(seq, seen, Some(slice));
        }
        ready() || deadline.is_none_or(|d| Instant::now() < d)
    };
    waiting.fetch_sub(1, Ordering::SeqCst);
    outcome
}

/// A multi-producer, multi-consumer queue shared by any number of processes: Python's
/// `multiprocessing.Queue`.
///
/// Clone a handle to use it from several threads; pass one in a target's arguments to use
/// it from a child.
pub struct Queue<T> {
    shared: Arc<Shared>,
    closed: bool,
    _items: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            shared: self.shared.clone(),
            closed: false,
            _items: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("qsize", &self.shared.count())
            .field("capacity", &self.shared.capacity)
            .field("closed", &self.closed)
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// A queue of at most `maxsize` items (0: no limit but the ring's bytes), with the
    /// default ring of [`DEFAULT_CAPACITY`] bytes.
    ///
    /// ```
    /// let q = procvisor::Queue::new(0)?;
    /// q.put("hello".to_owned())?;
    /// assert_eq!(q.get()?, "hello");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(maxsize: usize) -> Result<Self, QueueError> {
        Self::with_capacity(maxsize, DEFAULT_CAPACITY)
    }

    /// A queue of at most `maxsize` items whose ring holds `capacity` bytes, rounded up to
    /// a power of two and at most 1 GiB (each item takes its encoded length plus 4).
    ///
    /// ```
    /// let q = procvisor::Queue::with_capacity(0, 64)?;
    /// let err = q.put(vec![0u8; 100]).unwrap_err();
    /// assert!(matches!(err, procvisor::queues::PutError::TooLarge { .. }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_capacity(maxsize: usize, capacity: usize) -> Result<Self, QueueError> {
        Ok(Queue {
            shared: Arc::new(Shared::create(maxsize, capacity).map_err(QueueError)?),
            closed: false,
            _items: PhantomData,
        })
    }

    fn put_with(&self, item: T, wait: Wait) -> Result<(), PutError<T>> {
        if self.closed {
            return Err(PutError::Closed(item));
        }
        let capacity = self.shared.capacity as usize;
        let pushed = with_scratch(|buf| {
            // The same bytes as `procvisor_protocol::encode_value`, into a reused buffer.
            rmp_serde::encode::write_named(buf, &item).map_err(Pushed::Serialize)?;
            if RECORD_HEADER + buf.len() > capacity {
                return Err(Pushed::TooLarge(buf.len()));
            }
            self.shared.push(buf, wait).map_err(Pushed::Push)
        });
        match pushed {
            Ok(()) => Ok(()),
            Err(Pushed::Serialize(e)) => Err(PutError::Serialize(item, EncodeError::Serialize(e))),
            Err(Pushed::TooLarge(len)) => Err(PutError::TooLarge {
                item,
                len,
                capacity,
            }),
            Err(Pushed::Push(None)) => Err(PutError::Full(item)),
            Err(Pushed::Push(Some(e))) => Err(PutError::Os(item, e)),
        }
    }

    /// Puts an item, waiting for room as long as it takes.
    ///
    /// ```
    /// let q = procvisor::Queue::new(0)?;
    /// q.put((1, "one".to_owned()))?;
    /// assert!(!q.empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.put_with(item, Wait::Until(None))
    }

    /// Puts an item, waiting at most `timeout` for room; [`PutError::Full`] hands it back.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = procvisor::Queue::new(1)?;
    /// q.put(1)?;
    /// assert!(q.put_timeout(2, Duration::from_millis(10)).unwrap_err().is_full());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.put_with(item, Wait::timeout(Some(timeout)))
    }

    /// Puts an item only if there is room now (Python's `put_nowait`).
    ///
    /// ```
    /// let q = procvisor::Queue::new(1)?;
    /// q.put_nowait('a')?;
    /// assert!(q.put_nowait('b').unwrap_err().is_full());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put_nowait(&self, item: T) -> Result<(), PutError<T>> {
        self.put_with(item, Wait::No)
    }

    fn get_with(&self, wait: Wait) -> Result<T, GetError> {
        if self.closed {
            return Err(GetError::Closed);
        }
        with_scratch(|buf| {
            match self.shared.pop(buf, wait) {
                Ok(()) => {}
                Err(None) => return Err(GetError::Empty),
                Err(Some(e)) => return Err(GetError::Os(e)),
            }
            decode_value(buf).map_err(|source| GetError::Decode {
                expected: std::any::type_name::<T>(),
                source,
            })
        })
    }

    /// Takes the oldest item, waiting as long as it takes.
    ///
    /// ```
    /// let q = procvisor::Queue::new(0)?;
    /// q.put(5u64)?;
    /// assert_eq!(q.get()?, 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(&self) -> Result<T, GetError> {
        self.get_with(Wait::Until(None))
    }

    /// Takes the oldest item, waiting at most `timeout`; [`GetError::Empty`] after it.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q: procvisor::Queue<u8> = procvisor::Queue::new(0)?;
    /// assert!(matches!(q.get_timeout(Duration::from_millis(10)), Err(procvisor::queues::GetError::Empty)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetError> {
        self.get_with(Wait::timeout(Some(timeout)))
    }

    /// Takes the oldest item only if there is one now (Python's `get_nowait`).
    ///
    /// ```
    /// let q: procvisor::Queue<u8> = procvisor::Queue::new(0)?;
    /// assert!(q.get_nowait().is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_nowait(&self) -> Result<T, GetError> {
        self.get_with(Wait::No)
    }

    /// The number of items in the queue (exact at the instant it is read).
    ///
    /// ```
    /// let q = procvisor::Queue::new(0)?;
    /// q.put(1)?;
    /// q.put(2)?;
    /// assert_eq!(q.qsize(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn qsize(&self) -> usize {
        self.shared.count() as usize
    }

    /// Whether the queue is empty; false as soon as a `put` has returned.
    ///
    /// ```
    /// let q: procvisor::Queue<u8> = procvisor::Queue::new(0)?;
    /// assert!(q.empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn empty(&self) -> bool {
        self.qsize() == 0
    }

    /// Whether the queue holds `maxsize` items (never, without a maxsize).
    ///
    /// ```
    /// let q = procvisor::Queue::new(1)?;
    /// q.put(0)?;
    /// assert!(q.full());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn full(&self) -> bool {
        let max = self.shared.header().maxsize.load(Ordering::Relaxed);
        max > 0 && u64::from(self.shared.count()) >= max
    }

    /// Stops this handle from putting or getting (Python's `close`); other handles, here or
    /// in other processes, are not affected. Items already put stay in the queue.
    ///
    /// ```
    /// let mut q = procvisor::Queue::new(0)?;
    /// q.close();
    /// assert!(q.put(1).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(&mut self) {
        self.closed = true;
    }

    /// Takes the queue's lock and never lets go: only for the test that kills a process
    /// holding it. Runs `locked` once the lock is held.
    #[doc(hidden)]
    pub fn __hold_lock_forever(&self, locked: impl FnOnce()) -> ! {
        let h = self.shared.header();
        let _held = (h.producers.mutex.lock(), h.consumers.mutex.lock());
        locked();
        loop {
            std::thread::park();
        }
    }

    /// Python's `join_thread`: returns at once, since `put` has already written every item
    /// into shared memory (there is no feeder thread to wait for).
    ///
    /// ```
    /// let q = procvisor::Queue::new(0)?;
    /// q.put(1)?;
    /// q.join_thread(); // never blocks, even with the queue undrained
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn join_thread(&self) {}

    /// Python's `cancel_join_thread`: nothing to cancel (see [`join_thread`](Queue::join_thread)).
    ///
    /// ```
    /// procvisor::Queue::<u8>::new(0)?.cancel_join_thread();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn cancel_join_thread(&self) {}
}

/// How a queue travels inside a process's arguments.
#[derive(Serialize, Deserialize)]
struct Wire {
    queue: u32,
}

impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let queue = handles::push(self.shared.region.fd()).map_err(serde::ser::Error::custom)?;
        Wire { queue }.serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(deserializer)?;
        let fd = handles::take(wire.queue).map_err(serde::de::Error::custom)?;
        let region = Region::open(fd).map_err(serde::de::Error::custom)?;
        let shared = Shared::open(region).map_err(serde::de::Error::custom)?;
        Ok(Queue {
            shared: Arc::new(shared),
            closed: false,
            _items: PhantomData,
        })
    }
}

/// A queue with only `get`, `put`, `empty` and `close`: Python's `SimpleQueue`.
///
/// ```
/// let q = procvisor::SimpleQueue::new()?;
/// q.put([1, 2])?;
/// assert_eq!(q.get()?, [1, 2]);
/// assert!(q.empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct SimpleQueue<T>(Queue<T>);

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue(self.0.clone())
    }
}

impl<T: Serialize + DeserializeOwned> SimpleQueue<T> {
    /// An unbounded queue with the default ring.
    pub fn new() -> Result<Self, QueueError> {
        Queue::new(0).map(SimpleQueue)
    }

    /// Puts an item, waiting for room in the ring if it is full.
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.0.put(item)
    }

    /// Takes the oldest item, waiting as long as it takes.
    pub fn get(&self) -> Result<T, GetError> {
        self.0.get()
    }

    /// Whether the queue is empty.
    pub fn empty(&self) -> bool {
        self.0.empty()
    }

    /// Stops this handle from putting or getting.
    pub fn close(&mut self) {
        self.0.close()
    }
}

/// A queue whose consumers mark each item done, and whose producers can wait until every
/// item is: Python's `JoinableQueue`. It dereferences to [`Queue`] for everything else.
///
/// ```
/// let q = procvisor::JoinableQueue::new(0)?;
/// q.put("task".to_owned())?;
/// let _task: String = q.get()?;
/// q.task_done()?;
/// q.join()?; // every item is done
/// assert!(q.task_done().is_err()); // more task_done than items
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct JoinableQueue<T>(Queue<T>);

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue(self.0.clone())
    }
}

impl<T> std::ops::Deref for JoinableQueue<T> {
    type Target = Queue<T>;

    fn deref(&self) -> &Queue<T> {
        &self.0
    }
}

impl<T> std::ops::DerefMut for JoinableQueue<T> {
    fn deref_mut(&mut self) -> &mut Queue<T> {
        &mut self.0
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// A joinable queue of at most `maxsize` items (0: no limit).
    pub fn new(maxsize: usize) -> Result<Self, QueueError> {
        Queue::new(maxsize).map(JoinableQueue)
    }

    /// Marks one item taken from the queue as done. An error when called more times than
    /// items were put.
    pub fn task_done(&self) -> Result<(), TaskDoneError> {
        self.0.shared.task_done().map_err(|()| TaskDoneError)
    }

    /// Waits until every item put has been marked done.
    pub fn join(&self) -> Result<(), GetError> {
        self.0.shared.join();
        Ok(())
    }
}
