//! `apply` and `apply_async` on a pool of four workers, then `close`, `join`, and the
//! asynchronous result read after the join.
//!
//! A port of §5.2.1 ("apply") of the seed `/work/shared/seeds/000_97308c8aaf6075b9.txt`:
//!
//! ```python
//! def square(x):
//!     time.sleep(3)
//!     return x * x
//!
//! with Pool(processes=4) as pool:
//!     result = pool.apply(square, (2,))
//!     print(result)  # 4
//!     result_obj = pool.apply_async(square, (3,))
//!     pool.close()
//!     pool.join()
//!     print(result_obj.get())  # 9
//! ```
//!
//! Prints `4` then `9`; each task sleeps 300 ms instead of 3 s.

use std::time::Duration;

use procvisor::Pool;

fn square(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(300));
    x * x
}

fn main() -> Result<(), procvisor::PoolError> {
    let pool = Pool::new(4)?;
    // use apply()
    let result = pool.apply(square, 2)?;
    println!("{result}"); // 4

    // use apply_async()
    let result_obj = pool.apply_async(square, 3)?;
    // wait all task finish
    pool.close();
    pool.join()?;
    // task finish, you can get result
    println!("{}", result_obj.get(None)?); // 9
    assert!(procvisor::active_children().is_empty());
    Ok(())
}
