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
