//! The command line: flag definitions for every subcommand and the client
//! subcommands themselves (`kv`, `token`, `kubeconfig`, `push`, `run`, ...).
//!
//! Long-running components (`server`, `agent`) keep their own configuration
//! types free of clap; this module turns flags into them.
//!
//! Without the `server` cargo feature only `agent` is built: the edge
//! agent's binary carries no control plane and no client subcommands.

pub mod agent;
#[cfg(feature = "server")]
pub mod encryption;
#[cfg(feature = "server")]
pub mod etcd;
#[cfg(feature = "server")]
pub mod example;
#[cfg(feature = "server")]
pub mod jointoken;
#[cfg(feature = "server")]
pub mod kv;
#[cfg(feature = "server")]
pub mod migrate;
#[cfg(feature = "server")]
pub mod node;
#[cfg(feature = "server")]
pub mod push;
#[cfg(feature = "server")]
pub mod run;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod snapshot;
#[cfg(feature = "server")]
pub mod token;

#[cfg(feature = "server")]
pub use server::ServerArgs;
#[cfg(feature = "server")]
pub use token::TokenArgs;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// `wkube`: a Kubernetes-style orchestrator whose pods are WebAssembly
/// components.
#[derive(Debug, Parser)]
#[command(name = "wkube", version, about, propagate_version = true)]
pub struct Cli {
    /// Where the server keeps its state (store, certificates, endpoint file);
    /// clients read the endpoint and certificates from here.
    /// [default: $HOME/.wkube]
    #[arg(long, global = true, env = "WKUBE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// Why the data directory could not be determined.
#[derive(Debug, thiserror::Error)]
#[error("no data directory: pass --data-dir or set WKUBE_DATA_DIR or HOME")]
pub struct NoDataDir;

impl Cli {
    /// The data directory: `--data-dir`, `$WKUBE_DATA_DIR`, or `$HOME/.wkube`.
    ///
    /// # Errors
    /// [`NoDataDir`] when none is given and `HOME` is unset.
    pub fn data_dir(&self) -> Result<PathBuf, NoDataDir> {
        if let Some(dir) = &self.data_dir {
            return Ok(dir.clone());
        }
        match std::env::var_os("HOME") {
            Some(home) if !home.is_empty() => Ok(PathBuf::from(home).join(".wkube")),
            _ => Err(NoDataDir),
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane: the store and its etcd v3 API.
    #[cfg(feature = "server")]
    Server(Box<ServerArgs>),
    /// Join a cluster as one more node and run its pods.
    Agent(agent::AgentArgs),
    /// Read and write the store with etcdctl's verbs and output.
    #[cfg(feature = "server")]
    Kv(kv::KvArgs),
    /// Mint bearer tokens for the Kubernetes API with the cluster key.
    #[cfg(feature = "server")]
    Token(TokenArgs),
    /// Print a kubeconfig for the running server (the admin's by default).
    #[cfg(feature = "server")]
    Kubeconfig(token::KubeconfigArgs),
    /// Upload a .wasm component or module to the module registry.
    #[cfg(feature = "server")]
    Push(push::PushArgs),
    /// Deploy a .wasm HTTP component: push it, run it as a Deployment
    /// behind a Service, wait until it serves and print its URL.
    #[cfg(feature = "server")]
    Run(run::RunArgs),
    /// Manage nodes' machines (`node remove NAME`: the machine is gone).
    #[cfg(feature = "server")]
    Node(node::NodeCommandArgs),
    /// List the example pods built into wkube, or write one out as .wasm.
    #[cfg(feature = "server")]
    Example(example::ExampleArgs),
    /// Back up or restore a stopped server's embedded store.
    #[cfg(feature = "server")]
    Snapshot(snapshot::SnapshotArgs),
    /// Copy a stopped server's embedded store into an etcd cluster, so the
    /// server can run on that etcd with the same objects.
    #[cfg(feature = "server")]
    Migrate(migrate::MigrateArgs),
    /// Manage the keys Secrets are encrypted with at rest.
    #[cfg(feature = "server")]
    Encryption(encryption::EncryptionArgs),
}

pub(crate) fn parse_cidr(s: &str) -> Result<crate::cluster::Cidr, String> {
    crate::cluster::Cidr::parse(s)
}

/// A duration as Kubernetes' flags write it: `15s`, `500ms`, `1m`, `1h`, or
/// plain seconds (`15`, `0.5`).
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration such as 15s, 500ms or 1m"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("{s:?}: expected a non-negative duration"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flag_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_take_kubernetes_units_or_plain_seconds() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("6"), Ok(Duration::from_secs(6)));
        assert!(parse_duration("soon").is_err());
    }

    #[cfg(feature = "server")]
    #[test]
    fn kv_flags_may_stand_before_or_after_the_verb() {
        for argv in [
            &[
                "wkube",
                "kv",
                "--endpoints",
                "h:1",
                "get",
                "k",
                "--key",
                "f",
            ][..],
            &[
                "wkube",
                "kv",
                "get",
                "k",
                "--endpoints",
                "h:1",
                "--key",
                "f",
            ][..],
        ] {
            let cli = Cli::try_parse_from(argv).unwrap();
            let Command::Kv(kv) = cli.command else {
                panic!("not kv")
            };
            assert_eq!(kv.conn.endpoints, ["h:1"]);
            assert_eq!(kv.conn.key, Some(PathBuf::from("f")));
        }
    }
}
