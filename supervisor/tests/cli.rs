//! The `procvisor` command, driven as operators drive it: a real fleet, real signals, the
//! control socket, and a scan for survivors.
//!
//! These tests live in the procvisor package (not in integration/) because only a test of
//! the binary's own package is told where cargo built it (`CARGO_BIN_EXE_procvisor`).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_procvisor");
const DEADLINE: Duration = Duration::from_secs(20);

/// A private directory for one test, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "procvisor-cli-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `procvisor run` in the background; stopped (SIGTERM, then SIGKILL) when dropped.
struct Fleet {
    child: Child,
    socket: PathBuf,
    file: PathBuf,
    scratch: Scratch,
}

impl Fleet {
    fn start(tag: &str, toml: &str) -> Fleet {
        let scratch = Scratch::new(tag);
        let file = scratch.path("fleet.toml");
        std::fs::write(&file, toml).unwrap();
        let socket = scratch.path("ctl.sock");
        let child = Command::new(BIN)
            .args([
                "run",
                file.to_str().unwrap(),
                "--socket",
                socket.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(scratch.path("procvisor.err")).unwrap())
            .spawn()
            .unwrap();
        let mut fleet = Fleet {
            child,
            socket,
            file,
            scratch,
        };
        fleet.wait_for("the control socket", |f| f.try_status().is_some());
        fleet
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    /// `status --json` if the fleet answers.
    fn try_status(&self) -> Option<Vec<Value>> {
        let out = self.cli(&["status", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()?
            .as_array()
            .cloned()
    }

    fn status(&self) -> Vec<Value> {
        self.try_status().expect("status answers")
    }

    /// The entry of `name` in `status`.
    fn program(&self, name: &str) -> Option<Value> {
        self.status().into_iter().find(|p| p["name"] == name)
    }

    fn pid_of(&self, name: &str) -> Option<i32> {
        self.program(name)?["pid"].as_i64().map(|p| p as i32)
    }

    /// Waits (with a deadline) until `cond` holds.
    fn wait_for(&mut self, what: &str, cond: impl Fn(&Fleet) -> bool) {
        let start = Instant::now();
        while !cond(self) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "procvisor ended ({status}) while waiting for {what}: {}",
                    self.stderr()
                );
            }
            assert!(
                start.elapsed() < DEADLINE,
                "no {what} within {DEADLINE:?}; status: {:?}; stderr: {}",
                self.try_status(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_running(&mut self, name: &str) -> i32 {
        self.wait_for(&format!("{name} running"), |f| {
            f.program(name).is_some_and(|p| p["state"] == "running")
        });
        self.pid_of(name).unwrap()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.scratch.path("procvisor.err")).unwrap_or_default()
    }

    fn pids(&self) -> Vec<i32> {
        self.status()
            .iter()
            .filter_map(|p| p["pid"].as_i64().map(|p| p as i32))
            .collect()
    }

    /// SIGTERM, and the exit status.
    fn terminate(&mut self) -> (std::process::ExitStatus, String) {
        signal(self.child.id() as i32, libc_sig::TERM);
        let status = wait_child(&mut self.child, DEADLINE).expect("procvisor stops on SIGTERM");
        (status, self.stderr())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            signal(self.child.id() as i32, libc_sig::TERM);
            if wait_child(&mut self.child, DEADLINE).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

mod libc_sig {
    pub(crate) const TERM: i32 = 15;
    pub(crate) const KILL: i32 = 9;
    pub(crate) const HUP: i32 = 1;
}

fn signal(pid: i32, sig: i32) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid}");
}

fn wait_child(child: &mut Child, deadline: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if start.elapsed() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `pid` is still a live process (a zombie is dead: it only waits to be reaped).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn sleeper(name: &str) -> String {
    format!(
        "[[program]]\nname = \"{name}\"\ncommand = \"sleep\"\nargs = [\"300\"]\nstop_grace = \"2s\"\n"
    )
}

/// `procvisor check FILE`.
fn check(file: &Path) -> Output {
    Command::new(BIN).arg("check").arg(file).output().unwrap()
}

#[test]
fn check_names_the_line_and_column_of_a_broken_file() {
    let s = Scratch::new("check");
    let good = s.path("good.toml");
    std::fs::write(&good, sleeper("a") + &sleeper("b")).unwrap();
    let out = check(&good);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 program(s)"));

    let bad = s.path("bad.toml");
    std::fs::write(
        &bad,
        "[[program]]\nname = \"a\"\ncommand = \"sleep\"\nrestart = \"sometimes\"\n",
    )
    .unwrap();
    let out = check(&bad);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(&format!("{}:4:11:", bad.display())), "{err}");
    assert!(err.contains("sometimes"), "{err}");

    std::fs::write(
        &bad,
        "[[program]]\nname = \"a\"\ncommand = \"sleep\"\nstop_grase = \"1s\"\n",
    )
    .unwrap();
    let out = check(&bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":4:1:") && err.contains("stop_grase"), "{err}");

    let out = check(&s.path("missing.toml"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn the_demo_fleet_checks_and_runs() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fleet.toml");
    let out = check(&demo);
    assert!(out.status.success(), "{out:?}");
    // Its programs, run from a copy whose logs go to the test's own directory.
    let toml = std::fs::read_to_string(&demo)
        .unwrap()
        .replace("../target/fleet-logs", "logs");
    let mut f = Fleet::start("demo", &toml);
    for name in ["steady", "compute/pool.0"] {
        f.wait_running(name);
    }
    f.wait_for("crashy to crash and come back", |f| {
        f.program("crashy")
            .is_some_and(|p| p["restarts"].as_u64() >= Some(1) && p["last_exit"] == "exit code 3")
    });
    let (status, err) = f.terminate();
    assert!(status.success(), "{status}: {err}");
}

#[test]
fn killed_members_come_back_and_stop_start_restart_work() {
    let toml = format!(
        "{}{}[[program]]\nname = \"pool\"\ncommand = \"sleep\"\nargs = [\"300\"]\nnumprocs = 2\n",
        sleeper("a"),
        sleeper("b")
    );
    let mut f = Fleet::start("members", &toml);
    let a = f.wait_running("a");
    let b = f.wait_running("b");
    f.wait_running("pool.1");

    // SIGKILL a member: it comes back with a new pid, its neighbour untouched.
    signal(a, libc_sig::KILL);
    f.wait_for("a restarted", |f| {
        f.program("a")
            .is_some_and(|p| p["state"] == "running" && p["pid"] != a && p["restarts"] == 1)
    });
    let last = f.program("a").unwrap()["last_exit"].clone();
    assert!(last.as_str().unwrap().contains("SIGKILL"), "{last}");
    assert_eq!(f.pid_of("b"), Some(b));

    // stop keeps it stopped; start brings it back; restart gives a new pid.
    let out = f.cli(&["stop", "b"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(f.program("b").unwrap()["state"], "stopped");
    assert!(!alive(b));
    assert!(f.cli(&["start", "b"]).status.success());
    let b2 = f.wait_running("b");
    assert_ne!(b2, b);
    let pool0 = f.pid_of("pool.0").unwrap();
    assert!(f.cli(&["restart", "pool"]).status.success());
    f.wait_for("pool restarted", |f| {
        f.pid_of("pool.0").is_some_and(|p| p != pool0) && f.pid_of("pool.1").is_some()
    });

    // scale, and errors as one line with a non-zero code.
    assert!(f.cli(&["scale", "pool", "3"]).status.success());
    f.wait_running("pool.2");
    let out = f.cli(&["stop", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no program or group named \"nosuch\""));
    let out = f.cli(&["scale", "a", "2"]);
    assert_eq!(out.status.code(), Some(1));

    // stop all, then SIGTERM: a clean exit, nothing left.
    let pids = f.pids();
    assert!(f.cli(&["stop", "all"]).status.success());
    assert!(pids.iter().all(|&p| !alive(p)));
    let (status, err) = f.terminate();
    assert!(status.success(), "{status}: {err}");
}

#[test]
fn sigterm_stops_everything_in_reverse_order() {
    let f = Fleet::start(
        "order",
        &(sleeper("first") + &sleeper("second") + &sleeper("third")),
    );
    let mut f = f;
    for n in ["first", "second", "third"] {
        f.wait_running(n);
    }
    let pids = f.pids();
    let (status, err) = f.terminate();
    assert!(status.success(), "{status}: {err}");
    assert!(pids.iter().all(|&p| !alive(p)), "{pids:?}");
    let left: Vec<_> = std::fs::read_dir(&f.scratch.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        !left
            .iter()
            .any(|n| n.to_string_lossy().starts_with("ctl.sock")),
        "the socket and its lock file are removed: {left:?}"
    );
    let pos = |n: &str| {
        err.find(&format!("{n} exited"))
            .unwrap_or_else(|| panic!("no exit of {n} in: {err}"))
    };
    assert!(
        pos("third") < pos("second") && pos("second") < pos("first"),
        "{err}"
    );
}

#[test]
fn reload_applies_only_the_differences() {
    let toml = sleeper("keep") + &sleeper("change") + &sleeper("drop");
    let mut f = Fleet::start("reload", &toml);
    let keep = f.wait_running("keep");
    let change = f.wait_running("change");
    let drop_pid = f.wait_running("drop");

    let changed = format!(
        "{}[[program]]\nname = \"change\"\ncommand = \"sleep\"\nargs = [\"301\"]\n{}",
        sleeper("keep"),
        sleeper("new")
    );
    std::fs::write(&f.file, changed).unwrap();
    let out = f.cli(&["reload", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["added"], serde_json::json!(["new"]));
    assert_eq!(r["removed"], serde_json::json!(["drop"]));
    assert_eq!(r["changed"], serde_json::json!(["change"]));
    assert_eq!(r["unchanged"], 1);
    f.wait_running("new");
    let c2 = f.wait_running("change");
    assert_ne!(c2, change);
    assert_eq!(
        f.pid_of("keep"),
        Some(keep),
        "an unchanged program keeps running"
    );
    assert!(f.program("drop").is_none());
    assert!(!alive(drop_pid));

    // SIGHUP does the same; a broken file changes nothing and says why.
    std::fs::write(&f.file, sleeper("keep")).unwrap();
    signal(f.child.id() as i32, libc_sig::HUP);
    f.wait_for("the reload by SIGHUP", |f| f.program("new").is_none());
    assert_eq!(f.pid_of("keep"), Some(keep));
    std::fs::write(&f.file, "[[program]]\nname = 3\n").unwrap();
    let out = f.cli(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nothing changed") && err.contains(":2:8:"),
        "{err}"
    );
    assert_eq!(f.pid_of("keep"), Some(keep));
}

#[test]
fn sigkill_of_procvisor_leaves_no_survivors() {
    let toml = format!(
        "{}{}[[program]]\nname = \"many\"\ncommand = \"sleep\"\nargs = [\"300\"]\nnumprocs = 3\n",
        sleeper("a"),
        sleeper("b")
    );
    let mut f = Fleet::start("sigkill", &toml);
    for n in ["a", "b", "many.0", "many.1", "many.2"] {
        f.wait_running(n);
    }
    let pids = f.pids();
    assert_eq!(pids.len(), 5);
    signal(f.child.id() as i32, libc_sig::KILL);
    let start = Instant::now();
    while pids.iter().any(|&p| alive(p)) && start.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let survivors: Vec<i32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    assert!(
        survivors.is_empty(),
        "alive 1 s after SIGKILL: {survivors:?}"
    );
}

#[test]
fn a_second_fleet_on_the_same_socket_is_refused() {
    let f = Fleet::start("twice", &sleeper("a"));
    let out = Command::new(BIN)
        .args([
            "run",
            f.file.to_str().unwrap(),
            "--socket",
            f.socket.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another running procvisor"), "{err}");
    // The first one is unharmed.
    assert!(f.try_status().is_some());
}

#[test]
fn bad_clients_do_not_stop_the_fleet_from_answering_others() {
    let mut f = Fleet::start("clients", &sleeper("a"));
    f.wait_running("a");
    let ask = |raw: &[u8]| -> String {
        let mut s = UnixStream::connect(&f.socket).unwrap();
        s.write_all(raw).unwrap();
        let mut reply = String::new();
        BufReader::new(s).read_line(&mut reply).unwrap();
        reply
    };
    assert!(ask(b"{\"cmd\":\"explode\"}\n").contains("malformed request"));
    assert!(ask(b"\x00\x01\x02 garbage\n").contains("\"ok\":false"));
    assert!(ask(&[b'x'; 70_000]).contains("longer than"));

    // Clients that connect and stall, and a flood of connections: status still answers.
    let stalled: Vec<UnixStream> = (0..10)
        .map(|_| UnixStream::connect(&f.socket).unwrap())
        .collect();
    let flood: Vec<UnixStream> = (0..200)
        .filter_map(|_| UnixStream::connect(&f.socket).ok())
        .collect();
    let start = Instant::now();
    assert!(f.try_status().is_some(), "status under a flood");
    assert!(start.elapsed() < Duration::from_secs(5));
    drop(flood);
    drop(stalled);
    // A client that hangs up mid-stream does not disturb anything either.
    let mut s = UnixStream::connect(&f.socket).unwrap();
    s.write_all(b"{\"cmd\":\"events\",\"follow\":true}\n")
        .unwrap();
    let mut first = [0u8; 8];
    s.read_exact(&mut first).unwrap();
    drop(s);
    assert!(f.try_status().is_some());
}

#[test]
fn readiness_tells_starting_from_running() {
    // A port nothing listens on: the program stays "starting".
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let toml = format!(
        "[[program]]\nname = \"waits\"\ncommand = \"sleep\"\nargs = [\"300\"]\nready = {{ tcp = \"127.0.0.1:{port}\" }}\n\n[[program]]\nname = \"notifies\"\ncommand = \"{BIN}\"\nargs = [\"demo\", \"steady\"]\nready = \"notify\"\n"
    );
    let mut f = Fleet::start("ready", &toml);
    f.wait_for("waits started", |f| {
        f.program("waits")
            .is_some_and(|p| p["state"] == "starting" && p["pid"].is_i64())
    });
    f.wait_running("notifies");
    // Now something listens: it becomes running.
    let _listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    f.wait_running("waits");
}

#[test]
fn events_and_logs_stream_from_the_fleet() {
    let toml = "[fleet]\nlog_dir = \"logs\"\n[[program]]\nname = \"talker\"\ncommand = \"sh\"\nargs = [\"-c\", \"echo one; echo two; echo three; exec sleep 300\"]\n[[program]]\nname = \"many\"\nnumprocs = 2\ncommand = \"sh\"\nargs = [\"-c\", \"echo hi from $$; exec sleep 300\"]\n";
    let mut f = Fleet::start("streams", toml);
    f.wait_running("talker");
    f.wait_for("three lines logged", |f| {
        std::fs::read_to_string(f.scratch.path("logs/talker.stdout.log"))
            .is_ok_and(|s| s.lines().count() == 3)
    });
    let out = f.cli(&["logs", "talker", "-n", "2"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "two\nthree\n");
    let out = f.cli(&["events", "--json"]);
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "started" && e["path"].as_str().unwrap().ends_with("/talker")),
        "{events:?}"
    );
    let out = f.cli(&["logs", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));

    // Replicas log to their own files, and `logs` asks for one of them.
    let pid1 = f.wait_running("many.1");
    f.wait_for("many.1 logged", |f| {
        f.cli(&["logs", "many.1"]).stdout.starts_with(b"hi from")
    });
    let out = f.cli(&["logs", "many.1"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("hi from {pid1}\n")
    );
    let out = f.cli(&["logs", "many"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("many.0"));
}

#[test]
fn a_client_without_a_fleet_gets_one_line_and_code_1() {
    let s = Scratch::new("nofleet");
    let out = Command::new(BIN)
        .args(["--socket", s.path("none.sock").to_str().unwrap(), "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot reach a fleet"), "{err}");
}

/// Reads lines from a child's stdout until `want` says enough, with a deadline.
fn read_lines_until(child: &mut Child, want: impl Fn(&[String]) -> bool) -> Vec<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut lines = Vec::new();
    while !want(&lines) {
        let left = DEADLINE.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l),
            Err(_) => panic!("not enough lines within {DEADLINE:?}: {lines:?}"),
        }
    }
    lines
}

#[test]
fn logs_and_events_follow_what_happens() {
    let toml = format!(
        "[fleet]\nlog_dir = \"logs\"\n[[program]]\nname = \"ticker\"\ncommand = \"sh\"\nargs = [\"-c\", \"i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.05; done\"]\n{}",
        sleeper("victim")
    );
    let mut f = Fleet::start("follow", &toml);
    f.wait_running("ticker");
    f.wait_running("victim");

    let mut logs = Command::new(BIN)
        .arg("--socket")
        .arg(&f.socket)
        .args(["logs", "ticker", "-f", "-n", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = read_lines_until(&mut logs, |l| l.len() >= 5);
    let n: Vec<u64> = lines
        .iter()
        .map(|l| l.strip_prefix("tick ").unwrap().parse().unwrap())
        .collect();
    assert!(
        n.windows(2).all(|w| w[1] == w[0] + 1),
        "in order, none lost: {n:?}"
    );
    logs.kill().unwrap();
    logs.wait().unwrap();

    let mut events = Command::new(BIN)
        .arg("--socket")
        .arg(&f.socket)
        .args(["events", "-f", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(f.cli(&["stop", "victim"]).status.success());
    let lines = read_lines_until(&mut events, |l| {
        l.iter()
            .any(|l| l.contains("\"exited\"") && l.contains("/victim"))
    });
    let exited: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert!(
        exited["text"].as_str().unwrap().contains("stopped by us"),
        "{exited}"
    );
    events.kill().unwrap();
    events.wait().unwrap();
    // The fleet noticed neither hang-up.
    assert!(f.try_status().is_some());
}

#[test]
fn a_fast_writer_keeps_procvisor_small_and_its_lines_whole() {
    // About 40 MB of lines through a 256 KiB log kept 3 deep.
    let toml = "[fleet]\nlog_dir = \"logs\"\n[[program]]\nname = \"firehose\"\nrestart = \"transient\"\ncommand = \"sh\"\nargs = [\"-c\", \"yes 'a line of text that is forty-two bytes' | head -n 1000000\"]\nstdout = { path = \"firehose.log\", max_bytes = 262144, keep = 3 }\n";
    let mut f = Fleet::start("firehose", toml);
    f.wait_for("the writer to finish", |f| {
        f.program("firehose")
            .is_some_and(|p| p["state"] == "exited")
    });
    let status = std::fs::read_to_string(format!("/proc/{}/status", f.child.id())).unwrap();
    let hwm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(hwm_kib < 64 * 1024, "procvisor's peak RSS: {hwm_kib} KiB");
    let logs = f.scratch.path("logs");
    let mut files = 0;
    for entry in std::fs::read_dir(&logs).unwrap() {
        let path = entry.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("firehose.log")
        {
            continue; // its stderr log, empty
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.len() <= 262_144,
            "{} is {} bytes",
            path.display(),
            text.len()
        );
        assert!(text.ends_with('\n'), "{} ends mid-line", path.display());
        assert!(
            text.lines()
                .all(|l| l == "a line of text that is forty-two bytes"),
            "{} holds a split line",
            path.display()
        );
        files += 1;
    }
    assert_eq!(files, 4, "the log and its 3 rotations");
}

#[test]
fn procvisor_tells_systemd_ready_and_stopping() {
    let s = Scratch::new("sdnotify");
    let notify = std::os::unix::net::UnixDatagram::bind(s.path("notify")).unwrap();
    notify.set_read_timeout(Some(DEADLINE)).unwrap();
    let file = s.path("fleet.toml");
    // The program prints whether it sees procvisor's NOTIFY_SOCKET (it must not).
    std::fs::write(
        &file,
        "[fleet]\nlog_dir = \"logs\"\n[[program]]\nname = \"child\"\ncommand = \"sh\"\nargs = [\"-c\", \"echo notify=[$NOTIFY_SOCKET]; exec sleep 300\"]\n",
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args([
            "run",
            file.to_str().unwrap(),
            "--socket",
            s.path("ctl.sock").to_str().unwrap(),
        ])
        .env("NOTIFY_SOCKET", s.path("notify"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 within the deadline");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg}");
    assert!(msg.contains(&format!("MAINPID={}", child.id())), "{msg}");
    let log = s.path("logs/child.stdout.log");
    let start = Instant::now();
    while !std::fs::read_to_string(&log).is_ok_and(|t| t.ends_with('\n')) {
        assert!(start.elapsed() < DEADLINE, "the child never wrote its log");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "notify=[]\n");
    signal(child.id() as i32, libc_sig::TERM);
    let n = notify
        .recv(&mut buf)
        .expect("STOPPING=1 within the deadline");
    assert!(
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "STOPPING=1")
    );
    assert!(wait_child(&mut child, DEADLINE).is_some_and(|s| s.success()));
}
