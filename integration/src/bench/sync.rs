//! The synchronisation benches: procvisor's `Lock`, `Value` and `Event`, CPython's
//! `multiprocessing.Lock`, `Value('q')` and `Event` (`sync_bench.py`), and the OS floor:
//! a raw process-shared `pthread_mutex_t` and a raw futex, in an anonymous `MAP_SHARED`
//! page.
//!
//! - `lock_uncontended`: `acquire` + release (the guard's drop) of a `Lock` in this
//!   process; ns per pair. Floor `pthread_mutex_pair`: `pthread_mutex_lock` +
//!   `pthread_mutex_unlock` of a `PTHREAD_PROCESS_SHARED` (not robust) mutex in the page.
//! - `value_contended_2x200k`: two `forkserver` children each do 200,000
//!   `*v.get_lock().unwrap() += 1` on one `Value<i64>`; ns per increment (the batch's wall
//!   time over the 400,000 increments), from the parent's go to both children's report.
//!   Floor `pthread_mutex_2x200k`: the same with two raw forked children, each locking the
//!   raw mutex, incrementing an `i64` next to it (C's `struct { pthread_mutex_t m; long
//!   n; }`) and unlocking; they are told to go and report through futex words of the page.
//! - `event_pingpong`: the parent sets `e1` and waits for `e2` (then clears it), a child
//!   waits for `e1`, clears it and sets `e2`; µs per round trip. Floor `futex_pingpong`:
//!   the same hand-off on one shared word with raw `FUTEX_WAIT` / `FUTEX_WAKE` (the parent
//!   stores 1 and wakes, then sleeps while it is 1; the child sleeps while it is 0, stores
//!   0 and wakes): the same two waits and two wakes per round trip, nothing else.
//!
//! The children (procvisor's and the floor's) serve every repetition of a bench; each
//! repetition times one floor batch and then one procvisor batch, so that a ratio compares
//! figures taken under the same load. One unmeasured warm-up batch (a tenth) first; the
//! counters are checked after every batch.
//!
//! # Placement
//!
//! As for the other benches, the processes are pinned, procvisor's, CPython's and the
//! floor's alike (see [`Placement::of`]): `lock_uncontended` runs on the first CPU; the two
//! incrementing children of `value_contended_2x200k` get a CPU each (the first two; the
//! parent, asleep while they work, shares the first), which is what makes them contend;
//! the two ends of `event_pingpong` share one CPU, as `connection_rtt_small` does: a
//! hand-off to a process sleeping on another CPU pays that CPU's wake-up rather than the
//! primitive's cost (on a shared 2-CPU VM, three `--quick` runs with the ends on two CPUs
//! gave 60–65 µs per round trip for procvisor and the floor alike, CPython 200–215 µs,
//! against about 1.9 µs and 12 µs on one CPU). With one usable CPU, everything runs on it.

use std::cell::UnsafeCell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::libc;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use procvisor::connection::{Connection, pipe};
use procvisor::{Event, Lock, Process, StartMethod, Value};

use crate::cpus::{PinSelf, allowed_cpus, pin, pin_child};
use crate::measure::{self, Side};
use crate::report::Figure;
use crate::{Config, figure, warm_up};

/// The benches, each with the name of its OS floor.
pub(crate) const BENCHES: [(&str, &str); 3] = [
    ("lock_uncontended", "pthread_mutex_pair"),
    ("value_contended_2x200k", "pthread_mutex_2x200k"),
    ("event_pingpong", "futex_pingpong"),
];

/// The start method of the children, for procvisor and CPython alike.
pub(crate) const METHOD: StartMethod = StartMethod::ForkServer;

/// Increments per child and batch of `value_contended_2x200k` (the name says so).
const INCREMENTS: usize = 200_000;

/// Incrementing children of `value_contended_2x200k`.
const INCREMENTERS: usize = 2;

/// How long the parent waits for a floor batch before it gives up (a child died).
const BATCH_DEADLINE: Duration = Duration::from_secs(60);

/// How long a child may take to end once told to.
const END_DEADLINE: Duration = Duration::from_secs(10);

/// The word value that ends the `futex_pingpong` child.
const PING_STOP: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Lock,
    Value,
    Event,
}

impl Kind {
    fn of(bench: &str) -> Result<Kind, String> {
        match bench {
            "lock_uncontended" => Ok(Kind::Lock),
            "value_contended_2x200k" => Ok(Kind::Value),
            "event_pingpong" => Ok(Kind::Event),
            _ => Err(format!("unknown sync bench {bench:?}")),
        }
    }

    fn bench(self) -> &'static str {
        BENCHES[self as usize].0
    }

    fn floor(self) -> &'static str {
        BENCHES[self as usize].1
    }

    fn unit(self) -> &'static str {
        match self {
            Kind::Lock | Kind::Value => "ns",
            Kind::Event => "us",
        }
    }

    /// Operations per procvisor and floor batch: lock pairs (15–20 ns each), increments
    /// per child (30–50 ns each, wall time), round trips (about 2 µs each on one CPU);
    /// 15–100 ms a batch.
    fn batch(self, cfg: &Config) -> usize {
        match (self, cfg.quick) {
            (Kind::Lock, false) => 5_000_000,
            (Kind::Lock, true) => 2_000_000,
            (Kind::Value, _) => INCREMENTS,
            (Kind::Event, false) => 50_000,
            (Kind::Event, true) => 20_000,
        }
    }

    /// Operations per CPython batch: pinned, its lock pair takes about 40 ns, a contended
    /// increment about 0.9 µs, a round trip about 12 µs; 0.04–0.6 s a batch.
    fn cpython_batch(self, cfg: &Config) -> usize {
        match (self, cfg.quick) {
            (Kind::Lock, false) => 2_000_000,
            (Kind::Lock, true) => 1_000_000,
            (Kind::Value, false) => 100_000,
            (Kind::Value, true) => 50_000,
            (Kind::Event, false) => 50_000,
            (Kind::Event, true) => 20_000,
        }
    }
}

/// The CPUs of a bench's processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Placement {
    /// The CPU of this process's main thread.
    pub(crate) parent: usize,
    /// The CPUs of the children (none for `lock_uncontended`).
    pub(crate) children: Vec<usize>,
}

impl Placement {
    /// The placement of `bench`'s processes among the CPUs this thread may run on; `None`
    /// when the affinity cannot be read (nothing is pinned then). See the module's
    /// documentation.
    pub(crate) fn of(bench: &str) -> Option<Placement> {
        let kind = Kind::of(bench).ok()?;
        let cpus = allowed_cpus().ok()?;
        let first = *cpus.first()?;
        let second = cpus.get(1).copied().unwrap_or(first);
        Some(Placement {
            parent: first,
            children: match kind {
                Kind::Lock => Vec::new(),
                Kind::Value => vec![first, second],
                Kind::Event => vec![first],
            },
        })
    }

    fn describe(&self) -> String {
        let cpus: Vec<String> = self.children.iter().map(usize::to_string).collect();
        match cpus.len() {
            0 => format!("on CPU {}", self.parent),
            1 if self.children[0] == self.parent => {
                format!("both processes on CPU {}", self.parent)
            }
            _ => format!(
                "parent on CPU {}, children on CPUs {}",
                self.parent,
                cpus.join(", ")
            ),
        }
    }
}

/// The arguments that give `sync_bench.py` the batch and the placement of `bench`.
pub(crate) fn cpython_args(cfg: &Config, bench: &str) -> Vec<String> {
    let Ok(kind) = Kind::of(bench) else {
        return Vec::new();
    };
    let mut args = vec!["--items".to_owned(), kind.cpython_batch(cfg).to_string()];
    if let Some(p) = Placement::of(bench) {
        let cpus: Vec<String> = std::iter::once(p.parent)
            .chain(p.children)
            .map(|c| c.to_string())
            .collect();
        args.extend(["--cpus".to_owned(), cpus.join(",")]);
    }
    args
}

/// What the table's notes say about `bench`.
pub(crate) fn note(cfg: &Config, bench: &str) -> String {
    let Ok(kind) = Kind::of(bench) else {
        return String::new();
    };
    let place = Placement::of(bench)
        .map(|p| p.describe())
        .unwrap_or_else(|| "unpinned".to_owned());
    let (what, target) = match kind {
        Kind::Lock => (
            format!(
                "Lock acquire + guard drop in one process, {} pairs per repetition \
                 (CPython Lock acquire() + release(), {}); floor pthread_mutex_pair: a raw \
                 PTHREAD_PROCESS_SHARED mutex in a MAP_SHARED page",
                kind.batch(cfg),
                kind.cpython_batch(cfg)
            ),
            "at most 2× the floor",
        ),
        Kind::Value => (
            format!(
                "{INCREMENTERS} children × {} `*v.get_lock().unwrap() += 1` on one Value<i64>, wall \
                 time from the go until both reported over all increments (CPython: \
                 `with v.get_lock(): v.value += 1` on Value('q'), {INCREMENTERS} × {}); \
                 floor pthread_mutex_2x200k: {INCREMENTERS} raw forked children on a raw \
                 process-shared mutex and an i64 next to it",
                kind.batch(cfg),
                kind.cpython_batch(cfg)
            ),
            "at most 2× the floor, at least 10× faster than CPython",
        ),
        Kind::Event => (
            format!(
                "parent sets e1, waits for e2 and clears it; the child waits for e1, clears \
                 it and sets e2; {} round trips per repetition, CPython alike; floor \
                 futex_pingpong: raw FUTEX_WAIT/FUTEX_WAKE on one shared word",
                kind.batch(cfg)
            ),
            "at most 1.3× the floor",
        ),
    };
    format!(
        "{bench} ({method}): {what}; {place}, CPython and floor alike; target: {target}",
        method = METHOD.as_str(),
    )
}

/// `bench` for procvisor, with its floor measured in the same repetitions.
pub(crate) fn bench(cfg: &Config, bench: &str) -> Result<Vec<Figure>, String> {
    let kind = Kind::of(bench)?;
    warm_up(METHOD)?;
    let n = kind.batch(cfg);
    let place = Placement::of(bench);
    let _pinned = place.as_ref().map(|p| PinSelf::new(p.parent)).transpose()?;
    // The floor's children are forked first, so that they hold no copy of procvisor's
    // sockets.
    let mut floor = Rig::floor(kind, place.as_ref())?;
    let mut pv = match Rig::procvisor(kind, place.as_ref()) {
        Ok(pv) => pv,
        Err(e) => {
            let _ = floor.end();
            return Err(e);
        }
    };
    let (values, floor_values) = measure::alternate_sides(cfg.reps(), n, &mut floor, &mut pv)?;
    Ok(vec![
        figure(
            kind.bench(),
            "procvisor",
            METHOD.as_str(),
            kind.unit(),
            values,
        ),
        figure(kind.floor(), "os", "-", kind.unit(), floor_values),
    ])
}

/// The floor of `bench` on its own (the filter names the floor but not the bench).
pub(crate) fn floor_only(cfg: &Config, bench: &str) -> Result<Figure, String> {
    let kind = Kind::of(bench)?;
    let n = kind.batch(cfg);
    let place = Placement::of(bench);
    let _pinned = place.as_ref().map(|p| PinSelf::new(p.parent)).transpose()?;
    let mut floor = Rig::floor(kind, place.as_ref())?;
    let values = measure::repeat_side(cfg.reps(), n, &mut floor)?;
    Ok(figure(kind.floor(), "os", "-", kind.unit(), values))
}

/// One side (procvisor or the floor) of a bench, with its children.
enum Rig {
    PvLock(Lock),
    PvValue(PvValue),
    PvEvent(Box<PvEvent>),
    FloorLock(FloorLock),
    FloorValue(FloorValue),
    FloorEvent(FloorEvent),
}

impl Rig {
    fn procvisor(kind: Kind, place: Option<&Placement>) -> Result<Rig, String> {
        let cpu = |k: usize| place.map(|p| p.children[k]);
        Ok(match kind {
            Kind::Lock => Rig::PvLock(Lock::new().map_err(|e| format!("Lock::new: {e}"))?),
            Kind::Value => Rig::PvValue(PvValue::start(&cpu)?),
            Kind::Event => Rig::PvEvent(Box::new(PvEvent::start(cpu(0))?)),
        })
    }

    fn floor(kind: Kind, place: Option<&Placement>) -> Result<Rig, String> {
        let cpu = |k: usize| place.map(|p| p.children[k]);
        Ok(match kind {
            Kind::Lock => Rig::FloorLock(FloorLock::new()?),
            Kind::Value => Rig::FloorValue(FloorValue::start(&cpu)?),
            Kind::Event => Rig::FloorEvent(FloorEvent::start(cpu(0))?),
        })
    }
}

impl Side for Rig {
    /// One timed batch of `n` operations, in the bench's unit.
    fn batch(&mut self, n: usize) -> Result<f64, String> {
        match self {
            Rig::PvLock(lock) => {
                let t0 = Instant::now();
                for _ in 0..n {
                    match lock.acquire() {
                        Ok(guard) => drop(guard),
                        Err(e) => return Err(format!("acquire: {e}")),
                    }
                }
                Ok(ns_per(t0.elapsed(), n))
            }
            Rig::PvValue(r) => r.batch(n),
            Rig::PvEvent(r) => r.batch(n),
            Rig::FloorLock(r) => r.batch(n),
            Rig::FloorValue(r) => r.batch(n),
            Rig::FloorEvent(r) => r.batch(n),
        }
    }

    /// Ends the children and reaps them.
    fn end(&mut self) -> Result<(), String> {
        match self {
            Rig::PvLock(_) | Rig::FloorLock(_) => Ok(()),
            Rig::PvValue(r) => r.end(),
            Rig::PvEvent(r) => r.end(),
            Rig::FloorValue(r) => r.end(),
            Rig::FloorEvent(r) => r.end(),
        }
    }
}

/// `elapsed` over `n` operations, in ns.
fn ns_per(elapsed: Duration, n: usize) -> f64 {
    elapsed.as_secs_f64() * 1e9 / n as f64
}

// ---------------------------------------------------------------------------------------
// procvisor
// ---------------------------------------------------------------------------------------

/// An incrementing child's connection, value and CPU.
type IncArgs = (Connection, Value<i64>, Option<usize>);

/// `value_contended_2x200k`: for each count `n` received, `n` increments under the value's
/// lock, then sends `n` back; until the end of the stream.
fn incrementer((mut conn, value, cpu): IncArgs) {
    pin_child(cpu);
    while let Ok(n) = conn.recv::<u64>() {
        for _ in 0..n {
            *value.get_lock().expect("incrementer: get_lock") += 1;
        }
        conn.send(&n).expect("incrementer: send");
    }
}

/// The ponging child's connection, events and CPU.
type PongArgs = (Connection, Event, Event, Option<usize>);

/// `event_pingpong`: for each count `n` received, `n` times: waits for `e1`, clears it,
/// sets `e2`; until the end of the stream.
fn ponger((mut conn, e1, e2, cpu): PongArgs) {
    pin_child(cpu);
    while let Ok(n) = conn.recv::<u64>() {
        for _ in 0..n {
            e1.wait(None);
            e1.clear();
            e2.set();
        }
    }
}

/// Closes `conn` (the child ends on the end of the stream) and joins `process`.
fn finish(process: &Process<()>, conn: &mut Option<Connection>) -> Result<(), String> {
    *conn = None;
    measure::join_told(process, END_DEADLINE, "the connection's close")
}

/// The incrementing children of `value_contended_2x200k` and their value.
struct PvValue {
    value: Value<i64>,
    children: Vec<(Process<()>, Option<Connection>)>,
    /// What the value must hold after the batches so far.
    expected: i64,
}

impl PvValue {
    fn start(cpu: &dyn Fn(usize) -> Option<usize>) -> Result<PvValue, String> {
        let value = Value::new(0i64).map_err(|e| format!("Value::new: {e}"))?;
        let mut rig = PvValue {
            value,
            children: Vec::with_capacity(INCREMENTERS),
            expected: 0,
        };
        for k in 0..INCREMENTERS {
            let started = (|| {
                let (conn, child_end) = pipe(true).map_err(|e| format!("pipe: {e}"))?;
                let mut p = Process::new(incrementer, (child_end, rig.value.clone(), cpu(k)))
                    .with_start_method(METHOD);
                p.start().map_err(|e| format!("start: {e}"))?;
                Ok::<_, String>((p, Some(conn)))
            })();
            match started {
                Ok(child) => rig.children.push(child),
                Err(e) => {
                    let _ = rig.end();
                    return Err(e);
                }
            }
        }
        Ok(rig)
    }

    /// `n` increments in each child, in ns per increment.
    fn batch(&mut self, n: usize) -> Result<f64, String> {
        let err = |what: &str, e: procvisor::ConnectionError| format!("{what}: {e}");
        let t0 = Instant::now();
        for (_, conn) in &mut self.children {
            let conn = conn.as_mut().ok_or("connection closed")?;
            conn.send(&(n as u64)).map_err(|e| err("send", e))?;
        }
        for (_, conn) in &mut self.children {
            let conn = conn.as_mut().ok_or("connection closed")?;
            let done: u64 = conn.recv().map_err(|e| err("recv", e))?;
            if done != n as u64 {
                return Err(format!("a child did {done} increments of {n}"));
            }
        }
        let elapsed = t0.elapsed();
        self.expected += (n * self.children.len()) as i64;
        let got = self.value.get().map_err(|e| format!("Value::get: {e}"))?;
        if got != self.expected {
            return Err(format!("the value is {got}, not {}", self.expected));
        }
        Ok(ns_per(elapsed, n * self.children.len()))
    }

    fn end(&mut self) -> Result<(), String> {
        let mut result = Ok(());
        for (p, conn) in &mut self.children {
            let r = finish(p, conn);
            if result.is_ok() {
                result = r;
            }
        }
        self.children.clear();
        result
    }
}

/// The ponging child of `event_pingpong` and the two events.
struct PvEvent {
    e1: Event,
    e2: Event,
    process: Process<()>,
    conn: Option<Connection>,
}

impl PvEvent {
    fn start(cpu: Option<usize>) -> Result<PvEvent, String> {
        let e1 = Event::new().map_err(|e| format!("Event::new: {e}"))?;
        let e2 = Event::new().map_err(|e| format!("Event::new: {e}"))?;
        let (conn, child_end) = pipe(true).map_err(|e| format!("pipe: {e}"))?;
        let mut process = Process::new(ponger, (child_end, e1.clone(), e2.clone(), cpu))
            .with_start_method(METHOD);
        process.start().map_err(|e| format!("start: {e}"))?;
        Ok(PvEvent {
            e1,
            e2,
            process,
            conn: Some(conn),
        })
    }

    /// `n` round trips, in µs per round trip.
    fn batch(&mut self, n: usize) -> Result<f64, String> {
        let conn = self.conn.as_mut().ok_or("connection closed")?;
        conn.send(&(n as u64)).map_err(|e| format!("send: {e}"))?;
        let t0 = Instant::now();
        for _ in 0..n {
            self.e1.set();
            self.e2.wait(None);
            self.e2.clear();
        }
        Ok(t0.elapsed().as_secs_f64() * 1e6 / n as f64)
    }

    fn end(&mut self) -> Result<(), String> {
        finish(&self.process, &mut self.conn)
    }
}

// ---------------------------------------------------------------------------------------
// OS floor
// ---------------------------------------------------------------------------------------

/// One `T` in an anonymous `MAP_SHARED` mapping: forked children share it.
struct SharedPage<T> {
    ptr: NonNull<T>,
    len: usize,
}

impl<T> SharedPage<T> {
    /// A zero-filled mapping.
    ///
    /// # Safety
    ///
    /// All-zero bytes must be a valid `T`, and `T` must be usable from several processes
    /// at once through a shared reference (atomics, or cells the caller guards).
    unsafe fn zeroed() -> Result<SharedPage<T>, String> {
        let len = size_of::<T>().next_multiple_of(4096);
        // SAFETY: a fresh anonymous mapping without an address hint: it aliases nothing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        let ptr = NonNull::new(p.cast::<T>()).ok_or("mmap returned null")?;
        Ok(SharedPage { ptr, len })
    }

    fn get(&self) -> &T {
        // SAFETY: the mapping is page-aligned (enough for any `T` here), zero-filled (a
        // valid `T`, promised to `zeroed`) and lives as long as `self`.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> Drop for SharedPage<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping of `len` bytes at `ptr` is ours; no reference to it outlives
        // `self` (`get` borrows `self`).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A raw process-shared mutex and the counter it guards, as C lays them out.
#[repr(C, align(64))]
struct MutexAndCounter {
    mutex: UnsafeCell<libc::pthread_mutex_t>,
    counter: UnsafeCell<i64>,
}

impl MutexAndCounter {
    /// Makes the zero-filled mutex a `PTHREAD_PROCESS_SHARED` one (default type, not
    /// robust). Call once, before any other process sees it.
    fn init(&self) -> Result<(), String> {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: the attribute object is initialised before use and destroyed after; the
        // mutex is initialised once, before it is shared (the caller's promise).
        let codes = unsafe {
            let r = libc::pthread_mutexattr_init(attr.as_mut_ptr());
            if r != 0 {
                return Err(format!("pthread_mutexattr_init: {r}"));
            }
            let attr = attr.as_mut_ptr();
            let r1 = libc::pthread_mutexattr_setpshared(attr, libc::PTHREAD_PROCESS_SHARED);
            let r2 = libc::pthread_mutex_init(self.mutex.get(), attr);
            libc::pthread_mutexattr_destroy(attr);
            [r1, r2]
        };
        match codes.iter().find(|&&c| c != 0) {
            Some(c) => Err(format!(
                "pthread_mutex_init: {}",
                std::io::Error::from_raw_os_error(*c)
            )),
            None => Ok(()),
        }
    }

    /// Locks, adds `by` to the counter, unlocks; the first failing return code, if any.
    /// Async-signal-safe enough for a forked child: only the two futex-based calls on a
    /// process-shared mutex, which touch no per-process state.
    fn add(&self, by: i64) -> libc::c_int {
        // SAFETY: `init` made the mutex a valid process-shared one.
        let r = unsafe { libc::pthread_mutex_lock(self.mutex.get()) };
        if r != 0 {
            return r;
        }
        // SAFETY: the counter is only touched with the mutex held, which we hold.
        unsafe { *self.counter.get() += by };
        // SAFETY: we hold the mutex.
        unsafe { libc::pthread_mutex_unlock(self.mutex.get()) }
    }
}

/// `pthread_mutex_pair`: a raw process-shared mutex in this process.
struct FloorLock {
    page: SharedPage<MutexAndCounter>,
}

impl FloorLock {
    fn new() -> Result<FloorLock, String> {
        // SAFETY: a zero-filled `pthread_mutex_t` and `i64` are valid bytes (the mutex is
        // initialised right after); both are guarded by the mutex.
        let page = unsafe { SharedPage::<MutexAndCounter>::zeroed() }?;
        page.get().init()?;
        Ok(FloorLock { page })
    }

    /// `n` lock + unlock pairs, in ns per pair.
    fn batch(&mut self, n: usize) -> Result<f64, String> {
        let m = self.page.get().mutex.get();
        let t0 = Instant::now();
        for _ in 0..n {
            // SAFETY: `init` made the mutex valid; this thread locks then unlocks it.
            let r = unsafe { libc::pthread_mutex_lock(m) | libc::pthread_mutex_unlock(m) };
            if r != 0 {
                return Err(format!("pthread_mutex_lock/unlock: {r}"));
            }
        }
        Ok(ns_per(t0.elapsed(), n))
    }
}

/// The page of `pthread_mutex_2x200k`: the mutex and counter on a cache line, the control
/// words on another.
#[repr(C)]
struct ContendedPage {
    data: MutexAndCounter,
    ctl: Control,
}

/// How the parent tells the floor children to go and they report.
#[repr(C, align(64))]
struct Control {
    /// Bumped by the parent for every batch (a futex word the children sleep on).
    generation: AtomicU32,
    /// Children done with a batch, in all (a futex word the parent sleeps on).
    done: AtomicU32,
    /// Increments per child of the current batch; 0 ends the children.
    n: AtomicU64,
}

/// `FUTEX_WAIT` while `*word == expected` (shared, not private: the word is in a
/// `MAP_SHARED` page seen by several processes), for at most `timeout`. Returns on a wake,
/// a change, the timeout or a signal alike. Async-signal-safe.
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<&libc::timespec>) {
    let ts = timeout.map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call; the timeout is
    // null or a live timespec.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts,
        );
    }
}

/// `FUTEX_WAKE` of up to `n` sleepers on `word`, in any process. Async-signal-safe.
fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: `word` is a valid, aligned u32; FUTEX_WAKE only uses its address.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n);
    }
}

/// Reaps `pid`, which must exit 0 within [`END_DEADLINE`] (it is killed otherwise).
fn reap(pid: Pid) -> Result<(), String> {
    let deadline = Instant::now() + END_DEADLINE;
    loop {
        match waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(WaitStatus::StillAlive) => {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = waitpid(pid, None);
                return Err(format!("floor child did not end within {END_DEADLINE:?}"));
            }
            Ok(WaitStatus::Exited(_, 0)) => return Ok(()),
            Ok(other) => return Err(format!("floor child ended with {other:?}")),
            Err(e) => return Err(format!("waitpid: {e}")),
        }
    }
}

/// Kills and reaps what is left of `pids` (after a failure).
fn kill_all(pids: &mut Vec<Pid>) {
    for pid in pids.drain(..) {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(pid, None);
    }
}

/// Forks a floor child running `body`, pinned to `cpu` if any.
///
/// # Safety
///
/// `body` must call only async-signal-safe functions (this process has other threads)
/// and touch no lock or allocator state of this process (another thread may hold it);
/// the child `_exit`s when `body` returns.
unsafe fn fork_floor_child(body: impl FnOnce(), cpu: Option<usize>) -> Result<Pid, String> {
    // SAFETY: the child runs only `body`, async-signal-safe by the caller's promise.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            body();
            // SAFETY: ends the child without running any cleanup (async-signal-safe).
            unsafe { libc::_exit(0) }
        }
        Ok(ForkResult::Parent { child }) => {
            if let Some(cpu) = cpu
                && let Err(e) = pin(child.as_raw(), cpu)
            {
                kill_all(&mut vec![child]);
                return Err(e);
            }
            Ok(child)
        }
        Err(e) => Err(format!("fork: {e}")),
    }
}

/// `pthread_mutex_2x200k`: two raw forked children incrementing under the raw mutex.
struct FloorValue {
    page: SharedPage<ContendedPage>,
    pids: Vec<Pid>,
    /// Batches started so far (the generation).
    generation: u32,
    /// What the counter must hold after the batches so far.
    expected: i64,
}

/// The body of a `pthread_mutex_2x200k` child: for each new generation, `n` increments
/// under the mutex, then a report; `n == 0` ends it. Only atomics, `futex`,
/// `pthread_mutex_lock` / `unlock` on the process-shared mutex, and `_exit`.
fn contended_child(page: &ContendedPage) -> ! {
    let ctl = &page.ctl;
    let mut seen = 0u32;
    loop {
        let mut g = ctl.generation.load(Ordering::Acquire);
        while g == seen {
            futex_wait(&ctl.generation, seen, None);
            g = ctl.generation.load(Ordering::Acquire);
        }
        seen = g;
        let n = ctl.n.load(Ordering::Acquire);
        if n == 0 {
            // SAFETY: ends the process without any cleanup (async-signal-safe).
            unsafe { libc::_exit(0) }
        }
        for _ in 0..n {
            if page.data.add(1) != 0 {
                // SAFETY: as above.
                unsafe { libc::_exit(6) }
            }
        }
        ctl.done.fetch_add(1, Ordering::Release);
        futex_wake(&ctl.done, 1);
    }
}

impl FloorValue {
    fn start(cpu: &dyn Fn(usize) -> Option<usize>) -> Result<FloorValue, String> {
        // SAFETY: zero bytes are a valid `pthread_mutex_t` (initialised right after, before
        // any fork), `i64` and atomics; the counter is only touched under the mutex.
        let page = unsafe { SharedPage::<ContendedPage>::zeroed() }?;
        page.get().data.init()?;
        let mut rig = FloorValue {
            page,
            pids: Vec::with_capacity(INCREMENTERS),
            generation: 0,
            expected: 0,
        };
        for k in 0..INCREMENTERS {
            let page: *const ContendedPage = rig.page.get();
            let body = move || {
                // SAFETY: run only in the child, which inherits the mapping and never
                // unmaps it (it ends in `_exit`): `page` stays valid for its whole life.
                contended_child(unsafe { &*page })
            };
            // SAFETY: `contended_child` uses only atomics, `futex`, the process-shared
            // mutex's lock and unlock, and `_exit`; it allocates nothing and never returns.
            match unsafe { fork_floor_child(body, cpu(k)) } {
                Ok(pid) => rig.pids.push(pid),
                Err(e) => {
                    kill_all(&mut rig.pids);
                    return Err(e);
                }
            }
        }
        Ok(rig)
    }

    /// `n` increments in each child, in ns per increment.
    fn batch(&mut self, n: usize) -> Result<f64, String> {
        let ctl = &self.page.get().ctl;
        let children = self.pids.len() as u32;
        let target = (self.generation + 1) * children;
        ctl.n.store(n as u64, Ordering::Relaxed);
        let deadline = Instant::now() + BATCH_DEADLINE;
        let tick = libc::timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        let t0 = Instant::now();
        self.generation += 1;
        ctl.generation.store(self.generation, Ordering::Release);
        futex_wake(&ctl.generation, i32::MAX);
        loop {
            let done = ctl.done.load(Ordering::Acquire);
            if done >= target {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the floor children did not finish within {BATCH_DEADLINE:?}"
                ));
            }
            futex_wait(&ctl.done, done, Some(&tick));
        }
        let elapsed = t0.elapsed();
        self.expected += (n as i64) * i64::from(children);
        let got = {
            let d = &self.page.get().data;
            // SAFETY: `init` made the mutex valid; the counter is read with it held.
            unsafe {
                libc::pthread_mutex_lock(d.mutex.get());
                let v = *d.counter.get();
                libc::pthread_mutex_unlock(d.mutex.get());
                v
            }
        };
        if got != self.expected {
            return Err(format!("the floor counter is {got}, not {}", self.expected));
        }
        Ok(ns_per(elapsed, n * children as usize))
    }

    /// Tells the children to end (`n = 0`) and reaps them.
    fn end(&mut self) -> Result<(), String> {
        let ctl = &self.page.get().ctl;
        ctl.n.store(0, Ordering::Relaxed);
        self.generation += 1;
        ctl.generation.store(self.generation, Ordering::Release);
        futex_wake(&ctl.generation, i32::MAX);
        let mut result = Ok(());
        for pid in std::mem::take(&mut self.pids) {
            let r = reap(pid);
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

impl Drop for FloorValue {
    fn drop(&mut self) {
        kill_all(&mut self.pids);
    }
}

/// `futex_pingpong`: a raw forked child handing one futex word back and forth.
struct FloorEvent {
    page: SharedPage<AtomicU32>,
    pid: Option<Pid>,
}

/// The body of the `futex_pingpong` child: sleeps while the word is 0; on 1 stores 0 and
/// wakes the parent; on [`PING_STOP`] `_exit`s. Only atomics, `futex` and `_exit`.
fn pong_child(word: &AtomicU32) -> ! {
    loop {
        let mut v = word.load(Ordering::Acquire);
        while v == 0 {
            futex_wait(word, 0, None);
            v = word.load(Ordering::Acquire);
        }
        if v == PING_STOP {
            // SAFETY: ends the process without any cleanup (async-signal-safe).
            unsafe { libc::_exit(0) }
        }
        word.store(0, Ordering::Release);
        futex_wake(word, 1);
    }
}

impl FloorEvent {
    fn start(cpu: Option<usize>) -> Result<FloorEvent, String> {
        // SAFETY: zero is a valid `AtomicU32`, shared through atomics only.
        let page = unsafe { SharedPage::<AtomicU32>::zeroed() }?;
        let word: *const AtomicU32 = page.get();
        let body = move || {
            // SAFETY: run only in the child, which inherits the mapping and never unmaps
            // it (it ends in `_exit`): `word` stays valid for its whole life.
            pong_child(unsafe { &*word })
        };
        // SAFETY: `pong_child` uses only atomics, `futex` and `_exit`; it allocates nothing
        // and never returns.
        let pid = unsafe { fork_floor_child(body, cpu) }?;
        Ok(FloorEvent {
            page,
            pid: Some(pid),
        })
    }

    /// `n` round trips, in µs per round trip.
    fn batch(&mut self, n: usize) -> Result<f64, String> {
        let word = self.page.get();
        let t0 = Instant::now();
        for _ in 0..n {
            word.store(1, Ordering::Release);
            futex_wake(word, 1);
            while word.load(Ordering::Acquire) == 1 {
                futex_wait(word, 1, None);
            }
        }
        Ok(t0.elapsed().as_secs_f64() * 1e6 / n as f64)
    }

    fn end(&mut self) -> Result<(), String> {
        let word = self.page.get();
        word.store(PING_STOP, Ordering::Release);
        futex_wake(word, 1);
        match self.pid.take() {
            Some(pid) => reap(pid),
            None => Ok(()),
        }
    }
}

impl Drop for FloorEvent {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            kill_all(&mut vec![pid]);
        }
    }
}
