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
use std::io::{self, Read, Write};
use std::marker::PhantomData;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::any::TypeId;

use actix::{
    Actor, ActorFutureExt, Addr, AtomicResponse, Context, Handler, Message, ResponseFuture,
    WrapFuture,
};
use procvisor_protocol::frame::decode_value;
use procvisor_protocol::{
    DEFAULT_MAX_FRAME_LEN, DecodeError, EncodeError, HEADER_LEN, encode_value,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::connection::{Connection, ConnectionError};
use crate::worker::Worker;

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
    /// The supervised worker behind the mailbox is restarting (and the mailbox was built to
    /// fail fast, or the wait for it timed out).
    Restarting,
    /// A [`Call`] sent to a [`Worker`] that has no mailbox of its request and reply types
    /// attached ([`Process::attach_mailbox`](crate::Process::attach_mailbox)).
    NoMailbox {
        /// The request type.
        request: &'static str,
        /// The reply type.
        reply: &'static str,
    },
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
            MailboxError::Restarting => f.write_str("the worker is restarting"),
            MailboxError::NoMailbox { request, reply } => write!(
                f,
                "the worker has no mailbox taking {request} and answering {reply}"
            ),
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
        let sock = Wire::new(self.sock);
        Mailbox::create(move |ctx| {
            ctx.set_mailbox_capacity(capacity);
            Mailbox {
                sock: sock.map_err(|e| e.to_string()).ok(),
                generation: 0,
                link: None,
                broken: None,
                _types: PhantomData,
            }
        })
    }

    /// The socket, for a supervised worker's [`Link`].
    pub(crate) fn into_socket(self) -> UnixStream {
        self.sock
    }
}

/// What a call to a supervised worker's mailbox does while the worker restarts.
///
/// ```
/// use std::time::Duration;
/// use procvisor::mailbox::WhileRestarting;
/// let policy = WhileRestarting::Wait(Duration::from_secs(5));
/// assert_ne!(policy, WhileRestarting::Fail);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhileRestarting {
    /// Wait (in the bounded mailbox) up to this long for the new worker, then fail with
    /// [`MailboxError::Restarting`].
    Wait(Duration),
    /// Fail at once with [`MailboxError::Restarting`].
    Fail,
}

#[derive(Debug, Default)]
struct LinkState {
    sock: Option<UnixStream>,
    generation: u64,
    closed: bool,
}

/// The link from one stable [`Mailbox`] to whichever process currently serves it: a
/// supervision tree attaches the socket of each new worker it starts.
#[derive(Debug)]
pub(crate) struct Link {
    state: Mutex<LinkState>,
    notify: tokio::sync::Notify,
    policy: WhileRestarting,
}

impl Link {
    pub(crate) fn new(policy: WhileRestarting) -> Arc<Link> {
        Arc::new(Link {
            state: Mutex::new(LinkState::default()),
            notify: tokio::sync::Notify::new(),
            policy,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new worker serves the mailbox from now on.
    pub(crate) fn attach(&self, sock: UnixStream) {
        let mut st = self.lock();
        st.sock = Some(sock);
        st.generation += 1;
        drop(st);
        self.notify.notify_waiters();
    }

    /// No worker will serve it again: waiting and later calls fail with `WorkerGone`.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.sock = None;
        drop(st);
        self.notify.notify_waiters();
    }

    fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// The newest worker's socket, waiting for one as the policy says.
    async fn next(&self) -> Result<(Wire, u64), MailboxError> {
        let deadline = match self.policy {
            WhileRestarting::Wait(t) => Some(tokio::time::Instant::now() + t),
            WhileRestarting::Fail => None,
        };
        loop {
            let notified = self.notify.notified();
            {
                let mut st = self.lock();
                if st.closed {
                    return Err(MailboxError::WorkerGone);
                }
                if let Some(sock) = st.sock.take() {
                    let generation = st.generation;
                    let sock = Wire::new(sock).map_err(MailboxError::Io)?;
                    return Ok((sock, generation));
                }
            }
            let Some(deadline) = deadline else {
                return Err(MailboxError::Restarting);
            };
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(MailboxError::Restarting);
            }
        }
    }
}

impl<Req, Resp> Mailbox<Req, Resp>
where
    Req: Serialize + Unpin + 'static,
    Resp: DeserializeOwned + Unpin + 'static,
{
    /// A mailbox served by whichever worker `link` attaches, on procvisor's runtime.
    pub(crate) fn linked(link: Arc<Link>, capacity: usize) -> Addr<Self> {
        let capacity = capacity.max(1);
        let rt = crate::runtime::get();
        Mailbox::start_in_arbiter(&rt.arbiter, move |ctx| {
            ctx.set_mailbox_capacity(capacity);
            Mailbox {
                sock: None,
                generation: 0,
                link: Some(link),
                broken: None,
                _types: PhantomData,
            }
        })
    }
}

/// The actor that forwards [`Call`]s to a worker process and returns its replies.
pub struct Mailbox<Req, Resp> {
    /// `None` while a request is in flight (the future holds it), or once gone.
    sock: Option<Wire>,
    /// The link generation `sock` came from.
    generation: u64,
    /// For a supervised worker: where the next worker's socket comes from.
    link: Option<Arc<Link>>,
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

/// A mailbox socket in the reactor, watched for readability only.
///
/// Requests and replies alternate, so a request always finds room in the socket's buffer
/// and is written without waiting. Watching for writability too (as `tokio::net::UnixStream`
/// does) would wake the mailbox's thread for nothing each time the child reads a request
/// and so frees that room: one more wake-up and context switch per request. Should a long
/// request not fit, its writer waits for room on a duplicate descriptor watched for
/// writability alone, for as long as that takes.
#[derive(Debug)]
pub(crate) struct Wire {
    fd: AsyncFd<UnixStream>,
}

impl Wire {
    fn new(sock: UnixStream) -> io::Result<Wire> {
        sock.set_nonblocking(true)?;
        Ok(Wire {
            fd: crate::sys::register_socket(sock, Interest::READABLE)?,
        })
    }

    async fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.fd.get_ref().write(buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let room = crate::sys::register_socket(
                        self.fd.get_ref().try_clone()?,
                        Interest::WRITABLE,
                    )?;
                    room.writable().await?.clear_ready();
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut ready = self.fd.readable().await?;
            match ready.try_io(|fd| fd.get_ref().read(buf)) {
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(result) => return result,
                Err(_would_block) => {}
            }
        }
    }

    async fn read_exact(&mut self, mut buf: &mut [u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read(buf).await? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => buf = &mut buf[n..],
            }
        }
        Ok(())
    }
}

/// How a round trip failed.
enum Trip {
    /// The request never left: the worker was gone before it was written.
    NotSent,
    Failed(MailboxError),
}

/// One request out, one reply back.
async fn round_trip<Resp: DeserializeOwned>(sock: &mut Wire, request: &[u8]) -> Result<Resp, Trip> {
    let gone = |e: io::Error| match e.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset => MailboxError::WorkerGone,
        _ => MailboxError::Io(e),
    };
    sock.write_all(request).await.map_err(|e| match gone(e) {
        MailboxError::WorkerGone => Trip::NotSent,
        other => Trip::Failed(other),
    })?;
    // One read takes a small reply whole (the child writes it with one write); a longer
    // one is finished with `read_exact`.
    let mut head = [0u8; REPLY_READ];
    let mut got = 0;
    while got < HEADER_LEN {
        match sock.read(&mut head[got..]).await {
            Ok(0) if got == 0 => return Err(Trip::Failed(MailboxError::WorkerGone)),
            Ok(0) => {
                return Err(Trip::Failed(MailboxError::Broken(truncated(
                    HEADER_LEN, got,
                ))));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Trip::Failed(gone(e))),
        }
    }
    let len = u32::from_be_bytes(head[..HEADER_LEN].try_into().expect("4 bytes")) as usize;
    if len > DEFAULT_MAX_FRAME_LEN {
        return Err(Trip::Failed(MailboxError::Broken(DecodeError::Oversized {
            len,
            max: DEFAULT_MAX_FRAME_LEN,
        })));
    }
    let total = HEADER_LEN + len;
    if got > total {
        // Requests and replies alternate: bytes past the reply are a frame nobody asked for.
        return Err(Trip::Failed(MailboxError::Broken(DecodeError::Malformed {
            reason: format!("{} bytes after the reply", got - total),
        })));
    }
    let decoded = if got == total {
        decode_value(&head[HEADER_LEN..total])
    } else {
        let mut payload = Vec::with_capacity(len);
        payload.extend_from_slice(&head[HEADER_LEN..got]);
        payload.resize(len, 0);
        sock.read_exact(&mut payload[got - HEADER_LEN..])
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => MailboxError::Broken(truncated(total, got)),
                _ => gone(e),
            })
            .map_err(Trip::Failed)?;
        decode_value(&payload)
    };
    decoded.map_err(|source| {
        Trip::Failed(MailboxError::Decode {
            expected: std::any::type_name::<Resp>(),
            source,
        })
    })
}

/// Bytes the first read of a reply asks for.
const REPLY_READ: usize = 512;

/// The stream ended after `got` of the `expected` bytes of a reply.
fn truncated(expected: usize, got: usize) -> DecodeError {
    DecodeError::Truncated { expected, got }
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
        // A newer worker than the one this socket reaches: drop the old one.
        if let Some(link) = &self.link {
            if link.generation() != self.generation {
                self.sock = None;
            }
        }
        let current = self.sock.take().map(|s| (s, self.generation));
        if current.is_none() && self.link.is_none() {
            return ready(Err(MailboxError::WorkerGone));
        }
        let link = self.link.clone();
        // Atomic: the actor handles nothing else until the reply is in, so requests are
        // served in order and the rest wait in the bounded mailbox.
        AtomicResponse::new(Box::pin(
            async move {
                let mut current = current;
                loop {
                    let (mut sock, generation) = match current.take() {
                        Some(c) => c,
                        None => match &link {
                            Some(link) => match link.next().await {
                                Ok(c) => c,
                                Err(e) => return (None, Err(e)),
                            },
                            None => return (None, Err(MailboxError::WorkerGone)),
                        },
                    };
                    match round_trip::<Resp>(&mut sock, &frame).await {
                        Ok(v) => return (Some((sock, generation)), Ok(v)),
                        // The worker died before the request left: for a supervised one,
                        // its successor gets it.
                        Err(Trip::NotSent) if link.is_some() => continue,
                        Err(Trip::NotSent) => return (None, Err(MailboxError::WorkerGone)),
                        Err(Trip::Failed(e)) => return (Some((sock, generation)), Err(e)),
                    }
                }
            }
            .into_actor(self)
            .map(|(sock, result), act, _| {
                match &result {
                    Err(MailboxError::WorkerGone)
                    | Err(MailboxError::Io(_))
                    | Err(MailboxError::Restarting) => {}
                    Err(MailboxError::Broken(e)) if act.link.is_none() => {
                        act.broken = Some(e.clone())
                    }
                    // A supervised worker that broke the protocol is not trusted again;
                    // its successor gets a fresh socket.
                    Err(MailboxError::Broken(_)) => {}
                    _ => {
                        if let Some((sock, generation)) = sock {
                            act.sock = Some(sock);
                            act.generation = generation;
                        }
                    }
                }
                result
            }),
        ))
    }
}

/// Attaches a mailbox to a [`Worker`], which from then on forwards every
/// [`Call<Req, Resp>`](Call) it receives to it: an application actor then messages the
/// child through the child's own Worker address. Sent by
/// [`Process::attach_mailbox`](crate::Process::attach_mailbox).
pub struct AttachMailbox<Req, Resp> {
    end: MailboxEnd<Req, Resp>,
    capacity: usize,
}

impl<Req, Resp> fmt::Debug for AttachMailbox<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttachMailbox")
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl<Req, Resp> AttachMailbox<Req, Resp> {
    /// The message attaching `end`, with room for `capacity` waiting requests.
    ///
    /// ```
    /// let (end, _child) = procvisor::mailbox::channel::<u64, u64>()?;
    /// let _attach = procvisor::mailbox::AttachMailbox::new(end, 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(end: MailboxEnd<Req, Resp>, capacity: usize) -> Self {
        AttachMailbox { end, capacity }
    }
}

impl<Req: 'static, Resp: 'static> Message for AttachMailbox<Req, Resp> {
    type Result = ();
}

impl<Req, Resp> Handler<AttachMailbox<Req, Resp>> for Worker
where
    Req: Serialize + Unpin + Send + 'static,
    Resp: DeserializeOwned + Unpin + Send + 'static,
{
    type Result = ();

    fn handle(&mut self, msg: AttachMailbox<Req, Resp>, _: &mut Context<Self>) {
        let addr = msg.end.start(msg.capacity);
        self.mailboxes
            .insert(TypeId::of::<(Req, Resp)>(), Box::new(addr));
    }
}

/// Detaches a [`Worker`]'s mailbox of these types: once the last address to it is gone,
/// the child's [`serve`] loop sees the end of its stream and returns. Sent by
/// [`Process::detach_mailbox`](crate::Process::detach_mailbox).
pub struct DetachMailbox<Req, Resp>(PhantomData<fn(Req) -> Resp>);

impl<Req, Resp> fmt::Debug for DetachMailbox<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DetachMailbox")
    }
}

impl<Req, Resp> Default for DetachMailbox<Req, Resp> {
    fn default() -> Self {
        DetachMailbox(PhantomData)
    }
}

impl<Req: 'static, Resp: 'static> Message for DetachMailbox<Req, Resp> {
    type Result = ();
}

impl<Req: 'static, Resp: 'static> Handler<DetachMailbox<Req, Resp>> for Worker {
    type Result = ();

    fn handle(&mut self, _: DetachMailbox<Req, Resp>, _: &mut Context<Self>) {
        self.mailboxes.remove(&TypeId::of::<(Req, Resp)>());
    }
}

impl<Req, Resp> Handler<Call<Req, Resp>> for Worker
where
    Req: Serialize + Unpin + Send + 'static,
    Resp: DeserializeOwned + Unpin + Send + 'static,
{
    type Result = ResponseFuture<Result<Resp, MailboxError>>;

    fn handle(&mut self, call: Call<Req, Resp>, _: &mut Context<Self>) -> Self::Result {
        let mailbox = self
            .mailboxes
            .get(&TypeId::of::<(Req, Resp)>())
            .and_then(|m| m.downcast_ref::<Addr<Mailbox<Req, Resp>>>())
            .cloned();
        Box::pin(async move {
            let Some(mailbox) = mailbox else {
                return Err(MailboxError::NoMailbox {
                    request: std::any::type_name::<Req>(),
                    reply: std::any::type_name::<Resp>(),
                });
            };
            // The mailbox's own bound applies: this waits while it is full.
            mailbox
                .send(call)
                .await
                .unwrap_or(Err(MailboxError::WorkerGone))
        })
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
