//! The KV service: range, put, delete, txn, compact.

use std::pin::Pin;
use std::sync::Arc;

use etcd_client::proto::{
    PbCompactionRequest, PbCompactionResponse, PbDeleteRequest, PbDeleteResponse, PbKvService,
    PbPutRequest, PbPutResponse, PbRangeRequest, PbRangeResponse, PbRangeStreamResponse,
    PbTxnRequest, PbTxnResponse,
};
use futures::Stream;
use prost::Message;
use tonic::{Request, Response, Status};

use super::Ctx;
use super::convert;
use super::error::{REQUEST_TOO_LARGE, invalid, to_status};

pub(crate) struct KvService {
    ctx: Arc<Ctx>,
}

impl KvService {
    pub(crate) fn new(ctx: Arc<Ctx>) -> Self {
        KvService { ctx }
    }

    /// etcd refuses writes whose encoded size exceeds `--max-request-bytes`
    /// even when gRPC accepted the message.
    fn check_size(&self, msg: &impl Message) -> Result<(), Status> {
        if msg.encoded_len() > self.ctx.limits.max_request_bytes {
            return Err(invalid(REQUEST_TOO_LARGE));
        }
        Ok(())
    }
}

type RangeStream = Pin<Box<dyn Stream<Item = Result<PbRangeStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl PbKvService for KvService {
    async fn range(
        &self,
        request: Request<PbRangeRequest>,
    ) -> Result<Response<PbRangeResponse>, Status> {
        let req = convert::range_from_pb(request.into_inner())?;
        let resp = self.ctx.store.range(req).await.map_err(to_status)?;
        let header = self.ctx.headers.at(resp.header.revision);
        Ok(Response::new(convert::range_to_pb(resp, header)))
    }

    type RangeStreamStream = RangeStream;

    async fn range_stream(
        &self,
        _request: Request<PbRangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        Err(Status::unimplemented("RangeStream is not supported"))
    }

    async fn put(&self, request: Request<PbPutRequest>) -> Result<Response<PbPutResponse>, Status> {
        let pb = request.into_inner();
        self.check_size(&pb)?;
        let req = convert::put_from_pb(pb)?;
        let resp = self.ctx.store.put(req).await.map_err(to_status)?;
        let header = self.ctx.headers.at(resp.header.revision);
        Ok(Response::new(convert::put_to_pb(resp, header)))
    }

    async fn delete_range(
        &self,
        request: Request<PbDeleteRequest>,
    ) -> Result<Response<PbDeleteResponse>, Status> {
        let pb = request.into_inner();
        self.check_size(&pb)?;
        let req = convert::delete_from_pb(pb)?;
        let resp = self.ctx.store.delete_range(req).await.map_err(to_status)?;
        let header = self.ctx.headers.at(resp.header.revision);
        Ok(Response::new(convert::delete_to_pb(resp, header)))
    }

    async fn txn(&self, request: Request<PbTxnRequest>) -> Result<Response<PbTxnResponse>, Status> {
        let pb = request.into_inner();
        self.check_size(&pb)?;
        let req = convert::txn_from_pb(pb, self.ctx.limits.max_txn_ops)?;
        let resp = self.ctx.store.txn(req).await.map_err(to_status)?;
        let header = self.ctx.headers.at(resp.header.revision);
        Ok(Response::new(convert::txn_to_pb(resp, header)))
    }

    async fn compact(
        &self,
        request: Request<PbCompactionRequest>,
    ) -> Result<Response<PbCompactionResponse>, Status> {
        let revision = request.into_inner().revision;
        let header = self.ctx.store.compact(revision).await.map_err(to_status)?;
        Ok(Response::new(PbCompactionResponse {
            header: self.ctx.headers.at(header.revision),
        }))
    }
}

/// Wraps the KV server so that a request over gRPC's size limit is refused
/// with `ResourceExhausted`, as grpc-go (and so etcd) does; tonic says
/// `OutOfRange`, which clients would read as a compaction error.
///
/// Only trailers-only responses (a failed unary call) are inspected, so the
/// cost on the hot path is one header lookup, and nothing is allocated.
#[derive(Clone)]
pub(crate) struct OversizeAsResourceExhausted<S>(pub S);

impl<S: tonic::server::NamedService> tonic::server::NamedService
    for OversizeAsResourceExhausted<S>
{
    const NAME: &'static str = S::NAME;
}

/// gRPC status codes as they appear in the `grpc-status` header.
const GRPC_OUT_OF_RANGE: &str = "11";
const GRPC_RESOURCE_EXHAUSTED: &str = "8";
/// How tonic's decoder starts its message for an oversized request, as it
/// appears percent-encoded in the `grpc-message` header.
const TONIC_TOO_LARGE: &str = "Error,%20decoded%20message%20length%20too%20large";

fn oversize_to_resource_exhausted<B>(
    mut resp: tonic::codegen::http::Response<B>,
) -> tonic::codegen::http::Response<B> {
    let headers = resp.headers_mut();
    if headers.get("grpc-status").map(|v| v.as_bytes()) == Some(GRPC_OUT_OF_RANGE.as_bytes())
        && headers
            .get("grpc-message")
            .is_some_and(|m| m.as_bytes().starts_with(TONIC_TOO_LARGE.as_bytes()))
    {
        headers.insert(
            "grpc-status",
            tonic::codegen::http::HeaderValue::from_static(GRPC_RESOURCE_EXHAUSTED),
        );
    }
    resp
}

type ResponseOf<S, Req> = <S as tonic::codegen::Service<Req>>::Response;

impl<S, ReqBody, ResBody> tonic::codegen::Service<tonic::codegen::http::Request<ReqBody>>
    for OversizeAsResourceExhausted<S>
where
    S: tonic::codegen::Service<
            tonic::codegen::http::Request<ReqBody>,
            Response = tonic::codegen::http::Response<ResBody>,
        >,
{
    type Response = ResponseOf<S, tonic::codegen::http::Request<ReqBody>>;
    type Error = S::Error;
    type Future = futures::future::MapOk<
        S::Future,
        fn(tonic::codegen::http::Response<ResBody>) -> tonic::codegen::http::Response<ResBody>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: tonic::codegen::http::Request<ReqBody>) -> Self::Future {
        use futures::TryFutureExt;
        self.0
            .call(req)
            .map_ok(oversize_to_resource_exhausted as fn(_) -> _)
    }
}
