//! The pool's engine in the parent: workers, the task queue, result batches, and the
//! reader that moves bytes between them.
//!
//! One mutex guards the whole [`State`]. Submitting a task writes it straight to a worker's
//! socket (non-blocking, under the lock) when one has room, so no thread hop stands between
//! a caller and its worker. Reading is a role, not a thread: whoever needs results and finds
//! nobody reading takes the role ([`Shared::wait_until`]), polls every worker socket and
//! sentinel, stores what arrives, hands the role back, and wakes the others. A caller
//! blocked in `apply` or `map` thus reads its own results (two hops, as over a raw pipe);
//! the pool's background thread takes the role only when nobody else waits, so that
//! `apply_async` callbacks and `imap` iterators left alone still make progress.
//!
//! Descriptors stay valid while another thread polls them because every socket and
//! process is reference-counted: the reader polls its own clones.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use procvisor_protocol::RemoteError;
use procvisor_protocol::frame::decode_value;
use tokio::sync::oneshot;

use super::error::{Kind, PoolError};
use super::serve::{self, Endpoint, WorkerArgs};
use super::wire;
use crate::Process;
use crate::restart::{Backoff, BackoffState};
use crate::spawn::StartMethod;

/// Queued work per worker is kept near this much task time: deep enough that a worker
/// never waits for the parent between quick tasks, shallow enough that a task rarely waits
/// behind another worker's backlog while a worker is idle.
const TARGET_QUEUE_NS: f64 = 1_000_000.0;
/// The most tasks sent to one worker and not answered yet.
const MAX_DEPTH: usize = 256;
/// Consecutive initializer failures after which the pool gives up (is broken).
const INIT_ATTEMPTS: u32 = 3;
/// Consecutive failures to start a worker (fork, exec) after which the pool gives up.
const SPAWN_ATTEMPTS: u32 = 3;
/// Bytes read from a worker at a time.
const READ_CHUNK: usize = 64 * 1024;

/// What every worker is started with.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) processes: usize,
    pub(crate) method: StartMethod,
    pub(crate) init: Option<(i64, Vec<u8>)>,
    pub(crate) max_tasks: Option<u64>,
    pub(crate) retries: u32,
    pub(crate) backoff: Backoff,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Running,
    Closed,
    Terminated,
}

/// The parent's end of a worker's socket; leaves the fork registry when closed.
#[derive(Debug)]
struct Sock(UnixStream);

impl Drop for Sock {
    fn drop(&mut self) {
        crate::connection::untrack(self.0.as_raw_fd());
    }
}

/// One task on its way: a chunk of a batch.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) id: u64,
    pub(crate) batch: u64,
    pub(crate) index: usize,
    pub(crate) entry: i64,
    /// The encoded `Vec<A>`; emptied once written unless the pool retries.
    pub(crate) args: Vec<u8>,
    pub(crate) tries: u32,
}

/// One chunk's outcome: its encoded `Vec<R>`, or why it failed.
pub(crate) type Chunk = Result<Vec<u8>, PoolError>;

/// The callback of a whole batch, given every chunk's bytes in order, or the first error.
pub(crate) type BatchCallback = Box<dyn FnOnce(Result<Vec<Vec<u8>>, PoolError>) + Send>;

#[derive(Debug)]
pub(crate) enum Results {
    /// `apply` and `map`: every chunk, complete when all are in or one failed.
    Whole {
        chunks: Vec<Option<Vec<u8>>>,
        left: usize,
        error: Option<PoolError>,
    },
    /// `imap`: chunks by index, taken in order by the iterator.
    Ordered(HashMap<usize, Chunk>),
    /// `imap_unordered`: chunks as they arrive.
    Unordered(VecDeque<(usize, Chunk)>),
}

pub(crate) struct Batch {
    pub(crate) results: Results,
    /// Chunks submitted and not completed.
    pub(crate) pending: usize,
    pub(crate) callback: Option<BatchCallback>,
    /// Async waiters, woken on every completed chunk.
    pub(crate) wakers: Vec<oneshot::Sender<()>>,
    /// Its handle is gone: drop the batch once nothing of it is pending.
    pub(crate) abandoned: bool,
}

impl Batch {
    pub(crate) fn new(results: Results) -> Self {
        Batch {
            results,
            pending: 0,
            callback: None,
            wakers: Vec::new(),
            abandoned: false,
        }
    }

    pub(crate) fn whole_done(&self) -> bool {
        match &self.results {
            Results::Whole { left, error, .. } => *left == 0 || error.is_some(),
            _ => false,
        }
    }
}

struct Slot {
    key: u64,
    pid: i32,
    process: Process<()>,
    /// A duplicate of the process's sentinel, which the reader polls on its own clone.
    sentinel: Arc<OwnedFd>,
    /// `None` once closed (by us, or at end of file): the worker is on its way out and
    /// only its sentinel is watched.
    sock: Option<Arc<Sock>>,
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    wbuf: Vec<u8>,
    in_flight: VecDeque<Job>,
    /// How many of `in_flight` (from the front) were fully written.
    sent: usize,
    /// Tasks it may still be given (`maxtasksperchild`).
    budget: Option<u64>,
    /// The initializer has run (or there is none).
    ready: bool,
    init_error: Option<RemoteError>,
    started: Instant,
}

pub(crate) struct State {
    pub(crate) phase: Phase,
    pub(crate) broken: Option<PoolError>,
    slots: Vec<Slot>,
    queue: VecDeque<Job>,
    pub(crate) batches: HashMap<u64, Batch>,
    next_job: u64,
    next_batch: u64,
    next_key: u64,
    reader: bool,
    service_ns: f64,
    /// When replacement workers are due.
    restarts: Vec<Instant>,
    init_failures: u32,
    init_backoff: BackoffState,
    spawn_failures: u32,
    /// Live `imap` iterators that may still submit chunks.
    pub(crate) feeders: usize,
    /// Closed and every worker has exited, or terminated.
    pub(crate) finished: bool,
    retired: Vec<Process<()>>,
    deferred: Vec<Box<dyn FnOnce() + Send>>,
    changed: bool,
}

pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    /// Results arrived, the reader role was released, or the phase changed.
    results: Condvar,
    /// The background thread waits here for work nobody else reads.
    idle: Condvar,
    wake_r: UnixStream,
    wake_w: UnixStream,
    pub(crate) cfg: Config,
}

enum Event {
    Wake,
    Sock(u64),
    Sentinel(u64),
}

impl Shared {
    pub(crate) fn new(cfg: Config) -> std::io::Result<Shared> {
        let (wake_r, wake_w) = UnixStream::pair()?;
        wake_r.set_nonblocking(true)?;
        wake_w.set_nonblocking(true)?;
        crate::connection::track(wake_r.as_raw_fd());
        crate::connection::track(wake_w.as_raw_fd());
        let seed = std::process::id() as u64 ^ Instant::now().elapsed().as_nanos() as u64;
        Ok(Shared {
            state: Mutex::new(State {
                phase: Phase::Running,
                broken: None,
                slots: Vec::new(),
                queue: VecDeque::new(),
                batches: HashMap::new(),
                next_job: 1,
                next_batch: 1,
                next_key: 1,
                reader: false,
                service_ns: TARGET_QUEUE_NS / 2.0,
                restarts: Vec::new(),
                init_failures: 0,
                init_backoff: BackoffState::new(cfg.backoff, seed),
                spawn_failures: 0,
                feeders: 0,
                finished: false,
                retired: Vec::new(),
                deferred: Vec::new(),
                changed: false,
            }),
            results: Condvar::new(),
            idle: Condvar::new(),
            wake_r,
            wake_w,
            cfg,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state whole; a panicking callback runs outside.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the thread polling, if any.
    pub(crate) fn wake(&self) {
        let _ = (&self.wake_w).write(&[1]);
    }

    /// Wakes whoever should read now that work was submitted without a waiter.
    pub(crate) fn kick(&self, st: &State) {
        if !st.reader {
            self.idle.notify_one();
        } else if st.slots.iter().any(|s| !s.wbuf.is_empty()) {
            self.wake();
        }
    }

    /// Wakes the reader when writes wait for room and the caller is not the reader.
    pub(crate) fn nudge(&self, st: &State) {
        if st.reader && st.slots.iter().any(|s| !s.wbuf.is_empty()) {
            self.wake();
        }
    }

    /// Wakes every waiter (phase changes).
    pub(crate) fn notify_all(&self) {
        self.results.notify_all();
        self.idle.notify_all();
        self.wake();
    }

    /// Starts the first workers. Called before the pool is shared.
    pub(crate) fn start_workers(&self) -> Result<(), PoolError> {
        let mut st = self.lock();
        for _ in 0..self.cfg.processes {
            st.start_worker(&self.cfg)?;
        }
        Ok(())
    }

    /// Waits until `done` holds or `deadline` passes, reading for everyone meanwhile when
    /// nobody else does. Returns the guard and whether `done` held.
    pub(crate) fn wait_until<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        deadline: Option<Instant>,
        mut done: impl FnMut(&mut State) -> bool,
    ) -> (MutexGuard<'a, State>, bool) {
        let mut reading = false;
        let ok = loop {
            if done(&mut st) {
                break true;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                break false;
            }
            if reading || !st.reader {
                st = self.read_round(st, deadline, &mut reading);
                continue;
            }
            st = match deadline {
                None => self.results.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    self.results
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        };
        if reading {
            st.reader = false;
            st = self.release(st);
        }
        (st, ok)
    }

    /// One round as the reader: takes the role, pumps, and runs the callbacks that came
    /// due. Callbacks run without the lock and without the role (`reading` is cleared): one
    /// that calls back into the pool must not find the pool waiting on itself.
    fn read_round<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        deadline: Option<Instant>,
        reading: &mut bool,
    ) -> MutexGuard<'a, State> {
        st.reader = true;
        *reading = true;
        st = self.pump(st, deadline);
        if !st.deferred.is_empty() {
            st.reader = false;
            *reading = false;
            st = self.release(st);
            st = self.run_deferred(st);
        }
        st
    }

    /// After giving up the reader role: hands it on when there is still work to read.
    fn release<'a>(&'a self, st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        if st.work_pending() {
            self.idle.notify_one();
            self.results.notify_all();
        }
        st
    }

    fn run_deferred<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let calls = std::mem::take(&mut st.deferred);
        if calls.is_empty() {
            return st;
        }
        drop(st);
        for call in calls {
            // A panicking callback must not take the pool down with it (Python logs and
            // goes on); its message has been printed by the panic hook.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call));
        }
        self.lock()
    }

    /// The background thread: reads whenever there is work and nobody else reads.
    pub(crate) fn background(self: Arc<Self>) {
        let mut st = self.lock();
        let mut reading = false;
        loop {
            if st.phase == Phase::Terminated || st.finished {
                break;
            }
            if (reading || !st.reader) && st.work_pending() {
                st = self.read_round(st, None, &mut reading);
                continue;
            }
            if reading {
                st.reader = false;
                reading = false;
                st = self.release(st);
                continue;
            }
            st = self.idle.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if reading {
            st.reader = false;
            drop(self.release(st));
        }
    }

    /// One round as the reader: poll every worker, read, account for ended workers, start
    /// replacements, dispatch queued tasks, write.
    fn pump<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        deadline: Option<Instant>,
    ) -> MutexGuard<'a, State> {
        st.start_due(&self.cfg);
        st.dispatch(&self.cfg);
        st.maybe_shut_down();
        if st.changed {
            st.changed = false;
            self.results.notify_all();
            return st;
        }
        let mut until = deadline;
        if let Some(r) = st.restarts.iter().min() {
            until = Some(until.map_or(*r, |d| d.min(*r)));
        }
        let mut socks: Vec<(u64, Arc<Sock>, bool)> = Vec::new();
        let mut procs: Vec<(u64, Arc<OwnedFd>)> = Vec::new();
        for s in &st.slots {
            if let Some(sock) = &s.sock {
                socks.push((s.key, sock.clone(), !s.wbuf.is_empty()));
            }
            procs.push((s.key, s.sentinel.clone()));
        }
        drop(st);

        let mut events = vec![Event::Wake];
        let mut fds = vec![PollFd::new(self.wake_r.as_fd(), PollFlags::POLLIN)];
        for (key, sock, out) in &socks {
            let mut flags = PollFlags::POLLIN;
            if *out {
                flags |= PollFlags::POLLOUT;
            }
            events.push(Event::Sock(*key));
            fds.push(PollFd::new(sock.0.as_fd(), flags));
        }
        for (key, fd) in &procs {
            events.push(Event::Sentinel(*key));
            fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
        }
        let timeout = match until {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        let ready: Vec<usize> = match nix::poll::poll(&mut fds, timeout) {
            Ok(_) => fds
                .iter()
                .enumerate()
                .filter(|(_, p)| p.revents().is_some_and(|r| !r.is_empty()))
                .map(|(i, _)| i)
                .collect(),
            Err(_) => Vec::new(),
        };
        drop(fds);
        let mut st = self.lock();
        for i in ready {
            match events[i] {
                Event::Wake => {
                    let mut sink = [0u8; 64];
                    while matches!((&self.wake_r).read(&mut sink), Ok(n) if n > 0) {}
                }
                Event::Sock(key) => st.read_slot(key, &self.cfg),
                Event::Sentinel(key) => {
                    // Whatever it wrote before ending is in the socket: read it first.
                    st.read_slot(key, &self.cfg);
                    st.slot_ended(key, &self.cfg);
                }
            }
        }
        // Flush writes that were waiting for room.
        let keep = self.cfg.retries > 0;
        for s in &mut st.slots {
            s.flush(keep);
        }
        st.start_due(&self.cfg);
        st.dispatch(&self.cfg);
        st.maybe_shut_down();
        if std::mem::take(&mut st.changed) {
            self.results.notify_all();
        }
        drop(socks);
        drop(procs);
        st
    }
}

impl State {
    /// Whether a reader is needed: something is in flight, queued, starting or ending.
    pub(crate) fn work_pending(&self) -> bool {
        if self.phase == Phase::Terminated || self.finished {
            return false;
        }
        !self.queue.is_empty()
            || !self.restarts.is_empty()
            || self.phase == Phase::Closed
            || self
                .slots
                .iter()
                .any(|s| !s.in_flight.is_empty() || s.sock.is_none() || !s.ready)
    }

    /// The error a submission gets now, if any.
    pub(crate) fn refuse(&self) -> Option<PoolError> {
        match self.phase {
            Phase::Running => self.broken.clone(),
            Phase::Closed => Some(PoolError::new(Kind::NotRunning { terminated: false })),
            Phase::Terminated => Some(PoolError::new(Kind::NotRunning { terminated: true })),
        }
    }

    pub(crate) fn new_batch(&mut self, batch: Batch) -> u64 {
        let id = self.next_batch;
        self.next_batch += 1;
        self.batches.insert(id, batch);
        id
    }

    /// Queues a chunk of `batch` (its position `index`) and counts it pending.
    pub(crate) fn submit(&mut self, batch: u64, index: usize, entry: i64, args: Vec<u8>) {
        let id = self.next_job;
        self.next_job += 1;
        if let Some(b) = self.batches.get_mut(&batch) {
            b.pending += 1;
        }
        self.queue.push_back(Job {
            id,
            batch,
            index,
            entry,
            args,
            tries: 0,
        });
    }

    /// Records a chunk that failed before it could be queued.
    pub(crate) fn fail_now(&mut self, batch: u64, index: usize, err: PoolError) {
        if let Some(b) = self.batches.get_mut(&batch) {
            b.pending += 1;
        }
        self.complete(batch, index, Err(err));
    }

    /// Sends queued tasks to the least loaded workers with room, and writes.
    pub(crate) fn dispatch(&mut self, cfg: &Config) {
        if self.queue.is_empty() {
            return;
        }
        let depth = ((TARGET_QUEUE_NS / self.service_ns.max(1.0)) as usize).clamp(1, MAX_DEPTH);
        while !self.queue.is_empty() {
            let Some(slot) = self
                .slots
                .iter_mut()
                .filter(|s| {
                    s.sock.is_some() && s.ready && s.in_flight.len() < depth && s.budget != Some(0)
                })
                .min_by_key(|s| s.in_flight.len())
            else {
                break;
            };
            let job = self.queue.pop_front().expect("checked non-empty");
            wire::put_task(&mut slot.wbuf, job.id, job.entry, &job.args);
            if let Some(b) = &mut slot.budget {
                *b -= 1;
            }
            slot.in_flight.push_back(job);
        }
        let mut requeue = Vec::new();
        for s in &mut self.slots {
            if !s.wbuf.is_empty() && !s.flush(cfg.retries > 0) {
                // The worker is gone: what it never received goes to another one.
                while s.in_flight.len() > s.sent {
                    requeue.push(s.in_flight.pop_back().expect("longer than sent"));
                }
            }
        }
        for job in requeue {
            self.queue.push_front(job);
        }
    }

    /// Starts replacement workers that are due.
    fn start_due(&mut self, cfg: &Config) {
        if self.restarts.is_empty() {
            return;
        }
        let now = Instant::now();
        let due = self.restarts.iter().filter(|t| **t <= now).count();
        self.restarts.retain(|t| *t > now);
        for _ in 0..due {
            if self.phase == Phase::Terminated || self.broken.is_some() || !self.needs_workers() {
                continue;
            }
            if let Err(e) = self.start_worker(cfg) {
                self.spawn_failures += 1;
                if self.spawn_failures >= SPAWN_ATTEMPTS && self.slots.is_empty() {
                    self.break_pool(e);
                } else {
                    let delay = self.init_backoff.next_delay(Duration::ZERO);
                    self.restarts.push(Instant::now() + delay);
                }
            } else {
                self.spawn_failures = 0;
            }
        }
    }

    /// Whether the pool still wants workers: running, or closed with work left.
    fn needs_workers(&self) -> bool {
        match self.phase {
            Phase::Running => true,
            Phase::Closed => {
                !self.queue.is_empty() || self.slots.iter().any(|s| !s.in_flight.is_empty())
            }
            Phase::Terminated => false,
        }
    }

    pub(crate) fn start_worker(&mut self, cfg: &Config) -> Result<(), PoolError> {
        let io = |e: std::io::Error| {
            PoolError::new(Kind::Spawn(crate::Error::new(crate::error::Kind::Spawn(
                nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(nix::libc::EIO)),
            ))))
        };
        let (ours, theirs) = UnixStream::pair().map_err(io)?;
        ours.set_nonblocking(true).map_err(io)?;
        let args = WorkerArgs {
            sock: Endpoint(theirs),
            init: cfg.init.as_ref().map(|(entry, _)| *entry),
            init_args: cfg
                .init
                .as_ref()
                .map(|(_, a)| a.clone())
                .unwrap_or_default(),
            max_tasks: cfg.max_tasks,
        };
        let key = self.next_key;
        self.next_key += 1;
        let mut p = Process::new(serve::worker_main, args)
            .with_daemon(true)
            .with_start_method(cfg.method)
            .with_name(format!("PoolWorker-{key}"));
        p.start_in(crate::worker::Home::Runtime)
            .map_err(|e| PoolError::new(Kind::Spawn(e)))?;
        let pid = p.pid().ok().flatten().expect("a started process has a pid");
        let sentinel = p
            .sentinel()
            .map_err(|e| PoolError::new(Kind::Spawn(e)))?
            .try_clone_to_owned()
            .map_err(io)?;
        crate::connection::track(ours.as_raw_fd());
        self.slots.push(Slot {
            key,
            pid,
            process: p,
            sentinel: Arc::new(sentinel),
            sock: Some(Arc::new(Sock(ours))),
            rbuf: vec![0; READ_CHUNK],
            rstart: 0,
            rend: 0,
            wbuf: Vec::new(),
            in_flight: VecDeque::new(),
            sent: 0,
            budget: cfg.max_tasks,
            ready: cfg.init.is_none(),
            init_error: None,
            started: Instant::now(),
        });
        Ok(())
    }

    /// Reads what a worker sent and settles the tasks it answered.
    fn read_slot(&mut self, key: u64, cfg: &Config) {
        let Some(pos) = self.slots.iter().position(|s| s.key == key) else {
            return;
        };
        let mut replies: Vec<(u8, u64, u32, Vec<u8>)> = Vec::new();
        let mut fault: Option<String> = None;
        {
            let s = &mut self.slots[pos];
            let Some(sock) = s.sock.clone() else { return };
            loop {
                // Room for at least a chunk, or for the whole pending frame.
                if s.rstart > 0 && s.rstart == s.rend {
                    s.rstart = 0;
                    s.rend = 0;
                }
                let mut need = READ_CHUNK;
                if let Some(h) = s.rbuf[s.rstart..s.rend].first_chunk::<4>() {
                    need = need.max(4 + u32::from_be_bytes(*h) as usize);
                }
                if s.rbuf.len() - s.rstart < need {
                    s.rbuf.copy_within(s.rstart..s.rend, 0);
                    s.rend -= s.rstart;
                    s.rstart = 0;
                    if s.rbuf.len() < need.min(4 + wire::MAX_FRAME) {
                        s.rbuf.resize(need.min(4 + wire::MAX_FRAME), 0);
                    }
                } else if s.rend == s.rbuf.len() {
                    s.rbuf.copy_within(s.rstart..s.rend, 0);
                    s.rend -= s.rstart;
                    s.rstart = 0;
                }
                let space = s.rbuf.len() - s.rend;
                let n = match (&sock.0).read(&mut s.rbuf[s.rend..]) {
                    Ok(0) => {
                        s.sock = None;
                        break;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        s.sock = None;
                        break;
                    }
                };
                s.rend += n;
                loop {
                    match wire::next_frame(&s.rbuf[s.rstart..s.rend], wire::REPLY_HEAD) {
                        Ok(Some((body, used))) => {
                            let b = &s.rbuf[s.rstart + body.start..s.rstart + body.end];
                            replies.push((
                                b[0],
                                wire::u64_at(b, 1),
                                wire::u32_at(b, 9),
                                b[wire::REPLY_HEAD..].to_vec(),
                            ));
                            s.rstart += used;
                        }
                        Ok(None) => break,
                        Err(why) => {
                            fault = Some(why);
                            break;
                        }
                    }
                }
                if fault.is_some() || n < space {
                    // A short read drained the socket: no need for a read that would block.
                    break;
                }
            }
        }
        for (tag, id, nanos, payload) in replies {
            if let Err(why) = self.reply(pos, tag, id, nanos, payload) {
                fault = Some(why);
                break;
            }
        }
        if let Some(why) = fault {
            // A worker that breaks the protocol is killed; its sentinel settles its tasks.
            let s = &mut self.slots[pos];
            eprintln!("procvisor pool: worker {} broke the protocol: {why}", s.pid);
            let _ = s.process.kill();
            s.sock = None;
        }
        let _ = cfg;
    }

    fn reply(
        &mut self,
        pos: usize,
        tag: u8,
        id: u64,
        nanos: u32,
        payload: Vec<u8>,
    ) -> Result<(), String> {
        let s = &mut self.slots[pos];
        match tag {
            wire::READY => {
                s.ready = true;
                self.init_failures = 0;
                self.changed = true;
                return Ok(());
            }
            wire::INIT => {
                s.init_error = Some(decode_remote(&payload));
                return Ok(());
            }
            _ => {}
        }
        let Some(job) = s.in_flight.pop_front() else {
            return Err(format!("a reply to task {id}, which it does not hold"));
        };
        if job.id != id {
            return Err(format!("a reply to task {id} instead of {}", job.id));
        }
        s.sent = s.sent.saturating_sub(1);
        self.service_ns = self.service_ns * 0.875 + nanos as f64 * 0.125;
        let result = match tag {
            wire::OK => Ok(payload),
            wire::PANIC => Err(PoolError::new(Kind::Remote(decode_remote(&payload)))),
            wire::ARGS => Err(PoolError::new(Kind::Arguments(decode_remote(&payload)))),
            wire::RESULT => Err(PoolError::new(Kind::Result(decode_remote(&payload)))),
            other => return Err(format!("a reply with tag {other}")),
        };
        self.complete(job.batch, job.index, result);
        Ok(())
    }

    /// A worker's sentinel fired: settle what it held and replace it.
    fn slot_ended(&mut self, key: u64, cfg: &Config) {
        let Some(pos) = self.slots.iter().position(|s| s.key == key) else {
            return;
        };
        let status = self.slots[pos].process.exit_status().ok().flatten();
        let Some(status) = status else {
            // Readable but not collected yet: look again on the next round.
            return;
        };
        let slot = self.slots.remove(pos);
        self.changed = true;
        let ran_for = slot.started.elapsed();
        let mut lost = slot.in_flight;
        if let Some(err) = slot.init_error {
            // It never ran a task: what it held goes to another worker.
            while let Some(job) = lost.pop_back() {
                self.queue.push_front(job);
            }
            self.init_failures += 1;
            if self.init_failures >= INIT_ATTEMPTS {
                self.break_pool(PoolError::new(Kind::Initializer(err)));
            } else if self.phase != Phase::Terminated {
                let delay = self.init_backoff.next_delay(ran_for);
                self.restarts.push(Instant::now() + delay);
            }
        } else {
            let died = PoolError::new(Kind::WorkerDied {
                pid: slot.pid,
                status,
            });
            let mut retry = Vec::new();
            for mut job in lost.drain(..) {
                if job.tries < cfg.retries && self.phase != Phase::Terminated {
                    job.tries += 1;
                    retry.push(job);
                } else {
                    self.complete(job.batch, job.index, Err(died.clone()));
                }
            }
            for job in retry.into_iter().rev() {
                self.queue.push_front(job);
            }
            if self.needs_workers() && self.broken.is_none() {
                self.restarts.push(Instant::now());
            }
        }
        self.retired.push(slot.process);
    }

    /// No worker will ever be started again: fail what waits and refuse what comes.
    fn break_pool(&mut self, err: PoolError) {
        if self.broken.is_none() {
            self.broken = Some(err.clone());
        }
        self.restarts.clear();
        while let Some(job) = self.queue.pop_front() {
            self.complete(job.batch, job.index, Err(err.clone()));
        }
        self.changed = true;
    }

    /// Closes the sockets of idle workers once a closed pool has nothing left to do.
    fn maybe_shut_down(&mut self) {
        if self.phase != Phase::Closed || self.feeders > 0 {
            return;
        }
        if !self.queue.is_empty() && self.broken.is_none() {
            return;
        }
        if self.slots.iter().any(|s| !s.in_flight.is_empty()) {
            return;
        }
        self.restarts.clear();
        for s in &mut self.slots {
            s.sock = None;
        }
        if self.slots.is_empty() && !self.finished {
            self.finished = true;
            self.changed = true;
        }
    }

    /// Settles one chunk of a batch.
    pub(crate) fn complete(&mut self, batch: u64, index: usize, result: Chunk) {
        let Some(b) = self.batches.get_mut(&batch) else {
            return;
        };
        self.changed = true;
        b.pending = b.pending.saturating_sub(1);
        let mut cancel = false;
        match &mut b.results {
            Results::Whole {
                chunks,
                left,
                error,
            } => {
                if error.is_none() {
                    match result {
                        Ok(bytes) => {
                            chunks[index] = Some(bytes);
                            *left -= 1;
                        }
                        Err(e) => {
                            *error = Some(e);
                            cancel = true;
                        }
                    }
                }
            }
            Results::Ordered(map) => {
                map.insert(index, result);
            }
            Results::Unordered(q) => q.push_back((index, result)),
        }
        for w in b.wakers.drain(..) {
            let _ = w.send(());
        }
        if b.whole_done() {
            if let Some(cb) = b.callback.take() {
                let outcome = match &b.results {
                    Results::Whole { error: Some(e), .. } => Err(e.clone()),
                    Results::Whole { chunks, .. } => Ok(chunks
                        .iter()
                        .map(|c| c.clone().unwrap_or_default())
                        .collect()),
                    _ => unreachable!("only whole batches are done"),
                };
                self.deferred.push(Box::new(move || cb(outcome)));
            }
        }
        let gone = b.abandoned && (b.whole_done() || b.pending == 0);
        if gone {
            self.batches.remove(&batch);
        }
        if cancel || gone {
            // A failed map drops its chunks not sent yet; those running finish unheard.
            self.drop_queued(batch);
        }
    }

    /// Removes the queued (unsent) chunks of a batch.
    pub(crate) fn drop_queued(&mut self, batch: u64) {
        let before = self.queue.len();
        self.queue.retain(|j| j.batch != batch);
        let dropped = before - self.queue.len();
        if dropped > 0 {
            if let Some(b) = self.batches.get_mut(&batch) {
                b.pending = b.pending.saturating_sub(dropped);
            }
        }
    }

    /// A handle to a batch was dropped.
    pub(crate) fn abandon(&mut self, batch: u64) {
        self.drop_queued(batch);
        if let Some(b) = self.batches.get_mut(&batch) {
            b.abandoned = true;
            if b.pending == 0 || b.whole_done() {
                self.batches.remove(&batch);
            }
        }
    }

    /// Terminate: fails everything outstanding, stops every worker; returns the processes
    /// to reap.
    pub(crate) fn terminate(&mut self) -> Vec<Process<()>> {
        self.phase = Phase::Terminated;
        self.restarts.clear();
        let err = PoolError::new(Kind::Terminated);
        let mut jobs: Vec<Job> = self.queue.drain(..).collect();
        let mut procs = std::mem::take(&mut self.retired);
        for mut s in self.slots.drain(..) {
            jobs.extend(s.in_flight.drain(..));
            s.sock = None;
            let _ = s.process.terminate();
            procs.push(s.process);
        }
        for job in jobs {
            self.complete(job.batch, job.index, Err(err.clone()));
        }
        self.finished = true;
        procs
    }

    /// The processes of a finished pool, to join.
    pub(crate) fn take_retired(&mut self) -> Vec<Process<()>> {
        std::mem::take(&mut self.retired)
    }

    /// Pids of the live workers.
    pub(crate) fn pids(&self) -> Vec<i32> {
        self.slots
            .iter()
            .filter(|s| s.sock.is_some())
            .map(|s| s.pid)
            .collect()
    }

    pub(crate) fn take_deferred(&mut self) -> Vec<Box<dyn FnOnce() + Send>> {
        std::mem::take(&mut self.deferred)
    }
}

impl Slot {
    /// Writes what is buffered, without blocking; false when the worker is gone. The
    /// arguments of tasks fully written are dropped unless `keep_args` (a pool that
    /// retries); until then they stay, so that a task whose frame never left can be sent
    /// to another worker.
    fn flush(&mut self, keep_args: bool) -> bool {
        let Some(sock) = &self.sock else {
            return self.wbuf.is_empty();
        };
        let mut done = 0;
        let ok = loop {
            if done == self.wbuf.len() {
                break true;
            }
            match (&sock.0).write(&self.wbuf[done..]) {
                Ok(n) => done += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break true,
                Err(_) => break false,
            }
        };
        if !ok {
            self.wbuf.clear();
            self.sock = None;
            return false;
        }
        self.wbuf.drain(..done);
        if self.wbuf.is_empty() {
            if !keep_args {
                for job in self.in_flight.iter_mut().skip(self.sent) {
                    job.args = Vec::new();
                }
            }
            self.sent = self.in_flight.len();
            if self.wbuf.capacity() > 1 << 20 {
                self.wbuf = Vec::new();
            }
        }
        true
    }
}

fn decode_remote(payload: &[u8]) -> RemoteError {
    decode_value(payload).unwrap_or_else(|e| serve::remote(format!("undecodable report: {e}")))
}

/// How long `terminate` lets workers end after SIGTERM before SIGKILL.
pub(crate) const TERMINATE_GRACE: Duration = Duration::from_secs(1);

/// Reaps stopped workers: SIGKILL for any still running after the grace period.
pub(crate) fn reap(procs: &[Process<()>], grace: Duration) {
    let deadline = Instant::now() + grace;
    for p in procs {
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = p.join(Some(left));
        if matches!(p.exitcode(), Ok(None)) {
            let _ = p.kill();
            let _ = p.join(None);
        }
    }
}

/// Reads every deferred callback of `st` outside the lock.
pub(crate) fn run_callbacks(calls: Vec<Box<dyn FnOnce() + Send>>) {
    for call in calls {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call));
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("Pool")
            .field("processes", &self.cfg.processes)
            .field("phase", &st.phase)
            .field("workers", &st.pids())
            .field("queued", &st.queue.len())
            .finish()
    }
}
