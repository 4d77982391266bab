//! The cloud controller manager: the controllers that ask the machines'
//! provider about the world outside the cluster, through a [`Provider`].
//!
//! - The service controller gives each Service of type `LoadBalancer` an
//!   address from the provider (`status.loadBalancer.ingress`), guarded by
//!   the `service.kubernetes.io/load-balancer-cleanup` finalizer so the
//!   address is released before the Service goes, or when it stops being
//!   a LoadBalancer.
//! - The cloud node controller deletes Nodes that are not Ready and whose
//!   machine the provider reports gone, and asks the provider for routes.
//!
//! Providers: [`local`] (the default).

pub mod local;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{LoadBalancerStatus, Node, Service};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

use crate::events::{EventType, Recorder, reference};

/// The finalizer that holds a LoadBalancer Service until its address is
/// released, named as in Kubernetes.
pub const LB_FINALIZER: &str = "service.kubernetes.io/load-balancer-cleanup";

/// Why a provider or cloud controller call failed.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error("no free load balancer address left in {range}")]
    RangeExhausted { range: local::AddressRange },
    #[error("requested load balancer address {address} is not free in {range}")]
    RequestedAddress {
        address: String,
        range: local::AddressRange,
    },
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
}

/// What the cluster needs from the machines' provider. Implementations
/// must be idempotent: every call may be repeated.
#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    /// The `--cloud-provider` name.
    fn name(&self) -> &'static str;

    /// Learns the load balancers that exist, from the Services' status,
    /// before any is ensured (a provider whose cloud keeps that state
    /// itself ignores this).
    fn restore(&self, _services: &[Service]) {}

    /// Creates or updates the load balancer of `svc`; the status to show.
    ///
    /// # Errors
    /// The provider cannot provide one (e.g. no address left).
    async fn ensure_load_balancer(&self, svc: &Service) -> Result<LoadBalancerStatus, CloudError>;

    /// Deletes the load balancer of `svc` if there is one.
    ///
    /// # Errors
    /// The provider failed to delete it; the call is repeated.
    async fn ensure_load_balancer_deleted(&self, svc: &Service) -> Result<(), CloudError>;

    /// Whether the machine behind `node` still exists.
    ///
    /// # Errors
    /// The provider could not tell; the node is left alone.
    async fn instance_exists(&self, node: &Node) -> Result<bool, CloudError>;

    /// Makes the node's pod CIDR reachable from the other nodes.
    ///
    /// # Errors
    /// The route could not be set up.
    async fn ensure_route(&self, node: &Node) -> Result<(), CloudError>;
}

/// Which provider `--cloud-provider` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProviderKind {
    /// Loopback load balancer addresses; machines removed by
    /// `wkube node remove`.
    Local,
    /// No cloud controllers at all (LoadBalancer Services stay pending).
    None,
}

/// The cloud controller manager's settings.
#[derive(Clone, Debug)]
pub struct CloudConfig {
    pub provider: ProviderKind,
    /// Load balancer addresses of the local provider (`--lb-range`).
    pub lb_range: local::AddressRange,
    /// How often Nodes are checked against the provider.
    pub node_monitor_period: Duration,
}

impl Default for CloudConfig {
    fn default() -> Self {
        CloudConfig {
            provider: ProviderKind::Local,
            lb_range: local::AddressRange::default(),
            node_monitor_period: Duration::from_secs(5),
        }
    }
}

impl CloudConfig {
    /// The provider these settings name, or `None` for `--cloud-provider none`.
    pub fn build(&self) -> Option<Arc<dyn Provider>> {
        match self.provider {
            ProviderKind::Local => Some(Arc::new(local::LocalProvider::new(self.lb_range))),
            ProviderKind::None => None,
        }
    }
}

/// Runs the cloud controllers until `shutdown` (nothing with provider
/// `none`). A fresh provider is built per run, so a leader taking over
/// rebuilds its view from the cluster.
pub async fn run(
    client: kube::Client,
    cfg: CloudConfig,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let Some(provider) = cfg.build() else {
        return;
    };
    tracing::info!(provider = provider.name(), "cloud controllers starting");
    let stop = crate::shutdown::Stop::new(shutdown);
    tokio::join!(
        run_services(client.clone(), provider.clone(), stop.wait()),
        run_nodes(client, provider, cfg.node_monitor_period, stop.wait()),
    );
}

struct Ctx {
    client: kube::Client,
    provider: Arc<dyn Provider>,
    recorder: Recorder,
}

async fn run_services(
    client: kube::Client,
    provider: Arc<dyn Provider>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<Service> = Api::all(client.clone());
    // Learn the addresses in use before handing out any.
    let mut shutdown = Box::pin(shutdown);
    loop {
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                provider.restore(&list.items);
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list services; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = &mut shutdown => return,
                }
            }
        }
    }
    let ctx = Arc::new(Ctx {
        recorder: Recorder::start(client.clone(), "service-controller", None),
        client,
        provider,
    });
    Controller::new(api, watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(
            crate::metrics::reconcile::timed("service-lb", reconcile_service),
            service_error_policy,
            ctx,
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "service reconcile");
            }
        })
        .await;
}

fn service_error_policy(_s: Arc<Service>, e: &CloudError, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(error = %e, "service load balancer reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Whether the service controller should give `svc` a load balancer.
pub fn wants_load_balancer(svc: &Service) -> bool {
    let spec = svc.spec.as_ref();
    svc.metadata.deletion_timestamp.is_none()
        && spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
        // A class names another implementation, which owns the Service.
        && spec.and_then(|s| s.load_balancer_class.as_deref()).is_none()
}

fn has_finalizer(svc: &Service) -> bool {
    svc.finalizers().iter().any(|f| f == LB_FINALIZER)
}

fn shown_status(svc: &Service) -> Option<&LoadBalancerStatus> {
    svc.status
        .as_ref()?
        .load_balancer
        .as_ref()
        .filter(|lb| lb.ingress.as_ref().is_some_and(|i| !i.is_empty()))
}

async fn reconcile_service(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, CloudError> {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let r = reference(svc.as_ref());
    if wants_load_balancer(&svc) {
        if !has_finalizer(&svc) {
            let mut finalizers = svc.finalizers().to_vec();
            finalizers.push(LB_FINALIZER.into());
            // The resourceVersion makes the list replacement safe against
            // a concurrent writer of the finalizers.
            let patch = json!({"metadata": {
                "finalizers": finalizers,
                "resourceVersion": svc.resource_version(),
            }});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            // The update wakes this controller again with the new object.
            return Ok(Action::await_change());
        }
        let shown = shown_status(&svc).cloned();
        let needs_event = shown.is_none();
        if needs_event {
            ctx.recorder.record(
                &r,
                EventType::Normal,
                "EnsuringLoadBalancer",
                "Ensuring load balancer".into(),
            );
        }
        let status = match ctx.provider.ensure_load_balancer(&svc).await {
            Ok(s) => s,
            Err(e) => {
                ctx.recorder.record(
                    &r,
                    EventType::Warning,
                    "SyncLoadBalancerFailed",
                    format!("Error syncing load balancer: failed to ensure load balancer: {e}"),
                );
                return Err(e);
            }
        };
        if shown.as_ref() != Some(&status) {
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"loadBalancer": status}})),
            )
            .await?;
            ctx.recorder.record(
                &r,
                EventType::Normal,
                "EnsuredLoadBalancer",
                "Ensured load balancer".into(),
            );
        }
        return Ok(Action::requeue(Duration::from_secs(300)));
    }
    // Deleted, or no longer a LoadBalancer: release what it holds.
    if !has_finalizer(&svc) && shown_status(&svc).is_none() {
        return Ok(Action::await_change());
    }
    ctx.recorder.record(
        &r,
        EventType::Normal,
        "DeletingLoadBalancer",
        "Deleting load balancer".into(),
    );
    ctx.provider.ensure_load_balancer_deleted(&svc).await?;
    if shown_status(&svc).is_some() {
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"loadBalancer": {"ingress": null}}})),
        )
        .await?;
    }
    if has_finalizer(&svc) {
        let finalizers: Vec<String> = svc
            .finalizers()
            .iter()
            .filter(|f| *f != LB_FINALIZER)
            .cloned()
            .collect();
        let patch = json!({"metadata": {"finalizers": finalizers}});
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    ctx.recorder.record(
        &r,
        EventType::Normal,
        "DeletedLoadBalancer",
        "Deleted load balancer".into(),
    );
    Ok(Action::await_change())
}

/// Whether the node reports itself Ready.
fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The cloud node controller: a Node that is not Ready and whose machine
/// is gone is deleted (a Ready node is left alone: its kubelet still runs
/// somewhere, as in Kubernetes).
async fn run_nodes(
    client: kube::Client,
    provider: Arc<dyn Provider>,
    period: Duration,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let recorder = Recorder::start(client.clone(), "cloud-node-lifecycle-controller", None);
    let api: Api<Node> = Api::all(client);
    let mut tick = tokio::time::interval(period.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut shutdown => return,
        }
        let nodes = match api.list(&ListParams::default()).await {
            Ok(l) => l.items,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list nodes");
                continue;
            }
        };
        for node in nodes {
            if let Err(e) = check_node(&api, provider.as_ref(), &recorder, &node).await {
                tracing::warn!(node = %node.name_any(), error = %e, "cloud node check failed");
            }
        }
    }
}

async fn check_node(
    api: &Api<Node>,
    provider: &dyn Provider,
    recorder: &Recorder,
    node: &Node,
) -> Result<(), CloudError> {
    provider.ensure_route(node).await?;
    if is_ready(node) || node.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    if provider.instance_exists(node).await? {
        return Ok(());
    }
    let name = node.name_any();
    recorder.record(
        &reference(node),
        EventType::Normal,
        "DeletingNode",
        format!("Deleting node {name} because it's not present according to cloud provider"),
    );
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: node.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ServiceSpec;

    fn svc(ty: &str) -> Service {
        Service {
            spec: Some(ServiceSpec {
                type_: Some(ty.into()),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    #[test]
    fn only_live_load_balancer_services_without_a_class_get_an_address() {
        assert!(wants_load_balancer(&svc("LoadBalancer")));
        assert!(!wants_load_balancer(&svc("ClusterIP")));
        assert!(!wants_load_balancer(&svc("NodePort")));
        let mut classed = svc("LoadBalancer");
        classed.spec.as_mut().unwrap().load_balancer_class = Some("example.com/lb".into());
        assert!(!wants_load_balancer(&classed));
        let mut deleting = svc("LoadBalancer");
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        assert!(!wants_load_balancer(&deleting));
    }
}
