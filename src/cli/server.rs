//! Flags of `wkube server` and how they become the server's configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::{agent, etcd, parse_cidr, parse_duration};
use crate::server::{ServerConfig, StoreSpec, TlsMode};
use crate::store::grpc::Limits;

/// Flags of `wkube server`.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address the etcd v3 gRPC API listens on; port 0 picks a free port
    /// (the URL actually used is written to DATA/etcd.endpoint).
    #[arg(long, default_value = "127.0.0.1:2379", value_name = "ADDR")]
    pub etcd_listen: SocketAddr,

    /// Address the Kubernetes API listens on; port 0 picks a free port (the
    /// URL actually used is written to DATA/api.endpoint).
    #[arg(long, default_value = "127.0.0.1:6443", value_name = "ADDR")]
    pub listen: SocketAddr,

    /// Address other nodes and in-cluster clients reach this server at.
    #[arg(long, value_name = "IP")]
    pub advertise_address: Option<std::net::Ipv4Addr>,

    /// Range ClusterIPs are allocated from (a loopback range by default, so
    /// a service address can never leak onto a network).
    #[arg(long, default_value = crate::cluster::DEFAULT_SERVICE_CIDR, value_parser = parse_cidr, value_name = "CIDR")]
    pub service_cidr: crate::cluster::Cidr,

    /// Range NodePorts are allocated from.
    #[arg(long, default_value = "30000-32767", value_parser = parse_port_range, value_name = "LO-HI")]
    pub service_node_port_range: (u16, u16),

    /// Range pod IPs come from; each node gets a block of it as its
    /// `spec.podCIDR` (a loopback range by default).
    #[arg(long, default_value = crate::cluster::DEFAULT_CLUSTER_CIDR, value_parser = parse_cidr, value_name = "CIDR")]
    pub cluster_cidr: crate::cluster::Cidr,

    /// Prefix length of each node's block of --cluster-cidr.
    #[arg(long, default_value_t = 18, value_name = "BITS")]
    pub node_cidr_mask_size: u8,

    /// Longest a connection to a node agent (TCP and TLS) may take, in
    /// seconds.
    #[arg(long, default_value_t = crate::agentapi::client::NodeClientConfig::default().connect_timeout.as_secs_f64(), value_name = "SECONDS")]
    pub kubelet_connect_timeout: f64,

    /// Longest a node agent may take to answer (logs, proxied requests)
    /// before the response starts, in seconds.
    #[arg(long, default_value_t = crate::agentapi::client::NodeClientConfig::default().response_header_timeout.as_secs_f64(), value_name = "SECONDS")]
    pub kubelet_response_timeout: f64,

    /// Largest API request body, in bytes.
    #[arg(long, default_value_t = crate::api::ApiConfig::default().max_body_bytes)]
    pub max_api_body_bytes: usize,

    /// Largest `.wasm` module accepted by the module registry, in bytes.
    #[arg(long, env = "WKUBE_MAX_MODULE_BYTES", default_value_t = crate::api::modules::DEFAULT_MAX_MODULE_BYTES)]
    pub max_module_bytes: usize,

    /// Most API connections served at once.
    #[arg(long, default_value_t = crate::api::ApiConfig::default().max_connections)]
    pub max_api_connections: usize,

    /// Requests in flight across the API server, shared by priority
    /// levels: a third for nodes and controllers, the rest for everybody
    /// else (`system:masters` and watches aside); past it, requests queue
    /// briefly, then 429.
    #[arg(long, default_value_t = crate::api::ApiConfig::default().max_requests_inflight)]
    pub max_requests_inflight: usize,

    /// Requests one user may have in flight; past it, its requests queue
    /// briefly, then 429 (the cluster's own components are exempt).
    #[arg(long, default_value_t = crate::api::ApiConfig::default().max_requests_inflight_per_user)]
    pub max_requests_inflight_per_user: usize,

    /// Modules compiled to native code for nodes at once (each on one
    /// core; default half the cores); a node waiting 30 s for a slot gets
    /// 429 and compiles itself or retries.
    #[arg(long, default_value_t = crate::api::ApiConfig::default().max_concurrent_compiles, value_name = "N")]
    pub max_concurrent_compiles: usize,

    /// Watches, followed logs and streams one user may have open; past it,
    /// 429.
    #[arg(long, default_value_t = crate::api::ApiConfig::default().max_long_running_per_user)]
    pub max_long_running_per_user: usize,

    /// `auto`: TLS with certificates generated into DATA/pki, and client
    /// certificates required. `off`: plaintext, meant for local tests only.
    #[arg(long, value_enum, default_value_t = TlsArg::Auto)]
    pub tls: TlsArg,

    /// Extra subject alternative name (DNS name or IP) for the serving
    /// certificate; repeat for more.
    #[arg(long = "tls-san", value_name = "NAME")]
    pub tls_sans: Vec<String>,

    #[command(flatten)]
    pub etcd: etcd::EtcdArgs,

    /// The secret the API servers of one cluster share, on an external
    /// etcd: the first server makes one (DATA/server-token) when none is
    /// given; every further server is started with it.
    #[arg(
        long,
        env = "WKUBE_TOKEN",
        value_name = "TOKEN",
        requires = "etcd_servers",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// How often old revisions of the store are compacted: each run forgets
    /// what the previous run had already superseded. `0` turns it off.
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub etcd_compaction_interval: Duration,

    /// Largest request the etcd API accepts, in bytes (etcd's default: 1.5 MiB).
    #[arg(long, default_value_t = Limits::default().max_request_bytes)]
    pub max_request_bytes: usize,

    /// Most operations one transaction may hold (etcd's default: 128).
    #[arg(long, default_value_t = Limits::default().max_txn_ops)]
    pub max_txn_ops: usize,

    /// Most watches one watch stream may hold.
    #[arg(long, default_value_t = Limits::default().max_watchers_per_stream)]
    pub max_watchers_per_stream: usize,

    /// Most concurrent gRPC streams per client connection.
    #[arg(long, default_value_t = Limits::default().max_concurrent_streams)]
    pub max_concurrent_streams: u32,

    /// How often idle watches that asked for it get a progress notification,
    /// in seconds.
    #[arg(long, default_value_t = Limits::default().progress_interval.as_secs_f64(), value_name = "SECONDS")]
    pub progress_interval: f64,

    /// Member name reported by `etcdctl member list`.
    #[arg(long, default_value = "default")]
    pub name: String,

    /// Run the control plane only, without a local node.
    #[arg(long)]
    pub no_agent: bool,

    /// Do not run the controller manager (ReplicaSets, Deployments, Jobs,
    /// CronJobs, DaemonSets).
    #[arg(long)]
    pub no_controllers: bool,
    /// Run without the scheduler (pods then need `spec.nodeName`).
    #[arg(long)]
    pub no_scheduler: bool,

    /// How the scheduler scores nodes: `MostAllocated` packs pods tightly,
    /// `LeastAllocated` spreads them, `RequestedToCapacityRatio` follows
    /// the shape in --scheduler-config. Overrides the file's strategy.
    /// [default: MostAllocated]
    #[arg(long, value_name = "STRATEGY", value_parser = |s: &str| s.parse::<crate::scheduler::config::StrategyType>())]
    pub scheduler_strategy: Option<crate::scheduler::config::StrategyType>,

    /// A KubeSchedulerConfiguration file (one profile): scoring strategy,
    /// resource weights, shape, plugin weights.
    #[arg(long, value_name = "FILE")]
    pub scheduler_config: Option<PathBuf>,

    /// Elect one active controller manager, cloud controller manager and
    /// scheduler among the servers of a cluster through Leases in
    /// kube-system (`--leader-elect=false` runs them at once).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub leader_elect: bool,

    /// How long standby servers wait after the leader's last renewal
    /// before taking over.
    #[arg(long, default_value = "15s", value_parser = parse_duration, value_name = "DURATION")]
    pub leader_elect_lease_duration: Duration,

    /// How long the leader keeps retrying a failed renewal before it stops
    /// its controllers.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub leader_elect_renew_deadline: Duration,

    /// How often candidates try to acquire, and the leader to renew.
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    pub leader_elect_retry_period: Duration,

    /// How often the node lifecycle controller checks the nodes.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub node_monitor_period: Duration,

    /// How often each HorizontalPodAutoscaler is evaluated.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub horizontal_pod_autoscaler_sync_period: Duration,

    /// How long a node may go without renewing its Lease before it is
    /// marked unreachable (Ready Unknown) and tainted.
    #[arg(long, default_value = "40s", value_parser = parse_duration, value_name = "DURATION")]
    pub node_monitor_grace_period: Duration,

    /// tolerationSeconds of the `node.kubernetes.io/not-ready:NoExecute`
    /// toleration added to every pod that has none.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub default_not_ready_toleration_seconds: i64,

    /// tolerationSeconds of the `node.kubernetes.io/unreachable:NoExecute`
    /// toleration added to every pod that has none.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub default_unreachable_toleration_seconds: i64,

    /// The machines' provider for the cloud controllers: `local`
    /// (LoadBalancer addresses from --lb-range; `wkube node remove`) or
    /// `none`.
    #[arg(long, value_enum, default_value_t = crate::cloud::ProviderKind::Local)]
    pub cloud_provider: crate::cloud::ProviderKind,

    /// Addresses the local provider gives LoadBalancer Services.
    #[arg(long, default_value = "127.0.0.100-127.0.0.199", value_parser = crate::cloud::local::AddressRange::parse, value_name = "FIRST-LAST")]
    pub lb_range: crate::cloud::local::AddressRange,

    #[command(flatten)]
    pub node: agent::NodeArgs,
}

/// `--tls` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TlsArg {
    Auto,
    Off,
}

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?}: expected LO-HI, e.g. 30000-32767"))?;
    let lo: u16 = lo.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
    let hi: u16 = hi.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
    if lo == 0 || lo > hi {
        return Err(format!(
            "{s:?}: the range must be non-empty and start above 0"
        ));
    }
    Ok((lo, hi))
}

/// A positive, finite number of seconds, else `default`.
fn seconds_or(secs: f64, default: Duration) -> Duration {
    if secs.is_finite() && secs > 0.0 {
        Duration::from_secs_f64(secs)
    } else {
        default
    }
}

impl ServerArgs {
    /// The scheduler configuration of these flags (`None` with
    /// `--no-scheduler`).
    ///
    /// # Errors
    /// The --scheduler-config file cannot be read or is invalid.
    pub fn scheduler_config(
        &self,
    ) -> Result<Option<crate::scheduler::SchedulerConfig>, crate::scheduler::config::ConfigError>
    {
        if self.no_scheduler {
            return Ok(None);
        }
        let mut cfg = crate::scheduler::SchedulerConfig::default();
        if let Some(path) = &self.scheduler_config {
            cfg = cfg.with_file(crate::scheduler::config::load_file(path)?);
        }
        if let Some(kind) = self.scheduler_strategy {
            cfg.strategy.kind = kind;
        }
        Ok(Some(cfg))
    }

    /// Checks flags that only make sense together.
    ///
    /// # Errors
    /// A message naming the flags, as Kubernetes' components word it.
    pub fn validate(&self) -> Result<(), String> {
        if self.leader_elect {
            if self.leader_elect_lease_duration <= self.leader_elect_renew_deadline {
                return Err(
                    "--leader-elect-lease-duration must be greater than --leader-elect-renew-deadline"
                        .into(),
                );
            }
            if self.leader_elect_renew_deadline <= self.leader_elect_retry_period {
                return Err(
                    "--leader-elect-renew-deadline must be greater than --leader-elect-retry-period"
                        .into(),
                );
            }
            if self.leader_elect_retry_period.is_zero() {
                return Err("--leader-elect-retry-period must be greater than zero".into());
            }
        }
        if self.node_monitor_period.is_zero()
            || self.node_monitor_grace_period.is_zero()
            || self.horizontal_pod_autoscaler_sync_period.is_zero()
        {
            return Err(
                "--node-monitor-period and --node-monitor-grace-period must be greater than zero"
                    .into(),
            );
        }
        Ok(())
    }

    /// The server configuration these flags describe (the scheduler's
    /// file is read by [`ServerArgs::scheduler_config`]; here it gets the
    /// defaults and the strategy flag).
    pub fn into_config(self, data_dir: PathBuf) -> ServerConfig {
        let progress_interval =
            if self.progress_interval.is_finite() && self.progress_interval > 0.0 {
                Duration::from_secs_f64(self.progress_interval)
            } else {
                Limits::default().progress_interval
            };
        ServerConfig {
            etcd_listen: self.etcd_listen,
            listen: self.listen,
            advertise_address: self.advertise_address,
            api: crate::api::ApiConfig {
                service_cidr: self.service_cidr,
                node_port_range: self.service_node_port_range,
                cluster_cidr: self.cluster_cidr,
                node_cidr_mask_size: self.node_cidr_mask_size,
                node_client: crate::agentapi::client::NodeClientConfig {
                    connect_timeout: seconds_or(
                        self.kubelet_connect_timeout,
                        crate::agentapi::client::NodeClientConfig::default().connect_timeout,
                    ),
                    response_header_timeout: seconds_or(
                        self.kubelet_response_timeout,
                        crate::agentapi::client::NodeClientConfig::default()
                            .response_header_timeout,
                    ),
                    ..Default::default()
                },
                max_body_bytes: self.max_api_body_bytes,
                max_connections: self.max_api_connections,
                max_requests_inflight: self.max_requests_inflight,
                max_requests_inflight_per_user: self.max_requests_inflight_per_user,
                max_long_running_per_user: self.max_long_running_per_user,
                max_module_bytes: self.max_module_bytes,
                max_concurrent_compiles: self.max_concurrent_compiles.max(1),
                default_not_ready_toleration_seconds: self.default_not_ready_toleration_seconds,
                default_unreachable_toleration_seconds: self.default_unreachable_toleration_seconds,
                ..Default::default()
            },
            tls: match self.tls {
                TlsArg::Auto => TlsMode::Auto,
                TlsArg::Off => TlsMode::Off,
            },
            tls_sans: self.tls_sans,
            store: match self.etcd.config() {
                None => StoreSpec::Redb,
                Some(etcd) => StoreSpec::Etcd(etcd),
            },
            server_token: self.token,
            compaction_interval: (!self.etcd_compaction_interval.is_zero())
                .then_some(self.etcd_compaction_interval),
            limits: Limits {
                max_request_bytes: self.max_request_bytes,
                max_txn_ops: self.max_txn_ops,
                max_watchers_per_stream: self.max_watchers_per_stream,
                max_concurrent_streams: self.max_concurrent_streams,
                progress_interval,
            },
            member_name: self.name,
            leader_election: self.leader_elect.then(|| {
                crate::controllers::leader::LeaderElectionConfig {
                    lease_duration: self.leader_elect_lease_duration,
                    renew_deadline: self.leader_elect_renew_deadline,
                    retry_period: self.leader_elect_retry_period,
                    ..Default::default()
                }
            }),
            node_lifecycle: crate::controllers::nodelifecycle::NodeLifecycleConfig {
                monitor_period: self.node_monitor_period,
                grace_period: self.node_monitor_grace_period,
                ..Default::default()
            },
            autoscaler: crate::controllers::podautoscaler::AutoscalerConfig {
                sync_period: self.horizontal_pod_autoscaler_sync_period,
            },
            cloud: crate::cloud::CloudConfig {
                provider: self.cloud_provider,
                lb_range: self.lb_range,
                node_monitor_period: self.node_monitor_period,
            },
            controllers: !self.no_controllers,
            agent: (!self.no_agent).then(|| {
                let mut k = self.node.into_config(data_dir.join("kubelet"));
                k.service_cidr = self.service_cidr;
                k.cluster_cidr = self.cluster_cidr;
                k
            }),
            scheduler: (!self.no_scheduler).then(|| {
                let mut s = crate::scheduler::SchedulerConfig::default();
                if let Some(kind) = self.scheduler_strategy {
                    s.strategy.kind = kind;
                }
                s
            }),
            data_dir,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn a_renew_deadline_beyond_the_lease_duration_is_refused() {
        let cli = Cli::try_parse_from([
            "wkube",
            "server",
            "--leader-elect-lease-duration",
            "5s",
            "--leader-elect-renew-deadline",
            "6s",
        ])
        .unwrap();
        let Command::Server(args) = cli.command else {
            panic!("not server")
        };
        assert!(args.validate().unwrap_err().contains("greater than"));
        let cli = Cli::try_parse_from(["wkube", "server", "--leader-elect=false"]).unwrap();
        let Command::Server(args) = cli.command else {
            panic!("not server")
        };
        assert!(args.validate().is_ok());
        assert!(
            (*args)
                .into_config("/tmp/x".into())
                .leader_election
                .is_none()
        );
    }

    #[test]
    fn etcd_servers_choose_the_external_store_and_its_files_need_them() {
        let cli = Cli::try_parse_from([
            "wkube",
            "server",
            "--etcd-servers",
            "https://a:2379,https://b:2379",
            "--etcd-prefix",
            "/blue",
        ])
        .unwrap();
        let Command::Server(args) = cli.command else {
            panic!("not a server command")
        };
        match args.into_config(PathBuf::from("/tmp/d")).store {
            StoreSpec::Etcd(etcd) => {
                assert_eq!(etcd.servers, ["https://a:2379", "https://b:2379"]);
                assert_eq!(etcd.prefix, "/blue");
            }
            StoreSpec::Redb => panic!("the embedded store was chosen"),
        }
        let cli = Cli::try_parse_from(["wkube", "server"]).unwrap();
        let Command::Server(args) = cli.command else {
            panic!("not a server command")
        };
        assert!(matches!(
            args.into_config(PathBuf::from("/tmp/d")).store,
            StoreSpec::Redb
        ));
        // Certificates for an etcd nobody named, or a token without one.
        for argv in [
            &["wkube", "server", "--etcd-cafile", "ca.crt"][..],
            &["wkube", "server", "--token", "t"][..],
        ] {
            let e = Cli::try_parse_from(argv).unwrap_err();
            assert!(e.to_string().contains("--etcd-servers"), "{e}");
        }
    }
}
