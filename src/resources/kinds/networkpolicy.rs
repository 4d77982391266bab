//! NetworkPolicy: which pods may talk to which. Every node's proxy
//! enforces them on the requests it carries (`proxy::netpol`), since no
//! packet of a pod bypasses it; this file only admits them.

use std::net::{Ipv4Addr, Ipv6Addr};

use k8s_openapi::api::networking::v1::NetworkPolicy as Object;
use serde_json::{Value, json};

use super::poddisruptionbudget::validate_label_selector;
use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::printer::{AGE, Column, NAME, age, col, name, selector_string};
use crate::resources::validation::{FieldError, NameRule};

pub struct NetworkPolicy;

const POLICY_TYPES: &[&str] = &["Ingress", "Egress"];
const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];

impl KindSpec for NetworkPolicy {
    type Object = Object;
    const PLURAL: &'static str = "networkpolicies";
    const SINGULAR: &'static str = "networkpolicy";
    const NAMESPACED: bool = true;
    const SHORT_NAMES: &'static [&'static str] = &["netpol"];
    const CATEGORIES: &'static [&'static str] = &[];
    const SUBRESOURCES: &'static [Subresource] = &[];
    const NAME_RULE: NameRule = NameRule::Subdomain;
    const COLUMNS: &'static [Column] = &[
        NAME,
        col(
            "Pod-Selector",
            "string",
            "Selects the pods to which this NetworkPolicy object applies.",
        ),
        AGE,
    ];
    const STATUS: StatusRule = StatusRule::None;
    const IMMUTABLE: &'static [&'static str] = &[];
    const FIELD_SELECTORS: &'static [&'static str] = &[];
    const ALLOCATION: Allocation = Allocation::None;
    const DELETION: Deletion = Deletion::Immediate;
    const ACCESS: Access = Access::Workload;

    /// Kubernetes fills in `policyTypes` (Ingress, plus Egress when the
    /// policy has egress rules) and each port's protocol (TCP).
    fn default(obj: &mut Value) {
        let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
            return;
        };
        spec.entry("podSelector").or_insert_with(|| json!({}));
        let types_missing = spec
            .get("policyTypes")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if types_missing {
            let mut types = vec![json!("Ingress")];
            if spec.get("egress").is_some_and(|e| !e.is_null()) {
                types.push(json!("Egress"));
            }
            spec.insert("policyTypes".into(), Value::Array(types));
        }
        for dir in ["ingress", "egress"] {
            for rule in spec
                .get_mut(dir)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                for port in rule
                    .get_mut("ports")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if let Some(p) = port.as_object_mut() {
                        p.entry("protocol").or_insert_with(|| json!("TCP"));
                    }
                }
            }
        }
    }

    fn validate(obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        if let Some(sel) = spec.get("podSelector") {
            validate_label_selector(sel, "spec.podSelector", &mut errs);
        }
        let types = spec.get("policyTypes").and_then(Value::as_array);
        for (i, t) in types.into_iter().flatten().enumerate() {
            let t = t.as_str().unwrap_or("");
            if !POLICY_TYPES.contains(&t) {
                errs.push(FieldError::not_supported(
                    format!("spec.policyTypes[{i}]"),
                    t,
                    POLICY_TYPES,
                ));
            }
        }
        if types.is_some_and(|t| t.len() > 2) {
            errs.push(FieldError::invalid(
                "spec.policyTypes",
                "",
                "may not specify more than two policyTypes",
            ));
        }
        for (dir, peers) in [("ingress", "from"), ("egress", "to")] {
            let rules = spec.get(dir).and_then(Value::as_array);
            for (i, rule) in rules.into_iter().flatten().enumerate() {
                let at = format!("spec.{dir}[{i}]");
                let ports = rule.get("ports").and_then(Value::as_array);
                for (j, port) in ports.into_iter().flatten().enumerate() {
                    validate_port(port, &format!("{at}.ports[{j}]"), &mut errs);
                }
                let peers_of = rule.get(peers).and_then(Value::as_array);
                for (j, peer) in peers_of.into_iter().flatten().enumerate() {
                    validate_peer(peer, &format!("{at}.{peers}[{j}]"), &mut errs);
                }
            }
        }
        errs
    }

    fn cells(o: &Value) -> Vec<Value> {
        vec![
            name(o),
            json!(selector_string(o.pointer("/spec/podSelector"))),
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

/// A port is a protocol with a number (or a range up to `endPort`) or a
/// named container port.
fn validate_port(port: &Value, at: &str, errs: &mut Vec<FieldError>) {
    if let Some(p) = port.get("protocol").and_then(Value::as_str)
        && !PROTOCOLS.contains(&p)
    {
        errs.push(FieldError::not_supported(
            format!("{at}.protocol"),
            p,
            PROTOCOLS,
        ));
    }
    let end = port.get("endPort").and_then(Value::as_i64);
    match port.get("port") {
        None | Some(Value::Null) => {
            if end.is_some() {
                errs.push(FieldError::invalid(
                    format!("{at}.endPort"),
                    end.unwrap_or_default().to_string(),
                    "may not be specified when `port` is not specified",
                ));
            }
        }
        Some(Value::Number(n)) => {
            let n = n.as_i64().unwrap_or(0);
            if !(1..=65535).contains(&n) {
                errs.push(FieldError::invalid(
                    format!("{at}.port"),
                    n.to_string(),
                    "must be between 1 and 65535, inclusive",
                ));
            }
            if let Some(e) = end {
                if e < n {
                    errs.push(FieldError::invalid(
                        format!("{at}.endPort"),
                        e.to_string(),
                        "must be greater than or equal to `port`",
                    ));
                } else if e > 65535 {
                    errs.push(FieldError::invalid(
                        format!("{at}.endPort"),
                        e.to_string(),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
        }
        Some(Value::String(name)) => {
            if !is_port_name(name) {
                errs.push(FieldError::invalid(
                    format!("{at}.port"),
                    name.clone(),
                    "must contain only lowercase alphanumeric characters or '-', at most 15, at least one letter, not starting, ending or doubling '-'",
                ));
            }
            if let Some(e) = end {
                errs.push(FieldError::invalid(
                    format!("{at}.endPort"),
                    e.to_string(),
                    "may not be specified when `port` is non-numeric",
                ));
            }
        }
        Some(_) => errs.push(FieldError::invalid(
            format!("{at}.port"),
            "",
            "must be a port number or name",
        )),
    }
}

/// An IANA service name, as a container port's name.
fn is_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

/// A peer is an `ipBlock` alone, or pod and/or namespace selectors.
fn validate_peer(peer: &Value, at: &str, errs: &mut Vec<FieldError>) {
    let pods = peer.get("podSelector").filter(|v| !v.is_null());
    let nss = peer.get("namespaceSelector").filter(|v| !v.is_null());
    let block = peer.get("ipBlock").filter(|v| !v.is_null());
    if let Some(sel) = pods {
        validate_label_selector(sel, &format!("{at}.podSelector"), errs);
    }
    if let Some(sel) = nss {
        validate_label_selector(sel, &format!("{at}.namespaceSelector"), errs);
    }
    match (block, pods.is_some() || nss.is_some()) {
        (None, false) => errs.push(FieldError {
            detail: "must specify a peer".into(),
            ..FieldError::required(at.to_string())
        }),
        (Some(_), true) => errs.push(FieldError {
            kind: crate::resources::validation::FieldErrorKind::Forbidden,
            field: at.to_string(),
            value: None,
            detail: "may not specify more than 1 peer".into(),
        }),
        (Some(b), false) => validate_ip_block(b, &format!("{at}.ipBlock"), errs),
        (None, true) => {}
    }
}

/// An address range: IPv4 or IPv6 base and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Range {
    V4(u32, u8),
    V6(u128, u8),
}

impl Range {
    fn parse(s: &str) -> Option<Range> {
        let (ip, len) = s.split_once('/')?;
        let len: u8 = len.parse().ok()?;
        if let Ok(v4) = ip.parse::<Ipv4Addr>() {
            return (len <= 32).then_some(Range::V4(u32::from(v4), len));
        }
        let v6 = ip.parse::<Ipv6Addr>().ok()?;
        (len <= 128).then_some(Range::V6(u128::from(v6), len))
    }

    /// Whether `inner` lies inside `self` and is smaller.
    fn strictly_contains(self, inner: Range) -> bool {
        match (self, inner) {
            (Range::V4(a, l), Range::V4(b, m)) => {
                let mask = if l == 0 { 0 } else { u32::MAX << (32 - l) };
                m > l && a & mask == b & mask
            }
            (Range::V6(a, l), Range::V6(b, m)) => {
                let mask = if l == 0 { 0 } else { u128::MAX << (128 - l) };
                m > l && a & mask == b & mask
            }
            _ => false,
        }
    }
}

fn validate_ip_block(block: &Value, at: &str, errs: &mut Vec<FieldError>) {
    let cidr = block.get("cidr").and_then(Value::as_str).unwrap_or("");
    let outer = if cidr.is_empty() {
        errs.push(FieldError::required(format!("{at}.cidr")));
        None
    } else {
        let r = Range::parse(cidr);
        if r.is_none() {
            errs.push(FieldError::invalid(
                format!("{at}.cidr"),
                cidr,
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            ));
        }
        r
    };
    let except = block.get("except").and_then(Value::as_array);
    for (i, e) in except.into_iter().flatten().enumerate() {
        let e = e.as_str().unwrap_or("");
        let field = format!("{at}.except[{i}]");
        match (Range::parse(e), outer) {
            (None, _) => errs.push(FieldError::invalid(
                field,
                e,
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            )),
            (Some(inner), Some(outer)) if !outer.strictly_contains(inner) => errs.push(
                FieldError::invalid(field, e, "must be a strict subset of `cidr`"),
            ),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(spec: Value) -> Vec<String> {
        let mut obj = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec});
        NetworkPolicy::default(&mut obj);
        NetworkPolicy::validate(&obj)
            .iter()
            .map(|e| format!("{}: {}", e.field, e.detail))
            .collect()
    }

    #[test]
    fn policy_types_default_to_ingress_plus_egress_when_egress_rules_exist() {
        let mut obj = json!({"spec": {"podSelector": {}, "egress": [{}]}});
        NetworkPolicy::default(&mut obj);
        assert_eq!(obj["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        let mut obj = json!({"spec": {"ingress": [{"ports": [{"port": 80}]}]}});
        NetworkPolicy::default(&mut obj);
        assert_eq!(obj["spec"]["policyTypes"], json!(["Ingress"]));
        assert_eq!(obj["spec"]["ingress"][0]["ports"][0]["protocol"], "TCP");
    }

    #[test]
    fn bad_types_ports_and_peers_are_refused_naming_the_field() {
        let errs = errors(json!({
            "podSelector": {},
            "policyTypes": ["Ingress", "Sideways"],
            "ingress": [{
                "ports": [{"protocol": "ICMP", "port": 80},
                          {"port": 90, "endPort": 80},
                          {"port": "http", "endPort": 90},
                          {"endPort": 90},
                          {"port": 70000}],
                "from": [{}, {"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]
            }],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8",
                "except": ["10.1.0.0/16", "192.168.0.0/16", "10.0.0.0/8", "bad"]}}]}]
        }));
        let has = |f: &str| errs.iter().any(|e| e.starts_with(f));
        for f in [
            "spec.policyTypes[1]",
            "spec.ingress[0].ports[0].protocol",
            "spec.ingress[0].ports[1].endPort",
            "spec.ingress[0].ports[2].endPort",
            "spec.ingress[0].ports[3].endPort",
            "spec.ingress[0].ports[4].port",
            "spec.ingress[0].from[0]",
            "spec.ingress[0].from[1]",
            "spec.egress[0].to[0].ipBlock.except[1]",
            "spec.egress[0].to[0].ipBlock.except[2]",
            "spec.egress[0].to[0].ipBlock.except[3]",
        ] {
            assert!(has(f), "{f} in {errs:?}");
        }
        assert!(!has("spec.egress[0].to[0].ipBlock.except[0]"), "{errs:?}");
    }

    #[test]
    fn a_valid_policy_passes() {
        let errs = errors(json!({
            "podSelector": {"matchLabels": {"app": "hello"}},
            "ingress": [{"from": [
                {"podSelector": {"matchLabels": {"app": "echo"}},
                 "namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "Exists"}]}},
                {"ipBlock": {"cidr": "2001:db8::/32", "except": ["2001:db8:1::/48"]}}],
                "ports": [{"port": "http"}, {"port": 8000, "endPort": 8080}]}]
        }));
        assert!(errs.is_empty(), "{errs:?}");
    }
}
