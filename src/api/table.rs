//! `Table` responses for `kubectl get`: each kind's columns and cells
//! (from its file under `resources/kinds/`), each row carrying its object
//! (as PartialObjectMetadata by default) so that `-A`, `--sort-by` and
//! `-o wide` work.

use serde_json::{Value, json};

use crate::resources::Kind;

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

/// A Table of a list.
pub fn list(kind: &Kind, items: Vec<Value>, list_meta: Value, include: &str) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": column_defs(kind),
        "rows": items.into_iter().map(|o| row(kind, o, include)).collect::<Vec<_>>(),
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
        let t = list(pods, vec![pod], json!({}), "Metadata");
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "web");
        assert_eq!(cells[1], "1/1");
        assert_eq!(cells[2], "Running");
        assert_eq!(cells[3], "2");
        assert_eq!(cells[6], "n1");
        assert_eq!(t["rows"][0]["object"]["metadata"]["namespace"], "d");
        assert_eq!(
            t["columnDefinitions"].as_array().unwrap().len(),
            cells.as_array().unwrap().len()
        );
    }
}
