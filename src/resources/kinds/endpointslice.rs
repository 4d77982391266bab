//! EndpointSlice: a Service's addresses in the discovery.k8s.io form.

use k8s_openapi::api::discovery::v1::EndpointSlice as Object;
use serde_json::{Value, json};

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::printer::{AGE, Column, NAME, age, col, n, name, none_if_empty, s};
use crate::resources::validation::{FieldError, NameRule};

/// The label naming a slice's service (read by the service proxy).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label saying which controller manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";

pub struct EndpointSlice;

impl KindSpec for EndpointSlice {
    type Object = Object;
    const PLURAL: &'static str = "endpointslices";
    const SINGULAR: &'static str = "endpointslice";
    const NAMESPACED: bool = true;
    const SHORT_NAMES: &'static [&'static str] = &[];
    const CATEGORIES: &'static [&'static str] = &[];
    const SUBRESOURCES: &'static [Subresource] = &[];
    const NAME_RULE: NameRule = NameRule::Subdomain;
    const COLUMNS: &'static [Column] = &[
        NAME,
        col(
            "AddressType",
            "string",
            "addressType specifies the type of address carried by this EndpointSlice.",
        ),
        col(
            "Ports",
            "string",
            "ports specifies the list of network ports exposed by each endpoint in this slice.",
        ),
        col(
            "Endpoints",
            "string",
            "endpoints is a list of unique endpoints in this slice.",
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
        let ports: Vec<String> = o
            .get("ports")
            .and_then(Value::as_array)
            .map(|p| p.iter().map(|x| n(x, "/port").to_string()).collect())
            .unwrap_or_default();
        let addrs: Vec<String> = o
            .get("endpoints")
            .and_then(Value::as_array)
            .map(|e| {
                e.iter()
                    .filter_map(|x| x.get("addresses").and_then(Value::as_array))
                    .flatten()
                    .filter_map(|a| a.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        vec![
            name(o),
            json!(s(o, "/addressType")),
            json!(none_if_empty(ports.join(","))),
            json!(none_if_empty(addrs.join(","))),
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
