//! Module (group `wkube.dev`): the module registry's index, mapping the
//! tags of a module repository to the digests of uploaded Wasm blobs.

use k8s_openapi::schemars::generate::SchemaGenerator;
use serde_json::{Value, json};

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, ObjectType, StatusRule};
use crate::resources::Subresource;
use crate::resources::module::{Module as Object, is_digest, is_valid_tag};
use crate::resources::printer::{AGE, Column, NAME, age, col, name};
use crate::resources::validation::{FieldError, NameRule};

impl ObjectType for Object {
    const GROUP: &'static str = "wkube.dev";
    const VERSION: &'static str = "v1";
    const KIND: &'static str = "Module";
    const LIST_KIND: &'static str = "ModuleList";

    fn normalize(value: &Value) -> Result<Value, String> {
        let m = <Object as serde::Deserialize>::deserialize(value).map_err(|e| e.to_string())?;
        serde_json::to_value(&m).map_err(|e| e.to_string())
    }

    /// Written by hand in the OpenAPI documents: the type has no schemars
    /// derive.
    fn schema(_generator: &mut SchemaGenerator) -> Option<String> {
        None
    }
}

pub struct Module;

impl KindSpec for Module {
    type Object = Object;
    const PLURAL: &'static str = "modules";
    const SINGULAR: &'static str = "module";
    const NAMESPACED: bool = false;
    const SHORT_NAMES: &'static [&'static str] = &["mod"];
    const CATEGORIES: &'static [&'static str] = &[];
    const SUBRESOURCES: &'static [Subresource] = &[Subresource::Status];
    const NAME_RULE: NameRule = NameRule::Subdomain;
    const COLUMNS: &'static [Column] = &[
        NAME,
        col("Tags", "string", "The tags of the module repository."),
        AGE,
    ];
    const STATUS: StatusRule = StatusRule::Subresource;
    const IMMUTABLE: &'static [&'static str] = &[];
    const FIELD_SELECTORS: &'static [&'static str] = &[];
    const ALLOCATION: Allocation = Allocation::None;
    const DELETION: Deletion = Deletion::Immediate;
    const ACCESS: Access = Access::Workload;

    fn default(_obj: &mut Value) {}

    fn validate(obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let Some(tags) = obj.pointer("/spec/tags").and_then(Value::as_object) else {
            return errs;
        };
        for (tag, digest) in tags {
            let d = digest.as_str().unwrap_or("");
            if !is_digest(d) {
                errs.push(FieldError::invalid(
                    format!("spec.tags[{tag}]"),
                    d,
                    "must be sha256:<64 lowercase hex digits>",
                ));
            }
            if !is_valid_tag(tag) {
                errs.push(FieldError::invalid(
                    "spec.tags",
                    tag.clone(),
                    "a tag must be 1-128 characters of [A-Za-z0-9._-]",
                ));
            }
        }
        errs
    }

    fn cells(o: &Value) -> Vec<Value> {
        let tags: Vec<&str> = o
            .pointer("/spec/tags")
            .and_then(Value::as_object)
            .map(|t| t.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let tags = if tags.is_empty() {
            "<none>".to_string()
        } else {
            tags.join(",")
        };
        vec![name(o), json!(tags), age(o)]
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
