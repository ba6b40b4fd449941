//! The pool's frames, between the pool (in the parent) and one worker, over a private
//! socketpair.
//!
//! Every frame is the protocol's 4-byte big-endian length and a body; the bodies are laid
//! out by hand (little-endian integers, then msgpack), because a pool moves hundreds of
//! thousands of them per second and a msgpack envelope around msgpack would cost more
//! than the task.
//!
//! ```text
//! pool → worker   TASK     [1][job id u64][entry i64][msgpack Vec<A>: the chunk's arguments]
//! worker → pool   OK       [1][job id u64][µs u32][msgpack Vec<R>: the chunk's results]
//!                 PANIC    [2][job id u64][µs u32][msgpack RemoteError]
//!                 ARGS     [3][job id u64][µs u32][msgpack RemoteError]   (args did not decode)
//!                 RESULT   [4][job id u64][µs u32][msgpack RemoteError]   (result did not encode)
//!                 READY    [5][0u64][0u32]                                (initializer done)
//!                 INIT     [6][0u64][0u32][msgpack RemoteError]           (initializer failed)
//! ```
//!
//! A worker answers its tasks in the order it got them. Closing the pool's end is the
//! order to stop; the worker flushes and exits. `entry` is the offset of the task's
//! trampoline from the worker crate's anchor: trusted because it comes from the parent
//! over the socket only the two share (see `procvisor_worker::entry`).

use procvisor_protocol::{DEFAULT_MAX_FRAME_LEN, HEADER_LEN};

pub(crate) const TASK: u8 = 1;
pub(crate) const OK: u8 = 1;
pub(crate) const PANIC: u8 = 2;
pub(crate) const ARGS: u8 = 3;
pub(crate) const RESULT: u8 = 4;
pub(crate) const READY: u8 = 5;
pub(crate) const INIT: u8 = 6;

/// Bytes of a task body before its arguments.
pub(crate) const TASK_HEAD: usize = 1 + 8 + 8;
/// Bytes of a reply body before its payload.
pub(crate) const REPLY_HEAD: usize = 1 + 8 + 4;

/// The largest frame either side accepts.
pub(crate) const MAX_FRAME: usize = DEFAULT_MAX_FRAME_LEN;

/// Appends a task frame to `out`.
pub(crate) fn put_task(out: &mut Vec<u8>, id: u64, entry: i64, args: &[u8]) {
    let len = (TASK_HEAD + args.len()) as u32;
    out.extend_from_slice(&len.to_be_bytes());
    out.push(TASK);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&entry.to_le_bytes());
    out.extend_from_slice(args);
}

/// Appends a reply frame to `out`.
pub(crate) fn put_reply(out: &mut Vec<u8>, tag: u8, id: u64, micros: u32, payload: &[u8]) {
    let len = (REPLY_HEAD + payload.len()) as u32;
    out.extend_from_slice(&len.to_be_bytes());
    out.push(tag);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&micros.to_le_bytes());
    out.extend_from_slice(payload);
}

/// The next whole frame's body in `buf`, as a range, and the bytes it occupies; `Ok(None)`
/// when the frame is not complete yet, `Err` when its length is out of bounds.
pub(crate) fn next_frame(
    buf: &[u8],
    min_body: usize,
) -> Result<Option<(std::ops::Range<usize>, usize)>, String> {
    let Some(h) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*h) as usize;
    if len > MAX_FRAME || len < min_body {
        return Err(format!("frame of {len} bytes"));
    }
    if buf.len() < HEADER_LEN + len {
        return Ok(None);
    }
    Ok(Some((HEADER_LEN..HEADER_LEN + len, HEADER_LEN + len)))
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_and_reply_round_trip() {
        let mut out = Vec::new();
        put_task(&mut out, 7, -3, b"xy");
        let (body, used) = next_frame(&out, TASK_HEAD).unwrap().unwrap();
        assert_eq!(used, out.len());
        let b = &out[body];
        assert_eq!(b[0], TASK);
        assert_eq!(u64_at(b, 1), 7);
        assert_eq!(u64_at(b, 9) as i64, -3);
        assert_eq!(&b[TASK_HEAD..], b"xy");
        assert!(
            next_frame(&out[..out.len() - 1], TASK_HEAD)
                .unwrap()
                .is_none()
        );

        let mut r = Vec::new();
        put_reply(&mut r, OK, 9, 12, b"z");
        let (body, _) = next_frame(&r, REPLY_HEAD).unwrap().unwrap();
        let b = &r[body];
        assert_eq!((b[0], u64_at(b, 1), u32_at(b, 9)), (OK, 9, 12));
        assert_eq!(&b[REPLY_HEAD..], b"z");
    }

    #[test]
    fn bad_lengths_are_errors() {
        assert!(next_frame(&[0, 0, 0, 1, 0], TASK_HEAD).is_err());
        assert!(next_frame(&[0xff, 0xff, 0xff, 0xff], TASK_HEAD).is_err());
    }
}
