//! The wire protocol spoken between a procvisor parent and its workers.
//!
//! # Brief overview
//!
//! Every conversation is a stream of [frames](frame): a 4-byte big-endian length followed
//! by that many bytes of msgpack (serde through `rmp-serde`, structs as maps with field
//! names so that a peer in another language can read them). The payload of a frame is one
//! [`Message`]. The first frame each side sends is a [`Hello`] carrying the protocol
//! [`VERSION`]; a peer that speaks another version is refused with
//! [`DecodeError::UnknownVersion`].
//!
//! Decoding never panics and never allocates more than the configured maximum frame length
//! ([`DEFAULT_MAX_FRAME_LEN`] unless set otherwise): the length is checked before the buffer
//! for the payload exists. Every failure is a typed [`DecodeError`].
//!
//! The format, with a diagram and a byte-exact example, is written down in this crate's
//! `README.md`.
//!
//! ```
//! use procvisor_protocol::{Message, FrameDecoder, encode};
//!
//! let bytes = encode(&Message::Ping(7))?;
//! let decoder = FrameDecoder::new();
//! let (msg, used) = decoder.decode(&bytes)?.expect("one whole frame");
//! assert_eq!(msg, Message::Ping(7));
//! assert_eq!(used, bytes.len());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![doc(test(no_crate_inject, attr(deny(warnings))))]

pub mod bytes;
mod error;
pub mod frame;
mod message;

pub use error::{DecodeError, EncodeError, ReadError};
pub use frame::{
    DEFAULT_MAX_FRAME_LEN, FrameDecoder, HEADER_LEN, encode, encode_into, encode_value, read_frame,
};
pub use message::{Hello, Location, Message, Peer, RemoteError, Start};

/// The protocol version this crate speaks. Bumped on any change to [`Message`] that an
/// older peer could not decode.
pub const VERSION: u16 = 1;

/// The magic string in every [`Hello`], so that a stray peer is told apart from an old one.
pub const MAGIC: &str = "procvisor";

#[cfg(test)]
mod tests;
