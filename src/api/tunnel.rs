//! The API server's side of agents behind NAT (see
//! [`crate::agentapi::tunnel`]):
//! - [`open`]: an agent turns its own connection into the way in to it;
//!   the server keeps it in its node client's tunnels while it lasts;
//! - [`relay`]: other nodes' proxies send pod traffic for such a node here,
//!   and it goes on through that node's tunnel.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::ApiState;
use super::Caller;
use super::nodeauthz;
use super::rbac::{Attributes, forbidden_message};
use super::status::ApiError;
use crate::agentapi::tunnel::{
    CONNECTION_WINDOW, POD_AUTHORIZATION, POD_HOST, PROTOCOL, RELAYED, STREAM_WINDOW, Tunnels,
};

/// How often the server pings an idle tunnel, and how long it waits for
/// the answer before taking the tunnel for dead (a NAT that dropped the
/// mapping, a cut link): the agent then dials again.
const KEEPALIVE: Duration = Duration::from_secs(15);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET /apis/wkube.dev/v1/nodes/{node}/tunnel` with `Upgrade:
/// wkube-tunnel`: node `node` opens its tunnel.
pub async fn open(
    State(state): State<Arc<ApiState>>,
    Path(node): Path<String>,
    mut req: Request,
) -> Response {
    match accept(&state, &node, &mut req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn accept(state: &ApiState, node: &str, req: &mut Request) -> Result<Response, ApiError> {
    let user = Caller::of(req)?;
    // The tunnel stands for the node's agent: only that node may open it,
    // whatever else RBAC grants the caller.
    if nodeauthz::node_of(&user) != Some(node) {
        let a = Attributes {
            verb: "create".into(),
            group: "wkube.dev".into(),
            resource: "nodes".into(),
            subresource: "tunnel".into(),
            name: node.into(),
            ..Default::default()
        };
        return Err(ApiError::Forbidden {
            message: format!(
                "{}: only node {node:?} may open its own tunnel",
                forbidden_message(&user, &a)
            ),
            kind: "nodes".into(),
            name: node.into(),
            group: "wkube.dev".into(),
        });
    }
    if req.method() != Method::GET {
        return Err(ApiError::MethodNotAllowed);
    }
    // A Node that was deleted takes its way in along: an old machine
    // still holding the name's credential cannot come back through it.
    super::nodeproxy::agent_of(state, node).await?;
    let has = |name: header::HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has(header::UPGRADE, PROTOCOL) || !has(header::CONNECTION, "upgrade") {
        return Err(ApiError::bad_request(format!(
            "a tunnel is opened with an HTTP/1.1 GET carrying \"Connection: Upgrade\" and \"Upgrade: {PROTOCOL}\""
        )));
    }
    let Some(upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return Err(ApiError::bad_request(
            "this connection cannot be upgraded: open the tunnel over HTTP/1.1",
        ));
    };
    // The connection's slot and the server's stop signal stay with the
    // tunnel (every connection the API server serves has them).
    let hold = req
        .extensions()
        .get::<super::serve::ConnectionHold>()
        .cloned();
    tokio::spawn(keep(
        state.nodes.tunnels().clone(),
        node.to_string(),
        upgrade,
        hold,
    ));
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    resp.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static(PROTOCOL));
    Ok(resp)
}

/// Speaks HTTP/2 as the client on the upgraded connection, and keeps it
/// among the tunnels until it ends, a newer tunnel of the node replaces
/// it, its Node is deleted ([`NodesFollowed`]) or the server stops.
async fn keep(
    tunnels: Arc<Tunnels>,
    node: String,
    upgrade: hyper::upgrade::OnUpgrade,
    mut hold: Option<super::serve::ConnectionHold>,
) {
    let io = match upgrade.await {
        Ok(io) => io,
        Err(e) => {
            tracing::warn!(node, error = %e, "tunnel upgrade failed");
            return;
        }
    };
    let handshake = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .handshake::<_, Full<Bytes>>(io)
        .await;
    let (send, conn) = match handshake {
        Ok(parts) => parts,
        Err(e) => {
            tracing::warn!(node, error = %e, "tunnel handshake failed");
            return;
        }
    };
    let (id, close) = tunnels.attach(&node, send);
    tracing::info!(node, "node tunnel open");
    let stopping = async {
        match hold.as_mut() {
            Some(h) => h.stopping().await,
            None => std::future::pending().await,
        }
    };
    // Returning drops the connection, which closes it. Closing a tunnel
    // also drops the server's sender, which ends `conn` too: the close is
    // looked at first so that it is logged as the server's doing.
    let ended = tokio::select! {
        biased;
        () = close.notified() => None,
        () = stopping => None,
        ended = conn => Some(ended),
    };
    tunnels.detach(&node, id);
    match ended {
        Some(Ok(())) => tracing::info!(node, "node tunnel closed"),
        Some(Err(e)) => tracing::info!(node, error = %e, "node tunnel lost"),
        None => tracing::info!(node, "node tunnel closed by the server"),
    }
}

/// Where Nodes are stored.
const NODES_PREFIX: &str = "/registry/nodes/";

/// Closes the tunnel of a node whose Node object is deleted: the way in to
/// a machine goes with its Node, as a new tunnel is refused without one.
/// Follows the stored Nodes for as long as it is held.
pub struct NodesFollowed(Arc<Tunnels>);

impl NodesFollowed {
    /// Starts following the stored Nodes for `tunnels`.
    ///
    /// # Errors
    /// The first read of the Nodes failed.
    pub async fn start(
        store: crate::store::Store,
        tunnels: Arc<Tunnels>,
    ) -> Result<Arc<NodesFollowed>, crate::store::StoreError> {
        let this = Arc::new(NodesFollowed(tunnels));
        crate::store::follow::follow(store, NODES_PREFIX, &this).await?;
        Ok(this)
    }
}

/// The node a stored Node's key names.
fn node_of_key(key: &[u8]) -> Option<&str> {
    std::str::from_utf8(key.strip_prefix(NODES_PREFIX.as_bytes())?).ok()
}

impl crate::store::follow::Mirror for NodesFollowed {
    fn apply(&self, change: crate::store::follow::Change<'_>) {
        use crate::store::follow::Change;
        match change {
            Change::Loaded(_) => {
                let present: std::collections::HashSet<&str> = change
                    .updates()
                    .filter_map(|(key, _)| node_of_key(key))
                    .collect();
                self.0.retain(|node| present.contains(node));
            }
            Change::Events(_) => {
                for (key, value) in change.updates() {
                    if let (Some(node), None) = (node_of_key(key), value) {
                        self.0.close(node);
                    }
                }
            }
            // A deletion missed meanwhile is caught by the next load.
            Change::Lost => {}
        }
    }
}

/// `ANY /apis/wkube.dev/v1/nodes/{node}/podip/{ip}/{port}[/{rest}]`: pod
/// traffic for a node's pod address, passed on to that node's agent (its
/// tunnel when it has one). Nodes may send it, as they may send pod
/// traffic to each other's agents; anyone else needs `nodes/proxy`.
pub async fn relay(
    State(state): State<Arc<ApiState>>,
    Path(params): Path<HashMap<String, String>>,
    req: Request,
) -> Response {
    match pass_on(&state, params, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn pass_on(
    state: &ApiState,
    params: HashMap<String, String>,
    req: Request,
) -> Result<Response, ApiError> {
    let user = Caller::of(&req)?;
    let param = |k: &str| params.get(k).map(String::as_str).unwrap_or_default();
    let node = param("node");
    if nodeauthz::node_of(&user).is_none() {
        state.check(
            &user,
            &Attributes {
                verb: proxy_verb(req.method()),
                resource: "nodes".into(),
                subresource: "proxy".into(),
                name: node.into(),
                ..Default::default()
            },
        )?;
    }
    let ip: std::net::Ipv4Addr = param("ip")
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid pod address {:?}", param("ip"))))?;
    let port: u16 = param("port")
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid port {:?}", param("port"))))?;
    let agent = super::nodeproxy::agent_of(state, node).await?;
    // Only what cannot be dialed is relayed: the relay does not carry
    // traffic between nodes that reach each other.
    if !agent.behind_nat {
        return Err(ApiError::bad_request(format!(
            "node {node:?} is not behind NAT: deliver its pod traffic to its agent"
        )));
    }
    // The rest as it was sent (the route's parameter is percent-decoded):
    // `/apis/wkube.dev/v1/nodes/N/podip/IP/PORT/REST`.
    let rest = req.uri().path().splitn(10, '/').nth(9).unwrap_or_default();
    if rest.split('/').any(is_dot_segment) {
        return Err(ApiError::bad_request(
            "a relayed path may not hold \".\" or \"..\" segments",
        ));
    }
    let seat = state
        .nodes
        .tunnels()
        .relays
        .seat(&user.username)
        .ok_or(ApiError::TooManyRequests)?;
    let mut path = format!("{}/{rest}", crate::agentapi::pod_ip(ip, port));
    if let Some(q) = req.uri().query() {
        path.push('?');
        path.push_str(q);
    }
    let (parts, body) = req.into_parts();
    let body = super::body::read_limited(&parts.headers, body, state.config.max_body_bytes).await?;
    // The caller's credentials stay here; the request's own come back
    // from where the sending proxy put them.
    let mut headers = super::nodeproxy::request_headers(&parts.headers);
    if let Some(auth) = headers.remove(POD_AUTHORIZATION) {
        headers.insert(header::AUTHORIZATION, auth);
    }
    if let Some(host) = headers.remove(POD_HOST) {
        headers.insert(header::HOST, host);
    }
    let resp = state
        .nodes
        .send(&agent, parts.method, &path, headers, body)
        .await?;
    let mut out = super::nodeproxy::agent_answer(resp);
    out.headers_mut()
        .insert(RELAYED, HeaderValue::from_static("1"));
    // The seat is held until the answer's body is sent.
    Ok(out.map(|body| {
        Body::new(body.map_frame(move |frame| {
            let _held = &seat;
            frame
        }))
    }))
}

/// The verb `nodes/proxy` is checked with for `method`, as Kubernetes
/// reads a connection subresource's method.
fn proxy_verb(method: &Method) -> String {
    match *method {
        Method::GET | Method::HEAD => "get".into(),
        Method::POST => "create".into(),
        Method::PUT => "update".into(),
        Method::PATCH => "patch".into(),
        Method::DELETE => "delete".into(),
        // Only a rule for every verb covers anything else.
        ref other => other.as_str().to_ascii_lowercase(),
    }
}

/// `.` or `..`, written plainly or percent-encoded.
fn is_dot_segment(seg: &str) -> bool {
    let decoded = percent_encoding::percent_decode_str(seg).decode_utf8_lossy();
    decoded == "." || decoded == ".."
}
