//! Scheduled compaction: old revisions are forgotten on a fixed interval,
//! so the store's history (and the memory and disk it takes) stays bounded.
//!
//! Each run compacts to the revision the *previous* run saw, so a watcher
//! or a paginated list always has at least one interval to finish what it
//! started. Several API servers on one store coordinate through one key,
//! `compact_rev_key` (the key Kubernetes' API servers use): a run compacts
//! only if its compare-and-swap on that key's version wins, so one interval
//! compacts once however many servers there are.

use std::time::Duration;

use bytes::Bytes;

use super::{
    Backend, Compare, CompareResult, CompareTarget, KeyRange, PutRequest, RangeRequest, Revision,
    StoreError, TxnOp, TxnOpResponse, TxnRequest,
};

/// The coordination key, outside `/registry` as Kubernetes keeps it.
pub const COMPACT_KEY: &[u8] = b"compact_rev_key";

/// What the compactor remembers between runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compactor {
    /// The version of [`COMPACT_KEY`] this server last saw.
    version: i64,
    /// The revision the last run saw: what the next run compacts to.
    candidate: Revision,
}

impl Compactor {
    /// One run: claim the interval, then compact to the previous run's
    /// revision. Returns the revision compacted to, if this run compacted.
    ///
    /// # Errors
    /// The store's, except "already compacted", which another server's run
    /// can cause and which is no failure.
    pub async fn run_once(&mut self, store: &dyn Backend) -> Result<Option<Revision>, StoreError> {
        let claim = TxnRequest {
            compare: vec![Compare {
                range: KeyRange::single(Bytes::from_static(COMPACT_KEY)),
                result: CompareResult::Equal,
                target: CompareTarget::Version(self.version),
            }],
            success: vec![TxnOp::Put(PutRequest {
                key: Bytes::from_static(COMPACT_KEY),
                value: Bytes::from(self.candidate.to_string()),
                ..Default::default()
            })],
            failure: vec![TxnOp::Range(RangeRequest {
                range: KeyRange::single(Bytes::from_static(COMPACT_KEY)),
                ..Default::default()
            })],
        };
        let resp = store.txn(claim).await?;
        let previous = self.candidate;
        // The claim itself is a write; the next run compacts up to here.
        self.candidate = resp.header.revision;
        if !resp.succeeded {
            // Another server ran this interval: follow its count.
            self.version = match resp.responses.first() {
                Some(TxnOpResponse::Range(r)) => r.kvs.first().map_or(0, |kv| kv.version),
                _ => 0,
            };
            return Ok(None);
        }
        self.version += 1;
        if previous <= 0 {
            return Ok(None);
        }
        match store.compact(previous).await {
            Ok(_) | Err(StoreError::Compacted { .. }) => Ok(Some(previous)),
            Err(e) => Err(e),
        }
    }
}

/// Runs a compaction every `interval` until `stop` resolves.
pub async fn run(
    store: super::Store,
    interval: Duration,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let mut compactor = Compactor::default();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut stop => return,
        }
        match compactor.run_once(store.as_ref()).await {
            Ok(Some(rev)) => tracing::info!(revision = rev, "compacted the store"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "store compaction failed; retrying next interval"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redb::{RedbOptions, RedbStore};

    async fn put(store: &dyn Backend, key: &str) -> Revision {
        store
            .put(PutRequest {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::from_static(b"v"),
                ..Default::default()
            })
            .await
            .unwrap()
            .header
            .revision
    }

    #[tokio::test]
    async fn each_run_compacts_to_what_the_previous_run_saw() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("s.redb"), RedbOptions::default()).unwrap();
        let mut c = Compactor::default();
        put(store.as_ref(), "/a").await;
        // The first run only claims and remembers.
        assert_eq!(c.run_once(store.as_ref()).await.unwrap(), None);
        let seen = c.candidate;
        let after = put(store.as_ref(), "/a").await;
        assert!(after > seen);
        assert_eq!(c.run_once(store.as_ref()).await.unwrap(), Some(seen));
        assert_eq!(store.status().await.unwrap().compact_revision, seen);
        // What was written after the first run is still readable.
        let r = store
            .range(RangeRequest {
                range: KeyRange::single("/a"),
                revision: after,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(r.kvs.len(), 1);
    }

    #[tokio::test]
    async fn two_servers_compact_once_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("s.redb"), RedbOptions::default()).unwrap();
        let (mut a, mut b) = (Compactor::default(), Compactor::default());
        assert_eq!(a.run_once(store.as_ref()).await.unwrap(), None);
        // b lost the claim of this interval and follows a's count.
        assert_eq!(b.run_once(store.as_ref()).await.unwrap(), None);
        assert_eq!(b.version, a.version);
        put(store.as_ref(), "/x").await;
        let first = a.run_once(store.as_ref()).await.unwrap();
        assert!(first.is_some());
        // Same interval, other server: it loses the compare and does nothing.
        assert_eq!(b.run_once(store.as_ref()).await.unwrap(), None);
        assert_eq!(b.version, a.version);
    }
}
