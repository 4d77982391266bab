//! Ingress: HTTP routes from outside the cluster to Services, by host and
//! path. Every node's proxy serves the Ingresses of the `wkube` class
//! ([`super::ingressclass`]); the ingress controller writes the addresses
//! they are served on into their status.

use k8s_openapi::api::networking::v1::Ingress as Object;
use serde_json::{Value, json};

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::printer::{AGE, Column, NAME, age, col, name, none_if_empty, s};
use crate::resources::validation::{FieldError, NameRule, is_dns1123_subdomain, validate_host};

pub struct Ingress;

/// The path types Kubernetes defines.
const PATH_TYPES: &[&str] = &["Exact", "Prefix", "ImplementationSpecific"];

impl KindSpec for Ingress {
    type Object = Object;
    const PLURAL: &'static str = "ingresses";
    const SINGULAR: &'static str = "ingress";
    const NAMESPACED: bool = true;
    const SHORT_NAMES: &'static [&'static str] = &["ing"];
    const CATEGORIES: &'static [&'static str] = &[];
    const SUBRESOURCES: &'static [Subresource] = &[Subresource::Status];
    const NAME_RULE: NameRule = NameRule::Subdomain;
    const COLUMNS: &'static [Column] = &[
        NAME,
        col(
            "Class",
            "string",
            "ingressClassName is the name of an IngressClass cluster resource.",
        ),
        col("Hosts", "string", "Hosts that incoming requests are matched against."),
        col(
            "Address",
            "string",
            "Address is a list containing ingress points for the load-balancer.",
        ),
        col("Ports", "string", "Ports of the ingress."),
        AGE,
    ];
    const STATUS: StatusRule = StatusRule::Subresource;
    const IMMUTABLE: &'static [&'static str] = &[];
    const FIELD_SELECTORS: &'static [&'static str] = &[];
    const ALLOCATION: Allocation = Allocation::IngressClass;
    const DELETION: Deletion = Deletion::Immediate;
    const ACCESS: Access = Access::Workload;

    fn default(_obj: &mut Value) {}

    fn validate(obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        let rules = spec.get("rules").and_then(Value::as_array);
        if let Some(b) = spec.get("defaultBackend") {
            validate_backend(b, "spec.defaultBackend", &mut errs);
        } else if rules.is_none_or(Vec::is_empty) {
            errs.push(FieldError::invalid(
                "spec.rules",
                "[]",
                "either `defaultBackend` or `rules` must be specified",
            ));
        }
        for (i, rule) in rules.into_iter().flatten().enumerate() {
            let host = s(rule, "/host");
            if !host.is_empty() {
                validate_host(host, &format!("spec.rules[{i}].host"), &mut errs);
            }
            let Some(http) = rule.get("http") else {
                continue;
            };
            let paths = http.get("paths").and_then(Value::as_array);
            if paths.is_none_or(Vec::is_empty) {
                errs.push(FieldError::required(format!(
                    "spec.rules[{i}].http.paths"
                )));
            }
            for (j, p) in paths.into_iter().flatten().enumerate() {
                let at = format!("spec.rules[{i}].http.paths[{j}]");
                let path_type = s(p, "/pathType");
                let path = s(p, "/path");
                if path_type.is_empty() {
                    errs.push(FieldError::required(format!("{at}.pathType")));
                } else if !PATH_TYPES.contains(&path_type) {
                    errs.push(FieldError::not_supported(
                        format!("{at}.pathType"),
                        path_type.to_string(),
                        PATH_TYPES,
                    ));
                } else if path_type != "ImplementationSpecific" || !path.is_empty() {
                    if !path.starts_with('/') {
                        errs.push(FieldError::invalid(
                            format!("{at}.path"),
                            path.to_string(),
                            "must be an absolute path",
                        ));
                    } else if path_type != "ImplementationSpecific"
                        && ["//", "/./", "/../", "%2f", "%2F"]
                            .iter()
                            .any(|bad| path.contains(bad))
                    {
                        errs.push(FieldError::invalid(
                            format!("{at}.path"),
                            path.to_string(),
                            "must not contain '//', '/./', '/../' or '%2f'",
                        ));
                    }
                }
                match p.get("backend") {
                    Some(b) => validate_backend(b, &format!("{at}.backend"), &mut errs),
                    None => errs.push(FieldError::required(format!("{at}.backend"))),
                }
            }
        }
        for (i, tls) in spec
            .get("tls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            for (j, h) in tls
                .get("hosts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                validate_host(
                    h.as_str().unwrap_or(""),
                    &format!("spec.tls[{i}].hosts[{j}]"),
                    &mut errs,
                );
            }
        }
        if let Some(class) = spec.get("ingressClassName").and_then(Value::as_str)
            && !is_dns1123_subdomain(class)
        {
            errs.push(FieldError::invalid(
                "spec.ingressClassName",
                class.to_string(),
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            ));
        }
        errs
    }

    fn cells(o: &Value) -> Vec<Value> {
        let rules = o.pointer("/spec/rules").and_then(Value::as_array);
        let hosts: Vec<&str> = rules
            .into_iter()
            .flatten()
            .map(|r| s(r, "/host"))
            .filter(|h| !h.is_empty())
            .collect();
        let hosts = if hosts.is_empty() {
            "*".to_string()
        } else {
            hosts.join(",")
        };
        let address: Vec<&str> = o
            .pointer("/status/loadBalancer/ingress")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|a| {
                let ip = s(a, "/ip");
                if ip.is_empty() { s(a, "/hostname") } else { ip }
            })
            .filter(|a| !a.is_empty())
            .collect();
        let tls = o
            .pointer("/spec/tls")
            .and_then(Value::as_array)
            .is_some_and(|t| !t.is_empty());
        vec![
            name(o),
            json!(none_if_empty(
                s(o, "/spec/ingressClassName").to_string()
            )),
            json!(hosts),
            json!(address.join(",")),
            json!(if tls { "80, 443" } else { "80" }),
            age(o),
        ]
    }

    fn initial_status(_obj: &Value) -> Option<Value> {
        Some(json!({"loadBalancer": {}}))
    }

    fn on_create(_obj: &mut Value, _ctx: &CreateContext<'_>) -> Result<(), FieldError> {
        Ok(())
    }

    fn on_update(_old: &Value, _new: &mut Value) -> Result<(), FieldError> {
        Ok(())
    }
}

/// A backend names a Service port (by number or by name) or a resource,
/// never both.
fn validate_backend(b: &Value, field: &str, errs: &mut Vec<FieldError>) {
    match (b.get("service"), b.get("resource")) {
        (Some(_), Some(_)) => errs.push(FieldError::invalid(
            field,
            "",
            "cannot set both service and resource backends",
        )),
        (None, None) => errs.push(FieldError::invalid(
            field,
            "",
            "one backend (service or resource) must be specified",
        )),
        (None, Some(_)) => {}
        (Some(svc), None) => {
            if s(svc, "/name").is_empty() {
                errs.push(FieldError::required(format!("{field}.service.name")));
            }
            let port = svc.get("port").unwrap_or(&Value::Null);
            let number = port.get("number").and_then(Value::as_i64);
            let pname = port.get("name").and_then(Value::as_str).unwrap_or("");
            match (number, pname.is_empty()) {
                (Some(_), false) => errs.push(FieldError::invalid(
                    format!("{field}.service.port"),
                    "",
                    "cannot set both port name & port number",
                )),
                (None, true) => errs.push(FieldError::invalid(
                    format!("{field}.service.port"),
                    "",
                    "port name or number is required",
                )),
                (Some(n), true) if !(1..=65535).contains(&n) => {
                    errs.push(FieldError::invalid(
                        format!("{field}.service.port.number"),
                        n.to_string(),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
                _ => {}
            }
        }
    }
}
