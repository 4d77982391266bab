//! The in-memory multi-version index: every key's versions since the last
//! compaction, the per-revision event log that watches replay, and the lease
//! table. Pure logic without I/O, so it is unit-tested directly; the redb
//! backend makes each change durable before it becomes visible.
//!
//! # Visibility
//! The single writer applies a batch of requests here *before* the batch is
//! durable, assigning revisions above `committed`. Readers always read at a
//! revision `<= committed` (the backend publishes `committed` only after the
//! durable commit), so they never observe a write that could still be lost.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, Event,
    EventType, Header, KeyRange, KeyValue, LeaseId, PutRequest, PutResponse, RangeRequest,
    RangeResponse, Result, Revision, SortOrder, SortTarget, StoreError, TxnOp, TxnOpResponse,
    TxnRequest, TxnResponse,
};

/// One version of a key: `kv` is `None` for a tombstone (the key was deleted
/// at `rev`). `sub` orders the changes inside one revision; together with
/// `rev` it names the record on disk.
#[derive(Clone, Debug)]
pub struct Version {
    pub rev: Revision,
    pub sub: u32,
    pub kv: Option<Arc<KeyValue>>,
}

/// A change the writer must make durable, in the order made.
#[derive(Clone, Debug)]
pub enum Change {
    /// A new record `(rev, sub)`: a put (`kv.value` set) or a tombstone.
    Record {
        rev: Revision,
        sub: u32,
        kind: EventType,
        kv: Arc<KeyValue>,
    },
    /// Records removed by compaction.
    Forget {
        rev: Revision,
        sub: u32,
    },
    Compacted(Revision),
    LeaseGranted {
        id: LeaseId,
        ttl: i64,
    },
    LeaseRevoked(LeaseId),
}

/// A lease: its TTL, when it runs out, and the keys attached to it.
#[derive(Clone, Debug)]
pub struct Lease {
    pub granted_ttl: i64,
    pub deadline: Instant,
    pub keys: BTreeSet<Bytes>,
}

/// The multi-version state of the whole key space.
#[derive(Default)]
pub struct Mvcc {
    keys: BTreeMap<Bytes, Vec<Version>>,
    /// The last revision assigned (possibly not yet durable).
    current: Revision,
    compacted: Revision,
    /// Events of every retained revision, ascending, for watch replay.
    log: VecDeque<(Revision, Arc<[Event]>)>,
    leases: HashMap<LeaseId, Lease>,
    /// Revision being built by the operation in progress, if any write
    /// happened yet, with the next sub-index and its events.
    open: Option<OpenRevision>,
    /// Changes since the writer last drained them.
    changes: Vec<Change>,
}

struct OpenRevision {
    rev: Revision,
    next_sub: u32,
    events: Vec<Event>,
}

/// The events of a revision an operation closed, if it wrote anything.
pub type ClosedRevision = Option<(Revision, Arc<[Event]>)>;

/// Smallest lease TTL granted, as etcd's default minimum.
pub const MIN_LEASE_TTL: i64 = 2;

impl Mvcc {
    /// An empty store at revision 1 (etcd's initial revision).
    pub fn new() -> Self {
        Mvcc {
            current: 1,
            ..Default::default()
        }
    }

    pub fn current_revision(&self) -> Revision {
        self.current
    }

    pub fn compact_revision(&self) -> Revision {
        self.compacted
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Take the changes made since the last call, for the writer to persist.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    // ----- recovery -------------------------------------------------------

    /// Rebuild state from durable records, fed in `(rev, sub)` order.
    pub fn restore(
        &mut self,
        records: impl IntoIterator<Item = (Revision, u32, EventType, KeyValue)>,
    ) {
        let mut pending: Option<(Revision, Vec<Event>)> = None;
        for (rev, sub, kind, kv) in records {
            let history = self.keys.entry(kv.key.clone()).or_default();
            let prev_kv = history.last().and_then(|v| v.kv.clone());
            let kv = Arc::new(kv);
            history.push(Version {
                rev,
                sub,
                kv: (kind == EventType::Put).then(|| kv.clone()),
            });
            let event = Event { kind, kv, prev_kv };
            match &mut pending {
                Some((r, events)) if *r == rev => events.push(event),
                _ => {
                    if let Some((r, events)) = pending.take() {
                        self.log.push_back((r, events.into()));
                    }
                    pending = Some((rev, vec![event]));
                }
            }
            self.current = self.current.max(rev);
        }
        if let Some((r, events)) = pending {
            self.log.push_back((r, events.into()));
        }
    }

    /// Finish recovery: the stored revision counters and leases.
    pub fn restore_meta(
        &mut self,
        current: Revision,
        compacted: Revision,
        leases: impl IntoIterator<Item = (LeaseId, i64)>,
        now: Instant,
    ) {
        self.current = self.current.max(current).max(1);
        self.compacted = compacted;
        for (id, ttl) in leases {
            // Like etcd after a restart, every lease gets its full TTL again:
            // the time spent down must not expire keys whose owners could
            // not renew them.
            self.leases.insert(
                id,
                Lease {
                    granted_ttl: ttl,
                    deadline: now + Duration::from_secs(ttl.max(0) as u64),
                    keys: BTreeSet::new(),
                },
            );
        }
        for (key, history) in &self.keys {
            if let Some(kv) = history.last().and_then(|v| v.kv.as_ref())
                && kv.lease != 0
                && let Some(lease) = self.leases.get_mut(&kv.lease)
            {
                lease.keys.insert(key.clone());
            }
        }
    }

    // ----- reads ----------------------------------------------------------

    /// Resolve a requested revision (0 = `latest`) and check it is readable.
    pub fn read_revision(&self, requested: Revision, latest: Revision) -> Result<Revision> {
        if requested <= 0 {
            return Ok(latest);
        }
        if requested > latest {
            return Err(StoreError::FutureRevision);
        }
        if requested < self.compacted {
            return Err(StoreError::Compacted {
                compact_revision: self.compacted,
            });
        }
        Ok(requested)
    }

    /// Live key-values in `range` as of revision `rev`, in key order.
    fn visit(
        &self,
        range: &KeyRange,
        rev: Revision,
        descending: bool,
        mut f: impl FnMut(&Arc<KeyValue>) -> bool,
    ) {
        let start = Bound::Included(range.key.clone());
        let end = if range.range_end.is_empty() {
            Bound::Included(range.key.clone())
        } else {
            match range.end_bound() {
                None => Bound::Unbounded,
                Some(end) => {
                    if end <= &range.key[..] {
                        return;
                    }
                    Bound::Excluded(Bytes::copy_from_slice(end))
                }
            }
        };
        let visit_one =
            |history: &Vec<Version>, f: &mut dyn FnMut(&Arc<KeyValue>) -> bool| match version_at(
                history, rev,
            )
            .and_then(|v| v.kv.as_ref())
            {
                Some(kv) => f(kv),
                None => true,
            };
        let iter = self.keys.range::<Bytes, _>((start, end));
        if descending {
            for (_, history) in iter.rev() {
                if !visit_one(history, &mut f) {
                    return;
                }
            }
        } else {
            for (_, history) in iter {
                if !visit_one(history, &mut f) {
                    return;
                }
            }
        }
    }

    /// Serve a range at `latest` or an earlier revision.
    pub fn range(&self, req: &RangeRequest, latest: Revision) -> Result<RangeResponse> {
        if req.range.key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        let rev = self.read_revision(req.revision, latest)?;
        let filtered = req.min_mod_revision > 0
            || req.max_mod_revision > 0
            || req.min_create_revision > 0
            || req.max_create_revision > 0;
        let natural = matches!(
            (req.sort_order, req.sort_target),
            (SortOrder::None, _) | (SortOrder::Ascend, SortTarget::Key)
        );
        let descending_keys =
            req.sort_order == SortOrder::Descend && req.sort_target == SortTarget::Key;
        let limit = if req.limit > 0 {
            req.limit as usize
        } else {
            usize::MAX
        };
        let mut count: i64 = 0;
        let mut kvs: Vec<Arc<KeyValue>> = Vec::new();
        // Fast path: results come out of the index in the order asked, so
        // we stop collecting at the limit (but keep counting, as etcd does).
        let streaming = (natural || descending_keys) && !filtered;
        self.visit(&req.range, rev, descending_keys, |kv| {
            count += 1;
            if !req.count_only && (!streaming || kvs.len() < limit) {
                kvs.push(kv.clone());
            }
            true
        });
        if filtered {
            kvs.retain(|kv| {
                (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
                    && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
                    && (req.min_create_revision == 0
                        || kv.create_revision >= req.min_create_revision)
                    && (req.max_create_revision == 0
                        || kv.create_revision <= req.max_create_revision)
            });
        }
        if !natural && !descending_keys {
            let key_of = |kv: &Arc<KeyValue>| -> (i64, Bytes) {
                match req.sort_target {
                    SortTarget::Key => (0, kv.key.clone()),
                    SortTarget::Version => (kv.version, Bytes::new()),
                    SortTarget::Create => (kv.create_revision, Bytes::new()),
                    SortTarget::Mod => (kv.mod_revision, Bytes::new()),
                    SortTarget::Value => (0, kv.value.clone()),
                }
            };
            kvs.sort_by_key(|kv| key_of(kv));
            if req.sort_order == SortOrder::Descend {
                kvs.reverse();
            }
        }
        let more = if req.count_only {
            false
        } else if streaming {
            (count as usize) > kvs.len()
        } else {
            let more = kvs.len() > limit;
            kvs.truncate(limit);
            more
        };
        if req.keys_only {
            for kv in &mut kvs {
                let mut k = (**kv).clone();
                k.value = Bytes::new();
                *kv = Arc::new(k);
            }
        }
        Ok(RangeResponse {
            header: Header { revision: latest },
            kvs,
            more,
            count,
        })
    }

    /// The newest version of `key`, including not yet committed ones (what
    /// the writer sees).
    fn latest(&self, key: &[u8]) -> Option<&Arc<KeyValue>> {
        self.keys
            .get(key)
            .and_then(|h| h.last())
            .and_then(|v| v.kv.as_ref())
    }

    /// Events with revision >= `from`, up to and including `to`, grouped by
    /// revision. `Err(Compacted)` when `from` has been compacted away.
    pub fn events_between(
        &self,
        from: Revision,
        to: Revision,
        max_revisions: usize,
    ) -> Result<Vec<(Revision, Arc<[Event]>)>> {
        if from < self.compacted {
            return Err(StoreError::Compacted {
                compact_revision: self.compacted,
            });
        }
        let start = self.log.partition_point(|(r, _)| *r < from);
        Ok(self
            .log
            .range(start..)
            .take_while(|(r, _)| *r <= to)
            .take(max_revisions)
            .cloned()
            .collect())
    }

    // ----- writes (called only by the single writer) -----------------------

    fn open_revision(&mut self) -> (Revision, u32) {
        let current = self.current;
        let open = self.open.get_or_insert_with(|| OpenRevision {
            rev: current + 1,
            next_sub: 0,
            events: Vec::new(),
        });
        let sub = open.next_sub;
        open.next_sub += 1;
        (open.rev, sub)
    }

    /// Close the operation's revision, if it wrote anything; returns the
    /// events of that revision.
    fn close_revision(&mut self) -> ClosedRevision {
        let open = self.open.take()?;
        self.current = open.rev;
        let events: Arc<[Event]> = open.events.into();
        self.log.push_back((open.rev, events.clone()));
        Some((open.rev, events))
    }

    fn write_version(
        &mut self,
        kind: EventType,
        kv: Arc<KeyValue>,
        prev_kv: Option<Arc<KeyValue>>,
    ) {
        let (rev, sub) = self.open_revision();
        let history = self.keys.entry(kv.key.clone()).or_default();
        let version = Version {
            rev,
            sub,
            kv: (kind == EventType::Put).then(|| kv.clone()),
        };
        // A key written twice in one revision (possible only through nested
        // transactions) keeps its last write, as etcd does.
        match history.last_mut() {
            Some(last) if last.rev == rev => {
                self.changes.push(Change::Forget {
                    rev: last.rev,
                    sub: last.sub,
                });
                *last = version;
            }
            _ => history.push(version),
        }
        self.changes.push(Change::Record {
            rev,
            sub,
            kind,
            kv: kv.clone(),
        });
        if let Some(open) = self.open.as_mut() {
            open.events.push(Event { kind, kv, prev_kv });
        }
    }

    fn detach_lease(&mut self, key: &Bytes, lease: LeaseId) {
        if lease != 0
            && let Some(l) = self.leases.get_mut(&lease)
        {
            l.keys.remove(key);
        }
    }

    fn check_put(&self, req: &PutRequest) -> Result<()> {
        if req.key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        if (req.ignore_value || req.ignore_lease) && self.latest(&req.key).is_none() {
            return Err(StoreError::KeyNotFound);
        }
        if !req.ignore_lease && req.lease != 0 && !self.leases.contains_key(&req.lease) {
            return Err(StoreError::LeaseNotFound);
        }
        Ok(())
    }

    fn apply_put(&mut self, req: &PutRequest) -> PutResponse {
        let prev = self.latest(&req.key).cloned();
        let (create_revision, version) = match &prev {
            Some(p) => (p.create_revision, p.version + 1),
            None => (self.current + 1, 1),
        };
        let value = match (&prev, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => req.value.clone(),
        };
        let lease = match (&prev, req.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => req.lease,
        };
        let mod_revision = self.current + 1;
        let kv = Arc::new(KeyValue {
            key: req.key.clone(),
            value,
            create_revision,
            mod_revision,
            version,
            lease,
        });
        if let Some(p) = &prev
            && p.lease != lease
        {
            self.detach_lease(&req.key, p.lease);
        }
        if lease != 0
            && let Some(l) = self.leases.get_mut(&lease)
        {
            l.keys.insert(req.key.clone());
        }
        self.write_version(EventType::Put, kv, prev.clone());
        PutResponse {
            header: Header {
                revision: mod_revision,
            },
            prev_kv: if req.prev_kv { prev } else { None },
        }
    }

    fn apply_delete(&mut self, req: &DeleteRangeRequest) -> DeleteRangeResponse {
        let mut doomed = Vec::new();
        let latest = self.current.max(self.open.as_ref().map_or(0, |o| o.rev));
        self.visit(&req.range, latest, false, |kv| {
            doomed.push(kv.clone());
            true
        });
        let rev = self.current + 1;
        for prev in &doomed {
            self.detach_lease(&prev.key, prev.lease);
            let tombstone = Arc::new(KeyValue {
                key: prev.key.clone(),
                value: Bytes::new(),
                create_revision: 0,
                mod_revision: rev,
                version: 0,
                lease: 0,
            });
            self.write_version(EventType::Delete, tombstone, Some(prev.clone()));
        }
        DeleteRangeResponse {
            header: Header {
                revision: if doomed.is_empty() { self.current } else { rev },
            },
            deleted: doomed.len() as i64,
            prev_kvs: if req.prev_kv { doomed } else { Vec::new() },
        }
    }

    /// Apply one put as a whole operation (its own revision).
    pub fn put(&mut self, req: &PutRequest) -> Result<(PutResponse, ClosedRevision)> {
        self.check_put(req)?;
        let resp = self.apply_put(req);
        Ok((resp, self.close_revision()))
    }

    /// Apply one delete-range as a whole operation.
    pub fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<(DeleteRangeResponse, ClosedRevision)> {
        if req.range.key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        let resp = self.apply_delete(req);
        Ok((resp, self.close_revision()))
    }

    fn compare_holds(&self, cmp: &Compare) -> bool {
        let mut kvs = Vec::new();
        let latest = self.current;
        self.visit(&cmp.range, latest, false, |kv| {
            kvs.push(kv.clone());
            true
        });
        if kvs.is_empty() {
            // A missing key compares as all zeroes, except that a value
            // compare never holds: there is no value to compare.
            if matches!(cmp.target, CompareTarget::Value(_)) {
                return false;
            }
            return compare_kv(
                cmp,
                &KeyValue {
                    key: cmp.range.key.clone(),
                    value: Bytes::new(),
                    create_revision: 0,
                    mod_revision: 0,
                    version: 0,
                    lease: 0,
                },
            );
        }
        kvs.iter().all(|kv| compare_kv(cmp, kv))
    }

    /// Decide every branch of a (nested) transaction up front, against the
    /// state before any of its writes, and validate the ops on that path,
    /// so that a failing op leaves nothing half-applied.
    fn plan_txn(&self, req: &TxnRequest, path: &mut Vec<bool>) -> Result<()> {
        let ok = req.compare.iter().all(|c| self.compare_holds(c));
        path.push(ok);
        let ops = if ok { &req.success } else { &req.failure };
        for op in ops {
            match op {
                TxnOp::Range(r) => {
                    if r.range.key.is_empty() {
                        return Err(StoreError::EmptyKey);
                    }
                    self.read_revision(r.revision, self.current)?;
                }
                TxnOp::Put(p) => self.check_put(p)?,
                TxnOp::DeleteRange(d) => {
                    if d.range.key.is_empty() {
                        return Err(StoreError::EmptyKey);
                    }
                }
                TxnOp::Txn(t) => self.plan_txn(t, path)?,
            }
        }
        Ok(())
    }

    fn apply_txn_path(
        &mut self,
        req: &TxnRequest,
        path: &mut std::slice::Iter<'_, bool>,
    ) -> TxnResponse {
        let ok = path.next().copied().unwrap_or(false);
        let ops = if ok { &req.success } else { &req.failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let resp = match op {
                TxnOp::Range(r) => {
                    // Reads inside a transaction see its earlier writes.
                    let latest = self.open.as_ref().map_or(self.current, |o| o.rev);
                    let mut r = r.clone();
                    if r.revision == 0 {
                        r.revision = latest;
                    }
                    match self.range(&r, latest) {
                        Ok(resp) => TxnOpResponse::Range(resp),
                        // Validated in plan_txn; an error here cannot happen,
                        // but an empty answer is safer than a panic.
                        Err(_) => TxnOpResponse::Range(RangeResponse::default()),
                    }
                }
                TxnOp::Put(p) => TxnOpResponse::Put(self.apply_put(p)),
                TxnOp::DeleteRange(d) => TxnOpResponse::DeleteRange(self.apply_delete(d)),
                TxnOp::Txn(t) => TxnOpResponse::Txn(self.apply_txn_path(t, path)),
            };
            responses.push(resp);
        }
        TxnResponse {
            header: Header::default(),
            succeeded: ok,
            responses,
        }
    }

    /// Apply a transaction atomically: one revision for all of its writes.
    pub fn txn(&mut self, req: &TxnRequest) -> Result<(TxnResponse, ClosedRevision)> {
        let mut path = Vec::new();
        self.plan_txn(req, &mut path)?;
        let mut resp = self.apply_txn_path(req, &mut path.iter());
        let closed = self.close_revision();
        let rev = self.current;
        fix_headers(&mut resp, rev);
        Ok((resp, closed))
    }

    /// Drop every version older than `rev` that a newer one supersedes.
    pub fn compact(&mut self, rev: Revision) -> Result<()> {
        if rev <= self.compacted {
            return Err(StoreError::Compacted {
                compact_revision: self.compacted,
            });
        }
        if rev > self.current {
            return Err(StoreError::FutureRevision);
        }
        let mut empty = Vec::new();
        for (key, history) in self.keys.iter_mut() {
            // Index of the version visible at `rev`; everything before it
            // is superseded. A tombstone visible at `rev` goes too.
            let visible = history.partition_point(|v| v.rev <= rev);
            if visible == 0 {
                continue;
            }
            let mut drop_to = visible - 1;
            if history[drop_to].kv.is_none() {
                drop_to += 1;
            }
            for v in history.drain(..drop_to) {
                self.changes.push(Change::Forget {
                    rev: v.rev,
                    sub: v.sub,
                });
            }
            if history.is_empty() {
                empty.push(key.clone());
            }
        }
        for key in empty {
            self.keys.remove(&key);
        }
        while self.log.front().is_some_and(|(r, _)| *r < rev) {
            self.log.pop_front();
        }
        self.compacted = rev;
        self.changes.push(Change::Compacted(rev));
        Ok(())
    }

    // ----- leases -----------------------------------------------------------

    pub fn lease_grant(&mut self, id: LeaseId, ttl: i64, now: Instant) -> Result<i64> {
        if self.leases.contains_key(&id) {
            return Err(StoreError::LeaseExists);
        }
        let ttl = ttl.max(MIN_LEASE_TTL);
        self.leases.insert(
            id,
            Lease {
                granted_ttl: ttl,
                deadline: now + Duration::from_secs(ttl as u64),
                keys: BTreeSet::new(),
            },
        );
        self.changes.push(Change::LeaseGranted { id, ttl });
        Ok(ttl)
    }

    pub fn lease_exists(&self, id: LeaseId) -> bool {
        self.leases.contains_key(&id)
    }

    /// Revoke a lease, deleting its keys in one revision.
    pub fn lease_revoke(&mut self, id: LeaseId) -> Result<ClosedRevision> {
        let lease = self.leases.remove(&id).ok_or(StoreError::LeaseNotFound)?;
        self.changes.push(Change::LeaseRevoked(id));
        for key in lease.keys {
            let req = DeleteRangeRequest {
                range: KeyRange::single(key),
                prev_kv: false,
            };
            self.apply_delete(&req);
        }
        Ok(self.close_revision())
    }

    pub fn lease_keep_alive(&mut self, id: LeaseId, now: Instant) -> Result<i64> {
        let lease = self.leases.get_mut(&id).ok_or(StoreError::LeaseNotFound)?;
        lease.deadline = now + Duration::from_secs(lease.granted_ttl as u64);
        Ok(lease.granted_ttl)
    }

    pub fn lease(&self, id: LeaseId) -> Option<&Lease> {
        self.leases.get(&id)
    }

    pub fn lease_ids(&self) -> Vec<LeaseId> {
        let mut ids: Vec<_> = self.leases.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Leases past their deadline.
    pub fn expired_leases(&self, now: Instant) -> Vec<LeaseId> {
        self.leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The earliest lease deadline, so the writer knows when to wake up.
    pub fn next_lease_deadline(&self) -> Option<Instant> {
        self.leases.values().map(|l| l.deadline).min()
    }
}

/// The version of a key visible at `rev`.
fn version_at(history: &[Version], rev: Revision) -> Option<&Version> {
    let idx = history.partition_point(|v| v.rev <= rev);
    if idx == 0 { None } else { history.get(idx - 1) }
}

fn compare_kv(cmp: &Compare, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    let ord = match &cmp.target {
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::Create(v) => kv.create_revision.cmp(v),
        CompareTarget::Mod(v) => kv.mod_revision.cmp(v),
        CompareTarget::Lease(v) => kv.lease.cmp(v),
        CompareTarget::Value(v) => kv.value[..].cmp(&v[..]),
    };
    match cmp.result {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::NotEqual => ord != Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
    }
}

/// Every header of a transaction reports the revision after it.
fn fix_headers(resp: &mut TxnResponse, rev: Revision) {
    resp.header.revision = rev;
    for r in &mut resp.responses {
        match r {
            TxnOpResponse::Range(x) => x.header.revision = rev,
            TxnOpResponse::Put(x) => x.header.revision = rev,
            TxnOpResponse::DeleteRange(x) => x.header.revision = rev,
            TxnOpResponse::Txn(x) => fix_headers(x, rev),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(m: &mut Mvcc, k: &str, v: &str) -> Revision {
        let req = PutRequest {
            key: Bytes::copy_from_slice(k.as_bytes()),
            value: Bytes::copy_from_slice(v.as_bytes()),
            ..Default::default()
        };
        m.put(&req).unwrap();
        m.current_revision()
    }

    fn get(m: &Mvcc, k: &str, rev: Revision) -> Result<Option<String>> {
        let req = RangeRequest {
            range: KeyRange::single(Bytes::copy_from_slice(k.as_bytes())),
            revision: rev,
            ..Default::default()
        };
        let resp = m.range(&req, m.current_revision())?;
        Ok(resp
            .kvs
            .first()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
    }

    fn prefix(m: &Mvcc, p: &str) -> Vec<String> {
        let req = RangeRequest {
            range: KeyRange::prefix(Bytes::copy_from_slice(p.as_bytes())),
            ..Default::default()
        };
        m.range(&req, m.current_revision())
            .unwrap()
            .kvs
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect()
    }

    #[test]
    fn every_write_gets_the_next_revision_and_old_revisions_stay_readable() {
        let mut m = Mvcc::new();
        assert_eq!(put(&mut m, "a", "1"), 2);
        assert_eq!(put(&mut m, "a", "2"), 3);
        assert_eq!(get(&m, "a", 2).unwrap().as_deref(), Some("1"));
        assert_eq!(get(&m, "a", 0).unwrap().as_deref(), Some("2"));
        let kv = m.latest(b"a").unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
        assert!(matches!(get(&m, "a", 9), Err(StoreError::FutureRevision)));
    }

    #[test]
    fn delete_leaves_a_tombstone_and_recreation_restarts_the_version() {
        let mut m = Mvcc::new();
        put(&mut m, "a", "1");
        let (resp, _) = m
            .delete_range(&DeleteRangeRequest {
                range: KeyRange::single("a"),
                prev_kv: true,
            })
            .unwrap();
        assert_eq!(resp.deleted, 1);
        assert_eq!(resp.prev_kvs.len(), 1);
        assert_eq!(get(&m, "a", 0).unwrap(), None);
        assert_eq!(get(&m, "a", 2).unwrap().as_deref(), Some("1"));
        put(&mut m, "a", "again");
        let kv = m.latest(b"a").unwrap();
        assert_eq!((kv.create_revision, kv.version), (4, 1));
    }

    #[test]
    fn deleting_nothing_does_not_advance_the_revision() {
        let mut m = Mvcc::new();
        put(&mut m, "a", "1");
        let (resp, events) = m
            .delete_range(&DeleteRangeRequest {
                range: KeyRange::single("zzz"),
                prev_kv: false,
            })
            .unwrap();
        assert_eq!(resp.deleted, 0);
        assert!(events.is_none());
        assert_eq!(m.current_revision(), 2);
    }

    #[test]
    fn prefix_ranges_honour_limit_and_count() {
        let mut m = Mvcc::new();
        for k in ["a/1", "a/2", "a/3", "b/1"] {
            put(&mut m, k, "v");
        }
        assert_eq!(prefix(&m, "a/"), ["a/1", "a/2", "a/3"]);
        let req = RangeRequest {
            range: KeyRange::prefix("a/"),
            limit: 2,
            ..Default::default()
        };
        let resp = m.range(&req, m.current_revision()).unwrap();
        assert_eq!(resp.kvs.len(), 2);
        assert!(resp.more);
        assert_eq!(resp.count, 3);
        let req = RangeRequest {
            range: KeyRange::prefix("a/"),
            sort_order: SortOrder::Descend,
            sort_target: SortTarget::Key,
            limit: 1,
            ..Default::default()
        };
        let resp = m.range(&req, m.current_revision()).unwrap();
        assert_eq!(&resp.kvs[0].key[..], b"a/3");
        let all = RangeRequest {
            range: KeyRange {
                key: Bytes::from_static(b"\0"),
                range_end: Bytes::from_static(b"\0"),
            },
            count_only: true,
            ..Default::default()
        };
        let resp = m.range(&all, m.current_revision()).unwrap();
        assert_eq!(resp.count, 4);
        assert!(resp.kvs.is_empty());
    }

    #[test]
    fn txn_applies_one_branch_atomically_in_one_revision() {
        let mut m = Mvcc::new();
        put(&mut m, "a", "1");
        let txn = TxnRequest {
            compare: vec![Compare {
                range: KeyRange::single("a"),
                result: CompareResult::Equal,
                target: CompareTarget::Value(Bytes::from_static(b"1")),
            }],
            success: vec![
                TxnOp::Put(PutRequest {
                    key: "b".into(),
                    value: "2".into(),
                    ..Default::default()
                }),
                TxnOp::Put(PutRequest {
                    key: "c".into(),
                    value: "3".into(),
                    ..Default::default()
                }),
                TxnOp::Range(RangeRequest {
                    range: KeyRange::single("b"),
                    ..Default::default()
                }),
            ],
            failure: vec![],
        };
        let (resp, events) = m.txn(&txn).unwrap();
        assert!(resp.succeeded);
        assert_eq!(resp.header.revision, 3);
        assert_eq!(events.unwrap().1.len(), 2);
        match &resp.responses[2] {
            TxnOpResponse::Range(r) => assert_eq!(&r.kvs[0].value[..], b"2"),
            other => panic!("unexpected {other:?}"),
        }
        // Same compare now fails against a changed value; the failure
        // branch runs instead.
        put(&mut m, "a", "changed");
        let (resp, events) = m.txn(&txn).unwrap();
        assert!(!resp.succeeded);
        assert!(events.is_none());
    }

    #[test]
    fn txn_with_a_missing_lease_changes_nothing() {
        let mut m = Mvcc::new();
        let txn = TxnRequest {
            compare: vec![],
            success: vec![
                TxnOp::Put(PutRequest {
                    key: "x".into(),
                    value: "1".into(),
                    ..Default::default()
                }),
                TxnOp::Put(PutRequest {
                    key: "y".into(),
                    value: "1".into(),
                    lease: 42,
                    ..Default::default()
                }),
            ],
            failure: vec![],
        };
        assert!(matches!(m.txn(&txn), Err(StoreError::LeaseNotFound)));
        assert_eq!(get(&m, "x", 0).unwrap(), None);
        assert_eq!(m.current_revision(), 1);
    }

    #[test]
    fn compare_on_a_missing_key_sees_zero_version() {
        let mut m = Mvcc::new();
        let create_if_absent = TxnRequest {
            compare: vec![Compare {
                range: KeyRange::single("k"),
                result: CompareResult::Equal,
                target: CompareTarget::Version(0),
            }],
            success: vec![TxnOp::Put(PutRequest {
                key: "k".into(),
                value: "v".into(),
                ..Default::default()
            })],
            failure: vec![],
        };
        assert!(m.txn(&create_if_absent).unwrap().0.succeeded);
        assert!(!m.txn(&create_if_absent).unwrap().0.succeeded);
    }

    #[test]
    fn compaction_forgets_superseded_versions_only() {
        let mut m = Mvcc::new();
        put(&mut m, "a", "1"); // 2
        put(&mut m, "a", "2"); // 3
        put(&mut m, "b", "1"); // 4
        m.delete_range(&DeleteRangeRequest {
            range: KeyRange::single("b"),
            prev_kv: false,
        })
        .unwrap(); // 5
        put(&mut m, "a", "3"); // 6
        m.take_changes();
        m.compact(5).unwrap();
        assert!(matches!(get(&m, "a", 4), Err(StoreError::Compacted { .. })));
        assert_eq!(get(&m, "a", 5).unwrap().as_deref(), Some("2"));
        assert_eq!(get(&m, "a", 0).unwrap().as_deref(), Some("3"));
        assert_eq!(get(&m, "b", 5).unwrap(), None);
        assert!(!m.keys.contains_key(&b"b"[..]));
        let forgotten = m
            .take_changes()
            .iter()
            .filter(|c| matches!(c, Change::Forget { .. }))
            .count();
        // a@2, b@4 and b's tombstone @5.
        assert_eq!(forgotten, 3);
        assert!(matches!(m.compact(5), Err(StoreError::Compacted { .. })));
        assert!(matches!(m.compact(99), Err(StoreError::FutureRevision)));
        assert!(matches!(
            m.events_between(3, 9, 100),
            Err(StoreError::Compacted { .. })
        ));
        assert_eq!(m.events_between(5, 9, 100).unwrap().len(), 2);
    }

    #[test]
    fn revoking_a_lease_deletes_its_keys_in_one_revision() {
        let mut m = Mvcc::new();
        let now = Instant::now();
        m.lease_grant(7, 5, now).unwrap();
        for k in ["l1", "l2"] {
            m.put(&PutRequest {
                key: Bytes::copy_from_slice(k.as_bytes()),
                value: "v".into(),
                lease: 7,
                ..Default::default()
            })
            .unwrap();
        }
        put(&mut m, "free", "v");
        assert_eq!(m.expired_leases(now + Duration::from_secs(6)), vec![7]);
        let before = m.current_revision();
        let (rev, events) = m.lease_revoke(7).unwrap().unwrap();
        assert_eq!(rev, before + 1);
        assert_eq!(events.len(), 2);
        assert_eq!(prefix(&m, "l"), Vec::<String>::new());
        assert_eq!(get(&m, "free", 0).unwrap().as_deref(), Some("v"));
        assert!(matches!(m.lease_revoke(7), Err(StoreError::LeaseNotFound)));
    }

    #[test]
    fn a_key_moved_to_another_lease_is_detached_from_the_first() {
        let mut m = Mvcc::new();
        let now = Instant::now();
        m.lease_grant(1, 10, now).unwrap();
        m.lease_grant(2, 10, now).unwrap();
        for lease in [1, 2] {
            m.put(&PutRequest {
                key: "k".into(),
                value: "v".into(),
                lease,
                ..Default::default()
            })
            .unwrap();
        }
        m.lease_revoke(1).unwrap();
        assert_eq!(get(&m, "k", 0).unwrap().as_deref(), Some("v"));
    }

    #[test]
    fn events_between_groups_events_by_revision() {
        let mut m = Mvcc::new();
        put(&mut m, "a", "1");
        put(&mut m, "b", "1");
        put(&mut m, "a", "2");
        let ev = m.events_between(3, 4, 10).unwrap();
        assert_eq!(ev.iter().map(|(r, _)| *r).collect::<Vec<_>>(), vec![3, 4]);
        let second = &ev[1].1[0];
        assert_eq!(second.prev_kv.as_ref().unwrap().value, Bytes::from("1"));
    }
}
