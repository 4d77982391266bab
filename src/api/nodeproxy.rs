//! The subresources a node serves, passed on to its agent through
//! [`crate::agentapi::client`]:
//!
//! - `pods/log` → agent `GET /containerLogs/NS/POD/CONTAINER?…`, checked
//!   first as Kubernetes checks it (container choice, a pod on no node, a
//!   container still waiting) and streamed back as `text/plain`;
//! - `pods/proxy` (`pods/NAME[:PORT]/proxy/PATH`, every method) → agent
//!   `/proxy/NS/POD/PORT/PATH?query`, the response passed back as it is;
//! - `nodes/proxy` → the agent's own paths.
//!
//! `pods/exec`, `pods/attach` and `pods/portforward` are answered here too:
//! a Wasm pod has no process to run commands in, no terminal and no
//! sockets, so they get a 400 that says so instead of a protocol error.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;

use super::ApiState;
use super::request::Query;
use super::status::ApiError;
use crate::agentapi::client::{AgentBody, AgentEndpoint, NodeClientError};
use crate::resources::{self, FieldError, FieldErrorKind, Kind, Subresource};

/// Most bytes of an agent's error body read to build a Status.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// A request passed on to an agent.
pub struct Forward<'a> {
    pub method: Method,
    /// The path after `/proxy`, with its leading `/` (empty for none).
    pub rest: &'a str,
    /// The query as the client sent it.
    pub raw_query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
}

fn kind(plural: &str) -> Result<&'static Kind, ApiError> {
    resources::by_resource("", "v1", plural).ok_or(ApiError::NoRoute)
}

// --- pods/log ------------------------------------------------------------

/// What a log request asks for: Kubernetes' `PodLogOptions`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub container: Option<String>,
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<i64>,
    pub limit_bytes: Option<i64>,
    pub since_seconds: Option<i64>,
    /// RFC 3339, normalized to UTC seconds.
    pub since_time: Option<String>,
}

impl LogOptions {
    /// Read and validate the query of a `pods/NAME/log` request.
    ///
    /// # Errors
    /// 400 for a number or time that does not parse, 422 (kind
    /// `PodLogOptions`) for values Kubernetes' validation refuses.
    pub fn from_query(query: &Query, pod: &str) -> Result<Self, ApiError> {
        let int = |key: &str| -> Result<Option<i64>, ApiError> {
            match query.get(key).filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
                    ApiError::bad_request(format!("invalid {key} {v:?}: must be an integer"))
                }),
            }
        };
        let since_time = match query.get("sinceTime").filter(|v| !v.is_empty()) {
            None => None,
            Some(v) => Some(normalize_rfc3339(v).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid sinceTime {v:?}: must be an RFC 3339 time such as 2006-01-02T15:04:05Z"
                ))
            })?),
        };
        let opts = LogOptions {
            container: query
                .get("container")
                .filter(|c| !c.is_empty())
                .map(str::to_string),
            follow: query.flag("follow"),
            previous: query.flag("previous"),
            timestamps: query.flag("timestamps"),
            tail_lines: int("tailLines")?,
            limit_bytes: int("limitBytes")?,
            since_seconds: int("sinceSeconds")?,
            since_time,
        };
        let mut causes = Vec::new();
        if let Some(n) = opts.tail_lines.filter(|n| *n < 0) {
            causes.push(FieldError::invalid(
                "tailLines",
                n.to_string(),
                "must be greater than or equal to 0",
            ));
        }
        if let Some(n) = opts.limit_bytes.filter(|n| *n < 1) {
            causes.push(FieldError::invalid(
                "limitBytes",
                n.to_string(),
                "must be greater than 0",
            ));
        }
        match (opts.since_seconds, &opts.since_time) {
            (Some(_), Some(_)) => causes.push(FieldError {
                kind: FieldErrorKind::Forbidden,
                field: String::new(),
                value: None,
                detail: "at most one of `sinceTime` or `sinceSeconds` may be specified".into(),
            }),
            (Some(n), None) if n < 1 => causes.push(FieldError::invalid(
                "sinceSeconds",
                n.to_string(),
                "must be greater than 0",
            )),
            _ => {}
        }
        if !causes.is_empty() {
            return Err(ApiError::Invalid {
                group: String::new(),
                kind: "PodLogOptions".into(),
                name: pod.to_string(),
                causes,
            });
        }
        Ok(opts)
    }

    /// The agent's query, as Kubernetes builds it for the kubelet (keys in
    /// order, flags only when set).
    pub fn agent_query(&self) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if self.follow {
            pairs.push(("follow", "true".into()));
        }
        if let Some(n) = self.limit_bytes {
            pairs.push(("limitBytes", n.to_string()));
        }
        if self.previous {
            pairs.push(("previous", "true".into()));
        }
        if let Some(n) = self.since_seconds {
            pairs.push(("sinceSeconds", n.to_string()));
        }
        if let Some(t) = &self.since_time {
            pairs.push(("sinceTime", t.clone()));
        }
        if let Some(n) = self.tail_lines {
            pairs.push(("tailLines", n.to_string()));
        }
        if self.timestamps {
            pairs.push(("timestamps", "true".into()));
        }
        serde_urlencoded::to_string(&pairs).unwrap_or_default()
    }
}

/// An RFC 3339 time, rewritten in UTC to whole seconds (as Kubernetes
/// sends `sinceTime` on).
fn normalize_rfc3339(v: &str) -> Option<String> {
    use time::format_description::well_known::Rfc3339;
    let t = time::OffsetDateTime::parse(v, &Rfc3339).ok()?;
    t.to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .ok()?
        .format(&Rfc3339)
        .ok()
}

/// Every container name of a pod, as Kubernetes visits them: init
/// containers, containers, ephemeral containers.
fn container_names(pod: &Value) -> Vec<String> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|list| {
            pod.pointer(&format!("/spec/{list}"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// The container a log request reads: the one named, or the only one.
///
/// # Errors
/// 400 with Kubernetes' messages when the name is missing on a pod of
/// several containers or names none of them.
pub fn choose_container(pod: &Value, wanted: Option<&str>) -> Result<String, ApiError> {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let all = container_names(pod);
    match wanted {
        Some(c) if all.iter().any(|n| n == c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None => {
            let main: Vec<&str> = pod
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map(|cs| {
                    cs.iter()
                        .filter_map(|c| c.get("name").and_then(Value::as_str))
                        .collect()
                })
                .unwrap_or_default();
            match main.as_slice() {
                [only] => Ok(only.to_string()),
                [] => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}"
                ))),
                _ => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    all.join(" ")
                ))),
            }
        }
    }
}

/// The node a pod is bound to.
///
/// # Errors
/// 400 `pod NAME does not have a host assigned` (Kubernetes' words for a
/// pod no node serves yet).
fn assigned_node<'p>(pod: &'p Value, name: &str) -> Result<&'p str, ApiError> {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("pod {name} does not have a host assigned")))
}

/// A container with nothing to read yet, by its reported status, as the
/// kubelet tells it: waiting, and no earlier run to fall back on.
///
/// # Errors
/// 400 `container "C" in pod "P" is waiting to start: REASON`.
pub fn check_not_waiting(pod: &Value, container: &str) -> Result<(), ApiError> {
    let pod_name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let status = [
        "containerStatuses",
        "initContainerStatuses",
        "ephemeralContainerStatuses",
    ]
    .iter()
    .filter_map(|list| pod.pointer(&format!("/status/{list}"))?.as_array())
    .flatten()
    .find(|s| s.get("name").and_then(Value::as_str) == Some(container));
    let Some(status) = status else {
        return Ok(());
    };
    let state = status.get("state");
    let ran = state.is_some_and(|s| s.get("running").is_some() || s.get("terminated").is_some())
        || status.pointer("/lastState/terminated").is_some();
    let Some(waiting) = state.and_then(|s| s.get("waiting")).filter(|_| !ran) else {
        return Ok(());
    };
    let why = match waiting.get("reason").and_then(Value::as_str).unwrap_or("") {
        "ErrImagePull" => ": image can't be pulled".to_string(),
        "ImagePullBackOff" => ": trying and failing to pull image".to_string(),
        "" => " - no logs yet".to_string(),
        reason => format!(": {reason}"),
    };
    Err(ApiError::bad_request(format!(
        "container {container:?} in pod {pod_name:?} is waiting to start{why}"
    )))
}

/// Serve `GET pods/NAME/log`.
///
/// # Errors
/// Validation errors as Kubernetes words them, 404 for a missing pod or
/// node, 503 naming the node when its agent cannot be reached, and the
/// agent's own errors as a Status.
pub async fn pod_log(
    state: &ApiState,
    ns: &str,
    name: &str,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let opts = LogOptions::from_query(query, name)?;
    let pod = state.registry.get(kind("pods")?, Some(ns), name).await?;
    let container = choose_container(&pod, opts.container.as_deref())?;
    let node = assigned_node(&pod, name)?;
    if !opts.previous {
        check_not_waiting(&pod, &container)?;
    }
    let agent = agent_of(state, node).await?;
    let mut path = crate::agentapi::container_logs(ns, name, &container);
    let q = opts.agent_query();
    if !q.is_empty() {
        path.push('?');
        path.push_str(&q);
    }
    let resp = state.nodes.get(&agent, &path).await?;
    if !resp.status().is_success() {
        return Err(agent_error(&agent, resp).await);
    }
    let mut out = Response::new(Body::new(resp.into_body()));
    out.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(out)
}

/// The agent of a node, from its Node object.
pub(crate) async fn agent_of(state: &ApiState, node: &str) -> Result<AgentEndpoint, ApiError> {
    let obj = state.registry.get(kind("nodes")?, None, node).await?;
    Ok(AgentEndpoint::of_node(&obj)?)
}

/// An agent's error response as a Status: its message (plain text, or the
/// message of a Status it sent) with its code.
async fn agent_error(agent: &AgentEndpoint, resp: Response<AgentBody>) -> ApiError {
    let code = resp.status();
    let body = read_prefix(resp.into_body(), MAX_ERROR_BODY).await;
    let text = String::from_utf8_lossy(&body);
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(str::to_string))
        .unwrap_or_else(|| text.trim().to_string());
    let message = if message.is_empty() {
        format!(
            "the agent of node {:?} answered {code} without a message",
            agent.node
        )
    } else {
        message
    };
    match code {
        // The agent refused the API server itself: a set-up problem, not
        // the user's.
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ApiError::ServiceUnavailable {
            message: format!(
                "the agent of node {:?} refused the API server ({code}): {message}",
                agent.node
            ),
        },
        code => ApiError::FromNode { code, message },
    }
}

/// Up to `max` bytes of a body; a body that fails midway gives what came.
async fn read_prefix(mut body: AgentBody, max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let read = async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                let room = max - out.len();
                out.extend_from_slice(&data[..data.len().min(room)]);
                if out.len() >= max {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), read).await;
    out
}

// --- pods/proxy, nodes/proxy -----------------------------------------------

/// `NAME`, `NAME:PORT` or `SCHEME:NAME:PORT` (Kubernetes'
/// `SplitSchemeNamePort`); `None` when malformed.
pub fn split_scheme_name_port(id: &str) -> Option<(&str, &str, &str)> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => ("", *name, ""),
        [name, port] => ("", *name, *port),
        [scheme, name, port] => (*scheme, *name, *port),
        _ => return None,
    };
    (!name.is_empty() && matches!(scheme, "" | "http" | "https")).then_some((scheme, name, port))
}

/// The containerPort a proxied request goes to: the number given, a port
/// name resolved through the pod's containers, or (none given) the pod's
/// first declared port, as Kubernetes picks it; empty when the pod
/// declares none, which leaves the choice to the agent.
///
/// # Errors
/// 400 for a name no container declares.
pub fn resolve_port(pod: &Value, port: &str) -> Result<String, ApiError> {
    let ports: Vec<&Value> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("ports").and_then(Value::as_array))
        .flatten()
        .collect();
    if port.is_empty() {
        return Ok(ports
            .first()
            .and_then(|p| p.get("containerPort").and_then(Value::as_u64))
            .map(|p| p.to_string())
            .unwrap_or_default());
    }
    if port.parse::<u16>().is_ok_and(|p| p != 0) {
        return Ok(port.to_string());
    }
    ports
        .iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(port))
        .and_then(|p| p.get("containerPort").and_then(Value::as_u64))
        .map(|p| p.to_string())
        .ok_or_else(|| {
            let name = pod
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            ApiError::bad_request(format!("pod {name} has no container port named {port:?}"))
        })
}

/// The name and port of a `[SCHEME:]NAME[:PORT]` proxy target (`what` is
/// "pod" or "service"); https is refused, since Wasm HTTP components serve
/// plain HTTP.
fn plain_http_target<'a>(id: &'a str, what: &str) -> Result<(&'a str, &'a str), ApiError> {
    let (scheme, name, port) = split_scheme_name_port(id)
        .ok_or_else(|| ApiError::bad_request(format!("invalid {what} request {id:?}")))?;
    if scheme == "https" {
        return Err(ApiError::bad_request(format!(
            "{what} {name} cannot be proxied over https: Wasm HTTP components serve plain HTTP (use {name}:PORT)"
        )));
    }
    Ok((name, port))
}

/// Serve `pods/NAME[:PORT]/proxy[/PATH]`.
///
/// # Errors
/// 400 for a malformed name or a pod on no node, 404 for a missing pod or
/// node, 503 naming the node when its agent cannot be reached.
pub async fn pod_proxy(
    state: &ApiState,
    ns: &str,
    id: &str,
    fwd: Forward<'_>,
) -> Result<Response<Body>, ApiError> {
    let (name, port) = plain_http_target(id, "pod")?;
    let pod = state.registry.get(kind("pods")?, Some(ns), name).await?;
    let node = assigned_node(&pod, name)?;
    let port = resolve_port(&pod, port)?;
    let agent = agent_of(state, node).await?;
    let rest = if fwd.rest.is_empty() { "/" } else { fwd.rest };
    forward(
        state,
        &agent,
        crate::agentapi::pod_proxy(ns, name, port, rest),
        fwd,
    )
    .await
}

/// Serve `services/[SCHEME:]NAME[:PORT]/proxy[/PATH]`: one ready endpoint
/// of the service's port (named or numbered; the first port when none is
/// given), reached through its pod's node agent. Endpoints are taken in
/// turn across requests.
///
/// # Errors
/// 404 for a missing service, 400 for a port it does not have, 503 with
/// Kubernetes' message when no endpoint is ready.
pub async fn service_proxy(
    state: &std::sync::Arc<ApiState>,
    ns: &str,
    id: &str,
    fwd: Forward<'_>,
) -> Result<Response<Body>, ApiError> {
    let (name, port) = plain_http_target(id, "service")?;
    let svc = state
        .registry
        .get(kind("services")?, Some(ns), name)
        .await?;
    let ports = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let port_name_of = |p: &Value| {
        p.get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let chosen = if port.is_empty() {
        ports.first()
    } else {
        ports.iter().find(|p| {
            port_name_of(p) == port
                || p.get("port")
                    .and_then(Value::as_u64)
                    .map(|n| n.to_string())
                    .as_deref()
                    == Some(port)
        })
    };
    let Some(chosen) = chosen else {
        return Err(ApiError::ServiceUnavailable {
            message: format!("no endpoints available for service \"{name}\""),
        });
    };
    let port_name = port_name_of(chosen);
    let mut ready = ready_endpoints(state, ns, name, &port_name).await?;
    if ready.is_empty() {
        // At zero: wake the workload if an autoscaler may, and wait for
        // its first endpoint as the node proxies do.
        if super::activation::wake(state, ns, name).await.is_err() {
            return Err(ApiError::ServiceUnavailable {
                message: format!("no endpoints available for service \"{name}\""),
            });
        }
        let deadline = std::time::Instant::now() + ACTIVATION_TIMEOUT;
        let mut pause = std::time::Duration::from_millis(5);
        while ready.is_empty() {
            if std::time::Instant::now() >= deadline {
                return Err(ApiError::ServiceUnavailable {
                    message: format!("service \"{name}\" did not start in time"),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(100));
            ready = ready_endpoints(state, ns, name, &port_name).await?;
        }
    }
    ready.sort();
    static TURN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let (pod, node, target_port) =
        &ready[TURN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % ready.len()];
    let agent = agent_of(state, node).await?;
    let rest = if fwd.rest.is_empty() { "/" } else { fwd.rest };
    forward(
        state,
        &agent,
        crate::agentapi::pod_proxy(ns, pod, target_port, rest),
        fwd,
    )
    .await
}

/// How long the API server's service proxy waits for a woken workload.
const ACTIVATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// (pod, node, targetPort) of every ready endpoint of a Service's port
/// with a pod behind it, from its EndpointSlices.
async fn ready_endpoints(
    state: &ApiState,
    ns: &str,
    name: &str,
    port_name: &str,
) -> Result<Vec<(String, String, u64)>, ApiError> {
    let port_name_of = |p: &Value| {
        p.get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let slice_kind = resources::by_resource("discovery.k8s.io", "v1", "endpointslices")
        .ok_or(ApiError::NoRoute)?;
    let slices = state
        .registry
        .list(slice_kind, Some(ns), 0, None, &|s: &Value| {
            s.pointer("/metadata/labels/kubernetes.io~1service-name")
                .and_then(Value::as_str)
                == Some(name)
        })
        .await?;
    let mut ready: Vec<(String, String, u64)> = Vec::new();
    for s in &slices.items {
        let Some(target_port) = s
            .pointer("/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| port_name_of(p) == port_name)
            .and_then(|p| p.get("port").and_then(Value::as_u64))
        else {
            continue;
        };
        for ep in s
            .pointer("/endpoints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let is_ready = ep
                .pointer("/conditions/ready")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            let pod = ep
                .pointer("/targetRef")
                .filter(|r| r.get("kind").and_then(Value::as_str) == Some("Pod"))
                .and_then(|r| r.get("name").and_then(Value::as_str));
            let node = ep.get("nodeName").and_then(Value::as_str);
            if let (true, Some(pod), Some(node)) = (is_ready, pod, node) {
                ready.push((pod.to_string(), node.to_string(), target_port));
            }
        }
    }
    Ok(ready)
}

/// Serve `nodes/NAME[:PORT]/proxy[/PATH]`: the agent's own paths.
///
/// # Errors
/// 400 for a port other than the agent's, 404 for a missing node, 503 when
/// its agent cannot be reached.
pub async fn node_proxy(
    state: &ApiState,
    id: &str,
    fwd: Forward<'_>,
) -> Result<Response<Body>, ApiError> {
    let (_, name, port) = split_scheme_name_port(id)
        .ok_or_else(|| ApiError::bad_request(format!("invalid node request {id:?}")))?;
    let agent = agent_of(state, name).await?;
    if !port.is_empty() && port != agent.port.to_string() {
        return Err(ApiError::bad_request(format!(
            "only the agent of node {name} (port {}) can be proxied to",
            agent.port
        )));
    }
    let rest = if fwd.rest.is_empty() { "/" } else { fwd.rest };
    forward(state, &agent, rest.to_string(), fwd).await
}

pub use crate::agentapi::end_to_end;

/// What is sent on to the agent: end-to-end headers, minus the caller's
/// credentials and what the new request sets itself.
pub fn request_headers(headers: &HeaderMap) -> HeaderMap {
    let mut out = end_to_end(headers);
    for h in [
        header::AUTHORIZATION,
        header::HOST,
        header::CONTENT_LENGTH,
        header::EXPECT,
    ] {
        out.remove(h);
    }
    out
}

async fn forward(
    state: &ApiState,
    agent: &AgentEndpoint,
    mut path: String,
    fwd: Forward<'_>,
) -> Result<Response<Body>, ApiError> {
    if let Some(q) = fwd.raw_query.filter(|q| !q.is_empty()) {
        path.push('?');
        path.push_str(q);
    }
    let resp = state
        .nodes
        .send(
            agent,
            fwd.method,
            &path,
            request_headers(fwd.headers),
            fwd.body,
        )
        .await?;
    Ok(agent_answer(resp))
}

/// An agent's answer as the API server sends it on: its status, its
/// end-to-end headers and its body, streamed.
pub(crate) fn agent_answer(resp: Response<AgentBody>) -> Response<Body> {
    let status = resp.status();
    let headers = end_to_end(resp.headers());
    let mut out = Response::new(Body::new(resp.into_body()));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

// --- exec, attach, portforward -----------------------------------------------

/// The answer to `pods/exec`, `pods/attach` and `pods/portforward`: 404 for
/// a missing pod, else 400 saying why a Wasm pod has none of them.
pub async fn not_for_wasm(state: &ApiState, ns: &str, name: &str, sub: Subresource) -> ApiError {
    match kind("pods") {
        Ok(pods) => match state.registry.get(pods, Some(ns), name).await {
            Ok(_) => ApiError::bad_request(not_for_wasm_message(ns, name, sub)),
            Err(e) => e,
        },
        Err(e) => e,
    }
}

/// Why a Wasm pod has no `sub`, in words that help.
pub fn not_for_wasm_message(ns: &str, name: &str, sub: Subresource) -> String {
    match sub {
        Subresource::Attach => format!(
            "attach is not available for Wasm pods: pod {name:?} runs WebAssembly components, which have no terminal or process to attach to; `kubectl logs -f` follows its output"
        ),
        Subresource::PortForward => format!(
            "port-forward is not available for Wasm pods: pod {name:?} runs WebAssembly components, which listen on no sockets to forward to; reach its HTTP port with `kubectl get --raw /api/v1/namespaces/{ns}/pods/{name}:PORT/proxy/` or through a Service"
        ),
        _ => format!(
            "exec is not available for Wasm pods: pod {name:?} runs WebAssembly components, which have no shell or process to attach to; `kubectl logs` shows its output"
        ),
    }
}

/// How a failure to reach a node agent reads to an API caller.
impl From<NodeClientError> for ApiError {
    fn from(e: NodeClientError) -> Self {
        match e {
            NodeClientError::Busy { .. } => ApiError::TooManyRequests,
            NodeClientError::Tls(_) => ApiError::internal(e),
            _ => ApiError::ServiceUnavailable {
                message: e.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderName;
    use serde_json::json;

    fn query(q: &str) -> Query {
        Query::parse(Some(q)).unwrap()
    }

    #[test]
    fn proxy_targets_are_plain_http_names_and_ports() {
        assert_eq!(plain_http_target("web", "pod").unwrap(), ("web", ""));
        assert_eq!(
            plain_http_target("http:web:80", "service").unwrap(),
            ("web", "80")
        );
        let https = plain_http_target("https:web:443", "service").unwrap_err();
        assert_eq!(
            https.to_string(),
            "service web cannot be proxied over https: Wasm HTTP components serve plain HTTP (use web:PORT)"
        );
        let bad = plain_http_target("a:b:c:d", "pod").unwrap_err();
        assert_eq!(bad.to_string(), "invalid pod request \"a:b:c:d\"");
    }

    fn pod(containers: &[&str], init: &[&str]) -> Value {
        let c = |n: &&str| json!({"name": n, "image": "hello:v1"});
        json!({
            "metadata": {"name": "web", "namespace": "d"},
            "spec": {
                "containers": containers.iter().map(c).collect::<Vec<_>>(),
                "initContainers": init.iter().map(c).collect::<Vec<_>>(),
            },
        })
    }

    #[test]
    fn log_options_map_to_the_agent_query_kubernetes_sends() {
        let o = LogOptions::from_query(
            &query("follow=true&tailLines=10&previous=true&timestamps=true&limitBytes=500&sinceSeconds=60&container=app"),
            "web",
        )
        .unwrap();
        assert_eq!(o.container.as_deref(), Some("app"));
        assert_eq!(
            o.agent_query(),
            "follow=true&limitBytes=500&previous=true&sinceSeconds=60&tailLines=10&timestamps=true"
        );
        let o = LogOptions::from_query(
            &query("sinceTime=2024-05-01T12%3A00%3A00.5%2B02%3A00"),
            "web",
        )
        .unwrap();
        assert_eq!(o.agent_query(), "sinceTime=2024-05-01T10%3A00%3A00Z");
        let none = LogOptions::from_query(&query("follow=false"), "web").unwrap();
        assert_eq!(none.agent_query(), "");
    }

    #[test]
    fn log_options_kubernetes_refuses_are_refused() {
        let e = LogOptions::from_query(&query("tailLines=-1"), "web").unwrap_err();
        assert_eq!(e.code(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            e.to_string()
                .contains("tailLines: Invalid value: \"-1\": must be greater than or equal to 0"),
            "{e}"
        );
        let e = LogOptions::from_query(
            &query("sinceSeconds=5&sinceTime=2024-05-01T00:00:00Z"),
            "web",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("at most one of `sinceTime` or `sinceSeconds`"),
            "{e}"
        );
        let e = LogOptions::from_query(&query("limitBytes=abc"), "web").unwrap_err();
        assert_eq!(e.code(), StatusCode::BAD_REQUEST);
        let e = LogOptions::from_query(&query("sinceTime=yesterday"), "web").unwrap_err();
        assert_eq!(e.code(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn the_only_container_is_chosen_and_several_need_a_name() {
        assert_eq!(
            choose_container(&pod(&["app"], &["setup"]), None).unwrap(),
            "app"
        );
        let e = choose_container(&pod(&["a", "b"], &["setup"]), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a container name must be specified for pod web, choose one of: [setup a b]"
        );
        assert_eq!(e.code(), StatusCode::BAD_REQUEST);
        assert_eq!(
            choose_container(&pod(&["a", "b"], &["setup"]), Some("setup")).unwrap(),
            "setup"
        );
        let e = choose_container(&pod(&["a"], &[]), Some("c")).unwrap_err();
        assert_eq!(e.to_string(), "container c is not valid for pod web");
    }

    #[test]
    fn a_waiting_container_has_no_logs_yet_unless_it_ran_before() {
        let mut p = pod(&["app"], &[]);
        p["status"] = json!({"containerStatuses": [
            {"name": "app", "state": {"waiting": {"reason": "ContainerCreating"}}}]});
        let e = check_not_waiting(&p, "app").unwrap_err();
        assert_eq!(
            e.to_string(),
            "container \"app\" in pod \"web\" is waiting to start: ContainerCreating"
        );
        p["status"]["containerStatuses"][0]["lastState"] = json!({"terminated": {"exitCode": 1}});
        check_not_waiting(&p, "app").unwrap();
        p["status"] = json!({"containerStatuses": [
            {"name": "app", "state": {"running": {}}}]});
        check_not_waiting(&p, "app").unwrap();
    }

    #[test]
    fn proxy_ids_split_like_kubernetes() {
        assert_eq!(split_scheme_name_port("web"), Some(("", "web", "")));
        assert_eq!(
            split_scheme_name_port("web:8080"),
            Some(("", "web", "8080"))
        );
        assert_eq!(
            split_scheme_name_port("http:web:8080"),
            Some(("http", "web", "8080"))
        );
        assert_eq!(split_scheme_name_port("ftp:web:21"), None);
        assert_eq!(split_scheme_name_port(":80"), None);
        assert_eq!(split_scheme_name_port("a:b:c:d"), None);
    }

    #[test]
    fn proxy_ports_resolve_by_number_name_or_first_declared() {
        let mut p = pod(&["app"], &[]);
        assert_eq!(resolve_port(&p, "").unwrap(), "");
        p["spec"]["containers"][0]["ports"] =
            json!([{"name": "http", "containerPort": 8080}, {"containerPort": 9090}]);
        assert_eq!(resolve_port(&p, "").unwrap(), "8080");
        assert_eq!(resolve_port(&p, "9090").unwrap(), "9090");
        assert_eq!(resolve_port(&p, "http").unwrap(), "8080");
        let e = resolve_port(&p, "grpc").unwrap_err();
        assert_eq!(e.code(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn forwarded_requests_lose_hop_by_hop_headers_and_credentials() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer secret"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("upgrade", "websocket"),
            ("transfer-encoding", "chunked"),
            ("host", "127.0.0.1:6443"),
            ("accept", "text/html"),
            ("x-custom", "kept"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let out = request_headers(&h);
        let mut names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        names.sort();
        assert_eq!(names, ["accept", "x-custom"]);
    }

    #[test]
    fn each_refused_verb_explains_itself() {
        let exec = not_for_wasm_message("d", "web", Subresource::Exec);
        assert!(
            exec.starts_with("exec is not available for Wasm pods: pod \"web\" runs WebAssembly components, which have no shell or process to attach to"),
            "{exec}"
        );
        assert!(
            not_for_wasm_message("d", "web", Subresource::Attach)
                .starts_with("attach is not available")
        );
        let pf = not_for_wasm_message("d", "web", Subresource::PortForward);
        assert!(pf.starts_with("port-forward is not available"), "{pf}");
        assert!(
            pf.contains("/api/v1/namespaces/d/pods/web:PORT/proxy/"),
            "{pf}"
        );
    }
}
