//! The cluster store: etcd's role in wkube.
//!
//! The data model is etcd v3's, so that a real etcd can stand behind the same
//! trait: a flat, ordered key space; every write transaction gets the next
//! cluster *revision*; each key keeps `create_revision`, `mod_revision` and a
//! per-key `version`; old revisions stay readable until they are compacted;
//! watches replay history from a start revision; leases expire keys.
//!
//! - [`Backend`] is the trait the API server and the etcd v3 endpoint use.
//! - [`mvcc`] holds the in-memory multi-version index (pure logic, no I/O).
//! - [`compactor`] forgets old revisions on a schedule.
//! - [`etcd`] keeps the state in an external etcd v3 cluster.
//! - [`snapshot`] is the backup file format (`etcdctl snapshot save`).
//! - [`redb`] is the default backend: the MVCC index made durable by a
//!   write-ahead log ([`wal`], with group commit) and kept in an embedded
//!   redb file.
//! - [`watch`] fans committed events out to watchers.
//! - [`follow`] keeps an in-memory copy of one key prefix current.
//! - [`watchcache`] serves watches over an external etcd from one etcd
//!   watch.
//! - [`grpc`] serves the etcd v3 gRPC API on top of any [`Backend`].

pub mod compactor;
pub mod etcd;
pub mod follow;
pub mod grpc;
pub mod mvcc;
pub mod redb;
pub mod snapshot;
pub mod wal;
pub mod watch;
pub mod watchcache;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

pub use watch::{WatchEvents, WatchStream};

/// Cluster revision, as etcd counts it: starts at 1 for an empty store and
/// grows by one for every transaction that changes something.
pub type Revision = i64;

/// Lease identifier; 0 means "no lease".
pub type LeaseId = i64;

/// One version of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Bytes,
    pub value: Bytes,
    pub create_revision: Revision,
    pub mod_revision: Revision,
    /// Number of writes since the key was (re)created; 0 for a tombstone.
    pub version: i64,
    pub lease: LeaseId,
}

/// What happened to a key at a revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Put,
    Delete,
}

/// One change, as watchers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventType,
    /// For a delete: the key with `mod_revision` = the delete's revision and
    /// an empty value, as etcd reports it.
    pub kv: Arc<KeyValue>,
    /// The version before this change, when there was one.
    pub prev_kv: Option<Arc<KeyValue>>,
}

/// Metadata every response carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// The store revision when the request was served.
    pub revision: Revision,
}

/// A key or a range of keys, with etcd's conventions: `range_end` empty means
/// the single key; `range_end == [0]` means every key >= `key`; otherwise the
/// half-open range `[key, range_end)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyRange {
    pub key: Bytes,
    pub range_end: Bytes,
}

impl KeyRange {
    pub fn single(key: impl Into<Bytes>) -> Self {
        KeyRange {
            key: key.into(),
            range_end: Bytes::new(),
        }
    }

    /// Every key that starts with `prefix` (etcdctl's `--prefix`).
    pub fn prefix(prefix: impl Into<Bytes>) -> Self {
        let key: Bytes = prefix.into();
        let range_end = prefix_end(&key);
        KeyRange { key, range_end }
    }

    /// True when `k` falls in this range.
    pub fn contains(&self, k: &[u8]) -> bool {
        if self.range_end.is_empty() {
            return k == &self.key[..];
        }
        if k < &self.key[..] {
            return false;
        }
        self.range_end[..] == [0] || k < &self.range_end[..]
    }

    /// The exclusive upper bound, `None` when unbounded.
    pub fn end_bound(&self) -> Option<&[u8]> {
        if self.range_end[..] == [0] {
            None
        } else {
            Some(&self.range_end)
        }
    }
}

/// The smallest key greater than every key that starts with `prefix`; `[0]`
/// (etcd's "no upper bound") when there is none.
pub fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    Bytes::from_static(&[0])
}

/// Order of range results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

/// Field range results are sorted on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    pub range: KeyRange,
    /// 0 means no limit.
    pub limit: i64,
    /// 0 means the current revision.
    pub revision: Revision,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    pub keys_only: bool,
    pub count_only: bool,
    /// Filters as etcd defines them; 0 disables each.
    pub min_mod_revision: Revision,
    pub max_mod_revision: Revision,
    pub min_create_revision: Revision,
    pub max_create_revision: Revision,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    pub header: Header,
    pub kvs: Vec<Arc<KeyValue>>,
    /// True when `limit` cut the result short.
    pub more: bool,
    /// Number of keys in the range (before `limit`).
    pub count: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutRequest {
    pub key: Bytes,
    pub value: Bytes,
    pub lease: LeaseId,
    pub prev_kv: bool,
    /// Keep the current value (etcd's `ignore_value`).
    pub ignore_value: bool,
    /// Keep the current lease (etcd's `ignore_lease`).
    pub ignore_lease: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutResponse {
    pub header: Header,
    pub prev_kv: Option<Arc<KeyValue>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeRequest {
    pub range: KeyRange,
    pub prev_kv: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteRangeResponse {
    pub header: Header,
    pub deleted: i64,
    pub prev_kvs: Vec<Arc<KeyValue>>,
}

/// How a compare relates the key's field to the given value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareResult {
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// The field a compare looks at, with the value to compare against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    Version(i64),
    Create(Revision),
    Mod(Revision),
    Value(Bytes),
    Lease(LeaseId),
}

/// One condition of a transaction. A range compare holds only when it holds
/// for every key in the range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub range: KeyRange,
    pub result: CompareResult,
    pub target: CompareTarget,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOpResponse {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnResponse {
    pub header: Header,
    pub succeeded: bool,
    pub responses: Vec<TxnOpResponse>,
}

/// A watch: the range to follow and where to start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchRequest {
    pub range: KeyRange,
    /// First revision to deliver; 0 means "changes after now".
    pub start_revision: Revision,
    pub prev_kv: bool,
    pub filter_puts: bool,
    pub filter_deletes: bool,
    /// Ask for periodic progress notifications (empty event batches carrying
    /// the current revision) while the watch is idle.
    pub progress_notify: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseGrantResponse {
    pub header: Header,
    pub id: LeaseId,
    pub ttl: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseTimeToLiveResponse {
    pub header: Header,
    pub id: LeaseId,
    /// Remaining seconds; -1 when the lease does not exist (etcd's answer).
    pub ttl: i64,
    pub granted_ttl: i64,
    pub keys: Vec<Bytes>,
}

/// What `etcdctl endpoint status` shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStatus {
    pub header: Header,
    pub version: String,
    /// Bytes the backend file occupies.
    pub db_size: i64,
    /// Bytes actually in use.
    pub db_size_in_use: i64,
    pub compact_revision: Revision,
    pub cluster_id: u64,
    pub member_id: u64,
    pub raft_index: u64,
}

/// Every way a store request can fail. The etcd endpoint maps each variant to
/// the gRPC code and message etcd uses; the API server maps them to a
/// Kubernetes `Status`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("mvcc: required revision has been compacted")]
    Compacted { compact_revision: Revision },
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too many operations in txn request")]
    TooManyTxnOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: too many watchers")]
    TooManyWatchers,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: storage failure: {0}")]
    Storage(String),
    /// This backend cannot do what was asked (say which way does).
    #[error("etcdserver: {0}")]
    Unsupported(String),
    /// The external etcd cluster cannot be reached (or has no leader).
    #[error("etcdserver: storage is unavailable: {0}")]
    Unavailable(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The store contract. Every method is atomic and linearizable; every write
/// is durable before it returns.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse>;
    async fn put(&self, req: PutRequest) -> Result<PutResponse>;
    async fn delete_range(&self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse>;
    async fn txn(&self, req: TxnRequest) -> Result<TxnResponse>;
    /// Forget every version older than `revision` that a newer version of
    /// the same key supersedes.
    async fn compact(&self, revision: Revision) -> Result<Header>;
    /// Start a watch. Events from `start_revision` on (or from now) arrive
    /// on the stream in revision order; a start before the compacted
    /// revision fails with [`StoreError::Compacted`].
    async fn watch(&self, req: WatchRequest) -> Result<WatchStream>;
    /// Grant a lease; `id` 0 lets the store choose one.
    async fn lease_grant(&self, ttl: i64, id: LeaseId) -> Result<LeaseGrantResponse>;
    /// Revoke a lease and delete every key attached to it.
    async fn lease_revoke(&self, id: LeaseId) -> Result<Header>;
    /// Renew a lease; returns its TTL.
    async fn lease_keep_alive(&self, id: LeaseId) -> Result<LeaseGrantResponse>;
    async fn lease_time_to_live(&self, id: LeaseId, keys: bool) -> Result<LeaseTimeToLiveResponse>;
    async fn lease_leases(&self) -> Result<(Header, Vec<LeaseId>)>;
    async fn status(&self) -> Result<StoreStatus>;
    /// Write a consistent copy of the whole store to `dest`, as of the
    /// returned revision (see [`snapshot`] for the file format).
    async fn snapshot(&self, dest: &std::path::Path) -> Result<Header> {
        let _ = dest;
        Err(StoreError::Unsupported(
            "this store takes no snapshots; snapshot the etcd cluster itself \
             (etcdctl snapshot save against one of its members)"
                .into(),
        ))
    }
}

/// A shared handle to whatever backend is configured.
pub type Store = Arc<dyn Backend>;
