//! The `--etcd-*` flags (kube-apiserver's names), shared by `wkube server`
//! and `wkube migrate`.

use std::path::PathBuf;

use clap::Args;

use crate::store::etcd::EtcdConfig;

/// How to reach an external etcd cluster.
#[derive(Debug, Args)]
pub struct EtcdArgs {
    /// Keep the cluster state in this external etcd v3 cluster instead of
    /// the embedded store: client URLs, comma-separated
    /// (`https://10.0.0.1:2379,https://10.0.0.2:2379`).
    #[arg(long, value_delimiter = ',', value_name = "URLS")]
    pub etcd_servers: Vec<String>,

    /// CA that signed the etcd members' serving certificates.
    #[arg(long, value_name = "FILE", requires = "etcd_servers")]
    pub etcd_cafile: Option<PathBuf>,

    /// Client certificate presented to etcd.
    #[arg(long, value_name = "FILE", requires_all = ["etcd_servers", "etcd_keyfile"])]
    pub etcd_certfile: Option<PathBuf>,

    /// Key of --etcd-certfile.
    #[arg(long, value_name = "FILE", requires_all = ["etcd_servers", "etcd_certfile"])]
    pub etcd_keyfile: Option<PathBuf>,

    /// What every key in etcd starts with (Kubernetes' layout below it).
    #[arg(long, default_value = "/registry", value_name = "PREFIX")]
    pub etcd_prefix: String,
}

impl EtcdArgs {
    /// The etcd to use; `None` without `--etcd-servers`.
    pub fn config(&self) -> Option<EtcdConfig> {
        if self.etcd_servers.is_empty() {
            return None;
        }
        Some(EtcdConfig {
            ca_file: self.etcd_cafile.clone(),
            cert_file: self.etcd_certfile.clone(),
            key_file: self.etcd_keyfile.clone(),
            prefix: self.etcd_prefix.clone(),
            ..EtcdConfig::new(self.etcd_servers.clone())
        })
    }
}
