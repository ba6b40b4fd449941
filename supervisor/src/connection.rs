//! `Pipe` and `Connection`: Python's `multiprocessing.connection`, typed with serde.
//!
//! [`pipe`] returns two connected [`Connection`]s. Either end can be passed to a child
//! inside the arguments of its target, as in Python: `Process::new(f, (conn,))`. The child
//! receives a duplicate of the descriptor; the parent keeps its own handle and may close
//! it.
//!
//! Connections between processes that are not parent and child come from a
//! [`Listener`](crate::listener::Listener) and [`client`](crate::listener::client), over
//! Unix sockets or TCP; they are the same `Connection`s.
//!
//! # Examples
//!
//! ```no_run
//! use procvisor::{connection::{pipe, Connection}, Process};
//!
//! fn child(mut conn: Connection) {
//!     conn.send(&(42, None::<u8>, "hello".to_owned())).unwrap();
//! }
//!
//! let (mut parent_end, child_end) = pipe(true)?;
//! let mut p = Process::new(child, child_end);
//! p.start()?;
//! let got: (i32, Option<u8>, String) = parent_end.recv()?;
//! assert_eq!(got, (42, None, "hello".to_owned()));
//! p.join(None)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The wire
//!
//! Each message is one frame of the procvisor protocol: a 4-byte big-endian length and the
//! payload — msgpack for [`send`](Connection::send), the bytes themselves for
//! [`send_bytes`](Connection::send_bytes) — written with one system call when it fits.
//!
//! # Caveats
//!
//! - A message larger than the connection's maximum (64 MiB unless
//!   [set](Connection::set_max_message_len)) is refused by `send` before anything is
//!   written, and by `recv` on its header before anything is allocated.
//! - A peer that writes a torn or garbage frame leaves the connection broken: every later
//!   `recv` reports it. A value that merely does not decode as the requested type is a
//!   [`ConnectionError::Decode`], and the connection stays usable.
//! - As in Python, two threads or processes must not read (or write) one end at once.

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, IoSlice, Read};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{MsgFlags, send, sendmsg};
use procvisor_protocol::frame::decode_value;
use procvisor_protocol::{DEFAULT_MAX_FRAME_LEN, DecodeError, EncodeError, HEADER_LEN};
use procvisor_worker::handles;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The descriptors of every open `Connection` of this process (and of every listener
/// socket, see [`track`]), so that a `fork` child running a `fn` target can close the ones
/// that are not its own (see `spawn::fork`).
/// Held only to insert, remove, or copy out.
static LIVE: Mutex<BTreeSet<RawFd>> = Mutex::new(BTreeSet::new());

fn live() -> MutexGuard<'static, BTreeSet<RawFd>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Holds the registry of open connections across a `fork`; the child reads which
/// descriptors belong to connections it must not keep.
pub(crate) fn live_for_fork() -> MutexGuard<'static, BTreeSet<RawFd>> {
    live()
}

/// Adds a descriptor that is not a `Connection`'s (a listening socket, a socket still in
/// its authentication handshake) to the registry, so that a `fork` child running a `fn`
/// target closes it too.
/// Remove it with [`untrack`] before closing it.
pub(crate) fn track(fd: RawFd) {
    live().insert(fd);
}

/// Removes a descriptor added with [`track`]; call it before the descriptor is closed, so
/// that its number, once reused, is not closed by a `fork` child.
pub(crate) fn untrack(fd: RawFd) {
    live().remove(&fd);
}

/// The socket under a `Connection`: a Unix stream socket (pipes, Unix listeners) or a
/// TCP one (TCP listeners).
#[derive(Debug)]
pub(crate) enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    /// Bounds how long one read may block (`None`: for ever).
    pub(crate) fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(timeout),
            Stream::Tcp(s) => s.set_read_timeout(timeout),
        }
    }

    /// Bounds how long one write may block (`None`: for ever).
    pub(crate) fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_write_timeout(timeout),
            Stream::Tcp(s) => s.set_write_timeout(timeout),
        }
    }

    /// A second descriptor for the same socket.
    pub(crate) fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }

    /// Shuts down both directions: a thread blocked reading this socket wakes up.
    pub(crate) fn shutdown(&self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
        }
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => (&*s).read(buf),
            Stream::Tcp(s) => (&*s).read(buf),
        }
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Unix(s) => s.as_fd(),
            Stream::Tcp(s) => s.as_fd(),
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// Bytes read from the socket at a time when no larger frame is pending.
const READ_CHUNK: usize = 64 * 1024;

/// A received message: where it is in the read buffer, or a large one on its own.
enum Frame {
    Buffered(std::ops::Range<usize>),
    Large(Vec<u8>),
}

/// Why a `Connection` call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectionError {
    /// Every peer end is closed and every buffered message has been read: Python's
    /// `EOFError`.
    Eof,
    /// This end was closed with [`Connection::close`].
    Closed,
    /// The receiving end of a simplex pipe cannot send.
    NotWritable,
    /// The sending end of a simplex pipe cannot receive.
    NotReadable,
    /// The message is longer than the connection's maximum; nothing was written (on send)
    /// or allocated (on receive, where the connection is then broken).
    TooLarge {
        /// The message length.
        len: usize,
        /// The maximum in force.
        max: usize,
    },
    /// The value could not be serialized; nothing was written.
    Serialize(EncodeError),
    /// The message did not decode as the requested type. The message was consumed and the
    /// connection stays usable.
    Decode {
        /// The type asked for.
        expected: &'static str,
        /// What the decoder said.
        source: DecodeError,
    },
    /// The peer wrote a torn or garbage frame; the connection is unusable from now on.
    Broken(DecodeError),
    /// The buffer given to [`recv_bytes_into`](Connection::recv_bytes_into) is too short;
    /// the message is handed back here (Python's `BufferTooShort`).
    BufferTooShort {
        /// The whole message.
        message: Vec<u8>,
    },
    /// The system call failed.
    Io(io::Error),
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionError::Eof => f.write_str("end of file: the other end is closed"),
            ConnectionError::Closed => f.write_str("connection is closed"),
            ConnectionError::NotWritable => f.write_str("connection is read-only"),
            ConnectionError::NotReadable => f.write_str("connection is write-only"),
            ConnectionError::TooLarge { len, max } => {
                write!(f, "message of {len} bytes exceeds the maximum of {max}")
            }
            ConnectionError::Serialize(_) => f.write_str("value could not be serialized"),
            ConnectionError::Decode { expected, .. } => {
                write!(f, "message did not decode as {expected}")
            }
            ConnectionError::Broken(_) => f.write_str("connection broken by an invalid frame"),
            ConnectionError::BufferTooShort { message } => {
                write!(
                    f,
                    "buffer too short for a message of {} bytes",
                    message.len()
                )
            }
            ConnectionError::Io(_) => f.write_str("connection i/o failed"),
        }
    }
}

impl std::error::Error for ConnectionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectionError::Serialize(e) => Some(e),
            ConnectionError::Decode { source, .. } => Some(source),
            ConnectionError::Broken(e) => Some(e),
            ConnectionError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for ConnectionError {
    fn from(e: io::Error) -> Self {
        ConnectionError::Io(e)
    }
}

/// One end of a pipe, or one side of a [`Listener`](crate::listener::Listener) /
/// [`client`](crate::listener::client) pair: sends and receives whole messages.
pub struct Connection {
    sock: Option<Stream>,
    readable: bool,
    writable: bool,
    /// Received bytes not yet handed out: `rbuf[rpos..rend]`.
    rbuf: Vec<u8>,
    rpos: usize,
    rend: usize,
    /// Reused for encoding outgoing messages.
    wbuf: Vec<u8>,
    max_len: usize,
    broken: Option<DecodeError>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("fd", &self.sock.as_ref().map(|s| s.as_raw_fd()))
            .field("readable", &self.readable)
            .field("writable", &self.writable)
            .field("buffered", &(self.rend - self.rpos))
            .field("broken", &self.broken)
            .finish()
    }
}

/// A [`Connection`]'s sender that writes many messages per system call; made by
/// [`Connection::buffered_sender`], whose documentation gives the flush rule.
pub struct BufferedSender<'a> {
    conn: &'a mut Connection,
    /// Whole frames not yet written.
    buf: Vec<u8>,
}

impl fmt::Debug for BufferedSender<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferedSender")
            .field("conn", &self.conn)
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl BufferedSender<'_> {
    /// Buffered bytes at which a `send` writes the buffer out.
    pub const FLUSH_AT: usize = 32 * 1024;

    /// Appends `value` as one message, and writes the buffer out when it has reached
    /// [`FLUSH_AT`](Self::FLUSH_AT) bytes. A value that fails to encode, or is larger than
    /// the connection's maximum, is refused and leaves the buffer as it was.
    ///
    /// ```
    /// let (mut a, mut b) = procvisor::connection::pipe(true)?;
    /// a.set_max_message_len(8);
    /// let mut tx = a.buffered_sender()?;
    /// tx.send(&1u8)?;
    /// assert!(tx.send(&"much longer than eight bytes").is_err());
    /// tx.send(&2u8)?;
    /// tx.flush()?;
    /// assert_eq!(b.recv::<u8>()?, 1);
    /// assert_eq!(b.recv::<u8>()?, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ConnectionError> {
        let start = self.buf.len();
        if let Err(e) = self.conn.encode_frame(&mut self.buf, value) {
            self.buf.truncate(start);
            return Err(e);
        }
        if self.buf.len() >= Self::FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    /// Bytes buffered and not yet written.
    ///
    /// ```
    /// let (mut a, _b) = procvisor::connection::pipe(true)?;
    /// let mut tx = a.buffered_sender()?;
    /// tx.send(&0u8)?;
    /// assert_eq!(tx.buffered(), 5); // a 4-byte header and one msgpack byte
    /// tx.flush()?;
    /// assert_eq!(tx.buffered(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Writes every buffered message; once it returns `Ok`, they are all delivered (in the
    /// sense of [`Connection::send`]). On an error the buffer is dropped: how much of it
    /// reached the peer is unknown, as after a failed `send`.
    ///
    /// ```
    /// let (mut a, mut b) = procvisor::connection::pipe(true)?;
    /// let mut tx = a.buffered_sender()?;
    /// tx.send(&"hello")?;
    /// assert!(!b.poll(Some(std::time::Duration::ZERO))?); // still buffered
    /// tx.flush()?;
    /// assert_eq!(b.recv::<String>()?, "hello");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn flush(&mut self) -> Result<(), ConnectionError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = self.conn.write_all(&[&self.buf]);
        self.buf.clear();
        result
    }
}

impl Drop for BufferedSender<'_> {
    /// Writes what is still buffered (its error is lost: call `flush` to see it), and
    /// gives the buffer back to the connection for its next messages.
    fn drop(&mut self) {
        let _ = self.flush();
        let mut buf = std::mem::take(&mut self.buf);
        if buf.capacity() <= READ_CHUNK {
            buf.clear();
            self.conn.wbuf = buf;
        }
    }
}

/// Python's `Pipe(duplex)`: two connected ends. With `duplex` both ends send and receive;
/// without it the first end only receives and the second only sends.
///
/// ```
/// let (mut a, mut b) = procvisor::connection::pipe(true)?;
/// a.send(&"ping")?;
/// assert_eq!(b.recv::<String>()?, "ping");
/// b.send(&7u8)?;
/// assert_eq!(a.recv::<u8>()?, 7);
///
/// let (mut reader, mut writer) = procvisor::connection::pipe(false)?;
/// assert!(reader.send(&1).is_err());
/// writer.send_bytes(b"raw")?;
/// assert_eq!(reader.recv_bytes()?, b"raw");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn pipe(duplex: bool) -> Result<(Connection, Connection), ConnectionError> {
    let (a, b) = UnixStream::pair()?;
    if duplex {
        Ok((
            Connection::new(a, true, true),
            Connection::new(b, true, true),
        ))
    } else {
        a.shutdown(std::net::Shutdown::Write)?;
        b.shutdown(std::net::Shutdown::Read)?;
        Ok((
            Connection::new(a, true, false),
            Connection::new(b, false, true),
        ))
    }
}

impl Connection {
    fn new(sock: impl Into<Stream>, readable: bool, writable: bool) -> Self {
        let sock = sock.into();
        live().insert(sock.as_raw_fd());
        Connection {
            sock: Some(sock),
            readable,
            writable,
            rbuf: Vec::new(),
            rpos: 0,
            rend: 0,
            wbuf: Vec::new(),
            max_len: DEFAULT_MAX_FRAME_LEN,
            broken: None,
        }
    }

    /// A duplex connection over a socket the caller set up (a listener's, a client's).
    pub(crate) fn from_stream(sock: Stream) -> Self {
        Connection::new(sock, true, true)
    }

    fn sock(&self) -> Result<&Stream, ConnectionError> {
        self.sock.as_ref().ok_or(ConnectionError::Closed)
    }

    /// Whether this end can receive.
    ///
    /// ```
    /// let (r, w) = procvisor::connection::pipe(false)?;
    /// assert!(r.readable() && !w.readable());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn readable(&self) -> bool {
        self.readable
    }

    /// Whether this end can send.
    ///
    /// ```
    /// let (r, w) = procvisor::connection::pipe(false)?;
    /// assert!(w.writable() && !r.writable());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// The largest message this end sends or accepts (64 MiB by default).
    ///
    /// ```
    /// let (mut a, _b) = procvisor::connection::pipe(true)?;
    /// a.set_max_message_len(16);
    /// assert_eq!(a.max_message_len(), 16);
    /// assert!(a.send_bytes(&[0; 17]).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_message_len(&self) -> usize {
        self.max_len
    }

    /// Sets the largest message this end sends or accepts.
    pub fn set_max_message_len(&mut self, max: usize) {
        self.max_len = max.min(u32::MAX as usize);
    }

    /// Sends a serde value as one message.
    ///
    /// ```
    /// let (mut a, mut b) = procvisor::connection::pipe(true)?;
    /// a.send(&vec![1, 2, 3])?;
    /// assert_eq!(b.recv::<Vec<i32>>()?, [1, 2, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ConnectionError> {
        self.send_frames(|conn, buf| conn.encode_frame(buf, value))
    }

    /// Sends several values as as many messages, in one system call when they fit: for
    /// streams of small messages, where a write per message would cost more than the
    /// messages themselves. The receiver sees ordinary messages. Nothing is written when any
    /// value fails to encode or is too large.
    ///
    /// ```
    /// let (mut a, mut b) = procvisor::connection::pipe(true)?;
    /// a.send_batch(&[(1, "one"), (2, "two")])?;
    /// assert_eq!(b.recv::<(u8, String)>()?, (1, "one".to_owned()));
    /// assert_eq!(b.recv::<(u8, String)>()?, (2, "two".to_owned()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_batch<T: Serialize>(&mut self, values: &[T]) -> Result<(), ConnectionError> {
        self.send_frames(|conn, buf| {
            values
                .iter()
                .try_for_each(|value| conn.encode_frame(buf, value))
        })
    }

    /// A sender that gathers messages in a buffer and writes many with one system call:
    /// for a stream of small messages, where a write per message costs more than the
    /// messages themselves. The receiver sees ordinary messages, in order.
    ///
    /// **The flush rule.** Unlike [`send`](Connection::send), a message given to
    /// [`BufferedSender::send`] has *not* been delivered when the call returns. The buffer is
    /// written when it reaches [`BufferedSender::FLUSH_AT`] bytes (by the `send` that
    /// reaches it), when [`flush`](BufferedSender::flush) is called, and when the sender is
    /// dropped (a best effort whose error is lost: call `flush` to see it). Messages still
    /// in the buffer are lost if this process dies. The sender borrows the connection, so
    /// nothing else can be sent or received on it meanwhile, and nothing overtakes what is
    /// buffered.
    ///
    /// ```
    /// let (mut a, mut b) = procvisor::connection::pipe(true)?;
    /// let mut tx = a.buffered_sender()?;
    /// for i in 0..1000u32 {
    ///     tx.send(&(i, "item"))?;
    /// }
    /// tx.flush()?; // every message is delivered now
    /// drop(tx);
    /// for i in 0..1000u32 {
    ///     assert_eq!(b.recv::<(u32, String)>()?.0, i);
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn buffered_sender(&mut self) -> Result<BufferedSender<'_>, ConnectionError> {
        if !self.writable {
            return Err(ConnectionError::NotWritable);
        }
        self.sock()?;
        let mut buf = std::mem::take(&mut self.wbuf);
        buf.clear();
        Ok(BufferedSender { conn: self, buf })
    }

    /// Encodes frames into the reusable write buffer with `fill`, then writes them at once.
    fn send_frames(
        &mut self,
        fill: impl FnOnce(&Self, &mut Vec<u8>) -> Result<(), ConnectionError>,
    ) -> Result<(), ConnectionError> {
        if !self.writable {
            return Err(ConnectionError::NotWritable);
        }
        self.sock()?;
        let mut buf = std::mem::take(&mut self.wbuf);
        buf.clear();
        let result = fill(self, &mut buf).and_then(|()| self.write_all(&[&buf]));
        // Keep a modest buffer for the next message, not the largest one ever sent.
        if buf.capacity() <= READ_CHUNK {
            self.wbuf = buf;
        }
        result
    }

    /// Appends one frame holding `value` to `buf`.
    fn encode_frame<T: Serialize + ?Sized>(
        &self,
        buf: &mut Vec<u8>,
        value: &T,
    ) -> Result<(), ConnectionError> {
        let start = buf.len();
        buf.extend_from_slice(&[0; HEADER_LEN]);
        if let Err(e) = rmp_serde::encode::write_named(buf, value) {
            return Err(ConnectionError::Serialize(EncodeError::Serialize(e)));
        }
        let len = buf.len() - start - HEADER_LEN;
        if len > self.max_len {
            return Err(ConnectionError::TooLarge {
                len,
                max: self.max_len,
            });
        }
        buf[start..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }

    /// Sends bytes as one message (Python's `send_bytes`; slice the buffer for its offset
    /// and size).
    ///
    /// ```
    /// let (mut a, mut b) = procvisor::connection::pipe(true)?;
    /// let data = b"0123456789";
    /// a.send_bytes(&data[2..5])?;
    /// assert_eq!(b.recv_bytes()?, b"234");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), ConnectionError> {
        if !self.writable {
            return Err(ConnectionError::NotWritable);
        }
        self.sock()?;
        if bytes.len() > self.max_len {
            return Err(ConnectionError::TooLarge {
                len: bytes.len(),
                max: self.max_len,
            });
        }
        let header = (bytes.len() as u32).to_be_bytes();
        self.write_all(&[&header, bytes])
    }

    /// Writes every part, in order, with as few system calls as the kernel allows.
    fn write_all(&self, parts: &[&[u8]]) -> Result<(), ConnectionError> {
        let fd = self.sock()?.as_raw_fd();
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut done = 0;
        while done < total {
            // The parts from `done` on.
            let mut skip = done;
            let mut iov = Vec::with_capacity(parts.len());
            for p in parts {
                if skip >= p.len() {
                    skip -= p.len();
                    continue;
                }
                iov.push(IoSlice::new(&p[skip..]));
                skip = 0;
            }
            // MSG_NOSIGNAL: a closed peer is an EPIPE error here, never a SIGPIPE. One part
            // goes through send(2), whose kernel path is shorter than sendmsg(2)'s.
            let sent = match iov.as_slice() {
                [one] => send(fd, one, MsgFlags::MSG_NOSIGNAL),
                _ => sendmsg::<()>(fd, &iov, &[], MsgFlags::MSG_NOSIGNAL, None),
            };
            match sent {
                Ok(n) => done += n,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(ConnectionError::Io(e.into())),
            }
        }
        Ok(())
    }

    /// Receives one message and decodes it as `T`.
    ///
    /// ```
    /// let (mut a, mut b) = procvisor::connection::pipe(true)?;
    /// a.send(&"not a number")?;
    /// assert!(matches!(b.recv::<u32>(), Err(procvisor::connection::ConnectionError::Decode { .. })));
    /// a.send(&5u32)?;
    /// assert_eq!(b.recv::<u32>()?, 5); // still usable
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv<T: DeserializeOwned>(&mut self) -> Result<T, ConnectionError> {
        let range = self.next_frame()?;
        decode_value(&self.rbuf[range]).map_err(|source| ConnectionError::Decode {
            expected: std::any::type_name::<T>(),
            source,
        })
    }

    /// Receives one message as bytes (Python's `recv_bytes`).
    ///
    /// ```
    /// let (mut a, mut b) = procvisor::connection::pipe(true)?;
    /// a.send_bytes(b"abc")?;
    /// drop(a);
    /// assert_eq!(b.recv_bytes()?, b"abc");
    /// assert!(matches!(b.recv_bytes(), Err(procvisor::connection::ConnectionError::Eof)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_bytes(&mut self) -> Result<Vec<u8>, ConnectionError> {
        match self.frame(true)? {
            Frame::Buffered(range) => Ok(self.rbuf[range].to_vec()),
            Frame::Large(body) => Ok(body),
        }
    }

    /// The body of a large message (more than [`READ_CHUNK`]) whose header is buffered:
    /// read straight into the `Vec` handed out, not through the read buffer and a copy.
    fn read_large(&mut self, len: usize) -> Result<Vec<u8>, ConnectionError> {
        let mut body = Vec::with_capacity(len);
        body.extend_from_slice(&self.rbuf[self.rpos + HEADER_LEN..self.rend]);
        self.rpos = 0;
        self.rend = 0;
        let sock: &Stream = self.sock.as_ref().ok_or(ConnectionError::Closed)?;
        let mut rest = sock.take((len - body.len()) as u64);
        loop {
            match rest.read_to_end(&mut body) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ConnectionError::Io(e)),
            }
        }
        if body.len() < len {
            return Err(self.break_with(DecodeError::Truncated {
                expected: HEADER_LEN + len,
                got: HEADER_LEN + body.len(),
            }));
        }
        Ok(body)
    }

    /// Receives one message into `buf` from `offset` on and returns its length (Python's
    /// `recv_bytes_into`). When it does not fit, the error hands the message back.
    ///
    /// ```
    /// use procvisor::connection::ConnectionError;
    /// let (mut a, mut b) = procvisor::connection::pipe(true)?;
    /// let mut buf = [0u8; 8];
    /// a.send_bytes(b"hey")?;
    /// assert_eq!(b.recv_bytes_into(&mut buf, 2)?, 3);
    /// assert_eq!(&buf[2..5], b"hey");
    /// a.send_bytes(b"far too long")?;
    /// match b.recv_bytes_into(&mut buf, 0) {
    ///     Err(ConnectionError::BufferTooShort { message }) => assert_eq!(message, b"far too long"),
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_bytes_into(
        &mut self,
        buf: &mut [u8],
        offset: usize,
    ) -> Result<usize, ConnectionError> {
        let range = self.next_frame()?;
        let msg = &self.rbuf[range];
        match buf.get_mut(offset..offset.saturating_add(msg.len())) {
            Some(dst) => {
                dst.copy_from_slice(msg);
                Ok(msg.len())
            }
            None => Err(ConnectionError::BufferTooShort {
                message: msg.to_vec(),
            }),
        }
    }

    /// Whether a message (or the end of the stream) can be received without blocking,
    /// waiting up to `timeout` for one; `None` waits for ever, `Some(Duration::ZERO)` not
    /// at all (Python's `poll()`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let (mut a, mut b) = procvisor::connection::pipe(true)?;
    /// assert!(!b.poll(Some(Duration::ZERO))?);
    /// a.send(&1)?;
    /// assert!(b.poll(Some(Duration::from_secs(1)))?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn poll(&mut self, timeout: Option<Duration>) -> Result<bool, ConnectionError> {
        if !self.readable {
            return Err(ConnectionError::NotReadable);
        }
        if self.has_whole_frame() {
            return Ok(true);
        }
        let sock = self.sock()?;
        Ok(poll_fds(&[sock.as_fd()], timeout)?.contains(&0))
    }

    fn has_whole_frame(&self) -> bool {
        let avail = &self.rbuf[self.rpos..self.rend];
        match avail.first_chunk::<HEADER_LEN>() {
            Some(h) => avail.len() >= HEADER_LEN + u32::from_be_bytes(*h) as usize,
            None => false,
        }
    }

    /// Reads until one whole frame is buffered; returns its payload's range in `rbuf`.
    fn next_frame(&mut self) -> Result<std::ops::Range<usize>, ConnectionError> {
        match self.frame(false)? {
            Frame::Buffered(range) => Ok(range),
            Frame::Large(_) => unreachable!("only asked for buffered frames"),
        }
    }

    /// The next message: in the read buffer, or with `large`, a message over
    /// [`READ_CHUNK`] as its own `Vec` (read without the buffer's copy: a third of the time
    /// of a 1 MiB message here).
    fn frame(&mut self, large: bool) -> Result<Frame, ConnectionError> {
        if !self.readable {
            return Err(ConnectionError::NotReadable);
        }
        if let Some(e) = &self.broken {
            return Err(ConnectionError::Broken(e.clone()));
        }
        self.sock()?;
        loop {
            let avail = self.rend - self.rpos;
            let mut need = HEADER_LEN;
            if let Some(h) = self.rbuf[self.rpos..self.rend].first_chunk::<HEADER_LEN>() {
                let len = u32::from_be_bytes(*h) as usize;
                if len > self.max_len {
                    return Err(self.break_with(DecodeError::Oversized {
                        len,
                        max: self.max_len,
                    }));
                }
                need = HEADER_LEN + len;
                if avail >= need {
                    let start = self.rpos + HEADER_LEN;
                    self.rpos += need;
                    return Ok(Frame::Buffered(start..start + len));
                }
                if large && len > READ_CHUNK {
                    return self.read_large(len).map(Frame::Large);
                }
            }
            // Make room for the rest of this frame (and a chunk more), compacting first.
            if self.rpos > 0 {
                self.rbuf.copy_within(self.rpos..self.rend, 0);
                self.rend -= self.rpos;
                self.rpos = 0;
            }
            let want = need.max(READ_CHUNK);
            if self.rbuf.len() < want {
                self.rbuf.resize(want, 0);
            }
            let mut sock: &Stream = self.sock.as_ref().ok_or(ConnectionError::Closed)?;
            let n = loop {
                match sock.read(&mut self.rbuf[self.rend..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(ConnectionError::Io(e)),
                }
            };
            if n == 0 {
                if avail == 0 {
                    return Err(ConnectionError::Eof);
                }
                return Err(self.break_with(DecodeError::Truncated {
                    expected: need,
                    got: avail,
                }));
            }
            self.rend += n;
        }
    }

    fn break_with(&mut self, e: DecodeError) -> ConnectionError {
        self.broken = Some(e.clone());
        self.rbuf = Vec::new();
        self.rpos = 0;
        self.rend = 0;
        ConnectionError::Broken(e)
    }

    /// Closes this end; later calls report [`ConnectionError::Closed`]. Closing twice is
    /// fine. Dropping a connection closes it too.
    ///
    /// ```
    /// let (mut a, _b) = procvisor::connection::pipe(true)?;
    /// a.close();
    /// assert!(a.is_closed());
    /// assert!(a.send(&1).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(&mut self) {
        if let Some(sock) = self.sock.take() {
            live().remove(&sock.as_raw_fd());
        }
        self.rbuf = Vec::new();
        self.rpos = 0;
        self.rend = 0;
    }

    /// Whether [`close`](Connection::close) was called.
    pub fn is_closed(&self) -> bool {
        self.sock.is_none()
    }

    /// The descriptor number (Python's `fileno()`).
    ///
    /// ```
    /// let (a, _b) = procvisor::connection::pipe(true)?;
    /// assert!(a.fileno()? >= 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fileno(&self) -> Result<RawFd, ConnectionError> {
        Ok(self.sock()?.as_raw_fd())
    }
}

impl From<UnixStream> for Connection {
    /// A duplex connection over an existing Unix stream socket, speaking procvisor's
    /// framing.
    ///
    /// ```
    /// use std::os::unix::net::UnixStream;
    /// let (a, b) = UnixStream::pair()?;
    /// let (mut a, mut b) = (procvisor::Connection::from(a), procvisor::Connection::from(b));
    /// a.send(&"hi")?;
    /// assert_eq!(b.recv::<String>()?, "hi");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn from(sock: UnixStream) -> Self {
        Connection::new(sock, true, true)
    }
}

impl From<TcpStream> for Connection {
    /// A duplex connection over an existing TCP stream, speaking procvisor's framing. The
    /// socket's options (`TCP_NODELAY` among them) are left as they are; connections made
    /// by a [`Listener`](crate::listener::Listener) or [`client`](crate::listener::client)
    /// turn Nagle's algorithm off.
    ///
    /// ```
    /// use std::net::{TcpListener, TcpStream};
    /// let server = TcpListener::bind("127.0.0.1:0")?;
    /// let a = TcpStream::connect(server.local_addr()?)?;
    /// let (b, _) = server.accept()?;
    /// let (mut a, mut b) = (procvisor::Connection::from(a), procvisor::Connection::from(b));
    /// a.send(&"over tcp")?;
    /// assert_eq!(b.recv::<String>()?, "over tcp");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn from(sock: TcpStream) -> Self {
        Connection::new(sock, true, true)
    }
}

impl From<UnixStream> for Stream {
    fn from(s: UnixStream) -> Self {
        Stream::Unix(s)
    }
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Self {
        Stream::Tcp(s)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close();
    }
}

/// How a `Connection` travels inside a process's arguments.
#[derive(Serialize, Deserialize)]
struct Wire {
    handle: u32,
    readable: bool,
    writable: bool,
    /// A TCP socket (from a `Listener` or `client`) rather than a Unix one.
    #[serde(default)]
    tcp: bool,
}

impl Serialize for Connection {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let sock = self
            .sock
            .as_ref()
            .ok_or_else(|| serde::ser::Error::custom("a closed connection cannot be sent"))?;
        if self.rend > self.rpos {
            // Those bytes were read from the socket already: the copy would never see them.
            return Err(serde::ser::Error::custom(
                "a connection with unread buffered messages cannot be sent",
            ));
        }
        let handle = handles::push(sock.as_fd()).map_err(serde::ser::Error::custom)?;
        Wire {
            handle,
            readable: self.readable,
            writable: self.writable,
            tcp: matches!(sock, Stream::Tcp(_)),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Connection {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(deserializer)?;
        let fd: OwnedFd = handles::take(wire.handle).map_err(serde::de::Error::custom)?;
        let sock = if wire.tcp {
            Stream::Tcp(TcpStream::from(fd))
        } else {
            Stream::Unix(UnixStream::from(fd))
        };
        Ok(Connection::new(sock, wire.readable, wire.writable))
    }
}

/// Something [`wait`] can wait on.
pub trait Waitable {
    /// The descriptor that becomes readable when the object is ready; `None` when it can
    /// never be (a process not started, a closed connection).
    fn wait_fd(&self) -> Option<BorrowedFd<'_>>;

    /// Whether the object is ready without looking at its descriptor (a connection with a
    /// whole message already buffered).
    fn ready_now(&self) -> bool {
        false
    }
}

impl Waitable for Connection {
    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        self.sock
            .as_ref()
            .filter(|_| self.readable)
            .map(|s| s.as_fd())
    }

    fn ready_now(&self) -> bool {
        self.readable && self.has_whole_frame()
    }
}

impl<R: Serialize + DeserializeOwned + 'static> Waitable for crate::Process<R> {
    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        self.sentinel().ok()
    }
}

impl Waitable for BorrowedFd<'_> {
    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.as_fd())
    }
}

/// Waits until at least one of `objects` is ready or `timeout` passes (`None`: for ever),
/// and returns the indices of the ready ones: Python's `multiprocessing.connection.wait`.
/// A connection is ready when a message or the end of the stream can be received, a
/// process when it has ended, a raw descriptor when it is readable.
///
/// ```
/// use std::time::Duration;
/// use procvisor::connection::{pipe, wait, Waitable};
/// let (mut a, b) = pipe(true)?;
/// let (_c, d) = pipe(true)?;
/// a.send(&1)?;
/// let ready = wait(&[&b as &dyn Waitable, &d], Some(Duration::from_secs(1)))?;
/// assert_eq!(ready, [0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn wait(
    objects: &[&dyn Waitable],
    timeout: Option<Duration>,
) -> Result<Vec<usize>, ConnectionError> {
    let now: Vec<usize> = (0..objects.len())
        .filter(|&i| objects[i].ready_now())
        .collect();
    if !now.is_empty() {
        return Ok(now);
    }
    let (index, fds): (Vec<usize>, Vec<BorrowedFd<'_>>) = objects
        .iter()
        .enumerate()
        .filter_map(|(i, o)| o.wait_fd().map(|fd| (i, fd)))
        .unzip();
    Ok(poll_fds(&fds, timeout)?
        .into_iter()
        .map(|k| index[k])
        .collect())
}

/// Polls descriptors for readability (or hang-up) until one is ready or `timeout` passes;
/// returns the positions of the ready ones.
pub(crate) fn poll_fds(
    fds: &[BorrowedFd<'_>],
    timeout: Option<Duration>,
) -> io::Result<Vec<usize>> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let mut pfds: Vec<PollFd<'_>> = fds
            .iter()
            .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
            .collect();
        let wait = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        match nix::poll::poll(&mut pfds, wait) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<usize> = pfds
            .iter()
            .enumerate()
            .filter(|(_, p)| p.revents().is_some_and(|r| !r.is_empty()))
            .map(|(i, _)| i)
            .collect();
        if !ready.is_empty() || deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(ready);
        }
    }
}
