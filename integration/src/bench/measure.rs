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

/// One side of a row (procvisor's or the floor's), with the children it runs.
pub(crate) trait Side {
    /// One timed batch of `n` operations, in the row's unit.
    fn batch(&mut self, n: usize) -> Result<f64, String>;

    /// Ends the side's children and reaps them.
    fn end(&mut self) -> Result<(), String>;
}

/// [`alternate`] over two sides, then ends both, whatever the measuring gave (the floor
/// first); the first error wins. Returns `(procvisor values, floor values)`.
pub(crate) fn alternate_sides(
    reps: usize,
    n: usize,
    floor: &mut impl Side,
    procvisor: &mut impl Side,
) -> Result<(Vec<f64>, Vec<f64>), String> {
    let measured = alternate(reps, n, |k| floor.batch(k), |k| procvisor.batch(k));
    let floor_end = floor.end();
    let procvisor_end = procvisor.end();
    let values = measured?;
    floor_end?;
    procvisor_end?;
    Ok(values)
}

/// [`repeat`] over one side, then ends it, whatever the measuring gave.
pub(crate) fn repeat_side(reps: usize, n: usize, side: &mut impl Side) -> Result<Vec<f64>, String> {
    let measured = repeat(reps, n, |k| side.batch(k));
    let end = side.end();
    let values = measured?;
    end?;
    Ok(values)
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
