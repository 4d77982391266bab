//! The ReplicaSet controller: as many live pods of the template as
//! `replicas` asks, owned by the ReplicaSet (orphans that match its selector
//! are adopted), and the status counts.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

use super::{ControllerError, selector_matches, selector_query};

/// Most pods created or deleted for one ReplicaSet in one pass, so a large
/// scale-up is spread over passes and never floods the API server.
const BURST: usize = 500;

/// What a pass over one replica set needs; shared with the
/// ReplicationController controller, which runs the same passes.
pub(super) struct Ctx {
    client: kube::Client,
    pods: Arc<super::PodCache>,
    /// Per ReplicaSet uid, the writes the pod cache has not shown yet.
    expected: Expectations,
}

/// How long writes are waited for before the cache is trusted anyway (a
/// watch event lost to a restart of the watch must not stall a
/// ReplicaSet).
const EXPECTATIONS_TTL: Duration = Duration::from_secs(30);

/// The pods a ReplicaSet's last passes created or deleted, until the pod
/// cache shows them: without this, a pass that ran before the cache caught
/// up would count too few pods and create more (or delete again).
#[derive(Debug, Default)]
pub struct Expected {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    since: Option<Instant>,
}

impl Expected {
    pub fn record(&mut self, creates: Vec<String>, deletes: Vec<String>, now: Instant) {
        if !creates.is_empty() || !deletes.is_empty() {
            self.creates.extend(creates);
            self.deletes.extend(deletes);
            self.since = Some(now);
        }
    }

    /// Forgets the writes the cache now shows: a created pod it lists, a
    /// deleted pod it no longer lists as active. Everything is forgotten
    /// once the writes are older than [`EXPECTATIONS_TTL`].
    pub fn observe(&mut self, active: &HashSet<String>, listed: &HashSet<String>, now: Instant) {
        if self
            .since
            .is_some_and(|t| now.duration_since(t) > EXPECTATIONS_TTL)
        {
            *self = Expected::default();
            return;
        }
        self.creates.retain(|n| !listed.contains(n));
        self.deletes.retain(|n| active.contains(n));
    }
}

/// The [`Expected`] writes of each object a controller writes pods for,
/// by the object's uid: one per controller that counts pods from the cache
/// (ReplicaSet, Job, DaemonSet).
#[derive(Debug, Default)]
pub struct Expectations(parking_lot::Mutex<HashMap<String, Expected>>);

impl Expectations {
    /// Forgets what the cache now shows of `uid`'s writes (`active` and
    /// `listed` are the names of its pods the cache shows active and at
    /// all), hands what is still expected to `decide`, and drops the
    /// entries of objects whose writes are all shown or old.
    pub fn observe<R>(
        &self,
        uid: &str,
        active: &HashSet<String>,
        listed: &HashSet<String>,
        now: Instant,
        decide: impl FnOnce(&Expected) -> R,
    ) -> R {
        let mut all = self.0.lock();
        let exp = all.entry(uid.to_string()).or_default();
        exp.observe(active, listed, now);
        let decided = decide(exp);
        all.retain(|_, e| !e.is_settled(now));
        decided
    }

    /// Records the pods `uid`'s pass created and deleted.
    pub fn record(&self, uid: &str, creates: Vec<String>, deletes: Vec<String>, now: Instant) {
        if creates.is_empty() && deletes.is_empty() {
            return;
        }
        self.0
            .lock()
            .entry(uid.to_string())
            .or_default()
            .record(creates, deletes, now);
    }
}

impl Expected {
    /// Whether the cache shows every write recorded (after [`Expected::observe`]).
    pub fn is_satisfied(&self) -> bool {
        self.creates.is_empty() && self.deletes.is_empty()
    }

    pub fn is_settled(&self, now: Instant) -> bool {
        (self.creates.is_empty() && self.deletes.is_empty())
            || self
                .since
                .is_some_and(|t| now.duration_since(t) > EXPECTATIONS_TTL)
    }
}

/// How many pods to create, or which (by name, most expendable first) to
/// delete, given the active pods the cache shows and the writes it does
/// not show yet.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    Create(usize),
    Delete(Vec<String>),
    Nothing,
}

/// `active` are the names of the active pods, most expendable first.
pub fn plan(want: usize, active: &[String], expected: &Expected) -> Plan {
    let going: Vec<&String> = active
        .iter()
        .filter(|n| !expected.deletes.contains(*n))
        .collect();
    let have = going.len() + expected.creates.len();
    if have < want {
        Plan::Create((want - have).min(BURST))
    } else if have > want {
        // Pods not yet shown cannot be chosen; the excess among those shown.
        let n = (have - want).min(going.len()).min(BURST);
        if n == 0 {
            return Plan::Nothing;
        }
        Plan::Delete(going.into_iter().take(n).cloned().collect())
    } else {
        Plan::Nothing
    }
}

/// Runs the controller until `shutdown`.
pub async fn run(
    client: kube::Client,
    pods: super::PodFeed,
    cache: Arc<super::PodCache>,
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
        Arc::new(Ctx::new(client, cache)),
    )
    .await;
}

impl Ctx {
    /// The client the passes write with.
    pub(super) fn client(&self) -> kube::Client {
        self.client.clone()
    }

    pub(super) fn new(client: kube::Client, pods: Arc<super::PodCache>) -> Ctx {
        Ctx {
            client,
            pods,
            expected: Expectations::default(),
        }
    }
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
    let status = sync(&rs, super::controller_ref(&*rs), &ctx).await?;
    if rs.status.as_ref() != Some(&status) {
        let api: Api<ReplicaSet> =
            Api::namespaced(ctx.client.clone(), &rs.namespace().unwrap_or_default());
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

/// One pass over a replica set: adopt matching orphans, create or delete
/// pods towards `replicas`, and return the status counts of what is there
/// now. `owner` is the reference its pods carry (the ReplicaSet's, or the
/// ReplicationController's whose reading `rs` is).
///
/// # Errors
/// An invalid selector, or a pod write that failed.
pub(super) async fn sync(
    rs: &ReplicaSet,
    owner: OwnerReference,
    ctx: &Ctx,
) -> Result<ReplicaSetStatus, ControllerError> {
    let ns = rs.namespace().unwrap_or_default();
    let spec = rs.spec.clone().unwrap_or_default();
    let uid = rs.uid().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let query = selector_query(&spec.selector);
    if query.is_empty() {
        return Err(ControllerError::Invalid(format!(
            "{} {ns}/{} has an empty or invalid selector",
            owner.kind.to_lowercase(),
            rs.name_any()
        )));
    }
    // Never count from half a list.
    ctx.pods.listed().await;
    // From the shared pod cache, not a LIST: what the pod watch has shown.
    let listed: Vec<Arc<Pod>> = ctx
        .pods
        .in_namespace(&ns)
        .into_iter()
        .filter(|p| {
            selector_matches(
                &spec.selector,
                p.metadata.labels.as_ref().unwrap_or(&Default::default()),
            )
        })
        .collect();
    let mut owned: Vec<Arc<Pod>> = Vec::new();
    for pod in listed {
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
            None if is_active(&pod) => {
                // Adopt the orphan, as Kubernetes does.
                let patch = json!({"metadata": {"ownerReferences": [owner]}});
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
    let mut active: Vec<&Pod> = owned
        .iter()
        .map(|p| &**p)
        .filter(|p| is_active(p))
        .collect();
    // Most expendable first: unscheduled, then not ready, then the newest.
    active.sort_by_key(|p| {
        let bound = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
        (
            bound,
            is_ready(p),
            std::cmp::Reverse(p.metadata.creation_timestamp.clone().map(|t| t.0)),
        )
    });
    let active_names: Vec<String> = active.iter().map(|p| p.name_any()).collect();
    let now = Instant::now();
    let step = {
        let listed: HashSet<String> = owned.iter().map(|p| p.name_any()).collect();
        let active_set: HashSet<String> = active_names.iter().cloned().collect();
        let want = spec.replicas.unwrap_or(1).max(0) as usize;
        ctx.expected
            .observe(&uid, &active_set, &listed, now, |exp| {
                plan(want, &active_names, exp)
            })
    };
    match step {
        Plan::Nothing => {}
        Plan::Create(n) => {
            let template = spec.template.clone().unwrap_or_default();
            let mut meta = template.metadata.clone().unwrap_or_default();
            let pod = Pod {
                metadata: ObjectMeta {
                    generate_name: Some(format!("{}-", rs.name_any())),
                    namespace: Some(ns.clone()),
                    labels: meta.labels.take(),
                    annotations: meta.annotations.take(),
                    owner_references: Some(vec![owner.clone()]),
                    ..ObjectMeta::default()
                },
                spec: template.spec.clone(),
                status: None,
            };
            let post = PostParams::default();
            let creates = (0..n).map(|_| pods_api.create(&post, &pod));
            let mut created = Vec::new();
            let mut failed = None;
            for r in futures::future::join_all(creates).await {
                match r {
                    Ok(p) => created.push(p.name_any()),
                    Err(e) => failed = Some(e),
                }
            }
            ctx.expected.record(&uid, created, Vec::new(), now);
            if let Some(e) = failed {
                return Err(e.into());
            }
        }
        Plan::Delete(victims) => {
            let dp = DeleteParams::default();
            let deletes = victims.iter().map(|name| pods_api.delete(name, &dp));
            let results = futures::future::join_all(deletes).await;
            ctx.expected.record(&uid, Vec::new(), victims, now);
            for r in results {
                match r {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
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
    Ok(status)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn set(n: &[&str]) -> HashSet<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn expected(creates: &[&str], deletes: &[&str]) -> Expected {
        Expected {
            creates: set(creates),
            deletes: set(deletes),
            since: Some(Instant::now()),
        }
    }

    #[test]
    fn plans_count_the_writes_the_cache_does_not_show_yet() {
        let cases = [
            // Plain scale-up and scale-down.
            (3, names(&["a"]), expected(&[], &[]), Plan::Create(2)),
            (
                1,
                names(&["a", "b", "c"]),
                expected(&[], &[]),
                Plan::Delete(names(&["a", "b"])),
            ),
            (2, names(&["a", "b"]), expected(&[], &[]), Plan::Nothing),
            // Two creates not shown yet: nothing more to create.
            (3, names(&["a"]), expected(&["x", "y"], &[]), Plan::Nothing),
            // A delete not shown yet: that pod is not counted, nor chosen again.
            (1, names(&["a", "b"]), expected(&[], &["a"]), Plan::Nothing),
            (
                2,
                names(&["a", "b"]),
                expected(&[], &["a"]),
                Plan::Create(1),
            ),
            // More than wanted with creates pending: delete among those shown.
            (
                1,
                names(&["a", "b"]),
                expected(&["x"], &[]),
                Plan::Delete(names(&["a", "b"])),
            ),
            (0, names(&[]), expected(&["x"], &[]), Plan::Nothing),
            // A burst at most per pass.
            (
                BURST + 10,
                names(&[]),
                expected(&[], &[]),
                Plan::Create(BURST),
            ),
        ];
        for (i, (want, active, exp, plan_wanted)) in cases.into_iter().enumerate() {
            assert_eq!(plan(want, &active, &exp), plan_wanted, "case {i}");
        }
    }

    #[test]
    fn expectations_clear_as_the_cache_shows_the_writes_or_when_they_are_old() {
        let now = Instant::now();
        let mut exp = expected(&["x", "y"], &["a"]);
        exp.since = Some(now);
        // x listed; a no longer active.
        exp.observe(&set(&["b", "x"]), &set(&["a", "b", "x"]), now);
        assert_eq!(exp.creates, set(&["y"]));
        assert!(exp.deletes.is_empty());
        assert!(!exp.is_settled(now));
        // Past the TTL, everything is forgotten.
        let later = now + EXPECTATIONS_TTL + Duration::from_secs(1);
        assert!(exp.is_settled(later));
        exp.observe(&set(&[]), &set(&[]), later);
        assert!(exp.creates.is_empty() && exp.since.is_none());
    }
}
