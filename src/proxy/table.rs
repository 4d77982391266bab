//! The routing table: what every service address, name, NodePort and
//! load-balancer address leads to, built from Services, EndpointSlices and
//! Nodes. A table is immutable once built; the proxy swaps in a new one
//! when the watched objects change, so lookups never wait on a rebuild.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;

use crate::agentapi::client::{AgentEndpoint, DEFAULT_AGENT_PORT};
use crate::cluster::Cidr;

/// The cluster's DNS domain: `NAME.NS.svc.<domain>`.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// One place a service's traffic may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// The node running it (none for addresses outside the cluster, such
    /// as the API server behind the `kubernetes` service).
    pub node: Option<String>,
    /// `(namespace, name)` of the pod behind it.
    pub pod: Option<(String, String)>,
    /// `namespace/name` of that pod (empty without one), built once so a
    /// request's lookups allocate nothing.
    pub pod_key: String,
}

/// One port of a service and its ready endpoints.
#[derive(Debug)]
pub struct ServicePort {
    /// The port's name ("" when it is the service's only, unnamed port).
    pub name: String,
    pub port: u16,
    pub node_port: Option<u16>,
    /// Only ready endpoints get traffic.
    pub endpoints: Vec<Endpoint>,
    /// Round-robin position.
    next: AtomicUsize,
}

impl ServicePort {
    /// The next endpoint in round-robin order, and how many there are.
    pub fn next_index(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}

/// A service as the proxy routes it.
#[derive(Debug)]
pub struct ProxiedService {
    pub namespace: String,
    pub name: String,
    /// `namespace/name`.
    key: String,
    /// `None` for headless services (`clusterIP: None`).
    pub cluster_ip: Option<Ipv4Addr>,
    pub load_balancer_ips: Vec<Ipv4Addr>,
    pub ports: Vec<ServicePort>,
    /// `sessionAffinity: ClientIP` and its timeout.
    pub affinity: Option<Duration>,
}

impl ProxiedService {
    /// `NAMESPACE/NAME`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The port numbered `port`.
    pub fn port(&self, port: u16) -> Option<usize> {
        self.ports.iter().position(|p| p.port == port)
    }
}

/// Where a node's agent is and which pod addresses are its.
#[derive(Debug, Clone)]
pub struct NodeRoute {
    pub agent: AgentEndpoint,
    pub pod_cidr: Option<Cidr>,
}

/// A destination the table resolved.
#[derive(Debug, Clone)]
pub enum Target {
    /// Port `port` (an index into `ports`) of a service.
    Service {
        svc: Arc<ProxiedService>,
        port: usize,
    },
    /// A pod by its IP, on port `port`.
    PodIp { ip: Ipv4Addr, port: u16 },
}

/// An immutable snapshot of the routes.
#[derive(Debug, Default)]
pub struct Table {
    services: HashMap<(String, String), Arc<ProxiedService>>,
    by_cluster_ip: HashMap<(Ipv4Addr, u16), (Arc<ProxiedService>, usize)>,
    by_node_port: HashMap<u16, (Arc<ProxiedService>, usize)>,
    by_lb: HashMap<(Ipv4Addr, u16), (Arc<ProxiedService>, usize)>,
    nodes: BTreeMap<String, NodeRoute>,
    /// Routes of the Ingresses served on the node's ingress port.
    ingress: super::ingress::IngressRoutes,
    /// Routes of the Gateways served on their listeners' ports.
    gateway: super::gateway::GatewayRoutes,
    /// The NetworkPolicies, resolved per pod.
    netpol: super::netpol::Policies,
}

/// What the table knows about the cluster's address ranges.
#[derive(Debug, Clone, Copy)]
pub struct Ranges {
    pub service_cidr: Cidr,
    pub cluster_cidr: Cidr,
}

impl Table {
    /// Builds a table from the watched objects.
    pub fn build(
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
        nodes: &[Arc<Node>],
    ) -> Table {
        // Ready endpoints of each service, by port name.
        let mut endpoints: HashMap<(String, String), HashMap<String, Vec<Endpoint>>> =
            HashMap::new();
        for slice in slices {
            let Some(ns) = slice.namespace() else {
                continue;
            };
            let Some(svc) = slice
                .labels()
                .get(crate::resources::kinds::endpointslice::SERVICE_NAME_LABEL)
            else {
                continue;
            };
            if slice.address_type != "IPv4" {
                continue;
            }
            let by_port = endpoints.entry((ns, svc.clone())).or_default();
            for port in slice.ports.iter().flatten() {
                let Some(number) = port.port.and_then(|p| u16::try_from(p).ok()) else {
                    continue;
                };
                if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
                    continue;
                }
                let list = by_port
                    .entry(port.name.clone().unwrap_or_default())
                    .or_default();
                for ep in &slice.endpoints {
                    // Kubernetes reads a missing `ready` as ready.
                    let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                    if !ready {
                        continue;
                    }
                    let pod = ep
                        .target_ref
                        .as_ref()
                        .filter(|r| r.kind.as_deref() == Some("Pod"))
                        .and_then(|r| {
                            Some((
                                r.namespace.clone().or_else(|| slice.namespace())?,
                                r.name.clone()?,
                            ))
                        });
                    for addr in &ep.addresses {
                        let Ok(ip) = addr.parse::<Ipv4Addr>() else {
                            continue;
                        };
                        list.push(Endpoint {
                            ip,
                            port: number,
                            node: ep.node_name.clone(),
                            pod_key: pod
                                .as_ref()
                                .map(|(ns, n)| format!("{ns}/{n}"))
                                .unwrap_or_default(),
                            pod: pod.clone(),
                        });
                    }
                }
            }
        }
        let mut table = Table::default();
        for svc in services {
            let Some(spec) = svc.spec.as_ref() else {
                continue;
            };
            if spec.type_.as_deref() == Some("ExternalName") {
                continue;
            }
            let ns = svc.namespace().unwrap_or_default();
            let name = svc.name_any();
            let mut eps = endpoints
                .remove(&(ns.clone(), name.clone()))
                .unwrap_or_default();
            let ports: Vec<ServicePort> = spec
                .ports
                .iter()
                .flatten()
                .filter(|p| p.protocol.as_deref().is_none_or(|p| p == "TCP"))
                .filter_map(|p| {
                    let port_name = p.name.clone().unwrap_or_default();
                    let mut list = eps.remove(&port_name).unwrap_or_default();
                    list.sort_by_key(|e| (e.ip, e.port));
                    list.dedup();
                    Some(ServicePort {
                        name: port_name,
                        port: u16::try_from(p.port).ok()?,
                        node_port: p.node_port.and_then(|n| u16::try_from(n).ok()),
                        endpoints: list,
                        next: AtomicUsize::new(0),
                    })
                })
                .collect();
            let cluster_ip = spec
                .cluster_ip
                .as_deref()
                .filter(|ip| *ip != "None")
                .and_then(|ip| ip.parse().ok());
            let load_balancer_ips = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.as_deref()?.parse().ok())
                .collect();
            let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
                let secs = spec
                    .session_affinity_config
                    .as_ref()
                    .and_then(|c| c.client_ip.as_ref())
                    .and_then(|c| c.timeout_seconds)
                    .filter(|s| *s > 0)
                    .unwrap_or(10_800);
                Duration::from_secs(secs as u64)
            });
            let s = Arc::new(ProxiedService {
                key: format!("{ns}/{name}"),
                namespace: ns.clone(),
                name: name.clone(),
                cluster_ip,
                load_balancer_ips,
                ports,
                affinity,
            });
            for (i, p) in s.ports.iter().enumerate() {
                if let Some(ip) = s.cluster_ip {
                    table.by_cluster_ip.insert((ip, p.port), (s.clone(), i));
                }
                if let Some(np) = p.node_port {
                    table.by_node_port.insert(np, (s.clone(), i));
                }
                for ip in &s.load_balancer_ips {
                    table.by_lb.insert((*ip, p.port), (s.clone(), i));
                }
            }
            table.services.insert((ns, name), s);
        }
        for node in nodes {
            let value = match serde_json::to_value(&**node) {
                Ok(v) => v,
                Err(_) => continue,
            };
            let Ok(agent) = AgentEndpoint::of_node(&value) else {
                continue;
            };
            let pod_cidr = node
                .spec
                .as_ref()
                .and_then(|s| s.pod_cidr.as_deref())
                .and_then(|c| Cidr::parse(c).ok());
            table
                .nodes
                .insert(node.name_any(), NodeRoute { agent, pod_cidr });
        }
        table
    }

    /// The service at a ClusterIP and port.
    pub fn by_cluster_ip(&self, ip: Ipv4Addr, port: u16) -> Option<Target> {
        self.by_cluster_ip
            .get(&(ip, port))
            .map(|(s, i)| Target::Service {
                svc: s.clone(),
                port: *i,
            })
    }

    /// The service behind a NodePort.
    pub fn by_node_port(&self, port: u16) -> Option<Target> {
        self.by_node_port.get(&port).map(|(s, i)| Target::Service {
            svc: s.clone(),
            port: *i,
        })
    }

    /// The service at a load-balancer address and port.
    pub fn by_load_balancer(&self, ip: Ipv4Addr, port: u16) -> Option<Target> {
        self.by_lb.get(&(ip, port)).map(|(s, i)| Target::Service {
            svc: s.clone(),
            port: *i,
        })
    }

    /// A service by namespace and name.
    pub fn service(&self, namespace: &str, name: &str) -> Option<Arc<ProxiedService>> {
        self.services
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Where a node's agent listens.
    pub fn node(&self, name: &str) -> Option<&NodeRoute> {
        self.nodes.get(name)
    }

    /// The node whose pod range holds `ip`.
    pub fn node_of_pod_ip(&self, ip: Ipv4Addr) -> Option<(&str, &NodeRoute)> {
        self.nodes
            .iter()
            .find(|(_, n)| n.pod_cidr.is_some_and(|c| c.contains(ip)))
            .map(|(name, n)| (name.as_str(), n))
    }

    /// Every (address, port) a node's proxy listens on for services:
    /// ClusterIPs and load-balancer addresses, and the NodePorts on
    /// `node_ip`.
    pub fn listen_addrs(&self, node_ip: Ipv4Addr) -> Vec<std::net::SocketAddr> {
        let mut out: Vec<std::net::SocketAddr> = self
            .by_cluster_ip
            .keys()
            .chain(self.by_lb.keys())
            .map(|(ip, port)| std::net::SocketAddr::from((*ip, *port)))
            .chain(
                self.by_node_port
                    .keys()
                    .map(|p| std::net::SocketAddr::from((node_ip, *p))),
            )
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Resolves what a request to `ip:port`, arriving on a listener, is
    /// for: a load-balancer address, a ClusterIP, or a NodePort on the
    /// node's own address.
    pub fn by_listener(&self, ip: Ipv4Addr, port: u16, node_ip: Ipv4Addr) -> Option<Target> {
        self.by_load_balancer(ip, port)
            .or_else(|| self.by_cluster_ip(ip, port))
            .or_else(|| {
                if ip == node_ip {
                    self.by_node_port(port)
                } else {
                    None
                }
            })
    }

    /// Resolves a host a guest asked for: a service or pod address in the
    /// cluster's ranges, or a service name (`NAME`, `NAME.NS`,
    /// `NAME.NS.svc`, `NAME.NS.svc.cluster.local`; `namespace` is the
    /// caller's, for the short forms).
    pub fn resolve(&self, host: &str, port: u16, namespace: &str, ranges: &Ranges) -> Resolution {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if let Ok(ip) = host.parse::<Ipv4Addr>() {
            if ranges.service_cidr.contains(ip) {
                return match self.by_cluster_ip(ip, port) {
                    Some(t) => Resolution::Found(t),
                    None => Resolution::Refused(format!("no service at {ip}:{port}")),
                };
            }
            if ranges.cluster_cidr.contains(ip) {
                return Resolution::Found(Target::PodIp { ip, port });
            }
            if let Some(t) = self.by_load_balancer(ip, port) {
                return Resolution::Found(t);
            }
            return Resolution::NotCluster;
        }
        let svc_suffix = format!(".svc.{CLUSTER_DOMAIN}");
        let (short, qualified) = match host
            .strip_suffix(&svc_suffix)
            .or_else(|| host.strip_suffix(".svc"))
        {
            Some(rest) => (rest, true),
            None => (host.as_str(), false),
        };
        let (name, ns) = match short.split_once('.') {
            None => (short, namespace),
            Some((name, ns)) if !ns.contains('.') => (name, ns),
            // More dots than NAME.NS: not a service name.
            Some(_) if qualified => return Resolution::Refused(format!("{host}: no such service")),
            Some(_) => return Resolution::NotCluster,
        };
        let Some(svc) = self.service(ns, name) else {
            return if qualified {
                Resolution::Refused(format!(
                    "{host}: no such service (service {ns}/{name} not found)"
                ))
            } else {
                Resolution::NotCluster
            };
        };
        match svc.port(port) {
            Some(i) => Resolution::Found(Target::Service { svc, port: i }),
            None if svc.cluster_ip.is_none() => {
                // A headless service's name stands for its pods: the port
                // is a pod's port.
                Resolution::Headless { svc, port }
            }
            None => Resolution::Refused(format!("service {ns}/{name} has no port {port}")),
        }
    }

    /// Number of services (for logs).
    /// The same table with `routes` as its Ingress routes.
    #[must_use]
    pub fn with_ingress(mut self, routes: super::ingress::IngressRoutes) -> Table {
        self.ingress = routes;
        self
    }

    /// The Ingress routes.
    pub fn ingress(&self) -> &super::ingress::IngressRoutes {
        &self.ingress
    }

    /// The same table with `routes` as its Gateway routes.
    #[must_use]
    pub fn with_gateway(mut self, routes: super::gateway::GatewayRoutes) -> Table {
        self.gateway = routes;
        self
    }

    /// The Gateway routes.
    pub fn gateway(&self) -> &super::gateway::GatewayRoutes {
        &self.gateway
    }

    /// The same table with `policies` as its NetworkPolicies.
    #[must_use]
    pub fn with_netpol(mut self, policies: super::netpol::Policies) -> Table {
        self.netpol = policies;
        self
    }

    /// The NetworkPolicies, resolved per pod.
    pub fn netpol(&self) -> &super::netpol::Policies {
        &self.netpol
    }

    /// Every certificate the edge serves: the Ingresses' `spec.tls`, then
    /// the Gateways' HTTPS listeners'.
    pub fn edge_certificates(&self) -> Vec<super::ingress::TlsRef> {
        let mut all = self.ingress.tls().to_vec();
        all.extend_from_slice(self.gateway.tls());
        all
    }

    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }
}

/// What a guest's destination turned out to be.
#[derive(Debug)]
pub enum Resolution {
    Found(Target),
    /// A headless service's name with a pod port.
    Headless {
        svc: Arc<ProxiedService>,
        port: u16,
    },
    /// In the cluster's address space or naming, but nothing is there:
    /// refused, never sent to the network.
    Refused(String),
    /// Not a cluster destination.
    NotCluster,
}

/// The default agent port, re-exported for callers building routes.
pub const AGENT_PORT: u16 = DEFAULT_AGENT_PORT;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    type Objects = (Vec<Arc<Service>>, Vec<Arc<EndpointSlice>>, Vec<Arc<Node>>);

    fn objects() -> Objects {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "hello", "namespace": "default"},
            "spec": {"clusterIP": "127.96.0.10", "type": "NodePort",
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.100"}]}}
        }))
        .unwrap();
        let headless: Service = serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "data"},
            "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}
        }))
        .unwrap();
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "hello-abc", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "hello"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["127.128.0.2"], "conditions": {"ready": true}, "nodeName": "node-1",
                 "targetRef": {"kind": "Pod", "namespace": "default", "name": "hello-1"}},
                {"addresses": ["127.128.64.2"], "conditions": {"ready": false}, "nodeName": "node-2",
                 "targetRef": {"kind": "Pod", "namespace": "default", "name": "hello-2"}},
            ]
        }))
        .unwrap();
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "node-2"},
            "spec": {"podCIDR": "127.128.64.0/18"},
            "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.2"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10251}}}
        }))
        .unwrap();
        (
            vec![Arc::new(svc), Arc::new(headless)],
            vec![Arc::new(slice)],
            vec![Arc::new(node)],
        )
    }

    fn ranges() -> Ranges {
        Ranges {
            service_cidr: Cidr::parse("127.96.0.0/16").unwrap(),
            cluster_cidr: Cidr::parse("127.128.0.0/9").unwrap(),
        }
    }

    fn service_of(r: Resolution) -> (String, u16, usize) {
        match r {
            Resolution::Found(Target::Service { svc, port }) => (
                svc.key().to_string(),
                svc.ports[port].port,
                svc.ports[port].endpoints.len(),
            ),
            other => panic!("not a service: {other:?}"),
        }
    }

    #[test]
    fn names_and_addresses_resolve_to_the_service_with_ready_endpoints_only() {
        let (s, e, n) = objects();
        let t = Table::build(&s, &e, &n);
        for host in [
            "hello",
            "hello.default",
            "hello.default.svc",
            "hello.default.svc.cluster.local",
            "HELLO.default.svc.cluster.local.",
            "127.96.0.10",
            "127.0.0.100",
        ] {
            assert_eq!(
                service_of(t.resolve(host, 80, "default", &ranges())),
                ("default/hello".into(), 80, 1),
                "{host}"
            );
        }
        assert!(matches!(
            t.resolve("hello", 80, "other", &ranges()),
            Resolution::NotCluster
        ));
        assert!(matches!(
            t.resolve("hello.other.svc", 80, "default", &ranges()),
            Resolution::Refused(_)
        ));
        assert!(matches!(
            t.resolve("127.96.0.11", 80, "default", &ranges()),
            Resolution::Refused(_)
        ));
        assert!(matches!(
            t.resolve("hello", 81, "default", &ranges()),
            Resolution::Refused(_)
        ));
        assert!(matches!(
            t.resolve("example.com", 80, "default", &ranges()),
            Resolution::NotCluster
        ));
        assert!(matches!(
            t.resolve("10.0.0.1", 80, "default", &ranges()),
            Resolution::NotCluster
        ));
        assert!(matches!(
            t.resolve("127.128.64.2", 8080, "default", &ranges()),
            Resolution::Found(Target::PodIp { port: 8080, .. })
        ));
        assert!(matches!(
            t.resolve("db.data", 5432, "default", &ranges()),
            Resolution::Found(Target::Service { .. })
        ));
        // A headless service's name with a port it does not list is its
        // pods' port.
        assert!(matches!(
            t.resolve("db.data", 6000, "default", &ranges()),
            Resolution::Headless { port: 6000, .. }
        ));
    }

    #[test]
    fn listeners_cover_cluster_ips_load_balancers_and_node_ports() {
        let (s, e, n) = objects();
        let t = Table::build(&s, &e, &n);
        let node_ip = Ipv4Addr::new(127, 0, 0, 1);
        let addrs: Vec<String> = t
            .listen_addrs(node_ip)
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(
            addrs,
            vec!["127.0.0.1:30080", "127.0.0.100:80", "127.96.0.10:80"]
        );
        assert!(t.by_listener(node_ip, 30080, node_ip).is_some());
        assert!(
            t.by_listener(Ipv4Addr::new(127, 0, 0, 2), 30080, node_ip)
                .is_none()
        );
    }

    #[test]
    fn pod_addresses_map_to_their_nodes_agent() {
        let (s, e, n) = objects();
        let t = Table::build(&s, &e, &n);
        let (name, route) = t.node_of_pod_ip(Ipv4Addr::new(127, 128, 64, 9)).unwrap();
        assert_eq!(name, "node-2");
        assert_eq!(route.agent.port, 10251);
        assert!(t.node_of_pod_ip(Ipv4Addr::new(127, 128, 0, 9)).is_none());
    }
}
