#!/usr/bin/env python3
"""CPython multiprocessing baseline for the procvisor benchmark harness.

Usage: python3 process_bench.py BENCH METHOD REPS [--quick]

  BENCH   start_join | start_100 | idle_rss
  METHOD  fork | spawn | forkserver  (passed to multiprocessing.get_context)
  REPS    number of measured repetitions (positive integer)

Prints one JSON object per line to stdout:
  {"bench": NAME, "impl": "cpython", "method": METHOD, "value": NUMBER,
   "unit": UNIT, "rep": i}

Stdlib only. All work happens under ``if __name__ == "__main__"`` because the
spawn and forkserver start methods re-import this module in the children.
"""

import json
import multiprocessing
import sys
import time

BENCHES = ("start_join", "start_100", "idle_rss")
METHODS = ("fork", "spawn", "forkserver")
START_100_COUNT = 100


def noop():
    """Target that does nothing (module level so spawn children can find it)."""


def idle_child(conn):
    """Signal readiness through the pipe, then block until told to exit."""
    conn.send("ready")
    conn.recv()
    conn.close()


def usage_error(reason):
    print(f"process_bench.py: {reason} "
          f"(usage: process_bench.py {{{'|'.join(BENCHES)}}} "
          f"{{{'|'.join(METHODS)}}} REPS [--quick])",
          file=sys.stderr)
    sys.exit(2)


def emit(bench, method, value, unit, rep):
    # flush every line: with the fork method a child would otherwise flush a
    # copy of the parent's pending stdout buffer on exit.
    print(json.dumps({"bench": bench, "impl": "cpython", "method": method,
                      "value": value, "unit": unit, "rep": rep}),
          flush=True)


def check_exit(proc):
    if proc.exitcode != 0:
        print(f"process_bench.py: child {proc.pid} exited with "
              f"{proc.exitcode}", file=sys.stderr)
        sys.exit(1)


def start_join_once(ctx):
    p = ctx.Process(target=noop)
    p.start()
    p.join()
    check_exit(p)


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
        emit("start_join", method, round(elapsed * 1000.0 / batch, 4), "ms",
             rep)


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
            check_exit(p)
        emit("start_100", method, round(elapsed * 1000.0, 4), "ms", rep)


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
        check_exit(p)
        emit("idle_rss", method, rss, "KiB", rep)
        emit("idle_uss", method, uss, "KiB", rep)


def main(argv):
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

    ctx = multiprocessing.get_context(method)
    {"start_join": bench_start_join,
     "start_100": bench_start_100,
     "idle_rss": bench_idle_rss}[bench](ctx, method, reps, quick)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
