//! The agent endpoint: HTTPS on `--agent-listen` (default port 10250),
//! through which the API server reaches this node for container logs and
//! pod proxying. Every caller must present a client certificate from the
//! cluster CA:
//! - the control plane (`O=system:masters`) may use every route;
//! - another node (`O=system:nodes`) only delivers pod traffic to pod
//!   addresses (`/podip/…`), as a network would: a node credential, which
//!   anyone holding a join token can get, must not read other nodes' logs
//!   or reach into their pods through the API server's routes;
//! - anyone else is refused at the handshake.
//!
//! - `GET /healthz`
//! - `GET /containerLogs/{namespace}/{pod}/{container}?follow=&tailLines=&previous=&timestamps=&limitBytes=&sinceSeconds=&sinceTime=`
//! - `ANY /proxy/{namespace}/{pod}/{port}/{path…}` → the pod's HTTP
//!   component on containerPort `port` (empty: its first one).
//! - `ANY /podip/{ip}/{port}/{path…}` → the pod with that address (other
//!   nodes' proxies deliver requests for pod IPs here).
//! - `GET /metrics` → the service proxy's request counters.

use crate::agentapi;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::logs::{LogError, LogOptions};
use super::pods::ProxyError;
use super::{AgentTls, Shared};

/// Server TLS for the agent endpoint: client certificates from the
/// cluster CA are required.
///
/// # Errors
/// Unparsable certificates or keys.
pub fn tls_config(t: &AgentTls) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(t.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("serving certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(t.key_pem.as_bytes())
        .map_err(|e| format!("serving key: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(t.ca_pem.as_bytes()) {
        roots
            .add(ca.map_err(|e| format!("cluster CA: {e}"))?)
            .map_err(|e| format!("cluster CA: {e}"))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| format!("client verifier: {e}"))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| format!("serving certificate: {e}"))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Who a verified client certificate belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    /// The API server or a cluster admin (`O=system:masters`).
    ControlPlane,
    /// Another node (`O=system:nodes`).
    Node,
}

/// The caller a client certificate's subject names, if it may connect.
fn caller_of(cert: &[u8]) -> Option<Caller> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    let orgs: Vec<&str> = cert
        .subject()
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .collect();
    if orgs.contains(&"system:masters") {
        Some(Caller::ControlPlane)
    } else if orgs.contains(&"system:nodes") {
        Some(Caller::Node)
    } else {
        None
    }
}

/// Routes every caller may use: pod traffic by pod address, and health.
fn pod_routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(agentapi::HEALTHZ, axum::routing::get(|| async { "ok" }))
        .route(agentapi::POD_IP, axum::routing::any(pod_ip_proxy_root))
        .route(
            &agentapi::with_slash(agentapi::POD_IP),
            axum::routing::any(pod_ip_proxy_root),
        )
        .route(
            &agentapi::with_rest(agentapi::POD_IP),
            axum::routing::any(pod_ip_proxy),
        )
}

/// What other nodes may use.
fn node_router(shared: Arc<Shared>) -> Router {
    pod_routes()
        .fallback(|| async {
            plain(
                StatusCode::FORBIDDEN,
                "forbidden: a node's certificate may only deliver pod traffic (/podip/) to this node",
            )
        })
        .with_state(shared)
}

/// Everything, for the control plane (on the endpoint, and over a
/// tunnel).
pub(super) fn router(shared: Arc<Shared>) -> Router {
    pod_routes()
        .route(agentapi::METRICS, axum::routing::get(metrics))
        .route(agentapi::STATS_SUMMARY, axum::routing::get(stats_summary))
        .route(agentapi::CONTAINER_LOGS, axum::routing::get(container_logs))
        .route(agentapi::POD_PROXY, axum::routing::any(proxy_root))
        .route(
            &agentapi::with_slash(agentapi::POD_PROXY),
            axum::routing::any(proxy_root),
        )
        .route(
            &agentapi::with_rest(agentapi::POD_PROXY),
            axum::routing::any(proxy),
        )
        .with_state(shared)
}

/// Serves until `shutdown`, then lets open requests finish for a few
/// seconds.
pub async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = router(shared.clone());
    let node_app = node_router(shared.clone());
    let permits = Arc::new(Semaphore::new(shared.config.max_connections.max(1)));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    while let Some(crate::accept::Accepted { permit, stream, .. }) = crate::accept::next(
        &listener,
        &permits,
        &mut shutdown,
        "agent endpoint",
        Duration::from_millis(50),
    )
    .await
    {
        let _ = stream.set_nodelay(true);
        let builder = auto::Builder::new(TokioExecutor::new());
        let watcher = graceful.watcher();
        match acceptor.clone() {
            Some(acceptor) => {
                let (app, node_app) = (app.clone(), node_app.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let Ok(Ok(tls)) =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                            .await
                    else {
                        return;
                    };
                    let caller = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|c| caller_of(c.as_ref()));
                    let svc = match caller {
                        Some(Caller::ControlPlane) => TowerToHyperService::new(app),
                        Some(Caller::Node) => TowerToHyperService::new(node_app),
                        // A valid certificate of the cluster that is neither
                        // the control plane nor a node: refused outright.
                        None => return,
                    };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
                    let _ = watcher.watch(conn.into_owned()).await;
                });
            }
            None => {
                // Without TLS (`--tls off`, a trusted lab network) there is
                // no one to tell apart.
                let svc = TowerToHyperService::new(app.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    let _ = watcher.watch(conn.into_owned()).await;
                });
            }
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}

fn plain(code: StatusCode, msg: impl Into<String>) -> Response {
    let mut r = (code, msg.into()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct LogQuery {
    follow: Option<String>,
    previous: Option<String>,
    timestamps: Option<String>,
    tail_lines: Option<i64>,
    limit_bytes: Option<i64>,
    since_seconds: Option<i64>,
    since_time: Option<String>,
}

fn flag(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|v| v == "true" || v == "1")
}

async fn container_logs(
    State(shared): State<Arc<Shared>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(q): Query<LogQuery>,
) -> Response {
    let Some(handle) = shared.pods.get(&namespace, &pod) else {
        return plain(
            StatusCode::NOT_FOUND,
            format!("pod {namespace}/{pod} is not running on this node"),
        );
    };
    let found = handle.read(|r| {
        r.init
            .iter()
            .chain(r.main.iter())
            .find(|c| c.name == container)
            .map(|c| {
                // A container waiting to restart shows its last run's log,
                // as Kubernetes does during a crash loop.
                let waiting = matches!(c.state, super::status::State::Waiting { .. });
                let attempt = if waiting && c.restart_count > 0 {
                    c.restart_count - 1
                } else {
                    c.restart_count
                };
                // Attempts below the restart count have run, and so has
                // the current one unless it is still waiting to start.
                let runs = if waiting {
                    c.restart_count
                } else {
                    c.restart_count.saturating_add(1)
                };
                (attempt, runs)
            })
    });
    let Some((attempt, runs)) = found else {
        return plain(
            StatusCode::NOT_FOUND,
            format!("container {container} is not valid for pod {pod}"),
        );
    };
    let since = q
        .since_seconds
        .filter(|s| *s > 0)
        .map(|s| SystemTime::now() - Duration::from_secs(s as u64))
        .or_else(|| {
            q.since_time
                .as_deref()
                .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
                .map(SystemTime::from)
        });
    let previous = flag(&q.previous);
    let opts = LogOptions {
        previous,
        tail_lines: q.tail_lines.filter(|n| *n >= 0).map(|n| n as u64),
        timestamps: flag(&q.timestamps),
        since,
        limit_bytes: q.limit_bytes.filter(|n| *n > 0).map(|n| n as u64),
        follow: flag(&q.follow),
    };
    match shared.logs.read_at(
        &handle.dir.join("logs"),
        &container,
        attempt.max(0) as u32,
        opts,
    ) {
        Ok(stream) => {
            let mut r = Response::new(Body::from_stream(
                stream.map(|r| r.map_err(axum::Error::new)),
            ));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        }
        // A log file is created with the attempt's first record: an
        // attempt that ran and printed nothing has none, and its log is
        // empty.
        Err(LogError::NotFound {
            attempt: Some(read),
            ..
        }) if i64::from(read) < i64::from(runs) => plain(StatusCode::OK, ""),
        Err(LogError::NotFound { .. }) if previous => plain(
            StatusCode::BAD_REQUEST,
            format!("previous terminated container \"{container}\" in pod \"{pod}\" not found"),
        ),
        Err(LogError::NotFound { .. }) => plain(
            StatusCode::BAD_REQUEST,
            format!("container \"{container}\" in pod \"{pod}\" has not written any log yet"),
        ),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn proxy_root(
    State(shared): State<Arc<Shared>>,
    Path((namespace, pod, port)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    forward(shared, namespace, pod, port, String::new(), req).await
}

async fn proxy(
    State(shared): State<Arc<Shared>>,
    Path((namespace, pod, port, rest)): Path<(String, String, String, String)>,
    req: Request,
) -> Response {
    forward(shared, namespace, pod, port, rest, req).await
}

async fn forward(
    shared: Arc<Shared>,
    namespace: String,
    pod: String,
    port: String,
    rest: String,
    req: Request,
) -> Response {
    let Some(handle) = shared.pods.get(&namespace, &pod) else {
        return plain(
            StatusCode::NOT_FOUND,
            format!("pod {namespace}/{pod} is not running on this node"),
        );
    };
    serve_in(handle, port, rest, req).await
}

/// `/podip/{ip}/{port}/...`: another node's proxy delivering a request
/// for a pod address in this node's range.
async fn pod_ip_proxy(
    State(shared): State<Arc<Shared>>,
    Path((ip, port, rest)): Path<(String, String, String)>,
    req: Request,
) -> Response {
    let Some(handle) = shared.pods.by_ip(&ip) else {
        let mut r = plain(
            StatusCode::NOT_FOUND,
            format!("no pod at {ip} on this node"),
        );
        r.headers_mut()
            .insert(agentapi::NO_POD_HEADER, HeaderValue::from_static("1"));
        return r;
    };
    serve_in(handle, port, rest, req).await
}

async fn pod_ip_proxy_root(
    state: State<Arc<Shared>>,
    Path((ip, port)): Path<(String, String)>,
    req: Request,
) -> Response {
    pod_ip_proxy(state, Path((ip, port, String::new())), req).await
}

/// `/metrics`: the proxy's per-service and per-pod counters.
async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let mut r = plain(StatusCode::OK, shared.proxy.metrics.render());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    r
}

/// `/stats/summary`: what each container of each pod uses, with the
/// node's totals (see [`crate::agentapi::summary`]).
async fn stats_summary(State(shared): State<Arc<Shared>>) -> Response {
    let body = serde_json::to_string(&super::usage::summary(&shared)).unwrap_or_default();
    let mut r = plain(StatusCode::OK, body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Serves a request in `handle`'s pod, on containerPort `port` (empty or
/// `-`: its first HTTP container), at path `/rest`.
async fn serve_in(
    handle: Arc<super::pods::PodHandle>,
    port: String,
    rest: String,
    req: Request,
) -> Response {
    let port = match port.as_str() {
        "" | "-" => None,
        p => match p.parse::<u16>() {
            Ok(p) => Some(p),
            Err(_) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    format!("invalid port {p:?}: expected a number"),
                );
            }
        },
    };
    let (mut parts, body) = req.into_parts();
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("/{rest}?{q}"),
        None => format!("/{rest}"),
    };
    parts.uri = match path_and_query.parse() {
        Ok(u) => u,
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("invalid path: {e}")),
    };
    // The guest sees an origin-form request, as a server behind a proxy
    // would; HTTP/2 pseudo-headers are not carried over.
    parts.version = hyper::Version::HTTP_11;
    let req = hyper::Request::from_parts(parts, body);
    match handle.serve(port, req).await {
        Ok(resp) => resp.map(Body::new),
        // Both pass: the pod is going away or not serving yet; a client
        // library's retry finds it (or its successor) ready.
        Err(e @ (ProxyError::Terminating(_) | ProxyError::NoService { .. })) => {
            let mut resp = plain(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
            resp
        }
    }
}
