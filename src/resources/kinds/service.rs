//! Service: a stable address in front of the pods its selector picks.

use k8s_openapi::api::core::v1::Service as Object;
use serde_json::{Value, json};

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::defaults::set_default;
use crate::resources::printer::{
    AGE, Column, NAME, age, col, n, name, none_if_empty, s, selector_string, wide,
};
use crate::resources::validation::{FieldError, NameRule};

pub struct Service;

impl KindSpec for Service {
    type Object = Object;
    const PLURAL: &'static str = "services";
    const SINGULAR: &'static str = "service";
    const NAMESPACED: bool = true;
    const SHORT_NAMES: &'static [&'static str] = &["svc"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [Subresource] = &[Subresource::Status, Subresource::Proxy];
    const NAME_RULE: NameRule = NameRule::Dns1035;
    const COLUMNS: &'static [Column] = &[
        NAME,
        col(
            "Type",
            "string",
            "type determines how the Service is exposed.",
        ),
        col(
            "Cluster-IP",
            "string",
            "clusterIP is the IP address of the service.",
        ),
        col(
            "External-IP",
            "string",
            "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
        ),
        col(
            "Port(s)",
            "string",
            "The list of ports that are exposed by this service.",
        ),
        AGE,
        wide(
            "Selector",
            "string",
            "Route service traffic to pods with label keys and values matching this selector.",
        ),
    ];
    const STATUS: StatusRule = StatusRule::Subresource;
    const IMMUTABLE: &'static [&'static str] = &[];
    const FIELD_SELECTORS: &'static [&'static str] = &[];
    const ALLOCATION: Allocation = Allocation::ServiceAddresses;
    const DELETION: Deletion = Deletion::Immediate;
    const ACCESS: Access = Access::Workload;

    fn default(obj: &mut Value) {
        if let Some(spec) = obj.get_mut("spec") {
            set_default(spec, "type", json!("ClusterIP"));
            set_default(spec, "sessionAffinity", json!("None"));
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports {
                    set_default(p, "protocol", json!("TCP"));
                    if p.get("targetPort").is_none()
                        && let Some(port) = p.get("port").cloned()
                    {
                        p["targetPort"] = port;
                    }
                }
            }
        }
    }

    fn validate(obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if let Some(ports) = obj.pointer("/spec/ports").and_then(Value::as_array) {
            for (i, p) in ports.iter().enumerate() {
                match p.get("port").and_then(Value::as_i64) {
                    None => errs.push(FieldError::required(format!("spec.ports[{i}].port"))),
                    Some(n) if !(1..=65535).contains(&n) => errs.push(FieldError::invalid(
                        format!("spec.ports[{i}].port"),
                        n.to_string(),
                        "must be between 1 and 65535, inclusive",
                    )),
                    _ => {}
                }
            }
            if ports.len() > 1 {
                for (i, p) in ports.iter().enumerate() {
                    if p.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .is_empty()
                    {
                        errs.push(FieldError::required(format!("spec.ports[{i}].name")));
                    }
                }
            }
        }
        errs
    }

    fn cells(o: &Value) -> Vec<Value> {
        let ty = s(o, "/spec/type");
        let ports: Vec<String> = o
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .map(|ps| {
                ps.iter()
                    .map(|p| match p.get("nodePort").and_then(Value::as_i64) {
                        Some(np) if np > 0 => {
                            format!("{}:{}/{}", n(p, "/port"), np, s(p, "/protocol"))
                        }
                        _ => format!("{}/{}", n(p, "/port"), s(p, "/protocol")),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut external: Vec<String> = o
            .pointer("/status/loadBalancer/ingress")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|x| s(x, "/ip").to_string())
                    .filter(|x| !x.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(e) = o.pointer("/spec/externalIPs").and_then(Value::as_array) {
            external.extend(e.iter().filter_map(Value::as_str).map(str::to_string));
        }
        let external = if !external.is_empty() {
            external.join(",")
        } else if ty == "LoadBalancer" {
            "<pending>".to_string()
        } else {
            "<none>".to_string()
        };
        vec![
            name(o),
            json!(ty),
            json!(none_if_empty(s(o, "/spec/clusterIP").to_string())),
            json!(external),
            json!(none_if_empty(ports.join(","))),
            age(o),
            json!(selector_string(o.pointer("/spec/selector"))),
        ]
    }

    fn initial_status(_obj: &Value) -> Option<Value> {
        Some(json!({"loadBalancer": {}}))
    }

    fn on_create(_obj: &mut Value, _ctx: &CreateContext<'_>) -> Result<(), FieldError> {
        Ok(())
    }

    fn on_update(old: &Value, new: &mut Value) -> Result<(), FieldError> {
        // Allocated addresses stay with the service.
        let old_ip = old.pointer("/spec/clusterIP").cloned();
        match (old_ip, new.pointer("/spec/clusterIP").cloned()) {
            (Some(o), Some(n)) if o != n && n != json!("") => {
                return Err(FieldError::invalid(
                    "spec.clusterIPs[0]",
                    n.as_str().unwrap_or(""),
                    "may not change once set",
                ));
            }
            (Some(o), _) => {
                new["spec"]["clusterIP"] = o.clone();
                new["spec"]["clusterIPs"] = old
                    .pointer("/spec/clusterIPs")
                    .cloned()
                    .unwrap_or(json!([o]));
            }
            _ => {}
        }
        // Keep allocated node ports that the update leaves out.
        if let (Some(old_ports), Some(new_ports)) = (
            old.pointer("/spec/ports").and_then(Value::as_array),
            new.pointer_mut("/spec/ports").and_then(Value::as_array_mut),
        ) {
            for p in new_ports.iter_mut() {
                if p.get("nodePort").is_none()
                    && let Some(op) = old_ports.iter().find(|o| o.get("port") == p.get("port"))
                    && let Some(np) = op.get("nodePort")
                {
                    p["nodePort"] = np.clone();
                }
            }
        }
        if !matches!(new.pointer("/spec/ipFamilies"), Some(Value::Array(_))) {
            new["spec"]["ipFamilies"] = json!(["IPv4"]);
        }
        new["spec"]["ipFamilyPolicy"] = new
            .pointer("/spec/ipFamilyPolicy")
            .cloned()
            .unwrap_or(json!("SingleStack"));
        new["spec"]["internalTrafficPolicy"] = new
            .pointer("/spec/internalTrafficPolicy")
            .cloned()
            .unwrap_or(json!("Cluster"));
        Ok(())
    }
}
