//! Running a target and reporting what happened: the only module that catches unwinds.
//!
//! The child runs the target, writes `Hello` and exactly one `Result` or `Panic` frame
//! (in one write; nothing at all when the target returned `()`), runs the exit hook
//! (which terminates its daemon children and joins the others, Python's rule), flushes its
//! standard streams and leaves with `_exit`, so that nothing the parent registered with
//! `atexit` runs twice in a forked copy.
//!
//! Exit codes follow Python: 0 when the target returned, 1 when it panicked, N when it
//! called `std::process::exit(N)`, and the parent sees `-signum` when a signal killed it.
//!
//! ```no_run
//! // Leave a worker the way procvisor does: hook, flush, _exit.
//! procvisor_worker::run::exit(0);
//! ```

use std::backtrace::{Backtrace, BacktraceStatus};
use std::cell::RefCell;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{Once, OnceLock};

use procvisor_protocol::{
    DEFAULT_MAX_FRAME_LEN, Hello, Location, Message, RemoteError, Start, encode_into,
};

use crate::{identity, os};

/// This worker's control socket, for the protocol-fault tests.
static CONTROL_FD: AtomicI32 = AtomicI32::new(-1);

/// Writes raw bytes onto this worker's control socket, breaking the protocol on purpose.
/// Only for the tests that play a misbehaving child; `false` outside a worker.
#[doc(hidden)]
pub fn __write_to_control(bytes: &[u8]) -> bool {
    let fd = CONTROL_FD.load(Ordering::Relaxed);
    fd >= 0 && os::write_raw(fd, bytes)
}

/// Run once by [`exit`] before the process leaves; set by the parent-side crate.
static EXIT_HOOK: OnceLock<fn()> = OnceLock::new();

/// The process that last installed the hook (0: none). A `fork` child inherits the hook
/// with the rest of its parent's memory, but the hook is about the children of the process
/// that installed it: a child that starts none of its own leaves without running it, and
/// without mapping its code, which in a `fork` child is a page fault (about 2 us here).
static HOOK_OWNER: AtomicU32 = AtomicU32::new(0);

/// Installs the hook [`exit`] runs before leaving (the first hook wins), for this process:
/// call it again in every process that needs it run (a `fork` child does not inherit the
/// need, only the hook).
///
/// ```
/// fn cleanup() {}
/// procvisor_worker::run::set_exit_hook(cleanup);
/// ```
pub fn set_exit_hook(hook: fn()) {
    let _ = EXIT_HOOK.set(hook);
    let me = std::process::id();
    // Read first: once the owner is this process, calls write nothing.
    if HOOK_OWNER.load(Ordering::Relaxed) != me {
        HOOK_OWNER.store(me, Ordering::Relaxed);
    }
}

/// Runs the exit hook (if this process installed it), flushes stdout and stderr, and ends
/// the process with `code`.
pub fn exit(code: i32) -> ! {
    if HOOK_OWNER.load(Ordering::Relaxed) == std::process::id() {
        if let Some(hook) = EXIT_HOOK.get() {
            // A panicking hook must not stop the exit; its message has been printed already.
            let _ = panic::catch_unwind(hook);
        }
    }
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    os::exit_now(code)
}

struct PanicInfo {
    location: Option<Location>,
    thread: Option<String>,
    backtrace: Option<String>,
}

thread_local! {
    /// Where the last panic on this thread happened, recorded by our hook so that the
    /// report can carry the location the payload lacks.
    static LAST_PANIC: RefCell<Option<PanicInfo>> = const { RefCell::new(None) };
}

/// Installs the hook that records where a panic happened, once per process: run by every
/// worker before its target, and by the forkserver before it forks any (its children then
/// inherit it).
pub(crate) fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The hook we replace is kept in a static rather than captured, so that our hook
        // is a zero-sized closure and its `Box` allocates nothing: in a `fork` child, a
        // first allocation copies malloc's pages.
        let _ = PREVIOUS_HOOK.set(panic::take_hook());
        panic::set_hook(Box::new(|info| {
            let location = info.location().map(|l| Location {
                file: l.file().to_owned(),
                line: l.line(),
                column: l.column(),
            });
            let bt = Backtrace::capture();
            let backtrace = (bt.status() == BacktraceStatus::Captured).then(|| bt.to_string());
            let thread = std::thread::current().name().map(str::to_owned);
            LAST_PANIC.with(|p| {
                *p.borrow_mut() = Some(PanicInfo {
                    location,
                    thread,
                    backtrace,
                })
            });
            if let Some(previous) = PREVIOUS_HOOK.get() {
                previous(info);
            }
        }));
    });
}

/// The panic hook that [`install_panic_hook`] replaced, which ours calls after recording.
static PREVIOUS_HOOK: OnceLock<PanicHook> = OnceLock::new();

type PanicHook = Box<dyn Fn(&panic::PanicHookInfo<'_>) + Sync + Send + 'static>;

fn panic_report(payload: Box<dyn std::any::Any + Send>) -> RemoteError {
    let message = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_owned()
    };
    let info = LAST_PANIC.with(|p| p.borrow_mut().take());
    RemoteError {
        message,
        location: info.as_ref().and_then(|i| i.location.clone()),
        thread: info.as_ref().and_then(|i| i.thread.clone()),
        backtrace: info.and_then(|i| i.backtrace),
    }
}

/// Runs `f` in this worker, turning a panic into the report the parent would see (message,
/// location, backtrace) instead of unwinding further: for loops that serve many tasks in
/// one child, such as a pool worker's.
///
/// ```
/// let r = procvisor_worker::run::catch(|| -> u8 { panic!("boom") });
/// assert_eq!(r.unwrap_err().message, "boom");
/// assert_eq!(procvisor_worker::run::catch(|| 7).unwrap(), 7);
/// ```
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, RemoteError> {
    install_panic_hook();
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(panic_report)
}

/// Becomes the worker `start` describes (its identity fields move out), makes `handles`
/// available to the arguments' decoding, runs `body` on the arguments, reports and exits.
///
/// `body` returns the encoded result, or an empty value when there is nothing to report
/// (its target returned `()`; no encoding is empty). The child then writes nothing and
/// leaves with 0, which the parent takes as that `()`.
pub fn run_child<F>(start: &mut Start, control: OwnedFd, handles: Vec<OwnedFd>, body: F) -> !
where
    F: FnOnce(&[u8]) -> Result<Vec<u8>, RemoteError>,
{
    identity::become_child(start);
    crate::handles::install(handles);
    CONTROL_FD.store(control.as_raw_fd(), Ordering::Relaxed);
    install_panic_hook();
    let mut control = UnixStream::from(control);

    let outcome = panic::catch_unwind(AssertUnwindSafe(|| body(&start.args)));
    if matches!(&outcome, Ok(Ok(value)) if value.is_empty()) {
        // Nothing to report, and the socket stays open until the kernel closes it at the
        // exit: were it closed here, or a report written, the parent would wake for that
        // and again for the exit. In 2,000 fork start+joins, 225-237 -> 202-210 us each,
        // and one context switch of the parent's per child instead of 1.5.
        std::mem::forget(control);
        exit(0);
    }
    // The hello goes out with the report, in one write: the handshake order is kept, and the
    // parent (and its Worker actor) wakes once per child instead of twice. Encoded only now,
    // so that a worker that runs for long carries none of this in its memory meanwhile.
    let mut out = Vec::with_capacity(128);
    encode_into(
        &Message::Hello(Hello::current()),
        &mut out,
        DEFAULT_MAX_FRAME_LEN,
    )
    .expect("a hello always fits in a frame");
    let hello_len = out.len();
    let (msg, code) = match outcome {
        Ok(Ok(value)) => (Message::Result(value), 0),
        Ok(Err(remote)) => (Message::Panic(remote), 1),
        Err(payload) => (Message::Panic(panic_report(payload)), 1),
    };
    if let Err(e) = encode_into(&msg, &mut out, DEFAULT_MAX_FRAME_LEN) {
        out.truncate(hello_len);
        let remote = RemoteError {
            message: format!("the target's result could not be sent: {e}"),
            location: None,
            thread: None,
            backtrace: None,
        };
        encode_into(&Message::Panic(remote), &mut out, DEFAULT_MAX_FRAME_LEN)
            .expect("a short error report always fits in a frame");
        let _ = control.write_all(&out);
        drop(control);
        exit(1);
    }
    let _ = control.write_all(&out);
    drop(control);
    exit(code)
}

/// Reports a worker that could not even read its start frame, and exits with 1.
pub fn report_boot_failure(control: OwnedFd, err: RemoteError) -> ! {
    let mut control = UnixStream::from(control);
    let mut out = Vec::new();
    if encode_into(
        &Message::Hello(Hello::current()),
        &mut out,
        DEFAULT_MAX_FRAME_LEN,
    )
    .is_ok()
        && encode_into(&Message::Panic(err), &mut out, DEFAULT_MAX_FRAME_LEN).is_ok()
    {
        let _ = control.write_all(&out);
    }
    exit(1)
}
