//! Locks: ten processes print a line each while holding one shared `Lock`; then five more
//! do the same with Python's explicit `acquire()` / `release()` calls.
//!
//! The first part mirrors the Lock example in the seed
//! `/work/shared/seeds/002_8a4243127c442c43.txt`, section "进程间的同步":
//!
//! ```python
//! def f(l, i):
//!     l.acquire()
//!     try:
//!         print('hello world', i)
//!     finally:
//!         l.release()
//!
//! lock = Lock()
//! for num in range(10):
//!     Process(target=f, args=(lock, num)).start()
//! ```
//!
//! `try`/`finally` becomes a guard: `lock.acquire()` returns one, and dropping it (at the
//! end of `f`, or while unwinding from a panic) releases the lock. Each child gets the lock
//! as a clone of the main process's handle, inside its arguments:
//! `Process::new(f, (lock.clone(), num))`.
//!
//! The second part (after a blank line) is the Lock example of the seed
//! `/work/shared/seeds/003_3b9ef70041973d61.txt`, section "进程间同步" ("简单示例：使用锁保证
//! 进程间的同步操作"):
//!
//! ```python
//! def func(lc, num):
//!     lc.acquire()
//!     print('process num: ', num)
//!     lc.release()
//!
//! lock = Lock()
//! for i in range(5):
//!     Process(target=func, args=(lock, i)).start()
//! ```
//!
//! It keeps Python's shape: `acquire().unwrap().forget()` keeps the lock held without a
//! guard, and `release()` gives it back. (The seed `001_39d6c5e4a59ba50e.txt` has no
//! `multiprocessing.Lock` example, only `threading.Lock` and `RLock` in its "线程锁"
//! section, so there is nothing of its to port here.)
//!
//! Neither Python script joins its children: the interpreter joins them at exit. The port
//! keeps every `Process` and joins it, so the parts do not mix their lines, and the program
//! exits 0 with no process left behind.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release -p procvisor-examples --example lock
//! ```
//!
//! Expected output (the children run concurrently, so the order of the numbers within each
//! part changes from run to run; each line is whole, as it is printed under the lock):
//!
//! ```text
//! hello world 0
//! hello world 1
//! hello world 2
//! hello world 3
//! hello world 4
//! hello world 5
//! hello world 6
//! hello world 7
//! hello world 8
//! hello world 9
//!
//! process num:  0
//! process num:  1
//! process num:  3
//! process num:  2
//! process num:  4
//! ```

use procvisor::{Lock, Process};

/// Seed 002's `f(l, i)`: print under the lock; the guard releases it, like `finally`.
fn f((l, i): (Lock, u32)) {
    let _guard = l.acquire().unwrap();
    println!("hello world {i}");
}

/// Seed 003's `func(lc, num)`: Python's explicit `acquire()` and `release()`.
fn func((lc, num): (Lock, u32)) {
    lc.acquire().unwrap().forget();
    // Python's `print('process num: ', num)` puts a space between its two arguments.
    println!("process num:  {num}");
    lc.release().unwrap();
}

/// Joins every child; an error if one did not exit with status 0.
fn join_all(children: &[Process]) -> Result<(), Box<dyn std::error::Error>> {
    for p in children {
        p.join(None)?;
        match p.exitcode()? {
            Some(0) => {}
            code => return Err(format!("{} ended with exitcode {code:?}", p.name()).into()),
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let lock = Lock::new()?;
    let mut children = Vec::new();
    for num in 0..10 {
        let mut p = Process::new(f, (lock.clone(), num));
        p.start()?;
        children.push(p);
    }
    join_all(&children)?;

    println!();
    let lock = Lock::new()?;
    let mut children = Vec::new();
    for i in 0..5 {
        let mut p = Process::new(func, (lock.clone(), i));
        p.start()?;
        children.push(p);
    }
    join_all(&children)?;
    Ok(())
}
