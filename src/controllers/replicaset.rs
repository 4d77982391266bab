//! The ReplicaSet controller: as many live pods of the template as
//! `replicas` asks, owned by the ReplicaSet (orphans that match its selector
//! are adopted), and the status counts.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

use super::{ControllerError, selector_matches, selector_query};

/// Most pods created or deleted for one ReplicaSet in one pass, so a large
/// scale-up is spread over passes and never floods the API server.
const BURST: usize = 500;

struct Ctx {
    client: kube::Client,
}

/// Runs the controller until `shutdown`.
pub async fn run(
    client: kube::Client,
    pods: super::PodFeed,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let rs: Api<ReplicaSet> = Api::all(client.clone());
    let controller = Controller::new(rs, watcher::Config::default())
        .owns_shared_stream(pods)
        .graceful_shutdown_on(shutdown);
    super::drive(
        controller,
        "replicaset",
        reconcile,
        Arc::new(Ctx { client }),
    )
    .await;
}

/// A pod that counts towards `replicas`: not finished, not being deleted.
pub fn is_active(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && !matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// Whether the pod's Ready condition is true.
pub fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, ControllerError> {
    if rs.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = rs.namespace().unwrap_or_default();
    let spec = rs.spec.clone().unwrap_or_default();
    let uid = rs.uid().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let query = selector_query(&spec.selector);
    if query.is_empty() {
        return Err(ControllerError::Invalid(format!(
            "replicaset {ns}/{} has an empty or invalid selector",
            rs.name_any()
        )));
    }
    let listed = pods_api.list(&ListParams::default().labels(&query)).await?;
    let mut owned = Vec::new();
    for pod in listed.items {
        let controller = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .cloned();
        match controller {
            Some(o) if o.uid == uid => owned.push(pod),
            Some(_) => {}
            None if is_active(&pod)
                && selector_matches(
                    &spec.selector,
                    pod.metadata.labels.as_ref().unwrap_or(&Default::default()),
                ) =>
            {
                // Adopt the orphan, as Kubernetes does.
                let patch = json!({"metadata": {"ownerReferences": [super::controller_ref(&*rs)]}});
                if pods_api
                    .patch(
                        &pod.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                    .is_ok()
                {
                    owned.push(pod);
                }
            }
            None => {}
        }
    }
    let active: Vec<&Pod> = owned.iter().filter(|p| is_active(p)).collect();
    let want = spec.replicas.unwrap_or(1).max(0) as usize;
    if active.len() < want {
        let template = spec.template.clone().unwrap_or_default();
        let mut meta = template.metadata.clone().unwrap_or_default();
        let pod = Pod {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}-", rs.name_any())),
                namespace: Some(ns.clone()),
                labels: meta.labels.take(),
                annotations: meta.annotations.take(),
                owner_references: Some(vec![super::controller_ref(&*rs)]),
                ..ObjectMeta::default()
            },
            spec: template.spec.clone(),
            status: None,
        };
        let n = (want - active.len()).min(BURST);
        let post = PostParams::default();
        let creates = (0..n).map(|_| pods_api.create(&post, &pod));
        for r in futures::future::join_all(creates).await {
            r?;
        }
    } else if active.len() > want {
        // Delete the least useful first: unscheduled, then not ready, then
        // the newest.
        let mut victims = active.clone();
        victims.sort_by_key(|p| {
            let bound = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
            (
                bound,
                is_ready(p),
                std::cmp::Reverse(p.metadata.creation_timestamp.clone().map(|t| t.0)),
            )
        });
        let n = (active.len() - want).min(BURST);
        let dp = DeleteParams::default();
        let deletes = victims
            .iter()
            .take(n)
            .map(|p| pods_api.delete(p.metadata.name.as_deref().unwrap_or_default(), &dp));
        for r in futures::future::join_all(deletes).await {
            match r {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    // Status from what is there now (a later pass sees the new pods).
    let ready = active.iter().filter(|p| is_ready(p)).count() as i32;
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let status = ReplicaSetStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: Some(active.len() as i32),
        ready_replicas: Some(ready),
        available_replicas: Some(if min_ready == 0 {
            ready
        } else {
            available(&active, min_ready)
        }),
        observed_generation: rs.metadata.generation,
        conditions: None,
        terminating_replicas: None,
    };
    if rs.status.as_ref() != Some(&status) {
        let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
        api.patch_status(
            &rs.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await?;
    }
    // Pods changing state wake this up through `owns`; the resync is a
    // safety net.
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// Ready pods that have been ready for `min_ready` seconds.
fn available(pods: &[&Pod], min_ready: i32) -> i32 {
    let now = k8s_openapi::jiff::Timestamp::now();
    pods.iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready" && c.status == "True"))
                .and_then(|c| c.last_transition_time.as_ref())
                .is_some_and(|t| now.duration_since(t.0).as_secs() >= min_ready as i64)
        })
        .count() as i32
}
