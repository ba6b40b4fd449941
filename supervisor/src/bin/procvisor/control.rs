//! The control socket: how `procvisor status` and friends talk to a running fleet.
//!
//! A Unix stream socket (mode 0600). A client sends one request, a JSON object on one line,
//! and reads JSON lines back: one reply, or for `follow` requests a stream of lines until
//! it hangs up. Every reply carries `"ok"`; a failed one carries `"error"`, one line.
//!
//! ```text
//! → {"cmd":"status"}
//! ← {"ok":true,"programs":[{"name":"steady","state":"running","pid":4242,...}]}
//! → {"cmd":"stop","target":"web"}
//! ← {"ok":true,"done":["web/api","web/cache"]}
//! ```
//!
//! The server bounds everything a client can make it hold: a request line is at most
//! [`MAX_REQUEST`] bytes and must arrive within [`REQUEST_TIMEOUT`]; at most
//! [`MAX_CLIENTS`] connections are served at once (one more is told "busy" and closed); a
//! reply that the client does not read within [`WRITE_TIMEOUT`] ends its connection.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The longest request line the server reads.
pub(crate) const MAX_REQUEST: u64 = 64 * 1024;
/// How long a client has to send its request.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a reply may wait for the client to read it.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests served at once (a follow stream counts as one while it lasts).
pub(crate) const MAX_CLIENTS: usize = 64;

/// Which of a program's streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// A request to a running fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Request {
    Status {},
    Start {
        target: String,
    },
    Stop {
        target: String,
    },
    Restart {
        target: String,
    },
    Scale {
        name: String,
        n: usize,
    },
    Logs {
        name: String,
        stream: Stream,
        lines: usize,
        follow: bool,
    },
    Events {
        follow: bool,
    },
    Reload {},
    Shutdown {},
}

/// The default control socket: `$XDG_RUNTIME_DIR/procvisor.sock`, else
/// `/tmp/procvisor-<uid>/procvisor.sock`.
pub(crate) fn default_socket() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("procvisor.sock"),
        _ => PathBuf::from(format!("/tmp/procvisor-{}", nix::unistd::getuid()))
            .join("procvisor.sock"),
    }
}

/// A failed exchange with the fleet, as one line for stderr.
#[derive(Debug)]
pub(crate) struct ClientError(pub(crate) String);

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An open exchange: the request is sent, replies are read line by line.
pub(crate) struct Exchange {
    lines: std::io::Lines<BufReader<UnixStream>>,
}

impl Exchange {
    /// Connects to the fleet at `socket` and sends `request`.
    pub(crate) fn open(socket: &Path, request: &Request) -> Result<Exchange, ClientError> {
        let mut stream = UnixStream::connect(socket).map_err(|e| {
            ClientError(format!(
                "cannot reach a fleet at {}: {e} (is `procvisor run` running there?)",
                socket.display()
            ))
        })?;
        let mut line = serde_json::to_vec(request).expect("requests serialize");
        line.push(b'\n');
        stream
            .write_all(&line)
            .map_err(|e| ClientError(format!("sending to {}: {e}", socket.display())))?;
        Ok(Exchange {
            lines: BufReader::new(stream).lines(),
        })
    }

    /// The next reply line, parsed; `None` when the fleet hung up.
    pub(crate) fn next(&mut self) -> Option<Result<Value, ClientError>> {
        let line = match self.lines.next()? {
            Ok(l) => l,
            Err(e) => return Some(Err(ClientError(format!("reading the reply: {e}")))),
        };
        Some(
            serde_json::from_str::<Value>(&line)
                .map_err(|e| ClientError(format!("a malformed reply ({e}): {line}"))),
        )
    }

    /// The one reply of a request that has one; an `"ok": false` reply is an error.
    pub(crate) fn reply(mut self) -> Result<Value, ClientError> {
        let v = self
            .next()
            .unwrap_or_else(|| Err(ClientError("the fleet hung up without a reply".into())))?;
        check(v)
    }
}

/// Turns a reply with `"ok": false` into its error.
pub(crate) fn check(v: Value) -> Result<Value, ClientError> {
    if v.get("ok") == Some(&Value::Bool(true)) {
        Ok(v)
    } else {
        Err(ClientError(
            v.get("error")
                .and_then(Value::as_str)
                .unwrap_or("the fleet refused the request")
                .to_owned(),
        ))
    }
}

/// Parses one request line.
pub(crate) fn parse_request(line: &[u8]) -> Result<Request, String> {
    serde_json::from_slice(line).map_err(|e| format!("malformed request: {e}"))
}

/// Connections that have not yet sent their whole request: at most this many are held
/// (the oldest is cut off to make room), each for at most [`REQUEST_TIMEOUT`].
pub(crate) const MAX_PENDING: usize = 256;

/// Accepts connections and reads their request lines, all on one thread with `poll`, so
/// that clients that stall or flood cost a bounded slot each and never a thread.
pub(crate) struct Gate {
    listener: UnixListener,
    pending: Vec<Pending>,
}

struct Pending {
    stream: UnixStream,
    buf: Vec<u8>,
    since: Instant,
}

impl Gate {
    pub(crate) fn new(listener: UnixListener) -> io::Result<Gate> {
        listener.set_nonblocking(true)?;
        Ok(Gate {
            listener,
            pending: Vec::new(),
        })
    }

    /// Waits for the next complete request (or the reason a connection was refused, with
    /// the connection to tell it on). Connections come back in blocking mode.
    pub(crate) fn next(&mut self) -> (UnixStream, Result<Request, String>) {
        loop {
            if let Some(done) = self.take_ready() {
                return done;
            }
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(self.pending.len() + 1);
            fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
            for p in &self.pending {
                fds.push(PollFd::new(p.stream.as_fd(), PollFlags::POLLIN));
            }
            let _ = poll(&mut fds, PollTimeout::from(250u16));
            let readable: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            if readable[0] {
                self.accept();
            }
            for (p, ready) in self.pending.iter_mut().zip(&readable[1..]) {
                if *ready {
                    p.fill();
                }
            }
        }
    }

    fn accept(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            if self.pending.len() >= MAX_PENDING {
                let oldest = self.pending.remove(0);
                refuse(oldest.stream, "busy: too many connections waiting");
            }
            self.pending.push(Pending {
                stream,
                buf: Vec::new(),
                since: Instant::now(),
            });
        }
    }

    /// A connection whose request is complete, broken or too slow.
    fn take_ready(&mut self) -> Option<(UnixStream, Result<Request, String>)> {
        let i = self.pending.iter().position(|p| {
            p.buf.contains(&b'\n')
                || p.buf.len() as u64 > MAX_REQUEST
                || p.since.elapsed() > REQUEST_TIMEOUT
                || p.buf.last() == Some(&0xff) // hung up (see `fill`)
        })?;
        let p = self.pending.swap_remove(i);
        let result = if let Some(end) = p.buf.iter().position(|&b| b == b'\n') {
            if end as u64 > MAX_REQUEST {
                Err(format!("request longer than {MAX_REQUEST} bytes"))
            } else {
                parse_request(&p.buf[..end])
            }
        } else if p.buf.len() as u64 > MAX_REQUEST {
            Err(format!("request longer than {MAX_REQUEST} bytes"))
        } else if p.since.elapsed() > REQUEST_TIMEOUT {
            Err(format!("no request within {REQUEST_TIMEOUT:?}"))
        } else {
            Err("hung up before a whole request".into())
        };
        let _ = p.stream.set_nonblocking(false);
        let _ = p.stream.set_write_timeout(Some(WRITE_TIMEOUT));
        Some((p.stream, result))
    }
}

impl Pending {
    /// Reads what has arrived; a hang-up is marked with a trailing 0xff (never valid JSON
    /// text, and never part of a complete line, which `take_ready` looks for first).
    fn fill(&mut self) {
        let mut chunk = [0u8; 8192];
        loop {
            match (&self.stream).read(&mut chunk) {
                Ok(0) => {
                    if !self.buf.contains(&b'\n') {
                        self.buf.push(0xff);
                    }
                    return;
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    if self.buf.len() as u64 > MAX_REQUEST {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}

/// Tells a connection why it is refused, without waiting on it.
pub(crate) fn refuse(stream: UnixStream, why: &str) {
    let _ = stream.set_nonblocking(true);
    let _ = write_line(&stream, &error_reply(why));
}

/// Writes one JSON line.
pub(crate) fn write_line(mut stream: &UnixStream, value: &Value) -> io::Result<()> {
    let mut line = serde_json::to_vec(value).expect("values serialize");
    line.push(b'\n');
    stream.write_all(&line)
}

/// An error reply.
pub(crate) fn error_reply(message: impl std::fmt::Display) -> Value {
    serde_json::json!({ "ok": false, "error": message.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_as_documented() {
        let r: Request = serde_json::from_str(r#"{"cmd":"stop","target":"web"}"#).unwrap();
        assert_eq!(
            r,
            Request::Stop {
                target: "web".into()
            }
        );
        let r: Request = serde_json::from_str(
            r#"{"cmd":"logs","name":"a","stream":"stderr","lines":5,"follow":false}"#,
        )
        .unwrap();
        assert!(matches!(
            r,
            Request::Logs {
                stream: Stream::Stderr,
                lines: 5,
                ..
            }
        ));
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"stop"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"explode"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"status","x":1}"#).is_err());
    }

    #[test]
    fn the_gate_refuses_oversized_garbage_and_hang_ups_and_serves_the_rest() {
        let dir = std::env::temp_dir().join(format!("procvisor-gate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        let mut gate = Gate::new(UnixListener::bind(&path).unwrap()).unwrap();
        let _stalled = UnixStream::connect(&path).unwrap();
        let mut big = UnixStream::connect(&path).unwrap();
        let writer = std::thread::spawn(move || {
            let _ = big.write_all(&vec![b'x'; MAX_REQUEST as usize + 10]);
            big
        });
        let (_, r) = gate.next();
        assert!(r.unwrap_err().contains("longer"));
        drop(writer.join());
        let mut g = UnixStream::connect(&path).unwrap();
        g.write_all(b"\x00\xff garbage\n").unwrap();
        assert!(gate.next().1.unwrap_err().contains("malformed"));
        let h = UnixStream::connect(&path).unwrap();
        drop(h);
        assert!(gate.next().1.unwrap_err().contains("hung up"));
        let mut ok = UnixStream::connect(&path).unwrap();
        ok.write_all(b"{\"cmd\":\"status\"}\n").unwrap();
        assert_eq!(gate.next().1.unwrap(), Request::Status {});
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
