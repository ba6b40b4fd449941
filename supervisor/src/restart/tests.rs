//! Restart policy, with an injected clock: every instant is `t0 + offset`, no sleeping and
//! no processes.

use std::time::{Duration, Instant};

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A fake clock: instants at chosen offsets from one origin.
struct Clock(Instant);

impl Clock {
    fn at(&self, offset: Duration) -> Instant {
        self.0 + offset
    }
}

#[test]
fn restart_types_follow_otp() {
    use Ending::*;
    use RestartType::*;
    let table = [
        (Permanent, Normal, true),
        (Permanent, Failed, true),
        (Permanent, Stopped, false),
        (Transient, Normal, false),
        (Transient, Failed, true),
        (Transient, Stopped, false),
        (Temporary, Normal, false),
        (Temporary, Failed, false),
        (Temporary, Stopped, false),
    ];
    for (kind, ending, want) in table {
        assert_eq!(
            kind.restarts_after(ending),
            want,
            "{kind:?} after {ending:?}"
        );
    }
}

#[test]
fn endings_are_classified_without_losing_who_sent_the_signal() {
    assert_eq!(Ending::classify(Some(0), None, false), Ending::Normal);
    assert_eq!(Ending::classify(Some(1), None, false), Ending::Failed);
    assert_eq!(Ending::classify(None, Some(9), false), Ending::Failed);
    // Our own stop, even escalated to SIGKILL, is a stop, not a crash.
    assert_eq!(Ending::classify(None, Some(9), true), Ending::Stopped);
    assert_eq!(Ending::classify(Some(0), None, true), Ending::Stopped);
}

#[test]
fn strategies_stop_in_reverse_and_start_in_order() {
    assert_eq!(
        Strategy::OneForAll.plan(3, 1),
        Plan {
            stop: vec![2, 0],
            start: vec![0, 1, 2]
        }
    );
    assert_eq!(
        Strategy::RestForOne.plan(3, 2),
        Plan {
            stop: vec![],
            start: vec![2]
        }
    );
    assert_eq!(
        Strategy::RestForOne.plan(5, 0),
        Plan {
            stop: vec![4, 3, 2, 1],
            start: vec![0, 1, 2, 3, 4]
        }
    );
    assert_eq!(
        Strategy::OneForOne.plan(5, 3),
        Plan {
            stop: vec![],
            start: vec![3]
        }
    );
}

#[test]
fn intensity_gives_up_past_r_restarts_in_p() {
    let clock = Clock(Instant::now());
    let mut w = IntensityWindow::new(Intensity {
        max_restarts: 3,
        period: Duration::from_secs(5),
    });
    assert!(w.allow(clock.at(ms(0))));
    assert!(w.allow(clock.at(ms(1000))));
    assert!(w.allow(clock.at(ms(2000))));
    // A fourth within 5 s of the first: give up.
    assert!(!w.allow(clock.at(ms(3000))));
}

#[test]
fn intensity_window_slides() {
    let clock = Clock(Instant::now());
    let mut w = IntensityWindow::new(Intensity {
        max_restarts: 2,
        period: Duration::from_secs(5),
    });
    assert!(w.allow(clock.at(ms(0))));
    assert!(w.allow(clock.at(ms(4000))));
    // The first has left the window by 5 s: room again.
    assert!(w.allow(clock.at(ms(5000))));
    assert!(!w.allow(clock.at(ms(5500))));
}

#[test]
fn default_policies_are_valid_and_bad_ones_are_typed_errors() {
    assert_eq!(Intensity::default().validate(), Ok(()));
    assert_eq!(Backoff::default().validate(), Ok(()));
    let zero = Intensity {
        max_restarts: 1,
        period: Duration::ZERO,
    };
    assert_eq!(zero.validate(), Err(PolicyError::ZeroPeriod));
    let wild_jitter = Backoff {
        jitter: 1.5,
        ..Backoff::default()
    };
    assert!(matches!(
        wild_jitter.validate(),
        Err(PolicyError::BadBackoff(_))
    ));
    let nan_factor = Backoff {
        factor: f64::NAN,
        ..Backoff::default()
    };
    assert!(matches!(
        nan_factor.validate(),
        Err(PolicyError::BadBackoff(_))
    ));
}

#[test]
fn backoff_grows_exponentially_to_its_cap() {
    let policy = Backoff {
        initial: ms(100),
        factor: 2.0,
        cap: ms(1000),
        jitter: 0.0,
        reset_after: Duration::from_secs(10),
        start_success: Duration::from_secs(1),
    };
    let mut s = BackoffState::new(policy, 42);
    let delays: Vec<Duration> = (0..6).map(|_| s.next_delay(ms(5))).collect();
    assert_eq!(
        delays,
        [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
    );
    assert_eq!(s.failures(), 6);
}

#[test]
fn a_stable_run_resets_the_backoff() {
    let policy = Backoff {
        jitter: 0.0,
        ..Backoff::default()
    };
    let mut s = BackoffState::new(policy, 1);
    for _ in 0..4 {
        s.next_delay(ms(10));
    }
    assert_eq!(s.failures(), 4);
    // It ran 10 s (reset_after) before ending: the next delay is the first one again.
    let d = s.next_delay(Duration::from_secs(10));
    assert_eq!(d, policy.initial);
    assert_eq!(s.failures(), 1);
}

#[test]
fn jitter_stays_within_its_fraction_and_spreads() {
    let policy = Backoff {
        initial: ms(1000),
        factor: 1.0,
        cap: ms(10_000),
        jitter: 0.1,
        ..Backoff::default()
    };
    let mut s = BackoffState::new(policy, 7);
    let delays: Vec<Duration> = (0..200).map(|_| s.next_delay(ms(1))).collect();
    assert!(
        delays.iter().all(|d| *d >= ms(900) && *d <= ms(1100)),
        "{delays:?}"
    );
    let min = delays.iter().min().unwrap();
    let max = delays.iter().max().unwrap();
    assert!(
        *max - *min > ms(100),
        "jitter did not spread: {min:?}..{max:?}"
    );
    // Same seed, same sequence: the tests (and any replay) are deterministic.
    let mut again = BackoffState::new(policy, 7);
    let first: Vec<Duration> = (0..5).map(|_| again.next_delay(ms(1))).collect();
    assert_eq!(first, delays[..5]);
}

#[test]
fn the_start_success_window_separates_failed_starts_from_crashes() {
    let s = BackoffState::new(Backoff::default(), 3);
    assert!(s.failed_start(ms(999)));
    assert!(!s.failed_start(ms(1000)));
}

#[test]
fn no_backoff_means_no_delay() {
    let mut s = BackoffState::new(Backoff::none(), 9);
    for _ in 0..10 {
        assert_eq!(s.next_delay(ms(1)), Duration::ZERO);
    }
}
