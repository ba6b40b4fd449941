//! The `Pool` benches: `procvisor::Pool` against CPython's `multiprocessing.Pool`
//! (`pool_bench.py`), both with the `forkserver` start method; `x * x` on integers.
//!
//! - `pool_map_1M_default_chunksize`: `map` over 1,000,000 integers (quick: 300,000), the
//!   default chunksize (CPython's rule), 2 workers; items per second.
//! - `pool_map_chunksize1`: `map` over 100,000 integers (quick: 30,000), chunksize 1, 2
//!   workers; items per second.
//! - `pool_imap_unordered_chunksize1`: the same through `imap_unordered`, every result
//!   consumed; items per second.
//! - `pool_apply_rtt`: sequential `apply` on a 1-worker pool, the caller and the worker
//!   pinned to one CPU as `connection_rtt_small` pins its ends; µs per apply. Floor
//!   `pool_pipe_rtt`: the raw socketpair round trip of `socketpair_rtt` (a forked child
//!   echoing frames of procvisor's length with `read`/`write`), one floor batch before
//!   each procvisor batch.
//! - `pool_create_close_join`: `Pool(2)`, `close`, `join`, in sequence; ms per pool.
//!
//! One pool serves every repetition of a throughput row (after a warm-up batch), as one
//! `with Pool(2)` block does in the CPython script.

use std::time::{Duration, Instant};

use procvisor::{Pool, StartMethod};

use crate::connection::{Floor, Kind as ConnKind, PinSelf, Placement, pin};
use crate::measure::{self, Side};
use crate::report::Figure;
use crate::{Config, figure, warm_up};

/// The benches, in table order.
pub(crate) const BENCHES: [&str; 5] = [
    "pool_map_1M_default_chunksize",
    "pool_map_chunksize1",
    "pool_imap_unordered_chunksize1",
    "pool_apply_rtt",
    "pool_create_close_join",
];

/// The floor of `pool_apply_rtt`.
pub(crate) const FLOOR: &str = "pool_pipe_rtt";

/// The start method of the pool benches, for procvisor and CPython alike.
pub(crate) const METHOD: StartMethod = StartMethod::ForkServer;

/// Workers of the throughput rows and of `pool_create_close_join`.
const WORKERS: usize = 2;

fn square(x: u64) -> u64 {
    x * x
}

/// Items (or operations) per repetition of `bench`.
pub(crate) fn batch(cfg: &Config, bench: &str) -> usize {
    match (bench, cfg.quick) {
        ("pool_map_1M_default_chunksize", false) => 1_000_000,
        ("pool_map_1M_default_chunksize", true) => 300_000,
        ("pool_map_chunksize1" | "pool_imap_unordered_chunksize1", false) => 100_000,
        ("pool_map_chunksize1" | "pool_imap_unordered_chunksize1", true) => 30_000,
        ("pool_apply_rtt", false) => 20_000,
        ("pool_apply_rtt", true) => 5_000,
        (_, false) => 20,
        (_, true) => 10,
    }
}

/// What CPython does per repetition where it is slower: fewer applies and pools.
fn cpython_batch(cfg: &Config, bench: &str) -> usize {
    match (bench, cfg.quick) {
        ("pool_apply_rtt", false) => 2_000,
        ("pool_apply_rtt", true) => 300,
        ("pool_create_close_join", false) => 5,
        ("pool_create_close_join", true) => 3,
        _ => batch(cfg, bench),
    }
}

/// The arguments of `pool_bench.py` for `bench`: the batch, and the placement of the
/// round trip.
pub(crate) fn cpython_args(cfg: &Config, bench: &str) -> Vec<String> {
    let mut args = vec!["--items".to_owned(), cpython_batch(cfg, bench).to_string()];
    if bench == "pool_apply_rtt" {
        if let Some(p) = Placement::of("connection_rtt_small") {
            args.extend(["--cpus".to_owned(), format!("{},{}", p.parent, p.child)]);
        }
    }
    args
}

/// The note under the table.
pub(crate) fn note(cfg: &Config, bench: &str) -> String {
    let what = match bench {
        "pool_map_1M_default_chunksize" => "map(x*x) over range(n), default chunksize, 2 workers",
        "pool_map_chunksize1" => "map(x*x) over range(n), chunksize 1, 2 workers",
        "pool_imap_unordered_chunksize1" => {
            "imap_unordered(x*x) over range(n), chunksize 1, 2 workers, all consumed"
        }
        "pool_apply_rtt" => {
            "sequential apply(x*x) on Pool(1), caller and worker on one CPU; floor \
             pool_pipe_rtt: raw socketpair echo of a procvisor-sized frame, same placement"
        }
        _ => "Pool(2) + close + join in sequence",
    };
    format!(
        "{bench} ({}): {what}; n = {} per repetition (cpython {})",
        METHOD.as_str(),
        batch(cfg, bench),
        cpython_batch(cfg, bench)
    )
}

/// `bench` for procvisor (and, for `pool_apply_rtt`, its floor).
pub(crate) fn bench(cfg: &Config, bench: &str) -> Result<Vec<Figure>, String> {
    warm_up(METHOD)?;
    let n = batch(cfg, bench);
    let m = METHOD.as_str();
    let err = |e: procvisor::PoolError| e.to_string();
    let start = |workers: usize| {
        Pool::builder()
            .processes(workers)
            .start_method(METHOD)
            .build()
            .map_err(err)
    };
    let rate = |n: usize, t: Duration| n as f64 / t.as_secs_f64();
    match bench {
        "pool_map_1M_default_chunksize" | "pool_map_chunksize1" => {
            let pool = start(WORKERS)?;
            let chunksize = (bench == "pool_map_chunksize1").then_some(1);
            let values = measure::repeat(cfg.reps(), n, |k| {
                let t0 = Instant::now();
                let out = pool.map(square, 0..k as u64, chunksize).map_err(err)?;
                let t = t0.elapsed();
                check(&out, k)?;
                Ok(rate(k, t))
            })?;
            pool.close();
            pool.join().map_err(err)?;
            Ok(vec![figure(bench, "procvisor", m, "items/s", values)])
        }
        "pool_imap_unordered_chunksize1" => {
            let pool = start(WORKERS)?;
            let values = measure::repeat(cfg.reps(), n, |k| {
                let t0 = Instant::now();
                let mut sum = 0u64;
                let mut count = 0;
                for v in pool.imap_unordered(square, 0..k as u64, 1).map_err(err)? {
                    sum = sum.wrapping_add(v.map_err(err)?);
                    count += 1;
                }
                let t = t0.elapsed();
                if count != k || sum != (0..k as u64).map(|x| x * x).sum::<u64>() {
                    return Err(format!("imap_unordered gave {count} results of {k}"));
                }
                Ok(rate(k, t))
            })?;
            pool.close();
            pool.join().map_err(err)?;
            Ok(vec![figure(bench, "procvisor", m, "items/s", values)])
        }
        "pool_apply_rtt" => {
            let place = Placement::of("connection_rtt_small");
            let _pinned = place.map(|p| PinSelf::new(p.parent)).transpose()?;
            // The floor child is forked first, so that it holds no copy of the pool's
            // sockets.
            let mut floor = Floor::new(ConnKind::Rtt, n, place)?;
            let pool = start(1)?;
            if let Some(p) = place {
                for pid in pool.pids() {
                    pin(pid, p.child)?;
                }
            }
            let measured = measure::alternate(
                cfg.reps(),
                n,
                |k| floor.batch(k),
                |k| {
                    let t0 = Instant::now();
                    for i in 0..k as u64 {
                        let v = pool.apply(square, i).map_err(err)?;
                        if v != i * i {
                            return Err(format!("apply({i}) gave {v}"));
                        }
                    }
                    Ok(t0.elapsed().as_secs_f64() * 1e6 / k as f64)
                },
            );
            let floor_end = floor.end();
            pool.close();
            let joined = pool.join().map_err(err);
            let (values, floor_values) = measured?;
            floor_end?;
            joined?;
            Ok(vec![
                figure(bench, "procvisor", m, "us", values),
                figure(FLOOR, "os", "-", "us", floor_values),
            ])
        }
        "pool_create_close_join" => {
            let values = measure::repeat(cfg.reps(), n, |k| {
                let t0 = Instant::now();
                for _ in 0..k {
                    let pool = start(WORKERS)?;
                    pool.close();
                    pool.join().map_err(err)?;
                }
                Ok(t0.elapsed().as_secs_f64() * 1e3 / k as f64)
            })?;
            Ok(vec![figure(bench, "procvisor", m, "ms", values)])
        }
        _ => Err(format!("unknown pool bench {bench:?}")),
    }
}

fn check(out: &[u64], k: usize) -> Result<(), String> {
    let last = (k as u64).saturating_sub(1);
    if out.len() != k || out.last().is_some_and(|v| *v != last * last) {
        return Err(format!("map gave {} results of {k}", out.len()));
    }
    Ok(())
}
