//! The `Connection` benches: procvisor's `pipe(true)` between the bench process and one
//! `forkserver` child, CPython's `multiprocessing.Pipe` (`connection_bench.py`), and the
//! OS floor: raw `read`/`write` over a Unix socketpair to a forked child.
//!
//! - `connection_rtt_small`: the parent sends `(i, TEXT)` (a `u64` and a 32-character
//!   string), the child receives it and sends it back; µs per round trip. Floor
//!   `socketpair_rtt`: the child echoes frames of the same length as procvisor's (4-byte
//!   header + msgpack), read and written raw.
//! - `connection_oneway_small`: the parent sends a count `n`, then `n` messages `(i, TEXT)`;
//!   the child receives and counts them, then replies once with the count; messages per
//!   second from the first send to the reply. Floor `socketpair_write_small`: one `write`
//!   per message of procvisor's frame length; the child reads and discards, counting bytes,
//!   then replies.
//! - `connection_oneway_small_buffered`: as `connection_oneway_small`, the messages sent
//!   through a [`BufferedSender`](procvisor::connection::BufferedSender) (one write per
//!   32 KiB of frames, and a `flush` at the end of the batch); CPython has nothing of the
//!   kind, so its column is its `send` per message (the same as `connection_oneway_small`).
//!   Floor `socketpair_write_batched`: the same frames, written raw in chunks of the same
//!   size; the child reads and discards them.
//! - `connection_oneway_1mib`: as above with 1 MiB byte payloads (`send_bytes` /
//!   `recv_bytes`); GB/s of payload (10⁹ bytes per second). Floor `socketpair_write_1mib`:
//!   one 1 MiB `write` per message, read into a 1 MiB buffer.
//!
//! One child of each kind serves every repetition of a bench; each repetition times one
//! floor batch and then one procvisor batch, so that a ratio compares figures taken under
//! the same load. Both are warmed up with an unmeasured batch first.
//!
//! # Placement
//!
//! Where the two ends run decides these figures more than any implementation does, so the
//! benches pin them (procvisor, CPython and the floor alike; see [`Placement`]): for the
//! round trip both ends share one CPU (the wake-up of a sleeping CPU costs 20–60 µs on a
//! VM, and unpinned runs flip between that and the 3–4 µs of a same-CPU hand-off); for the
//! one-way benches the sender and the receiver run on two CPUs (a 1 MiB stream between two
//! ends on one CPU stays in its cache and runs about three times faster). With one usable
//! CPU, everything runs on it.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::libc;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use procvisor::connection::{BufferedSender, Connection, pipe};
use procvisor::{Process, StartMethod};

use crate::cpus::allowed_cpus;
pub(crate) use crate::cpus::{PinSelf, pin};
use crate::measure::{self, Side};
use crate::report::Figure;
use crate::{Config, figure, warm_up};

/// The string of every small message: 32 characters.
pub(crate) const TEXT: &str = "abcdefghijklmnopqrstuvwxyz012345";

/// A small message as the child receives it.
pub(crate) type Small = (u64, String);

/// The size of a large message.
const MIB: usize = 1 << 20;

/// The largest frame the `socketpair_rtt` child echoes (its buffer is on its stack).
const ECHO_MAX: usize = 256;

/// How long a child may take to end once its connection is closed.
pub(crate) const END_DEADLINE: Duration = Duration::from_secs(10);

/// The benches, each with the name of its OS floor.
pub(crate) const BENCHES: [(&str, &str); 4] = [
    ("connection_rtt_small", "socketpair_rtt"),
    ("connection_oneway_small", "socketpair_write_small"),
    ("connection_oneway_1mib", "socketpair_write_1mib"),
    (
        "connection_oneway_small_buffered",
        "socketpair_write_batched",
    ),
];

/// The start method of the connection benches, for procvisor and CPython alike.
pub(crate) const METHOD: StartMethod = StartMethod::ForkServer;

/// The CPUs of the two ends of a bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placement {
    /// The CPU of this process's main thread (the parent end).
    pub(crate) parent: usize,
    /// The CPU of the child.
    pub(crate) child: usize,
}

impl Placement {
    /// The placement of `bench`'s ends among the CPUs this thread may run on; `None` when
    /// the affinity cannot be read (nothing is pinned then).
    pub(crate) fn of(bench: &str) -> Option<Placement> {
        let kind = Kind::of(bench).ok()?;
        let cpus = allowed_cpus().ok()?;
        let first = *cpus.first()?;
        let second = cpus.get(1).copied().unwrap_or(first);
        Some(match kind {
            Kind::Rtt => Placement {
                parent: first,
                child: first,
            },
            Kind::OnewaySmall | Kind::OnewayMib | Kind::OnewayBuffered => Placement {
                parent: first,
                child: second,
            },
        })
    }
}

/// The arguments that give `connection_bench.py` the placement of `bench`.
pub(crate) fn cpython_args(bench: &str) -> Vec<String> {
    match Placement::of(bench) {
        Some(p) => vec!["--cpus".to_owned(), format!("{},{}", p.parent, p.child)],
        None => Vec::new(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Rtt,
    OnewaySmall,
    OnewayMib,
    OnewayBuffered,
}

impl Kind {
    fn of(bench: &str) -> Result<Kind, String> {
        match bench {
            "connection_rtt_small" => Ok(Kind::Rtt),
            "connection_oneway_small" => Ok(Kind::OnewaySmall),
            "connection_oneway_1mib" => Ok(Kind::OnewayMib),
            "connection_oneway_small_buffered" => Ok(Kind::OnewayBuffered),
            _ => Err(format!("unknown connection bench {bench:?}")),
        }
    }

    fn bench(self) -> &'static str {
        BENCHES[self as usize].0
    }

    fn floor(self) -> &'static str {
        BENCHES[self as usize].1
    }

    fn unit(self) -> &'static str {
        match self {
            Kind::Rtt => "us",
            Kind::OnewaySmall | Kind::OnewayBuffered => "msgs/s",
            Kind::OnewayMib => "GB/s",
        }
    }

    /// Messages (or round trips) per batch.
    pub(crate) fn batch(self, cfg: &Config) -> usize {
        match (self, cfg.quick) {
            (Kind::Rtt, false) => 20_000,
            (Kind::Rtt, true) => 5_000,
            (Kind::OnewaySmall, false) => 200_000,
            (Kind::OnewaySmall, true) => 50_000,
            (Kind::OnewayMib, false) => 2_000,
            (Kind::OnewayMib, true) => 300,
            (Kind::OnewayBuffered, false) => 1_000_000,
            (Kind::OnewayBuffered, true) => 200_000,
        }
    }

    /// The figure of a batch of `n` that took `elapsed`.
    fn value(self, n: usize, elapsed: Duration) -> f64 {
        let s = elapsed.as_secs_f64();
        match self {
            Kind::Rtt => s * 1e6 / n as f64,
            Kind::OnewaySmall | Kind::OnewayBuffered => n as f64 / s,
            Kind::OnewayMib => (n * MIB) as f64 / s / 1e9,
        }
    }
}

/// The batch sizes, for the notes under the table.
pub(crate) fn note(cfg: &Config) -> String {
    let place = |bench: &str| match Placement::of(bench) {
        Some(p) if p.parent == p.child => format!("both ends on CPU {}", p.parent),
        Some(p) => format!("parent on CPU {}, child on CPU {}", p.parent, p.child),
        None => "unpinned".to_owned(),
    };
    format!(
        "connection benches ({}, one child per bench; CPython uses the same batches and \
         placement): rtt {} round trips ({}), oneway_small {} messages of (u64, 32-char \
         string), oneway_1mib {} × 1 MiB per repetition ({}); oneway_small_buffered {} \
         messages (CPython: its oneway_small batch, sent with send())",
        METHOD.as_str(),
        Kind::Rtt.batch(cfg),
        place(Kind::Rtt.bench()),
        Kind::OnewaySmall.batch(cfg),
        Kind::OnewayMib.batch(cfg),
        place(Kind::OnewayMib.bench()),
        Kind::OnewayBuffered.batch(cfg),
    )
}

/// `bench` for procvisor, with its floor measured in the same repetitions.
pub(crate) fn bench(cfg: &Config, bench: &str) -> Result<Vec<Figure>, String> {
    let kind = Kind::of(bench)?;
    warm_up(METHOD)?;
    let n = kind.batch(cfg);
    let place = Placement::of(bench);
    let _pinned = place.map(|p| PinSelf::new(p.parent)).transpose()?;
    // The floor child is forked first, so that it holds no copy of procvisor's sockets.
    let mut floor = Floor::new(kind, n, place)?;
    let mut pv = PvChild::start(kind)?;
    if let Some(p) = place {
        let pid = pv.process.pid().map_err(|e| e.to_string())?;
        pin(pid.ok_or("no pid after start")?, p.child)?;
    }
    let (values, floor_values) = measure::alternate_sides(cfg.reps(), n, &mut floor, &mut pv)?;
    Ok(vec![
        figure(
            kind.bench(),
            "procvisor",
            METHOD.as_str(),
            kind.unit(),
            values,
        ),
        figure(kind.floor(), "os", "-", kind.unit(), floor_values),
    ])
}

/// The floor of `bench` on its own (the filter names the floor but not the bench).
pub(crate) fn floor_only(cfg: &Config, bench: &str) -> Result<Figure, String> {
    let kind = Kind::of(bench)?;
    let n = kind.batch(cfg);
    let place = Placement::of(bench);
    let _pinned = place.map(|p| PinSelf::new(p.parent)).transpose()?;
    let mut floor = Floor::new(kind, n, place)?;
    let values = measure::repeat_side(cfg.reps(), n, &mut floor)?;
    Ok(figure(kind.floor(), "os", "-", kind.unit(), values))
}

// ---------------------------------------------------------------------------------------
// procvisor
// ---------------------------------------------------------------------------------------

/// `connection_rtt_small`: sends back every message until the end of the stream.
fn echo(mut c: Connection) {
    while let Ok(v) = c.recv::<Small>() {
        c.send(&v).expect("echo: send");
    }
}

/// `connection_oneway_small`: receives a count `n`, then `n` messages, and replies with
/// how many arrived; until the end of the stream.
fn count_small(mut c: Connection) {
    while let Ok(n) = c.recv::<u64>() {
        let mut count = 0u64;
        for _ in 0..n {
            let _: Small = c.recv().expect("count_small: recv");
            count += 1;
        }
        c.send(&count).expect("count_small: send");
    }
}

/// `connection_oneway_1mib`: receives a count `n`, then `n` byte messages, and replies
/// with their total length; until the end of the stream.
fn count_bytes(mut c: Connection) {
    while let Ok(n) = c.recv::<u64>() {
        let mut total = 0u64;
        for _ in 0..n {
            total += c.recv_bytes().expect("count_bytes: recv_bytes").len() as u64;
        }
        c.send(&total).expect("count_bytes: send");
    }
}

/// A procvisor child and the parent's end of its connection.
pub(crate) struct PvChild {
    kind: Kind,
    pub(crate) process: Process<()>,
    conn: Option<Connection>,
    payload: Vec<u8>,
}

impl PvChild {
    pub(crate) fn start(kind: Kind) -> Result<PvChild, String> {
        let (conn, child_end) = pipe(true).map_err(|e| format!("pipe: {e}"))?;
        let process = match kind {
            Kind::Rtt => Process::new(echo, child_end),
            Kind::OnewaySmall | Kind::OnewayBuffered => Process::new(count_small, child_end),
            Kind::OnewayMib => Process::new(count_bytes, child_end),
        };
        let mut child = PvChild {
            kind,
            process: process.with_start_method(METHOD),
            conn: Some(conn),
            payload: if kind == Kind::OnewayMib {
                vec![0xa5; MIB]
            } else {
                Vec::new()
            },
        };
        child.process.start().map_err(|e| format!("start: {e}"))?;
        Ok(child)
    }
}

impl Side for PvChild {
    /// One timed batch of `n` messages (or round trips), in the bench's unit.
    fn batch(&mut self, n: usize) -> Result<f64, String> {
        let conn = self.conn.as_mut().ok_or("connection closed")?;
        let err = |what: &str, e: procvisor::ConnectionError| format!("{what}: {e}");
        let t0 = Instant::now();
        match self.kind {
            Kind::Rtt => {
                for i in 0..n as u64 {
                    conn.send(&(i, TEXT)).map_err(|e| err("send", e))?;
                    let (j, _): Small = conn.recv().map_err(|e| err("recv", e))?;
                    if j != i {
                        return Err(format!("echo sent back {j} for {i}"));
                    }
                }
            }
            Kind::OnewaySmall => {
                conn.send(&(n as u64)).map_err(|e| err("send", e))?;
                for i in 0..n as u64 {
                    conn.send(&(i, TEXT)).map_err(|e| err("send", e))?;
                }
                let count: u64 = conn.recv().map_err(|e| err("recv", e))?;
                if count != n as u64 {
                    return Err(format!("the child counted {count} messages of {n}"));
                }
            }
            Kind::OnewayBuffered => {
                conn.send(&(n as u64)).map_err(|e| err("send", e))?;
                let mut tx = conn
                    .buffered_sender()
                    .map_err(|e| err("buffered_sender", e))?;
                for i in 0..n as u64 {
                    tx.send(&(i, TEXT)).map_err(|e| err("send", e))?;
                }
                tx.flush().map_err(|e| err("flush", e))?;
                drop(tx);
                let count: u64 = conn.recv().map_err(|e| err("recv", e))?;
                if count != n as u64 {
                    return Err(format!("the child counted {count} messages of {n}"));
                }
            }
            Kind::OnewayMib => {
                conn.send(&(n as u64)).map_err(|e| err("send", e))?;
                for _ in 0..n {
                    conn.send_bytes(&self.payload)
                        .map_err(|e| err("send_bytes", e))?;
                }
                let total: u64 = conn.recv().map_err(|e| err("recv", e))?;
                if total != (n * MIB) as u64 {
                    return Err(format!("the child received {total} bytes of {}", n * MIB));
                }
            }
        }
        Ok(self.kind.value(n, t0.elapsed()))
    }

    /// Closes the connection (the child ends on the end of the stream) and joins.
    fn end(&mut self) -> Result<(), String> {
        self.conn = None;
        measure::join_told(&self.process, END_DEADLINE, "the connection's close")
    }
}

// ---------------------------------------------------------------------------------------
// OS floor
// ---------------------------------------------------------------------------------------

/// A forked child at the other end of a socketpair, and what the parent writes to it.
pub(crate) struct Floor {
    kind: Kind,
    sock: Option<UnixStream>,
    pid: Option<Pid>,
    /// One message: a frame of procvisor's length (small kinds) or 1 MiB.
    msg: Vec<u8>,
    /// `connection_oneway_small_buffered`: as many copies of `msg` as one buffered write
    /// of procvisor holds (empty for the other kinds).
    chunk: Vec<u8>,
    /// Where the parent reads echoed frames.
    rbuf: Vec<u8>,
}

/// What a floor child does.
#[derive(Debug, Clone, Copy)]
enum FloorMode {
    /// Reads requests of `read` bytes and answers each with `write` bytes (the first
    /// `write` bytes of its buffer; the request's own bytes when the lengths are equal).
    Answer { read: usize, write: usize },
    /// Reads an 8-byte byte count, reads and discards that many bytes, writes the count.
    Sink,
}

impl Floor {
    /// A floor for a request/response round trip (`Kind::Rtt`'s batches): the child reads
    /// each `request` and answers with `reply_len` bytes. Used by the manager rows, whose
    /// requests and answers differ in length.
    pub(crate) fn request_reply(
        request: Vec<u8>,
        reply_len: usize,
        place: Option<Placement>,
    ) -> Result<Floor, String> {
        Floor::fork(Kind::Rtt, request, reply_len, place)
    }

    /// Forks the floor child of `kind`, for batches of up to `n` messages, and pins it to
    /// the child's CPU of `place`.
    pub(crate) fn new(kind: Kind, n: usize, place: Option<Placement>) -> Result<Floor, String> {
        let msg = match kind {
            // procvisor's frame of a message from the middle of a batch: the msgpack
            // length of `i` grows with it (1, 3 then 5 bytes), the string's does not.
            Kind::Rtt | Kind::OnewaySmall | Kind::OnewayBuffered => {
                let payload = rmp_serde::to_vec_named(&((n / 2) as u64, TEXT))
                    .map_err(|e| format!("encode: {e}"))?;
                let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
                frame.extend_from_slice(&payload);
                frame
            }
            Kind::OnewayMib => vec![0xa5; MIB],
        };
        let reply_len = msg.len();
        Floor::fork(kind, msg, reply_len, place)
    }

    /// Forks the floor child of `kind` for messages `msg`; a `Kind::Rtt` child answers each
    /// with `reply_len` bytes.
    fn fork(
        kind: Kind,
        msg: Vec<u8>,
        reply_len: usize,
        place: Option<Placement>,
    ) -> Result<Floor, String> {
        let mode = match kind {
            Kind::Rtt => FloorMode::Answer {
                read: msg.len(),
                write: reply_len,
            },
            _ => FloorMode::Sink,
        };
        if msg.len().max(reply_len) > ECHO_MAX && matches!(mode, FloorMode::Answer { .. }) {
            return Err(format!(
                "a round-trip frame of {} bytes is too long",
                msg.len().max(reply_len)
            ));
        }
        // The sink's buffer, allocated here: the child must not allocate.
        let mut sink_buf = match mode {
            FloorMode::Sink => vec![0u8; MIB],
            FloorMode::Answer { .. } => Vec::new(),
        };
        let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
        let (our_fd, their_fd) = (ours.as_raw_fd(), theirs.as_raw_fd());
        let buf = sink_buf.as_mut_ptr();
        let buf_len = sink_buf.len();
        // SAFETY: this process has other threads (procvisor's runtime), so the child may
        // only call async-signal-safe functions until it exits: it calls `close`, `read`,
        // `write` and `_exit`, on a buffer of its stack or on `sink_buf`, allocated
        // before the fork; it allocates nothing, takes no lock and never returns into
        // Rust code that could (`floor_child` ends in `_exit`).
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                // SAFETY: `buf` points to `buf_len` writable bytes (`sink_buf`, which
                // this copy of the process never frees); the descriptors are open.
                unsafe { floor_child(their_fd, our_fd, mode, buf, buf_len) }
            }
            Ok(ForkResult::Parent { child }) => {
                drop(theirs);
                drop(sink_buf);
                let rbuf = vec![0u8; if kind == Kind::Rtt { reply_len } else { 8 }];
                let mut chunk = Vec::new();
                if kind == Kind::OnewayBuffered {
                    while chunk.len() < BufferedSender::FLUSH_AT {
                        chunk.extend_from_slice(&msg);
                    }
                }
                let floor = Floor {
                    kind,
                    sock: Some(ours),
                    pid: Some(child),
                    msg,
                    chunk,
                    rbuf,
                };
                if let Some(p) = place {
                    pin(child.as_raw(), p.child)?;
                }
                Ok(floor)
            }
            Err(e) => Err(format!("fork: {e}")),
        }
    }
}

impl Side for Floor {
    /// One timed batch of `n` messages (or round trips), in the bench's unit.
    fn batch(&mut self, n: usize) -> Result<f64, String> {
        let mut sock: &UnixStream = self.sock.as_ref().ok_or("socket closed")?;
        let io = |what: &str, e: std::io::Error| format!("floor {what}: {e}");
        let t0 = Instant::now();
        match self.kind {
            Kind::Rtt => {
                for _ in 0..n {
                    sock.write_all(&self.msg).map_err(|e| io("write", e))?;
                    sock.read_exact(&mut self.rbuf).map_err(|e| io("read", e))?;
                }
            }
            Kind::OnewaySmall | Kind::OnewayMib | Kind::OnewayBuffered => {
                let total = (n * self.msg.len()) as u64;
                sock.write_all(&total.to_ne_bytes())
                    .map_err(|e| io("write", e))?;
                if self.kind == Kind::OnewayBuffered {
                    let per = self.chunk.len() / self.msg.len();
                    for _ in 0..n / per {
                        sock.write_all(&self.chunk).map_err(|e| io("write", e))?;
                    }
                    let rest = (n % per) * self.msg.len();
                    sock.write_all(&self.chunk[..rest])
                        .map_err(|e| io("write", e))?;
                } else {
                    for _ in 0..n {
                        sock.write_all(&self.msg).map_err(|e| io("write", e))?;
                    }
                }
                sock.read_exact(&mut self.rbuf[..8])
                    .map_err(|e| io("read", e))?;
                let got = u64::from_ne_bytes(self.rbuf[..8].try_into().expect("8 bytes"));
                if got != total {
                    return Err(format!("the floor child read {got} bytes of {total}"));
                }
            }
        }
        Ok(self.kind.value(n, t0.elapsed()))
    }

    /// Closes the socket (the child exits on the end of the stream) and reaps the child.
    fn end(&mut self) -> Result<(), String> {
        self.sock = None;
        let Some(pid) = self.pid.take() else {
            return Ok(());
        };
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, 0)) => Ok(()),
            Ok(other) => Err(format!("floor child ended with {other:?}")),
            Err(e) => Err(format!("waitpid: {e}")),
        }
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
    }
}

/// `read` until `buf` is full: `true`, or `false` on the end of the stream before the
/// first byte. Any other failure `_exit`s. Async-signal-safe.
fn raw_read_exact(fd: RawFd, buf: &mut [u8]) -> bool {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: the range `got..` of `buf` is valid for writes.
        let n = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        if n > 0 {
            got += n as usize;
        } else if n == 0 && got == 0 {
            return false;
        } else if n == 0 || Errno::last() != Errno::EINTR {
            // SAFETY: `_exit` ends the process without any cleanup.
            unsafe { libc::_exit(3) }
        }
    }
    true
}

/// `write` all of `buf`, or `_exit`. Async-signal-safe.
fn raw_write_all(fd: RawFd, buf: &[u8]) {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the range `done..` of `buf` is valid for reads.
        let n = unsafe { libc::write(fd, buf[done..].as_ptr().cast(), buf.len() - done) };
        if n > 0 {
            done += n as usize;
        } else if n == 0 || Errno::last() != Errno::EINTR {
            // SAFETY: as above.
            unsafe { libc::_exit(4) }
        }
    }
}

/// The body of a floor child: no allocation, only `close`, `read`, `write`, `_exit`.
///
/// # Safety
///
/// Call only in a freshly forked child; `buf` must point to `buf_len` writable bytes
/// (it may be null when `mode` is [`FloorMode::Answer`]).
unsafe fn floor_child(fd: RawFd, other: RawFd, mode: FloorMode, buf: *mut u8, buf_len: usize) -> ! {
    // SAFETY: `other` is the parent's end, open in this copy of the process: closing it
    // lets this child see the end of the stream when the parent closes its own.
    unsafe { libc::close(other) };
    match mode {
        FloorMode::Answer { read, write } => {
            let mut stack = [0u8; ECHO_MAX];
            while raw_read_exact(fd, &mut stack[..read]) {
                raw_write_all(fd, &stack[..write]);
            }
        }
        FloorMode::Sink => {
            // SAFETY: guaranteed by the caller.
            let buf = unsafe { std::slice::from_raw_parts_mut(buf, buf_len) };
            let mut cmd = [0u8; 8];
            while raw_read_exact(fd, &mut cmd) {
                let total = u64::from_ne_bytes(cmd);
                let mut got = 0u64;
                while got < total {
                    let want = buf_len.min((total - got).min(usize::MAX as u64) as usize);
                    // SAFETY: `buf` holds `buf_len` >= `want` writable bytes.
                    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), want) };
                    if n > 0 {
                        got += n as u64;
                    } else if n == 0 || Errno::last() != Errno::EINTR {
                        // SAFETY: as in `raw_read_exact`.
                        unsafe { libc::_exit(5) }
                    }
                }
                raw_write_all(fd, &got.to_ne_bytes());
            }
        }
    }
    // SAFETY: the parent closed its end: exit without running any cleanup.
    unsafe { libc::_exit(0) }
}
