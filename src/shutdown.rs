//! One shutdown signal shared by the tasks of a long-running component.

use std::future::Future;

use tokio::sync::watch;

/// Fans one shutdown future out to any number of waiters. Cheap to clone.
#[derive(Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Every waiter resolves once `shutdown` does.
    pub fn new(shutdown: impl Future<Output = ()> + Send + 'static) -> Stop {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = tx.send(true);
        });
        Stop(rx)
    }

    /// Resolves at shutdown (or if the signal's task is gone).
    pub fn wait(&self) -> impl Future<Output = ()> + Send + Sync + 'static + use<> {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM. A second one ends the process at
/// once, for when draining hangs.
pub async fn shutdown_signal() {
    wait_for_signal().await;
    tracing::info!("shutting down (send the signal again to exit at once)");
    tokio::spawn(async {
        wait_for_signal().await;
        tracing::warn!("second signal: exiting without draining");
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    // Without handlers a signal kills the process the default way, which is
    // still a clean enough stop; so failing to install one is only logged.
    let (mut int, mut term) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}
