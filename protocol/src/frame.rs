//! Length-prefixed framing.
//!
//! ```text
//! +----------------+----------------------------------+
//! | length: u32 BE | payload: `length` bytes, msgpack |
//! +----------------+----------------------------------+
//!   4 bytes          0 ..= max frame length
//! ```
//!
//! The length counts the payload only, not the header. A header announcing more than the
//! maximum ([`DEFAULT_MAX_FRAME_LEN`], 64 MiB, unless the decoder was built with another)
//! is rejected with [`DecodeError::Oversized`] before any buffer for the payload exists.

use std::io::{self, Read};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{DecodeError, EncodeError, Message, ReadError};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 4;

/// The default maximum payload length of one frame: 64 MiB. Large enough for any control
/// message and most process arguments; small enough that a hostile header cannot make a
/// parent allocate gigabytes.
pub const DEFAULT_MAX_FRAME_LEN: usize = 64 << 20;

/// Encodes a serde value the way procvisor encodes every value: msgpack, structs as maps.
///
/// ```
/// let b = procvisor_protocol::encode_value(&(1u8, "a"))?;
/// assert_eq!(b, [0x92, 0x01, 0xa1, b'a']);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn encode_value<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, EncodeError> {
    rmp_serde::to_vec_named(value).map_err(EncodeError::Serialize)
}

/// Decodes a value encoded by [`encode_value`].
///
/// ```
/// let v: (u8, String) = procvisor_protocol::frame::decode_value(&[0x92, 0x01, 0xa1, b'a'])?;
/// assert_eq!(v, (1, "a".to_owned()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// The value must fill `bytes` exactly: trailing bytes are [`DecodeError::Malformed`], so a
/// frame cannot smuggle data past its message.
///
/// ```
/// use procvisor_protocol::frame::decode_value;
/// assert!(decode_value::<u8>(&[0x07, 0x00]).is_err());
/// ```
pub fn decode_value<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    // Straight from the slice: strings and byte strings are copied once, into the value,
    // instead of through the reader's intermediate buffer.
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    let value = T::deserialize(&mut de).map_err(|e| DecodeError::Malformed {
        reason: e.to_string(),
    })?;
    // The slice reader does not tell its position; reading one more marker does: it fails
    // only when no byte is left (`Probe` reads nothing past the marker).
    if Option::<Probe>::deserialize(&mut de).is_ok() {
        return Err(trailing(bytes));
    }
    Ok(value)
}

/// Reads nothing: after `Option`'s marker, it succeeds as it is.
struct Probe;

impl<'de> Deserialize<'de> for Probe {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Ok(Probe)
    }
}

/// The error for a value followed by bytes, with their count (decoding again, on this
/// error path only, with a reader that counts).
fn trailing(bytes: &[u8]) -> DecodeError {
    let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
    let used = serde::de::IgnoredAny::deserialize(&mut de)
        .map(|_| de.position() as usize)
        .unwrap_or(0);
    DecodeError::Malformed {
        reason: format!(
            "{} trailing bytes after the value",
            bytes.len().saturating_sub(used)
        ),
    }
}

/// Encodes one message as a whole frame, header included.
///
/// ```
/// let f = procvisor_protocol::encode(&procvisor_protocol::Message::Shutdown)?;
/// assert_eq!(&f[..4], &(f.len() as u32 - 4).to_be_bytes());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn encode(msg: &Message) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(64);
    encode_into(msg, &mut out, DEFAULT_MAX_FRAME_LEN)?;
    Ok(out)
}

/// Appends one frame to `out`. On error `out` is left as it was.
///
/// ```
/// use procvisor_protocol::{encode_into, Message, EncodeError};
/// let mut out = Vec::new();
/// encode_into(&Message::Ping(1), &mut out, 1 << 20)?;
/// encode_into(&Message::Ping(2), &mut out, 1 << 20)?;
/// let err = encode_into(&Message::Result(vec![0; 100]), &mut out, 10).unwrap_err();
/// assert!(matches!(err, EncodeError::Oversized { max: 10, .. }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn encode_into(msg: &Message, out: &mut Vec<u8>, max_len: usize) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    if let Err(e) = rmp_serde::encode::write_named(out, msg) {
        out.truncate(start);
        return Err(EncodeError::Serialize(e));
    }
    let len = out.len() - start - HEADER_LEN;
    if len > max_len || len > u32::MAX as usize {
        out.truncate(start);
        return Err(EncodeError::Oversized { len, max: max_len });
    }
    out[start..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Decodes frames out of a byte buffer that a caller fills from a stream.
///
/// ```
/// use procvisor_protocol::{encode, FrameDecoder, Message};
/// let f = encode(&Message::Pong(3))?;
/// let d = FrameDecoder::new();
/// assert_eq!(d.decode(&f[..3])?, None); // not a whole frame yet
/// assert_eq!(d.decode(&f)?, Some((Message::Pong(3), f.len())));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_len: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// A decoder with the [`DEFAULT_MAX_FRAME_LEN`].
    pub fn new() -> Self {
        FrameDecoder {
            max_len: DEFAULT_MAX_FRAME_LEN,
        }
    }

    /// A decoder with another maximum payload length.
    ///
    /// ```
    /// let d = procvisor_protocol::FrameDecoder::with_max_len(16);
    /// assert_eq!(d.max_len(), 16);
    /// ```
    pub fn with_max_len(max_len: usize) -> Self {
        FrameDecoder { max_len }
    }

    /// The maximum payload length in force.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Checks a header and returns the payload length it announces.
    ///
    /// ```
    /// let d = procvisor_protocol::FrameDecoder::with_max_len(16);
    /// assert_eq!(d.payload_len([0, 0, 0, 5])?, 5);
    /// assert!(d.payload_len([0, 0, 1, 0]).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn payload_len(&self, header: [u8; HEADER_LEN]) -> Result<usize, DecodeError> {
        let len = u32::from_be_bytes(header) as usize;
        if len > self.max_len {
            return Err(DecodeError::Oversized {
                len,
                max: self.max_len,
            });
        }
        Ok(len)
    }

    /// Decodes the first frame in `buf`: `Ok(None)` until a whole frame is there, then the
    /// message and how many bytes it used.
    pub fn decode(&self, buf: &[u8]) -> Result<Option<(Message, usize)>, DecodeError> {
        let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let len = self.payload_len(*header)?;
        let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
            return Ok(None);
        };
        Ok(Some((decode_payload(payload)?, HEADER_LEN + len)))
    }

    /// Decodes whatever is left in `buf` when the stream has ended: every whole frame must
    /// have been taken already, so leftover bytes are a [`DecodeError::Truncated`] frame.
    ///
    /// ```
    /// use procvisor_protocol::{FrameDecoder, DecodeError};
    /// let d = FrameDecoder::new();
    /// assert_eq!(d.finish(&[]), Ok(()));
    /// assert_eq!(d.finish(&[0, 0, 0, 9, 1]), Err(DecodeError::Truncated { expected: 13, got: 5 }));
    /// ```
    pub fn finish(&self, rest: &[u8]) -> Result<(), DecodeError> {
        if rest.is_empty() {
            return Ok(());
        }
        let expected = match rest.first_chunk::<HEADER_LEN>() {
            Some(h) => HEADER_LEN + self.payload_len(*h)?,
            None => HEADER_LEN,
        };
        Err(DecodeError::Truncated {
            expected,
            got: rest.len(),
        })
    }
}

fn decode_payload(payload: &[u8]) -> Result<Message, DecodeError> {
    let msg: Message = decode_value(payload)?;
    if let Message::Hello(h) = &msg {
        h.check()?;
    }
    Ok(msg)
}

/// Reads exactly one frame from a blocking stream.
///
/// A clean end of stream before the first header byte is [`ReadError::Eof`]; an end
/// inside a frame is [`DecodeError::Truncated`].
///
/// ```
/// use procvisor_protocol::{encode, read_frame, Message, ReadError};
/// let f = encode(&Message::Ping(5))?;
/// let mut r = &f[..];
/// assert_eq!(read_frame(&mut r, 1 << 20)?, Message::Ping(5));
/// assert!(matches!(read_frame(&mut r, 1 << 20), Err(ReadError::Eof)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn read_frame<R: Read + ?Sized>(r: &mut R, max_len: usize) -> Result<Message, ReadError> {
    let decoder = FrameDecoder::with_max_len(max_len);
    let mut header = [0u8; HEADER_LEN];
    let got = read_full(r, &mut header)?;
    if got == 0 {
        return Err(ReadError::Eof);
    }
    if got < HEADER_LEN {
        return Err(DecodeError::Truncated {
            expected: HEADER_LEN,
            got,
        }
        .into());
    }
    let len = decoder.payload_len(header)?;
    let mut payload = vec![0u8; len];
    let got = read_full(r, &mut payload)?;
    if got < len {
        return Err(DecodeError::Truncated {
            expected: HEADER_LEN + len,
            got: HEADER_LEN + got,
        }
        .into());
    }
    Ok(decode_payload(&payload)?)
}

/// Reads until `buf` is full or the stream ends; returns how many bytes arrived.
fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> Result<usize, ReadError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    Ok(got)
}
