//! The Job controller: runs pods of a Job's template until `completions`
//! of them succeed (at most `parallelism` at once), or fails the Job after
//! `backoffLimit` pod failures or past `activeDeadlineSeconds`; `suspend`
//! stops its pods, `ttlSecondsAfterFinished` deletes a finished Job.
//!
//! Counting is done from the pods themselves: the controller never deletes
//! a finished pod of an unfinished Job, so `succeeded` and `failed` survive
//! a controller restart without the tracking finalizers and
//! `uncountedTerminatedPods` bookkeeping Kubernetes uses. A pod deleted by
//! someone else before it finished is not counted (it is replaced).
//!
//! Both completion modes are served: `NonIndexed` (any `completions` pods
//! succeed) and `Indexed` (one success per index `0..completions`, the
//! index in the pod's annotation, label, hostname and `JOB_COMPLETION_INDEX`).

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{EnvVar, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

use super::replicaset::{Expectations, Expected, is_active, is_ready};
use super::{ControllerError, selector_query};
use crate::events::EventType::{Normal, Warning};
use crate::events::record;

/// Most pods created or deleted for one Job in one pass.
const BURST: usize = 500;
/// First delay before a failed pod is replaced; it doubles with every
/// further failure, up to [`MAX_BACKOFF`] (Kubernetes' figures).
const BASE_BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(360);

/// The name events from this controller carry.
const COMPONENT: &str = "job-controller";

/// The annotation (and label) with an Indexed Job pod's index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

struct Ctx {
    client: kube::Client,
    pods: Arc<super::PodCache>,
    /// Per Job uid, the creates and deletes the pod cache has not shown
    /// yet: a Job is not acted on until they show (or are old), so a pass
    /// that ran ahead of the cache does not start pods twice.
    expected: Expectations,
}

/// Runs the controller until `shutdown`.
pub async fn run(
    client: kube::Client,
    pods: super::PodFeed,
    cache: Arc<super::PodCache>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let jobs: Api<Job> = Api::all(client.clone());
    let controller = Controller::new(jobs, watcher::Config::default())
        .owns_shared_stream(pods)
        .graceful_shutdown_on(shutdown);
    let ctx = Arc::new(Ctx {
        client,
        pods: cache,
        expected: Expectations::default(),
    });
    super::drive(controller, "job", reconcile, ctx).await;
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// When a pod finished: its containers' latest termination, else the last
/// change of its conditions, else its creation. Always a time that stays
/// put between passes, so a back-off measured from it ends.
fn finished_at(p: &Pod) -> Timestamp {
    let status = p.status.as_ref();
    let terminated = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref())
        .filter_map(|t| t.finished_at.as_ref().map(|f| f.0))
        .max();
    let transition = || {
        status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0))
            .max()
    };
    terminated
        .or_else(transition)
        .or_else(|| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Container restarts of a Job's running or pending pods, which count as
/// failures when the template restarts in place (`OnFailure`).
fn restarts(pods: &[&Pod]) -> i32 {
    pods.iter()
        .filter(|p| matches!(phase(p), Some("Running" | "Pending") | None))
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .map(|c| c.restart_count)
        .sum()
}

/// Why a Job has failed, if it has: the condition reason and message.
fn failure(
    spec: &JobSpec,
    failed: i32,
    restarts: i32,
    started: Option<Timestamp>,
    now: Timestamp,
) -> Option<(&'static str, &'static str)> {
    let limit = spec.backoff_limit.unwrap_or(6);
    let on_failure = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    let restarts_exceeded = on_failure && restarts > 0 && restarts >= limit.max(1);
    if failed > limit || restarts_exceeded {
        return Some((
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ));
    }
    if let (Some(deadline), Some(start)) = (spec.active_deadline_seconds, started)
        && now.duration_since(start).as_secs() >= deadline
    {
        return Some((
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
        ));
    }
    None
}

/// The delay before the next pod may start after `failures` failures in a
/// row: 10 s, 20 s, 40 s, … capped at six minutes.
fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32 << (failures - 1).min(16);
    BASE_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

/// Indexes as Kubernetes prints them in `completedIndexes`: `0-2,5,7-8`.
fn format_indexes(indexes: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(first) = iter.next() {
        let mut last = first;
        while iter.peek() == Some(&(last + 1)) {
            last += 1;
            iter.next();
        }
        out.push(if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        });
    }
    out.join(",")
}

fn pod_index(p: &Pod) -> Option<i32> {
    p.annotations().get(COMPLETION_INDEX)?.parse().ok()
}

fn has_condition(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// Whether the Job has finished (Complete or Failed).
pub fn is_finished(job: &Job) -> bool {
    has_condition(job, "Complete") || has_condition(job, "Failed")
}

fn condition(type_: &str, status: bool, reason: &str, message: &str, now: &Time) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    }
}

/// Sets a condition, keeping the old one when nothing about it changed.
fn set_condition(conds: &mut Vec<JobCondition>, new: JobCondition) {
    match conds.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) if old.status == new.status && old.reason == new.reason => {}
        Some(old) => *old = new,
        None => conds.push(new),
    }
}

/// What one pass over a Job does, decided from the Job and its pods alone.
#[derive(Debug)]
pub struct JobPlan<'a> {
    /// Active pods to stop, most expendable first.
    pub to_delete: Vec<&'a Pod>,
    /// Pods to start (with their completion index for an Indexed Job).
    pub to_create: Vec<Option<i32>>,
    /// The new status; `active` is filled in by the writer, which knows how
    /// many creates succeeded.
    pub status: JobStatus,
    /// Active pods left once the deletions are done.
    pub active_after_deletes: i32,
    /// When to look again at the latest.
    pub requeue: Duration,
    /// Why the Job fails, if it does (reason, message).
    pub failure: Option<(String, String)>,
}

/// Decides a pass over `job` with its own `pods` at `now`.
pub fn decide<'a>(job: &Job, pods: &[&'a Pod], now: Timestamp) -> JobPlan<'a> {
    let spec = job.spec.clone().unwrap_or_default();
    let now_time = Time(now);
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions;
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let suspended = spec.suspend == Some(true);

    let active: Vec<&Pod> = pods.iter().copied().filter(|p| is_active(p)).collect();
    let terminating = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some() && is_unfinished(p))
        .count() as i32;
    let succeeded_pods: Vec<&Pod> = pods
        .iter()
        .copied()
        .filter(|p| phase(p) == Some("Succeeded"))
        .collect();
    let failed_pods: Vec<&Pod> = pods
        .iter()
        .copied()
        .filter(|p| phase(p) == Some("Failed"))
        .collect();
    let completed_indexes: BTreeSet<i32> = if indexed {
        let n = completions.unwrap_or(0);
        succeeded_pods
            .iter()
            .filter_map(|p| pod_index(p))
            .filter(|i| (0..n).contains(i))
            .collect()
    } else {
        BTreeSet::new()
    };
    let succeeded = if indexed {
        completed_indexes.len() as i32
    } else {
        succeeded_pods.len() as i32
    };
    let failed = failed_pods.len() as i32;

    let mut status = job.status.clone().unwrap_or_default();
    let mut conds = status.conditions.clone().unwrap_or_default();
    // The clock for activeDeadlineSeconds starts (and restarts after a
    // suspension) when the Job is first allowed to run.
    if suspended {
        if !has_condition(job, "Suspended") {
            set_condition(
                &mut conds,
                condition(
                    "Suspended",
                    true,
                    "JobSuspended",
                    "Job suspended",
                    &now_time,
                ),
            );
        }
    } else {
        if has_condition(job, "Suspended") {
            set_condition(
                &mut conds,
                condition("Suspended", false, "JobResumed", "Job resumed", &now_time),
            );
            status.start_time = Some(now_time.clone());
        }
        if status.start_time.is_none() {
            status.start_time = Some(now_time.clone());
        }
    }
    // A suspended Job's deadline clock is stopped.
    let started = status
        .start_time
        .as_ref()
        .map(|t| t.0)
        .filter(|_| !suspended);

    let complete = match completions {
        Some(n) => succeeded >= n,
        // A work queue is done once one pod succeeded and none still runs.
        None => succeeded > 0 && active.is_empty(),
    };
    // A failure or success already decided in an earlier pass stands.
    let decided_failure = conds
        .iter()
        .find(|c| c.type_ == "FailureTarget" && c.status == "True")
        .map(|c| (c.reason.clone(), c.message.clone()));
    let failure = match decided_failure {
        Some((reason, message)) => Some((reason.unwrap_or_default(), message.unwrap_or_default())),
        None if complete => None,
        None => failure(&spec, failed, restarts(&active), started, now)
            .map(|(r, m)| (r.to_string(), m.to_string())),
    };

    let mut requeue = Duration::from_secs(300);
    let mut to_delete: Vec<&Pod> = Vec::new();
    let mut to_create: Vec<Option<i32>> = Vec::new();
    if let Some((reason, message)) = &failure {
        set_condition(
            &mut conds,
            condition("FailureTarget", true, reason, message, &now_time),
        );
        to_delete = active.clone();
        if active.is_empty() && terminating == 0 {
            set_condition(
                &mut conds,
                condition("Failed", true, reason, message, &now_time),
            );
        }
    } else if complete {
        set_condition(
            &mut conds,
            condition(
                "SuccessCriteriaMet",
                true,
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                &now_time,
            ),
        );
        to_delete = active.clone();
        if active.is_empty() && terminating == 0 {
            set_condition(
                &mut conds,
                condition(
                    "Complete",
                    true,
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    &now_time,
                ),
            );
            status.completion_time = Some(now_time.clone());
        }
    } else if suspended {
        to_delete = active.clone();
    } else {
        let want = match completions {
            Some(n) => parallelism.min(n - succeeded),
            None if succeeded > 0 => 0,
            None => parallelism,
        }
        .max(0) as usize;
        if active.len() > want {
            let mut victims = active.clone();
            victims.sort_by_key(|p| {
                (
                    is_ready(p),
                    std::cmp::Reverse(p.metadata.creation_timestamp.clone().map(|t| t.0)),
                )
            });
            to_delete = victims.into_iter().take(active.len() - want).collect();
        } else if active.len() < want {
            // After a failure, replacements wait out the back-off.
            let last_failure = failed_pods.iter().map(|p| finished_at(p)).max();
            let last_success = succeeded_pods.iter().map(|p| finished_at(p)).max();
            let streak = failed_pods
                .iter()
                .filter(|p| last_success.is_none_or(|s| finished_at(p) > s))
                .count() as u32;
            let wait = match last_failure {
                Some(f) => {
                    let ready_at = f.checked_add(backoff(streak)).unwrap_or(f);
                    let left = ready_at.duration_since(now);
                    if left.is_positive() {
                        Duration::try_from(left).unwrap_or_default()
                    } else {
                        Duration::ZERO
                    }
                }
                None => Duration::ZERO,
            };
            if wait > Duration::ZERO {
                requeue = requeue.min(wait);
            } else if indexed {
                let running: BTreeSet<i32> = active.iter().filter_map(|p| pod_index(p)).collect();
                let n = completions.unwrap_or(0);
                to_create = (0..n)
                    .filter(|i| !completed_indexes.contains(i) && !running.contains(i))
                    .take(want - active.len())
                    .map(Some)
                    .collect();
            } else {
                to_create = vec![None; want - active.len()];
            }
        }
        if let (Some(deadline), Some(start)) = (spec.active_deadline_seconds, started) {
            let end = start
                .checked_add(Duration::from_secs(deadline.max(0) as u64))
                .unwrap_or(start);
            let left = end.duration_since(now);
            if left.is_positive() {
                requeue = requeue.min(Duration::try_from(left).unwrap_or_default());
            }
        }
    }

    let deleted = to_delete.len().min(BURST) as i32;
    // Kubernetes leaves zero counts out (`ready` and `terminating` excepted).
    let nonzero = |n: i32| (n != 0).then_some(n);
    status.ready = Some(active.iter().filter(|p| is_ready(p)).count() as i32);
    status.succeeded = nonzero(succeeded);
    status.failed = nonzero(failed);
    status.terminating = Some(terminating + deleted);
    status.uncounted_terminated_pods = Some(UncountedTerminatedPods::default());
    if indexed {
        status.completed_indexes = Some(format_indexes(&completed_indexes));
    }
    status.conditions = (!conds.is_empty()).then_some(conds);
    JobPlan {
        active_after_deletes: active.len() as i32 - deleted,
        to_delete,
        to_create,
        status,
        requeue,
        failure,
    }
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, ControllerError> {
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    if is_finished(&job) {
        return after_finish(&jobs, &job).await;
    }
    let spec = job.spec.clone().unwrap_or_default();
    let Some(selector) = spec.selector.as_ref().map(selector_query) else {
        return Err(ControllerError::Invalid(format!(
            "job {ns}/{name} has no selector"
        )));
    };
    if selector.is_empty() {
        return Err(ControllerError::Invalid(format!(
            "job {ns}/{name} has an empty selector"
        )));
    }
    let uid = job.uid().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    // Never count from half a list.
    ctx.pods.listed().await;
    // From the shared pod cache, not a LIST: the Job's own pods.
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .in_namespace(&ns)
        .into_iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .collect();
    let pods: Vec<&Pod> = pods.iter().map(|p| &**p).collect();
    let instant = Instant::now();
    {
        let listed: HashSet<String> = pods.iter().map(|p| p.name_any()).collect();
        let active: HashSet<String> = pods
            .iter()
            .filter(|p| is_active(p))
            .map(|p| p.name_any())
            .collect();
        let satisfied =
            ctx.expected
                .observe(&uid, &active, &listed, instant, Expected::is_satisfied);
        if !satisfied {
            // The pod events still on their way wake it up again.
            return Ok(Action::requeue(Duration::from_millis(500)));
        }
    }
    let plan = decide(&job, &pods, Timestamp::now());
    let JobPlan {
        ref to_delete,
        ref to_create,
        ref failure,
        requeue,
        ..
    } = plan;
    let dp = DeleteParams::background();
    let deletes = to_delete
        .iter()
        .take(BURST)
        .map(|p| pods_api.delete(p.metadata.name.as_deref().unwrap_or_default(), &dp));
    let deleted = futures::future::join_all(deletes).await;
    ctx.expected.record(
        &uid,
        Vec::new(),
        to_delete.iter().take(BURST).map(|p| p.name_any()).collect(),
        instant,
    );
    for r in deleted {
        match r {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let post = PostParams::default();
    let new_pods: Vec<Pod> = to_create
        .iter()
        .take(BURST)
        .map(|index| new_pod(&job, *index))
        .collect();
    let creates = new_pods.iter().map(|p| pods_api.create(&post, p));
    let mut created = 0;
    let results = futures::future::join_all(creates).await;
    let names = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|p| p.name_any()))
        .collect();
    ctx.expected.record(&uid, names, Vec::new(), instant);
    for r in results {
        let pod = r?;
        created += 1;
        let message = format!("Created pod: {}", pod.name_any());
        record(
            &ctx.client,
            COMPONENT,
            &*job,
            Normal,
            "SuccessfulCreate",
            message,
        )
        .await;
    }
    for p in to_delete.iter().take(BURST) {
        let message = format!("Deleted pod: {}", p.name_any());
        record(
            &ctx.client,
            COMPONENT,
            &*job,
            Normal,
            "SuccessfulDelete",
            message,
        )
        .await;
    }
    let newly = |type_: &str| {
        !has_condition(&job, type_)
            && plan
                .status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == type_ && c.status == "True")
    };
    if newly("Complete") {
        record(
            &ctx.client,
            COMPONENT,
            &*job,
            Normal,
            "Completed",
            "Job completed".into(),
        )
        .await;
    }
    if newly("Failed")
        && let Some((reason, message)) = &failure
    {
        record(
            &ctx.client,
            COMPONENT,
            &*job,
            Warning,
            reason,
            message.clone(),
        )
        .await;
    }
    if newly("Suspended") {
        record(
            &ctx.client,
            COMPONENT,
            &*job,
            Normal,
            "Suspended",
            "Job suspended".into(),
        )
        .await;
    }

    let mut status = plan.status;
    let active_now = plan.active_after_deletes + created;
    status.active = (active_now != 0).then_some(active_now);
    if job.status.as_ref() != Some(&status) {
        // A merge patch keeps what it leaves out: a count gone to zero is
        // sent as null.
        let mut body = serde_json::to_value(&status).unwrap_or_default();
        for field in ["active", "succeeded", "failed"] {
            if body.get(field).is_none() {
                body[field] = serde_json::Value::Null;
            }
        }
        jobs.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": body})),
        )
        .await?;
    }
    if to_delete.len() > BURST || to_create.len() > BURST {
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    Ok(Action::requeue(requeue.max(Duration::from_millis(100))))
}

/// Still running or about to: neither Succeeded nor Failed.
fn is_unfinished(p: &Pod) -> bool {
    !matches!(phase(p), Some("Succeeded" | "Failed"))
}

/// A finished Job waits out `ttlSecondsAfterFinished`, then is deleted
/// with its pods.
async fn after_finish(jobs: &Api<Job>, job: &Job) -> Result<Action, ControllerError> {
    let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
        return Ok(Action::await_change());
    };
    let status = job.status.clone().unwrap_or_default();
    let finished = status.completion_time.map(|t| t.0).or_else(|| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Failed" && c.status == "True")
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0)
    });
    let finished = finished.unwrap_or_else(Timestamp::now);
    let expires = finished
        .checked_add(Duration::from_secs(ttl.max(0) as u64))
        .unwrap_or(finished);
    let left = expires.duration_since(Timestamp::now());
    if left.is_positive() {
        return Ok(Action::requeue(
            Duration::try_from(left).unwrap_or_default() + Duration::from_millis(50),
        ));
    }
    match jobs
        .delete(&job.name_any(), &DeleteParams::background())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

/// A pod of the Job's template, owned by the Job; for an Indexed Job, the
/// pod of `index`.
fn new_pod(job: &Job, index: Option<i32>) -> Pod {
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let mut meta = template.metadata.unwrap_or_default();
    let mut spec = template.spec.unwrap_or_default();
    let mut labels = meta.labels.take().unwrap_or_default();
    let mut annotations = meta.annotations.take().unwrap_or_default();
    let job_name = job.name_any();
    let mut generate_name = format!("{job_name}-");
    if let Some(i) = index {
        labels.insert(COMPLETION_INDEX.into(), i.to_string());
        annotations.insert(COMPLETION_INDEX.into(), i.to_string());
        generate_name = format!("{job_name}-{i}-");
        spec.hostname = Some(format!("{job_name}-{i}"));
        for c in spec
            .init_containers
            .iter_mut()
            .flatten()
            .chain(spec.containers.iter_mut())
        {
            c.env.get_or_insert_with(Vec::new).push(EnvVar {
                name: "JOB_COMPLETION_INDEX".into(),
                value: Some(i.to_string()),
                value_from: None,
            });
        }
    }
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.namespace(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![super::controller_ref(job)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerStatus, PodSpec, PodStatus, PodTemplateSpec};

    fn job_of(spec: serde_json::Value) -> Job {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "j", "namespace": "d", "uid": "u1"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn pod_in(phase: &str, index: Option<i32>) -> Pod {
        let mut meta = serde_json::json!({"name": format!("p-{phase}-{index:?}"),
            "creationTimestamp": "2026-01-01T00:00:00Z"});
        if let Some(i) = index {
            meta["annotations"] = serde_json::json!({COMPLETION_INDEX: i.to_string()});
        }
        serde_json::from_value(serde_json::json!({
            "metadata": meta,
            "spec": {"containers": [{"name": "c"}]},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    fn condition_set(plan: &JobPlan, type_: &str) -> bool {
        plan.status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == type_ && c.status == "True")
    }

    #[test]
    fn decisions_start_stop_finish_and_fail_as_the_job_says() {
        let now = Timestamp::now();
        let template =
            serde_json::json!({"spec": {"restartPolicy": "Never", "containers": [{"name": "c"}]}});
        let base = |extra: serde_json::Value| {
            let mut spec = serde_json::json!({"template": template, "backoffLimit": 6});
            for (k, v) in extra.as_object().unwrap() {
                spec[k] = v.clone();
            }
            job_of(spec)
        };
        // (job, pods, creates, deletes, condition expected)
        type Case<'a> = (Job, Vec<&'a Pod>, Vec<Option<i32>>, usize, Option<&'a str>);
        let running = pod_in("Running", None);
        let succeeded = pod_in("Succeeded", None);
        let failed = pod_in("Failed", None);
        let done_1 = pod_in("Succeeded", Some(1));
        let cases: Vec<Case> = vec![
            // A new Job starts `parallelism` pods.
            (
                base(serde_json::json!({"completions": 3, "parallelism": 2})),
                vec![],
                vec![None, None],
                0,
                None,
            ),
            // Running at parallelism: nothing to start.
            (
                base(serde_json::json!({"completions": 3, "parallelism": 1})),
                vec![&running],
                vec![],
                0,
                None,
            ),
            // Enough successes: complete, nothing started.
            (
                base(serde_json::json!({"completions": 1, "parallelism": 1})),
                vec![&succeeded],
                vec![],
                0,
                Some("Complete"),
            ),
            // Past the back-off limit: failed.
            (
                base(serde_json::json!({"completions": 1, "backoffLimit": 0})),
                vec![&failed],
                vec![],
                0,
                Some("Failed"),
            ),
            // Suspended: its running pod is stopped.
            (
                base(serde_json::json!({"completions": 1, "suspend": true})),
                vec![&running],
                vec![],
                1,
                Some("Suspended"),
            ),
            // Indexed: the indexes not done yet are started.
            (
                base(serde_json::json!({"completions": 3, "parallelism": 3,
                    "completionMode": "Indexed"})),
                vec![&done_1],
                vec![Some(0), Some(2)],
                0,
                None,
            ),
        ];
        for (i, (job, pods, creates, deletes, condition)) in cases.into_iter().enumerate() {
            let plan = decide(&job, &pods, now);
            assert_eq!(plan.to_create, creates, "case {i}");
            assert_eq!(plan.to_delete.len(), deletes, "case {i}");
            if let Some(c) = condition {
                assert!(
                    condition_set(&plan, c),
                    "case {i}: {:?}",
                    plan.status.conditions
                );
            }
        }
    }

    fn spec(backoff_limit: i32, policy: &str, deadline: Option<i64>) -> JobSpec {
        JobSpec {
            backoff_limit: Some(backoff_limit),
            active_deadline_seconds: deadline,
            template: PodTemplateSpec {
                metadata: None,
                spec: Some(PodSpec {
                    restart_policy: Some(policy.into()),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }
    }

    #[test]
    fn a_job_fails_past_its_backoff_limit_or_deadline() {
        let now: Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        let long_ago: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let cases = [
            // (spec, failed pods, restarts, started, expected reason)
            (spec(1, "Never", None), 1, 0, None, None),
            (
                spec(1, "Never", None),
                2,
                0,
                None,
                Some("BackoffLimitExceeded"),
            ),
            (
                spec(0, "Never", None),
                1,
                0,
                None,
                Some("BackoffLimitExceeded"),
            ),
            (spec(6, "Never", None), 6, 0, None, None),
            // Restarts in place count only for OnFailure.
            (spec(2, "OnFailure", None), 0, 1, None, None),
            (
                spec(2, "OnFailure", None),
                0,
                2,
                None,
                Some("BackoffLimitExceeded"),
            ),
            (
                spec(0, "OnFailure", None),
                0,
                1,
                None,
                Some("BackoffLimitExceeded"),
            ),
            (spec(2, "Never", None), 0, 5, None, None),
            (
                spec(6, "Never", Some(600)),
                0,
                0,
                Some(long_ago),
                Some("DeadlineExceeded"),
            ),
            (spec(6, "Never", Some(601)), 0, 0, Some(long_ago), None),
            (spec(6, "Never", Some(1)), 0, 0, None, None),
        ];
        for (i, (spec, failed, restarts, started, want)) in cases.into_iter().enumerate() {
            let got = failure(&spec, failed, restarts, started, now).map(|(r, _)| r);
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn the_back_off_doubles_up_to_six_minutes() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(2), Duration::from_secs(20));
        assert_eq!(backoff(4), Duration::from_secs(80));
        assert_eq!(backoff(7), MAX_BACKOFF);
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[test]
    fn completed_indexes_are_printed_as_ranges() {
        let set = |v: &[i32]| v.iter().copied().collect::<BTreeSet<i32>>();
        assert_eq!(format_indexes(&set(&[])), "");
        assert_eq!(format_indexes(&set(&[0])), "0");
        assert_eq!(format_indexes(&set(&[0, 1, 2, 5, 7, 8])), "0-2,5,7-8");
    }

    #[test]
    fn restarts_count_only_pods_still_running() {
        let pod = |phase: &str, restarts: i32| Pod {
            status: Some(PodStatus {
                phase: Some(phase.into()),
                container_statuses: Some(vec![ContainerStatus {
                    restart_count: restarts,
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        let (a, b, c) = (pod("Running", 2), pod("Pending", 1), pod("Failed", 5));
        assert_eq!(restarts(&[&a, &b, &c]), 3);
    }

    #[test]
    fn indexed_pods_carry_their_index() {
        let job = Job {
            metadata: ObjectMeta {
                name: Some("work".into()),
                namespace: Some("default".into()),
                uid: Some("u1".into()),
                ..ObjectMeta::default()
            },
            spec: Some(JobSpec {
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec {
                        containers: vec![Default::default()],
                        ..PodSpec::default()
                    }),
                },
                ..JobSpec::default()
            }),
            status: None,
        };
        let pod = new_pod(&job, Some(2));
        assert_eq!(pod_index(&pod), Some(2));
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("work-2-"));
        let spec = pod.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("work-2"));
        let env = spec.containers[0].env.clone().unwrap();
        assert_eq!(env[0].name, "JOB_COMPLETION_INDEX");
        assert_eq!(env[0].value.as_deref(), Some("2"));
        let owner = &pod.metadata.owner_references.unwrap()[0];
        assert_eq!((owner.uid.as_str(), owner.controller), ("u1", Some(true)));
    }
}
