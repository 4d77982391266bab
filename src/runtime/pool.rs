//! The guest pool: the worker threads guest code runs on, apart from the
//! threads that serve the API, the proxy and every socket.
//!
//! On one executor, four spinning guests keep every worker busy; the
//! executor then looks at its sockets only every few dozen polls, and a
//! neighbour's request waits for the socket read, then for a turn, then for
//! the write, each behind the spinners' polls. Here the guests have threads
//! of their own, one per core, at a lower OS priority (nice 10), so the
//! kernel runs the I/O threads as soon as they have work, as it would give
//! the kubelet and the proxy precedence over pods. Which guest runs on the
//! guest threads is the [`super::fair`] gate's decision.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Runtime};
use tokio::task::JoinHandle;

/// How much lower than the rest of the process guest threads run (the
/// `nice` increment; 10 gives the other threads about nine times their
/// weight under the kernel's fair scheduler).
const GUEST_NICE: libc::c_int = 10;

fn runtime() -> &'static Runtime {
    static POOL: OnceLock<Runtime> = OnceLock::new();
    POOL.get_or_init(|| {
        // One thread more than the gate has CPU slots: while every slot
        // runs guest code, the spare thread still takes new guests in
        // (their first poll puts them in the gate's line) and hands a
        // granted one its slot without waiting behind a running guest.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Builder::new_multi_thread()
            .worker_threads(cores + 1)
            .thread_name("wkube-guest")
            .enable_all()
            .on_thread_start(lower_priority)
            .build()
            .unwrap_or_else(|e| panic!("starting the guest threads: {e}"))
    })
}

/// Lowers the calling thread's priority (on Linux `nice` is per thread).
/// Best effort: where it is refused, guests run at the normal priority.
fn lower_priority() {
    // SAFETY: setpriority only reads its integer arguments; `who == 0` is
    // the calling thread on Linux.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, GUEST_NICE) };
    if rc != 0 {
        tracing::debug!(
            "guest thread priority unchanged: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Runs `fut` on the guest threads.
pub fn spawn<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    runtime().spawn(fut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn guests_run_on_their_own_lower_priority_threads() {
        let (name, nice) = spawn(async {
            let name = std::thread::current().name().map(str::to_string);
            // SAFETY: as in `lower_priority`.
            let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            (name, nice)
        })
        .await
        .unwrap();
        assert_eq!(name.as_deref(), Some("wkube-guest"));
        assert_eq!(nice, GUEST_NICE);
    }
}
