//! A child test program: starts one sleeping child with each start method, prints their
//! pids on one line (`PIDS a b c`), then blocks until killed. The containment test kills it
//! with SIGKILL and checks that nothing it started survives.

use std::io::Write;
use std::time::Duration;

use procvisor::Process;
use procvisor_integration::{START_METHODS, sleep_forever};

fn main() {
    let mut children = Vec::new();
    for m in START_METHODS {
        let mut p = Process::new(sleep_forever, ()).with_start_method(m);
        p.start().expect("start");
        children.push(p);
    }
    let pids: Vec<String> = children
        .iter()
        .map(|p| p.pid().expect("open").expect("started").to_string())
        .collect();
    println!("PIDS {}", pids.join(" "));
    std::io::stdout().flush().expect("flush");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
