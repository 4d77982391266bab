//! Delivery of one request to a service's endpoint or a pod address.
//!
//! An endpoint is tried in-process when its pod runs on this node (no
//! socket, no serialization), through the owning node's agent otherwise,
//! and by a direct connection when it is an address outside the pod
//! network (the API server behind `kubernetes`). Endpoints are taken round
//! robin (or by client address for `sessionAffinity: ClientIP`); one that
//! cannot be reached is skipped, and for idempotent requests the next one
//! is tried.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use super::Proxy;
use super::netpol::{Peer, Verdict};
use super::table::{Endpoint, ProxiedService, Table, Target};
use crate::runtime::http::ResponseBody;

/// Any body error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A request body the proxy forwards.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;
/// What the proxy answers.
pub type ProxyResponse = Response<ResponseBody>;

/// Why a request was not delivered at all.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Nothing in the cluster is at that address: refused, as a closed
    /// port would be.
    #[error("{0}")]
    Refused(String),
}

/// A plain-text response.
pub fn text(status: StatusCode, msg: impl Into<String>) -> ProxyResponse {
    let mut r = Response::new(
        Full::new(Bytes::from(msg.into() + "\n"))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The request while it is being delivered: streaming until it must cross
/// to another node, buffered (and so repeatable) after.
enum Pending {
    Streaming(Request<ProxyBody>),
    Buffered {
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    },
}

impl Pending {
    fn into_request(self) -> Request<ProxyBody> {
        match self {
            Pending::Streaming(r) => r,
            Pending::Buffered {
                method,
                uri,
                headers,
                body,
            } => {
                let mut r = Request::new(
                    Full::new(body)
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                );
                *r.method_mut() = method;
                *r.uri_mut() = uri;
                *r.headers_mut() = headers;
                r
            }
        }
    }

    /// Reads the whole body (at most `limit` bytes).
    async fn buffered(self, limit: usize) -> Result<Pending, String> {
        match self {
            Pending::Streaming(r) => {
                let (parts, mut body) = r.into_parts();
                // Read frame by frame (rather than through a generic
                // collector) so the limit is checked as data arrives.
                let mut buf = bytes::BytesMut::new();
                while let Some(frame) = body.frame().await {
                    let frame = frame.map_err(|e| format!("reading the request body: {e}"))?;
                    if let Ok(data) = frame.into_data() {
                        if buf.len() + data.len() > limit {
                            return Err(format!("the request body is larger than {limit} bytes"));
                        }
                        buf.extend_from_slice(&data);
                    }
                }
                let body = buf.freeze();
                Ok(Pending::Buffered {
                    method: parts.method,
                    uri: parts.uri,
                    headers: parts.headers,
                    body,
                })
            }
            b => Ok(b),
        }
    }
}

/// Whether a request may be sent twice (to another endpoint after a
/// failure).
fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// How an attempt at one endpoint failed.
struct Failed {
    why: String,
    /// The request back, when it may go elsewhere: it never left (the
    /// endpoint was not there), or it is buffered and idempotent.
    request: Option<Pending>,
}

fn path_and_query(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/", |p| p.as_str())
}

impl Proxy {
    /// Delivers a request from `from` for `target`. `client` is the
    /// caller's address (for session affinity); `https` says the caller
    /// asked for TLS (it matters only for endpoints outside the pod
    /// network). Each endpoint is asked of the NetworkPolicies first; one
    /// they refuse is never sent anything, and a request no endpoint may
    /// take is answered 403 with the decision.
    ///
    /// # Errors
    /// [`ForwardError::Refused`] when nothing is at a pod address.
    pub async fn forward(
        &self,
        target: &Target,
        from: &Peer<'_>,
        client: Option<Ipv4Addr>,
        https: bool,
        req: Request<ProxyBody>,
    ) -> Result<ProxyResponse, ForwardError> {
        match target {
            Target::Service { svc, port } => {
                Ok(self.to_service(svc, *port, from, client, https, req).await)
            }
            Target::PodIp { ip, port } => self.to_pod_ip(*ip, *port, from, req).await,
        }
    }

    /// Sends a guest's request straight to an address outside the cluster
    /// that a NetworkPolicy's egress `ipBlock` allows (plain HTTP).
    pub async fn to_external(
        &self,
        ip: Ipv4Addr,
        port: u16,
        req: Request<ProxyBody>,
    ) -> ProxyResponse {
        let ep = Endpoint {
            ip,
            port,
            node: None,
            pod: None,
            pod_key: String::new(),
        };
        match self.to_address(&ep, Pending::Streaming(req), false).await {
            Ok(resp) => resp,
            Err(f) => text(StatusCode::BAD_GATEWAY, f.why),
        }
    }

    async fn to_service(
        &self,
        svc: &Arc<ProxiedService>,
        port: usize,
        from: &Peer<'_>,
        client: Option<Ipv4Addr>,
        https: bool,
        req: Request<ProxyBody>,
    ) -> ProxyResponse {
        let table = self.table();
        let start = Instant::now();
        let woken;
        let svc = if svc.ports[port].endpoints.is_empty() {
            // At zero: hold the request while the workload is woken.
            match self.activator.hold(self, svc, port).await {
                super::activate::Held::Ready(now) => {
                    woken = now;
                    &woken
                }
                held => {
                    self.metrics.service(svc.key(), start.elapsed(), true);
                    let mut resp = text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        match held {
                            super::activate::Held::QueueFull => format!(
                                "service \"{}\" is starting and too many requests wait for it",
                                svc.name
                            ),
                            super::activate::Held::TimedOut => {
                                format!("service \"{}\" did not start in time", svc.name)
                            }
                            _ => format!("no endpoints available for service \"{}\"", svc.name),
                        },
                    );
                    if !matches!(held, super::activate::Held::NotWakeable) {
                        resp.headers_mut().insert(
                            hyper::header::RETRY_AFTER,
                            hyper::header::HeaderValue::from_static("1"),
                        );
                    }
                    return resp;
                }
            }
        } else {
            svc
        };
        let key = svc.key();
        let sp = &svc.ports[port];
        let n = sp.endpoints.len();
        let first = self.first_endpoint(svc, port, client);
        let mut pending = Pending::Streaming(req);
        let mut last_error = String::new();
        let mut denied = None;
        for attempt in 0..n {
            let ep = &sp.endpoints[(first + attempt) % n];
            if let Verdict::Denied(why) = decide(&table, from, ep) {
                tracing::debug!(service = %key, endpoint = %ep.ip, %why, "refused by policy");
                denied = Some(why);
                continue;
            }
            match self.try_endpoint(ep, pending, https).await {
                Ok(resp) => {
                    let error = resp.status().is_server_error();
                    self.metrics.service(key, start.elapsed(), error);
                    if let (Some(timeout), Some(c)) = (svc.affinity, client) {
                        self.affinity.lock().insert(
                            (key.to_string(), c),
                            (ep.ip, ep.port, Instant::now() + timeout),
                        );
                    }
                    return resp;
                }
                Err(Failed { why, request }) => {
                    tracing::debug!(service = %key, endpoint = %ep.ip, error = %why, "endpoint failed");
                    last_error = why;
                    match request {
                        Some(r) => pending = r,
                        None => break,
                    }
                }
            }
        }
        if let (Some(why), true) = (denied, last_error.is_empty()) {
            return text(StatusCode::FORBIDDEN, why);
        }
        self.metrics.service(key, start.elapsed(), true);
        text(
            StatusCode::BAD_GATEWAY,
            format!(
                "service \"{}\": no endpoint could be reached: {last_error}",
                svc.name
            ),
        )
    }

    /// Where round robin starts: the sticky endpoint for a returning client
    /// of a `ClientIP`-affine service, else the next in turn.
    fn first_endpoint(&self, svc: &ProxiedService, port: usize, client: Option<Ipv4Addr>) -> usize {
        let endpoints = &svc.ports[port].endpoints;
        let turn = svc.ports[port].next_index() % endpoints.len().max(1);
        let (Some(_), Some(c)) = (svc.affinity, client) else {
            return turn;
        };
        let mut sticky = self.affinity.lock();
        let now = Instant::now();
        if sticky.len() > 65_536 {
            sticky.retain(|_, (_, _, until)| *until > now);
        }
        let Some((ip, p, until)) = sticky.get(&(svc.key().to_string(), c)).copied() else {
            return turn;
        };
        if until <= now {
            return turn;
        }
        endpoints
            .iter()
            .position(|e| e.ip == ip && e.port == p)
            .unwrap_or(turn)
    }

    async fn try_endpoint(
        &self,
        ep: &Endpoint,
        pending: Pending,
        https: bool,
    ) -> Result<ProxyResponse, Failed> {
        match (&ep.pod, &ep.node) {
            (Some((ns, name)), node) => {
                let local = self.pods.by_key(&ep.pod_key);
                let on_this_node = node.as_deref() == Some(self.config.node_name.as_str());
                match local {
                    Some(handle) if handle.can_serve(Some(ep.port)) => {
                        let start = Instant::now();
                        let resp = handle.serve(Some(ep.port), pending.into_request()).await;
                        let resp = resp.map_err(|why| Failed { why, request: None })?;
                        self.metrics.pod(
                            &ep.pod_key,
                            start.elapsed(),
                            resp.status().is_server_error(),
                        );
                        Ok(resp)
                    }
                    _ if on_this_node || node.is_none() => Err(Failed {
                        why: format!("pod {ns}/{name} is not serving on this node"),
                        request: Some(pending),
                    }),
                    _ => {
                        let node = node.clone().unwrap_or_default();
                        // The data path other nodes may use: the pod by
                        // its address, as a network would reach it.
                        let path = crate::agentapi::pod_ip(ep.ip, ep.port);
                        self.to_agent(&node, &path, Some(ep.pod_key.clone()), pending)
                            .await
                    }
                }
            }
            (None, _) => self.to_address(ep, pending, https).await,
        }
    }

    /// Sends a request through another node's agent: `prefix` is the
    /// agent path the request's own path is appended to.
    async fn to_agent(
        &self,
        node: &str,
        prefix: &str,
        pod_key: Option<String>,
        pending: Pending,
    ) -> Result<ProxyResponse, Failed> {
        let table = self.table();
        let Some(route) = table.node(node) else {
            return Err(Failed {
                why: format!("node {node:?} is not known"),
                request: Some(pending),
            });
        };
        let pending = pending
            .buffered(self.config.max_body_bytes)
            .await
            .map_err(|why| Failed { why, request: None })?;
        let Pending::Buffered {
            method,
            uri,
            headers,
            body,
        } = pending
        else {
            unreachable!("buffered() returns a buffered request");
        };
        let start = Instant::now();
        let path = format!("{prefix}{}", path_and_query(&uri));
        let sent = if route.agent.behind_nat {
            self.relay(node, &path, &method, &headers, &body).await
        } else {
            self.nodes
                .send(
                    &route.agent,
                    method.clone(),
                    &path,
                    crate::agentapi::end_to_end(&headers),
                    body.clone(),
                )
                .await
                .map(|resp| resp.map(|b| b.map_err(wasmtime_wasi_http::Error::from).boxed_unsync()))
                .map_err(|e| e.to_string())
        };
        match sent {
            Ok(resp) => {
                if let Some(key) = pod_key {
                    self.metrics
                        .pod(&key, start.elapsed(), resp.status().is_server_error());
                }
                Ok(resp)
            }
            Err(why) => {
                let again = idempotent(&method);
                Err(Failed {
                    why,
                    request: again.then_some(Pending::Buffered {
                        method,
                        uri,
                        headers,
                        body,
                    }),
                })
            }
        }
    }

    /// Sends a request for node `node`'s agent (`path` on it) through the
    /// API server, which passes it on through the tunnel that node keeps
    /// open: a node behind NAT cannot be dialed.
    async fn relay(
        &self,
        node: &str,
        path: &str,
        method: &Method,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<ProxyResponse, String> {
        let Some(api) = self.activator.client.get() else {
            return Err(format!(
                "node {node:?} is behind NAT and the API server is not known yet"
            ));
        };
        let mut req = Request::builder()
            .method(method.clone())
            .uri(crate::agentapi::tunnel::relay(node, path))
            .body(kube::client::Body::from(body.to_vec()))
            .map_err(|e| format!("invalid request for node {node:?}: {e}"))?;
        let mut sent = crate::agentapi::end_to_end(headers);
        // The request's own credentials are for the pod, not the API
        // server: they travel under another name and the relay restores
        // them.
        if let Some(auth) = sent.remove(header::AUTHORIZATION) {
            sent.insert(crate::agentapi::tunnel::POD_AUTHORIZATION, auth);
        }
        // Nor may the request ask the API server for anything (to act as
        // someone else): it is relayed under the node's credential.
        let asked: Vec<header::HeaderName> = sent
            .keys()
            .filter(|k| k.as_str().starts_with("impersonate-"))
            .cloned()
            .collect();
        for k in asked {
            sent.remove(k);
        }
        // The request's own host names the pod's site, not the API server.
        if let Some(host) = sent.remove(header::HOST) {
            sent.insert(crate::agentapi::tunnel::POD_HOST, host);
        }
        *req.headers_mut() = sent;
        let mut resp = api
            .send(req)
            .await
            .map_err(|e| format!("through the API server to node {node:?}: {e}"))?;
        // An answer the relay did not pass on is the API server's own: the
        // request was not delivered (no tunnel, too many relays, refused).
        if resp
            .headers_mut()
            .remove(crate::agentapi::tunnel::RELAYED)
            .is_none()
        {
            let status = resp.status();
            let body = http_body_util::Limited::new(resp.into_body(), 1024)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(format!(
                "the API server did not relay to node {node:?} ({status}): {}",
                String::from_utf8_lossy(&body).trim()
            ));
        }
        Ok(resp.map(|b| {
            b.map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(e.to_string())))
                .boxed_unsync()
        }))
    }

    /// Sends a request straight to an address outside the pod network,
    /// with TLS when the caller asked for it (trusting the cluster CA
    /// only, naming the host the caller asked for).
    async fn to_address(
        &self,
        ep: &Endpoint,
        pending: Pending,
        https: bool,
    ) -> Result<ProxyResponse, Failed> {
        let connect = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect((ep.ip, ep.port)),
        )
        .await;
        let stream = match connect {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(Failed {
                    why: format!("{}:{}: {e}", ep.ip, ep.port),
                    request: Some(pending),
                });
            }
            Err(_) => {
                return Err(Failed {
                    why: format!("{}:{}: connect timed out", ep.ip, ep.port),
                    request: Some(pending),
                });
            }
        };
        let _ = stream.set_nodelay(true);
        let mut req = pending.into_request();
        let host = req
            .uri()
            .host()
            .map(str::to_string)
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(|h| h.rsplit_once(':').map_or(h, |(h, _)| h).to_string())
            })
            .unwrap_or_else(|| ep.ip.to_string());
        if !req.headers().contains_key(header::HOST)
            && let Ok(v) = HeaderValue::from_str(&host)
        {
            req.headers_mut().insert(header::HOST, v);
        }
        *req.uri_mut() = path_and_query(req.uri())
            .parse()
            .unwrap_or_else(|_| Uri::from_static("/"));
        let failed = |why: String| Failed { why, request: None };
        let resp = if https {
            let Some(tls) = self.external_tls.clone() else {
                return Err(failed("https to the cluster needs cluster TLS".into()));
            };
            let name = ServerName::try_from(host.clone())
                .map_err(|e| failed(format!("server name {host:?}: {e}")))?;
            let tls = tokio_rustls::TlsConnector::from(tls)
                .connect(name, stream)
                .await
                .map_err(|e| failed(format!("TLS to {}:{}: {e}", ep.ip, ep.port)))?;
            send_http1(tls, req).await
        } else {
            send_http1(stream, req).await
        };
        resp.map_err(|e| failed(format!("{}:{}: {e}", ep.ip, ep.port)))
    }

    /// Delivers a request for a pod by address: in-process when it runs
    /// here, through its node's agent otherwise.
    async fn to_pod_ip(
        &self,
        ip: Ipv4Addr,
        port: u16,
        from: &Peer<'_>,
        req: Request<ProxyBody>,
    ) -> Result<ProxyResponse, ForwardError> {
        let table = self.table();
        let to = match table.netpol().pod_at(ip) {
            Some(key) => Peer::Pod(key),
            None => Peer::External(Some(ip)),
        };
        if let Verdict::Denied(why) = table.netpol().decide(from, &to, port) {
            return Ok(text(StatusCode::FORBIDDEN, why));
        }
        if let Some(handle) = self.pods.by_ip(ip) {
            let start = Instant::now();
            let key = handle.key();
            return match handle.serve(Some(port), req).await {
                Ok(resp) => {
                    self.metrics
                        .pod(&key, start.elapsed(), resp.status().is_server_error());
                    Ok(resp)
                }
                Err(e) => Err(ForwardError::Refused(e)),
            };
        }
        let node = match table.node_of_pod_ip(ip) {
            Some((name, _)) if name != self.config.node_name => name.to_string(),
            _ => return Err(ForwardError::Refused(format!("no pod at {ip}:{port}"))),
        };
        let prefix = crate::agentapi::pod_ip(ip, port);
        match self
            .to_agent(&node, &prefix, None, Pending::Streaming(req))
            .await
        {
            Ok(resp)
                if resp.status() == StatusCode::NOT_FOUND
                    && resp.headers().contains_key(crate::agentapi::NO_POD_HEADER) =>
            {
                Err(ForwardError::Refused(format!("no pod at {ip}:{port}")))
            }
            Ok(resp) => Ok(resp),
            Err(f) => Err(ForwardError::Refused(f.why)),
        }
    }
}

/// What the NetworkPolicies say about `from` reaching endpoint `ep`.
fn decide(table: &Table, from: &Peer<'_>, ep: &Endpoint) -> Verdict {
    let to = if ep.pod_key.is_empty() {
        Peer::External(Some(ep.ip))
    } else {
        Peer::Pod(&ep.pod_key)
    };
    table.netpol().decide(from, &to, ep.port)
}

/// One HTTP/1.1 exchange over `io`.
async fn send_http1<IO>(io: IO, req: Request<ProxyBody>) -> Result<ProxyResponse, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    Ok(resp.map(|b| b.map_err(wasmtime_wasi_http::Error::from).boxed_unsync()))
}

/// TLS for endpoints outside the pod network: the cluster CA only, no
/// client certificate.
///
/// # Errors
/// An unparsable CA.
pub fn external_tls(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let ca = ca.map_err(|e| format!("cluster CA: {e}"))?;
        roots.add(ca).map_err(|e| format!("cluster CA: {e}"))?;
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
