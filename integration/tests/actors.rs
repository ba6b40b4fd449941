use std::time::Duration;

use procvisor::worker::{Signal, Status, WaitExit};
use procvisor::{ListChildren, Process};

fn sleeps(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn double(x: i64) -> i64 {
    x * 2
}

#[test]
fn join_async_inside_an_actix_system() {
    actix::System::new().block_on(async {
        let mut p = Process::new(double, 21);
        p.start().unwrap();
        let status = p.join_async().unwrap().await;
        assert!(status.success());
        assert_eq!(p.result().unwrap(), 42);
    });
}

#[test]
fn worker_address_signals_and_reports_the_exit() {
    actix::System::new().block_on(async {
        let mut p = Process::new(sleeps, 60_000).with_name("actor-owned");
        p.start().unwrap();
        let addr = p.worker().expect("a started process has a worker");
        let st = addr.send(Status).await.unwrap();
        assert_eq!(st.info.name, "actor-owned");
        assert_eq!(Some(st.info.pid), p.pid().unwrap());
        assert_eq!(st.exit, None);

        let children = procvisor::supervisor().send(ListChildren).await.unwrap();
        assert!(
            children.iter().any(|c| c.pid == st.info.pid),
            "{children:?}"
        );

        addr.send(Signal(nix::sys::signal::Signal::SIGTERM))
            .await
            .unwrap()
            .unwrap();
        let status = addr.send(WaitExit).await.unwrap();
        assert_eq!(status.exitcode(), -15);
        assert_eq!(p.exitcode().unwrap(), Some(-15));

        // Asked again after the exit, the Worker still answers, at once.
        assert_eq!(addr.send(WaitExit).await.unwrap().exitcode(), -15);
        assert_eq!(
            addr.send(Status).await.unwrap().exit.map(|s| s.exitcode()),
            Some(-15)
        );

        // The supervisor hears of the exit and forgets the child.
        let pid = st.info.pid;
        let mut gone = false;
        for _ in 0..200 {
            let children = procvisor::supervisor().send(ListChildren).await.unwrap();
            if !children.iter().any(|c| c.pid == pid) {
                gone = true;
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(gone, "the supervisor still lists {pid}");
    });
}

#[test]
fn blocking_and_async_joins_agree() {
    let mut p = Process::new(sleeps, 200);
    p.start().unwrap();
    let fut = p.join_async().unwrap();
    let waiter = std::thread::spawn(move || actix::System::new().block_on(fut));
    p.join(None).unwrap();
    let async_status = waiter.join().unwrap();
    assert_eq!(Some(async_status), p.exit_status().unwrap());
    assert!(async_status.success());
}
