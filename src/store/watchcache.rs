//! The API server's watch cache over an external etcd: one etcd watch for
//! the whole key space, fanned out here to every watcher, instead of one
//! etcd watch per client.
//!
//! A pump follows etcd from the revision the cache started at, keeps the
//! most recent revisions in a bounded log, and hands each new revision to
//! the same [`WatchHub`] the embedded store uses (synced watchers get it at
//! once; a slow one catches up from the log). A watch that starts before
//! the log's window goes to etcd directly, so nothing etcd can still replay
//! is refused.
//!
//! If the pump loses its etcd watch it resumes from the next revision it
//! has not seen; if etcd has compacted that away meanwhile, the gap can
//! never be filled, so every watch is ended with "compacted" and the cache
//! starts afresh (clients then list again, as after a 410).
//!
//! Lists are served from the cache too: it keeps the current value of every
//! key under `/registry/`, as of the newest revision it has seen. A list
//! first asks etcd for its current revision (a count of one key, cheap
//! whatever the list's size) and waits until the cache has caught up to it,
//! so a list from the cache is as current as one from etcd, as
//! kube-apiserver's consistent reads from its cache are. A list at a given
//! revision (the later pages of a paginated list), a filtered or sorted
//! one, and every write go to etcd.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::RwLock;

use super::watch::{EventSource, WatchHub, WatchLimits, WatchStream};
use super::{
    Backend, DeleteRangeRequest, DeleteRangeResponse, Event, EventType, Header, KeyRange, KeyValue,
    LeaseGrantResponse, LeaseId, LeaseTimeToLiveResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, Result, Revision, StoreError, StoreStatus, TxnRequest, TxnResponse,
    WatchRequest,
};

/// Revisions kept for watchers that start a little in the past or fall
/// behind.
pub const DEFAULT_WINDOW: usize = 10_000;

/// The recent revisions, as the hub reads them.
struct Log {
    entries: RwLock<VecDeque<(Revision, Arc<[Event]>)>>,
    /// The newest revision the cache has seen.
    committed: AtomicI64,
    /// Revisions up to this one are not in the log.
    base: AtomicI64,
    window: usize,
}

impl EventSource for Log {
    fn committed(&self) -> Revision {
        self.committed.load(Ordering::Acquire)
    }

    fn compacted(&self) -> Revision {
        self.base.load(Ordering::Acquire) + 1
    }

    fn events_between(
        &self,
        from: Revision,
        to: Revision,
        max: usize,
    ) -> Result<Vec<(Revision, Arc<[Event]>)>> {
        if from <= self.base.load(Ordering::Acquire) {
            return Err(StoreError::Compacted {
                compact_revision: self.compacted(),
            });
        }
        let entries = self.entries.read();
        let start = entries.partition_point(|(r, _)| *r < from);
        Ok(entries
            .iter()
            .skip(start)
            .take_while(|(r, _)| *r <= to)
            .take(max)
            .cloned()
            .collect())
    }
}

impl Log {
    /// Appends revisions (ascending), trimming the oldest past the window.
    fn append(&self, revisions: &[(Revision, Arc<[Event]>)], committed: Revision) {
        let mut entries = self.entries.write();
        entries.extend(revisions.iter().cloned());
        while entries.len() > self.window {
            if let Some((rev, _)) = entries.pop_front() {
                self.base.store(rev, Ordering::Release);
            }
        }
        drop(entries);
        self.committed.fetch_max(committed, Ordering::AcqRel);
    }

    /// Forgets everything: the cache starts again at `revision`.
    fn reset(&self, revision: Revision) {
        let mut entries = self.entries.write();
        entries.clear();
        self.base.store(revision, Ordering::Release);
        self.committed.store(revision, Ordering::Release);
    }
}

/// How long a list waits for the cache to catch up with etcd before it
/// reads etcd instead.
const CATCH_UP_WAIT: Duration = Duration::from_secs(3);

/// Keys read per page when the cache loads the current state.
const LOAD_PAGE: i64 = 1000;

/// The current value of every key the cache covers.
struct State {
    kvs: BTreeMap<Bytes, Arc<KeyValue>>,
    /// The revision `kvs` is as of.
    revision: Revision,
}

impl State {
    fn apply(&mut self, revisions: &[(Revision, Arc<[Event]>)], committed: Revision) {
        for (_, events) in revisions {
            for ev in events.iter() {
                match ev.kind {
                    EventType::Put => {
                        self.kvs.insert(ev.kv.key.clone(), ev.kv.clone());
                    }
                    EventType::Delete => {
                        self.kvs.remove(&ev.kv.key);
                    }
                }
            }
        }
        self.revision = self.revision.max(committed);
    }
}

/// Shared between the cache and its pump.
struct Shared {
    log: Arc<Log>,
    state: RwLock<State>,
    /// The state's revision, for lists waiting to catch up.
    seen: tokio::sync::watch::Sender<Revision>,
}

/// A [`Backend`] whose watches and current lists are served from one
/// shared etcd watch.
pub struct WatchCache {
    inner: Arc<dyn Backend>,
    log: Arc<Log>,
    hub: Arc<WatchHub>,
    shared: Arc<Shared>,
}

/// The current state of every key the cache covers, read page by page at
/// one revision.
async fn load(inner: &dyn Backend) -> Result<State> {
    let all = everything();
    let mut kvs = BTreeMap::new();
    let mut from = all.key.clone();
    let mut revision = 0;
    loop {
        let page = inner
            .range(RangeRequest {
                range: KeyRange {
                    key: from.clone(),
                    range_end: all.range_end.clone(),
                },
                limit: LOAD_PAGE,
                revision,
                ..Default::default()
            })
            .await?;
        if revision == 0 {
            revision = page.header.revision;
        }
        for kv in &page.kvs {
            kvs.insert(kv.key.clone(), kv.clone());
        }
        match page.kvs.last() {
            Some(last) if page.more => {
                let mut next = last.key.to_vec();
                next.push(0);
                from = Bytes::from(next);
            }
            _ => return Ok(State { kvs, revision }),
        }
    }
}

impl WatchCache {
    /// Starts the cache over `inner` at its current revision. Must be
    /// called inside a tokio runtime (the pump and the hub run on it).
    ///
    /// # Errors
    /// `inner` refuses (other than being unreachable, which is waited out).
    pub async fn start(inner: Arc<dyn Backend>, window: usize) -> Result<Arc<WatchCache>> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| StoreError::Storage("the watch cache needs a tokio runtime".into()))?;
        // Like kube-apiserver, wait for etcd rather than start blind.
        let state = loop {
            match load(inner.as_ref()).await {
                Ok(s) => break s,
                Err(e @ StoreError::Unavailable(_)) => {
                    tracing::warn!(error = %e, "waiting for etcd");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let now = state.revision;
        let log = Arc::new(Log {
            entries: RwLock::new(VecDeque::new()),
            committed: AtomicI64::new(now),
            base: AtomicI64::new(now),
            window: window.max(1),
        });
        let source: Arc<dyn EventSource> = log.clone();
        let hub = WatchHub::new(WatchLimits::default(), runtime, Arc::downgrade(&source));
        let shared = Arc::new(Shared {
            log: log.clone(),
            state: RwLock::new(state),
            seen: tokio::sync::watch::Sender::new(now),
        });
        let cache = Arc::new(WatchCache {
            inner: inner.clone(),
            log,
            hub: hub.clone(),
            shared: shared.clone(),
        });
        tokio::spawn(pump(inner, shared, Arc::downgrade(&hub)));
        Ok(cache)
    }
}

/// Follows etcd for as long as the hub lives.
async fn pump(inner: Arc<dyn Backend>, shared: Arc<Shared>, hub: std::sync::Weak<WatchHub>) {
    let log = shared.log.clone();
    let mut pause = Duration::from_millis(100);
    loop {
        if hub.strong_count() == 0 {
            return;
        }
        let from = log.committed() + 1;
        let req = WatchRequest {
            range: everything(),
            start_revision: from,
            prev_kv: true,
            progress_notify: true,
            ..Default::default()
        };
        let mut stream = match inner.watch(req).await {
            Ok(s) => s,
            Err(StoreError::Compacted { .. }) => {
                restart(&inner, &shared, &hub).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "watch cache: cannot watch etcd; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        loop {
            match stream.next().await {
                Some(Ok(delivery)) => {
                    pause = Duration::from_millis(100);
                    let revisions = by_revision(delivery.events);
                    let committed = delivery
                        .header
                        .revision
                        .max(revisions.last().map_or(0, |(r, _)| *r));
                    // State and log first, then `committed`, then the hub:
                    // the order the hub's catch-up relies on.
                    shared.state.write().apply(&revisions, committed);
                    log.append(&revisions, committed);
                    shared.seen.send_replace(committed);
                    let Some(hub) = hub.upgrade() else { return };
                    if !revisions.is_empty() {
                        hub.notify(&revisions, log.committed());
                    }
                }
                Some(Err(StoreError::Compacted { .. })) => {
                    restart(&inner, &shared, &hub).await;
                    break;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "watch cache: the etcd watch broke; resuming");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                    break;
                }
                None => break,
            }
        }
    }
}

/// etcd compacted past what the cache had seen: the missed events are gone
/// for good, so every watch ends and the cache starts again from now.
async fn restart(inner: &Arc<dyn Backend>, shared: &Shared, hub: &std::sync::Weak<WatchHub>) {
    let state = loop {
        match load(inner.as_ref()).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(error = %e, "watch cache: cannot read etcd's state; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let now = state.revision;
    tracing::warn!(
        revision = now,
        "watch cache: etcd compacted events it had not delivered; every watch restarts"
    );
    *shared.state.write() = state;
    shared.log.reset(now);
    shared.seen.send_replace(now);
    if let Some(hub) = hub.upgrade() {
        hub.fail_all(|| StoreError::Compacted {
            compact_revision: now,
        });
    }
}

/// What the cache follows: wkube's own key space. Watches of anything
/// else (an etcdctl user's keys) go to etcd directly.
const COVERED: &[u8] = b"/registry/";

fn everything() -> KeyRange {
    KeyRange::prefix(Bytes::from_static(COVERED))
}

/// True when every key of `range` is in the cache's key space.
fn covered(range: &KeyRange) -> bool {
    let all = everything();
    if !range.key.starts_with(COVERED) {
        return false;
    }
    range.range_end.is_empty() || (range.range_end[..] != [0] && range.range_end <= all.range_end)
}

/// True for the reads the cache answers: current, over wkube's keys,
/// unfiltered, in key order.
fn from_cache(req: &RangeRequest) -> bool {
    req.revision == 0
        && covered(&req.range)
        && req.min_mod_revision == 0
        && req.max_mod_revision == 0
        && req.min_create_revision == 0
        && req.max_create_revision == 0
        && matches!(
            req.sort_order,
            super::SortOrder::None | super::SortOrder::Ascend
        )
        && req.sort_target == super::SortTarget::Key
}

/// A range answered from the cached state, shaped as etcd shapes it.
fn read(state: &State, req: &RangeRequest) -> RangeResponse {
    let header = Header {
        revision: state.revision,
    };
    let matched: Box<dyn Iterator<Item = &Arc<KeyValue>>> = if req.range.range_end.is_empty() {
        Box::new(state.kvs.get(&req.range.key).into_iter())
    } else if req.range.key >= req.range.range_end {
        Box::new(std::iter::empty())
    } else {
        Box::new(
            state
                .kvs
                .range(req.range.key.clone()..req.range.range_end.clone())
                .map(|(_, kv)| kv),
        )
    };
    let limit = if req.limit > 0 {
        req.limit as usize
    } else {
        usize::MAX
    };
    let mut kvs = Vec::new();
    let mut count = 0i64;
    for kv in matched {
        count += 1;
        if req.count_only || kvs.len() >= limit {
            continue;
        }
        kvs.push(if req.keys_only {
            Arc::new(KeyValue {
                value: Bytes::new(),
                ..(**kv).clone()
            })
        } else {
            kv.clone()
        });
    }
    RangeResponse {
        header,
        more: (kvs.len() as i64) < count && !req.count_only,
        kvs,
        count,
    }
}

/// Groups a delivery's events by revision, in order.
fn by_revision(events: Vec<Event>) -> Vec<(Revision, Arc<[Event]>)> {
    let mut out: Vec<(Revision, Vec<Event>)> = Vec::new();
    for ev in events {
        let rev = ev.kv.mod_revision;
        match out.last_mut() {
            Some((r, evs)) if *r == rev => evs.push(ev),
            _ => out.push((rev, vec![ev])),
        }
    }
    out.into_iter().map(|(r, e)| (r, e.into())).collect()
}

#[async_trait]
impl Backend for WatchCache {
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        if !from_cache(&req) {
            return self.inner.range(req).await;
        }
        // As current as etcd: wait until the cache has seen etcd's revision.
        let fresh = self
            .inner
            .range(RangeRequest {
                range: KeyRange::single("/registry/health"),
                count_only: true,
                ..Default::default()
            })
            .await?
            .header
            .revision;
        let mut seen = self.shared.seen.subscribe();
        let caught_up = tokio::time::timeout(CATCH_UP_WAIT, async {
            seen.wait_for(|r| *r >= fresh).await.is_ok()
        })
        .await
        .unwrap_or(false);
        if !caught_up {
            return self.inner.range(req).await;
        }
        let state = self.shared.state.read();
        Ok(read(&state, &req))
    }
    async fn put(&self, req: PutRequest) -> Result<PutResponse> {
        self.inner.put(req).await
    }
    async fn delete_range(&self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        self.inner.delete_range(req).await
    }
    async fn txn(&self, req: TxnRequest) -> Result<TxnResponse> {
        self.inner.txn(req).await
    }
    async fn compact(&self, revision: Revision) -> Result<Header> {
        self.inner.compact(revision).await
    }
    async fn watch(&self, req: WatchRequest) -> Result<WatchStream> {
        // Outside wkube's keys, or older than the window: only etcd can
        // serve it.
        if !covered(&req.range)
            || (req.start_revision > 0 && req.start_revision < self.log.compacted())
        {
            return self.inner.watch(req).await;
        }
        self.hub.watch(req)
    }
    async fn lease_grant(&self, ttl: i64, id: LeaseId) -> Result<LeaseGrantResponse> {
        self.inner.lease_grant(ttl, id).await
    }
    async fn lease_revoke(&self, id: LeaseId) -> Result<Header> {
        self.inner.lease_revoke(id).await
    }
    async fn lease_keep_alive(&self, id: LeaseId) -> Result<LeaseGrantResponse> {
        self.inner.lease_keep_alive(id).await
    }
    async fn lease_time_to_live(&self, id: LeaseId, keys: bool) -> Result<LeaseTimeToLiveResponse> {
        self.inner.lease_time_to_live(id, keys).await
    }
    async fn lease_leases(&self) -> Result<(Header, Vec<LeaseId>)> {
        self.inner.lease_leases().await
    }
    async fn status(&self) -> Result<StoreStatus> {
        self.inner.status().await
    }
    async fn snapshot(&self, dest: &Path) -> Result<Header> {
        self.inner.snapshot(dest).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redb::{RedbOptions, RedbStore};
    use std::sync::atomic::AtomicUsize;

    /// Counts the watches opened on the backend below.
    struct Counting {
        inner: Arc<dyn Backend>,
        watches: AtomicUsize,
        /// Ranges that read values (not the cache's freshness probe).
        reads: AtomicUsize,
    }

    #[async_trait]
    impl Backend for Counting {
        async fn range(&self, r: RangeRequest) -> Result<RangeResponse> {
            if !r.count_only {
                self.reads.fetch_add(1, Ordering::Relaxed);
            }
            self.inner.range(r).await
        }
        async fn put(&self, r: PutRequest) -> Result<PutResponse> {
            self.inner.put(r).await
        }
        async fn delete_range(&self, r: DeleteRangeRequest) -> Result<DeleteRangeResponse> {
            self.inner.delete_range(r).await
        }
        async fn txn(&self, r: TxnRequest) -> Result<TxnResponse> {
            self.inner.txn(r).await
        }
        async fn compact(&self, r: Revision) -> Result<Header> {
            self.inner.compact(r).await
        }
        async fn watch(&self, r: WatchRequest) -> Result<WatchStream> {
            self.watches.fetch_add(1, Ordering::Relaxed);
            self.inner.watch(r).await
        }
        async fn lease_grant(&self, t: i64, i: LeaseId) -> Result<LeaseGrantResponse> {
            self.inner.lease_grant(t, i).await
        }
        async fn lease_revoke(&self, i: LeaseId) -> Result<Header> {
            self.inner.lease_revoke(i).await
        }
        async fn lease_keep_alive(&self, i: LeaseId) -> Result<LeaseGrantResponse> {
            self.inner.lease_keep_alive(i).await
        }
        async fn lease_time_to_live(&self, i: LeaseId, k: bool) -> Result<LeaseTimeToLiveResponse> {
            self.inner.lease_time_to_live(i, k).await
        }
        async fn lease_leases(&self) -> Result<(Header, Vec<LeaseId>)> {
            self.inner.lease_leases().await
        }
        async fn status(&self) -> Result<StoreStatus> {
            self.inner.status().await
        }
    }

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

    async fn next_key(stream: &mut WatchStream) -> String {
        let d = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("an event in time")
            .expect("open")
            .expect("no error");
        String::from_utf8_lossy(&d.events[0].kv.key).into_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_watchers_share_one_upstream_watch() {
        let dir = tempfile::tempdir().unwrap();
        let redb = RedbStore::open(&dir.path().join("s.redb"), RedbOptions::default()).unwrap();
        let counting = Arc::new(Counting {
            inner: redb.clone(),
            watches: AtomicUsize::new(0),
            reads: AtomicUsize::new(0),
        });
        let cache = WatchCache::start(counting.clone(), 100).await.unwrap();
        let mut streams = Vec::new();
        for _ in 0..20 {
            streams.push(
                cache
                    .watch(WatchRequest {
                        range: KeyRange::prefix("/registry/pods/"),
                        ..Default::default()
                    })
                    .await
                    .unwrap(),
            );
        }
        put(cache.as_ref(), "/registry/configmaps/x").await;
        put(cache.as_ref(), "/registry/pods/a").await;
        for s in &mut streams {
            assert_eq!(next_key(s).await, "/registry/pods/a");
        }
        assert_eq!(counting.watches.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watch_resumes_from_the_log_or_from_the_store_when_older() {
        let dir = tempfile::tempdir().unwrap();
        let redb = RedbStore::open(&dir.path().join("s.redb"), RedbOptions::default()).unwrap();
        let early = put(redb.as_ref(), "/registry/pods/before-cache").await;
        let counting = Arc::new(Counting {
            inner: redb.clone(),
            watches: AtomicUsize::new(0),
            reads: AtomicUsize::new(0),
        });
        let cache = WatchCache::start(counting.clone(), 100).await.unwrap();
        let rev = put(cache.as_ref(), "/registry/pods/b").await;
        // Let the pump see it.
        tokio::time::timeout(Duration::from_secs(5), async {
            while cache.log.committed() < rev {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        // From the log: no new upstream watch.
        let mut s = cache
            .watch(WatchRequest {
                range: KeyRange::prefix("/registry/pods/"),
                start_revision: rev,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(next_key(&mut s).await, "/registry/pods/b");
        assert_eq!(counting.watches.load(Ordering::Relaxed), 1);
        // Before the cache began: etcd (here the store) replays it.
        let mut s = cache
            .watch(WatchRequest {
                range: KeyRange::prefix("/registry/pods/"),
                start_revision: early,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(next_key(&mut s).await, "/registry/pods/before-cache");
        assert_eq!(counting.watches.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn current_lists_come_from_the_cache_and_match_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let redb = RedbStore::open(&dir.path().join("s.redb"), RedbOptions::default()).unwrap();
        for k in [
            "/registry/pods/a/1",
            "/registry/pods/a/2",
            "/registry/pods/b/1",
        ] {
            put(redb.as_ref(), k).await;
        }
        let counting = Arc::new(Counting {
            inner: redb.clone(),
            watches: AtomicUsize::new(0),
            reads: AtomicUsize::new(0),
        });
        let cache = WatchCache::start(counting.clone(), 100).await.unwrap();
        // Written through the cache after it loaded, then deleted.
        put(cache.as_ref(), "/registry/pods/c/1").await;
        put(cache.as_ref(), "/registry/pods/a/3").await;
        cache
            .delete_range(DeleteRangeRequest {
                range: KeyRange::single("/registry/pods/a/1"),
                prev_kv: false,
            })
            .await
            .unwrap();
        let loaded = counting.reads.load(Ordering::Relaxed);
        let cases = [
            RangeRequest {
                range: KeyRange::prefix("/registry/pods/"),
                ..Default::default()
            },
            RangeRequest {
                range: KeyRange::prefix("/registry/pods/a/"),
                limit: 1,
                ..Default::default()
            },
            RangeRequest {
                range: KeyRange::single("/registry/pods/c/1"),
                ..Default::default()
            },
            RangeRequest {
                range: KeyRange::single("/registry/pods/a/1"),
                ..Default::default()
            },
            RangeRequest {
                range: KeyRange::prefix("/registry/pods/"),
                keys_only: true,
                ..Default::default()
            },
        ];
        for req in cases {
            let want = redb.range(req.clone()).await.unwrap();
            let got = cache.range(req.clone()).await.unwrap();
            assert_eq!(got.kvs, want.kvs, "{req:?}");
            assert_eq!((got.more, got.count), (want.more, want.count), "{req:?}");
            assert_eq!(got.header.revision, want.header.revision, "{req:?}");
        }
        // None of them read values from the store below.
        assert_eq!(counting.reads.load(Ordering::Relaxed), loaded);
        // A read at a past revision does.
        let at = redb.status().await.unwrap().header.revision - 1;
        cache
            .range(RangeRequest {
                range: KeyRange::prefix("/registry/pods/"),
                revision: at,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(counting.reads.load(Ordering::Relaxed), loaded + 1);
    }

    #[test]
    fn only_ranges_inside_the_registry_are_served_from_the_cache() {
        assert!(covered(&KeyRange::prefix("/registry/pods/")));
        assert!(covered(&KeyRange::single("/registry/pods/a/b")));
        assert!(covered(&KeyRange::prefix("/registry/")));
        assert!(!covered(&KeyRange::prefix("/reg")));
        assert!(!covered(&KeyRange::single("foo")));
        assert!(!covered(&KeyRange {
            key: Bytes::from_static(b"/registry/a"),
            range_end: Bytes::from_static(&[0]),
        }));
    }

    #[test]
    fn the_log_keeps_its_window_and_refuses_what_fell_out() {
        let log = Log {
            entries: RwLock::new(VecDeque::new()),
            committed: AtomicI64::new(10),
            base: AtomicI64::new(10),
            window: 3,
        };
        let revs: Vec<(Revision, Arc<[Event]>)> =
            (11..=15).map(|r| (r, Arc::from(Vec::new()))).collect();
        log.append(&revs, 15);
        assert_eq!(log.committed(), 15);
        assert_eq!(log.compacted(), 13);
        let got: Vec<Revision> = log
            .events_between(13, 15, 10)
            .unwrap()
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        assert_eq!(got, [13, 14, 15]);
        assert!(matches!(
            log.events_between(12, 15, 10),
            Err(StoreError::Compacted { .. })
        ));
    }
}
