//! What the API server guarantees from its first start, and the small
//! loops it runs itself: system namespaces, the default RBAC policy, a
//! `default` ServiceAccount in every namespace, the `kubernetes` Service,
//! the built-in PriorityClasses and APIServices, namespace finalization,
//! and service-account token revocation checks.

use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::authn::KubernetesClaims;
use super::objects;
use super::registry::Registry;
use super::status::ApiError;
use super::{ApiState, rbac};
use crate::resources::kinds::{apiservice, priorityclass};
use crate::resources::{self, Kind};

fn kind(plural: &str, group: &str) -> Result<&'static Kind, ApiError> {
    // Every kind the API server itself manages is served at v1.
    resources::by_resource(group, "v1", plural).ok_or(ApiError::NoRoute)
}

/// Create `obj` unless an object of that name exists.
async fn ensure(
    state: &ApiState,
    k: &'static Kind,
    ns: Option<&str>,
    mut obj: Value,
) -> Result<(), ApiError> {
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if state.registry.try_get(k, ns, &name).await?.is_some() {
        return Ok(());
    }
    let (ns, name) = objects::prepare_create(k, ns, &mut obj, state.config.default_tolerations())?;
    let (mut obj, _) = objects::admit(k, obj, objects::FieldValidation::Ignore)?;
    state.admission.on_create(state, k, &mut obj).await?;
    match state.registry.create(k, ns.as_deref(), &name, &obj).await {
        Ok(_) | Err(ApiError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Adds the rules a newer wkube gives a default ClusterRole to the one a
/// cluster already has (never removing any), unless an admin opted out
/// with `rbac.authorization.kubernetes.io/autoupdate: "false"`, as
/// Kubernetes reconciles its bootstrap roles on start.
async fn reconcile_role_rules(
    state: &ApiState,
    k: &'static Kind,
    name: &str,
    wanted: &Value,
) -> Result<(), ApiError> {
    let Some(wanted) = wanted.as_array() else {
        return Ok(());
    };
    let r = state
        .registry
        .guaranteed_update(k, None, name, |current| {
            let opted_out = current
                .pointer("/metadata/annotations/rbac.authorization.kubernetes.io~1autoupdate")
                .and_then(Value::as_str)
                == Some("false");
            let mut rules = current["rules"].as_array().cloned().unwrap_or_default();
            let missing: Vec<Value> = wanted
                .iter()
                .filter(|w| !rules.contains(w))
                .cloned()
                .collect();
            if opted_out || missing.is_empty() {
                return Ok(false);
            }
            rules.extend(missing);
            current["rules"] = json!(rules);
            Ok(true)
        })
        .await;
    match r {
        Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Create the objects every cluster has. Idempotent.
pub async fn run(state: &ApiState, advertise: Ipv4Addr, port: u16) -> Result<(), ApiError> {
    let ns_kind = kind("namespaces", "")?;
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        ensure(
            state,
            ns_kind,
            None,
            json!({"metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}}}),
        )
        .await?;
    }
    for (plural, obj) in rbac::bootstrap_policy() {
        let k = kind(plural, "rbac.authorization.k8s.io")?;
        let rules = (plural == "clusterroles").then(|| obj["rules"].clone());
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        ensure(state, k, None, obj).await?;
        if let Some(rules) = rules {
            reconcile_role_rules(state, k, &name, &rules).await?;
        }
    }
    // The `kubernetes` service: the first address of the service range,
    // pointing at the API server.
    let svc = kind("services", "")?;
    let first = state.config.service_cidr.nth(1).to_string();
    ensure(
        state,
        svc,
        Some("default"),
        json!({
            "metadata": {"name": "kubernetes", "namespace": "default",
                "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": first,
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
                "sessionAffinity": "None"},
        }),
    )
    .await?;
    let ep = kind("endpoints", "")?;
    let endpoints = json!({
        "metadata": {"name": "kubernetes", "namespace": "default",
            "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": advertise.to_string()}],
                     "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    });
    match state
        .registry
        .try_get(ep, Some("default"), "kubernetes")
        .await?
    {
        None => ensure(state, ep, Some("default"), endpoints).await?,
        Some(current) if current.get("subsets") != endpoints.get("subsets") => {
            let mut next = current.clone();
            next["subsets"] = endpoints["subsets"].clone();
            let rv = super::registry::parse_rv(objects::rv_of(&current).unwrap_or("0"))?;
            state
                .registry
                .update(ep, Some("default"), "kubernetes", rv, next)
                .await?;
        }
        Some(_) => {}
    }
    // Its EndpointSlice, which the node proxies route by (guests reach the
    // API server at `https://kubernetes.default.svc`).
    let slices = kind("endpointslices", "discovery.k8s.io")?;
    let slice = json!({
        "metadata": {"name": "kubernetes", "namespace": "default",
            "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [advertise.to_string()],
                       "conditions": {"ready": true, "serving": true, "terminating": false}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    });
    match state
        .registry
        .try_get(slices, Some("default"), "kubernetes")
        .await?
    {
        None => ensure(state, slices, Some("default"), slice).await?,
        Some(current)
            if current.get("endpoints") != slice.get("endpoints")
                || current.get("ports") != slice.get("ports") =>
        {
            let mut next = current.clone();
            next["endpoints"] = slice["endpoints"].clone();
            next["ports"] = slice["ports"].clone();
            let rv = super::registry::parse_rv(objects::rv_of(&current).unwrap_or("0"))?;
            state
                .registry
                .update(slices, Some("default"), "kubernetes", rv, next)
                .await?;
        }
        Some(_) => {}
    }
    // The IngressClass every node's proxy serves, the default one.
    {
        use crate::resources::kinds::ingressclass::{
            DEFAULT_CLASS_ANNOTATION, WKUBE_CLASS, WKUBE_CONTROLLER,
        };
        let classes = resources::by_resource("networking.k8s.io", "v1", "ingressclasses")
            .ok_or(ApiError::NoRoute)?;
        ensure(
            state,
            classes,
            None,
            json!({
                "metadata": {"name": WKUBE_CLASS,
                    "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
                "spec": {"controller": WKUBE_CONTROLLER},
            }),
        )
        .await?;
    }
    // The GatewayClass every node's proxy serves.
    {
        use crate::resources::kinds::gatewayclass::{WKUBE_CLASS, WKUBE_CONTROLLER};
        let classes = resources::by_resource(resources::gateway::GROUP, "v1", "gatewayclasses")
            .ok_or(ApiError::NoRoute)?;
        ensure(
            state,
            classes,
            None,
            json!({
                "metadata": {"name": WKUBE_CLASS},
                "spec": {"controllerName": WKUBE_CONTROLLER,
                         "description": "Served by every node's proxy on the node's address."},
            }),
        )
        .await?;
    }
    // The built-in priority classes, which the cluster's own components
    // may name and no user class can outrank.
    let classes = kind("priorityclasses", "scheduling.k8s.io")?;
    for &(name, value) in priorityclass::SYSTEM_CLASSES {
        ensure(
            state,
            classes,
            None,
            priorityclass::system_class(name, value),
        )
        .await?;
    }
    // A local APIService per group-version served, as kube-apiserver
    // registers its own.
    let apiservices = kind("apiservices", "apiregistration.k8s.io")?;
    for (group, version) in super::discovery::all_group_versions() {
        ensure(state, apiservices, None, apiservice::local(group, version)).await?;
    }
    ensure_service_accounts(state).await?;
    Ok(())
}

/// Give every active namespace its `default` ServiceAccount.
pub async fn ensure_service_accounts(state: &ApiState) -> Result<(), ApiError> {
    let ns_kind = kind("namespaces", "")?;
    let sa = kind("serviceaccounts", "")?;
    let all = state
        .registry
        .list(ns_kind, None, 0, None, &|_| true)
        .await?;
    for ns in all.items {
        if ns.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let name = objects::name_of(&ns).to_string();
        ensure(
            state,
            sa,
            Some(&name),
            json!({"metadata": {"name": "default", "namespace": name}}),
        )
        .await?;
    }
    Ok(())
}

/// A service-account token is valid only while its account (and the pod
/// it is bound to) exists with the same UID.
pub async fn check_token_owner(registry: &Registry, k: &KubernetesClaims) -> Result<(), ApiError> {
    let sa_kind = kind("serviceaccounts", "")?;
    let sa = registry
        .try_get(sa_kind, Some(&k.namespace), &k.serviceaccount.name)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    if sa.pointer("/metadata/uid").and_then(Value::as_str) != Some(k.serviceaccount.uid.as_str()) {
        return Err(ApiError::Unauthorized);
    }
    if let Some(pod) = &k.pod {
        let pods = kind("pods", "")?;
        let p = registry
            .try_get(pods, Some(&k.namespace), &pod.name)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        if p.pointer("/metadata/uid").and_then(Value::as_str) != Some(pod.uid.as_str())
            || p.pointer("/metadata/deletionTimestamp").is_some()
        {
            return Err(ApiError::Unauthorized);
        }
    }
    Ok(())
}
