//! GatewayClass (Gateway API): which controller handles the Gateways that
//! name it. wkube ships one, `wkube`, served by every node's proxy.

use serde_json::{Value, json};

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::gateway::GatewayClass as Object;
use crate::resources::printer::{AGE, Column, NAME, age, col, name, s, wide};
use crate::resources::validation::{FieldError, NameRule};

/// The class the proxies serve, created with the cluster.
pub const WKUBE_CLASS: &str = "wkube";
/// The `spec.controllerName` of classes the proxies serve.
pub const WKUBE_CONTROLLER: &str = "wkube.dev/gateway";

pub struct GatewayClass;

/// The `status` of condition `ty` in `conditions` ("Unknown" when absent).
pub fn condition_status<'a>(obj: &'a Value, ty: &str) -> &'a str {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
        .and_then(|c| c.get("status").and_then(Value::as_str))
        .unwrap_or("Unknown")
}

impl KindSpec for GatewayClass {
    type Object = Object;
    const PLURAL: &'static str = "gatewayclasses";
    const SINGULAR: &'static str = "gatewayclass";
    const NAMESPACED: bool = false;
    const SHORT_NAMES: &'static [&'static str] = &["gc"];
    const CATEGORIES: &'static [&'static str] = &["gateway-api"];
    const SUBRESOURCES: &'static [Subresource] = &[Subresource::Status];
    const NAME_RULE: NameRule = NameRule::Subdomain;
    const COLUMNS: &'static [Column] = &[
        NAME,
        col(
            "Controller",
            "string",
            "The controller that manages Gateways of this class.",
        ),
        col("Accepted", "string", "Whether the controller accepted the class."),
        AGE,
        wide("Description", "string", "The class's description."),
    ];
    const STATUS: StatusRule = StatusRule::Subresource;
    // Gateways of the class would silently change hands.
    const IMMUTABLE: &'static [&'static str] = &["spec.controllerName"];
    const FIELD_SELECTORS: &'static [&'static str] = &[];
    const ALLOCATION: Allocation = Allocation::None;
    const DELETION: Deletion = Deletion::Immediate;
    const ACCESS: Access = Access::ReadOnly;

    fn default(_obj: &mut Value) {}

    fn validate(obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let controller = s(obj, "/spec/controllerName");
        if controller.is_empty() {
            errs.push(FieldError::required("spec.controllerName"));
        } else if !controller.contains('/') || controller.len() > 253 {
            errs.push(FieldError::invalid(
                "spec.controllerName",
                controller.to_string(),
                "must be a domain-prefixed path (such as \"acme.io/foo\") of at most 253 characters",
            ));
        }
        errs
    }

    fn cells(o: &Value) -> Vec<Value> {
        vec![
            name(o),
            json!(s(o, "/spec/controllerName")),
            json!(condition_status(o, "Accepted")),
            age(o),
            json!(s(o, "/spec/description")),
        ]
    }

    fn initial_status(_obj: &Value) -> Option<Value> {
        Some(json!({"conditions": [{
            "type": "Accepted", "status": "Unknown", "reason": "Pending",
            "message": "Waiting for controller", "lastTransitionTime": "1970-01-01T00:00:00Z",
        }]}))
    }

    fn on_create(_obj: &mut Value, _ctx: &CreateContext<'_>) -> Result<(), FieldError> {
        Ok(())
    }

    fn on_update(_old: &Value, _new: &mut Value) -> Result<(), FieldError> {
        Ok(())
    }
}
