//! `map`, `imap` and `imap_unordered` on a pool of four workers.
//!
//! A port of §5.2.3 ("imap") of the seed `/work/shared/seeds/000_97308c8aaf6075b9.txt`:
//!
//! ```python
//! with Pool(processes=4) as pool:
//!     results = pool.map(square, range(10))
//!     print("map results:", results)
//!     results = pool.imap(square, range(10, 20))
//!     print("imap results:", list(results))
//!     results = pool.imap_unordered(square, range(20, 30))
//!     print("imap_unordered results:", list(results))
//! ```
//!
//! Prints the squares of 0..10 and 10..20 in order, and those of 20..30 in the order they
//! completed. An `imap` yields one `Result` per item; collecting into `Result<Vec<_>, _>`
//! is Python's `list(results)`, which raises on the first failed task.

use procvisor::Pool;

fn square(x: u64) -> u64 {
    x * x
}

fn main() -> Result<(), procvisor::PoolError> {
    {
        let pool = Pool::new(4)?;
        // map returns a list
        let results = pool.map(square, 0..10, None)?;
        println!("map results: {results:?}");

        // the lazy imap returns an iterator
        let results: Vec<u64> = pool.imap(square, 10..20, 1)?.collect::<Result<_, _>>()?;
        println!("imap results: {results:?}");

        // the lazy imap_unordered returns an iterator, in completion order
        let results: Vec<u64> = pool
            .imap_unordered(square, 20..30, 1)?
            .collect::<Result<_, _>>()?;
        println!("imap_unordered results: {results:?}");
    } // dropping the pool terminates it, as leaving the with-block does
    assert!(procvisor::active_children().is_empty());
    Ok(())
}
