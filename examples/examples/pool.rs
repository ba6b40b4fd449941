//! A pool of four workers: `map`, `imap_unordered`, `apply_async` with `get(timeout)`, and
//! a task too slow for its timeout while the pool stays usable.
//!
//! A port of the Pool example in the seed `/work/shared/seeds/002_8a4243127c442c43.txt`,
//! section "Pool：进程池":
//!
//! ```python
//! with Pool(processes=4) as pool:
//!     print(pool.map(f, range(10)))            # [0, 1, 4, ..., 81]
//!     for i in pool.imap_unordered(f, range(10)):
//!         print(i)
//!     res = pool.apply_async(f, (20,))
//!     print(res.get(timeout=1))                # 400
//!     res = pool.apply_async(os.getpid, ())
//!     print(res.get(timeout=1))                # a worker's pid
//!     multiple_results = [pool.apply_async(os.getpid, ()) for i in range(4)]
//!     print([res.get(timeout=1) for res in multiple_results])
//!     res = pool.apply_async(time.sleep, (10,))
//!     try:
//!         print(res.get(timeout=1))
//!     except TimeoutError:
//!         print("We lacked patience and got a multiprocessing.TimeoutError")
//!     print("For the moment, the pool remains available for more work")
//! print("Now the pool is closed and no longer available")
//! ```
//!
//! Leaving the block drops the pool, which terminates it (the sleeping worker with it), as
//! leaving Python's `with` block does. The whole run takes a little over a second.

use std::time::Duration;

use procvisor::Pool;

fn f(x: u64) -> u64 {
    x * x
}

fn getpid(_: ()) -> u32 {
    std::process::id()
}

fn sleep(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let timeout = Some(Duration::from_secs(1));
    {
        // start 4 worker processes
        let pool = Pool::new(4)?;

        // print "[0, 1, 4,..., 81]"
        println!("{:?}", pool.map(f, 0..10, None)?);

        // print same numbers in arbitrary order
        for i in pool.imap_unordered(f, 0..10, 1)? {
            println!("{}", i?);
        }

        // evaluate "f(20)" asynchronously
        let res = pool.apply_async(f, 20)?; // runs in *only* one process
        println!("{}", res.get(timeout)?); // prints "400"

        // evaluate "os.getpid()" asynchronously
        let res = pool.apply_async(getpid, ())?; // runs in *only* one process
        println!("{}", res.get(timeout)?); // prints the PID of that process

        // launching multiple evaluations asynchronously *may* use more processes
        let multiple_results = (0..4)
            .map(|_| pool.apply_async(getpid, ()))
            .collect::<Result<Vec<_>, _>>()?;
        let pids = multiple_results
            .iter()
            .map(|res| res.get(timeout))
            .collect::<Result<Vec<_>, _>>()?;
        println!("{pids:?}");

        // make a single worker sleep for 10 secs
        let res = pool.apply_async(sleep, 10)?;
        match res.get(timeout) {
            Err(e) if e.is_timeout() => {
                println!("We lacked patience and got a multiprocessing.TimeoutError")
            }
            other => println!("{other:?}"),
        }

        println!("For the moment, the pool remains available for more work");
        assert_eq!(pool.apply(f, 3)?, 9);
    } // dropping the pool terminates it

    // exiting the block has stopped the pool
    println!("Now the pool is closed and no longer available");
    assert!(procvisor::active_children().is_empty());
    Ok(())
}
