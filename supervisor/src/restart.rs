//! Restart policy: OTP's supervisor semantics as pure decisions, with no process and no
//! clock of their own, so that every rule is unit-tested with an injected clock.
//!
//! - [`RestartType`]: whether a child that ended comes back (permanent, transient,
//!   temporary), from how it ended ([`Ending`]).
//! - [`Strategy`]: which children a failure takes down with it (one_for_one, one_for_all,
//!   rest_for_one), and in what order they stop and start.
//! - [`Intensity`] / [`IntensityWindow`]: at most R restarts in P seconds per supervisor;
//!   one more and the supervisor gives up (and its parent decides).
//! - [`Backoff`] / [`BackoffState`]: the delay before each restart of a crash-looping
//!   child: exponential, capped, jittered, reset after a stable run; and the start-success
//!   window, inside which an exit counts as a failed start.
//!
//! The defaults are stated on each type, with where they come from. The design notes are
//! in `restart/README.md`.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use procvisor::restart::{Backoff, BackoffState, Ending, Intensity, IntensityWindow, RestartType};
//!
//! let t0 = Instant::now();
//! let crashed = Ending::Failed;
//! assert!(RestartType::Permanent.restarts_after(crashed));
//!
//! let mut window = IntensityWindow::new(Intensity::default());
//! assert!(window.allow(t0)); // the first restart is within the limit
//!
//! let mut backoff = BackoffState::new(Backoff::default(), 7);
//! let first = backoff.next_delay(Duration::from_millis(5));
//! let second = backoff.next_delay(Duration::from_millis(5));
//! assert!(second > first);
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// How a supervised child ended, as the restart rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Exit code 0.
    Normal,
    /// Stopped by its supervisor (a stop signal we sent, or its escalation to SIGKILL).
    Stopped,
    /// Anything else: a non-zero exit code, a signal we did not send, a failed exec.
    Failed,
}

impl Ending {
    /// Classifies an exit: `code` when it exited, `signal` when a signal killed it, and
    /// whether that signal (or a stop) came from us.
    ///
    /// ```
    /// use procvisor::restart::Ending;
    /// assert_eq!(Ending::classify(Some(0), None, false), Ending::Normal);
    /// assert_eq!(Ending::classify(Some(3), None, false), Ending::Failed);
    /// assert_eq!(Ending::classify(None, Some(15), true), Ending::Stopped);
    /// assert_eq!(Ending::classify(None, Some(9), false), Ending::Failed);
    /// ```
    pub fn classify(code: Option<i32>, signal: Option<i32>, stopped_by_us: bool) -> Ending {
        match (code, signal) {
            _ if stopped_by_us => Ending::Stopped,
            (Some(0), _) => Ending::Normal,
            _ => Ending::Failed,
        }
    }
}

/// Whether a child comes back after it ends (OTP's restart types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartType {
    /// Always restarted, whatever the ending (unless its supervisor stopped it). The
    /// default, as in OTP.
    #[default]
    Permanent,
    /// Restarted only after an abnormal ending: a non-zero code, or a signal we did not
    /// send.
    Transient,
    /// Never restarted.
    Temporary,
}

impl RestartType {
    /// Whether a child of this type is restarted after `ending`.
    ///
    /// ```
    /// use procvisor::restart::{Ending, RestartType};
    /// assert!(RestartType::Permanent.restarts_after(Ending::Normal));
    /// assert!(!RestartType::Transient.restarts_after(Ending::Normal));
    /// assert!(RestartType::Transient.restarts_after(Ending::Failed));
    /// assert!(!RestartType::Temporary.restarts_after(Ending::Failed));
    /// assert!(!RestartType::Permanent.restarts_after(Ending::Stopped));
    /// ```
    pub fn restarts_after(self, ending: Ending) -> bool {
        match (self, ending) {
            (_, Ending::Stopped) | (RestartType::Temporary, _) => false,
            (RestartType::Permanent, _) => true,
            (RestartType::Transient, ending) => ending == Ending::Failed,
        }
    }
}

/// Which children a failure takes down with it (OTP's strategies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Only the child that ended is restarted. The default.
    #[default]
    OneForOne,
    /// Every child is stopped (in reverse start order) and all are started again (in
    /// order).
    OneForAll,
    /// The child that ended and every child started after it are stopped (in reverse
    /// order) and started again (in order).
    RestForOne,
}

/// What a supervisor does about one child's ending: stop these (in this order), then
/// start these (in this order). Indices are positions in start order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Children still running that must be stopped first, last-started first.
    pub stop: Vec<usize>,
    /// Children to start again, first-started first.
    pub start: Vec<usize>,
}

impl Strategy {
    /// The plan after child `failed` (of `len`, in start order) ended and must be
    /// restarted.
    ///
    /// ```
    /// use procvisor::restart::{Plan, Strategy};
    /// assert_eq!(
    ///     Strategy::RestForOne.plan(4, 1),
    ///     Plan { stop: vec![3, 2], start: vec![1, 2, 3] }
    /// );
    /// assert_eq!(Strategy::OneForOne.plan(4, 1), Plan { stop: vec![], start: vec![1] });
    /// ```
    pub fn plan(self, len: usize, failed: usize) -> Plan {
        let affected: Vec<usize> = match self {
            Strategy::OneForOne => vec![failed],
            Strategy::OneForAll => (0..len).collect(),
            Strategy::RestForOne => (failed..len).collect(),
        };
        Plan {
            stop: affected
                .iter()
                .rev()
                .copied()
                .filter(|&i| i != failed)
                .collect(),
            start: affected,
        }
    }
}

/// At most `max_restarts` restarts within `period`, per supervisor.
///
/// Default: 5 restarts in 10 seconds, systemd's `StartLimitBurst` / `StartLimitIntervalSec`.
/// OTP's default (1 in 5 s) suits in-VM processes that restart in microseconds; OS
/// processes behind a backoff need more room before the supervisor gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts allowed within a period.
    pub max_restarts: u32,
    /// The sliding window.
    pub period: Duration,
}

impl Default for Intensity {
    fn default() -> Self {
        Intensity {
            max_restarts: 5,
            period: Duration::from_secs(10),
        }
    }
}

/// An invalid policy: typed, before anything starts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyError {
    /// The intensity period is zero.
    ZeroPeriod,
    /// The backoff factor is below 1, not finite, or the jitter is outside `0..=1`.
    BadBackoff(&'static str),
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyError::ZeroPeriod => f.write_str("restart intensity period must be positive"),
            PolicyError::BadBackoff(why) => write!(f, "invalid backoff: {why}"),
        }
    }
}

impl std::error::Error for PolicyError {}

impl Intensity {
    /// Checks the values.
    ///
    /// ```
    /// use std::time::Duration;
    /// let bad = procvisor::restart::Intensity { max_restarts: 3, period: Duration::ZERO };
    /// assert!(bad.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.period.is_zero() {
            return Err(PolicyError::ZeroPeriod);
        }
        Ok(())
    }
}

/// The restarts a supervisor made in the last period.
#[derive(Debug, Clone)]
pub struct IntensityWindow {
    limit: Intensity,
    restarts: VecDeque<Instant>,
}

impl IntensityWindow {
    /// An empty window.
    pub fn new(limit: Intensity) -> Self {
        IntensityWindow {
            limit,
            restarts: VecDeque::new(),
        }
    }

    /// The limit this window enforces.
    ///
    /// ```
    /// use procvisor::restart::{Intensity, IntensityWindow};
    /// assert_eq!(IntensityWindow::new(Intensity::default()).limit(), Intensity::default());
    /// ```
    pub fn limit(&self) -> Intensity {
        self.limit
    }

    /// Records a restart at `now` and says whether it is within the limit; `false` means
    /// the supervisor must give up.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use procvisor::restart::{Intensity, IntensityWindow};
    /// let mut w = IntensityWindow::new(Intensity { max_restarts: 1, period: Duration::from_secs(5) });
    /// let t = Instant::now();
    /// assert!(w.allow(t));
    /// assert!(!w.allow(t + Duration::from_secs(1))); // two in 5 s
    /// ```
    pub fn allow(&mut self, now: Instant) -> bool {
        while let Some(&oldest) = self.restarts.front() {
            if now.saturating_duration_since(oldest) >= self.limit.period {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        self.restarts.push_back(now);
        self.restarts.len() <= self.limit.max_restarts as usize
    }
}

/// The delay before restarting a crash-looping child.
///
/// Defaults: first delay 100 ms, doubling, capped at 30 s, ±10 % jitter, reset after 10 s
/// of stable running, and a 1 s start-success window (supervisord's `startsecs`).
/// Kubernetes starts at 10 s and caps at 5 min; a library supervisor restarts workers that
/// cost a millisecond to start, so it starts lower.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The delay before the first restart of a run of failures.
    pub initial: Duration,
    /// Each further consecutive failure multiplies the delay by this.
    pub factor: f64,
    /// The delay never exceeds this.
    pub cap: Duration,
    /// Each delay is moved by up to this fraction, up or down, so that children that fail
    /// together do not restart in lockstep.
    pub jitter: f64,
    /// A child that ran at least this long before ending starts a new run of failures.
    pub reset_after: Duration,
    /// A child that ends sooner than this after starting counts as a failed start.
    pub start_success: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            factor: 2.0,
            cap: Duration::from_secs(30),
            jitter: 0.1,
            reset_after: Duration::from_secs(10),
            start_success: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    /// No delay at all (for tests and latency-critical workers).
    ///
    /// ```
    /// let b = procvisor::restart::Backoff::none();
    /// assert_eq!(b.initial, std::time::Duration::ZERO);
    /// ```
    pub fn none() -> Self {
        Backoff {
            initial: Duration::ZERO,
            jitter: 0.0,
            ..Backoff::default()
        }
    }

    /// Checks the values.
    ///
    /// ```
    /// use procvisor::restart::Backoff;
    /// let b = Backoff { factor: 0.5, ..Backoff::default() };
    /// assert!(b.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), PolicyError> {
        if !self.factor.is_finite() || self.factor < 1.0 {
            return Err(PolicyError::BadBackoff("factor must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(PolicyError::BadBackoff("jitter must be within 0..=1"));
        }
        Ok(())
    }
}

/// The backoff of one child: how many consecutive failures, and the jitter's random state.
#[derive(Debug, Clone)]
pub struct BackoffState {
    policy: Backoff,
    failures: u32,
    rng: u64,
}

impl BackoffState {
    /// A child with no failures yet; `seed` drives the jitter (any value; equal seeds give
    /// equal sequences, which the tests rely on).
    pub fn new(policy: Backoff, seed: u64) -> Self {
        BackoffState {
            policy,
            failures: 0,
            rng: seed | 1,
        }
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Whether a child that ran for `ran_for` failed to start (ended inside the
    /// start-success window).
    ///
    /// ```
    /// use std::time::Duration;
    /// use procvisor::restart::{Backoff, BackoffState};
    /// let s = BackoffState::new(Backoff::default(), 1);
    /// assert!(s.failed_start(Duration::from_millis(200)));
    /// assert!(!s.failed_start(Duration::from_secs(2)));
    /// ```
    pub fn failed_start(&self, ran_for: Duration) -> bool {
        ran_for < self.policy.start_success
    }

    /// The delay before the next restart of a child that just ended after running for
    /// `ran_for`. A stable run (at least `reset_after`) starts the count afresh.
    pub fn next_delay(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.policy.reset_after {
            self.failures = 0;
        }
        let exp = self.policy.factor.powi(self.failures.min(64) as i32);
        self.failures = self.failures.saturating_add(1);
        let base = self.policy.initial.as_secs_f64() * exp;
        let capped = base.min(self.policy.cap.as_secs_f64());
        let jittered = capped * (1.0 + self.policy.jitter * (2.0 * self.uniform() - 1.0));
        Duration::from_secs_f64(jittered.clamp(0.0, self.policy.cap.as_secs_f64()))
    }

    /// A uniform number in `[0, 1)` from xorshift64: jitter needs spread, not secrecy.
    fn uniform(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
#[path = "restart/tests.rs"]
mod tests;
