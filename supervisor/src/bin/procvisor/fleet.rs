//! `procvisor run`: a fleet in the foreground, its control socket, its signals.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use procvisor::tree::{ChildSpec, ChildState, Event, EventKind, RunState, Tree, TreeError};
use serde_json::{Value, json};

use crate::config::{Fleet, Program};
use crate::control::{self, Request, Stream};
use crate::view;

/// Events kept for `procvisor events` without `-f`.
const HISTORY: usize = 1000;
/// Lines a follower may have queued before it is cut off (told so, never silently).
const FOLLOW_BUFFER: usize = 4096;

/// What the main loop is told.
enum Cmd {
    Shutdown,
    Reload(Option<mpsc::SyncSender<Value>>),
}

/// The running fleet, shared by the control threads.
struct Shared {
    file: PathBuf,
    fleet: Mutex<Fleet>,
    tree: Tree,
    history: Mutex<VecDeque<Value>>,
    followers: Mutex<Vec<mpsc::SyncSender<Value>>>,
    cmds: mpsc::Sender<Cmd>,
    clients: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the fleet of `file` until SIGTERM, SIGINT or `procvisor shutdown`.
pub(crate) fn run(file: &Path, socket: Option<PathBuf>) -> Result<(), String> {
    let fleet = Fleet::load(file).map_err(|e| e.to_string())?;
    fleet.create_log_dirs()?;
    let socket = socket
        .or_else(|| fleet.socket.clone())
        .unwrap_or_else(control::default_socket);
    let (listener, _lock) = bind(&socket)?;

    // What commands leave behind is reaped here (the CLI opts in; the library does not).
    if let Err(e) = procvisor::tree::set_child_subreaper(true) {
        tracing::warn!("cannot become a child subreaper: {e}");
    }
    let (cmd_tx, cmd_rx) = mpsc::channel();
    let signals = forward_signals(cmd_tx.clone())?;

    let spec = fleet.spec();
    let events = spec.events();
    let tree = spec
        .start()
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let shared = Arc::new(Shared {
        file: file.to_owned(),
        fleet: Mutex::new(fleet),
        tree,
        history: Mutex::new(VecDeque::new()),
        followers: Mutex::new(Vec::new()),
        cmds: cmd_tx,
        clients: AtomicUsize::new(0),
    });
    let printer = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("procvisor-events".into())
            .spawn(move || {
                let mut out = view::EventPrinter::new();
                for event in events.iter() {
                    out.print(&event);
                    shared.publish(event_json(&event));
                }
            })
            .map_err(|e| e.to_string())?
    };
    {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("procvisor-control".into())
            .spawn(move || serve(listener, shared))
            .map_err(|e| e.to_string())?;
    }
    tracing::info!(socket = %socket.display(), "fleet {:?} running", lock(&shared.fleet).name);
    crate::notify::sd_notify("READY=1");

    let outcome = loop {
        if let Some(outcome) = shared.tree.wait(Some(Duration::from_millis(0))) {
            break Some(outcome);
        }
        match cmd_rx.recv_timeout(Duration::from_millis(250)) {
            Ok(Cmd::Shutdown) => break None,
            Ok(Cmd::Reload(reply)) => {
                crate::notify::sd_notify("RELOADING=1");
                let result = reload(&shared);
                crate::notify::sd_notify("READY=1");
                if let Some(tx) = reply {
                    let _ = tx.send(result);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break None,
        }
    };
    crate::notify::sd_notify("STOPPING=1");
    signals.close();
    // Gone before the fleet stops, so that a new `run` can start at once; the lock file
    // with it (the lock itself is held until this process ends).
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(lock_path(&socket));
    let code = match outcome {
        Some(procvisor::tree::Outcome::GaveUp(why)) => Err(format!("the fleet gave up: {why}")),
        _ => {
            tracing::info!("stopping the fleet");
            // Every Shared handle but ours belongs to threads that only read; stopping
            // goes through the tree's own message, which waits for every child.
            shared.tree.addr().do_send(procvisor::tree::ShutdownTree);
            shared.tree.wait(None);
            Ok(())
        }
    };
    let _ = printer.join();
    code
}

/// The file whose lock says a fleet owns `socket`.
fn lock_path(socket: &Path) -> PathBuf {
    let mut p = socket.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// Binds the control socket, refusing when another fleet holds it.
fn bind(socket: &Path) -> Result<(UnixListener, nix::fcntl::Flock<File>), String> {
    if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir)
                .and_then(|()| {
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                })
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
    }
    let lock_path = lock_path(socket);
    let lock_file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|_| {
            format!(
                "the control socket {} is in use by another running procvisor; stop it first, or give this fleet another socket (--socket)",
                socket.display()
            )
        })?;
    // Ours now: whatever is at the path is a leftover of a fleet that died.
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)
        .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot restrict {}: {e}", socket.display()))?;
    Ok((listener, lock))
}

/// SIGTERM and SIGINT stop the fleet, SIGHUP reloads it.
fn forward_signals(tx: mpsc::Sender<Cmd>) -> Result<signal_hook::iterator::Handle, String> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| format!("cannot handle signals: {e}"))?;
    let handle = signals.handle();
    std::thread::Builder::new()
        .name("procvisor-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let cmd = if sig == SIGHUP {
                    tracing::info!("SIGHUP: reloading");
                    Cmd::Reload(None)
                } else {
                    Cmd::Shutdown
                };
                if tx.send(cmd).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(handle)
}

impl Shared {
    fn publish(&self, event: Value) {
        // The history lock is held throughout, so that a new follower gets each event
        // once: in its backlog or in its stream.
        let mut h = lock(&self.history);
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(event.clone());
        lock(&self.followers).retain(|f| match f.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::TrySendError::Full(_)) => {
                // A follower this far behind is cut off; its stream ends with a line
                // saying so (written by its thread when it finds the channel closed).
                false
            }
            Err(mpsc::TrySendError::Disconnected(_)) => false,
        });
    }
}

fn serve(listener: UnixListener, shared: Arc<Shared>) {
    let mut gate = match control::Gate::new(listener) {
        Ok(g) => g,
        Err(e) => {
            tracing::error!("the control socket cannot serve: {e}");
            return;
        }
    };
    loop {
        let (stream, request) = gate.next();
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                control::refuse(stream, &e);
                continue;
            }
        };
        if shared.clients.fetch_add(1, Ordering::SeqCst) >= control::MAX_CLIENTS {
            shared.clients.fetch_sub(1, Ordering::SeqCst);
            control::refuse(stream, "busy: too many requests at once");
            continue;
        }
        let shared2 = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("procvisor-client".into())
            .spawn(move || {
                handle(&stream, request, &shared2);
                shared2.clients.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            shared.clients.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn handle(stream: &UnixStream, request: Request, shared: &Shared) {
    let reply = match request {
        Request::Status {} => status(shared),
        Request::Start { target } => each(shared, &target, |t, p| t.start_child(p)),
        Request::Stop { target } => each(shared, &target, |t, p| t.stop_child(p)),
        Request::Restart { target } => each(shared, &target, |t, p| t.restart_child(p)),
        Request::Scale { name, n } => scale(shared, &name, n),
        Request::Reload {} => {
            let (tx, rx) = mpsc::sync_channel(1);
            let _ = shared.cmds.send(Cmd::Reload(Some(tx)));
            rx.recv()
                .unwrap_or_else(|_| control::error_reply("the fleet is stopping"))
        }
        Request::Shutdown {} => {
            let _ = shared.cmds.send(Cmd::Shutdown);
            json!({ "ok": true })
        }
        Request::Events { follow } => return events(stream, shared, follow),
        Request::Logs {
            name,
            stream: which,
            lines,
            follow,
        } => return logs(stream, shared, &name, which, lines, follow),
    };
    let _ = control::write_line(stream, &reply);
}

fn state_name(c: &ChildState) -> &'static str {
    match c.state {
        RunState::Starting => "starting",
        RunState::Running => "running",
        RunState::Stopping => "stopping",
        RunState::Restarting => "backoff",
        RunState::Stopped => "stopped",
        RunState::Ended => "exited",
    }
}

/// `status`: every program (replica) with its state.
fn status(shared: &Shared) -> Value {
    match shared.tree.walk() {
        Ok(children) => {
            let programs: Vec<Value> = children
                .iter()
                .filter(|c| !c.supervisor)
                .map(|c| {
                    json!({
                        "name": c.path,
                        "state": state_name(c),
                        "pid": c.pid,
                        "uptime_secs": c.uptime.map(|u| u.as_secs_f64()),
                        "restarts": c.restarts,
                        "last_exit": c.last_exit.map(|e| e.to_string()),
                    })
                })
                .collect();
            json!({ "ok": true, "programs": programs })
        }
        Err(e) => control::error_reply(e),
    }
}

/// The tree paths a target names: `all`, a group, a program (all its replicas), or one
/// replica (`name.i`).
fn resolve(fleet: &Fleet, target: &str) -> Result<Vec<String>, String> {
    if target == "all" {
        return Ok(fleet.programs.iter().map(Program::path).collect());
    }
    if fleet.group(target).is_some() {
        return Ok(fleet
            .programs_under(Some(target))
            .map(Program::path)
            .collect());
    }
    if let Some(p) = fleet.program(target) {
        return Ok(vec![p.path()]);
    }
    if let Some((base, i)) = target.rsplit_once('.')
        && let Some(p) = fleet.program(base)
        && let (Some(n), Ok(i)) = (p.numprocs, i.parse::<usize>())
        && i < n
    {
        return Ok(vec![format!("{}.{i}", p.path())]);
    }
    Err(format!("no program or group named {target:?}"))
}

/// Applies `op` to every path `target` names.
fn each(shared: &Shared, target: &str, op: impl Fn(&Tree, &str) -> Result<(), TreeError>) -> Value {
    let paths = match resolve(&lock(&shared.fleet), target) {
        Ok(p) => p,
        Err(e) => return control::error_reply(e),
    };
    for p in &paths {
        if let Err(e) = op(&shared.tree, p) {
            return control::error_reply(format!("{p}: {e}"));
        }
    }
    json!({ "ok": true, "done": paths })
}

fn scale(shared: &Shared, name: &str, n: usize) -> Value {
    let mut fleet = lock(&shared.fleet);
    let Some(p) = fleet.programs.iter_mut().find(|p| p.name == name) else {
        return control::error_reply(format!("no program named {name:?}"));
    };
    if p.numprocs.is_none() {
        return control::error_reply(format!(
            "{name:?} is a single program; give it `numprocs` in the fleet file to scale it"
        ));
    }
    match shared.tree.scale(&p.path(), n) {
        Ok(()) => {
            p.numprocs = Some(n);
            json!({ "ok": true, "name": name, "numprocs": n })
        }
        Err(e) => control::error_reply(e),
    }
}

/// Applies the differences between the running fleet and its file.
fn reload(shared: &Shared) -> Value {
    let new = match Fleet::load(&shared.file) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("reload refused: {e}");
            return control::error_reply(format!("reload refused, nothing changed: {e}"));
        }
    };
    if let Err(e) = new.create_log_dirs() {
        return control::error_reply(format!("reload refused, nothing changed: {e}"));
    }
    let mut fleet = lock(&shared.fleet);
    let mut added = Vec::new();
    let mut removed = Vec::new();
    let mut changed = Vec::new();
    let mut errors = Vec::new();
    let mut note = |r: Result<(), TreeError>, what: &str| {
        if let Err(e) = r {
            errors.push(format!("{what}: {e}"));
        }
    };
    let tree = &shared.tree;
    // Groups first: a changed group is replaced whole, its programs with it.
    let mut replaced_groups = Vec::new();
    for g in &fleet.groups {
        match new.group(&g.name) {
            None => {
                note(tree.remove_child(&g.name), &g.name);
                removed.push(g.name.clone());
            }
            Some(ng) if ng != g => {
                note(tree.remove_child(&g.name), &g.name);
                note(
                    tree.add_child_at("", ChildSpec::supervisor(new.group_spec(ng))),
                    &g.name,
                );
                changed.push(g.name.clone());
                replaced_groups.push(g.name.clone());
            }
            Some(_) => {}
        }
    }
    for ng in &new.groups {
        if fleet.group(&ng.name).is_none() {
            note(
                tree.add_child_at("", ChildSpec::supervisor(new.group_spec(ng))),
                &ng.name,
            );
            added.push(ng.name.clone());
            replaced_groups.push(ng.name.clone());
        }
    }
    let in_replaced = |p: &Program| {
        p.group
            .as_ref()
            .is_some_and(|g| replaced_groups.contains(g) || new.group(g).is_none())
    };
    for p in &fleet.programs {
        if in_replaced(p) {
            continue;
        }
        match new.program(&p.name) {
            None => {
                note(tree.remove_child(&p.path()), &p.name);
                removed.push(p.name.clone());
            }
            Some(np) if np == p => {}
            Some(np) => {
                let only_count = np.group == p.group
                    && np.numprocs.is_some()
                    && p.numprocs.is_some()
                    && Program {
                        numprocs: p.numprocs,
                        ..np.clone()
                    } == *p;
                if only_count {
                    note(tree.scale(&np.path(), np.numprocs.unwrap_or(1)), &np.name);
                } else {
                    note(tree.remove_child(&p.path()), &p.name);
                    note(
                        tree.add_child_at(np.supervisor_path(), np.child_spec()),
                        &np.name,
                    );
                }
                changed.push(p.name.clone());
            }
        }
    }
    for np in &new.programs {
        if fleet.program(&np.name).is_none() && !in_replaced(np) {
            note(
                tree.add_child_at(np.supervisor_path(), np.child_spec()),
                &np.name,
            );
            added.push(np.name.clone());
        }
    }
    let mut restart_needed = Vec::new();
    if new.name != fleet.name {
        restart_needed.push("fleet.name");
    }
    if new.strategy != fleet.strategy || new.intensity != fleet.intensity {
        restart_needed.push("the root's strategy or intensity");
    }
    if new.socket != fleet.socket {
        restart_needed.push("fleet.socket");
    }
    // Programs that run on exactly as they were: same definition, group not replaced.
    let unchanged = new
        .programs
        .iter()
        .filter(|np| !in_replaced(np) && fleet.program(&np.name) == Some(*np))
        .count();
    tracing::info!(
        ?added,
        ?removed,
        ?changed,
        "reloaded {}",
        shared.file.display()
    );
    // Keep what could not change as it runs.
    let kept = (
        fleet.name.clone(),
        fleet.strategy,
        fleet.intensity,
        fleet.socket.clone(),
    );
    *fleet = new;
    (fleet.name, fleet.strategy, fleet.intensity, fleet.socket) = kept;
    if errors.is_empty() {
        json!({
            "ok": true, "added": added, "removed": removed, "changed": changed,
            "unchanged": unchanged,
            "needs_restart": restart_needed,
        })
    } else {
        control::error_reply(format!("reload partly applied: {}", errors.join("; ")))
    }
}

fn events(stream: &UnixStream, shared: &Shared, follow: bool) {
    let (tx, rx) = mpsc::sync_channel(FOLLOW_BUFFER);
    let backlog: Vec<Value> = {
        // Under the history lock, so that no event falls between backlog and follow.
        let h = lock(&shared.history);
        if follow {
            lock(&shared.followers).push(tx);
        }
        h.iter().cloned().collect()
    };
    if control::write_line(stream, &json!({ "ok": true })).is_err() {
        return;
    }
    for e in backlog {
        if control::write_line(stream, &e).is_err() {
            return;
        }
    }
    if !follow {
        return;
    }
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(e) => {
                if control::write_line(stream, &e).is_err() {
                    return;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // A hung-up client is noticed here, not only at the next event.
                if peer_gone(stream) {
                    return;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = control::write_line(
                    stream,
                    &json!({ "ok": false, "error": "fell too far behind; events were dropped for this client" }),
                );
                return;
            }
        }
    }
}

/// Whether the client of a follow stream has hung up.
fn peer_gone(stream: &UnixStream) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) => false,
        Ok(_) => {
            let mut b = [0u8; 1];
            // Readable with nothing to read: the peer closed; a follower sends nothing.
            matches!(
                nix::sys::socket::recv(
                    stream.as_raw_fd(),
                    &mut b,
                    nix::sys::socket::MsgFlags::MSG_DONTWAIT
                ),
                Ok(0) | Err(_)
            ) || fds[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR))
        }
        Err(_) => true,
    }
}

fn logs(
    stream: &UnixStream,
    shared: &Shared,
    name: &str,
    which: Stream,
    lines: usize,
    follow: bool,
) {
    let path = match log_path(&lock(&shared.fleet), name, which) {
        Ok(p) => p,
        Err(e) => {
            let _ = control::write_line(stream, &control::error_reply(e));
            return;
        }
    };
    if control::write_line(stream, &json!({ "ok": true, "path": path })).is_err() {
        return;
    }
    let mut tail = LogTail::open(&path, lines);
    loop {
        for line in tail.read_new() {
            if control::write_line(stream, &json!({ "line": line })).is_err() {
                return;
            }
        }
        if !follow || peer_gone(stream) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn log_path(fleet: &Fleet, name: &str, which: Stream) -> Result<PathBuf, String> {
    let (program, replica) = match fleet.program(name) {
        Some(p) => (p, None),
        None => match name.rsplit_once('.') {
            Some((base, i)) if fleet.program(base).is_some() => (
                fleet.program(base).expect("checked"),
                Some(
                    i.parse::<usize>()
                        .map_err(|_| format!("no program named {name:?}"))?,
                ),
            ),
            _ => return Err(format!("no program named {name:?}")),
        },
    };
    let log = program.log_file(which.as_str()).ok_or_else(|| {
        format!(
            "{name:?} has no {} log file (its {} is inherited or discarded)",
            which.as_str(),
            which.as_str()
        )
    })?;
    match (program.numprocs, replica) {
        (None, None) => Ok(log.path().to_owned()),
        (Some(n), Some(i)) if i < n => Ok(log.for_replica(i).file()),
        (Some(n), None) => Err(format!(
            "{name:?} runs {n} replicas, each with its own log: name one, as {name}.0"
        )),
        _ => Err(format!("no program named {name:?}")),
    }
}

/// Reads a log file from its last `lines` lines on, following rotation.
struct LogTail {
    path: PathBuf,
    file: Option<File>,
    ino: u64,
    pos: u64,
    partial: Vec<u8>,
}

impl LogTail {
    fn open(path: &Path, lines: usize) -> LogTail {
        let mut t = LogTail {
            path: path.to_owned(),
            file: None,
            ino: 0,
            pos: 0,
            partial: Vec::new(),
        };
        if let Ok(mut f) = File::open(path) {
            t.ino = f.metadata().map(|m| m.ino()).unwrap_or(0);
            t.pos = start_of_last_lines(&mut f, lines);
            t.file = Some(f);
        }
        t
    }

    /// Complete lines written since the last call.
    fn read_new(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(f) = &mut self.file {
            self.pos += read_lines_from(f, self.pos, &mut self.partial, &mut out);
        }
        // Rotated (a new file at the path) or truncated: go on with the new file.
        let current = std::fs::metadata(&self.path).ok();
        let rotated = match (&current, &self.file) {
            (Some(m), Some(_)) => m.ino() != self.ino || m.len() < self.pos,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if rotated && let Ok(mut f) = File::open(&self.path) {
            self.ino = f.metadata().map(|m| m.ino()).unwrap_or(0);
            self.pos = read_lines_from(&mut f, 0, &mut self.partial, &mut out);
            self.file = Some(f);
        }
        out
    }
}

/// Appends the complete lines after `pos` to `out`; returns the bytes consumed.
fn read_lines_from(f: &mut File, pos: u64, partial: &mut Vec<u8>, out: &mut Vec<String>) -> u64 {
    if f.seek(SeekFrom::Start(pos)).is_err() {
        return 0;
    }
    let mut buf = Vec::new();
    // Bounded: at most 1 MiB per poll, the rest next time.
    let n = f.take(1 << 20).read_to_end(&mut buf).unwrap_or(0);
    partial.extend_from_slice(&buf[..n]);
    while let Some(i) = partial.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = partial.drain(..=i).collect();
        out.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
    }
    if partial.len() > 64 * 1024 {
        out.push(String::from_utf8_lossy(partial).into_owned());
        partial.clear();
    }
    n as u64
}

/// The offset where the last `lines` lines of `f` begin.
fn start_of_last_lines(f: &mut File, lines: usize) -> u64 {
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut end = len;
    let mut seen = 0usize;
    let mut chunk = vec![0u8; 8192];
    // A trailing newline ends the last line; it does not start one.
    let mut skip_last = true;
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let n = (end - start) as usize;
        if f.seek(SeekFrom::Start(start)).is_err() || f.read_exact(&mut chunk[..n]).is_err() {
            return 0;
        }
        for i in (0..n).rev() {
            if chunk[i] == b'\n' {
                if skip_last && start + i as u64 == len - 1 {
                    skip_last = false;
                    continue;
                }
                seen += 1;
                if seen > lines.saturating_sub(1) && lines > 0 || lines == 0 {
                    return start + i as u64 + 1;
                }
            }
        }
        end = start;
    }
    if lines == 0 { len } else { 0 }
}

/// An event as a JSON line.
fn event_json(e: &Event) -> Value {
    let path = match &e.child {
        Some(c) => format!("{}/{c}", e.supervisor),
        None => e.supervisor.clone(),
    };
    let time = e
        .time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let (kind, pid) = match &e.kind {
        EventKind::Started { pid } => ("started", Some(*pid)),
        EventKind::Ready { pid } => ("ready", Some(*pid)),
        EventKind::StartFailed { .. } => ("start_failed", None),
        EventKind::Exited { .. } => ("exited", None),
        EventKind::SupervisorEnded { .. } => ("supervisor_ended", None),
        EventKind::Restarting { .. } => ("restarting", None),
        EventKind::StopTimedOut { pid } => ("stop_timed_out", Some(*pid)),
        EventKind::StopStuck { pid, .. } => ("stop_stuck", Some(*pid)),
        EventKind::GaveUp { .. } => ("gave_up", None),
        EventKind::Stopped => ("stopped", None),
        EventKind::LogFailed { .. } => ("log_failed", None),
        EventKind::Lagged { .. } => ("lagged", None),
        _ => ("other", None),
    };
    json!({ "time": time, "path": path, "kind": kind, "pid": pid, "text": e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_tail_starts_at_the_last_lines_and_follows_rotation() {
        let dir = std::env::temp_dir().join(format!("procvisor-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.log");
        std::fs::write(&path, "one\ntwo\nthree\n").unwrap();
        let mut t = LogTail::open(&path, 2);
        assert_eq!(t.read_new(), ["two", "three"]);
        assert!(t.read_new().is_empty());
        let mut f = File::options().append(true).open(&path).unwrap();
        f.write_all(b"four\nfi").unwrap();
        assert_eq!(t.read_new(), ["four"]);
        f.write_all(b"ve\n").unwrap();
        assert_eq!(t.read_new(), ["five"]);
        // Rotation: the file moves away, a new one takes its path.
        std::fs::rename(&path, dir.join("a.log.1")).unwrap();
        std::fs::write(&path, "six\n").unwrap();
        assert_eq!(t.read_new(), ["six"]);
        let mut t = LogTail::open(&path, 0);
        assert!(t.read_new().is_empty());
        let mut t = LogTail::open(&path, 10);
        assert_eq!(t.read_new(), ["six"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
