use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use procvisor::connection::{ConnectionError, Waitable, pipe, wait};
use procvisor::{Connection, Process};

use crate::lifecycle::METHODS;

/// Python's `[42, None, 'hello']`, typed.
type Item = (i64, Option<()>, String);

fn send_item(mut conn: Connection) {
    conn.send(&(42i64, None::<()>, "hello".to_owned())).unwrap();
    conn.close();
}

#[test]
fn a_child_sends_a_typed_value_through_a_pipe() {
    for m in METHODS {
        let (mut parent_end, child_end) = pipe(true).unwrap();
        let mut p = Process::new(send_item, child_end).with_start_method(m);
        p.start().unwrap();
        let got: Item = parent_end.recv().unwrap();
        assert_eq!(got, (42, None, "hello".to_owned()), "{m}");
        p.join(None).unwrap();
        assert_eq!(p.exitcode().unwrap(), Some(0));
        // The Process closed our copy of the child's end when it started: with the child
        // gone, the stream ends.
        assert!(
            matches!(parent_end.recv::<Item>(), Err(ConnectionError::Eof)),
            "{m}"
        );
    }
}

/// Echoes until the stream ends: squares numbers, returns bytes as they came.
fn echo((mut nums, mut raw): (Connection, Connection)) -> u32 {
    let mut served = 0;
    loop {
        match nums.recv::<u64>() {
            Ok(n) => nums.send(&(n * n)).unwrap(),
            Err(ConnectionError::Eof) => break,
            Err(e) => panic!("{e}"),
        }
        served += 1;
        let bytes = raw.recv_bytes().unwrap();
        raw.send_bytes(&bytes).unwrap();
    }
    served
}

#[test]
fn duplex_conversation_with_two_connections_in_the_arguments() {
    for m in METHODS {
        let (mut nums, child_nums) = pipe(true).unwrap();
        let (mut raw, child_raw) = pipe(true).unwrap();
        let mut p = Process::new(echo, (child_nums, child_raw)).with_start_method(m);
        p.start().unwrap();
        for n in [3u64, 1 << 20, 0] {
            nums.send(&n).unwrap();
            assert_eq!(nums.recv::<u64>().unwrap(), n * n, "{m}");
            // A megabyte and an empty message both survive the round trip.
            let payload: Vec<u8> = (0..(n as usize % (1 << 20) + 1)).map(|i| i as u8).collect();
            raw.send_bytes(&payload).unwrap();
            assert_eq!(raw.recv_bytes().unwrap(), payload);
        }
        nums.close();
        p.join(Some(Duration::from_secs(30))).unwrap();
        assert_eq!(p.result().unwrap(), 3, "{m}");
    }
}

#[test]
fn simplex_ends_refuse_the_wrong_direction() {
    let (mut r, mut w) = pipe(false).unwrap();
    assert!(matches!(r.send(&1), Err(ConnectionError::NotWritable)));
    assert!(matches!(w.recv::<u8>(), Err(ConnectionError::NotReadable)));
    assert!(matches!(w.poll(None), Err(ConnectionError::NotReadable)));
    w.send(&9u8).unwrap();
    assert_eq!(r.recv::<u8>().unwrap(), 9);
}

#[test]
fn too_large_messages_fail_before_writing_and_the_connection_stays_usable() {
    let (mut a, mut b) = pipe(true).unwrap();
    a.set_max_message_len(1024);
    let err = a.send_bytes(&vec![0; 2048]).unwrap_err();
    assert!(
        matches!(
            err,
            ConnectionError::TooLarge {
                len: 2048,
                max: 1024
            }
        ),
        "{err}"
    );
    let err = a.send(&vec![0u32; 1024]).unwrap_err();
    assert!(matches!(err, ConnectionError::TooLarge { .. }), "{err}");
    // Nothing was written: the next message is the first the peer sees.
    a.send(&"after").unwrap();
    assert_eq!(b.recv::<String>().unwrap(), "after");
}

#[test]
fn an_oversized_announcement_breaks_the_connection_without_allocating() {
    let (raw, sock) = UnixStream::pair().unwrap();
    let mut conn = Connection::from(sock);
    conn.set_max_message_len(1 << 20);
    (&raw)
        .write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3])
        .unwrap();
    let err = conn.recv_bytes().unwrap_err();
    assert!(matches!(err, ConnectionError::Broken(_)), "{err}");
    // Broken for good, even though more bytes could follow.
    (&raw).write_all(&[0, 0, 0, 1, 0xc0]).unwrap();
    assert!(matches!(conn.recv::<()>(), Err(ConnectionError::Broken(_))));
}

#[test]
fn a_torn_frame_is_a_typed_error_not_a_hang() {
    let (raw, sock) = UnixStream::pair().unwrap();
    let mut conn = Connection::from(sock);
    (&raw).write_all(&[0, 0, 0, 10, 1, 2, 3]).unwrap();
    drop(raw);
    let err = conn.recv_bytes().unwrap_err();
    assert!(matches!(err, ConnectionError::Broken(_)), "{err}");
}

#[test]
fn large_messages_read_past_the_buffer_keep_order_and_tear_cleanly() {
    // Large messages (read straight into their own Vec) between small ones, in order.
    let (mut a, mut b) = pipe(true).unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let writer = std::thread::spawn(move || {
        for i in 0..3u8 {
            a.send_bytes(&[i]).unwrap();
            a.send_bytes(&big[..big.len() - i as usize]).unwrap();
        }
        a.send(&"end").unwrap();
    });
    for i in 0..3u8 {
        assert_eq!(b.recv_bytes().unwrap(), [i]);
        let got = b.recv_bytes().unwrap();
        assert_eq!(got.len(), 300_000 - i as usize);
        assert!(got.iter().enumerate().all(|(j, &v)| v == (j % 251) as u8));
    }
    assert_eq!(b.recv::<String>().unwrap(), "end");
    writer.join().unwrap();

    // A large frame torn by its writer's end: a typed error, not a hang or a short message.
    let (raw, sock) = UnixStream::pair().unwrap();
    let mut conn = Connection::from(sock);
    (&raw).write_all(&200_000u32.to_be_bytes()).unwrap();
    (&raw).write_all(&vec![7u8; 100_000]).unwrap();
    drop(raw);
    let err = conn.recv_bytes().unwrap_err();
    assert!(matches!(err, ConnectionError::Broken(_)), "{err}");
}

#[test]
fn a_value_of_the_wrong_type_names_the_type_and_keeps_the_connection() {
    let (mut a, mut b) = pipe(true).unwrap();
    a.send(&"text").unwrap();
    let err = b.recv::<u32>().unwrap_err();
    match &err {
        ConnectionError::Decode { expected, .. } => assert_eq!(*expected, "u32"),
        other => panic!("{other:?}"),
    }
    a.send(&7u32).unwrap();
    assert_eq!(b.recv::<u32>().unwrap(), 7);
}

#[test]
fn recv_bytes_into_hands_back_a_message_that_does_not_fit() {
    let (mut a, mut b) = pipe(true).unwrap();
    a.send_bytes(b"0123456789").unwrap();
    let mut small = [0u8; 4];
    match b.recv_bytes_into(&mut small, 1) {
        Err(ConnectionError::BufferTooShort { message }) => assert_eq!(message, b"0123456789"),
        other => panic!("{other:?}"),
    }
}

fn send_one((value, mut conn): (u64, Connection)) {
    conn.send(&value).unwrap();
}

/// Exits when the parent closes its end of `conn`.
fn exit_on_eof(mut conn: Connection) {
    assert!(matches!(conn.recv::<()>(), Err(ConnectionError::Eof)));
}

#[test]
fn wait_returns_the_ready_objects_among_connections_and_processes() {
    let (mut c1, child1) = pipe(true).unwrap();
    let (c2, _keep2) = pipe(true).unwrap();
    let (mut release, child_release) = pipe(true).unwrap();
    let mut waiter = Process::new(exit_on_eof, child_release);
    waiter.start().unwrap();

    // Nothing is ready yet: c1 has no message, c2 never will, the waiter runs.
    let objects: [&dyn Waitable; 3] = [&c1, &c2, &waiter];
    assert!(wait(&objects, Some(Duration::ZERO)).unwrap().is_empty());

    // A message arrives on c1 (index 0), and only there: the waiter cannot exit yet.
    let mut sender = Process::new(send_one, (7u64, child1));
    sender.start().unwrap();
    assert_eq!(wait(&objects, Some(Duration::from_secs(20))).unwrap(), [0]);
    assert_eq!(c1.recv::<u64>().unwrap(), 7);
    sender.join(None).unwrap();

    // Released, the waiter exits: its sentinel (index 1 here) is ready; c2 still is not.
    release.close();
    let objects: [&dyn Waitable; 2] = [&c2, &waiter];
    assert_eq!(wait(&objects, Some(Duration::from_secs(20))).unwrap(), [1]);
    waiter.join(None).unwrap();
    assert_eq!(waiter.exitcode().unwrap(), Some(0));

    // A timeout with nothing ready returns empty, after the timeout.
    let t = Instant::now();
    assert!(
        wait(&[&c2 as &dyn Waitable], Some(Duration::from_millis(150)))
            .unwrap()
            .is_empty()
    );
    assert!(t.elapsed() >= Duration::from_millis(150));
}

fn dies_holding_a_connection(_conn: Connection) {
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_peer_killed_mid_conversation_gives_eof_not_a_hang() {
    for m in METHODS {
        let (mut ours, theirs) = pipe(true).unwrap();
        let mut p = Process::new(dies_holding_a_connection, theirs).with_start_method(m);
        p.start().unwrap();
        assert!(!ours.poll(Some(Duration::from_millis(50))).unwrap());
        p.kill().unwrap();
        p.join(None).unwrap();
        drop(p);
        assert!(
            ours.poll(Some(Duration::from_secs(10))).unwrap(),
            "{m}: EOF is readable"
        );
        assert!(
            matches!(ours.recv::<u8>(), Err(ConnectionError::Eof)),
            "{m}"
        );
        // Writing to a dead peer is an error, never a SIGPIPE.
        let err = ours.send(&1u8).unwrap_err();
        assert!(matches!(err, ConnectionError::Io(_)), "{m}: {err}");
    }
}

#[test]
fn a_connection_serializes_only_as_a_process_argument() {
    let (a, _b) = pipe(true).unwrap();
    let err = procvisor_protocol::encode_value(&a).unwrap_err();
    assert!(
        format!("{err:?}").contains("only be serialized as an argument of a process"),
        "{err:?}"
    );
    let mut closed = a;
    closed.close();
    let mut p = Process::new(dies_holding_a_connection, closed);
    assert!(p.start().unwrap_err().is_serialize());
}

fn sum_until_eof(mut conn: Connection) -> (u64, u64) {
    let (mut n, mut sum) = (0, 0);
    while let Ok((i, _)) = conn.recv::<(u64, String)>() {
        n += 1;
        sum += i;
    }
    (n, sum)
}

#[test]
fn a_batch_arrives_as_separate_messages_and_an_oversized_one_writes_nothing() {
    let (mut ours, theirs) = pipe(true).unwrap();
    let mut p = Process::new(sum_until_eof, theirs);
    p.start().unwrap();
    let batch: Vec<(u64, String)> = (0..1000).map(|i| (i, "x".repeat(32))).collect();
    ours.send_batch(&batch).unwrap();
    // One value over the maximum: the whole batch is refused and nothing is written.
    ours.set_max_message_len(64);
    let bad = vec![(1u64, "y".repeat(100)), (2, "z".to_owned())];
    assert!(matches!(
        ours.send_batch(&bad),
        Err(ConnectionError::TooLarge { .. })
    ));
    ours.send(&(5000u64, "last".to_owned())).unwrap();
    ours.close();
    p.join(Some(Duration::from_secs(20))).unwrap();
    assert_eq!(p.result().unwrap(), (1001, 999 * 1000 / 2 + 5000));
}

/// Replies with `(count, sum)` each time a `(u64::MAX, _)` marker arrives, until EOF.
fn tally_on_marker(mut conn: Connection) {
    let (mut n, mut sum) = (0u64, 0u64);
    while let Ok((i, _)) = conn.recv::<(u64, String)>() {
        if i == u64::MAX {
            conn.send(&(n, sum)).unwrap();
        } else {
            n += 1;
            sum += i;
        }
    }
}

#[test]
fn a_buffered_sender_delivers_on_flush_on_its_threshold_and_on_drop() {
    let (mut ours, theirs) = pipe(true).unwrap();
    let mut p = Process::new(tally_on_marker, theirs);
    p.start().unwrap();
    let text = "x".repeat(32);
    {
        let mut tx = ours.buffered_sender().unwrap();
        // Far more than one buffer's worth: the sends that fill it write it out.
        for i in 0..10_000u64 {
            tx.send(&(i, &text)).unwrap();
        }
        assert!(tx.buffered() < procvisor::connection::BufferedSender::FLUSH_AT);
        tx.send(&(u64::MAX, "")).unwrap();
        tx.flush().unwrap();
    }
    assert_eq!(
        ours.recv::<(u64, u64)>().unwrap(),
        (10_000, 9_999 * 10_000 / 2)
    );
    ours.set_max_message_len(64);
    {
        let mut tx = ours.buffered_sender().unwrap();
        tx.send(&(1u64, "a")).unwrap();
        // A value over the maximum is refused and leaves what is buffered intact.
        assert!(matches!(
            tx.send(&(2u64, "y".repeat(100))),
            Err(ConnectionError::TooLarge { .. })
        ));
        tx.send(&(3u64, "b")).unwrap();
        tx.send(&(u64::MAX, "")).unwrap();
        // Still in the buffer: nothing is written before the sender is dropped.
        assert!(tx.buffered() > 0);
    } // dropped: flushed
    assert!(ours.poll(Some(Duration::from_secs(20))).unwrap());
    assert_eq!(
        ours.recv::<(u64, u64)>().unwrap(),
        (10_002, 9_999 * 10_000 / 2 + 4)
    );
    // Plain sends after a buffered sender keep their order and their meaning.
    ours.send(&(5u64, "c")).unwrap();
    ours.send(&(u64::MAX, "")).unwrap();
    assert_eq!(
        ours.recv::<(u64, u64)>().unwrap(),
        (10_003, 9_999 * 10_000 / 2 + 9)
    );
    ours.close();
    p.join(Some(Duration::from_secs(20))).unwrap();
    assert_eq!(p.exitcode().unwrap(), Some(0));
}

#[test]
fn a_buffered_sender_holds_messages_until_flushed_and_refuses_a_read_only_end() {
    let (mut a, mut b) = pipe(true).unwrap();
    let mut tx = a.buffered_sender().unwrap();
    tx.send(&1u32).unwrap();
    assert!(!b.poll(Some(Duration::ZERO)).unwrap(), "still buffered");
    tx.flush().unwrap();
    assert!(b.poll(Some(Duration::from_secs(5))).unwrap());
    assert_eq!(b.recv::<u32>().unwrap(), 1);
    drop(tx);

    let (mut reader, _writer) = pipe(false).unwrap();
    assert!(matches!(
        reader.buffered_sender(),
        Err(ConnectionError::NotWritable)
    ));
    reader.close();
    assert!(matches!(
        reader.buffered_sender(),
        Err(ConnectionError::NotWritable)
    ));
    let (mut closed, _peer) = pipe(true).unwrap();
    closed.close();
    assert!(matches!(
        closed.buffered_sender(),
        Err(ConnectionError::Closed)
    ));
}
