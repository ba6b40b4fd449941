#!/usr/bin/env python3
"""CPython multiprocessing.Pipe baseline for the procvisor connection benches.

Usage: python3 connection_bench.py BENCH METHOD REPS [--quick] [--cpus P,C]

  BENCH   connection_rtt_small | connection_oneway_small | connection_oneway_1mib
          | connection_oneway_small_buffered
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
  connection_oneway_small_buffered
                           the same as connection_oneway_small: CPython has no
                           buffered sender, so its row is send() per message
  connection_oneway_1mib   as above with 1 MiB send_bytes / recv_bytes; "GB/s"
                           of payload, 10**9 bytes per second (2,000 / 300)

TEXT is a 32-character str. The batches are those of the procvisor side.

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

BENCHES = ("connection_rtt_small", "connection_oneway_small",
           "connection_oneway_1mib", "connection_oneway_small_buffered")
CLI = bench_common.Cli("connection_bench.py", BENCHES, "[--cpus P,C]")
TEXT = "abcdefghijklmnopqrstuvwxyz012345"
MIB = 1 << 20
# (full, quick) messages or round trips per batch.
BATCH = {
    "connection_rtt_small": (20_000, 5_000),
    "connection_oneway_small": (200_000, 50_000),
    "connection_oneway_1mib": (2_000, 300),
    "connection_oneway_small_buffered": (200_000, 50_000),
}
UNIT = {
    "connection_rtt_small": "us",
    "connection_oneway_small": "msgs/s",
    "connection_oneway_1mib": "GB/s",
    "connection_oneway_small_buffered": "msgs/s",
}


def echo_child(conn, cpu):
    """Send back every message until None."""
    bench_common.pin(cpu)
    while True:
        obj = conn.recv()
        if obj is None:
            break
        conn.send(obj)
    conn.close()


def count_child(conn, cpu):
    """Receive n, then n messages, reply with the count; until None."""
    bench_common.pin(cpu)
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
    bench_common.pin(cpu)
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
    "connection_oneway_small_buffered": count_child,
}


def batch_rtt(conn, n):
    """n round trips; microseconds per round trip."""
    t0 = time.perf_counter()
    for i in range(n):
        conn.send((i, TEXT))
        j, _ = conn.recv()
        if j != i:
            CLI.fail(f"echo sent back {j} for {i}")
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
        CLI.fail(f"the child counted {count} messages of {n}")
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
        CLI.fail(f"the child received {total} bytes of {n * MIB}")
    return n * MIB / elapsed / 1e9


BATCH_FN = {
    "connection_rtt_small": batch_rtt,
    "connection_oneway_small": batch_oneway_small,
    "connection_oneway_1mib": batch_oneway_1mib,
    "connection_oneway_small_buffered": batch_oneway_small,
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
        bench_common.emit(bench, method, round(batch(parent_conn, n), 4),
                          UNIT[bench], rep)
    parent_conn.send(None)
    CLI.join_all([p])
    parent_conn.close()


def main(argv):
    cpus_s, argv = CLI.take_option(argv, "--cpus")
    cpus = CLI.parse_cpus(cpus_s, 1, "P,C", "two CPU numbers",
                          count_in_form=True)
    bench, method, reps, quick = CLI.parse_args(argv)
    (child_cpu,) = bench_common.place(cpus, 1)
    run(multiprocessing.get_context(method), bench, method, reps, quick,
        child_cpu)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
