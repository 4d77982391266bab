//! The service proxy: runs inside every node agent and implements
//! Services without iptables or DNS.
//!
//! - [`table`]: the routing table, rebuilt from watched Services,
//!   EndpointSlices and Nodes and swapped in whole.
//! - [`route`]: delivery of one request to an endpoint — in-process when
//!   the pod runs on this node, through the owning node's agent otherwise
//!   (authenticated with this node's client certificate), straight to the
//!   address for endpoints outside the cluster (the API server behind the
//!   `kubernetes` service).
//! - [`listen`]: listeners on every ClusterIP and load-balancer address and
//!   on the node's NodePorts. Several agents on one host share them with
//!   `SO_REUSEPORT`; each one routes to every endpoint in the cluster, so
//!   whichever accepts a connection reaches the same pods.
//! - [`outbound`]: a guest's outgoing wasi:http requests to service names,
//!   ClusterIPs and pod IPs, taken before they could reach a socket.
//! - [`activate`]: scale from zero: requests for a Service with no
//!   endpoints are held while its workload is woken.
//! - [`metrics`]: per-service and per-pod counts and latency.
//! - [`netpol`]: NetworkPolicy decisions, resolved per pod at each table
//!   rebuild and asked for every request [`route`] delivers.

pub mod activate;
pub mod gateway;
pub mod ingress;
pub mod ingresstls;
pub mod listen;
pub mod metrics;
pub mod netpol;
pub mod outbound;
pub mod pods;
pub mod route;
pub mod table;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass, NetworkPolicy};

use crate::resources::gateway::{Gateway, GatewayClass, HTTPRoute};
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use crate::agentapi::client::{NodeClient, NodeClientConfig};
use crate::cluster::{Cidr, DEFAULT_CLUSTER_CIDR, DEFAULT_SERVICE_CIDR};
use crate::pki::ClientTls;
pub use outbound::PodRouter;
pub use pods::{LocalPod, LocalPods, Served};
pub use route::ProxyBody;
pub use table::{Ranges, Table, Target};

/// How the proxy of one node is set up.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub node_name: String,
    /// Where NodePorts listen.
    pub node_ip: Ipv4Addr,
    pub ranges: Ranges,
    /// Whether to listen on service addresses and NodePorts (guests'
    /// requests are routed either way).
    pub listen: bool,
    /// Connections the listeners hold open at once.
    pub max_connections: usize,
    /// The port Ingresses are served on, on `node_ip` (none: not served).
    pub ingress_port: Option<u16>,
    /// The port Ingresses with `spec.tls` are served on with TLS.
    pub ingress_tls_port: Option<u16>,
    /// Largest request body forwarded to another node (bodies to local
    /// pods stream and are the pod's to bound).
    pub max_body_bytes: usize,
    /// Longest the owning node may take to start answering.
    pub remote_timeout: Duration,
    /// Bounds on requests held for a Service scaled to zero.
    pub activation: activate::ActivationLimits,
    /// Where an agent saves what the proxy routes by (Services, their
    /// endpoints, policies), so it routes from it after a restart while no
    /// API server answers. None on the server's own node.
    pub checkpoint: Option<crate::checkpoint::Checkpoint>,
}

impl ProxyConfig {
    /// Defaults for a node.
    pub fn new(node_name: impl Into<String>, node_ip: Ipv4Addr) -> ProxyConfig {
        ProxyConfig {
            node_name: node_name.into(),
            node_ip,
            ranges: Ranges::default(),
            listen: true,
            max_connections: 4096,
            ingress_port: Some(80),
            ingress_tls_port: Some(443),
            max_body_bytes: 16 << 20,
            remote_timeout: Duration::from_secs(60),
            activation: activate::ActivationLimits::default(),
            checkpoint: None,
        }
    }
}

impl Default for Ranges {
    /// The ranges `wkube server` allocates from unless told otherwise.
    fn default() -> Ranges {
        Ranges {
            service_cidr: Cidr::parse(DEFAULT_SERVICE_CIDR)
                .expect("the default service range parses"),
            cluster_cidr: Cidr::parse(DEFAULT_CLUSTER_CIDR).expect("the default pod range parses"),
        }
    }
}

/// Why the proxy could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("node-to-node client: {0}")]
    Client(String),
}

/// TLS material of a node: its client certificate (for other agents) and
/// the cluster CA (for them and for the API server).
#[derive(Clone)]
pub struct NodeIdentity {
    pub client: ClientTls,
}

/// The endpoint (address, port) a client sticks to, and until when.
type Sticky = (Ipv4Addr, u16, Instant);

/// One node's proxy; shared by the listeners, the agent endpoint and every
/// pod's outbound router.
pub struct Proxy {
    pub config: ProxyConfig,
    table: RwLock<Arc<Table>>,
    /// Pods this node runs, served in-process.
    pub pods: Arc<dyn LocalPods>,
    /// Other nodes' agents.
    nodes: NodeClient,
    /// TLS to endpoints outside the cluster network (the API server),
    /// trusting the cluster CA only and presenting no certificate: a
    /// guest's request must carry the guest's own credentials.
    external_tls: Option<Arc<rustls::ClientConfig>>,
    pub metrics: metrics::Metrics,
    /// `sessionAffinity: ClientIP`: (service, client) → endpoint until.
    affinity: Mutex<HashMap<(String, Ipv4Addr), Sticky>>,
    /// Woken when the table first reflects the whole cluster.
    synced: Notify,
    is_synced: std::sync::atomic::AtomicBool,
    /// Counts table installs; held requests wait on it for endpoints.
    generation: tokio::sync::watch::Sender<u64>,
    /// Wakes workloads scaled to zero.
    pub activator: activate::Activator,
    /// Certificates of the Ingresses' `spec.tls`, by host.
    pub ingress_certs: Arc<ingresstls::IngressCerts>,
    /// The TLS the ingress port serves with (their certificates).
    ingress_tls: Arc<rustls::ServerConfig>,
}

impl Proxy {
    /// A proxy for the node; `identity` is `None` with cluster TLS off.
    ///
    /// # Errors
    /// Unusable certificates.
    pub fn new(
        config: ProxyConfig,
        pods: Arc<dyn LocalPods>,
        identity: Option<NodeIdentity>,
    ) -> Result<Proxy, ProxyError> {
        let nodes = NodeClient::new(
            NodeClientConfig {
                response_header_timeout: config.remote_timeout,
                ..NodeClientConfig::default()
            },
            identity.as_ref().map(|i| &i.client),
        )
        .map_err(|e| ProxyError::Client(e.to_string()))?;
        let external_tls = identity
            .as_ref()
            .map(|i| route::external_tls(&i.client.ca_pem))
            .transpose()
            .map_err(ProxyError::Client)?;
        let ingress_certs = Arc::new(ingresstls::IngressCerts::default());
        let ingress_tls =
            ingresstls::server_config(ingress_certs.clone()).map_err(ProxyError::Client)?;
        Ok(Proxy {
            metrics: metrics::Metrics::new(&config.node_name),
            config,
            table: RwLock::new(Arc::new(Table::default())),
            pods,
            nodes,
            external_tls,
            affinity: Mutex::new(HashMap::new()),
            synced: Notify::new(),
            is_synced: std::sync::atomic::AtomicBool::new(false),
            generation: tokio::sync::watch::Sender::new(0),
            activator: activate::Activator::default(),
            ingress_certs,
            ingress_tls,
        })
    }

    /// The current routing table.
    pub fn table(&self) -> Arc<Table> {
        self.table.read().clone()
    }

    /// Waits until the table reflects the cluster (the first full lists).
    pub async fn wait_synced(&self) {
        loop {
            let notified = self.synced.notified();
            if self.is_synced.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    fn install(&self, table: Table) {
        *self.table.write() = Arc::new(table);
        self.generation.send_modify(|g| *g += 1);
    }
}

/// Watches Services, EndpointSlices, Nodes, the edge's routes and the
/// NetworkPolicies with the Pods and Namespaces they select, and keeps the
/// table (and, when enabled, the listeners) current until `shutdown`.
pub async fn run(
    proxy: Arc<Proxy>,
    client: kube::Client,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let stop = crate::shutdown::Stop::new(shutdown);
    let _ = proxy.activator.client.set(client.clone());
    let cp = proxy.config.checkpoint.clone();
    let mut keepers = Vec::new();
    let mut kept =
        |keeper: futures::future::BoxFuture<'static, ()>| keepers.push(tokio::spawn(keeper));
    let (services, svc_stream) = reflected::<Service>(&client, &cp, &stop, &mut kept);
    let (slices, slice_stream) = reflected::<EndpointSlice>(&client, &cp, &stop, &mut kept);
    let (nodes, node_stream) = reflected::<Node>(&client, &cp, &stop, &mut kept);
    let (ingresses, ingress_stream) = reflected::<Ingress>(&client, &cp, &stop, &mut kept);
    let (classes, class_stream) = reflected::<IngressClass>(&client, &cp, &stop, &mut kept);
    let (gateway_classes, gateway_class_stream) =
        reflected::<GatewayClass>(&client, &cp, &stop, &mut kept);
    let (gateways, gateway_stream) = reflected::<Gateway>(&client, &cp, &stop, &mut kept);
    let (http_routes, route_stream) = reflected::<HTTPRoute>(&client, &cp, &stop, &mut kept);
    // NetworkPolicies select pods and namespaces by label: both are
    // watched (EndpointSlices name pods but carry neither their labels nor
    // their named ports, and a client pod need back no Service).
    let (policies, policy_stream) = reflected::<NetworkPolicy>(&client, &cp, &stop, &mut kept);
    let (pods, pod_stream) = reflected::<Pod>(&client, &cp, &stop, &mut kept);
    let (namespaces, namespace_stream) = reflected::<Namespace>(&client, &cp, &stop, &mut kept);
    let changed = Arc::new(Notify::new());
    // Pods and namespaces matter to the table only through policies: while
    // there are none, their events (every pod start is several) leave the
    // table alone. A policy's own event wakes the rebuild, which then reads
    // the pods as they are.
    let have_policies = {
        let policies = policies.clone();
        move || !policies.is_empty()
    };
    let rebuild = rebuild_loop(
        proxy.clone(),
        Stores {
            services,
            slices,
            nodes,
            ingresses,
            classes,
            gateway_classes,
            gateways,
            http_routes,
            policies,
            pods,
            namespaces,
        },
        changed.clone(),
        stop.wait(),
    );
    tokio::join!(
        feed(svc_stream, changed.clone(), stop.wait()),
        feed(slice_stream, changed.clone(), stop.wait()),
        feed(node_stream, changed.clone(), stop.wait()),
        feed(ingress_stream, changed.clone(), stop.wait()),
        feed(class_stream, changed.clone(), stop.wait()),
        feed(gateway_class_stream, changed.clone(), stop.wait()),
        feed(gateway_stream, changed.clone(), stop.wait()),
        feed(route_stream, changed.clone(), stop.wait()),
        feed(policy_stream, changed.clone(), stop.wait()),
        feed_if(
            pod_stream,
            changed.clone(),
            have_policies.clone(),
            stop.wait()
        ),
        feed_if(
            namespace_stream,
            changed.clone(),
            have_policies,
            stop.wait()
        ),
        ingresstls::run(proxy.clone(), client, stop.wait()),
        rebuild
    );
    for k in keepers {
        let _ = k.await;
    }
}

/// A cache of every `K` in the cluster and the watch that fills it (one
/// item per event, for [`feed`]).
///
/// With a checkpoint, the cache starts from the saved copy (so routes
/// exist before, or without, the first list) and a keeper, handed to
/// `keep`, saves it after changes until `stop`. The first list replaces
/// the saved copy whole.
fn reflected<K>(
    client: &kube::Client,
    checkpoint: &Option<crate::checkpoint::Checkpoint>,
    stop: &crate::shutdown::Stop,
    keep: &mut impl FnMut(futures::future::BoxFuture<'static, ()>),
) -> (Store<K>, futures::stream::BoxStream<'static, ()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize
        + Send
        + Sync
        + 'static,
{
    let (store, mut writer) = reflector::store::<K>();
    let changed = Arc::new(Notify::new());
    if let Some(cp) = checkpoint {
        let name: &'static str = match K::plural(&()).as_ref() {
            "services" => "proxy-services",
            "endpointslices" => "proxy-endpointslices",
            "nodes" => "proxy-nodes",
            "ingresses" => "proxy-ingresses",
            "ingressclasses" => "proxy-ingressclasses",
            "gatewayclasses" => "proxy-gatewayclasses",
            "gateways" => "proxy-gateways",
            "httproutes" => "proxy-httproutes",
            "networkpolicies" => "proxy-networkpolicies",
            "pods" => "proxy-pods",
            "namespaces" => "proxy-namespaces",
            _ => "proxy-other",
        };
        if let Some(saved) = cp.read::<Vec<K>>(name) {
            writer.apply_watcher_event(&watcher::Event::Init);
            for o in saved {
                writer.apply_watcher_event(&watcher::Event::InitApply(o));
            }
            writer.apply_watcher_event(&watcher::Event::InitDone);
        }
        let (reader, changed) = (store.clone(), changed.clone());
        keep(Box::pin(cp.clone().keep(
            name,
            move || reader.state(),
            changed,
            stop.wait(),
        )));
    }
    // Nothing the proxy routes by is in managedFields: dropping them
    // keeps the cluster-wide caches small. Of the pods (every pod of the
    // cluster, for policies) it keeps only what policies read.
    let stream = watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(|o| {
            o.meta_mut().managed_fields = None;
            if let Some(pod) = (o as &mut dyn std::any::Any).downcast_mut::<Pod>() {
                netpol::trim_pod(pod);
            }
        })
        .reflect(writer)
        .map(move |_| changed.notify_one())
        .boxed();
    (store, stream)
}

/// Drives one watch, waking the rebuild after every event.
async fn feed(
    stream: futures::stream::BoxStream<'static, ()>,
    changed: Arc<Notify>,
    stop: impl std::future::Future<Output = ()>,
) {
    feed_if(stream, changed, || true, stop).await;
}

/// Drives one watch, waking the rebuild after an event only while
/// `matters()` holds (the cache is kept current either way).
async fn feed_if(
    mut stream: futures::stream::BoxStream<'static, ()>,
    changed: Arc<Notify>,
    matters: impl Fn() -> bool,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            next = stream.next() => match next {
                Some(()) if matters() => changed.notify_one(),
                Some(()) => {}
                None => break,
            },
            _ = &mut stop => break,
        }
    }
}

/// The pod addresses this node's pods serve on: each serving pod's IP with
/// its declared containerPorts (port 80 when it declares none), so a
/// process on the host reaches a pod at its IP as on a Kubernetes node.
fn local_pod_addrs(pods: &dyn LocalPods, out: &mut HashSet<std::net::SocketAddr>) {
    for pod in pods.all() {
        if !pod.is_serving() {
            continue;
        }
        let Some(ip) = pod.ip() else {
            continue;
        };
        let mut ports = pod.serving_ports();
        if ports.is_empty() {
            ports.push(80);
        }
        out.extend(
            ports
                .into_iter()
                .map(|p| std::net::SocketAddr::from((ip, p))),
        );
    }
}

/// The watched objects the table is built from.
struct Stores {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    nodes: Store<Node>,
    ingresses: Store<Ingress>,
    classes: Store<IngressClass>,
    gateway_classes: Store<GatewayClass>,
    gateways: Store<Gateway>,
    http_routes: Store<HTTPRoute>,
    policies: Store<NetworkPolicy>,
    pods: Store<Pod>,
    namespaces: Store<Namespace>,
}

/// How often the listeners of this node's pod addresses are brought up to
/// date: a pod is reachable at its IP from the host within this of
/// starting to serve.
const POD_LOOK: Duration = Duration::from_millis(250);

/// Rebuilds the table after changes, at most every few milliseconds, so a
/// burst of events (a first list of thousands) costs one rebuild.
async fn rebuild_loop(
    proxy: Arc<Proxy>,
    stores: Stores,
    changed: Arc<Notify>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let Stores {
        services,
        slices,
        nodes,
        ingresses,
        classes,
        gateway_classes,
        gateways,
        http_routes,
        policies,
        pods,
        namespaces,
    } = stores;
    let mut shutdown = std::pin::pin!(shutdown);
    // The first table waits for every list.
    tokio::select! {
        _ = async {
            let _ = services.wait_until_ready().await;
            let _ = slices.wait_until_ready().await;
            let _ = nodes.wait_until_ready().await;
            let _ = ingresses.wait_until_ready().await;
            let _ = classes.wait_until_ready().await;
            let _ = gateway_classes.wait_until_ready().await;
            let _ = gateways.wait_until_ready().await;
            let _ = http_routes.wait_until_ready().await;
            let _ = policies.wait_until_ready().await;
            let _ = pods.wait_until_ready().await;
            let _ = namespaces.wait_until_ready().await;
        } => {}
        _ = &mut shutdown => return,
    }
    let mut listeners = listen::Listeners::new(proxy.clone());
    // The addresses of this node's serving pods, looked at every
    // POD_LOOK (pods come and go without a watch event of ours) rather
    // than after every rebuild: walking thousands of pods after each of a
    // burst of rebuilds cost more than the rebuilds.
    let mut pod_addrs: HashSet<std::net::SocketAddr> = HashSet::new();
    let mut pods_looked_at: Option<(std::time::Instant, u64)> = None;
    loop {
        let started = std::time::Instant::now();
        let table = Table::build(&services.state(), &slices.state(), &nodes.state())
            .with_ingress(ingress::IngressRoutes::build(
                &ingresses.state(),
                &classes.state(),
            ))
            .with_gateway(gateway::GatewayRoutes::build(
                &gateway_classes.state(),
                &gateways.state(),
                &http_routes.state(),
                Some(proxy.table().gateway()),
            ))
            .with_netpol(netpol::Policies::build(
                &policies.state(),
                &pods.state(),
                &namespaces.state(),
            ));
        tracing::debug!(services = table.len(), "proxy table rebuilt");
        proxy.install(table);
        let cost = started.elapsed();
        if !proxy
            .is_synced
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            proxy.synced.notify_waiters();
        }
        loop {
            if proxy.config.listen {
                let table = proxy.table();
                let mut wanted: HashSet<std::net::SocketAddr> = table
                    .listen_addrs(proxy.config.node_ip)
                    .into_iter()
                    .collect();
                // The ingress port is opened only once there is an Ingress
                // to serve, so a node without any leaves port 80 alone.
                if let Some(port) = proxy.config.ingress_port
                    && !table.ingress().is_empty()
                {
                    wanted.insert(std::net::SocketAddr::from((proxy.config.node_ip, port)));
                }
                if let Some(port) = proxy.config.ingress_tls_port
                    && !table.ingress().tls().is_empty()
                {
                    wanted.insert(std::net::SocketAddr::from((proxy.config.node_ip, port)));
                }
                for (port, _) in table.gateway().ports() {
                    wanted.insert(std::net::SocketAddr::from((proxy.config.node_ip, port)));
                }
                // Read before the walk: a change during it moves the
                // epoch past this, and the next look walks again.
                let epoch = proxy.pods.serving_epoch();
                if pods_looked_at.is_none_or(|(t, seen)| seen != epoch && t.elapsed() >= POD_LOOK) {
                    pod_addrs.clear();
                    local_pod_addrs(proxy.pods.as_ref(), &mut pod_addrs);
                    pods_looked_at = Some((std::time::Instant::now(), epoch));
                }
                wanted.extend(pod_addrs.iter().copied());
                listeners.reconcile(&wanted);
            }
            tokio::select! {
                _ = changed.notified() => break,
                _ = tokio::time::sleep(POD_LOOK), if proxy.config.listen => {}
                _ = &mut shutdown => {
                    listeners.close_all();
                    return;
                }
            }
        }
        // Events keep coming while a node fills (every pod's status is
        // one): pausing at least as long as the last rebuild took keeps
        // rebuilds of a large table to half a core at most, while a small
        // one is rebuilt within milliseconds of a change.
        tokio::time::sleep(Duration::from_millis(5).max(cost)).await;
    }
}
