//! Subresources: status, scale, binding, serviceaccounts/token, and the
//! node-served ones (log, proxy; exec, attach and portforward, which Wasm
//! pods do not have) that [`super::nodeproxy`] serves.

use std::time::Duration;

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};

use super::authn::{API_AUDIENCE, Claims, ISSUER, KubernetesClaims, ObjectRef, UserInfo};
use super::managed::{self, Owner};
use super::objects::{self, FieldValidation};
use super::path::{Target, Verb};
use super::request::{Query, Wants, json_response};
use super::status::ApiError;
use super::verbs;
use super::{ApiState, body, patch};
use crate::resources::{self, Kind, Subresource};

fn sub_of(kind: &Kind, name: &str) -> Result<Subresource, ApiError> {
    let sub = match name {
        "status" => Subresource::Status,
        "scale" => Subresource::Scale,
        "binding" => Subresource::Binding,
        "log" => Subresource::Log,
        "proxy" => Subresource::Proxy,
        "token" => Subresource::Token,
        "exec" => Subresource::Exec,
        "attach" => Subresource::Attach,
        "portforward" => Subresource::PortForward,
        "eviction" => Subresource::Eviction,
        _ => return Err(ApiError::NoRoute),
    };
    if kind.has_subresource(sub) {
        Ok(sub)
    } else {
        Err(ApiError::NoRoute)
    }
}

/// What a subresource request carries besides its target and verb.
pub struct SubRequest<'a> {
    pub method: &'a Method,
    /// The query as sent, for requests passed on to a node.
    pub raw_query: Option<&'a str>,
    pub query: &'a Query,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
    pub how: Wants,
}

/// Serve a subresource request.
pub async fn handle(
    state: &std::sync::Arc<ApiState>,
    user: &UserInfo,
    verb: Verb,
    target: &Target,
    sub: &str,
    req: SubRequest<'_>,
) -> Result<Response, ApiError> {
    let SubRequest {
        method,
        raw_query,
        query,
        headers,
        body: raw,
        how: _,
    } = req;
    let kind = target.kind;
    let ns = target.namespace.as_deref();
    let name = target.name.as_deref().unwrap_or_default();
    let validation = FieldValidation::parse(query.get("fieldValidation"))?;
    match (sub_of(kind, sub)?, verb) {
        (Subresource::Status, Verb::Get) => Ok(json_response(
            StatusCode::OK,
            &state.registry.get(kind, ns, name).await?,
        )),
        (Subresource::Status, Verb::Update) => {
            let manager = managed::request_manager(query, headers)?;
            let obj = body::decode(headers, &raw, Some(kind))?;
            let (obj, code, _) = verbs::update(
                state,
                user,
                kind,
                ns,
                name,
                obj,
                Some("status"),
                validation,
                false,
                Owner::Writer(&manager),
            )
            .await?;
            Ok(json_response(code, &obj))
        }
        (Subresource::Status, Verb::Patch) => {
            let (obj, code, _) = patch::handle(
                state,
                user,
                kind,
                ns,
                name,
                Some("status"),
                headers,
                &raw,
                query,
                validation,
            )
            .await?;
            Ok(json_response(code, &obj))
        }
        (Subresource::Scale, Verb::Get) => {
            let obj = state.registry.get(kind, ns, name).await?;
            Ok(json_response(StatusCode::OK, &scale_of(kind, &obj)))
        }
        (Subresource::Scale, Verb::Update | Verb::Patch) => {
            let manager = managed::request_manager(query, headers)?;
            let stored =
                set_scale(state, user, verb, kind, ns, name, headers, &raw, &manager).await?;
            Ok(json_response(StatusCode::OK, &scale_of(kind, &stored)))
        }
        (Subresource::Binding, Verb::Create) => {
            let binding = body::decode(headers, &raw, None)?;
            bind(state, ns, name, &binding).await?;
            Ok(json_response(
                StatusCode::CREATED,
                &super::status::success_status(None),
            ))
        }
        (Subresource::Token, Verb::Create) => {
            let req = body::decode(headers, &raw, None)?;
            let resp = token_request(state, ns.unwrap_or_default(), name, req).await?;
            Ok(json_response(StatusCode::CREATED, &resp))
        }
        (Subresource::Eviction, Verb::Create) => {
            let eviction = body::decode(headers, &raw, None)?;
            let status = super::eviction::evict(
                state,
                ns.unwrap_or_default(),
                name,
                &eviction,
                query.dry_run(),
            )
            .await?;
            Ok(json_response(StatusCode::CREATED, &status))
        }
        (Subresource::Log, Verb::Get) => {
            super::nodeproxy::pod_log(state, ns.unwrap_or_default(), name, query).await
        }
        (Subresource::Proxy, _) if matches!(kind.kind, "Pod" | "Node" | "Service") => {
            let forward = super::nodeproxy::Forward {
                method: method.clone(),
                rest: &target.rest,
                raw_query,
                headers,
                body: raw,
            };
            match (kind.kind, ns) {
                ("Service", Some(ns)) => {
                    super::nodeproxy::service_proxy(state, ns, name, forward).await
                }
                (_, Some(ns)) => super::nodeproxy::pod_proxy(state, ns, name, forward).await,
                (_, None) => super::nodeproxy::node_proxy(state, name, forward).await,
            }
        }
        (Subresource::Proxy, _) => Err(ApiError::ServiceUnavailable {
            message: format!(
                "proxying to {} is not supported yet",
                kind.qualified_plural()
            ),
        }),
        (sub @ (Subresource::Exec | Subresource::Attach | Subresource::PortForward), _) => {
            // Kubernetes asks for `create` on these however the client
            // connects (a websocket upgrade is a GET).
            if verb != Verb::Create {
                state.authorize(user, Verb::Create, target).await?;
            }
            Err(super::nodeproxy::not_for_wasm(state, ns.unwrap_or_default(), name, sub).await)
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// Serve an update or patch of a Scale: read the workload, work out the
/// replicas wanted, write them with a compare-and-swap. A write that lost a
/// race to another writer (an autoscaler, a controller's status update) is
/// tried again on the fresh object, as any patch is; only a Scale that names
/// a resourceVersion makes the race the caller's to answer (409).
#[allow(clippy::too_many_arguments)] // mirrors the REST verb's inputs
async fn set_scale(
    state: &ApiState,
    user: &UserInfo,
    verb: Verb,
    kind: &'static Kind,
    ns: Option<&str>,
    name: &str,
    headers: &HeaderMap,
    raw: &Bytes,
    manager: &str,
) -> Result<Value, ApiError> {
    let mut last = None;
    for _ in 0..16 {
        let current = state.registry.get(kind, ns, name).await?;
        let wanted = if verb == Verb::Update {
            body::decode(headers, raw, None)?
        } else {
            let ty = patch::PatchType::from_headers(headers)?;
            let p = body::decode_json(raw)?;
            patch::apply_patch(ty, &scale_of(kind, &current), &p, None)?
        };
        let replicas = wanted
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .ok_or_else(|| ApiError::Invalid {
                group: "autoscaling".into(),
                kind: "Scale".into(),
                name: name.into(),
                causes: vec![crate::resources::FieldError::required("spec.replicas")],
            })?;
        if replicas < 0 {
            return Err(ApiError::Invalid {
                group: "autoscaling".into(),
                kind: "Scale".into(),
                name: name.into(),
                causes: vec![crate::resources::FieldError::invalid(
                    "spec.replicas",
                    replicas.to_string(),
                    "must be greater than or equal to 0",
                )],
            });
        }
        let precondition = wanted
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && verb == Verb::Update)
            .map(str::to_string);
        let conditional = precondition.is_some();
        let mut next = current;
        set_replicas(kind, &mut next, replicas);
        if let Some(rv) = precondition {
            next["metadata"]["resourceVersion"] = json!(rv);
        }
        match verbs::update(
            state,
            user,
            kind,
            ns,
            name,
            next,
            None,
            FieldValidation::Ignore,
            false,
            Owner::Writer(manager),
        )
        .await
        {
            Ok((stored, _, _)) => return Ok(stored),
            Err(e @ ApiError::Conflict { .. }) if !conditional => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(ApiError::NoRoute))
}

/// Write the replicas a Scale asks for into the workload: `spec.replicas`,
/// or where a custom kind's scale subresource says.
fn set_replicas(kind: &Kind, obj: &mut Value, replicas: i64) {
    let fields = kind
        .custom
        .and_then(|c| c.scale.as_ref())
        .and_then(|s| s.spec_replicas.fields());
    let fields = fields.unwrap_or_else(|| vec!["spec", "replicas"]);
    let mut at = obj;
    for (i, f) in fields.iter().enumerate() {
        if !at.is_object() {
            *at = json!({});
        }
        if i + 1 == fields.len() {
            at[*f] = json!(replicas);
            return;
        }
        at = &mut at[*f];
    }
}

/// The `autoscaling/v1` Scale view of a workload: a Deployment's or
/// ReplicaSet's, or a custom kind's through its scale paths.
pub fn scale_of(kind: &Kind, obj: &Value) -> Value {
    if let Some(paths) = kind.custom.and_then(|c| c.scale.as_ref()) {
        let int = |p: &crate::resources::custom::jsonpath::JsonPath| {
            p.get(obj).and_then(Value::as_i64).unwrap_or(0)
        };
        let selector = paths
            .label_selector
            .as_ref()
            .and_then(|p| p.get(obj))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut scale = scale_of_fields(
            obj,
            int(&paths.spec_replicas),
            int(&paths.status_replicas),
            selector,
        );
        if selector.is_empty() {
            scale["status"]
                .as_object_mut()
                .map(|s| s.remove("selector"));
        }
        return scale;
    }
    let selector = obj
        .pointer("/spec/selector")
        .map(crate::resources::printer::label_selector_string)
        .unwrap_or_default();
    scale_of_fields(
        obj,
        obj.pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        obj.pointer("/status/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        &selector,
    )
}

fn scale_of_fields(obj: &Value, spec: i64, status: i64, selector: &str) -> Value {
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": obj.pointer("/metadata/name"),
            "namespace": obj.pointer("/metadata/namespace"),
            "uid": obj.pointer("/metadata/uid"),
            "resourceVersion": obj.pointer("/metadata/resourceVersion"),
            "creationTimestamp": obj.pointer("/metadata/creationTimestamp"),
        },
        "spec": {"replicas": spec},
        "status": {"replicas": status, "selector": selector},
    })
}

/// Bind a pod to a node (what the scheduler does).
pub async fn bind(
    state: &ApiState,
    ns: Option<&str>,
    name: &str,
    binding: &Value,
) -> Result<(), ApiError> {
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::Invalid {
            group: String::new(),
            kind: "Binding".into(),
            name: name.into(),
            causes: vec![crate::resources::FieldError::required("target.name")],
        })?
        .to_string();
    let want_uid = binding
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty());
    let pods = resources::by_resource("", "v1", "pods").ok_or(ApiError::NoRoute)?;
    state
        .registry
        .guaranteed_update(pods, ns, name, |pod| {
            // A binding names the pod it was decided for; a pod deleted and
            // created again under the same name is another pod.
            let current_uid = pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("");
            if let Some(uid) = want_uid
                && uid != current_uid
            {
                return Err(ApiError::uid_precondition(pods, name, uid, current_uid));
            }
            if pod.pointer("/metadata/deletionTimestamp").is_some() {
                return Err(ApiError::Conflict {
                    group: String::new(),
                    resource: "pods".into(),
                    name: name.into(),
                    message: format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is being deleted, cannot be assigned to a host"),
                });
            }
            if let Some(existing) = pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
                return Err(ApiError::Conflict {
                    group: String::new(),
                    resource: "pods".into(),
                    name: name.into(),
                    message: format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{existing}\""),
                });
            }
            pod["spec"]["nodeName"] = json!(node);
            let cond = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                              "lastTransitionTime": objects::now_rfc3339()});
            let conds = &mut pod["status"]["conditions"];
            if !conds.is_array() {
                *conds = json!([]);
            }
            if let Some(list) = conds.as_array_mut() {
                list.retain(|c| c["type"] != "PodScheduled");
                list.push(cond);
            }
            Ok(true)
        })
        .await?;
    Ok(())
}

/// Serve a TokenRequest for a service account.
async fn token_request(
    state: &ApiState,
    ns: &str,
    name: &str,
    req: Value,
) -> Result<Value, ApiError> {
    let sa_kind = resources::by_resource("", "v1", "serviceaccounts").ok_or(ApiError::NoRoute)?;
    let sa = state.registry.get(sa_kind, Some(ns), name).await?;
    let sa_uid = sa
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let expiration = req
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    if expiration < 600 {
        return Err(ApiError::Invalid {
            group: "authentication.k8s.io".into(),
            kind: "TokenRequest".into(),
            name: name.into(),
            causes: vec![crate::resources::FieldError::invalid(
                "spec.expirationSeconds",
                expiration.to_string(),
                "may not specify a duration less than 10 minutes",
            )],
        });
    }
    let expiration = expiration.min(state.config.max_token_ttl.as_secs() as i64);
    let audiences: Vec<String> = req
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .filter(|a: &Vec<String>| !a.is_empty())
        .unwrap_or_else(|| vec![API_AUDIENCE.to_string()]);
    let pod = match req.pointer("/spec/boundObjectRef") {
        Some(r) if r.get("kind").and_then(Value::as_str) == Some("Pod") => {
            let pod_name = r.get("name").and_then(Value::as_str).unwrap_or("");
            let pods = resources::by_resource("", "v1", "pods").ok_or(ApiError::NoRoute)?;
            let pod = state.registry.get(pods, Some(ns), pod_name).await?;
            let uid = pod
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if let Some(want) = r
                .get("uid")
                .and_then(Value::as_str)
                .filter(|u| !u.is_empty())
                && want != uid
            {
                return Err(ApiError::Conflict {
                    group: String::new(),
                    resource: "pods".into(),
                    name: pod_name.into(),
                    message: format!(
                        "the UID in the bound object reference ({want}) does not match the UID in record ({uid})"
                    ),
                });
            }
            Some(ObjectRef {
                name: pod_name.to_string(),
                uid,
            })
        }
        Some(r) if r.get("kind").and_then(Value::as_str).is_some() => {
            return Err(ApiError::bad_request(
                "only Pod bound object references are supported",
            ));
        }
        _ => None,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = Claims {
        iss: ISSUER.into(),
        sub: format!("system:serviceaccount:{ns}:{name}"),
        aud: audiences.clone(),
        exp: now + expiration as u64,
        iat: now,
        nbf: now,
        groups: Vec::new(),
        jti: uuid::Uuid::new_v4().to_string(),
        kubernetes: Some(KubernetesClaims {
            namespace: ns.to_string(),
            serviceaccount: ObjectRef {
                name: name.to_string(),
                uid: sa_uid,
            },
            pod,
        }),
    };
    let token = state.tokens.sign(&claims).map_err(ApiError::internal)?;
    let expires = time::OffsetDateTime::now_utc() + Duration::from_secs(expiration as u64);
    let expires = expires
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    Ok(json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
        "spec": {
            "audiences": audiences,
            "expirationSeconds": expiration,
            "boundObjectRef": req.pointer("/spec/boundObjectRef").cloned(),
        },
        "status": {"token": token, "expirationTimestamp": expires},
    }))
}
