//! CustomResourceDefinition: a kind users add. Its versions' structural
//! schemas, printer columns and subresources are checked here, on every
//! write, so that the kinds built from it (`resources::custom`) can trust
//! them. The CRD controller (`controllers::customresourcedefinition`)
//! accepts its names and marks it Established; every API server then
//! serves its kinds. A delete waits on a finalizer until the controller
//! has deleted the CRD's objects.

use std::collections::HashSet;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition as Object;
use serde_json::{Value, json};

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::custom::jsonpath::JsonPath;
use crate::resources::custom::schema;
use crate::resources::printer::{CREATED_AT, Column, NAME, created_at, name, s};
use crate::resources::validation::{FieldError, NameRule, is_dns1035_label, is_dns1123_subdomain};

/// The finalizer that holds a deleted CRD until its objects are gone.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// Most versions one CRD may list.
const MAX_VERSIONS: usize = 32;
/// Most printer columns per version.
const MAX_COLUMNS: usize = 32;

pub struct CustomResourceDefinition;

impl KindSpec for CustomResourceDefinition {
    type Object = Object;
    const PLURAL: &'static str = "customresourcedefinitions";
    const SINGULAR: &'static str = "customresourcedefinition";
    const NAMESPACED: bool = false;
    const SHORT_NAMES: &'static [&'static str] = &["crd", "crds"];
    const CATEGORIES: &'static [&'static str] = &["api-extensions"];
    const SUBRESOURCES: &'static [Subresource] = &[Subresource::Status];
    const NAME_RULE: NameRule = NameRule::Subdomain;
    const COLUMNS: &'static [Column] = &[NAME, CREATED_AT];
    const STATUS: StatusRule = StatusRule::Subresource;
    // Objects already stored would change scope under their clients.
    const IMMUTABLE: &'static [&'static str] = &["spec.scope"];
    const FIELD_SELECTORS: &'static [&'static str] = &[];
    const ALLOCATION: Allocation = Allocation::None;
    const DELETION: Deletion = Deletion::Immediate;
    const ACCESS: Access = Access::ClusterAdmin;

    fn default(obj: &mut Value) {
        let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
            return;
        };
        if let Some(names) = spec.get_mut("names").and_then(Value::as_object_mut) {
            let kind = names.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
            if !kind.is_empty() {
                names
                    .entry("listKind")
                    .or_insert_with(|| json!(format!("{kind}List")));
                names
                    .entry("singular")
                    .or_insert_with(|| json!(kind.to_lowercase()));
            }
        }
        spec.entry("conversion")
            .or_insert_with(|| json!({"strategy": "None"}));
    }

    fn validate(obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let group = s(obj, "/spec/group");
        let plural = s(obj, "/spec/names/plural");
        if group.is_empty() {
            errs.push(FieldError::required("spec.group"));
        } else if !is_dns1123_subdomain(group) {
            errs.push(FieldError::invalid("spec.group", group, "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"));
        } else if !group.contains('.') {
            errs.push(FieldError::invalid("spec.group", group, "should be a domain with at least one dot"));
        } else if crate::resources::KINDS.iter().any(|k| k.group == group) {
            errs.push(FieldError::invalid("spec.group", group, "is served by the API server itself"));
        }
        for (field, value) in [("plural", plural), ("singular", s(obj, "/spec/names/singular"))] {
            if value.is_empty() {
                errs.push(FieldError::required(format!("spec.names.{field}")));
            } else if !is_dns1035_label(value) {
                errs.push(FieldError::invalid(format!("spec.names.{field}"), value, "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character"));
            }
        }
        for field in ["kind", "listKind"] {
            let value = s(obj, &format!("/spec/names/{field}"));
            if value.is_empty() {
                errs.push(FieldError::required(format!("spec.names.{field}")));
            } else if !value.chars().next().is_some_and(char::is_alphabetic) || !value.chars().all(char::is_alphanumeric) {
                errs.push(FieldError::invalid(format!("spec.names.{field}"), value, "may have mixed case, but should otherwise match: [a-z]([-a-z0-9]*[a-z0-9])?"));
            }
        }
        for (i, short) in obj.pointer("/spec/names/shortNames").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let short = short.as_str().unwrap_or_default();
            if !is_dns1035_label(short) {
                errs.push(FieldError::invalid(format!("spec.names.shortNames[{i}]"), short, "a DNS-1035 label must consist of lower case alphanumeric characters or '-'"));
            }
        }
        let expected = format!("{plural}.{group}");
        let name = s(obj, "/metadata/name");
        if !plural.is_empty() && !group.is_empty() && name != expected {
            errs.push(FieldError::invalid("metadata.name", name, "must be spec.names.plural+\".\"+spec.group"));
        }
        let scope = s(obj, "/spec/scope");
        if scope.is_empty() {
            errs.push(FieldError::required("spec.scope"));
        } else if scope != "Namespaced" && scope != "Cluster" {
            errs.push(FieldError::not_supported("spec.scope", scope, &["Cluster", "Namespaced"]));
        }
        let strategy = s(obj, "/spec/conversion/strategy");
        if !strategy.is_empty() && strategy != "None" {
            errs.push(FieldError::not_supported("spec.conversion.strategy", strategy, &["None"]));
        }
        validate_versions(obj, &mut errs);
        errs
    }

    fn cells(o: &Value) -> Vec<Value> {
        vec![name(o), created_at(o)]
    }

    fn initial_status(_obj: &Value) -> Option<Value> {
        Some(json!({"conditions": [], "acceptedNames": {"plural": "", "kind": ""}, "storedVersions": []}))
    }

    fn on_create(obj: &mut Value, _ctx: &CreateContext<'_>) -> Result<(), FieldError> {
        // Held on delete until the CRD controller has removed its objects.
        let meta = obj
            .as_object_mut()
            .and_then(|o| o.get_mut("metadata"))
            .and_then(Value::as_object_mut);
        if let Some(meta) = meta {
            let finalizers = meta.entry("finalizers").or_insert_with(|| json!([]));
            if let Some(list) = finalizers.as_array_mut()
                && !list.iter().any(|f| f == CLEANUP_FINALIZER)
            {
                list.push(json!(CLEANUP_FINALIZER));
            }
        }
        Ok(())
    }

    fn on_update(_old: &Value, _new: &mut Value) -> Result<(), FieldError> {
        Ok(())
    }
}

fn validate_versions(obj: &Value, errs: &mut Vec<FieldError>) {
    let Some(versions) = obj.pointer("/spec/versions").and_then(Value::as_array) else {
        errs.push(FieldError::required("spec.versions"));
        return;
    };
    if versions.is_empty() {
        errs.push(FieldError::invalid("spec.versions", "[]", "must have exactly one version marked as storage version"));
        return;
    }
    if versions.len() > MAX_VERSIONS {
        errs.push(FieldError::invalid("spec.versions", versions.len().to_string(), format!("must have at most {MAX_VERSIONS} items")));
        return;
    }
    let storage = versions.iter().filter(|v| v["storage"] == true).count();
    if storage != 1 {
        errs.push(FieldError::invalid("spec.versions", format!("{storage} storage versions"), "must have exactly one version marked as storage version"));
    }
    if !versions.iter().any(|v| v["served"] == true) {
        errs.push(FieldError::invalid("spec.versions", "", "must have at least one served version"));
    }
    let mut seen = HashSet::new();
    for (i, v) in versions.iter().enumerate() {
        let path = format!("spec.versions[{i}]");
        let name = s(v, "/name");
        if name.is_empty() {
            errs.push(FieldError::required(format!("{path}.name")));
        } else if !is_dns1035_label(name) {
            errs.push(FieldError::invalid(format!("{path}.name"), name, "a DNS-1035 label must consist of lower case alphanumeric characters or '-'"));
        } else if !seen.insert(name) {
            errs.push(FieldError {
                kind: crate::resources::FieldErrorKind::Duplicate,
                field: format!("{path}.name"),
                value: Some(name.to_string()),
                detail: String::new(),
            });
        }
        match v.pointer("/schema/openAPIV3Schema") {
            None | Some(Value::Null) => errs.push(FieldError {
                kind: crate::resources::FieldErrorKind::Required,
                field: format!("{path}.schema.openAPIV3Schema"),
                value: None,
                detail: "schemas are required".into(),
            }),
            Some(root) => {
                let at = format!("{path}.schema.openAPIV3Schema");
                let found = schema::check(root, &at);
                if found.is_empty() {
                    check_defaults(root, &at, errs);
                }
                errs.extend(found);
            }
        }
        let columns = v["additionalPrinterColumns"].as_array().map_or(&[][..], Vec::as_slice);
        if columns.len() > MAX_COLUMNS {
            errs.push(FieldError::invalid(format!("{path}.additionalPrinterColumns"), columns.len().to_string(), format!("must have at most {MAX_COLUMNS} items")));
        }
        for (j, c) in columns.iter().enumerate() {
            let cpath = format!("{path}.additionalPrinterColumns[{j}]");
            if s(c, "/name").is_empty() {
                errs.push(FieldError::required(format!("{cpath}.name")));
            }
            let ty = s(c, "/type");
            const TYPES: &[&str] = &["boolean", "date", "integer", "number", "string"];
            if !TYPES.contains(&ty) {
                errs.push(FieldError::not_supported(format!("{cpath}.type"), ty, TYPES));
            }
            if let Err(e) = JsonPath::parse(s(c, "/jsonPath")) {
                errs.push(FieldError::invalid(format!("{cpath}.jsonPath"), s(c, "/jsonPath"), e));
            }
        }
        if let Some(scale) = v.pointer("/subresources/scale").filter(|s| !s.is_null()) {
            for (field, required) in [("specReplicasPath", true), ("statusReplicasPath", true), ("labelSelectorPath", false)] {
                let p = s(scale, &format!("/{field}"));
                let spath = format!("{path}.subresources.scale.{field}");
                if p.is_empty() {
                    if required {
                        errs.push(FieldError::required(spath));
                    }
                    continue;
                }
                match JsonPath::parse(p) {
                    Ok(jp) if jp.fields().is_some() => {}
                    Ok(_) => errs.push(FieldError::invalid(&spath, p, "should be a json path of plain fields")),
                    Err(e) => errs.push(FieldError::invalid(&spath, p, e)),
                }
                if field == "specReplicasPath" && !p.starts_with(".spec.") {
                    errs.push(FieldError::invalid(&spath, p, "should be a json path under .spec"));
                }
                if field == "statusReplicasPath" && !p.starts_with(".status.") {
                    errs.push(FieldError::invalid(&spath, p, "should be a json path under .status"));
                }
            }
        }
    }
}

/// Every `default` in `root` must be valid against its own schema, or
/// every object created afterwards would be refused.
fn check_defaults(root: &Value, path: &str, errs: &mut Vec<FieldError>) {
    walk_defaults(root, path, 0, errs);
}

fn walk_defaults(node: &Value, path: &str, depth: usize, errs: &mut Vec<FieldError>) {
    if depth > schema::MAX_DEPTH || errs.len() > 100 {
        return;
    }
    if let Some(d) = node.get("default")
        && let Ok(own) = schema::Schema::new(&json!({"type": "object", "properties": {"v": strip_default(node)}}), path)
    {
        let found = own.validate(&json!({"v": d}));
        for e in found {
            errs.push(FieldError::invalid(format!("{path}.default"), d.to_string(), e.message()));
        }
    }
    if let Some(props) = node["properties"].as_object() {
        for (k, child) in props {
            walk_defaults(child, &format!("{path}.properties[{k}]"), depth + 1, errs);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = node.get(key).filter(|c| c.is_object()) {
            walk_defaults(child, &format!("{path}.{key}"), depth + 1, errs);
        }
    }
}

fn strip_default(node: &Value) -> Value {
    let mut n = node.clone();
    if let Some(m) = n.as_object_mut() {
        m.remove("default");
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd() -> Value {
        json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "spec": {"type": "object", "properties": {"size": {"type": "integer", "default": 1}}}}}}}],
            },
        })
    }

    fn messages(obj: &Value) -> Vec<String> {
        let mut o = obj.clone();
        CustomResourceDefinition::default(&mut o);
        CustomResourceDefinition::validate(&o).iter().map(FieldError::message).collect()
    }

    #[test]
    fn a_good_crd_passes_and_gets_its_defaults() {
        let mut o = crd();
        CustomResourceDefinition::default(&mut o);
        assert_eq!(o["spec"]["names"]["listKind"], "WidgetList");
        assert_eq!(o["spec"]["names"]["singular"], "widget");
        assert_eq!(messages(&crd()), Vec::<String>::new());
    }

    #[test]
    fn bad_crds_are_refused_with_the_field_named() {
        let mut o = crd();
        o["metadata"]["name"] = json!("other.example.com");
        assert!(messages(&o)[0].starts_with("metadata.name: Invalid value"), "{:?}", messages(&o));
        let mut o = crd();
        o["spec"]["versions"][0]["storage"] = json!(false);
        assert!(messages(&o).iter().any(|m| m.contains("exactly one version marked as storage version")));
        let mut o = crd();
        o["spec"]["versions"][0]["schema"] = Value::Null;
        assert_eq!(messages(&o), vec!["spec.versions[0].schema.openAPIV3Schema: Required value: schemas are required"]);
        let mut o = crd();
        o["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["size"]["default"] = json!("one");
        assert!(messages(&o)[0].contains(".default: Invalid value"), "{:?}", messages(&o));
        let mut o = crd();
        o["spec"]["group"] = json!("apps");
        assert!(!messages(&o).is_empty());
        let mut o = crd();
        o["spec"]["conversion"] = json!({"strategy": "Webhook"});
        assert!(messages(&o)[0].starts_with("spec.conversion.strategy: Unsupported value"));
    }
}
