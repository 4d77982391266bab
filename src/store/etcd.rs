//! The external etcd backend: the cluster state kept in a real etcd v3
//! cluster, for installations that outgrow one machine.
//!
//! The store contract ([`Backend`]) is etcd's own data model, so this
//! backend is a translation: each call becomes the matching etcd v3 RPC,
//! and each answer is turned back into the store's types. Revisions, key
//! versions, leases and compaction are etcd's; nothing is replicated or
//! cached here.
//!
//! Keys: wkube writes Kubernetes' layout under `/registry/`. With
//! `--etcd-prefix P` that first segment is replaced by `P` on the way out
//! and restored on the way back, so several clusters can share one etcd.
//!
//! Every unary call has a deadline: a lost etcd connection becomes
//! [`StoreError::Unavailable`] within [`EtcdConfig::request_timeout`], which
//! the API server answers with 503 and `/readyz` reports, instead of
//! requests that hang. The client reconnects by itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::proto::{PbKeyValue, PbTxnOpResponse};
use etcd_client::{
    Certificate, Client, Compare as EtcdCompare, CompareOp, ConnectOptions, DeleteOptions,
    GetOptions, Identity, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions, TlsOptions, Txn,
    TxnOp as EtcdTxnOp, WatchFilterType, WatchOptions,
};
use tokio::sync::mpsc;

use super::watch::{WatchEvents, WatchStream};
use super::{
    Backend, Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, Event,
    EventType, Header, KeyValue, LeaseGrantResponse, LeaseId, LeaseTimeToLiveResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, Result, Revision, SortOrder, SortTarget, StoreError,
    StoreStatus, TxnOp, TxnOpResponse, TxnRequest, TxnResponse, WatchRequest,
};

/// The key segment wkube's own layout starts with.
const REGISTRY: &[u8] = b"/registry";

/// Deliveries a watch may have queued before its reader takes them; the
/// etcd stream is not read further meanwhile (gRPC flow control pushes back
/// on etcd, not on this process's memory).
const WATCH_BUFFER: usize = 128;

/// How to reach the etcd cluster (kube-apiserver's `--etcd-*` flags).
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// Client URLs of the members, `https://HOST:PORT` or `http://…`.
    pub servers: Vec<String>,
    /// CA that signed the members' serving certificates.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key presented to the members.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// What replaces `/registry` at the start of every key.
    pub prefix: String,
    /// Deadline of each unary call.
    pub request_timeout: Duration,
}

impl EtcdConfig {
    pub fn new(servers: Vec<String>) -> Self {
        EtcdConfig {
            servers,
            ca_file: None,
            cert_file: None,
            key_file: None,
            prefix: String::from_utf8_lossy(REGISTRY).into_owned(),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// Why the etcd backend could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EtcdSetupError {
    #[error("--etcd-servers is empty")]
    NoServers,
    #[error("--etcd-prefix {0:?} must start with '/' and must not end with '/'")]
    BadPrefix(String),
    #[error("--etcd-certfile and --etcd-keyfile must be given together")]
    HalfIdentity,
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the etcd client: {0}")]
    Client(String),
}

/// A [`Backend`] over an external etcd v3 cluster.
pub struct EtcdStore {
    client: Client,
    keys: KeyMap,
    timeout: Duration,
}

impl EtcdStore {
    /// Sets up the client. Connections are made lazily, so this succeeds
    /// while etcd is still starting; the first calls then fail with
    /// [`StoreError::Unavailable`] until it answers.
    ///
    /// # Errors
    /// A bad prefix, unreadable certificate files, or an invalid URL.
    pub async fn connect(cfg: &EtcdConfig) -> Result<Arc<EtcdStore>, EtcdSetupError> {
        if cfg.servers.is_empty() {
            return Err(EtcdSetupError::NoServers);
        }
        let keys = KeyMap::new(&cfg.prefix)?;
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| EtcdSetupError::Read {
                path: path.clone(),
                source,
            })
        };
        let mut options = ConnectOptions::new()
            .with_connect_timeout(cfg.request_timeout)
            // Notices a dead connection while idle, so watches fail over
            // (and `/readyz` turns false) without waiting for the kernel.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        let tls_wanted = cfg.servers.iter().any(|s| s.starts_with("https://"));
        if tls_wanted || cfg.ca_file.is_some() || cfg.cert_file.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &cfg.ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            match (&cfg.cert_file, &cfg.key_file) {
                (Some(cert), Some(key)) => {
                    tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
                }
                (None, None) => {}
                _ => return Err(EtcdSetupError::HalfIdentity),
            }
            options = options.with_tls(tls);
        }
        let client = Client::connect(&cfg.servers, Some(options))
            .await
            .map_err(|e| EtcdSetupError::Client(e.to_string()))?;
        Ok(Arc::new(EtcdStore {
            client,
            keys,
            timeout: cfg.request_timeout,
        }))
    }

    /// Runs one unary call under the deadline. A call that could not even
    /// connect (a member is down and the client tried it first) never
    /// reached etcd, so it is tried again, on whichever member answers,
    /// until the deadline. A read is also tried again after a transient
    /// refusal (an election under way); a write is not, since it may have
    /// been applied. Anything else is final.
    async fn call<T, Fut>(&self, reads_only: bool, mut make: impl FnMut() -> Fut) -> Result<T>
    where
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let attempts = async {
            let mut pause = Duration::from_millis(20);
            loop {
                match make().await {
                    Err(e) if never_sent(&e) || (reads_only && transient(&e)) => {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(500));
                    }
                    other => return other.map_err(from_etcd),
                }
            }
        };
        match tokio::time::timeout(self.timeout, attempts).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Unavailable(format!(
                "etcd did not answer within {:?}",
                self.timeout
            ))),
        }
    }

    fn get_options(&self, req: &RangeRequest) -> GetOptions {
        let mut o = GetOptions::new()
            .with_limit(req.limit)
            .with_revision(req.revision)
            .with_min_mod_revision(req.min_mod_revision)
            .with_max_mod_revision(req.max_mod_revision)
            .with_min_create_revision(req.min_create_revision)
            .with_max_create_revision(req.max_create_revision);
        if !req.range.range_end.is_empty() {
            o = o.with_range(self.keys.out_end(&req.range.range_end));
        }
        if req.sort_order != SortOrder::None || req.sort_target != SortTarget::Key {
            o = o.with_sort(sort_target(req.sort_target), sort_order(req.sort_order));
        }
        if req.keys_only {
            o = o.with_keys_only();
        }
        if req.count_only {
            o = o.with_count_only();
        }
        o
    }

    fn put_options(req: &PutRequest) -> PutOptions {
        let mut o = PutOptions::new().with_lease(req.lease);
        if req.prev_kv {
            o = o.with_prev_key();
        }
        if req.ignore_value {
            o = o.with_ignore_value();
        }
        if req.ignore_lease {
            o = o.with_ignore_lease();
        }
        o
    }

    fn delete_options(&self, req: &DeleteRangeRequest) -> DeleteOptions {
        let mut o = DeleteOptions::new();
        if !req.range.range_end.is_empty() {
            o = o.with_range(self.keys.out_end(&req.range.range_end));
        }
        if req.prev_kv {
            o = o.with_prev_key();
        }
        o
    }

    fn txn_request(&self, req: &TxnRequest) -> Txn {
        let compares: Vec<EtcdCompare> = req.compare.iter().map(|c| self.compare(c)).collect();
        let ops = |ops: &[TxnOp]| -> Vec<EtcdTxnOp> { ops.iter().map(|o| self.op(o)).collect() };
        Txn::new()
            .when(compares)
            .and_then(ops(&req.success))
            .or_else(ops(&req.failure))
    }

    fn compare(&self, c: &Compare) -> EtcdCompare {
        let key = self.keys.out(&c.range.key);
        let op = match c.result {
            CompareResult::Equal => CompareOp::Equal,
            CompareResult::Greater => CompareOp::Greater,
            CompareResult::Less => CompareOp::Less,
            CompareResult::NotEqual => CompareOp::NotEqual,
        };
        let cmp = match &c.target {
            CompareTarget::Version(v) => EtcdCompare::version(key, op, *v),
            CompareTarget::Create(r) => EtcdCompare::create_revision(key, op, *r),
            CompareTarget::Mod(r) => EtcdCompare::mod_revision(key, op, *r),
            CompareTarget::Value(v) => EtcdCompare::value(key, op, v.to_vec()),
            CompareTarget::Lease(l) => EtcdCompare::lease(key, op, *l),
        };
        if c.range.range_end.is_empty() {
            cmp
        } else {
            cmp.with_range(self.keys.out_end(&c.range.range_end))
        }
    }

    fn op(&self, op: &TxnOp) -> EtcdTxnOp {
        match op {
            TxnOp::Range(r) => {
                EtcdTxnOp::get(self.keys.out(&r.range.key), Some(self.get_options(r)))
            }
            TxnOp::Put(p) => EtcdTxnOp::put(
                self.keys.out(&p.key),
                p.value.to_vec(),
                Some(Self::put_options(p)),
            ),
            TxnOp::DeleteRange(d) => {
                EtcdTxnOp::delete(self.keys.out(&d.range.key), Some(self.delete_options(d)))
            }
            TxnOp::Txn(t) => EtcdTxnOp::txn(self.txn_request(t)),
        }
    }

    fn kv(&self, kv: PbKeyValue) -> Arc<KeyValue> {
        Arc::new(KeyValue {
            key: self.keys.back(kv.key),
            value: Bytes::from(kv.value),
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        })
    }

    fn txn_response(&self, resp: etcd_client::proto::PbTxnResponse) -> TxnResponse {
        let revision = resp.header.map_or(0, |h| h.revision);
        let responses = resp
            .responses
            .into_iter()
            .filter_map(|r| r.response)
            .map(|r| self.op_response(r))
            .collect();
        TxnResponse {
            header: Header { revision },
            succeeded: resp.succeeded,
            responses,
        }
    }

    fn op_response(&self, r: PbTxnOpResponse) -> TxnOpResponse {
        match r {
            PbTxnOpResponse::ResponseRange(r) => TxnOpResponse::Range(RangeResponse {
                header: header(r.header),
                kvs: r.kvs.into_iter().map(|kv| self.kv(kv)).collect(),
                more: r.more,
                count: r.count,
            }),
            PbTxnOpResponse::ResponsePut(r) => TxnOpResponse::Put(PutResponse {
                header: header(r.header),
                prev_kv: r.prev_kv.map(|kv| self.kv(kv)),
            }),
            PbTxnOpResponse::ResponseDeleteRange(r) => {
                TxnOpResponse::DeleteRange(DeleteRangeResponse {
                    header: header(r.header),
                    deleted: r.deleted,
                    prev_kvs: r.prev_kvs.into_iter().map(|kv| self.kv(kv)).collect(),
                })
            }
            PbTxnOpResponse::ResponseTxn(t) => TxnOpResponse::Txn(self.txn_response(t)),
        }
    }
}

fn header(h: Option<etcd_client::proto::PbResponseHeader>) -> Header {
    Header {
        revision: h.map_or(0, |h| h.revision),
    }
}

fn sort_target(t: SortTarget) -> etcd_client::SortTarget {
    match t {
        SortTarget::Key => etcd_client::SortTarget::Key,
        SortTarget::Version => etcd_client::SortTarget::Version,
        SortTarget::Create => etcd_client::SortTarget::Create,
        SortTarget::Mod => etcd_client::SortTarget::Mod,
        SortTarget::Value => etcd_client::SortTarget::Value,
    }
}

fn sort_order(o: SortOrder) -> etcd_client::SortOrder {
    match o {
        SortOrder::None => etcd_client::SortOrder::None,
        SortOrder::Ascend => etcd_client::SortOrder::Ascend,
        SortOrder::Descend => etcd_client::SortOrder::Descend,
    }
}

/// True for a failure to connect: the request never left this process, so
/// trying it again cannot apply it twice.
fn never_sent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::Unavailable && status.message().contains("connect")
        }
        _ => false,
    }
}

/// True for etcd's "try again" refusals: no leader, or the leader changed
/// while the request waited.
fn transient(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(status) => status.code() == tonic::Code::Unavailable,
        _ => false,
    }
}

/// Turns an etcd client failure into the store's error. etcd's own
/// refusals arrive as gRPC statuses whose messages are etcd's; a transport
/// failure or an unavailable member means the store cannot be reached.
fn from_etcd(e: etcd_client::Error) -> StoreError {
    use tonic::Code;
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            let msg = status.message();
            let has = |s: &str| msg.contains(s);
            if has("required revision has been compacted") {
                // etcd's status does not carry the compacted revision; the
                // API server answers 410 either way.
                StoreError::Compacted {
                    compact_revision: 0,
                }
            } else if has("required revision is a future revision") {
                StoreError::FutureRevision
            } else if has("requested lease not found") {
                StoreError::LeaseNotFound
            } else if has("lease already exists") {
                StoreError::LeaseExists
            } else if has("too many operations in txn request") {
                StoreError::TooManyTxnOps
            } else if has("duplicate key given in txn request") {
                StoreError::DuplicateKey
            } else if has("request is too large") {
                StoreError::RequestTooLarge
            } else if has("key is not provided") {
                StoreError::EmptyKey
            } else if matches!(
                status.code(),
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
            ) {
                StoreError::Unavailable(msg.to_string())
            } else {
                StoreError::Storage(format!("etcd: {msg}"))
            }
        }
        etcd_client::Error::TransportError(e) => StoreError::Unavailable(e.to_string()),
        etcd_client::Error::IoError(e) => StoreError::Unavailable(e.to_string()),
        other => StoreError::Storage(format!("etcd client: {other}")),
    }
}

#[async_trait]
impl Backend for EtcdStore {
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        if req.range.key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        let (key, options) = (self.keys.out(&req.range.key), self.get_options(&req));
        let resp = self
            .call(true, || {
                let (mut kv, key, options) =
                    (self.client.kv_client(), key.clone(), options.clone());
                async move { kv.get(key, Some(options)).await }
            })
            .await?
            .0;
        Ok(RangeResponse {
            header: header(resp.header),
            kvs: resp.kvs.into_iter().map(|kv| self.kv(kv)).collect(),
            more: resp.more,
            count: resp.count,
        })
    }

    async fn put(&self, req: PutRequest) -> Result<PutResponse> {
        if req.key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        let (key, options) = (self.keys.out(&req.key), Self::put_options(&req));
        let resp = self
            .call(false, || {
                let (mut kv, key, options) =
                    (self.client.kv_client(), key.clone(), options.clone());
                let value = req.value.to_vec();
                async move { kv.put(key, value, Some(options)).await }
            })
            .await?
            .0;
        Ok(PutResponse {
            header: header(resp.header),
            prev_kv: resp.prev_kv.map(|kv| self.kv(kv)),
        })
    }

    async fn delete_range(&self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        if req.range.key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        let (key, options) = (self.keys.out(&req.range.key), self.delete_options(&req));
        let resp = self
            .call(false, || {
                let (mut kv, key, options) =
                    (self.client.kv_client(), key.clone(), options.clone());
                async move { kv.delete(key, Some(options)).await }
            })
            .await?
            .0;
        Ok(DeleteRangeResponse {
            header: header(resp.header),
            deleted: resp.deleted,
            prev_kvs: resp.prev_kvs.into_iter().map(|kv| self.kv(kv)).collect(),
        })
    }

    async fn txn(&self, req: TxnRequest) -> Result<TxnResponse> {
        let txn = self.txn_request(&req);
        let resp = self
            .call(false, || {
                let (mut kv, txn) = (self.client.kv_client(), txn.clone());
                async move { kv.txn(txn).await }
            })
            .await?
            .0;
        Ok(self.txn_response(resp))
    }

    async fn compact(&self, revision: Revision) -> Result<Header> {
        let resp = self
            .call(false, || {
                let mut kv = self.client.kv_client();
                async move { kv.compact(revision, None).await }
            })
            .await?
            .0;
        Ok(header(resp.header))
    }

    async fn watch(&self, req: WatchRequest) -> Result<WatchStream> {
        let mut options = WatchOptions::new()
            .with_start_revision(req.start_revision)
            .with_fragment();
        if !req.range.range_end.is_empty() {
            options = options.with_range(self.keys.out_end(&req.range.range_end));
        }
        if req.prev_kv {
            options = options.with_prev_key();
        }
        if req.progress_notify {
            options = options.with_progress_notify();
        }
        let mut filters = Vec::new();
        if req.filter_puts {
            filters.push(WatchFilterType::NoPut);
        }
        if req.filter_deletes {
            filters.push(WatchFilterType::NoDelete);
        }
        if !filters.is_empty() {
            options = options.with_filters(filters);
        }
        let key = self.keys.out(&req.range.key);
        let mut stream = self
            .call(true, || {
                let (mut client, key, options) =
                    (self.client.watch_client(), key.clone(), options.clone());
                async move { client.watch(key, Some(options)).await }
            })
            .await?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let keys = self.keys.clone();
        tokio::spawn(async move {
            // Dropping `stream` (when the reader goes) cancels the etcd
            // watch; a fragmented delivery is put back together first.
            let mut pending: Vec<Event> = Vec::new();
            loop {
                let msg = tokio::select! {
                    m = stream.message() => m,
                    () = tx.closed() => return,
                };
                let resp = match msg {
                    Ok(Some(resp)) => resp.0,
                    Ok(None) => {
                        let _ = tx
                            .send(Err(StoreError::Unavailable("etcd ended the watch".into())))
                            .await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(from_etcd(e))).await;
                        return;
                    }
                };
                if resp.canceled {
                    let err = if resp.compact_revision > 0 {
                        StoreError::Compacted {
                            compact_revision: resp.compact_revision,
                        }
                    } else {
                        StoreError::Unavailable(format!(
                            "etcd cancelled the watch: {}",
                            resp.cancel_reason
                        ))
                    };
                    let _ = tx.send(Err(err)).await;
                    return;
                }
                if resp.created && resp.events.is_empty() {
                    continue;
                }
                pending.extend(resp.events.into_iter().map(|e| watch_event(&keys, e)));
                if resp.fragment {
                    continue;
                }
                let delivery = WatchEvents {
                    header: header(resp.header),
                    events: std::mem::take(&mut pending),
                };
                if tx.send(Ok(delivery)).await.is_err() {
                    return;
                }
            }
        });
        Ok(WatchStream::from_channel(rx))
    }

    async fn lease_grant(&self, ttl: i64, id: LeaseId) -> Result<LeaseGrantResponse> {
        let options = (id != 0).then(|| LeaseGrantOptions::new().with_id(id));
        let resp = self
            .call(false, || {
                let (mut lease, options) = (self.client.lease_client(), options.clone());
                async move { lease.grant(ttl, options).await }
            })
            .await?
            .0;
        if !resp.error.is_empty() {
            return Err(StoreError::Storage(format!("etcd: {}", resp.error)));
        }
        Ok(LeaseGrantResponse {
            header: header(resp.header),
            id: resp.id,
            ttl: resp.ttl,
        })
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<Header> {
        let resp = self
            .call(false, || {
                let mut lease = self.client.lease_client();
                async move { lease.revoke(id).await }
            })
            .await?
            .0;
        Ok(header(resp.header))
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<LeaseGrantResponse> {
        let renew = || {
            let mut lease = self.client.lease_client();
            async move {
                let (mut keeper, mut stream) = lease.keep_alive(id).await?;
                keeper.keep_alive().await?;
                stream.message().await
            }
        };
        match self.call(false, renew).await? {
            Some(resp) if resp.0.ttl > 0 => Ok(LeaseGrantResponse {
                header: header(resp.0.header),
                id: resp.0.id,
                ttl: resp.0.ttl,
            }),
            // etcd answers a renewal of an unknown lease with TTL 0.
            Some(_) => Err(StoreError::LeaseNotFound),
            None => Err(StoreError::Unavailable("etcd ended the keep-alive".into())),
        }
    }

    async fn lease_time_to_live(&self, id: LeaseId, keys: bool) -> Result<LeaseTimeToLiveResponse> {
        let options = keys.then(|| LeaseTimeToLiveOptions::new().with_keys());
        let resp = self
            .call(true, || {
                let (mut lease, options) = (self.client.lease_client(), options.clone());
                async move { lease.time_to_live(id, options).await }
            })
            .await?
            .0;
        Ok(LeaseTimeToLiveResponse {
            header: header(resp.header),
            id: resp.id,
            ttl: resp.ttl,
            granted_ttl: resp.granted_ttl,
            keys: resp.keys.into_iter().map(|k| self.keys.back(k)).collect(),
        })
    }

    async fn lease_leases(&self) -> Result<(Header, Vec<LeaseId>)> {
        let resp = self
            .call(true, || {
                let mut lease = self.client.lease_client();
                async move { lease.leases().await }
            })
            .await?
            .0;
        Ok((
            header(resp.header),
            resp.leases.into_iter().map(|l| l.id).collect(),
        ))
    }

    async fn status(&self) -> Result<StoreStatus> {
        let resp = self
            .call(true, || {
                let mut m = self.client.maintenance_client();
                async move { m.status().await }
            })
            .await?
            .0;
        let h = resp.header.unwrap_or_default();
        // etcd's status does not report the compacted revision; a range at
        // revision 1 fails with it when anything was compacted.
        Ok(StoreStatus {
            header: Header {
                revision: h.revision,
            },
            version: resp.version,
            db_size: resp.db_size,
            db_size_in_use: resp.db_size_in_use,
            compact_revision: 0,
            cluster_id: h.cluster_id,
            member_id: h.member_id,
            raft_index: resp.raft_index,
        })
    }
}

fn watch_event(keys: &KeyMap, e: etcd_client::proto::PbEvent) -> Event {
    let kv = |kv: PbKeyValue| {
        Arc::new(KeyValue {
            key: keys.back(kv.key),
            value: Bytes::from(kv.value),
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        })
    };
    Event {
        // mvccpb: PUT = 0, DELETE = 1.
        kind: if e.r#type == 1 {
            EventType::Delete
        } else {
            EventType::Put
        },
        kv: kv(e.kv.unwrap_or_default()),
        prev_kv: e.prev_kv.map(kv),
    }
}

/// Rewrites the `/registry` segment of keys to the configured prefix and
/// back. With the default prefix both directions are the identity.
#[derive(Clone, Debug)]
struct KeyMap {
    prefix: Bytes,
}

impl KeyMap {
    fn new(prefix: &str) -> Result<KeyMap, EtcdSetupError> {
        if !prefix.starts_with('/') || prefix.ends_with('/') {
            return Err(EtcdSetupError::BadPrefix(prefix.to_string()));
        }
        Ok(KeyMap {
            prefix: Bytes::copy_from_slice(prefix.as_bytes()),
        })
    }

    fn is_identity(&self) -> bool {
        self.prefix[..] == *REGISTRY
    }

    /// A key as etcd stores it.
    fn out(&self, key: &[u8]) -> Vec<u8> {
        match key.strip_prefix(REGISTRY) {
            Some(rest) if !self.is_identity() => [&self.prefix[..], rest].concat(),
            _ => key.to_vec(),
        }
    }

    /// A range end as etcd reads it: `[0]` (no upper bound) stays as it is.
    fn out_end(&self, end: &[u8]) -> Vec<u8> {
        if end == [0] {
            end.to_vec()
        } else {
            self.out(end)
        }
    }

    /// A key as wkube knows it.
    fn back(&self, key: Vec<u8>) -> Bytes {
        if self.is_identity() {
            return Bytes::from(key);
        }
        match key.strip_prefix(&self.prefix[..]) {
            Some(rest) => Bytes::from([REGISTRY, rest].concat()),
            None => Bytes::from(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::KeyRange;

    fn mapped(range: &KeyRange, keys: &KeyMap) -> (Vec<u8>, Vec<u8>) {
        (keys.out(&range.key), keys.out_end(&range.range_end))
    }

    #[test]
    fn the_default_prefix_leaves_keys_alone() {
        let keys = KeyMap::new("/registry").unwrap();
        assert_eq!(keys.out(b"/registry/pods/a/b"), b"/registry/pods/a/b");
        assert_eq!(
            keys.back(b"/registry/pods/a/b".to_vec()),
            &b"/registry/pods/a/b"[..]
        );
    }

    #[test]
    fn a_custom_prefix_replaces_the_registry_segment_both_ways() {
        let keys = KeyMap::new("/clusters/blue").unwrap();
        let range = KeyRange::prefix("/registry/pods/");
        let (key, end) = mapped(&range, &keys);
        assert_eq!(key, b"/clusters/blue/pods/");
        // The prefix end of the mapped key is the mapped prefix end.
        assert_eq!(end, &super::super::prefix_end(b"/clusters/blue/pods/")[..]);
        assert_eq!(
            keys.back(b"/clusters/blue/pods/ns/p".to_vec()),
            &b"/registry/pods/ns/p"[..]
        );
        // Keys outside wkube's layout pass through.
        assert_eq!(keys.out(b"foo"), b"foo");
        assert_eq!(keys.back(b"foo".to_vec()), &b"foo"[..]);
        assert_eq!(keys.out_end(&[0]), vec![0]);
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for p in ["registry", "/registry/", ""] {
            assert!(KeyMap::new(p).is_err(), "{p:?}");
        }
    }

    #[test]
    fn etcd_refusals_become_the_stores_errors() {
        let status =
            |code, msg: &str| etcd_client::Error::GRpcStatus(tonic::Status::new(code, msg));
        assert!(matches!(
            from_etcd(status(
                tonic::Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted"
            )),
            StoreError::Compacted { .. }
        ));
        assert!(matches!(
            from_etcd(status(tonic::Code::Unavailable, "connection refused")),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            from_etcd(status(
                tonic::Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request"
            )),
            StoreError::DuplicateKey
        ));
    }
}
