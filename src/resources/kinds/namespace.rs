//! Namespace: the scope most kinds live in, emptied before it goes.

use k8s_openapi::api::core::v1::Namespace as Object;
use serde_json::{Value, json};

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::defaults::set_default;
use crate::resources::printer::{AGE, Column, NAME, age, col, name, s};
use crate::resources::validation::{FieldError, NameRule};

pub struct Namespace;

impl KindSpec for Namespace {
    type Object = Object;
    const PLURAL: &'static str = "namespaces";
    const SINGULAR: &'static str = "namespace";
    const NAMESPACED: bool = false;
    const SHORT_NAMES: &'static [&'static str] = &["ns"];
    const CATEGORIES: &'static [&'static str] = &[];
    const SUBRESOURCES: &'static [Subresource] = &[Subresource::Status];
    const NAME_RULE: NameRule = NameRule::Label;
    const COLUMNS: &'static [Column] = &[
        NAME,
        col("Status", "string", "The status of the namespace"),
        AGE,
    ];
    const STATUS: StatusRule = StatusRule::Subresource;
    const IMMUTABLE: &'static [&'static str] = &[];
    const FIELD_SELECTORS: &'static [&'static str] = &["status.phase"];
    const ALLOCATION: Allocation = Allocation::None;
    const DELETION: Deletion = Deletion::NamespaceLifecycle;
    const ACCESS: Access = Access::ReadOnly;

    fn default(obj: &mut Value) {
        set_default(obj, "spec", json!({"finalizers": ["kubernetes"]}));
        set_default(obj, "status", json!({"phase": "Active"}));
    }

    fn validate(_obj: &Value) -> Vec<FieldError> {
        Vec::new()
    }

    fn cells(o: &Value) -> Vec<Value> {
        vec![name(o), json!(s(o, "/status/phase")), age(o)]
    }

    fn initial_status(_obj: &Value) -> Option<Value> {
        Some(json!({"phase": "Active"}))
    }

    /// Every new namespace carries the finalizer of the namespace
    /// controller, whatever the body says: it is emptied before it goes.
    fn on_create(obj: &mut Value, _ctx: &CreateContext<'_>) -> Result<(), FieldError> {
        if let Some(map) = obj.as_object_mut() {
            map.insert("spec".into(), json!({"finalizers": ["kubernetes"]}));
        }
        Ok(())
    }

    fn on_update(_old: &Value, _new: &mut Value) -> Result<(), FieldError> {
        Ok(())
    }
}
