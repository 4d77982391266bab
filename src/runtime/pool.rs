//! The guest pool: the worker threads guest code runs on, apart from the
//! threads that serve the API, the proxy and every socket.
//!
//! On one executor, four spinning guests keep every worker busy; the
//! executor then looks at its sockets only every few dozen polls, and a
//! neighbour's request waits for the socket read, then for a turn, then for
//! the write, each behind the spinners' polls. Here the guests have threads
//! of their own, so the I/O threads only ever run short tasks and the
//! kernel shares the cores between them and the guests. Which guest runs
//! on the guest threads is the [`super::fair`] gate's decision.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use super::fair::CpuShare;

use tokio::runtime::{Builder, Runtime};
use tokio::task::JoinHandle;

fn runtime() -> &'static Runtime {
    static POOL: OnceLock<Runtime> = OnceLock::new();
    POOL.get_or_init(|| {
        // As many threads as the gate has CPU slots, and no more: a guest
        // the gate lets in then always runs on a thread that is on a core
        // already (the one whose guest yielded to it). A spare thread would
        // have to be woken and wait for the kernel to give it a core,
        // behind the very guests it should replace, for up to a scheduler
        // tick (4 ms on many kernels).
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Builder::new_multi_thread()
            .worker_threads(cores)
            .thread_name("wkube-guest")
            .on_thread_start(super::priority::mark_guest_thread)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("starting the guest threads: {e}"))
    })
}

/// Runs `fut` on the guest threads.
fn spawn<F>(fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    runtime().spawn(fut)
}

/// Runs a guest on the guest threads: through the CPU gate as `share`'s
/// pod when it has one; without one, at the process's own OS priority
/// (a guest thread keeps whatever priority its last gated guest ran at,
/// see [`super::priority`]).
pub fn spawn_guest<F>(share: Option<&Arc<CpuShare>>, fut: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match share {
        Some(share) => spawn(share.gate(fut)),
        None => spawn(async move {
            let mut fut = std::pin::pin!(fut);
            std::future::poll_fn(|cx| {
                super::priority::run_at(0);
                fut.as_mut().poll(cx)
            })
            .await
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn guests_run_on_their_own_threads() {
        let name = spawn(async { std::thread::current().name().map(str::to_string) })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("wkube-guest"));
    }

    /// A pod alone on the node runs at the process's priority; beside
    /// another busy pod, a pod without CPU requests runs its guests at the
    /// lowest priority and a pod that requested a core at the process's.
    #[tokio::test]
    async fn a_guests_thread_runs_at_its_pods_priority() {
        use crate::runtime::fair::{CpuGate, CpuShare};
        use rustix::process::getpriority_process;
        let gate = Arc::new(CpuGate::new(2));
        let best_effort = Arc::new(CpuShare::new(gate.clone(), None));
        let one_core = Arc::new(CpuShare::new(gate, Some(1000)));
        let nice_in =
            |share: &Arc<CpuShare>| spawn(share.gate(async { getpriority_process(None).unwrap() }));
        let own = getpriority_process(None).unwrap();
        let alone = nice_in(&best_effort).await.unwrap();
        let asked = nice_in(&one_core).await.unwrap();
        let beside = nice_in(&best_effort).await.unwrap();
        // A guest without a share runs at the process's priority, not at
        // the one the thread's last gated guest left.
        let ungated = spawn_guest(None, async { getpriority_process(None).unwrap() })
            .await
            .unwrap();
        if super::super::priority::switches() {
            assert_eq!(alone, own);
            assert_eq!(asked, own);
            assert_eq!(beside, super::super::priority::LOWEST);
        } else {
            assert_eq!((alone, asked, beside), (own, own, own));
        }
        assert_eq!(ungated, own);
    }
}
