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

/// A guest started by [`start_guest`].
pub enum GuestTask<T> {
    /// It finished in its first poll, on the caller's thread (`Err`: it
    /// panicked, with the panic's message).
    Finished(Result<T, String>),
    /// It runs on the guest threads.
    Running(JoinHandle<T>),
}

impl<T> GuestTask<T> {
    /// Stops a running guest at its next yield.
    pub fn abort(&self) {
        if let GuestTask::Running(h) = self {
            h.abort();
        }
    }

    /// Its output, or why there is none.
    pub async fn join(self) -> Result<T, String> {
        match self {
            GuestTask::Finished(out) => out,
            GuestTask::Running(h) => h.await.map_err(|e| e.to_string()),
        }
    }
}

/// Starts a pod's HTTP guest: its first poll runs here, on the caller's
/// thread, when the pod has the node to itself or the caller is on a
/// guest thread already (a pod calling another pod's service; see
/// `Gated::may_run_here`); the rest, if any, and every poll of a pod
/// that shares the node with others, on the guest threads.
///
/// Most requests end within that first poll, so a request to a pod alone
/// on its node crosses no thread at all: a hand-over to a parked guest
/// thread and back had cost some 30 µs each on a two-core virtual
/// machine, several times what instantiating and running `hello-http`
/// costs. A poll ends at the guest's next epoch yield (one tick) at the
/// latest, and a guest takes at most [`INLINE_POLLS`] of them here, so a
/// spinning guest takes at most two ticks of the caller's thread before
/// it moves to the guest threads. Under
/// contention nothing runs here: the guest threads' OS priorities are
/// what keeps a best-effort pod behind the node's own threads.
pub async fn start_guest<F>(share: Option<&Arc<CpuShare>>, fut: F) -> GuestTask<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let Some(share) = share else {
        return GuestTask::Running(spawn_guest(None, fut));
    };
    let gated = share.gate(fut);
    if !gated.may_run_here() {
        return GuestTask::Running(spawn(gated));
    }
    let mut gated = Box::pin(gated);
    let mut polls = 0;
    loop {
        polls += 1;
        let polled = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::panic::catch_unwind(std::panic::AssertUnwindSafe(
                || gated.as_mut().poll(cx),
            )))
        })
        .await;
        match polled {
            Ok(std::task::Poll::Ready(out)) => return GuestTask::Finished(Ok(out)),
            // A guest's first slice ends at the next epoch tick, which may
            // come a moment after it started: one that only yielded (it
            // holds a slot again at once) and is still alone gets a
            // second, whole tick here before it moves.
            Ok(std::task::Poll::Pending) if polls < INLINE_POLLS && gated.may_run_here() => {}
            // Moved to the guest threads: its next poll registers that
            // task's waker (a wake meanwhile reaches this caller,
            // harmlessly).
            Ok(std::task::Poll::Pending) => return GuestTask::Running(spawn(gated)),
            Err(panic) => return GuestTask::Finished(Err(panic_message(&*panic))),
        }
    }
}

/// Polls a guest may take on the caller's thread (see [`start_guest`]):
/// each ends at an epoch tick at the latest, so at most two ticks.
const INLINE_POLLS: u32 = 2;

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .map_or_else(|| "panicked".into(), |m| format!("panicked: {m}"))
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

    fn thread_name() -> Option<String> {
        std::thread::current().name().map(str::to_string)
    }

    /// A pod alone on the node runs its guest's first poll on the caller's
    /// thread; a pod beside another that ran lately, on the guest threads.
    #[tokio::test]
    async fn a_pod_alone_starts_here_and_one_beside_others_on_the_guest_threads() {
        use crate::runtime::fair::{CpuGate, CpuShare};
        let gate = Arc::new(CpuGate::new(2));
        let a = Arc::new(CpuShare::new(gate.clone(), None));
        let b = Arc::new(CpuShare::new(gate, None));
        let here = thread_name();
        let alone = start_guest(Some(&a), async { thread_name() }).await;
        assert!(matches!(alone, GuestTask::Finished(_)));
        assert_eq!(alone.join().await.unwrap(), here);
        // `a` ran a moment ago, so `b` is not alone.
        let beside = start_guest(Some(&b), async { thread_name() }).await;
        assert!(matches!(beside, GuestTask::Running(_)));
        assert_eq!(beside.join().await.unwrap().as_deref(), Some("wkube-guest"));
        // Started from a guest thread (a pod calling another), it runs
        // there at once even so.
        let b2 = b.clone();
        let nested = spawn(async move {
            let t = start_guest(Some(&b2), async { thread_name() }).await;
            (matches!(t, GuestTask::Finished(_)), t.join().await.unwrap())
        })
        .await
        .unwrap();
        assert_eq!(nested, (true, Some("wkube-guest".to_string())));
    }

    /// A guest that does not finish in its first poll goes on on the guest
    /// threads; one that panics there is reported, not propagated.
    #[tokio::test]
    async fn a_guest_that_waits_moves_to_the_guest_threads_and_a_panic_is_reported() {
        use crate::runtime::fair::{CpuGate, CpuShare};
        let share = Arc::new(CpuShare::new(Arc::new(CpuGate::new(2)), None));
        let task = start_guest(Some(&share), async {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            thread_name()
        })
        .await;
        assert!(matches!(task, GuestTask::Running(_)));
        assert_eq!(task.join().await.unwrap().as_deref(), Some("wkube-guest"));

        let share = Arc::new(CpuShare::new(Arc::new(CpuGate::new(2)), None));
        let task = start_guest(Some(&share), async {
            if thread_name().is_some() {
                panic!("guest-provoked host panic");
            }
        })
        .await;
        let err = task.join().await.unwrap_err();
        assert!(err.contains("guest-provoked host panic"), "{err}");
    }
}
