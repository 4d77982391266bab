//! Secret: credentials, encrypted at rest, readable only from `edit` up.

use k8s_openapi::api::core::v1::Secret as Object;
use serde_json::{Value, json};

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::defaults::set_default;
use crate::resources::printer::{AGE, Column, NAME, age, col, name, s};
use crate::resources::validation::{FieldError, NameRule};

pub struct Secret;

impl KindSpec for Secret {
    type Object = Object;
    const PLURAL: &'static str = "secrets";
    const SINGULAR: &'static str = "secret";
    const NAMESPACED: bool = true;
    const SHORT_NAMES: &'static [&'static str] = &[];
    const CATEGORIES: &'static [&'static str] = &[];
    const SUBRESOURCES: &'static [Subresource] = &[];
    const NAME_RULE: NameRule = NameRule::Subdomain;
    const COLUMNS: &'static [Column] = &[
        NAME,
        col(
            "Type",
            "string",
            "Used to facilitate programmatic handling of secret data.",
        ),
        col("Data", "string", "Data contains the secret data."),
        AGE,
    ];
    const STATUS: StatusRule = StatusRule::None;
    const IMMUTABLE: &'static [&'static str] = &[];
    const FIELD_SELECTORS: &'static [&'static str] = &["type"];
    const ALLOCATION: Allocation = Allocation::None;
    const DELETION: Deletion = Deletion::Immediate;
    const ACCESS: Access = Access::Sensitive;

    fn default(obj: &mut Value) {
        set_default(obj, "type", json!("Opaque"));
        fold_string_data(obj);
    }

    fn validate(_obj: &Value) -> Vec<FieldError> {
        Vec::new()
    }

    fn cells(o: &Value) -> Vec<Value> {
        let count = o
            .get("data")
            .and_then(Value::as_object)
            .map_or(0, |m| m.len());
        vec![name(o), json!(s(o, "/type")), json!(count), age(o)]
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

/// A Secret's `stringData` is write-only: Kubernetes merges it into `data`
/// (base64, overriding keys of the same name) on the way in and never
/// stores or returns it.
fn fold_string_data(obj: &mut Value) {
    use base64::Engine;
    let Some(Value::Object(plain)) = obj.as_object_mut().and_then(|o| o.remove("stringData"))
    else {
        return;
    };
    let data = obj
        .as_object_mut()
        .map(|o| o.entry("data").or_insert_with(|| json!({})));
    if let Some(data) = data {
        if !data.is_object() {
            *data = json!({});
        }
        for (k, v) in plain {
            // A non-string value is left for the typed round trip to refuse.
            let encoded = match v {
                Value::String(s) => json!(base64::engine::general_purpose::STANDARD.encode(s)),
                other => other,
            };
            data[k] = encoded;
        }
    }
}
