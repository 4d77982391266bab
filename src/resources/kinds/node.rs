//! Node: a machine that runs pods, registered by its agent.

use k8s_openapi::api::core::v1::Node as Object;
use serde_json::{Value, json};

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::printer::{AGE, Column, NAME, age, col, name, none_if_empty, s, wide};
use crate::resources::validation::{FieldError, NameRule};

pub struct Node;

impl KindSpec for Node {
    type Object = Object;
    const PLURAL: &'static str = "nodes";
    const SINGULAR: &'static str = "node";
    const NAMESPACED: bool = false;
    const SHORT_NAMES: &'static [&'static str] = &["no"];
    const CATEGORIES: &'static [&'static str] = &[];
    const SUBRESOURCES: &'static [Subresource] = &[Subresource::Status, Subresource::Proxy];
    const NAME_RULE: NameRule = NameRule::Subdomain;
    const COLUMNS: &'static [Column] = &[
        NAME,
        col("Status", "string", "The status of the node"),
        col("Roles", "string", "The roles of the node"),
        AGE,
        col("Version", "string", "Kubelet Version reported by the node."),
        wide("Internal-IP", "string", "List of internal IPs."),
        wide("External-IP", "string", "List of external IPs."),
        wide(
            "OS-Image",
            "string",
            "OS Image reported by the node from /etc/os-release.",
        ),
        wide(
            "Kernel-Version",
            "string",
            "Kernel Version reported by the node.",
        ),
        wide(
            "Container-Runtime",
            "string",
            "Container Runtime Version reported by the node.",
        ),
    ];
    const STATUS: StatusRule = StatusRule::ObjectOrSubresource;
    const IMMUTABLE: &'static [&'static str] = &[];
    const FIELD_SELECTORS: &'static [&'static str] = &["spec.unschedulable"];
    const ALLOCATION: Allocation = Allocation::PodCidr;
    const DELETION: Deletion = Deletion::Immediate;
    const ACCESS: Access = Access::ClusterAdmin;

    fn default(_obj: &mut Value) {}

    fn validate(_obj: &Value) -> Vec<FieldError> {
        Vec::new()
    }

    fn cells(o: &Value) -> Vec<Value> {
        let ready = o
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|conds| conds.iter().find(|c| s(c, "/type") == "Ready"));
        let mut status = match ready.map(|c| s(c, "/status")) {
            Some("True") => "Ready".to_string(),
            _ => "NotReady".to_string(),
        };
        if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
            status.push_str(",SchedulingDisabled");
        }
        let roles: Vec<&str> = o
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .map(|l| {
                l.keys()
                    .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                    .collect()
            })
            .unwrap_or_default();
        let addr = |t: &str| {
            o.pointer("/status/addresses")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().find(|x| s(x, "/type") == t))
                .map(|x| s(x, "/address").to_string())
                .unwrap_or_else(|| "<none>".into())
        };
        vec![
            name(o),
            json!(status),
            json!(none_if_empty(roles.join(","))),
            age(o),
            json!(s(o, "/status/nodeInfo/kubeletVersion")),
            json!(addr("InternalIP")),
            json!(addr("ExternalIP")),
            json!(s(o, "/status/nodeInfo/osImage")),
            json!(s(o, "/status/nodeInfo/kernelVersion")),
            json!(s(o, "/status/nodeInfo/containerRuntimeVersion")),
        ]
    }

    fn initial_status(_obj: &Value) -> Option<Value> {
        None
    }

    fn on_create(_obj: &mut Value, _ctx: &CreateContext<'_>) -> Result<(), FieldError> {
        Ok(())
    }

    fn on_update(_old: &Value, _new: &mut Value) -> Result<(), FieldError> {
        Ok(())
    }
}
