//! Event: what happened to an object, as components report it.

use k8s_openapi::api::core::v1::Event as Object;
use serde_json::{Value, json};

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::printer::{Column, age_of, col, s};
use crate::resources::validation::{FieldError, NameRule};

pub struct Event;

impl KindSpec for Event {
    type Object = Object;
    const PLURAL: &'static str = "events";
    const SINGULAR: &'static str = "event";
    const NAMESPACED: bool = true;
    const SHORT_NAMES: &'static [&'static str] = &["ev"];
    const CATEGORIES: &'static [&'static str] = &[];
    const SUBRESOURCES: &'static [Subresource] = &[];
    const NAME_RULE: NameRule = NameRule::Subdomain;
    const COLUMNS: &'static [Column] = &[
        col(
            "Last Seen",
            "string",
            "Time when this Event was last observed.",
        ),
        col("Type", "string", "Type of this event (Normal, Warning)."),
        col(
            "Reason",
            "string",
            "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
        ),
        col("Object", "string", "The object that this event is about."),
        col(
            "Message",
            "string",
            "A human-readable description of the status of this operation.",
        ),
    ];
    const STATUS: StatusRule = StatusRule::None;
    const IMMUTABLE: &'static [&'static str] = &[];
    const FIELD_SELECTORS: &'static [&'static str] = &[
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ];
    const ALLOCATION: Allocation = Allocation::None;
    const DELETION: Deletion = Deletion::Immediate;
    const ACCESS: Access = Access::Workload;

    fn default(_obj: &mut Value) {}

    fn validate(_obj: &Value) -> Vec<FieldError> {
        Vec::new()
    }

    fn cells(o: &Value) -> Vec<Value> {
        let last = o
            .get("lastTimestamp")
            .and_then(Value::as_str)
            .or(o.get("eventTime").and_then(Value::as_str))
            .or(o
                .pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str));
        let obj = format!(
            "{}/{}",
            s(o, "/involvedObject/kind").to_lowercase(),
            s(o, "/involvedObject/name")
        );
        vec![
            json!(age_of(last)),
            json!(s(o, "/type")),
            json!(s(o, "/reason")),
            json!(obj),
            json!(s(o, "/message")),
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
