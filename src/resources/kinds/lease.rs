//! Lease: leader election and node heartbeats.

use k8s_openapi::api::coordination::v1::Lease as Object;
use serde_json::{Value, json};

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::printer::{AGE, Column, NAME, age, col, name, none_if_empty, s};
use crate::resources::validation::{FieldError, NameRule};

pub struct Lease;

impl KindSpec for Lease {
    type Object = Object;
    const PLURAL: &'static str = "leases";
    const SINGULAR: &'static str = "lease";
    const NAMESPACED: bool = true;
    const SHORT_NAMES: &'static [&'static str] = &[];
    const CATEGORIES: &'static [&'static str] = &[];
    const SUBRESOURCES: &'static [Subresource] = &[];
    const NAME_RULE: NameRule = NameRule::Subdomain;
    const COLUMNS: &'static [Column] = &[
        NAME,
        col(
            "Holder",
            "string",
            "holderIdentity contains the identity of the holder of a current lease.",
        ),
        AGE,
    ];
    const STATUS: StatusRule = StatusRule::None;
    const IMMUTABLE: &'static [&'static str] = &[];
    const FIELD_SELECTORS: &'static [&'static str] = &[];
    const ALLOCATION: Allocation = Allocation::None;
    const DELETION: Deletion = Deletion::Immediate;
    const ACCESS: Access = Access::Workload;

    fn default(_obj: &mut Value) {}

    fn validate(_obj: &Value) -> Vec<FieldError> {
        Vec::new()
    }

    fn cells(o: &Value) -> Vec<Value> {
        vec![
            name(o),
            json!(none_if_empty(s(o, "/spec/holderIdentity").to_string())),
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
