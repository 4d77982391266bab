//! The API server: Kubernetes' REST API over the cluster store.
//!
//! A request passes authentication ([`authn`]), authorization ([`rbac`]),
//! decoding ([`body`]), admission ([`objects`], [`admission`]) and the
//! generic [`registry`] before it reaches the store; errors become a
//! Kubernetes `Status` once, in [`status`].
//!
//! - [`serve`]: listeners, TLS (HTTP/1.1 and HTTP/2), connection limits.
//! - [`discovery`], [`openapi`]: what kubectl reads before it acts.
//! - [`handlers`], [`subresources`], [`patch`], [`watch`], [`table`]: the verbs.
//! - [`crate::agentapi::client`], [`nodeproxy`]: what nodes serve (`pods/log`,
//!   `pods/proxy`, `nodes/proxy`), forwarded to their agents.
//! - [`podcidr`]: each node's pod address range.
//! - [`bootstrap`]: what exists from the first start.

pub mod activation;
pub mod admission;
pub mod authn;
pub mod body;
pub mod bootstrap;
pub mod crds;
pub mod discovery;
pub mod encryption;
pub mod escalation;
pub mod eventsv1;
pub mod eviction;
pub mod flowcontrol;
pub mod handlers;
pub mod hpav1;
pub mod join;
pub mod kubeconfig;
pub mod local;
pub mod managed;
pub mod metrics;
pub mod metricsapi;
pub mod modules;
pub mod nodeauthz;
pub mod nodegraph;
pub mod nodeproxy;
pub mod objects;
pub mod openapi;
pub mod patch;
pub mod path;
pub mod podcidr;
pub mod priority;
pub mod protobuf;
pub mod quota;
pub mod rbac;
pub mod registry;
pub mod request;
pub mod reviews;
pub mod selectors;
pub mod serve;
pub mod skim;
pub mod status;
pub mod subresources;
pub mod table;
pub mod tunnel;
pub mod ui;
pub mod verbs;
pub mod views;
pub mod watch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use authn::{TokenAuthority, UserInfo};
use path::{Target, Verb};
use rbac::{Attributes, RbacCache};
use registry::Registry;
use status::ApiError;

use crate::resources::{self, Kind};

/// The Kubernetes version whose API wkube implements.
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "33";
pub const KUBE_GIT_VERSION: &str = "v1.33.0-wkube";

/// Configuration of the API server.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub service_cidr: crate::cluster::Cidr,
    pub node_port_range: (u16, u16),
    /// The range nodes' pod CIDRs are cut from (`--cluster-cidr`).
    pub cluster_cidr: crate::cluster::Cidr,
    /// Prefix length of each node's pod CIDR (`--node-cidr-mask-size`).
    pub node_cidr_mask_size: u8,
    /// Deadlines and limits of requests to node agents.
    pub node_client: crate::agentapi::client::NodeClientConfig,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Largest Wasm module a push accepts (read with its own limit, not
    /// `max_body_bytes`).
    pub max_module_bytes: usize,
    /// Modules compiled for nodes at once (see [`modules::compiled`]).
    pub max_concurrent_compiles: usize,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Requests in flight across the server, shared by priority levels
    /// (see [`flowcontrol`]; `system:masters` and long-running requests
    /// aside).
    pub max_requests_inflight: usize,
    /// Requests one user of the workload level may have in flight; past
    /// it, its requests queue, then 429.
    pub max_requests_inflight_per_user: usize,
    /// Watches, followed logs and streams one user may have open.
    pub max_long_running_per_user: usize,
    /// Longest a single watch request stays open.
    pub max_watch_duration: Duration,
    /// Longest a TokenRequest token lives.
    pub max_token_ttl: Duration,
    /// tolerationSeconds of the default `node.kubernetes.io/not-ready`
    /// NoExecute toleration given to pods (DefaultTolerationSeconds).
    pub default_not_ready_toleration_seconds: i64,
    /// Likewise for `node.kubernetes.io/unreachable`.
    pub default_unreachable_toleration_seconds: i64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            service_cidr: crate::cluster::Cidr::parse(crate::cluster::DEFAULT_SERVICE_CIDR)
                .expect("valid default CIDR"),
            node_port_range: (30000, 32767),
            cluster_cidr: crate::cluster::Cidr::parse(crate::cluster::DEFAULT_CLUSTER_CIDR)
                .expect("valid default CIDR"),
            node_cidr_mask_size: 18,
            node_client: crate::agentapi::client::NodeClientConfig::default(),
            max_body_bytes: 3 * 1024 * 1024,
            max_module_bytes: modules::default_max_module_bytes(),
            max_concurrent_compiles: modules::compiled::default_concurrent_compiles(),
            max_connections: 10_000,
            max_requests_inflight: flowcontrol::FlowConfig::default().max_requests_inflight,
            max_requests_inflight_per_user: 100,
            max_long_running_per_user: 1000,
            max_watch_duration: Duration::from_secs(1800),
            max_token_ttl: Duration::from_secs(48 * 3600),
            default_not_ready_toleration_seconds: 300,
            default_unreachable_toleration_seconds: 300,
        }
    }
}

impl ApiConfig {
    /// The (not-ready, unreachable) `tolerationSeconds` pods get by default.
    pub fn default_tolerations(&self) -> (i64, i64) {
        (
            self.default_not_ready_toleration_seconds,
            self.default_unreachable_toleration_seconds,
        )
    }
}

/// Everything handlers share.
pub struct ApiState {
    pub registry: Registry,
    pub tokens: TokenAuthority,
    pub rbac: Arc<RbacCache>,
    /// What each node's pods use, for the node authorizer.
    pub node_graph: Arc<nodegraph::NodeGraph>,
    /// The stored CRDs whose kinds this server serves; held so that they
    /// are followed for as long as the server lives.
    pub crds: Arc<crds::Crds>,
    pub admission: admission::Admission,
    pub config: ApiConfig,
    /// The blocks of the cluster range handed to nodes.
    pub pod_cidrs: podcidr::NodeCidrs,
    /// Reaches node agents for logs and proxying.
    pub nodes: crate::agentapi::client::NodeClient,
    /// Closes a deleted Node's tunnel; held so that the Nodes are followed
    /// for as long as the server lives.
    pub tunnel_nodes: Arc<tunnel::NodesFollowed>,
    pub metrics: metrics::Metrics,
    /// Seats per user (see [`flowcontrol`]).
    pub flow: Arc<flowcontrol::FlowControl>,
    /// Issues node credentials for the join token (`None`: joining off).
    pub joiner: Option<join::Joiner>,
    pub started: Instant,
    /// The node summaries the metrics APIs answer from.
    pub usage: metricsapi::collect::Collector,
    /// Compiles modules for nodes' engine profiles, bounded.
    pub compiler: modules::compiled::Compiler,
}

impl ApiState {
    /// RBAC check for a resource request.
    pub async fn authorize(
        &self,
        user: &UserInfo,
        verb: Verb,
        target: &Target,
    ) -> Result<(), ApiError> {
        let a = Attributes {
            verb: verb.as_str().to_string(),
            group: target.kind.group.to_string(),
            resource: target.kind.plural.to_string(),
            subresource: target.subresource.clone().unwrap_or_default(),
            namespace: target.namespace.clone().unwrap_or_default(),
            name: target.name.clone().unwrap_or_default(),
            path: None,
        };
        if let Some(node) = nodeauthz::node_of(user)
            && let nodeauthz::Decision::Deny(why) = nodeauthz::decide(self, node, &a).await
        {
            return Err(ApiError::Forbidden {
                message: format!("{}: {why}", rbac::forbidden_message(user, &a)),
                kind: a.resource.clone(),
                name: a.name.clone(),
                group: a.group.clone(),
            });
        }
        self.check(user, &a)
    }

    /// RBAC check of arbitrary attributes.
    pub fn check(&self, user: &UserInfo, a: &Attributes) -> Result<(), ApiError> {
        if self.rbac.allows(user, a) {
            return Ok(());
        }
        Err(ApiError::Forbidden {
            message: rbac::forbidden_message(user, a),
            kind: if a.path.is_some() {
                String::new()
            } else {
                a.resource.clone()
            },
            name: a.name.clone(),
            group: a.group.clone(),
        })
    }

    /// Objects may only be created in a namespace that exists and is not
    /// being deleted (Kubernetes' NamespaceLifecycle admission).
    pub async fn require_active_namespace(
        &self,
        ns: &str,
        creating: &Kind,
        name: &str,
    ) -> Result<(), ApiError> {
        // Every namespaced create asks this; only the deletion mark matters.
        #[derive(serde::Deserialize)]
        struct Marked {
            #[serde(default)]
            metadata: MarkedMeta,
        }
        #[derive(serde::Deserialize, Default)]
        struct MarkedMeta {
            #[serde(rename = "deletionTimestamp")]
            deletion_timestamp: Option<serde::de::IgnoredAny>,
        }
        let kind = resources::by_resource("", "v1", "namespaces").ok_or(ApiError::NoRoute)?;
        match self.registry.peek::<Marked>(kind, None, ns).await? {
            None => Err(ApiError::NotFound {
                group: String::new(),
                resource: "namespaces".into(),
                name: ns.into(),
            }),
            Some(n) if n.metadata.deletion_timestamp.is_some() => Err(ApiError::Forbidden {
                message: format!(
                    "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    creating.plural
                ),
                kind: creating.plural.into(),
                name: name.into(),
                group: creating.group.into(),
            }),
            Some(_) => Ok(()),
        }
    }

    /// An object marked for deletion whose last finalizer is gone is
    /// removed, as Kubernetes does after the update that cleared it.
    pub async fn finish_if_deleting(
        &self,
        kind: &'static Kind,
        ns: Option<&str>,
        name: &str,
        stored: Value,
    ) -> Result<Value, ApiError> {
        let deleting = stored.pointer("/metadata/deletionTimestamp").is_some();
        let finalizers_left = stored
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        let ns_finalizers_left = kind.deletion == resources::Deletion::NamespaceLifecycle
            && stored
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| !f.is_empty());
        if !deleting || finalizers_left || ns_finalizers_left {
            return Ok(stored);
        }
        let rv = registry::parse_rv(objects::rv_of(&stored).unwrap_or("0"))?;
        match self.registry.delete(kind, ns, name, rv).await {
            Ok(gone) => {
                // The garbage collector sees it go and collects its
                // dependents.
                self.admission.on_deleted(self, kind, &gone).await;
                Ok(gone)
            }
            Err(ApiError::NotFound { .. } | ApiError::Conflict { .. }) => Ok(stored),
            Err(e) => Err(e),
        }
    }
}

/// Build the router.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/version", axum::routing::get(version))
        .route("/version/", axum::routing::get(version))
        .route("/healthz", axum::routing::get(health))
        .route("/livez", axum::routing::get(health))
        .route("/readyz", axum::routing::get(ready))
        .route("/metrics", axum::routing::get(metrics::serve))
        .route("/api", axum::routing::get(api_root))
        .route("/apis", axum::routing::get(apis_root))
        .route("/openapi/v2", axum::routing::get(openapi::v2))
        .route("/openapi/v3", axum::routing::get(openapi::v3_index))
        .route(
            "/openapi/v3/{*path}",
            axum::routing::get(openapi::v3_document),
        )
        // Module pushes are read with their own, larger body limit.
        .route(modules::PUSH_ROUTE, axum::routing::any(modules::push))
        .route(modules::BLOB_ROUTE, axum::routing::any(modules::blob))
        .route(
            modules::compiled::COMPILED_ROUTE,
            axum::routing::any(modules::compiled::compiled),
        )
        .route(join::CACERTS_ROUTE, axum::routing::get(join::cacerts))
        .route(join::JOIN_ROUTE, axum::routing::post(join::join))
        // Agents behind NAT: their tunnels, and pod traffic passed on to them.
        .route(
            crate::agentapi::tunnel::TUNNEL,
            axum::routing::any(tunnel::open),
        )
        .route(
            crate::agentapi::tunnel::RELAY,
            axum::routing::any(tunnel::relay),
        )
        .route(
            &crate::agentapi::with_slash(crate::agentapi::tunnel::RELAY),
            axum::routing::any(tunnel::relay),
        )
        .route(
            &crate::agentapi::with_rest(crate::agentapi::tunnel::RELAY),
            axum::routing::any(tunnel::relay),
        )
        // The dashboard's files, and `/` sending browsers to it.
        .route("/", axum::routing::any(ui::root))
        .route("/ui", axum::routing::get(ui::serve))
        .route("/ui/", axum::routing::get(ui::serve))
        .route("/ui/{*file}", axum::routing::get(ui::serve))
        .fallback(resource)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .with_state(state)
}

async fn version() -> Response {
    request::json_response(
        StatusCode::OK,
        &json!({
            "major": KUBE_MAJOR,
            "minor": KUBE_MINOR,
            "gitVersion": KUBE_GIT_VERSION,
            "gitCommit": env!("CARGO_PKG_VERSION"),
            "gitTreeState": "clean",
            "buildDate": "",
            "goVersion": "rust",
            "compiler": "rustc",
            "platform": format!("{}/{}", std::env::consts::OS, crate::cluster::node_arch()),
        }),
    )
}

async fn health() -> Response {
    (StatusCode::OK, "ok").into_response()
}

/// Ready when the store answers: with an external etcd, a lost connection
/// takes this server out of a load balancer's rotation until it is back.
async fn ready(State(state): State<Arc<ApiState>>) -> Response {
    let probe = state.registry.store().range(crate::store::RangeRequest {
        range: crate::store::KeyRange::single("/registry/health"),
        count_only: true,
        ..Default::default()
    });
    match tokio::time::timeout(std::time::Duration::from_secs(2), probe).await {
        Ok(Ok(_)) => (StatusCode::OK, "ok").into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("[-]etcd failed: {e}\nreadyz check failed\n"),
        )
            .into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "[-]etcd failed: no answer within 2s\nreadyz check failed\n",
        )
            .into_response(),
    }
}

async fn api_root(headers: HeaderMap) -> Response {
    discovery::root(&headers, true)
}

async fn apis_root(headers: HeaderMap) -> Response {
    discovery::root(&headers, false)
}

/// Paths anyone may read without credentials.
fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/version" | "/version/" | "/healthz" | "/livez" | "/readyz"
    ) || path == join::CACERTS_ROUTE
        // The join request carries its own secret, checked by its handler.
        || path == join::JOIN_ROUTE
}

/// The caller's identity, attached to every request.
#[derive(Clone, Debug)]
pub struct Caller(pub UserInfo);

impl Caller {
    /// The identity [`authenticate`] attached to `req`.
    ///
    /// # Errors
    /// 401 when none is attached (a route outside the middleware).
    pub fn of<B>(req: &axum::http::Request<B>) -> Result<UserInfo, ApiError> {
        req.extensions()
            .get::<Caller>()
            .map(|c| c.0.clone())
            .ok_or(ApiError::Unauthorized)
    }
}

/// The identity proven by the connection's client certificate, if any.
#[derive(Clone, Debug, Default)]
pub struct PeerIdentity(pub Option<UserInfo>);

async fn authenticate(
    State(state): State<Arc<ApiState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    // The dashboard's static files hold no data: served to anyone.
    if ui::is_exempt(&method, &path, req.headers()) {
        return next.run(req).await;
    }
    let peer = req
        .extensions()
        .get::<PeerIdentity>()
        .and_then(|p| p.0.clone());
    let seat = flowcontrol::Seat::of(&method, &path, req.uri().query());
    let admitted = admit(&state, req.headers(), peer, &method, &path, seat).await;
    let (user, permit) = match admitted {
        Ok(admitted) => admitted,
        Err(e) => {
            let resp = e.into_response();
            state
                .metrics
                .observe(&method, &path, resp.status(), started.elapsed());
            drain_briefly(req.into_body()).await;
            return resp;
        }
    };
    req.extensions_mut().insert(Caller(user.clone()));
    let mut resp = next.run(req).await;
    flowcontrol::set_headers(resp.headers_mut(), &user);
    state
        .metrics
        .observe(&method, &path, resp.status(), started.elapsed());
    // The seat is held until the body is sent (a watch's, for as long as
    // it streams).
    match permit {
        Some(p) => resp.map(|body| flowcontrol::HeldBody::wrap(body, p)),
        None => resp,
    }
}

/// Who the caller is (after impersonation) and the seat the request takes,
/// or why it is refused before any handler sees it: no valid credential,
/// an impersonation not allowed, a non-resource URL not allowed, or no
/// seat left.
async fn admit(
    state: &ApiState,
    headers: &axum::http::HeaderMap,
    peer: Option<UserInfo>,
    method: &axum::http::Method,
    path: &str,
    seat: flowcontrol::Seat,
) -> Result<(UserInfo, Option<flowcontrol::Permit>), ApiError> {
    let auth = headers.get(header::AUTHORIZATION).cloned();
    let user = match identify(state, auth, peer).await {
        Ok(Some(u)) => u,
        Ok(None) if is_public(path) => UserInfo::anonymous(),
        Ok(None) | Err(_) => return Err(ApiError::Unauthorized),
    };
    let user = impersonate(state, user, headers)?;
    // The tunnel and the relay check their callers themselves.
    let relay = crate::agentapi::tunnel::is_relay(path);
    let own_checks = relay || crate::agentapi::tunnel::is_tunnel(path);
    if !is_public(path)
        && path::parse(path).ok().flatten().is_none()
        && !is_virtual(path)
        && !own_checks
        && !modules::is_blob_path(path)
    {
        // Non-resource URLs go through RBAC as `get PATH`.
        let a = Attributes {
            verb: method.as_str().to_ascii_lowercase(),
            path: Some(path.to_string()),
            ..Default::default()
        };
        state.check(&user, &a)?;
    }
    // Relayed pod traffic is bounded by the relay's own seats, apart from
    // the API's: a pod's request must not take the seats of node
    // heartbeats and controllers, nor be classed by its own query.
    if relay {
        return Ok((user, None));
    }
    let permit = state.flow.acquire(&user, seat).await?;
    Ok((user, permit))
}

/// Reads what the client is still sending of a request refused before its
/// body was read, up to 64 KiB and for at most 100 ms. Over HTTP/2 a
/// refusal that arrives mid-upload ends the stream with a reset, which some
/// clients (curl 7.x among them) report as a stream error instead of the
/// answer; a small body finished first reads as the clean 401 or 403.
/// Bounded, so a caller without credentials cannot hold the server longer.
async fn drain_briefly(body: axum::body::Body) {
    use http_body_util::BodyExt;
    const LIMIT: usize = 64 << 10;
    let mut body = body;
    let mut read = 0usize;
    let _ = tokio::time::timeout(std::time::Duration::from_millis(100), async {
        while read < LIMIT {
            match body.frame().await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
    })
    .await;
}

/// `Impersonate-User`, `Impersonate-Group` and `Impersonate-Uid` (what
/// `kubectl --as` and `--as-group` send): the request then runs as that
/// user, if the caller holds the `impersonate` verb on each of them —
/// `users` (or `serviceaccounts`, for a service account's name), `groups`
/// and `uids` — as in Kubernetes. Without the headers the caller is left
/// as is; a refused impersonation is a 403, never a silent fall back to
/// the caller's own rights.
///
/// # Errors
/// 403 for an impersonation the caller may not do, 400 for groups or a
/// uid without a user.
fn impersonate(
    state: &ApiState,
    caller: UserInfo,
    headers: &axum::http::HeaderMap,
) -> Result<UserInfo, ApiError> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_string)
            .collect()
    };
    let users = values("impersonate-user");
    let groups = values("impersonate-group");
    let uids = values("impersonate-uid");
    let extras = headers
        .keys()
        .any(|k| k.as_str().starts_with("impersonate-extra-"));
    let Some(user) = users.first() else {
        if groups.is_empty() && uids.is_empty() && !extras {
            return Ok(caller);
        }
        return Err(ApiError::bad_request(
            "requested impersonation of groups, a uid or extra fields without impersonating a user",
        ));
    };
    if users.len() > 1 || uids.len() > 1 {
        return Err(ApiError::bad_request(
            "only one Impersonate-User and one Impersonate-Uid may be given",
        ));
    }
    let allowed = |resource: &str, namespace: &str, name: &str| {
        let a = Attributes {
            verb: "impersonate".into(),
            group: String::new(),
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
            subresource: String::new(),
            path: None,
        };
        state.check(&caller, &a)
    };
    match user
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
    {
        Some((ns, name)) => allowed("serviceaccounts", ns, name)?,
        None => allowed("users", "", user)?,
    }
    for group in &groups {
        allowed("groups", "", group)?;
    }
    if let Some(uid) = uids.first() {
        let a = Attributes {
            verb: "impersonate".into(),
            group: "authentication.k8s.io".into(),
            resource: "uids".into(),
            name: uid.clone(),
            ..Default::default()
        };
        state.check(&caller, &a)?;
    }
    if extras {
        // Extra fields carry nothing wkube's authorization reads; refusing
        // them is safer than pretending to honour them.
        return Err(ApiError::bad_request(
            "Impersonate-Extra-* headers are not supported",
        ));
    }
    let mut impersonated_groups = groups;
    if user.starts_with("system:serviceaccount:")
        && let Some((ns, _)) = user
            .strip_prefix("system:serviceaccount:")
            .and_then(|r| r.split_once(':'))
    {
        for g in [
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{ns}"),
        ] {
            if !impersonated_groups.contains(&g) {
                impersonated_groups.push(g);
            }
        }
    }
    if user != "system:anonymous"
        && !impersonated_groups
            .iter()
            .any(|g| g == "system:authenticated")
    {
        impersonated_groups.push("system:authenticated".into());
    }
    tracing::debug!(caller = %caller.username, as_user = %user, "impersonating");
    Ok(UserInfo {
        username: user.clone(),
        uid: uids.first().cloned().unwrap_or_default(),
        groups: impersonated_groups,
    })
}

/// Paths of kinds that are not stored (reviews, activations, metrics):
/// their handlers check RBAC as for resources, not as non-resource URLs.
fn is_virtual(path: &str) -> bool {
    reviews::parse(path).is_some()
        || activation::parse(path).is_some()
        || metricsapi::parse(path).is_some()
        || metricsapi::custom::parse(path).is_some()
        || views::find(path).is_some()
}

async fn identify(
    state: &ApiState,
    auth: Option<axum::http::HeaderValue>,
    peer: Option<UserInfo>,
) -> Result<Option<UserInfo>, ApiError> {
    if let Some(auth) = auth {
        let auth = auth.to_str().map_err(|_| ApiError::Unauthorized)?;
        let token = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "))
            .ok_or(ApiError::Unauthorized)?
            .trim();
        let claims = authenticate_token(state, token, authn::API_AUDIENCE).await?;
        return Ok(Some(authn::user_from_claims(&claims)));
    }
    Ok(peer)
}

/// The claims of a bearer token valid for `audience`: signed by the
/// cluster, unexpired, and (for a service account's token) still bound to
/// an existing account and pod. Requests and TokenReviews both ask here.
///
/// # Errors
/// 401 for a token that is not valid.
pub(crate) async fn authenticate_token(
    state: &ApiState,
    token: &str,
    audience: &str,
) -> Result<authn::Claims, ApiError> {
    let claims = state.tokens.verify(token, audience).map_err(|e| {
        tracing::debug!(error = %e, "token refused");
        ApiError::Unauthorized
    })?;
    if let Some(k) = &claims.kubernetes {
        bootstrap::check_token_owner(&state.registry, k).await?;
    }
    Ok(claims)
}

/// Every path under `/api` and `/apis` that is not discovery.
async fn resource(State(state): State<Arc<ApiState>>, req: Request) -> Response {
    let user = req
        .extensions()
        .get::<Caller>()
        .map(|c| c.0.clone())
        .unwrap_or_else(UserInfo::anonymous);
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    // Discovery of one group or group-version.
    if parts.method == Method::GET
        && let Some(resp) = group_discovery(&path)
    {
        return resp;
    }
    let limit = state.config.max_body_bytes;
    let bytes = match body::read_limited(&parts.headers, Body::new(body), limit).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    if let Some(target) = metricsapi::parse(&path) {
        return metricsapi::handle(&state, &user, &parts.method, target, parts.uri.query())
            .await
            .unwrap_or_else(IntoResponse::into_response);
    }
    if let Some(target) = metricsapi::custom::parse(&path) {
        let answer = match target {
            Ok(t) => {
                metricsapi::custom::handle(&state, &user, &parts.method, t, parts.uri.query()).await
            }
            Err(e) => Err(e),
        };
        return answer.unwrap_or_else(IntoResponse::into_response);
    }
    if let Some(ns) = activation::parse(&path) {
        return activation::handle(&state, &user, &parts.method, ns, &parts.headers, &bytes)
            .await
            .unwrap_or_else(IntoResponse::into_response);
    }
    if let Some(view) = views::find(&path) {
        return views::handle(
            view,
            state,
            user,
            parts.method,
            &path,
            parts.uri.query(),
            parts.headers,
            bytes,
        )
        .await;
    }
    if let Some(review) = reviews::parse(&path) {
        return match reviews::handle(&state, &user, review, &parts.headers, &bytes).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
    }
    match handlers::dispatch(
        state.clone(),
        user,
        parts.method,
        &path,
        parts.uri.query(),
        parts.headers,
        bytes,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn group_discovery(path: &str) -> Option<Response> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let body = match segs.as_slice() {
        ["api", v] => discovery::resource_list("", v),
        ["apis", g] => discovery::api_group(g),
        ["apis", g, v] => discovery::resource_list(g, v),
        _ => return None,
    };
    Some(match body {
        Some(b) => request::json_response(StatusCode::OK, &b),
        None => ApiError::NoRoute.into_response(),
    })
}

/// What `start` needs.
pub struct StartOptions {
    pub config: ApiConfig,
    /// Where the cluster PKI lives (`DATA/pki`): the signing key is kept here.
    pub pki_dir: std::path::PathBuf,
    /// The address in-cluster clients reach the API server at.
    pub advertise: std::net::Ipv4Addr,
    /// The port the API server listens on (for the `kubernetes` service).
    pub port: u16,
    /// The client certificate presented to node agents and the CA their
    /// certificates are checked against; `None` speaks plain HTTP to them
    /// (`--tls off`).
    pub kubelet_client_tls: Option<crate::pki::ClientTls>,
    /// Node joining (`wkube agent --token`); `None` turns it off.
    pub joiner: Option<join::Joiner>,
}

/// Why the API server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("service-account signing key: {0}")]
    Keys(#[from] authn::AuthnError),
    #[error("Secrets encryption keys: {0}")]
    Encryption(#[from] encryption::EncryptionError),
    #[error("sealing stored Secrets: {0}")]
    Reseal(ApiError),
    #[error("loading RBAC policy: {0}")]
    Rbac(#[from] crate::store::StoreError),
    #[error("creating the default objects: {0}")]
    Bootstrap(ApiError),
    #[error("pod CIDRs: {0}")]
    PodCidrs(String),
    #[error("client of node agents: {0}")]
    NodeClient(#[from] crate::agentapi::client::NodeClientError),
}

/// Build the shared state, create the default objects and start the API
/// server's own loops. Serve it with [`serve::serve`].
pub async fn start(
    store: crate::store::Store,
    opts: StartOptions,
) -> Result<Arc<ApiState>, StartError> {
    let pod_cidrs =
        podcidr::NodeCidrs::new(opts.config.cluster_cidr, opts.config.node_cidr_mask_size)
            .map_err(StartError::PodCidrs)?;
    let nodes = crate::agentapi::client::NodeClient::new(
        opts.config.node_client.clone(),
        opts.kubelet_client_tls.as_ref(),
    )?;
    let tokens = TokenAuthority::load_or_create(&opts.pki_dir)?;
    let keyring = Arc::new(encryption::Keyring::load_or_create(&opts.pki_dir)?);
    let rbac = RbacCache::start(store.clone()).await?;
    let node_graph = nodegraph::NodeGraph::start(store.clone()).await?;
    let crds = crds::start(store.clone()).await?;
    let tunnel_nodes = tunnel::NodesFollowed::start(store.clone(), nodes.tunnels().clone()).await?;
    let flow = flowcontrol::FlowControl::with_config(flowcontrol::FlowConfig {
        max_requests_inflight: opts.config.max_requests_inflight,
        requests_per_user: opts.config.max_requests_inflight_per_user,
        long_running_per_user: opts.config.max_long_running_per_user,
        ..Default::default()
    });
    let compiler = modules::compiled::Compiler::new(opts.config.max_concurrent_compiles);
    let state = Arc::new(ApiState {
        registry: Registry::with_encryption(store, keyring.clone()),
        tokens,
        rbac,
        node_graph,
        crds,
        admission: admission::Admission,
        config: opts.config,
        pod_cidrs,
        nodes,
        tunnel_nodes,
        metrics: metrics::Metrics::default(),
        flow,
        joiner: opts.joiner,
        started: Instant::now(),
        usage: metricsapi::collect::Collector::default(),
        compiler,
    });
    // Before serving: no Secret stays in plaintext, or under an old key,
    // once the server is up.
    let resealed = state
        .registry
        .reseal_secrets()
        .await
        .map_err(StartError::Reseal)?;
    if resealed > 0 {
        tracing::info!(
            resealed,
            key = keyring.primary(),
            "sealed Secrets again with the first key of {}",
            encryption::KEYS_FILE
        );
    }
    if let [_, older @ ..] = keyring.names().as_slice()
        && !older.is_empty()
    {
        tracing::info!(
            "every Secret is sealed with {}; keys {older:?} open nothing any more and may be removed from {}",
            keyring.primary(),
            encryption::KEYS_FILE
        );
    }
    bootstrap::run(&state, opts.advertise, opts.port)
        .await
        .map_err(StartError::Bootstrap)?;
    modules::gc::spawn_sweeper(state.clone());
    Ok(state)
}
