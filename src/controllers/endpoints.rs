//! The endpoints controller: for every Service with a selector, the
//! EndpointSlices (what the node proxies route by) and the legacy Endpoints
//! object (what `kubectl get endpoints` and older clients read) listing the
//! matching pods that have an IP — ready ones as ready, the rest (starting,
//! failing readiness, terminating) as not ready.
//!
//! Target ports are resolved per pod: a number is taken as it is, a name is
//! looked up in the pod's containerPorts, and a pod that does not declare
//! the name is left out for that port. Pods that resolve the ports to the
//! same numbers share a slice, as Kubernetes groups them; slices hold at
//! most [`MAX_PER_SLICE`] endpoints.
//!
//! Slice names are derived from the service name and the port set, so a
//! reconcile after a restart finds the same objects instead of piling up
//! new ones.
//!
//! Reconciles read pods from the shared [`super::PodCache`] and slices from
//! a cache fed by the slice watch, never by listing them: a LIST per pass
//! would cost the API server an encode (and us a decode) of every object
//! each time any pod of the service changes.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CorePort, EndpointSubset, Endpoints, ObjectReference, Pod,
    Service,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

use super::{ControllerError, retry_later};

pub use crate::resources::kinds::endpointslice::{MANAGED_BY_LABEL, SERVICE_NAME_LABEL};
/// Our value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Most endpoints in one slice (Kubernetes' default).
pub const MAX_PER_SLICE: usize = 100;

struct Ctx {
    client: kube::Client,
    /// Every pod, fed by the controllers' shared pod watch.
    pods: Arc<super::PodCache>,
    /// Every EndpointSlice, fed by the slice watch that also wakes their
    /// services.
    slices: Store<EndpointSlice>,
}

/// Runs the controller until `shutdown`.
pub async fn run(
    client: kube::Client,
    pods: super::PodFeed,
    cache: Arc<super::PodCache>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let services: Api<Service> = Api::all(client.clone());
    let slices: Api<EndpointSlice> = Api::all(client.clone());
    let controller = Controller::new(services, watcher::Config::default());
    // The slice watch fills the slice cache reconciles read (the store is
    // updated before the change wakes the service), and a slice changed or
    // deleted by someone else brings its service back.
    let (slice_store, writer) = reflector::store();
    let slice_changes = watcher(slices, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    let store = controller.store();
    // A pod change concerns every service in its namespace whose selector
    // matches its labels (before or after the change: the old labels are
    // gone, but a service that listed it still has a slice naming it, and
    // the slice watch below brings that service back).
    let pod_to_services = move |pod: Arc<Pod>| {
        let ns = pod.namespace().unwrap_or_default();
        let labels = pod.labels().clone();
        store
            .state()
            .into_iter()
            .filter(|s| s.namespace().as_deref() == Some(ns.as_str()))
            .filter(|s| selector_of(s).is_some_and(|sel| selects(sel, &labels)))
            .map(|s| ObjectRef::from_obj(&*s))
            .collect::<Vec<_>>()
    };
    let slice_to_service = |slice: EndpointSlice| {
        let ns = slice.namespace()?;
        let labels = slice.labels();
        if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY) {
            return None;
        }
        let name = labels.get(SERVICE_NAME_LABEL)?;
        Some(ObjectRef::<Service>::new(name).within(&ns))
    };
    let controller = controller
        .watches_shared_stream(pods, pod_to_services)
        .watches_stream(slice_changes, slice_to_service)
        .graceful_shutdown_on(shutdown);
    let ctx = Arc::new(Ctx {
        client,
        pods: cache,
        slices: slice_store,
    });
    super::drive(controller, "endpointslice", reconcile, ctx).await;
}

/// The service's selector, when it has a non-empty one (services without
/// one have endpoints managed by someone else).
fn selector_of(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
}

fn selects(sel: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, ControllerError> {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let slices_api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    let endpoints_api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    // Our slices of the service, from the slice cache rather than a LIST
    // (a LIST per pass costs the API server a decode of every slice). Not
    // before the first list is complete: an empty cache would look like a
    // service without slices.
    ctx.slices.wait_until_ready().await.map_err(|_| {
        ControllerError::Invalid("the EndpointSlice watch stopped before its first list".into())
    })?;
    // A cache that lags is safe here. Slice names are deterministic (see
    // `desired_slices`), never generateName: creating one the cache does
    // not show yet fails with 409 instead of adding a duplicate, and a
    // replace based on an old copy fails on its resourceVersion; both end
    // the pass, and the slice's watch event brings the service back with
    // the cache caught up. Deleting one already gone is a 404, ignored;
    // one made by an earlier pass and not shown yet is deleted by the pass
    // its watch event starts.
    let existing: Vec<Arc<EndpointSlice>> = ctx.slices.state_filter(|s| {
        s.metadata.namespace.as_deref() == Some(ns.as_str())
            && s.labels().get(SERVICE_NAME_LABEL) == Some(&name)
            && s.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
    });

    let selector = selector_of(&svc).cloned();
    let Some(selector) = selector.filter(|_| svc.metadata.deletion_timestamp.is_none()) else {
        // No selector (or going away): nothing of ours should remain.
        for s in existing {
            delete_ignoring_missing(&slices_api, &s.name_any()).await?;
        }
        if selector_of(&svc).is_none()
            && let Some(ep) = endpoints_api.get_opt(&name).await?
            && ep.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
        {
            delete_ignoring_missing(&endpoints_api, &name).await?;
        }
        return Ok(Action::await_change());
    };

    // The selected pods from the shared pod cache, not a LIST (a LIST per
    // pass costs the API server a decode of every pod of the service, and
    // every pod change triggers a pass): the pod watch updates the cache
    // before it wakes the service. Half a list would drop live endpoints.
    ctx.pods.listed().await;
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .in_namespace(&ns)
        .into_iter()
        .filter(|p| selects(&selector, p.labels()))
        .collect();
    let desired = desired_slices(&svc, &pods);

    // Create or update the slices we want, then delete the rest.
    let mut keep = BTreeSet::new();
    for want in &desired {
        let slice_name = want.metadata.name.clone().unwrap_or_default();
        keep.insert(slice_name.clone());
        match existing.iter().find(|s| s.name_any() == slice_name) {
            None => {
                match slices_api.create(&PostParams::default(), want).await {
                    Ok(_) => {}
                    // Made meanwhile (by an earlier pass whose watch event
                    // has not arrived): the next pass compares it.
                    Err(kube::Error::Api(e)) if e.code == 409 => return Ok(retry_later()),
                    Err(e) => return Err(e.into()),
                }
            }
            Some(have) if !same_slice(have, want) => {
                let mut next = want.clone();
                next.metadata.resource_version = have.metadata.resource_version.clone();
                next.metadata.uid = have.metadata.uid.clone();
                match slices_api
                    .replace(&slice_name, &PostParams::default(), &next)
                    .await
                {
                    Ok(_) => {}
                    // The cached copy is older than the slice (its watch
                    // event, on its way, brings the service back).
                    Err(kube::Error::Api(e)) if e.code == 409 => return Ok(retry_later()),
                    Err(e) => return Err(e.into()),
                }
            }
            Some(_) => {}
        }
    }
    for s in existing {
        if !keep.contains(&s.name_any()) {
            delete_ignoring_missing(&slices_api, &s.name_any()).await?;
        }
    }

    let want = desired_endpoints(&svc, &pods);
    // One GET by name (cheap, unlike a LIST) rather than an Endpoints
    // watch: the object is only read here.
    match endpoints_api.get_opt(&name).await? {
        None => match endpoints_api.create(&PostParams::default(), &want).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => return Ok(retry_later()),
            Err(e) => return Err(e.into()),
        },
        Some(have) if have.subsets != want.subsets || have.labels() != want.labels() => {
            let mut next = want;
            next.metadata.resource_version = have.metadata.resource_version.clone();
            next.metadata.uid = have.metadata.uid.clone();
            endpoints_api
                .replace(&name, &PostParams::default(), &next)
                .await?;
        }
        Some(_) => {}
    }
    Ok(Action::await_change())
}

async fn delete_ignoring_missing<K>(api: &Api<K>, name: &str) -> Result<(), ControllerError>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn same_slice(have: &EndpointSlice, want: &EndpointSlice) -> bool {
    have.endpoints == want.endpoints
        && have.ports == want.ports
        && have.address_type == want.address_type
        && have.metadata.labels == want.metadata.labels
}

/// One endpoint of the service: a pod with an IP, and what it says about
/// readiness.
#[derive(Debug, Clone)]
struct Member<'p> {
    pod: &'p Pod,
    ip: String,
    ready: bool,
    terminating: bool,
}

/// Pods that belong in the service's endpoints: those with an IP that have
/// not finished. `publishNotReadyAddresses` counts every one as ready.
fn members<'p, P: Borrow<Pod>>(svc: &Service, pods: &'p [P]) -> Vec<Member<'p>> {
    let publish_not_ready = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let mut out: Vec<Member<'p>> = pods
        .iter()
        .map(Borrow::borrow)
        .filter_map(|pod: &'p Pod| {
            let status = pod.status.as_ref()?;
            if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
                return None;
            }
            let ip = status.pod_ip.clone().filter(|ip| !ip.is_empty())?;
            let terminating = pod.metadata.deletion_timestamp.is_some();
            let ready = publish_not_ready || (!terminating && super::replicaset::is_ready(pod));
            Some(Member {
                pod,
                ip,
                ready,
                terminating,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        a.ip.cmp(&b.ip)
            .then(a.pod.name_any().cmp(&b.pod.name_any()))
    });
    out
}

/// The port a service port's targetPort is on the pod: a number as it is
/// (the port itself when unset), a name from the pod's containerPorts.
fn resolve_target(
    pod: Option<&Pod>,
    port: &k8s_openapi::api::core::v1::ServicePort,
) -> Option<i32> {
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            pod?.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
        }
    }
}

/// The ports of one group of endpoints, as (name, port, protocol,
/// appProtocol), in the service's port order.
type PortSet = Vec<(Option<String>, i32, String, Option<String>)>;

/// The service's ports with their targets resolved for `pod`; without a
/// pod, a port that names its target is left out (nothing to resolve it in).
fn port_set(svc: &Service, pod: Option<&Pod>) -> PortSet {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p.name.clone().filter(|n| !n.is_empty()),
                resolve_target(pod, p)?,
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.app_protocol.clone(),
            ))
        })
        .collect()
}

/// A short stable hash (FNV-1a, base-36) naming a slice by its port set and
/// chunk, so the same grouping always maps to the same object.
fn short_hash(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    const DIGITS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = String::new();
    for _ in 0..5 {
        out.push(DIGITS[(h % DIGITS.len() as u64) as usize] as char);
        h /= DIGITS.len() as u64;
    }
    out
}

fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.namespace(),
        name: Some(pod.name_any()),
        uid: pod.uid(),
        ..ObjectReference::default()
    }
}

/// The slices the service should have.
fn desired_slices<P: Borrow<Pod>>(svc: &Service, pods: &[P]) -> Vec<EndpointSlice> {
    let name = svc.name_any();
    let mut groups: BTreeMap<String, (PortSet, Vec<Member<'_>>)> = BTreeMap::new();
    for m in members(svc, pods) {
        let ports = port_set(svc, Some(m.pod));
        let key = format!("{ports:?}");
        groups
            .entry(key)
            .or_insert_with(|| (ports, Vec::new()))
            .1
            .push(m);
    }
    let mut out = Vec::new();
    for (key, (ports, group)) in groups {
        for (chunk_index, chunk) in group.chunks(MAX_PER_SLICE).enumerate() {
            let endpoints = chunk
                .iter()
                .map(|m| Endpoint {
                    addresses: vec![m.ip.clone()],
                    conditions: Some(EndpointConditions {
                        ready: Some(m.ready),
                        serving: Some(
                            m.ready || (m.terminating && super::replicaset::is_ready(m.pod)),
                        ),
                        terminating: Some(m.terminating),
                    }),
                    node_name: m.pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                    target_ref: Some(pod_ref(m.pod)),
                    ..Endpoint::default()
                })
                .collect();
            out.push(slice(
                svc,
                &format!("{name}-{}", short_hash(&format!("{key}/{chunk_index}"))),
                &ports,
                endpoints,
            ));
        }
    }
    if out.is_empty() {
        // A service with no endpoints still gets one (empty) slice, so
        // readers can tell "no endpoints" from "not processed yet".
        let ports = port_set(svc, None);
        out.push(slice(
            svc,
            &format!("{name}-{}", short_hash("empty")),
            &ports,
            Vec::new(),
        ));
    }
    out
}

fn slice(
    svc: &Service,
    slice_name: &str,
    ports: &PortSet,
    endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    let mut labels = svc.labels().clone();
    labels.retain(|k, _| k != SERVICE_NAME_LABEL && k != MANAGED_BY_LABEL);
    labels.insert(SERVICE_NAME_LABEL.into(), svc.name_any());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(slice_name.to_string()),
            namespace: svc.namespace(),
            labels: Some(labels),
            owner_references: Some(vec![super::controller_ref(svc)]),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints,
        ports: Some(
            ports
                .iter()
                .map(|(name, port, protocol, app)| EndpointPort {
                    name: name.clone(),
                    port: Some(*port),
                    protocol: Some(protocol.clone()),
                    app_protocol: app.clone(),
                })
                .collect(),
        ),
    }
}

/// The legacy Endpoints object: one subset per port set, ready pods under
/// `addresses`, the others under `notReadyAddresses`.
fn desired_endpoints<P: Borrow<Pod>>(svc: &Service, pods: &[P]) -> Endpoints {
    let mut groups: BTreeMap<String, (PortSet, Vec<Member<'_>>)> = BTreeMap::new();
    for m in members(svc, pods) {
        let ports = port_set(svc, Some(m.pod));
        if ports.is_empty() {
            continue;
        }
        let key = format!("{ports:?}");
        groups
            .entry(key)
            .or_insert_with(|| (ports, Vec::new()))
            .1
            .push(m);
    }
    let subsets: Vec<EndpointSubset> = groups
        .into_values()
        .map(|(ports, group)| {
            let address = |m: &Member<'_>| EndpointAddress {
                ip: m.ip.clone(),
                node_name: m.pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                target_ref: Some(pod_ref(m.pod)),
                ..EndpointAddress::default()
            };
            let ready: Vec<_> = group.iter().filter(|m| m.ready).map(address).collect();
            let not_ready: Vec<_> = group.iter().filter(|m| !m.ready).map(address).collect();
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: Some(
                    ports
                        .iter()
                        .map(|(name, port, protocol, app)| CorePort {
                            name: name.clone(),
                            port: *port,
                            protocol: Some(protocol.clone()),
                            app_protocol: app.clone(),
                        })
                        .collect(),
                ),
            }
        })
        .collect();
    let mut labels = svc.labels().clone();
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    Endpoints {
        metadata: ObjectMeta {
            name: Some(svc.name_any()),
            namespace: svc.namespace(),
            labels: Some(labels),
            owner_references: Some(vec![super::controller_ref(svc)]),
            ..ObjectMeta::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    }
}

/// The object a slice belongs to (for tests and the proxy).
pub fn service_of(slice: &EndpointSlice) -> Option<(String, String)> {
    Some((
        slice.meta().namespace.clone()?,
        slice.labels().get(SERVICE_NAME_LABEL)?.clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServicePort, ServiceSpec,
    };

    fn svc(ports: Vec<ServicePort>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("svc-uid".into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(BTreeMap::from([("app".into(), "web".into())])),
                ports: Some(ports),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }

    fn port(name: &str, port: i32, target: IntOrString) -> ServicePort {
        ServicePort {
            name: Some(name.into()),
            port,
            target_port: Some(target),
            ..ServicePort::default()
        }
    }

    fn pod(name: &str, ip: Option<&str>, ready: bool, named_port: Option<(&str, i32)>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("{name}-uid")),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-1".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: named_port.map(|(n, p)| {
                        vec![ContainerPort {
                            name: Some(n.into()),
                            container_port: p,
                            ..ContainerPort::default()
                        }]
                    }),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: ip.map(str::to_string),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn a_service_without_endpoints_gets_one_empty_slice_with_its_numeric_ports() {
        let s = svc(vec![
            port("http", 80, IntOrString::Int(8080)),
            port("named", 81, IntOrString::String("web".into())),
            port("", 82, IntOrString::String("9090".into())),
        ]);
        let slices = desired_slices::<Pod>(&s, &[]);
        assert_eq!(slices.len(), 1);
        assert!(slices[0].endpoints.is_empty());
        let ports: Vec<(Option<&str>, Option<i32>)> = slices[0]
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.as_deref(), p.port))
            .collect();
        // A named target has no pod to be resolved in; an empty name is none.
        assert_eq!(ports, [(Some("http"), Some(8080)), (None, Some(9090))]);
    }

    #[test]
    fn ready_and_not_ready_pods_are_listed_and_pods_without_ip_are_not() {
        let s = svc(vec![port("http", 80, IntOrString::Int(8080))]);
        let pods = vec![
            pod("a", Some("127.128.0.2"), true, None),
            pod("b", Some("127.128.0.3"), false, None),
            pod("c", None, false, None),
        ];
        let slices = desired_slices(&s, &pods);
        assert_eq!(slices.len(), 1);
        let eps = &slices[0].endpoints;
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[0].addresses, vec!["127.128.0.2"]);
        assert_eq!(eps[0].conditions.as_ref().unwrap().ready, Some(true));
        assert_eq!(eps[1].conditions.as_ref().unwrap().ready, Some(false));
        assert_eq!(slices[0].ports.as_ref().unwrap()[0].port, Some(8080));
        assert_eq!(
            slices[0]
                .labels()
                .get(SERVICE_NAME_LABEL)
                .map(String::as_str),
            Some("web")
        );
        let ep = desired_endpoints(&s, &pods);
        let subset = &ep.subsets.unwrap()[0];
        assert_eq!(subset.addresses.as_ref().unwrap().len(), 1);
        assert_eq!(subset.not_ready_addresses.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn named_target_ports_resolve_per_pod_and_split_slices() {
        let s = svc(vec![port("http", 80, IntOrString::String("web".into()))]);
        let pods = vec![
            pod("a", Some("127.128.0.2"), true, Some(("web", 8080))),
            pod("b", Some("127.128.0.3"), true, Some(("web", 9090))),
            pod("c", Some("127.128.0.4"), true, None),
        ];
        let slices = desired_slices(&s, &pods);
        let mut ports: Vec<i32> = slices
            .iter()
            .map(|s| {
                s.ports
                    .as_ref()
                    .unwrap()
                    .first()
                    .and_then(|p| p.port)
                    .unwrap_or(0)
            })
            .collect();
        ports.sort();
        // Pod c declares no port named "web": it is in a slice without ports.
        assert_eq!(ports, vec![0, 8080, 9090]);
        let names: BTreeSet<_> = slices.iter().map(|s| s.name_any()).collect();
        assert_eq!(names.len(), 3, "each group has its own stable name");
        assert_eq!(
            desired_slices(&s, &pods)[0].name_any(),
            slices[0].name_any()
        );
    }

    #[test]
    fn a_service_without_pods_has_one_empty_slice() {
        let s = svc(vec![port("http", 80, IntOrString::Int(8080))]);
        let slices = desired_slices::<Pod>(&s, &[]);
        assert_eq!(slices.len(), 1);
        assert!(slices[0].endpoints.is_empty());
        assert!(desired_endpoints::<Pod>(&s, &[]).subsets.is_none());
    }

    #[test]
    fn large_groups_are_split_into_slices_of_at_most_a_hundred() {
        let s = svc(vec![port("http", 80, IntOrString::Int(8080))]);
        let pods: Vec<Pod> = (0..250)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    Some(&format!("127.128.{}.{}", i / 200, i % 200 + 2)),
                    true,
                    None,
                )
            })
            .collect();
        let slices = desired_slices(&s, &pods);
        assert_eq!(slices.len(), 3);
        assert!(slices.iter().all(|s| s.endpoints.len() <= MAX_PER_SLICE));
        assert_eq!(slices.iter().map(|s| s.endpoints.len()).sum::<usize>(), 250);
    }
}
