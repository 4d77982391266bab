//! One load at a time per key, its outcome shared with everyone who asked
//! meanwhile: a module's code per digest, a tag's digest per `name:tag`.
//!
//! A Deployment scaled out, or a thousand pods created together, start many
//! pods of one module on this node at once. Without this each of them asks
//! the API server for the precompiled code (or compiles it here) while the
//! first is still at it: on a busy server the extra requests are refused
//! with 429 and each refusal falls back to a local compile, which costs far
//! more than waiting for the first load. The waiters take the first load's
//! outcome, failure included, so a load that fails slowly (a server that
//! holds the request, then refuses it) costs them that one wait, not one
//! each in turn.

use std::collections::HashMap;
use std::future::Future;

use tokio::sync::watch;

/// The loads under way, by key; each entry lives while its load runs.
pub struct Flights<T> {
    inflight: parking_lot::Mutex<HashMap<String, watch::Receiver<Option<T>>>>,
}

impl<T> Default for Flights<T> {
    fn default() -> Self {
        Flights {
            inflight: parking_lot::Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Clone> Flights<T> {
    /// `load()`'s outcome for `key`: run here when no load of `key` is
    /// under way, else the one under way's. A load whose caller gave up
    /// (its future dropped) shares nothing; its waiters then try again,
    /// one of them running its own `load`.
    pub async fn run<Fut: Future<Output = T>>(&self, key: &str, load: impl FnOnce() -> Fut) -> T {
        let mut load = Some(load);
        loop {
            match self.join(key) {
                Role::Lead(tx, rx) => {
                    let leading = Leading {
                        flights: self,
                        key,
                        rx,
                    };
                    let Some(load) = load.take() else {
                        unreachable!("a caller leads at most once: it returns after");
                    };
                    let out = load().await;
                    tx.send_replace(Some(out.clone()));
                    drop(leading);
                    return out;
                }
                Role::Follow(mut rx) => {
                    if let Ok(out) = rx.wait_for(Option::is_some).await
                        && let Some(out) = out.clone()
                    {
                        return out;
                    }
                }
            }
        }
    }

    /// Leads the load of `key` if none is under way, else follows it.
    fn join(&self, key: &str) -> Role<T> {
        let mut inflight = self.inflight.lock();
        if let Some(rx) = inflight.get(key) {
            return Role::Follow(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        inflight.insert(key.to_string(), rx.clone());
        Role::Lead(tx, rx)
    }

    /// Keys with a load under way (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inflight.lock().len()
    }
}

/// A caller's part in a load.
enum Role<T> {
    Lead(watch::Sender<Option<T>>, watch::Receiver<Option<T>>),
    Follow(watch::Receiver<Option<T>>),
}

/// Held by the caller running a load: its entry goes when the load ends or
/// is given up.
struct Leading<'a, T> {
    flights: &'a Flights<T>,
    key: &'a str,
    rx: watch::Receiver<Option<T>>,
}

impl<T> Drop for Leading<'_, T> {
    fn drop(&mut self) {
        let mut inflight = self.flights.inflight.lock();
        if inflight
            .get(self.key)
            .is_some_and(|rx| rx.same_channel(&self.rx))
        {
            inflight.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn callers_together_share_one_load_and_its_failure() {
        let flights = Arc::new(Flights::<Result<u32, String>>::default());
        let loads = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (flights, loads) = (flights.clone(), loads.clone());
            tasks.push(tokio::spawn(async move {
                flights
                    .run("sha256:aa", || async {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Err::<u32, _>("refused".to_string())
                    })
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Err("refused".to_string()));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(flights.len(), 0);
        // Later callers load again.
        let again = flights.run("sha256:aa", || async { Ok(7) }).await;
        assert_eq!(again, Ok(7));
    }

    #[tokio::test]
    async fn a_load_given_up_is_taken_over_by_a_waiter() {
        let flights = Arc::new(Flights::<u32>::default());
        let leader = {
            let flights = flights.clone();
            tokio::spawn(async move {
                flights
                    .run("k", || async {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        1
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let waiter = {
            let flights = flights.clone();
            tokio::spawn(async move { flights.run("k", || async { 2 }).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        leader.abort();
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter took over")
            .unwrap();
        assert_eq!(got, 2);
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn different_keys_do_not_wait_for_each_other() {
        let flights = Flights::<u32>::default();
        let slow = flights.run("a", || async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            1
        });
        let fast = flights.run("b", || async { 2 });
        tokio::select! {
            _ = slow => panic!("the slow load finished first"),
            got = fast => assert_eq!(got, 2),
        }
    }
}
