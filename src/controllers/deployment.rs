//! The Deployment controller: one ReplicaSet per pod template (named and
//! labelled by the template's hash), rolled with RollingUpdate (maxSurge,
//! maxUnavailable) or Recreate, revision numbers for `kubectl rollout
//! history/undo`, and the status `kubectl rollout status` waits on.

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
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{ControllerError, selector_query};

/// The label (and selector term) that ties a ReplicaSet to its template.
pub const HASH_LABEL: &str = "pod-template-hash";
/// Revision of a ReplicaSet (and of its Deployment), as kubectl reads it.
pub const REVISION: &str = "deployment.kubernetes.io/revision";

struct Ctx {
    client: kube::Client,
}

/// Runs the controller until `shutdown`.
pub async fn run(client: kube::Client, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let deployments: Api<Deployment> = Api::all(client.clone());
    let rs: Api<ReplicaSet> = Api::all(client.clone());
    let controller = Controller::new(deployments, watcher::Config::default())
        .owns(rs, watcher::Config::default())
        .graceful_shutdown_on(shutdown);
    super::drive(
        controller,
        "deployment",
        reconcile,
        Arc::new(Ctx { client }),
    )
    .await;
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

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, ControllerError> {
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
    let mut all: Vec<ReplicaSet> = rs_api
        .list(&ListParams::default().labels(&query))
        .await?
        .items
        .into_iter()
        .filter(|rs| {
            rs.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && o.uid == uid)
        })
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
                        &Patch::Merge(&patch),
                    )
                    .await?
            } else {
                rs
            }
        }
        None if paused => {
            // A paused deployment starts no new rollout.
            return write_status(&ctx, &d, None, &all, replicas).await;
        }
        None => {
            let rs = new_replica_set(&d, &hash, max_revision + 1);
            match rs_api.create(&PostParams::default(), &rs).await {
                Ok(rs) => rs,
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    return Ok(Action::requeue(Duration::from_millis(200)));
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
            async move {
                if changed {
                    let patch = json!({"spec": {"replicas": to}});
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
    write_status(&ctx, &d, Some(&new_rs), &old, replicas).await
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
}
