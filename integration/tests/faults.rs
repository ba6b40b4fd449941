use std::time::Duration;

use procvisor::Process;

use crate::lifecycle::METHODS;

/// Plays a broken child: writes `bytes` onto its own control socket, then waits to be
/// killed (it would sleep for a minute otherwise).
fn write_garbage(bytes: Vec<u8>) {
    assert!(procvisor_worker::run::__write_to_control(&bytes));
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn oversized_frame_from_child_is_a_protocol_error_and_the_child_is_killed() {
    for m in METHODS {
        // A header announcing 4 GiB - 1: must be refused on the header alone.
        let mut p =
            Process::new(write_garbage, vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3]).with_start_method(m);
        p.start().unwrap();
        p.join(Some(Duration::from_secs(30))).unwrap();
        assert_eq!(p.exitcode().unwrap(), Some(-9), "{m}: killed by the parent");
        let err = p.result().unwrap_err();
        assert!(err.is_protocol(), "{m}: {err}");
    }
}

#[test]
fn malformed_frame_from_child_is_a_protocol_error() {
    for m in METHODS {
        // A whole frame whose payload is not msgpack (0xc1 is never used).
        let mut p = Process::new(write_garbage, vec![0, 0, 0, 2, 0xc1, 0xc1]).with_start_method(m);
        p.start().unwrap();
        p.join(Some(Duration::from_secs(30))).unwrap();
        assert_eq!(p.exitcode().unwrap(), Some(-9), "{m}");
        assert!(p.result().unwrap_err().is_protocol(), "{m}");
    }
}

fn dies_mid_frame(_: ()) {
    // Half a frame, then death: the parent must see a truncated report, not hang.
    assert!(procvisor_worker::run::__write_to_control(&[
        0, 0, 0, 50, 0x81
    ]));
    std::process::exit(3);
}

#[test]
fn torn_frame_then_exit_is_reported_not_hung() {
    for m in METHODS {
        let mut p = Process::new(dies_mid_frame, ()).with_start_method(m);
        p.start().unwrap();
        p.join(Some(Duration::from_secs(30))).unwrap();
        assert_eq!(p.exitcode().unwrap(), Some(3), "{m}");
        assert!(p.result().unwrap_err().is_protocol(), "{m}");
    }
}
