//! `wkube run NAME --wasm FILE`: deploy a Wasm HTTP component in one
//! command. It pushes the module (tagged with its digest, so a changed file
//! rolls the Deployment and an unchanged one changes nothing), creates or
//! updates a Deployment and a Service named NAME, waits until the service
//! answers, and prints the URL to open.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::push::{PushArgs, PushError};

/// How the service is exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Exposure {
    /// A port on every node's address.
    NodePort,
    /// An address from the cluster's load-balancer pool.
    LoadBalancer,
    /// Inside the cluster only (its ClusterIP, from a node).
    ClusterIp,
}

impl Exposure {
    fn service_type(self) -> &'static str {
        match self {
            Exposure::NodePort => "NodePort",
            Exposure::LoadBalancer => "LoadBalancer",
            Exposure::ClusterIp => "ClusterIP",
        }
    }
}

/// Flags of `wkube run`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("module").required(true).args(["wasm", "example"])))]
pub struct RunArgs {
    /// Name of the Deployment, the Service and the module.
    #[arg(value_name = "NAME")]
    pub name: String,

    /// The .wasm HTTP component to run.
    #[arg(long, value_name = "FILE.wasm")]
    pub wasm: Option<PathBuf>,

    /// Run one of the examples built into wkube instead of a file
    /// (`wkube example` lists them), e.g. `--example hello-http`.
    #[arg(long, value_name = "NAME")]
    pub example: Option<String>,

    /// Pods to run.
    #[arg(long, default_value_t = 1)]
    pub replicas: i32,

    /// The service's port.
    #[arg(long, default_value_t = 80)]
    pub port: u16,

    /// How the service is reached.
    #[arg(long = "type", value_enum, default_value = "node-port")]
    pub exposure: Exposure,

    /// Namespace to deploy into.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,

    /// Kubeconfig to use instead of DATA/admin.kubeconfig.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub timeout: u64,
}

/// Why a deploy failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0:?} is not a valid name (lower-case letters, digits and '-')")]
    Name(String),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no example {name:?}; the examples are: {all}")]
    Example { name: String, all: String },
    #[error("push: {0}")]
    Push(#[from] PushError),
    #[error("client: {0}")]
    Client(String),
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
    #[error("{what} within {secs} seconds; see `kubectl describe deployment {name}` and its pods")]
    Timeout {
        what: String,
        secs: u64,
        name: String,
    },
}

/// Runs `wkube run`.
pub async fn run(args: RunArgs, data_dir: &Path) -> ExitCode {
    match deploy(&args, data_dir).await {
        Ok(url) => {
            println!("{} is serving at {url}", args.name);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn deploy(args: &RunArgs, data_dir: &Path) -> Result<String, RunError> {
    let name = args.name.as_str();
    if !crate::resources::validation::is_dns1035_label(name) {
        return Err(RunError::Name(name.to_string()));
    }
    let (file, bytes) = match (&args.wasm, &args.example) {
        (Some(path), _) => (
            path.clone(),
            std::fs::read(path).map_err(|source| RunError::Read {
                path: path.clone(),
                source,
            })?,
        ),
        (None, example) => {
            let wanted = example.as_deref().unwrap_or_default();
            let found = super::example::find(wanted).ok_or_else(|| RunError::Example {
                name: wanted.to_string(),
                all: super::example::names(),
            })?;
            (PathBuf::from(format!("{}.wasm", found.name)), found.wasm())
        }
    };
    // The tag names the content: the same file is the same image.
    let tag = format!("sha-{}", &hex::encode(Sha256::digest(&bytes))[..12]);
    let pushed = super::push::push_bytes(
        &PushArgs {
            file,
            reference: format!("{name}:{tag}"),
            kubeconfig: args.kubeconfig.clone(),
            timeout: args.timeout,
        },
        bytes,
        data_dir,
    )
    .await?;
    eprintln!("{pushed}");

    let target = super::push::target(args.kubeconfig.as_deref(), data_dir)?;
    let client = crate::client::build(&crate::client::ClientConfig {
        server: target.url.clone(),
        ca_pem: target
            .ca_pem
            .as_ref()
            .map(|c| String::from_utf8_lossy(c).into_owned()),
        credential: match target.token.clone() {
            Some(t) => crate::client::Credential::Token(t),
            None => crate::client::Credential::None,
        },
        connect_timeout: Duration::from_secs(5),
    })
    .map_err(|e| RunError::Client(e.to_string()))?;
    let ns = args.namespace.as_str();
    let image = format!("{name}:{tag}");
    let labels = json!({"app": name});
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "replicas": args.replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{
                    "name": name,
                    "image": image,
                    "ports": [{"name": "http", "containerPort": 8080}],
                }]},
            },
        },
    });
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "type": args.exposure.service_type(),
            "selector": labels,
            "ports": [{"name": "http", "port": args.port, "targetPort": "http"}],
        },
    });
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    create_or_merge(&deployments, name, deployment).await?;
    create_or_merge(&services, name, service).await?;

    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let timeout = |what: &str| RunError::Timeout {
        what: what.to_string(),
        secs: args.timeout,
        name: name.to_string(),
    };
    // Rolled out: every replica updated and available.
    loop {
        let d = deployments.get(name).await?;
        let status = d.status.unwrap_or_default();
        let generation = d.metadata.generation.unwrap_or(0);
        let done = status.observed_generation.unwrap_or(0) >= generation
            && status.updated_replicas.unwrap_or(0) >= args.replicas
            && status.available_replicas.unwrap_or(0) >= args.replicas
            && status.replicas.unwrap_or(0) == args.replicas;
        if done {
            break;
        }
        if Instant::now() > deadline {
            return Err(timeout("the Deployment did not become available"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The address to open.
    let url = loop {
        let svc = services.get(name).await?;
        if let Some(url) = service_url(&client, &svc, args.exposure).await? {
            break url;
        }
        if Instant::now() > deadline {
            return Err(timeout("the Service got no address"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Serving: the proxies have the endpoints.
    loop {
        if answers(&url).await {
            return Ok(url);
        }
        if Instant::now() > deadline {
            return Err(timeout(&format!("{url} did not answer")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn create_or_merge<K>(
    api: &Api<K>,
    name: &str,
    obj: serde_json::Value,
) -> Result<(), RunError>
where
    K: Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    if api.get_opt(name).await?.is_some() {
        api.patch(name, &PatchParams::default(), &Patch::Merge(&obj))
            .await?;
    } else {
        let typed: K = serde_json::from_value(obj).map_err(|e| RunError::Client(e.to_string()))?;
        api.create(&PostParams::default(), &typed).await?;
    }
    Ok(())
}

/// The URL the service is reached at, once it has one.
async fn service_url(
    client: &kube::Client,
    svc: &Service,
    exposure: Exposure,
) -> Result<Option<String>, RunError> {
    let spec = svc.spec.clone().unwrap_or_default();
    let port = spec
        .ports
        .as_ref()
        .and_then(|p| p.first())
        .cloned()
        .unwrap_or_default();
    Ok(match exposure {
        Exposure::ClusterIp => spec
            .cluster_ip
            .map(|ip| format!("http://{ip}:{}/", port.port)),
        Exposure::LoadBalancer => svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .and_then(|i| i.first())
            .and_then(|i| i.ip.clone())
            .map(|ip| format!("http://{ip}:{}/", port.port)),
        Exposure::NodePort => {
            let Some(node_port) = port.node_port else {
                return Ok(None);
            };
            let nodes: Api<Node> = Api::all(client.clone());
            let list = nodes.list(&ListParams::default()).await?;
            let ip = list.items.iter().find_map(|n| {
                let status = n.status.as_ref()?;
                let ready = status
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                if !ready {
                    return None;
                }
                status
                    .addresses
                    .iter()
                    .flatten()
                    .find(|a| a.type_ == "InternalIP")
                    .map(|a| a.address.clone())
            });
            ip.map(|ip| format!("http://{ip}:{node_port}/"))
        }
    })
}

/// Whether `url` answers with anything but "no endpoints" / "bad gateway".
async fn answers(url: &str) -> bool {
    let Ok(uri) = url.parse::<hyper::Uri>() else {
        return false;
    };
    let Some(authority) = uri.authority().map(|a| a.to_string()) else {
        return false;
    };
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(&authority).await.ok()?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .ok()?;
        tokio::spawn(conn);
        let req = hyper::Request::get(uri.path())
            .header(hyper::header::HOST, &authority)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .ok()?;
        let resp = sender.send_request(req).await.ok()?;
        Some(resp.status())
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), attempt).await,
        Ok(Some(s)) if s != hyper::StatusCode::SERVICE_UNAVAILABLE && s != hyper::StatusCode::BAD_GATEWAY
    )
}
