//! Readiness of a started child (see [`Readiness`](super::Readiness)): a `NOTIFY_SOCKET`
//! of ours that the child sends `READY=1` to, or a TCP port that starts to accept.
//!
//! Both are futures that the supervisor's actor spawns on its own context and cancels when
//! the child ends, so the actor never blocks and nothing outlives the run: cancelling the
//! notify future drops (closes) its socket.
//!
//! The notify socket is a datagram socket in Linux's abstract namespace, so nothing is left
//! in the file system if this process dies. Abstract sockets have no permissions, so any
//! process in the network namespace can send to one: the socket has `SO_PASSCRED` on, and
//! only datagrams from the child itself, or from a process of its process group, count.
//! A sender that has already exited when its datagram is read (`systemd-notify` run by a
//! shell script, reaped at once) cannot be placed in a group, its `/proc` entry gone: it is
//! accepted when it ran as our user, who could do anything to the child anyway — the race
//! that systemd's `NotifyAccess=all` has, closed on the side of the child's own user.

use std::ffi::OsString;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr, bind, recvmsg,
    setsockopt, socket, sockopt,
};
use tokio::io::Interest;

/// The environment variable of `sd_notify(3)`.
pub(crate) const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// How often a TCP readiness probe is tried, and how long one may take.
const TCP_PROBE: Duration = Duration::from_millis(100);

/// The most of one datagram that is read; the rest is dropped by the kernel. sd_notify
/// messages are a few short lines.
const MAX_DATAGRAM: usize = 4096;

/// Makes each socket name of this process unique.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// A bound notify socket, waiting for its child.
#[derive(Debug)]
pub(crate) struct NotifySocket {
    fd: OwnedFd,
    name: String,
}

impl NotifySocket {
    /// A new socket, `procvisor-<our pid>-<n>` in the abstract namespace.
    pub(crate) fn bind() -> io::Result<NotifySocket> {
        let fd = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        setsockopt(&fd, sockopt::PassCred, &true)?;
        let name = format!(
            "procvisor-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        bind(fd.as_raw_fd(), &UnixAddr::new_abstract(name.as_bytes())?)?;
        Ok(NotifySocket { fd, name })
    }

    /// The value of the child's `NOTIFY_SOCKET`: `@` stands for the abstract namespace.
    pub(crate) fn env_value(&self) -> OsString {
        format!("@{}", self.name).into()
    }

    /// Resolves once the child `pid` (or a process of its group) has sent `READY=1`; never,
    /// if the socket fails.
    pub(crate) async fn ready(self, pid: i32) {
        let std = std::os::unix::net::UnixDatagram::from(self.fd);
        let Ok(socket) = tokio::net::UnixDatagram::from_std(std) else {
            return std::future::pending().await;
        };
        let mut buf = [0u8; MAX_DATAGRAM];
        loop {
            // `async_io` waits for readability and retries on EWOULDBLOCK.
            let read = socket.async_io(Interest::READABLE, || {
                recv(socket.as_raw_fd(), &mut buf).map_err(io::Error::from)
            });
            match read.await {
                Ok((n, Some(sender))) => {
                    if from_child(sender, pid) && has_ready_line(&buf[..n]) {
                        return;
                    }
                }
                // No credentials (cannot happen with SO_PASSCRED): not trusted.
                Ok((_, None)) => {}
                Err(e) if e.raw_os_error() == Some(Errno::EINTR as i32) => {}
                Err(_) => return std::future::pending().await,
            }
        }
    }
}

/// Who sent a datagram, from its `SCM_CREDENTIALS`.
#[derive(Debug, Clone, Copy)]
struct Sender {
    pid: i32,
    uid: u32,
}

/// One datagram into `buf`, and its sender.
fn recv(fd: RawFd, buf: &mut [u8]) -> nix::Result<(usize, Option<Sender>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_DONTWAIT)?;
    let sender = msg.cmsgs()?.find_map(|c| match c {
        ControlMessageOwned::ScmCredentials(cred) => Some(Sender {
            pid: cred.pid(),
            uid: cred.uid(),
        }),
        _ => None,
    });
    Ok((msg.bytes, sender))
}

/// Whether `sender` speaks for the child `pid`: it is the child, or in its process group (a
/// command leads its own), or it ran as our user and is already gone (see the module docs).
fn from_child(sender: Sender, pid: i32) -> bool {
    if sender.pid == pid {
        return true;
    }
    match super::reaper::stat(sender.pid) {
        Some((_, pgrp)) => pgrp == pid,
        // `/proc/self` belongs to our effective uid (nix's `user` feature is not on).
        None => std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == sender.uid),
    }
}

/// Whether an sd_notify message holds the line `READY=1`. Other assignments (`STATUS=…`,
/// `STOPPING=1`, `MAINPID=…`) and garbage are ignored.
pub(crate) fn has_ready_line(datagram: &[u8]) -> bool {
    datagram
        .split(|&b| b == b'\n')
        .any(|line| line == b"READY=1")
}

/// Resolves once a TCP connect to `addr` succeeds, trying every 100 ms.
pub(crate) async fn tcp(addr: SocketAddr) {
    loop {
        let attempt = tokio::time::timeout(TCP_PROBE, tokio::net::TcpStream::connect(addr));
        if let Ok(Ok(_stream)) = attempt.await {
            return;
        }
        tokio::time::sleep(TCP_PROBE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_is_a_whole_line_among_others() {
        assert!(has_ready_line(b"READY=1"));
        assert!(has_ready_line(b"STATUS=warming up\nREADY=1\n"));
        assert!(!has_ready_line(b"STATUS=READY=1"));
        assert!(!has_ready_line(b"READY=0\nSTOPPING=1"));
        assert!(!has_ready_line(b"\xff\xfe garbage"));
        assert!(!has_ready_line(b""));
    }

    /// Sends `message` to the socket named by `env` (`@name`), from this process.
    fn send(env: &std::ffi::OsStr, message: &[u8]) {
        use std::os::linux::net::SocketAddrExt;
        let name = &env.as_encoded_bytes()[1..];
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
        let s = std::os::unix::net::UnixDatagram::unbound().unwrap();
        s.send_to_addr(message, &addr).unwrap();
    }

    #[test]
    fn only_the_child_or_its_group_can_say_ready() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let me = std::process::id() as i32;
        rt.block_on(async {
            // Waiting for another process's word (no pid or group is ever i32::MAX, above
            // pid_max): ours does not count.
            let socket = NotifySocket::bind().unwrap();
            let env = socket.env_value();
            send(&env, b"READY=1");
            let stranger = socket.ready(i32::MAX);
            let waited = tokio::time::timeout(Duration::from_millis(300), stranger);
            assert!(waited.await.is_err(), "a stranger's READY=1 was taken");
            // Waiting for ours: junk first, then the word.
            let socket = NotifySocket::bind().unwrap();
            let env = socket.env_value();
            send(&env, b"STATUS=starting\n\xff");
            send(&env, b"STATUS=up\nREADY=1\n");
            let waited = tokio::time::timeout(Duration::from_secs(10), socket.ready(me));
            assert!(waited.await.is_ok(), "the child's READY=1 was not taken");
        });
    }

    #[test]
    fn socket_names_are_abstract_and_unique() {
        let a = NotifySocket::bind().unwrap();
        let b = NotifySocket::bind().unwrap();
        let (a, b) = (a.env_value(), b.env_value());
        assert_ne!(a, b);
        assert!(a.to_str().unwrap().starts_with('@'));
    }
}
