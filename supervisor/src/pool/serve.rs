//! The worker's side: the target of every pool worker process, a loop that runs tasks as
//! they come over its socket.
//!
//! Results are written in batches: after every task whose input is drained (no whole task
//! frame left in the buffer), and also as soon as a pending result is older than
//! [`FLUSH_AFTER`] or a task took longer than that, so a quick result never waits long
//! behind a slow neighbour.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use procvisor_protocol::{RemoteError, encode_value};
use procvisor_worker::{entry, handles, run};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::wire;

/// How long a finished result may wait in the worker's buffer for its batch-mates.
const FLUSH_AFTER: Duration = Duration::from_micros(200);

/// The worker's end of its socket, as it travels inside the worker's arguments.
#[derive(Debug)]
pub(crate) struct Endpoint(pub(crate) UnixStream);

impl Serialize for Endpoint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let handle = handles::push(self.0.as_fd()).map_err(serde::ser::Error::custom)?;
        handle.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let handle = u32::deserialize(deserializer)?;
        let fd: OwnedFd = handles::take(handle).map_err(serde::de::Error::custom)?;
        Ok(Endpoint(UnixStream::from(fd)))
    }
}

/// What a pool worker process is started with.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WorkerArgs {
    pub(crate) sock: Endpoint,
    /// The initializer's trampoline offset, if any.
    pub(crate) init: Option<i64>,
    /// The initializer's encoded arguments.
    #[serde(with = "procvisor_protocol::bytes")]
    pub(crate) init_args: Vec<u8>,
    /// Exit after this many tasks (`maxtasksperchild`).
    pub(crate) max_tasks: Option<u64>,
}

fn encode_remote(r: &RemoteError) -> Vec<u8> {
    encode_value(r).unwrap_or_default()
}

/// The target of a pool worker process.
pub(crate) fn worker_main(args: WorkerArgs) {
    let mut sock = args.sock.0;
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    if let Some(offset) = args.init {
        let init_args = args.init_args;
        // Trusted: the offset came from our parent, inside our start frame.
        let f = entry::resolve(offset);
        let failure = match run::catch(|| f(&init_args)) {
            Ok(Ok(_)) => None,
            Ok(Err(e)) | Err(e) => Some(e),
        };
        match failure {
            None => wire::put_reply(&mut out, wire::READY, 0, 0, &[]),
            Some(e) => {
                wire::put_reply(&mut out, wire::INIT, 0, 0, &encode_remote(&e));
                let _ = sock.write_all(&out);
                return;
            }
        }
        if sock.write_all(&out).is_err() {
            return;
        }
        out.clear();
    }
    let mut left = args.max_tasks;
    let mut buf: Vec<u8> = vec![0; 64 * 1024];
    let (mut start, mut end) = (0usize, 0usize);
    let mut pending_since: Option<Instant> = None;
    loop {
        // Serve every whole task frame buffered.
        loop {
            if left == Some(0) {
                let _ = sock.write_all(&out);
                return;
            }
            let (body, used) = match wire::next_frame(&buf[start..end], wire::TASK_HEAD) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                // The parent never writes this; nothing sensible is left to do.
                Err(_) => return,
            };
            let body = start + body.start..start + body.end;
            let frame = &buf[body];
            let id = wire::u64_at(frame, 1);
            let offset = wire::u64_at(frame, 9) as i64;
            if pending_since.is_some_and(|t| t.elapsed() >= FLUSH_AFTER) {
                if sock.write_all(&out).is_err() {
                    return;
                }
                out.clear();
                pending_since = None;
            }
            // Trusted: task frames come only from our parent, over our private socket.
            let f = entry::resolve(offset);
            let t0 = Instant::now();
            let outcome = run::catch(|| f(&frame[wire::TASK_HEAD..]));
            let took = t0.elapsed();
            let micros = took.as_micros().min(u32::MAX as u128) as u32;
            match outcome {
                Ok(Ok(bytes)) => match bytes.split_first() {
                    Some((0, values)) => wire::put_reply(&mut out, wire::OK, id, micros, values),
                    Some((_, why)) => {
                        let e = remote(String::from_utf8_lossy(why).into_owned());
                        wire::put_reply(&mut out, wire::RESULT, id, micros, &encode_remote(&e))
                    }
                    None => {
                        let e = remote("empty result".to_owned());
                        wire::put_reply(&mut out, wire::RESULT, id, micros, &encode_remote(&e))
                    }
                },
                Ok(Err(e)) => wire::put_reply(&mut out, wire::ARGS, id, micros, &encode_remote(&e)),
                Err(e) => wire::put_reply(&mut out, wire::PANIC, id, micros, &encode_remote(&e)),
            }
            pending_since.get_or_insert_with(Instant::now);
            start += used;
            if let Some(n) = &mut left {
                *n -= 1;
            }
            if took >= FLUSH_AFTER {
                if sock.write_all(&out).is_err() {
                    return;
                }
                out.clear();
                pending_since = None;
            }
        }
        // Drained: send what is pending, then wait for more.
        if !out.is_empty() {
            if sock.write_all(&out).is_err() {
                return;
            }
            out.clear();
            if out.capacity() > 1 << 20 {
                out = Vec::with_capacity(4096);
            }
            pending_since = None;
        }
        if start > 0 {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        if let Ok(Some((_, used))) = wire::next_frame(&buf[..end], wire::TASK_HEAD) {
            if used > buf.len() {
                buf.resize(used, 0);
            }
        } else if let Some(h) = buf[..end].first_chunk::<4>() {
            let need = 4 + u32::from_be_bytes(*h) as usize;
            if need > buf.len() && need <= 4 + wire::MAX_FRAME {
                buf.resize(need, 0);
            }
        }
        if end == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match sock.read(&mut buf[end..]) {
            Ok(0) => return,
            Ok(n) => end += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

pub(crate) fn remote(message: String) -> RemoteError {
    RemoteError {
        message,
        location: None,
        thread: None,
        backtrace: None,
    }
}
