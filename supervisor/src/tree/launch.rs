//! Starting one supervised child, and signalling it: a Rust target through `Process`, an
//! external command through `std::process::Command` in a process group of its own.

use std::ffi::OsStr;
use std::io;
use std::os::unix::process::CommandExt;
use std::sync::Arc;

use actix::Addr;
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::Command;
use super::logs::Streams;
use super::node::Node;
use crate::child::Child;
use crate::worker::Worker;

/// A child that started.
#[derive(Debug)]
pub(crate) enum Running {
    /// A process: a Rust target, or a command (which leads its own process group).
    Os {
        child: Arc<Child>,
        worker: Addr<Worker>,
    },
    /// A nested supervisor.
    Node(Addr<Node>),
}

/// Why a child did not start.
#[derive(Debug, Clone)]
pub(crate) struct LaunchError {
    pub(crate) errno: Option<i32>,
    pub(crate) message: String,
}

impl From<crate::Error> for LaunchError {
    fn from(e: crate::Error) -> Self {
        LaunchError {
            errno: e.errno().map(|e| e as i32),
            message: e.to_string(),
        }
    }
}

impl From<io::Error> for LaunchError {
    fn from(e: io::Error) -> Self {
        LaunchError {
            errno: e.raw_os_error(),
            message: e.to_string(),
        }
    }
}

/// The `std` command for `spec`, in a process group of its own, stdin from `/dev/null`.
///
/// The environment is ours, less any `NOTIFY_SOCKET` we inherited (it names our own
/// supervisor's socket: a child that wrote to it would speak for us), plus the spec's
/// variables, plus `notify` as `NOTIFY_SOCKET` when the child has a socket of its own.
fn os_command(spec: &Command, notify: Option<&OsStr>) -> std::process::Command {
    let mut cmd = std::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_remove(super::ready::NOTIFY_SOCKET)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .process_group(0);
    if let Some(socket) = notify {
        cmd.env(super::ready::NOTIFY_SOCKET, socket);
    }
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    cmd
}

impl Running {
    /// Starts a `Process` and keeps its child and Worker actor.
    pub(crate) fn process<R>(mut p: crate::Process<R>) -> Result<Running, crate::Error>
    where
        R: serde::Serialize + serde::de::DeserializeOwned + 'static,
    {
        p.start_in(crate::worker::Home::Runtime)?;
        let (child, worker) = p.into_started().expect("a started process has both");
        child.set_stop_at_exit();
        Ok(Running::Os { child, worker })
    }

    /// Starts an external command: its own process group, death with this process (the
    /// calling thread must live as long as the process: the runtime thread does) and of
    /// its whole group with this process (the group guard), its
    /// output where the spec says, `NOTIFY_SOCKET` set to `notify` (and removed
    /// otherwise). A failed exec comes back with its errno.
    pub(crate) fn command(
        name: &str,
        spec: &Command,
        notify: Option<&OsStr>,
        log_failed: impl Fn(io::Error) + Clone + 'static,
    ) -> Result<Running, LaunchError> {
        let streams = Streams::open(&spec.stdout, &spec.stderr)?;
        let mut cmd = os_command(spec, notify);
        let (stdout, stderr, pumps) = streams.split();
        cmd.stdout(stdout).stderr(stderr);
        let guard = super::guard::arm().map_err(|e| LaunchError {
            errno: e.raw_os_error(),
            message: format!("starting the group guard: {e}"),
        })?;
        crate::sys::die_with_spawner(&mut cmd, nix::unistd::getpid(), guard.fd());
        let spawned = cmd.spawn()?;
        // The std handle is only dropped: it neither waits nor kills, and our own pidfd and
        // `waitpid(pid)` take over. Nothing has reaped the child yet, so the pid is its own.
        let pid = spawned.id() as i32;
        drop(spawned);
        guard.track(pid);
        // The parent's copies of the pipes' write ends went with `cmd`.
        drop(cmd);
        pumps.pump(log_failed);
        let pidfd = match procvisor_worker::os::pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) => {
                // Without a pidfd we cannot watch it: do not leave it running unwatched.
                let _ = nix::sys::signal::killpg(Pid::from_raw(pid), Signal::SIGKILL);
                super::guard::untrack(pid);
                let _ = procvisor_worker::os::waitpid_raw(pid, false);
                return Err(LaunchError {
                    errno: Some(e as i32),
                    message: format!("pidfd_open: {e}"),
                });
            }
        };
        super::reaper::track_group(pid);
        let child = Child::command(pid, name.to_owned(), pidfd);
        child.set_stop_at_exit();
        let worker = crate::worker::adopt(child.clone(), crate::worker::Home::Runtime).addr();
        Ok(Running::Os { child, worker })
    }

    /// The pid (0 for a nested supervisor).
    pub(crate) fn pid(&self) -> i32 {
        match self {
            Running::Os { child, .. } => child.pid,
            Running::Node(_) => 0,
        }
    }

    /// Sends `signal` to the child, and to its whole process group when it leads one.
    pub(crate) fn signal(&self, signal: Signal) {
        if let Running::Os { child, .. } = self {
            if child.is_group_leader() && child.exit_status().is_none() {
                match nix::sys::signal::killpg(Pid::from_raw(child.pid), signal) {
                    Ok(()) | Err(Errno::ESRCH) => return,
                    Err(_) => {}
                }
            }
            let _ = child.signal(signal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the command's environment says about `NOTIFY_SOCKET`: `Some(None)` removed.
    fn notify_env(cmd: &std::process::Command) -> Option<Option<&OsStr>> {
        cmd.get_envs()
            .find(|(k, _)| *k == OsStr::new("NOTIFY_SOCKET"))
            .map(|(_, v)| v)
    }

    #[test]
    fn an_inherited_notify_socket_is_removed_and_a_childs_own_is_set() {
        let plain = os_command(&Command::new("true"), None);
        assert_eq!(notify_env(&plain), Some(None));
        let own = os_command(&Command::new("true"), Some(OsStr::new("@procvisor-1-0")));
        assert_eq!(notify_env(&own), Some(Some(OsStr::new("@procvisor-1-0"))));
        let other = os_command(&Command::new("true").env("MODE", "x"), None);
        assert!(
            other
                .get_envs()
                .any(|(k, v)| k == "MODE" && v == Some(OsStr::new("x")))
        );
    }
}
