//! Listener and Client: an authenticated echo server, over a Unix socket and over TCP, with
//! a child process as its client; then a client with the wrong key, turned away.
//!
//! Mirrors the Listener/Client pair of Python's `multiprocessing.connection` documentation:
//!
//! ```python
//! from multiprocessing.connection import Listener, Client
//!
//! with Listener(address, authkey=b'secret password') as listener:   # the server
//!     with listener.accept() as conn:
//!         while True:
//!             try:
//!                 conn.send(conn.recv())
//!             except EOFError:
//!                 break
//!
//! with Client(address, authkey=b'secret password') as conn:          # the client
//!     conn.send('hello')
//!     print(conn.recv())
//! ```
//!
//! The parent binds a `Listener` with an authkey (first at a path in the temporary
//! directory, then at 127.0.0.1 on a port the system picks), starts a child process whose
//! target calls `client` with the same key, and echoes every message until the child hangs
//! up. The child returns what came back, which the parent prints. Before a single message
//! is accepted, each side proves to the other that it holds the key (an HMAC-SHA256
//! challenge both ways). Last, a child with the wrong key is refused: both sides get an
//! authentication error, and the listener would go on serving.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release -p procvisor-examples --example listener_client
//! ```
//!
//! Expected output:
//!
//! ```text
//! over a Unix socket:
//!   echoed "hello"
//!   echoed "procvisor"
//!   echoed "over a Unix socket"
//!   the server echoed 3 messages; exitcode of the client: 0
//! over TCP on 127.0.0.1:
//!   echoed "hello"
//!   echoed "procvisor"
//!   echoed "over TCP on 127.0.0.1"
//!   the server echoed 3 messages; exitcode of the client: 0
//! a client with the wrong key:
//!   the server says: the peer's digest does not match the authkey
//!   the client says: the peer rejected our digest: the authkeys differ
//! ```

use std::error::Error;
use std::time::Duration;

use procvisor::listener::{Address, Listener, ListenerError, client};
use procvisor::{Connection, ConnectionError, Process};

/// The key both sides are given.
const AUTHKEY: &[u8] = b"secret password";

/// How long the server waits for its client before giving up on the example.
const PATIENCE: Duration = Duration::from_secs(30);

/// The child: connects with `key`, sends each line, and returns the echoes (or, when the
/// connection is refused, the reason, as text).
fn talk((address, key, lines): (Address, Vec<u8>, Vec<String>)) -> Result<Vec<String>, String> {
    let mut conn = client(&address, Some(&key)).map_err(|e| match e {
        ListenerError::Authentication { source, .. } => source.to_string(),
        other => other.to_string(),
    })?;
    let mut echoed = Vec::new();
    for line in lines {
        conn.send(&line).map_err(|e| e.to_string())?;
        echoed.push(conn.recv::<String>().map_err(|e| e.to_string())?);
    }
    // Dropping `conn` hangs up: the server's next `recv` is end-of-file.
    Ok(echoed)
}

/// The server's side of one connection: echoes each message until the peer hangs up.
fn echo(mut conn: Connection) -> Result<usize, ConnectionError> {
    let mut count = 0;
    loop {
        match conn.recv_bytes() {
            Ok(message) => conn.send_bytes(&message)?,
            Err(ConnectionError::Eof) => return Ok(count),
            Err(e) => return Err(e),
        }
        count += 1;
    }
}

/// One echo session at `address`, titled `title`.
fn session(title: &str, address: Address) -> Result<(), Box<dyn Error>> {
    println!("{title}:");
    let listener = Listener::bind(address, Some(AUTHKEY.to_vec()))?;
    let lines = vec!["hello".to_owned(), "procvisor".to_owned(), title.to_owned()];
    // `address()` is the bound address: for TCP, with the port the system chose.
    let args = (listener.address().clone(), AUTHKEY.to_vec(), lines);
    let mut p = Process::new(talk, args);
    p.start()?;
    let count = echo(listener.accept_timeout(PATIENCE)?)?;
    p.join(None)?;
    for line in p.result()?? {
        println!("  echoed {line:?}");
    }
    let code = p.exitcode()?.expect("the client has been joined");
    println!("  the server echoed {count} messages; exitcode of the client: {code}");
    Ok(())
    // The listener closes here; a Unix one removes its socket file.
}

fn main() -> Result<(), Box<dyn Error>> {
    let path = std::env::temp_dir().join(format!("procvisor-echo-{}.sock", std::process::id()));
    session("over a Unix socket", Address::Unix(path))?;
    session("over TCP on 127.0.0.1", "127.0.0.1:0".parse()?)?;

    println!("a client with the wrong key:");
    let listener = Listener::bind("127.0.0.1:0".parse()?, Some(AUTHKEY.to_vec()))?;
    let args = (listener.address().clone(), b"guessed".to_vec(), Vec::new());
    let mut p = Process::new(talk, args);
    p.start()?;
    match listener.accept_timeout(PATIENCE) {
        Err(ListenerError::Authentication { source, .. }) => {
            println!("  the server says: {source}");
        }
        other => return Err(format!("expected an authentication error, got {other:?}").into()),
    }
    p.join(None)?;
    match p.result()? {
        Err(reason) => println!("  the client says: {reason}"),
        Ok(echoed) => return Err(format!("the wrong key was let in: {echoed:?}").into()),
    }
    Ok(())
}
