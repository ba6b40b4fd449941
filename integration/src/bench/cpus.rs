//! CPU placement for the benches: which CPUs this thread may use, and pinning a thread (or
//! a child's target thread) to one. Shared by the connection, queue, sync and actor rows.

use nix::libc;

/// The CPUs the calling thread may run on, in order (never empty).
pub(crate) fn allowed_cpus() -> Result<Vec<usize>, String> {
    // SAFETY: `cpu_set_t` is plain bits; all zeroes is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable `cpu_set_t` of the size passed.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if r != 0 {
        return Err(format!(
            "sched_getaffinity: {}",
            std::io::Error::last_os_error()
        ));
    }
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below `CPU_SETSIZE`, the capacity of `set`.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect();
    if cpus.is_empty() {
        return Err("sched_getaffinity: no CPU".to_owned());
    }
    Ok(cpus)
}

/// Sets the CPUs of thread (or process) `tid`; `0` is the calling thread.
pub(crate) fn set_cpus(tid: libc::pid_t, cpus: &[usize]) -> Result<(), String> {
    // SAFETY: as in `allowed_cpus`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(format!("CPU {cpu} is out of range"));
        }
        // SAFETY: `cpu` is below `CPU_SETSIZE`, checked above.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a valid `cpu_set_t` of the size passed.
    let r = unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) };
    if r != 0 {
        return Err(format!(
            "sched_setaffinity({tid}, {cpus:?}): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Pins thread (or process) `tid` to `cpu`; `0` is the calling thread.
pub(crate) fn pin(tid: libc::pid_t, cpu: usize) -> Result<(), String> {
    set_cpus(tid, &[cpu])
}

/// Pins a child's calling thread (the one running its target) to `cpu`, if any.
pub(crate) fn pin_child(cpu: Option<usize>) {
    if let Some(cpu) = cpu {
        pin(0, cpu).expect("a bench child can pin itself to a CPU its parent may use");
    }
}

/// Pins this thread to one CPU until dropped, then gives it back every CPU it had.
pub(crate) struct PinSelf {
    saved: Vec<usize>,
}

impl PinSelf {
    pub(crate) fn new(cpu: usize) -> Result<PinSelf, String> {
        let saved = allowed_cpus()?;
        pin(0, cpu)?;
        Ok(PinSelf { saved })
    }
}

impl Drop for PinSelf {
    fn drop(&mut self) {
        let _ = set_cpus(0, &self.saved);
    }
}
