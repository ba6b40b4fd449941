//! The forkserver: a single-threaded re-exec of the program that forks workers on request.
//!
//! Why it exists: the parent may be multi-threaded (an actix runtime, a test harness), and a
//! child forked from a multi-threaded process may only call async-signal-safe functions
//! until it execs. The forkserver is started with `exec` before any user code runs in it,
//! stays single-threaded, and so can fork a child that runs Rust freely — and fork is far
//! cheaper than exec.
//!
//! The conversation (see `protocol/README.md`): the parent sends `Spawn(Start)` with two
//! descriptors attached (the child's control socket, the write end of its status pipe); the
//! server forks, answers `Spawned { pid }` with the child's pidfd attached, watches the
//! pidfd, reaps the child with `waitpid(pid)` (never `waitpid(-1)`), writes the raw wait
//! status into the status pipe and closes it. When the parent's socket closes — the parent
//! exited or was killed — the server kills its children with SIGKILL, reaps them and exits.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use nix::unistd::ForkResult;
use procvisor_protocol::{DEFAULT_MAX_FRAME_LEN, Hello, Message, ReadError, Start, encode};

use crate::os::{self, FrameReader};
use crate::{entry, run};

struct Child {
    pid: i32,
    pidfd: OwnedFd,
    status: OwnedFd,
}

pub(crate) fn serve(sock: OwnedFd) -> ! {
    // Ctrl-C in a terminal reaches the whole foreground group; the program decides what
    // happens to its workers, and we follow when its socket closes.
    os::ignore_signal(Signal::SIGINT);
    let mut stream = UnixStream::from(sock);
    let mut reader = FrameReader::new(DEFAULT_MAX_FRAME_LEN);
    let hello = encode(&Message::Hello(Hello::current())).expect("a hello always encodes");
    if stream.write_all(&hello).is_err() {
        os::exit_now(0);
    }
    match reader.read(stream.as_fd()) {
        Ok((Message::Hello(_), _)) => {}
        _ => os::exit_now(1),
    }

    // Once here rather than in every child: each child inherits what is set up, instead of
    // running (and mapping the code of) the setup itself. The thread's handle is what
    // `std::thread::current()`, `park` and the panic hook need.
    crate::handles::prepare_thread();
    run::install_panic_hook();
    let _ = std::thread::current();
    let mut children: Vec<Child> = Vec::new();
    loop {
        let mut fds = Vec::with_capacity(children.len() + 1);
        fds.push(PollFd::new(stream.as_fd(), PollFlags::POLLIN));
        fds.extend(
            children
                .iter()
                .map(|c| PollFd::new(c.pidfd.as_fd(), PollFlags::POLLIN)),
        );
        // A frame already buffered (the hello and the first request can arrive in one
        // read) is served without waiting for the socket to become readable again.
        let wait = if reader.has_buffered() {
            PollTimeout::ZERO
        } else {
            PollTimeout::NONE
        };
        match poll(&mut fds, wait) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => shutdown(children),
        }
        let mut ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        ready[0] |= reader.has_buffered();
        drop(fds);

        // Reap first: a status written late is a join that waits for nothing.
        let mut i = children.len();
        while i > 0 {
            i -= 1;
            if ready[i + 1] {
                if let Ok(Some(status)) = os::waitpid_raw(children[i].pid, true) {
                    let child = children.swap_remove(i);
                    report_status(&child, status);
                }
            }
        }

        if ready[0] {
            match reader.read(stream.as_fd()) {
                Ok((Message::Spawn(start), fds)) => {
                    spawn_one(&mut stream, &mut children, start, fds);
                }
                Ok((Message::Ping(token), _)) => {
                    let _ = stream.write_all(&encode(&Message::Pong(token)).expect("pong"));
                }
                Ok((Message::Shutdown, _)) | Err(ReadError::Eof) => shutdown(children),
                // A parent that speaks nonsense is a broken parent: leave no orphans.
                Ok(_) | Err(_) => shutdown(children),
            }
        }
    }
}

fn spawn_one(
    stream: &mut UnixStream,
    children: &mut Vec<Child>,
    mut start: Start,
    fds: Vec<OwnedFd>,
) {
    // The child's control socket, its status pipe, then the handles in its arguments.
    let mut fds = fds.into_iter();
    let (Some(control), Some(status)) = (fds.next(), fds.next()) else {
        let reply = Message::SpawnFailed {
            errno: Errno::EBADF as i32,
        };
        let _ = stream.write_all(&encode(&reply).expect("reply encodes"));
        return;
    };
    let handles: Vec<OwnedFd> = fds.collect();
    let server_pid = std::process::id() as i32;
    match os::fork_single_threaded() {
        Ok(ForkResult::Child) => {
            // We are a copy of the single-threaded server: any code is safe here. Close
            // every descriptor that belongs to the server or to our siblings, so that a
            // sibling's sentinel never waits on us.
            os::close_fd(stream.as_raw_fd());
            for c in children.iter() {
                os::close_fd(c.pidfd.as_raw_fd());
                os::close_fd(c.status.as_raw_fd());
            }
            drop(status);
            os::default_signal(Signal::SIGINT);
            os::die_with_parent(server_pid);
            let target = entry::resolve(start.entry);
            run::run_child(&mut start, control, handles, target)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(control);
            drop(handles);
            let pid = child.as_raw();
            match os::pidfd_open(pid) {
                Ok(pidfd) => {
                    let reply = encode(&Message::Spawned { pid }).expect("reply encodes");
                    let _ = os::send_with_fds(stream.as_fd(), &reply, &[pidfd.as_fd()]);
                    children.push(Child { pid, pidfd, status });
                }
                Err(e) => {
                    // Cannot watch it, so cannot report it: do not leave it running.
                    let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                    let _ = os::waitpid_raw(pid, false);
                    let reply = encode(&Message::SpawnFailed { errno: e as i32 }).expect("reply");
                    let _ = stream.write_all(&reply);
                }
            }
        }
        Err(e) => {
            let reply = encode(&Message::SpawnFailed { errno: e as i32 }).expect("reply");
            let _ = stream.write_all(&reply);
        }
    }
}

fn report_status(child: &Child, status: i32) {
    // Four bytes into an empty pipe are written at once; a parent that closed its end
    // gets nothing, and SIGPIPE is ignored here.
    let _ = nix::unistd::write(&child.status, &status.to_le_bytes());
}

fn shutdown(children: Vec<Child>) -> ! {
    for c in &children {
        let _ = os::pidfd_send_signal(c.pidfd.as_fd(), Signal::SIGKILL);
    }
    for c in &children {
        if let Ok(Some(status)) = os::waitpid_raw(c.pid, false) {
            report_status(c, status);
        }
    }
    os::exit_now(0)
}
