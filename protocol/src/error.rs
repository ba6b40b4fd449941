//! Typed errors of encoding and decoding.

use std::{fmt, io};

/// A frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The stream ended inside a frame.
    Truncated {
        /// Bytes the frame needed (header included).
        expected: usize,
        /// Bytes that arrived.
        got: usize,
    },
    /// The header announced a frame longer than the maximum; nothing was allocated.
    Oversized {
        /// The announced payload length.
        len: usize,
        /// The maximum in force.
        max: usize,
    },
    /// The peer speaks another protocol version.
    UnknownVersion {
        /// The peer's version.
        got: u16,
        /// Ours.
        supported: u16,
    },
    /// The payload is not a message of this protocol.
    Malformed {
        /// What the msgpack decoder said.
        reason: String,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { expected, got } => {
                write!(f, "truncated frame: expected {expected} bytes, got {got}")
            }
            DecodeError::Oversized { len, max } => {
                write!(
                    f,
                    "oversized frame: {len} bytes announced, maximum is {max}"
                )
            }
            DecodeError::UnknownVersion { got, supported } => {
                write!(
                    f,
                    "unknown protocol version {got} (this side speaks {supported})"
                )
            }
            DecodeError::Malformed { reason } => write!(f, "malformed frame: {reason}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A message could not be encoded.
#[derive(Debug)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded message is longer than the maximum frame length.
    Oversized {
        /// Encoded payload length.
        len: usize,
        /// The maximum in force.
        max: usize,
    },
    /// serde refused the value.
    Serialize(rmp_serde::encode::Error),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::Oversized { len, max } => {
                write!(
                    f,
                    "message of {len} bytes exceeds the maximum frame of {max}"
                )
            }
            EncodeError::Serialize(_) => f.write_str("value could not be serialized"),
        }
    }
}

impl std::error::Error for EncodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EncodeError::Serialize(e) => Some(e),
            EncodeError::Oversized { .. } => None,
        }
    }
}

/// Reading a frame from a stream failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReadError {
    /// The stream ended cleanly, between frames.
    Eof,
    /// The bytes were not a valid frame.
    Decode(DecodeError),
    /// The stream itself failed.
    Io(io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Eof => f.write_str("end of stream"),
            ReadError::Decode(_) => f.write_str("invalid frame"),
            ReadError::Io(_) => f.write_str("read failed"),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Eof => None,
            ReadError::Decode(e) => Some(e),
            ReadError::Io(e) => Some(e),
        }
    }
}

impl From<DecodeError> for ReadError {
    fn from(e: DecodeError) -> Self {
        ReadError::Decode(e)
    }
}
