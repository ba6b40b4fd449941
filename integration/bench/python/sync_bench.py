#!/usr/bin/env python3
"""CPython multiprocessing Lock / Value / Event baseline for the procvisor sync
benches.

Usage: python3 sync_bench.py BENCH METHOD REPS [--quick] [--items N]
                             [--cpus P[,C1[,C2]]]

  BENCH    lock_uncontended | value_contended_2x200k | event_pingpong
  METHOD   fork | spawn | forkserver  (passed to multiprocessing.get_context)
  REPS     number of measured repetitions (positive integer)
  --items  operations per batch: lock pairs, increments per child, round
           trips (defaults below); the harness passes its own
  --cpus   pin this process to CPU P (before the forkserver starts) and the
           children to C1, C2 (lock_uncontended: P only; value_contended: two
           children; event_pingpong: one); the harness passes the placement
           its procvisor and floor figures use. Unpinned without it.

One unmeasured warm-up batch (a tenth of a batch) first; each rep times one
batch:

  lock_uncontended        ctx.Lock() acquire() + release() in this process;
                          "ns" per pair. 2,000,000 pairs (1,000,000 quick).
  value_contended_2x200k  two child processes each do n times
                          `with v.get_lock(): v.value += 1` on one
                          ctx.Value('q'); "ns" per increment (the batch's wall
                          time from the go to both reports over 2n).
                          n = 100,000 (50,000 quick): CPython is too slow for
                          the 200,000 of the name within the bench's budget;
                          the figure is per increment either way.
  event_pingpong          this process sets e1, waits for e2 and clears it;
                          the child waits for e1, clears it and sets e2; "us"
                          per round trip. 50,000 round trips (20,000 quick).

The children serve every rep; they get their counts on SimpleQueues and the
incrementers report on one. The value is checked after every batch.

Prints one JSON object per line to stdout:
  {"bench": NAME, "impl": "cpython", "method": METHOD, "value": NUMBER,
   "unit": "ns" | "us", "rep": i}

Stdlib only (plus bench_common.py, next to it). All work happens under
``if __name__ == "__main__"`` because the spawn and forkserver start methods
re-import this module in the children.
"""

import multiprocessing
import sys
import time

import bench_common

BENCHES = ("lock_uncontended", "value_contended_2x200k", "event_pingpong")
UNIT = {"lock_uncontended": "ns", "value_contended_2x200k": "ns",
        "event_pingpong": "us"}
# (full, quick) operations per batch.
BATCH = {
    "lock_uncontended": (2_000_000, 1_000_000),
    "value_contended_2x200k": (100_000, 50_000),
    "event_pingpong": (50_000, 20_000),
}
# Child processes of each bench.
CHILDREN = {"lock_uncontended": 0, "value_contended_2x200k": 2,
            "event_pingpong": 1}
CLI = bench_common.Cli("sync_bench.py", BENCHES,
                       "[--items N] [--cpus P[,C1[,C2]]]")


def incrementer(ctl, done, v, cpu):
    """For each count n on ctl, n increments under the value's lock, then n on
    done; until 0."""
    bench_common.pin(cpu)
    lock = v.get_lock()
    while True:
        n = ctl.get()
        if n == 0:
            break
        for _ in range(n):
            with lock:
                v.value += 1
        done.put(n)


def ponger(ctl, e1, e2, cpu):
    """For each count n on ctl, n times: wait for e1, clear it, set e2; until
    0."""
    bench_common.pin(cpu)
    while True:
        n = ctl.get()
        if n == 0:
            break
        for _ in range(n):
            e1.wait()
            e1.clear()
            e2.set()


def run_lock(ctx, bench, method, reps, n, cpus):
    lock = ctx.Lock()
    acquire, release = lock.acquire, lock.release

    def batch(n):
        t0 = time.perf_counter()
        for _ in range(n):
            acquire()
            release()
        return (time.perf_counter() - t0) * 1e9 / n

    batch(max(1, n // 10))  # warm-up, not measured
    for rep in range(reps):
        bench_common.emit(bench, method, round(batch(n), 4), UNIT[bench],
                          rep)


def run_value(ctx, bench, method, reps, n, cpus):
    v = ctx.Value("q", 0)
    done = ctx.SimpleQueue()
    ctls = [ctx.SimpleQueue() for _ in cpus]
    procs = [ctx.Process(target=incrementer, args=(ctl, done, v, cpu))
             for ctl, cpu in zip(ctls, cpus)]
    for p in procs:
        p.start()
    expected = 0

    def batch(n):
        nonlocal expected
        t0 = time.perf_counter()
        for ctl in ctls:
            ctl.put(n)
        got = sum(done.get() for _ in ctls)
        elapsed = time.perf_counter() - t0
        expected += n * len(ctls)
        if got != n * len(ctls) or v.value != expected:
            CLI.fail(f"the value is {v.value}, not {expected}")
        return elapsed * 1e9 / (n * len(ctls))

    batch(max(1, n // 10))  # warm-up, not measured
    for rep in range(reps):
        bench_common.emit(bench, method, round(batch(n), 4), UNIT[bench],
                          rep)
    for ctl in ctls:
        ctl.put(0)
    CLI.join_all(procs)


def run_event(ctx, bench, method, reps, n, cpus):
    e1, e2 = ctx.Event(), ctx.Event()
    ctl = ctx.SimpleQueue()
    proc = ctx.Process(target=ponger, args=(ctl, e1, e2, cpus[0]))
    proc.start()

    def batch(n):
        ctl.put(n)
        t0 = time.perf_counter()
        for _ in range(n):
            e1.set()
            e2.wait()
            e2.clear()
        return (time.perf_counter() - t0) * 1e6 / n

    batch(max(1, n // 10))  # warm-up, not measured
    for rep in range(reps):
        bench_common.emit(bench, method, round(batch(n), 4), UNIT[bench],
                          rep)
    ctl.put(0)
    CLI.join_all([proc])


def main(argv):
    cpus_s, argv = CLI.take_option(argv, "--cpus")
    items_s, argv = CLI.take_option(argv, "--items")
    bench, method, reps, quick = CLI.parse_args(argv)
    n = BATCH[bench][1 if quick else 0]
    if items_s is not None:
        n = CLI.positive_int(items_s, "--items")
    children = CHILDREN[bench]
    cpus = CLI.parse_cpus(cpus_s, children, "P[,C1[,C2]]")
    child_cpus = bench_common.place(cpus, children)
    ctx = multiprocessing.get_context(method)
    run = {"lock_uncontended": run_lock, "value_contended_2x200k": run_value,
           "event_pingpong": run_event}[bench]
    run(ctx, bench, method, reps, n, child_cpus)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
