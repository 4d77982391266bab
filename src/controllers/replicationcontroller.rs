//! The ReplicationController controller. An RC is a ReplicaSet whose
//! selector is a plain label map, so each pass reads the RC as that
//! ReplicaSet (`matchLabels` = the map) and runs the ReplicaSet
//! controller's own pass ([`super::replicaset::sync`]) with the RC as the
//! pods' owner; only the status is written back in the RC's shape.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetSpec, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{ReplicationController, ReplicationControllerStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

use super::ControllerError;
use super::replicaset::Ctx;

/// Runs the controller until `shutdown`.
pub async fn run(
    client: kube::Client,
    pods: super::PodFeed,
    cache: Arc<super::PodCache>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let rcs: Api<ReplicationController> = Api::all(client.clone());
    let controller = Controller::new(rcs, watcher::Config::default())
        .owns_shared_stream(pods)
        .graceful_shutdown_on(shutdown);
    super::drive(
        controller,
        "replicationcontroller",
        reconcile,
        Arc::new(Ctx::new(client, cache)),
    )
    .await;
}

/// The ReplicaSet an RC means. An empty selector stays empty (and the
/// pass refuses it) rather than selecting every pod.
pub fn as_replica_set(rc: &ReplicationController) -> ReplicaSet {
    let spec = rc.spec.clone().unwrap_or_default();
    ReplicaSet {
        metadata: rc.metadata.clone(),
        spec: Some(ReplicaSetSpec {
            min_ready_seconds: spec.min_ready_seconds,
            replicas: spec.replicas,
            selector: LabelSelector {
                match_labels: spec.selector.filter(|s| !s.is_empty()),
                match_expressions: None,
            },
            template: spec.template,
        }),
        status: None,
    }
}

/// The RC's status of the counts a pass returned.
pub fn rc_status(s: ReplicaSetStatus) -> ReplicationControllerStatus {
    ReplicationControllerStatus {
        replicas: s.replicas,
        fully_labeled_replicas: s.fully_labeled_replicas,
        ready_replicas: s.ready_replicas,
        available_replicas: s.available_replicas,
        observed_generation: s.observed_generation,
        conditions: None,
    }
}

async fn reconcile(
    rc: Arc<ReplicationController>,
    ctx: Arc<Ctx>,
) -> Result<Action, ControllerError> {
    if rc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let counts =
        super::replicaset::sync(&as_replica_set(&rc), super::controller_ref(&*rc), &ctx).await?;
    let status = rc_status(counts);
    if rc.status.as_ref() != Some(&status) {
        let api: Api<ReplicationController> =
            Api::namespaced(ctx.client(), &rc.namespace().unwrap_or_default());
        api.patch_status(
            &rc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await?;
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn an_rc_is_a_replica_set_with_its_map_as_match_labels() {
        let rc = ReplicationController {
            spec: Some(k8s_openapi::api::core::v1::ReplicationControllerSpec {
                replicas: Some(3),
                selector: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let rs = as_replica_set(&rc);
        let spec = rs.spec.unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(
            spec.selector.match_labels,
            Some(BTreeMap::from([("app".into(), "web".into())]))
        );
    }

    #[test]
    fn an_empty_selector_selects_nothing() {
        let rc = ReplicationController {
            spec: Some(k8s_openapi::api::core::v1::ReplicationControllerSpec {
                selector: Some(BTreeMap::new()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(
            super::super::selector_query(&as_replica_set(&rc).spec.unwrap().selector).is_empty()
        );
    }
}
