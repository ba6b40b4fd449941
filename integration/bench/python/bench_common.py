"""Plumbing shared by the CPython baseline scripts of the procvisor benches.

process_bench.py, connection_bench.py, queue_bench.py and sync_bench.py take
``BENCH METHOD REPS [--quick]`` plus their own options, print one JSON object
per line to stdout and exit 2 on a bad argument (one-line reason on stderr) or
1 when a child fails. They import this module as ``import bench_common``: a
script's own directory is on sys.path, and the spawn and forkserver children
inherit the parent's sys.path.

Stdlib only, and nothing runs at import time: the children re-import the
script, and this module with it. The multiprocessing targets stay at module
level in the scripts.
"""

import json
import multiprocessing
import os
import sys

METHODS = ("fork", "spawn", "forkserver")


def pin(cpu):
    """Pin the calling process to CPU ``cpu``; nothing for None."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def place(cpus, children):
    """Pin this process to ``cpus[0]`` and return the children's CPUs,
    ``cpus[1:]``; without ``cpus`` (None), ``[None] * children``.

    Call it before the forkserver (or any child) starts: they inherit it.
    """
    if cpus is None:
        return [None] * children
    pin(cpus[0])
    return cpus[1:]


def emit(bench, method, value, unit, rep):
    """Print one result line:
    {"bench", "impl": "cpython", "method", "value", "unit", "rep"}."""
    # flush every line: with the fork method a child would otherwise flush a
    # copy of the parent's pending stdout buffer on exit.
    print(json.dumps({"bench": bench, "impl": "cpython", "method": method,
                      "value": value, "unit": unit, "rep": rep}),
          flush=True)


class Cli:
    """The command line and the error exits of one script.

    prog     the script's name, which starts every line on stderr
    benches  its BENCH names
    options  its options after ``REPS [--quick]`` in the usage, e.g.
             "[--cpus P,C]"; empty for none
    """

    def __init__(self, prog, benches, options=""):
        self.prog = prog
        self.benches = benches
        self.options = options

    def usage_error(self, reason):
        """Exit 2 with ``reason`` and the usage on one line of stderr."""
        usage = (f"{self.prog} {{{'|'.join(self.benches)}}} "
                 f"{{{'|'.join(METHODS)}}} REPS [--quick]")
        if self.options:
            usage += " " + self.options
        print(f"{self.prog}: {reason} (usage: {usage})", file=sys.stderr)
        sys.exit(2)

    def fail(self, reason):
        """Exit 1 with ``reason`` on stderr (a child or a check failed)."""
        print(f"{self.prog}: {reason}", file=sys.stderr)
        sys.exit(1)

    def check_exit(self, proc):
        """Fail unless the joined ``proc`` exited with 0."""
        if proc.exitcode != 0:
            self.fail(f"child {proc.pid} exited with {proc.exitcode}")

    def join_all(self, procs, timeout=10):
        """Join each of ``procs`` (told to exit); kill and fail one that does
        not within ``timeout`` seconds, fail one that exited non-zero."""
        for p in procs:
            p.join(timeout)
            if p.exitcode is None:
                p.kill()
                p.join()
                self.fail(f"child {p.pid} did not exit when told to")
            self.check_exit(p)

    def take_option(self, argv, name):
        """(value of the option ``name`` or None, argv without it)."""
        if name not in argv:
            return None, argv
        i = argv.index(name)
        if i + 1 >= len(argv):
            self.usage_error(f"{name} wants a value")
        return argv[i + 1], argv[:i] + argv[i + 2:]

    def positive_int(self, text, what):
        """``text`` as a positive integer; usage error naming ``what`` if not."""
        try:
            n = int(text)
        except ValueError:
            n = 0
        if n < 1:
            self.usage_error(f"{what} must be a positive integer, got {text!r}")
        return n

    def parse_cpus(self, value, children, form, what="CPU numbers",
                   count_in_form=False):
        """The CPUs of ``--cpus value``: this process, then each of
        ``children``; every one in this process's affinity. None (no
        ``--cpus``) gives None.

        ``form`` and ``what`` describe the value in the error for a
        non-number ("--cpus wants P,C1,C2,... (CPU numbers)"). A wrong count
        is reported with the count wanted, or, with ``count_in_form`` (the
        form fixes it, e.g. "P,C (two CPU numbers)"), like a non-number.
        """
        if value is None:
            return None
        bad_form = f"--cpus wants {form} ({what}), got {value!r}"
        try:
            cpus = [int(c) for c in value.split(",")]
        except ValueError:
            self.usage_error(bad_form)
        if len(cpus) != 1 + children:
            if count_in_form:
                self.usage_error(bad_form)
            self.usage_error(f"--cpus wants {1 + children} CPUs for this bench "
                             f"(this process, then each child), "
                             f"got {len(cpus)}")
        allowed = os.sched_getaffinity(0)
        for cpu in cpus:
            if cpu not in allowed:
                self.usage_error(f"CPU {cpu} is not in this process's "
                                 f"affinity {sorted(allowed)}")
        return cpus

    def parse_args(self, argv):
        """(bench, method, reps, quick) from ``argv``, the script's valued
        options already taken out (take_option); any other ``--`` argument
        is a usage error."""
        args = [a for a in argv if a != "--quick"]
        quick = len(args) != len(argv)
        unknown = [a for a in args if a.startswith("--")]
        if unknown:
            self.usage_error(f"unknown option {unknown[0]!r}")
        if len(args) != 3:
            self.usage_error(f"expected 3 positional arguments, "
                             f"got {len(args)}")
        bench, method, reps_s = args
        if bench not in self.benches:
            self.usage_error(f"unknown BENCH {bench!r}")
        if method not in METHODS:
            self.usage_error(f"unknown METHOD {method!r}")
        if method not in multiprocessing.get_all_start_methods():
            self.usage_error(f"start method {method!r} not available on this "
                             f"platform")
        return bench, method, self.positive_int(reps_s, "REPS"), quick
