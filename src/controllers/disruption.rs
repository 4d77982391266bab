//! The disruption controller: keeps each PodDisruptionBudget's status —
//! how many of its pods are healthy, how many must be, how many the
//! owning workloads ask for, and so how many may be evicted now — which
//! the eviction subresource spends.
//!
//! The numbers, as Kubernetes computes them:
//! - the budget's pods are the pods of its namespace its selector matches
//!   (an empty selector matches all of them);
//! - `minAvailable: N` needs N healthy pods and expects as many pods as
//!   match; a percent of `minAvailable`, or any `maxUnavailable`, is taken
//!   of the replicas the pods' controllers ask for (a ReplicaSet's, or its
//!   Deployment's), rounded up;
//! - a pod is healthy when it is Ready, not being deleted and not recorded
//!   in `disruptedPods` (evicted, its delete not seen yet); an entry there
//!   is dropped once its pod goes, or after two minutes;
//! - `disruptionsAllowed` is healthy minus needed, never below zero, and
//!   zero when no pod is expected.
//!
//! The status is written with the budget's resourceVersion, so a count
//! made before an eviction spent the budget cannot overwrite it: the write
//! fails, and the budget's change brings it back for a fresh count.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};

use super::ControllerError;
use crate::resources::kinds::poddisruptionbudget::{Amount, selects};

/// How long an evicted pod may stay undeleted before the budget stops
/// counting it as disrupted (Kubernetes' `DeletionTimeout`).
const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

/// The condition type the controller keeps.
const CONDITION: &str = "DisruptionAllowed";

struct Ctx {
    client: kube::Client,
    pods: Arc<super::PodCache>,
    /// Watch-fed caches of the workloads whose replicas a share-based
    /// budget is taken of.
    replicasets: Store<ReplicaSet>,
    deployments: Store<Deployment>,
}

/// Runs the controller until `shutdown`.
pub async fn run(
    client: kube::Client,
    pods: super::PodFeed,
    cache: Arc<super::PodCache>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let pdbs: Api<PodDisruptionBudget> = Api::all(client.clone());
    let controller = Controller::new(pdbs, watcher::Config::default());
    let store = controller.store();
    // A pod change concerns every budget of its namespace that covers it
    // (a pod whose labels changed away is counted out by the next pass of
    // the budget, which the pod's deletion or the resync brings).
    let pod_to_budgets = move |pod: Arc<Pod>| {
        let ns = pod.namespace().unwrap_or_default();
        let labels = pod.labels().clone();
        store
            .state()
            .into_iter()
            .filter(|b| b.namespace().as_deref() == Some(ns.as_str()))
            .filter(|b| selects(b.spec.as_ref().and_then(|s| s.selector.as_ref()), &labels))
            .map(|b| ObjectRef::from_obj(&*b))
            .collect::<Vec<_>>()
    };
    // A workload scaled changes what the budgets of its namespace expect.
    let (replicasets, rs_writer) = reflector::store::<ReplicaSet>();
    let (deployments, deploy_writer) = reflector::store::<Deployment>();
    let rs_changes = watcher(
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(rs_writer)
    .touched_objects()
    .filter_map(|r| async move { r.ok().and_then(|rs| rs.namespace()) });
    let deploy_changes = watcher(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(deploy_writer)
    .touched_objects()
    .filter_map(|r| async move { r.ok().and_then(|d| d.namespace()) });
    let budgets = controller.store();
    let workload_changes =
        futures::stream::select(rs_changes, deploy_changes).flat_map(move |ns| {
            let refs: Vec<ObjectRef<PodDisruptionBudget>> = budgets
                .state()
                .into_iter()
                .filter(|b| b.namespace().as_deref() == Some(ns.as_str()))
                .map(|b| ObjectRef::from_obj(&*b))
                .collect();
            futures::stream::iter(refs)
        });
    let controller = controller
        .watches_shared_stream(pods, pod_to_budgets)
        .reconcile_on(workload_changes)
        .graceful_shutdown_on(shutdown);
    super::drive(
        controller,
        "disruption",
        reconcile,
        Arc::new(Ctx {
            client,
            pods: cache,
            replicasets,
            deployments,
        }),
    )
    .await;
}

async fn reconcile(
    pdb: Arc<PodDisruptionBudget>,
    ctx: Arc<Ctx>,
) -> Result<Action, ControllerError> {
    if pdb.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    ctx.pods.listed().await;
    let ns = pdb.namespace().unwrap_or_default();
    let selector = pdb.spec.as_ref().and_then(|s| s.selector.as_ref());
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .in_namespace(&ns)
        .into_iter()
        .filter(|p| selects(selector, p.labels()))
        .collect();
    let now = Timestamp::now();
    let scale = if needs_scale(&pdb) {
        let synced = ctx.replicasets.wait_until_ready().await.is_ok()
            && ctx.deployments.wait_until_ready().await.is_ok();
        if !synced {
            return Err(ControllerError::Invalid(
                "the workload watches stopped before their first list".into(),
            ));
        }
        Some(expected_scale(
            &ctx.replicasets,
            &ctx.deployments,
            &ns,
            &pods,
        ))
    } else {
        None
    };
    let counted = scale
        .unwrap_or(Ok(0))
        .and_then(|scale| count(&pdb, &pods, scale, now));
    let (status, recheck) = match counted {
        Ok(c) => (c.status(&pdb, now), c.recheck),
        Err(why) => (failed(&pdb, &why, now), None),
    };
    if pdb.status.as_ref() != Some(&status) {
        let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &ns);
        let mut next = (*pdb).clone();
        next.status = Some(status);
        // Replaced, not patched: the write carries the resourceVersion
        // the count was made against (see the module doc).
        api.replace_status(&pdb.name_any(), &PostParams::default(), &next)
            .await?;
    }
    Ok(match recheck {
        Some(at) => Action::requeue(at),
        // Pod changes wake the budget; the resync is a safety net (and
        // catches a workload scaled without its pods changing yet).
        None => Action::requeue(Duration::from_secs(60)),
    })
}

/// Whether the budget is a share of what the workloads ask for, which
/// needs their replica counts.
fn needs_scale(pdb: &PodDisruptionBudget) -> bool {
    let Some(spec) = pdb.spec.as_ref() else {
        return false;
    };
    spec.max_unavailable.is_some()
        || matches!(
            spec.min_available,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(_))
        )
}

/// The replicas the controllers of `pods` ask for, each controller once:
/// a ReplicaSet's own, or its Deployment's when a Deployment owns it.
/// Pods without a controller are not counted (Kubernetes leaves them out
/// too); a pod whose controller has no scale fails the budget.
///
/// # Errors
/// The message the budget's `SyncFailed` condition shows.
pub fn expected_scale(
    replicasets: &Store<ReplicaSet>,
    deployments: &Store<Deployment>,
    ns: &str,
    pods: &[Arc<Pod>],
) -> Result<i64, String> {
    let deployment_replicas = |name: &str| {
        deployments
            .get(&ObjectRef::new(name).within(ns))
            .and_then(|d| d.spec.as_ref().and_then(|s| s.replicas))
            .map_or(0, i64::from)
    };
    // Replicas by the uid of the controller that asks for them.
    let mut seen: HashMap<String, i64> = HashMap::new();
    for pod in pods {
        let Some(owner) = pod
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
        else {
            continue;
        };
        match owner.kind.as_str() {
            "ReplicaSet" => {
                let rs = replicasets
                    .get(&ObjectRef::new(&owner.name).within(ns))
                    .ok_or_else(|| format!("replicasets.apps \"{}\" not found", owner.name))?;
                match rs
                    .owner_references()
                    .iter()
                    .find(|o| o.controller == Some(true) && o.kind == "Deployment")
                {
                    // Counted under the Deployment, once for all its
                    // ReplicaSets.
                    Some(d) => {
                        seen.insert(d.uid.clone(), deployment_replicas(&d.name));
                    }
                    None => {
                        let replicas = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                        seen.insert(owner.uid.clone(), i64::from(replicas));
                    }
                }
            }
            "Deployment" => {
                seen.insert(owner.uid.clone(), deployment_replicas(&owner.name));
            }
            _ => {
                return Err(format!(
                    "found no controllers for pod \"{}\"",
                    pod.name_any()
                ));
            }
        }
    }
    Ok(seen.values().sum())
}

/// The counts of one pass.
#[derive(Debug, PartialEq)]
pub struct Counted {
    pub current_healthy: i32,
    pub desired_healthy: i32,
    pub expected_pods: i32,
    pub disrupted: BTreeMap<String, Time>,
    /// When the oldest kept `disruptedPods` entry expires.
    pub recheck: Option<Duration>,
}

impl Counted {
    pub fn allowed(&self) -> i32 {
        if self.expected_pods <= 0 {
            return 0;
        }
        (self.current_healthy - self.desired_healthy).max(0)
    }

    /// The status these counts make, keeping the condition's transition
    /// time when its status did not change.
    fn status(&self, pdb: &PodDisruptionBudget, now: Timestamp) -> PodDisruptionBudgetStatus {
        let allowed = self.allowed();
        let (status, reason) = if allowed > 0 {
            ("True", "SufficientPods")
        } else {
            ("False", "InsufficientPods")
        };
        PodDisruptionBudgetStatus {
            current_healthy: self.current_healthy,
            desired_healthy: self.desired_healthy,
            expected_pods: self.expected_pods,
            disruptions_allowed: allowed,
            disrupted_pods: (!self.disrupted.is_empty()).then(|| self.disrupted.clone()),
            observed_generation: pdb.metadata.generation,
            conditions: Some(vec![condition(pdb, status, reason, "", now)]),
        }
    }
}

/// The status of a budget whose pods could not be counted: nothing is
/// allowed until they can.
fn failed(pdb: &PodDisruptionBudget, why: &str, now: Timestamp) -> PodDisruptionBudgetStatus {
    let old = pdb.status.clone().unwrap_or_default();
    PodDisruptionBudgetStatus {
        disruptions_allowed: 0,
        observed_generation: pdb.metadata.generation,
        conditions: Some(vec![condition(pdb, "False", "SyncFailed", why, now)]),
        ..old
    }
}

fn condition(
    pdb: &PodDisruptionBudget,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> Condition {
    let previous = pdb
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == CONDITION));
    let since = previous
        .filter(|c| c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    Condition {
        type_: CONDITION.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: pdb.metadata.generation,
        last_transition_time: since,
    }
}

/// Counts the budget's `pods` (`scale`: what their controllers ask for,
/// when the budget is a share of it). Pure; the rules are in the module
/// doc.
///
/// # Errors
/// A budget figure that does not parse (validation refuses those).
pub fn count(
    pdb: &PodDisruptionBudget,
    pods: &[Arc<Pod>],
    scale: i64,
    now: Timestamp,
) -> Result<Counted, String> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let amount = |v: &IntOrString| {
        let json = serde_json::to_value(v).unwrap_or_default();
        Amount::parse(&json).ok_or_else(|| format!("invalid budget figure {json}"))
    };
    let spec = pdb.spec.clone().unwrap_or_default();
    let (expected, desired) = match (&spec.max_unavailable, &spec.min_available) {
        (Some(max), _) => {
            let max = amount(max)?.of(scale);
            (scale, (scale - max).max(0))
        }
        (None, Some(IntOrString::Int(min))) => (pods.len() as i64, i64::from(*min)),
        (None, Some(min)) => (scale, amount(min)?.of(scale)),
        (None, None) => (0, 0),
    };
    // Evictions whose delete is not seen yet, kept until the timeout.
    let recorded = pdb
        .status
        .as_ref()
        .and_then(|s| s.disrupted_pods.clone())
        .unwrap_or_default();
    let mut disrupted = BTreeMap::new();
    let mut recheck: Option<Duration> = None;
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = pod.name_any();
        let Some(at) = recorded.get(&name) else {
            continue;
        };
        let left = DELETION_TIMEOUT.as_secs_f64() - now.duration_since(at.0).as_secs_f64();
        if left <= 0.0 {
            continue;
        }
        let left = Duration::from_secs_f64(left);
        recheck = Some(recheck.map_or(left, |r| r.min(left)));
        disrupted.insert(name, at.clone());
    }
    let healthy = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| !disrupted.contains_key(&p.name_any()))
        .filter(|p| super::replicaset::is_ready(p))
        .count();
    let clamp = |v: i64| i32::try_from(v).unwrap_or(i32::MAX);
    Ok(Counted {
        current_healthy: clamp(healthy as i64),
        desired_healthy: clamp(desired),
        expected_pods: clamp(expected),
        disrupted,
        recheck,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn pod(name: &str, ready: bool) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.status = Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        });
        Arc::new(p)
    }

    fn budget(min: Option<IntOrString>, max: Option<IntOrString>) -> PodDisruptionBudget {
        let mut b = PodDisruptionBudget::default();
        b.metadata.generation = Some(1);
        b.spec = Some(PodDisruptionBudgetSpec {
            min_available: min,
            max_unavailable: max,
            ..PodDisruptionBudgetSpec::default()
        });
        b
    }

    fn pods(ready: usize, unready: usize) -> Vec<Arc<Pod>> {
        (0..ready)
            .map(|i| pod(&format!("r{i}"), true))
            .chain((0..unready).map(|i| pod(&format!("u{i}"), false)))
            .collect()
    }

    /// (current, desired, expected, allowed)
    fn figures(b: &PodDisruptionBudget, pods: &[Arc<Pod>], scale: i64) -> (i32, i32, i32, i32) {
        let c = count(b, pods, scale, Timestamp::now()).unwrap();
        (
            c.current_healthy,
            c.desired_healthy,
            c.expected_pods,
            c.allowed(),
        )
    }

    #[test]
    fn budgets_count_as_kubernetes_does() {
        let cases = [
            // minAvailable as a count: expects the matching pods.
            (
                budget(Some(IntOrString::Int(2)), None),
                pods(3, 0),
                3,
                (3, 2, 3, 1),
            ),
            (
                budget(Some(IntOrString::Int(3)), None),
                pods(3, 0),
                3,
                (3, 3, 3, 0),
            ),
            // Unready pods are not healthy.
            (
                budget(Some(IntOrString::Int(1)), None),
                pods(1, 2),
                3,
                (1, 1, 3, 0),
            ),
            // maxUnavailable is taken of the controllers' scale.
            (
                budget(None, Some(IntOrString::Int(1))),
                pods(3, 0),
                3,
                (3, 2, 3, 1),
            ),
            (
                budget(None, Some(IntOrString::Int(1))),
                pods(2, 0),
                3,
                (2, 2, 3, 0),
            ),
            // Percents round up.
            (
                budget(None, Some(IntOrString::String("50%".into()))),
                pods(3, 0),
                3,
                (3, 1, 3, 2),
            ),
            (
                budget(Some(IntOrString::String("50%".into())), None),
                pods(3, 0),
                3,
                (3, 2, 3, 1),
            ),
            // Neither field: every healthy pod may go.
            (budget(None, None), pods(2, 0), 2, (2, 0, 0, 0)),
            // No pods expected: nothing allowed.
            (
                budget(Some(IntOrString::Int(0)), None),
                pods(0, 0),
                0,
                (0, 0, 0, 0),
            ),
        ];
        for (b, p, scale, want) in cases {
            assert_eq!(figures(&b, &p, scale), want, "{:?}", b.spec);
        }
    }

    #[test]
    fn the_scale_is_the_deployments_once_for_all_its_replica_sets() {
        use k8s_openapi::api::apps::v1::{DeploymentSpec, ReplicaSetSpec};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        let owner = |kind: &str, name: &str| OwnerReference {
            kind: kind.into(),
            name: name.into(),
            uid: format!("{kind}-{name}"),
            controller: Some(true),
            ..OwnerReference::default()
        };
        let (deployments, mut dw) = reflector::store::<Deployment>();
        let mut d = Deployment::default();
        d.metadata.name = Some("web".into());
        d.metadata.namespace = Some("ns".into());
        d.spec = Some(DeploymentSpec {
            replicas: Some(4),
            ..DeploymentSpec::default()
        });
        dw.apply_watcher_event(&watcher::Event::Apply(d));
        let (replicasets, mut rw) = reflector::store::<ReplicaSet>();
        for (name, deployment, replicas) in
            [("web-1", true, 3), ("web-2", true, 1), ("solo", false, 2)]
        {
            let mut rs = ReplicaSet::default();
            rs.metadata.name = Some(name.into());
            rs.metadata.namespace = Some("ns".into());
            if deployment {
                rs.metadata.owner_references = Some(vec![owner("Deployment", "web")]);
            }
            rs.spec = Some(ReplicaSetSpec {
                replicas: Some(replicas),
                ..ReplicaSetSpec::default()
            });
            rw.apply_watcher_event(&watcher::Event::Apply(rs));
        }
        let owned = |name: &str, kind: &str, by: &str| {
            let mut p = (*pod(name, true)).clone();
            p.metadata.owner_references = Some(vec![owner(kind, by)]);
            Arc::new(p)
        };
        let pods = vec![
            owned("a", "ReplicaSet", "web-1"),
            owned("b", "ReplicaSet", "web-2"),
            owned("c", "ReplicaSet", "solo"),
            pod("unowned", true),
        ];
        assert_eq!(
            expected_scale(&replicasets, &deployments, "ns", &pods),
            Ok(6)
        );
        let orphan = vec![owned("d", "StatefulThing", "x")];
        assert_eq!(
            expected_scale(&replicasets, &deployments, "ns", &orphan),
            Err("found no controllers for pod \"d\"".into())
        );
    }

    #[test]
    fn evicted_pods_stop_counting_until_they_go_or_time_out() {
        let now = Timestamp::now();
        let mut b = budget(Some(IntOrString::Int(1)), None);
        let recent = Time(now - Duration::from_secs(10));
        let stale = Time(now - Duration::from_secs(300));
        b.status = Some(PodDisruptionBudgetStatus {
            disrupted_pods: Some(BTreeMap::from([
                ("r0".to_string(), recent.clone()),
                ("r1".to_string(), stale),
                ("gone".to_string(), recent.clone()),
            ])),
            ..PodDisruptionBudgetStatus::default()
        });
        let c = count(&b, &pods(3, 0), 3, now).unwrap();
        // r0 is still disrupted; r1's entry expired; "gone" has no pod.
        assert_eq!(c.disrupted, BTreeMap::from([("r0".to_string(), recent)]));
        assert_eq!(c.current_healthy, 2);
        assert!(c.recheck.is_some_and(|d| d <= Duration::from_secs(110)));
    }

    #[test]
    fn the_condition_says_whether_a_disruption_is_allowed() {
        let b = budget(Some(IntOrString::Int(1)), None);
        let now = Timestamp::now();
        let c = count(&b, &pods(2, 0), 2, now).unwrap();
        let s = c.status(&b, now);
        let cond = &s.conditions.unwrap()[0];
        assert_eq!(
            (
                cond.type_.as_str(),
                cond.status.as_str(),
                cond.reason.as_str()
            ),
            ("DisruptionAllowed", "True", "SufficientPods")
        );
        assert_eq!(s.observed_generation, Some(1));
        let failed = failed(&b, "found no controllers for pod \"x\"", now);
        let cond = &failed.conditions.unwrap()[0];
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("False", "SyncFailed")
        );
        assert_eq!(failed.disruptions_allowed, 0);
    }
}
