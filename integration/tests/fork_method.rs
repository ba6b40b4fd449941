//! The `fork` start method, including capturing closures.
//!
//! Every test holds `FORK_MTX` for its whole run, so that no other test thread is inside
//! procvisor at the instant of a fork (the hazard documented on `StartMethod::Fork`); the
//! rest of the suite stays parallel in its own binary. std's stdout and stderr locks need
//! no such care: procvisor holds them across the fork (the harness's own thread prints
//! whenever a test ends).

use std::sync::Mutex;
use std::time::Duration;

use procvisor::{Process, StartMethod};

static FORK_MTX: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    FORK_MTX.lock().unwrap_or_else(|p| p.into_inner())
}

fn square(x: u64) -> u64 {
    x * x
}

fn sleeps(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

#[test]
fn fork_runs_fn_items_with_results_and_exit_codes() {
    let _g = lock();
    let mut p = Process::new(square, 9).with_start_method(StartMethod::Fork);
    p.start().unwrap();
    p.join(None).unwrap();
    assert_eq!((p.exitcode().unwrap(), p.result().unwrap()), (Some(0), 81));

    let mut p = Process::new(sleeps, 60_000).with_start_method(StartMethod::Fork);
    p.start().unwrap();
    p.terminate().unwrap();
    p.join(Some(Duration::from_secs(20))).unwrap();
    assert_eq!(p.exitcode().unwrap(), Some(-15));
}

#[test]
fn fork_runs_capturing_closures() {
    let _g = lock();
    // A heap value, captured by move into the child.
    let captured: Vec<u32> = (1..=4).collect();
    let offset = 100;
    let mut p = Process::from_closure(move || captured.iter().sum::<u32>() + offset);
    assert_eq!(p.start_method(), StartMethod::Fork);
    p.start().unwrap();
    p.join(None).unwrap();
    assert_eq!(p.result().unwrap(), 110);
}

#[test]
fn closure_panics_and_exits_are_reported() {
    let _g = lock();
    let mut p: Process<()> = Process::from_closure(|| panic!("closure failed"));
    p.start().unwrap();
    p.join(None).unwrap();
    assert_eq!(p.exitcode().unwrap(), Some(1));
    assert_eq!(
        p.result().unwrap_err().remote().unwrap().message,
        "closure failed"
    );

    let mut p: Process<()> = Process::from_closure(|| std::process::exit(4));
    p.start().unwrap();
    p.join(None).unwrap();
    assert_eq!(p.exitcode().unwrap(), Some(4));
    assert_eq!(p.result().unwrap_err().exitcode(), Some(4));
}

#[test]
fn a_closure_returning_nothing_succeeds_on_a_clean_exit() {
    let _g = lock();
    let captured = String::from("captured");
    // It returned: its child writes no report, and the clean exit is the result.
    let mut p = Process::from_closure(move || drop(captured));
    p.start().unwrap();
    p.join(None).unwrap();
    assert_eq!(p.exitcode().unwrap(), Some(0));
    p.result().unwrap();
    // A closure with a value to return has none when it leaves with exit(0).
    let mut p: Process<u8> = Process::from_closure(|| std::process::exit(0));
    p.start().unwrap();
    p.join(None).unwrap();
    let err = p.result().unwrap_err();
    assert_eq!(err.exitcode(), Some(0), "{err}");
    assert!(!err.is_remote() && !err.is_protocol(), "{err}");
}

#[test]
fn a_closure_refuses_other_start_methods() {
    let _g = lock();
    let mut p = Process::from_closure(|| 1u8).with_start_method(StartMethod::ForkServer);
    let err = p.start().unwrap_err();
    assert!(err.to_string().contains("fork start method"), "{err}");
    assert_eq!(p.pid().unwrap(), None);
}

/// Starts a daemonic child that would sleep for a minute and returns its pid, leaving its
/// end to the exit rule.
fn leaves_a_daemon(_: ()) -> i32 {
    let mut d = Process::new(sleeps, 60_000)
        .with_start_method(StartMethod::Fork)
        .with_daemon(true);
    d.start().unwrap();
    d.pid().unwrap().unwrap()
}

/// Runs `target` in a fork child while the parent has another child running (a sibling
/// the fork child inherits a record of), and returns what the target returned.
fn beside_a_sibling<F, R>(target: F) -> R
where
    F: Fn(()) -> R + Send + Sync + 'static,
    R: serde::Serialize + serde::de::DeserializeOwned + 'static,
{
    let mut sibling = Process::new(sleeps, 60_000).with_start_method(StartMethod::Fork);
    sibling.start().unwrap();
    let mut p = Process::new(target, ()).with_start_method(StartMethod::Fork);
    p.start().unwrap();
    p.join(Some(Duration::from_secs(30))).unwrap();
    assert_eq!(p.exitcode().unwrap(), Some(0));
    sibling.kill().unwrap();
    sibling.join(None).unwrap();
    p.result().unwrap()
}

#[test]
fn a_fork_child_applies_the_exit_rule_to_its_own_children() {
    let _g = lock();
    // The parent has children of its own, so its copy of the exit rule is armed: the child
    // must arm it for itself, not skip it because it inherited the parent's.
    let daemon = beside_a_sibling(leaves_a_daemon);
    // The child terminated and reaped its daemon before it left.
    assert!(
        !procvisor_integration::pid_present(daemon),
        "daemon {daemon} outlived the child that started it"
    );
}

fn grandchild_count(_: ()) -> usize {
    // A fork child starts children of its own: its registry must not list its siblings.
    let before = procvisor::active_children().len();
    let mut g = Process::new(square, 3).with_start_method(StartMethod::Fork);
    g.start().unwrap();
    g.join(None).unwrap();
    assert_eq!(g.result().unwrap(), 9);
    before
}

#[test]
fn a_fork_child_does_not_inherit_its_parents_children() {
    let _g = lock();
    assert_eq!(beside_a_sibling(grandchild_count), 0);
}

fn count_until_eof(mut conn: procvisor::Connection) -> u32 {
    let mut n = 0;
    while conn.recv::<u32>().is_ok() {
        n += 1;
    }
    n
}

/// A `fn` target under `fork` holds only its own descriptors: the parent's end of the pipe
/// does not stay open in the child, so closing it gives the child its end of file. (With
/// every descriptor inherited, the child would wait for ever.)
#[test]
fn a_fork_child_sees_eof_when_the_parent_closes_its_end() {
    let _g = lock();
    let (mut ours, theirs) = procvisor::pipe(true).unwrap();
    let mut p = Process::new(count_until_eof, theirs).with_start_method(StartMethod::Fork);
    p.start().unwrap();
    ours.send(&1u32).unwrap();
    ours.send(&2u32).unwrap();
    ours.close();
    p.join(Some(Duration::from_secs(20))).unwrap();
    assert_eq!(
        p.exitcode().unwrap(),
        Some(0),
        "the child never saw its end of file"
    );
    assert_eq!(p.result().unwrap(), 2);
}

fn prints(n: u32) -> u32 {
    println!("fork child {n}: stdout");
    eprintln!("fork child {n}: stderr");
    n
}

#[test]
fn a_thread_printing_at_the_fork_does_not_leave_the_child_hung_on_stdio() {
    let _g = lock();
    let (held, is_held) = std::sync::mpsc::channel();
    let printer = std::thread::spawn(move || {
        let out = std::io::stdout().lock();
        let err = std::io::stderr().lock();
        held.send(()).unwrap();
        // Still printing when the fork is asked for: the start waits for these locks
        // rather than forking a child whose copies of them stay locked for good.
        std::thread::sleep(Duration::from_millis(100));
        drop((out, err));
    });
    is_held.recv().unwrap();
    let mut p = Process::new(prints, 7).with_start_method(StartMethod::Fork);
    p.start().unwrap();
    p.join(Some(Duration::from_secs(20))).unwrap();
    printer.join().unwrap();
    let code = p.exitcode().unwrap();
    if code.is_none() {
        p.kill().unwrap();
        p.join(None).unwrap();
    }
    assert_eq!(code, Some(0), "the child hung on a stdio lock it inherited");
    assert_eq!(p.result().unwrap(), 7);
}

#[test]
fn a_fork_child_is_named_after_the_program_not_the_forking_thread() {
    let _g = lock();
    // A test thread is not the main thread, so the child is forked by procvisor's spawner
    // thread, whose name it takes: that name is the program's, as `ps` shows every child.
    let ours = std::fs::read_to_string("/proc/self/comm").unwrap();
    let mut p =
        Process::from_closure(|| std::fs::read_to_string("/proc/thread-self/comm").unwrap());
    p.start().unwrap();
    p.join(None).unwrap();
    assert_eq!(p.result().unwrap(), ours);
}
