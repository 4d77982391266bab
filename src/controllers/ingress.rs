//! The ingress controller: writes where each Ingress of a class the node
//! proxies serve is reachable. Every node's proxy serves those Ingresses
//! on the node's address, so the addresses are the Ready nodes' internal
//! IPs (`kubectl get ingress` shows them under ADDRESS).
//!
//! It follows Ingresses, IngressClasses and Nodes: a node that joins,
//! leaves or turns Ready or not changes every served Ingress's addresses.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use super::ControllerError;
use crate::resources::kinds::ingressclass::WKUBE_CONTROLLER;

struct Ctx {
    client: Client,
    nodes: Store<Node>,
    classes: Store<IngressClass>,
}

/// The internal IPs of the Ready nodes that are not being deleted, sorted.
pub fn serving_addresses<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> Vec<String> {
    let mut out: Vec<String> = nodes
        .into_iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
        .filter_map(|n| {
            n.status
                .as_ref()?
                .addresses
                .as_ref()?
                .iter()
                .find(|a| a.type_ == "InternalIP")
                .map(|a| a.address.clone())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The `status.loadBalancer` an Ingress should show.
pub fn desired_status(addresses: &[String]) -> Value {
    let ingress: Vec<Value> = addresses.iter().map(|ip| json!({"ip": ip})).collect();
    if ingress.is_empty() {
        json!({})
    } else {
        json!({"ingress": ingress})
    }
}

/// Runs the controller until `shutdown`.
pub async fn run(client: Client, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let (nodes, nodes_w) = reflector::store();
    let (classes, classes_w) = reflector::store();
    let node_changes = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(nodes_w)
        .touched_objects()
        .map(|r| r.map(|_| ()));
    let class_changes = watcher(
        Api::<IngressClass>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(classes_w)
    .touched_objects()
    .map(|r| r.map(|_| ()));
    let controller = Controller::new(
        Api::<Ingress>::all(client.clone()),
        watcher::Config::default(),
    )
    // Any node or class change may change every Ingress's status.
    .reconcile_all_on(
        futures::stream::select(node_changes, class_changes).filter_map(|r| async move { r.ok() }),
    )
    .graceful_shutdown_on(shutdown);
    let ctx = Arc::new(Ctx {
        client,
        nodes,
        classes,
    });
    super::drive(controller, "ingress", reconcile, ctx).await;
}

async fn reconcile(ing: Arc<Ingress>, ctx: Arc<Ctx>) -> Result<Action, ControllerError> {
    let class = ing
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref())
        .unwrap_or("");
    let ours = ctx
        .classes
        .get(&ObjectRef::new(class))
        .and_then(|c| c.spec.as_ref()?.controller.clone())
        .is_some_and(|c| c == WKUBE_CONTROLLER);
    if !ours || ing.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let nodes = ctx.nodes.state();
    let want = desired_status(&serving_addresses(nodes.iter().map(AsRef::as_ref)));
    let have = ing
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .map(|lb| serde_json::to_value(lb).unwrap_or(Value::Null))
        .unwrap_or_else(|| json!({}));
    if have == want {
        return Ok(Action::await_change());
    }
    let ns = ing.namespace().unwrap_or_default();
    let api: Api<Ingress> = Api::namespaced(ctx.client.clone(), &ns);
    // A merge patch would keep addresses that are gone from a list; the
    // whole `loadBalancer` is replaced instead.
    let patch = json!({"status": {"loadBalancer": {"ingress": want.get("ingress").cloned().unwrap_or(Value::Null)}}});
    match api
        .patch_status(
            &ing.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ip: &str, ready: bool) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {
                "addresses": [{"type": "InternalIP", "address": ip},
                              {"type": "Hostname", "address": name}],
                "conditions": [{"type": "Ready", "status": if ready {"True"} else {"Unknown"}}],
            },
        }))
        .unwrap()
    }

    #[test]
    fn only_ready_nodes_serve_and_addresses_are_sorted_once() {
        let nodes = [
            node("b", "127.0.0.3", true),
            node("a", "127.0.0.2", true),
            node("c", "127.0.0.4", false),
            node("d", "127.0.0.2", true),
        ];
        let addrs = serving_addresses(nodes.iter());
        assert_eq!(addrs, ["127.0.0.2", "127.0.0.3"]);
        assert_eq!(
            desired_status(&addrs),
            json!({"ingress": [{"ip": "127.0.0.2"}, {"ip": "127.0.0.3"}]})
        );
        assert_eq!(desired_status(&[]), json!({}));
    }
}
