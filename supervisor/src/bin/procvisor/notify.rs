//! sd_notify(3): telling a supervisor (systemd, or procvisor itself) how we are doing.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;

/// Sends `state` (`READY=1`, `STOPPING=1`, ...) with our pid to `$NOTIFY_SOCKET`, if it is
/// set; a path, or an abstract name when it starts with '@'. Best effort, as sd_notify is.
pub(crate) fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(Path::new(&path)),
    };
    if let (Ok(sock), Ok(addr)) = (UnixDatagram::unbound(), addr) {
        let msg = format!("{state}\nMAINPID={}", std::process::id());
        let _ = sock.send_to_addr(msg.as_bytes(), &addr);
    }
}
