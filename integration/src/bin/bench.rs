//! The procvisor benchmark harness: procvisor, CPython's `multiprocessing` and the OS
//! floor, measured in one run on one machine.
//!
//! ```text
//! cargo run --release -p procvisor-integration --bin bench -- [--quick] [--json] [FILTER]
//! ```
//!
//! - `start_join`: sequential start + join of a no-op target, mean ms per start+join over
//!   a batch (one unmeasured warm-up first, which also starts the forkserver).
//! - `start_100`: start 100 no-op processes, then join them all; total ms.
//! - `idle_rss` / `idle_uss`: VmRSS and Private_Clean + Private_Dirty (KiB) of a child
//!   blocked in its target.
//! - OS floor (impl `os`, method `-`): `fork_waitpid` (raw fork, the child `_exit`s at
//!   once), `fork_exec_self` (fork + exec of this program, which exits first thing in
//!   `main` when `PROCVISOR_BENCH_EXIT` is set) and `fork_exec_true` (fork + exec of
//!   `/bin/true`, a small C program: the least any start method that execs a program can
//!   cost on this machine, measured beside `spawn`); ms per op.
//! - `connection_rtt_small`, `connection_oneway_small`, `connection_oneway_1mib`:
//!   `procvisor::connection` between this process and a `forkserver` child, with raw
//!   socketpair floors (`socketpair_rtt`, `socketpair_write_small`,
//!   `socketpair_write_1mib`); see `integration/src/bench/connection.rs`.
//! - `queue_1p1c_small`, `queue_2p2c_small`, `joinable_put_taskdone_join`: items per
//!   second through `procvisor::{Queue, JoinableQueue}` between `forkserver` children (no
//!   OS floor); see `integration/src/bench/queue.rs`.
//! - `actor_request_rtt`: an actix request through `procvisor::mailbox` to a `forkserver`
//!   child echoing `connection_rtt_small`'s message; µs per request, read against the
//!   procvisor `connection_rtt_small` median (no CPython equivalent); see
//!   `integration/src/bench/actor.rs`.
//! - `lock_uncontended`, `value_contended_2x200k` (ns per op) and `event_pingpong` (µs per
//!   round trip): `procvisor::{Lock, Value, Event}`, with raw process-shared
//!   `pthread_mutex_t` and futex floors (`pthread_mutex_pair`, `pthread_mutex_2x200k`,
//!   `futex_pingpong`); see `integration/src/bench/sync.rs`.
//! - `manager_dict_set`, `manager_dict_get` (µs per call): a `procvisor::manager` dict
//!   proxy called from this process, with raw request/response floors over a Unix stream
//!   socket (`unix_rtt_dict_set`, `unix_rtt_dict_get`); see
//!   `integration/src/bench/manager.rs`.
//! - `restart_latency_p50` / `_p99` (µs, SIGKILL of a supervised child to its replacement
//!   running, with `kill_reap` / `kill_reap_p99` floors) and `supervise_1000_start`, `_rss`,
//!   `_idle_cpu`, `_stop` (a tree of 1,000 children), in a table of their own beside issue
//!   4's targets; see `integration/src/bench/tree.rs`.
//! - `pool_map_1M_default_chunksize`, `pool_map_chunksize1`, `pool_imap_unordered_chunksize1`
//!   (items/s), `pool_apply_rtt` (µs, floor `pool_pipe_rtt`) and `pool_create_close_join`
//!   (ms): `procvisor::Pool` of `forkserver` workers; see `integration/src/bench/pool.rs`.
//! - `cli_status_100` (ms, one `procvisor status --json` command against a running fleet of
//!   100 programs, with the socket round trip alone as `cli_status_100_socket` and the floor
//!   `spawn_wait_true`) and `cli_run_100_all_running` (ms, `procvisor run` of that fleet
//!   until all 100 run, floor `spawn_100_sleep`): the release `procvisor` binary found next
//!   to this one, no CPython column; see `integration/src/bench/cli.rs`.
//! - CPython: `integration/bench/python/process_bench.py`, `connection_bench.py`,
//!   `queue_bench.py`, `sync_bench.py`, `manager_bench.py` and `pool_bench.py`, run with
//!   `python3`.
//!
//! The floor is measured inside `start_join`, one floor batch right before each procvisor
//! batch, so that a ratio compares figures taken under the same load (the machine may be
//! shared); on its own only when the filter names a floor but not `start_join`.
//!
//! `FILTER` is a substring of the bench names to run. `--json` prints one JSON
//! object per figure and line instead of the table; progress goes to stderr either way.

use std::ffi::{CStr, CString, OsString};
use std::os::raw::c_char;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use nix::libc;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};
use procvisor::{Process, StartMethod};

#[path = "../bench/actor.rs"]
mod actor;
#[path = "../bench/cli.rs"]
mod cli;
#[path = "../bench/connection.rs"]
mod connection;
#[path = "../bench/cpus.rs"]
mod cpus;
#[path = "../bench/json.rs"]
mod json;
#[path = "../bench/manager.rs"]
mod manager;
#[path = "../bench/measure.rs"]
mod measure;
#[path = "../bench/pool.rs"]
mod pool;
#[path = "../bench/queue.rs"]
mod queue;
#[path = "../bench/report.rs"]
mod report;
#[path = "../bench/sync.rs"]
mod sync;
#[path = "../bench/tree.rs"]
mod tree;

use report::Figure;

/// Set in the environment of the `fork_exec_self` children: `main` exits 0 at once.
const EXIT_ENV: &str = "PROCVISOR_BENCH_EXIT";

/// Processes started at once by `start_100`.
const START_100_COUNT: usize = 100;

/// How long an idle child may take to reach its target.
const IDLE_DEADLINE: Duration = Duration::from_secs(10);

use procvisor_integration::START_METHODS as METHODS;

/// The target of `start_join` and `start_100`.
fn noop(_: ()) {}

/// The target of `idle_rss`: blocks (in `futex`) until killed.
fn idle(_: ()) {
    loop {
        std::thread::park();
    }
}

#[derive(Debug)]
struct Config {
    quick: bool,
    json: bool,
    filter: Option<String>,
}

impl Config {
    /// Measured repetitions of every figure.
    fn reps(&self) -> usize {
        if self.quick { 5 } else { 10 }
    }

    /// Start+joins per `start_join` repetition.
    fn batch(&self, method: StartMethod) -> usize {
        match (self.quick, method) {
            (false, StartMethod::Spawn) => 50,
            (false, _) => 200,
            (true, StartMethod::Spawn) => 20,
            (true, _) => 50,
        }
    }

    /// Operations per floor repetition.
    fn floor_batch(&self, bench: &str) -> usize {
        match (self.quick, bench) {
            (false, "fork_waitpid") => 200,
            (false, _) => 50,
            (true, "fork_waitpid") => 50,
            (true, _) => 20,
        }
    }

    fn wants(&self, bench: &str) -> bool {
        self.filter.as_deref().is_none_or(|f| bench.contains(f))
    }
}

fn usage() -> &'static str {
    "usage: bench [--quick] [--json] [FILTER]\n\
     \x20 --quick  fewer repetitions and smaller batches (under 2 minutes)\n\
     \x20 --json   one JSON object per figure and line instead of the table\n\
     \x20 FILTER   run only the benches whose name contains it:\n\
     \x20          start_join, start_100, idle_rss, idle_uss, fork_waitpid, fork_exec_self,\n\
     \x20          fork_exec_true,\n\
     \x20          connection_rtt_small, connection_oneway_small, connection_oneway_1mib,\n\
     \x20          connection_oneway_small_buffered, socketpair_write_batched,\n\
     \x20          socketpair_rtt, socketpair_write_small, socketpair_write_1mib,\n\
     \x20          queue_1p1c_small, queue_2p2c_small, joinable_put_taskdone_join,\n\
     \x20          actor_request_rtt, lock_uncontended, value_contended_2x200k,\n\
     \x20          event_pingpong, pthread_mutex_pair, pthread_mutex_2x200k, futex_pingpong,\n\
     \x20          restart_latency_p50, restart_latency_p99, kill_reap, kill_reap_p99,\n\
     \x20          supervise_1000_start, supervise_1000_rss, supervise_1000_idle_cpu,\n\
     \x20          supervise_1000_stop,\n\
     \x20          pool_map_1M_default_chunksize, pool_map_chunksize1,\n\
     \x20          pool_imap_unordered_chunksize1, pool_apply_rtt, pool_create_close_join,\n\
     \x20          cli_status_100, cli_status_100_socket, spawn_wait_true,\n\
     \x20          cli_run_100_all_running, spawn_100_sleep"
}

fn parse_args() -> Result<Config, String> {
    let mut cfg = Config {
        quick: false,
        json: false,
        filter: None,
    };
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => cfg.quick = true,
            "--json" => cfg.json = true,
            "-h" | "--help" => return Err(String::new()),
            a if a.starts_with('-') => return Err(format!("unknown option {a:?}")),
            a if cfg.filter.is_none() => cfg.filter = Some(a.to_owned()),
            a => return Err(format!("more than one FILTER ({a:?})")),
        }
    }
    Ok(cfg)
}

fn main() -> ExitCode {
    // First thing: a `fork_exec_self` child only measures the cost of exec'ing us.
    if std::env::var_os(EXIT_ENV).is_some() {
        std::process::exit(0);
    }
    let cfg = match parse_args() {
        Ok(cfg) => cfg,
        Err(e) if e.is_empty() => {
            println!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("bench: {e}\n{}", usage());
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let python = python_version();

    let info = machine_info(&python, &cfg);
    if cfg.json {
        eprint!("{info}");
    } else {
        print!("{info}");
    }

    let mut figs: Vec<Figure> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut failed = false;
    let mut record = |figs: &mut Vec<Figure>,
                      r: Result<Vec<Figure>, String>,
                      what: &str,
                      notes: &mut Vec<String>| match r {
        Ok(new) => {
            for f in new {
                // fork_waitpid is measured with both forkserver and fork: one figure.
                match figs
                    .iter_mut()
                    .find(|g| g.bench == f.bench && g.imp == f.imp && g.method == f.method)
                {
                    Some(g) => g.values.extend(f.values),
                    None => figs.push(f),
                }
            }
        }
        Err(e) => {
            eprintln!("bench: {what} failed: {e}");
            notes.push(format!("{what} failed: {e}"));
            failed = true;
        }
    };

    let exec = match Floors::new() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The OS floor is measured inside `start_join`, whose reference it is, one floor batch
    // before each procvisor batch; on its own only when the filter names it alone.
    if !cfg.wants("start_join") {
        for bench in ["fork_waitpid", "fork_exec_self", "fork_exec_true"] {
            if cfg.wants(bench) {
                progress(&format!("os {bench}"));
                let r = floor(&cfg, bench, &exec).map(|f| vec![f]);
                record(&mut figs, r, bench, &mut notes);
            }
        }
    }

    let benches: [(&str, &[&str]); 3] = [
        ("start_join", &["start_join"]),
        ("start_100", &["start_100"]),
        ("idle_rss", &["idle_rss", "idle_uss"]),
    ];
    let mut idle_probe = None;
    for (bench, names) in benches {
        if !names.iter().any(|n| cfg.wants(n)) {
            continue;
        }
        for method in METHODS {
            let m = method.as_str();
            progress(&format!("procvisor {bench} {m}"));
            let r = match bench {
                "start_join" => bench_start_join(&cfg, method, &exec),
                "start_100" => bench_start_100(&cfg, method).map(|f| vec![f]),
                _ => bench_idle(&cfg, method).map(|(f, probe)| {
                    idle_probe = Some(probe);
                    f
                }),
            };
            record(&mut figs, r, &format!("procvisor {bench} {m}"), &mut notes);

            if python.is_some() {
                progress(&format!("cpython {bench} {m}"));
                let r = run_cpython(&cfg, PROCESS_SCRIPT, bench, m, &[]);
                record(&mut figs, r, &format!("cpython {bench} {m}"), &mut notes);
            }
        }
    }
    let mut ran_connection = false;
    for (bench, floor_name) in connection::BENCHES {
        if cfg.wants(bench) {
            ran_connection = true;
            let m = connection::METHOD.as_str();
            progress(&format!("procvisor {bench} {m} (and os {floor_name})"));
            let r = connection::bench(&cfg, bench);
            record(&mut figs, r, &format!("procvisor {bench} {m}"), &mut notes);
            if python.is_some() {
                progress(&format!("cpython {bench} {m}"));
                let args = connection::cpython_args(bench);
                let r = run_cpython(&cfg, CONNECTION_SCRIPT, bench, m, &args);
                record(&mut figs, r, &format!("cpython {bench} {m}"), &mut notes);
            }
        } else if cfg.wants(floor_name) {
            progress(&format!("os {floor_name}"));
            let r = connection::floor_only(&cfg, bench).map(|f| vec![f]);
            record(&mut figs, r, floor_name, &mut notes);
        }
    }
    if ran_connection {
        notes.push(connection::note(&cfg));
    }
    if cfg.wants(actor::BENCH) {
        // Read against the connection round trip of this run: measured alongside when the
        // filter left that row out.
        let alongside = !figs
            .iter()
            .any(|f| f.bench == actor::FLOOR && f.imp == "procvisor");
        let m = connection::METHOD.as_str();
        progress(&format!(
            "procvisor {} {m}{}",
            actor::BENCH,
            if alongside {
                format!(" (and procvisor {})", actor::FLOOR)
            } else {
                String::new()
            }
        ));
        let r = actor::bench(&cfg, alongside);
        record(
            &mut figs,
            r,
            &format!("procvisor {} {m}", actor::BENCH),
            &mut notes,
        );
        notes.push(actor::note(&cfg, alongside));
    }
    for bench in queue::BENCHES {
        if cfg.wants(bench) {
            let m = queue::METHOD.as_str();
            progress(&format!("procvisor {bench} {m}"));
            let r = queue::bench(&cfg, bench);
            record(&mut figs, r, &format!("procvisor {bench} {m}"), &mut notes);
            if python.is_some() {
                progress(&format!("cpython {bench} {m}"));
                let args = queue::cpython_args(&cfg, bench);
                let r = run_cpython(&cfg, QUEUE_SCRIPT, bench, m, &args);
                record(&mut figs, r, &format!("cpython {bench} {m}"), &mut notes);
            }
            notes.push(queue::note(&cfg, bench));
        }
    }
    for rows in [FloorRows::SYNC, FloorRows::MANAGER] {
        let m = rows.method.as_str();
        for &(bench, floor_name) in rows.benches {
            if cfg.wants(bench) {
                progress(&format!("procvisor {bench} {m} (and os {floor_name})"));
                let r = (rows.bench)(&cfg, bench);
                record(&mut figs, r, &format!("procvisor {bench} {m}"), &mut notes);
                if python.is_some() {
                    progress(&format!("cpython {bench} {m}"));
                    let args = (rows.cpython_args)(&cfg, bench);
                    let r = run_cpython(&cfg, rows.script, bench, m, &args);
                    record(&mut figs, r, &format!("cpython {bench} {m}"), &mut notes);
                }
                notes.push((rows.note)(&cfg, bench));
            } else if cfg.wants(floor_name) {
                progress(&format!("os {floor_name}"));
                let r = (rows.floor_only)(&cfg, bench).map(|f| vec![f]);
                record(&mut figs, r, floor_name, &mut notes);
            }
        }
    }
    if tree::wants_restart(&cfg) {
        let m = tree::METHOD.as_str();
        progress(&format!("procvisor restart_latency {m} (and os kill_reap)"));
        let r = tree::bench_restart(&cfg);
        record(
            &mut figs,
            r,
            &format!("procvisor restart_latency {m}"),
            &mut notes,
        );
        notes.push(tree::restart_note(&cfg));
    } else if tree::wants_floor_only(&cfg) {
        progress("os kill_reap");
        let r = tree::floor_only(&cfg);
        record(&mut figs, r, "kill_reap", &mut notes);
    }
    if tree::wants_supervise(&cfg) {
        let m = tree::METHOD.as_str();
        progress(&format!("procvisor supervise_1000 {m}"));
        let r = tree::bench_supervise(&cfg).map(|(f, note)| {
            notes.push(note);
            f
        });
        record(
            &mut figs,
            r,
            &format!("procvisor supervise_1000 {m}"),
            &mut notes,
        );
    }
    for bench in pool::BENCHES {
        if cfg.wants(bench) {
            let m = pool::METHOD.as_str();
            progress(&format!("procvisor {bench} {m}"));
            let r = pool::bench(&cfg, bench);
            record(&mut figs, r, &format!("procvisor {bench} {m}"), &mut notes);
            if python.is_some() {
                progress(&format!("cpython {bench} {m}"));
                let args = pool::cpython_args(&cfg, bench);
                let r = run_cpython(&cfg, POOL_SCRIPT, bench, m, &args);
                record(&mut figs, r, &format!("cpython {bench} {m}"), &mut notes);
            }
            notes.push(pool::note(&cfg, bench));
        }
    }
    let (cli_status, cli_run) = (cli::wants_status(&cfg), cli::wants_run(&cfg));
    if cli_status {
        progress(&format!(
            "procvisor {} {} (and os {})",
            cli::STATUS[0],
            cli::METHOD,
            cli::STATUS_FLOOR
        ));
        let r = cli::bench_status(&cfg);
        record(
            &mut figs,
            r,
            &format!("procvisor {}", cli::STATUS[0]),
            &mut notes,
        );
    }
    if cli_run {
        progress(&format!(
            "procvisor {} {} (and os {})",
            cli::RUN,
            cli::METHOD,
            cli::RUN_FLOOR
        ));
        let r = cli::bench_run(&cfg);
        record(&mut figs, r, &format!("procvisor {}", cli::RUN), &mut notes);
    }
    if cli_status || cli_run {
        notes.push(cli::note(&cfg, cli_status, cli_run));
    }
    // `idle_rss` measures both; keep only what the filter asked for.
    figs.retain(|f| f.imp == "os" || cfg.wants(&f.bench) || !f.bench.starts_with("idle_"));
    if python.is_none() {
        notes.push("python3 not found: the CPython columns are empty".to_owned());
    }
    if let Some(n) = spawn_ceiling(&figs) {
        notes.push(n);
    }
    if let Some(probe) = idle_probe {
        notes.push(format!(
            "idle children counted as running their target when {probe}"
        ));
    }
    notes.push(format!(
        "{} repetitions per figure{}; start_join batches: procvisor {} (forkserver, fork) / {} \
         (spawn), cpython {} / {} (spawn); total run time {:.0} s",
        cfg.reps(),
        if cfg.quick { " (--quick)" } else { "" },
        cfg.batch(StartMethod::ForkServer),
        cfg.batch(StartMethod::Spawn),
        if cfg.quick { 5 } else { 20 },
        if cfg.quick { 3 } else { 10 },
        started.elapsed().as_secs_f64()
    ));

    if cfg.json {
        report::print_json(&figs);
        for n in &notes {
            eprintln!("note: {n}");
        }
    } else {
        let main_rows = report::table(&figs);
        if !main_rows.is_empty() {
            print!("\n{main_rows}");
        }
        let supervision = tree::table(&figs);
        if !supervision.is_empty() {
            print!("\n{supervision}");
        }
        let cli_rows = cli::table(&figs);
        if !cli_rows.is_empty() {
            print!("\n{cli_rows}");
        }
        let floors = report::floors(&figs);
        if !floors.is_empty() {
            println!("\nOS floor (median [min–max]):\n{floors}");
        } else {
            println!();
        }
        for n in &notes {
            println!("note: {n}");
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// A family of rows, each measured with its OS floor in the same repetitions, and beside
/// a CPython script: the sync rows and the manager rows.
struct FloorRows {
    /// Each bench with the name of its floor.
    benches: &'static [(&'static str, &'static str)],
    method: StartMethod,
    script: &'static str,
    /// procvisor's figure and its floor's.
    bench: fn(&Config, &str) -> Result<Vec<Figure>, String>,
    /// The floor alone (the filter names it, not the bench).
    floor_only: fn(&Config, &str) -> Result<Figure, String>,
    cpython_args: fn(&Config, &str) -> Vec<String>,
    note: fn(&Config, &str) -> String,
}

impl FloorRows {
    const SYNC: FloorRows = FloorRows {
        benches: &sync::BENCHES,
        method: sync::METHOD,
        script: SYNC_SCRIPT,
        bench: sync::bench,
        floor_only: sync::floor_only,
        cpython_args: sync::cpython_args,
        note: sync::note,
    };

    const MANAGER: FloorRows = FloorRows {
        benches: &manager::BENCHES,
        method: manager::METHOD,
        script: MANAGER_SCRIPT,
        bench: manager::bench,
        floor_only: manager::floor_only,
        cpython_args: manager::cpython_args,
        note: manager::note,
    };
}

fn progress(what: &str) {
    eprintln!("bench: running {what}");
}

// ---------------------------------------------------------------------------------------
// Machine information
// ---------------------------------------------------------------------------------------

/// `python3 --version`, or `None` when there is no python3.
fn python_version() -> Option<String> {
    let out = Command::new("python3")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    Some(String::from_utf8_lossy(&text).trim().to_owned())
}

fn machine_info(python: &Option<String>, cfg: &Config) -> String {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned());
    format!(
        "procvisor bench ({mode})\n\
         machine: nproc {nproc} (online {online}), CPU {model}, kernel {kernel}\n\
         python:  {py}\n\
         load average at start: {load}\n\
         note: the machine is shared and noisy; compare figures within one run, and read \
         the min–max spread before trusting a ratio.\n",
        mode = if cfg.quick { "quick" } else { "full" },
        online = procvisor::cpu_count(),
        py = python
            .as_deref()
            .unwrap_or("python3 not found (CPython skipped)"),
    )
}

// ---------------------------------------------------------------------------------------
// procvisor
// ---------------------------------------------------------------------------------------

fn figure(bench: &str, imp: &'static str, method: &str, unit: &str, values: Vec<f64>) -> Figure {
    Figure {
        bench: bench.to_owned(),
        imp,
        method: method.to_owned(),
        unit: unit.to_owned(),
        values,
    }
}

fn start_join_once(method: StartMethod) -> Result<(), String> {
    let mut p = Process::new(noop, ()).with_start_method(method);
    p.start().map_err(|e| format!("start: {e}"))?;
    p.join(None).map_err(|e| format!("join: {e}"))?;
    match p.exitcode() {
        Ok(Some(0)) => Ok(()),
        other => Err(format!("the no-op child ended with {other:?}")),
    }
}

/// One unmeasured start+join: for `forkserver` this also starts the server (and, for any
/// method, procvisor's runtime and spawner threads).
fn warm_up(method: StartMethod) -> Result<(), String> {
    start_join_once(method)
}

/// How much faster than CPython's `spawn` a start method that execs a program can be here
/// at best: CPython's `spawn` start+join over `fork_exec_true`, when both were measured.
fn spawn_ceiling(figs: &[Figure]) -> Option<String> {
    let median = |bench: &str, imp: &str, method: &str| {
        report::find(figs, bench, imp, method)
            .and_then(Figure::stats)
            .map(|s| s.median)
    };
    let cpython = median("start_join", "cpython", "spawn")?;
    let floor = median("fork_exec_true", "os", "-").filter(|f| *f > 0.0)?;
    Some(format!(
        "spawn ceiling: CPython's spawn start+join is {:.1}× fork_exec_true (fork + exec of \
         {TRUE_PATH}); no start method that execs a program gets further ahead of CPython \
         on this machine",
        cpython / floor
    ))
}

/// The floors measured beside `start_join` of `method`: the first is the one its ratio is
/// read against; `spawn` also gets `fork_exec_true`, the exec of a small C program.
fn floors_for(method: StartMethod) -> &'static [&'static str] {
    match method {
        StartMethod::Spawn => &["fork_exec_self", "fork_exec_true"],
        _ => &["fork_waitpid"],
    }
}

/// `start_join` of `method`, each repetition paired with a batch of its OS floor measured
/// right before it, so that both see the same load on this shared machine.
fn bench_start_join(
    cfg: &Config,
    method: StartMethod,
    exec: &Floors,
) -> Result<Vec<Figure>, String> {
    // Warm-up, not measured: starts the forkserver (and the runtime and spawner threads).
    warm_up(method)?;
    let floors = floors_for(method);
    for floor in floors {
        floor_op(floor, exec)?;
    }
    let batch = cfg.batch(method);
    let mut values = Vec::with_capacity(cfg.reps());
    let mut floor_values = vec![Vec::with_capacity(cfg.reps()); floors.len()];
    for _ in 0..cfg.reps() {
        for (floor, v) in floors.iter().zip(&mut floor_values) {
            v.push(floor_batch_ms(cfg, floor, exec)?);
        }
        let t0 = Instant::now();
        for _ in 0..batch {
            start_join_once(method)?;
        }
        values.push(t0.elapsed().as_secs_f64() * 1e3 / batch as f64);
    }
    let mut figs = vec![figure(
        "start_join",
        "procvisor",
        method.as_str(),
        "ms",
        values,
    )];
    for (floor, v) in floors.iter().zip(floor_values) {
        figs.push(figure(floor, "os", "-", "ms", v));
    }
    Ok(figs)
}

fn bench_start_100(cfg: &Config, method: StartMethod) -> Result<Figure, String> {
    warm_up(method)?;
    let mut values = Vec::with_capacity(cfg.reps());
    for _ in 0..cfg.reps() {
        let mut procs: Vec<Process<()>> = (0..START_100_COUNT)
            .map(|_| Process::new(noop, ()).with_start_method(method))
            .collect();
        let t0 = Instant::now();
        for p in &mut procs {
            p.start().map_err(|e| format!("start: {e}"))?;
        }
        for p in &procs {
            p.join(None).map_err(|e| format!("join: {e}"))?;
        }
        values.push(t0.elapsed().as_secs_f64() * 1e3);
        for p in &procs {
            match p.exitcode() {
                Ok(Some(0)) => {}
                other => return Err(format!("a no-op child ended with {other:?}")),
            }
        }
    }
    Ok(figure(
        "start_100",
        "procvisor",
        method.as_str(),
        "ms",
        values,
    ))
}

/// How we tell that an idle child is blocked in its target rather than still booting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// State `S` and `/proc/PID/syscall` shows `futex` (what `thread::park` blocks in).
    Syscall,
    /// State `S` and `/proc/PID/wchan` names a futex wait.
    Wchan,
    /// State `S` only (neither of the above is readable here); a booting child blocked in
    /// a read would pass too.
    StateOnly,
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Probe::Syscall => "/proc/PID/stat shows state S and /proc/PID/syscall shows futex",
            Probe::Wchan => "/proc/PID/stat shows state S and /proc/PID/wchan shows a futex wait",
            Probe::StateOnly => {
                "/proc/PID/stat shows state S (syscall and wchan unreadable: a child still \
                 booting could pass)"
            }
        })
    }
}

/// The state letter of `/proc/PID/stat` (after the last `)`, as the name may hold one).
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.trim_start().chars().next()
}

/// Whether `pid` is blocked in a futex, by the first probe that works here.
fn in_futex(pid: i32, probe: &mut Probe) -> bool {
    if *probe == Probe::Syscall {
        match std::fs::read_to_string(format!("/proc/{pid}/syscall")) {
            // "running" while on a CPU; otherwise the syscall number first.
            Ok(s) => {
                return s
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<i64>().ok())
                    == Some(libc::SYS_futex);
            }
            Err(_) => *probe = Probe::Wchan,
        }
    }
    if *probe == Probe::Wchan {
        match std::fs::read_to_string(format!("/proc/{pid}/wchan")) {
            Ok(s) if s.trim() != "0" && !s.trim().is_empty() => return s.contains("futex"),
            _ => *probe = Probe::StateOnly,
        }
    }
    true
}

/// Waits, polling, until `pid` sleeps in its target; an error after [`IDLE_DEADLINE`].
fn wait_idle(pid: i32, probe: &mut Probe) -> Result<(), String> {
    let deadline = Instant::now() + IDLE_DEADLINE;
    loop {
        if proc_state(pid) == Some('S') && in_futex(pid, probe) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "child {pid} did not block in its target within {IDLE_DEADLINE:?} \
                 (state {:?})",
                proc_state(pid)
            ));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// A `Key:   N kB` field of a /proc file, in KiB, summed over all its lines.
fn proc_kib(path: &str, keys: &[&str]) -> Result<f64, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut total = 0.0;
    let mut found = false;
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        if keys.contains(&key) {
            let n: f64 = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("{path}: bad {key} line {line:?}"))?;
            total += n;
            found = true;
        }
    }
    if found {
        Ok(total)
    } else {
        Err(format!("{path}: no {keys:?}"))
    }
}

fn bench_idle(cfg: &Config, method: StartMethod) -> Result<(Vec<Figure>, Probe), String> {
    warm_up(method)?;
    let mut probe = Probe::Syscall;
    let mut rss = Vec::with_capacity(cfg.reps());
    let mut uss = Vec::with_capacity(cfg.reps());
    for _ in 0..cfg.reps() {
        let mut p = Process::new(idle, ()).with_start_method(method);
        p.start().map_err(|e| format!("start: {e}"))?;
        let pid = p
            .pid()
            .map_err(|e| e.to_string())?
            .ok_or("no pid after start")?;
        let measured = wait_idle(pid, &mut probe).and_then(|()| {
            Ok((
                proc_kib(&format!("/proc/{pid}/status"), &["VmRSS"])?,
                proc_kib(
                    &format!("/proc/{pid}/smaps_rollup"),
                    &["Private_Clean", "Private_Dirty"],
                )?,
            ))
        });
        p.kill().map_err(|e| format!("kill: {e}"))?;
        p.join(None).map_err(|e| format!("join: {e}"))?;
        let (r, u) = measured?;
        rss.push(r);
        uss.push(u);
    }
    let m = method.as_str();
    Ok((
        vec![
            figure("idle_rss", "procvisor", m, "KiB", rss),
            figure("idle_uss", "procvisor", m, "KiB", uss),
        ],
        probe,
    ))
}

// ---------------------------------------------------------------------------------------
// OS floor
// ---------------------------------------------------------------------------------------

fn reap(pid: nix::unistd::Pid) -> Result<(), String> {
    match waitpid(pid, None) {
        Ok(WaitStatus::Exited(_, 0)) => Ok(()),
        Ok(other) => Err(format!("floor child ended with {other:?}")),
        Err(e) => Err(format!("waitpid: {e}")),
    }
}

/// One raw fork whose child `_exit`s at once, and its `waitpid`.
fn fork_waitpid_once() -> Result<(), String> {
    // SAFETY: the child calls only `_exit`, which is async-signal-safe, so it is sound to
    // fork this multi-threaded process: the child touches no lock another thread may hold.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            // SAFETY: `_exit` ends the process without running any Rust or libc cleanup.
            unsafe { libc::_exit(0) }
        }
        Ok(ForkResult::Parent { child }) => reap(child),
        Err(e) => Err(format!("fork: {e}")),
    }
}

/// What `execve` needs, built before forking (the child must not allocate).
struct Exec {
    path: CString,
    _strings: Vec<CString>,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
}

impl Exec {
    /// An exec of `path` as `arg0`, with this environment and `PROCVISOR_BENCH_EXIT` set.
    fn new(path: &[u8], arg0: &[u8]) -> Result<Self, String> {
        let cstr = |b: &[u8]| CString::new(b).map_err(|e| format!("exec argument: {e}"));
        let path = cstr(path)?;
        let arg0 = cstr(arg0)?;
        let mut env: Vec<CString> = Vec::new();
        for (k, v) in std::env::vars_os() {
            if k == EXIT_ENV {
                continue;
            }
            let mut kv: OsString = k;
            kv.push("=");
            kv.push(v);
            env.push(cstr(kv.as_bytes())?);
        }
        env.push(cstr(format!("{EXIT_ENV}=1").as_bytes())?);
        let argv = vec![arg0.as_ptr(), std::ptr::null()];
        let mut envp: Vec<*const c_char> = env.iter().map(|s| s.as_ptr()).collect();
        envp.push(std::ptr::null());
        let mut strings = env;
        strings.push(arg0);
        Ok(Exec {
            path,
            _strings: strings,
            argv,
            envp,
        })
    }

    /// One fork + exec, of a program that exits 0 at once, and its `waitpid`.
    ///
    /// We fork and exec by hand rather than with `std::process::Command`: `Command` may
    /// use `posix_spawn` (a vfork-style clone), which is not the fork + exec the `spawn`
    /// start method pays, and adds a pipe round trip of its own.
    fn once(&self) -> Result<(), String> {
        let path: &CStr = &self.path;
        // SAFETY: the child calls only `execve` and `_exit`, both async-signal-safe, with
        // pointers prepared before the fork; it allocates nothing and takes no lock.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                // SAFETY: `argv` and `envp` are null-terminated arrays of pointers to live
                // NUL-terminated strings owned by `self`; `_exit` runs only if exec failed.
                unsafe {
                    libc::execve(path.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr());
                    libc::_exit(127)
                }
            }
            Ok(ForkResult::Parent { child }) => reap(child),
            Err(e) => Err(format!("fork: {e}")),
        }
    }
}

/// The programs the exec floors run.
struct Floors {
    /// This program, which exits first thing in `main`.
    self_exe: Exec,
    /// `/bin/true`.
    true_exe: Exec,
}

impl Floors {
    fn new() -> Result<Self, String> {
        Ok(Floors {
            self_exe: Exec::new(b"/proc/self/exe", b"bench")?,
            true_exe: Exec::new(TRUE_PATH.as_bytes(), b"true")?,
        })
    }
}

/// The small C program of `fork_exec_true`.
const TRUE_PATH: &str = "/bin/true";

/// One floor operation: `fork_waitpid`, `fork_exec_self` or `fork_exec_true`.
fn floor_op(bench: &str, exec: &Floors) -> Result<(), String> {
    match bench {
        "fork_waitpid" => fork_waitpid_once(),
        "fork_exec_true" => exec
            .true_exe
            .once()
            .map_err(|e| format!("{TRUE_PATH}: {e}")),
        _ => exec.self_exe.once(),
    }
}

/// One timed batch of a floor operation, in ms per op.
fn floor_batch_ms(cfg: &Config, bench: &str, exec: &Floors) -> Result<f64, String> {
    let batch = cfg.floor_batch(bench);
    let t0 = Instant::now();
    for _ in 0..batch {
        floor_op(bench, exec)?;
    }
    Ok(t0.elapsed().as_secs_f64() * 1e3 / batch as f64)
}

/// A floor on its own, when the filter names it but `start_join` does not run.
fn floor(cfg: &Config, bench: &str, exec: &Floors) -> Result<Figure, String> {
    floor_op(bench, exec)?; // warm-up
    let values = (0..cfg.reps())
        .map(|_| floor_batch_ms(cfg, bench, exec))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(figure(bench, "os", "-", "ms", values))
}

// ---------------------------------------------------------------------------------------
// CPython
// ---------------------------------------------------------------------------------------

/// The CPython script of the process benches.
const PROCESS_SCRIPT: &str = "process_bench.py";
/// The CPython script of the connection benches.
const CONNECTION_SCRIPT: &str = "connection_bench.py";
/// The CPython script of the queue benches.
const QUEUE_SCRIPT: &str = "queue_bench.py";
/// The CPython script of the synchronisation benches.
const SYNC_SCRIPT: &str = "sync_bench.py";
/// The CPython script of the manager benches.
const MANAGER_SCRIPT: &str = "manager_bench.py";
/// The CPython script of the pool benches.
const POOL_SCRIPT: &str = "pool_bench.py";

fn python_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("bench/python")
        .join(name)
}

/// Runs `SCRIPT BENCH METHOD REPS [--quick] [EXTRA...]` (a script of `bench/python`) and
/// groups its lines into figures.
fn run_cpython(
    cfg: &Config,
    script_name: &str,
    bench: &str,
    method: &str,
    extra: &[String],
) -> Result<Vec<Figure>, String> {
    let script = python_script(script_name);
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .arg(bench)
        .arg(method)
        .arg(cfg.reps().to_string());
    if cfg.quick {
        cmd.arg("--quick");
    }
    cmd.args(extra);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("python3 {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "python3 {} exited with {}: {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let mut figs: Vec<Figure> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let obj = json::parse_flat_object(line)
            .ok_or_else(|| format!("unparsable line from {script_name}: {line:?}"))?;
        let field = |k: &str| json::get(&obj, k);
        let (Some(name), Some(value), Some(unit)) = (
            field("bench").and_then(json::Value::as_str),
            field("value").and_then(json::Value::as_f64),
            field("unit").and_then(json::Value::as_str),
        ) else {
            return Err(format!("incomplete line from {script_name}: {line:?}"));
        };
        match figs.iter_mut().find(|f| f.bench == name) {
            Some(f) => f.values.push(value),
            None => figs.push(figure(name, "cpython", method, unit, vec![value])),
        }
    }
    if figs.is_empty() {
        return Err(format!("{script_name} printed nothing"));
    }
    Ok(figs)
}
