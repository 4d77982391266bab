//! The agent's side of a tunnel (see [`crate::agentapi::tunnel`]): a node
//! the control plane cannot dial (`wkube agent --behind-nat`) dials every
//! API server itself, turns each connection around with an HTTP upgrade,
//! and serves its endpoint's routes over HTTP/2 on it — the same routes,
//! with the same trust, as a control-plane caller of its endpoint gets.
//!
//! Each tunnel is one loop: dial → upgrade → serve until the connection
//! ends (the server went away, pings went unanswered) → wait → dial again,
//! waiting longer after each failure up to [`MAX_RETRY`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, Request, StatusCode, Uri, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::upgrade::Upgraded;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::Shared;
use crate::agentapi::tunnel::PROTOCOL;

/// Where the tunnels go and how the node proves who it is.
#[derive(Clone)]
pub struct TunnelConfig {
    /// Every API server (`https://host:port`), one tunnel each.
    pub servers: Vec<String>,
    /// The node's client certificate and the cluster CA, for `https://`.
    pub tls: Option<crate::pki::ClientTls>,
    /// The node's token, for a plain-HTTP (`--tls off`) cluster.
    pub token: Option<String>,
}

impl std::fmt::Debug for TunnelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelConfig")
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

/// Longest a dial, TLS handshake and upgrade may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// First wait before dialing again; doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(10);
/// How long a tunnel must last before the waits start over.
const STEADY: Duration = Duration::from_secs(30);
/// The agent pings too: a tunnel whose server vanished without a word (a
/// cut link, a dropped NAT mapping) is noticed and dialed again.
const KEEPALIVE: Duration = Duration::from_secs(15);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a tunnel could not be opened.
#[derive(Debug, thiserror::Error)]
enum TunnelError {
    #[error("invalid server URL {0:?}")]
    Url(String),
    #[error("cannot connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("the server refused the tunnel ({status}): {message}")]
    Refused { status: StatusCode, message: String },
    #[error("no tunnel within {0:?}")]
    Timeout(Duration),
}

/// Keeps a tunnel open to every server until `shutdown`.
///
/// # Errors
/// When the node's TLS material is unusable.
pub async fn run(
    shared: Arc<Shared>,
    config: TunnelConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let tls = config
        .tls
        .as_ref()
        .map(crate::agentapi::client::client_tls_config)
        .transpose()
        .map_err(|e| e.to_string())?
        .map(tokio_rustls::TlsConnector::from);
    let stop = crate::shutdown::Stop::new(shutdown);
    let tasks: Vec<_> = config
        .servers
        .iter()
        .map(|server| {
            let dial = Dial {
                server: server.clone(),
                node: shared.config.node_name.clone(),
                tls: tls.clone(),
                token: config.token.clone(),
            };
            tokio::spawn(keep(shared.clone(), dial, stop.wait()))
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

/// How to open one tunnel.
struct Dial {
    server: String,
    node: String,
    tls: Option<tokio_rustls::TlsConnector>,
    token: Option<String>,
}

/// The loop of one tunnel.
async fn keep(shared: Arc<Shared>, dial: Dial, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut delay = FIRST_RETRY;
    let server = dial.server.as_str();
    loop {
        let opened = tokio::select! {
            r = tokio::time::timeout(OPEN_TIMEOUT, dial.open()) => {
                r.unwrap_or(Err(TunnelError::Timeout(OPEN_TIMEOUT)))
            }
            _ = &mut shutdown => return,
        };
        match opened {
            Ok(io) => {
                tracing::info!(server, "tunnel open");
                let opened_at = std::time::Instant::now();
                let routes = TowerToHyperService::new(super::server::router(shared.clone()));
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .keep_alive_interval(KEEPALIVE)
                    .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                    .initial_stream_window_size(crate::agentapi::tunnel::STREAM_WINDOW)
                    .initial_connection_window_size(crate::agentapi::tunnel::CONNECTION_WINDOW)
                    .serve_connection(io, routes);
                let mut conn = std::pin::pin!(conn);
                tokio::select! {
                    ended = conn.as_mut() => match ended {
                        Ok(()) => tracing::info!(server, "tunnel closed by the server"),
                        Err(e) => tracing::warn!(server, error = %e, "tunnel lost"),
                    },
                    _ = &mut shutdown => {
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                        return;
                    }
                }
                // A tunnel that lasted is a fresh start; one refused or
                // dropped at once (a server that keeps failing) is not, or
                // the agent would dial it every half second.
                if opened_at.elapsed() >= STEADY {
                    delay = FIRST_RETRY;
                }
            }
            Err(e) => tracing::warn!(server, error = %e, "cannot open the tunnel; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = &mut shutdown => return,
        }
        delay = (delay * 2).min(MAX_RETRY);
    }
}

impl Dial {
    /// Dials the server and upgrades the connection to a tunnel.
    async fn open(&self) -> Result<Upgraded, TunnelError> {
        let uri: Uri = self
            .server
            .parse()
            .map_err(|_| TunnelError::Url(self.server.clone()))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(TunnelError::Url(self.server.clone())),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| TunnelError::Url(self.server.clone()))?
            .clone();
        let host = authority.host().trim_matches(['[', ']']).to_string();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(TunnelError::Connect)?;
        let _ = tcp.set_nodelay(true);
        let mut req = Request::get(crate::agentapi::tunnel::tunnel(&self.node))
            .header(header::HOST, authority.as_str())
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, PROTOCOL)
            .body(Empty::<Bytes>::new())
            .map_err(|e| TunnelError::Url(e.to_string()))?;
        if let Some(token) = &self.token
            && let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}"))
        {
            req.headers_mut().insert(header::AUTHORIZATION, v);
        }
        match (https, &self.tls) {
            (true, Some(tls)) => {
                let name = match host.parse::<std::net::IpAddr>() {
                    Ok(ip) => ServerName::IpAddress(ip.into()),
                    Err(_) => ServerName::try_from(host.clone())
                        .map_err(|e| TunnelError::Tls(e.to_string()))?,
                };
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| TunnelError::Tls(e.to_string()))?;
                upgrade(TokioIo::new(stream), req).await
            }
            (true, None) => Err(TunnelError::Tls(
                "an https:// server needs the node's client certificate".into(),
            )),
            (false, _) => upgrade(TokioIo::new(tcp), req).await,
        }
    }
}

/// Sends the upgrade request on `io` and returns the upgraded connection.
async fn upgrade<IO>(io: IO, req: Request<Empty<Bytes>>) -> Result<Upgraded, TunnelError>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(conn.with_upgrades());
    let resp = send.send_request(req).await?;
    let status = resp.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        // The server's reason, bounded: it is only for the log.
        let body = Limited::new(resp.into_body(), 4096)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Err(TunnelError::Refused {
            status,
            message: String::from_utf8_lossy(&body).trim().to_string(),
        });
    }
    Ok(hyper::upgrade::on(resp).await?)
}
