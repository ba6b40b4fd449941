//! A lazily made value that belongs to one process.
//!
//! A child made by `fork` inherits its parent's statics, but not the threads behind them:
//! the runtime's and the spawner's handles there point at threads that do not exist in the
//! child. [`PerProcess`] remembers which process made its value and makes a fresh one in
//! any other.

use std::sync::Mutex;

/// A value made on first use in each process.
#[derive(Debug)]
pub(crate) struct PerProcess<T> {
    /// (pid that made it, the value). Held only to clone the value out.
    slot: Mutex<Option<(u32, T)>>,
}

impl<T: Clone> PerProcess<T> {
    pub(crate) const fn new() -> Self {
        PerProcess {
            slot: Mutex::new(None),
        }
    }

    pub(crate) fn get_or_init(&self, init: impl FnOnce() -> T) -> T {
        let mut slot = self.lock();
        if let Some(value) = Self::mine(&slot) {
            return value;
        }
        let value = init();
        *slot = Some((std::process::id(), value.clone()));
        value
    }

    /// The value, if this process has made one.
    pub(crate) fn get(&self) -> Option<T> {
        Self::mine(&self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(u32, T)>> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value in `slot` if this process made it.
    fn mine(slot: &Option<(u32, T)>) -> Option<T> {
        match slot {
            Some((pid, value)) if *pid == std::process::id() => Some(value.clone()),
            _ => None,
        }
    }
}
