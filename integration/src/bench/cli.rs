//! The CLI benches (issue 7, "Speed"): the release `procvisor` binary supervising a fleet of
//! 100 programs (each `sleep 300`), driven as an operator drives it, with OS floors measured
//! in the same run.
//!
//! - `cli_status_100` (ms): the wall time of one `procvisor --socket S status --json`
//!   command against that fleet, from spawning the client process until it has exited and
//!   its output is read (what an operator waits for). Per repetition, the median of a batch
//!   of commands; each reply is checked to list 100 running programs.
//! - `cli_status_100_socket` (ms): the control-socket round trip alone, from this process:
//!   connect, send `{"cmd":"status"}\n`, read the reply line. `cli_status_100` minus this
//!   is what the client process costs (exec, dynamic loading, argument parsing, JSON).
//! - OS floor `spawn_wait_true` (ms): spawn and wait `/bin/true` the same way (a
//!   `std::process::Command` with its output read): the least any command can cost. One
//!   batch of each of the three right after another in every repetition, floor first, so
//!   that all see the same load.
//! - `cli_run_100_all_running` (ms): from spawning `procvisor run FLEET --socket S` until
//!   the fleet reports all 100 programs `"state":"running"`. The bench does not poll
//!   `status` (100 walks of the tree a second would load the fleet it times): it connects to
//!   the socket as soon as it accepts (retrying every millisecond; the socket is bound
//!   before the first program starts), follows `{"cmd":"events","follow":true}` (the
//!   history is sent first, so no event is missed) until 100 distinct programs have a
//!   `started` event, then asks `status` once and requires all 100 running (polling it
//!   only if not). The clock stops at that reply. Each repetition is a fresh fleet, stopped
//!   by SIGTERM afterwards; the bench waits for `procvisor run` to exit 0 and checks that
//!   every program's pid is gone.
//! - OS floor `spawn_100_sleep` (ms): `std::process::Command` spawns of 100 `sleep 300`
//!   from this process, timed until the last spawn returned (the exec done), then killed
//!   and reaped untimed; one floor batch right before each fleet.
//!
//! No CPython column: supervisord (the CPython tool these rows answer) is not installed
//! here, so nothing of it is measured. For context only: supervisord starts a fleet's
//! programs one after another from its main loop, and its select loop wakes about once a
//! second, so a program counts as RUNNING only after `startsecs` (1 s by default) has
//! passed; `supervisorctl status` is a Python interpreter start plus an XML-RPC call over
//! HTTP.
//!
//! The `procvisor` binary is looked for next to this bench executable (both are built in
//! `target/release` by `.ci/run`); a row fails with what to build when it is missing.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use procvisor_integration::{pid_present, wait_until};
use serde_json::Value;

use crate::measure::unique_temp_path;
use crate::report::{self, Figure, TargetRow};
use crate::{Config, figure};

/// The `status` rows: the command, and the socket round trip alone.
pub(crate) const STATUS: [&str; 2] = ["cli_status_100", "cli_status_100_socket"];

/// The floor of `cli_status_100`.
pub(crate) const STATUS_FLOOR: &str = "spawn_wait_true";

/// The fleet start row.
pub(crate) const RUN: &str = "cli_run_100_all_running";

/// The floor of [`RUN`].
pub(crate) const RUN_FLOOR: &str = "spawn_100_sleep";

/// What the method column says: the programs are commands the fleet execs.
pub(crate) const METHOD: &str = "exec";

/// Programs in the fleet (the row names say so).
const PROGRAMS: usize = 100;

/// How long a fleet may take to start, answer or stop before the bench gives up.
const DEADLINE: Duration = Duration::from_secs(30);

/// Whether the filter asks for a `status` row or its floor.
pub(crate) fn wants_status(cfg: &Config) -> bool {
    STATUS.iter().chain([&STATUS_FLOOR]).any(|b| cfg.wants(b))
}

/// Whether the filter asks for the fleet start row or its floor.
pub(crate) fn wants_run(cfg: &Config) -> bool {
    cfg.wants(RUN) || cfg.wants(RUN_FLOOR)
}

/// Commands (and round trips, and floor spawns) per `status` repetition.
fn status_batch(cfg: &Config) -> usize {
    if cfg.quick { 5 } else { 10 }
}

/// Fleets started by the fleet start row.
fn run_reps(cfg: &Config) -> usize {
    if cfg.quick { 3 } else { 5 }
}

/// The release `procvisor` binary, next to this bench executable.
fn procvisor_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let bin = exe
        .parent()
        .ok_or_else(|| format!("{} has no directory", exe.display()))?
        .join("procvisor");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "no procvisor binary at {} (next to this bench): build it first with \
             `cargo build --release -p procvisor --bin procvisor`",
            bin.display()
        ))
    }
}

/// Runs `op` `n` times, each timed; the median, in ms.
fn batch_median(n: usize, mut op: impl FnMut() -> Result<(), String>) -> Result<f64, String> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        op()?;
        samples.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    figure("-", "os", "-", "ms", samples)
        .stats()
        .map(|s| s.median)
        .ok_or_else(|| "an empty batch".to_owned())
}

/// A `procvisor run` of a [`PROGRAMS`]-program fleet in a directory of its own (the fleet
/// file, the control socket and the fleet's stderr), stopped and cleaned up on drop if
/// [`Fleet::stop`] was not reached.
struct Fleet {
    run: Child,
    dir: PathBuf,
    socket: PathBuf,
    /// The programs' pids, once they all run.
    pids: Vec<i32>,
}

impl Fleet {
    /// Writes the fleet file and spawns `procvisor run` on it (the clock of
    /// `cli_run_100_all_running` starts right before this is called).
    fn spawn(bin: &Path, dir: PathBuf) -> Result<Fleet, String> {
        let socket = dir.join("control.sock");
        let file = dir.join("fleet.toml");
        let err =
            File::create(dir.join("run.err")).map_err(|e| format!("{}: {e}", dir.display()))?;
        let run = Command::new(bin)
            .arg("run")
            .arg(&file)
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        Ok(Fleet {
            run,
            dir,
            socket,
            pids: Vec::new(),
        })
    }

    /// A fresh directory holding the fleet file.
    fn prepare() -> Result<PathBuf, String> {
        let dir = unique_temp_path("cli", "");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut toml = String::from("[fleet]\nname = \"bench\"\n");
        for i in 0..PROGRAMS {
            toml.push_str(&format!(
                "\n[[program]]\nname = \"p{i}\"\ncommand = \"sleep\"\nargs = [\"300\"]\n"
            ));
        }
        std::fs::write(dir.join("fleet.toml"), toml)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(dir)
    }

    /// Why the fleet is not answering: its exit status and the end of its stderr, if it
    /// ended.
    fn why(&mut self) -> String {
        match self.run.try_wait() {
            Ok(Some(status)) => {
                let err = std::fs::read_to_string(self.dir.join("run.err")).unwrap_or_default();
                let tail: Vec<&str> = err.lines().rev().take(3).collect();
                format!(
                    "procvisor run exited ({status}): {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                )
            }
            _ => "procvisor run is still running".to_owned(),
        }
    }

    /// A connection to the control socket, retrying every millisecond until it accepts.
    fn connect(&mut self) -> Result<UnixStream, String> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match UnixStream::connect(&self.socket) {
                Ok(s) => {
                    s.set_read_timeout(Some(DEADLINE))
                        .map_err(|e| format!("set_read_timeout: {e}"))?;
                    return Ok(s);
                }
                Err(e) if Instant::now() > deadline => {
                    let socket = self.socket.display().to_string();
                    return Err(format!("{socket}: {e}; {}", self.why()));
                }
                Err(_) => {
                    if matches!(self.run.try_wait(), Ok(Some(_))) {
                        return Err(self.why());
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    /// Sends one request line and returns the first reply line.
    fn ask(&mut self, request: &[u8]) -> Result<String, String> {
        let mut s = self.connect()?;
        s.write_all(request).map_err(|e| format!("send: {e}"))?;
        let mut line = String::new();
        BufReader::new(s)
            .read_line(&mut line)
            .map_err(|e| format!("reading the reply: {e}"))?;
        Ok(line)
    }

    /// Waits until 100 programs have started (from the event stream), then until `status`
    /// says all run; keeps their pids.
    fn wait_all_running(&mut self) -> Result<(), String> {
        let mut s = self.connect()?;
        s.write_all(b"{\"cmd\":\"events\",\"follow\":true}\n")
            .map_err(|e| format!("send: {e}"))?;
        let mut started = HashSet::with_capacity(PROGRAMS);
        let mut lines = BufReader::new(s).lines();
        while started.len() < PROGRAMS {
            let line = match lines.next() {
                Some(Ok(l)) => l,
                Some(Err(e)) => return Err(format!("reading events: {e}")),
                None => return Err(format!("the event stream ended; {}", self.why())),
            };
            let v: Value =
                serde_json::from_str(&line).map_err(|e| format!("event {line:?}: {e}"))?;
            match v["kind"].as_str() {
                Some("started") => {
                    started.insert(v["path"].as_str().unwrap_or_default().to_owned());
                }
                Some(k @ ("start_failed" | "gave_up" | "exited")) => {
                    return Err(format!("a {k} event while starting: {line}"));
                }
                _ if v["ok"] == Value::Bool(false) => return Err(format!("events: {line}")),
                _ => {}
            }
        }
        // Following ends when this connection closes (dropped here).
        drop(lines);
        let mut last = Err(String::new());
        let all = wait_until(DEADLINE, || {
            last = self.running_pids();
            matches!(&last, Ok(p) if p.len() == PROGRAMS)
        });
        match last {
            Ok(pids) if all => {
                self.pids = pids;
                Ok(())
            }
            Ok(pids) => Err(format!(
                "{} of {PROGRAMS} running {DEADLINE:?} after all started",
                pids.len()
            )),
            Err(e) => Err(e),
        }
    }

    /// The pids of the programs `status` reports running.
    fn running_pids(&mut self) -> Result<Vec<i32>, String> {
        let line = self.ask(b"{\"cmd\":\"status\"}\n")?;
        let v: Value = serde_json::from_str(&line).map_err(|e| format!("status {line:?}: {e}"))?;
        running(&v["programs"]).ok_or_else(|| format!("status: {line}"))
    }

    /// SIGTERM, then waits for `procvisor run` to exit 0 and every program's pid to be
    /// gone.
    fn stop(mut self) -> Result<(), String> {
        let pid = Pid::from_raw(self.run.id() as i32);
        kill(pid, Signal::SIGTERM).map_err(|e| format!("kill {pid}: {e}"))?;
        let mut status = None;
        if !wait_until(DEADLINE, || {
            status = self.run.try_wait().ok().flatten();
            status.is_some()
        }) {
            return Err(format!(
                "procvisor run did not exit within {DEADLINE:?} of SIGTERM"
            ));
        }
        if !status.is_some_and(|s| s.success()) {
            return Err(format!("after SIGTERM, {}", self.why()));
        }
        let pids = std::mem::take(&mut self.pids);
        if !wait_until(DEADLINE, || pids.iter().all(|&p| !pid_present(p))) {
            let left = pids.iter().filter(|&&p| pid_present(p)).count();
            return Err(format!(
                "{left} programs still present after the fleet exited"
            ));
        }
        Ok(())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if matches!(self.run.try_wait(), Ok(None)) {
            let _ = self.run.kill();
            let _ = self.run.wait();
        }
        // Only after a failure: programs the killed fleet could not stop.
        for &p in &self.pids {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The pids of a `status` reply's `programs` that are running; `None` if it is no list.
fn running(programs: &Value) -> Option<Vec<i32>> {
    Some(
        programs
            .as_array()?
            .iter()
            .filter(|p| p["state"] == "running")
            .filter_map(|p| p["pid"].as_i64().map(|p| p as i32))
            .collect(),
    )
}

/// Spawns a command, reads its output and waits for it; an error unless it exits 0.
fn output(cmd: &mut Command) -> Result<Vec<u8>, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "{cmd:?} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The `status` rows and their floor: one fleet, then per repetition a batch of
/// `/bin/true`, of socket round trips and of `status --json` commands.
pub(crate) fn bench_status(cfg: &Config) -> Result<Vec<Figure>, String> {
    let bin = procvisor_binary()?;
    let mut fleet = Fleet::spawn(&bin, Fleet::prepare()?)?;
    fleet.wait_all_running()?;
    let socket = fleet.socket.clone();
    let mut status = Command::new(&bin);
    status
        .arg("--socket")
        .arg(&socket)
        .args(["status", "--json"]);
    // Checked once (after the clock, in a warm-up): the command prints the 100 running.
    let out = output(&mut status)?;
    let listed: Value =
        serde_json::from_slice(&out).map_err(|e| format!("status --json printed: {e}"))?;
    match running(&listed) {
        Some(p) if p.len() == PROGRAMS => {}
        other => {
            return Err(format!(
                "status --json lists {:?} of {PROGRAMS} running",
                other.map(|p| p.len())
            ));
        }
    }
    let mut true_cmd = Command::new("/bin/true");
    let rtt = |fleet: &mut Fleet| -> Result<(), String> {
        let mut s = UnixStream::connect(&fleet.socket).map_err(|e| format!("connect: {e}"))?;
        s.write_all(b"{\"cmd\":\"status\"}\n")
            .map_err(|e| format!("send: {e}"))?;
        let mut line = Vec::with_capacity(16 * 1024);
        let mut r = BufReader::new(s);
        r.read_until(b'\n', &mut line)
            .map_err(|e| format!("reading the reply: {e}"))?;
        // `ok` is the reply's first key (the keys are sorted, and written in that order).
        if line.starts_with(b"{\"ok\":true") {
            Ok(())
        } else {
            Err(format!("status: {}", String::from_utf8_lossy(&line)))
        }
    };
    let n = status_batch(cfg);
    let (mut cmd, mut sock, mut floor) = (vec![], vec![], vec![]);
    for rep in 0..=cfg.reps() {
        let f = batch_median(n, || output(&mut true_cmd).map(drop))?;
        let s = batch_median(n, || rtt(&mut fleet))?;
        let c = batch_median(n, || output(&mut status).map(drop))?;
        // The first round is the warm-up.
        if rep > 0 {
            floor.push(f);
            sock.push(s);
            cmd.push(c);
        }
    }
    fleet.stop()?;
    Ok(vec![
        figure(STATUS[0], "procvisor", METHOD, "ms", cmd),
        figure(STATUS[1], "procvisor", METHOD, "ms", sock),
        figure(STATUS_FLOOR, "os", "-", "ms", floor),
    ])
}

/// One floor batch: spawn 100 `sleep 300`, timed until the last spawn returned; then kill
/// and reap them (untimed) and check them gone.
fn spawn_100_sleep() -> Result<f64, String> {
    let mut children: Vec<Child> = Vec::with_capacity(PROGRAMS);
    let t0 = Instant::now();
    let mut failed = None;
    for _ in 0..PROGRAMS {
        match Command::new("sleep")
            .arg("300")
            .stdin(Stdio::null())
            .spawn()
        {
            Ok(c) => children.push(c),
            Err(e) => {
                failed = Some(format!("spawn sleep: {e}"));
                break;
            }
        }
    }
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let pids: Vec<i32> = children.iter().map(|c| c.id() as i32).collect();
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    if let Some(e) = failed {
        return Err(e);
    }
    if pids.iter().any(|&p| pid_present(p)) {
        return Err("a floor sleep is still present after kill and wait".to_owned());
    }
    Ok(ms)
}

/// One fleet: spawn `procvisor run` until all 100 run, in ms; then stop it.
fn run_once(bin: &Path) -> Result<f64, String> {
    let dir = Fleet::prepare()?;
    let t0 = Instant::now();
    let mut fleet = Fleet::spawn(bin, dir)?;
    fleet.wait_all_running()?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    fleet.stop()?;
    Ok(ms)
}

/// The fleet start row and its floor: one unmeasured round of each, then per repetition a
/// floor batch and a fleet.
pub(crate) fn bench_run(cfg: &Config) -> Result<Vec<Figure>, String> {
    let bin = procvisor_binary()?;
    spawn_100_sleep()?;
    run_once(&bin)?;
    let (mut values, mut floor) = (vec![], vec![]);
    for _ in 0..run_reps(cfg) {
        floor.push(spawn_100_sleep()?);
        values.push(run_once(&bin)?);
    }
    Ok(vec![
        figure(RUN, "procvisor", METHOD, "ms", values),
        figure(RUN_FLOOR, "os", "-", "ms", floor),
    ])
}

/// What the notes say about the rows that ran.
pub(crate) fn note(cfg: &Config, status: bool, run: bool) -> String {
    let mut parts = Vec::new();
    if status {
        parts.push(format!(
            "cli_status_100: wall time of `procvisor --socket S status --json` (spawn, exit, \
             output read) against a fleet of {PROGRAMS} `sleep 300`; cli_status_100_socket: \
             connect + {{\"cmd\":\"status\"}} + the reply line from the bench; floor \
             spawn_wait_true: /bin/true spawned and waited alike; per repetition the median \
             of {} of each, floor first",
            status_batch(cfg)
        ));
    }
    if run {
        parts.push(format!(
            "cli_run_100_all_running: spawn of `procvisor run` until {PROGRAMS} `started` \
             events (followed on the control socket) and a status reply with all running; \
             {} fleets, each stopped by SIGTERM and every pid checked gone; floor \
             spawn_100_sleep: {PROGRAMS} std::process::Command spawns of `sleep 300` from \
             the bench, right before each fleet",
            run_reps(cfg)
        ));
    }
    format!(
        "{}; the release procvisor binary next to the bench; no CPython column \
         (supervisord is not installed; it starts programs one after another and counts one \
         RUNNING after startsecs, 1 s by default, polled about once a second)",
        parts.join("; ")
    )
}

/// The CLI rows as a Markdown table beside their floors and targets; empty when none ran.
pub(crate) fn table(figs: &[Figure]) -> String {
    let rows = [
        TargetRow {
            bench: STATUS[0],
            floor: Some(STATUS_FLOOR),
            target: "≤ 50 ms",
        },
        TargetRow {
            bench: STATUS[1],
            floor: None,
            target: "-",
        },
        TargetRow {
            bench: RUN,
            floor: Some(RUN_FLOOR),
            target: "≤ 1 s",
        },
    ];
    report::target_table("cli bench", figs, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_counts_only_running_programs() {
        let v: Value = serde_json::from_str(
            r#"[{"name":"a","state":"running","pid":5},{"name":"b","state":"backoff","pid":null}]"#,
        )
        .unwrap();
        assert_eq!(running(&v), Some(vec![5]));
        assert_eq!(running(&Value::Null), None);
    }
}
