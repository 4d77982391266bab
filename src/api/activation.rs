//! ServiceActivation (`wkube.dev/v1`, created and answered, never
//! stored): how a node's service proxy wakes a workload scaled to zero.
//!
//! A node's proxy that receives a request for a Service with no endpoints
//! creates one, naming the Service. The API server looks for a
//! HorizontalPodAutoscaler with `minReplicas: 0` whose target's pods the
//! Service selects and, if that target is at zero, sets it to one replica
//! through its `/scale` subresource (acting as the controller manager) and
//! records an Event on the autoscaler. The caller needs only `create
//! serviceactivations`: it can wake an idle workload that is set up to be
//! woken, and nothing else, so nodes hold it.
//!
//! Answers: 201 when the target was woken, 200 when it already has
//! replicas, 404 when no autoscaler may wake pods of that Service.

use std::sync::Arc;

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use serde_json::{Value, json};

use super::ApiState;
use super::authn::UserInfo;
use super::rbac::Attributes;
use super::request::json_response;
use super::selectors::LabelSelector;
use super::status::ApiError;
use crate::resources::{self, FieldError, Subresource};

pub use crate::resources::activation::{KIND, PLURAL, path, request};

/// The namespace of an activation path, if `path` is one.
pub fn parse(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/apis/wkube.dev/v1/namespaces/")?;
    let (ns, tail) = rest.split_once('/')?;
    (tail.trim_end_matches('/') == PLURAL && !ns.is_empty()).then(|| ns.to_string())
}

/// Answers an activation.
///
/// # Errors
/// 405 for anything but POST, 403 without `create serviceactivations`,
/// 422 without `spec.service`, 404 for a missing Service or no autoscaler
/// that may wake it.
pub async fn handle(
    state: &Arc<ApiState>,
    user: &UserInfo,
    method: &Method,
    namespace: String,
    headers: &HeaderMap,
    raw: &Bytes,
) -> Result<Response, ApiError> {
    if method != Method::POST {
        return Err(ApiError::MethodNotAllowed);
    }
    state.check(
        user,
        &Attributes {
            verb: "create".into(),
            group: "wkube.dev".into(),
            resource: PLURAL.into(),
            namespace: namespace.clone(),
            ..Default::default()
        },
    )?;
    let body = super::body::decode(headers, raw, None)?;
    let service = body
        .pointer("/spec/service")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::Invalid {
            group: "wkube.dev".into(),
            kind: KIND.into(),
            name: String::new(),
            causes: vec![FieldError::required("spec.service")],
        })?
        .to_string();
    let woken = wake(state, &namespace, &service).await?;
    Ok(answer(
        if woken.woke {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        &namespace,
        &service,
        &woken.target,
        woken.replicas,
        woken.woke,
    ))
}

/// What [`wake`] did.
#[derive(Debug)]
pub struct Woken {
    /// `KIND/NAME` of the workload.
    pub target: String,
    /// Its replicas now (at least one).
    pub replicas: i64,
    /// Whether this call took it from zero.
    pub woke: bool,
}

/// Wakes the workload behind `service` if an autoscaler with
/// `minReplicas: 0` targets it and it is at zero.
///
/// # Errors
/// 404 for a missing Service or no such autoscaler.
pub async fn wake(
    state: &Arc<ApiState>,
    namespace: &str,
    service: &str,
) -> Result<Woken, ApiError> {
    let namespace = namespace.to_string();
    let service = service.to_string();
    let kind_of = |plural: &str, group: &str, version: &str| {
        resources::by_resource(group, version, plural).ok_or(ApiError::NoRoute)
    };
    let svc = state
        .registry
        .get(kind_of("services", "", "v1")?, Some(&namespace), &service)
        .await?;
    let selector = svc
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty())
        .map(LabelSelector::from_map);
    let hpas = state
        .registry
        .list(
            kind_of("horizontalpodautoscalers", "autoscaling", "v2")?,
            Some(&namespace),
            0,
            None,
            &|h| h.pointer("/spec/minReplicas").and_then(Value::as_i64) == Some(0),
        )
        .await?
        .items;
    for hpa in hpas {
        let Some(selector) = &selector else { break };
        let target_kind = hpa
            .pointer("/spec/scaleTargetRef/kind")
            .and_then(Value::as_str)
            .unwrap_or("");
        let target_name = hpa
            .pointer("/spec/scaleTargetRef/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let Some(kind) = resources::KINDS
            .iter()
            .find(|k| k.kind == target_kind && k.has_subresource(Subresource::Scale))
        else {
            continue;
        };
        let Ok(target) = state
            .registry
            .get(kind, Some(&namespace), target_name)
            .await
        else {
            continue;
        };
        let labels =
            json!({"metadata": {"labels": target.pointer("/spec/template/metadata/labels")}});
        if !selector.matches(&labels) {
            continue;
        }
        let replicas = target
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let reference = format!("{target_kind}/{target_name}");
        if replicas > 0 {
            return Ok(Woken {
                target: reference,
                replicas,
                woke: false,
            });
        }
        // Acting as the controller manager, which may scale what an
        // autoscaler targets; only from zero to one (the patch's test
        // fails if another activation or a user got there first).
        let client = super::local::client(state.clone(), "system:kube-controller-manager", &[]);
        let scale_path = format!(
            "{}/namespaces/{namespace}/{}/{target_name}/scale",
            if kind.group.is_empty() {
                format!("/api/{}", kind.version)
            } else {
                format!("/apis/{}/{}", kind.group, kind.version)
            },
            kind.plural
        );
        let patch = json!([
            {"op": "test", "path": "/spec/replicas", "value": 0},
            {"op": "replace", "path": "/spec/replicas", "value": 1},
        ]);
        let req = axum::http::Request::patch(scale_path)
            .header("content-type", "application/json-patch+json")
            .body(patch.to_string().into_bytes())
            .map_err(ApiError::internal)?;
        let woke = client.request::<Value>(req).await.is_ok();
        if woke {
            if let Ok(typed) = serde_json::from_value::<HorizontalPodAutoscaler>(hpa.clone()) {
                crate::events::record(
                    &client,
                    "service-proxy",
                    &typed,
                    crate::events::EventType::Normal,
                    "Activated",
                    format!(
                        "New size: 1; reason: a request for service {service} arrived at zero replicas"
                    ),
                )
                .await;
            }
            tracing::info!(namespace, service, target = %reference, "woke a workload at zero");
        }
        return Ok(Woken {
            target: reference,
            replicas: 1,
            woke,
        });
    }
    Err(ApiError::NotFound {
        group: "autoscaling".into(),
        resource: "horizontalpodautoscalers".into(),
        name: format!("(minReplicas 0, selecting the pods of service {service})"),
    })
}

fn answer(
    code: StatusCode,
    namespace: &str,
    service: &str,
    target: &str,
    replicas: i64,
    woke: bool,
) -> Response {
    json_response(
        code,
        &json!({"apiVersion": "wkube.dev/v1", "kind": KIND,
                "metadata": {"namespace": namespace},
                "spec": {"service": service},
                "status": {"target": target, "replicas": replicas, "activated": woke}}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_namespaced_collections() {
        assert_eq!(
            parse("/apis/wkube.dev/v1/namespaces/ns/serviceactivations"),
            Some("ns".into())
        );
        assert_eq!(parse(&path("web")), Some("web".into()));
        assert_eq!(
            parse("/apis/wkube.dev/v1/namespaces//serviceactivations"),
            None
        );
        assert_eq!(
            parse("/apis/wkube.dev/v1/namespaces/ns/serviceactivations/x"),
            None
        );
        assert_eq!(parse("/apis/wkube.dev/v1/modules"), None);
    }
}
