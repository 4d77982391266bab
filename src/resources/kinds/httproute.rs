//! HTTPRoute (Gateway API): HTTP routing rules that attach to Gateway
//! listeners, matching on host, path, headers, query parameters and
//! method, and splitting traffic between Services by weight.

use serde_json::{Value, json};

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::defaults::set_default;
use crate::resources::gateway::HTTPRoute as Object;
use crate::resources::printer::{AGE, Column, NAME, age, col, name, s};
use crate::resources::validation::{FieldError, NameRule, validate_host};

pub struct HttpRoute;

const PATH_TYPES: &[&str] = &["Exact", "PathPrefix"];
const VALUE_TYPES: &[&str] = &["Exact"];
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

impl KindSpec for HttpRoute {
    type Object = Object;
    const PLURAL: &'static str = "httproutes";
    const SINGULAR: &'static str = "httproute";
    const NAMESPACED: bool = true;
    const SHORT_NAMES: &'static [&'static str] = &[];
    const CATEGORIES: &'static [&'static str] = &["gateway-api"];
    const SUBRESOURCES: &'static [Subresource] = &[Subresource::Status];
    const NAME_RULE: NameRule = NameRule::Subdomain;
    const COLUMNS: &'static [Column] = &[
        NAME,
        col("Hostnames", "string", "The host names the route matches."),
        AGE,
    ];
    const STATUS: StatusRule = StatusRule::Subresource;
    const IMMUTABLE: &'static [&'static str] = &[];
    const FIELD_SELECTORS: &'static [&'static str] = &[];
    const ALLOCATION: Allocation = Allocation::None;
    const DELETION: Deletion = Deletion::Immediate;
    const ACCESS: Access = Access::Workload;

    /// The Gateway API's defaults: a rule with no match matches every
    /// path; paths are prefixes, value matches exact, backends weigh 1.
    fn default(obj: &mut Value) {
        let Some(spec) = obj.get_mut("spec") else {
            return;
        };
        for p in spec
            .get_mut("parentRefs")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            set_default(p, "group", json!(crate::resources::gateway::GROUP));
            set_default(p, "kind", json!("Gateway"));
        }
        if spec.get("rules").is_none() {
            spec["rules"] = json!([{}]);
        }
        for rule in spec
            .get_mut("rules")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let matches = rule
                .as_object_mut()
                .map(|r| r.entry("matches").or_insert_with(|| json!([])));
            if let Some(m) = matches.and_then(Value::as_array_mut) {
                if m.is_empty() {
                    m.push(json!({}));
                }
                for one in m {
                    set_default(one, "path", json!({}));
                    set_default(&mut one["path"], "type", json!("PathPrefix"));
                    set_default(&mut one["path"], "value", json!("/"));
                    for list in ["headers", "queryParams"] {
                        for h in one
                            .get_mut(list)
                            .and_then(Value::as_array_mut)
                            .into_iter()
                            .flatten()
                        {
                            set_default(h, "type", json!("Exact"));
                        }
                    }
                }
            }
            for b in rule
                .get_mut("backendRefs")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                set_default(b, "group", json!(""));
                set_default(b, "kind", json!("Service"));
                set_default(b, "weight", json!(1));
            }
        }
    }

    fn validate(obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        let list = |v: &Value, key: &str| -> Vec<Value> {
            v.get(key).and_then(Value::as_array).cloned().unwrap_or_default()
        };
        let parents = list(spec, "parentRefs");
        if parents.len() > 32 {
            errs.push(FieldError::invalid(
                "spec.parentRefs",
                parents.len().to_string(),
                "must have at most 32 items",
            ));
        }
        for (i, p) in parents.iter().enumerate() {
            if s(p, "/name").is_empty() {
                errs.push(FieldError::required(format!("spec.parentRefs[{i}].name")));
            }
        }
        // The Gateway API's own bounds (maxItems), which also bound the
        // proxy's matching work per request.
        let hostnames = list(spec, "hostnames");
        if hostnames.len() > 16 {
            errs.push(FieldError::invalid(
                "spec.hostnames",
                hostnames.len().to_string(),
                "must have at most 16 items",
            ));
        }
        for (i, h) in hostnames.iter().enumerate() {
            validate_host(
                h.as_str().unwrap_or(""),
                &format!("spec.hostnames[{i}]"),
                &mut errs,
            );
        }
        let rules = list(spec, "rules");
        if rules.len() > 16 {
            errs.push(FieldError::invalid(
                "spec.rules",
                rules.len().to_string(),
                "must have at most 16 items",
            ));
        }
        for (i, rule) in rules.iter().enumerate() {
            let at = format!("spec.rules[{i}]");
            if !list(rule, "filters").is_empty() {
                errs.push(FieldError::invalid(
                    format!("{at}.filters"),
                    "",
                    "filters are not supported by wkube's gateway",
                ));
            }
            let matches = list(rule, "matches");
            if matches.len() > 64 {
                errs.push(FieldError::invalid(
                    format!("{at}.matches"),
                    matches.len().to_string(),
                    "must have at most 64 items",
                ));
            }
            for (j, m) in matches.iter().enumerate() {
                let at = format!("{at}.matches[{j}]");
                let ty = s(m, "/path/type");
                if !PATH_TYPES.contains(&ty) {
                    errs.push(FieldError::not_supported(
                        format!("{at}.path.type"),
                        ty.to_string(),
                        PATH_TYPES,
                    ));
                }
                let value = s(m, "/path/value");
                if !value.starts_with('/') {
                    errs.push(FieldError::invalid(
                        format!("{at}.path.value"),
                        value.to_string(),
                        "must be an absolute path",
                    ));
                }
                for list_name in ["headers", "queryParams"] {
                    let items = list(m, list_name);
                    if items.len() > 16 {
                        errs.push(FieldError::invalid(
                            format!("{at}.{list_name}"),
                            items.len().to_string(),
                            "must have at most 16 items",
                        ));
                    }
                    for (k, h) in items.iter().enumerate() {
                        let ty = s(h, "/type");
                        if !VALUE_TYPES.contains(&ty) {
                            errs.push(FieldError::not_supported(
                                format!("{at}.{list_name}[{k}].type"),
                                ty.to_string(),
                                VALUE_TYPES,
                            ));
                        }
                        if s(h, "/name").is_empty() {
                            errs.push(FieldError::required(format!(
                                "{at}.{list_name}[{k}].name"
                            )));
                        }
                    }
                }
                let method = s(m, "/method");
                if !method.is_empty() && !METHODS.contains(&method) {
                    errs.push(FieldError::not_supported(
                        format!("{at}.method"),
                        method.to_string(),
                        METHODS,
                    ));
                }
            }
            let backends = list(rule, "backendRefs");
            if backends.len() > 16 {
                errs.push(FieldError::invalid(
                    format!("{at}.backendRefs"),
                    backends.len().to_string(),
                    "must have at most 16 items",
                ));
            }
            for (j, b) in backends.iter().enumerate() {
                let at = format!("{at}.backendRefs[{j}]");
                if !s(b, "/group").is_empty() || s(b, "/kind") != "Service" {
                    errs.push(FieldError::invalid(
                        format!("{at}.kind"),
                        s(b, "/kind").to_string(),
                        "only Services are supported as backends",
                    ));
                }
                if !s(b, "/namespace").is_empty()
                    && s(b, "/namespace") != s(obj, "/metadata/namespace")
                {
                    errs.push(FieldError::invalid(
                        format!("{at}.namespace"),
                        s(b, "/namespace").to_string(),
                        "backends must be in the route's namespace (ReferenceGrant is not supported)",
                    ));
                }
                if s(b, "/name").is_empty() {
                    errs.push(FieldError::required(format!("{at}.name")));
                }
                match b.get("port").and_then(Value::as_i64) {
                    None => errs.push(FieldError::required(format!("{at}.port"))),
                    Some(p) if !(1..=65535).contains(&p) => errs.push(FieldError::invalid(
                        format!("{at}.port"),
                        p.to_string(),
                        "must be between 1 and 65535, inclusive",
                    )),
                    Some(_) => {}
                }
                let weight = b.get("weight").and_then(Value::as_i64).unwrap_or(1);
                if !(0..=1_000_000).contains(&weight) {
                    errs.push(FieldError::invalid(
                        format!("{at}.weight"),
                        weight.to_string(),
                        "must be between 0 and 1000000, inclusive",
                    ));
                }
            }
        }
        errs
    }

    fn cells(o: &Value) -> Vec<Value> {
        let hosts: Vec<&str> = o
            .pointer("/spec/hostnames")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        vec![name(o), json!(hosts), age(o)]
    }

    fn initial_status(_obj: &Value) -> Option<Value> {
        Some(json!({"parents": []}))
    }

    fn on_create(_obj: &mut Value, _ctx: &CreateContext<'_>) -> Result<(), FieldError> {
        Ok(())
    }

    fn on_update(_old: &Value, _new: &mut Value) -> Result<(), FieldError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(spec: Value) -> Value {
        let mut obj = json!({"metadata": {"name": "r", "namespace": "default"}, "spec": spec});
        HttpRoute::default(&mut obj);
        obj
    }

    #[test]
    fn lists_past_the_gateway_apis_bounds_are_refused() {
        let many = |n: usize, f: &dyn Fn(usize) -> Value| (0..n).map(f).collect::<Vec<_>>();
        let hosts = many(17, &|i| json!(format!("h{i}.example.test")));
        let headers = many(17, &|i| json!({"name": format!("x-{i}"), "value": "1"}));
        let backends = many(17, &|i| json!({"name": format!("s{i}"), "port": 80}));
        let errs = HttpRoute::validate(&route(json!({
            "parentRefs": [{"name": "edge"}],
            "hostnames": hosts,
            "rules": [{"matches": [{"headers": headers}], "backendRefs": backends}],
        })));
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "spec.hostnames",
            "spec.rules[0].matches[0].headers",
            "spec.rules[0].backendRefs",
        ] {
            assert!(fields.contains(&f), "{f} not refused: {fields:?}");
        }

        let ok = HttpRoute::validate(&route(json!({
            "parentRefs": [{"name": "edge"}],
            "hostnames": many(16, &|i| json!(format!("h{i}.example.test"))),
            "rules": [{"backendRefs": many(16, &|i| json!({"name": format!("s{i}"), "port": 80}))}],
        })));
        assert!(ok.is_empty(), "{ok:?}");
    }
}
