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

Stdlib only. All work happens under ``if __name__ == "__main__"`` because the
spawn and forkserver start methods re-import this module in the children.
"""

import json
import multiprocessing
import os
import sys
import time

BENCHES = ("lock_uncontended", "value_contended_2x200k", "event_pingpong")
METHODS = ("fork", "spawn", "forkserver")
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


def pin(cpu):
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def incrementer(ctl, done, v, cpu):
    """For each count n on ctl, n increments under the value's lock, then n on
    done; until 0."""
    pin(cpu)
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
    pin(cpu)
    while True:
        n = ctl.get()
        if n == 0:
            break
        for _ in range(n):
            e1.wait()
            e1.clear()
            e2.set()


def usage_error(reason):
    print(f"sync_bench.py: {reason} "
          f"(usage: sync_bench.py {{{'|'.join(BENCHES)}}} "
          f"{{{'|'.join(METHODS)}}} REPS [--quick] [--items N] "
          f"[--cpus P[,C1[,C2]]])",
          file=sys.stderr)
    sys.exit(2)


def fail(reason):
    print(f"sync_bench.py: {reason}", file=sys.stderr)
    sys.exit(1)


def emit(bench, method, value, rep):
    # flush every line: with the fork method a child would otherwise flush a
    # copy of the parent's pending stdout buffer on exit.
    print(json.dumps({"bench": bench, "impl": "cpython", "method": method,
                      "value": value, "unit": UNIT[bench], "rep": rep}),
          flush=True)


def join_all(procs):
    for p in procs:
        p.join(10)
        if p.exitcode is None:
            p.kill()
            p.join()
            fail(f"child {p.pid} did not exit when told to")
        if p.exitcode != 0:
            fail(f"child {p.pid} exited with {p.exitcode}")


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
        emit(bench, method, round(batch(n), 4), rep)


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
            fail(f"the value is {v.value}, not {expected}")
        return elapsed * 1e9 / (n * len(ctls))

    batch(max(1, n // 10))  # warm-up, not measured
    for rep in range(reps):
        emit(bench, method, round(batch(n), 4), rep)
    for ctl in ctls:
        ctl.put(0)
    join_all(procs)


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
        emit(bench, method, round(batch(n), 4), rep)
    ctl.put(0)
    join_all([proc])


def parse_cpus(value, children):
    try:
        cpus = [int(c) for c in value.split(",")]
    except ValueError:
        usage_error(f"--cpus wants P[,C1[,C2]] (CPU numbers), got {value!r}")
    if len(cpus) != 1 + children:
        usage_error(f"--cpus wants {1 + children} CPUs for this bench "
                    f"(this process, then each child), got {len(cpus)}")
    allowed = os.sched_getaffinity(0)
    for cpu in cpus:
        if cpu not in allowed:
            usage_error(f"CPU {cpu} is not in this process's affinity "
                        f"{sorted(allowed)}")
    return cpus


def take_option(argv, name):
    """(value of --name or None, argv without it)."""
    if name not in argv:
        return None, argv
    i = argv.index(name)
    if i + 1 >= len(argv):
        usage_error(f"{name} wants a value")
    return argv[i + 1], argv[:i] + argv[i + 2:]


def main(argv):
    cpus_s, argv = take_option(argv, "--cpus")
    items_s, argv = take_option(argv, "--items")
    args = [a for a in argv if a != "--quick"]
    quick = len(args) != len(argv)
    unknown = [a for a in args if a.startswith("--")]
    if unknown:
        usage_error(f"unknown option {unknown[0]!r}")
    if len(args) != 3:
        usage_error(f"expected 3 positional arguments, got {len(args)}")
    bench, method, reps_s = args
    if bench not in BENCHES:
        usage_error(f"unknown BENCH {bench!r}")
    if method not in METHODS:
        usage_error(f"unknown METHOD {method!r}")
    if method not in multiprocessing.get_all_start_methods():
        usage_error(f"start method {method!r} not available on this platform")
    try:
        reps = int(reps_s)
    except ValueError:
        reps = 0
    if reps < 1:
        usage_error(f"REPS must be a positive integer, got {reps_s!r}")
    n = BATCH[bench][1 if quick else 0]
    if items_s is not None:
        try:
            n = int(items_s)
        except ValueError:
            n = 0
        if n < 1:
            usage_error(f"--items must be a positive integer, got {items_s!r}")

    children = CHILDREN[bench]
    child_cpus = [None] * children
    if cpus_s is not None:
        cpus = parse_cpus(cpus_s, children)
        # Before the forkserver (or any child) starts: they inherit it.
        pin(cpus[0])
        child_cpus = cpus[1:]
    ctx = multiprocessing.get_context(method)
    run = {"lock_uncontended": run_lock, "value_contended_2x200k": run_value,
           "event_pingpong": run_event}[bench]
    run(ctx, bench, method, reps, n, child_cpus)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
