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
//! CPU requests (Kubernetes gives it two CPU shares) runs under the
//! `SCHED_IDLE` policy, which every other thread preempts at once on
//! waking (at nice 19 alone the kernel still lets the running guest
//! finish its slice, about a millisecond, measured as a neighbour's p99
//! of 1.3 ms beside a spinner); each step of requests
//! raises it, up to the process's own priority at one core, so a pod that
//! asked for CPU keeps it against the node's threads. A pod alone on the
//! node runs at the process's priority: lowering it would only cost it
//! throughput against the threads serving its own requests. So does a pod
//! the gate finds owed the CPU (behind every other busy pod in line): the
//! kernel sees threads, not pods, and at equal low priority would keep a
//! quiet pod's request waiting behind a spinning neighbour's threads.
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

/// Whether this process may put a thread under `SCHED_IDLE` and take it
/// back to the normal policy.
pub(crate) fn idle_policy_switches() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        std::thread::Builder::new()
            .name("wkube-sched-probe".into())
            .spawn(|| set_idle_policy(true) && set_idle_policy(false))
            .ok()
            .and_then(|t| t.join().ok())
            .unwrap_or(false)
    })
}

/// Puts the calling thread under `SCHED_IDLE`, or back under the normal
/// policy (`SCHED_OTHER`, whose nice value it kept).
fn set_idle_policy(idle: bool) -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    let policy = if idle {
        libc::SCHED_IDLE
    } else {
        libc::SCHED_OTHER
    };
    // SAFETY: pid 0 names the calling thread; `param` is a valid
    // `sched_param` that outlives the call, which only reads it.
    unsafe { libc::sched_setscheduler(0, policy, &param) == 0 }
}

/// Runs the calling guest thread `steps` below the process's priority
/// (from [`LOWEST`] on: under `SCHED_IDLE`, or at nice 19 where the
/// process may not switch policies), with system calls only when that
/// changes, if the process may switch priorities back and forth.
pub fn run_at(steps: i32) {
    let current = CURRENT.with(Cell::get);
    if !GUEST.with(Cell::get) || current == Some(steps) {
        return;
    }
    let Some(base) = base() else { return };
    let idle = steps >= LOWEST && idle_policy_switches();
    let was_idle = current.is_some_and(|c| c >= LOWEST) && idle_policy_switches();
    let done = if idle {
        // The nice value does not matter under SCHED_IDLE.
        was_idle || set_idle_policy(true)
    } else {
        // On Linux `setpriority` on a thread's id (`None`: the caller's)
        // sets that thread alone.
        (!was_idle || set_idle_policy(false))
            && setpriority_process(None, (base + steps).min(LOWEST)).is_ok()
    };
    if done {
        CURRENT.with(|c| c.set(Some(steps)));
    }
}

/// The calling thread's scheduling policy (tests).
#[cfg(test)]
pub(crate) fn policy() -> i32 {
    // SAFETY: pid 0 names the calling thread; no memory is passed.
    unsafe { libc::sched_getscheduler(0) }
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
                    if idle_policy_switches() {
                        assert_eq!(policy(), libc::SCHED_IDLE);
                    } else {
                        assert_eq!(read(), LOWEST);
                    }
                    run_at(3);
                    assert_eq!((policy(), read()), (libc::SCHED_OTHER, base + 3));
                    run_at(LOWEST);
                    run_at(0);
                    assert_eq!((policy(), read()), (libc::SCHED_OTHER, base));
                }
                None => assert_eq!(read(), start, "nothing changes where it may not"),
            }
        })
        .join()
        .unwrap();
    }
}
