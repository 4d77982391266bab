//! The default backend: the MVCC index of [`super::mvcc`] made durable by a
//! write-ahead log ([`super::wal`]) and kept in an embedded redb file.
//!
//! # Write path
//! Every write goes to one writer thread. It takes whatever requests are
//! queued (up to `max_batch`), applies them in order to the in-memory index
//! (assigning revisions), appends all their changes to the log as **one**
//! record and syncs it — then publishes the new committed revision, hands
//! the events to watchers, and answers the callers. So concurrent writers
//! share one sync, and no write is visible or acknowledged before it is on
//! disk.
//!
//! A checkpointer thread applies the logged batches to redb, all those of
//! an interval ([`RedbOptions::checkpoint_every`]) in one durable commit
//! that also records the last log record it holds (`wal_seq`). Once the
//! log holds [`RedbOptions::log_start_over_at`] bytes, the writer waits
//! for redb to hold all of it and starts the log over.
//!
//! # Read path
//! Reads never touch the disk: they run on the in-memory index under a
//! read lock, at the committed revision or an older retained one.
//!
//! # On disk
//! - `revs`: `(revision, sub)` → one record (put or tombstone), like etcd's
//!   key space by revision; compaction deletes superseded records.
//! - `meta`: the current and compacted revisions, the last log record
//!   applied, the cluster and member ids.
//! - `leases`: lease id → granted TTL.
//!
//! On open, the log's records newer than redb's `wal_seq` are applied to
//! redb first; then redb's records are replayed in revision order to
//! rebuild the index.
//!
//! # Failure
//! If a log append or a checkpoint fails, the in-memory index may be ahead
//! of the disk. The store then refuses every further request with
//! `Storage` rather than serve state that might not survive a restart; a
//! restart recovers from the log and the last good checkpoint.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::mvcc::{Change, ClosedRevision, Mvcc};
use super::wal::{self, Logged, Wal, decode_record, encode_record};
use super::watch::{EventSource, WatchHub, WatchLimits};
use super::{
    Backend, DeleteRangeRequest, DeleteRangeResponse, Event, Header, LeaseGrantResponse, LeaseId,
    LeaseTimeToLiveResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, Result,
    Revision, StoreError, StoreStatus, TxnRequest, TxnResponse, WatchRequest, WatchStream,
};

const REVS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("revs");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const LEASES: TableDefinition<i64, i64> = TableDefinition::new("leases");

/// The etcd API version whose behaviour the store follows.
pub const ETCD_API_VERSION: &str = "3.5.0";

/// Tuning and limits of the redb backend.
#[derive(Clone, Debug)]
pub struct RedbOptions {
    /// Most requests folded into one durable commit.
    pub max_batch: usize,
    /// Most write requests waiting for the writer; callers beyond it wait
    /// for room (backpressure) instead of growing memory.
    pub max_pending: usize,
    /// How long logged batches wait for their bulk commit to redb: the
    /// longer, the fewer B-tree pages written per write under load (and the
    /// more the log replays after a crash).
    pub checkpoint_every: Duration,
    /// The log's size at which the writer starts it over (once redb holds
    /// all of it): bounds the log file and the replay after a crash.
    pub log_start_over_at: u64,
    pub watch: WatchLimits,
}

impl Default for RedbOptions {
    fn default() -> Self {
        RedbOptions {
            max_batch: 4096,
            max_pending: 65_536,
            checkpoint_every: Duration::from_millis(100),
            log_start_over_at: 16 << 20,
            watch: WatchLimits::default(),
        }
    }
}

enum Op {
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(Revision),
    LeaseGrant {
        id: LeaseId,
        ttl: i64,
    },
    LeaseRevoke(LeaseId),
    LeaseTimeToLive {
        id: LeaseId,
        keys: bool,
    },
    LeaseLeases,
    /// Copy the store file to this path between two commits.
    Snapshot(PathBuf),
}

enum Reply {
    Put(PutResponse),
    Delete(DeleteRangeResponse),
    Txn(TxnResponse),
    Header(Header),
    LeaseGrant(LeaseGrantResponse),
    LeaseTtl(LeaseTimeToLiveResponse),
    Leases(Vec<LeaseId>),
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<Reply>>,
    _permit: OwnedSemaphorePermit,
}

/// State shared by the writer thread, readers and catching-up watchers.
struct Shared {
    mvcc: RwLock<Mvcc>,
    /// The newest durable revision; readers never look past it.
    committed: AtomicI64,
    /// Set when a durable commit failed.
    failed: AtomicBool,
    hub: Mutex<Option<Arc<WatchHub>>>,
}

impl EventSource for Shared {
    fn committed(&self) -> Revision {
        self.committed.load(Ordering::Acquire)
    }
    fn compacted(&self) -> Revision {
        self.mvcc.read().compact_revision()
    }
    fn events_between(
        &self,
        from: Revision,
        to: Revision,
        max: usize,
    ) -> Result<Vec<(Revision, Arc<[Event]>)>> {
        self.mvcc.read().events_between(from, to, max)
    }
}

/// The embedded, durable store.
pub struct RedbStore {
    shared: Arc<Shared>,
    hub: Arc<WatchHub>,
    queue: Mutex<Option<std_mpsc::Sender<Request>>>,
    permits: Arc<Semaphore>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpointer: Mutex<Option<std::thread::JoinHandle<()>>>,
    path: PathBuf,
    cluster_id: u64,
    member_id: u64,
}

impl RedbStore {
    /// Open (or create) the store file at `path` and start its writer.
    /// Must be called inside a tokio runtime (watch delivery runs on it).
    ///
    /// # Errors
    /// `Storage` when the file cannot be opened — for example because
    /// another process holds it.
    pub fn open(path: &Path, opts: RedbOptions) -> Result<Arc<RedbStore>> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            StoreError::Storage("the store must be opened inside a tokio runtime".into())
        })?;
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Storage(format!(
                "{} is in use by another process (is another wkube server running on this data dir?)",
                path.display()
            )),
            e => StoreError::Storage(format!("opening {}: {e}", path.display())),
        })?;
        let (mut log, logged) = Wal::open(&wal::path_for(path))?;
        let (mvcc, cluster_id, member_id, wal_seq) = recover(&db, &logged)?;
        log.continue_after(wal_seq);
        let committed = mvcc.current_revision();
        let shared = Arc::new(Shared {
            mvcc: RwLock::new(mvcc),
            committed: AtomicI64::new(committed),
            failed: AtomicBool::new(false),
            hub: Mutex::new(None),
        });
        let source: Arc<dyn EventSource> = shared.clone();
        let hub = WatchHub::new(opts.watch.clone(), runtime, Arc::downgrade(&source));
        *shared.hub.lock() = Some(hub.clone());
        let thread =
            |e: std::io::Error| StoreError::Storage(format!("starting a store thread: {e}"));
        let (checkpoints, checkpoint_rx) = std_mpsc::channel();
        let every = opts.checkpoint_every;
        let checkpoint_shared = shared.clone();
        let checkpointer = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || checkpointer_loop(db, checkpoint_shared, checkpoint_rx, every))
            .map_err(thread)?;
        let (tx, rx) = std_mpsc::channel();
        let writer = Writer {
            log,
            file: path.to_path_buf(),
            shared: shared.clone(),
            checkpoints,
            start_over_at: opts.log_start_over_at,
        };
        let max_batch = opts.max_batch.max(1);
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx, max_batch))
            .map_err(thread)?;
        Ok(Arc::new(RedbStore {
            shared,
            hub,
            queue: Mutex::new(Some(tx)),
            permits: Arc::new(Semaphore::new(opts.max_pending.max(1))),
            writer: Mutex::new(Some(writer)),
            checkpointer: Mutex::new(Some(checkpointer)),
            path: path.to_path_buf(),
            cluster_id,
            member_id,
        }))
    }

    /// Stop accepting writes, finish the queued ones, wait for the writer
    /// to exit and for redb to hold everything logged. Reads keep working
    /// on the final state.
    pub fn close(&self) {
        self.queue.lock().take();
        if let Some(handle) = self.writer.lock().take() {
            let _ = handle.join();
        }
        // The writer's end of the checkpointer's queue is gone with it: the
        // checkpointer commits what it holds and exits.
        if let Some(handle) = self.checkpointer.lock().take() {
            let _ = handle.join();
        }
    }

    /// The newest durable revision.
    pub fn committed_revision(&self) -> Revision {
        self.shared.committed()
    }

    async fn submit(&self, op: Op) -> Result<Reply> {
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(StoreError::Storage(
                "an earlier durable commit failed; restart the server".into(),
            ));
        }
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Stopped)?;
        let (reply, rx) = oneshot::channel();
        {
            let queue = self.queue.lock();
            let queue = queue.as_ref().ok_or(StoreError::Stopped)?;
            queue
                .send(Request {
                    op,
                    reply,
                    _permit: permit,
                })
                .map_err(|_| StoreError::Stopped)?;
        }
        rx.await.map_err(|_| StoreError::Stopped)?
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        self.close();
    }
}

fn unexpected() -> StoreError {
    StoreError::Storage("internal error: mismatched reply".into())
}

#[async_trait]
impl Backend for RedbStore {
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        let mvcc = self.shared.mvcc.read();
        let committed = self.shared.committed();
        mvcc.range(&req, committed)
    }

    async fn put(&self, req: PutRequest) -> Result<PutResponse> {
        if req.key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        match self.submit(Op::Put(req)).await? {
            Reply::Put(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    async fn delete_range(&self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        if req.range.key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        match self.submit(Op::Delete(req)).await? {
            Reply::Delete(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    async fn txn(&self, req: TxnRequest) -> Result<TxnResponse> {
        match self.submit(Op::Txn(req)).await? {
            Reply::Txn(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    async fn compact(&self, revision: Revision) -> Result<Header> {
        match self.submit(Op::Compact(revision)).await? {
            Reply::Header(h) => Ok(h),
            _ => Err(unexpected()),
        }
    }

    async fn watch(&self, req: WatchRequest) -> Result<WatchStream> {
        self.hub.watch(req)
    }

    async fn snapshot(&self, dest: &Path) -> Result<Header> {
        match self.submit(Op::Snapshot(dest.to_path_buf())).await? {
            Reply::Header(h) => Ok(h),
            _ => Err(unexpected()),
        }
    }

    async fn lease_grant(&self, ttl: i64, id: LeaseId) -> Result<LeaseGrantResponse> {
        match self.submit(Op::LeaseGrant { id, ttl }).await? {
            Reply::LeaseGrant(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<Header> {
        match self.submit(Op::LeaseRevoke(id)).await? {
            Reply::Header(h) => Ok(h),
            _ => Err(unexpected()),
        }
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<LeaseGrantResponse> {
        // Renewals change no durable state (deadlines restart in full after
        // a restart anyway), so they skip the writer.
        let ttl = self
            .shared
            .mvcc
            .write()
            .lease_keep_alive(id, Instant::now())?;
        Ok(LeaseGrantResponse {
            header: Header {
                revision: self.shared.committed(),
            },
            id,
            ttl,
        })
    }

    async fn lease_time_to_live(&self, id: LeaseId, keys: bool) -> Result<LeaseTimeToLiveResponse> {
        match self.submit(Op::LeaseTimeToLive { id, keys }).await? {
            Reply::LeaseTtl(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    async fn lease_leases(&self) -> Result<(Header, Vec<LeaseId>)> {
        match self.submit(Op::LeaseLeases).await? {
            Reply::Leases(ids) => Ok((
                Header {
                    revision: self.shared.committed(),
                },
                ids,
            )),
            _ => Err(unexpected()),
        }
    }

    async fn status(&self) -> Result<StoreStatus> {
        let size = std::fs::metadata(&self.path)
            .map(|m| m.len() as i64)
            .unwrap_or(0);
        let committed = self.shared.committed();
        let compact_revision = self.shared.mvcc.read().compact_revision();
        Ok(StoreStatus {
            header: Header {
                revision: committed,
            },
            version: ETCD_API_VERSION.to_string(),
            db_size: size,
            db_size_in_use: size,
            compact_revision,
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            raft_index: committed as u64,
        })
    }
}

// ----- recovery ---------------------------------------------------------------

fn storage(context: &str) -> impl FnOnce(redb::Error) -> StoreError + '_ {
    move |e| StoreError::Storage(format!("{context}: {e}"))
}

/// Rebuilds the index from redb after applying the log's records that redb
/// does not hold yet; also returns the cluster and member ids and the last
/// log record redb holds.
fn recover(db: &Database, logged: &[Logged]) -> Result<(Mvcc, u64, u64, u64)> {
    // Make sure every table exists, and the cluster has its identity.
    let (cluster_id, member_id) = {
        let wtx = db.begin_write().map_err(|e| storage("begin")(e.into()))?;
        let ids;
        {
            wtx.open_table(REVS)
                .map_err(|e| storage("revs")(e.into()))?;
            wtx.open_table(LEASES)
                .map_err(|e| storage("leases")(e.into()))?;
            let mut meta = wtx
                .open_table(META)
                .map_err(|e| storage("meta")(e.into()))?;
            let get = |meta: &redb::Table<&str, u64>, k: &str| -> Result<Option<u64>> {
                Ok(meta
                    .get(k)
                    .map_err(|e| storage("meta")(e.into()))?
                    .map(|v| v.value()))
            };
            let cluster = match get(&meta, "cluster_id")? {
                Some(v) => v,
                None => {
                    let v = rand::random::<u64>() >> 1;
                    meta.insert("cluster_id", v)
                        .map_err(|e| storage("meta")(e.into()))?;
                    v
                }
            };
            let member = match get(&meta, "member_id")? {
                Some(v) => v,
                None => {
                    let v = rand::random::<u64>() >> 1;
                    meta.insert("member_id", v)
                        .map_err(|e| storage("meta")(e.into()))?;
                    v
                }
            };
            ids = (cluster, member);
        }
        wtx.commit().map_err(|e| storage("commit")(e.into()))?;
        ids
    };

    // What the log holds beyond the last checkpoint, made durable in redb
    // before the log can start over.
    let checkpointed = {
        let rtx = db.begin_read().map_err(|e| storage("begin")(e.into()))?;
        let meta = rtx
            .open_table(META)
            .map_err(|e| storage("meta")(e.into()))?;
        meta.get("wal_seq")
            .map_err(|e| storage("meta")(e.into()))?
            .map_or(0, |v| v.value())
    };
    let newer: Vec<&Logged> = logged.iter().filter(|l| l.seq > checkpointed).collect();
    let wal_seq = match newer.last() {
        Some(last) => {
            let changes = newer.iter().flat_map(|l| l.changes.iter());
            persist(db, changes, last.current, last.seq, &mut Vec::new())
                .map_err(storage("replaying the write-ahead log"))?;
            last.seq
        }
        None => checkpointed,
    };

    let rtx = db.begin_read().map_err(|e| storage("begin")(e.into()))?;
    let revs = rtx
        .open_table(REVS)
        .map_err(|e| storage("revs")(e.into()))?;
    let meta = rtx
        .open_table(META)
        .map_err(|e| storage("meta")(e.into()))?;
    let leases_table = rtx
        .open_table(LEASES)
        .map_err(|e| storage("leases")(e.into()))?;
    let meta_get = |k: &str| -> Result<u64> {
        Ok(meta
            .get(k)
            .map_err(|e| storage("meta")(e.into()))?
            .map(|v| v.value())
            .unwrap_or(0))
    };
    let current = meta_get("current_rev")? as Revision;
    let compacted = meta_get("compact_rev")? as Revision;

    let mut records = Vec::new();
    for entry in revs.iter().map_err(|e| storage("revs")(e.into()))? {
        let (k, v) = entry.map_err(|e| storage("revs")(e.into()))?;
        let (rev, sub) = k.value();
        let (kind, kv) = decode_record(rev as Revision, v.value())?;
        records.push((rev as Revision, sub, kind, kv));
    }
    let mut leases = Vec::new();
    for entry in leases_table
        .iter()
        .map_err(|e| storage("leases")(e.into()))?
    {
        let (k, v) = entry.map_err(|e| storage("leases")(e.into()))?;
        leases.push((k.value(), v.value()));
    }
    let mut mvcc = Mvcc::new();
    mvcc.restore(records);
    mvcc.restore_meta(current, compacted, leases, Instant::now());
    Ok((mvcc, cluster_id, member_id, wal_seq))
}

// ----- the writer ---------------------------------------------------------------

/// The writer thread's state: the log it appends to, and the checkpointer
/// it hands logged batches to.
struct Writer {
    log: Wal,
    /// The redb file, copied by snapshots.
    file: PathBuf,
    shared: Arc<Shared>,
    checkpoints: std_mpsc::Sender<Checkpoint>,
    start_over_at: u64,
}

impl Writer {
    fn run(mut self, rx: std_mpsc::Receiver<Request>, max_batch: usize) {
        let mut batch: Vec<Request> = Vec::with_capacity(max_batch);
        let mut replies: Vec<(oneshot::Sender<Result<Reply>>, Result<Reply>)> =
            Vec::with_capacity(max_batch);
        let shared = self.shared.clone();
        loop {
            // Sleep until a request arrives or the next lease runs out.
            let deadline = shared.mvcc.read().next_lease_deadline();
            let first = match deadline {
                None => rx
                    .recv()
                    .map_err(|_| std_mpsc::RecvTimeoutError::Disconnected),
                Some(d) => rx.recv_timeout(
                    d.saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1)),
                ),
            };
            match first {
                Ok(req) => batch.push(req),
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            }
            while batch.len() < max_batch {
                match rx.try_recv() {
                    Ok(req) => batch.push(req),
                    Err(_) => break,
                }
            }

            // Snapshots are taken after this batch is answered, before the
            // next one starts, once redb holds everything: the file then
            // holds exactly the committed state.
            let mut snapshots = Vec::new();
            batch.retain_mut(|req| match &req.op {
                Op::Snapshot(dest) => {
                    let (tx, _) = oneshot::channel();
                    snapshots.push((dest.clone(), std::mem::replace(&mut req.reply, tx)));
                    false
                }
                _ => true,
            });

            // Phase 1: apply in memory, in arrival order.
            let mut revisions: Vec<(Revision, Arc<[Event]>)> = Vec::new();
            let changes;
            let current;
            {
                let mut mvcc = shared.mvcc.write();
                let now = Instant::now();
                for id in mvcc.expired_leases(now) {
                    if let Ok(Some(closed)) = mvcc.lease_revoke(id) {
                        revisions.push(closed);
                    }
                }
                for req in batch.drain(..) {
                    let result = apply(&mut mvcc, req.op, now, &mut revisions);
                    replies.push((req.reply, result));
                }
                changes = mvcc.take_changes();
                current = mvcc.current_revision();
            }

            // Phase 2: one synced log record for the whole batch.
            if !changes.is_empty() {
                match self.log.append(&changes, current) {
                    Ok(seq) => {
                        let _ = self.checkpoints.send(Checkpoint::Logged(Logged {
                            seq,
                            current,
                            changes,
                        }));
                    }
                    Err(e) => {
                        self.fail(&format!("logging a batch: {e}"));
                        for (tx, _) in replies.drain(..) {
                            let _ = tx.send(Err(StoreError::Storage(e.to_string())));
                        }
                        continue;
                    }
                }
            }

            // Phase 3: publish, notify watchers, answer.
            shared.committed.store(current, Ordering::Release);
            if !revisions.is_empty() {
                let hub = shared.hub.lock().clone();
                if let Some(hub) = hub {
                    hub.notify(&revisions, current);
                }
            }
            for (tx, result) in replies.drain(..) {
                let _ = tx.send(result.map(|r| with_revision(r, current)));
            }

            // Then, between two batches: the log starts over, snapshots
            // are copied — both once redb holds everything logged.
            if self.log.logged_bytes() < self.start_over_at && snapshots.is_empty() {
                continue;
            }
            let flushed = self.flush();
            if flushed.is_ok() {
                self.log.start_over();
            }
            for (dest, tx) in snapshots {
                let copied = match &flushed {
                    Ok(()) => copy_synced(&self.file, &dest)
                        .map(|()| Reply::Header(Header { revision: current }))
                        .map_err(|e| {
                            StoreError::Storage(format!("snapshot to {}: {e}", dest.display()))
                        }),
                    Err(e) => Err(StoreError::Storage(e.to_string())),
                };
                let _ = tx.send(copied);
            }
        }
    }

    /// Waits until redb holds every batch logged so far.
    fn flush(&self) -> Result<()> {
        let (tx, rx) = std_mpsc::sync_channel(1);
        let result = self
            .checkpoints
            .send(Checkpoint::Flush(tx))
            .ok()
            .and_then(|()| rx.recv().ok())
            .unwrap_or_else(|| Err("the checkpointer is gone".into()));
        result.map_err(|e| {
            self.fail(&e);
            StoreError::Storage(e)
        })
    }

    fn fail(&self, error: &str) {
        tracing::error!(%error, "a durable write failed; the store stops accepting requests");
        self.shared.failed.store(true, Ordering::Release);
    }
}

/// What the writer hands the checkpointer.
enum Checkpoint {
    /// A batch the log holds.
    Logged(Logged),
    /// Commit everything handed over so far now, and say when redb holds it.
    Flush(std_mpsc::SyncSender<std::result::Result<(), String>>),
}

/// Applies logged batches to redb: everything handed over within `every`
/// of the oldest in one durable commit. Exits, after committing what it
/// holds, when the writer is gone.
fn checkpointer_loop(
    db: Database,
    shared: Arc<Shared>,
    rx: std_mpsc::Receiver<Checkpoint>,
    every: Duration,
) {
    let mut pending: Vec<Logged> = Vec::new();
    let mut due: Option<Instant> = None;
    let mut buf = Vec::with_capacity(512);
    loop {
        let next = match due {
            None => rx
                .recv()
                .map_err(|_| std_mpsc::RecvTimeoutError::Disconnected),
            Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
        };
        let (flush, last) = match next {
            Ok(Checkpoint::Logged(logged)) => {
                due.get_or_insert_with(|| Instant::now() + every);
                pending.push(logged);
                (None, false)
            }
            Ok(Checkpoint::Flush(tx)) => (Some(tx), false),
            Err(std_mpsc::RecvTimeoutError::Timeout) => (None, false),
            Err(std_mpsc::RecvTimeoutError::Disconnected) => (None, true),
        };
        let is_due = due.is_some_and(|d| Instant::now() >= d);
        if !(is_due || flush.is_some() || last) {
            continue;
        }
        due = None;
        let result = match pending.last() {
            None => Ok(()),
            Some(newest) => {
                let changes = pending.iter().flat_map(|l| l.changes.iter());
                persist(&db, changes, newest.current, newest.seq, &mut buf)
                    .map_err(|e| format!("checkpoint to redb: {e}"))
            }
        };
        match &result {
            Ok(()) => pending.clear(),
            Err(error) => {
                // The log still holds the batches; a restart applies them.
                tracing::error!(%error, "the store stops accepting requests");
                shared.failed.store(true, Ordering::Release);
            }
        }
        if let Some(tx) = flush {
            let _ = tx.send(result);
        }
        if last {
            break;
        }
    }
}

/// Copies the store file and makes the copy durable.
fn copy_synced(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::copy(from, to)?;
    std::fs::File::open(to)?.sync_all()
}

/// Lease and compaction replies report the revision after the batch.
fn with_revision(reply: Reply, current: Revision) -> Reply {
    match reply {
        Reply::Header(_) => Reply::Header(Header { revision: current }),
        Reply::LeaseGrant(mut g) => {
            g.header.revision = current;
            Reply::LeaseGrant(g)
        }
        Reply::LeaseTtl(mut t) => {
            t.header.revision = current;
            Reply::LeaseTtl(t)
        }
        other => other,
    }
}

fn apply(
    mvcc: &mut Mvcc,
    op: Op,
    now: Instant,
    revisions: &mut Vec<(Revision, Arc<[Event]>)>,
) -> Result<Reply> {
    let mut record = |closed: ClosedRevision| {
        if let Some(c) = closed {
            revisions.push(c);
        }
    };
    match op {
        Op::Put(req) => {
            let (resp, closed) = mvcc.put(&req)?;
            record(closed);
            Ok(Reply::Put(resp))
        }
        Op::Delete(req) => {
            let (resp, closed) = mvcc.delete_range(&req)?;
            record(closed);
            Ok(Reply::Delete(resp))
        }
        Op::Txn(req) => {
            let (resp, closed) = mvcc.txn(&req)?;
            record(closed);
            Ok(Reply::Txn(resp))
        }
        Op::Compact(rev) => {
            mvcc.compact(rev)?;
            Ok(Reply::Header(Header::default()))
        }
        Op::LeaseGrant { id, ttl } => {
            let id = if id == 0 {
                // Positive, random, unused: etcd's ids look the same.
                loop {
                    let candidate = (rand::random::<u64>() >> 1) as i64;
                    if candidate != 0 && !mvcc.lease_exists(candidate) {
                        break candidate;
                    }
                }
            } else {
                id
            };
            let ttl = mvcc.lease_grant(id, ttl, now)?;
            Ok(Reply::LeaseGrant(LeaseGrantResponse {
                header: Header::default(),
                id,
                ttl,
            }))
        }
        Op::LeaseRevoke(id) => {
            let closed = mvcc.lease_revoke(id)?;
            record(closed);
            Ok(Reply::Header(Header::default()))
        }
        Op::LeaseTimeToLive { id, keys } => Ok(Reply::LeaseTtl(match mvcc.lease(id) {
            Some(lease) => LeaseTimeToLiveResponse {
                header: Header::default(),
                id,
                ttl: lease.deadline.saturating_duration_since(now).as_secs() as i64,
                granted_ttl: lease.granted_ttl,
                keys: if keys {
                    lease.keys.iter().cloned().collect()
                } else {
                    Vec::new()
                },
            },
            None => LeaseTimeToLiveResponse {
                header: Header::default(),
                id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        })),
        Op::LeaseLeases => Ok(Reply::Leases(mvcc.lease_ids())),
        // Taken out of the batch before it is applied.
        Op::Snapshot(_) => Err(unexpected()),
    }
}

/// One durable redb commit of `changes`, which bring the store to revision
/// `current` and include the log's records up to `wal_seq`.
fn persist<'a>(
    db: &Database,
    changes: impl IntoIterator<Item = &'a Change>,
    current: Revision,
    wal_seq: u64,
    buf: &mut Vec<u8>,
) -> Result<(), redb::Error> {
    let wtx = db.begin_write()?;
    {
        let mut revs = wtx.open_table(REVS)?;
        let mut meta = wtx.open_table(META)?;
        let mut leases = wtx.open_table(LEASES)?;
        for change in changes {
            match change {
                Change::Record { rev, sub, kind, kv } => {
                    encode_record(*kind, kv, buf);
                    revs.insert((*rev as u64, *sub), &buf[..])?;
                }
                Change::Forget { rev, sub } => {
                    revs.remove((*rev as u64, *sub))?;
                }
                Change::Compacted(rev) => {
                    meta.insert("compact_rev", *rev as u64)?;
                }
                Change::LeaseGranted { id, ttl } => {
                    leases.insert(*id, *ttl)?;
                }
                Change::LeaseRevoked(id) => {
                    leases.remove(*id)?;
                }
            }
        }
        meta.insert("current_rev", current as u64)?;
        meta.insert("wal_seq", wal_seq)?;
    }
    wtx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EventType, KeyRange, KeyValue};
    use bytes::Bytes;

    fn put_req(k: &str, v: &str) -> PutRequest {
        PutRequest {
            key: Bytes::copy_from_slice(k.as_bytes()),
            value: Bytes::copy_from_slice(v.as_bytes()),
            ..Default::default()
        }
    }

    async fn get(store: &RedbStore, k: &str) -> Option<Arc<KeyValue>> {
        store
            .range(RangeRequest {
                range: KeyRange::single(Bytes::copy_from_slice(k.as_bytes())),
                ..Default::default()
            })
            .await
            .unwrap()
            .kvs
            .into_iter()
            .next()
    }

    #[tokio::test]
    async fn writes_survive_a_reopen_with_their_revisions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        {
            let store = RedbStore::open(&path, RedbOptions::default()).unwrap();
            store.put(put_req("a", "1")).await.unwrap();
            store.put(put_req("a", "2")).await.unwrap();
            store.put(put_req("b", "1")).await.unwrap();
            store
                .delete_range(DeleteRangeRequest {
                    range: KeyRange::single("b"),
                    prev_kv: false,
                })
                .await
                .unwrap();
            store.close();
        }
        let store = RedbStore::open(&path, RedbOptions::default()).unwrap();
        let a = get(&store, "a").await.unwrap();
        assert_eq!((&a.value[..], a.mod_revision, a.version), (&b"2"[..], 3, 2));
        assert!(get(&store, "b").await.is_none());
        assert_eq!(store.committed_revision(), 5);
        let resp = store.put(put_req("c", "1")).await.unwrap();
        assert_eq!(resp.header.revision, 6);
    }

    /// The disk as a crash leaves it: both files copied while the store
    /// still runs, nothing closed.
    fn crash_copy(from: &Path, to: &Path, with_log: bool) {
        std::fs::copy(from, to).unwrap();
        if with_log {
            std::fs::copy(wal::path_for(from), wal::path_for(to)).unwrap();
        }
    }

    #[tokio::test]
    async fn acknowledged_writes_redb_does_not_hold_yet_are_replayed_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let opts = RedbOptions {
            checkpoint_every: Duration::from_secs(3600),
            ..RedbOptions::default()
        };
        let store = RedbStore::open(&path, opts.clone()).unwrap();
        let lease = store.lease_grant(600, 0).await.unwrap().id;
        store.put(put_req("a", "1")).await.unwrap();
        store.put(put_req("a", "2")).await.unwrap();
        store
            .put(PutRequest {
                lease,
                ..put_req("leased", "x")
            })
            .await
            .unwrap();
        store.compact(2).await.unwrap();

        // Without its log, the store file has none of it: no checkpoint ran.
        let bare = dir.path().join("bare.redb");
        crash_copy(&path, &bare, false);
        {
            let copy = RedbStore::open(&bare, opts.clone()).unwrap();
            assert!(get(&copy, "a").await.is_none());
            assert_eq!(copy.committed_revision(), 1);
        }
        // With it, everything acknowledged is back, revisions, lease and
        // compaction included.
        let crashed = dir.path().join("crashed.redb");
        crash_copy(&path, &crashed, true);
        let copy = RedbStore::open(&crashed, opts.clone()).unwrap();
        let a = get(&copy, "a").await.unwrap();
        assert_eq!((&a.value[..], a.mod_revision, a.version), (&b"2"[..], 3, 2));
        assert_eq!(get(&copy, "leased").await.unwrap().lease, lease);
        assert_eq!(
            copy.lease_time_to_live(lease, true)
                .await
                .unwrap()
                .granted_ttl,
            600
        );
        assert_eq!(copy.shared.mvcc.read().compact_revision(), 2);
        assert_eq!(copy.committed_revision(), 4);
        // Writes go on from there, and a second crash keeps both rounds.
        assert_eq!(
            copy.put(put_req("b", "1")).await.unwrap().header.revision,
            5
        );
        let again = dir.path().join("again.redb");
        crash_copy(&crashed, &again, true);
        let copy = RedbStore::open(&again, opts).unwrap();
        assert!(get(&copy, "a").await.is_some() && get(&copy, "b").await.is_some());
        assert_eq!(copy.committed_revision(), 5);
    }

    #[tokio::test]
    async fn a_log_started_over_many_times_replays_only_what_redb_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        // Starts over after every few records; checkpoints only then.
        let opts = RedbOptions {
            checkpoint_every: Duration::from_secs(3600),
            log_start_over_at: 700,
            ..RedbOptions::default()
        };
        let store = RedbStore::open(&path, opts.clone()).unwrap();
        for i in 0..40 {
            // Values of varying length, so records end at varying places
            // over older ones.
            let value = "v".repeat((i * 37) % 300);
            store.put(put_req(&format!("k{i}"), &value)).await.unwrap();
        }
        let crashed = dir.path().join("crashed.redb");
        crash_copy(&path, &crashed, true);
        // The log started over: it reads back as its newest few records,
        // not 40.
        let (_, logged) = Wal::open(&wal::path_for(&crashed)).unwrap();
        assert!((1..=3).contains(&logged.len()), "{} records", logged.len());
        let copy = RedbStore::open(&crashed, opts).unwrap();
        assert_eq!(copy.committed_revision(), 41);
        for i in 0..40 {
            let kv = get(&copy, &format!("k{i}")).await.unwrap();
            assert_eq!(
                (kv.mod_revision, kv.value.len()),
                (i + 2, (i as usize * 37) % 300)
            );
        }
    }

    #[tokio::test]
    async fn concurrent_writers_each_get_a_distinct_revision() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("s.redb"), RedbOptions::default()).unwrap();
        let mut tasks = Vec::new();
        for i in 0..64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .put(put_req(&format!("k{i}"), "v"))
                    .await
                    .unwrap()
                    .header
                    .revision
            }));
        }
        let mut revs = Vec::new();
        for t in tasks {
            revs.push(t.await.unwrap());
        }
        revs.sort();
        revs.dedup();
        assert_eq!(revs.len(), 64);
        assert_eq!(*revs.last().unwrap(), 65);
    }

    #[tokio::test]
    async fn compaction_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let store = RedbStore::open(&path, RedbOptions::default()).unwrap();
            for v in ["1", "2", "3"] {
                store.put(put_req("a", v)).await.unwrap();
            }
            store.compact(3).await.unwrap();
            store.close();
        }
        let store = RedbStore::open(&path, RedbOptions::default()).unwrap();
        let old = store
            .range(RangeRequest {
                range: KeyRange::single("a"),
                revision: 2,
                ..Default::default()
            })
            .await;
        assert!(matches!(
            old,
            Err(StoreError::Compacted {
                compact_revision: 3
            })
        ));
        assert_eq!(&get(&store, "a").await.unwrap().value[..], b"3");
        assert_eq!(store.status().await.unwrap().compact_revision, 3);
    }

    #[tokio::test]
    async fn watch_resumes_from_a_past_revision_then_follows_new_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("s.redb"), RedbOptions::default()).unwrap();
        store.put(put_req("w/a", "1")).await.unwrap(); // 2
        store.put(put_req("other", "1")).await.unwrap(); // 3
        store.put(put_req("w/b", "1")).await.unwrap(); // 4
        let mut watch = store
            .watch(WatchRequest {
                range: KeyRange::prefix("w/"),
                start_revision: 2,
                prev_kv: true,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let batch = tokio::time::timeout(Duration::from_secs(5), watch.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            seen.extend(batch.events.iter().map(|e| e.kv.mod_revision));
        }
        assert_eq!(seen, vec![2, 4]);
        store.put(put_req("w/a", "2")).await.unwrap(); // 5
        let batch = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(batch.events.len(), 1);
        assert_eq!(batch.events[0].kv.mod_revision, 5);
        assert_eq!(&batch.events[0].prev_kv.as_ref().unwrap().value[..], b"1");
    }

    #[tokio::test]
    async fn a_watch_before_the_compacted_revision_fails() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("s.redb"), RedbOptions::default()).unwrap();
        for v in ["1", "2", "3"] {
            store.put(put_req("a", v)).await.unwrap();
        }
        store.compact(3).await.unwrap();
        let w = store
            .watch(WatchRequest {
                range: KeyRange::single("a"),
                start_revision: 2,
                ..Default::default()
            })
            .await;
        assert!(matches!(
            w,
            Err(StoreError::Compacted {
                compact_revision: 3
            })
        ));
    }

    #[tokio::test]
    async fn a_slow_watcher_gets_every_event_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let opts = RedbOptions {
            watch: WatchLimits {
                channel_capacity: 2,
                ..Default::default()
            },
            ..Default::default()
        };
        let store = RedbStore::open(&dir.path().join("s.redb"), opts).unwrap();
        let mut watch = store
            .watch(WatchRequest {
                range: KeyRange::prefix("k"),
                ..Default::default()
            })
            .await
            .unwrap();
        for i in 0..50 {
            store.put(put_req(&format!("k{i}"), "v")).await.unwrap();
        }
        let mut revs = Vec::new();
        while revs.len() < 50 {
            let batch = tokio::time::timeout(Duration::from_secs(5), watch.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            revs.extend(batch.events.iter().map(|e| e.kv.mod_revision));
        }
        assert_eq!(revs, (2..52).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn an_expired_lease_deletes_its_keys_and_notifies_watchers() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("s.redb"), RedbOptions::default()).unwrap();
        let lease = store.lease_grant(1, 0).await.unwrap();
        assert_eq!(lease.ttl, 2, "TTLs below the minimum are raised to it");
        let mut req = put_req("leased", "v");
        req.lease = lease.id;
        store.put(req).await.unwrap();
        let mut watch = store
            .watch(WatchRequest {
                range: KeyRange::single("leased"),
                ..Default::default()
            })
            .await
            .unwrap();
        let ttl = store.lease_time_to_live(lease.id, true).await.unwrap();
        assert_eq!(ttl.keys, vec![Bytes::from("leased")]);
        let batch = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("lease expiry within its TTL")
            .unwrap()
            .unwrap();
        assert_eq!(batch.events[0].kind, EventType::Delete);
        assert!(get(&store, "leased").await.is_none());
        assert_eq!(
            store.lease_time_to_live(lease.id, false).await.unwrap().ttl,
            -1
        );
        assert!(matches!(
            store.lease_keep_alive(lease.id).await,
            Err(StoreError::LeaseNotFound)
        ));
    }
}
