//! How a child ended.

use std::fmt;

use nix::libc;

/// How a child process ended, with nothing lost: the exit code, or the signal and whether
/// it dumped core.
///
/// [`exitcode`](ExitStatus::exitcode) gives Python's single number: the code for a normal
/// exit, `-signum` for death by a signal.
///
/// ```
/// use procvisor::ExitStatus;
/// let killed = ExitStatus::from_raw(9);          // as waitpid(2) reports SIGKILL
/// assert_eq!(killed.exitcode(), -9);
/// assert_eq!(killed.signal(), Some(9));
/// let exited = ExitStatus::from_raw(3 << 8);     // exit(3)
/// assert_eq!((exited.code(), exited.exitcode()), (Some(3), 3));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    raw: i32,
    lost: bool,
}

impl ExitStatus {
    /// Wraps a raw status as `waitpid(2)` reports it.
    pub fn from_raw(raw: i32) -> Self {
        ExitStatus { raw, lost: false }
    }

    /// The child ended but its status could not be learnt (another part of the program
    /// reaped it, or the forkserver that owned it died first).
    pub(crate) fn lost() -> Self {
        ExitStatus { raw: 0, lost: true }
    }

    /// The raw `waitpid(2)` status.
    pub fn raw(&self) -> i32 {
        self.raw
    }

    /// The exit code, when the child exited normally.
    pub fn code(&self) -> Option<i32> {
        (!self.lost && libc::WIFEXITED(self.raw)).then(|| libc::WEXITSTATUS(self.raw))
    }

    /// The signal that killed the child.
    pub fn signal(&self) -> Option<i32> {
        (!self.lost && libc::WIFSIGNALED(self.raw)).then(|| libc::WTERMSIG(self.raw))
    }

    /// Whether the child dumped core when the signal killed it.
    pub fn core_dumped(&self) -> bool {
        !self.lost && libc::WIFSIGNALED(self.raw) && libc::WCOREDUMP(self.raw)
    }

    /// Whether the status could not be learnt; [`exitcode`](Self::exitcode) is then 255.
    pub fn is_lost(&self) -> bool {
        self.lost
    }

    /// Python's `exitcode`: the exit code, or `-signum` when a signal killed the child.
    pub fn exitcode(&self) -> i32 {
        match (self.code(), self.signal()) {
            (Some(c), _) => c,
            (None, Some(s)) => -s,
            (None, None) => 255,
        }
    }

    /// Whether the child exited with code 0.
    pub fn success(&self) -> bool {
        self.code() == Some(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code(), self.signal()) {
            (Some(c), _) => write!(f, "exit code {c}"),
            (None, Some(s)) => {
                let name = nix::sys::signal::Signal::try_from(s)
                    .map(|s| s.as_str())
                    .unwrap_or("unknown signal");
                write!(f, "killed by {name}")?;
                if self.core_dumped() {
                    f.write_str(" (core dumped)")?;
                }
                Ok(())
            }
            (None, None) => f.write_str("exit status lost"),
        }
    }
}
