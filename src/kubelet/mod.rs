//! The kubelet: wkube's node agent. It registers its Node, renews the
//! node's Lease, watches the pods bound to it and runs each one with the
//! Wasm runtime, reporting status as Kubernetes does.
//!
//! - [`node`]: Node registration, node status and the Lease heartbeat.
//! - [`manager`]: the pod manager — the watch on bound pods, one worker per pod.
//! - [`worker`]: a pod's lifecycle as an explicit state machine
//!   (fetch modules → init containers → running → succeeded/failed, with
//!   back-off, graceful termination).
//! - [`container`]: one container's run loop (an HTTP service or a command)
//!   with restart policy, back-off and probes.
//! - [`spec`]: what a pod sees, built from its spec (args, env, volumes,
//!   the service-account mount, outbound policy, limits).
//! - [`modules`]: module blobs fetched by digest from the API server,
//!   verified and cached on disk.
//! - [`pods`]: the pods this kubelet runs — each one's handle (record,
//!   serving HTTP containers) and the table the agent endpoint and the
//!   proxy reach them through.
//! - [`status`]: the PodStatus a worker reports, from the records it keeps
//!   (container states, the pod's phase, its restart policy).
//! - [`ipam`]: pod IPs from the node's `podCIDR`.
//! - [`logs`]: per-container log files, rotated and bounded.
//! - [`events`]: Events about pods, for `kubectl describe`.
//! - [`server`]: the agent's authenticated HTTPS endpoint (logs, pod proxy).
//! - [`tunnel`]: the same routes over connections the agent opens itself,
//!   for a node the control plane cannot dial (behind NAT).
//!
//! Data directory (`DATA/kubelet` by default):
//!
//! ```text
//! modules/<hex>.wasm          verified module blobs
//! compiled/                   the runtime's compiled-artifact cache
//! pods/<uid>/logs/<container>/<restart>.log
//! pods/<uid>/volumes/<name>/  emptyDir volumes
//! checkpoint/*.sealed         an agent's pods, remembered answers and
//!                             proxy caches, for restarts while offline
//! ```
//!
//! In memory ([`volatile`]: `/dev/shm/wkube-<hash>`, mode 0700; under
//! `pods/` above when there is no `/dev/shm`):
//!
//! ```text
//! <uid>/volumes/<name>/       configMap and secret volumes
//! <uid>/serviceaccount/       token, ca.crt, namespace
//! ```

pub mod container;
pub mod gates;
pub mod ipam;
pub mod logs;
pub mod manager;
pub mod modules;
pub mod node;
pub mod pods;
pub mod precompiled;
pub mod recent;
pub mod server;
pub mod spec;
pub mod status;
pub mod tunnel;
pub mod usage;
pub mod volatile;
pub mod worker;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::runtime::{Runtime, RuntimeConfig, RuntimeError};

/// Everything a kubelet needs to run.
#[derive(Clone, Debug)]
pub struct KubeletConfig {
    pub node_name: String,
    /// The node's address (`InternalIP`), where its agent endpoint listens.
    pub node_ip: Ipv4Addr,
    /// Capacity reported on the Node; allocatable is the same (nothing is
    /// reserved for the system: the runtime's own use is small).
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub max_pods: u32,
    /// Extra labels for the Node.
    pub labels: Vec<(String, String)>,
    /// How often the node's Lease is renewed.
    pub lease_renew: Duration,
    /// `leaseDurationSeconds` of the Lease.
    pub lease_duration: Duration,
    /// How often the Node's status is re-sent when nothing changed.
    pub node_status_period: Duration,
    /// Crash-loop back-off: first delay and cap (doubling in between).
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Where the kubelet keeps modules, logs and volumes.
    pub data_dir: PathBuf,
    /// The agent endpoint's listen address (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Log files: size of one file and files kept per container run.
    pub log_max_file_bytes: u64,
    pub log_max_files: u32,
    /// The runtime configuration (the cache dir is set under `data_dir`).
    pub runtime: RuntimeConfig,
    /// Bound on concurrent requests the agent endpoint serves.
    pub max_connections: usize,
    /// The service proxy: address ranges and whether it listens on
    /// service addresses and NodePorts.
    pub service_cidr: crate::cluster::Cidr,
    pub cluster_cidr: crate::cluster::Cidr,
    pub proxy_listen: bool,
    /// Connections the proxy's listeners hold open at once.
    pub proxy_max_connections: usize,
    /// Where the proxy serves Ingresses on the node's address (none: not).
    pub proxy_ingress_port: Option<u16>,
    /// Where the proxy serves Ingresses with TLS (none: not).
    pub proxy_ingress_tls_port: Option<u16>,
    /// Bounds on requests the proxy holds for a Service at zero.
    pub proxy_activation: crate::proxy::activate::ActivationLimits,
    /// Whether containers' CPU time and memory are counted (for `kubectl
    /// top` and the autoscaler); off only to measure what counting costs.
    pub accounting: bool,
    /// Where compiled code comes from (the runtime's `compile` follows it).
    pub module_code: precompiled::ModuleCode,
    /// Where an agent saves what it needs to restart without the API
    /// server (none for the server's own node, whose API is in-process).
    pub checkpoint: Option<crate::checkpoint::Checkpoint>,
    /// For a node behind NAT: the tunnels it keeps open to the API
    /// servers (none: the control plane dials its endpoint).
    pub tunnel: Option<tunnel::TunnelConfig>,
}

impl KubeletConfig {
    /// Defaults for a node named `node_name` keeping its state in `data_dir`.
    pub fn new(node_name: impl Into<String>, data_dir: PathBuf) -> KubeletConfig {
        let runtime = RuntimeConfig {
            cache_dir: data_dir.join("compiled"),
            ..RuntimeConfig::default()
        };
        KubeletConfig {
            node_name: node_name.into(),
            node_ip: Ipv4Addr::LOCALHOST,
            cpu_millis: std::thread::available_parallelism().map_or(1, |n| n.get()) as u64 * 1000,
            memory_bytes: host_memory_bytes().unwrap_or(1 << 30),
            max_pods: 1000,
            labels: Vec::new(),
            lease_renew: Duration::from_secs(10),
            lease_duration: Duration::from_secs(40),
            node_status_period: Duration::from_secs(60),
            backoff_initial: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            data_dir,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 10250)),
            log_max_file_bytes: 10 << 20,
            log_max_files: 5,
            runtime,
            max_connections: 1024,
            service_cidr: crate::proxy::Ranges::default().service_cidr,
            cluster_cidr: crate::proxy::Ranges::default().cluster_cidr,
            proxy_listen: true,
            proxy_max_connections: 4096,
            proxy_ingress_port: Some(80),
            proxy_ingress_tls_port: Some(443),
            proxy_activation: crate::proxy::activate::ActivationLimits::default(),
            accounting: true,
            module_code: precompiled::ModuleCode::Auto,
            checkpoint: None,
            tunnel: None,
        }
    }
}

/// TLS of the agent endpoint: its serving certificate (signed by the
/// cluster CA, with the node IP as a SAN) and the CA callers' client
/// certificates must chain to.
#[derive(Clone)]
pub struct AgentTls {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
    /// The node's client certificate and key (`system:node:NAME`), which
    /// its proxy presents to other nodes' agents.
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

impl std::fmt::Debug for AgentTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentTls(<redacted>)")
    }
}

/// Why the kubelet could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("cannot create {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the Wasm runtime: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("cannot listen on {addr} for the agent endpoint: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("agent endpoint TLS: {0}")]
    Tls(String),
    #[error(
        "--module-code local needs a build with the compiler (cargo feature `compiler`); this one runs only precompiled code"
    )]
    NoCompiler,
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
}

/// What every part of the kubelet shares.
pub struct Shared {
    pub config: KubeletConfig,
    pub client: kube::Client,
    pub runtime: Arc<Runtime>,
    pub logs: logs::LogStore,
    pub modules: modules::ModuleStore,
    /// The cluster CA (for the service-account mount's `ca.crt`).
    pub ca_pem: Option<String>,
    /// Pods this kubelet runs, for the agent endpoint and the proxy.
    pub pods: Arc<pods::PodTable>,
    /// The node's service proxy.
    pub proxy: Arc<crate::proxy::Proxy>,
    pub events: crate::events::Recorder,
    /// Recent samples of the usage counters, for rates.
    pub usage: usage::Sampler,
    /// ServiceAccounts' automount settings read in the last second.
    pub automount: recent::Recent<bool>,
    /// Where pods' tokens, Secrets and ConfigMaps are written (in memory).
    pub volatile: volatile::VolatileRoot,
    /// One load of a module's code at a time per digest, its outcome
    /// shared.
    pub loads: gates::Flights<Result<Arc<crate::runtime::LoadedModule>, worker::Failure>>,
}

impl Shared {
    /// `DATA/kubelet/pods/<uid>`.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.config.data_dir.join("pods").join(uid)
    }

    /// Where pod `uid`'s secret-bearing volumes are written (see
    /// [`volatile`]).
    pub fn pod_secrets_dir(&self, uid: &str) -> PathBuf {
        self.volatile.pod_dir(uid)
    }
}

/// What the node composition hands the kubelet: the parts of the node it
/// shares with the other components there.
pub struct NodeParts {
    pub runtime: Arc<Runtime>,
    /// The pods the kubelet runs, which the proxy reaches through
    /// [`crate::proxy::LocalPods`].
    pub pods: Arc<pods::PodTable>,
    pub proxy: Arc<crate::proxy::Proxy>,
}

/// Creates the kubelet's data directories and binds its endpoint: the
/// steps that can fail before anything runs.
///
/// # Errors
/// When a directory cannot be created or the address is taken.
pub async fn prepare(config: &KubeletConfig) -> Result<tokio::net::TcpListener, KubeletError> {
    for sub in ["modules", "pods", "compiled"] {
        let path = config.data_dir.join(sub);
        std::fs::create_dir_all(&path).map_err(|source| KubeletError::DataDir {
            path: path.clone(),
            source,
        })?;
    }
    crate::accept::bind(config.listen).map_err(|source| KubeletError::Bind {
        addr: config.listen,
        source,
    })
}

/// Runs the kubelet until `shutdown` resolves: the agent endpoint on
/// `listener`, the Node and Lease loops and the pod manager. Running pods
/// are left as they are on shutdown (their status stays Running), so a
/// restarted kubelet takes them back.
///
/// # Errors
/// When the listener or its TLS cannot be set up.
pub async fn run(
    config: KubeletConfig,
    listener: tokio::net::TcpListener,
    parts: NodeParts,
    client: kube::Client,
    ca_pem: Option<String>,
    tls: Option<AgentTls>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), KubeletError> {
    let port = listener
        .local_addr()
        .map_err(|source| KubeletError::Bind {
            addr: config.listen,
            source,
        })?
        .port();
    let shared = Arc::new(Shared {
        logs: logs::LogStore::new(logs::LogLimits {
            max_file_bytes: config.log_max_file_bytes,
            max_files: config.log_max_files,
            ..logs::LogLimits::default()
        }),
        modules: modules::ModuleStore::new(config.data_dir.join("modules"), client.clone()),
        runtime: parts.runtime,
        events: crate::events::Recorder::start(
            client.clone(),
            "kubelet",
            Some(config.node_name.clone()),
        ),
        client,
        ca_pem,
        pods: parts.pods,
        proxy: parts.proxy,
        usage: usage::Sampler::default(),
        automount: spec::automount_cache(),
        volatile: volatile::VolatileRoot::open(&config.data_dir),
        loads: gates::Flights::default(),
        config,
    });
    tracing::info!(
        node = %shared.config.node_name,
        pooling = shared.runtime.pooling(),
        port,
        "kubelet starting"
    );

    let stop = crate::shutdown::Stop::new(shutdown);

    let server_tls = match tls {
        Some(t) => Some(server::tls_config(&t).map_err(KubeletError::Tls)?),
        None => None,
    };
    let endpoint = tokio::spawn(server::serve(
        shared.clone(),
        listener,
        server_tls,
        stop.wait(),
    ));
    let tunnels = shared.config.tunnel.clone().map(|t| {
        let (shared, stopped) = (shared.clone(), stop.wait());
        tokio::spawn(async move {
            if let Err(e) = tunnel::run(shared, t, stopped).await {
                tracing::error!(error = %e, "no tunnel to the API server: this node behind NAT cannot be reached");
            }
        })
    });
    let node = node::NodeAgent::new(shared.clone(), port);
    let checkpoint = shared.config.checkpoint.clone();
    let saved = checkpoint
        .as_ref()
        .and_then(|c| c.read::<manager::Saved>(manager::CHECKPOINT));
    let (pod_cidr, saved_pods, heartbeat) = match saved {
        // A node that ran before knows its podCIDR and its pods: it need
        // not wait for the API server, which may be out of reach.
        Some(saved) => {
            let (registered, heartbeat) = (stop.wait(), stop.wait());
            let heartbeat = tokio::spawn(async move {
                node.register(registered).await;
                node.run(heartbeat).await;
            });
            (saved.pod_cidr, saved.pods, heartbeat)
        }
        // Otherwise the Node must exist (with its podCIDR) before pods are
        // taken on.
        None => {
            let pod_cidr = node.register(stop.wait()).await;
            (pod_cidr, Vec::new(), tokio::spawn(node.run(stop.wait())))
        }
    };
    let sampler = tokio::spawn(usage::run(shared.clone(), stop.wait()));
    let running = manager::Running::default();
    let keeper = checkpoint.map(|c| {
        let (r, cidr) = (running.clone(), pod_cidr.clone());
        tokio::spawn(c.keep(
            manager::CHECKPOINT,
            move || r.snapshot(cidr.clone()),
            running.changed.clone(),
            stop.wait(),
        ))
    });
    let manager = manager::PodManager::new(shared.clone(), pod_cidr, running, saved_pods);
    manager.run(stop.wait()).await;
    let _ = heartbeat.await;
    let _ = sampler.await;
    if let Some(k) = keeper {
        let _ = k.await;
    }
    let _ = endpoint.await;
    if let Some(t) = tunnels {
        let _ = t.await;
    }
    tracing::info!(node = %shared.config.node_name, "kubelet stopped");
    Ok(())
}

/// Runs a short filesystem step (creating a pod's files, opening a log,
/// removing a pod's directory) on the blocking pool, so the async workers,
/// which the API server shares, never wait on the disk.
///
/// At most [`FS_STEPS`] run at once. A burst of pod starts would otherwise
/// start a blocking thread per pod, and each thread keeps allocator pages
/// of its own after it is done (16 creators filling a node left 26 extra
/// threads behind).
pub(crate) async fn off_workers<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    static STEPS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(FS_STEPS);
    // The semaphore is never closed, so acquiring cannot fail; a failure
    // would only mean running without the bound.
    let _permit = STEPS.acquire().await.ok();
    tokio::task::spawn_blocking(f).await
}

/// Filesystem steps of pods run at once (see [`off_workers`]).
const FS_STEPS: usize = 4;

/// Total memory of the host from /proc/meminfo.
fn host_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
