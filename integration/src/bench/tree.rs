//! The supervision benches (issue 4, "Speed"): `procvisor::tree` supervising `forkserver`
//! children, with the OS floor of a kill beside it. No CPython column: CPython has no
//! supervisor, and supervisord's restart floor is about 1 s (it polls its children once a
//! second), three orders of magnitude above these figures.
//!
//! - `restart_latency_p50` / `restart_latency_p99` (µs): a tree of one permanent Rust child
//!   with zero backoff ([`Backoff::none`]). Its target reports its pid on a
//!   `UnixDatagram` (bound by the bench, its path passed as the child's args) and blocks.
//!   Each iteration times the bench's `kill(pid, SIGKILL)` to the replacement's report:
//!   the supervisor's exit notice (pidfd), its restart decision, a forkserver start, and
//!   the new child reaching its target. Per repetition, the nearest-rank p50 and p99 of
//!   the iterations.
//! - OS floor `kill_reap` / `kill_reap_p99` (µs): a raw `fork` whose child writes one byte
//!   on a pipe and `pause`s; once the byte is read, `kill(pid, SIGKILL)` then
//!   `waitpid(pid)` is timed (the fork is not). The same p50 / p99 per repetition, one
//!   floor batch right before each procvisor batch, so that both see the same load.
//! - `supervise_1000_start` (ms): [`Spec::start`] of a tree of one group of 1,000 such
//!   children ([`ChildSpec::replicas`]) until all 1,000 reports arrived.
//! - `supervise_1000_rss` (KiB): VmRSS of this process, the supervisor, once all run and
//!   [`Tree::children`] says all 1,000 are running (the whole bench process: harness,
//!   procvisor runtime, the tree; its RSS before the tree is in the notes).
//! - `supervise_1000_idle_cpu` (ms): CPU time (user + system, `getrusage(RUSAGE_SELF)`:
//!   every thread of the process, the runtime's included) this process consumed during
//!   1 s of idling with the 1,000 children running; ≈ 0 when nothing polls. The window
//!   opens once [`Tree::children`] has answered: that answer comes after the supervisor's
//!   start sequence (a few ms after the last report, about 5 ms of CPU here), which is not
//!   idling.
//! - `supervise_1000_stop` (ms): [`Tree::stop`] until it returns, all 1,000 stopped
//!   (SIGTERM, the default shutdown, one child after another in reverse start order).
//!   Every pid is then checked gone before the next repetition.

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::libc;
use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, pipe};
use procvisor::StartMethod;
use procvisor::restart::{Backoff, Intensity};
use procvisor::tree::{ChildSpec, Outcome, RunState, Spec, Tree};
use procvisor_integration::{pid_present, wait_until};

use crate::measure::unique_temp_path;
use crate::report::{self, Figure, TargetRow};
use crate::{Config, figure, proc_kib, warm_up};

/// The restart rows.
pub(crate) const RESTART: [&str; 2] = ["restart_latency_p50", "restart_latency_p99"];

/// Their OS floors, in the same order.
pub(crate) const FLOORS: [&str; 2] = ["kill_reap", "kill_reap_p99"];

/// The rows of the 1,000-children tree.
pub(crate) const SUPERVISE: [&str; 4] = [
    "supervise_1000_start",
    "supervise_1000_rss",
    "supervise_1000_idle_cpu",
    "supervise_1000_stop",
];

/// The start method of the supervised children.
pub(crate) const METHOD: StartMethod = StartMethod::ForkServer;

/// Children of the `supervise_1000_*` tree (the names say so).
const CHILDREN: usize = 1000;

/// How long the supervising process idles for `supervise_1000_idle_cpu`.
const IDLE: Duration = Duration::from_secs(1);

/// How long a report may take before the bench gives up (a child died, or never started).
const REPORT_DEADLINE: Duration = Duration::from_secs(30);

/// How long the stopped children's pids may take to disappear after `Tree::stop`.
const GONE_DEADLINE: Duration = Duration::from_secs(5);

/// The unmeasured pause between two kills, so that each iteration starts from a quiet
/// supervisor (the previous restart's bookkeeping and the forkserver's reaping done).
const SETTLE: Duration = Duration::from_millis(2);

/// The targets of issue 4, by row.
fn target(bench: &str) -> &'static str {
    match bench {
        "restart_latency_p50" => "≤ 1 ms",
        "restart_latency_p99" => "≤ 5 ms",
        "supervise_1000_start" => "≤ 1 s",
        "supervise_1000_rss" => "≤ 64 MiB",
        "supervise_1000_idle_cpu" => "≈ 0",
        "supervise_1000_stop" => "≤ 2 s",
        _ => "-",
    }
}

/// Kills and restarts per restart repetition (and floor kills per floor repetition).
fn iterations(cfg: &Config) -> usize {
    if cfg.quick { 50 } else { 200 }
}

/// Repetitions of the 1,000-children tree (about 5 s each).
fn supervise_reps(cfg: &Config) -> usize {
    if cfg.quick { 1 } else { 3 }
}

/// Whether the filter asks for a restart row.
pub(crate) fn wants_restart(cfg: &Config) -> bool {
    RESTART.iter().any(|b| cfg.wants(b))
}

/// Whether the filter asks for a floor row only.
pub(crate) fn wants_floor_only(cfg: &Config) -> bool {
    !wants_restart(cfg) && FLOORS.iter().any(|b| cfg.wants(b))
}

/// Whether the filter asks for a `supervise_1000_*` row.
pub(crate) fn wants_supervise(cfg: &Config) -> bool {
    SUPERVISE.iter().any(|b| cfg.wants(b))
}

/// The target of every supervised child: reports its pid on the bench's socket at `socket`,
/// then blocks until killed (the default SIGTERM disposition ends it on a stop).
fn ready(socket: String) {
    let pid = std::process::id();
    if let Ok(s) = UnixDatagram::unbound() {
        let _ = s.send_to(&pid.to_ne_bytes(), &socket);
    }
    loop {
        std::thread::park();
    }
}

/// The bench's end of the children's reports: a bound `UnixDatagram`, unlinked on drop.
struct Reports {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Reports {
    fn bind() -> Result<Reports, String> {
        let path = unique_temp_path("tree", ".sock");
        let _ = std::fs::remove_file(&path);
        let socket =
            UnixDatagram::bind(&path).map_err(|e| format!("bind {}: {e}", path.display()))?;
        socket
            .set_read_timeout(Some(REPORT_DEADLINE))
            .map_err(|e| format!("set_read_timeout: {e}"))?;
        Ok(Reports { socket, path })
    }

    /// The path the children send to, as their args.
    fn arg(&self) -> Result<String, String> {
        self.path
            .to_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("socket path {} is not UTF-8", self.path.display()))
    }

    /// The next child's pid; an error after [`REPORT_DEADLINE`].
    fn recv(&self) -> Result<i32, String> {
        let mut buf = [0u8; 4];
        match self.socket.recv(&mut buf) {
            Ok(4) => Ok(u32::from_ne_bytes(buf) as i32),
            Ok(n) => Err(format!("a report of {n} bytes")),
            Err(e) => Err(format!(
                "no child report within {REPORT_DEADLINE:?}: {e} (a child died or never started)"
            )),
        }
    }
}

impl Drop for Reports {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The nearest-rank `p`-th percentile (`0 < p <= 100`) of `v`, which it sorts.
fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// `(p50, p99)` of a batch of samples.
fn p50_p99(mut samples: Vec<f64>) -> (f64, f64) {
    (
        percentile(&mut samples, 50.0),
        percentile(&mut samples, 99.0),
    )
}

// ---------------------------------------------------------------------------------------
// Restart latency and its floor
// ---------------------------------------------------------------------------------------

/// One raw kill → reap, in µs: fork a child that reports on a pipe and `pause`s, then time
/// `kill(SIGKILL)` + `waitpid` once it has reported.
fn kill_reap_once() -> Result<f64, String> {
    let (r, w) = pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the child calls only `write`, `pause` and `_exit`, all async-signal-safe, on a
    // descriptor opened before the fork: it allocates nothing and takes no lock another
    // thread of this process may hold.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            // SAFETY: `w` is an open pipe end and the buffer is one valid byte; `pause`
            // only returns on a caught signal (none is caught: SIGKILL ends it); `_exit`
            // runs no cleanup.
            unsafe {
                libc::write(w.as_raw_fd(), b"r".as_ptr().cast(), 1);
                loop {
                    libc::pause();
                }
            }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(w);
            let mut byte = [0u8; 1];
            let read = File::from(r).read_exact(&mut byte);
            let t0 = Instant::now();
            let killed = kill(child, Signal::SIGKILL);
            let status = waitpid(child, None);
            let us = t0.elapsed().as_secs_f64() * 1e6;
            read.map_err(|e| format!("the floor child did not report: {e}"))?;
            killed.map_err(|e| format!("kill: {e}"))?;
            match status {
                Ok(WaitStatus::Signaled(_, Signal::SIGKILL, _)) => Ok(us),
                other => Err(format!("floor child ended with {other:?}")),
            }
        }
        Err(e) => Err(format!("fork: {e}")),
    }
}

/// A batch of `n` floor kills: `(p50, p99)` in µs.
fn floor_batch(n: usize) -> Result<(f64, f64), String> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        samples.push(kill_reap_once()?);
        std::thread::sleep(SETTLE);
    }
    Ok(p50_p99(samples))
}

/// A batch of `n` kills of the supervised child, each timed to its replacement's report:
/// `(p50, p99)` in µs. `pid` is the running child's, updated to each replacement's.
fn restart_batch(reports: &Reports, pid: &mut i32, n: usize) -> Result<(f64, f64), String> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        kill(Pid::from_raw(*pid), Signal::SIGKILL).map_err(|e| format!("kill {pid}: {e}"))?;
        let new = reports.recv()?;
        samples.push(t0.elapsed().as_secs_f64() * 1e6);
        if new == *pid {
            return Err(format!("the killed child {new} reported again"));
        }
        *pid = new;
        std::thread::sleep(SETTLE);
    }
    Ok(p50_p99(samples))
}

/// The one-child tree of the restart rows: permanent, zero backoff, and an intensity that
/// the bench's kills never exceed.
fn restart_tree(reports: &Reports) -> Result<Tree, String> {
    Spec::new("bench")
        .intensity(Intensity {
            max_restarts: u32::MAX,
            period: Duration::from_secs(1),
        })
        .child(
            ChildSpec::process("r", ready, reports.arg()?)
                .backoff(Backoff::none())
                .start_method(METHOD),
        )
        .start()
        .map_err(|e| format!("start: {e}"))
}

/// The restart rows and their floors: one warm-up batch of each (a tenth), then per
/// repetition a floor batch and a restart batch.
pub(crate) fn bench_restart(cfg: &Config) -> Result<Vec<Figure>, String> {
    warm_up(METHOD)?;
    let n = iterations(cfg);
    let reports = Reports::bind()?;
    let tree = restart_tree(&reports)?;
    let mut pid = reports.recv()?;
    floor_batch((n / 10).max(1))?;
    restart_batch(&reports, &mut pid, (n / 10).max(1))?;
    let (mut p50, mut p99, mut f50, mut f99) = (vec![], vec![], vec![], vec![]);
    for _ in 0..cfg.reps() {
        let (a, b) = floor_batch(n)?;
        f50.push(a);
        f99.push(b);
        let (a, b) = restart_batch(&reports, &mut pid, n)?;
        p50.push(a);
        p99.push(b);
    }
    stopped(tree)?;
    let m = METHOD.as_str();
    Ok(vec![
        figure(RESTART[0], "procvisor", m, "us", p50),
        figure(RESTART[1], "procvisor", m, "us", p99),
        figure(FLOORS[0], "os", "-", "us", f50),
        figure(FLOORS[1], "os", "-", "us", f99),
    ])
}

/// The floors alone, when the filter names them but no restart row.
pub(crate) fn floor_only(cfg: &Config) -> Result<Vec<Figure>, String> {
    let n = iterations(cfg);
    floor_batch((n / 10).max(1))?;
    let (mut f50, mut f99) = (vec![], vec![]);
    for _ in 0..cfg.reps() {
        let (a, b) = floor_batch(n)?;
        f50.push(a);
        f99.push(b);
    }
    Ok(vec![
        figure(FLOORS[0], "os", "-", "us", f50),
        figure(FLOORS[1], "os", "-", "us", f99),
    ])
}

/// Stops a tree, which must end as stopped (not given up).
fn stopped(tree: Tree) -> Result<(), String> {
    match tree.stop() {
        Outcome::Stopped => Ok(()),
        other => Err(format!("the tree ended with {other:?}")),
    }
}

// ---------------------------------------------------------------------------------------
// 1,000 children
// ---------------------------------------------------------------------------------------

/// User + system CPU time of this whole process (every thread), in ms.
fn cpu_ms() -> Result<f64, String> {
    let u = getrusage(UsageWho::RUSAGE_SELF).map_err(|e| format!("getrusage: {e}"))?;
    let ms = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 * 1e3 + t.tv_usec() as f64 / 1e3;
    Ok(ms(u.user_time()) + ms(u.system_time()))
}

/// This process's VmRSS, in KiB.
fn rss_kib() -> Result<f64, String> {
    proc_kib("/proc/self/status", &["VmRSS"])
}

/// One tree of [`CHILDREN`] children: `[start ms, RSS KiB, idle CPU ms, stop ms]`.
fn supervise_once() -> Result<[f64; 4], String> {
    let reports = Reports::bind()?;
    let spec = Spec::new("bench").child(
        ChildSpec::process("w", ready, reports.arg()?)
            .replicas(CHILDREN)
            .backoff(Backoff::none())
            .start_method(METHOD),
    );
    let t0 = Instant::now();
    let tree = spec.start().map_err(|e| format!("start: {e}"))?;
    let mut pids = HashSet::with_capacity(CHILDREN);
    while pids.len() < CHILDREN {
        let pid = reports
            .recv()
            .map_err(|e| format!("{e}; {} of {CHILDREN} reported", pids.len()))?;
        pids.insert(pid);
    }
    let start_ms = t0.elapsed().as_secs_f64() * 1e3;
    // The supervisor's own account: it answers once its start sequence is over (a few ms
    // after the last report: the bookkeeping of the last starts), so the idle window
    // below holds no start work.
    let running = tree
        .children()
        .map_err(|e| format!("children: {e}"))?
        .iter()
        .filter(|c| c.state == RunState::Running)
        .count();
    if running != CHILDREN {
        return Err(format!(
            "{running} of {CHILDREN} children running after all reported"
        ));
    }
    let rss = rss_kib()?;
    let cpu0 = cpu_ms()?;
    std::thread::sleep(IDLE);
    let idle_cpu = cpu_ms()? - cpu0;
    let t1 = Instant::now();
    stopped(tree)?;
    let stop_ms = t1.elapsed().as_secs_f64() * 1e3;
    if !wait_until(GONE_DEADLINE, || pids.iter().all(|&p| !pid_present(p))) {
        let left = pids.iter().filter(|&&p| pid_present(p)).count();
        return Err(format!(
            "{left} children still present {GONE_DEADLINE:?} after Tree::stop returned"
        ));
    }
    Ok([start_ms, rss, idle_cpu, stop_ms])
}

/// The `supervise_1000_*` rows, and the note on this process's RSS before any tree.
pub(crate) fn bench_supervise(cfg: &Config) -> Result<(Vec<Figure>, String), String> {
    warm_up(METHOD)?;
    let before = rss_kib()?;
    let mut values: [Vec<f64>; 4] = Default::default();
    for _ in 0..supervise_reps(cfg) {
        for (v, x) in values.iter_mut().zip(supervise_once()?) {
            v.push(x);
        }
    }
    let m = METHOD.as_str();
    let units = ["ms", "KiB", "ms", "ms"];
    let figs = SUPERVISE
        .iter()
        .zip(units)
        .zip(values)
        .map(|((b, u), v)| figure(b, "procvisor", m, u, v))
        .collect();
    let note = format!(
        "supervise_1000_* ({m}): one tree of a {CHILDREN}-replica group, {} repetition(s); \
         each child reports its pid on a UnixDatagram and blocks; rss is the whole bench \
         process (it was {before:.0} KiB before the first tree); idle_cpu is \
         getrusage(RUSAGE_SELF) user+system over {} ms of idling, from Tree::children() \
         answering all running (the tail of the start sequence excluded); stop is Tree::stop \
         (SIGTERM, one child after another), every pid checked gone afterwards",
        supervise_reps(cfg),
        IDLE.as_millis()
    );
    Ok((figs, note))
}

/// What the notes say about the restart rows.
pub(crate) fn restart_note(cfg: &Config) -> String {
    format!(
        "restart_latency_* ({}): {} SIGKILLs per repetition of a permanent child with zero \
         backoff, each timed to its replacement's report from its target (pid on a \
         UnixDatagram); kill_reap: raw fork + pause, kill(SIGKILL) + waitpid timed; \
         nearest-rank p50/p99 per repetition, a floor batch right before each restart \
         batch, {} ms between kills; no CPython column (supervisord's restart floor is \
         about 1 s)",
        METHOD.as_str(),
        iterations(cfg),
        SETTLE.as_millis()
    )
}

/// The supervision rows as a Markdown table beside their floors and targets; empty when
/// none ran.
pub(crate) fn table(figs: &[Figure]) -> String {
    let rows: Vec<TargetRow> = RESTART
        .iter()
        .zip(FLOORS)
        .map(|(b, f)| (*b, Some(f)))
        .chain(SUPERVISE.iter().map(|b| (*b, None)))
        .map(|(bench, floor)| TargetRow {
            bench,
            floor,
            target: target(bench),
        })
        .collect();
    report::target_table("supervision bench", figs, &rows)
}
