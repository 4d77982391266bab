//! RBAC escalation prevention: nobody grants rights they do not hold.
//!
//! RBAC alone would let a user allowed to `create rolebindings` bind
//! `cluster-admin` to themselves, or a user allowed to `update` a Role widen
//! it to `*`. As in Kubernetes, a write of a Role or ClusterRole is allowed
//! only when the writer already holds every right it lists (or holds the
//! `escalate` verb on it), and a write of a binding only when the writer
//! holds every right of the role it refers to (or the `bind` verb on that
//! role). `system:masters` holds everything.
//!
//! The check runs after RBAC let the request through and the object was
//! decoded, on the object that would be stored, so a patch is judged by its
//! result.

use serde_json::Value;

use super::ApiState;
use super::authn::UserInfo;
use super::rbac::Attributes;
use super::status::ApiError;
use crate::resources::{self, Kind};

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Most (requested right × held rule) comparisons one write may cost; a
/// role larger than this is refused instead of checked, so a hostile body
/// cannot buy unbounded CPU. Real roles are far below it (a role of 50
/// resources × 10 verbs against 200 held rules is 100,000).
const MAX_COMPARISONS: usize = 5_000_000;

/// Refuses the create or update of an RBAC object that would grant rights
/// `user` does not hold. `old` is the stored object on update: an update
/// that leaves the granted rights as they are is not judged again.
///
/// # Errors
/// [`ApiError::Forbidden`] with Kubernetes' message, listing the rights not
/// held; [`ApiError::Forbidden`] too when a binding names a role that does
/// not exist (its rights cannot be confirmed).
pub async fn check(
    state: &ApiState,
    user: &UserInfo,
    kind: &Kind,
    ns: Option<&str>,
    old: Option<&Value>,
    new: &Value,
) -> Result<(), ApiError> {
    if kind.group != RBAC_GROUP || user.groups.iter().any(|g| g == "system:masters") {
        return Ok(());
    }
    let ns = ns.unwrap_or("");
    let name = super::objects::name_of(new);
    let forbidden = |message: String| ApiError::Forbidden {
        message: format!(
            "{}.{RBAC_GROUP} \"{name}\" is forbidden: {message}",
            kind.plural
        ),
        kind: kind.plural.to_string(),
        name: name.to_string(),
        group: RBAC_GROUP.to_string(),
    };
    let granted = match kind.kind {
        "Role" | "ClusterRole" => {
            let rules = |v: &Value| v.get("rules").cloned().unwrap_or(Value::Null);
            if old.is_some_and(|o| rules(o) == rules(new)) {
                return Ok(());
            }
            let escalate = Attributes {
                verb: "escalate".into(),
                group: RBAC_GROUP.into(),
                resource: kind.plural.into(),
                namespace: ns.into(),
                name: name.into(),
                ..Default::default()
            };
            if state.rbac.allows(user, &escalate) {
                return Ok(());
            }
            rules_of(new)
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            let grant = |v: &Value| (v.get("roleRef").cloned(), v.get("subjects").cloned());
            if old.is_some_and(|o| grant(o) == grant(new)) {
                return Ok(());
            }
            let role_ref = new.get("roleRef").unwrap_or(&Value::Null);
            let role_kind = role_ref.get("kind").and_then(Value::as_str).unwrap_or("");
            let role_name = role_ref.get("name").and_then(Value::as_str).unwrap_or("");
            let (role_resource, role_ns) = match role_kind {
                "ClusterRole" => ("clusterroles", None),
                "Role" if !ns.is_empty() => ("roles", Some(ns)),
                _ => {
                    return Err(forbidden(format!(
                        "roleRef.kind {role_kind:?} cannot be bound here"
                    )));
                }
            };
            let bind = Attributes {
                verb: "bind".into(),
                group: RBAC_GROUP.into(),
                resource: role_resource.into(),
                namespace: ns.into(),
                name: role_name.into(),
                ..Default::default()
            };
            if state.rbac.allows(user, &bind) {
                return Ok(());
            }
            // Read from the store, not the watch-fed RBAC cache: a role
            // created a moment ago must be found.
            let role = resources::by_kind(RBAC_GROUP, role_kind)
                .ok_or_else(|| forbidden(format!("unknown roleRef.kind {role_kind:?}")))?;
            match state.registry.try_get(role, role_ns, role_name).await? {
                Some(role) => rules_of(&role),
                None => {
                    let singular = role_kind.to_ascii_lowercase();
                    return Err(forbidden(format!(
                        "{singular}.{RBAC_GROUP} \"{role_name}\" not found"
                    )));
                }
            }
        }
        _ => return Ok(()),
    };
    let held = state.rbac.rules_for(user, ns);
    match not_held(&granted, &held) {
        Coverage::Covered => Ok(()),
        Coverage::TooLarge => Err(forbidden(
            "the rules are too many to confirm that no RBAC permission is escalated".into(),
        )),
        Coverage::Missing(missing) => Err(forbidden(format!(
            "user \"{}\" (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
            user.username,
            quoted_list(user.groups.iter().map(String::as_str)),
            missing.join("\n")
        ))),
    }
}

fn rules_of(obj: &Value) -> Vec<Value> {
    obj.get("rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Whether held rules cover requested ones.
#[derive(Debug, PartialEq, Eq)]
pub enum Coverage {
    Covered,
    /// The rights not held, one compact rule per line.
    Missing(Vec<String>),
    /// Deciding would cost more than [`MAX_COMPARISONS`].
    TooLarge,
}

/// One indivisible right: a verb on one resource of one group (with one
/// name, or any), or a verb on one non-resource URL.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Atom<'a> {
    Resource {
        group: &'a str,
        resource: &'a str,
        name: Option<&'a str>,
        verb: &'a str,
    },
    Url {
        url: &'a str,
        verb: &'a str,
    },
}

fn list<'a>(rule: &'a Value, field: &str) -> Vec<&'a str> {
    rule.get(field)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The requested rules broken into atoms, or `None` past `budget` atoms.
fn atoms(rules: &[Value], budget: usize) -> Option<Vec<Atom<'_>>> {
    let mut out = Vec::new();
    for rule in rules {
        let verbs = list(rule, "verbs");
        let urls = list(rule, "nonResourceURLs");
        let groups = list(rule, "apiGroups");
        let resources = list(rule, "resources");
        let names = list(rule, "resourceNames");
        let names: Vec<Option<&str>> = if names.is_empty() {
            vec![None]
        } else {
            names.into_iter().map(Some).collect()
        };
        let count = verbs
            .len()
            .checked_mul(urls.len() + groups.len() * resources.len() * names.len())?;
        if out.len().checked_add(count)? > budget {
            return None;
        }
        for &verb in &verbs {
            out.extend(urls.iter().map(|&url| Atom::Url { url, verb }));
            for &group in &groups {
                for &resource in &resources {
                    out.extend(names.iter().map(|&name| Atom::Resource {
                        group,
                        resource,
                        name,
                        verb,
                    }));
                }
            }
        }
    }
    Some(out)
}

/// Does the held `rule` grant `atom`? A `*` in a held rule covers anything;
/// a `*` requested is covered only by a `*` held.
fn covers(rule: &Value, atom: &Atom<'_>) -> bool {
    let has = |field: &str, want: &str| list(rule, field).iter().any(|x| *x == "*" || *x == want);
    match *atom {
        Atom::Url { url, verb } => {
            has("verbs", verb)
                && list(rule, "nonResourceURLs").iter().any(|held| {
                    *held == "*"
                        || *held == url
                        || held
                            .strip_suffix('*')
                            .is_some_and(|prefix| url.starts_with(prefix))
                })
        }
        Atom::Resource {
            group,
            resource,
            name,
            verb,
        } => {
            if !has("verbs", verb) || !has("apiGroups", group) {
                return false;
            }
            let resources = list(rule, "resources");
            let resource_ok = resources.iter().any(|r| *r == "*" || *r == resource)
                || resource.split_once('/').is_some_and(|(_, sub)| {
                    resources.iter().any(|r| r.strip_prefix("*/") == Some(sub))
                });
            if !resource_ok {
                return false;
            }
            let names = list(rule, "resourceNames");
            names.is_empty() || name.is_some_and(|n| names.contains(&n))
        }
    }
}

/// Which of `requested`'s rights none of `held` grants.
pub fn not_held(requested: &[Value], held: &[Value]) -> Coverage {
    let budget = MAX_COMPARISONS / held.len().max(1);
    let Some(atoms) = atoms(requested, budget) else {
        return Coverage::TooLarge;
    };
    let missing: Vec<String> = atoms
        .iter()
        .filter(|a| !held.iter().any(|rule| covers(rule, a)))
        .map(compact)
        .collect();
    if missing.is_empty() {
        Coverage::Covered
    } else {
        Coverage::Missing(missing)
    }
}

fn quoted_list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = items.map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(" "))
}

/// Kubernetes' compact form of a rule: `{APIGroups:[""], Resources:["pods"],
/// Verbs:["get"]}`.
fn compact(atom: &Atom<'_>) -> String {
    match *atom {
        Atom::Url { url, verb } => format!("{{NonResourceURLs:[{url:?}], Verbs:[{verb:?}]}}"),
        Atom::Resource {
            group,
            resource,
            name,
            verb,
        } => match name {
            Some(n) => format!(
                "{{APIGroups:[{group:?}], Resources:[{resource:?}], ResourceNames:[{n:?}], Verbs:[{verb:?}]}}"
            ),
            None => {
                format!("{{APIGroups:[{group:?}], Resources:[{resource:?}], Verbs:[{verb:?}]}}")
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
        json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
    }

    #[test]
    fn held_rights_cover_what_they_name_and_nothing_more() {
        let held = vec![
            rule(&[""], &["pods", "configmaps"], &["get", "list"]),
            rule(&["apps"], &["*"], &["*"]),
            rule(&[""], &["*/status"], &["update"]),
            json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["s1"], "verbs": ["get"]}),
            json!({"nonResourceURLs": ["/healthz", "/logs/*"], "verbs": ["get"]}),
        ];
        let cases: Vec<(Value, bool)> = vec![
            (rule(&[""], &["pods"], &["get"]), true),
            (rule(&[""], &["pods", "configmaps"], &["list"]), true),
            (rule(&[""], &["pods"], &["delete"]), false),
            (
                rule(&["apps"], &["deployments", "replicasets"], &["*"]),
                true,
            ),
            (rule(&["*"], &["*"], &["*"]), false),
            (rule(&[""], &["*"], &["get"]), false),
            (rule(&[""], &["pods/status"], &["update"]), true),
            (rule(&[""], &["pods/log"], &["update"]), false),
            (rule(&[""], &["secrets"], &["get"]), false),
            (
                json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["s1"], "verbs": ["get"]}),
                true,
            ),
            (
                json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["s2"], "verbs": ["get"]}),
                false,
            ),
            (
                json!({"nonResourceURLs": ["/logs/kubelet"], "verbs": ["get"]}),
                true,
            ),
            (json!({"nonResourceURLs": ["*"], "verbs": ["get"]}), false),
        ];
        for (requested, covered) in cases {
            let result = not_held(std::slice::from_ref(&requested), &held);
            assert_eq!(
                result == Coverage::Covered,
                covered,
                "{requested}: {result:?}"
            );
        }
    }

    #[test]
    fn the_refusal_lists_each_right_not_held_as_kubernetes_writes_it() {
        let held = vec![rule(&[""], &["pods"], &["get"])];
        let requested = vec![rule(&[""], &["pods", "secrets"], &["get", "list"])];
        assert_eq!(
            not_held(&requested, &held),
            Coverage::Missing(vec![
                r#"{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}"#.into(),
                r#"{APIGroups:[""], Resources:["pods"], Verbs:["list"]}"#.into(),
                r#"{APIGroups:[""], Resources:["secrets"], Verbs:["list"]}"#.into(),
            ])
        );
    }

    #[test]
    fn a_role_too_large_to_check_is_refused_not_checked() {
        let many: Vec<String> = (0..3000).map(|i| format!("r{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let requested = vec![json!({
            "apiGroups": many, "resources": many, "verbs": ["get"]
        })];
        let held = vec![rule(&["*"], &["*"], &["*"])];
        assert_eq!(not_held(&requested, &held), Coverage::TooLarge);
        assert_eq!(not_held(&[], &held), Coverage::Covered);
    }
}
