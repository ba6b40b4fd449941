//! Actor mailboxes to worker processes: an application actor sends a typed request to a
//! [`Mailbox`] actor, which forwards it over a socket to a handler loop in the child
//! ([`serve`]); the child's reply resolves the sender's future.
//!
//! The mailbox is bounded. Requests are served one at a time, in order; while one is in
//! flight the rest wait in the actor's mailbox, of the capacity given to
//! [`MailboxEnd::start`]. When it is full, `addr.send(..)` waits for room (backpressure)
//! and `addr.try_send(..)` fails at once with actix's `SendError::Full`: memory never grows
//! without bound.
//!
//! # Examples
//!
//! ```no_run
//! use procvisor::mailbox::{self, Call};
//! use procvisor::{Connection, Process};
//!
//! fn square_server(conn: Connection) {
//!     mailbox::serve(conn, |x: u64| x * x).unwrap();
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (end, child_end) = mailbox::channel::<u64, u64>()?;
//! let mut p = Process::new(square_server, child_end);
//! p.start()?;
//! actix::System::new().block_on(async move {
//!     let addr = end.start(16);
//!     let reply = addr.send(Call::new(12)).await.unwrap().unwrap();
//!     assert_eq!(reply, 144);
//! });
//! p.join(None)?;
//! # Ok(()) }
//! ```
//!
//! # Failures
//!
//! A worker that dies (or closes its end) fails the request in flight, and every later one,
//! with [`MailboxError::WorkerGone`]; a reply of the wrong type is a
//! [`MailboxError::Decode`] naming the type; a torn or garbage frame breaks the mailbox
//! ([`MailboxError::Broken`]). Nothing hangs.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::unix::net::UnixStream;

use actix::{Actor, ActorFutureExt, Addr, AtomicResponse, Context, Handler, Message, WrapFuture};
use procvisor_protocol::frame::decode_value;
use procvisor_protocol::{
    DEFAULT_MAX_FRAME_LEN, DecodeError, EncodeError, HEADER_LEN, encode_value,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::connection::{Connection, ConnectionError};

/// Why a request got no reply.
#[derive(Debug)]
#[non_exhaustive]
pub enum MailboxError {
    /// The worker closed its end or died.
    WorkerGone,
    /// The request could not be serialized.
    Serialize(EncodeError),
    /// The request or the reply is longer than the maximum frame.
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// The reply did not decode as the expected type (the mailbox stays usable).
    Decode {
        /// The type expected.
        expected: &'static str,
        /// What the decoder said.
        source: DecodeError,
    },
    /// The worker wrote a torn or garbage frame; the mailbox is unusable from now on.
    Broken(DecodeError),
    /// The socket failed.
    Io(io::Error),
}

impl fmt::Display for MailboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MailboxError::WorkerGone => f.write_str("the worker is gone"),
            MailboxError::Serialize(_) => f.write_str("request could not be serialized"),
            MailboxError::TooLarge { len } => write!(f, "message of {len} bytes is too large"),
            MailboxError::Decode { expected, .. } => {
                write!(f, "reply did not decode as {expected}")
            }
            MailboxError::Broken(_) => f.write_str("mailbox broken by an invalid frame"),
            MailboxError::Io(_) => f.write_str("mailbox i/o failed"),
        }
    }
}

impl std::error::Error for MailboxError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MailboxError::Serialize(e) => Some(e),
            MailboxError::Decode { source, .. } | MailboxError::Broken(source) => Some(source),
            MailboxError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// A request for the worker behind a [`Mailbox`], answered with a `Resp`.
pub struct Call<Req, Resp> {
    /// The request.
    pub request: Req,
    _reply: PhantomData<fn() -> Resp>,
}

impl<Req, Resp> Call<Req, Resp> {
    /// Wraps a request.
    ///
    /// ```
    /// let call: procvisor::mailbox::Call<u8, u16> = procvisor::mailbox::Call::new(3);
    /// assert_eq!(call.request, 3);
    /// ```
    pub fn new(request: Req) -> Self {
        Call {
            request,
            _reply: PhantomData,
        }
    }
}

impl<Req: fmt::Debug, Resp> fmt::Debug for Call<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("request", &self.request)
            .finish()
    }
}

impl<Req: 'static, Resp: 'static> Message for Call<Req, Resp> {
    type Result = Result<Resp, MailboxError>;
}

/// The parent's end of a mailbox, before its actor starts.
#[derive(Debug)]
pub struct MailboxEnd<Req, Resp> {
    sock: UnixStream,
    _types: PhantomData<fn(Req) -> Resp>,
}

/// Makes a mailbox: the parent's end, and the [`Connection`] to hand to the child, whose
/// target passes it to [`serve`].
///
/// ```
/// let (_end, child) = procvisor::mailbox::channel::<String, usize>()?;
/// assert!(child.readable() && child.writable());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn channel<Req, Resp>() -> io::Result<(MailboxEnd<Req, Resp>, Connection)> {
    let (ours, theirs) = UnixStream::pair()?;
    Ok((
        MailboxEnd {
            sock: ours,
            _types: PhantomData,
        },
        Connection::from(theirs),
    ))
}

impl<Req, Resp> MailboxEnd<Req, Resp>
where
    Req: Serialize + Unpin + 'static,
    Resp: DeserializeOwned + Unpin + 'static,
{
    /// Starts the [`Mailbox`] actor in the current actix System, with room for `capacity`
    /// waiting requests (at least 1).
    ///
    /// # Panics
    ///
    /// Outside an actix System.
    pub fn start(self, capacity: usize) -> Addr<Mailbox<Req, Resp>> {
        let capacity = capacity.max(1);
        let sock = self
            .sock
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixStream::from_std(self.sock));
        Mailbox::create(move |ctx| {
            ctx.set_mailbox_capacity(capacity);
            Mailbox {
                sock: sock.map_err(|e| e.to_string()).ok(),
                broken: None,
                _types: PhantomData,
            }
        })
    }
}

/// The actor that forwards [`Call`]s to a worker process and returns its replies.
pub struct Mailbox<Req, Resp> {
    /// `None` while a request is in flight (the future holds it), or once gone.
    sock: Option<tokio::net::UnixStream>,
    broken: Option<DecodeError>,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> fmt::Debug for Mailbox<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailbox")
            .field("connected", &self.sock.is_some())
            .field("broken", &self.broken)
            .finish()
    }
}

impl<Req: Unpin + 'static, Resp: Unpin + 'static> Actor for Mailbox<Req, Resp> {
    type Context = Context<Self>;
}

/// One request out, one reply back.
async fn round_trip<Resp: DeserializeOwned>(
    sock: &mut tokio::net::UnixStream,
    request: Vec<u8>,
) -> Result<Resp, MailboxError> {
    let gone = |e: io::Error| match e.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset => MailboxError::WorkerGone,
        _ => MailboxError::Io(e),
    };
    sock.write_all(&request).await.map_err(gone)?;
    let mut header = [0u8; HEADER_LEN];
    sock.read_exact(&mut header).await.map_err(gone)?;
    let len = u32::from_be_bytes(header) as usize;
    if len > DEFAULT_MAX_FRAME_LEN {
        return Err(MailboxError::Broken(DecodeError::Oversized {
            len,
            max: DEFAULT_MAX_FRAME_LEN,
        }));
    }
    let mut payload = vec![0u8; len];
    sock.read_exact(&mut payload)
        .await
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => MailboxError::Broken(DecodeError::Truncated {
                expected: HEADER_LEN + len,
                got: HEADER_LEN,
            }),
            _ => gone(e),
        })?;
    decode_value(&payload).map_err(|source| MailboxError::Decode {
        expected: std::any::type_name::<Resp>(),
        source,
    })
}

impl<Req, Resp> Handler<Call<Req, Resp>> for Mailbox<Req, Resp>
where
    Req: Serialize + Unpin + 'static,
    Resp: DeserializeOwned + Unpin + 'static,
{
    type Result = AtomicResponse<Self, Result<Resp, MailboxError>>;

    fn handle(&mut self, call: Call<Req, Resp>, _: &mut Context<Self>) -> Self::Result {
        let ready = |r| AtomicResponse::new(Box::pin(actix::fut::ready(r)));
        if let Some(e) = &self.broken {
            return ready(Err(MailboxError::Broken(e.clone())));
        }
        let mut frame = vec![0u8; HEADER_LEN];
        let payload = match encode_value(&call.request) {
            Ok(p) => p,
            Err(e) => return ready(Err(MailboxError::Serialize(e))),
        };
        if payload.len() > DEFAULT_MAX_FRAME_LEN {
            return ready(Err(MailboxError::TooLarge { len: payload.len() }));
        }
        frame[..HEADER_LEN].copy_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(&payload);
        let Some(mut sock) = self.sock.take() else {
            return ready(Err(MailboxError::WorkerGone));
        };
        // Atomic: the actor handles nothing else until the reply is in, so requests are
        // served in order and the rest wait in the bounded mailbox.
        AtomicResponse::new(Box::pin(
            async move {
                let result = round_trip::<Resp>(&mut sock, frame).await;
                (sock, result)
            }
            .into_actor(self)
            .map(|(sock, result), act, _| {
                match &result {
                    Err(MailboxError::WorkerGone) | Err(MailboxError::Io(_)) => {}
                    Err(MailboxError::Broken(e)) => act.broken = Some(e.clone()),
                    _ => act.sock = Some(sock),
                }
                result
            }),
        ))
    }
}

/// The child's side: answers requests with `handler` until the parent closes the mailbox.
/// Returns how many requests were served.
///
/// ```
/// use procvisor::mailbox;
/// let (end, child) = mailbox::channel::<u32, u32>()?;
/// drop(end); // the parent went away: serve returns at once
/// assert_eq!(mailbox::serve(child, |x: u32| x + 1)?, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn serve<Req, Resp>(
    mut conn: Connection,
    mut handler: impl FnMut(Req) -> Resp,
) -> Result<u64, ConnectionError>
where
    Req: DeserializeOwned,
    Resp: Serialize,
{
    let mut served = 0;
    loop {
        let request: Req = match conn.recv() {
            Ok(r) => r,
            Err(ConnectionError::Eof) => return Ok(served),
            Err(e) => return Err(e),
        };
        conn.send(&handler(request))?;
        served += 1;
    }
}

impl<Req, Resp> MailboxEnd<Req, Resp> {
    /// The address-free form, for tests and tools: sends one request and waits for the
    /// reply on this thread.
    ///
    /// ```
    /// let (mut end, child) = procvisor::mailbox::channel::<u8, u8>()?;
    /// let t = std::thread::spawn(move || procvisor::mailbox::serve(child, |x: u8| x * 2));
    /// assert_eq!(end.call_blocking(&21)?, 42);
    /// drop(end);
    /// t.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn call_blocking(&mut self, request: &Req) -> Result<Resp, MailboxError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let mut conn = Connection::from(self.sock.try_clone().map_err(MailboxError::Io)?);
        conn.send(request).map_err(connection_error)?;
        conn.recv().map_err(connection_error)
    }
}

fn connection_error(e: ConnectionError) -> MailboxError {
    match e {
        ConnectionError::Eof => MailboxError::WorkerGone,
        ConnectionError::TooLarge { len, .. } => MailboxError::TooLarge { len },
        ConnectionError::Serialize(e) => MailboxError::Serialize(e),
        ConnectionError::Decode { expected, source } => MailboxError::Decode { expected, source },
        ConnectionError::Broken(e) => MailboxError::Broken(e),
        ConnectionError::Io(e) if e.kind() == io::ErrorKind::BrokenPipe => MailboxError::WorkerGone,
        ConnectionError::Io(e) => MailboxError::Io(e),
        other => MailboxError::Io(io::Error::other(other.to_string())),
    }
}
