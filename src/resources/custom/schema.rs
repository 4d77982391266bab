//! Structural schemas: the `openAPIV3Schema` of a CustomResourceDefinition
//! version, and the three things the API server does with one for every
//! write of a custom object — prune the fields it does not declare, fill in
//! its defaults, and validate what is left.
//!
//! A schema is kept as the JSON the CRD carries; [`check`] is run on it
//! once, when the CRD is written, so that the walks over objects can trust
//! its shape (a `type` on every node, `properties` only on objects, …).
//! Every walk is bounded by the object's own depth, itself bounded by the
//! request body limit; a schema is bounded by [`MAX_NODES`] and
//! [`MAX_DEPTH`] when it is checked.

use std::collections::HashSet;

use regex::Regex;
use serde_json::{Map, Value};

use crate::resources::validation::{FieldError, FieldErrorKind};

/// Most schema nodes one version may have (Kubernetes bounds schemas by the
/// CRD's size; a count keeps each write's work bounded too).
pub const MAX_NODES: usize = 10_000;
/// Deepest nesting of schema nodes.
pub const MAX_DEPTH: usize = 64;
/// Longest `pattern`, and the compiled size a pattern may reach: patterns
/// come from whoever writes CRDs, and run on every write of their objects.
const MAX_PATTERN: usize = 4096;
const MAX_COMPILED: usize = 1 << 20;

const TYPES: &[&str] = &["object", "array", "string", "integer", "number", "boolean"];

/// A checked schema and its compiled patterns.
#[derive(Debug)]
pub struct Schema {
    root: Value,
    /// `pattern` → compiled form, for every pattern in the schema.
    patterns: Vec<(String, Regex)>,
}

impl Schema {
    /// Check `root` (see [`check`]) and compile its patterns.
    ///
    /// # Errors
    /// The problems found, with paths under `path`.
    pub fn new(root: &Value, path: &str) -> Result<Schema, Vec<FieldError>> {
        let errs = check(root, path);
        if !errs.is_empty() {
            return Err(errs);
        }
        let mut patterns = Vec::new();
        collect_patterns(root, &mut patterns);
        Ok(Schema {
            root: root.clone(),
            patterns,
        })
    }

    pub fn root(&self) -> &Value {
        &self.root
    }

    fn regex(&self, pattern: &str) -> Option<&Regex> {
        self.patterns
            .iter()
            .find(|(p, _)| p == pattern)
            .map(|(_, r)| r)
    }

    /// Remove every field the schema does not declare. The root keeps
    /// `apiVersion`, `kind` and `metadata` (checked by the API server as for
    /// every kind), as does an embedded resource.
    pub fn prune(&self, obj: &mut Value) {
        prune(&self.root, obj, true);
    }

    /// Fill in the `default` of every declared field that is absent.
    pub fn default(&self, obj: &mut Value) {
        default(&self.root, obj);
    }

    /// Validate `obj` against the schema.
    pub fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        self.validate_at(&self.root, obj, "", &mut errs, true);
        errs
    }

    fn validate_at(
        &self,
        schema: &Value,
        v: &Value,
        path: &str,
        errs: &mut Vec<FieldError>,
        root: bool,
    ) {
        if v.is_null() {
            if schema["nullable"] == true || root {
                return;
            }
            errs.push(type_error(path, v, schema_type(schema).unwrap_or("object")));
            return;
        }
        let int_or_string = schema["x-kubernetes-int-or-string"] == true;
        if int_or_string {
            if !(v.is_i64() || v.is_u64() || v.is_string()) {
                errs.push(FieldError::invalid(
                    path,
                    render(v),
                    format!(
                        "{path} in body must be of type integer or string: {}",
                        type_name(v)
                    ),
                ));
                return;
            }
        } else if let Some(ty) = schema_type(schema)
            && !has_type(v, ty)
        {
            errs.push(type_error(path, v, ty));
            return;
        }
        if let Some(allowed) = schema["enum"].as_array()
            && !allowed.contains(v)
        {
            // Listed as JSON: strings quoted, as Kubernetes lists them.
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            errs.push(FieldError {
                kind: FieldErrorKind::NotSupported,
                field: path.to_string(),
                value: Some(render(v)),
                detail: format!("supported values: {}", list.join(", ")),
            });
        }
        match v {
            Value::Object(map) => self.validate_object(schema, map, path, errs, root),
            Value::Array(items) => self.validate_array(schema, items, path, errs),
            Value::String(s) => self.validate_string(schema, s, path, errs),
            Value::Number(_) => validate_number(schema, v, path, errs),
            _ => {}
        }
        for (key, all) in [("allOf", true), ("anyOf", false), ("oneOf", false)] {
            let Some(list) = schema[key].as_array() else {
                continue;
            };
            let mut matched = 0;
            for sub in list {
                let mut sub_errs = Vec::new();
                self.validate_at(sub, v, path, &mut sub_errs, root);
                if sub_errs.is_empty() {
                    matched += 1;
                } else if all {
                    errs.extend(sub_errs);
                }
            }
            let bad = match key {
                "anyOf" => matched == 0,
                "oneOf" => matched != 1,
                _ => false,
            };
            if bad {
                errs.push(FieldError::invalid(
                    path,
                    render(v),
                    format!("{path} in body must validate {key}"),
                ));
            }
        }
        if let Some(not) = schema.get("not") {
            let mut sub_errs = Vec::new();
            self.validate_at(not, v, path, &mut sub_errs, root);
            if sub_errs.is_empty() {
                errs.push(FieldError::invalid(
                    path,
                    render(v),
                    format!("{path} in body must not validate the schema (not)"),
                ));
            }
        }
    }

    fn validate_object(
        &self,
        schema: &Value,
        map: &Map<String, Value>,
        path: &str,
        errs: &mut Vec<FieldError>,
        root: bool,
    ) {
        if let Some(required) = schema["required"].as_array() {
            for r in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(r)
                    || (map[r].is_null() && schema["properties"][r]["nullable"] != true)
                {
                    errs.push(FieldError::required(join(path, r)));
                }
            }
        }
        if let Some(n) = schema["maxProperties"].as_u64()
            && map.len() as u64 > n
        {
            errs.push(FieldError::invalid(
                path,
                map.len().to_string(),
                format!("must have at most {n} properties"),
            ));
        }
        if let Some(n) = schema["minProperties"].as_u64()
            && (map.len() as u64) < n
        {
            errs.push(FieldError::invalid(
                path,
                map.len().to_string(),
                format!("must have at least {n} properties"),
            ));
        }
        let props = schema["properties"].as_object();
        let additional = schema.get("additionalProperties").filter(|a| a.is_object());
        for (k, v) in map {
            // The API server checks the root's metadata as for every kind.
            if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            let child = join(path, k);
            if let Some(s) = props.and_then(|p| p.get(k)) {
                self.validate_at(s, v, &child, errs, false);
            } else if let Some(s) = additional {
                self.validate_at(s, v, &child, errs, false);
            }
        }
    }

    fn validate_array(
        &self,
        schema: &Value,
        items: &[Value],
        path: &str,
        errs: &mut Vec<FieldError>,
    ) {
        if let Some(n) = schema["maxItems"].as_u64()
            && items.len() as u64 > n
        {
            errs.push(FieldError {
                kind: FieldErrorKind::TooMany,
                field: path.to_string(),
                value: Some(items.len().to_string()),
                detail: format!("must have at most {n} items"),
            });
        }
        if let Some(n) = schema["minItems"].as_u64()
            && (items.len() as u64) < n
        {
            errs.push(FieldError::invalid(
                path,
                items.len().to_string(),
                format!("{path} in body should have at least {n} items"),
            ));
        }
        if schema["uniqueItems"] == true || schema["x-kubernetes-list-type"] == "set" {
            let mut seen = HashSet::new();
            for (i, item) in items.iter().enumerate() {
                if !seen.insert(item.to_string()) {
                    errs.push(FieldError {
                        kind: FieldErrorKind::Duplicate,
                        field: format!("{path}[{i}]"),
                        value: Some(render(item)),
                        detail: String::new(),
                    });
                }
            }
        }
        if let Some(item_schema) = schema.get("items").filter(|s| s.is_object()) {
            for (i, item) in items.iter().enumerate() {
                self.validate_at(item_schema, item, &format!("{path}[{i}]"), errs, false);
            }
        }
    }

    fn validate_string(&self, schema: &Value, s: &str, path: &str, errs: &mut Vec<FieldError>) {
        let chars = s.chars().count() as u64;
        if let Some(n) = schema["maxLength"].as_u64()
            && chars > n
        {
            errs.push(FieldError {
                kind: FieldErrorKind::TooLong,
                field: path.to_string(),
                value: None,
                detail: format!("may not be more than {n} bytes"),
            });
        }
        if let Some(n) = schema["minLength"].as_u64()
            && chars < n
        {
            errs.push(FieldError::invalid(
                path,
                render(&Value::String(s.to_string())),
                format!("{path} in body should be at least {n} chars long"),
            ));
        }
        if let Some(p) = schema["pattern"].as_str()
            && let Some(re) = self.regex(p)
            && !re.is_match(s)
        {
            errs.push(FieldError::invalid(
                path,
                render(&Value::String(s.to_string())),
                format!("{path} in body should match '{p}'"),
            ));
        }
    }
}

fn validate_number(schema: &Value, v: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let Some(x) = v.as_f64() else { return };
    if let Some(min) = schema["minimum"].as_f64() {
        let exclusive = schema["exclusiveMinimum"] == true;
        if x < min || (exclusive && x == min) {
            let rel = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            errs.push(FieldError::invalid(
                path,
                render(v),
                format!("{path} in body should be {rel} {}", schema["minimum"]),
            ));
        }
    }
    if let Some(max) = schema["maximum"].as_f64() {
        let exclusive = schema["exclusiveMaximum"] == true;
        if x > max || (exclusive && x == max) {
            let rel = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            errs.push(FieldError::invalid(
                path,
                render(v),
                format!("{path} in body should be {rel} {}", schema["maximum"]),
            ));
        }
    }
    if let Some(m) = schema["multipleOf"].as_f64()
        && m > 0.0
        && (x / m).fract() != 0.0
    {
        errs.push(FieldError::invalid(
            path,
            render(v),
            format!(
                "{path} in body should be a multiple of {}",
                schema["multipleOf"]
            ),
        ));
    }
}

fn type_error(path: &str, v: &Value, ty: &str) -> FieldError {
    let shown = if path.is_empty() { "body" } else { path };
    FieldError::invalid(
        path,
        render(v),
        format!("{shown} in body must be of type {ty}: {:?}", type_name(v)),
    )
}

fn schema_type(schema: &Value) -> Option<&str> {
    schema["type"].as_str().filter(|t| !t.is_empty())
}

fn has_type(v: &Value, ty: &str) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => true,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value as a field error shows it: strings bare (the error quotes
/// them), everything else as JSON, cut short.
fn render(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.len() > 256 {
        let mut end = 256;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn prune(schema: &Value, v: &mut Value, root: bool) {
    if schema["x-kubernetes-preserve-unknown-fields"] == true
        && schema["properties"].is_null()
        && schema["items"].is_null()
        && schema["additionalProperties"].is_null()
    {
        return;
    }
    match v {
        Value::Object(map) => {
            let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
            let embedded = root || schema["x-kubernetes-embedded-resource"] == true;
            let props = schema["properties"].as_object();
            let additional = &schema["additionalProperties"];
            map.retain(|k, _| {
                props.is_some_and(|p| p.contains_key(k))
                    || preserve
                    || additional == true
                    || additional.is_object()
                    || (embedded && matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
            });
            for (k, child) in map.iter_mut() {
                if let Some(s) = props.and_then(|p| p.get(k)) {
                    prune(s, child, false);
                } else if additional.is_object() {
                    prune(additional, child, false);
                } else if embedded && k == "metadata" && !root {
                    // An embedded object's metadata keeps only what an
                    // object's metadata may hold.
                    prune_embedded_metadata(child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items").filter(|s| s.is_object()) {
                for item in items {
                    prune(s, item, false);
                }
            }
        }
        _ => {}
    }
}

fn prune_embedded_metadata(meta: &mut Value) {
    const KEEP: &[&str] = &[
        "name",
        "namespace",
        "labels",
        "annotations",
        "generateName",
        "finalizers",
    ];
    if let Some(m) = meta.as_object_mut() {
        m.retain(|k, _| KEEP.contains(&k.as_str()));
    }
}

fn default(schema: &Value, v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(props) = schema["properties"].as_object() {
                for (k, s) in props {
                    if let Some(d) = s.get("default")
                        && !map.contains_key(k)
                    {
                        map.insert(k.clone(), d.clone());
                    }
                }
                for (k, child) in map.iter_mut() {
                    if let Some(s) = props.get(k) {
                        default(s, child);
                    }
                }
            } else if let Some(s) = schema.get("additionalProperties").filter(|s| s.is_object()) {
                for child in map.values_mut() {
                    default(s, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items").filter(|s| s.is_object()) {
                for item in items {
                    default(s, item);
                }
            }
        }
        _ => {}
    }
}

fn collect_patterns(schema: &Value, out: &mut Vec<(String, Regex)>) {
    if let Some(p) = schema["pattern"].as_str()
        && !out.iter().any(|(q, _)| q == p)
        && let Ok(re) = compile(p)
    {
        out.push((p.to_string(), re));
    }
    for_each_child(schema, |child| collect_patterns(child, out));
}

fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(MAX_COMPILED)
        .dfa_size_limit(MAX_COMPILED)
        .build()
}

/// Calls `f` on every sub-schema of `schema`.
fn for_each_child(schema: &Value, mut f: impl FnMut(&Value)) {
    if let Some(props) = schema["properties"].as_object() {
        props.values().for_each(&mut f);
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(s) = schema.get(key).filter(|s| s.is_object()) {
            f(s);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(list) = schema[key].as_array() {
            list.iter().for_each(&mut f);
        }
    }
}

/// The problems that make `root` not a structural schema wkube can use.
pub fn check(root: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if !root.is_object() {
        errs.push(FieldError::required(path));
        return errs;
    }
    if schema_type(root) != Some("object") {
        errs.push(FieldError::invalid(
            format!("{path}.type"),
            root["type"].as_str().unwrap_or_default(),
            "must be object at the root",
        ));
    }
    let mut nodes = 0;
    check_node(root, path, 0, &mut nodes, &mut errs, false);
    if nodes > MAX_NODES {
        errs.push(FieldError::invalid(
            path,
            nodes.to_string(),
            format!("must have at most {MAX_NODES} schema nodes"),
        ));
    }
    errs
}

fn check_node(
    s: &Value,
    path: &str,
    depth: usize,
    nodes: &mut usize,
    errs: &mut Vec<FieldError>,
    in_logic: bool,
) {
    *nodes += 1;
    if *nodes > MAX_NODES || errs.len() > 100 {
        return;
    }
    if depth > MAX_DEPTH {
        errs.push(FieldError::invalid(
            path,
            "",
            format!("must be nested at most {MAX_DEPTH} levels deep"),
        ));
        return;
    }
    let Some(map) = s.as_object() else {
        errs.push(FieldError::invalid(
            path,
            render(s),
            "must be a schema object",
        ));
        return;
    };
    if map.contains_key("$ref") {
        errs.push(FieldError::forbidden(
            format!("{path}.$ref"),
            "$ref is not supported",
        ));
    }
    let ty = map.get("type").and_then(Value::as_str).unwrap_or("");
    if !ty.is_empty() && !TYPES.contains(&ty) {
        errs.push(FieldError::not_supported(format!("{path}.type"), ty, TYPES));
    }
    let int_or_string = map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let preserve = map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    // Inside allOf/anyOf/oneOf/not a node only adds value checks: types
    // and structure come from the node that holds them.
    if ty.is_empty() && !int_or_string && !preserve && !in_logic {
        errs.push(FieldError::required(format!("{path}.type")));
    }
    if map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(false)) {
        errs.push(FieldError::invalid(
            format!("{path}.x-kubernetes-preserve-unknown-fields"),
            "false",
            "must be true or undefined",
        ));
    }
    if map.contains_key("properties") && ty != "object" && !in_logic {
        errs.push(FieldError::forbidden(
            format!("{path}.properties"),
            "must only be used with type object",
        ));
    }
    if map.contains_key("items") && ty != "array" && !in_logic {
        errs.push(FieldError::forbidden(
            format!("{path}.items"),
            "must only be used with type array",
        ));
    }
    if ty == "array" && !in_logic && !map.get("items").is_some_and(Value::is_object) {
        errs.push(FieldError::required(format!("{path}.items")));
    }
    if map
        .get("properties")
        .is_some_and(|p| p.as_object().is_some_and(|p| !p.is_empty()))
        && map
            .get("additionalProperties")
            .is_some_and(|a| a != &Value::Bool(false))
    {
        errs.push(FieldError::forbidden(
            format!("{path}.additionalProperties"),
            "additionalProperties and properties are mutual exclusive",
        ));
    }
    if let Some(p) = map.get("pattern") {
        match p.as_str() {
            Some(p) if p.len() > MAX_PATTERN => errs.push(FieldError::invalid(
                format!("{path}.pattern"),
                "",
                format!("must be at most {MAX_PATTERN} characters"),
            )),
            Some(p) => {
                if let Err(e) = compile(p) {
                    errs.push(FieldError::invalid(
                        format!("{path}.pattern"),
                        p,
                        format!("must be a valid regular expression: {e}"),
                    ));
                }
            }
            None => errs.push(FieldError::invalid(
                format!("{path}.pattern"),
                render(p),
                "must be a string",
            )),
        }
    }
    if let Some(props) = map.get("properties") {
        match props.as_object() {
            Some(props) => {
                for (k, child) in props {
                    check_node(
                        child,
                        &format!("{path}.properties[{k}]"),
                        depth + 1,
                        nodes,
                        errs,
                        in_logic,
                    );
                }
            }
            None => errs.push(FieldError::invalid(
                format!("{path}.properties"),
                render(props),
                "must be an object",
            )),
        }
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(child) = map.get(key).filter(|c| !c.is_boolean()) {
            check_node(
                child,
                &format!("{path}.{key}"),
                depth + 1,
                nodes,
                errs,
                in_logic || key == "not",
            );
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(list) = map.get(key) {
            match list.as_array() {
                Some(list) => {
                    for (i, child) in list.iter().enumerate() {
                        check_node(
                            child,
                            &format!("{path}.{key}[{i}]"),
                            depth + 1,
                            nodes,
                            errs,
                            true,
                        );
                    }
                }
                None => errs.push(FieldError::invalid(
                    format!("{path}.{key}"),
                    render(list),
                    "must be a list of schemas",
                )),
            }
        }
    }
    // A default must itself be valid: checked by the caller once the
    // schema compiles (see `CustomKinds`), so that a bad default cannot
    // make every later write invalid.
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::new(
            &json!({
                "type": "object",
                "properties": {
                    "spec": {
                        "type": "object",
                        "required": ["size"],
                        "properties": {
                            "size": {"type": "integer", "minimum": 1, "maximum": 10},
                            "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                            "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 8},
                            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
                            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                            "port": {"x-kubernetes-int-or-string": true},
                        },
                    },
                    "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
                },
            }),
            "spec.versions[0].schema.openAPIV3Schema",
        )
        .unwrap()
    }

    #[test]
    fn unknown_fields_are_pruned_except_where_preserved() {
        let s = schema();
        let mut obj = json!({
            "apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
            "spec": {"size": 2, "extra": 1, "free": {"anything": {"goes": true}}},
            "junk": true,
        });
        s.prune(&mut obj);
        assert_eq!(
            obj,
            json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
                   "spec": {"size": 2, "free": {"anything": {"goes": true}}}})
        );
    }

    #[test]
    fn defaults_fill_absent_fields_only() {
        let s = schema();
        let mut obj = json!({"spec": {"size": 2}});
        s.default(&mut obj);
        assert_eq!(obj["spec"]["color"], "red");
        let mut obj = json!({"spec": {"size": 2, "color": "blue"}});
        s.default(&mut obj);
        assert_eq!(obj["spec"]["color"], "blue");
    }

    #[test]
    fn validation_names_each_bad_field_as_kubernetes_does() {
        let s = schema();
        let errs = s.validate(&json!({"spec": {"size": "big"}}));
        assert_eq!(
            errs[0].message(),
            "spec.size: Invalid value: \"big\": spec.size in body must be of type integer: \"string\""
        );
        let errs = s.validate(&json!({"spec": {"color": "green", "size": 11, "name": "ABC", "tags": ["a", "b", "c"], "port": true}}));
        let msgs: Vec<String> = errs.iter().map(FieldError::message).collect();
        assert!(
            msgs.contains(
                &"spec.color: Unsupported value: \"green\": supported values: \"red\", \"blue\""
                    .to_string()
            ),
            "{msgs:?}"
        );
        assert!(msgs.contains(&"spec.size: Invalid value: \"11\": spec.size in body should be less than or equal to 10".to_string()), "{msgs:?}");
        assert!(
            msgs.contains(
                &"spec.name: Invalid value: \"ABC\": spec.name in body should match '^[a-z]+$'"
                    .to_string()
            ),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("spec.tags: Too many: 3:")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("spec.port: Invalid value")),
            "{msgs:?}"
        );
        let errs = s.validate(&json!({"spec": {}}));
        assert_eq!(errs[0].message(), "spec.size: Required value");
        assert!(
            s.validate(&json!({"spec": {"size": 3, "port": "http", "free": {"x": [1]}}}))
                .is_empty()
        );
    }

    #[test]
    fn a_schema_that_is_not_structural_is_refused() {
        let errs = check(&json!({"type": "object", "properties": {"a": {}}}), "s");
        assert_eq!(errs[0].message(), "s.properties[a].type: Required value");
        let errs = check(
            &json!({"type": "object", "properties": {"a": {"type": "array"}}}),
            "s",
        );
        assert_eq!(errs[0].message(), "s.properties[a].items: Required value");
        let errs = check(&json!({"type": "string"}), "s");
        assert!(!errs.is_empty());
        let errs = check(
            &json!({"type": "object", "properties": {"a": {"type": "string", "pattern": "("}}}),
            "s",
        );
        assert!(
            errs[0].message().contains("valid regular expression"),
            "{:?}",
            errs
        );
        let mut deep = json!({"type": "object"});
        for _ in 0..100 {
            deep = json!({"type": "object", "properties": {"a": deep}});
        }
        assert!(!check(&deep, "s").is_empty());
    }
}
