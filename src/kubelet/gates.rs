//! One load of a module's code at a time per digest (and one registry
//! lookup per tag).
//!
//! A Deployment scaled out, or a thousand pods created together, start many
//! pods of one module on this node at once. Without a gate each of them
//! asks the API server for the precompiled code (or compiles it here) while
//! the first is still at it: on a busy server the extra requests are
//! refused with 429 and each refusal falls back to a local compile, which
//! costs far more than waiting for the first load and taking its result
//! from memory.

use std::collections::HashMap;
use std::sync::Arc;

/// The gates in use, by key (a digest or a `name:tag`). An entry lives
/// while a load or a waiter holds it.
#[derive(Default)]
pub struct LoadGates {
    gates: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while one module's code is loaded; dropping it lets the next waiter
/// in (which then finds the code in memory).
pub struct Gate<'a> {
    gates: &'a LoadGates,
    digest: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl LoadGates {
    /// Waits until no other load of `digest` runs on this node.
    pub async fn enter(&self, digest: &str) -> Gate<'_> {
        let gate = self
            .gates
            .lock()
            .entry(digest.to_string())
            .or_default()
            .clone();
        let guard = gate.lock_owned().await;
        Gate {
            gates: self,
            digest: digest.to_string(),
            guard: Some(guard),
        }
    }

    /// Digests with a load or waiters (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.gates.lock().len()
    }
}

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        // Release first: the guard holds a reference to the gate.
        self.guard.take();
        let mut gates = self.gates.gates.lock();
        // Only the map holds it: nobody waits, so the entry can go (a
        // waiter clones the gate under this same lock before waiting).
        if gates
            .get(&self.digest)
            .is_some_and(|g| Arc::strong_count(g) == 1)
        {
            gates.remove(&self.digest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn one_load_per_digest_at_a_time_and_entries_go_away() {
        let gates = Arc::new(LoadGates::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (gates, inside, most) = (gates.clone(), inside.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                let _gate = gates.enter("sha256:aa").await;
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 1);
        assert_eq!(gates.len(), 0);
    }

    #[tokio::test]
    async fn different_digests_do_not_wait_for_each_other() {
        let gates = LoadGates::default();
        let a = gates.enter("sha256:aa").await;
        let b = tokio::time::timeout(Duration::from_secs(5), gates.enter("sha256:bb"))
            .await
            .expect("another digest's gate is free");
        assert_eq!(gates.len(), 2);
        drop(a);
        drop(b);
        assert_eq!(gates.len(), 0);
    }
}
