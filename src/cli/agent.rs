//! Flags of a node agent, shared by `wkube server` (its local node) and
//! `wkube agent`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::kubelet::KubeletConfig;

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

/// The host's name, for the default node name (lower-cased, as node names
/// are DNS subdomains).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_ascii_lowercase())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "wkube-node".into())
}

impl NodeArgs {
    /// The kubelet configuration, keeping state in `data_dir`.
    pub fn into_config(self, data_dir: PathBuf) -> KubeletConfig {
        let mut cfg = KubeletConfig::new(self.node_name.unwrap_or_else(host_name), data_dir);
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
        cfg
    }
}
