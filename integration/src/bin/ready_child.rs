//! A child test program for readiness: after a delay, says it is ready, then sleeps until
//! killed.
//!
//! - `ready_child notify <delay ms>`: sends junk and a `STATUS=` line to `$NOTIFY_SOCKET`
//!   at once (which must not count), then `READY=1` after the delay, as `sd_notify(3)`
//!   does (a leading `@` names an abstract socket).
//! - `ready_child tcp <port> <delay ms>`: listens on `127.0.0.1:<port>` after the delay.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

fn notify(message: &[u8]) {
    let path = std::env::var("NOTIFY_SOCKET").expect("NOTIFY_SOCKET is set");
    let addr = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(&path),
    }
    .expect("a socket address");
    let socket = UnixDatagram::unbound().expect("a datagram socket");
    socket
        .send_to_addr(message, &addr)
        .expect("send to NOTIFY_SOCKET");
}

fn millis(arg: Option<String>) -> Duration {
    Duration::from_millis(arg.and_then(|a| a.parse().ok()).expect("a delay in ms"))
}

fn main() {
    let mut args = std::env::args().skip(1);
    // Held until the process dies: the port stays open.
    let mut _listener = None;
    match args.next().as_deref() {
        Some("notify") => {
            let delay = millis(args.next());
            notify(b"\xff\xfegarbage READY=1");
            notify(b"STATUS=warming up\nREADY=0\n");
            std::thread::sleep(delay);
            notify(b"STATUS=up\nREADY=1\n");
        }
        Some("tcp") => {
            let port: u16 = args.next().and_then(|p| p.parse().ok()).expect("a port");
            let delay = millis(args.next());
            std::thread::sleep(delay);
            _listener = Some(std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind"));
        }
        other => panic!("usage: ready_child notify <ms> | tcp <port> <ms>, not {other:?}"),
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
