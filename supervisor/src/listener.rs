//! `Listener` and `Client`: Python's `multiprocessing.connection.Listener` and `Client`,
//! over Unix sockets (a filesystem path or a Linux abstract name) and TCP, authenticated
//! with a shared authkey.
//!
//! A [`Listener`] binds an [`Address`] and hands out [`Connection`]s from
//! [`accept`](Listener::accept); [`client`] (or the [`Client`] builder, which can also set
//! the handshake's deadline) connects to one. Past the handshake, both ends speak
//! procvisor's framing exactly as the two ends of a [`pipe`](crate::pipe) do, and a
//! connection can be passed to a child process in its target's arguments like any other.
//!
//! # Examples
//!
//! ```
//! use std::error::Error;
//! use procvisor::listener::{client, Listener, ListenerError};
//!
//! let listener = Listener::bind("127.0.0.1:0".parse()?, Some(b"secret".to_vec()))?;
//! // Port 0 asked the system for a free port; `address()` tells which one it gave.
//! let address = listener.address().clone();
//! let peer = std::thread::spawn(move || -> Result<String, Box<dyn Error + Send + Sync>> {
//!     let mut conn = client(&address, Some(b"secret"))?;
//!     conn.send(&"hello")?;
//!     Ok(conn.recv::<String>()?)
//! });
//! let mut conn = listener.accept()?;
//! let got: String = conn.recv()?;
//! conn.send(&got.to_uppercase())?;
//! assert_eq!(peer.join().unwrap().unwrap(), "HELLO");
//!
//! // A client with another key is turned away, and told so.
//! let address = listener.address().clone();
//! let intruder = std::thread::spawn(move || client(&address, Some(b"guess")).map(drop));
//! assert!(matches!(listener.accept(), Err(ListenerError::Authentication { .. })));
//! assert!(matches!(intruder.join().unwrap(), Err(ListenerError::Authentication { .. })));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The handshake
//!
//! With an authkey, each side proves to the other that it holds the same key before any
//! message is accepted, by answering a random challenge with its HMAC-SHA256 under the key
//! (the scheme of CPython's `deliver_challenge` / `answer_challenge`, in frames of
//! procvisor's own). The listener challenges first; the client answers, then challenges
//! back:
//!
//! ```text
//! listener                                                  client
//!   ── "#PROCVISOR-CHALLENGE-1#" + 32 random bytes ───────────▶
//!   ◀─────────────── HMAC-SHA256(authkey, that whole challenge) ──
//!   ── "#PROCVISOR-WELCOME-1#" or "#PROCVISOR-FAILURE-1#" ─────▶
//!   ◀─────────── "#PROCVISOR-CHALLENGE-1#" + 32 random bytes ──
//!   ── HMAC-SHA256(authkey, that whole challenge) ─────────────▶
//!   ◀───── "#PROCVISOR-WELCOME-1#" or "#PROCVISOR-FAILURE-1#" ──
//! ```
//!
//! Every arrow is one procvisor frame: a 4-byte big-endian length, then the payload. The
//! first frame, byte for byte (55 = 0x37 bytes of payload; `r…` are the random bytes):
//!
//! ```text
//! 00 00 00 37  23 50 52 4f 43 56 49 53 4f 52 2d 43 48 41 4c 4c 45 4e 47 45 2d 31 23  r0 … r31
//!              #  P  R  O  C  V  I  S  O  R  -  C  H  A  L  L  E  N  G  E  -  1  #
//! ```
//!
//! The digest is compared in constant time. A handshake frame may not claim more than
//! 256 bytes: a longer one is refused on its header, before anything is allocated. The
//! `-1` in the prefixes is the version of this exchange. Without an authkey on either
//! side there is no handshake at all.
//!
//! # Caveats
//!
//! - This is authentication, not encryption: after the handshake, messages travel in the
//!   clear, and a man in the middle can relay a handshake he cannot answer himself. Over
//!   TCP, use it on a network you trust or inside a tunnel.
//! - Both sides must be given the same key. A wrong key fails on both sides with
//!   [`ListenerError::Authentication`]. A client with a key facing a listener without one
//!   waits for a challenge that never comes and fails with [`AuthError::TimedOut`]; a
//!   client without a key facing a listener with one reads the challenge as its first
//!   message (Python's `Client` behaves the same).
//! - Handshakes run concurrently, on short-lived threads of the listener, each within a
//!   deadline (5 s unless [set](Listener::set_handshake_timeout)): a slow, silent or
//!   garbage-sending peer holds up nobody else. At most 64 run at once; later connections
//!   wait in the kernel's backlog until one finishes. Up to 64 finished ones wait for
//!   [`accept`](Listener::accept), in the order they finished.
//! - [`accept`](Listener::accept) reports a failed handshake as
//!   [`ListenerError::Authentication`]; that peer's connection is closed and the listener
//!   keeps serving: a server loop should log it and go on
//!   ([`is_authentication`](ListenerError::is_authentication)).
//! - [`close`](Listener::close), or dropping the listener, stops its threads (handshakes
//!   in progress are cut short), closes the connections no `accept` has taken, and removes
//!   the socket file of a Unix path listener, if it is still the one the listener created.
//!   Connections already accepted are not affected.
//! - Binding a Unix path where a file exists fails with "address in use", as in Python: a
//!   socket file left by a program that was killed must be removed first.
//! - Abstract names exist on Linux only, in the network namespace of the process, and
//!   carry no file permissions: anyone in the namespace can connect. Use an authkey.
//! - TCP connections made by a listener or a client have `TCP_NODELAY` set.
//! - A child made with the `fork` start method for a `fn` target closes the listener's
//!   sockets, as it closes the connections it was not given; one running a closure keeps
//!   them, like every descriptor it inherits.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{self as unix, UnixListener, UnixStream};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, send};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::connection::{Connection, Stream, poll_fds, track, untrack};

/// How long a handshake may take, unless set otherwise: ample on any network where
/// procvisor makes sense, short enough that a silent peer is soon let go.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a challenge frame; `-1` is the version of the exchange.
const CHALLENGE_PREFIX: &[u8] = b"#PROCVISOR-CHALLENGE-1#";
/// Random bytes in a challenge: as many as the digest has.
const NONCE_LEN: usize = 32;
/// The bytes of an HMAC-SHA256 digest.
const DIGEST_LEN: usize = 32;
/// The verdict on a digest that matches.
const WELCOME: &[u8] = b"#PROCVISOR-WELCOME-1#";
/// The verdict on a digest that does not.
const FAILURE: &[u8] = b"#PROCVISOR-FAILURE-1#";
/// The longest handshake frame read. The longest legitimate one is 55 bytes; the margin
/// leaves room for a later version, and the bound stops garbage from costing memory.
const MAX_HANDSHAKE_FRAME: usize = 256;
/// Handshakes a listener runs at once. Each holds a thread and two descriptors until its
/// deadline at worst; past this many, new connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 64;
/// Connections (and handshake failures) waiting for `accept`. When it is full, finished
/// handshakes wait, and so, through `MAX_HANDSHAKES`, does the acceptor.
const READY_QUEUE: usize = 64;
/// The pause after the listening socket fails to accept (out of descriptors, say), so
/// that a lasting condition is reported a few times a second rather than in a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

type HmacSha256 = Hmac<Sha256>;

/// Where a [`Listener`] listens and a [`client`] connects.
///
/// As text ([`Display`](fmt::Display) and [`FromStr`]): a Unix path contains a `/`
/// (`/run/app.sock`, `./app.sock`); an abstract name starts with `@`, as `ss` shows them,
/// with `\\` and `\xNN` escapes for bytes that are not printable ASCII; anything else must
/// be an IP socket address (`127.0.0.1:7000`, `[::1]:7000`). Host names are not looked up.
///
/// ```
/// use procvisor::listener::Address;
/// let tcp: Address = "127.0.0.1:7000".parse()?;
/// assert_eq!(tcp, Address::Tcp("127.0.0.1:7000".parse()?));
/// let unix: Address = "/tmp/app.sock".parse()?;
/// assert_eq!(unix, Address::Unix("/tmp/app.sock".into()));
/// let name: Address = "@app\\x00".parse()?;
/// assert_eq!(name, Address::Abstract(b"app\0".to_vec()));
/// assert_eq!(name.to_string(), "@app\\x00");
/// assert!("localhost:7000".parse::<Address>().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Address {
    /// A Unix socket at a filesystem path.
    Unix(PathBuf),
    /// A Unix socket in Linux's abstract namespace: a name of up to 107 bytes, any bytes,
    /// that vanishes when its last descriptor closes.
    Abstract(Vec<u8>),
    /// A TCP socket; port 0 asks the system for a free port when binding.
    Tcp(SocketAddr),
}

impl From<SocketAddr> for Address {
    /// ```
    /// use procvisor::listener::Address;
    /// let a = Address::from(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    /// assert_eq!(a.to_string(), "127.0.0.1:0");
    /// ```
    fn from(addr: SocketAddr) -> Self {
        Address::Tcp(addr)
    }
}

impl From<PathBuf> for Address {
    /// ```
    /// use procvisor::listener::Address;
    /// let a = Address::from(std::env::temp_dir().join("app.sock"));
    /// assert!(matches!(a, Address::Unix(_)));
    /// ```
    fn from(path: PathBuf) -> Self {
        Address::Unix(path)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(path) => {
                let text = path.to_string_lossy();
                // Without a slash (or with a leading `@`), the text would read back as
                // something else.
                if !text.contains('/') || text.starts_with('@') {
                    f.write_str("./")?;
                }
                f.write_str(&text)
            }
            Address::Abstract(name) => {
                f.write_str("@")?;
                for &b in name {
                    match b {
                        b'\\' => f.write_str("\\\\")?,
                        b' '..=b'~' => write!(f, "{}", b as char)?,
                        _ => write!(f, "\\x{b:02x}")?,
                    }
                }
                Ok(())
            }
            Address::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

/// Text that is not an [`Address`].
///
/// ```
/// use procvisor::listener::Address;
/// let err = "@bad\\q".parse::<Address>().unwrap_err();
/// assert_eq!(err.input(), "@bad\\q");
/// assert_eq!(err.to_string(), r#"invalid address "@bad\\q": unknown escape in an abstract name"#);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressParseError {
    input: String,
    reason: &'static str,
}

impl AddressParseError {
    /// The text that did not parse.
    ///
    /// ```
    /// let err = "".parse::<procvisor::listener::Address>().unwrap_err();
    /// assert_eq!(err.input(), "");
    /// ```
    pub fn input(&self) -> &str {
        &self.input
    }
}

impl fmt::Display for AddressParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid address {:?}: {}", self.input, self.reason)
    }
}

impl std::error::Error for AddressParseError {}

impl FromStr for Address {
    type Err = AddressParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| AddressParseError {
            input: s.to_owned(),
            reason,
        };
        if let Some(name) = s.strip_prefix('@') {
            return unescape(name).map(Address::Abstract).map_err(err);
        }
        if s.contains('/') {
            return Ok(Address::Unix(PathBuf::from(s)));
        }
        if s.is_empty() {
            return Err(err("empty"));
        }
        s.parse::<SocketAddr>().map(Address::Tcp).map_err(|_| {
            err("neither a path (with a `/`), an abstract name (`@…`) nor an IP socket address")
        })
    }
}

/// The bytes of an abstract name written with `\\` and `\xNN` escapes.
fn unescape(text: &str) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex = [bytes.next(), bytes.next()];
                let digits = match hex {
                    [Some(h), Some(l)] => [h, l],
                    _ => return Err("truncated \\x escape in an abstract name"),
                };
                let text = std::str::from_utf8(&digits).map_err(|_| "bad \\x escape")?;
                out.push(u8::from_str_radix(text, 16).map_err(|_| "bad \\x escape")?);
            }
            _ => return Err("unknown escape in an abstract name"),
        }
    }
    Ok(out)
}

/// Why a handshake failed: the [`source`](std::error::Error::source) of a
/// [`ListenerError::Authentication`].
///
/// ```
/// use procvisor::listener::{client, AuthError, Listener, ListenerError};
/// let listener = Listener::bind("127.0.0.1:0".parse()?, Some(b"right".to_vec()))?;
/// let address = listener.address().clone();
/// let peer = std::thread::spawn(move || client(&address, Some(b"wrong")).map(drop));
/// match listener.accept() {
///     Err(ListenerError::Authentication { source: AuthError::WrongDigest, .. }) => {}
///     other => panic!("{other:?}"),
/// }
/// match peer.join().unwrap() {
///     Err(ListenerError::Authentication { source: AuthError::Rejected, .. }) => {}
///     other => panic!("{other:?}"),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum AuthError {
    /// The peer's answer to our challenge is not the digest our authkey gives: its key is
    /// another.
    WrongDigest,
    /// The peer refused our answer to its challenge: our key is not its key.
    Rejected,
    /// The peer sent something other than the handshake frame expected: garbage, another
    /// protocol or version, or the first message of a peer that has no authkey.
    Malformed {
        /// What was expected (`"a challenge"`, `"a digest"`, `"a verdict"`).
        expected: &'static str,
        /// The length the frame had, or claimed in its header.
        len: usize,
    },
    /// The handshake did not finish before its deadline.
    TimedOut {
        /// The time it was given.
        after: Duration,
    },
    /// The peer closed the connection during the handshake.
    Disconnected,
    /// Reading or writing the socket, or the system's random source, failed.
    Io(io::Error),
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::WrongDigest => f.write_str("the peer's digest does not match the authkey"),
            AuthError::Rejected => f.write_str("the peer rejected our digest: the authkeys differ"),
            AuthError::Malformed { expected, len } => {
                write!(
                    f,
                    "malformed handshake frame of {len} bytes, expected {expected}"
                )
            }
            AuthError::TimedOut { after } => {
                write!(f, "the handshake did not finish within {after:?}")
            }
            AuthError::Disconnected => {
                f.write_str("the peer closed the connection during the handshake")
            }
            AuthError::Io(_) => f.write_str("handshake i/o failed"),
        }
    }
}

impl std::error::Error for AuthError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AuthError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Why a [`Listener`] or [`client`] call failed.
///
/// ```
/// use procvisor::listener::{client, ListenerError};
/// let err = client(&"127.0.0.1:1".parse()?, None).unwrap_err();
/// assert!(matches!(err, ListenerError::Connect { .. }));
/// assert_eq!(err.to_string(), "cannot connect to 127.0.0.1:1");
/// assert!(std::error::Error::source(&err).is_some());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum ListenerError {
    /// The address could not be bound: in use, a directory that does not exist, a name too
    /// long, no permission.
    Bind {
        /// The address asked for.
        address: Address,
        /// What the system said.
        source: io::Error,
    },
    /// No connection could be made: nobody listens there, or the connection was refused or
    /// timed out.
    Connect {
        /// The address asked for.
        address: Address,
        /// What the system said.
        source: io::Error,
    },
    /// The authkey given is empty: it would authenticate nothing.
    EmptyAuthkey,
    /// The handshake with a peer failed. On a listener, that peer's connection is closed
    /// and the listener keeps serving.
    Authentication {
        /// The peer's address, when it has one (TCP peers; Unix clients seldom bind one).
        peer: Option<Address>,
        /// What went wrong.
        source: AuthError,
    },
    /// [`accept_timeout`](Listener::accept_timeout) found no connection in time.
    Timeout,
    /// The listener is closed.
    Closed,
    /// The listening socket failed to accept (out of descriptors, say) or to be set up;
    /// the listener keeps trying.
    Io(io::Error),
}

impl ListenerError {
    /// Whether this is a failed handshake with one peer, after which the listener goes on
    /// serving others.
    ///
    /// ```
    /// use procvisor::listener::{AuthError, ListenerError};
    /// let err = ListenerError::Authentication { peer: None, source: AuthError::Disconnected };
    /// assert!(err.is_authentication());
    /// assert!(!ListenerError::Closed.is_authentication());
    /// ```
    pub fn is_authentication(&self) -> bool {
        matches!(self, ListenerError::Authentication { .. })
    }
}

impl fmt::Display for ListenerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenerError::Bind { address, .. } => write!(f, "cannot bind {address}"),
            ListenerError::Connect { address, .. } => write!(f, "cannot connect to {address}"),
            ListenerError::EmptyAuthkey => f.write_str("an empty authkey authenticates nothing"),
            ListenerError::Authentication { peer: Some(p), .. } => {
                write!(f, "authentication with {p} failed")
            }
            ListenerError::Authentication { peer: None, .. } => {
                f.write_str("authentication with a peer failed")
            }
            ListenerError::Timeout => f.write_str("no connection arrived in time"),
            ListenerError::Closed => f.write_str("listener is closed"),
            ListenerError::Io(_) => f.write_str("listening socket failed"),
        }
    }
}

impl std::error::Error for ListenerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ListenerError::Bind { source, .. } => Some(source),
            ListenerError::Connect { source, .. } => Some(source),
            ListenerError::Authentication { source, .. } => Some(source),
            ListenerError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// What `accept` hands out: a connection, or why one peer's handshake failed.
type Ready = Result<Connection, ListenerError>;

/// A bound socket that accepts connections: Python's
/// `multiprocessing.connection.Listener`.
///
/// `Open → Closed`: [`bind`](Listener::bind) starts an acceptor thread, which accepts
/// connections and hands each to a short-lived handshake thread;
/// [`accept`](Listener::accept) takes their results in the order they finish.
/// [`close`](Listener::close) (or drop) stops both kinds of thread and, for a Unix path,
/// removes the socket file.
///
/// ```
/// use procvisor::listener::{client, Address, Listener};
/// let name = format!("procvisor-doc-listener-{}", std::process::id());
/// let listener = Listener::bind(Address::Abstract(name.into_bytes()), None)?;
/// let address = listener.address().clone();
/// let peer = std::thread::spawn(move || client(&address, None).map(|mut c| c.send(&1u8)));
/// let mut conn = listener.accept()?;
/// assert_eq!(conn.recv::<u8>()?, 1);
/// peer.join().unwrap()??;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Listener {
    /// The bound address (with the real port for TCP port 0).
    address: Address,
    /// Results from the acceptor and handshake threads; `None` once closed.
    ready: Option<Receiver<Ready>>,
    shared: Arc<Shared>,
    /// Dropping it wakes the acceptor thread up to stop.
    waker: Option<Tracked<UnixStream>>,
    acceptor: Option<JoinHandle<()>>,
    /// The socket file a Unix path listener created, to remove on close.
    socket_file: Option<SocketFile>,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The authkey stays out of logs.
        f.debug_struct("Listener")
            .field("address", &self.address)
            .field("authenticated", &self.shared.authkey.is_some())
            .field("handshake_timeout", &self.shared.timeout())
            .field("closed", &self.ready.is_none())
            .finish()
    }
}

/// A Unix path listener's socket file, known by its inode so that one that has since been
/// replaced (by another listener on the same path) is left alone.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    fn remove(self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if meta.dev() == self.dev && meta.ino() == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// What the listener, its acceptor thread and its handshake threads share.
struct Shared {
    authkey: Option<Vec<u8>>,
    /// The handshake deadline in nanoseconds, read when a handshake starts.
    timeout_ns: AtomicU64,
    state: Mutex<State>,
    /// Signalled when a handshake slot frees up or the listener stops.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    stopping: bool,
    /// Handshake threads alive, those waiting to hand over their result included.
    in_flight: usize,
    /// A second descriptor for each socket still in its handshake, to shut it down (and so
    /// wake its thread) when the listener closes.
    handshaking: HashMap<u64, Tracked<Stream>>,
    next_id: u64,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; if something did, the counts are still
        // whole numbers and the listener can still shut down.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn timeout(&self) -> Duration {
        Duration::from_nanos(self.timeout_ns.load(Ordering::Relaxed))
    }

    /// Waits until one more handshake may start; false once the listener is stopping.
    fn wait_for_slot(&self) -> bool {
        let mut state = self.state();
        while state.in_flight >= MAX_HANDSHAKES && !state.stopping {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        !state.stopping
    }

    /// Registers a handshake about to start; `None` when the listener is stopping.
    fn begin(self: &Arc<Self>, wake: Tracked<Stream>) -> Option<Slot> {
        let mut state = self.state();
        if state.stopping {
            return None;
        }
        let id = state.next_id;
        state.next_id += 1;
        state.in_flight += 1;
        state.handshaking.insert(id, wake);
        Some(Slot {
            shared: Arc::clone(self),
            id,
        })
    }

    /// Stops everything: no new handshake starts, a waiting acceptor wakes, and every
    /// handshake in progress sees its socket shut down.
    fn stop(&self) {
        let mut state = self.state();
        state.stopping = true;
        for wake in state.handshaking.values() {
            let _ = wake.get().shutdown();
        }
        self.changed.notify_all();
    }
}

/// One handshake's place among the listener's `MAX_HANDSHAKES`. Dropping it (whether the
/// thread finishes, panics, or never starts) gives the place back.
struct Slot {
    shared: Arc<Shared>,
    id: u64,
}

impl Slot {
    /// The handshake is over: closing the listener must no longer shut its socket down,
    /// since the connection may be about to belong to the caller of `accept`.
    fn settle(&self) {
        self.shared.state().handshaking.remove(&self.id);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.shared.state();
        state.handshaking.remove(&self.id);
        state.in_flight -= 1;
        self.shared.changed.notify_all();
    }
}

/// A descriptor that is in the connection registry while this value lives, so that a
/// `fork` child closes it (see `connection::track`).
struct Tracked<T: AsRawFd>(Option<T>);

impl<T: AsRawFd> Tracked<T> {
    fn new(inner: T) -> Self {
        track(inner.as_raw_fd());
        Tracked(Some(inner))
    }

    fn get(&self) -> &T {
        self.0
            .as_ref()
            .expect("a Tracked holds its value until it is consumed")
    }
}

impl Tracked<Stream> {
    /// Hands the socket to a `Connection`, which keeps it in the registry.
    fn into_connection(mut self) -> Connection {
        let stream = self
            .0
            .take()
            .expect("a Tracked holds its value until it is consumed");
        Connection::from_stream(stream)
    }
}

impl<T: AsRawFd> Drop for Tracked<T> {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            // Out of the registry before the number is closed and free for reuse.
            untrack(inner.as_raw_fd());
            drop(inner);
        }
    }
}

/// The listening socket.
enum ListenSocket {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl ListenSocket {
    fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            ListenSocket::Unix(l) => l.set_nonblocking(true),
            ListenSocket::Tcp(l) => l.set_nonblocking(true),
        }
    }

    /// Accepts one connection. The new socket blocks: Linux's accept4 does not pass the
    /// listening socket's O_NONBLOCK on.
    fn accept(&self) -> io::Result<(Stream, Option<Address>)> {
        match self {
            ListenSocket::Unix(l) => {
                let (s, addr) = l.accept()?;
                Ok((Stream::Unix(s), unix_address(&addr)))
            }
            ListenSocket::Tcp(l) => {
                let (s, addr) = l.accept()?;
                // Small request/response messages must not wait for Nagle's algorithm;
                // failing to say so only costs latency.
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), Some(Address::Tcp(addr))))
            }
        }
    }
}

impl AsFd for ListenSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            ListenSocket::Unix(l) => l.as_fd(),
            ListenSocket::Tcp(l) => l.as_fd(),
        }
    }
}

impl AsRawFd for ListenSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// A Unix socket's address, if it has one.
fn unix_address(addr: &unix::SocketAddr) -> Option<Address> {
    if let Some(path) = addr.as_pathname() {
        return Some(Address::Unix(path.to_path_buf()));
    }
    addr.as_abstract_name()
        .map(|name| Address::Abstract(name.to_vec()))
}

fn check_authkey(authkey: Option<&[u8]>) -> Result<(), ListenerError> {
    match authkey {
        Some([]) => Err(ListenerError::EmptyAuthkey),
        _ => Ok(()),
    }
}

impl Listener {
    /// Binds `address` and starts accepting connections. With an `authkey`, every
    /// connection must pass the handshake (see the [module docs](self)) before
    /// [`accept`](Listener::accept) hands it out.
    ///
    /// ```
    /// use procvisor::listener::{Address, Listener, ListenerError};
    /// let name = format!("procvisor-doc-bind-{}.sock", std::process::id());
    /// let path = std::env::temp_dir().join(name);
    /// let listener = Listener::bind(Address::Unix(path.clone()), Some(b"key".to_vec()))?;
    /// assert!(path.exists());
    /// // The same path twice: the address is in use.
    /// let again = Listener::bind(Address::Unix(path.clone()), None);
    /// assert!(matches!(again, Err(ListenerError::Bind { .. })));
    /// drop(listener);
    /// assert!(!path.exists());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn bind(address: Address, authkey: Option<Vec<u8>>) -> Result<Listener, ListenerError> {
        check_authkey(authkey.as_deref())?;
        let bind_error = |source| ListenerError::Bind {
            address: address.clone(),
            source,
        };
        let (sock, bound, socket_file) = match &address {
            Address::Unix(path) => {
                let l = UnixListener::bind(path).map_err(bind_error)?;
                let file = std::fs::symlink_metadata(path).ok().map(|m| SocketFile {
                    path: path.clone(),
                    dev: m.dev(),
                    ino: m.ino(),
                });
                (ListenSocket::Unix(l), address.clone(), file)
            }
            Address::Abstract(name) => {
                let addr = unix::SocketAddr::from_abstract_name(name).map_err(bind_error)?;
                let l = UnixListener::bind_addr(&addr).map_err(bind_error)?;
                (ListenSocket::Unix(l), address.clone(), None)
            }
            Address::Tcp(addr) => {
                let l = TcpListener::bind(addr).map_err(bind_error)?;
                let real = l.local_addr().map_err(bind_error)?;
                (ListenSocket::Tcp(l), Address::Tcp(real), None)
            }
        };
        let sock = Tracked::new(sock);
        let shared = Arc::new(Shared {
            authkey,
            timeout_ns: AtomicU64::new(DEFAULT_HANDSHAKE_TIMEOUT.as_nanos() as u64),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let (tx, rx) = mpsc::sync_channel(READY_QUEUE);
        // From here on, dropping `listener` removes the socket file.
        let mut listener = Listener {
            address: bound,
            ready: Some(rx),
            shared: Arc::clone(&shared),
            waker: None,
            acceptor: None,
            socket_file,
        };
        // Polling a non-blocking socket: a connection that vanishes between the poll and
        // the accept must not leave the acceptor stuck in accept.
        sock.get().set_nonblocking().map_err(ListenerError::Io)?;
        let (waker, wake) = UnixStream::pair().map_err(ListenerError::Io)?;
        listener.waker = Some(Tracked::new(waker));
        let wake = Tracked::new(wake);
        let acceptor = thread::Builder::new()
            .name("procvisor-accept".into())
            .spawn(move || run_acceptor(sock, wake, shared, tx))
            .map_err(ListenerError::Io)?;
        listener.acceptor = Some(acceptor);
        Ok(listener)
    }

    /// The bound address; for TCP port 0, with the port the system chose.
    ///
    /// ```
    /// use procvisor::listener::{Address, Listener};
    /// let listener = Listener::bind("127.0.0.1:0".parse()?, None)?;
    /// let Address::Tcp(addr) = listener.address() else { unreachable!() };
    /// assert_ne!(addr.port(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Waits for the next authenticated connection (or any connection, without an
    /// authkey). A failed handshake is reported as [`ListenerError::Authentication`] and
    /// the listener stays usable; [`ListenerError::Closed`] after
    /// [`close`](Listener::close).
    ///
    /// ```
    /// use procvisor::listener::{client, Listener};
    /// let listener = Listener::bind("127.0.0.1:0".parse()?, Some(b"k".to_vec()))?;
    /// let address = listener.address().clone();
    /// let peer = std::thread::spawn(move || client(&address, Some(b"k")).map(drop));
    /// let conn = loop {
    ///     match listener.accept() {
    ///         Ok(conn) => break conn,
    ///         Err(e) if e.is_authentication() => eprintln!("turned away: {e}"),
    ///         Err(e) => return Err(e.into()),
    ///     }
    /// };
    /// peer.join().unwrap()?;
    /// # drop(conn);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn accept(&self) -> Result<Connection, ListenerError> {
        let ready = self.ready.as_ref().ok_or(ListenerError::Closed)?;
        ready.recv().unwrap_or(Err(ListenerError::Closed))
    }

    /// [`accept`](Listener::accept), giving up with [`ListenerError::Timeout`] after
    /// `timeout`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use procvisor::listener::{Listener, ListenerError};
    /// let listener = Listener::bind("127.0.0.1:0".parse()?, None)?;
    /// let got = listener.accept_timeout(Duration::from_millis(10));
    /// assert!(matches!(got, Err(ListenerError::Timeout)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Connection, ListenerError> {
        let ready = self.ready.as_ref().ok_or(ListenerError::Closed)?;
        match ready.recv_timeout(timeout) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(ListenerError::Timeout),
            Err(RecvTimeoutError::Disconnected) => Err(ListenerError::Closed),
        }
    }

    /// How long a handshake may take before the peer is let go.
    ///
    /// ```
    /// use procvisor::listener::{Listener, DEFAULT_HANDSHAKE_TIMEOUT};
    /// let listener = Listener::bind("127.0.0.1:0".parse()?, Some(b"k".to_vec()))?;
    /// assert_eq!(listener.handshake_timeout(), DEFAULT_HANDSHAKE_TIMEOUT);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn handshake_timeout(&self) -> Duration {
        self.shared.timeout()
    }

    /// Sets how long the handshakes that start from now on may take (5 s by default). A
    /// zero timeout fails every handshake.
    ///
    /// ```
    /// use std::time::Duration;
    /// use procvisor::listener::Listener;
    /// let listener = Listener::bind("127.0.0.1:0".parse()?, Some(b"k".to_vec()))?;
    /// listener.set_handshake_timeout(Duration::from_millis(500));
    /// assert_eq!(listener.handshake_timeout(), Duration::from_millis(500));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_handshake_timeout(&self, timeout: Duration) {
        let ns = timeout.as_nanos().min(u64::MAX as u128) as u64;
        self.shared.timeout_ns.store(ns, Ordering::Relaxed);
    }

    /// Stops listening: the acceptor and handshake threads end (before `close` returns),
    /// connections no `accept` has taken are closed, and a Unix path listener removes its
    /// socket file. Connections already accepted stay open. Closing twice is fine;
    /// dropping the listener closes it.
    ///
    /// ```
    /// use procvisor::listener::{client, Listener, ListenerError};
    /// let mut listener = Listener::bind("127.0.0.1:0".parse()?, None)?;
    /// let address = listener.address().clone();
    /// listener.close();
    /// assert!(listener.is_closed());
    /// assert!(matches!(listener.accept(), Err(ListenerError::Closed)));
    /// assert!(matches!(client(&address, None), Err(ListenerError::Connect { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(&mut self) {
        // In this order: handshakes are cut short and the acceptor stops waiting for a
        // slot; dropping the receiver frees any thread blocked handing over a result (and
        // closes the connections queued); dropping the waker ends the acceptor's poll.
        self.shared.stop();
        self.ready = None;
        self.waker = None;
        if let Some(acceptor) = self.acceptor.take() {
            // The acceptor joins the handshake threads, and it closes the listening
            // socket, before it returns.
            let _ = acceptor.join();
        }
        if let Some(file) = self.socket_file.take() {
            file.remove();
        }
    }

    /// Whether [`close`](Listener::close) was called.
    ///
    /// ```
    /// let mut listener = procvisor::listener::Listener::bind("127.0.0.1:0".parse()?, None)?;
    /// assert!(!listener.is_closed());
    /// listener.close();
    /// assert!(listener.is_closed());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        self.ready.is_none()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.close();
    }
}

/// The acceptor thread: accepts connections while the listener is open, and hands each to
/// a handshake thread (or, without an authkey, straight to `accept`).
fn run_acceptor(
    sock: Tracked<ListenSocket>,
    wake: Tracked<UnixStream>,
    shared: Arc<Shared>,
    ready: SyncSender<Ready>,
) {
    let mut handshakes: Vec<JoinHandle<()>> = Vec::new();
    loop {
        let mut i = 0;
        while i < handshakes.len() {
            if handshakes[i].is_finished() {
                let _ = handshakes.swap_remove(i).join();
            } else {
                i += 1;
            }
        }
        if !shared.wait_for_slot() {
            break;
        }
        match poll_fds(&[sock.get().as_fd(), wake.get().as_fd()], None) {
            Ok(woken) if woken.contains(&1) => break,
            Ok(_) => {}
            Err(e) => {
                // poll itself failing (ENOMEM): nothing sensible is left to try.
                let _ = ready.try_send(Err(ListenerError::Io(e)));
                break;
            }
        }
        let (stream, peer) = match sock.get().accept() {
            Ok(accepted) => accepted,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::ConnectionAborted
                ) =>
            {
                continue;
            }
            Err(e) => {
                let _ = ready.try_send(Err(ListenerError::Io(e)));
                match poll_fds(&[wake.get().as_fd()], Some(ACCEPT_BACKOFF)) {
                    Ok(woken) if woken.is_empty() => continue,
                    _ => break,
                }
            }
        };
        let stream = Tracked::new(stream);
        let Some(key) = shared.authkey.clone() else {
            if ready.send(Ok(stream.into_connection())).is_err() {
                break;
            }
            continue;
        };
        let wake_handle = match stream.get().try_clone() {
            Ok(s) => Tracked::new(s),
            Err(e) => {
                let _ = ready.try_send(Err(ListenerError::Io(e)));
                continue;
            }
        };
        let Some(slot) = shared.begin(wake_handle) else {
            break;
        };
        let deadline_after = shared.timeout();
        let tx = ready.clone();
        let spawned = thread::Builder::new()
            .name("procvisor-auth".into())
            .spawn(move || {
                let result = server_handshake(stream.get(), &key, deadline_after);
                slot.settle();
                let item = match result {
                    Ok(()) => Ok(stream.into_connection()),
                    Err(source) => Err(ListenerError::Authentication { peer, source }),
                };
                // The listener may be closed by now; the connection then closes here.
                let _ = tx.send(item);
                drop(slot);
            });
        match spawned {
            Ok(handle) => handshakes.push(handle),
            // The closure, with the socket and the slot, is dropped: both are given back.
            Err(e) => {
                let _ = ready.try_send(Err(ListenerError::Io(e)));
            }
        }
    }
    shared.stop();
    for handle in handshakes {
        let _ = handle.join();
    }
    // `sock` and `wake` close here, before `close` returns.
}

/// Connects to a [`Listener`] (or any socket speaking procvisor's framing), with options:
/// the builder behind [`client`].
///
/// ```
/// use std::time::Duration;
/// use procvisor::listener::{Client, Listener};
/// let listener = Listener::bind("127.0.0.1:0".parse()?, Some(b"key".to_vec()))?;
/// let to = Client::new(listener.address().clone())
///     .authkey(b"key")
///     .handshake_timeout(Duration::from_secs(2));
/// let peer = std::thread::spawn(move || to.connect().map(|mut c| c.send(&"hi")));
/// assert_eq!(listener.accept()?.recv::<String>()?, "hi");
/// peer.join().unwrap()??;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Client {
    address: Address,
    authkey: Option<Vec<u8>>,
    timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The authkey stays out of logs.
        f.debug_struct("Client")
            .field("address", &self.address)
            .field("authenticated", &self.authkey.is_some())
            .field("handshake_timeout", &self.timeout)
            .finish()
    }
}

impl Client {
    /// A client for `address`, without an authkey, with the default handshake timeout.
    ///
    /// ```
    /// let c = procvisor::listener::Client::new("127.0.0.1:7000".parse()?);
    /// # drop(c);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(address: Address) -> Client {
        Client {
            address,
            authkey: None,
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Authenticates with `key` (which the listener must have too).
    ///
    /// ```
    /// let c = procvisor::listener::Client::new("127.0.0.1:7000".parse()?).authkey(b"key");
    /// # drop(c);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn authkey(mut self, key: impl AsRef<[u8]>) -> Client {
        self.authkey = Some(key.as_ref().to_vec());
        self
    }

    /// Bounds the handshake, and a TCP connect, by `timeout` (5 s by default).
    ///
    /// ```
    /// use std::time::Duration;
    /// let c = procvisor::listener::Client::new("127.0.0.1:7000".parse()?)
    ///     .handshake_timeout(Duration::from_secs(1));
    /// # drop(c);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn handshake_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// Connects and, with an authkey, runs the handshake.
    ///
    /// ```
    /// use procvisor::listener::{Client, ListenerError};
    /// let got = Client::new("127.0.0.1:1".parse()?).connect();
    /// assert!(matches!(got, Err(ListenerError::Connect { .. })));
    /// let got = Client::new("127.0.0.1:1".parse()?).authkey(b"").connect();
    /// assert!(matches!(got, Err(ListenerError::EmptyAuthkey)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connect(&self) -> Result<Connection, ListenerError> {
        check_authkey(self.authkey.as_deref())?;
        let connect_error = |source| ListenerError::Connect {
            address: self.address.clone(),
            source,
        };
        let stream = match &self.address {
            Address::Unix(path) => Stream::Unix(UnixStream::connect(path).map_err(connect_error)?),
            Address::Abstract(name) => {
                let addr = unix::SocketAddr::from_abstract_name(name).map_err(connect_error)?;
                Stream::Unix(UnixStream::connect_addr(&addr).map_err(connect_error)?)
            }
            Address::Tcp(addr) => {
                let s = TcpStream::connect_timeout(addr, self.timeout).map_err(connect_error)?;
                // As on the listener's side: no waiting for Nagle.
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }
        };
        if let Some(key) = &self.authkey {
            client_handshake(&stream, key, self.timeout).map_err(|source| {
                ListenerError::Authentication {
                    peer: Some(self.address.clone()),
                    source,
                }
            })?;
        }
        Ok(Connection::from_stream(stream))
    }
}

/// Connects to the listener at `address`: Python's `multiprocessing.connection.Client`.
/// With an `authkey`, both sides prove they hold it before the connection is returned;
/// the handshake may take up to 5 s ([`Client`] sets another bound).
///
/// ```
/// use procvisor::listener::{client, Listener};
/// let listener = Listener::bind("127.0.0.1:0".parse()?, None)?;
/// let address = listener.address().clone();
/// let peer = std::thread::spawn(move || -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
///     let mut conn = client(&address, None)?;
///     conn.send(&20u32)?;
///     Ok(conn.recv()?)
/// });
/// let mut conn = listener.accept()?;
/// let n: u32 = conn.recv()?;
/// conn.send(&(n + 1))?;
/// assert_eq!(peer.join().unwrap().unwrap(), 21);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn client(address: &Address, authkey: Option<&[u8]>) -> Result<Connection, ListenerError> {
    let mut to = Client::new(address.clone());
    if let Some(key) = authkey {
        to = to.authkey(key);
    }
    to.connect()
}

/// The listener's side of the handshake: challenge the client, then answer its challenge.
fn server_handshake(stream: &Stream, key: &[u8], timeout: Duration) -> Result<(), AuthError> {
    let hs = Handshake::new(stream, key, timeout);
    hs.deliver_challenge()?;
    hs.answer_challenge()?;
    hs.finish()
}

/// The client's side: answer the listener's challenge, then challenge it.
fn client_handshake(stream: &Stream, key: &[u8], timeout: Duration) -> Result<(), AuthError> {
    let hs = Handshake::new(stream, key, timeout);
    hs.answer_challenge()?;
    hs.deliver_challenge()?;
    hs.finish()
}

/// One side of a handshake in progress, on a blocking socket, within a deadline.
struct Handshake<'a> {
    stream: &'a Stream,
    key: &'a [u8],
    timeout: Duration,
    deadline: Instant,
}

impl<'a> Handshake<'a> {
    fn new(stream: &'a Stream, key: &'a [u8], timeout: Duration) -> Self {
        Handshake {
            stream,
            key,
            timeout,
            deadline: Instant::now() + timeout,
        }
    }

    /// Sends a challenge, checks the answer, and says whether it was right.
    fn deliver_challenge(&self) -> Result<(), AuthError> {
        let mut challenge = [0u8; CHALLENGE_PREFIX.len() + NONCE_LEN];
        challenge[..CHALLENGE_PREFIX.len()].copy_from_slice(CHALLENGE_PREFIX);
        random_bytes(&mut challenge[CHALLENGE_PREFIX.len()..])?;
        self.write_frame(&challenge)?;
        let answer = self.read_frame("a digest")?;
        let verdict = if answer.len() != DIGEST_LEN {
            Err(AuthError::Malformed {
                expected: "a digest",
                len: answer.len(),
            })
        } else {
            // Constant time: the comparison says nothing about how much of it matched.
            hmac_of(self.key, &challenge)
                .verify_slice(&answer)
                .map_err(|_| AuthError::WrongDigest)
        };
        match verdict {
            Ok(()) => self.write_frame(WELCOME),
            Err(e) => {
                // Tell the peer why it is turned away; it may be gone already.
                let _ = self.write_frame(FAILURE);
                Err(e)
            }
        }
    }

    /// Answers the peer's challenge and reads its verdict.
    fn answer_challenge(&self) -> Result<(), AuthError> {
        let challenge = self.read_frame("a challenge")?;
        if challenge.len() != CHALLENGE_PREFIX.len() + NONCE_LEN
            || !challenge.starts_with(CHALLENGE_PREFIX)
        {
            return Err(AuthError::Malformed {
                expected: "a challenge",
                len: challenge.len(),
            });
        }
        let digest = hmac_of(self.key, &challenge).finalize().into_bytes();
        self.write_frame(&digest)?;
        let verdict = self.read_frame("a verdict")?;
        match verdict.as_slice() {
            WELCOME => Ok(()),
            FAILURE => Err(AuthError::Rejected),
            other => Err(AuthError::Malformed {
                expected: "a verdict",
                len: other.len(),
            }),
        }
    }

    /// Leaves the socket blocking without a timeout, as a `Connection` expects.
    fn finish(&self) -> Result<(), AuthError> {
        self.stream.set_read_timeout(None).map_err(AuthError::Io)?;
        self.stream.set_write_timeout(None).map_err(AuthError::Io)
    }

    fn time_left(&self) -> Result<Duration, AuthError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(AuthError::TimedOut {
                after: self.timeout,
            });
        }
        Ok(left)
    }

    /// Reads one frame of at most `MAX_HANDSHAKE_FRAME` bytes.
    fn read_frame(&self, expected: &'static str) -> Result<Vec<u8>, AuthError> {
        let mut header = [0u8; 4];
        self.read_exact(&mut header)?;
        let len = u32::from_be_bytes(header) as usize;
        if len > MAX_HANDSHAKE_FRAME {
            return Err(AuthError::Malformed { expected, len });
        }
        let mut payload = vec![0u8; len];
        self.read_exact(&mut payload)?;
        Ok(payload)
    }

    fn read_exact(&self, buf: &mut [u8]) -> Result<(), AuthError> {
        let mut done = 0;
        while done < buf.len() {
            // Each read may wait only for what is left of the whole handshake's time, so a
            // peer that trickles bytes cannot stretch it.
            let left = self.time_left()?;
            self.stream
                .set_read_timeout(Some(left))
                .map_err(AuthError::Io)?;
            let mut reader: &Stream = self.stream;
            match reader.read(&mut buf[done..]) {
                Ok(0) => return Err(AuthError::Disconnected),
                Ok(n) => done += n,
                Err(e) => match e.kind() {
                    io::ErrorKind::Interrupted => {}
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        return Err(AuthError::TimedOut {
                            after: self.timeout,
                        });
                    }
                    io::ErrorKind::ConnectionReset => return Err(AuthError::Disconnected),
                    _ => return Err(AuthError::Io(e)),
                },
            }
        }
        Ok(())
    }

    fn write_frame(&self, payload: &[u8]) -> Result<(), AuthError> {
        let mut frame = Vec::with_capacity(4 + payload.len());
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(payload);
        let fd = self.stream.as_raw_fd();
        let mut done = 0;
        while done < frame.len() {
            let left = self.time_left()?;
            self.stream
                .set_write_timeout(Some(left))
                .map_err(AuthError::Io)?;
            // MSG_NOSIGNAL: a peer that has gone is an error here, never a SIGPIPE.
            match send(fd, &frame[done..], MsgFlags::MSG_NOSIGNAL) {
                Ok(n) => done += n,
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    return Err(AuthError::TimedOut {
                        after: self.timeout,
                    });
                }
                Err(Errno::EPIPE | Errno::ECONNRESET) => return Err(AuthError::Disconnected),
                Err(e) => return Err(AuthError::Io(e.into())),
            }
        }
        Ok(())
    }
}

/// HMAC-SHA256 of `message` under `key`, ready to finalize or verify.
fn hmac_of(key: &[u8], message: &[u8]) -> HmacSha256 {
    let mut mac =
        <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC accepts a key of any length");
    mac.update(message);
    mac
}

/// Fills `buf` from the kernel's random source.
fn random_bytes(buf: &mut [u8]) -> Result<(), AuthError> {
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(AuthError::Io)
}
