//! Admission: what the API server itself does to objects of some kinds on
//! their way in and out — Service IP and NodePort allocation, Node pod CIDR
//! allocation ([`super::podcidr`]), pod service accounts, namespace
//! termination.

use std::net::Ipv4Addr;

use bytes::Bytes;
use serde_json::{Value, json};

use super::ApiState;
use super::objects;
use super::request::DeleteOptions;
use super::status::ApiError;
use crate::cluster::Cidr;
use crate::resources::{Allocation, Deletion, FieldError, Kind};
use crate::store::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyRange, PutRequest, TxnOp,
    TxnRequest,
};

const IP_ALLOC: &str = "/registry/allocations/serviceips/";
const PORT_ALLOC: &str = "/registry/allocations/nodeports/";

/// The hooks. Stateless: everything lives in the store.
#[derive(Default)]
pub struct Admission;

async fn claim(state: &ApiState, key: String, owner: &str) -> Result<bool, ApiError> {
    let key = Bytes::from(key);
    let resp = state
        .registry
        .store()
        .txn(TxnRequest {
            compare: vec![Compare {
                range: KeyRange::single(key.clone()),
                result: CompareResult::Equal,
                target: CompareTarget::Create(0),
            }],
            success: vec![TxnOp::Put(PutRequest {
                key,
                value: Bytes::from(owner.to_string()),
                ..Default::default()
            })],
            failure: vec![],
        })
        .await?;
    Ok(resp.succeeded)
}

async fn release(state: &ApiState, key: String) {
    let _ = state
        .registry
        .store()
        .delete_range(DeleteRangeRequest {
            range: KeyRange::single(key),
            prev_kv: false,
        })
        .await;
}

fn service_owner(obj: &Value) -> String {
    format!(
        "{}/{}",
        obj.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(""),
        objects::name_of(obj)
    )
}

fn invalid_service(obj: &Value, field: &str, value: String, detail: &str) -> ApiError {
    ApiError::Invalid {
        group: String::new(),
        kind: "Service".into(),
        name: objects::name_of(obj).to_string(),
        causes: vec![FieldError::invalid(field, value, detail)],
    }
}

impl Admission {
    /// Create-time steps that need cluster state: the allocations the
    /// kind asks for.
    pub async fn on_create(
        &self,
        state: &ApiState,
        kind: &Kind,
        obj: &mut Value,
    ) -> Result<(), ApiError> {
        match kind.allocation {
            Allocation::ServiceAddresses => self.allocate_service(state, obj).await,
            Allocation::PodCidr => allocate_pod_cidr(state, obj).await,
            Allocation::IngressClass => default_ingress_class(state, obj).await,
            Allocation::PodPriority => super::priority::admit_pod(state, kind, obj).await,
            Allocation::SingleGlobalDefault => super::priority::admit_class(state, kind, obj).await,
            Allocation::None => Ok(()),
        }
    }

    pub async fn on_create_failed(&self, state: &ApiState, kind: &Kind, obj: &Value) {
        match kind.allocation {
            Allocation::ServiceAddresses => self.release_service(state, obj).await,
            Allocation::PodCidr => {
                // A create that failed because the node exists may have
                // "claimed" the block that node already holds: keep it then.
                let name = objects::name_of(obj);
                let stored = state.registry.try_get(kind, None, name).await;
                if let Ok(Some(stored)) = stored
                    && pod_cidrs(&stored) == pod_cidrs(obj)
                {
                    return;
                }
                release_pod_cidr(state, obj).await;
            }
            Allocation::IngressClass
            | Allocation::PodPriority
            | Allocation::SingleGlobalDefault
            | Allocation::None => {}
        }
    }

    /// Update-time steps: what the stored object keeps (the kind's own
    /// rule), the allocations it keeps, and the module registry's
    /// bookkeeping.
    pub async fn on_update(
        &self,
        state: &ApiState,
        kind: &Kind,
        old: &Value,
        new: &mut Value,
    ) -> Result<(), ApiError> {
        super::modules::gc::before_update(state, kind, old, new);
        kind.ops
            .on_update(old, new)
            .map_err(|e| objects::invalid(kind, objects::name_of(old), vec![e]))?;
        match kind.allocation {
            Allocation::PodCidr => keep_pod_cidr(state, old, new).await,
            Allocation::SingleGlobalDefault => super::priority::admit_class(state, kind, new).await,
            // A pod's priority is part of its immutable spec.
            Allocation::PodPriority
            | Allocation::ServiceAddresses
            | Allocation::IngressClass
            | Allocation::None => Ok(()),
        }
    }

    /// Returns true when the object must be marked for deletion (and kept)
    /// rather than removed at once.
    pub async fn on_delete(
        &self,
        kind: &Kind,
        obj: &mut Value,
        opts: &DeleteOptions,
    ) -> Result<bool, ApiError> {
        match (kind.deletion, opts.propagation.as_deref()) {
            (Deletion::NamespaceLifecycle, _) => {
                let name = objects::name_of(obj).to_string();
                if matches!(name.as_str(), "default" | "kube-system" | "kube-public") {
                    return Err(ApiError::Forbidden {
                        message: format!(
                            "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
                        ),
                        kind: "namespaces".into(),
                        name,
                        group: String::new(),
                    });
                }
                // The namespace controller empties it, then clears the
                // `kubernetes` finalizer, and the namespace goes.
                obj["status"]["phase"] = json!("Terminating");
                Ok(true)
            }
            (Deletion::Graceful, _) if graceful_pod_deletion(obj, opts) => Ok(true),
            (_, Some("Foreground")) => {
                add_finalizer(obj, "foregroundDeletion");
                Ok(true)
            }
            (_, Some("Orphan")) => {
                add_finalizer(obj, "orphan");
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Called after an object is gone from the store.
    pub async fn on_deleted(&self, state: &ApiState, kind: &Kind, obj: &Value) {
        super::modules::gc::after_delete(state, kind, obj);
        match kind.allocation {
            Allocation::ServiceAddresses => self.release_service(state, obj).await,
            Allocation::PodCidr => release_pod_cidr(state, obj).await,
            Allocation::IngressClass
            | Allocation::PodPriority
            | Allocation::SingleGlobalDefault
            | Allocation::None => {}
        }
    }

    async fn allocate_service(&self, state: &ApiState, obj: &mut Value) -> Result<(), ApiError> {
        let owner = service_owner(obj);
        let ty = obj
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        if ty != "ExternalName" {
            let requested = obj
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let cidr = state.config.service_cidr;
            let ip = if requested == "None" {
                None
            } else if !requested.is_empty() {
                let ip: Ipv4Addr = requested.parse().map_err(|_| {
                    invalid_service(
                        obj,
                        "spec.clusterIPs[0]",
                        requested.clone(),
                        "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                    )
                })?;
                if !cidr.contains(ip) {
                    return Err(invalid_service(
                        obj,
                        "spec.clusterIPs",
                        format!("[]string{{\"{requested}\"}}"),
                        &format!(
                            "failed to allocate IP {requested}: the provided IP ({requested}) is not in the valid range. The range of valid IPs is {}/{}",
                            Ipv4Addr::from(cidr.base),
                            cidr.prefix
                        ),
                    ));
                }
                if !claim(state, format!("{IP_ALLOC}{ip}"), &owner).await? {
                    return Err(invalid_service(
                        obj,
                        "spec.clusterIPs",
                        format!("[]string{{\"{requested}\"}}"),
                        &format!(
                            "failed to allocate IP {requested}: provided IP is already allocated"
                        ),
                    ));
                }
                Some(ip)
            } else {
                // Random probing, skipping the network address and the
                // first host (reserved for the `kubernetes` service).
                let size = cidr.size();
                let mut found = None;
                for _ in 0..64 {
                    let i = rand::random_range(2..size.saturating_sub(1).max(3));
                    let ip = cidr.nth(i);
                    if claim(state, format!("{IP_ALLOC}{ip}"), &owner).await? {
                        found = Some(ip);
                        break;
                    }
                }
                if found.is_none() {
                    for i in 2..size.saturating_sub(1) {
                        let ip = cidr.nth(i);
                        if claim(state, format!("{IP_ALLOC}{ip}"), &owner).await? {
                            found = Some(ip);
                            break;
                        }
                    }
                }
                Some(found.ok_or_else(|| {
                    ApiError::internal("failed to allocate a service IP: range is full")
                })?)
            };
            let ip_str = ip.map_or("None".to_string(), |i| i.to_string());
            obj["spec"]["clusterIP"] = json!(ip_str);
            obj["spec"]["clusterIPs"] = json!([ip_str]);
            if ip.is_some() {
                obj["spec"]["ipFamilies"] = json!(["IPv4"]);
                obj["spec"]["ipFamilyPolicy"] = json!("SingleStack");
            }
            obj["spec"]["internalTrafficPolicy"] = obj
                .pointer("/spec/internalTrafficPolicy")
                .cloned()
                .unwrap_or(json!("Cluster"));
        }
        if ty == "NodePort" || ty == "LoadBalancer" {
            let (lo, hi) = state.config.node_port_range;
            let ports_len = obj
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            for i in 0..ports_len {
                let requested = obj["spec"]["ports"][i]
                    .get("nodePort")
                    .and_then(Value::as_u64)
                    .unwrap_or(0) as u16;
                let port = if requested != 0 {
                    if !(lo..=hi).contains(&requested) {
                        self.release_service(state, obj).await;
                        return Err(invalid_service(
                            obj,
                            &format!("spec.ports[{i}].nodePort"),
                            requested.to_string(),
                            &format!(
                                "provided port is not in the valid range. The range of valid ports is {lo}-{hi}"
                            ),
                        ));
                    }
                    if !claim(state, format!("{PORT_ALLOC}{requested}"), &owner).await? {
                        self.release_service(state, obj).await;
                        return Err(invalid_service(
                            obj,
                            &format!("spec.ports[{i}].nodePort"),
                            requested.to_string(),
                            "provided port is already allocated",
                        ));
                    }
                    requested
                } else {
                    let mut found = None;
                    for _ in 0..64 {
                        let p = rand::random_range(lo..=hi);
                        if claim(state, format!("{PORT_ALLOC}{p}"), &owner).await? {
                            found = Some(p);
                            break;
                        }
                    }
                    match found {
                        Some(p) => p,
                        None => {
                            self.release_service(state, obj).await;
                            return Err(ApiError::internal(
                                "failed to allocate a node port: range is full",
                            ));
                        }
                    }
                };
                obj["spec"]["ports"][i]["nodePort"] = json!(port);
            }
            obj["spec"]["externalTrafficPolicy"] = obj
                .pointer("/spec/externalTrafficPolicy")
                .cloned()
                .unwrap_or(json!("Cluster"));
        }
        Ok(())
    }

    async fn release_service(&self, state: &ApiState, obj: &Value) {
        if let Some(ip) = obj.pointer("/spec/clusterIP").and_then(Value::as_str)
            && ip != "None"
            && !ip.is_empty()
        {
            release(state, format!("{IP_ALLOC}{ip}")).await;
        }
        for p in obj
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(np) = p.get("nodePort").and_then(Value::as_u64) {
                release(state, format!("{PORT_ALLOC}{np}")).await;
            }
        }
    }
}

/// The pod CIDRs a Node names: `spec.podCIDRs`, or `[spec.podCIDR]` when
/// only that is set (Kubernetes keeps the two in step; `podCIDR` is the
/// first of `podCIDRs`).
fn pod_cidrs(node: &Value) -> Vec<String> {
    let list: Vec<String> = node
        .pointer("/spec/podCIDRs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let single = node
        .pointer("/spec/podCIDR")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    match single {
        Some(s) if list.first().map(String::as_str) != Some(s) => {
            let mut out = vec![s.to_string()];
            out.extend(list.into_iter().skip(1));
            out
        }
        _ => list,
    }
}

fn set_pod_cidr(node: &mut Value, cidr: &str) {
    if !node.get("spec").is_some_and(Value::is_object) {
        node["spec"] = json!({});
    }
    node["spec"]["podCIDR"] = json!(cidr);
    node["spec"]["podCIDRs"] = json!([cidr]);
}

fn invalid_node(node: &Value, cause: FieldError) -> ApiError {
    ApiError::Invalid {
        group: String::new(),
        kind: "Node".into(),
        name: objects::name_of(node).to_string(),
        causes: vec![cause],
    }
}

/// The field a node used to ask for its CIDR, for error messages.
fn pod_cidr_field(node: &Value) -> &'static str {
    if node
        .pointer("/spec/podCIDR")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
    {
        "spec.podCIDR"
    } else {
        "spec.podCIDRs[0]"
    }
}

/// Claim the block a node asks for, or the lowest free one, and write it
/// into `spec.podCIDR` and `spec.podCIDRs`.
async fn allocate_pod_cidr(state: &ApiState, node: &mut Value) -> Result<(), ApiError> {
    let requested = pod_cidrs(node);
    if requested.len() > 1 {
        return Err(invalid_node(
            node,
            FieldError::invalid(
                "spec.podCIDRs",
                format!("[{}]", requested.join(" ")),
                "only one IPv4 pod CIDR per node is supported",
            ),
        ));
    }
    let name = objects::name_of(node).to_string();
    let field = pod_cidr_field(node);
    let requested = requested.into_iter().next();
    match state
        .pod_cidrs
        .allocate(state.registry.store(), &name, requested.as_deref())
        .await
    {
        Ok(cidr) => {
            set_pod_cidr(node, &cidr.to_string());
            Ok(())
        }
        Err(e) => Err(pod_cidr_error(node, field, requested.as_deref(), e)),
    }
}

fn pod_cidr_error(
    node: &Value,
    field: &str,
    requested: Option<&str>,
    e: super::podcidr::PodCidrError,
) -> ApiError {
    use super::podcidr::PodCidrError as E;
    match e {
        E::Store(e) => e.into(),
        E::NotABlock { .. } | E::Taken { .. } => invalid_node(
            node,
            FieldError::invalid(field, requested.unwrap_or_default(), e.to_string()),
        ),
        E::Exhausted { .. } | E::Contended => invalid_node(
            node,
            FieldError {
                kind: crate::resources::FieldErrorKind::Forbidden,
                field: "spec.podCIDR".into(),
                value: None,
                detail: e.to_string(),
            },
        ),
    }
}

async fn release_pod_cidr(state: &ApiState, node: &Value) {
    let name = objects::name_of(node);
    for cidr in pod_cidrs(node) {
        if let Ok(cidr) = Cidr::parse(&cidr)
            && let Err(e) = super::podcidr::release(state.registry.store(), cidr, name).await
        {
            tracing::warn!(node = %name, %cidr, error = %e, "releasing pod CIDR");
        }
    }
}

/// Kubernetes lets a node's pod CIDR go from "" to a valid block and never
/// change afterwards. An update that leaves it out keeps it, as a Service
/// keeps its ClusterIP.
async fn keep_pod_cidr(state: &ApiState, old: &Value, new: &mut Value) -> Result<(), ApiError> {
    let had = pod_cidrs(old);
    let wants = pod_cidrs(new);
    match (had.is_empty(), wants.is_empty()) {
        (true, true) => Ok(()),
        (true, false) => allocate_pod_cidr(state, new).await,
        (false, true) => {
            set_pod_cidr(new, &had[0]);
            Ok(())
        }
        (false, false) if had == wants => {
            set_pod_cidr(new, &had[0]);
            Ok(())
        }
        (false, false) => Err(invalid_node(
            new,
            FieldError {
                kind: crate::resources::FieldErrorKind::Forbidden,
                field: "spec.podCIDRs".into(),
                value: None,
                detail: "node updates may not change podCIDR except from \"\" to valid".into(),
            },
        )),
    }
}

fn add_finalizer(obj: &mut Value, f: &str) {
    let mut list = obj
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !list.iter().any(|x| x == f) {
        list.push(json!(f));
    }
    obj["metadata"]["finalizers"] = json!(list);
}

/// Kubernetes' graceful deletion of a pod: a pod that runs on a node (bound,
/// not finished) is only marked — `deletionTimestamp` and
/// `deletionGracePeriodSeconds` (the request's grace period, else the pod's
/// `terminationGracePeriodSeconds`, else 30) — and its kubelet removes it
/// once its containers stopped. A later delete may shorten the period; a
/// period of 0 (`--force --grace-period=0`, or the kubelet's own final
/// delete) removes it at once. Returns whether the pod was only marked.
fn graceful_pod_deletion(obj: &mut Value, opts: &DeleteOptions) -> bool {
    let bound = obj
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        obj.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    let grace = opts.grace_period.unwrap_or_else(|| {
        obj.pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(30)
    });
    if !bound || finished || grace <= 0 {
        return false;
    }
    let current = obj
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64);
    match current {
        Some(c) if obj.pointer("/metadata/deletionTimestamp").is_some() && c <= grace => {}
        _ => {
            obj["metadata"]["deletionTimestamp"] = json!(objects::now_rfc3339());
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        }
    }
    true
}

/// An Ingress that names no class (neither `spec.ingressClassName` nor the
/// older `kubernetes.io/ingress.class` annotation) gets the default class,
/// as Kubernetes' DefaultIngressClass admission does; with two defaults it
/// is refused, since which one serves it would be a guess.
async fn default_ingress_class(state: &ApiState, obj: &mut Value) -> Result<(), ApiError> {
    use crate::resources::kinds::ingressclass;
    let named = obj
        .pointer("/spec/ingressClassName")
        .is_some_and(|c| !c.is_null())
        || obj
            .pointer("/metadata/annotations/kubernetes.io~1ingress.class")
            .is_some();
    if named {
        return Ok(());
    }
    let classes = crate::resources::by_resource("networking.k8s.io", "v1", "ingressclasses")
        .ok_or(ApiError::NoRoute)?;
    // Classes are few, and cluster-scoped: one page holds them all.
    let page = state
        .registry
        .list(classes, None, 1000, None, &|c| ingressclass::is_default(c))
        .await?;
    let defaults: Vec<&str> = page
        .items
        .iter()
        .filter(|c| ingressclass::is_default(c))
        .map(objects::name_of)
        .collect();
    match defaults.as_slice() {
        [] => Ok(()),
        [one] => {
            obj["spec"]["ingressClassName"] = json!(one);
            Ok(())
        }
        _ => Err(ApiError::Forbidden {
            kind: "ingresses".into(),
            name: objects::name_of(obj).to_string(),
            group: "networking.k8s.io".into(),
            message: format!(
                "ingresses.networking.k8s.io \"{}\" is forbidden: {} default IngressClasses were found, only 1 allowed",
                objects::name_of(obj),
                defaults.len()
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_contain() {
        let c = Cidr::parse("127.96.0.0/16").unwrap();
        assert_eq!(c.size(), 65536);
        assert!(c.contains("127.96.3.4".parse().unwrap()));
        assert!(!c.contains("127.97.0.1".parse().unwrap()));
        assert_eq!(c.nth(1), "127.96.0.1".parse::<Ipv4Addr>().unwrap());
        assert!(Cidr::parse("nonsense").is_err());
    }
}
