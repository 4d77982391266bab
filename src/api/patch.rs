//! PATCH: JSON patch (RFC 6902), JSON merge patch (RFC 7386), strategic
//! merge patch (lists merged by their Kubernetes merge keys, `$patch`
//! directives) and server-side apply.

use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;
use std::collections::HashMap;

use serde_json::{Map, Value};

use super::authn::UserInfo;
use super::managed::{self, Owner, Part};
use super::objects::FieldValidation;
use super::request::Query;
use super::status::ApiError;
use super::verbs;
use super::{ApiState, body};
use crate::resources::Kind;
use crate::resources::patchmeta::{Field, ListMerge, TypeGraph};

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

/// Most operations one JSON patch may hold (Kubernetes' limit).
pub const MAX_JSON_PATCH_OPS: usize = 10_000;

/// Most bytes the `copy` operations of one JSON patch may copy in all: a
/// copy of a map into itself doubles it, so without a bound a few dozen
/// operations in a kilobyte exhaust the server's memory. Three times the
/// largest request body, as in Kubernetes.
pub const MAX_JSON_PATCH_COPIED_BYTES: usize = 3 * 3 * 1024 * 1024;

/// Deepest nesting a patch result may reach. Stored objects are read back
/// with serde_json's limit of 128 levels; a deeper object could be stored
/// but never read again.
pub const MAX_PATCHED_DEPTH: usize = 100;

/// [`apply_patch`], then the check every handler needs: whatever the patch
/// did, an object with an object `metadata` must come out; anything else
/// is the caller's error (400), not ours.
///
/// # Errors
/// As [`apply_patch`], and 400 for a result that is not such an object.
pub fn patched_object(
    ty: PatchType,
    current: &Value,
    patch: &Value,
    kind: &Kind,
) -> Result<Value, ApiError> {
    let root = TypeGraph::get().root(kind);
    let patched = apply_patch(ty, current, patch, root)?;
    if !patched.is_object() || patched.get("metadata").is_some_and(|m| !m.is_object()) {
        return Err(ApiError::bad_request(format!(
            "the patched {} is not an object with object metadata",
            kind.kind
        )));
    }
    Ok(patched)
}

/// Apply `patch` of type `ty` to `current`, an object of the API type
/// `root` (whose fields' merge keys a strategic merge follows; `None`
/// replaces every list whole).
///
/// # Errors
/// 400 for a malformed patch; 413 past [`MAX_JSON_PATCH_OPS`]; 422 when an
/// operation fails, its copies pass [`MAX_JSON_PATCH_COPIED_BYTES`], or the
/// result would be nested deeper than [`MAX_PATCHED_DEPTH`].
pub fn apply_patch(
    ty: PatchType,
    current: &Value,
    patch: &Value,
    root: Option<&str>,
) -> Result<Value, ApiError> {
    match ty {
        PatchType::Json => {
            if let Some(ops) = patch.as_array()
                && ops.len() > MAX_JSON_PATCH_OPS
            {
                return Err(ApiError::TooLargeMessage {
                    message: format!(
                        "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPS}, got {}",
                        ops.len()
                    ),
                });
            }
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            let mut doc = current.clone();
            apply_json_patch(&mut doc, &ops)?;
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
            Ok(strategic_merge(TypeGraph::get(), current, patch, root))
        }
    }
}

fn invalid_patch(message: String) -> ApiError {
    ApiError::Invalid {
        group: String::new(),
        kind: String::new(),
        name: String::new(),
        causes: vec![crate::resources::FieldError::invalid("patch", "", message)],
    }
}

/// Applies JSON patch operations one at a time, keeping two bounds: the
/// bytes all `copy` operations copy, and an upper bound of the document's
/// nesting depth (a `copy` or `move` under a deep path deepens it by up to
/// the depth of what it moves, so repeated ones could nest without end).
fn apply_json_patch(doc: &mut Value, ops: &json_patch::Patch) -> Result<(), ApiError> {
    let segments = |p: &str| p.matches('/').count();
    let mut depth_bound = depth_of(doc);
    let mut copy_budget = MAX_JSON_PATCH_COPIED_BYTES;
    for op in ops.iter() {
        use json_patch::PatchOperation as Op;
        let reaches = match op {
            Op::Add(a) => segments(a.path.as_str()) + depth_of(&a.value),
            Op::Replace(r) => segments(r.path.as_str()) + depth_of(&r.value),
            Op::Move(m) => {
                segments(m.path.as_str()) + depth_bound.saturating_sub(segments(m.from.as_str()))
            }
            Op::Copy(c) => {
                let copied = doc
                    .pointer(c.from.as_str())
                    .map_or(0, |v| size_within(v, copy_budget));
                if copied > copy_budget {
                    return Err(invalid_patch(format!(
                        "the copy operations of this patch copy more than {MAX_JSON_PATCH_COPIED_BYTES} bytes"
                    )));
                }
                copy_budget -= copied;
                segments(c.path.as_str()) + depth_bound.saturating_sub(segments(c.from.as_str()))
            }
            Op::Remove(_) | Op::Test(_) => 0,
        };
        depth_bound = depth_bound.max(reaches);
        if depth_bound > MAX_PATCHED_DEPTH {
            return Err(invalid_patch(format!(
                "the patched object would be nested deeper than {MAX_PATCHED_DEPTH} levels"
            )));
        }
        json_patch::patch(doc, std::slice::from_ref(op))
            .map_err(|e| invalid_patch(e.to_string()))?;
    }
    Ok(())
}

/// Levels of nesting of `v` (a scalar is 0, `{}` is 1); iterative, so a
/// deep value cannot overflow the stack.
fn depth_of(v: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|i| (i, d + 1))),
            Value::Object(map) => stack.extend(map.values().map(|i| (i, d + 1))),
            _ => deepest = deepest.max(d),
        }
        if matches!(v, Value::Array(_) | Value::Object(_)) {
            deepest = deepest.max(d + 1);
        }
    }
    deepest
}

/// The approximate encoded size of `v`, counting no further than just past
/// `limit` (so measuring a huge value costs no more than the limit).
fn size_within(v: &Value, limit: usize) -> usize {
    let mut size = 0usize;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        size += match v {
            Value::Null | Value::Bool(_) => 5,
            Value::Number(_) => 8,
            Value::String(s) => s.len() + 2,
            Value::Array(items) => {
                stack.extend(items.iter());
                2 + items.len()
            }
            Value::Object(map) => {
                stack.extend(map.values());
                2 + map.keys().map(|k| k.len() + 4).sum::<usize>()
            }
        };
        if size > limit {
            return size;
        }
    }
    size
}

/// A strategic merge of `patch` into `current`, an object of type `ty`:
/// each field's lists merge as that field's type says.
fn strategic_merge(graph: &TypeGraph, current: &Value, patch: &Value, ty: Option<&str>) -> Value {
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
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(del)) = (out.get_mut(field), v.as_array()) {
                let del: std::collections::HashSet<String> =
                    del.iter().map(Value::to_string).collect();
                list.retain(|x| !del.contains(&x.to_string()));
            }
            continue;
        }
        // `$patch`, `$retainKeys` and `$setElementOrder/…` are handled
        // around this loop.
        if k.starts_with('$') {
            continue;
        }
        match v {
            Value::Null => {
                out.remove(k);
            }
            Value::Object(_) => {
                let base = out.get(k).cloned().unwrap_or(Value::Object(Map::new()));
                let field_ty = graph.field(ty, k).and_then(|f| f.ty.as_deref());
                let merged = strategic_merge(
                    graph,
                    if base.is_object() {
                        &base
                    } else {
                        &Value::Null
                    },
                    v,
                    field_ty,
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
                let merged = merge_list(graph, graph.field(ty, k), out.get(k), items, order);
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
            let merged = merge_list(
                graph,
                graph.field(ty, field),
                Some(&existing),
                &[],
                Some(order),
            );
            out.insert(field.to_string(), merged);
        }
    }
    Value::Object(out)
}

/// A list element's merge key, as a string usable in a hash map.
fn key_text(item: &Value, key: &str) -> Option<String> {
    item.get(key).map(Value::to_string)
}

/// Merges a patch list into the current one. Elements are found by their
/// merge key through a map, so a patch of n elements against a list of m
/// costs n + m steps, not n × m (both may hold many thousands).
fn merge_list(
    graph: &TypeGraph,
    field: Option<&Field>,
    current: Option<&Value>,
    patch: &[Value],
    order: Option<&Vec<Value>>,
) -> Value {
    let cur: Vec<Value> = current
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let (list, item_ty) = match field {
        Some(f) => (f.list, f.ty.as_deref()),
        None => (ListMerge::Replace, None),
    };
    if list == ListMerge::Set {
        let mut seen: std::collections::HashSet<String> =
            cur.iter().map(Value::to_string).collect();
        let mut out = cur;
        for v in patch {
            if seen.insert(v.to_string()) {
                out.push(v.clone());
            }
        }
        return Value::Array(out);
    }
    let ListMerge::Key(key) = list else {
        return Value::Array(patch.to_vec());
    };
    // Removed elements leave a `None` until the end, so positions in the
    // index stay valid.
    let mut out: Vec<Option<Value>> = cur.into_iter().map(Some).collect();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, item) in out.iter().enumerate() {
        if let Some(id) = item.as_ref().and_then(|v| key_text(v, key)) {
            index.entry(id).or_insert(i);
        }
    }
    for item in patch {
        let Some(id) = key_text(item, key) else {
            out.push(Some(item.clone()));
            continue;
        };
        let pos = index.get(&id).copied();
        match item.get("$patch").and_then(Value::as_str) {
            Some("delete") => {
                if let Some(i) = pos {
                    out[i] = None;
                    index.remove(&id);
                }
            }
            Some("replace") => {
                let mut replaced = item.clone();
                if let Some(m) = replaced.as_object_mut() {
                    m.remove("$patch");
                }
                match pos {
                    Some(i) => out[i] = Some(replaced),
                    None => {
                        index.insert(id, out.len());
                        out.push(Some(replaced));
                    }
                }
            }
            _ => {
                let merged = match pos.and_then(|i| out[i].as_ref()) {
                    Some(existing) => strategic_merge(graph, existing, item, item_ty),
                    None => strategic_merge(graph, &Value::Object(Map::new()), item, item_ty),
                };
                match pos {
                    Some(i) => out[i] = Some(merged),
                    None => {
                        index.insert(id, out.len());
                        out.push(Some(merged));
                    }
                }
            }
        }
    }
    let mut out: Vec<Value> = out.into_iter().flatten().collect();
    if let Some(order) = order {
        let mut rank: HashMap<String, usize> = HashMap::new();
        for (i, o) in order.iter().enumerate() {
            if let Some(id) = key_text(o, key) {
                rank.entry(id).or_insert(i);
            }
        }
        out.sort_by_key(|v| {
            key_text(v, key)
                .and_then(|id| rank.get(&id).copied())
                .unwrap_or(usize::MAX)
        });
    }
    Value::Array(out)
}

/// Serve a PATCH: read, patch, admit as an update, write with a
/// compare-and-swap, retrying on conflicts. Server-side apply creates the
/// object when it is missing, and follows field ownership (see
/// [`managed`]): conflicts, forced takeovers, removal of what a manager
/// no longer applies.
#[allow(clippy::too_many_arguments)] // mirrors the REST verb's inputs
pub async fn handle(
    state: &ApiState,
    user: &UserInfo,
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
    let manager = managed::request_manager(query, headers)?;
    let apply = ty == PatchType::Apply;
    if apply && patch.pointer("/metadata/managedFields").is_some() {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    let force = query.flag("force");
    let part = Part::of(sub);
    let owner = if apply {
        Owner::Applied
    } else {
        Owner::Writer(&manager)
    };
    for _ in 0..16 {
        let current = match state.registry.try_get(kind, ns, name).await? {
            Some(c) => c,
            None if apply && sub.is_none() => {
                let mut obj = patch.clone();
                if obj.pointer("/metadata/name").is_none() {
                    obj["metadata"]["name"] = Value::String(name.to_string());
                }
                managed::record_apply(kind, name, None, &patch, &mut obj, &manager, part, force)?;
                let (created, warnings) =
                    verbs::create(state, user, kind, ns, obj, validation, dry, owner).await?;
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
        let mut patched = patched_object(ty, &current, &patch, kind)?;
        if apply {
            managed::record_apply(
                kind,
                name,
                Some(&current),
                &patch,
                &mut patched,
                &manager,
                part,
                force,
            )?;
        }
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
        match verbs::update(
            state, user, kind, ns, name, patched, sub, validation, dry, owner,
        )
        .await
        {
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

    const POD: &str = "io.k8s.api.core.v1.Pod";
    const POD_SPEC: &str = "io.k8s.api.core.v1.PodSpec";
    const CONTAINER: &str = "io.k8s.api.core.v1.Container";
    const SERVICE_SPEC: &str = "io.k8s.api.core.v1.ServiceSpec";

    /// A strategic merge into an object of type `ty`.
    fn smp(ty: &str, cur: Value, patch: Value) -> Value {
        apply_patch(PatchType::Strategic, &cur, &patch, Some(ty)).unwrap()
    }

    #[test]
    fn containers_merge_by_name() {
        let cur = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        let out = smp(
            POD,
            cur,
            json!({"spec": {"containers": [{"name": "b", "image": "z"}]}}),
        );
        assert_eq!(out["spec"]["containers"][0]["image"], "x");
        assert_eq!(out["spec"]["containers"][1]["image"], "z");
    }

    #[test]
    fn patch_delete_removes_a_list_element() {
        let cur = json!({"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]});
        let out = smp(
            CONTAINER,
            cur,
            json!({"env": [{"$patch": "delete", "name": "A"}]}),
        );
        assert_eq!(out["env"], json!([{"name": "B", "value": "2"}]));
    }

    #[test]
    fn set_element_order_reorders() {
        let cur = json!({"containers": [{"name": "a"}, {"name": "b"}]});
        let out = smp(
            POD_SPEC,
            cur,
            json!({"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [{"name": "a", "image": "new"}]}),
        );
        assert_eq!(out["containers"][0]["name"], "b");
        assert_eq!(out["containers"][1]["image"], "new");
    }

    #[test]
    fn null_removes_a_field_and_plain_lists_are_replaced() {
        let cur = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        let out = smp(POD, cur, json!({"metadata": {"labels": {"a": null}}}));
        assert_eq!(out["metadata"]["labels"], json!({"b": "2"}));
        let out = smp(
            CONTAINER,
            json!({"args": ["x", "y"]}),
            json!({"args": ["z"]}),
        );
        assert_eq!(out["args"], json!(["z"]));
    }

    #[test]
    fn service_ports_merge_by_port() {
        let cur = json!({"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]});
        let out = smp(
            SERVICE_SPEC,
            cur,
            json!({"ports": [{"port": 443, "targetPort": 8443}]}),
        );
        assert_eq!(out["ports"][1]["targetPort"], 8443);
        assert_eq!(out["ports"][1]["name"], "https");
    }

    #[test]
    fn the_same_field_name_merges_by_the_key_of_its_own_type() {
        // A container's ports merge by containerPort, not by port.
        let cur = json!({"ports": [{"containerPort": 80, "name": "a"}]});
        let out = smp(
            CONTAINER,
            cur,
            json!({"ports": [{"containerPort": 80, "protocol": "TCP"}]}),
        );
        assert_eq!(
            out["ports"],
            json!([{"containerPort": 80, "name": "a", "protocol": "TCP"}])
        );
        // Without a type (a kind without a schema), lists are replaced.
        let out = apply_patch(
            PatchType::Strategic,
            &json!({"env": [{"name": "A"}]}),
            &json!({"env": [{"name": "B"}]}),
            None,
        )
        .unwrap();
        assert_eq!(out["env"], json!([{"name": "B"}]));
    }

    #[test]
    fn json_patch_and_merge_patch_work() {
        let cur = json!({"spec": {"replicas": 1}});
        let out = apply_patch(
            PatchType::Json,
            &cur,
            &json!([{"op": "replace", "path": "/spec/replicas", "value": 3}]),
            None,
        )
        .unwrap();
        assert_eq!(out["spec"]["replicas"], 3);
        let out = apply_patch(
            PatchType::Merge,
            &cur,
            &json!({"spec": {"replicas": 5}}),
            None,
        )
        .unwrap();
        assert_eq!(out["spec"]["replicas"], 5);
    }

    #[test]
    fn copies_that_double_a_document_stop_at_the_copy_budget() {
        let big = "x".repeat(1024);
        let cur = json!({"data": {"k": big}});
        // Each copy doubles /data; 17 of them would be 128 MiB.
        let ops: Vec<Value> = (0..17)
            .map(|i| json!({"op": "copy", "from": "/data", "path": format!("/data/c{i}")}))
            .collect();
        let err = apply_patch(PatchType::Json, &cur, &Value::Array(ops), None).unwrap_err();
        assert_eq!(err.code().as_u16(), 422, "{err}");
        assert!(err.to_string().contains("copy"), "{err}");
        // A few small copies are fine.
        let ops = json!([{"op": "copy", "from": "/data/k", "path": "/data/k2"}]);
        let out = apply_patch(PatchType::Json, &cur, &ops, None).unwrap();
        assert_eq!(out["data"]["k2"], out["data"]["k"]);
    }

    #[test]
    fn copies_and_moves_cannot_nest_a_document_without_end() {
        let cur = json!({"a": {"b": {}}});
        let ops: Vec<Value> = (0..200)
            .map(|_| json!({"op": "copy", "from": "/a", "path": "/a/b/c"}))
            .collect();
        let err = apply_patch(PatchType::Json, &cur, &Value::Array(ops), None).unwrap_err();
        assert!(err.to_string().contains("deeper"), "{err}");
    }

    #[test]
    fn a_json_patch_of_too_many_operations_is_refused_unread() {
        let ops: Vec<Value> = (0..=MAX_JSON_PATCH_OPS)
            .map(|_| json!({"op": "test", "path": "/a", "value": 1}))
            .collect();
        let err =
            apply_patch(PatchType::Json, &json!({"a": 1}), &Value::Array(ops), None).unwrap_err();
        assert_eq!(err.code().as_u16(), 413);
        assert_eq!(
            err.to_string(),
            "The allowed maximum operations in a JSON patch is 10000, got 10001"
        );
    }

    #[test]
    fn long_lists_merge_by_key_in_linear_time() {
        // 50,000 × 50,000 elements: a pairwise search would take minutes.
        let n = 50_000;
        let cur: Vec<Value> = (0..n)
            .map(|i| json!({"name": format!("e{i}"), "value": "old"}))
            .collect();
        let patch: Vec<Value> = (0..n)
            .rev()
            .map(|i| json!({"name": format!("e{i}"), "value": "new"}))
            .collect();
        let out = smp(CONTAINER, json!({"env": cur}), json!({"env": patch}));
        let env = out["env"].as_array().unwrap();
        assert_eq!(env.len(), n);
        assert_eq!(env[0], json!({"name": "e0", "value": "new"}));
        let cur: Vec<Value> = (0..n).map(|i| json!(format!("f{i}"))).collect();
        let del = cur.clone();
        let out = smp(
            POD,
            json!({"metadata": {"finalizers": cur.clone()}}),
            json!({"metadata": {"finalizers": cur}}),
        );
        assert_eq!(out["metadata"]["finalizers"].as_array().unwrap().len(), n);
        let out = smp(
            CONTAINER,
            json!({"args": del.clone()}),
            json!({"$deleteFromPrimitiveList/args": del}),
        );
        assert_eq!(out["args"], json!([]));
    }
}
