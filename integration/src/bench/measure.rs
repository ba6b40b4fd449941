//! The measuring loops and child bookkeeping every bench row shares.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use procvisor::Process;

/// The warm-up batch before a measured batch of `n`: a tenth, at least one.
fn warm_up(n: usize) -> usize {
    (n / 10).max(1)
}

/// Runs one warm-up batch of each side, then `reps` pairs of measured batches, the floor
/// first in each pair, so that both sides of a ratio are measured under the same load.
/// Returns `(procvisor values, floor values)`.
pub(crate) fn alternate(
    reps: usize,
    n: usize,
    mut floor: impl FnMut(usize) -> Result<f64, String>,
    mut procvisor: impl FnMut(usize) -> Result<f64, String>,
) -> Result<(Vec<f64>, Vec<f64>), String> {
    floor(warm_up(n))?;
    procvisor(warm_up(n))?;
    let mut values = Vec::with_capacity(reps);
    let mut floor_values = Vec::with_capacity(reps);
    for _ in 0..reps {
        floor_values.push(floor(n)?);
        values.push(procvisor(n)?);
    }
    Ok((values, floor_values))
}

/// One warm-up batch, then `reps` measured batches of one side alone.
pub(crate) fn repeat(
    reps: usize,
    n: usize,
    mut batch: impl FnMut(usize) -> Result<f64, String>,
) -> Result<Vec<f64>, String> {
    batch(warm_up(n))?;
    (0..reps).map(|_| batch(n)).collect()
}

/// Joins a child that was told to end (`told`: how, for the error); kills and reaps it when
/// it has not ended within `deadline`. A child never started is fine.
pub(crate) fn join_told(
    process: &Process<()>,
    deadline: Duration,
    told: &str,
) -> Result<(), String> {
    if !matches!(process.pid(), Ok(Some(_))) {
        return Ok(());
    }
    process
        .join(Some(deadline))
        .map_err(|e| format!("join: {e}"))?;
    match process.exitcode() {
        Ok(Some(0)) => Ok(()),
        Ok(None) => {
            let _ = process.kill();
            let _ = process.join(None);
            Err(format!("a child did not end within {deadline:?} of {told}"))
        }
        other => Err(format!("a child ended with {other:?}")),
    }
}

/// A path in the temporary directory no other bench of any run uses:
/// `procvisor-bench-{what}-{pid}-{n}{suffix}`, where nothing has been created yet.
pub(crate) fn unique_temp_path(what: &str, suffix: &str) -> PathBuf {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "procvisor-bench-{what}-{}-{}{suffix}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ))
}
