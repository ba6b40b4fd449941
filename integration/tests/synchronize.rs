//! (module of the `tests` binary)
use std::time::{Duration, Instant};

use procvisor::synchronize::AcquireError;
use procvisor::{Array, Connection, Event, Lock, Process, Value, pipe};

use crate::lifecycle::METHODS;

fn increment((counter, n): (Value<i64>, u32)) {
    for _ in 0..n {
        *counter.get_lock().unwrap() += 1;
    }
}

#[test]
fn two_processes_incrementing_under_the_lock_lose_no_update() {
    for m in METHODS {
        let counter = Value::new(0i64).unwrap();
        let mut ps: Vec<Process> = (0..2)
            .map(|_| Process::new(increment, (counter.clone(), 20_000)).with_start_method(m))
            .collect();
        for p in &mut ps {
            p.start().unwrap();
        }
        for p in &ps {
            p.join(Some(Duration::from_secs(60))).unwrap();
            assert_eq!(p.exitcode().unwrap(), Some(0));
        }
        assert_eq!(counter.get().unwrap(), 40_000, "{m}");
    }
}

fn change((num, arr): (Value<f64>, Array<i32>)) {
    num.set(3.333).unwrap();
    let mut g = arr.get_lock().unwrap();
    for i in 0..g.len() {
        let v = g.get(i).unwrap();
        g.set(i, -v).unwrap();
    }
}

#[test]
fn a_child_changes_a_value_and_an_array_the_parent_sees() {
    // The seed's sharedctypes example: 3.333 and [0, -1, -2, -3, -4, -5].
    for m in METHODS {
        let num = Value::new(0.0f64).unwrap();
        let arr = Array::new(&[0i32, 1, 2, 3, 4, 5]).unwrap();
        let mut p = Process::new(change, (num.clone(), arr.clone())).with_start_method(m);
        p.start().unwrap();
        p.join(None).unwrap();
        assert_eq!(num.get().unwrap(), 3.333);
        assert_eq!(arr.to_vec().unwrap(), [0, -1, -2, -3, -4, -5], "{m}");
    }
}

/// Indexes at and past the end, through the array and through its guard: each call's
/// `(index, len)` error, or `None` where a call wrongly succeeded.
fn index_past_the_end(arr: Array<i32>) -> Vec<Option<(usize, usize)>> {
    let of = |e: procvisor::synchronize::SyncError| e.index_out_of_range();
    let len = arr.len();
    let mut seen = vec![
        arr.get(len).err().and_then(of),
        arr.set(len, -1).err().and_then(of),
        arr.set(usize::MAX, -1).err().and_then(of),
    ];
    let mut g = arr.get_lock().unwrap();
    seen.push(g.get(len).err());
    seen.push(g.set(len + 1, -1).err());
    seen.push(g.set(usize::MAX, -1).err());
    seen.into_iter()
        .map(|e| e.map(|e| (e.index, e.len)))
        .collect()
}

#[test]
fn an_array_index_out_of_range_is_an_error_that_touches_nothing() {
    for m in METHODS {
        for initial in [&[0i32, 1, 2, 3, 4, 5][..], &[]] {
            let arr = Array::new(initial).unwrap();
            let n = initial.len();
            let mut p = Process::new(index_past_the_end, arr.clone()).with_start_method(m);
            p.start().unwrap();
            p.join(Some(Duration::from_secs(20))).unwrap();
            assert_eq!(p.exitcode().unwrap(), Some(0), "{m}: no panic in the child");
            let want = [n, n, usize::MAX, n, n + 1, usize::MAX].map(|i| Some((i, n)));
            assert_eq!(p.result().unwrap(), want, "{m}");
            assert_eq!(arr.to_vec().unwrap(), initial, "{m}: the data is untouched");
            // The guard was dropped on the error paths: the lock is free for the parent.
            let g = arr.get_lock().unwrap();
            assert_eq!(g.to_vec(), initial, "{m}");
        }
    }
}

fn hold_and_hang((lock, mut ready): (Lock, Connection)) {
    lock.acquire().unwrap().forget();
    ready.send(&()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_lock_whose_holder_died_is_recovered_not_deadlocked() {
    // CPython's Lock stays held for ever here.
    for m in METHODS {
        let lock = Lock::new().unwrap();
        let (mut ready, theirs) = pipe(true).unwrap();
        let mut p = Process::new(hold_and_hang, (lock.clone(), theirs)).with_start_method(m);
        p.start().unwrap();
        ready.recv::<()>().unwrap();
        // Held elsewhere: a timed acquire gives up after its timeout.
        let t = Instant::now();
        assert!(
            lock.acquire_timeout(Duration::from_millis(100))
                .unwrap()
                .is_none()
        );
        assert!(t.elapsed() >= Duration::from_millis(100));
        p.kill().unwrap();
        p.join(None).unwrap();
        // The next acquirer is told, and holds the lock.
        match lock.acquire() {
            Err(AcquireError::OwnerDied(guard)) => drop(guard),
            other => panic!("{m}: expected OwnerDied, got {other:?}"),
        }
        // From then on the lock is an ordinary lock again.
        drop(lock.acquire().unwrap());
        assert!(
            lock.release().is_err(),
            "releasing an unheld lock is an error"
        );
    }
}

fn wait_for_event((event, ms): (Event, u64)) -> bool {
    event.wait(Some(Duration::from_millis(ms)))
}

#[test]
fn an_event_set_in_one_process_wakes_a_waiter_in_another() {
    for m in METHODS {
        let event = Event::new().unwrap();
        let mut waiter = Process::new(wait_for_event, (event.clone(), 20_000)).with_start_method(m);
        waiter.start().unwrap();
        event.set();
        waiter.join(Some(Duration::from_secs(20))).unwrap();
        assert!(waiter.result().unwrap(), "{m}: the waiter saw the event");
        // Cleared, a wait times out and says so.
        event.clear();
        let mut late = Process::new(wait_for_event, (event.clone(), 100)).with_start_method(m);
        late.start().unwrap();
        late.join(Some(Duration::from_secs(20))).unwrap();
        assert!(!late.result().unwrap(), "{m}");
    }
}

fn inside_with_permit((sem, stats): (procvisor::Semaphore, Array<i64>)) {
    for _ in 0..20 {
        assert!(sem.acquire(Some(Duration::from_secs(20))).unwrap());
        {
            let mut g = stats.get_lock().unwrap();
            let inside = g.get(0).unwrap() + 1;
            g.set(0, inside).unwrap();
            let most = g.get(1).unwrap().max(inside);
            g.set(1, most).unwrap();
        }
        std::thread::sleep(Duration::from_millis(1));
        {
            let mut g = stats.get_lock().unwrap();
            let inside = g.get(0).unwrap() - 1;
            g.set(0, inside).unwrap();
        }
        sem.release().unwrap();
    }
}

#[test]
fn a_semaphore_admits_at_most_its_value_across_processes() {
    let sem = procvisor::Semaphore::new(2).unwrap();
    let stats = Array::new(&[0i64, 0]).unwrap(); // [inside now, most inside at once]
    let mut ps: Vec<Process> = (0..5)
        .map(|_| Process::new(inside_with_permit, (sem.clone(), stats.clone())))
        .collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    for p in &ps {
        p.join(Some(Duration::from_secs(60))).unwrap();
        assert_eq!(p.exitcode().unwrap(), Some(0));
    }
    let v = stats.to_vec().unwrap();
    let (inside, most) = (v[0], v[1]);
    assert_eq!(inside, 0);
    assert!(
        (1..=2).contains(&most),
        "{most} processes held a permit at once"
    );
    assert_eq!(sem.value(), 2);
    let bounded = procvisor::Semaphore::bounded(1).unwrap();
    assert!(
        bounded.release().is_err(),
        "over-release of a bounded semaphore"
    );
}

fn rlock_twice(lock: procvisor::RLock) -> bool {
    let outer = lock.acquire().unwrap();
    let inner = lock.acquire().unwrap();
    drop(inner);
    drop(outer);
    true
}

fn hold_rlock_and_hang((lock, mut ready): (procvisor::RLock, Connection)) {
    lock.acquire().unwrap().forget();
    ready.send(&()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn an_rlock_is_reentrant_owned_and_robust() {
    let lock = procvisor::RLock::new().unwrap();
    let mut p = Process::new(rlock_twice, lock.clone());
    p.start().unwrap();
    p.join(Some(Duration::from_secs(20))).unwrap();
    assert!(p.result().unwrap(), "the owner took it twice");

    let (mut ready, theirs) = pipe(true).unwrap();
    let mut holder = Process::new(hold_rlock_and_hang, (lock.clone(), theirs));
    holder.start().unwrap();
    ready.recv::<()>().unwrap();
    // Only the owner releases.
    assert!(lock.release().is_err());
    assert!(
        lock.acquire_timeout(Duration::from_millis(50))
            .unwrap()
            .is_none()
    );
    holder.kill().unwrap();
    holder.join(None).unwrap();
    assert!(matches!(lock.acquire(), Err(AcquireError::OwnerDied(_))));
    drop(lock.acquire().unwrap());
}

fn wait_until_five((cond, count): (procvisor::Condition, Value<i64>)) -> bool {
    let guard = cond.acquire().unwrap();
    let (_guard, ok) = cond
        .wait_for(
            guard,
            || count.get().unwrap() >= 5,
            Some(Duration::from_secs(20)),
        )
        .unwrap();
    ok
}

#[test]
fn a_condition_wakes_a_waiter_in_another_process() {
    let cond = procvisor::Condition::new().unwrap();
    let count = Value::new(0i64).unwrap();
    let mut waiter = Process::new(wait_until_five, (cond.clone(), count.clone()));
    waiter.start().unwrap();
    for _ in 0..5 {
        let _g = cond.acquire().unwrap();
        *count.get_lock().unwrap() += 1;
        cond.notify_all();
    }
    let t = Instant::now();
    waiter.join(Some(Duration::from_secs(30))).unwrap();
    assert!(waiter.result().unwrap(), "the waiter saw the count reach 5");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "woken, not timed out"
    );

    // Nobody notifies: wait_for gives up at its timeout and says so.
    let guard = cond.acquire().unwrap();
    let t = Instant::now();
    let (_g, ok) = cond
        .wait_for(guard, || false, Some(Duration::from_millis(100)))
        .unwrap();
    assert!(!ok);
    assert!(t.elapsed() >= Duration::from_millis(100));
}

fn meet(barrier: procvisor::Barrier) -> Result<usize, String> {
    barrier
        .wait(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())
}

#[test]
fn a_barrier_releases_all_parties_with_distinct_indices() {
    let barrier = procvisor::Barrier::new(3).unwrap();
    let mut ps: Vec<Process<Result<usize, String>>> = (0..3)
        .map(|_| Process::new(meet, barrier.clone()))
        .collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    let mut got: Vec<usize> = ps
        .iter()
        .map(|p| {
            p.join(Some(Duration::from_secs(30))).unwrap();
            p.result().unwrap().unwrap()
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, [0, 1, 2]);
    assert!(!barrier.broken());
}

#[test]
fn a_party_that_dies_waiting_breaks_the_barrier_instead_of_hanging() {
    // CPython's other parties wait for ever here.
    let barrier = procvisor::Barrier::new(3).unwrap();
    let mut survivor = Process::new(meet, barrier.clone());
    let mut victim = Process::new(meet, barrier.clone());
    survivor.start().unwrap();
    victim.start().unwrap();
    assert!(procvisor_integration::wait_until(
        Duration::from_secs(20),
        || barrier.n_waiting() == 2
    ));
    victim.kill().unwrap();
    victim.join(None).unwrap();
    let t = Instant::now();
    survivor.join(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(
        survivor.result().unwrap(),
        Err("the barrier is broken".to_owned())
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "broke after {:?}",
        t.elapsed()
    );
    assert!(barrier.broken());
    barrier.reset();
    assert!(!barrier.broken());
}

#[test]
fn a_barrier_wait_that_times_out_breaks_it() {
    let barrier = procvisor::Barrier::new(2).unwrap();
    let t = Instant::now();
    assert!(barrier.wait(Some(Duration::from_millis(100))).is_err());
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert!(barrier.broken());
}

fn hold_permit_and_hang((sem, mut ready): (procvisor::Semaphore, Connection)) {
    assert!(sem.acquire(None).unwrap());
    ready.send(&()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_semaphore_permit_whose_holder_was_killed_comes_back() {
    // CPython's acquirer waits for ever here: the permit died with its holder.
    for m in METHODS {
        let sem = procvisor::Semaphore::bounded(1).unwrap();
        let (mut ready, theirs) = pipe(true).unwrap();
        let mut holder =
            Process::new(hold_permit_and_hang, (sem.clone(), theirs)).with_start_method(m);
        holder.start().unwrap();
        ready.recv::<()>().unwrap();
        // Held by a live process: a timed acquire gives up after its timeout.
        let t = Instant::now();
        assert!(!sem.acquire(Some(Duration::from_millis(100))).unwrap());
        assert!(t.elapsed() >= Duration::from_millis(100));
        // Killed while this process already waits for the permit: the waiter notices
        // within its check interval, not never.
        let killer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            holder.kill().unwrap();
            holder.join(None).unwrap();
        });
        let t = Instant::now();
        let got = sem.acquire(Some(Duration::from_secs(20)));
        assert!(
            matches!(got, Err(AcquireError::OwnerDied(()))),
            "{m}: expected OwnerDied, got {got:?}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{m}: {:?}",
            t.elapsed()
        );
        killer.join().unwrap();
        // The recovered permit is ours, and an ordinary one from then on.
        assert_eq!(sem.value(), 0);
        sem.release().unwrap();
        assert_eq!(sem.value(), 1);
        assert!(sem.release().is_err(), "{m}: still bounded");
    }
}

#[test]
fn holders_past_the_tracked_table_get_untracked_permits_and_the_rest_come_back() {
    // One holder more than the table records, all holding at once, all killed.
    let n = procvisor::Semaphore::TRACKED_HOLDERS + 1;
    let sem = procvisor::Semaphore::new(n as u32).unwrap();
    let mut holders = Vec::new();
    for _ in 0..n {
        let (mut ready, theirs) = pipe(true).unwrap();
        let mut p = Process::new(hold_permit_and_hang, (sem.clone(), theirs));
        p.start().unwrap();
        ready.recv::<()>().unwrap();
        holders.push(p);
    }
    assert_eq!(
        sem.value(),
        0,
        "every holder got its permit, tracked or not"
    );
    for p in &holders {
        p.kill().unwrap();
    }
    for p in &mut holders {
        p.join(None).unwrap();
    }
    // The next acquirer takes back the tracked permits at once; the untracked one is lost.
    let got = sem.acquire(Some(Duration::from_secs(20)));
    assert!(matches!(got, Err(AcquireError::OwnerDied(()))), "{got:?}");
    assert_eq!(
        sem.value() as usize,
        procvisor::Semaphore::TRACKED_HOLDERS - 1
    );
}

fn take_permit_and_exit(sem: procvisor::Semaphore) -> bool {
    sem.acquire(Some(Duration::from_secs(20))).unwrap()
}

#[test]
fn a_permit_kept_by_a_process_that_exits_comes_back_unless_counting() {
    // Tracked (the default): an exit while holding gives the permit back.
    let sem = procvisor::Semaphore::new(1).unwrap();
    let mut p = Process::new(take_permit_and_exit, sem.clone());
    p.start().unwrap();
    p.join(Some(Duration::from_secs(20))).unwrap();
    assert!(p.result().unwrap());
    assert_eq!(sem.value(), 0, "held by a process that no longer exists");
    assert!(matches!(
        sem.try_acquire(),
        Err(AcquireError::OwnerDied(()))
    ));
    // Counting: a consumer's permit is consumed for good.
    let items = procvisor::Semaphore::counting(1).unwrap();
    let mut p = Process::new(take_permit_and_exit, items.clone());
    p.start().unwrap();
    p.join(Some(Duration::from_secs(20))).unwrap();
    assert!(p.result().unwrap());
    assert!(!items.try_acquire().unwrap());
    assert_eq!(items.value(), 0);
}
