//! The Node object and the Lease heartbeat.
//!
//! The kubelet creates its Node (or takes over an existing one of the same
//! name, as after a restart), then keeps two things fresh: the Lease in
//! `kube-node-lease` (cheap, every `lease_renew`) and the Node's status
//! (Ready condition and heartbeat, every `node_status_period`) — the split
//! Kubernetes uses so a large cluster's heartbeats cost little.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, PatchParams, PostParams};
use serde_json::json;

use super::Shared;
use crate::agentapi::tunnel::BEHIND_NAT;

/// Registers and heartbeats one Node.
pub struct NodeAgent {
    shared: Arc<Shared>,
    port: u16,
    /// When this kubelet started: the Ready condition's transition time.
    started: Time,
}

/// First retry delay when the API server cannot be reached; doubles to
/// [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(10);

impl NodeAgent {
    pub fn new(shared: Arc<Shared>, port: u16) -> NodeAgent {
        NodeAgent {
            shared,
            port,
            started: Time(chrono_now()),
        }
    }

    /// Creates the Node (or updates the existing one) and reports it Ready;
    /// retries with back-off until it succeeds or `shutdown` resolves.
    /// Returns the node's `podCIDR` as assigned by the API server.
    pub async fn register(&self, shutdown: impl Future<Output = ()>) -> Option<String> {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut delay = FIRST_RETRY;
        loop {
            match self.try_register().await {
                Ok(cidr) => {
                    tracing::info!(node = %self.shared.config.node_name, pod_cidr = ?cidr, "node registered");
                    return cidr;
                }
                Err(e) => {
                    tracing::warn!(node = %self.shared.config.node_name, error = %e, "node registration failed; retrying")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = &mut shutdown => return None,
            }
            delay = (delay * 2).min(MAX_RETRY);
        }
    }

    async fn try_register(&self) -> Result<Option<String>, kube::Error> {
        let nodes: Api<Node> = Api::all(self.shared.client.clone());
        let name = &self.shared.config.node_name;
        let created = match nodes.create(&PostParams::default(), &self.node()).await {
            Ok(n) => n,
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // A restart: keep the spec (podCIDR, taints, unschedulable)
                // and refresh labels, addresses and how the node is reached.
                let behind_nat = self.shared.config.tunnel.is_some().then_some("true");
                let patch = json!({"metadata": {
                    "labels": self.labels(),
                    "annotations": {BEHIND_NAT: behind_nat},
                }});
                nodes
                    .patch(
                        name,
                        &PatchParams::default(),
                        &kube::api::Patch::Merge(&patch),
                    )
                    .await?
            }
            Err(e) => return Err(e),
        };
        self.update_status(&nodes).await?;
        Ok(created.spec.and_then(|s| s.pod_cidr))
    }

    /// Renews the Lease and re-sends the node status until `shutdown`.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let nodes: Api<Node> = Api::all(self.shared.client.clone());
        let leases: Api<Lease> = Api::namespaced(self.shared.client.clone(), "kube-node-lease");
        let mut lease_tick = tokio::time::interval(self.shared.config.lease_renew);
        let mut status_tick = tokio::time::interval(self.shared.config.node_status_period);
        lease_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        status_tick.tick().await; // registration just sent it
        loop {
            tokio::select! {
                _ = lease_tick.tick() => {
                    if let Err(e) = self.renew_lease(&leases).await {
                        tracing::warn!(node = %self.shared.config.node_name, error = %e, "lease renewal failed");
                    } else if let Err(e) = self.repost_if_marked(&nodes).await {
                        tracing::warn!(node = %self.shared.config.node_name, error = %e, "node status update failed");
                    }
                }
                _ = status_tick.tick() => {
                    if let Err(e) = self.update_status(&nodes).await {
                        tracing::warn!(node = %self.shared.config.node_name, error = %e, "node status update failed");
                    }
                }
                _ = &mut shutdown => return,
            }
        }
    }

    async fn renew_lease(&self, leases: &Api<Lease>) -> Result<(), kube::Error> {
        let name = &self.shared.config.node_name;
        let now = MicroTime(chrono_now());
        match leases.get_opt(name).await? {
            Some(mut lease) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                spec.holder_identity = Some(name.clone());
                spec.lease_duration_seconds =
                    Some(self.shared.config.lease_duration.as_secs() as i32);
                spec.renew_time = Some(now);
                // A conflict means someone else wrote it in between; the
                // next tick retries from a fresh read.
                leases.replace(name, &PostParams::default(), &lease).await?;
            }
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some("kube-node-lease".into()),
                        owner_references: None,
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(name.clone()),
                        lease_duration_seconds: Some(
                            self.shared.config.lease_duration.as_secs() as i32
                        ),
                        renew_time: Some(now),
                        ..LeaseSpec::default()
                    }),
                };
                leases.create(&PostParams::default(), &lease).await?;
            }
        }
        Ok(())
    }

    /// Re-sends the status at once when the node lifecycle controller
    /// marked the node not Ready (after a network outage, say): waiting for
    /// the next status period would keep it tainted for no reason.
    async fn repost_if_marked(&self, nodes: &Api<Node>) -> Result<(), kube::Error> {
        let node = nodes.get(&self.shared.config.node_name).await?;
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if !ready {
            self.update_status(nodes).await?;
        }
        Ok(())
    }

    async fn update_status(&self, nodes: &Api<Node>) -> Result<(), kube::Error> {
        let status = self.status();
        let patch = json!({"status": status});
        nodes
            .patch_status(
                &self.shared.config.node_name,
                &PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await?;
        Ok(())
    }

    fn labels(&self) -> BTreeMap<String, String> {
        let cfg = &self.shared.config;
        let mut labels = BTreeMap::from([
            ("kubernetes.io/hostname".to_string(), cfg.node_name.clone()),
            (
                "kubernetes.io/arch".to_string(),
                crate::cluster::node_arch().to_string(),
            ),
            (
                "kubernetes.io/os".to_string(),
                std::env::consts::OS.to_string(),
            ),
            (
                "beta.kubernetes.io/arch".to_string(),
                crate::cluster::node_arch().to_string(),
            ),
            (
                "beta.kubernetes.io/os".to_string(),
                std::env::consts::OS.to_string(),
            ),
        ]);
        labels.extend(cfg.labels.iter().cloned());
        labels
    }

    fn node(&self) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(self.shared.config.node_name.clone()),
                labels: Some(self.labels()),
                annotations: self
                    .shared
                    .config
                    .tunnel
                    .is_some()
                    .then(|| BTreeMap::from([(BEHIND_NAT.to_string(), "true".to_string())])),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(self.status()),
        }
    }

    fn status(&self) -> NodeStatus {
        let cfg = &self.shared.config;
        let now = Time(chrono_now());
        let resources = BTreeMap::from([
            ("cpu".to_string(), Quantity(format!("{}m", cfg.cpu_millis))),
            (
                "memory".to_string(),
                Quantity(format!("{}Ki", cfg.memory_bytes / 1024)),
            ),
            ("pods".to_string(), Quantity(cfg.max_pods.to_string())),
        ]);
        NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: cfg.node_ip.to_string(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: cfg.node_name.clone(),
                },
            ]),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: Some("KubeletReady".into()),
                message: Some("wkube kubelet is posting ready status".into()),
                last_heartbeat_time: Some(now),
                last_transition_time: Some(self.started.clone()),
            }]),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint {
                    port: self.port as i32,
                }),
            }),
            node_info: Some(NodeSystemInfo {
                architecture: crate::cluster::node_arch().into(),
                operating_system: std::env::consts::OS.into(),
                kubelet_version: format!("v1.33.0-wkube.{}", env!("CARGO_PKG_VERSION")),
                kube_proxy_version: String::new(),
                container_runtime_version: "wasmtime://48.0.8".into(),
                kernel_version: kernel_version(),
                os_image: "wkube".into(),
                boot_id: String::new(),
                machine_id: String::new(),
                system_uuid: String::new(),
                ..NodeSystemInfo::default()
            }),
            ..NodeStatus::default()
        }
    }
}

/// The current time as k8s-openapi's timestamp type.
pub fn chrono_now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
