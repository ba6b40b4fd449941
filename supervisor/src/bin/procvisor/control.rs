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
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The longest request line the server reads.
pub(crate) const MAX_REQUEST: u64 = 64 * 1024;
/// How long a client has to send its request.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a reply may wait for the client to read it.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once.
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
    Status,
    Start { target: String },
    Stop { target: String },
    Restart { target: String },
    Scale { name: String, n: usize },
    Logs {
        name: String,
        stream: Stream,
        lines: usize,
        follow: bool,
    },
    Events { follow: bool },
    Reload,
    Shutdown,
}

/// The default control socket: `$XDG_RUNTIME_DIR/procvisor.sock`, else
/// `/tmp/procvisor-<uid>/procvisor.sock`.
pub(crate) fn default_socket() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("procvisor.sock"),
        _ => PathBuf::from(format!("/tmp/procvisor-{}", nix::unistd::getuid())).join("procvisor.sock"),
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

/// Reads one request line of at most [`MAX_REQUEST`] bytes.
pub(crate) fn read_request(stream: &UnixStream) -> Result<Request, String> {
    stream
        .set_read_timeout(Some(REQUEST_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut line = Vec::new();
    let mut limited = BufReader::new(stream).take(MAX_REQUEST + 1);
    match limited.read_until(b'\n', &mut line) {
        Ok(_) if line.len() as u64 > MAX_REQUEST => {
            return Err(format!("request longer than {MAX_REQUEST} bytes"));
        }
        Ok(0) => return Err("no request".into()),
        Ok(_) => {}
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            return Err(format!("no request within {REQUEST_TIMEOUT:?}"));
        }
        Err(e) => return Err(e.to_string()),
    }
    serde_json::from_slice(&line).map_err(|e| format!("malformed request: {e}"))
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
        assert_eq!(r, Request::Stop { target: "web".into() });
        let r: Request = serde_json::from_str(
            r#"{"cmd":"logs","name":"a","stream":"stderr","lines":5,"follow":false}"#,
        )
        .unwrap();
        assert!(matches!(r, Request::Logs { stream: Stream::Stderr, lines: 5, .. }));
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"stop"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"explode"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"status","x":1}"#).is_err());
    }

    #[test]
    fn oversized_garbage_and_silence_are_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            let mut b = b;
            let _ = b.write_all(&vec![b'x'; MAX_REQUEST as usize + 10]);
            b
        });
        assert!(read_request(&a).unwrap_err().contains("longer"));
        drop(writer.join());

        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"\x00\xff garbage\n").unwrap();
        assert!(read_request(&a).unwrap_err().contains("malformed"));

    }
}
