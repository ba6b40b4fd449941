#!/usr/bin/env python3
"""CPython multiprocessing.Pool baseline for the procvisor pool benches.

Usage: python3 pool_bench.py BENCH METHOD REPS [--quick] [--items N] [--cpus P,C]

  BENCH    pool_map_1M_default_chunksize | pool_map_chunksize1 |
           pool_imap_unordered_chunksize1 | pool_apply_rtt |
           pool_create_close_join
  METHOD   fork | spawn | forkserver  (passed to multiprocessing.get_context)
  REPS     number of measured repetitions (positive integer)
  --items  items (applies, pools) per repetition; the harness passes its own
  --cpus   pool_apply_rtt only: pin this process to CPU P (before the
           forkserver starts) and the worker to C. Unpinned without it.

square(x) = x * x on ints. One pool serves every rep of a bench, after an
unmeasured warm-up batch (a tenth):

  pool_map_1M_default_chunksize   pool.map(square, range(n)), default
                                  chunksize, Pool(2); "items/s"
  pool_map_chunksize1             the same with chunksize=1; "items/s"
  pool_imap_unordered_chunksize1  every result of
                                  pool.imap_unordered(square, range(n), 1);
                                  "items/s"
  pool_apply_rtt                  n sequential pool.apply(square, (i,)) on
                                  Pool(1); "us" per apply
  pool_create_close_join          n times Pool(2), close(), join(); "ms" per
                                  pool

Prints one JSON object per line to stdout:
  {"bench": NAME, "impl": "cpython", "method": METHOD, "value": NUMBER,
   "unit": UNIT, "rep": i}

Stdlib only (plus bench_common.py, next to it). All work happens under
``if __name__ == "__main__"`` because the spawn and forkserver start methods
re-import this module in the children.
"""

import sys
import time
import multiprocessing

import bench_common

BENCHES = ("pool_map_1M_default_chunksize", "pool_map_chunksize1",
           "pool_imap_unordered_chunksize1", "pool_apply_rtt",
           "pool_create_close_join")
# (full, quick) items per rep when --items is not given.
BATCH = {
    "pool_map_1M_default_chunksize": (1_000_000, 300_000),
    "pool_map_chunksize1": (100_000, 30_000),
    "pool_imap_unordered_chunksize1": (100_000, 30_000),
    "pool_apply_rtt": (2_000, 300),
    "pool_create_close_join": (5, 3),
}
CLI = bench_common.Cli("pool_bench.py", BENCHES, "[--items N] [--cpus P,C]")


def square(x):
    return x * x


def pin_worker(cpu):
    """Pool initializer: pin the worker."""
    bench_common.pin(cpu)


def batch(ctx, bench, pool, n):
    """One batch of n; returns the figure."""
    if bench == "pool_create_close_join":
        t0 = time.perf_counter()
        for _ in range(n):
            p = ctx.Pool(2)
            p.close()
            p.join()
        return (time.perf_counter() - t0) * 1e3 / n
    t0 = time.perf_counter()
    if bench == "pool_map_1M_default_chunksize":
        out = pool.map(square, range(n))
        ok = len(out) == n
    elif bench == "pool_map_chunksize1":
        out = pool.map(square, range(n), chunksize=1)
        ok = len(out) == n
    elif bench == "pool_imap_unordered_chunksize1":
        ok = sum(1 for _ in pool.imap_unordered(square, range(n), 1)) == n
    else:
        ok = all(pool.apply(square, (i,)) == i * i for i in range(n))
        return (time.perf_counter() - t0) * 1e6 / n if ok else CLI.fail("apply")
    elapsed = time.perf_counter() - t0
    if not ok:
        CLI.fail(f"{bench}: wrong results")
    return n / elapsed


def main(argv):
    if len(argv) < 3:
        CLI.usage_error("missing arguments")
    bench, method, reps_s, *rest = argv
    if bench not in BENCHES:
        CLI.usage_error(f"unknown bench {bench!r}")
    if method not in bench_common.METHODS:
        CLI.usage_error(f"unknown method {method!r}")
    reps = CLI.positive_int(reps_s, "REPS")
    quick = "--quick" in rest
    rest = [a for a in rest if a != "--quick"]
    items_s, rest = CLI.take_option(rest, "--items")
    cpus_s, rest = CLI.take_option(rest, "--cpus")
    if rest:
        CLI.usage_error(f"unexpected arguments {rest!r}")
    n = BATCH[bench][1 if quick else 0]
    if items_s is not None:
        n = CLI.positive_int(items_s, "--items")
    cpus = CLI.parse_cpus(cpus_s, 1, "P,C", "two CPU numbers", True)
    (worker_cpu,) = bench_common.place(cpus, 1)
    ctx = multiprocessing.get_context(method)
    unit = {"pool_apply_rtt": "us", "pool_create_close_join": "ms"}.get(
        bench, "items/s")
    if bench == "pool_create_close_join":
        batch(ctx, bench, None, max(1, n // 10))
        for rep in range(reps):
            bench_common.emit(bench, method, batch(ctx, bench, None, n), unit, rep)
        return 0
    workers = 1 if bench == "pool_apply_rtt" else 2
    with ctx.Pool(workers, initializer=pin_worker, initargs=(worker_cpu,)) as pool:
        batch(ctx, bench, pool, max(1, n // 10))
        for rep in range(reps):
            bench_common.emit(bench, method, batch(ctx, bench, pool, n), unit, rep)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
