//! Gateway (Gateway API): listeners on the cluster's edge to which
//! HTTPRoutes attach. Gateways of the `wkube` class are served by every
//! node's proxy on the node's address, at each listener's port.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::gatewayclass::condition_status;
use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::defaults::set_default;
use crate::resources::gateway::Gateway as Object;
use crate::resources::printer::{AGE, Column, NAME, age, col, name, s};
use crate::resources::validation::{FieldError, NameRule, validate_host};

pub struct Gateway;

/// The listener protocols served.
const PROTOCOLS: &[&str] = &["HTTP", "HTTPS"];
/// The namespaces a listener takes routes from.
const FROM: &[&str] = &["Same", "All"];

impl KindSpec for Gateway {
    type Object = Object;
    const PLURAL: &'static str = "gateways";
    const SINGULAR: &'static str = "gateway";
    const NAMESPACED: bool = true;
    const SHORT_NAMES: &'static [&'static str] = &["gtw"];
    const CATEGORIES: &'static [&'static str] = &["gateway-api"];
    const SUBRESOURCES: &'static [Subresource] = &[Subresource::Status];
    const NAME_RULE: NameRule = NameRule::Subdomain;
    const COLUMNS: &'static [Column] = &[
        NAME,
        col("Class", "string", "The GatewayClass of the Gateway."),
        col("Address", "string", "The first address the Gateway is served on."),
        col(
            "Programmed",
            "string",
            "Whether the Gateway's listeners are served.",
        ),
        AGE,
    ];
    const STATUS: StatusRule = StatusRule::Subresource;
    const IMMUTABLE: &'static [&'static str] = &[];
    const FIELD_SELECTORS: &'static [&'static str] = &[];
    const ALLOCATION: Allocation = Allocation::None;
    const DELETION: Deletion = Deletion::Immediate;
    const ACCESS: Access = Access::Workload;

    fn default(obj: &mut Value) {
        let Some(listeners) = obj
            .pointer_mut("/spec/listeners")
            .and_then(Value::as_array_mut)
        else {
            return;
        };
        for l in listeners {
            set_default(l, "allowedRoutes", json!({}));
            set_default(&mut l["allowedRoutes"], "namespaces", json!({}));
            set_default(&mut l["allowedRoutes"]["namespaces"], "from", json!("Same"));
            if let Some(tls) = l.get_mut("tls") {
                set_default(tls, "mode", json!("Terminate"));
            }
        }
    }

    fn validate(obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if s(obj, "/spec/gatewayClassName").is_empty() {
            errs.push(FieldError::required("spec.gatewayClassName"));
        }
        let listeners = obj
            .pointer("/spec/listeners")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if listeners.is_empty() || listeners.len() > 64 {
            errs.push(FieldError::invalid(
                "spec.listeners",
                listeners.len().to_string(),
                "must have between 1 and 64 items",
            ));
        }
        let mut names = HashSet::new();
        for (i, l) in listeners.iter().enumerate() {
            let at = format!("spec.listeners[{i}]");
            let lname = s(l, "/name");
            if lname.is_empty() {
                errs.push(FieldError::required(format!("{at}.name")));
            } else if !names.insert(lname) {
                errs.push(FieldError::invalid(
                    format!("{at}.name"),
                    lname.to_string(),
                    "must be unique within the Gateway",
                ));
            }
            let port = l.get("port").and_then(Value::as_i64).unwrap_or(0);
            if !(1..=65535).contains(&port) {
                errs.push(FieldError::invalid(
                    format!("{at}.port"),
                    port.to_string(),
                    "must be between 1 and 65535, inclusive",
                ));
            }
            let protocol = s(l, "/protocol");
            if !PROTOCOLS.contains(&protocol) {
                errs.push(FieldError::not_supported(
                    format!("{at}.protocol"),
                    protocol.to_string(),
                    PROTOCOLS,
                ));
            }
            if protocol == "HTTPS"
                && l.pointer("/tls/certificateRefs")
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty)
            {
                errs.push(FieldError::required(format!("{at}.tls.certificateRefs")));
            }
            let mode = s(l, "/tls/mode");
            if !mode.is_empty() && mode != "Terminate" {
                errs.push(FieldError::not_supported(
                    format!("{at}.tls.mode"),
                    mode.to_string(),
                    &["Terminate"],
                ));
            }
            for (j, r) in l
                .pointer("/tls/certificateRefs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let kind = s(r, "/kind");
                if !(kind.is_empty() || kind == "Secret") || !s(r, "/group").is_empty() {
                    errs.push(FieldError::invalid(
                        format!("{at}.tls.certificateRefs[{j}]"),
                        kind.to_string(),
                        "only Secrets of the core group are supported",
                    ));
                }
                if !s(r, "/namespace").is_empty() {
                    errs.push(FieldError::invalid(
                        format!("{at}.tls.certificateRefs[{j}].namespace"),
                        s(r, "/namespace").to_string(),
                        "certificates must be in the Gateway's namespace (ReferenceGrant is not supported)",
                    ));
                }
            }
            let host = s(l, "/hostname");
            if !host.is_empty() {
                validate_host(host, &format!("{at}.hostname"), &mut errs);
            }
            let from = s(l, "/allowedRoutes/namespaces/from");
            if !from.is_empty() && !FROM.contains(&from) {
                errs.push(FieldError::not_supported(
                    format!("{at}.allowedRoutes.namespaces.from"),
                    from.to_string(),
                    FROM,
                ));
            }
        }
        errs
    }

    fn cells(o: &Value) -> Vec<Value> {
        let address = o
            .pointer("/status/addresses/0/value")
            .and_then(Value::as_str)
            .unwrap_or("");
        vec![
            name(o),
            json!(s(o, "/spec/gatewayClassName")),
            json!(address),
            json!(condition_status(o, "Programmed")),
            age(o),
        ]
    }

    fn initial_status(_obj: &Value) -> Option<Value> {
        let pending = |ty: &str| {
            json!({"type": ty, "status": "Unknown", "reason": "Pending",
                   "message": "Waiting for controller",
                   "lastTransitionTime": "1970-01-01T00:00:00Z"})
        };
        Some(json!({"conditions": [pending("Accepted"), pending("Programmed")]}))
    }

    fn on_create(_obj: &mut Value, _ctx: &CreateContext<'_>) -> Result<(), FieldError> {
        Ok(())
    }

    fn on_update(_old: &Value, _new: &mut Value) -> Result<(), FieldError> {
        Ok(())
    }
}
