//! Quota admission: what Kubernetes' `LimitRanger` and `ResourceQuota`
//! admission plugins do on create.
//!
//! - A pod gets the default requests and limits of its namespace's
//!   LimitRanges for what its containers do not state, and is refused
//!   (403) when it falls outside their min, max or limit/request ratio.
//! - Any object is charged against the namespace's ResourceQuotas that
//!   track it (its count, and a pod's requests and limits) and refused
//!   (403) when that would exceed a hard limit, or when a pod does not
//!   state a compute resource a quota tracks.
//!
//! # Why a compare-and-swap on `status.used`
//!
//! Two creates racing for the last unit of a quota must not both pass.
//! Each charge is written into the quota's `status.used` with a
//! compare-and-swap on its resourceVersion, as Kubernetes does: the loser
//! of a race re-reads the quota, sees the winner's charge and is checked
//! again. This serialises exactly the writers of one quota, across API
//! servers sharing a store, without a lock held over the request (a
//! per-namespace mutex would only hold within one process). A charge for
//! an object whose create then fails stays until the resource quota
//! controller recounts the namespace, which errs on the safe side.

use serde_json::{Value, json};

use super::ApiState;
use super::objects;
use super::registry::parse_rv;
use super::status::ApiError;
use crate::resources::kinds::limitrange;
use crate::resources::kinds::resourcequota::{Usage, format, in_scope, object_usage, pod_missing};
use crate::resources::{self, Kind, quantity};

/// Tries of one quota's charge when other writers keep changing it.
const TRIES: usize = 32;

/// Admission of a create of `obj` (of `kind`, in `ns`): LimitRange
/// defaults and checks for pods, then the quota charge. Nothing is charged
/// under `dry_run`.
///
/// # Errors
/// 403 with Kubernetes' message when a LimitRange or a quota refuses.
pub async fn admit_create(
    state: &ApiState,
    kind: &Kind,
    ns: Option<&str>,
    obj: &mut Value,
    dry_run: bool,
) -> Result<(), ApiError> {
    let Some(ns) = ns else {
        return Ok(());
    };
    if kind.group.is_empty() && kind.plural == "pods" {
        limit_ranges(state, kind, ns, obj).await?;
    }
    // Most namespaces have no quota: then nothing is worked out.
    let quotas = list_in(state, "resourcequotas", ns).await?;
    if quotas.is_empty() {
        return Ok(());
    }
    let usage = object_usage(kind.group, kind.plural, obj);
    charge(state, kind, ns, quotas, obj, &usage, dry_run).await
}

/// Admission of an update from `old` to `new`: what the update adds (a
/// Service turned NodePort, a pod asking for more) is charged as a create
/// is; an update that adds nothing reads no quota.
///
/// # Errors
/// 403 with Kubernetes' message when a quota refuses.
pub async fn admit_update(
    state: &ApiState,
    kind: &Kind,
    ns: Option<&str>,
    old: &Value,
    new: &Value,
    dry_run: bool,
) -> Result<(), ApiError> {
    let Some(ns) = ns else {
        return Ok(());
    };
    let grown = growth(
        &object_usage(kind.group, kind.plural, old),
        &object_usage(kind.group, kind.plural, new),
    );
    if grown.is_empty() {
        return Ok(());
    }
    let quotas = list_in(state, "resourcequotas", ns).await?;
    if quotas.is_empty() {
        return Ok(());
    }
    charge(state, kind, ns, quotas, new, &grown, dry_run).await
}

/// What `after` uses beyond `before`, resource by resource.
fn growth(before: &Usage, after: &Usage) -> Usage {
    after
        .iter()
        .filter_map(|(r, q)| {
            let more = q.0 - before.get(r).map_or(0, |b| b.0);
            (more > 0).then(|| (r.clone(), quantity::Quantity(more)))
        })
        .collect()
}

fn forbidden(kind: &Kind, obj: &Value, why: &str) -> ApiError {
    let name = objects::name_of(obj);
    ApiError::Forbidden {
        message: format!("{} \"{name}\" is forbidden: {why}", kind.qualified_plural()),
        kind: kind.plural.into(),
        name: name.into(),
        group: kind.group.into(),
    }
}

async fn list_in(state: &ApiState, plural: &str, ns: &str) -> Result<Vec<Value>, ApiError> {
    let kind = resources::by_resource("", "v1", plural).ok_or(ApiError::NoRoute)?;
    Ok(state
        .registry
        .list(kind, Some(ns), 0, None, &|_| true)
        .await?
        .items)
}

async fn limit_ranges(
    state: &ApiState,
    kind: &Kind,
    ns: &str,
    pod: &mut Value,
) -> Result<(), ApiError> {
    let ranges = list_in(state, "limitranges", ns).await?;
    if ranges.is_empty() {
        return Ok(());
    }
    let note = limitrange::apply_defaults(pod, &ranges);
    if !note.is_empty() {
        pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"] = json!(note);
    }
    let errs = limitrange::check(pod, &ranges);
    match errs.as_slice() {
        [] => Ok(()),
        [one] => Err(forbidden(kind, pod, one)),
        many => Err(forbidden(kind, pod, &format!("[{}]", many.join(", ")))),
    }
}

/// `a=1,b=2` of `resources` in `u`, as Kubernetes prints a resource list.
fn pretty(resources: &[&String], u: &Usage) -> String {
    resources
        .iter()
        .map(|r| format!("{r}={}", u.get(*r).map_or("0".into(), |q| format(r, *q))))
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads a `name: quantity` map of a quota (`spec.hard`, `status.used`).
fn amounts(v: Option<&Value>) -> Usage {
    v.and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(r, q)| Some((r.clone(), q.as_str().and_then(quantity::parse)?)))
        .collect()
}

/// What one quota says of a create using `usage`: the charged
/// `status.used`, `None` when the quota tracks none of it.
///
/// # Errors
/// The refusal's reason, as Kubernetes words it.
pub fn check_quota(
    quota: &Value,
    kind: &Kind,
    obj: &Value,
    usage: &Usage,
) -> Result<Option<Usage>, String> {
    let qname = objects::name_of(quota);
    if !in_scope(quota, kind.group, kind.plural, obj) {
        return Ok(None);
    }
    let hard = amounts(quota.pointer("/spec/hard"));
    let tracked: Vec<&String> = hard.keys().filter(|r| usage.contains_key(*r)).collect();
    if tracked.is_empty() {
        return Ok(None);
    }
    // A pod's create (its usage counts the pod itself) must state what
    // the quota tracks; an update only pays for what it adds.
    if kind.group.is_empty() && kind.plural == "pods" && usage.contains_key("pods") {
        let names: Vec<&str> = tracked.iter().map(|r| r.as_str()).collect();
        let missing = pod_missing(obj, &names);
        if !missing.is_empty() {
            return Err(format!(
                "failed quota: {qname}: must specify {}",
                missing.join(",")
            ));
        }
    }
    let mut used = amounts(quota.pointer("/status/used"));
    let unknown: Vec<&str> = tracked
        .iter()
        .filter(|r| !used.contains_key(**r))
        .map(|r| r.as_str())
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "status unknown for quota: {qname}, resource: {}",
            unknown.join(",")
        ));
    }
    let exceeded: Vec<&String> = tracked
        .iter()
        .copied()
        .filter(|r| {
            let delta = usage[*r].0;
            delta > 0 && used[*r].0 + delta > hard[*r].0
        })
        .collect();
    if !exceeded.is_empty() {
        return Err(format!(
            "exceeded quota: {qname}, requested: {}, used: {}, limited: {}",
            pretty(&exceeded, usage),
            pretty(&exceeded, &used),
            pretty(&exceeded, &hard)
        ));
    }
    for r in tracked {
        let next = used[r].0 + usage[r].0;
        used.insert(r.clone(), quantity::Quantity(next));
    }
    Ok(Some(used))
}

/// Charges `obj` to every one of `quotas` (those of `ns`) that tracks it
/// (see the module doc for the concurrency).
async fn charge(
    state: &ApiState,
    kind: &Kind,
    ns: &str,
    quotas: Vec<Value>,
    obj: &Value,
    usage: &Usage,
    dry_run: bool,
) -> Result<(), ApiError> {
    let quota_kind = resources::by_resource("", "v1", "resourcequotas").ok_or(ApiError::NoRoute)?;
    // Every quota is checked before any is charged, so a create one quota
    // refuses charges none.
    for q in &quotas {
        check_quota(q, kind, obj, usage).map_err(|why| forbidden(kind, obj, &why))?;
    }
    if dry_run {
        return Ok(());
    }
    for q in &quotas {
        let qname = objects::name_of(q).to_string();
        let mut current = q.clone();
        let mut charged = false;
        for _ in 0..TRIES {
            let Some(used) = check_quota(&current, kind, obj, usage)
                .map_err(|why| forbidden(kind, obj, &why))?
            else {
                charged = true;
                break;
            };
            let rv = parse_rv(objects::rv_of(&current).unwrap_or("0"))?;
            let mut next = current.clone();
            next["status"]["used"] = json!(
                used.iter()
                    .map(|(r, v)| (r.clone(), json!(format(r, *v))))
                    .collect::<serde_json::Map<_, _>>()
            );
            match state
                .registry
                .update(quota_kind, Some(ns), &qname, rv, next)
                .await
            {
                Ok(_) => {
                    charged = true;
                    break;
                }
                Err(ApiError::Conflict { .. }) => {
                    current = match state.registry.try_get(quota_kind, Some(ns), &qname).await? {
                        Some(fresh) => fresh,
                        // Deleted meanwhile: nothing to charge.
                        None => {
                            charged = true;
                            break;
                        }
                    };
                }
                Err(e) => return Err(e),
            }
        }
        if !charged {
            return Err(ApiError::Conflict {
                group: String::new(),
                resource: "resourcequotas".into(),
                name: qname.clone(),
                message: format!(
                    "Operation cannot be fulfilled on resourcequotas \"{qname}\": too many concurrent changes to the quota"
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> &'static Kind {
        resources::by_resource("", "v1", "pods").unwrap()
    }

    fn quota(hard: Value, used: Value) -> Value {
        json!({"metadata": {"name": "q"}, "spec": {"hard": hard}, "status": {"hard": hard, "used": used}})
    }

    fn pod(cpu: Option<&str>) -> Value {
        let resources = cpu.map_or(json!({}), |c| json!({"requests": {"cpu": c}}));
        json!({"metadata": {"name": "p11"}, "spec": {"containers": [{"name": "c", "resources": resources}]}})
    }

    #[test]
    fn the_eleventh_pod_exceeds_a_quota_of_ten() {
        let q = quota(json!({"pods": "10"}), json!({"pods": "10"}));
        let p = pod(None);
        let err = check_quota(&q, pods(), &p, &object_usage("", "pods", &p)).unwrap_err();
        assert_eq!(
            err,
            "exceeded quota: q, requested: pods=1, used: pods=10, limited: pods=10"
        );
        let q = quota(json!({"pods": "10"}), json!({"pods": "9"}));
        let used = check_quota(&q, pods(), &p, &object_usage("", "pods", &p))
            .unwrap()
            .unwrap();
        assert_eq!(format("pods", used["pods"]), "10");
    }

    #[test]
    fn a_pod_must_state_what_a_quota_tracks() {
        let q = quota(
            json!({"requests.cpu": "1", "limits.memory": "1Gi"}),
            json!({"requests.cpu": "0", "limits.memory": "0"}),
        );
        let p = pod(None);
        assert_eq!(
            check_quota(&q, pods(), &p, &object_usage("", "pods", &p)).unwrap_err(),
            "failed quota: q: must specify requests.cpu,limits.memory"
        );
    }

    #[test]
    fn compute_is_summed_and_only_the_exceeded_resources_are_named() {
        let q = quota(
            json!({"requests.cpu": "1", "pods": "5"}),
            json!({"requests.cpu": "800m", "pods": "1"}),
        );
        let p = pod(Some("300m"));
        assert_eq!(
            check_quota(&q, pods(), &p, &object_usage("", "pods", &p)).unwrap_err(),
            "exceeded quota: q, requested: requests.cpu=300m, used: requests.cpu=800m, limited: requests.cpu=1"
        );
    }

    #[test]
    fn an_update_pays_only_for_what_it_adds() {
        let svc = |ty: &str| json!({"spec": {"type": ty, "ports": [{"port": 80}]}});
        let grown = growth(
            &object_usage("", "services", &svc("ClusterIP")),
            &object_usage("", "services", &svc("NodePort")),
        );
        assert_eq!(grown.keys().collect::<Vec<_>>(), ["services.nodeports"]);
        let q = quota(
            json!({"services.nodeports": "0"}),
            json!({"services.nodeports": "0"}),
        );
        let svcs = resources::by_resource("", "v1", "services").unwrap();
        assert!(
            check_quota(&q, svcs, &svc("NodePort"), &grown)
                .unwrap_err()
                .starts_with("exceeded quota: q, requested: services.nodeports=1")
        );
    }

    #[test]
    fn a_quota_not_yet_counted_refuses_what_it_tracks() {
        let q =
            json!({"metadata": {"name": "q"}, "spec": {"hard": {"configmaps": "2"}}, "status": {}});
        let cms = resources::by_resource("", "v1", "configmaps").unwrap();
        assert_eq!(
            check_quota(
                &q,
                cms,
                &json!({}),
                &object_usage("", "configmaps", &json!({}))
            )
            .unwrap_err(),
            "status unknown for quota: q, resource: configmaps"
        );
        // Kinds it does not track pass untouched.
        let p = pod(None);
        assert_eq!(
            check_quota(&q, pods(), &p, &object_usage("", "pods", &p)),
            Ok(None)
        );
    }
}
