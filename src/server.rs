//! `wkube server`: opens the store under the data directory, sets up the
//! cluster PKI, and serves the Kubernetes API and the etcd v3 API until
//! asked to stop.
//!
//! Data directory layout (everything the server owns):
//!
//! ```text
//! DATA/server.lock     held (flock) while a server runs: one server per data dir
//! DATA/store.redb      the embedded store
//! DATA/store.redb.wal  its write-ahead log (the writes redb does not hold yet)
//! DATA/etcd.endpoint   URL of the etcd v3 API of the running server
//! DATA/api.endpoint    URL of the Kubernetes API of the running server
//! DATA/admin.kubeconfig  kubeconfig of the cluster admin (group system:masters)
//! DATA/leader-identity   this server's holderIdentity in leader-election Leases
//! DATA/server-token   with --etcd-servers: the token the servers of the cluster share
//! DATA/pki/            ca.crt ca.key etcd-server.{crt,key} etcd-client.{crt,key}
//!                      apiserver.{crt,key} sa.key (token signing key)
//!                      apiserver-kubelet-client.{crt,key} (towards agents)
//! ```

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::pki::{ClusterPki, PkiError, bootstrap};
use crate::store::grpc::{self, GrpcError, Limits, Member};
use crate::store::redb::{RedbOptions, RedbStore};
use crate::store::{Store, StoreError};

/// File names under the data directory.
pub const STORE_FILE: &str = "store.redb";
/// Holds the URL clients use to reach the etcd v3 API.
pub const ENDPOINT_FILE: &str = "etcd.endpoint";
/// Locked while a server uses the data directory.
pub const LOCK_FILE: &str = "server.lock";
/// Folder of the cluster certificates.
pub const PKI_DIR: &str = "pki";
/// Holds the URL of the Kubernetes API.
pub const API_ENDPOINT_FILE: &str = "api.endpoint";
/// The admin kubeconfig.
pub const ADMIN_KUBECONFIG: &str = "admin.kubeconfig";
/// How long the admin kubeconfig's token lives; it is renewed on a start
/// within 30 days of expiry.
const ADMIN_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// Which backend holds the cluster state.
#[derive(Clone, Debug)]
pub enum StoreSpec {
    /// Embedded redb under the data directory.
    Redb,
    /// An external etcd v3 cluster (`--etcd-servers`).
    Etcd(crate::store::etcd::EtcdConfig),
}

/// Transport security of the etcd v3 endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS with certificates from DATA/pki (created on first start); clients
    /// must present a certificate signed by the cluster CA.
    Auto,
    /// Plaintext; only for local tests.
    Off,
}

/// Everything `wkube server` needs to start.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// State, certificates and the endpoint file live here.
    pub data_dir: PathBuf,
    /// Where the etcd v3 API listens; port 0 picks a free one.
    pub etcd_listen: SocketAddr,
    /// Where the Kubernetes API listens; port 0 picks a free one.
    pub listen: SocketAddr,
    /// The address in-cluster clients and other nodes reach the API at.
    pub advertise_address: Option<Ipv4Addr>,
    /// API server settings (service range, limits).
    pub api: crate::api::ApiConfig,
    pub tls: TlsMode,
    /// Extra names for the serving certificate.
    pub tls_sans: Vec<String>,
    pub store: StoreSpec,
    /// The token servers of one cluster share (`--token`); with an external
    /// store, generated on the first server when not given.
    pub server_token: Option<String>,
    /// How often old revisions are compacted; `None` never.
    pub compaction_interval: Option<std::time::Duration>,
    /// Bounds on what one etcd client may ask for.
    pub limits: Limits,
    /// Name reported by the Cluster API (`etcdctl member list`).
    pub member_name: String,
    /// The local node's kubelet; `None` with `--no-agent`.
    pub agent: Option<crate::kubelet::KubeletConfig>,
    /// Run the controller manager (off with `--no-controllers`).
    pub controllers: bool,
    /// The scheduler; `None` with `--no-scheduler`.
    pub scheduler: Option<crate::scheduler::SchedulerConfig>,
    /// Lease timing for the controller manager, cloud controllers and
    /// scheduler; `None` with `--leader-elect=false` (each runs at once).
    pub leader_election: Option<crate::controllers::leader::LeaderElectionConfig>,
    /// Timing of the node lifecycle controller.
    pub node_lifecycle: crate::controllers::nodelifecycle::NodeLifecycleConfig,
    /// Timing of the HorizontalPodAutoscaler controller.
    pub autoscaler: crate::controllers::podautoscaler::AutoscalerConfig,
    /// The cloud controller manager (run with the controllers).
    pub cloud: crate::cloud::CloudConfig,
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot set up node joining")]
    Join(#[from] crate::api::join::JoinError),
    #[error("cannot set up the local node agent: {message}")]
    Agent { message: String },
    #[error("cannot create data directory {path}")]
    CreateDataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "another wkube server is already running with data directory {data_dir}{holder} \
         (only one server may use a data directory; stop it or pass another --data-dir)"
    )]
    AlreadyRunning { data_dir: PathBuf, holder: String },
    #[error("cannot open the store {path}")]
    OpenStore {
        path: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("cannot use the etcd cluster")]
    Etcd(#[from] crate::store::etcd::EtcdSetupError),
    #[error("cannot share the cluster's secrets with the other servers")]
    Bootstrap(#[from] bootstrap::BootstrapError),
    #[error("cannot set up the cluster certificates in {path}")]
    Pki {
        path: PathBuf,
        #[source]
        source: PkiError,
    },
    #[error("cannot listen on {addr} for the etcd v3 API")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    WriteEndpoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("etcd v3 API failed")]
    Grpc(#[from] GrpcError),
    #[error("cannot listen on {addr} for the Kubernetes API")]
    BindApi {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the API server")]
    Api(#[from] crate::api::StartError),
    #[error("API server failed")]
    ApiServe(#[from] crate::api::serve::ServeError),
    #[error("cannot write the admin kubeconfig {path}: {message}")]
    Kubeconfig { path: PathBuf, message: String },
}

/// Runs the server until `shutdown` resolves, then drains in-flight requests
/// and returns.
///
/// # Errors
/// Any failure to set up the data directory, store, certificates or
/// listener, and a fatal error of the etcd endpoint.
pub async fn run(
    cfg: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let data_dir = cfg.data_dir.clone();
    create_private_dir(&data_dir).map_err(|source| ServerError::CreateDataDir {
        path: data_dir.clone(),
        source,
    })?;
    // Held until `run` returns; the OS drops the lock if the process dies.
    let _lock = lock_data_dir(&data_dir)?;

    let store: Store = match &cfg.store {
        StoreSpec::Redb => {
            let path = data_dir.join(STORE_FILE);
            RedbStore::open(&path, RedbOptions::default())
                .map_err(|source| ServerError::OpenStore { path, source })?
        }
        StoreSpec::Etcd(etcd) => {
            tracing::info!(servers = ?etcd.servers, prefix = %etcd.prefix, "store: external etcd");
            let etcd = crate::store::etcd::EtcdStore::connect(etcd).await?;
            // Watchers share one etcd watch, as kube-apiserver's watch
            // cache does.
            crate::store::watchcache::WatchCache::start(
                etcd,
                crate::store::watchcache::DEFAULT_WINDOW,
            )
            .await
            .map_err(|source| ServerError::OpenStore {
                path: PathBuf::from("etcd"),
                source,
            })?
        }
    };

    // The PKI exists even with TLS off: it holds the token signing key.
    let pki_err = |source| ServerError::Pki {
        path: data_dir.join(PKI_DIR),
        source,
    };
    let mut sans = cfg.tls_sans.clone();
    if !cfg.etcd_listen.ip().is_unspecified() {
        sans.push(cfg.etcd_listen.ip().to_string());
    }
    if let Some(ip) = cfg.advertise_address {
        sans.push(ip.to_string());
    }
    // On a shared store, every server must issue and accept the same
    // credentials: agree on the CAs and keys before loading them.
    let server_token = match &cfg.store {
        StoreSpec::Redb => None,
        StoreSpec::Etcd(_) => {
            let token = bootstrap::server_token(&data_dir, cfg.server_token.as_deref())?;
            let outcome = bootstrap::share(store.as_ref(), &data_dir, &token, || {
                ClusterPki::load_or_create(&data_dir, &sans).map_err(|e| e.to_string())?;
                let pki_dir = data_dir.join(PKI_DIR);
                crate::api::authn::TokenAuthority::load_or_create(&pki_dir)
                    .map_err(|e| e.to_string())?;
                crate::api::encryption::Keyring::load_or_create(&pki_dir)
                    .map_err(|e| e.to_string())?;
                Ok(())
            })
            .await?;
            tracing::info!(?outcome, "cluster secrets shared through the store");
            Some(data_dir.join(bootstrap::SERVER_TOKEN_FILE))
        }
    };
    let pki = ClusterPki::load_or_create(&data_dir, &sans).map_err(pki_err)?;
    let tls = match cfg.tls {
        TlsMode::Off => None,
        TlsMode::Auto => Some((pki.etcd_server_tls().map_err(pki_err)?, &pki)),
    };
    let api_tls = match cfg.tls {
        TlsMode::Off => None,
        TlsMode::Auto => {
            let mut api_sans = cfg.tls_sans.clone();
            if !cfg.listen.ip().is_unspecified() {
                api_sans.push(cfg.listen.ip().to_string());
            }
            if let Some(ip) = cfg.advertise_address {
                api_sans.push(ip.to_string());
            }
            // The `kubernetes` service address, for in-cluster clients.
            api_sans.push(cfg.api.service_cidr.nth(1).to_string());
            let t = pki.api_server_tls(&api_sans).map_err(pki_err)?;
            let ca = t.client_ca_pem.clone().unwrap_or_default();
            Some(crate::api::serve::tls_config(&t.cert_pem, &t.key_pem, &ca)?)
        }
    };

    let listener = crate::accept::bind(cfg.etcd_listen).map_err(|source| ServerError::Bind {
        addr: cfg.etcd_listen,
        source,
    })?;
    let local = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: cfg.etcd_listen,
        source,
    })?;
    let url = endpoint_url(local, tls.is_some());
    let endpoint_path = data_dir.join(ENDPOINT_FILE);
    write_atomically(&endpoint_path, format!("{url}\n").as_bytes()).map_err(|source| {
        ServerError::WriteEndpoint {
            path: endpoint_path.clone(),
            source,
        }
    })?;

    tracing::info!(%url, data_dir = %data_dir.display(), "etcd v3 API listening");

    let api_listener = crate::accept::bind(cfg.listen).map_err(|source| ServerError::BindApi {
        addr: cfg.listen,
        source,
    })?;
    let api_local = api_listener
        .local_addr()
        .map_err(|source| ServerError::BindApi {
            addr: cfg.listen,
            source,
        })?;
    let advertise = cfg.advertise_address.unwrap_or(match api_local.ip() {
        IpAddr::V4(ip) if !ip.is_unspecified() => ip,
        _ => Ipv4Addr::LOCALHOST,
    });
    let joiner = crate::api::join::Joiner::load(&data_dir)?;
    let api_state = crate::api::start(
        store.clone(),
        crate::api::StartOptions {
            config: cfg.api.clone(),
            pki_dir: pki.dir.clone(),
            advertise,
            port: api_local.port(),
            joiner: Some(joiner),
            kubelet_client_tls: match cfg.tls {
                TlsMode::Off => None,
                TlsMode::Auto => Some(pki.kubelet_client_tls().map_err(pki_err)?),
            },
        },
    )
    .await?;
    if let Some(joiner) = &api_state.joiner {
        joiner.ensure_token_file(&api_state, &data_dir).await?;
    }
    let api_url = endpoint_url(api_local, api_tls.is_some());
    let api_endpoint_path = data_dir.join(API_ENDPOINT_FILE);
    write_atomically(&api_endpoint_path, format!("{api_url}\n").as_bytes()).map_err(|source| {
        ServerError::WriteEndpoint {
            path: api_endpoint_path.clone(),
            source,
        }
    })?;
    let kubeconfig_path = data_dir.join(ADMIN_KUBECONFIG);
    write_admin_kubeconfig(
        &kubeconfig_path,
        &api_url,
        &api_state,
        api_tls.is_some().then(|| pki.ca_cert_pem()),
    )?;
    tracing::info!(url = %api_url, "Kubernetes API listening");
    print_usage(&url, &data_dir, tls.as_ref().map(|(_, pki)| *pki));
    println!();
    println!("Kubernetes API listening on {api_url}");
    println!("Use it with kubectl:");
    println!("  export KUBECONFIG={}", kubeconfig_path.display());
    println!("  kubectl get namespaces");
    println!();
    println!("Join more nodes with:");
    println!(
        "  wkube agent --server {api_url} --token $(cat {})",
        data_dir.join(crate::api::join::JOIN_TOKEN_FILE).display()
    );
    println!("(that token expires in 24h; `wkube token join create --ttl 7d` makes another)");
    if let (Some(path), StoreSpec::Etcd(etcd)) = (&server_token, &cfg.store) {
        println!();
        println!("Add another API server on the same etcd with:");
        println!(
            "  wkube server --etcd-servers {} --token $(cat {})",
            etcd.servers.join(","),
            path.display()
        );
    }

    let member = Member {
        name: cfg.member_name.clone(),
        client_urls: vec![url.clone()],
        peer_urls: Vec::new(),
    };
    // One shutdown signal stops both servers.
    let stop = crate::shutdown::Stop::new(shutdown);
    if let Some(interval) = cfg.compaction_interval {
        tokio::spawn(crate::store::compactor::run(
            store.clone(),
            interval,
            stop.wait(),
        ));
    }
    let etcd = grpc::serve(
        store,
        listener,
        tls.map(|(server_tls, _)| server_tls),
        cfg.limits.clone(),
        member,
        stop.wait(),
    );
    let agent = match cfg.agent.clone() {
        Some(kcfg) => Some((
            local_agent_credentials(&kcfg, &pki, &api_state, api_tls.is_some())?,
            kcfg,
        )),
        None => None,
    };
    let controllers_client = if cfg.controllers {
        Some(crate::api::local::client(
            api_state.clone(),
            "system:kube-controller-manager",
            &[],
        ))
    } else {
        None
    };
    // One identity per server names it in every Lease it holds.
    let identity = crate::controllers::leader::persistent_identity(&data_dir);
    let scheduler = match cfg.scheduler.clone() {
        Some(scfg) => {
            let client = crate::api::local::client(api_state.clone(), "system:kube-scheduler", &[]);
            let (identity, le, stop) = (identity.clone(), cfg.leader_election.clone(), stop.wait());
            Some(tokio::spawn(async move {
                let c = client.clone();
                crate::controllers::leader::run_maybe_elected(
                    client,
                    "kube-scheduler",
                    identity,
                    le,
                    stop,
                    move |s| crate::scheduler::run(c.clone(), scfg.clone(), s.wait()),
                )
                .await
            }))
        }
        None => None,
    };
    let api = crate::api::serve::serve(
        api_state,
        api_listener,
        api_tls,
        stop.wait(),
        std::time::Duration::from_secs(10),
    );
    let kubelet = match agent {
        Some(((client, ca, agent_tls), kcfg)) => {
            let stop = stop.wait();
            Some(tokio::spawn(async move {
                let r = crate::node::run(kcfg, client, ca, agent_tls, stop).await;
                if let Err(e) = &r {
                    // The control plane keeps serving; only this node is
                    // missing (e.g. its agent port is taken).
                    tracing::error!(error = %e, "the local node agent stopped");
                    eprintln!("error: the local node agent stopped: {e}");
                }
                r
            }))
        }
        None => None,
    };
    let controllers = controllers_client.map(|client| {
        let (le, nl, hpa, cloud) = (
            cfg.leader_election.clone(),
            cfg.node_lifecycle.clone(),
            cfg.autoscaler.clone(),
            cfg.cloud.clone(),
        );
        let (cm, ccm) = (client.clone(), client.clone());
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::join!(
                crate::controllers::leader::run_maybe_elected(
                    client.clone(),
                    "kube-controller-manager",
                    identity.clone(),
                    le.clone(),
                    stop.wait(),
                    move |s| {
                        crate::controllers::run_all(cm.clone(), nl.clone(), hpa.clone(), s.wait())
                    },
                ),
                crate::controllers::leader::run_maybe_elected(
                    client,
                    "cloud-controller-manager",
                    identity,
                    le,
                    stop.wait(),
                    move |s| crate::cloud::run(ccm.clone(), cloud.clone(), s.wait()),
                ),
            )
        })
    });
    let (etcd_result, api_result) = tokio::join!(etcd, api);
    if let Some(c) = controllers {
        let _ = c.await;
    }
    if let Some(k) = kubelet {
        match k.await {
            Ok(Err(_)) => {}
            Err(e) => tracing::error!(error = %e, "the local kubelet panicked"),
            Ok(Ok(())) => {}
        }
    }
    if let Some(s) = scheduler
        && let Err(e) = s.await
    {
        tracing::error!(error = %e, "the scheduler panicked");
    }
    if std::fs::read_to_string(&api_endpoint_path).is_ok_and(|s| s.trim() == api_url) {
        let _ = std::fs::remove_file(&api_endpoint_path);
    }
    let result = etcd_result
        .map_err(ServerError::from)
        .and(api_result.map_err(ServerError::from));

    // Clients that find the file would only get "connection refused"; a
    // missing file tells them plainly that no server runs.
    if std::fs::read_to_string(&endpoint_path).is_ok_and(|s| s.trim() == url) {
        let _ = std::fs::remove_file(&endpoint_path);
    }
    tracing::info!("server stopped");
    result
}

/// What the kubelet inside `wkube server` uses: an in-process API client
/// acting as its node (`system:node:NAME` in `system:nodes`), and with TLS
/// the cluster CA and the agent endpoint's certificates (serving, and the
/// node's client certificate for calls to other nodes' agents).
fn local_agent_credentials(
    kcfg: &crate::kubelet::KubeletConfig,
    pki: &ClusterPki,
    api_state: &std::sync::Arc<crate::api::ApiState>,
    tls: bool,
) -> Result<
    (
        kube::Client,
        Option<String>,
        Option<crate::kubelet::AgentTls>,
    ),
    ServerError,
> {
    let user = format!("system:node:{}", kcfg.node_name);
    let client = crate::api::local::client(api_state.clone(), &user, &["system:nodes"]);
    if !tls {
        return Ok((client, None, None));
    }
    let mut ips: Vec<IpAddr> = vec![IpAddr::V4(kcfg.node_ip)];
    if kcfg.node_ip != Ipv4Addr::LOCALHOST {
        ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let certs = pki
        .issue_node(
            &kcfg.node_name,
            ips,
            std::time::Duration::from_secs(365 * 24 * 3600),
        )
        .map_err(|e: PkiError| ServerError::Agent {
            message: e.to_string(),
        })?;
    let ca = pki.ca_cert_pem().to_string();
    let agent_tls = crate::kubelet::AgentTls {
        cert_pem: certs.serving.cert_pem,
        key_pem: certs.serving.key_pem,
        ca_pem: ca.clone(),
        client_cert_pem: certs.client.cert_pem,
        client_key_pem: certs.client.key_pem,
    };
    Ok((client, Some(ca), Some(agent_tls)))
}

/// Write `DATA/admin.kubeconfig` unless one with a token that is still good
/// for 30 days and the same server URL is there.
fn write_admin_kubeconfig(
    path: &Path,
    url: &str,
    state: &crate::api::ApiState,
    ca_pem: Option<&str>,
) -> Result<(), ServerError> {
    let err = |message: String| ServerError::Kubeconfig {
        path: path.to_path_buf(),
        message,
    };
    if let Ok(existing) = std::fs::read_to_string(path)
        && let Ok(doc) = serde_yaml_ng::from_str::<serde_json::Value>(&existing)
        && doc
            .pointer("/clusters/0/cluster/server")
            .and_then(|v| v.as_str())
            == Some(url)
        && let Some(token) = doc.pointer("/users/0/user/token").and_then(|v| v.as_str())
        && let Ok(claims) = state.tokens.verify(token, crate::api::authn::API_AUDIENCE)
    {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if claims.exp > now + 30 * 24 * 3600 {
            return Ok(());
        }
    }
    let token = state
        .tokens
        .issue_user(
            "wkube-admin",
            &["system:masters".to_string()],
            ADMIN_TOKEN_TTL,
        )
        .map_err(|e| err(e.to_string()))?;
    let doc = crate::api::kubeconfig::render("wkube", url, ca_pem, "wkube-admin", &token);
    crate::pki::write_private_file(path, doc.as_bytes()).map_err(|e| err(e.to_string()))
}

/// The URL clients dial: an unspecified listen address is reached on loopback.
fn endpoint_url(local: SocketAddr, tls: bool) -> String {
    let ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}", SocketAddr::new(ip, local.port()))
}

fn print_usage(url: &str, data_dir: &Path, pki: Option<&ClusterPki>) {
    let default_dir = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".wkube"));
    let dir_flag = if default_dir.as_deref() == Some(data_dir) {
        String::new()
    } else {
        format!(" --data-dir {}", data_dir.display())
    };
    println!("etcd v3 API listening on {url}");
    println!();
    println!("Use it with etcdctl:");
    match pki {
        Some(pki) => println!(
            "  ETCDCTL_API=3 etcdctl --endpoints {url} --cacert {} --cert {} --key {} get foo",
            pki.path("ca.crt").display(),
            pki.path("etcd-client.crt").display(),
            pki.path("etcd-client.key").display(),
        ),
        None => println!("  ETCDCTL_API=3 etcdctl --endpoints {url} get foo"),
    }
    println!("or with wkube (it finds the endpoint and certificates in the data dir):");
    println!("  wkube{dir_flag} kv put foo bar");
    println!("  wkube{dir_flag} kv get foo");
}

/// The data directory holds private keys: readable by its owner only.
fn create_private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Takes the data directory's exclusive lock and records our pid in it, so
/// that a second server can say who holds it.
pub fn lock_data_dir(data_dir: &Path) -> Result<File, ServerError> {
    let path = data_dir.join(LOCK_FILE);
    let lock_err = |source| ServerError::Lock {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(lock_err)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .map(|pid| format!(" (pid {pid})"))
                .unwrap_or_default();
            return Err(ServerError::AlreadyRunning {
                data_dir: data_dir.to_path_buf(),
                holder,
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(lock_err(e)),
    }
    file.set_len(0).map_err(lock_err)?;
    writeln!(file, "{}", std::process::id()).map_err(lock_err)?;
    Ok(file)
}

/// Readers never see a half-written file.
fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_listen_address_is_advertised_as_loopback() {
        let url = endpoint_url("0.0.0.0:2379".parse().unwrap(), true);
        assert_eq!(url, "https://127.0.0.1:2379");
        let url = endpoint_url("[::]:80".parse().unwrap(), false);
        assert_eq!(url, "http://[::1]:80");
    }

    #[test]
    fn a_second_lock_on_the_data_dir_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _held = lock_data_dir(dir.path()).unwrap();
        match lock_data_dir(dir.path()) {
            Err(ServerError::AlreadyRunning { holder, .. }) => {
                assert_eq!(holder, format!(" (pid {})", std::process::id()));
            }
            other => panic!("expected AlreadyRunning, got {other:?}"),
        }
    }
}
