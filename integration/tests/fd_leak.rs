//! 10,000 start/join cycles leave the parent's descriptor count where it started and its
//! RSS bounded. A binary of its own: nothing else may open descriptors meanwhile.

use std::time::Duration;

use procvisor::{Process, StartMethod};
use procvisor_integration::{open_fds, rss_kib};

fn noop(_: ()) {}

#[test]
fn ten_thousand_cycles_leak_no_descriptor_and_no_memory() {
    // Warm up: the runtime thread, the spawner thread and the forkserver open what they
    // keep for the life of the program.
    for m in [StartMethod::ForkServer, StartMethod::Spawn] {
        let mut p = Process::new(noop, ()).with_start_method(m);
        p.start().unwrap();
        p.join(None).unwrap();
    }
    let me = std::process::id() as i32;
    let fds_before = open_fds();
    let mut rss_after_warmup = 0;
    for i in 0..10_000 {
        let mut p = Process::new(noop, ());
        p.start().unwrap();
        p.join(Some(Duration::from_secs(30))).unwrap();
        assert_eq!(p.exitcode().unwrap(), Some(0), "cycle {i}");
        p.close().unwrap();
        if i == 1_000 {
            rss_after_warmup = rss_kib(me).unwrap();
        }
    }
    // The Worker actors drop their copies of each child's descriptors as they stop, on the
    // runtime thread: give them until a deadline to finish. The count taken before may still
    // include a warm-up child's descriptors whose actor had not stopped yet, so "no more
    // than before" is the test: a leak over 10,000 cycles would show by thousands.
    assert!(
        procvisor_integration::wait_until(Duration::from_secs(10), || open_fds() <= fds_before),
        "descriptors: {} before, {} after",
        fds_before,
        open_fds()
    );
    let rss_end = rss_kib(me).unwrap();
    // 9,000 more cycles may not grow the heap by more than allocator noise.
    assert!(
        rss_end <= rss_after_warmup + 4096,
        "RSS grew from {rss_after_warmup} KiB to {rss_end} KiB"
    );
}
