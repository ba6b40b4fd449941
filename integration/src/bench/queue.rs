//! The queue benches: procvisor's `Queue` and `JoinableQueue` between `forkserver`
//! children, and CPython's `multiprocessing.Queue` / `JoinableQueue` (`queue_bench.py`),
//! in items per second. There is no OS floor for these rows.
//!
//! Every item is `(i, TEXT)`: a `u64` and a 32-character string.
//!
//! - `queue_1p1c_small`: one producer process puts `n` items on a `Queue`, one consumer
//!   process gets them; from the parent's go to the producer until the consumer has
//!   received all `n` and said so (it puts its count and the sum of the `i`s on a second
//!   queue, which the parent waits on).
//! - `queue_2p2c_small`: as above with two producers putting `n / 2` items each on one
//!   queue and two consumers getting `n / 2` each; total items per second.
//! - `joinable_put_taskdone_join`: two worker processes `get` + `task_done` from a
//!   `JoinableQueue`; the parent puts `n` items, then calls `join()`; from the first put
//!   until `join` returns.
//!
//! The children serve every repetition of a bench: each waits for its count of the next
//! batch on a control queue of its own (0 ends it; the joinable workers end on an item
//! whose `i` is `u64::MAX`). One unmeasured warm-up batch (a tenth of a batch) first.
//!
//! # Placement
//!
//! As for the connection benches, the processes are pinned, procvisor's and CPython's
//! alike (see [`Placement::of`]; each child pins itself first thing in its target, the
//! CPython script's parent pins itself before its forkserver starts). With a CPU for every
//! busy process each gets its own; with fewer, where they share decides the figures more
//! than the queues do. What four `--quick` runs of each placement gave on a shared 2-CPU
//! VM (medians per run, procvisor / CPython, items/s; the procvisor figures are those of
//! the first, single-lock queue, before producers and consumers took separate locks):
//!
//! - 1p1c: producer and consumer on two CPUs 2.9–3.0 M / 261–287 k; unpinned 2.8–3.1 M /
//!   266–269 k; both on one CPU 1.8–1.9 M / 156–163 k; about 11× in each. Kept: two
//!   CPUs, as `connection_oneway_small`.
//! - 2p2c: one producer and one consumer on each CPU 3.7–4.3 M / 210–228 k; producers on
//!   one CPU and consumers on the other 2.4–3.1 M / 251–270 k, with procvisor's spread
//!   within a run twice as wide. Kept: one of each per CPU.
//! - joinable: both workers on the CPU the parent does not use 1.14–1.23 M / 252–272 k;
//!   one worker on the parent's CPU 1.08–1.53 M / 168–174 k; unpinned 1.25–1.69 M /
//!   202–229 k, the last two with within-run spreads of ±30 %. Kept: the workers off the
//!   parent's CPU, the steadiest (and, for procvisor, the least favourable) of the three.

use std::time::{Duration, Instant};

use procvisor::{JoinableQueue, Process, Queue, StartMethod};

use crate::cpus::{PinSelf, allowed_cpus, pin_child};
use crate::measure;
use crate::report::Figure;
use crate::{Config, figure, warm_up};

/// The string of every item: 32 characters.
const TEXT: &str = "abcdefghijklmnopqrstuvwxyz012345";

/// An item.
type Small = (u64, String);

/// The `i` of the item that ends a joinable worker.
const STOP: u64 = u64::MAX;

/// How long the parent waits for a batch to end before it gives up (a child died).
const BATCH_DEADLINE: Duration = Duration::from_secs(120);

/// How long a child may take to end once told to.
const END_DEADLINE: Duration = Duration::from_secs(10);

/// The benches, in table order.
pub(crate) const BENCHES: [&str; 3] = [
    "queue_1p1c_small",
    "queue_2p2c_small",
    "joinable_put_taskdone_join",
];

/// The start method of the queue benches, for procvisor and CPython alike.
pub(crate) const METHOD: StartMethod = StartMethod::ForkServer;

/// The unit of every queue figure.
const UNIT: &str = "items/s";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    OneOne,
    TwoTwo,
    Joinable,
}

impl Kind {
    fn of(bench: &str) -> Result<Kind, String> {
        match bench {
            "queue_1p1c_small" => Ok(Kind::OneOne),
            "queue_2p2c_small" => Ok(Kind::TwoTwo),
            "joinable_put_taskdone_join" => Ok(Kind::Joinable),
            _ => Err(format!("unknown queue bench {bench:?}")),
        }
    }

    fn bench(self) -> &'static str {
        BENCHES[self as usize]
    }

    /// Producer processes (the parent puts for `Joinable`).
    fn producers(self) -> usize {
        match self {
            Kind::OneOne => 1,
            Kind::TwoTwo => 2,
            Kind::Joinable => 0,
        }
    }

    /// Consumer (or worker) processes.
    fn consumers(self) -> usize {
        match self {
            Kind::OneOne => 1,
            Kind::TwoTwo | Kind::Joinable => 2,
        }
    }

    /// Items per procvisor batch: at 1–4 million items a second, 0.1–0.5 s with
    /// `--quick`, four times that without.
    fn batch(self, cfg: &Config) -> usize {
        if cfg.quick { 500_000 } else { 2_000_000 }
    }

    /// Items per CPython batch: at the 150–300 thousand items a second CPython moves here
    /// (pinned), at least half a second with `--quick`, a second or more without.
    fn cpython_batch(self, cfg: &Config) -> usize {
        match (self, cfg.quick) {
            (Kind::Joinable, true) => 150_000,
            (Kind::Joinable, false) => 300_000,
            (_, true) => 200_000,
            (_, false) => 400_000,
        }
    }
}

/// The CPUs of a bench's processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Placement {
    /// The CPU of this process's main thread (which puts, for `Joinable`).
    pub(crate) parent: usize,
    /// The CPUs of the children: producers first, then consumers (or workers).
    pub(crate) children: Vec<usize>,
}

impl Placement {
    /// The placement of `bench`'s processes among the CPUs this thread may run on; `None`
    /// when the affinity cannot be read (nothing is pinned then). With CPUs enough, every
    /// busy process gets its own; on fewer (see the module's documentation for why):
    ///
    /// - the `Queue` benches deal producers, then consumers, round the CPUs from the first
    ///   (on 2 CPUs: the producer on one and the consumer on the other for 1p1c, one
    ///   producer and one consumer on each CPU for 2p2c); the parent, idle while they
    ///   work, shares the first CPU;
    /// - `Joinable` keeps the first CPU for the parent, which puts, and deals the workers
    ///   round the others (on 2 CPUs both workers share the second).
    pub(crate) fn of(bench: &str) -> Option<Placement> {
        let kind = Kind::of(bench).ok()?;
        let cpus = allowed_cpus().ok()?;
        let deal = |from: &[usize], n: usize| (0..n).map(|k| from[k % from.len()]).collect();
        Some(match kind {
            Kind::Joinable => Placement {
                parent: cpus[0],
                children: deal(cpus.get(1..).filter(|r| !r.is_empty()).unwrap_or(&cpus), 2),
            },
            _ => Placement {
                parent: cpus[0],
                children: deal(&cpus, kind.producers() + kind.consumers()),
            },
        })
    }

    fn describe(&self, kind: Kind) -> String {
        let list = |cpus: &[usize]| {
            cpus.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (prod, cons) = self.children.split_at(kind.producers());
        match kind {
            Kind::OneOne => format!("producer on CPU {}, consumer on CPU {}", prod[0], cons[0]),
            Kind::TwoTwo => format!(
                "producers on CPUs {}, consumers on CPUs {}",
                list(prod),
                list(cons)
            ),
            Kind::Joinable => format!(
                "parent on CPU {}, workers on CPUs {}",
                self.parent,
                list(cons)
            ),
        }
    }
}

/// The arguments that give `queue_bench.py` the batch and the placement of `bench`.
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

/// What the table's notes say about `bench`: items and processes.
pub(crate) fn note(cfg: &Config, bench: &str) -> String {
    let Ok(kind) = Kind::of(bench) else {
        return String::new();
    };
    let place = Placement::of(bench)
        .map(|p| p.describe(kind))
        .unwrap_or_else(|| "unpinned".to_owned());
    let what = match kind {
        Kind::OneOne => {
            "1 producer process → 1 consumer process on one Queue, timed from the go to the \
             producer until the consumer reported all received"
        }
        Kind::TwoTwo => {
            "2 producer processes → 2 consumer processes on one Queue (half the items each), \
             timed from the go to the producers until both consumers reported"
        }
        Kind::Joinable => {
            "the parent puts, 2 worker processes get + task_done, timed from the first put \
             until join() returns"
        }
    };
    format!(
        "{bench} ({method}): {what}; {pv} items (procvisor) / {cp} (CPython) of (u64, \
         32-char string) per repetition; {place}, CPython alike; no OS floor",
        method = METHOD.as_str(),
        pv = kind.batch(cfg),
        cp = kind.cpython_batch(cfg),
    )
}

/// `bench` for procvisor.
pub(crate) fn bench(cfg: &Config, bench: &str) -> Result<Vec<Figure>, String> {
    let kind = Kind::of(bench)?;
    warm_up(METHOD)?;
    let n = kind.batch(cfg);
    let place = Placement::of(bench);
    let _pinned = place.as_ref().map(|p| PinSelf::new(p.parent)).transpose()?;
    let cpus = |k: usize| place.as_ref().map(|p| p.children[k]);
    let mut rig = match kind {
        Kind::Joinable => Rig::Joinable(JoinRig::start(kind, &cpus)?),
        _ => Rig::Queue(QueueRig::start(kind, &cpus)?),
    };
    let measured = (|| {
        rig.batch(n / 10)?;
        (0..cfg.reps())
            .map(|_| rig.batch(n))
            .collect::<Result<Vec<_>, String>>()
    })();
    let ended = rig.end();
    let values = measured?;
    ended?;
    Ok(vec![figure(
        kind.bench(),
        "procvisor",
        METHOD.as_str(),
        UNIT,
        values,
    )])
}

enum Rig {
    Queue(QueueRig),
    Joinable(JoinRig),
}

impl Rig {
    fn batch(&mut self, n: usize) -> Result<f64, String> {
        match self {
            Rig::Queue(r) => r.batch(n),
            Rig::Joinable(r) => r.batch(n),
        }
    }

    fn end(&mut self) -> Result<(), String> {
        match self {
            Rig::Queue(r) => r.end(),
            Rig::Joinable(r) => r.end(),
        }
    }
}

/// The sum `0 + 1 + … + (n - 1)`.
fn sum_below(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

// ---------------------------------------------------------------------------------------
// Queue: producers and consumers
// ---------------------------------------------------------------------------------------

/// A producer: for each count `n` on `ctl`, puts `(0, TEXT)` … `(n - 1, TEXT)`; until 0.
fn producer((ctl, q, cpu): (Queue<u64>, Queue<Small>, Option<usize>)) {
    pin_child(cpu);
    while let Ok(n) = ctl.get() {
        if n == 0 {
            return;
        }
        for i in 0..n {
            q.put((i, TEXT.to_owned())).expect("producer: put");
        }
    }
}

/// A consumer's control queue, item queue, report queue and CPU.
type ConsumerArgs = (Queue<u64>, Queue<Small>, Queue<(u64, u64)>, Option<usize>);

/// A consumer: for each count `n` on `ctl`, gets `n` items, then puts how many were
/// whole and the sum of their `i`s on `done`; until 0.
fn consumer((ctl, q, done, cpu): ConsumerArgs) {
    pin_child(cpu);
    while let Ok(n) = ctl.get() {
        if n == 0 {
            return;
        }
        let (mut count, mut sum) = (0u64, 0u64);
        for _ in 0..n {
            let (i, text) = q.get().expect("consumer: get");
            if text.len() == TEXT.len() {
                count += 1;
            }
            sum += i;
        }
        done.put((count, sum)).expect("consumer: put on done");
    }
}

/// The children of a `Queue` bench and the parent's handles.
struct QueueRig {
    producers: Vec<(Process<()>, Queue<u64>)>,
    consumers: Vec<(Process<()>, Queue<u64>)>,
    done: Queue<(u64, u64)>,
}

impl QueueRig {
    fn start(kind: Kind, cpu: &dyn Fn(usize) -> Option<usize>) -> Result<QueueRig, String> {
        let qerr = |e: procvisor::queues::QueueError| format!("queue: {e}");
        let q: Queue<Small> = Queue::new(0).map_err(qerr)?;
        let done: Queue<(u64, u64)> = Queue::new(0).map_err(qerr)?;
        let mut rig = QueueRig {
            producers: Vec::new(),
            consumers: Vec::new(),
            done: done.clone(),
        };
        for k in 0..kind.producers() {
            let ctl = Queue::new(0).map_err(qerr)?;
            let p =
                Process::new(producer, (ctl.clone(), q.clone(), cpu(k))).with_start_method(METHOD);
            rig.producers.push((p, ctl));
        }
        for k in 0..kind.consumers() {
            let ctl = Queue::new(0).map_err(qerr)?;
            let args = (
                ctl.clone(),
                q.clone(),
                done.clone(),
                cpu(kind.producers() + k),
            );
            let p = Process::new(consumer, args).with_start_method(METHOD);
            rig.consumers.push((p, ctl));
        }
        for (p, _) in rig.producers.iter_mut().chain(rig.consumers.iter_mut()) {
            p.start().map_err(|e| format!("start: {e}"))?;
        }
        Ok(rig)
    }

    /// One timed batch of `n` items in all, in items per second.
    fn batch(&mut self, n: usize) -> Result<f64, String> {
        let share = |k: usize, parts: usize| (n / parts + usize::from(k < n % parts)) as u64;
        let cons = self.consumers.len();
        for (k, (_, ctl)) in self.consumers.iter().enumerate() {
            ctl.put(share(k, cons)).map_err(|e| format!("put: {e}"))?;
        }
        let prods = self.producers.len();
        let t0 = Instant::now();
        for (k, (_, ctl)) in self.producers.iter().enumerate() {
            ctl.put(share(k, prods)).map_err(|e| format!("put: {e}"))?;
        }
        let (mut count, mut sum) = (0u64, 0u64);
        for _ in 0..cons {
            let (c, s) = self
                .done
                .get_timeout(BATCH_DEADLINE)
                .map_err(|e| format!("waiting for the consumers: {e}"))?;
            count += c;
            sum += s;
        }
        let elapsed = t0.elapsed();
        let want: u64 = (0..prods).map(|k| sum_below(share(k, prods))).sum();
        if count != n as u64 || sum != want {
            return Err(format!(
                "the consumers received {count} whole items of {n} (sum of i {sum}, not {want})"
            ));
        }
        Ok(n as f64 / elapsed.as_secs_f64())
    }

    /// Tells every child to end and joins them.
    fn end(&mut self) -> Result<(), String> {
        let all = || self.producers.iter().chain(self.consumers.iter());
        for (_, ctl) in all() {
            let _ = ctl.put(0);
        }
        let mut result = Ok(());
        for (p, _) in all() {
            let r = end_child(p);
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

/// Joins a child that was told to end; kills it when it does not within [`END_DEADLINE`].
fn end_child(p: &Process<()>) -> Result<(), String> {
    measure::join_told(p, END_DEADLINE, "being told to")
}

// ---------------------------------------------------------------------------------------
// JoinableQueue: the parent puts, workers get + task_done
// ---------------------------------------------------------------------------------------

/// A worker: gets items and marks each done until the item whose `i` is [`STOP`]; then
/// puts how many whole items it got on `done`.
fn worker((q, done, cpu): (JoinableQueue<Small>, Queue<u64>, Option<usize>)) {
    pin_child(cpu);
    let mut count = 0u64;
    loop {
        let (i, text) = q.get().expect("worker: get");
        q.task_done().expect("worker: task_done");
        if i == STOP {
            break;
        }
        if text.len() == TEXT.len() {
            count += 1;
        }
    }
    done.put(count).expect("worker: put on done");
}

/// The workers of the joinable bench and the parent's handles.
struct JoinRig {
    workers: Vec<Process<()>>,
    q: JoinableQueue<Small>,
    done: Queue<u64>,
    /// Items put so far (the workers' counts add up to it at the end).
    put: u64,
}

impl JoinRig {
    fn start(kind: Kind, cpu: &dyn Fn(usize) -> Option<usize>) -> Result<JoinRig, String> {
        let qerr = |e: procvisor::queues::QueueError| format!("queue: {e}");
        let mut rig = JoinRig {
            workers: Vec::new(),
            q: JoinableQueue::new(0).map_err(qerr)?,
            done: Queue::new(0).map_err(qerr)?,
            put: 0,
        };
        for k in 0..kind.consumers() {
            let args = (rig.q.clone(), rig.done.clone(), cpu(k));
            rig.workers
                .push(Process::new(worker, args).with_start_method(METHOD));
        }
        for p in &mut rig.workers {
            p.start().map_err(|e| format!("start: {e}"))?;
        }
        Ok(rig)
    }

    /// One timed batch of `n` items, in items per second.
    fn batch(&mut self, n: usize) -> Result<f64, String> {
        let t0 = Instant::now();
        for i in 0..n as u64 {
            self.q
                .put((i, TEXT.to_owned()))
                .map_err(|e| format!("put: {e}"))?;
        }
        self.q.join().map_err(|e| format!("join: {e}"))?;
        let elapsed = t0.elapsed();
        self.put += n as u64;
        Ok(n as f64 / elapsed.as_secs_f64())
    }

    /// Stops the workers, checks their counts and joins them.
    fn end(&mut self) -> Result<(), String> {
        for _ in &self.workers {
            let _ = self.q.put((STOP, String::new()));
        }
        let mut got = 0u64;
        let mut counted = Ok(());
        for _ in &self.workers {
            match self.done.get_timeout(END_DEADLINE) {
                Ok(c) => got += c,
                Err(e) => counted = Err(format!("waiting for a worker's count: {e}")),
            }
        }
        let mut result = Ok(());
        for p in &self.workers {
            let r = end_child(p);
            if result.is_ok() {
                result = r;
            }
        }
        counted?;
        result?;
        if got != self.put {
            return Err(format!(
                "the workers received {got} whole items of {}",
                self.put
            ));
        }
        Ok(())
    }
}
