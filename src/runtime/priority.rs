//! The kernel's view of a guest: while pods compete for the CPU, the
//! thread that runs a pod's guest code takes an OS priority from the pod's
//! CPU weight, as a container's cgroup takes its CPU weight from the
//! pod's requests.
//!
//! The CPU gate ([`super::fair`]) decides which guest runs on the guest
//! threads, but the kernel decides when those threads run beside the
//! node's own threads (the proxy, the API, the kubelet). At equal priority
//! the kernel lets a spinning guest's thread finish its time slice before
//! the host thread carrying a quiet pod's request gets the core: up to a
//! scheduler tick (4 ms on many kernels) at every hop of that request
//! through the host. So while another pod has run lately, a pod without
//! CPU requests (Kubernetes gives it two CPU shares) runs at nice 19 and
//! the node's threads take the core back at once; each step of requests
//! raises it, up to the process's own priority at one core, so a pod that
//! asked for CPU keeps it against the node's threads. A pod alone on the
//! node runs at the process's priority: lowering it would only cost it
//! throughput against the threads serving its own requests.
//!
//! Going back up from a lower priority needs `CAP_SYS_NICE` (or a raised
//! `RLIMIT_NICE`). Where the process may not, every guest thread stays at
//! the priority it started with.

use std::cell::Cell;
use std::sync::OnceLock;

use rustix::process::{getpriority_process, setpriority_process};

/// The lowest priority: what a pod without CPU requests runs at.
pub const LOWEST: i32 = 19;

/// How many nice steps below the process a pod of `shares` CPU shares
/// (1024 per core) runs: each step is about 1.25× in kernel weight, so
/// the kernel weighs the thread about as the pod's shares say; none at
/// one core and above.
pub fn nice_for_shares(shares: u64) -> i32 {
    if shares >= 1024 {
        return 0;
    }
    let steps = (1024.0 / shares.max(1) as f64).ln() / 1.25f64.ln();
    (steps.round() as i32).clamp(0, LOWEST)
}

thread_local! {
    /// Whether this is a guest thread ([`super::pool`]); no other thread's
    /// priority is ever changed (a gated future polled elsewhere, as in
    /// tests, runs as it is).
    static GUEST: Cell<bool> = const { Cell::new(false) };
    /// The steps below the process last set on this thread; unknown at
    /// first (a thread inherits its creator's priority).
    static CURRENT: Cell<Option<i32>> = const { Cell::new(None) };
}

/// Marks the calling thread as a guest thread.
pub fn mark_guest_thread() {
    GUEST.with(|g| g.set(true));
}

/// Whether the calling thread is a guest thread, whose priority a gated
/// guest's poll sets.
pub fn on_guest_thread() -> bool {
    GUEST.with(Cell::get)
}

/// The process's own nice value, from which guests are lowered, when the
/// process may lower a thread and raise it back; `None` where it may not.
fn base() -> Option<i32> {
    static BASE: OnceLock<Option<i32>> = OnceLock::new();
    *BASE.get_or_init(|| {
        // Tried on a thread of its own, thrown away whatever the answer,
        // so that no thread is left at a priority it cannot leave.
        std::thread::Builder::new()
            .name("wkube-nice-probe".into())
            .spawn(|| {
                let base = getpriority_process(None).ok()?;
                (setpriority_process(None, LOWEST).is_ok()
                    && setpriority_process(None, base).is_ok())
                .then_some(base)
            })
            .ok()
            .and_then(|t| t.join().ok())
            .flatten()
    })
}

/// Whether this process changes its guest threads' priorities.
pub fn switches() -> bool {
    base().is_some()
}

/// Runs the calling guest thread `steps` below the process's priority
/// (at most at nice 19), with a system call only when that changes, if the
/// process may switch priorities back and forth.
pub fn run_at(steps: i32) {
    if !GUEST.with(Cell::get) || CURRENT.with(Cell::get) == Some(steps) {
        return;
    }
    let Some(base) = base() else { return };
    // On Linux `setpriority` on a thread's id (`None`: the caller's) sets
    // that thread alone.
    if setpriority_process(None, (base + steps).min(LOWEST)).is_ok() {
        CURRENT.with(|c| c.set(Some(steps)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_map_to_nice_steps_as_cpu_shares_do() {
        assert_eq!(nice_for_shares(2), LOWEST);
        assert_eq!(nice_for_shares(1024), 0);
        assert_eq!(nice_for_shares(4096), 0);
        // 500m is half the weight: three steps of 1.25×.
        assert_eq!(nice_for_shares(512), 3);
        // 100m: about ten steps.
        assert_eq!(nice_for_shares(102), 10);
    }

    #[test]
    fn a_thread_goes_down_and_back_up_when_the_process_may() {
        std::thread::spawn(|| {
            let read = || getpriority_process(None).unwrap();
            let start = read();
            run_at(LOWEST);
            assert_eq!(read(), start, "only guest threads are changed");
            mark_guest_thread();
            run_at(LOWEST);
            match base() {
                Some(base) => {
                    assert_eq!(read(), LOWEST);
                    run_at(0);
                    assert_eq!(read(), base);
                }
                None => assert_eq!(read(), start, "nothing changes where it may not"),
            }
        })
        .join()
        .unwrap();
    }
}
