//! The API server's client of node agents (kubelets): what serves
//! `pods/log`, `pods/proxy` and `nodes/proxy`.
//!
//! A node publishes where its agent listens in its status:
//! `status.addresses` (the `InternalIP`) and
//! `status.daemonEndpoints.kubeletEndpoint.port`. With cluster TLS on, the
//! agent serves HTTPS with a certificate from the cluster CA naming its IP,
//! and asks for a client certificate from the same CA: the API server
//! presents `DATA/pki/apiserver-kubelet-client.crt` (CN `wkube-apiserver`,
//! O `system:masters`) and checks the agent's certificate against the CA
//! with the node IP as the server name. With `--tls off` both sides speak
//! plain HTTP.
//!
//! Connections are pooled per agent (a bounded number kept idle), connects
//! and response headers have deadlines, and the number of requests in
//! flight — streamed log bodies included — is bounded.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{HeaderMap, Method, Request, Response, Uri};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::tunnel::Tunnels;
use crate::pki::ClientTls;

/// The port an agent listens on when its Node does not say.
pub const DEFAULT_AGENT_PORT: u16 = 10250;

/// Limits and deadlines of the node client.
#[derive(Clone, Debug)]
pub struct NodeClientConfig {
    /// Longest a TCP connect plus TLS handshake to an agent may take.
    pub connect_timeout: Duration,
    /// Longest an agent may take to send response headers (a streamed
    /// body may then last as long as the client reads it).
    pub response_header_timeout: Duration,
    /// Idle connections kept per agent for reuse.
    pub max_idle_per_agent: usize,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
    /// Requests to agents in flight at once, open response bodies included.
    pub max_in_flight: usize,
}

impl Default for NodeClientConfig {
    fn default() -> Self {
        NodeClientConfig {
            connect_timeout: Duration::from_secs(5),
            response_header_timeout: Duration::from_secs(60),
            // A burst of pod-proxy requests (a scale-out checked pod by
            // pod) would otherwise pay a TLS handshake for each past 8.
            max_idle_per_agent: 32,
            idle_timeout: Duration::from_secs(90),
            max_in_flight: 1024,
        }
    }
}

/// Why an agent could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum NodeClientError {
    #[error("node client TLS: {0}")]
    Tls(String),
    #[error(
        "node {node:?} has no InternalIP in status.addresses: its agent cannot be reached (has it registered?)"
    )]
    NoAddress { node: String },
    #[error("the agent of node {node:?} at {addr} cannot be reached: {cause}")]
    Unreachable {
        node: String,
        addr: String,
        cause: String,
    },
    #[error("the agent of node {node:?} at {addr} did not answer within {timeout:?}")]
    Timeout {
        node: String,
        addr: String,
        timeout: Duration,
    },
    #[error("too many requests to node agents in flight (limit {limit}); try again")]
    Busy { limit: usize },
    #[error(
        "node {node:?} is behind NAT and its agent has no tunnel open to this server: it cannot be reached until it connects again"
    )]
    NoTunnel { node: String },
}

/// Where one node's agent listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentEndpoint {
    /// The node's name (for messages).
    pub node: String,
    pub ip: IpAddr,
    pub port: u16,
    /// The node is behind NAT ([`super::tunnel::BEHIND_NAT`]): only its
    /// tunnel reaches it.
    pub behind_nat: bool,
}

impl AgentEndpoint {
    /// Read a Node object: its `InternalIP` (an `ExternalIP` when it has
    /// none) and `status.daemonEndpoints.kubeletEndpoint.port` (10250 when
    /// unset, as in Kubernetes).
    ///
    /// # Errors
    /// [`NodeClientError::NoAddress`] when the node lists no usable IP.
    pub fn of_node(node: &Value) -> Result<Self, NodeClientError> {
        let name = node
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let addresses = node
            .pointer("/status/addresses")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let ip = ["InternalIP", "ExternalIP"].iter().find_map(|ty| {
            addresses
                .iter()
                .filter(|a| a.get("type").and_then(Value::as_str) == Some(ty))
                .find_map(|a| a.get("address")?.as_str()?.parse::<IpAddr>().ok())
        });
        let Some(ip) = ip else {
            return Err(NodeClientError::NoAddress { node: name });
        };
        let port = node
            .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .unwrap_or(DEFAULT_AGENT_PORT);
        let behind_nat = node
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(super::tunnel::BEHIND_NAT))
            .and_then(Value::as_str)
            == Some("true");
        Ok(AgentEndpoint {
            node: name,
            ip,
            port,
            behind_nat,
        })
    }

    fn authority(&self) -> String {
        std::net::SocketAddr::new(self.ip, self.port).to_string()
    }
}

/// The client. Cheap to share; one per API server.
pub struct NodeClient {
    client: Client<AgentConnector, Full<Bytes>>,
    tls: bool,
    config: NodeClientConfig,
    in_flight: Arc<Semaphore>,
    /// Agents' own connections to this server, used before dialing.
    tunnels: Arc<Tunnels>,
}

impl NodeClient {
    /// A client speaking HTTPS with `tls` (the API server's client
    /// certificate and the CA agents are checked against), or plain HTTP
    /// when `tls` is `None` (`--tls off`).
    ///
    /// # Errors
    /// [`NodeClientError::Tls`] for unusable certificates or keys.
    pub fn new(config: NodeClientConfig, tls: Option<&ClientTls>) -> Result<Self, NodeClientError> {
        let tls_config = tls.map(client_tls_config).transpose()?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout));
        let connector = AgentConnector {
            http,
            tls: tls_config.map(tokio_rustls::TlsConnector::from),
            timeout: config.connect_timeout,
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(config.max_idle_per_agent)
            .pool_idle_timeout(config.idle_timeout)
            .build(connector);
        Ok(NodeClient {
            client,
            tls: tls.is_some(),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            config,
            tunnels: Arc::new(Tunnels::default()),
        })
    }

    /// The tunnels agents behind NAT opened to this server.
    pub fn tunnels(&self) -> &Arc<Tunnels> {
        &self.tunnels
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// Send one request to an agent and return its response once the
    /// headers arrived; the body streams from the agent as it is read.
    /// Dropping the body ends the request (and its connection).
    ///
    /// `path_and_query` starts with `/`. Hop-by-hop headers are the
    /// caller's business.
    ///
    /// # Errors
    /// [`NodeClientError::Unreachable`] when no connection could be made or
    /// it broke before the headers, [`NodeClientError::Timeout`] when the
    /// headers took too long, [`NodeClientError::Busy`] at the in-flight
    /// limit.
    pub async fn send(
        &self,
        agent: &AgentEndpoint,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response<AgentBody>, NodeClientError> {
        let permit =
            self.in_flight
                .clone()
                .try_acquire_owned()
                .map_err(|_| NodeClientError::Busy {
                    limit: self.config.max_in_flight,
                })?;
        let addr = agent.authority();
        let unreachable = |cause: String| NodeClientError::Unreachable {
            node: agent.node.clone(),
            addr: addr.clone(),
            cause,
        };
        let uri: Uri = format!("{}://{addr}{path_and_query}", self.scheme())
            .parse()
            .map_err(|e| unreachable(format!("invalid request path: {e}")))?;
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Full::new(body))
            .map_err(|e| unreachable(format!("invalid request: {e}")))?;
        *req.headers_mut() = headers;
        // The agent's own connection, when it keeps one open here; a node
        // behind NAT has no other way in.
        let tunnel = self.tunnels.get(&agent.node);
        if tunnel.is_none() && agent.behind_nat {
            return Err(NodeClientError::NoTunnel {
                node: agent.node.clone(),
            });
        }
        let sent = async {
            match tunnel {
                Some(mut tunnel) => tunnel
                    .send_request(req)
                    .await
                    .map_err(|e| unreachable(format!("its tunnel: {}", error_chain(&e)))),
                None => self
                    .client
                    .request(req)
                    .await
                    .map_err(|e| unreachable(error_chain(&e))),
            }
        };
        let resp = tokio::time::timeout(self.config.response_header_timeout, sent)
            .await
            .map_err(|_| NodeClientError::Timeout {
                node: agent.node.clone(),
                addr: addr.clone(),
                timeout: self.config.response_header_timeout,
            })??;
        let (parts, inner) = resp.into_parts();
        Ok(Response::from_parts(
            parts,
            AgentBody {
                inner,
                _permit: permit,
            },
        ))
    }

    /// A GET without headers or body.
    ///
    /// # Errors
    /// As [`NodeClient::send`].
    pub async fn get(
        &self,
        agent: &AgentEndpoint,
        path_and_query: &str,
    ) -> Result<Response<AgentBody>, NodeClientError> {
        self.send(
            agent,
            Method::GET,
            path_and_query,
            HeaderMap::new(),
            Bytes::new(),
        )
        .await
    }
}

/// An error with its causes, `a: b: c`.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Client TLS to agents (and, for a tunnel, to API servers): trusting
/// the cluster CA only, presenting `tls`'s certificate, HTTP/1.1.
///
/// # Errors
/// [`NodeClientError::Tls`] for unusable certificates or keys.
pub fn client_tls_config(tls: &ClientTls) -> Result<Arc<rustls::ClientConfig>, NodeClientError> {
    let err = |what: &str, e: &dyn std::fmt::Display| NodeClientError::Tls(format!("{what}: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(tls.ca_pem.as_bytes()) {
        let ca = ca.map_err(|e| err("cluster CA", &e))?;
        roots.add(ca).map_err(|e| err("cluster CA", &e))?;
    }
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| err("client certificate", &e))?;
    let key =
        PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes()).map_err(|e| err("client key", &e))?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err("protocol versions", &e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| err("client certificate", &e))?;
    // Agents are spoken to in HTTP/1.1: one request per connection at a
    // time, which a pooled client multiplexes well enough.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// TCP, then TLS when configured, with the agent's IP as the server name.
#[derive(Clone)]
struct AgentConnector {
    http: HttpConnector,
    tls: Option<tokio_rustls::TlsConnector>,
    timeout: Duration,
}

impl tower::Service<Uri> for AgentConnector {
    type Response = AgentStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<AgentStream, io::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(io::Error::other)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tcp = self.http.call(uri.clone());
        let tls = self.tls.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let connect = async move {
                let tcp = tcp.await.map_err(io::Error::other)?;
                let Some(tls) = tls else {
                    return Ok(AgentStream::Plain(tcp));
                };
                let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
                let name = match host.parse::<IpAddr>() {
                    Ok(ip) => ServerName::IpAddress(ip.into()),
                    Err(_) => ServerName::try_from(host.to_string())
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
                };
                let stream = tls.connect(name, tcp.into_inner()).await?;
                Ok(AgentStream::Tls(Box::new(TokioIo::new(stream))))
            };
            tokio::time::timeout(timeout, connect).await.map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect and TLS handshake took longer than {timeout:?}"),
                )
            })?
        })
    }
}

/// A connection to an agent.
enum AgentStream {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>),
}

impl Connection for AgentStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for AgentStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AgentStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            AgentStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for AgentStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            AgentStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            AgentStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AgentStream::Plain(s) => Pin::new(s).poll_flush(cx),
            AgentStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AgentStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            AgentStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The body of an agent's response. Holds its in-flight permit until it
/// is read to the end or dropped.
#[derive(Debug)]
pub struct AgentBody {
    inner: Incoming,
    _permit: OwnedSemaphorePermit,
}

impl Body for AgentBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_agent_is_found_at_the_internal_ip_and_kubelet_port() {
        let node = json!({
            "metadata": {"name": "n1"},
            "status": {
                "addresses": [
                    {"type": "Hostname", "address": "n1"},
                    {"type": "InternalIP", "address": "127.0.0.7"},
                ],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 12345}},
            },
        });
        let ep = AgentEndpoint::of_node(&node).unwrap();
        assert_eq!(ep.ip.to_string(), "127.0.0.7");
        assert_eq!(ep.port, 12345);
        assert_eq!(ep.authority(), "127.0.0.7:12345");
    }

    #[test]
    fn the_port_defaults_to_10250_and_a_node_without_ip_is_unreachable() {
        let node = json!({"metadata": {"name": "n1"},
                          "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}});
        assert_eq!(AgentEndpoint::of_node(&node).unwrap().port, 10250);
        let bare = json!({"metadata": {"name": "n2"},
                          "status": {"addresses": [{"type": "Hostname", "address": "n2"}]}});
        let e = AgentEndpoint::of_node(&bare).unwrap_err();
        assert!(
            e.to_string().contains("node \"n2\" has no InternalIP"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn an_agent_that_is_not_listening_is_unreachable_naming_the_node() {
        // A port that was free a moment ago: nothing listens there now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = NodeClient::new(NodeClientConfig::default(), None).unwrap();
        let ep = AgentEndpoint {
            node: "gone".into(),
            ip: "127.0.0.1".parse().unwrap(),
            port,
            behind_nat: false,
        };
        let e = client.get(&ep, "/healthz").await.unwrap_err();
        assert!(matches!(e, NodeClientError::Unreachable { .. }), "{e:?}");
        assert!(e.to_string().contains("node \"gone\""), "{e}");
    }
}
