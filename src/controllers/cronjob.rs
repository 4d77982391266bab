//! The CronJob controller: creates a Job from `jobTemplate` at each time
//! `schedule` names (in `timeZone`, else the controller's local zone),
//! honouring `startingDeadlineSeconds`, `concurrencyPolicy` and `suspend`,
//! keeps `successfulJobsHistoryLimit`/`failedJobsHistoryLimit` finished
//! Jobs, and reports `active`, `lastScheduleTime` and `lastSuccessfulTime`.
//!
//! Each pass looks only at the most recent missed time (as Kubernetes
//! does: a CronJob that was down for a while runs once, not once per
//! missed slot) and then sleeps until the next one. A Job's name is the
//! CronJob's name and its scheduled time in minutes since the epoch, so a
//! slot is never run twice, even across controller restarts.
//!
//! Reconciles read Jobs from a cache fed by the Job watch, never by
//! listing them: a LIST per pass would cost the API server an encode (and
//! us a decode) of every Job in the namespace each time any of them
//! changes.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::tz::TimeZone;
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::ControllerError;
use super::job::is_finished;
use crate::events::EventType::Normal;
use crate::events::record;
use crate::resources::cron::Schedule;

/// The name events from this controller carry.
const COMPONENT: &str = "cronjob-controller";

/// The annotation on a CronJob's Job with the time it was scheduled for.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

struct Ctx {
    client: kube::Client,
    /// Every Job, fed by the Job watch that also wakes their CronJobs.
    jobs: Store<Job>,
}

/// Runs the controller until `shutdown`.
pub async fn run(client: kube::Client, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let cronjobs: Api<CronJob> = Api::all(client.clone());
    let jobs: Api<Job> = Api::all(client.clone());
    // The Job watch fills the cache reconciles read (the store is updated
    // before the change wakes the owning CronJob).
    let (job_store, writer) = reflector::store();
    let job_changes = watcher(jobs, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    let controller = Controller::new(cronjobs, watcher::Config::default())
        .owns_stream(job_changes)
        .graceful_shutdown_on(shutdown);
    let ctx = Arc::new(Ctx {
        client,
        jobs: job_store,
    });
    super::drive(controller, "cronjob", reconcile, ctx).await;
}

/// The zone a CronJob's schedule is read in.
fn time_zone(spec: &CronJobSpec) -> Result<TimeZone, ControllerError> {
    match spec.time_zone.as_deref() {
        None | Some("") => Ok(TimeZone::system()),
        Some(name) => TimeZone::get(name)
            .map_err(|e| ControllerError::Invalid(format!("time zone {name:?}: {e}"))),
    }
}

/// The Job name for a scheduled time: stable, so a slot runs once.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

/// What to do at `now`: the most recent scheduled time not yet run (after
/// `earliest`, within the starting deadline), if any.
fn due(
    schedule: &Schedule,
    tz: &TimeZone,
    earliest: Timestamp,
    starting_deadline: Option<i64>,
    now: Timestamp,
) -> Option<Timestamp> {
    // Slots older than the starting deadline are missed, not run late.
    let earliest = match starting_deadline {
        Some(s) => earliest.max(
            now.checked_sub(Duration::from_secs(s.max(0) as u64))
                .unwrap_or(now),
        ),
        None => earliest,
    };
    schedule
        .last_at_or_before(now, tz)
        .filter(|t| *t > earliest)
}

fn job_time(job: &Job) -> Option<Timestamp> {
    let status = job.status.as_ref()?;
    status
        .completion_time
        .as_ref()
        .or(status.start_time.as_ref())
        .map(|t| t.0)
        .or_else(|| job.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn job_failed(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Failed" && c.status == "True"))
}

fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some(Job::api_version(&()).to_string()),
        kind: Some(Job::kind(&()).to_string()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        field_path: None,
    }
}

/// What a due slot leads to.
#[derive(Debug, PartialEq, Eq)]
enum Start {
    /// Its Job exists already.
    AlreadyRun,
    /// `Forbid` and a run is still active: the slot is skipped.
    Skip,
    /// Start it; with `Replace`, after deleting the active runs.
    Run { replace: bool },
}

fn start(policy: &str, exists: bool, active: usize) -> Start {
    match policy {
        _ if exists => Start::AlreadyRun,
        "Forbid" if active > 0 => Start::Skip,
        "Replace" => Start::Run {
            replace: active > 0,
        },
        _ => Start::Run { replace: false },
    }
}

/// Finished Jobs beyond the history limits, oldest first.
fn expired(jobs: &[Job], successful_limit: i32, failed_limit: i32) -> Vec<String> {
    let mut finished: Vec<&Job> = jobs.iter().filter(|j| is_finished(j)).collect();
    finished.sort_by_key(|j| job_time(j));
    let (failed, succeeded): (Vec<&Job>, Vec<&Job>) =
        finished.into_iter().partition(|j| job_failed(j));
    let mut out = Vec::new();
    for (list, limit) in [(&succeeded, successful_limit), (&failed, failed_limit)] {
        let excess = list.len().saturating_sub(limit.max(0) as usize);
        out.extend(list.iter().take(excess).map(|j| j.name_any()));
    }
    out
}

/// Deletes a Job; whether this call deleted it (false: it was gone
/// already, deleted by an earlier pass the cache does not show yet).
async fn delete_job(api: &Api<Job>, name: &str) -> Result<bool, ControllerError> {
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn controlled_by(job: &Job, uid: &str) -> bool {
    job.owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action, ControllerError> {
    if cj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = cj.namespace().unwrap_or_default();
    let name = cj.name_any();
    let uid = cj.uid().unwrap_or_default();
    let spec = cj.spec.clone().unwrap_or_default();
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let cj_api: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
    // Not before the first list is complete: an empty cache would look like
    // a CronJob without Jobs.
    ctx.jobs.wait_until_ready().await.map_err(|_| {
        ControllerError::Invalid("the Job watch stopped before its first list".into())
    })?;
    // The CronJob's Jobs from the cache rather than a LIST (a LIST per pass
    // costs the API server a decode of every Job in the namespace). A cache
    // that lags is safe: a Job's name is its scheduled minute, so creating
    // one the cache does not show yet fails with 409 AlreadyExists (taken
    // as run) instead of running the slot twice, and deleting one already
    // gone is a 404, ignored.
    let mut jobs: Vec<Job> = ctx
        .jobs
        .state_filter(|j| {
            j.metadata.namespace.as_deref() == Some(ns.as_str()) && controlled_by(j, &uid)
        })
        .into_iter()
        .map(|j| (*j).clone())
        .collect();
    // A Job the status lists as active but the cache does not show yet (it
    // was created by the pass that wrote that status) is read by name, as
    // Kubernetes does, so `active` does not drop it until the watch catches
    // up; one that is gone is dropped.
    let unseen: Vec<String> = cj
        .status
        .as_ref()
        .and_then(|s| s.active.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|r| r.name.clone())
        .filter(|n| !jobs.iter().any(|j| j.metadata.name.as_ref() == Some(n)))
        .collect();
    for name in unseen {
        if let Some(job) = jobs_api.get_opt(&name).await?
            && controlled_by(&job, &uid)
        {
            jobs.push(job);
        }
    }

    let mut status = cj.status.clone().unwrap_or_default();
    let last_success = jobs
        .iter()
        .filter(|j| is_finished(j) && !job_failed(j))
        .filter_map(|j| j.status.as_ref()?.completion_time.as_ref().map(|t| t.0))
        .max();
    if let Some(t) = last_success
        && status
            .last_successful_time
            .as_ref()
            .is_none_or(|old| old.0 < t)
    {
        status.last_successful_time = Some(Time(t));
    }

    let expired = expired(
        &jobs,
        spec.successful_jobs_history_limit.unwrap_or(3),
        spec.failed_jobs_history_limit.unwrap_or(1),
    );
    for job in &expired {
        if !delete_job(&jobs_api, job).await? {
            continue;
        }
        let message = format!("Deleted job {job}");
        record(
            &ctx.client,
            COMPONENT,
            &*cj,
            Normal,
            "SuccessfulDelete",
            message,
        )
        .await;
    }
    jobs.retain(|j| !expired.contains(&j.name_any()));

    let mut active: Vec<&Job> = jobs.iter().filter(|j| !is_finished(j)).collect();
    let mut created: Option<Job> = None;
    let mut requeue = Duration::from_secs(300);
    let plan = if spec.suspend == Some(true) {
        None
    } else {
        // The API server refuses bad schedules and zones; one that still
        // fails here (a zone gone from this host's database) waits for an
        // edit instead of being retried.
        let parsed = Schedule::parse(&spec.schedule)
            .map_err(|e| ControllerError::Invalid(format!("schedule: {e}")))
            .and_then(|s| Ok((s, time_zone(&spec)?)));
        let (schedule, tz) = match parsed {
            Ok(ok) => ok,
            Err(e) => {
                tracing::warn!(cronjob = %format!("{ns}/{name}"), error = %e, "cannot schedule");
                return Ok(Action::await_change());
            }
        };
        let now = Timestamp::now();
        let earliest = status
            .last_schedule_time
            .as_ref()
            .or(cj.metadata.creation_timestamp.as_ref())
            .map_or(now, |t| t.0);
        if let Some(next) = schedule.next_after(now, &tz) {
            let left = next.duration_since(now);
            requeue = Duration::try_from(left).unwrap_or_default() + Duration::from_millis(100);
        }
        due(
            &schedule,
            &tz,
            earliest,
            spec.starting_deadline_seconds,
            now,
        )
        .map(|t| (t, tz))
    };
    if let Some((scheduled, tz)) = plan {
        let job_name = job_name(&name, scheduled);
        let exists = jobs.iter().any(|j| j.name_any() == job_name);
        let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
        match start(policy, exists, active.len()) {
            // Run already (the status write of that pass was lost).
            Start::AlreadyRun => status.last_schedule_time = Some(Time(scheduled)),
            Start::Skip => {
                let message = "Not starting job because prior execution is running and concurrency policy is Forbid";
                record(
                    &ctx.client,
                    COMPONENT,
                    &*cj,
                    Normal,
                    "JobAlreadyActive",
                    message.into(),
                )
                .await;
            }
            Start::Run { replace } => {
                if replace {
                    for job in &active {
                        if !delete_job(&jobs_api, &job.name_any()).await? {
                            continue;
                        }
                        let message = format!("Deleted job {}", job.name_any());
                        record(
                            &ctx.client,
                            COMPONENT,
                            &*cj,
                            Normal,
                            "SuccessfulDelete",
                            message,
                        )
                        .await;
                    }
                    active.clear();
                }
                let job = new_job(&cj, &job_name, scheduled, &tz);
                match jobs_api.create(&PostParams::default(), &job).await {
                    Ok(job) => {
                        let message = format!("Created job {}", job.name_any());
                        record(
                            &ctx.client,
                            COMPONENT,
                            &*cj,
                            Normal,
                            "SuccessfulCreate",
                            message,
                        )
                        .await;
                        created = Some(job);
                    }
                    // Already there (made by an earlier pass whose status
                    // write was lost, and not in the cache yet): the slot
                    // has run.
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
                status.last_schedule_time = Some(Time(scheduled));
            }
        }
    }
    let refs: Vec<ObjectReference> = active
        .iter()
        .copied()
        .chain(created.as_ref())
        .map(reference)
        .collect();
    status.active = (!refs.is_empty()).then_some(refs);
    if cj.status.as_ref() != Some(&status) {
        // A merge patch cannot remove `active` by omission: send null.
        let mut body = serde_json::to_value(&status).unwrap_or_default();
        if status.active.is_none() {
            body["active"] = serde_json::Value::Null;
        }
        cj_api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": body})),
            )
            .await?;
    }
    if spec.suspend == Some(true) {
        return Ok(Action::requeue(Duration::from_secs(300)));
    }
    Ok(Action::requeue(requeue))
}

/// The Job for one scheduled time, owned by the CronJob.
fn new_job(cj: &CronJob, name: &str, scheduled: Timestamp, tz: &TimeZone) -> Job {
    let spec = cj.spec.clone().unwrap_or_default();
    let template = spec.job_template;
    let meta = template.metadata.unwrap_or_default();
    let mut annotations: BTreeMap<String, String> = meta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP.into(), rfc3339_in(scheduled, tz));
    Job {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: cj.namespace(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![super::controller_ref(cj)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// RFC 3339 in the schedule's zone, `Z` for a zero offset.
fn rfc3339_in(t: Timestamp, tz: &TimeZone) -> String {
    let zoned = t.to_zoned(tz.clone());
    if zoned.offset().seconds() == 0 {
        zoned.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_most_recent_unrun_slot_is_due() {
        let every_minute = Schedule::parse("* * * * *").unwrap();
        let hourly = Schedule::parse("@hourly").unwrap();
        let utc = TimeZone::UTC;
        let cases = [
            // (schedule, earliest, deadline, now, due)
            (&every_minute, "10:00:30", None, "10:00:50", None),
            (
                &every_minute,
                "10:00:30",
                None,
                "10:01:05",
                Some("10:01:00"),
            ),
            // Three slots missed: only the latest runs.
            (
                &every_minute,
                "10:00:30",
                None,
                "10:04:05",
                Some("10:04:00"),
            ),
            // Already run at 10:01.
            (&every_minute, "10:01:00", None, "10:01:30", None),
            (&hourly, "09:30:00", Some(10), "10:00:05", Some("10:00:00")),
            // Past the starting deadline: missed.
            (&hourly, "09:30:00", Some(10), "10:00:11", None),
            (&hourly, "09:30:00", Some(0), "10:00:00", None),
        ];
        let at = |t: &str| ts(&format!("2026-01-01T{t}Z"));
        for (i, (schedule, earliest, deadline, now, want)) in cases.into_iter().enumerate() {
            let got = due(schedule, &utc, at(earliest), deadline, at(now));
            assert_eq!(got, want.map(at), "case {i}");
        }
    }

    #[test]
    fn the_concurrency_policy_decides_about_a_due_slot() {
        let cases = [
            // (policy, job exists, active runs, decision)
            ("Allow", false, 0, Start::Run { replace: false }),
            ("Allow", false, 2, Start::Run { replace: false }),
            ("Forbid", false, 0, Start::Run { replace: false }),
            ("Forbid", false, 1, Start::Skip),
            ("Replace", false, 0, Start::Run { replace: false }),
            ("Replace", false, 1, Start::Run { replace: true }),
            ("Allow", true, 0, Start::AlreadyRun),
            ("Forbid", true, 1, Start::AlreadyRun),
        ];
        for (policy, exists, active, want) in cases {
            assert_eq!(
                start(policy, exists, active),
                want,
                "{policy} {exists} {active}"
            );
        }
    }

    #[test]
    fn finished_jobs_beyond_the_history_limits_go_oldest_first() {
        let job = |name: &str, minute: u32, outcome: Option<&str>| -> Job {
            let conditions = outcome.map(|c| json!([{"type": c, "status": "True"}]));
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "status": {"completionTime": format!("2026-01-01T00:{minute:02}:00Z"),
                           "conditions": conditions}
            }))
            .unwrap()
        };
        let jobs = vec![
            job("ok-3", 3, Some("Complete")),
            job("ok-1", 1, Some("Complete")),
            job("ok-2", 2, Some("Complete")),
            job("bad-1", 4, Some("Failed")),
            job("bad-2", 5, Some("Failed")),
            job("running", 6, None),
        ];
        assert_eq!(expired(&jobs, 2, 1), ["ok-1", "bad-1"]);
        assert_eq!(
            expired(&jobs, 0, 0),
            ["ok-1", "ok-2", "ok-3", "bad-1", "bad-2"]
        );
        assert!(expired(&jobs, 3, 2).is_empty());
    }

    #[test]
    fn job_names_count_minutes_since_the_epoch() {
        assert_eq!(
            job_name("backup", ts("2026-01-01T00:00:00Z")),
            "backup-29453760"
        );
        assert_eq!(
            job_name("backup", ts("2026-01-01T00:00:59Z")),
            job_name("backup", ts("2026-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn a_scheduled_job_carries_the_template_and_the_scheduled_time() {
        let cj: CronJob = serde_json::from_value(json!({
            "metadata": {"name": "nightly", "namespace": "ops", "uid": "c1"},
            "spec": {"schedule": "@daily", "jobTemplate": {
                "metadata": {"labels": {"team": "ops"}},
                "spec": {"template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "job", "image": "job:v1"}]}}}}}
        }))
        .unwrap();
        let job = new_job(&cj, "nightly-1", ts("2026-01-01T00:00:00Z"), &TimeZone::UTC);
        assert_eq!(job.labels().get("team").map(String::as_str), Some("ops"));
        assert_eq!(
            job.annotations()
                .get(SCHEDULED_TIMESTAMP)
                .map(String::as_str),
            Some("2026-01-01T00:00:00Z")
        );
        let owner = &job.owner_references()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("CronJob", "c1"));
        assert!(job.spec.is_some());
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        assert_eq!(
            rfc3339_in(ts("2026-01-01T00:00:00Z"), &berlin),
            "2026-01-01T01:00:00+01:00"
        );
    }
}
