//! Flags of a node agent, shared by `wkube server` (its local node) and
//! `wkube agent`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::kubelet::KubeletConfig;
use crate::kubelet::precompiled::ModuleCode;

#[derive(Debug, Args, Clone)]
pub struct NodeArgs {
    /// Name of this node (default: the host name).
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,

    /// The node's address, where the API server and other nodes reach its
    /// agent endpoint.
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub node_ip: Ipv4Addr,

    /// Where the agent endpoint (logs, pod proxy) listens; port 0 picks a
    /// free one. Default: the node IP, port 10250.
    #[arg(long, value_name = "ADDR")]
    pub agent_listen: Option<SocketAddr>,

    /// CPU capacity reported for the node (`4`, `2500m`; default: the
    /// host's cores).
    #[arg(long, value_parser = parse_cpu, value_name = "QUANTITY")]
    pub cpu: Option<u64>,

    /// Memory capacity reported for the node (`8Gi`; default: the host's).
    #[arg(long, value_parser = parse_memory, value_name = "QUANTITY")]
    pub memory: Option<u64>,

    /// Most pods the node takes.
    #[arg(long, default_value_t = 1000)]
    pub max_pods: u32,

    /// Extra node labels, `key=value`.
    #[arg(long = "node-label", value_parser = parse_label, value_name = "KEY=VALUE")]
    pub node_labels: Vec<(String, String)>,

    /// First crash-loop back-off delay (doubling up to --backoff-max).
    #[arg(long, default_value = "10", value_parser = parse_seconds, value_name = "SECONDS")]
    pub backoff_initial: Duration,

    /// Longest crash-loop back-off delay.
    #[arg(long, default_value = "300", value_parser = parse_seconds, value_name = "SECONDS")]
    pub backoff_max: Duration,

    /// How often the node's Lease is renewed.
    #[arg(long, default_value = "10", value_parser = parse_seconds, value_name = "SECONDS")]
    pub lease_renew_interval: Duration,

    /// Do not listen on ClusterIPs, load-balancer addresses and NodePorts
    /// (guests' requests to services are still routed).
    #[arg(long)]
    pub no_proxy_listen: bool,

    /// Most connections the service proxy's listeners hold open at once.
    #[arg(long, default_value_t = 4096, value_name = "N")]
    pub proxy_max_connections: usize,

    /// The port Ingresses of the `wkube` class are served on, on the
    /// node's address (opened once an Ingress exists); 0 serves none.
    #[arg(long, default_value_t = 80, value_name = "PORT")]
    pub ingress_port: u16,

    /// The port Ingresses with `spec.tls` are served on with TLS, on the
    /// node's address; 0 serves none.
    #[arg(long, default_value_t = 443, value_name = "PORT")]
    pub ingress_tls_port: u16,

    /// Most requests the service proxy holds per Service while waking a
    /// workload scaled to zero; more get 503 with Retry-After.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub activation_queue: usize,

    /// Longest the service proxy holds a request while waking a workload
    /// scaled to zero; then 503 with Retry-After.
    #[arg(long, default_value = "10s", value_parser = crate::cli::parse_duration, value_name = "DURATION")]
    pub activation_timeout: Duration,

    /// How guests' memories reserve address space: `auto` reserves a pool
    /// for all instances up front when the host allows it (else on demand);
    /// `small` reserves only what each memory uses, for a host where
    /// reserving costs memory (an emulated machine) at some guest speed.
    #[arg(long, value_enum, default_value_t = WasmMemory::Auto, value_name = "MODE")]
    pub wasm_memory: WasmMemory,

    /// Do not count containers' CPU time and memory (`kubectl top` and
    /// autoscaling on CPU or memory then have nothing to read); for
    /// measuring what the counting costs.
    #[arg(long)]
    pub no_pod_accounting: bool,

    /// Where modules' native code comes from: `auto` takes the code the
    /// API server compiled once for this node's architecture and engine
    /// (compiling here when it cannot provide it), `precompiled` only that
    /// (what a build without the compiler does), `local` always compiles
    /// here. Precompiled code is taken over TLS only.
    #[arg(long, value_enum, default_value_t = ModuleCode::Auto, value_name = "FROM")]
    pub module_code: ModuleCode,
}

/// The choices of `--wasm-memory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WasmMemory {
    /// The instance pool when the host can reserve it, else on demand.
    Auto,
    /// On demand, with wasmtime's usual reservation per memory.
    OnDemand,
    /// On demand, each memory reserving only what it uses.
    Small,
}

impl From<WasmMemory> for crate::runtime::PoolingMode {
    fn from(m: WasmMemory) -> Self {
        match m {
            WasmMemory::Auto => Self::Auto,
            WasmMemory::OnDemand => Self::Never,
            WasmMemory::Small => Self::Small,
        }
    }
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: expected a number of seconds"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("{s:?}: expected a non-negative number of seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn parse_cpu(s: &str) -> Result<u64, String> {
    crate::resources::quantity::parse(s)
        .filter(|q| q.milli() > 0)
        .map(|q| q.milli() as u64)
        .ok_or_else(|| format!("{s:?}: expected a CPU quantity such as 4 or 2500m"))
}

fn parse_memory(s: &str) -> Result<u64, String> {
    crate::resources::quantity::parse(s)
        .filter(|q| q.ceil_units() > 0)
        .map(|q| q.ceil_units() as u64)
        .ok_or_else(|| format!("{s:?}: expected a memory quantity such as 8Gi"))
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))
}

impl NodeArgs {
    /// The kubelet configuration, keeping state in `data_dir`.
    pub fn into_config(self, data_dir: PathBuf) -> KubeletConfig {
        let mut cfg = KubeletConfig::new(
            self.node_name.unwrap_or_else(crate::cluster::host_name),
            data_dir,
        );
        cfg.node_ip = self.node_ip;
        cfg.listen = self
            .agent_listen
            .unwrap_or(SocketAddr::from((self.node_ip, 10250)));
        if let Some(cpu) = self.cpu {
            cfg.cpu_millis = cpu;
        }
        if let Some(m) = self.memory {
            cfg.memory_bytes = m;
        }
        cfg.max_pods = self.max_pods;
        cfg.labels = self.node_labels;
        cfg.backoff_initial = self.backoff_initial;
        cfg.backoff_max = self.backoff_max.max(self.backoff_initial);
        cfg.lease_renew = self.lease_renew_interval.max(Duration::from_millis(100));
        cfg.proxy_listen = !self.no_proxy_listen;
        cfg.proxy_max_connections = self.proxy_max_connections.max(1);
        cfg.proxy_ingress_port = (self.ingress_port != 0).then_some(self.ingress_port);
        cfg.proxy_ingress_tls_port = (self.ingress_tls_port != 0).then_some(self.ingress_tls_port);
        cfg.accounting = !self.no_pod_accounting;
        cfg.runtime.pooling = self.wasm_memory.into();
        cfg.module_code = self.module_code;
        cfg.runtime.compile = self.module_code != ModuleCode::Precompiled;
        cfg.proxy_activation = crate::proxy::activate::ActivationLimits {
            queue: self.activation_queue,
            timeout: self.activation_timeout,
        };
        cfg
    }
}

/// `wkube agent`: one more node of a cluster.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The API server, e.g. https://10.0.0.1:6443; with a highly available
    /// control plane, every server, comma-separated: requests fail over
    /// between them.
    #[arg(long, value_name = "URLS", value_delimiter = ',', required = true)]
    pub server: Vec<String>,

    /// The join token the server wrote to DATA/join-token (needed for the
    /// first start only; the node credential is kept in DATA/agent).
    #[arg(long, env = "WKUBE_JOIN_TOKEN", value_name = "TOKEN")]
    pub token: Option<String>,

    /// The cluster's service range (the server's --service-cidr), which
    /// this node's proxy routes.
    #[arg(long, default_value = crate::cluster::DEFAULT_SERVICE_CIDR, value_parser = super::parse_cidr, value_name = "CIDR")]
    pub service_cidr: crate::cluster::Cidr,

    /// The cluster's pod range (the server's --cluster-cidr).
    #[arg(long, default_value = crate::cluster::DEFAULT_CLUSTER_CIDR, value_parser = super::parse_cidr, value_name = "CIDR")]
    pub cluster_cidr: crate::cluster::Cidr,

    /// The API servers and other nodes cannot reach this node (it is
    /// behind NAT or a firewall that only lets connections out): keep a
    /// connection open to every API server and take the control plane's
    /// requests (logs, proxy, usage) and other nodes' pod traffic through
    /// it.
    #[arg(long)]
    pub behind_nat: bool,

    #[command(flatten)]
    pub node: NodeArgs,
}

/// Why an agent could not join or start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "this node has no credential yet: pass --token with the join token the server wrote to DATA/join-token"
    )]
    NoToken,
    #[error("--server names no API server")]
    NoServer,
    #[error("the join token is malformed: expected K10<hash>::<id>.<secret>")]
    BadToken,
    #[error("cannot reach the server at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error(
        "the server's CA does not match the join token (hash {actual}); refusing to trust it — is --server the right cluster?"
    )]
    CaMismatch { actual: String },
    #[error(
        "--module-code precompiled needs an https:// server: native code is never taken over plain HTTP"
    )]
    PrecompiledWithoutTls,
    #[error("the server refused to join this node: {0}")]
    Refused(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    #[error(transparent)]
    Kubelet(#[from] crate::kubelet::KubeletError),
    #[error("the node's checkpoint: {0}")]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
}

/// What a joined node keeps in `DATA/agent/credentials.json`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    server: String,
    node_name: String,
    #[serde(flatten)]
    creds: crate::client::join::JoinResponse,
}

/// Joins (first start) or reloads the node credential, then runs the
/// kubelet until `shutdown`.
///
/// # Errors
/// See [`AgentError`].
pub async fn run(
    args: AgentArgs,
    data_dir: PathBuf,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let servers: Vec<String> = args
        .server
        .iter()
        .map(|s| s.trim().trim_end_matches('/').to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let mut cfg = args.node.clone().into_config(data_dir.join("kubelet"));
    cfg.service_cidr = args.service_cidr;
    cfg.cluster_cidr = args.cluster_cidr;
    let path = data_dir.join("agent").join("credentials.json");
    let stored: Option<Stored> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|s: &Stored| servers.contains(&s.server) && s.node_name == cfg.node_name);
    let stored = match stored {
        Some(s) => s,
        None => {
            let token = args.token.as_deref().ok_or(AgentError::NoToken)?;
            // Any server of the cluster can join the node: the first that
            // answers does.
            let mut joined = None;
            let mut last_err = AgentError::NoServer;
            for server in &servers {
                match join(server, token, &cfg.node_name, cfg.node_ip).await {
                    Ok(creds) => {
                        joined = Some((server.clone(), creds));
                        break;
                    }
                    Err(e @ AgentError::Unreachable { .. }) => last_err = e,
                    Err(e) => return Err(e),
                }
            }
            let (server, creds) = joined.ok_or(last_err)?;
            let s = Stored {
                server: server.clone(),
                node_name: cfg.node_name.clone(),
                creds,
            };
            let io = |source| AgentError::Io {
                path: path.clone(),
                source,
            };
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let bytes = serde_json::to_vec_pretty(&s).unwrap_or_default();
            crate::pki::write_private_file(&path, &bytes).map_err(io)?;
            println!("node {} joined {server}", cfg.node_name);
            s
        }
    };
    let tls = stored.server.starts_with("https://");
    if !tls {
        // Native code is not sandboxed: only a server authenticated by the
        // cluster CA may supply it.
        match cfg.module_code {
            ModuleCode::Precompiled => return Err(AgentError::PrecompiledWithoutTls),
            ModuleCode::Auto if cfg!(not(feature = "compiler")) => {
                return Err(AgentError::PrecompiledWithoutTls);
            }
            ModuleCode::Auto => {
                tracing::warn!(
                    "the API server is plain HTTP: compiling modules here, never taking its native code"
                );
                cfg.module_code = ModuleCode::Local;
            }
            ModuleCode::Local => {}
        }
    }
    let credential = if tls {
        crate::client::Credential::ClientCert {
            cert_pem: stored.creds.client_cert.clone(),
            key_pem: stored.creds.client_key.clone(),
        }
    } else {
        crate::client::Credential::Token(stored.creds.token.clone())
    };
    let ca = stored.creds.ca_cert.clone();
    if args.behind_nat {
        cfg.tunnel = Some(crate::kubelet::tunnel::TunnelConfig {
            servers: servers.clone(),
            tls: tls.then(|| crate::pki::ClientTls {
                cert_pem: stored.creds.client_cert.clone(),
                key_pem: stored.creds.client_key.clone(),
                ca_pem: ca.clone(),
            }),
            token: (!tls).then(|| stored.creds.token.clone()),
        });
    }
    let mut clients = Vec::new();
    for server in &servers {
        clients.push(crate::client::build(&crate::client::ClientConfig {
            server: server.clone(),
            ca_pem: tls.then(|| ca.clone()),
            credential: credential.clone(),
            connect_timeout: Duration::from_secs(5),
        })?);
    }
    let client = crate::client::failover::client(clients);
    // What the node needs to restart its pods and routes without the API
    // server, sealed with a key of its own beside its credentials.
    let checkpoint = crate::checkpoint::Checkpoint::open(
        &data_dir.join("kubelet").join("checkpoint"),
        &data_dir.join("agent").join("checkpoint.key"),
    )?;
    let remembering = crate::client::offline::Remembering::new(client, Some(&checkpoint));
    let client = remembering.clone().client();
    cfg.checkpoint = Some(checkpoint.clone());
    let stop = crate::shutdown::Stop::new(shutdown);
    let keeper = tokio::spawn(remembering.keep(checkpoint, stop.wait()));
    let agent_tls = tls.then(|| crate::kubelet::AgentTls {
        cert_pem: stored.creds.serving_cert.clone(),
        key_pem: stored.creds.serving_key.clone(),
        ca_pem: ca.clone(),
        client_cert_pem: stored.creds.client_cert.clone(),
        client_key_pem: stored.creds.client_key.clone(),
    });
    let result = crate::node::run(cfg, client, Some(ca), agent_tls, stop.wait()).await;
    if result.is_err() {
        keeper.abort();
    }
    let _ = keeper.await;
    result?;
    Ok(())
}

/// The join exchange: fetch the CA, check it against the token's hash,
/// then trade the token for a node credential over TLS checked against it.
async fn join(
    server: &str,
    token: &str,
    node_name: &str,
    node_ip: Ipv4Addr,
) -> Result<crate::client::join::JoinResponse, AgentError> {
    use crate::client::join::{CACERTS_ROUTE, JOIN_ROUTE, ca_hash, parse_token};
    let (hash, secret) = parse_token(token).ok_or(AgentError::BadToken)?;
    let unreachable = |e: &dyn std::fmt::Display| AgentError::Unreachable {
        url: server.to_string(),
        message: e.to_string(),
    };
    let uri: hyper::Uri = server.parse().map_err(|e| unreachable(&e))?;
    // The CA is public; it is trusted only once it matches the token.
    let mut bootstrap = kube::Config::new(uri.clone());
    bootstrap.accept_invalid_certs = true;
    bootstrap.connect_timeout = Some(Duration::from_secs(5));
    let client = kube::Client::try_from(bootstrap).map_err(|e| unreachable(&e))?;
    let req = hyper::Request::get(CACERTS_ROUTE)
        .body(Vec::new())
        .map_err(|e| unreachable(&e))?;
    let ca = client
        .request_text(req)
        .await
        .map_err(|e| unreachable(&e))?;
    let actual = ca_hash(&ca);
    if actual != hash.to_ascii_lowercase() {
        return Err(AgentError::CaMismatch { actual });
    }
    let client = crate::client::build(&crate::client::ClientConfig {
        server: server.to_string(),
        ca_pem: Some(ca),
        // The join request carries its own secret; no user credential yet.
        credential: crate::client::Credential::None,
        connect_timeout: Duration::from_secs(5),
    })?;
    let body = crate::client::join::JoinRequest {
        token: secret.to_string(),
        node_name: node_name.to_string(),
        node_ip: node_ip.into(),
    };
    let req = hyper::Request::post(JOIN_ROUTE)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&body).unwrap_or_default())
        .map_err(|e| unreachable(&e))?;
    client
        .request::<crate::client::join::JoinResponse>(req)
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) => AgentError::Refused(s.message),
            other => unreachable(&other),
        })
}
