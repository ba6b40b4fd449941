//! Contention and robustness: two processes increment one shared counter under its lock,
//! and the total comes out exact; then a process is killed while it holds a `Lock`, and the
//! next `acquire` reports the dead owner instead of waiting for ever.
//!
//! The first part is the pattern the seed `/work/shared/seeds/003_3b9ef70041973d61.txt`
//! recommends in "进程间共享数据 / 共享内存" for `+=` on a `Value` (which is a read and a
//! write, not one atomic step): `with my_value_obj.get_lock(): my_value_obj.value += 1`. The
//! seed gives no script for it; in Python this part would read:
//!
//! ```python
//! def add(counter):
//!     for _ in range(200_000):
//!         with counter.get_lock():
//!             counter.value += 1
//!
//! counter = Value('q', 0)
//! ps = [Process(target=add, args=(counter,)) for _ in range(2)]
//! for p in ps: p.start()
//! for p in ps: p.join()
//! print(counter.value)   # 400000
//! ```
//!
//! In Rust, `*counter.get_lock().unwrap() += 1` takes the lock, and the guard writes the new
//! value back and releases it when the statement ends. The example checks that the total is
//! 400,000 (it exits with an error otherwise) and prints how long the 400,000 locked
//! increments took, starts and joins included.
//!
//! The second part has no Python counterpart that ends. A child acquires a `Lock`, tells
//! the main process through a `pipe` that it holds it, and sleeps; the main process kills it
//! (SIGKILL: no destructor runs, the guard is never dropped). CPython's `multiprocessing.Lock`
//! is a POSIX semaphore that nobody would ever post again: the next `acquire()` would
//! block for ever. procvisor's locks are robust mutexes: the kernel releases a dead holder's
//! lock, and `acquire` returns `Err(AcquireError::OwnerDied(guard))`, with the lock held by
//! the caller, who checks what the dead holder may have left half-done and carries on.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release -p procvisor-examples --example counter_contention
//! ```
//!
//! Expected output (the elapsed time and the pid vary):
//!
//! ```text
//! total: 400000 (expected 400000)
//! elapsed: 21.4 ms for 400000 locked increments in 2 processes
//! child 12345 holds the lock; killing it
//! exitcode of the child: -9
//! acquire after the holder died: OwnerDied, and the lock is ours (CPython would deadlock here)
//! acquire again: Ok
//! ```

use std::time::{Duration, Instant};

use procvisor::synchronize::AcquireError;
use procvisor::{Connection, Lock, Process, Value, pipe};

/// Increments per process.
const N: i64 = 200_000;
/// Processes incrementing the counter.
const PROCESSES: i64 = 2;

/// Adds one to the shared counter `N` times, each under the counter's lock.
fn add(counter: Value<i64>) {
    for _ in 0..N {
        *counter.get_lock().unwrap() += 1;
    }
}

/// Takes the lock, says so through `ready`, and waits to be killed.
fn hold((lock, mut ready): (Lock, Connection)) {
    let _guard = lock.acquire().unwrap();
    ready.send(&()).expect("the main process is listening");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Part 1: two processes, one counter.
    let counter = Value::new(0i64)?;
    let start = Instant::now();
    let mut ps: Vec<Process> = (0..PROCESSES)
        .map(|_| Process::new(add, counter.clone()))
        .collect();
    for p in &mut ps {
        p.start()?;
    }
    for p in &ps {
        p.join(None)?;
        if p.exitcode()? != Some(0) {
            return Err(format!("{} ended with exitcode {:?}", p.name(), p.exitcode()?).into());
        }
    }
    let elapsed = start.elapsed();
    let total = counter.get()?;
    println!("total: {total} (expected {})", N * PROCESSES);
    println!(
        "elapsed: {:.1} ms for {} locked increments in {PROCESSES} processes",
        elapsed.as_secs_f64() * 1e3,
        N * PROCESSES
    );
    if total != N * PROCESSES {
        return Err(format!("lost updates: {total} != {}", N * PROCESSES).into());
    }

    // Part 2: a holder dies with the lock.
    let lock = Lock::new()?;
    let (mut ready_rx, ready_tx) = pipe(false)?;
    let mut p = Process::new(hold, (lock.clone(), ready_tx));
    p.start()?;
    if !ready_rx.poll(Some(Duration::from_secs(30)))? {
        p.kill()?;
        p.join(None)?;
        return Err("the child did not take the lock within 30 s".into());
    }
    ready_rx.recv::<()>()?;
    let pid = p.pid()?.expect("the child has started");
    println!("child {pid} holds the lock; killing it");
    p.kill()?;
    p.join(None)?;
    println!(
        "exitcode of the child: {}",
        p.exitcode()?.expect("the child has been joined")
    );

    match lock.acquire() {
        Err(AcquireError::OwnerDied(guard)) => {
            println!(
                "acquire after the holder died: OwnerDied, and the lock is ours \
                 (CPython would deadlock here)"
            );
            // Nothing to repair: the lock guarded no data. Release it.
            drop(guard);
        }
        Ok(_) => return Err("acquire succeeded without reporting the dead owner".into()),
        Err(e) => return Err(format!("acquire failed: {e}").into()),
    }
    match lock.acquire() {
        Ok(guard) => {
            println!("acquire again: Ok");
            drop(guard);
        }
        Err(e) => return Err(format!("second acquire: {e}").into()),
    }
    Ok(())
}
