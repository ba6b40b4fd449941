use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use procvisor::{Process, StartMethod};

/// The methods every test runs under; `fork` has its own binary (`fork_method.rs`).
pub(crate) const METHODS: [StartMethod; 2] = [StartMethod::ForkServer, StartMethod::Spawn];

fn square(x: u64) -> u64 {
    x * x
}

fn exit_with(code: i32) {
    std::process::exit(code);
}

fn panics(msg: String) {
    panic!("{msg}");
}

fn sleeps(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn aborts(_: ()) {
    std::process::abort();
}

#[allow(unconditional_recursion)]
fn overflow(depth: u64) -> u64 {
    let pad = std::hint::black_box([depth; 64]);
    overflow(pad[3] + 1) + pad[7]
}

fn big_result(n: usize) -> Vec<u8> {
    vec![7u8; n]
}

#[test]
fn result_and_exitcode_zero() {
    for m in METHODS {
        let mut p = Process::new(square, 12).with_start_method(m);
        assert_eq!(p.exitcode().unwrap(), None, "{m}: not started");
        assert!(!p.is_alive().unwrap());
        p.start().unwrap();
        assert!(p.pid().unwrap().is_some());
        p.join(None).unwrap();
        assert_eq!(p.exitcode().unwrap(), Some(0), "{m}");
        assert!(!p.is_alive().unwrap());
        assert_eq!(p.result().unwrap(), 144, "{m}");
    }
}

fn returns_nothing(_: ()) {}

fn exits_zero_without_its_value(_: ()) -> u8 {
    std::process::exit(0)
}

#[test]
fn a_target_returning_nothing_succeeds_on_a_clean_exit() {
    for m in METHODS {
        // It returned: its child writes no report, and the clean exit is the result.
        let mut p = Process::new(returns_nothing, ()).with_start_method(m);
        p.start().unwrap();
        p.join(None).unwrap();
        assert_eq!(p.exitcode().unwrap(), Some(0), "{m}");
        p.result().unwrap();
        // It left with exit(0): a success too, as in Python.
        let mut p = Process::new(exit_with, 0).with_start_method(m);
        p.start().unwrap();
        p.join(None).unwrap();
        assert_eq!(p.exitcode().unwrap(), Some(0), "{m}");
        p.result().unwrap();
        // A target with a value to return has none when it leaves with exit(0).
        let mut p = Process::new(exits_zero_without_its_value, ()).with_start_method(m);
        p.start().unwrap();
        p.join(None).unwrap();
        let err = p.result().unwrap_err();
        assert_eq!(err.exitcode(), Some(0), "{m}: {err}");
        assert!(!err.is_remote() && !err.is_protocol(), "{m}: {err}");
    }
}

#[test]
fn explicit_exit_code_is_kept() {
    for m in METHODS {
        let mut p = Process::new(exit_with, 7).with_start_method(m);
        p.start().unwrap();
        p.join(None).unwrap();
        assert_eq!(p.exitcode().unwrap(), Some(7), "{m}");
        let err = p.result().unwrap_err();
        assert_eq!(err.exitcode(), Some(7), "{m}: {err}");
    }
}

#[test]
fn panic_reaches_parent_with_message_and_location() {
    for m in METHODS {
        let mut p = Process::new(panics, "it broke".to_owned()).with_start_method(m);
        p.start().unwrap();
        p.join(None).unwrap();
        assert_eq!(p.exitcode().unwrap(), Some(1), "{m}");
        let err = p.result().unwrap_err();
        let remote = err.remote().expect("a remote error");
        assert_eq!(remote.message, "it broke");
        let loc = remote.location.as_ref().expect("a location");
        assert!(loc.file.ends_with("lifecycle.rs"), "{loc}");
        assert!(loc.line > 0);
    }
}

#[test]
fn death_by_signal_is_minus_signum() {
    for m in METHODS {
        // abort → SIGABRT
        let mut p = Process::new(aborts, ()).with_start_method(m);
        p.start().unwrap();
        p.join(Some(Duration::from_secs(20))).unwrap();
        assert_eq!(p.exitcode().unwrap(), Some(-6), "{m}: abort");
        assert_eq!(p.result().unwrap_err().exitcode(), Some(-6));

        // stack overflow → SIGSEGV (no Rust runtime guard page handler before main)
        let mut p = Process::new(overflow, 0).with_start_method(m);
        p.start().unwrap();
        p.join(Some(Duration::from_secs(20))).unwrap();
        let code = p.exitcode().unwrap();
        assert!(
            code == Some(-11) || code == Some(-6),
            "{m}: overflow gave {code:?}"
        );

        // kill → SIGKILL, terminate → SIGTERM
        for (how, want) in [("kill", -9), ("terminate", -15)] {
            let mut p = Process::new(sleeps, 60_000).with_start_method(m);
            p.start().unwrap();
            if how == "kill" {
                p.kill().unwrap();
            } else {
                p.terminate().unwrap();
            }
            p.join(Some(Duration::from_secs(20))).unwrap();
            assert_eq!(p.exitcode().unwrap(), Some(want), "{m}: {how}");
            let status = p.exit_status().unwrap().unwrap();
            assert_eq!(status.signal(), Some(-want));
        }
    }
}

#[test]
fn join_timeout_returns_while_alive() {
    for m in METHODS {
        let mut p = Process::new(sleeps, 60_000).with_start_method(m);
        p.start().unwrap();
        let t = Instant::now();
        p.join(Some(Duration::from_millis(200))).unwrap();
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(200),
            "{m}: returned early {waited:?}"
        );
        assert!(
            waited < Duration::from_secs(5),
            "{m}: returned late {waited:?}"
        );
        assert!(p.is_alive().unwrap());
        assert_eq!(p.exitcode().unwrap(), None);
        assert!(p.result().unwrap_err().is_running());
        p.kill().unwrap();
        p.join(None).unwrap();
        assert_eq!(p.exitcode().unwrap(), Some(-9));
    }
}

/// Exits when the parent closes its end of `conn`.
fn exit_on_eof(mut conn: procvisor::Connection) {
    assert!(conn.recv::<()>().is_err());
}

#[test]
fn sentinel_becomes_readable_at_exit() {
    for m in METHODS {
        let (mut release, theirs) = procvisor::pipe(true).unwrap();
        let mut p = Process::new(exit_on_eof, theirs).with_start_method(m);
        p.start().unwrap();
        let sentinel = p.sentinel().unwrap();
        // The child cannot exit before we release it: not readable yet.
        let mut fds = [PollFd::new(sentinel, PollFlags::POLLIN)];
        assert_eq!(
            poll(&mut fds, PollTimeout::from(50u16)).unwrap(),
            0,
            "{m}: readable too early"
        );
        release.close();
        let mut fds = [PollFd::new(sentinel, PollFlags::POLLIN)];
        assert_eq!(
            poll(&mut fds, PollTimeout::from(20_000u16)).unwrap(),
            1,
            "{m}"
        );
        p.join(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(p.exitcode().unwrap(), Some(0));
    }
}

#[test]
fn second_start_and_misuse_are_errors() {
    for m in METHODS {
        let mut p = Process::new(sleeps, 60_000).with_start_method(m);
        assert!(p.join(None).unwrap_err().is_not_started());
        assert!(p.terminate().unwrap_err().is_not_started());
        assert!(p.sentinel().unwrap_err().is_not_started());
        p.set_daemon(true).unwrap();
        p.start().unwrap();
        assert!(p.start().is_err(), "{m}: second start");
        assert!(p.set_daemon(false).is_err(), "{m}: daemon after start");
        let err = p.close().unwrap_err();
        assert!(err.is_running(), "{m}: close while running: {err}");
        p.kill().unwrap();
        p.join(None).unwrap();
        p.close().unwrap();
        p.close().unwrap();
        for err in [
            p.join(None).unwrap_err(),
            p.pid().unwrap_err(),
            p.kill().unwrap_err(),
            p.start().unwrap_err(),
            p.exitcode().unwrap_err(),
            p.is_alive().unwrap_err(),
        ] {
            assert!(err.is_closed(), "{m}: {err}");
            assert_eq!(err.to_string(), "process object is closed");
        }
    }
}

/// A type whose serialization always fails.
struct Unserializable;

impl serde::Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("refuses to serialize"))
    }
}

impl<'de> serde::Deserialize<'de> for Unserializable {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Ok(Unserializable)
    }
}

fn takes_unserializable(_: Unserializable) {}

#[test]
fn unserializable_arguments_fail_start_and_leave_no_process() {
    for m in METHODS {
        let name = format!("unserializable-{m}");
        let mut p = Process::new(takes_unserializable, Unserializable)
            .with_start_method(m)
            .with_name(name.clone());
        let err = p.start().unwrap_err();
        assert!(err.is_serialize(), "{m}: {err}");
        assert_eq!(p.pid().unwrap(), None, "{m}: no process was created");
        assert!(!procvisor::active_children().iter().any(|c| c.name == name));
    }
}

#[test]
fn large_results_do_not_deadlock_the_join() {
    for m in METHODS {
        // Far beyond a socket buffer: the child blocks on its write until join drains it.
        let n = 8 << 20;
        let mut p = Process::new(big_result, n).with_start_method(m);
        p.start().unwrap();
        p.join(Some(Duration::from_secs(60))).unwrap();
        assert_eq!(p.exitcode().unwrap(), Some(0), "{m}");
        let v = p.result().unwrap();
        assert_eq!(v.len(), n);
        assert!(v.iter().all(|b| *b == 7));
    }
}
