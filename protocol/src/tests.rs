use crate::frame::decode_value;
use crate::*;

fn start() -> Start {
    Start {
        entry: -4096,
        args: encode_value(&(1u32, "x")).unwrap(),
        name: "Process-1".into(),
        identity: vec![1],
        daemon: false,
        parent: Peer {
            pid: 42,
            name: "MainProcess".into(),
        },
        start_method: "forkserver".into(),
    }
}

fn all_messages() -> Vec<Message> {
    vec![
        Message::Hello(Hello::current()),
        Message::Start(start()),
        Message::Spawn(start()),
        Message::Spawned { pid: 7 },
        Message::SpawnFailed { errno: 11 },
        Message::Result(vec![0xc0]),
        Message::Panic(RemoteError {
            message: "boom".into(),
            location: Some(Location {
                file: "src/main.rs".into(),
                line: 3,
                column: 9,
            }),
            thread: Some("main".into()),
            backtrace: None,
        }),
        Message::Ping(u64::MAX),
        Message::Pong(0),
        Message::Shutdown,
    ]
}

#[test]
fn every_message_round_trips() {
    let d = FrameDecoder::new();
    for m in all_messages() {
        let f = encode(&m).unwrap();
        assert_eq!(d.decode(&f).unwrap(), Some((m.clone(), f.len())));
        assert_eq!(read_frame(&mut &f[..], DEFAULT_MAX_FRAME_LEN).unwrap(), m);
    }
}

#[test]
fn frames_concatenate_and_split_at_any_byte() {
    let msgs = all_messages();
    let mut stream = Vec::new();
    for m in &msgs {
        encode_into(m, &mut stream, DEFAULT_MAX_FRAME_LEN).unwrap();
    }
    // Feed the stream one byte at a time, as a slow pipe would.
    let d = FrameDecoder::new();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for b in stream {
        buf.push(b);
        while let Some((m, used)) = d.decode(&buf).unwrap() {
            out.push(m);
            buf.drain(..used);
        }
    }
    assert_eq!(out, msgs);
    d.finish(&buf).unwrap();
}

/// The byte-exact example in protocol/README.md. If this test changes, change the README.
#[test]
fn readme_example_is_byte_exact() {
    let f = encode(&Message::Ping(7)).unwrap();
    assert_eq!(
        f,
        [
            0x00, 0x00, 0x00, 0x07, 0x81, 0xa4, b'P', b'i', b'n', b'g', 0x07
        ]
    );
    let f = encode(&Message::Spawned { pid: 1234 }).unwrap();
    assert_eq!(
        f,
        [
            0x00, 0x00, 0x00, 0x11, 0x81, 0xa7, b'S', b'p', b'a', b'w', b'n', b'e', b'd', 0x81,
            0xa3, b'p', b'i', b'd', 0xcd, 0x04, 0xd2
        ]
    );
    let f = encode(&Message::Shutdown).unwrap();
    assert_eq!(
        f,
        [
            0x00, 0x00, 0x00, 0x09, 0xa8, b'S', b'h', b'u', b't', b'd', b'o', b'w', b'n'
        ]
    );
}

#[test]
fn oversized_header_is_rejected_before_allocating() {
    let d = FrameDecoder::with_max_len(1024);
    // 4 GiB - 1 announced: must fail on the header alone.
    let err = d.decode(&[0xff, 0xff, 0xff, 0xff]).unwrap_err();
    assert_eq!(
        err,
        DecodeError::Oversized {
            len: u32::MAX as usize,
            max: 1024
        }
    );
    let err = read_frame(&mut &[0xff, 0xff, 0xff, 0xff, 1, 2][..], 1024).unwrap_err();
    assert!(matches!(
        err,
        ReadError::Decode(DecodeError::Oversized { .. })
    ));
}

#[test]
fn truncated_frames_are_typed() {
    let f = encode(&Message::Ping(7)).unwrap();
    for cut in 1..f.len() {
        let err = read_frame(&mut &f[..cut], DEFAULT_MAX_FRAME_LEN).unwrap_err();
        assert!(
            matches!(err, ReadError::Decode(DecodeError::Truncated { .. })),
            "cut at {cut}: {err:?}"
        );
        assert!(FrameDecoder::new().finish(&f[..cut]).is_err());
    }
}

#[test]
fn garbage_payload_is_malformed_not_a_panic() {
    let d = FrameDecoder::new();
    // Every 1- and 2-byte payload, and a sweep of longer junk.
    for a in 0..=255u8 {
        for b in [0u8, 1, 0x7f, 0x80, 0xc0, 0xc1, 0xd9, 0xff] {
            let frame = [0, 0, 0, 2, a, b];
            match d.decode(&frame) {
                Ok(Some(_)) | Err(DecodeError::Malformed { .. }) => {}
                other => panic!("{a:#x} {b:#x}: {other:?}"),
            }
        }
    }
    let mut junk = vec![0, 0, 0, 64];
    junk.extend((0..64u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8));
    assert!(matches!(
        d.decode(&junk),
        Err(DecodeError::Malformed { .. })
    ));
}

#[test]
fn lying_array_lengths_do_not_allocate() {
    // A `Result` whose bin is replaced by an array32 announcing 4 billion elements.
    let mut payload = vec![0x81, 0xa6];
    payload.extend_from_slice(b"Result");
    payload.extend_from_slice(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0x01]);
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    assert!(matches!(
        FrameDecoder::new().decode(&frame),
        Err(DecodeError::Malformed { .. })
    ));
}

#[test]
fn unknown_version_is_refused() {
    let mut h = Hello::current();
    h.version = VERSION + 1;
    let f = encode(&Message::Hello(h)).unwrap();
    assert_eq!(
        FrameDecoder::new().decode(&f).unwrap_err(),
        DecodeError::UnknownVersion {
            got: VERSION + 1,
            supported: VERSION
        }
    );
    let mut h = Hello::current();
    h.magic = "other".into();
    let f = encode(&Message::Hello(h)).unwrap();
    assert!(matches!(
        FrameDecoder::new().decode(&f),
        Err(DecodeError::Malformed { .. })
    ));
}

#[test]
fn encode_refuses_oversized_and_leaves_buffer_intact() {
    let mut out = vec![1, 2, 3];
    let err = encode_into(&Message::Result(vec![0; 1000]), &mut out, 100).unwrap_err();
    assert!(matches!(err, EncodeError::Oversized { max: 100, .. }));
    assert_eq!(out, [1, 2, 3]);
}

#[test]
fn values_decode_into_the_wrong_type_with_a_typed_error() {
    let b = encode_value(&"text").unwrap();
    let err = decode_value::<u32>(&b).unwrap_err();
    assert!(matches!(err, DecodeError::Malformed { .. }), "{err}");
}

#[test]
fn trailing_bytes_inside_a_frame_are_malformed() {
    // Ping(7) with one extra byte, and a length that covers it.
    let frame = [0, 0, 0, 8, 0x81, 0xa4, b'P', b'i', b'n', b'g', 0x07, 0x00];
    assert!(matches!(
        FrameDecoder::new().decode(&frame),
        Err(DecodeError::Malformed { .. })
    ));
}
