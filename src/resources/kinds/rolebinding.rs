//! RoleBinding: grants a role's rules within one namespace.

use k8s_openapi::api::rbac::v1::RoleBinding as Object;
use serde_json::Value;

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::printer::{AGE, Column, NAME, col, wide};
use crate::resources::printer::{age, name, s};
use crate::resources::validation::{FieldError, NameRule};
use serde_json::json;

/// The columns of RoleBindings and ClusterRoleBindings.
pub const BINDING_COLUMNS: &[Column] = &[
    NAME,
    col("Role", "string", "RoleRef is the reference to the role."),
    AGE,
    wide("Users", "string", "Users in the binding"),
    wide("Groups", "string", "Groups in the binding"),
    wide(
        "ServiceAccounts",
        "string",
        "ServiceAccounts in the binding",
    ),
];

pub struct RoleBinding;

impl KindSpec for RoleBinding {
    type Object = Object;
    const PLURAL: &'static str = "rolebindings";
    const SINGULAR: &'static str = "rolebinding";
    const NAMESPACED: bool = true;
    const SHORT_NAMES: &'static [&'static str] = &[];
    const CATEGORIES: &'static [&'static str] = &[];
    const SUBRESOURCES: &'static [Subresource] = &[];
    const NAME_RULE: NameRule = NameRule::Path;
    const COLUMNS: &'static [Column] = BINDING_COLUMNS;
    const STATUS: StatusRule = StatusRule::None;
    const IMMUTABLE: &'static [&'static str] = &[];
    const FIELD_SELECTORS: &'static [&'static str] = &[];
    const ALLOCATION: Allocation = Allocation::None;
    const DELETION: Deletion = Deletion::Immediate;
    const ACCESS: Access = Access::NamespaceAdmin;

    fn default(_obj: &mut Value) {}

    fn validate(_obj: &Value) -> Vec<FieldError> {
        Vec::new()
    }

    fn cells(o: &Value) -> Vec<Value> {
        binding_cells(o)
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

/// The cells of a RoleBinding or ClusterRoleBinding row.
pub fn binding_cells(o: &Value) -> Vec<Value> {
    let subjects = o
        .get("subjects")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let of = |k: &str| {
        subjects
            .iter()
            .filter(|x| s(x, "/kind") == k)
            .map(|x| {
                if k == "ServiceAccount" {
                    format!("{}/{}", s(x, "/namespace"), s(x, "/name"))
                } else {
                    s(x, "/name").to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        name(o),
        json!(format!(
            "{}/{}",
            s(o, "/roleRef/kind"),
            s(o, "/roleRef/name")
        )),
        age(o),
        json!(of("User")),
        json!(of("Group")),
        json!(of("ServiceAccount")),
    ]
}
