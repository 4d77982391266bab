//! Keeping an in-memory copy of one key prefix current: load it, follow a
//! watch from the loaded revision, and load it again whenever the watch
//! breaks.
//!
//! The API server keeps several such copies (RBAC objects, the node
//! authorizer's pod graph, the CRDs it serves). A watch can end at any
//! time: the external etcd restarts, or a compaction passes events the
//! watcher had not yet been sent. A copy that silently stopped following
//! there would go on answering from a stale view (for RBAC: keep granting
//! a permission whose binding is gone), so the loop here never stops while
//! its copy lives: after a break it tells the copy ([`Change::Lost`]) and
//! reloads at once, backing off only while the store refuses the load.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{
    Event, EventType, KeyRange, KeyValue, RangeRequest, Revision, Store, StoreError, WatchRequest,
};

/// What a [`Mirror`] is told, in order: one `Loaded`, then any number of
/// `Events`; after a `Lost`, another `Loaded` always comes before more
/// `Events`.
pub enum Change<'a> {
    /// Everything under the prefix as of one revision: replace what is
    /// held.
    Loaded(&'a [Arc<KeyValue>]),
    /// Changes after the last ones seen, in revision order.
    Events(&'a [Event]),
    /// The watch broke. Until the next `Loaded`, changes may be missed.
    Lost,
}

impl<'a> Change<'a> {
    /// Each key a `Loaded` or `Events` change sets, in order, with its new
    /// value (`None`: deleted); nothing for `Lost`. A copy replaying a
    /// `Loaded` empties itself first.
    pub fn updates(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> {
        let (loaded, events): (&'a [Arc<KeyValue>], &'a [Event]) = match *self {
            Change::Loaded(kvs) => (kvs, &[]),
            Change::Events(events) => (&[], events),
            Change::Lost => (&[], &[]),
        };
        let loaded = loaded.iter().map(|kv| (&kv.key[..], Some(&kv.value[..])));
        let events = events.iter().map(|ev| {
            let value = (ev.kind == EventType::Put).then_some(&ev.kv.value[..]);
            (&ev.kv.key[..], value)
        });
        loaded.chain(events)
    }
}

/// An in-memory copy of a key prefix.
pub trait Mirror: Send + Sync + 'static {
    fn apply(&self, change: Change<'_>);
}

/// Pauses between failed loads: short, as a stale copy may grant what it
/// should not, but doubling so a store that is down is not hammered.
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(2);

/// Loads everything under `prefix` into `mirror`, then follows it in the
/// background for as long as `mirror` lives (the task holds it weakly).
/// Returns once the first load is applied, so the copy is complete before
/// the caller serves from it.
///
/// # Errors
/// The first load failed.
pub async fn follow<M: Mirror>(
    store: Store,
    prefix: &'static str,
    mirror: &Arc<M>,
) -> Result<(), StoreError> {
    let revision = load(&store, prefix, mirror.as_ref()).await?;
    tokio::spawn(run(store, prefix, Arc::downgrade(mirror), revision));
    Ok(())
}

async fn load(
    store: &Store,
    prefix: &'static str,
    mirror: &dyn Mirror,
) -> Result<Revision, StoreError> {
    let resp = store
        .range(RangeRequest {
            range: KeyRange::prefix(prefix),
            ..Default::default()
        })
        .await?;
    mirror.apply(Change::Loaded(&resp.kvs));
    Ok(resp.header.revision)
}

/// The follow loop: watch from `revision + 1`; on any end of the watch,
/// mark the copy lost and reload until a load succeeds.
async fn run<M: Mirror>(
    store: Store,
    prefix: &'static str,
    mirror: Weak<M>,
    mut revision: Revision,
) {
    loop {
        let watch = store
            .watch(WatchRequest {
                range: KeyRange::prefix(prefix),
                start_revision: revision + 1,
                ..Default::default()
            })
            .await;
        let why = match watch {
            Ok(mut watch) => loop {
                let next = watch.next().await;
                let Some(m) = mirror.upgrade() else { return };
                match next {
                    Some(Ok(batch)) => {
                        if !batch.events.is_empty() {
                            m.apply(Change::Events(&batch.events));
                        }
                        revision = revision.max(batch.header.revision);
                    }
                    Some(Err(e)) => break e.to_string(),
                    None => break "the watch ended".to_string(),
                }
            },
            Err(e) => e.to_string(),
        };
        let Some(m) = mirror.upgrade() else { return };
        tracing::warn!(
            prefix,
            "following the store broke ({why}); loading it again"
        );
        m.apply(Change::Lost);
        drop(m);
        let mut pause = FIRST_PAUSE;
        revision = loop {
            let Some(m) = mirror.upgrade() else { return };
            match load(&store, prefix, m.as_ref()).await {
                Ok(rev) => break rev,
                Err(e) => {
                    drop(m);
                    tracing::warn!(prefix, "loading from the store: {e}; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                }
            }
        };
    }
}

/// A store whose watches a test ends at will, for the tests of every copy.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::store::{
        DeleteRangeRequest, DeleteRangeResponse, Header, LeaseGrantResponse, LeaseId,
        LeaseTimeToLiveResponse, PutRequest, PutResponse, RangeResponse, StoreStatus, TxnRequest,
        TxnResponse, WatchStream,
    };
    use async_trait::async_trait;
    use parking_lot::Mutex;
    use tokio::sync::mpsc;

    /// A store whose watches the test ends at will, in front of the real
    /// embedded store.
    pub(crate) struct Breakable {
        inner: Store,
        open: Mutex<Vec<mpsc::Sender<crate::store::Result<crate::store::WatchEvents>>>>,
    }

    impl Breakable {
        /// Ends every open watch with the error a compaction gives, once
        /// at least one is open (a follower opens its watch in the
        /// background).
        pub(crate) async fn break_watches(&self) {
            for _ in 0..500 {
                if !self.open.lock().is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(!self.open.lock().is_empty(), "no watch opened in 5 s");
            let open = std::mem::take(&mut *self.open.lock());
            for tx in open {
                let _ = tx
                    .send(Err(StoreError::Compacted {
                        compact_revision: 1,
                    }))
                    .await;
            }
        }
    }

    #[async_trait]
    impl crate::store::Backend for Breakable {
        async fn range(&self, req: RangeRequest) -> crate::store::Result<RangeResponse> {
            self.inner.range(req).await
        }
        async fn put(&self, req: PutRequest) -> crate::store::Result<PutResponse> {
            self.inner.put(req).await
        }
        async fn delete_range(
            &self,
            req: DeleteRangeRequest,
        ) -> crate::store::Result<DeleteRangeResponse> {
            self.inner.delete_range(req).await
        }
        async fn txn(&self, req: TxnRequest) -> crate::store::Result<TxnResponse> {
            self.inner.txn(req).await
        }
        async fn compact(&self, revision: Revision) -> crate::store::Result<Header> {
            self.inner.compact(revision).await
        }
        async fn watch(&self, req: WatchRequest) -> crate::store::Result<WatchStream> {
            // Forward the real watch through a channel the test can poison.
            let mut real = self.inner.watch(req).await?;
            let (tx, rx) = mpsc::channel(16);
            self.open.lock().push(tx.clone());
            tokio::spawn(async move {
                while let Some(item) = real.next().await {
                    if tx.send(item).await.is_err() {
                        return;
                    }
                }
            });
            Ok(WatchStream::from_channel(rx))
        }
        async fn lease_grant(
            &self,
            ttl: i64,
            id: LeaseId,
        ) -> crate::store::Result<LeaseGrantResponse> {
            self.inner.lease_grant(ttl, id).await
        }
        async fn lease_revoke(&self, id: LeaseId) -> crate::store::Result<Header> {
            self.inner.lease_revoke(id).await
        }
        async fn lease_keep_alive(&self, id: LeaseId) -> crate::store::Result<LeaseGrantResponse> {
            self.inner.lease_keep_alive(id).await
        }
        async fn lease_time_to_live(
            &self,
            id: LeaseId,
            keys: bool,
        ) -> crate::store::Result<LeaseTimeToLiveResponse> {
            self.inner.lease_time_to_live(id, keys).await
        }
        async fn lease_leases(&self) -> crate::store::Result<(Header, Vec<LeaseId>)> {
            self.inner.lease_leases().await
        }
        async fn status(&self) -> crate::store::Result<StoreStatus> {
            self.inner.status().await
        }
    }

    /// Waits until `f` holds, checking every 10 ms; fails the test after
    /// `within`.
    pub(crate) async fn until(what: &str, within: Duration, f: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + within;
        while !f() {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: not within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    impl Breakable {
        /// The real embedded store in `dir`, behind watches that break.
        pub(crate) fn open(dir: &std::path::Path) -> Arc<Breakable> {
            let inner = crate::store::redb::RedbStore::open(
                &dir.join("db"),
                crate::store::redb::RedbOptions::default(),
            )
            .unwrap();
            Arc::new(Breakable {
                inner,
                open: Mutex::default(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{Breakable, until};
    use super::*;
    use crate::store::{DeleteRangeRequest, PutRequest};
    use parking_lot::Mutex;
    use std::collections::BTreeMap;

    const WITHIN: Duration = Duration::from_secs(2);

    /// A copy that records what it was told.
    #[derive(Default)]
    struct Copy {
        keys: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
        lost: Mutex<u32>,
        loads: Mutex<u32>,
    }

    impl Mirror for Copy {
        fn apply(&self, change: Change<'_>) {
            let mut keys = self.keys.lock();
            match change {
                Change::Loaded(_) => {
                    *self.loads.lock() += 1;
                    keys.clear();
                }
                Change::Events(_) => {}
                Change::Lost => *self.lost.lock() += 1,
            }
            for (key, value) in change.updates() {
                match value {
                    Some(v) => keys.insert(key.to_vec(), v.to_vec()),
                    None => keys.remove(key),
                };
            }
        }
    }

    async fn put(store: &Store, key: &str, value: &str) {
        store
            .put(PutRequest {
                key: key.as_bytes().to_vec().into(),
                value: value.as_bytes().to_vec().into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_broken_watch_is_reloaded_and_the_copy_keeps_following() {
        let dir = tempfile::tempdir().unwrap();
        let breakable = Breakable::open(dir.path());
        let store: Store = breakable.clone();
        put(&store, "/p/a", "1").await;
        put(&store, "/other", "x").await;

        let copy = Arc::new(Copy::default());
        follow(store.clone(), "/p/", &copy).await.unwrap();
        assert_eq!(copy.keys.lock().len(), 1, "only the prefix is loaded");

        put(&store, "/p/b", "2").await;
        until("a put under the prefix", WITHIN, || {
            copy.keys.lock().contains_key(&b"/p/b"[..])
        })
        .await;

        // The watch breaks; a change made before the reload is not missed.
        breakable.break_watches().await;
        store
            .delete_range(DeleteRangeRequest {
                range: KeyRange::single("/p/a"),
                ..Default::default()
            })
            .await
            .unwrap();
        until("the reload after a break", WITHIN, || {
            *copy.loads.lock() == 2
        })
        .await;
        assert_eq!(*copy.lost.lock(), 1);
        until("the delete", WITHIN, || {
            !copy.keys.lock().contains_key(&b"/p/a"[..])
        })
        .await;

        // And it goes on following after the reload.
        put(&store, "/p/c", "3").await;
        until("a put after the reload", WITHIN, || {
            copy.keys.lock().contains_key(&b"/p/c"[..])
        })
        .await;
    }
}
