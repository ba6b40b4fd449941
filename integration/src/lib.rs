//! Helpers shared by procvisor's integration tests, child test programs and the bench
//! harness: waiting on conditions with deadlines, and reading process state from `/proc`.
//!
//! ```
//! use std::time::Duration;
//! assert!(procvisor_integration::wait_until(Duration::from_secs(1), || true));
//! assert!(procvisor_integration::process_exists(std::process::id() as i32));
//! ```

use std::time::{Duration, Instant};

/// Polls `cond` until it holds or `timeout` passes; returns whether it held. The poll
/// interval starts at 1 ms and grows to 20 ms: a wait on a condition, not a fixed sleep.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return cond();
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// The state letter of a process from `/proc/PID/stat` (`R`, `S`, `Z`, …), or `None` when
/// no such process exists.
pub fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything: the state follows the
    // last closing one.
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

/// Whether a process exists and is not a zombie.
pub fn process_exists(pid: i32) -> bool {
    matches!(process_state(pid), Some(s) if s != 'Z' && s != 'X')
}

/// Whether any process (a zombie included) still has this pid.
pub fn pid_present(pid: i32) -> bool {
    process_state(pid).is_some()
}

/// The parent pid of a process.
pub fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// The children of a process, from `/proc/PID/task/*/children`.
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// How many descriptors this process has open.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// This process's resident set size in KiB.
pub fn rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Starts a child test program (`orphan_parent`, `tree_parent`) that prints the pids it
/// started on its first line, `PIDS a b c`, and returns it with those pids.
///
/// # Panics
///
/// When the program cannot start or its first line is not a `PIDS` line.
///
/// ```no_run
/// let (mut parent, pids) = procvisor_integration::spawn_reporting_pids("/path/to/orphan_parent");
/// assert!(!pids.is_empty());
/// parent.kill().unwrap();
/// ```
pub fn spawn_reporting_pids(program: &str) -> (std::process::Child, Vec<i32>) {
    use std::io::{BufRead, BufReader};
    let mut parent = std::process::Command::new(program)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let mut line = String::new();
    BufReader::new(parent.stdout.take().expect("piped"))
        .read_line(&mut line)
        .expect("the first line");
    let pids = line
        .strip_prefix("PIDS ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .split_whitespace()
        .map(|p| p.parse().expect("a pid"))
        .collect();
    (parent, pids)
}

/// The three start methods, in the order the child test programs and the bench try them.
///
/// ```
/// assert_eq!(procvisor_integration::START_METHODS[0], procvisor::StartMethod::ForkServer);
/// ```
pub const START_METHODS: [procvisor::StartMethod; 3] = [
    procvisor::StartMethod::ForkServer,
    procvisor::StartMethod::Spawn,
    procvisor::StartMethod::Fork,
];

/// A target that sleeps until its process is killed: the child test programs' long-lived
/// workers.
///
/// ```no_run
/// let mut p = procvisor::Process::new(procvisor_integration::sleep_forever, ());
/// p.start().unwrap();
/// p.kill().unwrap();
/// ```
pub fn sleep_forever(_: ()) {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
