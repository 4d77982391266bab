//! The ServiceActivation contract (`wkube.dev/v1`), shared by the node's
//! service proxy, which creates one to wake a workload scaled to zero, and
//! the API server, which answers it (`api::activation`).

use serde_json::{Value, json};

pub const PLURAL: &str = "serviceactivations";
pub const KIND: &str = "ServiceActivation";

/// The collection a proxy posts to.
pub fn path(namespace: &str) -> String {
    format!("/apis/wkube.dev/v1/namespaces/{namespace}/{PLURAL}")
}

/// The request body naming `service`.
pub fn request(service: &str) -> Value {
    json!({"apiVersion": "wkube.dev/v1", "kind": KIND, "spec": {"service": service}})
}
