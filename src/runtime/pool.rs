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
use std::sync::OnceLock;

use tokio::runtime::{Builder, Runtime};
use tokio::task::JoinHandle;

fn runtime() -> &'static Runtime {
    static POOL: OnceLock<Runtime> = OnceLock::new();
    POOL.get_or_init(|| {
        // One thread more than the gate has CPU slots: while every slot
        // runs guest code, the spare thread still takes new guests in and
        // hands a granted one its slot without waiting behind a running
        // guest.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Builder::new_multi_thread()
            .worker_threads(cores + 1)
            .thread_name("wkube-guest")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("starting the guest threads: {e}"))
    })
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
    async fn guests_run_on_their_own_threads() {
        let name = spawn(async { std::thread::current().name().map(str::to_string) })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("wkube-guest"));
    }
}
