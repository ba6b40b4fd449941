//! (module of the `tests` binary)
use std::time::{Duration, Instant};

use procvisor::manager::{
    DictProxy, EventProxy, ListProxy, LockProxy, Manager, ManagerClient, ManagerError,
    NamespaceProxy, Proxy, QueueProxy, SharedObject, ValueProxy,
};
use procvisor::{Connection, Process, pipe};

use crate::lifecycle::METHODS;

fn fill((d, l, i): (DictProxy<u32, String>, ListProxy<u32>, u32)) {
    d.set(&i, &format!("v{i}")).unwrap();
    l.append(&(i * i)).unwrap();
}

#[test]
fn ten_processes_fill_one_dict_and_one_list() {
    for m in METHODS {
        let manager = Manager::start().unwrap();
        let d = manager.dict::<u32, String>().unwrap();
        let l = manager.list::<u32>([]).unwrap();
        let mut ps: Vec<Process> = (0..10)
            .map(|i| Process::new(fill, (d.clone(), l.clone(), i)).with_start_method(m))
            .collect();
        for p in &mut ps {
            p.start().unwrap();
        }
        for p in &ps {
            p.join(Some(Duration::from_secs(30))).unwrap();
            assert_eq!(p.exitcode().unwrap(), Some(0), "{m}");
        }
        let mut items = d.items().unwrap();
        items.sort();
        assert_eq!(
            items,
            (0..10).map(|i| (i, format!("v{i}"))).collect::<Vec<_>>(),
            "{m}"
        );
        let mut squares = l.to_vec().unwrap();
        squares.sort_unstable();
        assert_eq!(squares, (0..10).map(|i| i * i).collect::<Vec<_>>(), "{m}");
    }
}

#[derive(Default)]
struct Counter(i64);

impl SharedObject for Counter {
    const TYPEID: &'static str = "Counter";
    type Request = i64;
    type Response = i64;
    fn handle(&mut self, add: i64) -> i64 {
        self.0 += add;
        self.0
    }
}

type Kit = (
    NamespaceProxy,
    QueueProxy<String>,
    ValueProxy<f64>,
    LockProxy,
    EventProxy,
    Proxy<Counter>,
);

fn use_every_kind((ns, q, v, lock, ev, counter): Kit) {
    ns.set("answer", &42u8).unwrap();
    q.put(&"from the child".to_owned(), None).unwrap();
    assert!(lock.acquire(Some(Duration::from_secs(10))).unwrap());
    v.set(&(v.get().unwrap() + 1.5)).unwrap();
    lock.release().unwrap();
    counter.call(&10).unwrap();
    ev.set().unwrap();
}

#[test]
fn every_kind_of_proxy_works_from_a_child() {
    let manager = Manager::builder().register::<Counter>().start().unwrap();
    let ns = manager.namespace().unwrap();
    let q = manager.queue::<String>(0).unwrap();
    let v = manager.value(1.0f64).unwrap();
    let lock = manager.lock().unwrap();
    let ev = manager.event().unwrap();
    let counter = manager.create::<Counter>().unwrap();
    assert_eq!(counter.call(&1).unwrap(), 1);
    let mut p = Process::new(
        use_every_kind,
        (
            ns.clone(),
            q.clone(),
            v.clone(),
            lock.clone(),
            ev.clone(),
            counter.clone(),
        ),
    );
    p.start().unwrap();
    assert!(ev.wait(Some(Duration::from_secs(30))).unwrap());
    assert_eq!(
        q.get(Some(Duration::from_secs(10))).unwrap(),
        "from the child"
    );
    p.join(Some(Duration::from_secs(30))).unwrap();
    assert_eq!(p.exitcode().unwrap(), Some(0));
    assert_eq!(ns.get::<u8>("answer").unwrap(), Some(42));
    assert_eq!(ns.names().unwrap(), ["answer"]);
    assert_eq!(v.get().unwrap(), 2.5);
    assert_eq!(counter.call(&0).unwrap(), 11);
    // Timeouts are honoured and typed.
    let t = Instant::now();
    assert!(matches!(
        q.get(Some(Duration::from_millis(100))),
        Err(ManagerError::Empty)
    ));
    assert!(t.elapsed() >= Duration::from_millis(100));
    assert!(matches!(lock.release(), Err(ManagerError::Unlocked)));
    // A type the server was not given is refused, not a crash.
    #[derive(Default)]
    struct Unregistered;
    impl SharedObject for Unregistered {
        const TYPEID: &'static str = "Unregistered";
        type Request = ();
        type Response = ();
        fn handle(&mut self, _: ()) {}
    }
    assert!(matches!(
        manager.create::<Unregistered>(),
        Err(ManagerError::UnknownType(_))
    ));
}

fn append_to_nested(d: DictProxy<String, ListProxy<i32>>) {
    let inner = d.get(&"shared".to_owned()).unwrap().unwrap();
    inner.append(&7).unwrap();
    // A plain value read from the dict is a copy: changing it changes nothing there.
}

fn change_copy(d: DictProxy<String, Vec<i32>>) {
    let mut copy = d.get(&"plain".to_owned()).unwrap().unwrap();
    copy.push(7);
}

#[test]
fn a_nested_proxy_is_shared_and_a_nested_value_is_a_copy() {
    let manager = Manager::start().unwrap();
    let d = manager.dict::<String, ListProxy<i32>>().unwrap();
    let inner = manager.list([1]).unwrap();
    d.set(&"shared".to_owned(), &inner).unwrap();
    let mut p = Process::new(append_to_nested, d.clone());
    p.start().unwrap();
    p.join(Some(Duration::from_secs(30))).unwrap();
    assert_eq!(p.exitcode().unwrap(), Some(0));
    assert_eq!(inner.to_vec().unwrap(), [1, 7]);

    let plain = manager.dict::<String, Vec<i32>>().unwrap();
    plain.set(&"plain".to_owned(), &vec![1]).unwrap();
    let mut p = Process::new(change_copy, plain.clone());
    p.start().unwrap();
    p.join(Some(Duration::from_secs(30))).unwrap();
    assert_eq!(p.exitcode().unwrap(), Some(0));
    assert_eq!(plain.get(&"plain".to_owned()).unwrap(), Some(vec![1]));
}

fn remote_client((address, key): (String, Vec<u8>)) -> Result<u32, String> {
    let address = address.parse().map_err(|e| format!("{e}"))?;
    let client = ManagerClient::connect(&address, &key).map_err(|e| format!("{e:?}"))?;
    let d = client
        .named::<DictProxy<String, u32>>("scores")
        .map_err(|e| e.to_string())?;
    d.set(&"remote".to_owned(), &99)
        .map_err(|e| e.to_string())?;
    Ok(d.len().map_err(|e| e.to_string())? as u32)
}

#[test]
fn a_remote_client_needs_the_right_key_over_tcp() {
    let manager = Manager::builder()
        .address("127.0.0.1:0".parse().unwrap())
        .authkey(b"the key")
        .start()
        .unwrap();
    let address = manager.address().to_string();
    assert!(address.starts_with("127.0.0.1:"), "{address}");
    let scores = manager.named::<DictProxy<String, u32>>("scores").unwrap();
    scores.set(&"local".to_owned(), &1).unwrap();
    // The "remote" process gets only the address and the key, as text and bytes.
    let mut p = Process::new(remote_client, (address.clone(), b"the key".to_vec()));
    p.start().unwrap();
    p.join(Some(Duration::from_secs(30))).unwrap();
    assert_eq!(p.result().unwrap(), Ok(2));
    assert_eq!(scores.get(&"remote".to_owned()).unwrap(), Some(99));
    // A wrong key is refused on the handshake, and the manager serves on.
    match ManagerClient::connect(&address.parse().unwrap(), b"a guess") {
        Err(ManagerError::Connect(e)) => assert!(e.is_authentication(), "{e:?}"),
        other => panic!("expected an authentication failure, got {other:?}"),
    }
    assert_eq!(scores.len().unwrap(), 2);
    // The same name as another kind is refused.
    assert!(matches!(
        manager.named::<ListProxy<u32>>("scores"),
        Err(ManagerError::NameTaken(_))
    ));
}

#[test]
fn a_manager_killed_under_a_blocked_client_gives_a_typed_error_not_a_hang() {
    let manager = Manager::start().unwrap();
    let q = manager.queue::<u32>(0).unwrap();
    let pid = manager.pid().unwrap();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    });
    let t = Instant::now();
    let got = q.get(None);
    assert!(matches!(got, Err(ManagerError::Gone(_))), "{got:?}");
    assert!(t.elapsed() < Duration::from_secs(10));
    killer.join().unwrap();
    // Later calls fail at once too.
    assert!(matches!(
        q.qsize(),
        Err(ManagerError::Connect(_) | ManagerError::Gone(_))
    ));
    drop(manager);
    assert!(procvisor_integration::wait_until(
        Duration::from_secs(10),
        || !procvisor_integration::pid_present(pid)
    ));
}

fn hold_manager_lock((lock, mut ready): (LockProxy, Connection)) {
    assert!(lock.acquire(None).unwrap());
    ready.send(&()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_manager_lock_held_by_a_killed_process_is_released() {
    let manager = Manager::start().unwrap();
    let lock = manager.lock().unwrap();
    let (mut ready, theirs) = pipe(true).unwrap();
    let mut p = Process::new(hold_manager_lock, (lock.clone(), theirs));
    p.start().unwrap();
    ready.recv::<()>().unwrap();
    assert!(!lock.acquire(Some(Duration::from_millis(100))).unwrap());
    p.kill().unwrap();
    p.join(None).unwrap();
    assert!(lock.acquire(Some(Duration::from_secs(10))).unwrap());
}

#[test]
fn malformed_requests_do_not_crash_the_manager() {
    let mut manager = Manager::builder()
        .authkey(b"k")
        .register::<Counter>()
        .start()
        .unwrap();
    let d = manager.dict::<u8, u8>().unwrap();
    d.set(&1, &1).unwrap();
    let mut raw = procvisor::client(manager.address(), Some(b"k")).unwrap();
    // A message of the wrong shape: answered with an error, the connection kept.
    raw.send(&("not", "a", "request")).unwrap();
    assert!(raw.poll(Some(Duration::from_secs(10))).unwrap());
    let _ = raw.recv_bytes().unwrap();
    // Garbage bytes in a whole frame, then a torn frame: that connection ends.
    raw.send_bytes(&[0xc1, 0xff, 0x00]).unwrap();
    let _ = raw.recv_bytes();
    drop(raw);
    // A request to the wrong kind of object, and a custom request that does not decode.
    let counter = manager.create::<Counter>().unwrap();
    let wrong: ListProxy<u8> = serde_roundtrip(&d);
    assert!(matches!(
        wrong.len(),
        Ok(1) | Err(ManagerError::Protocol(_))
    ));
    assert!(matches!(wrong.append(&1), Err(ManagerError::Protocol(_))));
    let bad: Proxy<BadCounter> = serde_roundtrip(&counter);
    assert!(matches!(
        bad.call(&"text".to_owned()),
        Err(ManagerError::Remote(_))
    ));
    // Still serving.
    assert_eq!(d.get(&1).unwrap(), Some(1));
    assert_eq!(counter.call(&1).unwrap(), 1);
    manager.shutdown().unwrap();
    assert!(matches!(
        d.get(&1),
        Err(ManagerError::Connect(_) | ManagerError::Gone(_))
    ));
}

/// Reinterprets a proxy as another proxy type (what a confused or hostile client could
/// send).
fn serde_roundtrip<A: serde::Serialize, B: serde::de::DeserializeOwned>(a: &A) -> B {
    rmp_serde::from_slice(&rmp_serde::to_vec_named(a).unwrap()).unwrap()
}

#[derive(Default)]
struct BadCounter;

impl SharedObject for BadCounter {
    const TYPEID: &'static str = "Counter";
    type Request = String;
    type Response = i64;
    fn handle(&mut self, _: String) -> i64 {
        0
    }
}
