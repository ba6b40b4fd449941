//! (module of the `tests` binary) Pool: results, life cycle, errors, and workers killed
//! under load.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use procvisor::pool::{PoolError, fallible};
use procvisor::{Pool, StartMethod};
use procvisor_integration::{pid_present, wait_until};

use crate::lifecycle::METHODS;

fn square(x: u64) -> u64 {
    x * x
}

fn mul((a, b): (u64, u64)) -> u64 {
    a * b
}

fn getpid(_: ()) -> i32 {
    std::process::id() as i32
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn boom(x: u64) -> u64 {
    if x == 7 {
        panic!("seven is unlucky");
    }
    x
}

fn parse(s: String) -> Result<u32, std::num::ParseIntError> {
    s.parse()
}

/// Kills its own worker with SIGKILL when `x` is the chosen one.
fn die_on(x: (u64, u64)) -> u64 {
    if x.0 == x.1 {
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL).unwrap();
    }
    x.0
}

fn abort_now(_: ()) -> u64 {
    std::process::abort()
}

/// Every pid gone (reaped, not a zombie) within a few seconds.
fn all_gone(pids: &[i32]) -> bool {
    wait_until(Duration::from_secs(5), || {
        pids.iter().all(|&p| !pid_present(p))
    })
}

#[test]
fn map_imap_apply_and_starmap_give_python_results() {
    for m in METHODS {
        let pool = Pool::builder()
            .processes(3)
            .start_method(m)
            .build()
            .unwrap();
        let pids = pool.pids();
        assert_eq!(pids.len(), 3, "{m}");
        let want: Vec<u64> = (0..100).map(|x| x * x).collect();
        assert_eq!(pool.map(square, 0..100, None).unwrap(), want, "{m}");
        assert_eq!(pool.map(square, 0..100, Some(1)).unwrap(), want, "{m}");
        assert_eq!(pool.map(square, 0..100, Some(1000)).unwrap(), want, "{m}");
        assert!(pool.map(square, 0..0, None).unwrap().is_empty());
        // No length up front: an iterator that only knows where it ends when it gets there.
        let odd: Vec<u64> = pool
            .map(square, (0..20).filter(|x| x % 2 == 1), None)
            .unwrap();
        assert_eq!(odd[..3], [1, 9, 25]);
        let ordered: Vec<u64> = pool
            .imap(square, 0..100, 7)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ordered, want, "{m}");
        let mut unordered: Vec<u64> = pool
            .imap_unordered(square, 0..100, 1)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        unordered.sort_unstable();
        assert_eq!(unordered, want, "{m}");
        assert_eq!(pool.apply(square, 12).unwrap(), 144);
        assert_eq!(
            pool.starmap(mul, (0..5).zip(10..15), None).unwrap(),
            [0, 11, 24, 39, 56]
        );
        assert_eq!(
            pool.starmap_async(mul, [(3, 4)], None)
                .unwrap()
                .get(None)
                .unwrap(),
            [12]
        );
        let worker = pool.apply(getpid, ()).unwrap();
        assert!(pids.contains(&worker), "{m}: {worker} not in {pids:?}");
        pool.close();
        pool.join().unwrap();
        assert!(all_gone(&pids), "{m}: workers left behind");
    }
}

#[test]
fn imap_reads_an_endless_input_lazily() {
    let pool = Pool::new(2).unwrap();
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = pulled.clone();
    let endless = (0u64..).inspect(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    let first: Vec<u64> = pool
        .imap(square, endless, 1)
        .unwrap()
        .take(1000)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(first[999], 999 * 999);
    // A bounded window ahead of the consumer, not the whole (endless) input.
    let n = pulled.load(Ordering::Relaxed);
    assert!(n < 1000 + 2 * 256 + 1, "pulled {n}");
}

#[test]
fn get_times_out_and_the_pool_stays_usable() {
    let pool = Pool::new(2).unwrap();
    let slow = pool.apply_async(nap, 2000).unwrap();
    let t0 = Instant::now();
    let err = slow.get(Some(Duration::from_millis(200))).unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert!(!slow.ready());
    assert!(slow.successful().unwrap_err().is_misuse());
    assert!(!slow.wait(Some(Duration::from_millis(10))));
    // The other worker serves at once.
    let t0 = Instant::now();
    assert_eq!(pool.apply(square, 3).unwrap(), 9);
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert_eq!(slow.get(None).unwrap(), 2000);
    assert!(slow.ready());
    assert!(slow.successful().unwrap());
}

#[test]
fn callbacks_get_the_value_or_the_error() {
    let pool = Pool::new(2).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (tx2, tx3) = (tx.clone(), tx.clone());
    let ok = pool
        .apply_async_with(square, 9, move |v| tx.send(Ok(v)).unwrap(), |_| {})
        .unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), Ok(81));
    assert_eq!(ok.get(None).unwrap(), 81);
    let _bad = pool
        .apply_async_with(
            boom,
            7,
            |_| {},
            move |e| tx2.send(Err(e.to_string())).unwrap(),
        )
        .unwrap();
    let msg = rx
        .recv_timeout(Duration::from_secs(5))
        .unwrap()
        .unwrap_err();
    assert!(msg.contains("seven is unlucky"), "{msg}");
    let _all = pool
        .map_async_with(
            square,
            0..4,
            None,
            move |v| tx3.send(Ok(v.iter().sum())).unwrap(),
            |_| {},
        )
        .unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), Ok(14));
}

#[test]
fn task_errors_carry_their_message_and_map_fails_with_the_first() {
    let pool = Pool::new(2).unwrap();
    let err = pool.apply(boom, 7).unwrap_err();
    assert!(err.is_remote());
    let remote = err.remote().unwrap();
    assert_eq!(remote.message, "seven is unlucky");
    assert!(remote.location.as_ref().unwrap().file.ends_with("pool.rs"));
    let err = pool.apply(fallible(parse), "x1".to_owned()).unwrap_err();
    assert_eq!(
        err.remote().unwrap().message,
        "invalid digit found in string"
    );
    assert_eq!(pool.apply(fallible(parse), "41".to_owned()).unwrap(), 41);
    let err = pool.map(boom, 0..100, Some(1)).unwrap_err();
    assert_eq!(err.remote().unwrap().message, "seven is unlucky");
    // imap reports per item and goes on.
    let items: Vec<Result<u64, PoolError>> = pool.imap(boom, 5..10, 1).unwrap().collect();
    assert_eq!(items.len(), 5);
    assert!(items[2].is_err() && items[3].as_ref().is_ok_and(|v| *v == 8));
    // The pool is intact.
    assert_eq!(pool.map(square, 0..3, None).unwrap(), [0, 1, 4]);
}

/// Serializes as an error: a value that cannot travel.
#[derive(Debug)]
struct Unsendable;

impl serde::Serialize for Unsendable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("unsendable"))
    }
}

impl<'de> serde::Deserialize<'de> for Unsendable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d)?;
        Ok(Unsendable)
    }
}

fn make_unsendable(_: ()) -> Unsendable {
    Unsendable
}

fn take_unsendable(_: Unsendable) -> u8 {
    1
}

#[test]
fn serde_failures_fail_the_task_and_the_pool_goes_on() {
    let pool = Pool::new(1).unwrap();
    let err = pool.apply(take_unsendable, Unsendable).unwrap_err();
    assert!(err.is_serde(), "{err}");
    let err = pool.apply(make_unsendable, ()).unwrap_err();
    assert!(err.is_serde(), "{err}");
    assert!(err.remote().unwrap().message.contains("unsendable"));
    assert_eq!(pool.apply(square, 5).unwrap(), 25);
}

#[test]
fn close_terminate_join_and_drop() {
    let pool = Pool::new(2).unwrap();
    assert!(pool.join().unwrap_err().is_misuse());
    let outstanding = pool.map_async(nap, [50, 50, 50, 50], Some(1)).unwrap();
    pool.close();
    assert!(pool.apply(square, 1).unwrap_err().is_not_running());
    assert!(
        pool.map_async(square, 0..2, None)
            .unwrap_err()
            .is_not_running()
    );
    pool.join().unwrap();
    assert_eq!(outstanding.get(None).unwrap(), [50, 50, 50, 50]);

    let pool = Pool::new(2).unwrap();
    let pids = pool.pids();
    let long = pool.apply_async(nap, 60_000).unwrap();
    let t0 = Instant::now();
    pool.terminate();
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(long.get(None).unwrap_err().is_terminated());
    assert!(pool.apply(square, 1).unwrap_err().is_not_running());
    pool.join().unwrap();
    assert!(all_gone(&pids));

    let pool = Pool::new(2).unwrap();
    let pids = pool.pids();
    let _busy = pool.apply_async(nap, 60_000).unwrap();
    drop(pool);
    assert!(all_gone(&pids), "dropping a pool leaves no worker behind");
}

#[test]
fn a_killed_worker_fails_exactly_its_tasks_and_is_replaced() {
    for m in METHODS {
        let pool = Pool::builder()
            .processes(2)
            .start_method(m)
            .build()
            .unwrap();
        let before = pool.pids();
        let results: Vec<Result<u64, PoolError>> = pool
            .imap(die_on, (0..50).map(|i| (i, 20)), 1)
            .unwrap()
            .collect();
        let failed: Vec<&PoolError> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(!failed.is_empty(), "{m}");
        for e in &failed {
            assert!(before.contains(&e.worker_pid().unwrap()), "{m}: {e}");
            assert_eq!(e.worker_status().unwrap().signal(), Some(9), "{m}: {e}");
            assert!(e.to_string().contains("SIGKILL"), "{e}");
        }
        assert!(results[20].is_err());
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok + failed.len(), 50);
        // Replaced: two workers again, one of them new.
        assert!(wait_until(Duration::from_secs(5), || pool.pids().len() == 2));
        assert_ne!(pool.pids(), before);
        let err = pool.apply(abort_now, ()).unwrap_err();
        assert_eq!(err.worker_status().unwrap().signal(), Some(6), "{m}: {err}");
        assert_eq!(pool.map(square, 0..10, None).unwrap()[9], 81);
        pool.close();
        pool.join().unwrap();
    }
}

/// Kills its worker the first time it runs (marked by a file), succeeds afterwards.
fn die_once(marker: String) -> u64 {
    if std::fs::File::create_new(&marker).is_ok() {
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL).unwrap();
    }
    1
}

#[test]
fn retries_rerun_the_tasks_of_a_killed_worker() {
    let dir = std::env::temp_dir();
    let marker = |tag: &str| {
        let p = dir.join(format!("procvisor-pool-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        p.to_string_lossy().into_owned()
    };
    let pool = Pool::builder().processes(2).retries(1).build().unwrap();
    let m = marker("retry");
    assert_eq!(pool.apply(die_once, m.clone()).unwrap(), 1);
    let _ = std::fs::remove_file(m);
    let pool = Pool::new(2).unwrap();
    let m = marker("noretry");
    let err = pool.apply(die_once, m.clone()).unwrap_err();
    assert_eq!(err.worker_status().unwrap().signal(), Some(9), "{err}");
    let _ = std::fs::remove_file(m);
}

/// Kills random workers of `pool` every `every` until `stop`; returns how many it killed.
fn killer(pool: &Pool, stop: &AtomicBool, every: Duration, max: usize) -> usize {
    let mut killed = 0;
    let mut seed = std::process::id() as usize;
    while !stop.load(Ordering::Relaxed) && killed < max {
        std::thread::sleep(every);
        let pids = pool.pids();
        if pids.is_empty() {
            continue;
        }
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let victim = pids[(seed >> 33) % pids.len()];
        if nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(victim),
            nix::sys::signal::Signal::SIGKILL,
        )
        .is_ok()
        {
            killed += 1;
        }
    }
    killed
}

fn slow_square(x: u64) -> u64 {
    // About 10 µs of work, so the map lasts long enough to be shot at.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_micros(10) {}
    x * x
}

#[test]
fn workers_killed_at_random_during_a_100k_map_never_hang_it() {
    const N: u64 = 100_000;
    // Without retries: every task is accounted for, lost ones as WorkerDied.
    let pool = Pool::new(2).unwrap();
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let (results, killed) = std::thread::scope(|s| {
        let k = s.spawn(|| killer(&pool, &stop, Duration::from_millis(30), 5));
        let results: Vec<Result<u64, PoolError>> =
            pool.imap_unordered(slow_square, 0..N, 1).unwrap().collect();
        stop.store(true, Ordering::Relaxed);
        (results, k.join().unwrap())
    });
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
    assert_eq!(results.len(), N as usize);
    let lost = results.iter().filter(|r| r.is_err()).count();
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(e.worker_pid().is_some(), "{e}");
    }
    eprintln!("killed {killed} workers, {lost} tasks lost with them");
    let map = pool.map(slow_square, 0..N, Some(1));
    if let Err(e) = &map {
        assert!(e.worker_pid().is_some(), "{e}");
    }
    drop(pool);

    // With retries: every result, in order.
    let pool = Pool::builder().processes(2).retries(10).build().unwrap();
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let (got, killed) = std::thread::scope(|s| {
        let k = s.spawn(|| killer(&pool, &stop, Duration::from_millis(30), 5));
        let got = pool.map(slow_square, 0..N, Some(1));
        stop.store(true, Ordering::Relaxed);
        (got, k.join().unwrap())
    });
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
    let got = got.unwrap();
    assert_eq!(got.len(), N as usize);
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, v)| *v == (i as u64) * (i as u64))
    );
    eprintln!("killed {killed} workers during the map with retries");
}

#[test]
fn maxtasksperchild_replaces_workers_without_losing_tasks() {
    let pool = Pool::builder()
        .processes(2)
        .maxtasksperchild(3)
        .build()
        .unwrap();
    let pids: Vec<i32> = pool.map(getpid, vec![(); 30], Some(1)).unwrap();
    assert_eq!(pids.len(), 30);
    let mut distinct = pids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() >= 10, "{distinct:?}");
    // No worker ran more than 3 tasks. (Fewer is allowed: the last tasks may be shared
    // by two fresh workers, 2 + 1.) All 30 ran: `pids` has one entry per task.
    let counts: Vec<(i32, usize)> = distinct
        .iter()
        .map(|p| (*p, pids.iter().filter(|x| *x == p).count()))
        .collect();
    assert!(
        counts.iter().all(|(_, n)| *n <= 3),
        "{counts:?} in order {pids:?}"
    );
    pool.close();
    pool.join().unwrap();
}

static INIT_VALUE: AtomicUsize = AtomicUsize::new(0);

fn init(v: usize) {
    INIT_VALUE.store(v, Ordering::Relaxed);
}

fn read_init(_: ()) -> usize {
    INIT_VALUE.load(Ordering::Relaxed)
}

fn failing_init(_: ()) -> Result<(), String> {
    Err("no database".to_owned())
}

#[test]
fn initializer_runs_first_and_a_failing_one_is_not_retried_in_a_hot_loop() {
    let pool = Pool::builder()
        .processes(2)
        .initializer(init, 42)
        .build()
        .unwrap();
    assert_eq!(pool.map(read_init, vec![(); 8], Some(1)).unwrap(), [42; 8]);
    drop(pool);

    let t0 = Instant::now();
    let pool = Pool::builder()
        .processes(2)
        .initializer(fallible(failing_init), ())
        .build()
        .unwrap();
    let err = pool.apply(square, 2).unwrap_err();
    assert!(err.is_initializer(), "{err}");
    assert_eq!(err.remote().unwrap().message, "no database");
    // Three attempts, with the backoff between them: not a hot loop, not a hang.
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(80), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(pool.apply(square, 2).unwrap_err().is_initializer());
}

#[test]
fn async_api_from_an_actix_system() {
    let pool = Pool::new(2).unwrap();
    actix::System::new().block_on(async {
        let v = pool.apply_async(square, 6).unwrap().into_future().await;
        assert_eq!(v.unwrap(), 36);
        let all = pool
            .map_async(square, 0..5, None)
            .unwrap()
            .into_future()
            .await;
        assert_eq!(all.unwrap(), [0, 1, 4, 9, 16]);
        let mut it = pool.imap(square, 0..50, 3).unwrap();
        let mut got = Vec::new();
        while let Some(v) = it.next_async().await {
            got.push(v.unwrap());
        }
        assert_eq!(got.len(), 50);
        assert_eq!(got[49], 49 * 49);
        // The same as a `Stream`, unordered, polled by hand (no futures crate here).
        let mut stream = std::pin::pin!(pool.imap_unordered(square, 0..40, 1).unwrap());
        let mut got = Vec::new();
        while let Some(v) =
            std::future::poll_fn(|cx| futures_core::Stream::poll_next(stream.as_mut(), cx)).await
        {
            got.push(v.unwrap());
        }
        got.sort_unstable();
        assert_eq!(got, (0..40u64).map(|x| x * x).collect::<Vec<_>>());
    });
}

#[test]
fn spawn_start_method_pool_serves_too() {
    let pool = Pool::builder()
        .processes(1)
        .start_method(StartMethod::Spawn)
        .build()
        .unwrap();
    assert_eq!(pool.apply(square, 11).unwrap(), 121);
}
