//! A minimal etcd v3 KV client straight on tonic: one HTTP/2 channel and the
//! protobuf messages of the `etcd-client` crate, without that crate's
//! client layers (auth interceptor, load-balancing channel and its request
//! buffer).
//!
//! The store benchmark uses `etcd-client` by default, as applications do.
//! On a 2-core machine the load generator shares the CPU with the server
//! it measures, and `etcd-client`'s layers cost CPU per request; this client
//! (`--client raw`) shows how much of a figure is the client's.

use std::marker::PhantomData;
use std::time::Duration;

use anyhow::{Context, Result};
use etcd_client::proto::{PbPutRequest, PbPutResponse, PbRangeRequest, PbRangeResponse};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

/// One connection; clones share it (HTTP/2 multiplexes their requests).
#[derive(Clone)]
pub struct RawKv {
    grpc: tonic::client::Grpc<Channel>,
}

impl RawKv {
    /// Connects (plaintext) to `url`; `timeout` bounds every request.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Self> {
        let channel = Endpoint::from_shared(url.to_string())
            .with_context(|| format!("invalid endpoint {url}"))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout)
            .connect()
            .await
            .with_context(|| format!("connecting to {url}"))?;
        Ok(Self {
            grpc: tonic::client::Grpc::new(channel),
        })
    }

    pub async fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<PbPutResponse, Status> {
        let req = PbPutRequest {
            key,
            value,
            ..Default::default()
        };
        self.unary(req, "/etcdserverpb.KV/Put").await
    }

    /// A read of `key`, or of every key with that prefix.
    pub async fn range(&mut self, key: &[u8], prefix: bool) -> Result<PbRangeResponse, Status> {
        let req = PbRangeRequest {
            key: key.to_vec(),
            range_end: if prefix { prefix_end(key) } else { Vec::new() },
            ..Default::default()
        };
        self.unary(req, "/etcdserverpb.KV/Range").await
    }

    async fn unary<Req, Resp>(&mut self, req: Req, path: &'static str) -> Result<Resp, Status>
    where
        Req: prost::Message + Send + 'static,
        Resp: prost::Message + Default + Send + 'static,
    {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("connection not ready: {e}")))?;
        let codec = ProstCodec::<Req, Resp>(PhantomData);
        let resp = self
            .grpc
            .unary(
                tonic::Request::new(req),
                PathAndQuery::from_static(path),
                codec,
            )
            .await?;
        Ok(resp.into_inner())
    }
}

/// etcd's range end for a prefix: the prefix with its last byte below 0xff
/// incremented and what follows dropped; `\0` (everything) for a prefix of
/// only 0xff bytes.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Protobuf encoding of `E` requests and `D` responses (what `tonic-prost`
/// provides, written out since that crate is not a direct dependency).
struct ProstCodec<E, D>(PhantomData<fn(E) -> D>);

impl<E, D> Codec for ProstCodec<E, D>
where
    E: prost::Message + Send + 'static,
    D: prost::Message + Default + Send + 'static,
{
    type Encode = E;
    type Decode = D;
    type Encoder = ProstEncoder<E>;
    type Decoder = ProstDecoder<D>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder(PhantomData)
    }
}

struct ProstEncoder<E>(PhantomData<fn(E)>);

impl<E: prost::Message> Encoder for ProstEncoder<E> {
    type Item = E;
    type Error = Status;

    fn encode(&mut self, item: E, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding a request: {e}")))
    }
}

struct ProstDecoder<D>(PhantomData<fn() -> D>);

impl<D: prost::Message + Default> Decoder for ProstDecoder<D> {
    type Item = D;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        D::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("decoding a response: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/bench/"), b"/bench0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
