//! etcd's v3 gRPC API served over any [`Backend`](crate::store::Backend), so
//! stock `etcdctl` and etcd client libraries work against wkube's store.
//!
//! - [`convert`] turns etcd's protobuf messages into store requests (with
//!   the validation etcd's gRPC layer does) and store responses back.
//! - [`error`] maps [`StoreError`](crate::store::StoreError) to the gRPC
//!   status codes and messages etcd uses.
//! - `kv`, `watch`, `lease`, `maintenance` implement the services; the
//!   cluster service (one member) lives with maintenance.
//!
//! Auth is not served: without it `etcdctl` runs unauthenticated, and the
//! endpoint is protected by mutual TLS instead.

mod convert;
mod error;
mod kv;
mod lease;
mod maintenance;
mod watch;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use etcd_client::proto::{
    PbClusterServer, PbKvServer, PbLeaseServer, PbMaintenanceServer, PbWatchServer,
};
use tonic::Status;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::pki::ServerTls;
use crate::store::{KeyRange, RangeRequest, Revision, Store, StoreError};
use convert::Headers;

/// Bytes gRPC may carry beyond `max_request_bytes` before it refuses a
/// message outright (etcd's allowance for the envelope).
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// How long shutdown waits for in-flight requests before giving up on them.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Limits of the endpoint; `Default` gives etcd's defaults.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest write request (put, delete, txn) accepted, encoded; etcd's
    /// `--max-request-bytes`. Bigger messages up to this plus 512 KiB get
    /// "request is too large"; beyond that gRPC refuses them.
    pub max_request_bytes: usize,
    /// Most operations in any one of a txn's compare/success/failure lists.
    pub max_txn_ops: usize,
    /// Most watches one watch stream may hold at once.
    pub max_watchers_per_stream: usize,
    /// HTTP/2 concurrent streams per connection.
    pub max_concurrent_streams: u32,
    /// How often an idle watch that asked for progress notifications gets one.
    pub progress_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 1536 * 1024,
            max_txn_ops: 128,
            max_watchers_per_stream: 1000,
            max_concurrent_streams: 1000,
            progress_interval: Duration::from_secs(600),
        }
    }
}

/// Identity of this single-member cluster, shown by `member list` /
/// `endpoint status`.
#[derive(Clone, Debug, Default)]
pub struct Member {
    pub name: String,
    pub client_urls: Vec<String>,
    pub peer_urls: Vec<String>,
}

/// Why the endpoint could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// The store could not tell its cluster and member ids at startup.
    #[error("reading the store status: {0}")]
    Status(#[source] StoreError),
    /// The TLS material was rejected.
    #[error("configuring TLS for the etcd endpoint: {0}")]
    Tls(#[source] tonic::transport::Error),
    /// The gRPC server failed while serving.
    #[error("etcd endpoint: {0}")]
    Transport(#[source] tonic::transport::Error),
}

/// What every service of one endpoint shares.
pub(crate) struct Ctx {
    pub store: Store,
    pub headers: Headers,
    pub limits: Limits,
    pub member: Member,
    /// Turns true when shutdown begins; long-lived streams end on it so the
    /// server can drain.
    pub stop: tokio::sync::watch::Receiver<bool>,
}

impl Ctx {
    /// The store's current revision, for responses that report one without
    /// coming from a store call (watch creation, unknown leases). A count of
    /// one key is the cheapest read that returns a header.
    pub(crate) async fn current_revision(&self) -> Result<Revision, Status> {
        let req = RangeRequest {
            range: KeyRange::single(Bytes::from_static(&[0])),
            count_only: true,
            ..Default::default()
        };
        match self.store.range(req).await {
            Ok(resp) => Ok(resp.header.revision),
            Err(e) => Err(error::to_status(e)),
        }
    }
}

/// Resolves once shutdown has begun (or the endpoint is gone).
pub(crate) async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serve until `shutdown` resolves; then stop accepting and drain.
///
/// Reads the cluster and member ids from [`Backend::status`] once, serves
/// KV, Watch, Lease, Maintenance and Cluster on `listener` (TLS requiring a
/// client certificate signed by `tls.client_ca_pem` when `tls` is given),
/// and on shutdown ends open watch and keep-alive streams with
/// `Unavailable`, then waits up to a few seconds for requests in flight.
///
/// # Errors
/// [`GrpcError::Status`] when the store cannot report its identity,
/// [`GrpcError::Tls`] for unusable TLS material, [`GrpcError::Transport`]
/// when the server fails.
///
/// [`Backend::status`]: crate::store::Backend::status
pub async fn serve(
    store: Store,
    listener: tokio::net::TcpListener,
    tls: Option<ServerTls>,
    limits: Limits,
    member: Member,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GrpcError> {
    let status = store.status().await.map_err(GrpcError::Status)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let max_decoding = limits.max_request_bytes.saturating_add(GRPC_OVERHEAD_BYTES);
    let ctx = Arc::new(Ctx {
        store,
        headers: Headers {
            cluster_id: status.cluster_id,
            member_id: status.member_id,
        },
        limits: limits.clone(),
        member,
        stop: stop_rx.clone(),
    });

    let mut builder = Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams)
        // Dead peers holding watch streams are noticed without waiting for
        // TCP to give up.
        .http2_keepalive_interval(Some(Duration::from_secs(60)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    if let Some(tls) = tls {
        let mut cfg =
            ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem));
        if let Some(ca) = &tls.client_ca_pem {
            cfg = cfg.client_ca_root(Certificate::from_pem(ca));
        }
        builder = builder.tls_config(cfg).map_err(GrpcError::Tls)?;
    }
    let router = builder
        .add_service(kv::OversizeAsResourceExhausted(
            PbKvServer::new(kv::KvService::new(ctx.clone()))
                .max_decoding_message_size(max_decoding),
        ))
        .add_service(
            PbWatchServer::new(watch::WatchService::new(ctx.clone()))
                .max_decoding_message_size(max_decoding),
        )
        .add_service(
            PbLeaseServer::new(lease::LeaseService::new(ctx.clone()))
                .max_decoding_message_size(max_decoding),
        )
        .add_service(
            PbMaintenanceServer::new(maintenance::MaintenanceService::new(ctx.clone()))
                .max_decoding_message_size(max_decoding),
        )
        .add_service(
            PbClusterServer::new(maintenance::ClusterService::new(ctx))
                .max_decoding_message_size(max_decoding),
        );

    // Without TCP_NODELAY small responses wait for delayed ACKs (~40 ms).
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let served = router.serve_with_incoming_shutdown(incoming, stopped(stop_rx));
    tokio::pin!(served);
    tokio::pin!(shutdown);
    tokio::select! {
        result = &mut served => return result.map_err(GrpcError::Transport),
        () = &mut shutdown => {}
    }
    // Tells tonic to stop accepting and streams to end.
    let _ = stop_tx.send(true);
    match tokio::time::timeout(DRAIN_GRACE, served).await {
        Ok(result) => result.map_err(GrpcError::Transport),
        Err(_) => {
            tracing::warn!(
                "etcd endpoint: requests still in flight after {DRAIN_GRACE:?}, dropping them"
            );
            Ok(())
        }
    }
}
