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

mod mailboxes {
    use std::time::{Duration, Instant};

    use actix::dev::SendError;
    use procvisor::mailbox::{self, Call, MailboxError};
    use procvisor::{Connection, Process};

    fn square_server(conn: Connection) -> u64 {
        mailbox::serve(conn, |x: u64| x * x).unwrap()
    }

    fn slow_server(conn: Connection) -> u64 {
        mailbox::serve(conn, |ms: u64| {
            std::thread::sleep(Duration::from_millis(ms));
            ms
        })
        .unwrap()
    }

    fn text_server(conn: Connection) -> u64 {
        mailbox::serve(conn, |_: u64| "not a number".to_owned()).unwrap()
    }

    #[test]
    fn an_actor_gets_typed_replies_from_two_worker_processes() {
        let (end_a, child_a) = mailbox::channel::<u64, u64>().unwrap();
        let (end_b, child_b) = mailbox::channel::<u64, u64>().unwrap();
        let mut a = Process::new(square_server, child_a);
        let mut b = Process::new(square_server, child_b);
        a.start().unwrap();
        b.start().unwrap();
        actix::System::new().block_on(async move {
            let (a_addr, b_addr) = (end_a.start(8), end_b.start(8));
            for n in 0..200u64 {
                let addr = if n % 2 == 0 { &a_addr } else { &b_addr };
                assert_eq!(addr.send(Call::new(n)).await.unwrap().unwrap(), n * n);
            }
        });
        // The actors (and their sockets) are gone with the System: the workers see EOF.
        for p in [&a, &b] {
            p.join(Some(Duration::from_secs(20))).unwrap();
            assert_eq!(p.result().unwrap(), 100);
        }
    }

    fn sum_server(conn: Connection) -> u64 {
        mailbox::serve(conn, |v: Vec<u8>| {
            (v.len() as u64, v.iter().map(|&b| u64::from(b)).sum::<u64>())
        })
        .unwrap()
    }

    #[test]
    fn requests_larger_than_the_socket_buffer_wait_for_room_and_arrive_whole() {
        let (end, child) = mailbox::channel::<Vec<u8>, (u64, u64)>().unwrap();
        let mut p = Process::new(sum_server, child);
        p.start().unwrap();
        actix::System::new().block_on(async move {
            let addr = end.start(4);
            // 4 MiB is many times a Unix socket's buffer: the write must wait for the child
            // to read, more than once, with the reply arriving after the last piece.
            for round in 0..3u8 {
                let v: Vec<u8> = (0..4usize << 20).map(|i| (i as u8) ^ round).collect();
                let want = (v.len() as u64, v.iter().map(|&b| u64::from(b)).sum::<u64>());
                assert_eq!(addr.send(Call::new(v)).await.unwrap().unwrap(), want);
            }
            // A small one after the large ones: the stream is still in step.
            assert_eq!(
                addr.send(Call::new(vec![7u8; 3])).await.unwrap().unwrap(),
                (3, 21)
            );
        });
        p.join(Some(Duration::from_secs(20))).unwrap();
        assert_eq!(p.result().unwrap(), 4);
    }

    #[test]
    fn a_full_mailbox_refuses_try_send_and_send_waits_for_room() {
        let (end, child) = mailbox::channel::<u64, u64>().unwrap();
        let mut p = Process::new(slow_server, child);
        p.start().unwrap();
        actix::System::new().block_on(async move {
            let addr = end.start(2);
            // One slow request (300 ms in the child), then fill the mailbox. Whether or not
            // the actor has taken the first one yet, at most capacity + 1 more fit.
            let first = actix_rt::spawn(addr.send(Call::new(300)));
            let mut accepted = 0;
            let mut refused = 0;
            for _ in 0..10 {
                match addr.try_send(Call::new(0)) {
                    Ok(()) => accepted += 1,
                    Err(SendError::Full(_)) => refused += 1,
                    Err(SendError::Closed(_)) => panic!("the mailbox closed"),
                }
            }
            assert!(accepted <= 3, "accepted {accepted} beyond the capacity");
            assert!(refused >= 7, "refused only {refused}");
            // send() waits for room instead, and gets its reply.
            let t = Instant::now();
            assert_eq!(addr.send(Call::new(1)).await.unwrap().unwrap(), 1);
            assert!(t.elapsed() < Duration::from_secs(20));
            assert_eq!(first.await.unwrap().unwrap().unwrap(), 300);
        });
        p.join(Some(Duration::from_secs(20))).unwrap();
        assert_eq!(p.exitcode().unwrap(), Some(0));
    }

    #[test]
    fn a_killed_worker_fails_the_request_in_flight_and_every_later_one() {
        let (end, child) = mailbox::channel::<u64, u64>().unwrap();
        let mut p = Process::new(slow_server, child);
        p.start().unwrap();
        let pid = p.pid().unwrap().unwrap();
        actix::System::new().block_on(async move {
            let addr = end.start(4);
            // Killed before or after the request reaches it, the worker cannot answer.
            let in_flight = actix_rt::spawn(addr.send(Call::new(60_000)));
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            let err = in_flight.await.unwrap().unwrap().unwrap_err();
            assert!(matches!(err, MailboxError::WorkerGone), "{err}");
            let err = addr.send(Call::new(1)).await.unwrap().unwrap_err();
            assert!(matches!(err, MailboxError::WorkerGone), "{err}");
        });
        p.join(None).unwrap();
        assert_eq!(p.exitcode().unwrap(), Some(-9));
    }

    #[test]
    fn a_reply_of_the_wrong_type_is_a_decode_error_and_the_mailbox_goes_on() {
        let (end, child) = mailbox::channel::<u64, u64>().unwrap();
        let mut p = Process::new(text_server, child);
        p.start().unwrap();
        actix::System::new().block_on(async move {
            let addr = end.start(4);
            for _ in 0..2 {
                match addr.send(Call::new(1)).await.unwrap() {
                    Err(MailboxError::Decode { expected, .. }) => assert_eq!(expected, "u64"),
                    other => panic!("{other:?}"),
                }
            }
        });
        p.join(Some(Duration::from_secs(20))).unwrap();
        assert_eq!(p.result().unwrap(), 2);
    }
}

/// The request and reply of the echo workers below.
type EchoReq = (u64, String);

fn echo_server(conn: procvisor::Connection) -> u64 {
    procvisor::mailbox::serve(conn, |(i, s): EchoReq| (i + 1, s.to_uppercase())).expect("serve")
}

/// A started echo worker with its mailbox attached to its Worker, and that Worker.
fn attached_echo() -> (Process<u64>, actix::Addr<procvisor::worker::Worker>) {
    let (end, child_end) = procvisor::mailbox::channel::<EchoReq, EchoReq>().unwrap();
    let mut p = Process::new(echo_server, child_end);
    p.start().unwrap();
    p.attach_mailbox(end, 4).unwrap();
    let worker = p.worker().expect("started");
    (p, worker)
}

/// One echo request through a Worker address.
fn echo_call(i: u64, s: &str) -> procvisor::mailbox::Call<EchoReq, EchoReq> {
    procvisor::mailbox::Call::new((i, s.to_owned()))
}

#[test]
fn an_actor_messages_a_worker_process_through_its_worker_address() {
    use procvisor::mailbox::{Call, MailboxError};
    actix::System::new().block_on(async {
        let (p, worker) = attached_echo();

        // Many requests at once through the one Worker address: every reply is its own, in
        // the order the mailbox serves them.
        let calls: Vec<_> = (0..20u64)
            .map(|i| worker.send(echo_call(i, &format!("w{i}"))))
            .collect();
        for (i, call) in calls.into_iter().enumerate() {
            let reply = call.await.unwrap().unwrap();
            assert_eq!(reply, (i as u64 + 1, format!("W{i}")));
        }

        // Types with no mailbox attached: a typed error, not a hang or a panic.
        let err = worker
            .send(Call::<u8, u8>::new(1))
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, MailboxError::NoMailbox { .. }), "{err}");

        // Detached, the mailbox closes once its last address is gone: the child's loop
        // ends and reports how many requests it served.
        p.detach_mailbox::<EchoReq, EchoReq>().unwrap();
        let status = worker.send(WaitExit).await.unwrap();
        assert!(status.success(), "{status:?}");
        assert_eq!(p.result().unwrap(), 20);
        let err = worker.send(echo_call(0, "")).await.unwrap().unwrap_err();
        assert!(matches!(err, MailboxError::NoMailbox { .. }), "{err}");
    });
}

#[test]
fn a_worker_mailbox_fails_with_worker_gone_when_the_child_dies() {
    actix::System::new().block_on(async {
        let (p, worker) = attached_echo();
        p.kill().unwrap();
        assert_eq!(worker.send(WaitExit).await.unwrap().exitcode(), -9);
        let err = worker.send(echo_call(0, "")).await.unwrap().unwrap_err();
        assert!(
            matches!(err, procvisor::mailbox::MailboxError::WorkerGone),
            "{err}"
        );
    });
}

#[test]
fn when_the_system_a_worker_lives_on_stops_the_runtime_takes_over_its_child() {
    // Started inside a System, the child's Worker actor lives on that System's arbiter.
    // Spawned, the child is ours to reap (a forkserver child is the server's).
    let system = actix::System::new();
    let mut p = system.block_on(async {
        let mut p = Process::new(sleeps, 60_000).with_start_method(procvisor::StartMethod::Spawn);
        p.start().unwrap();
        let st = p.worker().unwrap().send(Status).await.unwrap();
        assert_eq!(st.exit, None);
        p
    });
    let pid = p.pid().unwrap().expect("started");
    // The System goes, and its actors with it, while the child runs on.
    drop(system);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    // Nobody joins: procvisor's runtime, which took over the watch, reaps the child (no
    // zombie left behind) and records how it ended.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{pid} was not reaped: {:?}",
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(p.exitcode().unwrap(), Some(-9));

    // From another System, the async join still resolves (the old Worker is gone) and the
    // supervisor has forgotten the child.
    actix::System::new().block_on(async {
        assert_eq!(p.join_async().unwrap().await.exitcode(), -9);
        let children = procvisor::supervisor().send(ListChildren).await.unwrap();
        assert!(!children.iter().any(|c| c.pid == pid), "{children:?}");
    });
    p.close().unwrap();
}
