//! Endpoints: the addresses behind a Service, kept by the endpoints controller.

use k8s_openapi::api::core::v1::Endpoints as Object;
use serde_json::{Value, json};

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::printer::{AGE, Column, NAME, age, col, n, name, none_if_empty, s};
use crate::resources::validation::{FieldError, NameRule};

pub struct Endpoints;

impl KindSpec for Endpoints {
    type Object = Object;
    const PLURAL: &'static str = "endpoints";
    const SINGULAR: &'static str = "endpoints";
    const NAMESPACED: bool = true;
    const SHORT_NAMES: &'static [&'static str] = &["ep"];
    const CATEGORIES: &'static [&'static str] = &[];
    const SUBRESOURCES: &'static [Subresource] = &[];
    const NAME_RULE: NameRule = NameRule::Subdomain;
    const COLUMNS: &'static [Column] = &[
        NAME,
        col(
            "Endpoints",
            "string",
            "Endpoints is the list of endpoints for this service.",
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
        let mut eps = Vec::new();
        for sub in o
            .get("subsets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let ports: Vec<i64> = sub
                .get("ports")
                .and_then(Value::as_array)
                .map(|p| p.iter().map(|x| n(x, "/port")).collect())
                .unwrap_or_default();
            for a in sub
                .get("addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if ports.is_empty() {
                    eps.push(s(a, "/ip").to_string());
                }
                for p in &ports {
                    eps.push(format!("{}:{}", s(a, "/ip"), p));
                }
            }
        }
        let shown = if eps.len() > 3 {
            format!("{} + {} more...", eps[..3].join(","), eps.len() - 3)
        } else {
            none_if_empty(eps.join(","))
        };
        vec![name(o), json!(shown), age(o)]
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
