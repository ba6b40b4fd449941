#!/usr/bin/env python3
"""CPython multiprocessing.Manager dict baseline for the procvisor manager
benches.

Usage: python3 manager_bench.py BENCH METHOD REPS [--quick] [--items N]
                                [--cpus P]

  BENCH    manager_dict_set | manager_dict_get
  METHOD   fork | spawn | forkserver  (passed to multiprocessing.get_context)
  REPS     number of measured repetitions (positive integer)
  --items  calls per batch (defaults below); the harness passes its own
  --cpus   pin this process to CPU P before the manager starts: the manager
           process (and every thread of it) inherits it, so both ends share
           one CPU, as the harness's procvisor and floor figures do.
           Unpinned without it.

One unmeasured warm-up batch (a tenth of a batch) first; each rep times one
batch on one ctx.Manager().dict(), filled with the keys 0..63 first:

  manager_dict_set   d[i % 64] = i; "us" per call. 4,000 calls (1,000 quick).
  manager_dict_get   d[i % 64], checked; "us" per call. Same batches.

Prints one JSON object per line to stdout:
  {"bench": NAME, "impl": "cpython", "method": METHOD, "value": NUMBER,
   "unit": "us", "rep": i}

Stdlib only (plus bench_common.py, next to it). All work happens under
``if __name__ == "__main__"`` because the spawn and forkserver start methods
re-import this module in the children.
"""

import multiprocessing
import sys
import time

import bench_common

BENCHES = ("manager_dict_set", "manager_dict_get")
# (full, quick) calls per batch.
BATCH = (4_000, 1_000)
KEYS = 64
CLI = bench_common.Cli("manager_bench.py", BENCHES, "[--items N] [--cpus P]")


def run(ctx, bench, method, reps, n):
    with ctx.Manager() as manager:
        d = manager.dict()
        for k in range(KEYS):
            d[k] = k

        def batch_set(n):
            t0 = time.perf_counter()
            for i in range(n):
                d[i % KEYS] = i
            return (time.perf_counter() - t0) * 1e6 / n

        def batch_get(n):
            t0 = time.perf_counter()
            for i in range(n):
                d[i % KEYS]
            elapsed = time.perf_counter() - t0
            if len(d) != KEYS:
                CLI.fail(f"the dict has {len(d)} keys, not {KEYS}")
            return elapsed * 1e6 / n

        batch = batch_set if bench == "manager_dict_set" else batch_get
        batch(max(1, n // 10))  # warm-up, not measured
        for rep in range(reps):
            bench_common.emit(bench, method, round(batch(n), 4), "us", rep)


def main(argv):
    cpus_s, argv = CLI.take_option(argv, "--cpus")
    items_s, argv = CLI.take_option(argv, "--items")
    bench, method, reps, quick = CLI.parse_args(argv)
    n = BATCH[1 if quick else 0]
    if items_s is not None:
        n = CLI.positive_int(items_s, "--items")
    cpus = CLI.parse_cpus(cpus_s, 0, "P")
    bench_common.place(cpus, 0)
    run(multiprocessing.get_context(method), bench, method, reps, n)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
