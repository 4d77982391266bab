//! HorizontalPodAutoscaler as `autoscaling/v1`: the same objects as
//! `autoscaling/v2` (stored once, in v2), seen and written in v1's shape.
//!
//! A v1 request is answered by the v2 handlers: its path is rewritten to
//! v2, a body it sends is converted to v2 first, and what comes back
//! (object, list, table rows, each line of a watch) is converted to v1. A
//! patch is applied to the v1 view of the current object and written back
//! as an update, so a v1 patch means what it says in v1. Responses are
//! JSON (v1 is offered in no other format).
//!
//! v1 holds only a CPU utilization target. Everything else v2 has (other
//! metrics, `behavior`, conditions, other current metrics) rides along in
//! annotations, as Kubernetes keeps it, so a v2 object read and written
//! back through v1 loses nothing.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};

use super::ApiState;
use super::authn::UserInfo;
use super::status::ApiError;

const V1: &str = "/apis/autoscaling/v1/";
const V2: &str = "/apis/autoscaling/v2/";
const PLURAL: &str = "horizontalpodautoscalers";

const METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
const BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";
const CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";
const CURRENT_METRICS: &str = "autoscaling.alpha.kubernetes.io/current-metrics";

/// Largest body of a converted response read whole (a list of every
/// autoscaler of a big cluster is well within it).
const MAX_BODY: usize = 64 << 20;

/// Whether `path` is an autoscaling/v1 autoscaler path.
pub fn matches(path: &str) -> bool {
    path.strip_prefix(V1).is_some_and(|rest| {
        let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
        matches!(
            segs.as_slice(),
            [PLURAL] | ["namespaces", _, PLURAL, ..] | ["watch", ..]
        ) && rest.contains(PLURAL)
    })
}

/// The v2 object of a v1 one.
pub fn to_v2(v1: &Value) -> Value {
    let mut out = v1.clone();
    out["apiVersion"] = json!("autoscaling/v2");
    let annotations = out
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
        .map(std::mem::take)
        .unwrap_or_default();
    let mut kept = Map::new();
    let mut carried = Map::new();
    for (k, v) in annotations {
        if [METRICS, BEHAVIOR, CONDITIONS, CURRENT_METRICS].contains(&k.as_str()) {
            carried.insert(k, v);
        } else {
            kept.insert(k, v);
        }
    }
    let parsed = |k: &str| {
        carried
            .get(k)
            .and_then(Value::as_str)
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
    };
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        if kept.is_empty() {
            meta.remove("annotations");
        } else {
            meta.insert("annotations".into(), Value::Object(kept));
        }
    }
    if let Some(spec) = out.get_mut("spec").and_then(Value::as_object_mut) {
        let mut metrics: Vec<Value> = Vec::new();
        if let Some(pct) = spec.remove("targetCPUUtilizationPercentage") {
            metrics.push(json!({"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": pct}}}));
        }
        if let Some(Value::Array(more)) = parsed(METRICS) {
            metrics.extend(more);
        }
        if !metrics.is_empty() {
            spec.insert("metrics".into(), Value::Array(metrics));
        }
        if let Some(b) = parsed(BEHAVIOR) {
            spec.insert("behavior".into(), b);
        }
    }
    if let Some(status) = out.get_mut("status").and_then(Value::as_object_mut) {
        let mut current: Vec<Value> = Vec::new();
        if let Some(pct) = status.remove("currentCPUUtilizationPercentage") {
            current.push(json!({"type": "Resource", "resource": {"name": "cpu",
                "current": {"averageUtilization": pct}}}));
        }
        if let Some(Value::Array(more)) = parsed(CURRENT_METRICS) {
            current.extend(more);
        }
        if !current.is_empty() {
            status.insert("currentMetrics".into(), Value::Array(current));
        }
        if let Some(c) = parsed(CONDITIONS) {
            status.insert("conditions".into(), c);
        }
    }
    out
}

fn is_cpu_utilization(m: &Value) -> bool {
    m["type"] == "Resource"
        && m["resource"]["name"] == "cpu"
        && m["resource"]["target"]["type"] == "Utilization"
}

/// The v1 view of a v2 object.
pub fn to_v1(v2: &Value) -> Value {
    let mut out = v2.clone();
    out["apiVersion"] = json!("autoscaling/v1");
    let mut carried: Vec<(&str, Value)> = Vec::new();
    if let Some(spec) = out.get_mut("spec").and_then(Value::as_object_mut) {
        let metrics = match spec.remove("metrics") {
            Some(Value::Array(m)) => m,
            _ => Vec::new(),
        };
        let (cpu, rest): (Vec<Value>, Vec<Value>) =
            metrics.into_iter().partition(is_cpu_utilization);
        if let Some(pct) = cpu
            .first()
            .and_then(|m| m.pointer("/resource/target/averageUtilization"))
        {
            spec.insert("targetCPUUtilizationPercentage".into(), pct.clone());
        }
        if !rest.is_empty() {
            carried.push((METRICS, Value::Array(rest)));
        }
        if let Some(b) = spec.remove("behavior").filter(|b| !b.is_null()) {
            carried.push((BEHAVIOR, b));
        }
    }
    if let Some(status) = out.get_mut("status").and_then(Value::as_object_mut) {
        let current = match status.remove("currentMetrics") {
            Some(Value::Array(m)) => m,
            _ => Vec::new(),
        };
        let (cpu, rest): (Vec<Value>, Vec<Value>) = current
            .into_iter()
            .partition(|m| m["type"] == "Resource" && m["resource"]["name"] == "cpu");
        if let Some(pct) = cpu
            .first()
            .and_then(|m| m.pointer("/resource/current/averageUtilization"))
        {
            status.insert("currentCPUUtilizationPercentage".into(), pct.clone());
        }
        if !rest.is_empty() {
            carried.push((CURRENT_METRICS, Value::Array(rest)));
        }
        if let Some(c) = status.remove("conditions").filter(|c| !c.is_null()) {
            carried.push((CONDITIONS, c));
        }
    }
    if !carried.is_empty()
        && let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut)
    {
        let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
        if let Some(a) = annotations.as_object_mut() {
            for (k, v) in carried {
                a.insert(k.into(), json!(v.to_string()));
            }
        }
    }
    out
}

/// Converts whatever a v2 handler answered into v1's shape.
fn answer_to_v1(v: &mut Value) {
    match v["kind"].as_str() {
        Some("HorizontalPodAutoscaler") => *v = to_v1(v),
        Some("HorizontalPodAutoscalerList") => {
            v["apiVersion"] = json!("autoscaling/v1");
            if let Some(items) = v["items"].as_array_mut() {
                for i in items {
                    *i = to_v1(i);
                }
            }
        }
        Some("Table") => {
            if let Some(rows) = v["rows"].as_array_mut() {
                for r in rows {
                    if r["object"]["kind"] == "HorizontalPodAutoscaler" {
                        r["object"] = to_v1(&r["object"]);
                    } else if r["object"]["apiVersion"] == "autoscaling/v2" {
                        r["object"]["apiVersion"] = json!("autoscaling/v1");
                    }
                }
            }
        }
        _ => {}
    }
}

/// One line of a watch stream, converted.
fn event_to_v1(line: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<Value>(line) {
        Ok(mut event) => {
            let obj = &mut event["object"];
            if obj["kind"] == "HorizontalPodAutoscaler" {
                *obj = to_v1(obj);
            } else if obj["apiVersion"] == "autoscaling/v2" {
                obj["apiVersion"] = json!("autoscaling/v1");
            }
            serde_json::to_vec(&event).unwrap_or_else(|_| line.to_vec())
        }
        Err(_) => line.to_vec(),
    }
}

/// Serves an autoscaling/v1 request through the v2 handlers.
pub async fn handle(
    state: Arc<ApiState>,
    user: UserInfo,
    method: Method,
    path: &str,
    raw_query: Option<&str>,
    mut headers: HeaderMap,
    body: Bytes,
) -> Response {
    let v2_path = format!("{V2}{}", &path[V1.len()..]);
    let watching = path[V1.len()..].starts_with("watch/")
        || super::request::Query::parse(raw_query).is_ok_and(|q| q.flag("watch"));
    // v1 answers in JSON only.
    headers.insert(header::ACCEPT, accept_json(&headers));
    let result = if method == Method::PATCH {
        patch(&state, &user, &v2_path, raw_query, &headers, &body).await
    } else {
        let body = if matches!(method, Method::POST | Method::PUT) && !body.is_empty() {
            match super::body::decode(&headers, &body, None) {
                Ok(v) => {
                    headers.insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    Bytes::from(serde_json::to_vec(&to_v2(&v)).unwrap_or_default())
                }
                Err(e) => return e.into_response(),
            }
        } else {
            body
        };
        super::handlers::dispatch(state, user, method, &v2_path, raw_query, headers, body).await
    };
    match result {
        Ok(resp) => convert_response(resp, watching).await,
        Err(e) => e.into_response(),
    }
}

/// Keeps a Table request a Table (JSON), anything else plain JSON.
fn accept_json(headers: &HeaderMap) -> HeaderValue {
    let wants_table = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"));
    HeaderValue::from_static(if wants_table {
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    } else {
        "application/json"
    })
}

async fn convert_response(resp: Response, watching: bool) -> Response {
    let (mut parts, body) = resp.into_parts();
    if watching && parts.status == StatusCode::OK {
        // A watch: convert line by line as events come.
        let mut pending: Vec<u8> = Vec::new();
        let stream = body.into_data_stream().map(move |chunk| {
            let chunk = chunk?;
            pending.extend_from_slice(&chunk);
            let mut out = Vec::new();
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                out.extend(event_to_v1(&line[..line.len() - 1]));
                out.push(b'\n');
            }
            Ok::<Bytes, axum::Error>(Bytes::from(out))
        });
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::from_stream(stream));
    }
    let bytes = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return ApiError::internal("response too large to convert").into_response(),
    };
    let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    answer_to_v1(&mut v);
    let out = serde_json::to_vec(&v).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(out))
}

/// A v1 patch: applied to the v1 view of the stored object, written back
/// as an update (with the read's resourceVersion, so a concurrent write
/// makes it a 409, not a lost update).
async fn patch(
    state: &Arc<ApiState>,
    user: &UserInfo,
    v2_path: &str,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let mut get_headers = headers.clone();
    get_headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    let current = super::handlers::dispatch(
        state.clone(),
        user.clone(),
        Method::GET,
        v2_path,
        None,
        get_headers,
        Bytes::new(),
    )
    .await?;
    let status = current.status();
    let bytes = http_body_util::Limited::new(current.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| ApiError::internal("object too large"))?
        .to_bytes();
    if !status.is_success() {
        return Ok((status, bytes).into_response());
    }
    let stored: Value = serde_json::from_slice(&bytes).map_err(ApiError::internal)?;
    // The project's patch engine, with its bounds on work and depth and
    // its check that an object comes out.
    let ty = super::patch::PatchType::from_headers(headers)?;
    if ty == super::patch::PatchType::Apply {
        return Err(ApiError::UnsupportedMediaType {
            message: "server-side apply is served for autoscaling/v2 only".into(),
        });
    }
    let patch = super::body::decode_json(body)?;
    let kind =
        crate::resources::by_resource("autoscaling", "v2", PLURAL).ok_or(ApiError::NoRoute)?;
    let mut view = super::patch::patched_object(ty, &to_v1(&stored), &patch, kind)?;
    view["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"].clone();
    let mut put_headers = headers.clone();
    put_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    super::handlers::dispatch(
        state.clone(),
        user.clone(),
        Method::PUT,
        v2_path,
        raw_query,
        put_headers,
        Bytes::from(serde_json::to_vec(&to_v2(&view)).unwrap_or_default()),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2() -> Value {
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "annotations": {"team": "a"}},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 4,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}},
                    {"type": "Pods", "pods": {"metric": {"name": "requests_per_second"}, "target": {"type": "AverageValue", "averageValue": "10"}}}],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 5}}},
            "status": {"currentReplicas": 2, "desiredReplicas": 2,
                "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 30}}}],
                "conditions": [{"type": "AbleToScale", "status": "True"}]}})
    }

    #[test]
    fn v1_shows_the_cpu_target_and_carries_the_rest_in_annotations() {
        let v1 = to_v1(&v2());
        assert_eq!(v1["apiVersion"], "autoscaling/v1");
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 60);
        assert!(v1["spec"].get("metrics").is_none());
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 30);
        let a = &v1["metadata"]["annotations"];
        assert_eq!(a["team"], "a");
        assert!(a[METRICS].as_str().unwrap().contains("requests_per_second"));
        assert!(
            a[BEHAVIOR]
                .as_str()
                .unwrap()
                .contains("stabilizationWindowSeconds")
        );
        assert!(a[CONDITIONS].as_str().unwrap().contains("AbleToScale"));
    }

    #[test]
    fn a_round_trip_through_v1_loses_nothing() {
        assert_eq!(to_v2(&to_v1(&v2())), v2());
    }

    #[test]
    fn a_plain_v1_object_becomes_a_cpu_metric() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3,
                     "targetCPUUtilizationPercentage": 50}});
        let v2 = to_v2(&v1);
        assert_eq!(v2["apiVersion"], "autoscaling/v2");
        assert_eq!(
            v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            50
        );
        assert!(v2["metadata"].get("annotations").is_none());
    }

    #[test]
    fn only_autoscaler_paths_are_taken() {
        assert!(matches(
            "/apis/autoscaling/v1/namespaces/ns/horizontalpodautoscalers"
        ));
        assert!(matches(
            "/apis/autoscaling/v1/namespaces/ns/horizontalpodautoscalers/web/status"
        ));
        assert!(matches("/apis/autoscaling/v1/horizontalpodautoscalers"));
        assert!(!matches("/apis/autoscaling/v1"));
        assert!(!matches("/apis/autoscaling/v2/horizontalpodautoscalers"));
    }
}
