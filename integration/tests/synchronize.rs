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
        let v = g.get(i);
        g.set(i, -v);
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
