//! The `eviction` subresource of pods (`POST …/pods/NAME/eviction` with a
//! `policy/v1` Eviction): a delete that first asks the PodDisruptionBudget
//! covering the pod. `kubectl drain` evicts every pod of a node this way
//! and retries the ones answered 429 until the budget allows them.
//!
//! The budget is spent with a compare-and-swap on the PodDisruptionBudget
//! (its `disruptionsAllowed` decremented and the pod recorded in
//! `disruptedPods`), so two evictions racing for the last allowed
//! disruption cannot both win: the loser re-reads and is refused. The
//! disruption controller (`controllers::disruption`) recomputes the budget
//! from the pods and forgets `disruptedPods` entries once the pods are
//! gone (or after two minutes, when a delete never happened).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::ApiState;
use super::registry::parse_rv;
use super::request::DeleteOptions;
use super::status::{ApiError, success_status};
use super::{objects, verbs};
use crate::resources::kinds::poddisruptionbudget::covers;
use crate::resources::{self, Kind};

/// Kubernetes' message for an eviction a budget does not allow.
pub const VIOLATES_BUDGET: &str =
    "Cannot evict pod as it would violate the pod's disruption budget.";

/// Kubernetes' message when several budgets cover the pod.
pub const MORE_THAN_ONE_BUDGET: &str = "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.";

/// The `type` of the cause a refused eviction names its budget in.
const DISRUPTION_BUDGET_CAUSE: &str = "DisruptionBudget";

/// Most pods a budget holds in `disruptedPods` before evictions are
/// refused: a controller that fell that far behind must catch up first.
const MAX_DISRUPTED_PODS: usize = 2000;

/// Tries of a whole eviction when the budget changed under it.
const TRIES: usize = 20;

/// What the budgets say about evicting one pod.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Delete the pod; no budget is spent (none covers it, or the pod does
    /// not count as healthy anyway).
    Delete,
    /// Spend one disruption of the budget at this index, then delete.
    Spend(usize),
}

/// Decides an eviction of `pod` covered by `pdbs` (already filtered by
/// selector). Pure, so the rules can be read off its tests.
///
/// # Errors
/// The refusal as Kubernetes words it: 429 while the budget allows no
/// disruption (or the controller has not caught up with a change of it),
/// 500 for several budgets, 403 for a budget in a state the controller
/// must repair first.
pub fn decide(pod: &Value, pdbs: &[Value]) -> Result<Decision, ApiError> {
    // Pods that are finished, not yet running or already going down do
    // not count towards any budget.
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    if matches!(phase, "Succeeded" | "Failed" | "Pending")
        || pod.pointer("/metadata/deletionTimestamp").is_some()
    {
        return Ok(Decision::Delete);
    }
    let pdb = match pdbs {
        [] => return Ok(Decision::Delete),
        [pdb] => pdb,
        _ => return Err(ApiError::internal(MORE_THAN_ONE_BUDGET)),
    };
    let name = objects::name_of(pdb);
    let status_i = |f: &str| {
        pdb.pointer(&format!("/status/{f}"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    let generation = pdb
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if status_i("observedGeneration") < generation {
        return Err(ApiError::TooManyRequestsBecause {
            message: VIOLATES_BUDGET.into(),
            causes: vec![(
                DISRUPTION_BUDGET_CAUSE.into(),
                format!("The disruption budget {name} is still being processed by the server."),
            )],
            retry_after_seconds: 10,
        });
    }
    let (current, desired) = (status_i("currentHealthy"), status_i("desiredHealthy"));
    if !is_ready(pod) {
        // An unhealthy pod is let go when the budget says so, or when the
        // healthy pods already suffice (its going changes nothing).
        let always = pdb.pointer("/spec/unhealthyPodEvictionPolicy") == Some(&json!("AlwaysAllow"));
        if always || (current >= desired && desired > 0) {
            return Ok(Decision::Delete);
        }
    }
    let allowed = status_i("disruptionsAllowed");
    let forbidden = |why: &str| ApiError::Forbidden {
        message: format!("poddisruptionbudgets.policy \"{name}\" is forbidden: {why}"),
        kind: "poddisruptionbudgets".into(),
        name: name.into(),
        group: "policy".into(),
    };
    if allowed < 0 {
        return Err(forbidden("pdb disruptions allowed is negative"));
    }
    let disrupted = pdb
        .pointer("/status/disruptedPods")
        .and_then(Value::as_object)
        .map_or(0, serde_json::Map::len);
    if disrupted > MAX_DISRUPTED_PODS {
        return Err(forbidden(
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if allowed == 0 {
        return Err(ApiError::TooManyRequestsBecause {
            message: VIOLATES_BUDGET.into(),
            causes: vec![(
                DISRUPTION_BUDGET_CAUSE.into(),
                format!(
                    "The disruption budget {name} needs {desired} healthy pods and has {current} currently"
                ),
            )],
            retry_after_seconds: 0,
        });
    }
    Ok(Decision::Spend(0))
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// The delete options an Eviction carries.
fn delete_options(eviction: &Value) -> Result<DeleteOptions, ApiError> {
    let Some(opts) = eviction.get("deleteOptions").filter(|o| !o.is_null()) else {
        return Ok(DeleteOptions::default());
    };
    if !opts.is_object() {
        return Err(ApiError::bad_request("deleteOptions must be an object"));
    }
    let text = |p: &str| opts.pointer(p).and_then(Value::as_str).map(str::to_string);
    Ok(DeleteOptions {
        propagation: text("/propagationPolicy"),
        grace_period: opts.get("gracePeriodSeconds").and_then(Value::as_i64),
        precondition_uid: text("/preconditions/uid"),
        precondition_rv: text("/preconditions/resourceVersion"),
    })
}

/// Serve an eviction of pod `ns/name`: the `Status` to answer 201 with.
///
/// # Errors
/// As [`decide`], plus 404 for a missing pod, 400 for an Eviction naming
/// another pod, and the delete's own errors.
pub async fn evict(
    state: &ApiState,
    ns: &str,
    name: &str,
    eviction: &Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    if !eviction.is_object() {
        return Err(ApiError::bad_request(
            "the body must be a policy/v1 Eviction",
        ));
    }
    let named = eviction
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !named.is_empty() && named != name {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let opts = delete_options(eviction)?;
    // `kubectl drain --dry-run=server` asks in the Eviction's options.
    let dry_run = dry_run
        || eviction
            .pointer("/deleteOptions/dryRun")
            .and_then(Value::as_array)
            .is_some_and(|d| d.iter().any(|v| v == "All"));
    let pods = kind("", "v1", "pods")?;
    let pdb_kind = kind("policy", "v1", "poddisruptionbudgets")?;
    for _ in 0..TRIES {
        let pod = state.registry.get(pods, Some(ns), name).await?;
        let labels: BTreeMap<String, String> = pod
            .pointer("/metadata/labels")
            .cloned()
            .and_then(|l| serde_json::from_value(l).ok())
            .unwrap_or_default();
        let pdbs: Vec<Value> = state
            .registry
            .list(pdb_kind, Some(ns), 0, None, &|pdb| covers(pdb, &labels))
            .await?
            .items;
        if let Decision::Spend(i) = decide(&pod, &pdbs)? {
            if dry_run {
                break;
            }
            let mut pdb = pdbs[i].clone();
            let rv = parse_rv(objects::rv_of(&pdb).unwrap_or("0"))?;
            let allowed = pdb
                .pointer("/status/disruptionsAllowed")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            pdb["status"]["disruptionsAllowed"] = json!(allowed - 1);
            if !pdb["status"]["disruptedPods"].is_object() {
                pdb["status"]["disruptedPods"] = json!({});
            }
            pdb["status"]["disruptedPods"][name] = json!(objects::now_rfc3339());
            let pdb_name = objects::name_of(&pdbs[i]).to_string();
            match state
                .registry
                .update(pdb_kind, Some(ns), &pdb_name, rv, pdb)
                .await
            {
                Ok(_) => {}
                // Another eviction (or the controller) changed the budget
                // first: decide again on what it says now.
                Err(ApiError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        verbs::delete(state, pods, Some(ns), name, &opts, dry_run).await?;
        return Ok(success_status(None));
    }
    if dry_run {
        return Ok(success_status(None));
    }
    Err(ApiError::Conflict {
        group: "policy".into(),
        resource: "poddisruptionbudgets".into(),
        name: name.into(),
        message: format!(
            "Operation cannot be fulfilled on pods/eviction \"{name}\": too many concurrent changes to its disruption budget"
        ),
    })
}

fn kind(group: &str, version: &str, plural: &str) -> Result<&'static Kind, ApiError> {
    resources::by_resource(group, version, plural).ok_or(ApiError::NoRoute)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(phase: &str, ready: bool) -> Value {
        json!({"metadata": {"name": "web-1"}, "status": {"phase": phase,
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    fn pdb(allowed: i64, current: i64, desired: i64) -> Value {
        json!({"metadata": {"name": "web", "generation": 1},
               "status": {"observedGeneration": 1, "disruptionsAllowed": allowed,
                          "currentHealthy": current, "desiredHealthy": desired}})
    }

    fn refusal(r: Result<Decision, ApiError>) -> Value {
        r.expect_err("refused").status()
    }

    #[test]
    fn a_pod_no_budget_covers_is_deleted() {
        assert_eq!(
            decide(&pod("Running", true), &[]).ok(),
            Some(Decision::Delete)
        );
    }

    #[test]
    fn a_budget_with_room_is_spent() {
        assert_eq!(
            decide(&pod("Running", true), &[pdb(1, 3, 2)]).ok(),
            Some(Decision::Spend(0))
        );
    }

    #[test]
    fn a_spent_budget_answers_429_naming_itself() {
        let s = refusal(decide(&pod("Running", true), &[pdb(0, 2, 2)]));
        assert_eq!(s["code"], 429);
        assert_eq!(s["reason"], "TooManyRequests");
        assert_eq!(s["message"], VIOLATES_BUDGET);
        assert_eq!(s["details"]["causes"][0]["reason"], "DisruptionBudget");
        assert_eq!(
            s["details"]["causes"][0]["message"],
            "The disruption budget web needs 2 healthy pods and has 2 currently"
        );
    }

    #[test]
    fn a_budget_the_controller_has_not_seen_yet_answers_429() {
        let mut b = pdb(5, 5, 0);
        b["metadata"]["generation"] = json!(2);
        let s = refusal(decide(&pod("Running", true), &[b]));
        assert_eq!(s["code"], 429);
        assert_eq!(
            s["details"]["causes"][0]["message"],
            "The disruption budget web is still being processed by the server."
        );
        assert_eq!(s["details"]["retryAfterSeconds"], 10);
    }

    #[test]
    fn two_budgets_are_a_500() {
        let s = refusal(decide(&pod("Running", true), &[pdb(1, 1, 0), pdb(1, 1, 0)]));
        assert_eq!(s["code"], 500);
        assert_eq!(
            s["message"],
            format!("Internal error occurred: {MORE_THAN_ONE_BUDGET}")
        );
    }

    #[test]
    fn finished_pending_and_terminating_pods_ignore_budgets() {
        for phase in ["Succeeded", "Failed", "Pending"] {
            assert_eq!(
                decide(&pod(phase, false), &[pdb(0, 0, 3)]).ok(),
                Some(Decision::Delete)
            );
        }
        let mut going = pod("Running", true);
        going["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert_eq!(decide(&going, &[pdb(0, 0, 3)]).ok(), Some(Decision::Delete));
    }

    #[test]
    fn an_unready_pod_goes_when_the_healthy_ones_suffice_or_the_policy_says_always() {
        assert_eq!(
            decide(&pod("Running", false), &[pdb(0, 2, 2)]).ok(),
            Some(Decision::Delete)
        );
        assert_eq!(
            refusal(decide(&pod("Running", false), &[pdb(0, 1, 2)]))["code"],
            429
        );
        let mut always = pdb(0, 1, 2);
        always["spec"] = json!({"unhealthyPodEvictionPolicy": "AlwaysAllow"});
        assert_eq!(
            decide(&pod("Running", false), &[always]).ok(),
            Some(Decision::Delete)
        );
    }

    #[test]
    fn a_negative_budget_is_forbidden() {
        let s = refusal(decide(&pod("Running", true), &[pdb(-1, 0, 0)]));
        assert_eq!(s["code"], 403);
        assert_eq!(
            s["message"],
            "poddisruptionbudgets.policy \"web\" is forbidden: pdb disruptions allowed is negative"
        );
    }

    #[test]
    fn malformed_delete_options_are_a_400() {
        assert!(delete_options(&json!({"deleteOptions": 3})).is_err());
        let o = delete_options(&json!({"deleteOptions": {"gracePeriodSeconds": 0}})).unwrap();
        assert_eq!(o.grace_period, Some(0));
    }
}
