//! `Table` responses for `kubectl get`: each kind's columns and cells
//! (from its file under `resources/kinds/`), each row carrying its object
//! (as PartialObjectMetadata by default) so that `-A`, `--sort-by` and
//! `-o wide` work.

use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};

use super::registry;
use super::status::ApiError;
use crate::resources::Kind;
use crate::store::KeyValue;

/// The object a row carries. Takes the object by value: with the default
/// `Metadata`, a list of thousands of rows then moves each metadata map
/// instead of copying it.
fn row_object(o: Value, include: &str) -> Option<Value> {
    match include {
        "None" => None,
        "Object" => Some(o),
        _ => {
            let mut partial = partial_metadata(o);
            // A row is for display; its field managers only cost bytes.
            if let Some(m) = partial["metadata"].as_object_mut() {
                m.remove("managedFields");
            }
            Some(partial)
        }
    }
}

/// The object as a `PartialObjectMetadata`: its metadata and nothing else.
pub fn partial_metadata(o: Value) -> Value {
    let metadata = match o {
        Value::Object(mut top) => top.remove("metadata"),
        _ => None,
    }
    .unwrap_or_else(|| json!({}));
    metadata_object(metadata)
}

/// A `PartialObjectMetadata` of `metadata`.
pub fn metadata_object(metadata: Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
    })
}

/// A list as a `PartialObjectMetadataList`.
pub fn partial_metadata_list(items: Vec<Value>, list_meta: Value) -> Value {
    let items: Vec<Value> = items.into_iter().map(partial_metadata).collect();
    json!({
        "kind": "PartialObjectMetadataList",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "items": items,
    })
}

fn column_defs(kind: &Kind) -> Vec<Value> {
    kind.columns
        .iter()
        .map(|c| {
            json!({"name": c.name, "type": c.ty, "format": c.format,
                   "description": c.description, "priority": c.priority})
        })
        .collect()
}

fn row(kind: &Kind, o: Value, include: &str) -> Value {
    let mut r = serde_json::Map::with_capacity(2);
    r.insert("cells".into(), Value::Array(kind.ops.cells(&o)));
    if let Some(obj) = row_object(o, include) {
        r.insert("object".into(), obj);
    }
    Value::Object(r)
}

/// A Table of a list of stored objects, written as JSON bytes.
///
/// Listing thousands of objects as a Table is dominated by decoding them,
/// so rows are built straight from the stored bytes (skipping field
/// managers unless whole objects are asked for) and spread over the
/// machine's cores; callers with many items run this off the async
/// workers.
pub fn write_list(
    kind: &Kind,
    list_meta: &Value,
    items: &[Arc<KeyValue>],
    include: &str,
) -> Result<Vec<u8>, ApiError> {
    let parts = in_parallel(items, |part| {
        let mut out = Vec::with_capacity(part.len() * 384);
        for (i, kv) in part.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_row(kind, kv, include, &mut out)?;
        }
        Ok::<_, ApiError>(out)
    });
    let mut out = Vec::with_capacity(parts.iter().flatten().map(Vec::len).sum::<usize>() + 1024);
    out.extend_from_slice(br#"{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":"#);
    serde_json::to_writer(&mut out, list_meta).map_err(ApiError::internal)?;
    out.extend_from_slice(br#","columnDefinitions":"#);
    serde_json::to_writer(&mut out, &column_defs(kind)).map_err(ApiError::internal)?;
    out.extend_from_slice(br#","rows":["#);
    let mut first = true;
    for part in parts {
        let part = part?;
        if part.is_empty() {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(&part);
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

/// One row of a stored object.
fn write_row(kind: &Kind, kv: &KeyValue, include: &str, out: &mut Vec<u8>) -> Result<(), ApiError> {
    let mut o = if include == "Object" {
        registry::decode(kv)?
    } else {
        registry::decode_skimmed(kv, kind.ops.cell_fields())?
    };
    kind.serve_as(&mut o);
    out.extend_from_slice(br#"{"cells":"#);
    serde_json::to_writer(&mut *out, &kind.ops.cells(&o)).map_err(ApiError::internal)?;
    match include {
        "None" => {}
        "Object" => {
            out.extend_from_slice(br#","object":"#);
            serde_json::to_writer(&mut *out, &o).map_err(ApiError::internal)?;
        }
        _ => {
            out.extend_from_slice(
                br#","object":{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":"#,
            );
            let empty = Value::Object(serde_json::Map::new());
            let meta = o.get("metadata").unwrap_or(&empty);
            serde_json::to_writer(&mut *out, meta).map_err(ApiError::internal)?;
            out.push(b'}');
        }
    }
    out.push(b'}');
    Ok(())
}

/// `f` over consecutive parts of `items`, one per core (parts of at least
/// [`MIN_PART`] items), results in order. A panic in one part is the
/// caller's panic.
fn in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&[T]) -> R + Sync) -> Vec<R> {
    /// Below this a thread costs more than it saves.
    const MIN_PART: usize = 256;
    static CORES: OnceLock<usize> = OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let threads = cores.min(items.len().div_ceil(MIN_PART)).max(1);
    if threads == 1 {
        return vec![f(items)];
    }
    let part = items.len().div_ceil(threads);
    std::thread::scope(|s| {
        let f = &f;
        let running: Vec<_> = items.chunks(part).map(|c| s.spawn(move || f(c))).collect();
        running
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// A Table of one object.
pub fn single(kind: &Kind, o: &Value, include: &str) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": o.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or("")},
        "columnDefinitions": column_defs(kind),
        "rows": [row(kind, o.clone(), include)],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::by_resource;
    use crate::resources::printer::human_duration;

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(3600 * 3 + 60 * 5), "3h5m");
        assert_eq!(human_duration(86400 * 3), "3d");
        assert_eq!(human_duration(86400 * 400), "400d");
    }

    #[test]
    fn pod_rows_show_ready_and_status() {
        let pods = by_resource("", "v1", "pods").unwrap();
        let pod = json!({"metadata": {"name": "web", "namespace": "d"},
            "spec": {"containers": [{"name": "c"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "127.128.0.5",
                "containerStatuses": [{"ready": true, "restartCount": 2, "state": {"running": {}}}]}});
        let kv = Arc::new(KeyValue {
            key: bytes::Bytes::from_static(b"/registry/pods/d/web"),
            value: serde_json::to_vec(&pod).unwrap().into(),
            create_revision: 7,
            mod_revision: 7,
            version: 1,
            lease: 0,
        });
        let bytes = write_list(pods, &json!({}), &[kv], "Metadata").unwrap();
        let t: Value = serde_json::from_slice(&bytes).unwrap();
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "web");
        assert_eq!(cells[1], "1/1");
        assert_eq!(cells[2], "Running");
        assert_eq!(cells[3], "2");
        assert_eq!(cells[6], "n1");
        assert_eq!(t["rows"][0]["object"]["metadata"]["namespace"], "d");
        assert_eq!(t["rows"][0]["object"]["metadata"]["resourceVersion"], "7");
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(
            t["columnDefinitions"].as_array().unwrap().len(),
            cells.as_array().unwrap().len()
        );
    }

    #[test]
    fn many_rows_keep_their_order_and_carry_field_managers_only_in_whole_objects() {
        let pods = by_resource("", "v1", "pods").unwrap();
        let kvs: Vec<Arc<KeyValue>> = (0..1000)
            .map(|i| {
                let pod = json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("p{i:04}"), "namespace": "d",
                        "managedFields": [{"manager": "kubectl", "operation": "Update"}]},
                    "spec": {"containers": [{"name": "c"}]}});
                Arc::new(KeyValue {
                    key: format!("/registry/pods/d/p{i:04}").into_bytes().into(),
                    value: serde_json::to_vec(&pod).unwrap().into(),
                    create_revision: i + 1,
                    mod_revision: i + 1,
                    version: 1,
                    lease: 0,
                })
            })
            .collect();
        for include in ["Metadata", "Object", "None"] {
            let bytes =
                write_list(pods, &json!({"resourceVersion": "1000"}), &kvs, include).unwrap();
            let t: Value = serde_json::from_slice(&bytes).unwrap();
            let rows = t["rows"].as_array().unwrap();
            assert_eq!(rows.len(), 1000);
            for (i, r) in rows.iter().enumerate() {
                assert_eq!(r["cells"][0], format!("p{i:04}"));
                let managed = &r["object"]["metadata"]["managedFields"];
                match include {
                    "Object" => assert_eq!(managed[0]["manager"], "kubectl"),
                    "None" => assert!(r.get("object").is_none()),
                    _ => assert!(managed.is_null(), "{r}"),
                }
            }
        }
    }

    #[test]
    fn pod_cells_from_the_declared_fields_match_the_whole_pods() {
        let pods = by_resource("", "v1", "pods").unwrap();
        let variants = [
            json!({"status": {"phase": "Running", "podIP": "10.0.0.1",
                "containerStatuses": [{"ready": true, "restartCount": 3, "state": {"running": {}}},
                                      {"ready": false, "restartCount": 1,
                                       "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}),
            json!({"status": {"phase": "Failed", "reason": "Evicted",
                "containerStatuses": [{"state": {"terminated": {"exitCode": 2}}}],
                "nominatedNodeName": "n2", "conditions": [{"type": "Ready"}]}}),
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}, "status": {}}),
            json!({"status": {"containerStatuses": [{"state": {"terminated": {"reason": "Completed"}}}]}}),
            json!({}),
        ];
        for extra in variants {
            let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "d", "creationTimestamp": "2026-01-01T00:00:00Z",
                    "managedFields": [{"manager": "m"}]},
                "spec": {"nodeName": "n1", "containers": [{"name": "a", "env": [{"name": "X"}]}, {"name": "b"}],
                    "tolerations": [{"key": "k"}]}});
            if let Some(m) = extra.get("metadata") {
                pod["metadata"]["deletionTimestamp"] = m["deletionTimestamp"].clone();
            }
            if let Some(st) = extra.get("status") {
                pod["status"] = st.clone();
            }
            let bytes = serde_json::to_vec(&pod).unwrap();
            let part = crate::api::skim::decode_fields(&bytes, pods.ops.cell_fields()).unwrap();
            assert!(part["spec"].get("tolerations").is_none(), "{part}");
            assert_eq!(pods.ops.cells(&part), pods.ops.cells(&pod), "{pod}");
        }
    }
}
