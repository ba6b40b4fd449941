//! (module of the `tests` binary)
use std::collections::HashMap;
use std::time::{Duration, Instant};

use procvisor::connection::{ConnectionError, Waitable, pipe, wait};
use procvisor::queues::{GetError, PutError};
use procvisor::{Connection, JoinableQueue, Process, Queue};
use procvisor_integration::wait_until;

use crate::lifecycle::METHODS;

fn put_three((q, id): (Queue<(u32, String)>, u32)) {
    q.put((id, format!("from {id}"))).unwrap();
}

#[test]
fn three_processes_put_and_main_gets_three() {
    for m in METHODS {
        let q = Queue::new(0).unwrap();
        let mut ps: Vec<Process> = (0..3)
            .map(|i| Process::new(put_three, (q.clone(), i)).with_start_method(m))
            .collect();
        for p in &mut ps {
            p.start().unwrap();
        }
        let mut got: Vec<u32> = (0..3).map(|_| q.get().unwrap().0).collect();
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2], "{m}");
        for p in &ps {
            p.join(None).unwrap();
            assert_eq!(p.exitcode().unwrap(), Some(0));
        }
        assert!(q.empty());
    }
}

fn put_many((q, n): (Queue<u64>, u64)) {
    for i in 0..n {
        q.put(i).unwrap();
    }
}

#[test]
fn a_producer_joined_before_the_queue_is_drained_does_not_deadlock() {
    // CPython deadlocks here: its child cannot exit until its feeder thread has flushed
    // every item into a pipe nobody reads.
    for m in METHODS {
        let q = Queue::new(0).unwrap();
        let mut p = Process::new(put_many, (q.clone(), 20_000)).with_start_method(m);
        p.start().unwrap();
        p.join(Some(Duration::from_secs(30))).unwrap();
        assert_eq!(p.exitcode().unwrap(), Some(0), "{m}: the producer exited");
        // Everything the child put is there, in order, and empty() knew it at once.
        assert!(!q.empty());
        assert_eq!(q.qsize(), 20_000);
        for i in 0..20_000 {
            assert_eq!(q.get_nowait().unwrap(), i);
        }
        assert!(matches!(q.get_nowait(), Err(GetError::Empty)));
    }
}

#[test]
fn timeouts_full_and_empty_hand_back_what_they_must() {
    let q = Queue::new(2).unwrap();
    q.put_nowait(1u8).unwrap();
    q.put(2).unwrap();
    assert!(q.full());
    let t = Instant::now();
    match q.put_timeout(3, Duration::from_millis(150)) {
        Err(PutError::Full(item)) => assert_eq!(item, 3),
        other => panic!("{other:?}"),
    }
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert_eq!(q.get().unwrap(), 1);
    assert_eq!(q.get().unwrap(), 2);
    let t = Instant::now();
    assert!(matches!(
        q.get_timeout(Duration::from_millis(150)),
        Err(GetError::Empty)
    ));
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

fn slow_consumer((q, n): (Queue<u32>, u32)) -> Vec<u32> {
    (0..n)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(5));
            q.get().unwrap()
        })
        .collect()
}

#[test]
fn a_full_queue_blocks_the_producer_until_a_consumer_makes_room() {
    for m in METHODS {
        let q = Queue::new(1).unwrap();
        let mut c = Process::new(slow_consumer, (q.clone(), 50)).with_start_method(m);
        c.start().unwrap();
        for i in 0..50 {
            q.put(i).unwrap();
        }
        c.join(Some(Duration::from_secs(30))).unwrap();
        assert_eq!(c.result().unwrap(), (0..50).collect::<Vec<_>>(), "{m}");
    }
}

fn joinable_worker(q: JoinableQueue<Option<u32>>) -> u32 {
    let mut done = 0;
    while let Some(n) = q.get().unwrap() {
        std::thread::sleep(Duration::from_millis(n as u64 % 3));
        q.task_done().unwrap();
        done += 1;
    }
    q.task_done().unwrap();
    done
}

#[test]
fn joinable_queue_join_waits_for_every_task_done() {
    let q = JoinableQueue::new(0).unwrap();
    let mut workers: Vec<Process<u32>> = (0..3)
        .map(|_| Process::new(joinable_worker, q.clone()))
        .collect();
    for w in &mut workers {
        w.start().unwrap();
    }
    for n in 0..60 {
        q.put(Some(n)).unwrap();
    }
    q.join().unwrap();
    // join() returned: every item was taken and marked done.
    assert!(q.empty());
    for _ in 0..3 {
        q.put(None).unwrap();
    }
    q.join().unwrap();
    let total: u32 = workers
        .iter()
        .map(|w| {
            w.join(Some(Duration::from_secs(30))).unwrap();
            w.result().unwrap()
        })
        .sum();
    assert_eq!(total, 60);
    assert!(q.task_done().is_err(), "more task_done calls than items");
}

fn die_holding_the_lock((q, mut ready): (Queue<u8>, Connection)) {
    q.__hold_lock_forever(|| ready.send(&()).unwrap());
}

#[test]
fn a_process_killed_holding_the_lock_does_not_wedge_the_queue() {
    // CPython's queue stays locked for ever here.
    for m in METHODS {
        let q = Queue::new(0).unwrap();
        q.put(1u8).unwrap();
        let (mut ready, child_ready) = pipe(true).unwrap();
        let mut p =
            Process::new(die_holding_the_lock, (q.clone(), child_ready)).with_start_method(m);
        p.start().unwrap();
        ready.recv::<()>().unwrap(); // the child holds the lock now
        // A timeout holds even while the holder lives on, stuck.
        let t = Instant::now();
        assert!(matches!(
            q.get_timeout(Duration::from_millis(100)),
            Err(GetError::Empty)
        ));
        assert!(t.elapsed() >= Duration::from_millis(100) && t.elapsed() < Duration::from_secs(5));
        p.kill().unwrap();
        p.join(None).unwrap();
        assert_eq!(p.exitcode().unwrap(), Some(-9));
        // The next locker finds the owner dead, recovers, and the queue works.
        assert_eq!(q.get_timeout(Duration::from_secs(5)).unwrap(), 1, "{m}");
        q.put(2).unwrap();
        assert_eq!(q.get().unwrap(), 2);
    }
}

/// Reads every report already waiting on `c`, until none is buffered or the stream ended.
fn read_all<T: serde::de::DeserializeOwned>(c: &mut Connection, mut each: impl FnMut(T)) {
    while c.poll(Some(Duration::ZERO)).unwrap() {
        match c.recv::<T>() {
            Ok(item) => each(item),
            Err(ConnectionError::Eof) => break,
            Err(e) => panic!("{e}"),
        }
    }
}

/// What the producers said they put (per producer, how many) and what the consumers said
/// they received (per item, how many times), read off their report connections.
struct Reports {
    puts: Vec<Connection>,
    gots: Vec<Connection>,
    put: HashMap<u32, u32>,
    received: HashMap<(u32, u32), u32>,
}

impl Reports {
    /// Reads every report that arrives within `timeout`.
    fn drain(&mut self, timeout: Duration) {
        let objects: Vec<&dyn Waitable> = self
            .puts
            .iter()
            .chain(self.gots.iter())
            .map(|c| c as &dyn Waitable)
            .collect();
        let ready = wait(&objects, Some(timeout)).unwrap();
        for i in ready {
            if i < self.puts.len() {
                let put = &mut self.put;
                read_all(&mut self.puts[i], |_: u32| {
                    *put.entry(i as u32).or_default() += 1
                });
            } else {
                let received = &mut self.received;
                read_all(&mut self.gots[i - self.puts.len()], |item: (u32, u32)| {
                    *received.entry(item).or_default() += 1
                });
            }
        }
    }

    /// Keeps reading reports until every process in `procs` has exited, then checks that
    /// the `victim` was killed and the others exited with 0.
    fn run_until_exit(&mut self, procs: &[Process], victim: usize, who: &str, limit: Instant) {
        for (i, p) in procs.iter().enumerate() {
            while p.is_alive().unwrap() {
                self.drain(Duration::from_millis(50));
                assert!(Instant::now() < limit, "{who} {i} is stuck");
            }
            let want = if i == victim { -9 } else { 0 };
            assert_eq!(p.exitcode().unwrap(), Some(want), "{who} {i}");
        }
    }

    /// Whether every report connection has reached its end (all reports read).
    fn all_ended(&mut self) -> bool {
        self.puts.iter_mut().chain(self.gots.iter_mut()).all(|c| {
            matches!(c.poll(Some(Duration::ZERO)), Ok(false))
                || matches!(c.recv::<()>(), Err(ConnectionError::Eof))
        })
    }
}

/// Puts `(id, i)` for i in 0..n, reporting each put that returned.
fn producer((q, id, n, mut report): (Queue<(u32, u32)>, u32, u32, Connection)) {
    for i in 0..n {
        q.put((id, i)).unwrap();
        report.send(&i).unwrap();
    }
}

/// Gets until a `(u32::MAX, _)` stop item, reporting each item received.
fn consumer((q, mut report): (Queue<(u32, u32)>, Connection)) {
    loop {
        let item = q.get().unwrap();
        if item.0 == u32::MAX {
            return;
        }
        report.send(&item).unwrap();
    }
}

#[test]
fn producers_and_consumers_killed_under_load_lose_and_duplicate_nothing() {
    const PRODUCERS: u32 = 3;
    const CONSUMERS: usize = 3;
    const ITEMS: u32 = 4_000;
    let q: Queue<(u32, u32)> = Queue::new(64).unwrap();
    let mut producers = Vec::new();
    let mut put_reports = Vec::new();
    for id in 0..PRODUCERS {
        let (ours, theirs) = pipe(true).unwrap();
        let mut p = Process::new(producer, (q.clone(), id, ITEMS, theirs));
        p.start().unwrap();
        producers.push(p);
        put_reports.push(ours);
    }
    let mut consumers = Vec::new();
    let mut got_reports = Vec::new();
    for _ in 0..CONSUMERS {
        let (ours, theirs) = pipe(true).unwrap();
        let mut c = Process::new(consumer, (q.clone(), theirs));
        c.start().unwrap();
        consumers.push(c);
        got_reports.push(ours);
    }

    let mut r = Reports {
        puts: put_reports,
        gots: got_reports,
        put: HashMap::new(),
        received: HashMap::new(),
    };

    // Let the traffic build, then kill one producer and one consumer mid-flight.
    let deadline = Instant::now() + Duration::from_secs(30);
    while r.received.len() < 1_500 && Instant::now() < deadline {
        r.drain(Duration::from_millis(50));
    }
    let victim_p = (std::process::id() % PRODUCERS) as usize;
    let victim_c = (std::process::id() as usize / 7) % CONSUMERS;
    producers[victim_p].kill().unwrap();
    consumers[victim_c].kill().unwrap();

    // The survivors go on: every surviving producer finishes.
    r.run_until_exit(
        &producers,
        victim_p,
        "producer",
        deadline + Duration::from_secs(30),
    );
    // Stop the surviving consumers, then collect every report.
    for _ in 0..CONSUMERS - 1 {
        q.put((u32::MAX, 0)).unwrap();
    }
    r.run_until_exit(
        &consumers,
        victim_c,
        "consumer",
        deadline + Duration::from_secs(60),
    );
    assert!(wait_until(Duration::from_secs(5), || {
        r.drain(Duration::ZERO);
        r.all_ended()
    }));
    let Reports {
        put, mut received, ..
    } = r;
    // What is left in the queue is received by us.
    while let Ok(item) = q.get_nowait() {
        *received.entry(item).or_default() += 1;
    }

    // No item is duplicated.
    let dups: Vec<_> = received.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "duplicated: {dups:?}");
    // Every put that returned (and was reported) was received, except at most the one item
    // the killed consumer had taken and not yet reported.
    let mut missing = Vec::new();
    for (&id, &n) in &put {
        for i in 0..n {
            if !received.contains_key(&(id, i)) {
                missing.push((id, i));
            }
        }
    }
    assert!(missing.len() <= 1, "lost: {missing:?}");
    // Surviving producers put everything.
    for id in 0..PRODUCERS {
        if id as usize != victim_p {
            assert_eq!(put.get(&id).copied(), Some(ITEMS), "producer {id}");
        }
    }
}

/// The item of round `r` with `len` characters.
fn item(r: u32, len: usize) -> String {
    let c = (b'a' + (r % 26) as u8) as char;
    std::iter::repeat_n(c, len).collect()
}

/// Puts strings of every length from 0 to 40 bytes, `rounds` times over.
fn put_every_length((q, rounds): (Queue<String>, u32)) {
    for r in 0..rounds {
        for len in 0..=40 {
            q.put(item(r, len)).unwrap();
        }
    }
}

#[test]
fn records_that_wrap_the_ring_arrive_whole_and_in_order() {
    // A 64-byte ring (records of 5 to 46 bytes): nearly every record is split across its
    // end at some point, and the producer keeps waiting for room while we keep taking.
    let q: Queue<String> = Queue::with_capacity(0, 64).unwrap();
    let rounds = 300;
    let mut p = Process::new(put_every_length, (q.clone(), rounds));
    p.start().unwrap();
    for r in 0..rounds {
        for len in 0..=40 {
            let got = q.get_timeout(Duration::from_secs(30)).unwrap();
            assert_eq!(got, item(r, len), "round {r}");
        }
    }
    p.join(Some(Duration::from_secs(30))).unwrap();
    assert_eq!(p.exitcode().unwrap(), Some(0));
    assert!(q.empty());
    assert!(matches!(q.get_nowait(), Err(GetError::Empty)));
}

#[test]
fn a_capacity_is_rounded_up_to_a_power_of_two_and_bounds_items() {
    // 100 bytes become a 128-byte ring: a record of exactly 128 bytes fits (a 4-byte
    // length, a 2-byte msgpack str8 header, 122 characters); one of 136 does not.
    let q: Queue<String> = Queue::with_capacity(0, 100).unwrap();
    let fits = "x".repeat(122);
    q.put(fits.clone()).unwrap();
    assert!(q.put_nowait("y".to_owned()).unwrap_err().is_full());
    assert_eq!(q.get().unwrap(), fits);
    match q.put("z".repeat(130)) {
        Err(PutError::TooLarge {
            len,
            capacity,
            item,
        }) => assert_eq!((len, capacity, item.len()), (132, 128, 130)),
        other => panic!("{other:?}"),
    }
    // The queue is still usable.
    q.put("w".to_owned()).unwrap();
    assert_eq!(q.get().unwrap(), "w");
}

#[test]
fn task_done_before_any_put_is_an_error_and_join_returns_at_once() {
    let q: JoinableQueue<u8> = JoinableQueue::new(0).unwrap();
    assert!(q.task_done().is_err());
    q.join().unwrap();
    q.put(1).unwrap();
    q.put(2).unwrap();
    // task_done needs no get first (as in Python): it counts against items put.
    q.task_done().unwrap();
    q.task_done().unwrap();
    assert!(q.task_done().is_err());
    q.join().unwrap();
    assert_eq!(q.qsize(), 2);
}
