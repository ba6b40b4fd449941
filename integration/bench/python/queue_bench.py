#!/usr/bin/env python3
"""CPython multiprocessing.Queue baseline for the procvisor queue benches.

Usage: python3 queue_bench.py BENCH METHOD REPS [--quick] [--items N]
                              [--cpus P,C1,C2,...]

  BENCH    queue_1p1c_small | queue_2p2c_small | joinable_put_taskdone_join
  METHOD   fork | spawn | forkserver  (passed to multiprocessing.get_context)
  REPS     number of measured repetitions (positive integer)
  --items  items per batch (default 400,000, 200,000 with --quick; joinable
           300,000 / 150,000); the harness passes its own
  --cpus   pin this process to CPU P (before the forkserver starts) and the
           children to C1, C2, ... (producers first, then consumers or
           workers); the harness passes the placement its procvisor figures
           use. Unpinned without it.

Every item is (i, TEXT), TEXT a 32-character str. The children serve every
rep; one unmeasured warm-up batch (a tenth of a batch) first. Each rep times
one batch of n items, "items/s":

  queue_1p1c_small            one producer process puts n items on a Queue,
                              one consumer process gets them; from the go to
                              the producer until the consumer reports, on a
                              second queue, that it received all n
  queue_2p2c_small            two producers (n/2 each), two consumers (n/2
                              each) on one Queue; total items per second
  joinable_put_taskdone_join  two worker processes get + task_done from a
                              JoinableQueue; this process puts n items, then
                              calls join(); from the first put until join()
                              returns

The control and report queues are SimpleQueues (no feeder thread).

Prints one JSON object per line to stdout:
  {"bench": NAME, "impl": "cpython", "method": METHOD, "value": NUMBER,
   "unit": "items/s", "rep": i}

Stdlib only (plus bench_common.py, next to it). All work happens under
``if __name__ == "__main__"`` because the spawn and forkserver start methods
re-import this module in the children.
"""

import multiprocessing
import sys
import time

import bench_common

BENCHES = ("queue_1p1c_small", "queue_2p2c_small",
           "joinable_put_taskdone_join")
TEXT = "abcdefghijklmnopqrstuvwxyz012345"
UNIT = "items/s"
# (full, quick) items per batch.
BATCH = {
    "queue_1p1c_small": (400_000, 200_000),
    "queue_2p2c_small": (400_000, 200_000),
    "joinable_put_taskdone_join": (300_000, 150_000),
}
# (producers, consumers); the joinable bench's producer is this process.
SHAPE = {
    "queue_1p1c_small": (1, 1),
    "queue_2p2c_small": (2, 2),
    "joinable_put_taskdone_join": (0, 2),
}
STOP = -1  # the i of the item that ends a joinable worker
CLI = bench_common.Cli("queue_bench.py", BENCHES,
                       "[--items N] [--cpus P,C1,C2,...]")


def producer(ctl, q, cpu):
    """For each count n on ctl, put (0, TEXT) ... (n - 1, TEXT); until 0."""
    bench_common.pin(cpu)
    while True:
        n = ctl.get()
        if n == 0:
            break
        put = q.put
        for i in range(n):
            put((i, TEXT))
    # The consumers have received everything: the feeder thread has nothing
    # left to flush, so the exit does not wait.


def consumer(ctl, q, done, cpu):
    """For each count n on ctl, get n items, then put (whole items, sum of
    their i) on done; until 0."""
    bench_common.pin(cpu)
    while True:
        n = ctl.get()
        if n == 0:
            break
        get = q.get
        count = total = 0
        for _ in range(n):
            i, text = get()
            if len(text) == len(TEXT):
                count += 1
            total += i
        done.put((count, total))


def worker(q, done, cpu):
    """Get and mark done until the STOP item, then put the whole-item count
    on done."""
    bench_common.pin(cpu)
    count = 0
    while True:
        i, text = q.get()
        q.task_done()
        if i == STOP:
            break
        if len(text) == len(TEXT):
            count += 1
    done.put(count)


def share(n, k, parts):
    """Child k's share of n items among parts."""
    return n // parts + (1 if k < n % parts else 0)


def run_queue(ctx, bench, method, reps, n, cpus):
    n_prod, n_cons = SHAPE[bench]
    q = ctx.Queue()
    done = ctx.SimpleQueue()
    prod_ctl = [ctx.SimpleQueue() for _ in range(n_prod)]
    cons_ctl = [ctx.SimpleQueue() for _ in range(n_cons)]
    procs = [ctx.Process(target=producer, args=(prod_ctl[k], q, cpus[k]))
             for k in range(n_prod)]
    procs += [ctx.Process(target=consumer,
                          args=(cons_ctl[k], q, done, cpus[n_prod + k]))
              for k in range(n_cons)]
    for p in procs:
        p.start()

    def batch(n):
        for k, ctl in enumerate(cons_ctl):
            ctl.put(share(n, k, n_cons))
        t0 = time.perf_counter()
        for k, ctl in enumerate(prod_ctl):
            ctl.put(share(n, k, n_prod))
        count = total = 0
        for _ in range(n_cons):
            c, s = done.get()
            count += c
            total += s
        elapsed = time.perf_counter() - t0
        want = sum(m * (m - 1) // 2
                   for m in (share(n, k, n_prod) for k in range(n_prod)))
        if count != n or total != want:
            CLI.fail(f"the consumers received {count} whole items of {n} "
                     f"(sum of i {total}, not {want})")
        return n / elapsed

    batch(max(1, n // 10))  # warm-up, not measured
    for rep in range(reps):
        bench_common.emit(bench, method, round(batch(n), 4), UNIT, rep)
    for ctl in prod_ctl + cons_ctl:
        ctl.put(0)
    CLI.join_all(procs)


def run_joinable(ctx, bench, method, reps, n, cpus):
    _, n_workers = SHAPE[bench]
    q = ctx.JoinableQueue()
    done = ctx.SimpleQueue()
    procs = [ctx.Process(target=worker, args=(q, done, cpus[k]))
             for k in range(n_workers)]
    for p in procs:
        p.start()
    put_total = 0

    def batch(n):
        t0 = time.perf_counter()
        put = q.put
        for i in range(n):
            put((i, TEXT))
        q.join()
        return n / (time.perf_counter() - t0)

    put_total += max(1, n // 10)
    batch(max(1, n // 10))  # warm-up, not measured
    for rep in range(reps):
        bench_common.emit(bench, method, round(batch(n), 4), UNIT, rep)
        put_total += n
    for _ in procs:
        q.put((STOP, ""))
    got = sum(done.get() for _ in procs)
    CLI.join_all(procs)
    if got != put_total:
        CLI.fail(f"the workers received {got} whole items of {put_total}")


def main(argv):
    cpus_s, argv = CLI.take_option(argv, "--cpus")
    items_s, argv = CLI.take_option(argv, "--items")
    bench, method, reps, quick = CLI.parse_args(argv)
    n = BATCH[bench][1 if quick else 0]
    if items_s is not None:
        n = CLI.positive_int(items_s, "--items")
    children = sum(SHAPE[bench])
    cpus = CLI.parse_cpus(cpus_s, children, "P,C1,C2,...")
    child_cpus = bench_common.place(cpus, children)
    ctx = multiprocessing.get_context(method)
    if bench == "joinable_put_taskdone_join":
        run_joinable(ctx, bench, method, reps, n, child_cpus)
    else:
        run_queue(ctx, bench, method, reps, n, child_cpus)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
