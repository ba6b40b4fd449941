//! `Pool`: Python's `multiprocessing.Pool`, a pool of worker processes that run tasks —
//! and that never hangs when a worker dies.
//!
//! # Examples
//!
//! ```no_run
//! use std::time::Duration;
//! use procvisor::Pool;
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! let pool = Pool::new(4)?;
//! assert_eq!(pool.map(square, 0..10, None)?, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
//! let mut seen: Vec<u64> = pool.imap_unordered(square, 0..10, 1)?.collect::<Result<_, _>>()?;
//! seen.sort();
//! assert_eq!(seen.len(), 10);
//! let res = pool.apply_async(square, 20)?;
//! assert_eq!(res.get(Some(Duration::from_secs(1)))?, 400);
//! pool.close();
//! pool.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # How it works
//!
//! Each worker is a [`Process`](crate::Process) (daemonic, named `PoolWorker-N`) running a
//! loop that serves tasks over a private socketpair. A task names its function the way
//! `Process::new` does — the offset of a monomorphised trampoline within this executable
//! — so one worker serves every function of the program. Tasks are chunks: `map` cuts its
//! input into chunks (CPython's default size: the input length over four times the
//! workers, rounded up), `imap` into chunks of the size given (1 by default in Python).
//!
//! Several tasks are in flight per worker (as many as keep about a millisecond of work
//! queued there, from the task times the workers report), written to its socket in one
//! system call and answered in batches. There is no scheduler thread on the hot path:
//! whichever thread waits for results reads them (see `pool/core.rs`), and a background
//! thread does so only for work nobody waits on (`apply_async` with callbacks, say).
//!
//! # States
//!
//! `Running → Closed → (joined)` or `Running | Closed → Terminated`. [`close`](Pool::close)
//! refuses new tasks and lets outstanding ones complete, after which the workers exit;
//! [`terminate`](Pool::terminate) stops the workers at once (SIGTERM, then SIGKILL after a
//! second) and fails every outstanding task with [`PoolError::is_terminated`];
//! [`join`](Pool::join) waits for the workers and is an error in the Running state.
//! Dropping a pool terminates it, like leaving Python's `with` block.
//!
//! # Failures
//!
//! - A task that panics, or returns `Err` through [`fallible`], fails with that message
//!   ([`PoolError::remote`]). In a chunk, one failing item fails the whole chunk, as in
//!   CPython.
//! - `map` fails with the first error to arrive; its chunks not yet sent to a worker are
//!   dropped, those already running complete and are discarded.
//! - A worker that dies holding tasks (killed, aborted, out of memory) fails exactly those
//!   tasks with a [`PoolError::worker_pid`] / [`PoolError::worker_status`] error — or, in a
//!   pool built with [`PoolBuilder::retries`], runs them again elsewhere — and is replaced;
//!   every other task completes.
//! - Arguments that do not serialize fail the call at once; arguments or results that do
//!   not (de)serialize in the worker fail that task ([`PoolError::is_serde`]). The pool
//!   goes on.
//! - An initializer that fails is reported (its panic is printed by the worker) and
//!   retried with backoff (100 ms, doubling); after three failures in a row the pool is
//!   broken and every waiting and later task fails with [`PoolError::is_initializer`].
//!
//! # Caveats
//!
//! - Task functions follow [`Process::new`](crate::Process::new)'s rule: a `fn` item or a
//!   closure that captures nothing, checked at compile time. Several arguments travel as
//!   a tuple, which makes [`starmap`](Pool::starmap) the same call as `map`.
//! - Callbacks run on whichever pool thread collected the result; like Python's, they
//!   should return quickly.
//! - [`join`](Pool::join) after `close` waits for every live [`IMap`] to be exhausted or
//!   dropped: its remaining input is outstanding work.
//!
//! ```compile_fail
//! let pool = procvisor::Pool::new(1).unwrap();
//! let k = 3;
//! // A capturing closure is refused at compile time.
//! let _ = pool.apply(move |x: u32| x + k, 1);
//! ```

use std::any::type_name;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use procvisor_protocol::frame::decode_value;
use procvisor_protocol::{RemoteError, encode_value};
use procvisor_worker::entry::{self, EntryFn};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

mod core;
mod error;
mod serve;
mod wire;

use self::core::{Batch, Config, Phase, Results, Shared, State};
use self::error::Kind;
pub use self::error::PoolError;
use crate::restart::Backoff;
use crate::spawn::{self, StartMethod};

/// The entry point a worker runs for a chunk of `f`'s tasks: decode the `Vec<A>`, call the
/// zero-sized `F` on each, encode the `Vec<R>` behind a status byte (0: values; 1: the
/// results did not serialize, and why).
fn chunk_trampoline<F, A, R>(args: &[u8]) -> Result<Vec<u8>, RemoteError>
where
    F: Fn(A) -> R,
    A: DeserializeOwned,
    R: Serialize,
{
    let items: Vec<A> = decode_value(args).map_err(|e| {
        serve::remote(format!(
            "arguments did not decode as {}: {e}",
            type_name::<A>()
        ))
    })?;
    let f: F = entry::zero_sized_callable::<F, A, R>();
    let results: Vec<R> = items.into_iter().map(&f).collect();
    let mut out = Vec::with_capacity(16);
    out.push(0);
    match rmp_serde::encode::write_named(&mut out, &results) {
        Ok(()) => Ok(out),
        Err(e) => {
            let mut out = vec![1];
            out.extend_from_slice(
                format!(
                    "the result ({}) could not be serialized: {e}",
                    type_name::<R>()
                )
                .as_bytes(),
            );
            Ok(out)
        }
    }
}

/// The entry offset of `f`'s chunk trampoline, checking at compile time that `F` is
/// zero-sized.
fn entry_of<F, A, R>(_: &F) -> i64
where
    F: Fn(A) -> R + Send + Sync + 'static,
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
{
    const {
        assert!(
            std::mem::size_of::<F>() == 0,
            "a pool task must be a fn item or a non-capturing closure"
        )
    };
    let f: EntryFn = chunk_trampoline::<F, A, R>;
    entry::offset_of(f)
}

/// Wraps a function returning `Result` into a task that fails with the `Err`'s message
/// (its `Display`), as a raised exception fails a Python task. The error does not print a
/// panic message in the worker.
///
/// ```no_run
/// use procvisor::{pool::fallible, Pool};
///
/// fn parse(s: String) -> Result<u32, std::num::ParseIntError> {
///     s.parse()
/// }
///
/// let pool = Pool::new(2)?;
/// assert_eq!(pool.apply(fallible(parse), "42".to_owned())?, 42);
/// let err = pool.apply(fallible(parse), "x".to_owned()).unwrap_err();
/// assert_eq!(err.remote().unwrap().message, "invalid digit found in string");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn fallible<F, A, T, E>(f: F) -> impl Fn(A) -> T + Copy + Send + Sync + 'static
where
    F: Fn(A) -> Result<T, E> + Copy + Send + Sync + 'static,
    E: fmt::Display,
{
    move |a| match f(a) {
        Ok(t) => t,
        // No panic hook runs for a resumed unwind: the worker reports the message quietly.
        Err(e) => std::panic::resume_unwind(Box::new(e.to_string())),
    }
}

/// Options of a [`Pool`], Python's `Pool(processes, initializer, initargs,
/// maxtasksperchild)` plus a start method and retries.
///
/// ```no_run
/// use procvisor::{Pool, StartMethod};
///
/// fn setup(name: String) {
///     eprintln!("worker {} ready for {name}", std::process::id());
/// }
///
/// let pool = Pool::builder()
///     .processes(2)
///     .initializer(setup, "jobs".to_owned())
///     .maxtasksperchild(100)
///     .start_method(StartMethod::Spawn)
///     .retries(1)
///     .build()?;
/// # drop(pool);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct PoolBuilder {
    processes: Option<usize>,
    init: Option<(i64, Result<Vec<u8>, procvisor_protocol::EncodeError>)>,
    max_tasks: Option<u64>,
    method: Option<StartMethod>,
    retries: u32,
    backoff: Backoff,
}

impl PoolBuilder {
    /// How many workers (at least 1); `cpu_count()` by default.
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// A function every worker runs with `args` before its first task (Python's
    /// `initializer` and `initargs`). Wrap it in [`fallible`] to fail with an `Err`.
    pub fn initializer<F, A>(mut self, f: F, args: A) -> Self
    where
        F: Fn(A) + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
    {
        let entry = entry_of::<F, A, ()>(&f);
        self.init = Some((entry, encode_value(std::slice::from_ref(&args))));
        self
    }

    /// Replaces each worker after it has run `n` tasks (chunks), without losing any.
    pub fn maxtasksperchild(mut self, n: u64) -> Self {
        self.max_tasks = Some(n.max(1));
        self
    }

    /// How workers are started; the program's default method unless set.
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// Runs a task again on another worker, up to `n` times, when the worker running it
    /// dies (not when the task itself fails). Retried tasks must tolerate running twice.
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = n;
        self
    }

    /// The delays between attempts to start a worker whose initializer failed.
    pub fn init_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Starts the workers.
    pub fn build(self) -> Result<Pool, PoolError> {
        let init = match self.init {
            None => None,
            Some((entry, Ok(args))) => Some((entry, args)),
            Some((_, Err(e))) => return Err(PoolError::new(Kind::Serialize(e))),
        };
        let cfg = Config {
            processes: self.processes.unwrap_or_else(crate::cpu_count).max(1),
            method: self.method.unwrap_or_else(spawn::get_start_method),
            init,
            max_tasks: self.max_tasks,
            retries: self.retries,
            backoff: self.backoff,
        };
        let shared = Arc::new(Shared::new(cfg).map_err(|e| {
            PoolError::new(Kind::Spawn(crate::Error::new(crate::error::Kind::Spawn(
                nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(nix::libc::EIO)),
            ))))
        })?);
        let pool = Pool {
            shared: shared.clone(),
            background: Mutex::new(None),
        };
        // On failure, dropping `pool` terminates the workers already started.
        shared.start_workers()?;
        let bg = shared.clone();
        let handle = std::thread::Builder::new()
            .name("procvisor-pool".into())
            .spawn(move || bg.background())
            .map_err(|e| {
                PoolError::new(Kind::Spawn(crate::Error::new(crate::error::Kind::Spawn(
                    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(nix::libc::EAGAIN)),
                ))))
            })?;
        *pool.background.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(pool)
    }
}

/// A pool of worker processes: Python's `multiprocessing.Pool`.
///
/// See the [module documentation](self) for the life cycle and the failure rules.
pub struct Pool {
    shared: Arc<Shared>,
    background: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.shared, f)
    }
}

/// Chunks of encoded arguments are handed to the pool in groups of about this many bytes,
/// so that workers start while the rest of a large input is still being encoded.
const SUBMIT_GROUP_BYTES: usize = 64 * 1024;

/// Python's default chunksize for `map` over `len` items.
fn default_chunksize(len: usize, processes: usize) -> usize {
    let (chunk, extra) = (len / (processes * 4), len % (processes * 4));
    (chunk + usize::from(extra > 0)).max(1)
}

fn decode_chunk<R: DeserializeOwned>(bytes: &[u8]) -> Result<Vec<R>, PoolError> {
    decode_value(bytes).map_err(|err| {
        PoolError::new(Kind::Decode {
            expected: type_name::<R>(),
            err,
        })
    })
}

fn decode_one<R: DeserializeOwned>(chunks: &[Vec<u8>]) -> Result<R, PoolError> {
    let bytes = chunks.first().map(Vec::as_slice).unwrap_or_default();
    decode_chunk::<R>(bytes)?
        .pop()
        .ok_or_else(|| PoolError::new(Kind::Protocol("a task answered with no value".to_owned())))
}

fn decode_all<R: DeserializeOwned>(chunks: &[Vec<u8>]) -> Result<Vec<R>, PoolError> {
    let mut out = Vec::new();
    for c in chunks {
        let mut v = decode_chunk::<R>(c)?;
        if out.is_empty() {
            out = v;
        } else {
            out.append(&mut v);
        }
    }
    Ok(out)
}

impl Pool {
    /// A pool of `processes` workers (at least 1) with the program's default start method.
    ///
    /// ```no_run
    /// let pool = procvisor::Pool::new(2)?;
    /// assert_eq!(pool.processes(), 2);
    /// # Ok::<(), procvisor::pool::PoolError>(())
    /// ```
    pub fn new(processes: usize) -> Result<Pool, PoolError> {
        Pool::builder().processes(processes).build()
    }

    /// The options of a pool, for `initializer`, `maxtasksperchild` and the rest.
    ///
    /// ```
    /// let builder = procvisor::Pool::builder().processes(3);
    /// # drop(builder);
    /// ```
    pub fn builder() -> PoolBuilder {
        PoolBuilder {
            processes: None,
            init: None,
            max_tasks: None,
            method: None,
            retries: 0,
            backoff: Backoff::default(),
        }
    }

    /// How many workers the pool keeps.
    ///
    /// ```no_run
    /// assert!(procvisor::Pool::builder().build()?.processes() >= 1);
    /// # Ok::<(), procvisor::pool::PoolError>(())
    /// ```
    pub fn processes(&self) -> usize {
        self.shared.cfg.processes
    }

    /// The pids of the workers alive now (replaced workers get new pids).
    ///
    /// ```no_run
    /// let pool = procvisor::Pool::new(2)?;
    /// assert_eq!(pool.pids().len(), 2);
    /// # Ok::<(), procvisor::pool::PoolError>(())
    /// ```
    pub fn pids(&self) -> Vec<i32> {
        self.shared.lock().pids()
    }

    /// Creates a whole batch of `chunks` chunks, with its callback.
    fn whole_batch(
        &self,
        st: &mut State,
        chunks: usize,
        callback: Option<core::BatchCallback>,
    ) -> u64 {
        let mut batch = Batch::new(Results::Whole {
            chunks: vec![None; chunks],
            left: chunks,
            error: None,
        });
        batch.callback = callback;
        st.new_batch(batch)
    }

    fn submit_one<A: Serialize>(
        &self,
        entry: i64,
        args: &A,
        callback: Option<core::BatchCallback>,
        kick: bool,
    ) -> Result<u64, PoolError> {
        let bytes = encode_value(std::slice::from_ref(args))
            .map_err(|e| PoolError::new(Kind::Serialize(e)))?;
        let mut st = self.shared.lock();
        if let Some(e) = st.refuse() {
            return Err(e);
        }
        let batch = self.whole_batch(&mut st, 1, callback);
        st.submit(batch, 0, entry, bytes);
        st.dispatch(&self.shared.cfg);
        if kick {
            self.shared.kick(&st);
        } else {
            self.shared.nudge(&st);
        }
        Ok(batch)
    }

    /// Python's `apply`: runs `f(args)` in a worker and waits for the result.
    ///
    /// ```no_run
    /// fn add((a, b): (i32, i32)) -> i32 {
    ///     a + b
    /// }
    /// let pool = procvisor::Pool::new(1)?;
    /// assert_eq!(pool.apply(add, (2, 3))?, 5);
    /// # Ok::<(), procvisor::pool::PoolError>(())
    /// ```
    pub fn apply<F, A, R>(&self, f: F, args: A) -> Result<R, PoolError>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let entry = entry_of::<F, A, R>(&f);
        let batch = self.submit_one(entry, &args, None, false)?;
        AsyncResult::<R>::new(self.shared.clone(), batch, decode_one::<R>).get(None)
    }

    /// Python's `apply_async`: runs `f(args)` in a worker; the result comes later.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = procvisor::Pool::new(1)?;
    /// let res = pool.apply_async(square, 20)?;
    /// assert_eq!(res.get(Some(Duration::from_secs(1)))?, 400);
    /// # Ok::<(), procvisor::pool::PoolError>(())
    /// ```
    pub fn apply_async<F, A, R>(&self, f: F, args: A) -> Result<AsyncResult<R>, PoolError>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let entry = entry_of::<F, A, R>(&f);
        let batch = self.submit_one(entry, &args, None, true)?;
        Ok(AsyncResult::new(
            self.shared.clone(),
            batch,
            decode_one::<R>,
        ))
    }

    /// `apply_async` with Python's `callback` and `error_callback`: exactly one of them is
    /// called, on a pool thread, when the task ends. `get` still works.
    ///
    /// ```no_run
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = procvisor::Pool::new(1)?;
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let tx2 = tx.clone();
    /// let _res = pool.apply_async_with(
    ///     square,
    ///     7,
    ///     move |v| tx.send(Ok(v)).unwrap(),
    ///     move |e| tx2.send(Err(e.to_string())).unwrap(),
    /// )?;
    /// assert_eq!(rx.recv().unwrap(), Ok(49));
    /// # Ok::<(), procvisor::pool::PoolError>(())
    /// ```
    pub fn apply_async_with<F, A, R>(
        &self,
        f: F,
        args: A,
        callback: impl FnOnce(R) + Send + 'static,
        error_callback: impl FnOnce(PoolError) + Send + 'static,
    ) -> Result<AsyncResult<R>, PoolError>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let entry = entry_of::<F, A, R>(&f);
        let cb = callbacks(decode_one::<R>, callback, error_callback);
        let batch = self.submit_one(entry, &args, Some(cb), true)?;
        Ok(AsyncResult::new(
            self.shared.clone(),
            batch,
            decode_one::<R>,
        ))
    }

    /// Cuts `items` into chunks, submits them as one whole batch, in groups as they are
    /// encoded.
    fn submit_map<A: Serialize>(
        &self,
        entry: i64,
        items: Vec<A>,
        chunksize: Option<usize>,
        callback: Option<core::BatchCallback>,
        kick: bool,
    ) -> Result<u64, PoolError> {
        let size = chunksize
            .unwrap_or_else(|| default_chunksize(items.len(), self.shared.cfg.processes))
            .max(1);
        let n = items.len().div_ceil(size);
        let batch = {
            let mut st = self.shared.lock();
            if let Some(e) = st.refuse() {
                return Err(e);
            }
            self.whole_batch(&mut st, n, callback)
        };
        let mut group: Vec<(usize, Vec<u8>)> = Vec::new();
        let mut group_bytes = 0;
        for (i, chunk) in items.chunks(size).enumerate() {
            match encode_value(chunk) {
                Ok(bytes) => {
                    group_bytes += bytes.len();
                    group.push((i, bytes));
                }
                Err(e) => {
                    // The map has failed: what was not submitted yet never will be.
                    let mut st = self.shared.lock();
                    st.fail_now(batch, i, PoolError::new(Kind::Serialize(e)));
                    return Ok(batch);
                }
            }
            if group_bytes >= SUBMIT_GROUP_BYTES || i + 1 == n {
                let mut st = self.shared.lock();
                if let Some(e) = st.refuse() {
                    st.fail_now(batch, i, e);
                    return Ok(batch);
                }
                for (index, bytes) in group.drain(..) {
                    st.submit(batch, index, entry, bytes);
                }
                group_bytes = 0;
                st.dispatch(&self.shared.cfg);
                if kick {
                    self.shared.kick(&st);
                } else {
                    self.shared.nudge(&st);
                }
            }
        }
        Ok(batch)
    }

    /// Python's `map`: `f` over every item, in order. The input is collected first (it
    /// needs no length up front) and cut into chunks of `chunksize`, or of CPython's
    /// default size with `None`. Fails with the first error (see the module's failure
    /// rules).
    ///
    /// ```no_run
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = procvisor::Pool::new(4)?;
    /// assert_eq!(pool.map(square, 0..10, None)?, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
    /// assert_eq!(pool.map(square, vec![3, 4], Some(1))?, [9, 16]);
    /// # Ok::<(), procvisor::pool::PoolError>(())
    /// ```
    pub fn map<F, A, R, I>(
        &self,
        f: F,
        iterable: I,
        chunksize: Option<usize>,
    ) -> Result<Vec<R>, PoolError>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        let entry = entry_of::<F, A, R>(&f);
        let items: Vec<A> = iterable.into_iter().collect();
        let batch = self.submit_map(entry, items, chunksize, None, false)?;
        AsyncResult::<Vec<R>>::new(self.shared.clone(), batch, decode_all::<R>).get(None)
    }

    /// Python's `map_async`: `map` without waiting.
    ///
    /// ```no_run
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = procvisor::Pool::new(2)?;
    /// let res = pool.map_async(square, 10..20, None)?;
    /// assert_eq!(res.get(None)?[0], 100);
    /// # Ok::<(), procvisor::pool::PoolError>(())
    /// ```
    pub fn map_async<F, A, R, I>(
        &self,
        f: F,
        iterable: I,
        chunksize: Option<usize>,
    ) -> Result<AsyncResult<Vec<R>>, PoolError>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        let entry = entry_of::<F, A, R>(&f);
        let items: Vec<A> = iterable.into_iter().collect();
        let batch = self.submit_map(entry, items, chunksize, None, true)?;
        Ok(AsyncResult::new(
            self.shared.clone(),
            batch,
            decode_all::<R>,
        ))
    }

    /// `map_async` with Python's `callback` (given the whole list) and `error_callback`.
    ///
    /// ```no_run
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = procvisor::Pool::new(2)?;
    /// let (tx, rx) = std::sync::mpsc::channel();
    /// let _res = pool.map_async_with(square, 0..4, None, move |v| tx.send(v).unwrap(), |_| {})?;
    /// assert_eq!(rx.recv().unwrap(), [0, 1, 4, 9]);
    /// # Ok::<(), procvisor::pool::PoolError>(())
    /// ```
    pub fn map_async_with<F, A, R, I>(
        &self,
        f: F,
        iterable: I,
        chunksize: Option<usize>,
        callback: impl FnOnce(Vec<R>) + Send + 'static,
        error_callback: impl FnOnce(PoolError) + Send + 'static,
    ) -> Result<AsyncResult<Vec<R>>, PoolError>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        let entry = entry_of::<F, A, R>(&f);
        let items: Vec<A> = iterable.into_iter().collect();
        let cb = callbacks(decode_all::<R>, callback, error_callback);
        let batch = self.submit_map(entry, items, chunksize, Some(cb), true)?;
        Ok(AsyncResult::new(
            self.shared.clone(),
            batch,
            decode_all::<R>,
        ))
    }

    /// Python's `starmap`. A Rust task takes its several arguments as one tuple, so this is
    /// [`map`](Pool::map) over tuples, kept under Python's name for ports.
    ///
    /// ```no_run
    /// fn mul((a, b): (u32, u32)) -> u32 { a * b }
    /// let pool = procvisor::Pool::new(2)?;
    /// assert_eq!(pool.starmap(mul, (0..3).zip(1..4), None)?, [0, 2, 6]);
    /// # Ok::<(), procvisor::pool::PoolError>(())
    /// ```
    pub fn starmap<F, A, R, I>(
        &self,
        f: F,
        iterable: I,
        chunksize: Option<usize>,
    ) -> Result<Vec<R>, PoolError>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        self.map(f, iterable, chunksize)
    }

    /// Python's `starmap_async`: [`map_async`](Pool::map_async) over tuples.
    ///
    /// ```no_run
    /// fn mul((a, b): (u32, u32)) -> u32 { a * b }
    /// let pool = procvisor::Pool::new(2)?;
    /// assert_eq!(pool.starmap_async(mul, [(2, 3)], None)?.get(None)?, [6]);
    /// # Ok::<(), procvisor::pool::PoolError>(())
    /// ```
    pub fn starmap_async<F, A, R, I>(
        &self,
        f: F,
        iterable: I,
        chunksize: Option<usize>,
    ) -> Result<AsyncResult<Vec<R>>, PoolError>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        self.map_async(f, iterable, chunksize)
    }

    fn start_imap<F, A, R, I>(
        &self,
        f: F,
        iterable: I,
        chunksize: usize,
        ordered: bool,
    ) -> Result<IMap<R, I::IntoIter>, PoolError>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        let entry = entry_of::<F, A, R>(&f);
        let mut st = self.shared.lock();
        if let Some(e) = st.refuse() {
            return Err(e);
        }
        let results = if ordered {
            Results::Ordered(HashMap::new())
        } else {
            Results::Unordered(VecDeque::new())
        };
        let batch = st.new_batch(Batch::new(results));
        st.feeders += 1;
        Ok(IMap {
            shared: self.shared.clone(),
            batch,
            source: Some(iterable.into_iter()),
            entry,
            chunksize: chunksize.max(1),
            submitted: 0,
            received: 0,
            next: 0,
            ordered,
            sizes: HashMap::new(),
            local: VecDeque::new(),
            waiting: None,
            window: self.shared.cfg.processes * IMAP_WINDOW_PER_WORKER,
            released: false,
            _r: PhantomData,
        })
    }

    /// Python's `imap`: a lazy `map` whose results come in order as an iterator of
    /// `Result`s, one per item. The input is read as results are consumed, with a bounded
    /// number of chunks of `chunksize` items in flight, so an endless input works.
    ///
    /// ```no_run
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = procvisor::Pool::new(2)?;
    /// let first: Vec<u64> = pool.imap(square, 0.., 1)?.take(3).collect::<Result<_, _>>()?;
    /// assert_eq!(first, [0, 1, 4]);
    /// # Ok::<(), procvisor::pool::PoolError>(())
    /// ```
    pub fn imap<F, A, R, I>(
        &self,
        f: F,
        iterable: I,
        chunksize: usize,
    ) -> Result<IMap<R, I::IntoIter>, PoolError>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        self.start_imap(f, iterable, chunksize, true)
    }

    /// Python's `imap_unordered`: as [`imap`](Pool::imap), with results in the order they
    /// complete.
    ///
    /// ```no_run
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = procvisor::Pool::new(2)?;
    /// let mut all: Vec<u64> = pool.imap_unordered(square, 0..4, 1)?.collect::<Result<_, _>>()?;
    /// all.sort();
    /// assert_eq!(all, [0, 1, 4, 9]);
    /// # Ok::<(), procvisor::pool::PoolError>(())
    /// ```
    pub fn imap_unordered<F, A, R, I>(
        &self,
        f: F,
        iterable: I,
        chunksize: usize,
    ) -> Result<IMap<R, I::IntoIter>, PoolError>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        self.start_imap(f, iterable, chunksize, false)
    }

    /// Python's `close`: no new tasks; outstanding ones complete, then the workers exit.
    /// Closing twice is fine.
    ///
    /// ```no_run
    /// let pool = procvisor::Pool::new(1)?;
    /// pool.close();
    /// fn id(x: u8) -> u8 { x }
    /// assert!(pool.apply(id, 1).unwrap_err().is_not_running());
    /// pool.join()?;
    /// # Ok::<(), procvisor::pool::PoolError>(())
    /// ```
    pub fn close(&self) {
        let mut st = self.shared.lock();
        if st.phase == Phase::Running {
            st.phase = Phase::Closed;
        }
        drop(st);
        self.shared.notify_all();
    }

    /// Python's `terminate`: stops the workers now (SIGTERM, SIGKILL after a second) and
    /// fails every outstanding task with [`PoolError::is_terminated`]. Returns once the
    /// workers are gone. Terminating twice is fine.
    ///
    /// ```no_run
    /// fn nap(_: ()) { std::thread::sleep(std::time::Duration::from_secs(60)) }
    /// let pool = procvisor::Pool::new(1)?;
    /// let res = pool.apply_async(nap, ())?;
    /// pool.terminate();
    /// assert!(res.get(None).unwrap_err().is_terminated());
    /// # Ok::<(), procvisor::pool::PoolError>(())
    /// ```
    pub fn terminate(&self) {
        let mut st = self.shared.lock();
        let procs = st.terminate();
        let calls = st.take_deferred();
        drop(st);
        self.shared.notify_all();
        core::run_callbacks(calls);
        core::reap(&procs, core::TERMINATE_GRACE);
        self.join_background();
    }

    /// Python's `join`: waits for the workers to exit; an error unless the pool was closed
    /// or terminated first.
    ///
    /// ```no_run
    /// let pool = procvisor::Pool::new(2)?;
    /// assert!(pool.join().unwrap_err().is_misuse());
    /// pool.close();
    /// pool.join()?;
    /// # Ok::<(), procvisor::pool::PoolError>(())
    /// ```
    pub fn join(&self) -> Result<(), PoolError> {
        let st = self.shared.lock();
        if st.phase == Phase::Running {
            return Err(PoolError::new(Kind::JoinWhileRunning));
        }
        let (mut st, _) = self.shared.wait_until(st, None, |st| st.finished);
        let procs = st.take_retired();
        drop(st);
        // Closed workers exit as soon as they see the end of their socket.
        core::reap(&procs, Duration::from_secs(10));
        self.join_background();
        Ok(())
    }

    fn join_background(&self) {
        // It leaves once the pool is finished or terminated, when next woken.
        self.shared.notify_all();
        let handle = self
            .background
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

impl Drop for Pool {
    /// Terminates the pool unless it was joined: no worker, descriptor or zombie is left.
    fn drop(&mut self) {
        let finished = {
            let st = self.shared.lock();
            st.finished && st.phase != Phase::Running
        };
        if finished {
            let procs = self.shared.lock().take_retired();
            core::reap(&procs, core::TERMINATE_GRACE);
            self.shared.notify_all();
            self.join_background();
        } else {
            self.terminate();
        }
    }
}

/// Wraps typed callbacks into a batch callback that decodes first.
fn callbacks<T: 'static>(
    decode: fn(&[Vec<u8>]) -> Result<T, PoolError>,
    callback: impl FnOnce(T) + Send + 'static,
    error_callback: impl FnOnce(PoolError) + Send + 'static,
) -> core::BatchCallback {
    Box::new(
        move |outcome| match outcome.and_then(|chunks| decode(&chunks)) {
            Ok(v) => callback(v),
            Err(e) => error_callback(e),
        },
    )
}

/// The result of `apply_async`, `map_async` or `starmap_async`: Python's `AsyncResult`.
///
/// Dropping it forgets the result; the task still runs (and its callbacks are called).
pub struct AsyncResult<T> {
    shared: Arc<Shared>,
    batch: u64,
    decode: fn(&[Vec<u8>]) -> Result<T, PoolError>,
}

impl<T> fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult")
            .field("batch", &self.batch)
            .field("ready", &self.ready())
            .finish()
    }
}

/// What a whole batch holds once done: every chunk's bytes, or its first error.
fn settled(st: &State, batch: u64) -> Option<Result<Vec<Vec<u8>>, PoolError>> {
    let b = st.batches.get(&batch)?;
    if !b.whole_done() {
        return None;
    }
    match &b.results {
        Results::Whole { error: Some(e), .. } => Some(Err(e.clone())),
        Results::Whole { chunks, .. } => Some(Ok(chunks
            .iter()
            .map(|c| c.clone().unwrap_or_default())
            .collect())),
        _ => None,
    }
}

impl<T> AsyncResult<T> {
    fn new(
        shared: Arc<Shared>,
        batch: u64,
        decode: fn(&[Vec<u8>]) -> Result<T, PoolError>,
    ) -> Self {
        AsyncResult {
            shared,
            batch,
            decode,
        }
    }

    fn is_done(st: &State, batch: u64) -> bool {
        st.batches.get(&batch).is_none_or(|b| b.whole_done())
    }

    /// Python's `get`: the result, waiting up to `timeout` (`None`: for ever). When the
    /// time runs out the error [`is_timeout`](PoolError::is_timeout), the task goes on and
    /// `get` may be called again. Each call decodes the value afresh.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// fn nap(s: u64) { std::thread::sleep(Duration::from_secs(s)) }
    /// let pool = procvisor::Pool::new(1)?;
    /// let res = pool.apply_async(nap, 2)?;
    /// assert!(res.get(Some(Duration::from_millis(100))).unwrap_err().is_timeout());
    /// res.get(None)?;
    /// # Ok::<(), procvisor::pool::PoolError>(())
    /// ```
    pub fn get(&self, timeout: Option<Duration>) -> Result<T, PoolError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let st = self.shared.lock();
        let batch = self.batch;
        let (st, done) = self
            .shared
            .wait_until(st, deadline, |st| Self::is_done(st, batch));
        if !done {
            return Err(PoolError::new(Kind::Timeout));
        }
        let outcome = settled(&st, batch);
        drop(st);
        match outcome {
            Some(Ok(chunks)) => (self.decode)(&chunks),
            Some(Err(e)) => Err(e),
            None => Err(PoolError::new(Kind::Terminated)),
        }
    }

    /// Python's `wait`: waits up to `timeout` for the result; returns whether it is ready.
    ///
    /// ```no_run
    /// fn id(x: u8) -> u8 { x }
    /// let pool = procvisor::Pool::new(1)?;
    /// let res = pool.apply_async(id, 1)?;
    /// assert!(res.wait(None));
    /// # Ok::<(), procvisor::pool::PoolError>(())
    /// ```
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let batch = self.batch;
        let st = self.shared.lock();
        self.shared
            .wait_until(st, deadline, |st| Self::is_done(st, batch))
            .1
    }

    /// Python's `ready`: whether the task has completed (successfully or not).
    ///
    /// ```no_run
    /// fn id(x: u8) -> u8 { x }
    /// let pool = procvisor::Pool::new(1)?;
    /// let res = pool.apply_async(id, 1)?;
    /// res.wait(None);
    /// assert!(res.ready());
    /// # Ok::<(), procvisor::pool::PoolError>(())
    /// ```
    pub fn ready(&self) -> bool {
        Self::is_done(&self.shared.lock(), self.batch)
    }

    /// Python's `successful`: whether the task completed without error; an error
    /// ([`is_misuse`](PoolError::is_misuse)) while it is not ready.
    ///
    /// ```no_run
    /// fn id(x: u8) -> u8 { x }
    /// let pool = procvisor::Pool::new(1)?;
    /// let res = pool.apply_async(id, 1)?;
    /// res.wait(None);
    /// assert!(res.successful()?);
    /// # Ok::<(), procvisor::pool::PoolError>(())
    /// ```
    pub fn successful(&self) -> Result<bool, PoolError> {
        let st = self.shared.lock();
        match st.batches.get(&self.batch) {
            Some(b) if !b.whole_done() => Err(PoolError::new(Kind::NotReady)),
            Some(Batch {
                results: Results::Whole { error, .. },
                ..
            }) => Ok(error.is_none()),
            _ => Ok(false),
        }
    }

    /// The result without blocking a thread, for actix and other async code: resolves when
    /// the task completes (the pool's background thread collects it).
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # async fn demo() -> Result<(), procvisor::pool::PoolError> {
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = procvisor::Pool::new(2)?;
    /// let squares = pool.map_async(square, 0..4, None)?.into_future().await?;
    /// assert_eq!(squares, [0, 1, 4, 9]);
    /// # Ok(()) }
    /// ```
    // Written out rather than `async fn`: the signature promises `Send + 'static`, which
    // an actix or tokio spawn needs.
    #[allow(clippy::manual_async_fn)]
    pub fn into_future(self) -> impl Future<Output = Result<T, PoolError>> + Send + 'static
    where
        T: Send + 'static,
    {
        async move {
            loop {
                let rx = {
                    let mut st = self.shared.lock();
                    match st.batches.get_mut(&self.batch) {
                        Some(b) if !b.whole_done() => {
                            let (tx, rx) = oneshot::channel();
                            b.wakers.push(tx);
                            self.shared.kick(&st);
                            Some(rx)
                        }
                        _ => None,
                    }
                };
                match rx {
                    Some(rx) => {
                        let _ = rx.await;
                    }
                    None => return self.get(Some(Duration::ZERO)),
                }
            }
        }
    }
}

impl<T> Drop for AsyncResult<T> {
    fn drop(&mut self) {
        self.shared.lock().abandon(self.batch);
    }
}

/// Chunks an `imap` keeps in flight per worker, at most.
const IMAP_WINDOW_PER_WORKER: usize = 256;

/// The iterator of [`Pool::imap`] and [`Pool::imap_unordered`]: one `Result` per input
/// item. It reads its input lazily, keeping a bounded number of chunks in flight.
///
/// Dropping it stops the feeding and drops its chunks not sent yet.
pub struct IMap<R, I> {
    shared: Arc<Shared>,
    batch: u64,
    /// `None` once exhausted.
    source: Option<I>,
    entry: i64,
    chunksize: usize,
    submitted: usize,
    received: usize,
    /// The next chunk index to yield (ordered).
    next: usize,
    ordered: bool,
    /// Items per chunk submitted and not yielded yet (to repeat a chunk's error per item).
    sizes: HashMap<usize, usize>,
    local: VecDeque<Result<R, PoolError>>,
    /// The wake-up an async reader is parked on.
    waiting: Option<oneshot::Receiver<()>>,
    window: usize,
    /// The input is exhausted and the pool no longer counts this iterator as a feeder.
    released: bool,
    _r: PhantomData<fn() -> R>,
}

impl<R, I> fmt::Debug for IMap<R, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IMap")
            .field("ordered", &self.ordered)
            .field("chunksize", &self.chunksize)
            .field("submitted", &self.submitted)
            .field("received", &self.received)
            .finish()
    }
}

/// What one step of an `imap` found.
enum Step {
    Items,
    End,
    Wait(Option<oneshot::Receiver<()>>),
}

impl<R, I, A> IMap<R, I>
where
    I: Iterator<Item = A>,
    A: Serialize,
    R: DeserializeOwned,
{
    /// Pulls and encodes chunks of input while the window has room (outside the lock).
    fn pull(&mut self) -> Vec<(usize, Result<Vec<u8>, PoolError>)> {
        let mut fresh = Vec::new();
        let in_flight = self.submitted - self.received;
        if self.source.is_none() || in_flight > self.window / 2 {
            return fresh;
        }
        let room = self.window - in_flight;
        let source = self.source.as_mut().expect("checked");
        for _ in 0..room {
            let chunk: Vec<A> = source.by_ref().take(self.chunksize).collect();
            if chunk.is_empty() {
                self.source = None;
                break;
            }
            let index = self.submitted;
            self.submitted += 1;
            self.sizes.insert(index, chunk.len());
            fresh.push((
                index,
                encode_value(&chunk).map_err(|e| PoolError::new(Kind::Serialize(e))),
            ));
            if chunk.len() < self.chunksize {
                self.source = None;
                break;
            }
        }
        fresh
    }

    /// Submits pulled chunks, then moves ready results into `local`; tells what to do next.
    fn step(&mut self, blocking: bool) -> Step {
        let fresh = self.pull();
        let exhausted = self.source.is_none();
        let shared = self.shared.clone();
        let mut st = shared.lock();
        if !fresh.is_empty() {
            let refused = match st.phase {
                Phase::Terminated => st.refuse(),
                _ => st.broken.clone(),
            };
            for (index, bytes) in fresh {
                match (bytes, &refused) {
                    (_, Some(e)) => st.fail_now(self.batch, index, e.clone()),
                    (Ok(bytes), None) => st.submit(self.batch, index, self.entry, bytes),
                    (Err(e), None) => st.fail_now(self.batch, index, e),
                }
            }
            st.dispatch(&shared.cfg);
        }
        if exhausted && !self.released {
            self.released = true;
            st.feeders = st.feeders.saturating_sub(1);
        }
        let batch = self.batch;
        let (ordered, next) = (self.ordered, self.next);
        let ready = |st: &mut State| match st.batches.get(&batch).map(|b| &b.results) {
            Some(Results::Ordered(m)) if ordered => m.contains_key(&next),
            Some(Results::Unordered(q)) => !q.is_empty(),
            _ => false,
        };
        let got = if blocking {
            if !ready(&mut st) {
                shared.nudge(&st);
            }
            let received = self.received;
            let submitted = self.submitted;
            let (s, _) = shared.wait_until(st, None, |st| {
                ready(st) || received == submitted || !st.batches.contains_key(&batch)
            });
            st = s;
            self.take_ready(&mut st)
        } else {
            let got = self.take_ready(&mut st);
            if got.is_empty() && self.received < self.submitted {
                let (tx, rx) = oneshot::channel();
                if let Some(b) = st.batches.get_mut(&batch) {
                    b.wakers.push(tx);
                }
                shared.kick(&st);
                return Step::Wait(Some(rx));
            }
            got
        };
        drop(st);
        if got.is_empty() {
            if self.received == self.submitted && self.source.is_none() {
                return Step::End;
            }
            return Step::Wait(None);
        }
        for (index, chunk) in got {
            let size = self.sizes.remove(&index).unwrap_or(1);
            match chunk.and_then(|bytes| decode_chunk::<R>(&bytes)) {
                Ok(values) => self.local.extend(values.into_iter().map(Ok)),
                Err(e) => self.local.extend((0..size).map(|_| Err(e.clone()))),
            }
        }
        Step::Items
    }

    fn take_ready(&mut self, st: &mut State) -> Vec<(usize, core::Chunk)> {
        let mut got = Vec::new();
        match st.batches.get_mut(&self.batch).map(|b| &mut b.results) {
            Some(Results::Ordered(m)) => {
                while let Some(c) = m.remove(&self.next) {
                    got.push((self.next, c));
                    self.next += 1;
                }
            }
            Some(Results::Unordered(q)) => got.extend(q.drain(..)),
            _ => {}
        }
        self.received += got.len();
        got
    }

    /// The next result without blocking a thread, for actix and other async code; `None`
    /// at the end of the input (the async form of `Iterator::next`).
    ///
    /// ```no_run
    /// # #[allow(dead_code)]
    /// # async fn demo() -> Result<(), procvisor::pool::PoolError> {
    /// fn square(x: u64) -> u64 { x * x }
    /// let pool = procvisor::Pool::new(2)?;
    /// let mut it = pool.imap(square, 0..3, 1)?;
    /// while let Some(v) = it.next_async().await {
    ///     println!("{}", v?);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn next_async(&mut self) -> Option<Result<R, PoolError>> {
        std::future::poll_fn(|cx| self.poll_step(cx)).await
    }

    /// One poll of the async reader: a result, the end, or parked on the pool's wake-up.
    fn poll_step(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<R, PoolError>>> {
        use std::task::Poll;
        loop {
            if let Some(x) = self.local.pop_front() {
                return Poll::Ready(Some(x));
            }
            if let Some(rx) = &mut self.waiting {
                match std::pin::Pin::new(rx).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(_) => self.waiting = None,
                }
            }
            match self.step(false) {
                Step::Items | Step::Wait(None) => {}
                Step::End => return Poll::Ready(None),
                Step::Wait(Some(rx)) => self.waiting = Some(rx),
            }
        }
    }
}

/// The results as a `Stream`, for async code (`futures::StreamExt::next` and friends).
///
/// ```no_run
/// # #[allow(dead_code)]
/// # async fn demo() -> Result<(), procvisor::pool::PoolError> {
/// use std::pin::pin;
/// fn square(x: u64) -> u64 { x * x }
/// let pool = procvisor::Pool::new(2)?;
/// let mut stream = pin!(pool.imap(square, 0..3, 1)?);
/// while let Some(v) = std::future::poll_fn(|cx| {
///     futures_core::Stream::poll_next(stream.as_mut(), cx)
/// }).await {
///     println!("{}", v?);
/// }
/// # Ok(()) }
/// ```
impl<R, I, A> futures_core::Stream for IMap<R, I>
where
    I: Iterator<Item = A> + Unpin,
    A: Serialize,
    R: DeserializeOwned + Unpin,
{
    type Item = Result<R, PoolError>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.get_mut().poll_step(cx)
    }
}

impl<R, I, A> Iterator for IMap<R, I>
where
    I: Iterator<Item = A>,
    A: Serialize,
    R: DeserializeOwned,
{
    type Item = Result<R, PoolError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(x) = self.local.pop_front() {
                return Some(x);
            }
            match self.step(true) {
                Step::End => return None,
                _ => continue,
            }
        }
    }
}

impl<R, I> Drop for IMap<R, I> {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if !self.released {
            st.feeders = st.feeders.saturating_sub(1);
        }
        st.abandon(self.batch);
        drop(st);
        // A closed pool may be waiting for this iterator to finish.
        self.shared.notify_all();
    }
}
