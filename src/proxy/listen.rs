//! The proxy's listeners: one per ClusterIP and load-balancer address and
//! service port, one per NodePort on the node's address, and one per
//! serving port of each of this node's pods on the pod's IP, opened and
//! closed as the table and the pods change.
//!
//! Sockets are bound with `SO_REUSEPORT`, so several agents on one host
//! (a test cluster, or a server next to an agent) share an address: the
//! kernel hands each connection to one of them, and every one routes to
//! every endpoint of the cluster. A listener looks its target up per
//! request, so a service that changes ports or endpoints needs no rebind.
//!
//! Requests arriving here come from outside the pod network (pods have no
//! sockets), so NetworkPolicies see them as their client address, which
//! only `ipBlock` peers match.
//!
//! Services whose endpoints all lie outside the pod network (the API
//! server behind `kubernetes`) are passed through at the TCP level, so TLS
//! from the client reaches the endpoint untouched; everything else is
//! proxied as HTTP.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Semaphore, oneshot};

use super::Proxy;
use super::netpol::Peer;
use super::route::{ProxyResponse, text};
use super::table::Target;
use axum::http::{Request, StatusCode};

/// How long a bind that failed is left alone before it is tried again.
const RETRY_BIND: Duration = Duration::from_secs(5);

/// The open listeners of one proxy.
pub struct Listeners {
    proxy: Arc<Proxy>,
    open: HashMap<SocketAddr, oneshot::Sender<()>>,
    failed: HashMap<SocketAddr, Instant>,
    permits: Arc<Semaphore>,
}

impl Listeners {
    pub fn new(proxy: Arc<Proxy>) -> Listeners {
        let permits = Arc::new(Semaphore::new(proxy.config.max_connections.max(1)));
        Listeners {
            proxy,
            open: HashMap::new(),
            failed: HashMap::new(),
            permits,
        }
    }

    /// Opens listeners for `wanted` addresses not yet open and closes the
    /// ones no longer wanted (connections already accepted finish).
    ///
    /// A dense node wants one address per serving pod port, and this runs
    /// after every table rebuild and every second: the work is linear in
    /// the addresses (a set, not a list looked through per address).
    pub fn reconcile(&mut self, wanted: &HashSet<SocketAddr>) {
        self.open.retain(|addr, _| wanted.contains(addr));
        self.failed.retain(|addr, _| wanted.contains(addr));
        let now = Instant::now();
        for addr in wanted {
            if self.open.contains_key(addr) {
                continue;
            }
            if self
                .failed
                .get(addr)
                .is_some_and(|at| now.duration_since(*at) < RETRY_BIND)
            {
                continue;
            }
            match bind(*addr) {
                Ok(listener) => {
                    let (tx, rx) = oneshot::channel();
                    tokio::spawn(accept_loop(
                        self.proxy.clone(),
                        listener,
                        self.permits.clone(),
                        rx,
                    ));
                    self.open.insert(*addr, tx);
                    self.failed.remove(addr);
                    tracing::debug!(%addr, "proxy listening");
                }
                Err(e) => {
                    if !self.failed.contains_key(addr) {
                        tracing::warn!(%addr, error = %e, "proxy cannot listen");
                    }
                    self.failed.insert(*addr, now);
                }
            }
        }
    }

    /// Closes every listener.
    pub fn close_all(&mut self) {
        self.open.clear();
    }

    /// Addresses listened on (for tests).
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.open.keys().copied().collect()
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(crate::accept::BACKLOG)
}

async fn accept_loop(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    permits: Arc<Semaphore>,
    mut stop: oneshot::Receiver<()>,
) {
    while let Some(crate::accept::Accepted {
        permit,
        stream,
        peer,
    }) = crate::accept::next(
        &listener,
        &permits,
        &mut stop,
        "service proxy",
        Duration::from_millis(20),
    )
    .await
    {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve_connection(proxy, stream, peer).await;
        });
    }
}

async fn serve_connection(proxy: Arc<Proxy>, stream: TcpStream, peer: SocketAddr) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let (IpAddr::V4(local_ip), port) = (local.ip(), local.port()) else {
        return;
    };
    let client = match peer.ip() {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(_) => None,
    };
    let node_ip = proxy.config.node_ip;
    if local_ip == node_ip
        && (proxy.config.ingress_tls_port == Some(port)
            || proxy.table().gateway().port(port) == Some(true))
    {
        serve_edge_tls(proxy, stream, port, client).await;
        return;
    }
    if let Some(Target::Service { svc, port: i }) =
        proxy.table().by_listener(local_ip, port, node_ip)
    {
        let eps = &svc.ports[i].endpoints;
        if !eps.is_empty() && eps.iter().all(|e| e.pod.is_none()) {
            let ep = &eps[svc.ports[i].next_index() % eps.len()];
            pass_through(stream, SocketAddr::from((ep.ip, ep.port))).await;
            return;
        }
    }
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let proxy = proxy.clone();
        async move {
            Ok::<_, std::convert::Infallible>(handle(proxy, local_ip, port, client, req).await)
        }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn handle(
    proxy: Arc<Proxy>,
    local_ip: Ipv4Addr,
    port: u16,
    client: Option<Ipv4Addr>,
    req: Request<Incoming>,
) -> ProxyResponse {
    let table = proxy.table();
    if local_ip == proxy.config.node_ip
        && (proxy.config.ingress_port == Some(port) || table.gateway().port(port).is_some())
    {
        return edge(&proxy, &table, port, false, client, req).await;
    }
    let target = table
        .by_listener(local_ip, port, proxy.config.node_ip)
        .or_else(|| {
            proxy
                .config
                .ranges
                .cluster_cidr
                .contains(local_ip)
                .then_some(Target::PodIp { ip: local_ip, port })
        });
    let Some(target) = target else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no service at {local_ip}:{port}"),
        );
    };
    let req = req.map(|b| {
        b.map_err(|e| Box::new(e) as super::route::BoxError)
            .boxed_unsync()
    });
    match proxy
        .forward(&target, &Peer::External(client), client, false, req)
        .await
    {
        Ok(resp) => resp,
        Err(e) => text(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

/// Serves a connection to the ingress TLS port or a Gateway's HTTPS
/// listener: the handshake picks the certificate by the name the client
/// asks for, then requests are routed as on a plain edge port.
async fn serve_edge_tls(proxy: Arc<Proxy>, stream: TcpStream, port: u16, client: Option<Ipv4Addr>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(proxy.ingress_tls.clone());
    // A client that never finishes its handshake does not hold a
    // connection slot for long.
    let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
    else {
        return;
    };
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let proxy = proxy.clone();
        async move {
            let table = proxy.table();
            Ok::<_, std::convert::Infallible>(edge(&proxy, &table, port, true, client, req).await)
        }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tls), service)
        .await;
}

/// Serves a request that entered the cluster's edge on the node's address:
/// the ingress ports route by the Ingresses ([`super::ingress`]), then by
/// any Gateway listener on the same port; other ports by the Gateways'
/// HTTPRoutes ([`super::gateway`]).
async fn edge(
    proxy: &Arc<Proxy>,
    table: &super::Table,
    port: u16,
    tls: bool,
    client: Option<Ipv4Addr>,
    req: Request<Incoming>,
) -> ProxyResponse {
    // HTTP/2 carries the host in the URI's authority, HTTP/1 in `Host`.
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(hyper::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let ingress_port = if tls {
        proxy.config.ingress_tls_port
    } else {
        proxy.config.ingress_port
    };
    let mut target = None;
    if ingress_port == Some(port) {
        match table.ingress().route(table, &host, req.uri().path()) {
            super::ingress::Routed::To(t) => target = Some(t),
            super::ingress::Routed::NoService(b) => {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "no service {}/{} with port {:?} for this ingress rule",
                        b.namespace, b.service, b.port
                    ),
                );
            }
            super::ingress::Routed::NoRoute => {}
        }
    }
    if target.is_none() {
        let view = super::gateway::RequestView {
            host: &host,
            path: req.uri().path(),
            query: req.uri().query().unwrap_or(""),
            method: req.method().as_str(),
            headers: req.headers(),
        };
        match table.gateway().route(table, port, &view) {
            super::gateway::GatewayRouted::To(t) => target = Some(t),
            super::gateway::GatewayRouted::Invalid(why) => {
                return text(StatusCode::INTERNAL_SERVER_ERROR, why);
            }
            super::gateway::GatewayRouted::NoRoute => {}
        }
    }
    let Some(target) = target else {
        return text(StatusCode::NOT_FOUND, "404 page not found");
    };
    let req = req.map(|b| {
        b.map_err(|e| Box::new(e) as super::route::BoxError)
            .boxed_unsync()
    });
    match proxy
        .forward(&target, &Peer::External(client), client, false, req)
        .await
    {
        Ok(resp) => resp,
        Err(e) => text(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

/// Splices a connection to `to` byte for byte.
async fn pass_through(mut from: TcpStream, to: SocketAddr) {
    let Ok(Ok(mut upstream)) =
        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(to)).await
    else {
        return;
    };
    let _ = upstream.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut from, &mut upstream).await;
}
