//! IngressClass: which controller serves the Ingresses that name it. wkube
//! ships one, `wkube`, served by every node's proxy and marked the default.

use k8s_openapi::api::networking::v1::IngressClass as Object;
use serde_json::{Value, json};

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::printer::{AGE, Column, NAME, age, col, name, none_if_empty, s};
use crate::resources::validation::{FieldError, NameRule};

/// The class the proxy serves, created with the cluster.
pub const WKUBE_CLASS: &str = "wkube";
/// The `spec.controller` of classes the proxy serves.
pub const WKUBE_CONTROLLER: &str = "wkube.dev/ingress";
/// The annotation that makes a class the default one.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

pub struct IngressClass;

/// Whether `class` carries the default-class annotation set to true.
pub fn is_default(class: &Value) -> bool {
    class
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
        .and_then(Value::as_str)
        == Some("true")
}

impl KindSpec for IngressClass {
    type Object = Object;
    const PLURAL: &'static str = "ingressclasses";
    const SINGULAR: &'static str = "ingressclass";
    const NAMESPACED: bool = false;
    const SHORT_NAMES: &'static [&'static str] = &[];
    const CATEGORIES: &'static [&'static str] = &[];
    const SUBRESOURCES: &'static [Subresource] = &[];
    const NAME_RULE: NameRule = NameRule::Subdomain;
    const COLUMNS: &'static [Column] = &[
        NAME,
        col(
            "Controller",
            "string",
            "controller refers to the name of the controller that should handle this class.",
        ),
        col(
            "Parameters",
            "string",
            "parameters is a link to a custom resource containing additional configuration for the controller.",
        ),
        AGE,
    ];
    const STATUS: StatusRule = StatusRule::None;
    // Kubernetes fixes the controller once a class exists: Ingresses of the
    // class would silently change hands.
    const IMMUTABLE: &'static [&'static str] = &["spec.controller"];
    const FIELD_SELECTORS: &'static [&'static str] = &[];
    const ALLOCATION: Allocation = Allocation::None;
    const DELETION: Deletion = Deletion::Immediate;
    const ACCESS: Access = Access::ReadOnly;

    fn default(_obj: &mut Value) {}

    fn validate(obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let controller = s(obj, "/spec/controller");
        if controller.is_empty() {
            errs.push(FieldError::required("spec.controller"));
        } else if controller.len() > 250 {
            errs.push(FieldError::invalid(
                "spec.controller",
                controller.to_string(),
                "must be no more than 250 characters",
            ));
        } else if !controller.contains('/') {
            // A domain-prefixed path, such as `example.com/ingress`.
            errs.push(FieldError::invalid(
                "spec.controller",
                controller.to_string(),
                "must be a domain-prefixed path (such as \"acme.io/foo\")",
            ));
        }
        if let Some(p) = obj.pointer("/spec/parameters") {
            if s(p, "/kind").is_empty() {
                errs.push(FieldError::required("spec.parameters.kind"));
            }
            if s(p, "/name").is_empty() {
                errs.push(FieldError::required("spec.parameters.name"));
            }
        }
        errs
    }

    fn cells(o: &Value) -> Vec<Value> {
        let params = o.pointer("/spec/parameters").map_or_else(String::new, |p| {
            let group = s(p, "/apiGroup");
            let kind = s(p, "/kind");
            let kind = if group.is_empty() {
                kind.to_string()
            } else {
                format!("{kind}.{group}")
            };
            format!("{kind}/{}", s(p, "/name"))
        });
        vec![
            name(o),
            json!(s(o, "/spec/controller")),
            json!(none_if_empty(params)),
            age(o),
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
