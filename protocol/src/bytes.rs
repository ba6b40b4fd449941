//! Serde helpers that carry `Vec<u8>` as a msgpack `bin`, not as an array of integers.
//!
//! Use with `#[serde(with = "procvisor_protocol::bytes")]`.
//!
//! ```
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Blob {
//!     #[serde(with = "procvisor_protocol::bytes")]
//!     data: Vec<u8>,
//! }
//! let b = rmp_serde::to_vec(&Blob { data: vec![1, 2, 3] })?;
//! // fixarray(1), bin8 of length 3, then the bytes themselves
//! assert_eq!(b, [0x91, 0xc4, 3, 1, 2, 3]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use serde::de::{Error as _, SeqAccess, Visitor};
use serde::{Deserializer, Serializer};

/// Serializes bytes as a msgpack `bin`.
pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

/// Deserializes a msgpack `bin` (or, for lenient peers, `str` or an array of integers).
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    deserializer.deserialize_byte_buf(BytesVisitor)
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
        Ok(v.as_bytes().to_vec())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        // The size hint comes from the peer: cap it so a lying header cannot make us
        // reserve more than the frame that carried it.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        if out.len() > u32::MAX as usize {
            return Err(A::Error::custom("byte string too long"));
        }
        Ok(out)
    }
}
