#!/usr/bin/env python3
"""CPython multiprocessing.Pipe baseline for the procvisor connection benches.

Usage: python3 connection_bench.py BENCH METHOD REPS [--quick] [--cpus P,C]

  BENCH   connection_rtt_small | connection_oneway_small | connection_oneway_1mib
  METHOD  fork | spawn | forkserver  (passed to multiprocessing.get_context)
  REPS    number of measured repetitions (positive integer)
  --cpus  pin this process to CPU P (before the forkserver starts) and the
          child to CPU C (P may equal C); the harness passes the placement its
          procvisor and floor figures use. Unpinned without it.

One child per run, at the other end of a duplex Pipe; one unmeasured warm-up
batch (a tenth of a batch) first. Each rep times one batch:

  connection_rtt_small     send (i, TEXT), the child sends it back; "us" per
                           round trip (20,000 round trips, 5,000 with --quick)
  connection_oneway_small  send n, then n messages (i, TEXT); the child counts
                           them and replies with the count; "msgs/s" from the
                           first send to the reply (200,000 / 50,000 messages)
  connection_oneway_1mib   as above with 1 MiB send_bytes / recv_bytes; "GB/s"
                           of payload, 10**9 bytes per second (2,000 / 300)

TEXT is a 32-character str. The batches are those of the procvisor side.

Prints one JSON object per line to stdout:
  {"bench": NAME, "impl": "cpython", "method": METHOD, "value": NUMBER,
   "unit": UNIT, "rep": i}

Stdlib only. All work happens under ``if __name__ == "__main__"`` because the
spawn and forkserver start methods re-import this module in the children.
"""

import json
import multiprocessing
import os
import sys
import time

BENCHES = ("connection_rtt_small", "connection_oneway_small",
           "connection_oneway_1mib")
METHODS = ("fork", "spawn", "forkserver")
TEXT = "abcdefghijklmnopqrstuvwxyz012345"
MIB = 1 << 20
# (full, quick) messages or round trips per batch.
BATCH = {
    "connection_rtt_small": (20_000, 5_000),
    "connection_oneway_small": (200_000, 50_000),
    "connection_oneway_1mib": (2_000, 300),
}
UNIT = {
    "connection_rtt_small": "us",
    "connection_oneway_small": "msgs/s",
    "connection_oneway_1mib": "GB/s",
}


def pin(cpu):
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def echo_child(conn, cpu):
    """Send back every message until None."""
    pin(cpu)
    while True:
        obj = conn.recv()
        if obj is None:
            break
        conn.send(obj)
    conn.close()


def count_child(conn, cpu):
    """Receive n, then n messages, reply with the count; until None."""
    pin(cpu)
    while True:
        n = conn.recv()
        if n is None:
            break
        count = 0
        for _ in range(n):
            conn.recv()
            count += 1
        conn.send(count)
    conn.close()


def count_bytes_child(conn, cpu):
    """Receive n, then n byte messages, reply with their total length; until None."""
    pin(cpu)
    while True:
        n = conn.recv()
        if n is None:
            break
        total = 0
        for _ in range(n):
            total += len(conn.recv_bytes())
        conn.send(total)
    conn.close()


CHILD = {
    "connection_rtt_small": echo_child,
    "connection_oneway_small": count_child,
    "connection_oneway_1mib": count_bytes_child,
}


def usage_error(reason):
    print(f"connection_bench.py: {reason} "
          f"(usage: connection_bench.py {{{'|'.join(BENCHES)}}} "
          f"{{{'|'.join(METHODS)}}} REPS [--quick] [--cpus P,C])",
          file=sys.stderr)
    sys.exit(2)


def fail(reason):
    print(f"connection_bench.py: {reason}", file=sys.stderr)
    sys.exit(1)


def emit(bench, method, value, unit, rep):
    # flush every line: with the fork method a child would otherwise flush a
    # copy of the parent's pending stdout buffer on exit.
    print(json.dumps({"bench": bench, "impl": "cpython", "method": method,
                      "value": value, "unit": unit, "rep": rep}),
          flush=True)


def batch_rtt(conn, n):
    """n round trips; microseconds per round trip."""
    t0 = time.perf_counter()
    for i in range(n):
        conn.send((i, TEXT))
        j, _ = conn.recv()
        if j != i:
            fail(f"echo sent back {j} for {i}")
    return (time.perf_counter() - t0) * 1e6 / n


def batch_oneway_small(conn, n):
    """n one-way messages; messages per second."""
    t0 = time.perf_counter()
    conn.send(n)
    for i in range(n):
        conn.send((i, TEXT))
    count = conn.recv()
    elapsed = time.perf_counter() - t0
    if count != n:
        fail(f"the child counted {count} messages of {n}")
    return n / elapsed


PAYLOAD = bytes([0xa5]) * MIB


def batch_oneway_1mib(conn, n):
    """n one-way 1 MiB byte messages; GB/s of payload."""
    t0 = time.perf_counter()
    conn.send(n)
    for _ in range(n):
        conn.send_bytes(PAYLOAD)
    total = conn.recv()
    elapsed = time.perf_counter() - t0
    if total != n * MIB:
        fail(f"the child received {total} bytes of {n * MIB}")
    return n * MIB / elapsed / 1e9


BATCH_FN = {
    "connection_rtt_small": batch_rtt,
    "connection_oneway_small": batch_oneway_small,
    "connection_oneway_1mib": batch_oneway_1mib,
}


def run(ctx, bench, method, reps, quick, child_cpu):
    n = BATCH[bench][1 if quick else 0]
    parent_conn, child_conn = ctx.Pipe()
    p = ctx.Process(target=CHILD[bench], args=(child_conn, child_cpu))
    p.start()
    child_conn.close()
    batch = BATCH_FN[bench]
    batch(parent_conn, max(1, n // 10))  # warm-up, not measured
    for rep in range(reps):
        emit(bench, method, round(batch(parent_conn, n), 4), UNIT[bench], rep)
    parent_conn.send(None)
    p.join(10)
    if p.exitcode is None:
        p.kill()
        p.join()
        fail(f"child {p.pid} did not exit when told to")
    if p.exitcode != 0:
        fail(f"child {p.pid} exited with {p.exitcode}")
    parent_conn.close()


def parse_cpus(value):
    try:
        parent, child = (int(c) for c in value.split(","))
    except ValueError:
        usage_error(f"--cpus wants P,C (two CPU numbers), got {value!r}")
    allowed = os.sched_getaffinity(0)
    for cpu in (parent, child):
        if cpu not in allowed:
            usage_error(f"CPU {cpu} is not in this process's affinity "
                        f"{sorted(allowed)}")
    return parent, child


def main(argv):
    cpus = None
    if "--cpus" in argv:
        i = argv.index("--cpus")
        if i + 1 >= len(argv):
            usage_error("--cpus wants a value")
        cpus = parse_cpus(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
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

    child_cpu = None
    if cpus is not None:
        # Before the forkserver (or any child) starts: they inherit it.
        pin(cpus[0])
        child_cpu = cpus[1]
    run(multiprocessing.get_context(method), bench, method, reps, quick,
        child_cpu)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
