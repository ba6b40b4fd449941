//! `map` and `starmap` on a pool of ten workers, thirty tasks each, with the elapsed time.
//!
//! A port of the seed `/work/shared/seeds/004_90947c0e0a9fe8e6.txt` ("使用进程池": `map`,
//! then `starmap`):
//!
//! ```python
//! def _process(self, i):
//!     print('<{}>'.format(i)); time.sleep(3); print('</{}>'.format(i))
//! process_pool = ProcessPool(processes=self.processes)
//! process_pool.map(self._process, [i for i in range(self.processes * 3)])
//! process_pool.close(); process_pool.join()
//!
//! def _process(self, i, j):
//!     print('<{},{}>'.format(i, j)); time.sleep(3); print('</{},{}>'.format(i, j))
//! process_pool.starmap(
//!     self._process,
//!     zip([i for i in range(self.processes * 3)], [i ** 2 for i in range(self.processes * 3)]))
//! ```
//!
//! The tags interleave as the workers run (three rounds of ten); each task sleeps 300 ms
//! instead of 3 s, so each part takes about 0.9 s, which `elapsed` prints as the seed's
//! `@elapsed` decorator does. A Rust task takes its two arguments as one tuple, so `starmap`
//! is `map` over the zipped pairs.

use std::time::{Duration, Instant};

use procvisor::Pool;

const PROCESSES: usize = 10;
const NAP: Duration = Duration::from_millis(300);

fn process_one(i: usize) {
    println!("<{i}>");
    std::thread::sleep(NAP);
    println!("</{i}>");
}

fn process_two((i, j): (usize, usize)) {
    println!("<{i},{j}>");
    std::thread::sleep(NAP);
    println!("</{i},{j}>");
}

/// Runs `f` and prints how long it took, as the seed's `@elapsed` decorator does.
fn elapsed<T>(name: &str, f: impl FnOnce() -> T) -> T {
    let t0 = Instant::now();
    let value = f();
    println!("{name} elapsed: {:.2} s", t0.elapsed().as_secs_f64());
    value
}

fn main() -> Result<(), procvisor::PoolError> {
    elapsed("map", || {
        let pool = Pool::new(PROCESSES)?;
        pool.map(process_one, 0..PROCESSES * 3, None)?;
        pool.close();
        pool.join()
    })?;
    elapsed("starmap", || {
        let pool = Pool::new(PROCESSES)?;
        let n = PROCESSES * 3;
        pool.starmap(process_two, (0..n).zip((0..n).map(|i| i * i)), None)?;
        pool.close();
        pool.join()
    })?;
    assert!(procvisor::active_children().is_empty());
    Ok(())
}
