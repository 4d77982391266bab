//! ClusterRoleBinding: grants a cluster role's rules everywhere.

use k8s_openapi::api::rbac::v1::ClusterRoleBinding as Object;
use serde_json::Value;

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::printer::Column;
use crate::resources::validation::{FieldError, NameRule};

pub struct ClusterRoleBinding;

impl KindSpec for ClusterRoleBinding {
    type Object = Object;
    const PLURAL: &'static str = "clusterrolebindings";
    const SINGULAR: &'static str = "clusterrolebinding";
    const NAMESPACED: bool = false;
    const SHORT_NAMES: &'static [&'static str] = &[];
    const CATEGORIES: &'static [&'static str] = &[];
    const SUBRESOURCES: &'static [Subresource] = &[];
    const NAME_RULE: NameRule = NameRule::Path;
    const COLUMNS: &'static [Column] = super::rolebinding::BINDING_COLUMNS;
    const STATUS: StatusRule = StatusRule::None;
    const IMMUTABLE: &'static [&'static str] = &[];
    const FIELD_SELECTORS: &'static [&'static str] = &[];
    const ALLOCATION: Allocation = Allocation::None;
    const DELETION: Deletion = Deletion::Immediate;
    const ACCESS: Access = Access::ClusterAdmin;

    fn default(_obj: &mut Value) {}

    fn validate(_obj: &Value) -> Vec<FieldError> {
        Vec::new()
    }

    fn cells(o: &Value) -> Vec<Value> {
        super::rolebinding::binding_cells(o)
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
