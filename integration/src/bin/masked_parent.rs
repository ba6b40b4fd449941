//! A child test program: blocks SIGTERM in its main thread, the one that starts children,
//! then starts a sleeping child with each start method, terminates it, and prints how it
//! ended (`forkserver Some(-15)`). A child must not inherit the blocked signal: one that
//! did could not be terminated, and its join would time out.

use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};
use procvisor::Process;
use procvisor_integration::{START_METHODS, sleep_forever};

fn main() {
    let mut term = SigSet::empty();
    term.add(Signal::SIGTERM);
    term.thread_block().expect("block SIGTERM");
    for m in START_METHODS {
        let mut p = Process::new(sleep_forever, ()).with_start_method(m);
        p.start().expect("start");
        p.terminate().expect("terminate");
        p.join(Some(Duration::from_secs(10))).expect("join");
        let code = p.exitcode().expect("open");
        if code.is_none() {
            p.kill().expect("kill");
            p.join(None).expect("join after kill");
        }
        println!("{m} {code:?}");
    }
}
