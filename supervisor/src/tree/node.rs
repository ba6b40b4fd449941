//! The supervisor actor of a tree: one per supervisor, on procvisor's runtime thread.
//!
//! Everything here is a reaction to a message or a timer, so the actor never blocks: a
//! child's end arrives from its Worker actor (pidfd readiness, no polling), backoff delays
//! and grace periods are `run_later` timers, and a nested supervisor reports its end with a
//! message.
//!
//! # One sequence at a time
//!
//! A restart under one_for_all or rest_for_one, the supervisor's own stop, the removal of a
//! child: each is a [`Sequence`] — stop these children one at a time, last-started first,
//! waiting for each to end, then do one thing (start these in order after a delay, end the
//! supervisor, remove a child). A child that fails while a sequence runs joins it: its plan
//! is merged, so nothing is started twice and nothing is forgotten.
//!
//! # Held slots, readiness, paths
//!
//! `stop_child` *holds* a slot: it is stopped as any stop is (its end is `requested`, so
//! no restart and no intensity charge) and `start_slot` refuses it until `start_child`
//! lets go, which is how a pending backoff timer or a sibling's one_for_all restart leave
//! it alone. Callers wait on the slot's `stop_waiters`, answered when its run ends.
//!
//! A run's readiness watch (a notify socket or TCP probes, see `ready`) is a future spawned
//! on this actor's context, and cancelled when the run ends.
//!
//! Requests that take a path follow its first step: a plain name is a child here, and
//! `head/rest` is forwarded to the running nested supervisor `head`, whose errors come back
//! with `head/` put in front of their paths.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message,
    ResponseActFuture, SpawnHandle, WrapFuture,
};
use nix::sys::signal::Signal;
use tokio::sync::oneshot;

use super::launch::{LaunchError, Running};
use super::ready::{self, NotifySocket};
use super::{
    Bus, ChildSpec, ChildState, Event, EventKind, Exit, Latch, Outcome, Readiness, RunState,
    Shutdown, Spec, Target, TreeError,
};
use crate::restart::{BackoffState, Ending, IntensityWindow, RestartType, Strategy};
use crate::status::ExitStatus;
use crate::worker::WaitExit;

/// How long a child SIGKILLed by a stop may take to die before it is reported stuck.
const KILL_WAIT: Duration = Duration::from_secs(5);

type SlotId = u64;

/// How a child's run ended.
#[derive(Debug)]
enum End {
    Process(ExitStatus),
    Node(Outcome),
    StartFailed,
    /// SIGKILLed by a stop and still not gone: given up on.
    Stuck,
}

#[derive(Debug)]
enum Run {
    /// Not running: never started, ended for good, or between a stop and a start.
    Idle,
    /// Waiting out a backoff delay before a start.
    Waiting,
    Running(Running),
    Stopping {
        running: Running,
        escalated: bool,
    },
}

#[derive(Debug)]
struct Slot {
    id: SlotId,
    name: String,
    spec: ChildSpec,
    /// The group this slot belongs to (`spec.name` of a replicated spec).
    group: Option<String>,
    run: Run,
    /// Bumped at each start: a late word about an earlier run is ignored.
    generation: u64,
    /// Whether the child should be running (false after it ended for good).
    wanted: bool,
    backoff: BackoffState,
    restarts: u32,
    started_at: Option<Instant>,
    last_exit: Option<Exit>,
    /// Callers waiting for this slot's removal.
    removing: Option<Vec<oneshot::Sender<()>>>,
    /// Stopped by request (`stop_child`): not started again until `start_child`.
    held: bool,
    /// The current run is ready (see `Readiness`).
    ready: bool,
    /// The readiness watch of the current run, cancelled when it ends.
    watch: Option<SpawnHandle>,
    /// Callers waiting for the current run to end.
    stop_waiters: Vec<oneshot::Sender<()>>,
}

/// What to do once a sequence's stops are done.
#[derive(Debug)]
enum After {
    /// Start these (in slot order) after the delay.
    Restart { start: Vec<SlotId>, delay: Duration },
    /// The supervisor ends.
    End(Outcome),
}

#[derive(Debug)]
struct Sequence {
    /// Still to stop, in order; the front one is being stopped.
    stops: VecDeque<SlotId>,
    after: After,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Ending,
    Ended,
}

/// The link of a nested supervisor to its parent.
#[derive(Debug)]
pub(crate) struct ParentLink {
    addr: Addr<Node>,
    slot: SlotId,
    generation: u64,
}

/// A supervisor of a tree (see [`Spec`](super::Spec)).
#[derive(Debug)]
pub struct Node {
    /// The supervisor's name from the root, the root's name included: events say this.
    path: String,
    /// Its path as `walk` and `remove_child` take it: without the root's name (`""` for
    /// the root itself).
    rel: String,
    strategy: Strategy,
    window: IntensityWindow,
    slots: Vec<Slot>,
    next_id: SlotId,
    bus: Bus,
    parent: Option<ParentLink>,
    outcome: Option<Arc<Latch<Outcome>>>,
    phase: Phase,
    sequence: Option<Sequence>,
    /// The restart timer of the current sequence, if it is waiting.
    timer: Option<SpawnHandle>,
    /// `/proc/vmstat`'s `oom_kill` when last read: a rise means the OOM killer ran.
    oom_kills: Option<u64>,
}

impl Node {
    /// The root of a tree, whose end sets `outcome`.
    pub(crate) fn root(spec: Spec, outcome: Arc<Latch<Outcome>>) -> Node {
        Node::new(spec.name.clone(), String::new(), spec, None, Some(outcome))
    }

    fn new(
        path: String,
        rel: String,
        spec: Spec,
        parent: Option<ParentLink>,
        outcome: Option<Arc<Latch<Outcome>>>,
    ) -> Node {
        let mut node = Node {
            path,
            rel,
            strategy: spec.strategy,
            window: IntensityWindow::new(spec.intensity),
            slots: Vec::new(),
            next_id: 1,
            bus: spec.bus,
            parent,
            outcome,
            phase: Phase::Running,
            sequence: None,
            timer: None,
            oom_kills: oom_kill_count(),
        };
        for child in spec.children {
            node.add_slots(child);
        }
        node
    }

    /// Adds the slot(s) of a spec: one, or `replicas` named `name.i`.
    fn add_slots(&mut self, spec: ChildSpec) -> Vec<SlotId> {
        match spec.replicas {
            None => vec![self.add_slot(spec.name.clone(), spec, None)],
            Some(n) => (0..n)
                .map(|i| {
                    let group = spec.name.clone();
                    self.add_slot(format!("{group}.{i}"), spec.for_replica(i), Some(group))
                })
                .collect(),
        }
    }

    fn add_slot(&mut self, name: String, spec: ChildSpec, group: Option<String>) -> SlotId {
        let id = self.next_id;
        self.next_id += 1;
        let seed = id ^ (std::process::id() as u64) << 32 ^ nanos();
        self.slots.push(Slot {
            id,
            name,
            backoff: BackoffState::new(spec.backoff, seed),
            spec,
            group,
            run: Run::Idle,
            generation: 0,
            wanted: true,
            restarts: 0,
            started_at: None,
            last_exit: None,
            removing: None,
            held: false,
            ready: false,
            watch: None,
            stop_waiters: Vec::new(),
        });
        id
    }

    fn pos(&self, id: SlotId) -> Option<usize> {
        self.slots.iter().position(|s| s.id == id)
    }

    /// The path of this supervisor's child `name`.
    fn child_path(&self, name: &str) -> String {
        join(&self.rel, name)
    }

    fn emit(&self, child: Option<&str>, kind: EventKind) {
        self.bus.publish(Event {
            time: SystemTime::now(),
            supervisor: self.path.clone(),
            child: child.map(str::to_owned),
            kind,
        });
    }

    /// Starts the slots in `ids`, in slot order.
    fn start_slots(&mut self, mut ids: Vec<SlotId>, ctx: &mut Context<Self>) {
        ids.sort_by_key(|id| self.pos(*id));
        for id in ids {
            self.start_slot(id, ctx);
        }
    }

    fn start_slot(&mut self, id: SlotId, ctx: &mut Context<Self>) {
        if self.phase != Phase::Running {
            return;
        }
        let Some(i) = self.pos(id) else { return };
        if self.slots[i].held || matches!(self.slots[i].run, Run::Running(_) | Run::Stopping { .. })
        {
            return;
        }
        let slot = &mut self.slots[i];
        slot.generation += 1;
        slot.wanted = true;
        slot.ready = false;
        let generation = slot.generation;
        let name = slot.name.clone();
        let mut notify = None;
        let launched = match &slot.spec.target {
            Target::Process(start) => {
                let method = slot
                    .spec
                    .method
                    .unwrap_or_else(crate::spawn::get_start_method);
                start(&name, method).map_err(LaunchError::from)
            }
            Target::Command(cmd) => {
                let bus = self.bus.clone();
                let path = self.path.clone();
                let child = name.clone();
                let socket = match slot.spec.ready {
                    Readiness::Notify => NotifySocket::bind().map(Some),
                    _ => Ok(None),
                };
                socket.map_err(LaunchError::from).and_then(|socket| {
                    let env = socket.as_ref().map(NotifySocket::env_value);
                    notify = socket;
                    Running::command(&name, cmd, env.as_deref(), move |e| {
                        bus.publish(Event {
                            time: SystemTime::now(),
                            supervisor: path.clone(),
                            child: Some(child.clone()),
                            kind: EventKind::LogFailed {
                                message: e.to_string(),
                            },
                        })
                    })
                })
            }
            Target::Supervisor(spec) => {
                let mut spec = (**spec).clone();
                spec.bus = self.bus.clone();
                let link = ParentLink {
                    addr: ctx.address(),
                    slot: id,
                    generation,
                };
                let path = format!("{}/{}", self.path, spec.name);
                let rel = join(&self.rel, &spec.name);
                Ok(Running::Node(
                    Node::new(path, rel, spec, Some(link), None).start(),
                ))
            }
        };
        self.slots[i].started_at = Some(Instant::now());
        match launched {
            Ok(running) => {
                let pid = running.pid();
                if let Running::Os { worker, .. } = &running {
                    ctx.spawn(worker.send(WaitExit).into_actor(self).map(
                        move |status, act, ctx| {
                            let status = status.unwrap_or_else(|_| ExitStatus::lost());
                            act.ended(id, generation, End::Process(status), ctx);
                        },
                    ));
                }
                self.slots[i].run = Run::Running(running);
                self.emit(Some(&name), EventKind::Started { pid });
                self.watch_ready(id, generation, pid, notify, ctx);
            }
            Err(e) => {
                self.slots[i].run = Run::Idle;
                self.emit(
                    Some(&name),
                    EventKind::StartFailed {
                        errno: e.errno,
                        message: e.message.clone(),
                    },
                );
                // Handled as a crash that came at once, after this start sequence.
                ctx.notify(Ended {
                    slot: id,
                    generation,
                    end: End::StartFailed,
                });
            }
        }
    }

    /// Watches a run that just started for its readiness (the default: ready at once).
    fn watch_ready(
        &mut self,
        id: SlotId,
        generation: u64,
        pid: i32,
        notify: Option<NotifySocket>,
        ctx: &mut Context<Self>,
    ) {
        let Some(i) = self.pos(id) else { return };
        let watch: std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> =
            match (self.slots[i].spec.ready, notify) {
                (Readiness::Notify, Some(socket)) => Box::pin(socket.ready(pid)),
                (Readiness::Tcp(addr), _) => Box::pin(ready::tcp(addr)),
                _ => {
                    self.slots[i].ready = true;
                    return;
                }
            };
        let handle = ctx.spawn(watch.into_actor(self).map(move |(), act, _| {
            act.became_ready(id, generation);
        }));
        self.slots[i].watch = Some(handle);
    }

    /// The run `generation` of a child said it is ready.
    fn became_ready(&mut self, id: SlotId, generation: u64) {
        let Some(i) = self.pos(id) else { return };
        let slot = &mut self.slots[i];
        if slot.generation != generation {
            return;
        }
        slot.watch = None;
        if let Run::Running(running) = &slot.run {
            let pid = running.pid();
            slot.ready = true;
            let name = slot.name.clone();
            self.emit(Some(&name), EventKind::Ready { pid });
        }
    }

    /// Asks a running child to stop; its end arrives as usual.
    fn stop_slot(&mut self, id: SlotId, ctx: &mut Context<Self>) {
        let Some(i) = self.pos(id) else { return };
        let slot = &mut self.slots[i];
        let run = std::mem::replace(&mut slot.run, Run::Idle);
        let running = match run {
            Run::Running(r) => r,
            other @ Run::Stopping { .. } => {
                slot.run = other;
                return;
            }
            Run::Idle | Run::Waiting => {
                // Nothing runs: the stop is done at once.
                ctx.notify(Stopped { slot: id });
                return;
            }
        };
        let generation = slot.generation;
        match (&running, slot.spec.shutdown) {
            (Running::Node(addr), _) => addr.do_send(ShutdownTree),
            (_, Shutdown::Kill) => running.signal(Signal::SIGKILL),
            (_, Shutdown::Graceful { signal, grace }) => {
                running.signal(signal);
                ctx.run_later(grace, move |act, ctx| act.escalate(id, generation, ctx));
            }
        }
        let escalated = matches!(slot.spec.shutdown, Shutdown::Kill);
        slot.run = Run::Stopping { running, escalated };
        if escalated {
            ctx.run_later(KILL_WAIT, move |act, ctx| act.stuck(id, generation, ctx));
        }
    }

    /// The grace period is over: SIGKILL.
    fn escalate(&mut self, id: SlotId, generation: u64, ctx: &mut Context<Self>) {
        let Some(i) = self.pos(id) else { return };
        let slot = &mut self.slots[i];
        if slot.generation != generation {
            return;
        }
        if let Run::Stopping { running, escalated } = &mut slot.run {
            if *escalated {
                return;
            }
            *escalated = true;
            let pid = running.pid();
            running.signal(Signal::SIGKILL);
            let name = slot.name.clone();
            self.emit(Some(&name), EventKind::StopTimedOut { pid });
            ctx.run_later(KILL_WAIT, move |act, ctx| act.stuck(id, generation, ctx));
        }
    }

    /// SIGKILL did not end it in time: report, and go on without it.
    fn stuck(&mut self, id: SlotId, generation: u64, ctx: &mut Context<Self>) {
        let Some(i) = self.pos(id) else { return };
        let slot = &self.slots[i];
        if slot.generation != generation {
            return;
        }
        if let Run::Stopping { running, .. } = &slot.run {
            let pid = running.pid();
            let state = super::reaper::stat(pid).map(|(s, _)| s);
            let name = slot.name.clone();
            self.emit(Some(&name), EventKind::StopStuck { pid, state });
            self.ended(id, generation, End::Stuck, ctx);
        }
    }

    /// A child's run ended (or failed to start, or was given up on).
    fn ended(&mut self, id: SlotId, generation: u64, end: End, ctx: &mut Context<Self>) {
        let Some(i) = self.pos(id) else { return };
        let now = Instant::now();
        let slot = &mut self.slots[i];
        if slot.generation != generation {
            return;
        }
        let (requested, escalated) = match &slot.run {
            Run::Stopping { escalated, .. } => (true, *escalated),
            _ => (false, false),
        };
        slot.run = Run::Idle;
        slot.ready = false;
        if let Some(watch) = slot.watch.take() {
            ctx.cancel_future(watch);
        }
        for w in slot.stop_waiters.drain(..) {
            let _ = w.send(());
        }
        // Late words about this run (a stuck child that dies after all) are ignored.
        slot.generation += 1;
        let ran_for = slot
            .started_at
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        // A stop we asked for is no failed start, however soon it came.
        let failed_start = !requested && slot.backoff.failed_start(ran_for);
        let name = slot.name.clone();
        let ending = match end {
            End::Process(status) => {
                let oom_killed = !requested && status.signal() == Some(Signal::SIGKILL as i32) && {
                    let now = oom_kill_count();
                    let rose = matches!((self.oom_kills, now), (Some(a), Some(b)) if b > a);
                    self.oom_kills = now;
                    rose
                };
                let exit = Exit {
                    status,
                    requested,
                    escalated,
                    oom_killed,
                };
                self.slots[i].last_exit = Some(exit);
                self.emit(
                    Some(&name),
                    EventKind::Exited {
                        exit,
                        ran_for,
                        failed_start,
                    },
                );
                Ending::classify(status.code(), status.signal(), requested)
            }
            End::Node(outcome) => {
                self.emit(
                    Some(&name),
                    EventKind::SupervisorEnded {
                        outcome: outcome.clone(),
                    },
                );
                match outcome {
                    Outcome::Stopped if requested => Ending::Stopped,
                    Outcome::Stopped => Ending::Normal,
                    Outcome::GaveUp(_) => Ending::Failed,
                }
            }
            End::StartFailed => Ending::Failed,
            End::Stuck => Ending::Stopped,
        };
        self.after_end(id, ending, ran_for, ctx);
    }

    fn after_end(
        &mut self,
        id: SlotId,
        ending: Ending,
        ran_for: Duration,
        ctx: &mut Context<Self>,
    ) {
        let Some(i) = self.pos(id) else { return };
        // A child being removed goes now.
        if let Some(waiters) = self.slots[i].removing.take() {
            self.slots.remove(i);
            for w in waiters {
                let _ = w.send(());
            }
            self.stopped(id, ctx);
            return;
        }
        // Stopped by us, or held by `stop_child` (a nested supervisor that gave up while
        // it stopped included): no restart, no intensity charge.
        if ending == Ending::Stopped || self.phase != Phase::Running || self.slots[i].held {
            self.stopped(id, ctx);
            return;
        }
        // It ended on its own.
        let slot = &mut self.slots[i];
        if !slot.spec.restart.restarts_after(ending) {
            slot.wanted = false;
            if slot.spec.restart == RestartType::Temporary {
                // OTP: a temporary child leaves the supervisor when it ends.
                self.slots.remove(i);
            }
            self.stopped(id, ctx);
            return;
        }
        if !self.window.allow(Instant::now()) {
            let slot = &self.slots[i];
            let last = slot
                .last_exit
                .map_or_else(|| "it failed to start".to_owned(), |e| e.to_string());
            let reason = format!(
                "more than {} restarts in {:?}; {:?} last ended: {last}",
                self.window_limit().0,
                self.window_limit().1,
                slot.name
            );
            self.give_up(reason, ctx);
            return;
        }
        let delay = self.slots[i].backoff.next_delay(ran_for);
        // Which children go down with it, over the children that should be running.
        let active: Vec<SlotId> = self
            .slots
            .iter()
            .filter(|s| s.wanted || s.id == id)
            .map(|s| s.id)
            .collect();
        let failed = active.iter().position(|&s| s == id).expect("listed");
        let plan = self.strategy.plan(active.len(), failed);
        let stops: Vec<SlotId> = plan.stop.iter().map(|&k| active[k]).collect();
        let mut start: Vec<SlotId> = plan.start.iter().map(|&k| active[k]).collect();
        // OTP: a temporary sibling taken down by the strategy is not restarted; it leaves.
        start.retain(|&s| {
            let Some(k) = self.pos(s) else { return false };
            let slot = &mut self.slots[k];
            if slot.spec.restart == RestartType::Temporary && s != id {
                slot.wanted = false;
                slot.removing.get_or_insert_with(Vec::new);
                return false;
            }
            true
        });
        for &s in &start {
            if let Some(k) = self.pos(s) {
                let slot = &mut self.slots[k];
                slot.restarts += 1;
                let (name, attempt) = (slot.name.clone(), slot.restarts);
                self.emit(Some(&name), EventKind::Restarting { attempt, delay });
            }
        }
        match &mut self.sequence {
            Some(seq) => {
                // Merge into the sequence under way.
                for s in stops {
                    if !seq.stops.contains(&s) {
                        seq.stops.push_back(s);
                    }
                }
                match &mut seq.after {
                    After::Restart {
                        start: already,
                        delay: d,
                    } => {
                        for s in start {
                            if !already.contains(&s) {
                                already.push(s);
                            }
                        }
                        *d = (*d).max(delay);
                    }
                    After::End(_) => {}
                }
                self.stopped(id, ctx);
            }
            None => {
                self.sequence = Some(Sequence {
                    stops: stops.into(),
                    after: After::Restart { start, delay },
                });
                self.advance(ctx);
            }
        }
    }

    fn window_limit(&self) -> (u32, Duration) {
        let l = self.window.limit();
        (l.max_restarts, l.period)
    }

    /// A child is no longer running: move the sequence on if it was waiting for it.
    fn stopped(&mut self, id: SlotId, ctx: &mut Context<Self>) {
        if let Some(seq) = &mut self.sequence {
            if seq.stops.front() == Some(&id) {
                seq.stops.pop_front();
                self.advance(ctx);
            } else {
                seq.stops.retain(|&s| s != id);
            }
        }
    }

    /// Stops the next child of the sequence, or, when none is left, does what comes after.
    fn advance(&mut self, ctx: &mut Context<Self>) {
        loop {
            let Some(seq) = &self.sequence else { return };
            match seq.stops.front().copied() {
                Some(next) => {
                    let running = self.pos(next).is_some_and(|i| {
                        matches!(self.slots[i].run, Run::Running(_) | Run::Stopping { .. })
                    });
                    if running {
                        self.stop_slot(next, ctx);
                        return;
                    }
                    if let Some(seq) = &mut self.sequence {
                        seq.stops.pop_front();
                    }
                    if let Some(i) = self.pos(next) {
                        if let Run::Waiting = self.slots[i].run {
                            self.slots[i].run = Run::Idle;
                        }
                    }
                }
                None => {
                    let seq = self.sequence.take().expect("checked");
                    match seq.after {
                        After::End(outcome) => self.finish(outcome, ctx),
                        After::Restart { start, delay } if delay.is_zero() => {
                            self.start_slots(start, ctx)
                        }
                        After::Restart { start, delay } => {
                            for &s in &start {
                                if let Some(i) = self.pos(s) {
                                    self.slots[i].run = Run::Waiting;
                                }
                            }
                            self.timer = Some(ctx.run_later(delay, move |act, ctx| {
                                act.timer = None;
                                act.start_slots(start, ctx);
                            }));
                        }
                    }
                    return;
                }
            }
        }
    }

    fn give_up(&mut self, reason: String, ctx: &mut Context<Self>) {
        self.emit(
            None,
            EventKind::GaveUp {
                reason: reason.clone(),
            },
        );
        self.end_with(Outcome::GaveUp(reason), ctx);
    }

    /// Stops every child, last-started first, then ends with `outcome`.
    fn end_with(&mut self, outcome: Outcome, ctx: &mut Context<Self>) {
        if self.phase != Phase::Running {
            return;
        }
        self.phase = Phase::Ending;
        if let Some(t) = self.timer.take() {
            ctx.cancel_future(t);
        }
        let stops: VecDeque<SlotId> = self
            .slots
            .iter()
            .rev()
            .filter(|s| matches!(s.run, Run::Running(_) | Run::Stopping { .. }))
            .map(|s| s.id)
            .collect();
        for s in &mut self.slots {
            if matches!(s.run, Run::Waiting) {
                s.run = Run::Idle;
            }
        }
        let current = self.sequence.take();
        // A stop under way keeps going: it is first in line.
        let mut queue = VecDeque::new();
        if let Some(front) = current.and_then(|c| c.stops.front().copied()) {
            queue.push_back(front);
        }
        for s in stops {
            if !queue.contains(&s) {
                queue.push_back(s);
            }
        }
        self.sequence = Some(Sequence {
            stops: queue,
            after: After::End(outcome),
        });
        // A child already stopping is waited for; the others are stopped in turn.
        self.advance(ctx);
    }

    fn finish(&mut self, outcome: Outcome, ctx: &mut Context<Self>) {
        self.phase = Phase::Ended;
        if outcome == Outcome::Stopped {
            self.emit(None, EventKind::Stopped);
        }
        for s in &mut self.slots {
            if let Some(waiters) = s.removing.take() {
                for w in waiters {
                    let _ = w.send(());
                }
            }
        }
        if let Some(link) = self.parent.take() {
            link.addr.do_send(Ended {
                slot: link.slot,
                generation: link.generation,
                end: End::Node(outcome.clone()),
            });
        } else {
            // The root: the tree is over, and so are its event streams.
            self.bus.close();
        }
        if let Some(latch) = &self.outcome {
            latch.set(outcome);
        }
        ctx.stop();
    }

    fn state_of(&self, slot: &Slot) -> ChildState {
        let (pid, state) = match &slot.run {
            Run::Running(r) if slot.ready => (Some(r.pid()), RunState::Running),
            Run::Running(r) => (Some(r.pid()), RunState::Starting),
            Run::Stopping { running, .. } => (Some(running.pid()), RunState::Stopping),
            Run::Waiting => (None, RunState::Restarting),
            Run::Idle if slot.held => (None, RunState::Stopped),
            Run::Idle if slot.wanted => (None, RunState::Restarting),
            Run::Idle => (None, RunState::Ended),
        };
        ChildState {
            name: slot.name.clone(),
            path: self.child_path(&slot.name),
            supervisor: matches!(slot.spec.target, Target::Supervisor(_)),
            pid,
            state,
            restarts: slot.restarts,
            last_exit: slot.last_exit,
            uptime: match state {
                RunState::Running | RunState::Starting => slot.started_at.map(|t| t.elapsed()),
                _ => None,
            },
        }
    }

    /// Stops and removes one slot; `done` hears when it is gone.
    fn remove_slot(&mut self, id: SlotId, done: oneshot::Sender<()>, ctx: &mut Context<Self>) {
        let Some(i) = self.pos(id) else {
            let _ = done.send(());
            return;
        };
        let slot = &mut self.slots[i];
        slot.wanted = false;
        slot.removing.get_or_insert_with(Vec::new).push(done);
        if matches!(slot.run, Run::Running(_) | Run::Stopping { .. }) {
            self.stop_slot(id, ctx);
        } else {
            let waiters = slot.removing.take().unwrap_or_default();
            self.slots.remove(i);
            for w in waiters {
                let _ = w.send(());
            }
            if let Some(seq) = &mut self.sequence {
                seq.stops.retain(|&s| s != id);
                if let After::Restart { start, .. } = &mut seq.after {
                    start.retain(|&s| s != id);
                }
            }
        }
    }
}

/// `rel/name`, or `name` under the root.
fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_owned()
    } else {
        format!("{rel}/{name}")
    }
}

fn nanos() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64)
}

/// The kernel's count of OOM kills (`/proc/vmstat`), where it can be read.
fn oom_kill_count() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/vmstat").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

impl Actor for Node {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let ids = self.slots.iter().map(|s| s.id).collect();
        self.start_slots(ids, ctx);
    }
}

/// A child's run ended (from a nested supervisor, or a start that failed).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Ended {
    slot: SlotId,
    generation: u64,
    end: End,
}

impl Handler<Ended> for Node {
    type Result = ();

    fn handle(&mut self, msg: Ended, ctx: &mut Context<Self>) {
        self.ended(msg.slot, msg.generation, msg.end, ctx);
    }
}

/// A stop found nothing running.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Stopped {
    slot: SlotId,
}

impl Handler<Stopped> for Node {
    type Result = ();

    fn handle(&mut self, msg: Stopped, ctx: &mut Context<Self>) {
        self.stopped(msg.slot, ctx);
    }
}

/// Stops the supervisor: every child, last-started first; then it ends with
/// [`Outcome::Stopped`].
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct ShutdownTree;

impl Handler<ShutdownTree> for Node {
    type Result = ();

    fn handle(&mut self, _: ShutdownTree, ctx: &mut Context<Self>) {
        self.end_with(Outcome::Stopped, ctx);
    }
}

/// Where a path leads from a supervisor.
enum Place {
    /// A child (or group) of this supervisor: the name.
    Here(String),
    /// Below the running nested supervisor `head`: what is left of the path.
    Below {
        addr: Addr<Node>,
        head: String,
        rest: String,
    },
}

impl Node {
    /// Follows the first step of `path`: a plain name is here, `head/rest` is below the
    /// nested supervisor `head`, which must be running.
    fn place(&self, path: &str) -> Result<Place, TreeError> {
        let Some((head, rest)) = path.split_once('/') else {
            return Ok(Place::Here(path.to_owned()));
        };
        let nested = self
            .slots
            .iter()
            .find(|s| s.name == head && s.removing.is_none())
            .filter(|s| matches!(s.spec.target, Target::Supervisor(_)))
            .ok_or_else(|| TreeError::NoSuchChild(path.to_owned()))?;
        match &nested.run {
            Run::Running(Running::Node(addr)) => Ok(Place::Below {
                addr: addr.clone(),
                head: head.to_owned(),
                rest: rest.to_owned(),
            }),
            _ => Err(TreeError::NotRunning(head.to_owned())),
        }
    }

    /// The slots that `name` names here: the child of that name, or the members of the
    /// group of that name.
    fn named(&self, name: &str) -> Vec<SlotId> {
        self.slots
            .iter()
            .filter(|s| s.removing.is_none())
            .filter(|s| s.name == name || s.group.as_deref() == Some(name))
            .map(|s| s.id)
            .collect()
    }

    /// Stops these slots and keeps them stopped (`RunState::Stopped`); the receivers hear
    /// when each run has ended.
    fn hold(&mut self, ids: &[SlotId], ctx: &mut Context<Self>) -> Vec<oneshot::Receiver<()>> {
        let mut waits = Vec::new();
        for &id in ids {
            let Some(i) = self.pos(id) else { continue };
            let slot = &mut self.slots[i];
            slot.held = true;
            slot.wanted = false;
            match slot.run {
                Run::Running(_) | Run::Stopping { .. } => {
                    let (tx, rx) = oneshot::channel();
                    slot.stop_waiters.push(tx);
                    waits.push(rx);
                    self.stop_slot(id, ctx);
                }
                // A pending restart is dropped: `start_slot` skips a held slot.
                Run::Waiting => slot.run = Run::Idle,
                Run::Idle => {}
            }
        }
        waits
    }

    /// Receivers that hear when those of these slots that are stopping have stopped.
    fn until_stopped(&mut self, ids: &[SlotId]) -> Vec<oneshot::Receiver<()>> {
        let mut waits = Vec::new();
        for &id in ids {
            let Some(i) = self.pos(id) else { continue };
            if let Run::Stopping { .. } = self.slots[i].run {
                let (tx, rx) = oneshot::channel();
                self.slots[i].stop_waiters.push(tx);
                waits.push(rx);
            }
        }
        waits
    }

    /// Starts these slots again where they are not running (held or not).
    fn release(&mut self, ids: &[SlotId], ctx: &mut Context<Self>) -> Result<(), TreeError> {
        if self.phase != Phase::Running {
            return Err(TreeError::Ended);
        }
        for &id in ids {
            let Some(i) = self.pos(id) else { continue };
            self.slots[i].held = false;
            if let Run::Idle | Run::Waiting = self.slots[i].run {
                self.start_slot(id, ctx);
            }
        }
        Ok(())
    }

    /// Stops (`stop`), then starts (`start`), the child or group at `path`, answering
    /// once that is done.
    fn cycle(
        &mut self,
        path: String,
        stop: bool,
        start: bool,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Result<(), TreeError>> {
        if self.phase != Phase::Running {
            return Box::pin(actix::fut::ready(Err(TreeError::Ended)));
        }
        let name = match self.place(&path) {
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
            Ok(Place::Below { addr, head, rest }) => {
                let msg = Cycle {
                    path: rest,
                    stop,
                    start,
                };
                return self.forward(addr, head, msg);
            }
            Ok(Place::Here(name)) => name,
        };
        let ids = self.named(&name);
        if ids.is_empty() {
            return Box::pin(actix::fut::ready(Err(TreeError::NoSuchChild(path))));
        }
        let waits = if stop {
            self.hold(&ids, ctx)
        } else {
            self.until_stopped(&ids)
        };
        let stopped = async move {
            for w in waits {
                w.await.map_err(|_| TreeError::Ended)?;
            }
            Ok(())
        };
        Box::pin(stopped.into_actor(self).map(move |r, act, ctx| {
            r?;
            if start {
                act.release(&ids, ctx)
            } else {
                Ok(())
            }
        }))
    }

    /// Sends `msg` to the nested supervisor `head`, naming paths in its errors from here.
    fn forward<M, R>(
        &self,
        addr: Addr<Node>,
        head: String,
        msg: M,
    ) -> ResponseActFuture<Self, Result<R, TreeError>>
    where
        M: Message<Result = Result<R, TreeError>> + Send + 'static,
        R: Send + 'static,
        Node: Handler<M>,
    {
        Box::pin(
            async move {
                match addr.send(msg).await {
                    Ok(r) => r.map_err(|e| e.under(&head)),
                    Err(_) => Err(TreeError::NoSuchChild(head)),
                }
            }
            .into_actor(self),
        )
    }
}

impl TreeError {
    /// The error of a nested supervisor, its paths made relative to its parent.
    fn under(self, head: &str) -> TreeError {
        match self {
            TreeError::NoSuchChild(p) => TreeError::NoSuchChild(join(head, &p)),
            TreeError::NotAGroup(p) => TreeError::NotAGroup(join(head, &p)),
            TreeError::NotRunning(p) => TreeError::NotRunning(join(head, &p)),
            other => other,
        }
    }
}

/// Asks for the children and their state, in start order.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Vec<ChildState>")]
pub struct Children;

impl Handler<Children> for Node {
    type Result = Vec<ChildState>;

    fn handle(&mut self, _: Children, _: &mut Context<Self>) -> Vec<ChildState> {
        self.slots.iter().map(|s| self.state_of(s)).collect()
    }
}

/// Asks for every child of every supervisor of the tree, depth first in start order (a
/// nested supervisor before its children), each with its path.
///
/// ```no_run
/// # #[allow(dead_code)]
/// # async fn demo(tree: &procvisor::tree::Tree) -> Result<(), actix::MailboxError> {
/// for c in tree.addr().send(procvisor::tree::Walk).await? {
///     println!("{} {:?}", c.path, c.state);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Vec<ChildState>")]
pub struct Walk;

impl Handler<Walk> for Node {
    type Result = ResponseActFuture<Self, Vec<ChildState>>;

    fn handle(&mut self, _: Walk, _: &mut Context<Self>) -> Self::Result {
        let entries: Vec<(ChildState, Option<Addr<Node>>)> = self
            .slots
            .iter()
            .map(|s| {
                let nested = match &s.run {
                    Run::Running(Running::Node(addr))
                    | Run::Stopping {
                        running: Running::Node(addr),
                        ..
                    } => Some(addr.clone()),
                    _ => None,
                };
                (self.state_of(s), nested)
            })
            .collect();
        Box::pin(
            async move {
                let mut all = Vec::new();
                for (state, nested) in entries {
                    all.push(state);
                    if let Some(addr) = nested {
                        // A nested supervisor that ends meanwhile has no children to list.
                        all.extend(addr.send(Walk).await.unwrap_or_default());
                    }
                }
                all
            }
            .into_actor(self),
        )
    }
}

/// Adds a child at the end of the supervisor at path `supervisor` (`""`: this one), and
/// starts it.
///
/// ```no_run
/// # #[allow(dead_code)]
/// # async fn demo(tree: &procvisor::tree::Tree) -> Result<(), Box<dyn std::error::Error>> {
/// use procvisor::tree::{AddChild, ChildSpec, Command};
/// let spec = ChildSpec::command("api2", Command::new("sleep").arg("60"));
/// tree.addr().send(AddChild::at("web", spec)).await??;
/// # Ok(()) }
/// ```
#[derive(Debug, Message)]
#[rtype(result = "Result<(), TreeError>")]
pub struct AddChild {
    /// The path of the supervisor to add it to (`""`: the one the message is sent to).
    pub supervisor: String,
    /// The child.
    pub spec: ChildSpec,
}

impl AddChild {
    /// Adds `spec` to the supervisor the message is sent to.
    ///
    /// ```
    /// use procvisor::tree::{AddChild, ChildSpec, Command};
    /// let msg = AddChild::new(ChildSpec::command("x", Command::new("true")));
    /// assert_eq!(msg.supervisor, "");
    /// ```
    pub fn new(spec: ChildSpec) -> Self {
        Self::at("", spec)
    }

    /// Adds `spec` to the supervisor at `supervisor`, a path from the one the message is
    /// sent to.
    ///
    /// ```
    /// use procvisor::tree::{AddChild, ChildSpec, Command};
    /// let msg = AddChild::at("web", ChildSpec::command("x", Command::new("true")));
    /// assert_eq!(msg.supervisor, "web");
    /// ```
    pub fn at(supervisor: impl Into<String>, spec: ChildSpec) -> Self {
        AddChild {
            supervisor: supervisor.into(),
            spec,
        }
    }
}

impl Handler<AddChild> for Node {
    type Result = ResponseActFuture<Self, Result<(), TreeError>>;

    fn handle(&mut self, msg: AddChild, ctx: &mut Context<Self>) -> Self::Result {
        let ready = |r| -> Self::Result { Box::pin(actix::fut::ready(r)) };
        if self.phase != Phase::Running {
            return ready(Err(TreeError::Ended));
        }
        if !msg.supervisor.is_empty() {
            // The supervisor's path, with an empty last step: its head is the nested one.
            return match self.place(&format!("{}/", msg.supervisor)) {
                Ok(Place::Below { addr, head, rest }) => {
                    let rest = rest.trim_end_matches('/').to_owned();
                    self.forward(addr, head, AddChild::at(rest, msg.spec))
                }
                Ok(Place::Here(_)) => ready(Err(TreeError::NoSuchChild(msg.supervisor))),
                Err(TreeError::NoSuchChild(_)) => {
                    ready(Err(TreeError::NoSuchChild(msg.supervisor)))
                }
                Err(e) => ready(Err(e)),
            };
        }
        let mut names = self
            .slots
            .iter()
            .flat_map(|s| [Some(s.name.clone()), s.group.clone()])
            .flatten()
            .collect();
        if let Err(e) = msg.spec.validate(&mut names) {
            return ready(Err(e));
        }
        let ids = self.add_slots(msg.spec);
        self.start_slots(ids, ctx);
        ready(Ok(()))
    }
}

/// Stops the child at a path and removes it; answers once it has stopped.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), TreeError>")]
pub struct RemoveChild(pub String);

impl Handler<RemoveChild> for Node {
    type Result = ResponseActFuture<Self, Result<(), TreeError>>;

    fn handle(&mut self, msg: RemoveChild, ctx: &mut Context<Self>) -> Self::Result {
        let name = match self.place(&msg.0) {
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
            Ok(Place::Below { addr, head, rest }) => {
                return self.forward(addr, head, RemoveChild(rest));
            }
            Ok(Place::Here(name)) => name,
        };
        let Some(id) = self.slots.iter().find(|s| s.name == name).map(|s| s.id) else {
            return Box::pin(actix::fut::ready(Err(TreeError::NoSuchChild(msg.0))));
        };
        let (tx, rx) = oneshot::channel();
        self.remove_slot(id, tx, ctx);
        Box::pin(async move { rx.await.map_err(|_| TreeError::Ended) }.into_actor(self))
    }
}

/// Grows or shrinks the group of replicas at a path to `n`; answers once the removed ones
/// stopped.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), TreeError>")]
pub struct Scale(pub String, pub usize);

impl Handler<Scale> for Node {
    type Result = ResponseActFuture<Self, Result<(), TreeError>>;

    fn handle(&mut self, Scale(path, n): Scale, ctx: &mut Context<Self>) -> Self::Result {
        let ready = |r| -> Self::Result { Box::pin(actix::fut::ready(r)) };
        if self.phase != Phase::Running {
            return ready(Err(TreeError::Ended));
        }
        let group = match self.place(&path) {
            Err(e) => return ready(Err(e)),
            Ok(Place::Below { addr, head, rest }) => {
                return self.forward(addr, head, Scale(rest, n));
            }
            Ok(Place::Here(name)) => name,
        };
        let members: Vec<(SlotId, usize)> = self
            .slots
            .iter()
            .filter(|s| s.group.as_deref() == Some(group.as_str()) && s.removing.is_none())
            .map(|s| {
                let index = s.name.rsplit('.').next().and_then(|i| i.parse().ok());
                (s.id, index.unwrap_or(0))
            })
            .collect();
        let Some(template) = self
            .slots
            .iter()
            .find(|s| s.group.as_deref() == Some(group.as_str()))
            .map(|s| s.spec.clone())
        else {
            let exists = self.slots.iter().any(|s| s.name == group);
            return ready(Err(if exists {
                TreeError::NotAGroup(group)
            } else {
                TreeError::NoSuchChild(group)
            }));
        };
        let current = members.len();
        if n > current {
            let first = members.iter().map(|(_, i)| i + 1).max().unwrap_or(0);
            let ids = (first..first + (n - current))
                .map(|k| {
                    self.add_slot(
                        format!("{group}.{k}"),
                        template.for_replica(k),
                        Some(group.clone()),
                    )
                })
                .collect();
            self.start_slots(ids, ctx);
            return ready(Ok(()));
        }
        let mut by_index = members;
        by_index.sort_by_key(|&(_, i)| std::cmp::Reverse(i));
        let mut waits = Vec::new();
        for (id, _) in by_index.into_iter().take(current - n) {
            let (tx, rx) = oneshot::channel();
            self.remove_slot(id, tx, ctx);
            waits.push(rx);
        }
        Box::pin(
            async move {
                for w in waits {
                    w.await.map_err(|_| TreeError::Ended)?;
                }
                Ok(())
            }
            .into_actor(self),
        )
    }
}

/// Stops the child (or every member of the group) at a path with its shutdown and keeps
/// its slot, [`RunState::Stopped`] until [`StartChild`]; not a crash, no intensity charge.
/// Answers once it has stopped.
///
/// ```no_run
/// # #[allow(dead_code)]
/// # async fn demo(tree: &procvisor::tree::Tree) -> Result<(), Box<dyn std::error::Error>> {
/// tree.addr().send(procvisor::tree::StopChild("web/api".into())).await??;
/// # Ok(()) }
/// ```
#[derive(Debug, Message)]
#[rtype(result = "Result<(), TreeError>")]
pub struct StopChild(pub String);

/// Starts the stopped (or ended) child, or every member of the group, at a path again in
/// its slot; answers once it was launched (`Started` or `StartFailed` emitted).
///
/// ```no_run
/// # #[allow(dead_code)]
/// # async fn demo(tree: &procvisor::tree::Tree) -> Result<(), Box<dyn std::error::Error>> {
/// tree.addr().send(procvisor::tree::StartChild("web/api".into())).await??;
/// # Ok(()) }
/// ```
#[derive(Debug, Message)]
#[rtype(result = "Result<(), TreeError>")]
pub struct StartChild(pub String);

/// [`StopChild`], then [`StartChild`].
///
/// ```no_run
/// # #[allow(dead_code)]
/// # async fn demo(tree: &procvisor::tree::Tree) -> Result<(), Box<dyn std::error::Error>> {
/// tree.addr().send(procvisor::tree::RestartChild("workers".into())).await??;
/// # Ok(()) }
/// ```
#[derive(Debug, Message)]
#[rtype(result = "Result<(), TreeError>")]
pub struct RestartChild(pub String);

/// What the three messages above do, forwarded down a path.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), TreeError>")]
struct Cycle {
    path: String,
    stop: bool,
    start: bool,
}

impl Handler<Cycle> for Node {
    type Result = ResponseActFuture<Self, Result<(), TreeError>>;

    fn handle(&mut self, msg: Cycle, ctx: &mut Context<Self>) -> Self::Result {
        self.cycle(msg.path, msg.stop, msg.start, ctx)
    }
}

impl Handler<StopChild> for Node {
    type Result = ResponseActFuture<Self, Result<(), TreeError>>;

    fn handle(&mut self, msg: StopChild, ctx: &mut Context<Self>) -> Self::Result {
        self.cycle(msg.0, true, false, ctx)
    }
}

impl Handler<StartChild> for Node {
    type Result = ResponseActFuture<Self, Result<(), TreeError>>;

    fn handle(&mut self, msg: StartChild, ctx: &mut Context<Self>) -> Self::Result {
        self.cycle(msg.0, false, true, ctx)
    }
}

impl Handler<RestartChild> for Node {
    type Result = ResponseActFuture<Self, Result<(), TreeError>>;

    fn handle(&mut self, msg: RestartChild, ctx: &mut Context<Self>) -> Self::Result {
        self.cycle(msg.0, true, true, ctx)
    }
}
