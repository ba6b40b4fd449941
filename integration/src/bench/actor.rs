//! `actor_request_rtt`: an actor request through `procvisor::mailbox`, inside an actix
//! System on the bench's calling thread: `addr.send(Call::new((i, TEXT)))` to the
//! [`Mailbox`](procvisor::mailbox::Mailbox) actor, which forwards it to a `forkserver` child running
//! `mailbox::serve`, which echoes the `(u64, 32-char String)` of `connection_rtt_small`;
//! the reply resolves the request. Sequential requests; µs per request.
//!
//! `actor_request_rtt_worker`: the same requests sent to the child's Worker address
//! instead ([`Process::attach_mailbox`]): a second child, started inside the bench's
//! System so that its Worker (and the mailbox the Worker holds) lives on the bench's
//! thread; the Worker forwards each request to that mailbox. Measured in the same
//! repetitions.
//!
//! There is no CPython equivalent (CPython has no actors) and no OS floor of its own: the
//! row is read against the procvisor `connection_rtt_small` median of the same run, which
//! carries the same bytes over the same kind of socket without the actor (the target is an
//! actor request within 2× of it). When that row does not run, its round trip is measured
//! here, one batch right before each actor batch, with the same child and placement.
//!
//! Batches, repetitions and placement are those of `connection_rtt_small`: both ends on
//! one CPU (the System's thread, which is the bench's, and the child).

use std::time::Instant;

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler};
use procvisor::Process;
use procvisor::connection::Connection;
use procvisor::mailbox::{self, Call};

use crate::connection::{
    END_DEADLINE, Kind, METHOD, PinSelf, Placement, PvChild, Small, TEXT, pin,
};
use crate::measure::{self, Side};
use crate::report::Figure;
use crate::{Config, figure, warm_up};

/// The bench's name.
pub(crate) const BENCH: &str = "actor_request_rtt";

/// The row of the same requests through the child's Worker address.
pub(crate) const WORKER_BENCH: &str = "actor_request_rtt_worker";

/// The figure the row is compared with: procvisor's `Connection` round trip.
pub(crate) const FLOOR: &str = "connection_rtt_small";

/// A request as the parent sends it: the same bytes on the wire as `connection_rtt_small`.
type Req = (u64, &'static str);

/// Waiting requests the mailbox holds (the bench has at most one in flight).
const CAPACITY: usize = 16;

/// The child: echoes every request until the mailbox closes.
fn echo(conn: Connection) {
    mailbox::serve(conn, |v: Small| v).expect("actor echo: serve");
}

/// The notes under the table.
pub(crate) fn note(cfg: &Config, measured_alongside: bool) -> String {
    format!(
        "actor_request_rtt ({}, one child): {} sequential requests per repetition, each \
         actix addr.send(Call) -> Mailbox actor -> mailbox::serve echo of (u64, 32-char \
         string) -> reply, in an actix System on the bench's thread; same placement as \
         connection_rtt_small; actor_request_rtt_worker: the same through the child's Worker \
         address (Process::attach_mailbox; a second child started inside the System, so its \
         Worker and mailbox run on the bench's thread), in the same repetitions; no CPython column (CPython \
         has no actors); the floor is the procvisor connection_rtt_small median{} (target: \
         at most 2×)",
        METHOD.as_str(),
        Kind::Rtt.batch(cfg),
        if measured_alongside {
            ", measured here one batch before each actor batch"
        } else {
            " of this run"
        },
    )
}

/// `actor_request_rtt`, and with `with_connection` the `connection_rtt_small` figure it
/// is compared with, measured in the same repetitions.
pub(crate) fn bench(cfg: &Config, with_connection: bool) -> Result<Vec<Figure>, String> {
    warm_up(METHOD)?;
    let n = Kind::Rtt.batch(cfg);
    let place = Placement::of(FLOOR);
    let _pinned = place.map(|p| PinSelf::new(p.parent)).transpose()?;
    let (end, child_end) =
        mailbox::channel::<Req, Small>().map_err(|e| format!("mailbox::channel: {e}"))?;
    let mut process = Process::new(echo, child_end).with_start_method(METHOD);
    process.start().map_err(|e| format!("start: {e}"))?;
    // The System runs on this (pinned) thread. The second child is started inside it, so
    // its Worker actor (and the mailbox the Worker holds) lives on this thread too.
    let system = actix::System::new();
    let (via_worker, worker) = system.block_on(async {
        let (w_end, w_child_end) =
            mailbox::channel::<Req, Small>().map_err(|e| format!("mailbox::channel: {e}"))?;
        let mut via_worker = Process::new(echo, w_child_end).with_start_method(METHOD);
        via_worker.start().map_err(|e| format!("start: {e}"))?;
        via_worker
            .attach_mailbox(w_end, CAPACITY)
            .map_err(|e| format!("attach_mailbox: {e}"))?;
        let worker = via_worker.worker().ok_or("no worker after start")?;
        Ok::<_, String>((via_worker, worker))
    })?;
    let mut conn = match with_connection
        .then(|| PvChild::start(Kind::Rtt))
        .transpose()
    {
        Ok(c) => c,
        Err(e) => {
            drop(end);
            let _ = finish(&process);
            return Err(e);
        }
    };
    let placed = (|| {
        if let Some(p) = place {
            for proc in [&process, &via_worker] {
                let pid = proc.pid().map_err(|e| e.to_string())?;
                pin(pid.ok_or("no pid after start")?, p.child)?;
            }
            if let Some(c) = &conn {
                let pid = c.process.pid().map_err(|e| e.to_string())?;
                pin(pid.ok_or("no pid after start")?, p.child)?;
            }
        }
        Ok::<_, String>(())
    })();
    let measured = placed.and_then(|()| {
        system.block_on(async {
            let addr = end.start(CAPACITY);
            if let Some(c) = conn.as_mut() {
                c.batch(n / 10)?;
            }
            requests(&addr, n / 10).await?;
            requests(&worker, n / 10).await?;
            let mut values = Vec::with_capacity(cfg.reps());
            let mut worker_values = Vec::with_capacity(cfg.reps());
            let mut conn_values = Vec::with_capacity(cfg.reps());
            for _ in 0..cfg.reps() {
                if let Some(c) = conn.as_mut() {
                    conn_values.push(c.batch(n)?);
                }
                values.push(requests(&addr, n).await?);
                worker_values.push(requests(&worker, n).await?);
            }
            Ok::<_, String>((values, worker_values, conn_values))
        })
    });
    // Dropping the System drops its actors: the Mailbox actor and the second child's
    // Worker with the mailbox it holds. Both mailboxes close, so both children's `serve`
    // loops return and they exit (procvisor's runtime takes over watching the second).
    drop((system, worker));
    let conn_end = conn.as_mut().map_or(Ok(()), Side::end);
    let actor_end = finish(&process);
    let worker_end = finish(&via_worker);
    let (values, worker_values, conn_values) = measured?;
    actor_end?;
    worker_end?;
    conn_end?;
    let mut figs = vec![
        figure(BENCH, "procvisor", METHOD.as_str(), "us", values),
        figure(
            WORKER_BENCH,
            "procvisor",
            METHOD.as_str(),
            "us",
            worker_values,
        ),
    ];
    if with_connection {
        figs.push(figure(
            FLOOR,
            "procvisor",
            METHOD.as_str(),
            "us",
            conn_values,
        ));
    }
    Ok(figs)
}

/// One timed batch of `n` sequential requests, in µs per request.
async fn requests<A>(addr: &Addr<A>, n: usize) -> Result<f64, String>
where
    A: Actor + Handler<Call<Req, Small>>,
    A::Context: ToEnvelope<A, Call<Req, Small>>,
{
    let t0 = Instant::now();
    for i in 0..n as u64 {
        let (j, _) = addr
            .send(Call::<Req, Small>::new((i, TEXT)))
            .await
            .map_err(|e| format!("send: {e}"))?
            .map_err(|e| format!("request: {e}"))?;
        if j != i {
            return Err(format!("echo sent back {j} for {i}"));
        }
    }
    Ok(t0.elapsed().as_secs_f64() * 1e6 / n as f64)
}

/// Joins the child once its mailbox is closed (it ends on the end of the stream).
fn finish(process: &Process<()>) -> Result<(), String> {
    measure::join_told(process, END_DEADLINE, "the mailbox's close")
}
