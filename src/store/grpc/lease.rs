//! The Lease service, including the bidirectional keep-alive stream.

use std::sync::Arc;

use etcd_client::proto::{
    PbLeaseGrantRequest, PbLeaseGrantResponse, PbLeaseKeepAliveRequest, PbLeaseKeepAliveResponse,
    PbLeaseLeasesRequest, PbLeaseLeasesResponse, PbLeaseRevokeRequest, PbLeaseRevokeResponse,
    PbLeaseService, PbLeaseStatus, PbLeaseTimeToLiveRequest, PbLeaseTimeToLiveResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::error::{LEASE_TTL_TOO_LARGE, STOPPED, to_status};
use super::{Ctx, stopped};
use crate::store::StoreError;

/// etcd's largest lease TTL in seconds.
const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// Keep-alive responses buffered per stream before the stream stops reading
/// requests (the client is not reading its responses).
const KEEPALIVE_BUFFER: usize = 16;

pub(crate) struct LeaseService {
    ctx: Arc<Ctx>,
}

impl LeaseService {
    pub(crate) fn new(ctx: Arc<Ctx>) -> Self {
        LeaseService { ctx }
    }
}

#[tonic::async_trait]
impl PbLeaseService for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<PbLeaseGrantRequest>,
    ) -> Result<Response<PbLeaseGrantResponse>, Status> {
        let req = request.into_inner();
        if req.ttl > MAX_LEASE_TTL {
            return Err(Status::out_of_range(LEASE_TTL_TOO_LARGE));
        }
        let resp = self
            .ctx
            .store
            .lease_grant(req.ttl, req.id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(PbLeaseGrantResponse {
            header: self.ctx.headers.at(resp.header.revision),
            id: resp.id,
            ttl: resp.ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<PbLeaseRevokeRequest>,
    ) -> Result<Response<PbLeaseRevokeResponse>, Status> {
        let id = request.into_inner().id;
        let header = self.ctx.store.lease_revoke(id).await.map_err(to_status)?;
        Ok(Response::new(PbLeaseRevokeResponse {
            header: self.ctx.headers.at(header.revision),
        }))
    }

    type LeaseKeepAliveStream = ReceiverStream<Result<PbLeaseKeepAliveResponse, Status>>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<PbLeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let (tx, rx) = mpsc::channel(KEEPALIVE_BUFFER);
        tokio::spawn(keep_alive_loop(self.ctx.clone(), request.into_inner(), tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<PbLeaseTimeToLiveRequest>,
    ) -> Result<Response<PbLeaseTimeToLiveResponse>, Status> {
        let req = request.into_inner();
        let resp = match self.ctx.store.lease_time_to_live(req.id, req.keys).await {
            Ok(r) => PbLeaseTimeToLiveResponse {
                header: self.ctx.headers.at(r.header.revision),
                id: r.id,
                ttl: r.ttl,
                granted_ttl: r.granted_ttl,
                keys: r.keys.into_iter().map(Vec::from).collect(),
            },
            // etcd answers an unknown lease with TTL -1 rather than an error.
            Err(StoreError::LeaseNotFound) => PbLeaseTimeToLiveResponse {
                header: self.ctx.headers.at(self.ctx.current_revision().await?),
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
            Err(e) => return Err(to_status(e)),
        };
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        _request: Request<PbLeaseLeasesRequest>,
    ) -> Result<Response<PbLeaseLeasesResponse>, Status> {
        let (header, ids) = self.ctx.store.lease_leases().await.map_err(to_status)?;
        Ok(Response::new(PbLeaseLeasesResponse {
            header: self.ctx.headers.at(header.revision),
            leases: ids.into_iter().map(|id| PbLeaseStatus { id }).collect(),
        }))
    }
}

/// Renews leases in request order until the client hangs up or shutdown.
/// An unknown lease is answered with TTL 0, as etcd does; clients take that
/// as "expired".
async fn keep_alive_loop(
    ctx: Arc<Ctx>,
    mut incoming: Streaming<PbLeaseKeepAliveRequest>,
    tx: mpsc::Sender<Result<PbLeaseKeepAliveResponse, Status>>,
) {
    let stop = stopped(ctx.stop.clone());
    tokio::pin!(stop);
    loop {
        let msg = tokio::select! {
            msg = incoming.message() => msg,
            () = tx.closed() => return,
            () = &mut stop => {
                let _ = tx.send(Err(Status::unavailable(STOPPED))).await;
                return;
            }
        };
        let Ok(Some(req)) = msg else { return };
        let resp = match ctx.store.lease_keep_alive(req.id).await {
            Ok(g) => Ok(PbLeaseKeepAliveResponse {
                header: ctx.headers.at(g.header.revision),
                id: req.id,
                ttl: g.ttl,
            }),
            Err(StoreError::LeaseNotFound) => {
                ctx.current_revision()
                    .await
                    .map(|rev| PbLeaseKeepAliveResponse {
                        header: ctx.headers.at(rev),
                        id: req.id,
                        ttl: 0,
                    })
            }
            Err(e) => Err(to_status(e)),
        };
        let failed = resp.is_err();
        if tx.send(resp).await.is_err() || failed {
            return;
        }
    }
}
