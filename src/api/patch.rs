//! PATCH: JSON patch (RFC 6902), JSON merge patch (RFC 7386), strategic
//! merge patch (lists merged by their Kubernetes merge keys, `$patch`
//! directives) and server-side apply.

use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
use serde_json::{Map, Value};

use super::handlers::{self, Query};
use super::objects::FieldValidation;
use super::status::ApiError;
use super::{ApiState, body};
use crate::resources::Kind;

/// The patch formats Kubernetes accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let media = ct.split(';').next().unwrap_or("").trim();
        match media {
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(PatchType::Apply),
            other => Err(ApiError::UnsupportedMediaType {
                message: format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"
                ),
            }),
        }
    }
}

/// Apply `patch` of type `ty` to `current`.
pub fn apply_patch(ty: PatchType, current: &Value, patch: &Value) -> Result<Value, ApiError> {
    match ty {
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            let mut doc = current.clone();
            json_patch::patch(&mut doc, &ops).map_err(|e| ApiError::Invalid {
                group: String::new(),
                kind: String::new(),
                name: String::new(),
                causes: vec![crate::resources::FieldError::invalid(
                    "patch",
                    "",
                    e.to_string(),
                )],
            })?;
            Ok(doc)
        }
        PatchType::Merge => {
            let mut doc = current.clone();
            json_patch::merge(&mut doc, patch);
            Ok(doc)
        }
        PatchType::Strategic | PatchType::Apply => {
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "a strategic merge patch must be a JSON object",
                ));
            }
            Ok(strategic_merge(current, patch, ""))
        }
    }
}

/// The merge key of a list field, by field name (and, for `ports`, by the
/// shape of its elements). `None`: the list is replaced atomically.
fn merge_key(field: &str, sample: Option<&Value>) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" => "type",
        "hostAliases" => "ip",
        "ownerReferences" => "uid",
        "topologySpreadConstraints" => "topologyKey",
        "ports" => {
            if sample.is_some_and(|s| s.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    })
}

/// Lists of scalars that merge as sets.
fn merges_as_set(field: &str) -> bool {
    matches!(field, "finalizers")
}

fn strategic_merge(current: &Value, patch: &Value, _path: &str) -> Value {
    let (Some(cur), Some(p)) = (current.as_object(), patch.as_object()) else {
        return patch.clone();
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut out = p.clone();
            out.remove("$patch");
            return Value::Object(out);
        }
        Some("delete") => return Value::Null,
        _ => {}
    }
    let mut out = cur.clone();
    if let Some(keys) = p.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keys.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            let _ = field;
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(del)) = (out.get_mut(field), v.as_array()) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        match v {
            Value::Null => {
                out.remove(k);
            }
            Value::Object(_) => {
                let base = out.get(k).cloned().unwrap_or(Value::Object(Map::new()));
                let merged = strategic_merge(
                    if base.is_object() {
                        &base
                    } else {
                        &Value::Null
                    },
                    v,
                    k,
                );
                if merged.is_null() {
                    out.remove(k);
                } else {
                    out.insert(k.clone(), merged);
                }
            }
            Value::Array(items) => {
                let order = p
                    .get(&format!("$setElementOrder/{k}"))
                    .and_then(Value::as_array);
                let merged = merge_list(k, out.get(k), items, order);
                out.insert(k.clone(), merged);
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    // Fields only named in $setElementOrder still get reordered.
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$setElementOrder/")
            && !p.contains_key(field)
            && let (Some(order), Some(existing)) = (v.as_array(), out.get(field).cloned())
        {
            let merged = merge_list(field, Some(&existing), &[], Some(order));
            out.insert(field.to_string(), merged);
        }
    }
    Value::Object(out)
}

fn merge_list(
    field: &str,
    current: Option<&Value>,
    patch: &[Value],
    order: Option<&Vec<Value>>,
) -> Value {
    let cur: Vec<Value> = current
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if merges_as_set(field) {
        let mut out = cur;
        for v in patch {
            if !out.contains(v) {
                out.push(v.clone());
            }
        }
        return Value::Array(out);
    }
    let sample = patch.first().or(cur.first());
    let Some(key) = merge_key(field, sample) else {
        return Value::Array(patch.to_vec());
    };
    let key_of = |v: &Value| v.get(key).cloned();
    let mut out = cur;
    for item in patch {
        let Some(id) = key_of(item) else {
            out.push(item.clone());
            continue;
        };
        let pos = out.iter().position(|e| key_of(e).as_ref() == Some(&id));
        match item.get("$patch").and_then(Value::as_str) {
            Some("delete") => {
                if let Some(i) = pos {
                    out.remove(i);
                }
            }
            Some("replace") => {
                let mut replaced = item.clone();
                if let Some(m) = replaced.as_object_mut() {
                    m.remove("$patch");
                }
                match pos {
                    Some(i) => out[i] = replaced,
                    None => out.push(replaced),
                }
            }
            _ => match pos {
                Some(i) => {
                    let merged = strategic_merge(&out[i], item, field);
                    out[i] = merged;
                }
                None => {
                    out.push(strategic_merge(&Value::Object(Map::new()), item, field));
                }
            },
        }
    }
    if let Some(order) = order {
        let rank = |v: &Value| {
            key_of(v)
                .and_then(|id| order.iter().position(|o| o.get(key) == Some(&id)))
                .unwrap_or(usize::MAX)
        };
        out.sort_by_key(rank);
    }
    Value::Array(out)
}

/// Serve a PATCH: read, patch, admit as an update, write with a
/// compare-and-swap, retrying on conflicts. Server-side apply creates the
/// object when it is missing.
#[allow(clippy::too_many_arguments)] // mirrors the REST verb's inputs
pub async fn handle(
    state: &ApiState,
    kind: &'static Kind,
    ns: Option<&str>,
    name: &str,
    sub: Option<&str>,
    headers: &HeaderMap,
    raw: &Bytes,
    query: &Query,
    validation: FieldValidation,
) -> Result<(Value, StatusCode, Vec<String>), ApiError> {
    let ty = PatchType::from_headers(headers)?;
    let patch: Value = match ty {
        PatchType::Apply => body::decode_yaml(raw)?,
        _ => body::decode_json(raw)?,
    };
    if ty == PatchType::Apply && query.get("fieldManager").is_none_or(str::is_empty) {
        return Err(ApiError::bad_request(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ));
    }
    let dry = query.get("dryRun") == Some("All");
    for _ in 0..16 {
        let current = match state.registry.try_get(kind, ns, name).await? {
            Some(c) => c,
            None if ty == PatchType::Apply && sub.is_none() => {
                let mut obj = patch.clone();
                if obj.pointer("/metadata/name").is_none() {
                    obj["metadata"]["name"] = Value::String(name.to_string());
                }
                let (created, warnings) =
                    handlers::create(state, kind, ns, obj, validation, dry).await?;
                return Ok((created, StatusCode::CREATED, warnings));
            }
            None => {
                return Err(ApiError::NotFound {
                    group: kind.group.into(),
                    resource: kind.plural.into(),
                    name: name.into(),
                });
            }
        };
        let mut patched = apply_patch(ty, &current, &patch)?;
        // A resourceVersion in the patch is a precondition; otherwise the
        // write is conditional on the version we read.
        let precondition = patch
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
        let rv = precondition.clone().or_else(|| {
            current
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        if let Some(rv) = rv {
            patched["metadata"]["resourceVersion"] = Value::String(rv);
        }
        match handlers::update(state, kind, ns, name, patched, sub, validation, dry).await {
            Err(ApiError::Conflict { .. }) if precondition.is_none() => continue,
            other => return other,
        }
    }
    Err(ApiError::Conflict {
        group: kind.group.into(),
        resource: kind.plural.into(),
        name: name.into(),
        message: format!(
            "Operation cannot be fulfilled on {} \"{}\": too many concurrent changes",
            kind.qualified_plural(),
            name
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(cur: Value, patch: Value) -> Value {
        apply_patch(PatchType::Strategic, &cur, &patch).unwrap()
    }

    #[test]
    fn containers_merge_by_name() {
        let cur = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        let out = smp(
            cur,
            json!({"spec": {"containers": [{"name": "b", "image": "z"}]}}),
        );
        assert_eq!(out["spec"]["containers"][0]["image"], "x");
        assert_eq!(out["spec"]["containers"][1]["image"], "z");
    }

    #[test]
    fn patch_delete_removes_a_list_element() {
        let cur = json!({"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]});
        let out = smp(cur, json!({"env": [{"$patch": "delete", "name": "A"}]}));
        assert_eq!(out["env"], json!([{"name": "B", "value": "2"}]));
    }

    #[test]
    fn set_element_order_reorders() {
        let cur = json!({"containers": [{"name": "a"}, {"name": "b"}]});
        let out = smp(
            cur,
            json!({"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [{"name": "a", "image": "new"}]}),
        );
        assert_eq!(out["containers"][0]["name"], "b");
        assert_eq!(out["containers"][1]["image"], "new");
    }

    #[test]
    fn null_removes_a_field_and_plain_lists_are_replaced() {
        let cur = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "args": ["x", "y"]});
        let out = smp(
            cur,
            json!({"metadata": {"labels": {"a": null}}, "args": ["z"]}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(out["args"], json!(["z"]));
    }

    #[test]
    fn service_ports_merge_by_port() {
        let cur = json!({"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]});
        let out = smp(cur, json!({"ports": [{"port": 443, "targetPort": 8443}]}));
        assert_eq!(out["ports"][1]["targetPort"], 8443);
        assert_eq!(out["ports"][1]["name"], "https");
    }

    #[test]
    fn json_patch_and_merge_patch_work() {
        let cur = json!({"spec": {"replicas": 1}});
        let out = apply_patch(
            PatchType::Json,
            &cur,
            &json!([{"op": "replace", "path": "/spec/replicas", "value": 3}]),
        )
        .unwrap();
        assert_eq!(out["spec"]["replicas"], 3);
        let out = apply_patch(PatchType::Merge, &cur, &json!({"spec": {"replicas": 5}})).unwrap();
        assert_eq!(out["spec"]["replicas"], 5);
    }
}
