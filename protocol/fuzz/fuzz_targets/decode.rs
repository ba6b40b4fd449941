//! Decoding arbitrary bytes never panics, and whatever decodes re-encodes to a frame that
//! decodes to the same message: decode(encode(x)) == x.
#![no_main]

use libfuzzer_sys::fuzz_target;
use procvisor_protocol::{FrameDecoder, encode};

fuzz_target!(|data: &[u8]| {
    let decoder = FrameDecoder::new();
    // Errors are fine; panics are the bug this target looks for.
    let Ok(Some((msg, used))) = decoder.decode(data) else {
        return;
    };
    assert!(used <= data.len(), "used {used} of {} bytes", data.len());
    let frame = encode(&msg).expect("a decoded message re-encodes");
    let again = decoder
        .decode(&frame)
        .expect("a re-encoded message decodes");
    assert_eq!(again, Some((msg, frame.len())));
});
