#!/usr/bin/env python3
"""CPython multiprocessing baseline for the procvisor benchmark harness.

Usage: python3 process_bench.py BENCH METHOD REPS [--quick]

  BENCH   start_join | start_100 | idle_rss
  METHOD  fork | spawn | forkserver  (passed to multiprocessing.get_context)
  REPS    number of measured repetitions (positive integer)

Prints one JSON object per line to stdout:
  {"bench": NAME, "impl": "cpython", "method": METHOD, "value": NUMBER,
   "unit": UNIT, "rep": i}

Stdlib only (plus bench_common.py, next to it). All work happens under
``if __name__ == "__main__"`` because the spawn and forkserver start methods
re-import this module in the children.
"""

import multiprocessing
import sys
import time

import bench_common

BENCHES = ("start_join", "start_100", "idle_rss")
START_100_COUNT = 100
CLI = bench_common.Cli("process_bench.py", BENCHES)


def noop():
    """Target that does nothing (module level so spawn children can find it)."""


def idle_child(conn):
    """Signal readiness through the pipe, then block until told to exit."""
    conn.send("ready")
    conn.recv()
    conn.close()


def start_join_once(ctx):
    p = ctx.Process(target=noop)
    p.start()
    p.join()
    CLI.check_exit(p)


def warm_up(ctx):
    # One unmeasured start+join; for forkserver this also starts the server.
    start_join_once(ctx)


def bench_start_join(ctx, method, reps, quick):
    if method == "spawn":
        batch = 3 if quick else 10
    else:
        batch = 5 if quick else 20
    warm_up(ctx)
    for rep in range(reps):
        t0 = time.perf_counter()
        for _ in range(batch):
            start_join_once(ctx)
        elapsed = time.perf_counter() - t0
        bench_common.emit("start_join", method,
                          round(elapsed * 1000.0 / batch, 4), "ms", rep)


def bench_start_100(ctx, method, reps, quick):
    warm_up(ctx)
    for rep in range(reps):
        procs = [ctx.Process(target=noop) for _ in range(START_100_COUNT)]
        t0 = time.perf_counter()
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        elapsed = time.perf_counter() - t0
        for p in procs:
            CLI.check_exit(p)
        bench_common.emit("start_100", method, round(elapsed * 1000.0, 4),
                          "ms", rep)


def read_vmrss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def read_uss_kib(pid):
    """Private_Clean + Private_Dirty from smaps_rollup (fallback: smaps)."""
    total = 0
    found = False
    for name in ("smaps_rollup", "smaps"):
        try:
            with open(f"/proc/{pid}/{name}") as f:
                for line in f:
                    if line.startswith(("Private_Clean:", "Private_Dirty:")):
                        total += int(line.split()[1])
                        found = True
        except FileNotFoundError:
            continue
        if found:
            return total
    raise RuntimeError(f"no Private_* fields in /proc/{pid}/smaps_rollup")


def bench_idle_rss(ctx, method, reps, quick):
    warm_up(ctx)
    for rep in range(reps):
        parent_conn, child_conn = ctx.Pipe()
        p = ctx.Process(target=idle_child, args=(child_conn,))
        p.start()
        child_conn.close()
        msg = parent_conn.recv()  # blocks until the child is running
        if msg != "ready":
            raise RuntimeError(f"unexpected message from child: {msg!r}")
        rss = read_vmrss_kib(p.pid)
        uss = read_uss_kib(p.pid)
        parent_conn.send("exit")
        p.join()
        parent_conn.close()
        CLI.check_exit(p)
        bench_common.emit("idle_rss", method, rss, "KiB", rep)
        bench_common.emit("idle_uss", method, uss, "KiB", rep)


def main(argv):
    bench, method, reps, quick = CLI.parse_args(argv)
    ctx = multiprocessing.get_context(method)
    {"start_join": bench_start_join,
     "start_100": bench_start_100,
     "idle_rss": bench_idle_rss}[bench](ctx, method, reps, quick)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
