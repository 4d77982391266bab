//! A node: the Wasm runtime, the kubelet and the service proxy, composed
//! once for both `wkube server` (its local node) and `wkube agent`.
//!
//! The runtime is built here and handed to the kubelet; the kubelet's pod
//! table is handed to the proxy as [`crate::proxy::LocalPods`], so the
//! proxy reaches local pods in-process without knowing the kubelet; and
//! the proxy is handed to the kubelet, whose pods call Services through it.

use std::sync::Arc;

use crate::kubelet::pods::PodTable;
use crate::kubelet::precompiled::ModuleCode;
use crate::kubelet::{AgentTls, KubeletConfig, KubeletError, NodeParts};
use crate::proxy::{NodeIdentity, Proxy, ProxyConfig, Ranges};
use crate::runtime::{Runtime, RuntimeError};

/// Runs the node until `shutdown`: its runtime, kubelet and proxy.
///
/// # Errors
/// When the data directory, the runtime, the proxy's TLS or the kubelet's
/// listener cannot be set up.
pub async fn run(
    config: KubeletConfig,
    client: kube::Client,
    ca_pem: Option<String>,
    tls: Option<AgentTls>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), KubeletError> {
    let listener = crate::kubelet::prepare(&config).await?;
    let runtime_config = config.runtime.clone();
    let runtime = tokio::task::spawn_blocking(move || Runtime::new(runtime_config))
        .await
        .map_err(|e| KubeletError::Runtime(RuntimeError::Engine(e.to_string())))??;
    if config.module_code == ModuleCode::Local && !runtime.compiles_locally() {
        return Err(KubeletError::NoCompiler);
    }
    let pods = Arc::new(PodTable::default());
    let mut proxy_config = ProxyConfig::new(config.node_name.clone(), config.node_ip);
    proxy_config.ranges = Ranges {
        service_cidr: config.service_cidr,
        cluster_cidr: config.cluster_cidr,
    };
    proxy_config.listen = config.proxy_listen;
    proxy_config.max_connections = config.proxy_max_connections;
    proxy_config.ingress_port = config.proxy_ingress_port;
    proxy_config.ingress_tls_port = config.proxy_ingress_tls_port;
    proxy_config.activation = config.proxy_activation;
    proxy_config.checkpoint = config.checkpoint.clone();
    // Traffic to pods on other nodes goes with the node's own credential.
    let identity = tls.as_ref().map(|t| NodeIdentity {
        client: crate::pki::ClientTls {
            cert_pem: t.client_cert_pem.clone(),
            key_pem: t.client_key_pem.clone(),
            ca_pem: t.ca_pem.clone(),
        },
    });
    let proxy = Arc::new(
        Proxy::new(proxy_config, pods.clone(), identity)
            .map_err(|e| KubeletError::Tls(e.to_string()))?,
    );
    let stop = crate::shutdown::Stop::new(shutdown);
    let proxy_task = tokio::spawn(crate::proxy::run(
        proxy.clone(),
        client.clone(),
        stop.wait(),
    ));
    let parts = NodeParts {
        runtime: Arc::new(runtime),
        pods,
        proxy,
    };
    let result =
        crate::kubelet::run(config, listener, parts, client, ca_pem, tls, stop.wait()).await;
    if result.is_err() {
        // The kubelet never ran: nothing will stop the proxy otherwise.
        proxy_task.abort();
    }
    let _ = proxy_task.await;
    result
}
