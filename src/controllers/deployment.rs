//! The Deployment controller: one ReplicaSet per pod template (named and
//! labelled by the template's hash), rolled with RollingUpdate (maxSurge,
//! maxUnavailable) or Recreate, revision numbers for `kubectl rollout
//! history/undo`, and the status `kubectl rollout status` waits on.
//!
//! Reconciles read ReplicaSets from a cache fed by the ReplicaSet watch,
//! never by listing them: a LIST per pass would cost the API server an
//! encode (and us a decode) of every ReplicaSet in the namespace each time
//! any of them changes.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{ControllerError, selector_matches, selector_query};

/// The label (and selector term) that ties a ReplicaSet to its template.
pub const HASH_LABEL: &str = "pod-template-hash";
/// Revision of a ReplicaSet (and of its Deployment), as kubectl reads it.
pub const REVISION: &str = "deployment.kubernetes.io/revision";

struct Ctx {
    client: kube::Client,
    /// Every ReplicaSet, fed by the ReplicaSet watch that also wakes their
    /// deployments.
    rs: Store<ReplicaSet>,
}

/// How soon a pass that lost a race with the cache (see [`reconcile`]) is
/// run again, if the watch event it waits for does not come first.
const RETRY_SOON: Duration = Duration::from_millis(200);

/// Runs the controller until `shutdown`.
pub async fn run(client: kube::Client, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let deployments: Api<Deployment> = Api::all(client.clone());
    let rs: Api<ReplicaSet> = Api::all(client.clone());
    // The ReplicaSet watch fills the cache reconciles read (the store is
    // updated before the change wakes the owning deployment).
    let (rs_store, writer) = reflector::store();
    let rs_changes = watcher(rs, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    let controller = Controller::new(deployments, watcher::Config::default())
        .owns_stream(rs_changes)
        .graceful_shutdown_on(shutdown);
    let ctx = Arc::new(Ctx {
        client,
        rs: rs_store,
    });
    super::drive(controller, "deployment", reconcile, ctx).await;
}

/// The template's hash: 10 characters from the sha256 of its JSON.
pub fn template_hash(template: &serde_json::Value) -> String {
    let digest = Sha256::digest(template.to_string().as_bytes());
    // Lowercase letters and digits without vowels, so no word is spelled.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    digest
        .iter()
        .take(10)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// maxSurge / maxUnavailable of `replicas`: a count or a percentage
/// (surge rounds up, unavailable down, as Kubernetes does).
fn scaled(v: Option<&IntOrString>, replicas: i32, default_pct: i32, round_up: bool) -> i32 {
    match v {
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => {
            let pct: i32 = s.trim_end_matches('%').parse().unwrap_or(default_pct);
            percent(replicas, pct, round_up)
        }
        None => percent(replicas, default_pct, round_up),
    }
    .max(0)
}

fn percent(replicas: i32, pct: i32, round_up: bool) -> i32 {
    let x = replicas as i64 * pct as i64;
    (if round_up { (x + 99) / 100 } else { x / 100 }) as i32
}

fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    rs.status.as_ref().map_or((0, 0, 0), |s| {
        (
            s.replicas,
            s.ready_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
        )
    })
}

/// A merge patch of a ReplicaSet decided from its cached copy, conditional
/// on that copy's resourceVersion: if the cache was behind, the write fails
/// with 409 instead of acting on an old state (scaling an old ReplicaSet
/// back up, say).
fn patch_of_copy(rs: &ReplicaSet, mut patch: serde_json::Value) -> serde_json::Value {
    if let Some(rv) = rs.resource_version() {
        patch["metadata"]["resourceVersion"] = json!(rv);
    }
    patch
}

/// Whether the pass lost a race with the ReplicaSet cache: a create of a
/// ReplicaSet the cache does not show yet (409 AlreadyExists) or a write
/// based on an old copy (409 Conflict).
fn is_conflict(e: &ControllerError) -> bool {
    matches!(e, ControllerError::Api(kube::Error::Api(s)) if s.code == 409)
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, ControllerError> {
    match sync(&d, &ctx).await {
        // The cache is behind our own writes. The ReplicaSet's watch event
        // brings the deployment back with the cache caught up; the requeue
        // is in case it came before this pass ended.
        Err(e) if is_conflict(&e) => Ok(Action::requeue(RETRY_SOON)),
        other => other,
    }
}

async fn sync(d: &Deployment, ctx: &Ctx) -> Result<Action, ControllerError> {
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = d.namespace().unwrap_or_default();
    let name = d.name_any();
    let spec = d.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let query = selector_query(&spec.selector);
    if query.is_empty() {
        return Err(ControllerError::Invalid(format!(
            "deployment {ns}/{name} has an empty selector"
        )));
    }
    let uid = d.uid().unwrap_or_default();
    // Not before the first list is complete: an empty cache would look like
    // a deployment without ReplicaSets.
    ctx.rs.wait_until_ready().await.map_err(|_| {
        ControllerError::Invalid("the ReplicaSet watch stopped before its first list".into())
    })?;
    // The deployment's ReplicaSets from the cache rather than a LIST (a
    // LIST per pass costs the API server a decode of every ReplicaSet),
    // matched as the LIST's label selector would. A cache that lags is
    // safe: a ReplicaSet's name is its template hash, so creating one the
    // cache does not show yet fails with 409 AlreadyExists instead of
    // adding a second; writes from an old copy are conditional on its
    // resourceVersion and fail with 409 Conflict; both end the pass (see
    // `reconcile`). Deleting one already gone is a 404, ignored.
    let mut all: Vec<ReplicaSet> = ctx
        .rs
        .state_filter(|rs| {
            rs.metadata.namespace.as_deref() == Some(ns.as_str())
                && selector_matches(
                    &spec.selector,
                    rs.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()),
                )
                && rs
                    .owner_references()
                    .iter()
                    .any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .into_iter()
        .map(|rs| (*rs).clone())
        .collect();
    all.sort_by_key(revision_of);

    let template = serde_json::to_value(&spec.template).unwrap_or_default();
    let hash = template_hash(&template);
    let max_revision = all.iter().map(revision_of).max().unwrap_or(0);
    let paused = spec.paused == Some(true);
    let new_rs = match all
        .iter()
        .position(|rs| rs.labels().get(HASH_LABEL) == Some(&hash))
    {
        Some(i) => {
            let rs = all.remove(i);
            if revision_of(&rs) < max_revision && !paused {
                // Rolled back to an older template: it becomes the newest
                // revision.
                let patch = json!({"metadata": {"annotations": {REVISION: (max_revision + 1).to_string()}}});
                rs_api
                    .patch(
                        &rs.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch_of_copy(&rs, patch)),
                    )
                    .await?
            } else {
                rs
            }
        }
        None if paused => {
            // A paused deployment starts no new rollout.
            return write_status(ctx, d, None, &all, replicas).await;
        }
        None => {
            let rs = new_replica_set(d, &hash, max_revision + 1);
            match rs_api.create(&PostParams::default(), &rs).await {
                Ok(rs) => rs,
                // Already there (made by an earlier pass, not in the cache
                // yet): looked at again once the cache shows it.
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    return Ok(Action::requeue(RETRY_SOON));
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let old = all;

    if !paused {
        let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
        let scale = |rs: &ReplicaSet, to: i32| {
            let api = rs_api.clone();
            let name = rs.name_any();
            let changed = spec_replicas(rs) != to;
            let patch = patch_of_copy(rs, json!({"spec": {"replicas": to}}));
            async move {
                if changed {
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await?;
                }
                Ok::<bool, kube::Error>(changed)
            }
        };
        if recreate {
            let mut old_running = 0;
            for rs in &old {
                scale(rs, 0).await?;
                old_running += status_of(rs).0;
            }
            if old_running == 0 {
                scale(&new_rs, replicas).await?;
            }
        } else {
            let ru = spec
                .strategy
                .as_ref()
                .and_then(|s| s.rolling_update.as_ref());
            let surge = scaled(ru.and_then(|r| r.max_surge.as_ref()), replicas, 25, true);
            let mut unavailable = scaled(
                ru.and_then(|r| r.max_unavailable.as_ref()),
                replicas,
                25,
                false,
            );
            if surge == 0 && unavailable == 0 {
                unavailable = 1;
            }
            let total: i32 = old.iter().map(spec_replicas).sum::<i32>() + spec_replicas(&new_rs);
            let new_want = spec_replicas(&new_rs);
            if new_want > replicas {
                scale(&new_rs, replicas).await?;
            } else if new_want < replicas {
                let room = (replicas + surge - total).max(0);
                let up = room.min(replicas - new_want);
                if up > 0 {
                    scale(&new_rs, new_want + up).await?;
                }
            }
            // Scale old ones down as far as availability allows.
            let available: i32 = old
                .iter()
                .chain(std::iter::once(&new_rs))
                .map(|rs| status_of(rs).2)
                .sum();
            let mut can_remove = (available - (replicas - unavailable)).max(0);
            // Old pods that are not available cost no availability.
            for rs in &old {
                let want = spec_replicas(rs);
                if want == 0 {
                    continue;
                }
                let unavailable_here = (want - status_of(rs).2).max(0);
                let down = (can_remove + unavailable_here).min(want);
                if down > 0 {
                    scale(rs, want - down).await?;
                    can_remove = (can_remove - (down - unavailable_here).max(0)).max(0);
                }
            }
        }
        cleanup_history(&rs_api, &old, spec.revision_history_limit.unwrap_or(10)).await?;
    }
    write_status(ctx, d, Some(&new_rs), &old, replicas).await
}

/// Deletes the oldest scaled-down ReplicaSets beyond the history limit.
async fn cleanup_history(
    api: &Api<ReplicaSet>,
    old: &[ReplicaSet],
    limit: i32,
) -> Result<(), kube::Error> {
    let idle: Vec<&ReplicaSet> = old
        .iter()
        .filter(|rs| spec_replicas(rs) == 0 && status_of(rs).0 == 0)
        .collect();
    let excess = idle.len().saturating_sub(limit.max(0) as usize);
    for rs in idle.iter().take(excess) {
        match api.delete(&rs.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn new_replica_set(d: &Deployment, hash: &str, revision: i64) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let mut template = spec.template.clone();
    let mut tmeta = template.metadata.clone().unwrap_or_default();
    tmeta
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.into());
    template.metadata = Some(tmeta.clone());
    let mut selector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.into());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", d.name_any())),
            namespace: d.namespace(),
            labels: tmeta.labels.clone(),
            annotations: Some(BTreeMap::from([(
                REVISION.to_string(),
                revision.to_string(),
            )])),
            owner_references: Some(vec![super::controller_ref(d)]),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(0),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

async fn write_status(
    ctx: &Ctx,
    d: &Deployment,
    new_rs: Option<&ReplicaSet>,
    old: &[ReplicaSet],
    replicas: i32,
) -> Result<Action, ControllerError> {
    let spec = d.spec.clone().unwrap_or_default();
    let sum = |f: fn(&ReplicaSet) -> i32| old.iter().chain(new_rs).map(f).sum::<i32>();
    let total = sum(|rs| status_of(rs).0);
    let ready = sum(|rs| status_of(rs).1);
    let available = sum(|rs| status_of(rs).2);
    let updated = new_rs.map_or(0, |rs| status_of(rs).0);
    let ru = spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let max_unavailable =
        if spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate") {
            0
        } else {
            scaled(
                ru.and_then(|r| r.max_unavailable.as_ref()),
                replicas,
                25,
                false,
            )
        };
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let old_conds = d
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let cond = |type_: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        let prev = old_conds.iter().find(|c| c.type_ == type_);
        let unchanged =
            prev.is_some_and(|p| p.status == status && p.reason.as_deref() == Some(reason));
        DeploymentCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message),
            last_update_time: if unchanged {
                prev.and_then(|p| p.last_update_time.clone())
            } else {
                Some(now.clone())
            },
            last_transition_time: match prev {
                Some(p) if p.status == status => p.last_transition_time.clone(),
                _ => Some(now.clone()),
            },
        }
    };
    let minimum = available >= replicas - max_unavailable;
    let available_cond = if minimum {
        cond(
            "Available",
            true,
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
        )
    } else {
        cond(
            "Available",
            false,
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
        )
    };
    let progressing = match new_rs {
        Some(rs) => {
            let done = updated == replicas && total == replicas && available == replicas;
            if done {
                cond(
                    "Progressing",
                    true,
                    "NewReplicaSetAvailable",
                    format!(
                        "ReplicaSet \"{}\" has successfully progressed.",
                        rs.name_any()
                    ),
                )
            } else {
                progress_condition(
                    d,
                    &old_conds,
                    (updated, ready, available, total),
                    rs,
                    &now,
                    cond,
                )
            }
        }
        None => cond(
            "Progressing",
            true,
            "DeploymentPaused",
            "Deployment is paused".into(),
        ),
    };
    let status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(total),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((replicas - available).max(0)),
        conditions: Some(vec![available_cond, progressing]),
        collision_count: None,
        terminating_replicas: None,
    };
    let api: Api<Deployment> =
        Api::namespaced(ctx.client.clone(), &d.namespace().unwrap_or_default());
    if let Some(rs) = new_rs {
        let rev = revision_of(rs).to_string();
        if d.annotations().get(REVISION) != Some(&rev) {
            let patch = json!({"metadata": {"annotations": {REVISION: rev}}});
            api.patch(
                &d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        }
    }
    if d.status.as_ref() != Some(&status) {
        api.patch_status(
            &d.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await?;
    }
    // An unfinished rollout is looked at again by its progress deadline.
    let deadline = progress_deadline(d);
    let rolling =
        new_rs.is_some() && !(updated == replicas && total == replicas && available == replicas);
    Ok(Action::requeue(if rolling {
        deadline.min(Duration::from_secs(300)) + Duration::from_secs(1)
    } else {
        Duration::from_secs(300)
    }))
}

/// `spec.progressDeadlineSeconds` (600 s when unset).
fn progress_deadline(d: &Deployment) -> Duration {
    let secs = d
        .spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|s| *s > 0)
        .unwrap_or(600);
    Duration::from_secs(secs as u64)
}

/// The Progressing condition of a rollout under way: `ReplicaSetUpdated`,
/// its update time moved whenever the counts moved forward; once nothing
/// moved for the progress deadline, False with `ProgressDeadlineExceeded`
/// (which `kubectl rollout status` reports as a failure).
fn progress_condition(
    d: &Deployment,
    old_conds: &[DeploymentCondition],
    (updated, ready, available, total): (i32, i32, i32, i32),
    rs: &ReplicaSet,
    now: &Time,
    cond: impl Fn(&str, bool, &str, String) -> DeploymentCondition,
) -> DeploymentCondition {
    let old = d.status.clone().unwrap_or_default();
    let progressed = updated > old.updated_replicas.unwrap_or(0)
        || ready > old.ready_replicas.unwrap_or(0)
        || available > old.available_replicas.unwrap_or(0)
        || total < old.replicas.unwrap_or(0);
    let prev = old_conds.iter().find(|c| c.type_ == "Progressing");
    let exceeded = prev.is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"));
    let since = prev
        .filter(|c| c.reason.as_deref() == Some("ReplicaSetUpdated"))
        .and_then(|c| c.last_update_time.as_ref())
        .map(|t| t.0);
    let stalled = since.is_some_and(|t| {
        now.0.duration_since(t).as_secs() >= progress_deadline(d).as_secs() as i64
    });
    if !progressed && (exceeded || stalled) {
        return cond(
            "Progressing",
            false,
            "ProgressDeadlineExceeded",
            format!(
                "ReplicaSet \"{}\" has timed out progressing.",
                rs.name_any()
            ),
        );
    }
    let mut c = cond(
        "Progressing",
        true,
        "ReplicaSetUpdated",
        format!("ReplicaSet \"{}\" is progressing.", rs.name_any()),
    );
    if progressed {
        c.last_update_time = Some(now.clone());
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surge_rounds_up_and_unavailable_rounds_down() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(scaled(Some(&pct("25%")), 3, 25, true), 1);
        assert_eq!(scaled(Some(&pct("25%")), 3, 25, false), 0);
        assert_eq!(scaled(None, 10, 25, true), 3);
        assert_eq!(scaled(Some(&IntOrString::Int(2)), 10, 25, false), 2);
    }

    #[test]
    fn a_template_hash_is_stable_and_changes_with_the_template() {
        let a = template_hash(&json!({"spec": {"containers": [{"image": "a"}]}}));
        assert_eq!(
            a,
            template_hash(&json!({"spec": {"containers": [{"image": "a"}]}}))
        );
        assert_ne!(
            a,
            template_hash(&json!({"spec": {"containers": [{"image": "b"}]}}))
        );
        assert_eq!(a.len(), 10);
    }

    #[test]
    fn a_write_from_a_cached_copy_is_conditional_on_its_version() {
        let mut rs = ReplicaSet::default();
        rs.metadata.resource_version = Some("42".into());
        assert_eq!(
            patch_of_copy(&rs, json!({"spec": {"replicas": 2}})),
            json!({"spec": {"replicas": 2}, "metadata": {"resourceVersion": "42"}})
        );
        // A copy without a version (never from the cache) stays as it was.
        assert_eq!(
            patch_of_copy(&ReplicaSet::default(), json!({"spec": {"replicas": 2}})),
            json!({"spec": {"replicas": 2}})
        );
    }
}
