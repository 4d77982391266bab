//! `wkube node remove NAME`: tells the local cloud provider that a node's
//! machine is gone for good (decommissioned, never coming back). The mark
//! is an annotation on the Node, so it works from any host that reaches
//! the API server; the cloud node controller then deletes the Node once
//! it is no longer Ready, as Kubernetes deletes Nodes whose cloud instance
//! is gone.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::cloud::local::MACHINE_REMOVED;

/// Flags of `wkube node`.
#[derive(Debug, Args)]
pub struct NodeCommandArgs {
    #[command(subcommand)]
    pub action: NodeAction,

    /// Kubeconfig to use instead of DATA/admin.kubeconfig.
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
}

/// What `wkube node` does.
#[derive(Debug, Subcommand)]
pub enum NodeAction {
    /// Mark the node's machine as gone; its Node is deleted once it is not
    /// Ready (an agent that stopped turns its node not Ready after
    /// --node-monitor-grace-period).
    Remove {
        /// The node's name.
        name: String,
    },
}

/// Why `wkube node` failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeCommandError {
    #[error(transparent)]
    Client(#[from] super::push::PushError),
    #[error("Error from server (NotFound): nodes \"{0}\" not found")]
    NotFound(String),
    #[error("cannot mark node {name}: {source}")]
    Api {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Runs `wkube node`.
pub async fn run(args: NodeCommandArgs, data_dir: &Path) -> ExitCode {
    match remove(&args, data_dir).await {
        Ok(msg) => {
            println!("{msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn remove(args: &NodeCommandArgs, data_dir: &Path) -> Result<String, NodeCommandError> {
    let NodeAction::Remove { name } = &args.action;
    let client = super::push::api_client(args.kubeconfig.as_deref(), data_dir)?;
    let nodes: Api<Node> = Api::all(client);
    let patch = json!({"metadata": {"annotations": {MACHINE_REMOVED: "true"}}});
    let node = match nodes
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(n) => n,
        Err(kube::Error::Api(s)) if s.code == 404 => {
            return Err(NodeCommandError::NotFound(name.clone()));
        }
        Err(source) => {
            return Err(NodeCommandError::Api {
                name: name.clone(),
                source,
            });
        }
    };
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    Ok(if ready {
        format!(
            "node/{name} marked removed; it is still Ready, so it is deleted once its agent stops"
        )
    } else {
        format!("node/{name} marked removed")
    })
}
