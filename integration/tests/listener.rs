//! Listener and Client between processes: authenticated echo over a Unix path, an
//! abstract name and TCP; wrong keys; garbage, silent and keyless peers; closing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{self as unix, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use procvisor::listener::{Address, AuthError, Client, Listener, ListenerError, client};
use procvisor::{Connection, ConnectionError, Process, StartMethod};
use serde::{Deserialize, Serialize};

const KEY: &[u8] = b"the shared authkey";

/// How long a test waits for something that should take milliseconds.
const PATIENCE: Duration = Duration::from_secs(20);

/// A Unix path no other test (or run) uses; the listener removes the file when it closes.
fn unique_path() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "procvisor-listener-{}-{n}.sock",
        std::process::id()
    ))
}

/// An abstract name no other test (or run) uses.
fn unique_name() -> Address {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    Address::Abstract(format!("procvisor-listener-{}-{n}", std::process::id()).into_bytes())
}

fn localhost() -> Address {
    "127.0.0.1:0".parse().unwrap()
}

/// What the client child saw.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Outcome {
    /// Each word as the listener echoed it back.
    Echoed(Vec<String>),
    /// The listener turned our key down.
    Rejected,
    /// Anything else, for the assertion message.
    Failed(String),
}

/// The child: connects, sends each word, collects the echoes, and hangs up.
fn echo_client((address, key, words): (Address, Option<Vec<u8>>, Vec<String>)) -> Outcome {
    let mut conn = match client(&address, key.as_deref()) {
        Ok(conn) => conn,
        Err(ListenerError::Authentication {
            source: AuthError::Rejected,
            ..
        }) => return Outcome::Rejected,
        Err(e) => return Outcome::Failed(format!("{e}: {e:?}")),
    };
    let mut echoed = Vec::new();
    for w in words {
        if let Err(e) = conn.send(&w) {
            return Outcome::Failed(format!("send: {e}"));
        }
        match conn.recv::<String>() {
            Ok(back) => echoed.push(back),
            Err(e) => return Outcome::Failed(format!("recv: {e}")),
        }
    }
    Outcome::Echoed(echoed)
}

fn words() -> Vec<String> {
    ["alpha", "beta", "", "δέλτα"].map(String::from).to_vec()
}

/// Starts a forkserver child that connects to `listener` with `key` and echoes `words()`.
fn start_client(listener: &Listener, key: Option<&[u8]>) -> Process<Outcome> {
    let args = (listener.address().clone(), key.map(<[u8]>::to_vec), words());
    let mut p = Process::new(echo_client, args).with_start_method(StartMethod::ForkServer);
    p.start().unwrap();
    p
}

/// Echoes every message on `conn` until the peer hangs up; returns how many.
fn serve(mut conn: Connection) -> usize {
    let mut n = 0;
    loop {
        match conn.recv_bytes() {
            Ok(msg) => conn.send_bytes(&msg).unwrap(),
            Err(ConnectionError::Eof) => return n,
            Err(e) => panic!("serving: {e:?}"),
        }
        n += 1;
    }
}

/// Joins a child and returns what it saw.
fn outcome(p: Process<Outcome>) -> Outcome {
    p.join(Some(PATIENCE)).unwrap();
    assert_eq!(
        p.exitcode().unwrap(),
        Some(0),
        "the client child exits cleanly"
    );
    p.result().unwrap()
}

/// A keyed listener on `address`, a child client with the same key, one echo session.
fn authenticated_echo(address: Address) {
    let listener = Listener::bind(address, Some(KEY.to_vec())).unwrap();
    let p = start_client(&listener, Some(KEY));
    let conn = listener.accept_timeout(PATIENCE).unwrap();
    assert_eq!(serve(conn), words().len());
    assert_eq!(outcome(p), Outcome::Echoed(words()));
}

#[test]
fn authenticated_echo_with_a_child_over_a_unix_path() {
    let path = unique_path();
    authenticated_echo(Address::Unix(path.clone()));
    assert!(!path.exists(), "the listener removed its socket file");
}

#[test]
fn authenticated_echo_with_a_child_over_an_abstract_name() {
    authenticated_echo(unique_name());
}

#[test]
fn authenticated_echo_with_a_child_over_tcp() {
    authenticated_echo(localhost());
}

#[test]
fn no_key_on_either_side_means_no_handshake() {
    for address in [Address::Unix(unique_path()), unique_name(), localhost()] {
        let listener = Listener::bind(address, None).unwrap();
        let p = start_client(&listener, None);
        assert_eq!(
            serve(listener.accept_timeout(PATIENCE).unwrap()),
            words().len()
        );
        assert_eq!(outcome(p), Outcome::Echoed(words()));

        // No handshake: the first frame a raw client writes is the first message.
        let Address::Tcp(addr) = listener.address() else {
            continue;
        };
        let mut raw = TcpStream::connect(addr).unwrap();
        raw.write_all(&[0, 0, 0, 2, b'h', b'i']).unwrap();
        let mut conn = listener.accept_timeout(PATIENCE).unwrap();
        assert_eq!(conn.recv_bytes().unwrap(), b"hi");
    }
}

#[test]
fn a_wrong_key_fails_on_both_sides_and_the_listener_serves_the_next_client() {
    for address in [Address::Unix(unique_path()), localhost()] {
        let listener = Listener::bind(address, Some(KEY.to_vec())).unwrap();
        let intruder = start_client(&listener, Some(b"not the key"));
        match listener.accept_timeout(PATIENCE) {
            Err(ListenerError::Authentication {
                source: AuthError::WrongDigest,
                peer,
            }) => {
                // A TCP peer has an address; a Unix client did not bind one.
                let tcp = matches!(listener.address(), Address::Tcp(_));
                assert_eq!(matches!(peer, Some(Address::Tcp(_))), tcp, "{peer:?}");
            }
            other => panic!("the listener's side of a wrong key: {other:?}"),
        }
        assert_eq!(outcome(intruder), Outcome::Rejected);

        let friend = start_client(&listener, Some(KEY));
        assert_eq!(
            serve(listener.accept_timeout(PATIENCE).unwrap()),
            words().len()
        );
        assert_eq!(outcome(friend), Outcome::Echoed(words()));
    }
}

/// Reads one frame's payload from a raw socket (the listener's challenge).
fn read_frame(mut sock: impl Read) -> Vec<u8> {
    let mut header = [0u8; 4];
    sock.read_exact(&mut header).unwrap();
    let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
    sock.read_exact(&mut payload).unwrap();
    payload
}

#[test]
fn garbage_and_silent_clients_do_not_hold_up_a_good_one() {
    let address = unique_name();
    let Address::Abstract(name) = &address else {
        unreachable!()
    };
    let raw_connect = || {
        let addr = unix::SocketAddr::from_abstract_name(name).unwrap();
        UnixStream::connect_addr(&addr).unwrap()
    };
    let mut listener = Listener::bind(address.clone(), Some(KEY.to_vec())).unwrap();
    // Long enough that a good client served at all was served "well before" it.
    let deadline = Duration::from_secs(60);
    listener.set_handshake_timeout(deadline);

    // Connected, and never a byte: half-open as far as the handshake goes.
    let silent = raw_connect();
    // A header announcing 4 GiB: refused on the header, nothing allocated.
    let mut huge = raw_connect();
    huge.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).unwrap();
    // A well-formed frame of 32 bytes that are not the digest.
    let mut guesser = raw_connect();
    guesser.write_all(&[0, 0, 0, 32]).unwrap();
    guesser.write_all(&[7; 32]).unwrap();
    // A peer that writes half a header and stalls.
    let mut trickle = raw_connect();
    trickle.write_all(&[0, 0]).unwrap();

    let started = Instant::now();
    let good = start_client(&listener, Some(KEY));
    let mut failures = Vec::new();
    let conn = loop {
        match listener.accept_timeout(PATIENCE) {
            Ok(conn) => break conn,
            Err(ListenerError::Authentication { source, .. }) => failures.push(source),
            Err(e) => panic!("accept: {e:?}"),
        }
    };
    let served_after = started.elapsed();
    assert_eq!(serve(conn), words().len());
    assert_eq!(outcome(good), Outcome::Echoed(words()));
    assert!(served_after < deadline / 4, "served after {served_after:?}");

    // The two garbage peers failed (before or after the good one was served).
    while failures.len() < 2 {
        match listener.accept_timeout(PATIENCE) {
            Err(ListenerError::Authentication { source, .. }) => failures.push(source),
            other => panic!("expected the garbage peers' failures: {other:?}"),
        }
    }
    assert!(
        failures.iter().any(|f| matches!(
            f,
            AuthError::Malformed {
                expected: "a digest",
                len: 0xffff_ffff
            }
        )),
        "{failures:?}"
    );
    assert!(
        failures.iter().any(|f| matches!(f, AuthError::WrongDigest)),
        "{failures:?}"
    );
    // The guesser was told: the challenge, then FAILURE.
    assert!(read_frame(&guesser).starts_with(b"#PROCVISOR-CHALLENGE-1#"));
    assert_eq!(read_frame(&guesser), b"#PROCVISOR-FAILURE-1#");

    // The silent and trickling peers are still in their handshakes; closing cuts them
    // short at once instead of waiting out their deadline, and their sockets close.
    assert!(matches!(
        listener.accept_timeout(Duration::from_millis(50)),
        Err(ListenerError::Timeout)
    ));
    let closing = Instant::now();
    listener.close();
    assert!(
        closing.elapsed() < deadline / 4,
        "close took {:?}",
        closing.elapsed()
    );
    for mut peer in [&silent, &trickle] {
        assert!(read_frame(peer).starts_with(b"#PROCVISOR-CHALLENGE-1#"));
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{rest:?}");
    }
    drop(huge);
}

#[test]
fn a_handshake_deadline_lets_a_silent_peer_go() {
    let listener = Listener::bind(localhost(), Some(KEY.to_vec())).unwrap();
    listener.set_handshake_timeout(Duration::from_millis(200));
    let Address::Tcp(addr) = listener.address() else {
        unreachable!()
    };
    let silent = TcpStream::connect(addr).unwrap();
    match listener.accept_timeout(PATIENCE) {
        Err(ListenerError::Authentication {
            source: AuthError::TimedOut { after },
            peer: Some(Address::Tcp(peer)),
        }) => {
            assert_eq!(after, Duration::from_millis(200));
            assert_eq!(peer, silent.local_addr().unwrap());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn mismatched_key_settings_are_typed_errors() {
    // A client with a key, a listener without: no challenge comes.
    let open = Listener::bind(localhost(), None).unwrap();
    let got = Client::new(open.address().clone())
        .authkey(KEY)
        .handshake_timeout(Duration::from_millis(200))
        .connect();
    assert!(
        matches!(
            got,
            Err(ListenerError::Authentication {
                source: AuthError::TimedOut { .. },
                ..
            })
        ),
        "{got:?}"
    );

    // A client without a key, a listener with one: its first message is no digest.
    let keyed = Listener::bind(unique_name(), Some(KEY.to_vec())).unwrap();
    let mut naive = client(keyed.address(), None).unwrap();
    let challenge = naive.recv_bytes().unwrap();
    assert!(challenge.starts_with(b"#PROCVISOR-CHALLENGE-1#"));
    naive.send(&"hello").unwrap();
    match keyed.accept_timeout(PATIENCE) {
        Err(ListenerError::Authentication {
            source:
                AuthError::Malformed {
                    expected: "a digest",
                    ..
                },
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(naive.recv_bytes().unwrap(), b"#PROCVISOR-FAILURE-1#");
}

#[test]
fn bad_input_gets_typed_errors() {
    let empty = Listener::bind(localhost(), Some(Vec::new()));
    assert!(matches!(empty, Err(ListenerError::EmptyAuthkey)));
    let empty = client(&localhost(), Some(b""));
    assert!(matches!(empty, Err(ListenerError::EmptyAuthkey)));

    let nowhere = Address::Unix("/nonexistent-procvisor-dir/x.sock".into());
    let err = Listener::bind(nowhere.clone(), None).unwrap_err();
    assert!(matches!(&err, ListenerError::Bind { address, .. } if *address == nowhere));
    assert_eq!(
        err.to_string(),
        "cannot bind /nonexistent-procvisor-dir/x.sock"
    );
    assert!(matches!(
        client(&nowhere, None),
        Err(ListenerError::Connect { .. })
    ));

    let too_long = Address::Abstract(vec![b'x'; 200]);
    assert!(matches!(
        Listener::bind(too_long.clone(), None),
        Err(ListenerError::Bind { .. })
    ));
    assert!(matches!(
        client(&too_long, None),
        Err(ListenerError::Connect { .. })
    ));

    for text in ["", "localhost:80", "127.0.0.1", "@bad\\x4", "@bad\\z"] {
        assert!(text.parse::<Address>().is_err(), "{text:?}");
    }
    for text in ["/tmp/a.sock", "./a.sock", "@name\\x00\\\\", "[::1]:80"] {
        let a: Address = text.parse().unwrap();
        assert_eq!(a.to_string(), text);
    }
    assert_eq!(Address::Unix("rel.sock".into()).to_string(), "./rel.sock");
}

#[test]
fn tcp_port_zero_reports_the_real_port() {
    let listener = Listener::bind(localhost(), None).unwrap();
    let Address::Tcp(addr) = listener.address() else {
        panic!("{:?}", listener.address())
    };
    assert_eq!(addr.ip(), std::net::Ipv4Addr::LOCALHOST);
    assert_ne!(addr.port(), 0);
    let mut conn = client(listener.address(), None).unwrap();
    conn.send(&addr.port()).unwrap();
    let mut theirs = listener.accept_timeout(PATIENCE).unwrap();
    assert_eq!(theirs.recv::<u16>().unwrap(), addr.port());
}

#[test]
fn an_accepted_tcp_connection_travels_to_a_child() {
    let listener = Listener::bind(localhost(), Some(KEY.to_vec())).unwrap();
    let mut ours = Client::new(listener.address().clone())
        .authkey(KEY)
        .connect()
        .unwrap();
    let theirs = listener.accept_timeout(PATIENCE).unwrap();
    let mut p = Process::new(serve, theirs);
    p.start().unwrap();
    for n in 0..3u32 {
        ours.send(&n).unwrap();
        assert_eq!(ours.recv::<u32>().unwrap(), n);
    }
    ours.close();
    p.join(Some(PATIENCE)).unwrap();
    assert_eq!(p.result().unwrap(), 3);
}

#[test]
fn a_unix_path_listener_removes_only_its_own_socket_file() {
    let path = unique_path();
    let mut first = Listener::bind(Address::Unix(path.clone()), None).unwrap();
    assert!(path.exists());
    first.close();
    assert!(!path.exists());
    first.close();

    // A listener whose file was replaced leaves the new one alone.
    let old = Listener::bind(Address::Unix(path.clone()), None).unwrap();
    std::fs::remove_file(&path).unwrap();
    let new = Listener::bind(Address::Unix(path.clone()), None).unwrap();
    drop(old);
    assert!(path.exists());
    let mut conn = client(new.address(), None).unwrap();
    conn.send(&1u8).unwrap();
    assert_eq!(
        new.accept_timeout(PATIENCE).unwrap().recv::<u8>().unwrap(),
        1
    );
    drop(new);
    assert!(!path.exists());
}
