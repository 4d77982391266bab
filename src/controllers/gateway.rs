//! The gateway controller: the status of the Gateway API objects whose
//! class the node proxies serve.
//!
//! - A GatewayClass of wkube's controller is `Accepted`.
//! - Its Gateways are `Accepted` and `Programmed`, with the Ready nodes'
//!   addresses (every node's proxy serves every listener) and, per
//!   listener, how many routes attached.
//! - Each HTTPRoute gets, per parentRef to such a Gateway, `Accepted`
//!   (or why not: no listener allows it or shares a host name) and
//!   `ResolvedRefs` (or `BackendNotFound` when a Service is missing).
//!
//! The objects are few and their statuses depend on each other (a route
//! changes its Gateway's attached count, a Service its route's refs), so
//! one loop recomputes them all from watch-fed caches after any change,
//! at most every [`DEBOUNCE`], and writes only what differs.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;

use crate::resources::gateway::{
    Gateway, GatewayClass, GatewayStatusAddress, HTTPRoute, ListenerStatus, NotAttached,
    RouteGroupKind, RouteParentStatus, attaches, refers_to,
};
use crate::resources::kinds::gatewayclass::WKUBE_CONTROLLER;

/// Changes closer together than this are written in one pass.
const DEBOUNCE: Duration = Duration::from_millis(100);

struct Caches {
    nodes: Store<Node>,
    services: Store<Service>,
    classes: Store<GatewayClass>,
    gateways: Store<Gateway>,
    routes: Store<HTTPRoute>,
}

/// Runs the controller until `shutdown`.
pub async fn run(client: Client, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let changed = Arc::new(Notify::new());
    macro_rules! cache {
        ($ty:ty) => {{
            let (store, writer) = reflector::store::<$ty>();
            let changed = changed.clone();
            let feed = watcher(Api::<$ty>::all(client.clone()), watcher::Config::default())
                .default_backoff()
                .reflect(writer)
                .for_each(move |_| {
                    changed.notify_one();
                    std::future::ready(())
                });
            (store, feed)
        }};
    }
    let (nodes, nodes_feed) = cache!(Node);
    let (services, services_feed) = cache!(Service);
    let (classes, classes_feed) = cache!(GatewayClass);
    let (gateways, gateways_feed) = cache!(Gateway);
    let (routes, routes_feed) = cache!(HTTPRoute);
    let caches = Caches {
        nodes,
        services,
        classes,
        gateways,
        routes,
    };
    let sync_loop = async {
        loop {
            changed.notified().await;
            tokio::time::sleep(DEBOUNCE).await;
            if let Err(e) = sync(&client, &caches).await {
                tracing::debug!(error = %e, "gateway status: will retry");
                // Come back even if nothing else changes.
                let changed = changed.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    changed.notify_one();
                });
            }
        }
    };
    tokio::select! {
        _ = async {
            tokio::join!(nodes_feed, services_feed, classes_feed, gateways_feed, routes_feed, sync_loop)
        } => {}
        _ = shutdown => {}
    }
}

/// A condition as the Gateway API writes them; the transition time is kept
/// from `old` when the status did not change.
fn condition(
    old: &[Condition],
    ty: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let since = old
        .iter()
        .find(|c| c.type_ == ty && c.status == status)
        .map_or_else(
            || Time(jiff::Timestamp::now()),
            |c| c.last_transition_time.clone(),
        );
    Condition {
        type_: ty.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// Whether two condition lists say the same (transition times aside).
fn same_conditions(a: &[Condition], b: &[Condition]) -> bool {
    let key = |c: &Condition| {
        (
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            c.observed_generation,
        )
    };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| key(x) == key(y))
}

async fn sync(client: &Client, c: &Caches) -> Result<(), kube::Error> {
    let ours: Vec<String> = c
        .classes
        .state()
        .iter()
        .filter(|g| g.spec.controller_name == WKUBE_CONTROLLER)
        .map(|g| g.name_any())
        .collect();
    let params = PatchParams::default();

    for class in c.classes.state() {
        if !ours.contains(&class.name_any()) {
            continue;
        }
        let old = class.status.clone().unwrap_or_default().conditions;
        let want = vec![condition(
            &old,
            "Accepted",
            true,
            "Accepted",
            "Served by every node's proxy",
            class.metadata.generation,
        )];
        if !same_conditions(&old, &want) {
            let api: Api<GatewayClass> = Api::all(client.clone());
            api.patch_status(
                &class.name_any(),
                &params,
                &Patch::Merge(json!({"status": {"conditions": want}})),
            )
            .await?;
        }
    }

    let nodes = c.nodes.state();
    let addresses: Vec<GatewayStatusAddress> =
        super::ingress::serving_addresses(nodes.iter().map(AsRef::as_ref))
            .into_iter()
            .map(|ip| GatewayStatusAddress {
                type_: Some("IPAddress".into()),
                value: ip,
            })
            .collect();
    let routes = c.routes.state();
    let gateways: Vec<Arc<Gateway>> = c
        .gateways
        .state()
        .into_iter()
        .filter(|g| ours.contains(&g.spec.gateway_class_name))
        .collect();

    for gw in &gateways {
        let status = gw.status.clone().unwrap_or_default();
        let listeners: Vec<ListenerStatus> = gw
            .spec
            .listeners
            .iter()
            .map(|l| {
                let attached = routes
                    .iter()
                    .filter(|r| {
                        let ns = r.namespace().unwrap_or_default();
                        r.spec
                            .parent_refs
                            .iter()
                            .any(|p| refers_to(&ns, p, gw) && attaches(r, p, gw, l).is_ok())
                    })
                    .count();
                let old = status
                    .listeners
                    .iter()
                    .find(|s| s.name == l.name)
                    .map(|s| s.conditions.clone())
                    .unwrap_or_default();
                let g = gw.metadata.generation;
                ListenerStatus {
                    name: l.name.clone(),
                    supported_kinds: vec![RouteGroupKind {
                        group: Some(crate::resources::gateway::GROUP.into()),
                        kind: "HTTPRoute".into(),
                    }],
                    attached_routes: i32::try_from(attached).unwrap_or(i32::MAX),
                    conditions: vec![
                        condition(&old, "Accepted", true, "Accepted", "", g),
                        condition(&old, "Programmed", true, "Programmed", "", g),
                        condition(&old, "ResolvedRefs", true, "ResolvedRefs", "", g),
                    ],
                }
            })
            .collect();
        let g = gw.metadata.generation;
        let conditions = vec![
            condition(&status.conditions, "Accepted", true, "Accepted", "", g),
            condition(
                &status.conditions,
                "Programmed",
                !addresses.is_empty(),
                if addresses.is_empty() {
                    "AddressNotAssigned"
                } else {
                    "Programmed"
                },
                if addresses.is_empty() {
                    "no Ready node serves it yet"
                } else {
                    "served by every Ready node's proxy"
                },
                g,
            ),
        ];
        let unchanged = status.addresses == addresses
            && same_conditions(&status.conditions, &conditions)
            && status.listeners.len() == listeners.len()
            && status.listeners.iter().zip(&listeners).all(|(a, b)| {
                a.name == b.name
                    && a.attached_routes == b.attached_routes
                    && same_conditions(&a.conditions, &b.conditions)
            });
        if !unchanged {
            let api: Api<Gateway> =
                Api::namespaced(client.clone(), &gw.namespace().unwrap_or_default());
            let patch = json!({"status": {"addresses": addresses, "conditions": conditions,
                                          "listeners": listeners}});
            match api
                .patch_status(&gw.name_any(), &params, &Patch::Merge(patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }

    for route in routes {
        let ns = route.namespace().unwrap_or_default();
        let old = route.status.clone().unwrap_or_default().parents;
        // Other controllers' entries are theirs to keep.
        let mut parents: Vec<RouteParentStatus> = old
            .iter()
            .filter(|p| p.controller_name != WKUBE_CONTROLLER)
            .cloned()
            .collect();
        let missing: Vec<String> = route
            .spec
            .rules
            .iter()
            .flat_map(|r| &r.backend_refs)
            .filter(|b| {
                let bns = b.namespace.clone().unwrap_or(ns.clone());
                c.services
                    .get(&ObjectRef::new(&b.name).within(&bns))
                    .is_none()
            })
            .map(|b| b.name.clone())
            .collect();
        for p in &route.spec.parent_refs {
            let Some(gw) = gateways.iter().find(|g| refers_to(&ns, p, g)) else {
                continue;
            };
            let outcomes: Vec<Result<(), NotAttached>> = gw
                .spec
                .listeners
                .iter()
                .map(|l| attaches(&route, p, gw, l))
                .collect();
            let accepted = outcomes.iter().any(Result::is_ok);
            let why = outcomes
                .iter()
                .filter_map(|o| o.err())
                .find(|e| *e != NotAttached::OtherListener)
                .unwrap_or(NotAttached::OtherListener);
            let before = old
                .iter()
                .find(|s| s.parent_ref == *p && s.controller_name == WKUBE_CONTROLLER)
                .map(|s| s.conditions.clone())
                .unwrap_or_default();
            let g = route.metadata.generation;
            let (reason, message) = match (accepted, why) {
                (true, _) => ("Accepted", String::new()),
                (false, NotAttached::NotAllowedByListeners) => (
                    "NotAllowedByListeners",
                    "no listener of the Gateway takes routes from this namespace".into(),
                ),
                (false, NotAttached::NoMatchingListenerHostname) => (
                    "NoMatchingListenerHostname",
                    "no listener's host name matches the route's".into(),
                ),
                (false, NotAttached::OtherListener) => (
                    "NoMatchingParent",
                    "the Gateway has no listener of that name or port".into(),
                ),
            };
            let resolved = missing.is_empty();
            parents.push(RouteParentStatus {
                parent_ref: p.clone(),
                controller_name: WKUBE_CONTROLLER.into(),
                conditions: vec![
                    condition(&before, "Accepted", accepted, reason, &message, g),
                    condition(
                        &before,
                        "ResolvedRefs",
                        resolved,
                        if resolved {
                            "ResolvedRefs"
                        } else {
                            "BackendNotFound"
                        },
                        &if resolved {
                            String::new()
                        } else {
                            format!("services not found: {}", missing.join(", "))
                        },
                        g,
                    ),
                ],
            });
        }
        let unchanged = old.len() == parents.len()
            && old.iter().zip(&parents).all(|(a, b)| {
                a.parent_ref == b.parent_ref
                    && a.controller_name == b.controller_name
                    && same_conditions(&a.conditions, &b.conditions)
            });
        if !unchanged {
            let api: Api<HTTPRoute> = Api::namespaced(client.clone(), &ns);
            match api
                .patch_status(
                    &route.name_any(),
                    &params,
                    &Patch::Merge(json!({"status": {"parents": parents}})),
                )
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
