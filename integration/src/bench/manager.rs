//! The Manager benches: a `procvisor::manager` dict served by its manager process, CPython's
//! `multiprocessing.Manager().dict()` (`manager_bench.py`), and the OS floor: a raw
//! request/response ping-pong over a Unix stream socket (a socketpair) with a forked child.
//!
//! - `manager_dict_set`: the bench process does `d.set(&(i % 64), &i)` on a
//!   `DictProxy<u64, u64>` (CPython: `d[i % 64] = i`); µs per call. Floor
//!   `unix_rtt_dict_set`: the parent writes a frame as long as procvisor's set request and
//!   reads an answer as long as procvisor's, the child reads each request and writes the
//!   answer; raw `read`/`write`, nothing else.
//! - `manager_dict_get`: `d.get(&(i % 64))` on the same dict, filled first (CPython:
//!   `d[i % 64]`); µs per call. Floor `unix_rtt_dict_get`: as above with the lengths of
//!   the get request and its answer.
//!
//! Both are round trips between the caller and the manager's thread that serves its
//! connection: the floor is the least such a call can cost, one small `write` and one
//! `read` each way.
//!
//! # Placement
//!
//! As for `connection_rtt_small`, both ends share one CPU (the first): the bench process,
//! every thread of the manager process (procvisor's and CPython's alike) and the floor's
//! child. A hand-off to a process sleeping on another CPU pays that CPU's wake-up instead
//! (20–60 µs on a VM), which is the machine, not the manager.

use std::time::Instant;

use procvisor::StartMethod;
use procvisor::manager::{DictProxy, Manager};
use serde::Serialize;

use crate::connection::{Floor, PinSelf, Placement, pin};
use crate::cpus::allowed_cpus;
use crate::measure::{self, Side};
use crate::report::Figure;
use crate::{Config, figure, warm_up};

/// The benches, each with the name of its OS floor.
pub(crate) const BENCHES: [(&str, &str); 2] = [
    ("manager_dict_set", "unix_rtt_dict_set"),
    ("manager_dict_get", "unix_rtt_dict_get"),
];

/// The start method of the manager process, for procvisor and CPython alike.
pub(crate) const METHOD: StartMethod = StartMethod::ForkServer;

/// How many keys the calls cycle through.
const KEYS: u64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Set,
    Get,
}

/// The kinds, in the order of [`BENCHES`].
const KINDS: [Kind; 2] = [Kind::Set, Kind::Get];

impl Kind {
    fn of(bench: &str) -> Result<Kind, String> {
        BENCHES
            .iter()
            .position(|(b, _)| *b == bench)
            .map(|i| KINDS[i])
            .ok_or_else(|| format!("unknown manager bench {bench:?}"))
    }

    /// The bench's name and its floor's.
    fn names(self) -> (&'static str, &'static str) {
        BENCHES[self as usize]
    }

    /// The frames of procvisor's request and answer for a call in the middle of a batch of
    /// `n`, with the 4-byte length header of a `Connection` frame.
    fn frames(self, n: usize) -> Result<(Vec<u8>, usize), String> {
        let i = (n / 2) as u64;
        let bytes = |v: u64| procvisor_protocol::encode_value(&v).map_err(|e| e.to_string());
        let key = bytes(i % KEYS)?;
        let (request, answer) = match self {
            Kind::Set => (
                frame(&wire::Request::Call {
                    id: 1,
                    op: wire::Op::MapSet(key, bytes(i)?),
                })?,
                frame(&Ok::<_, ()>(wire::Reply::Unit))?,
            ),
            Kind::Get => (
                frame(&wire::Request::Call {
                    id: 1,
                    op: wire::Op::MapGet(key),
                })?,
                // The dict holds `k -> k`: the answer carries the key's own bytes.
                frame(&Ok::<_, ()>(wire::Reply::Maybe(Some(bytes(i % KEYS)?))))?,
            ),
        };
        Ok((request, answer.len()))
    }

    /// Calls per procvisor and floor batch (a few µs each on one CPU).
    fn batch(self, cfg: &Config) -> usize {
        if cfg.quick { 5_000 } else { 20_000 }
    }

    /// Calls per CPython batch (30–75 µs each).
    fn cpython_batch(self, cfg: &Config) -> usize {
        if cfg.quick { 1_000 } else { 4_000 }
    }
}

/// The shapes of procvisor's manager messages (private to `procvisor::manager`), to give
/// the floor frames of the same lengths: the same names, variants in the same order, and
/// the same field types encode to the same number of bytes.
mod wire {
    use serde::Serialize;

    #[derive(Serialize)]
    pub(super) enum Op {
        MapGet(Vec<u8>),
        MapSet(Vec<u8>, Vec<u8>),
    }

    #[derive(Serialize)]
    #[allow(dead_code)] // only `Call` is sent; the others keep its variant index
    pub(super) enum Request {
        Create,
        Named,
        Call { id: u64, op: Op },
    }

    #[derive(Serialize)]
    #[allow(dead_code)] // only `Unit` and `Maybe` are sent; the others keep the indices
    pub(super) enum Reply {
        Unit,
        Id,
        Bool,
        Len,
        Maybe(Option<Vec<u8>>),
    }
}

/// `value` msgpack-encoded as procvisor encodes it, behind a `Connection` frame's 4-byte
/// length.
fn frame<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    let payload = procvisor_protocol::encode_value(value).map_err(|e| e.to_string())?;
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// Where the ends run: both on the first CPU this thread may use.
fn placement() -> Option<Placement> {
    let first = *allowed_cpus().ok()?.first()?;
    Some(Placement {
        parent: first,
        child: first,
    })
}

/// The arguments that give `manager_bench.py` the batch and the placement.
pub(crate) fn cpython_args(cfg: &Config, bench: &str) -> Vec<String> {
    let Ok(kind) = Kind::of(bench) else {
        return Vec::new();
    };
    let mut args = vec!["--items".to_owned(), kind.cpython_batch(cfg).to_string()];
    if let Some(p) = placement() {
        args.extend(["--cpus".to_owned(), p.parent.to_string()]);
    }
    args
}

/// What the table's notes say about `bench`.
pub(crate) fn note(cfg: &Config, bench: &str) -> String {
    let Ok(kind) = Kind::of(bench) else {
        return String::new();
    };
    let place = placement()
        .map(|p| format!("the caller and every manager thread on CPU {}", p.parent))
        .unwrap_or_else(|| "unpinned".to_owned());
    let what = match kind {
        Kind::Set => "d.set(&(i % 64), &i) on a DictProxy<u64, u64> (CPython: d[i % 64] = i)",
        Kind::Get => "d.get(&(i % 64)) on a filled DictProxy<u64, u64> (CPython: d[i % 64])",
    };
    format!(
        "{bench} ({method}): {what}, {} calls per repetition (CPython {}); floor {}: a raw \
         request/response over a socketpair with frames of procvisor's lengths; {place}, \
         CPython and floor alike; target: at most 1.5× the floor, at least 4× faster than \
         CPython",
        kind.batch(cfg),
        kind.cpython_batch(cfg),
        kind.names().1,
        method = METHOD.as_str(),
    )
}

/// `bench` for procvisor, with its floor measured in the same repetitions.
pub(crate) fn bench(cfg: &Config, bench: &str) -> Result<Vec<Figure>, String> {
    let kind = Kind::of(bench)?;
    warm_up(METHOD)?;
    let n = kind.batch(cfg);
    let place = placement();
    let _pinned = place.map(|p| PinSelf::new(p.parent)).transpose()?;
    let (request, answer_len) = kind.frames(n)?;
    // The floor's child is forked first, so that it holds no copy of procvisor's sockets.
    let mut floor = Floor::request_reply(request, answer_len, place)?;
    let mut pv = PvManager::start(kind, place)?;
    let (values, floor_values) = measure::alternate_sides(cfg.reps(), n, &mut floor, &mut pv)?;
    Ok(vec![
        figure(kind.names().0, "procvisor", METHOD.as_str(), "us", values),
        figure(kind.names().1, "os", "-", "us", floor_values),
    ])
}

/// The floor of `bench` on its own (the filter names the floor but not the bench).
pub(crate) fn floor_only(cfg: &Config, bench: &str) -> Result<Figure, String> {
    let kind = Kind::of(bench)?;
    let n = kind.batch(cfg);
    let place = placement();
    let _pinned = place.map(|p| PinSelf::new(p.parent)).transpose()?;
    let (request, answer_len) = kind.frames(n)?;
    let mut floor = Floor::request_reply(request, answer_len, place)?;
    let values = measure::repeat_side(cfg.reps(), n, &mut floor)?;
    Ok(figure(kind.names().1, "os", "-", "us", values))
}

/// procvisor's side: a manager process and a dict in it.
struct PvManager {
    kind: Kind,
    manager: Manager,
    dict: DictProxy<u64, u64>,
}

impl PvManager {
    fn start(kind: Kind, place: Option<Placement>) -> Result<PvManager, String> {
        // `Manager::start` starts its server with the default method, `forkserver`.
        let manager = Manager::start().map_err(|e| format!("Manager::start: {e}"))?;
        let dict = manager
            .dict::<u64, u64>()
            .map_err(|e| format!("dict: {e}"))?;
        for k in 0..KEYS {
            dict.set(&k, &k).map_err(|e| format!("set: {e}"))?;
        }
        // Every thread of the manager, now that the one serving this connection exists.
        if let Some(p) = place {
            let pid = manager.pid().ok_or("the manager has no pid")?;
            pin_threads(pid, p.child)?;
        }
        Ok(PvManager {
            kind,
            manager,
            dict,
        })
    }
}

impl Side for PvManager {
    /// One timed batch of `n` calls; µs per call.
    fn batch(&mut self, n: usize) -> Result<f64, String> {
        let t0 = Instant::now();
        match self.kind {
            Kind::Set => {
                for i in 0..n as u64 {
                    self.dict
                        .set(&(i % KEYS), &i)
                        .map_err(|e| format!("set: {e}"))?;
                }
            }
            Kind::Get => {
                for i in 0..n as u64 {
                    if self
                        .dict
                        .get(&(i % KEYS))
                        .map_err(|e| format!("get: {e}"))?
                        .is_none()
                    {
                        return Err(format!("key {} is missing", i % KEYS));
                    }
                }
            }
        }
        Ok(t0.elapsed().as_secs_f64() * 1e6 / n as f64)
    }

    fn end(&mut self) -> Result<(), String> {
        self.manager
            .shutdown()
            .map_err(|e| format!("Manager::shutdown: {e}"))
    }
}

/// Pins every thread of process `pid` to `cpu`.
fn pin_threads(pid: i32, cpu: usize) -> Result<(), String> {
    let dir = format!("/proc/{pid}/task");
    let tasks = std::fs::read_dir(&dir).map_err(|e| format!("{dir}: {e}"))?;
    for task in tasks {
        let task = task.map_err(|e| format!("{dir}: {e}"))?;
        if let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) {
            pin(tid, cpu)?;
        }
    }
    Ok(())
}
