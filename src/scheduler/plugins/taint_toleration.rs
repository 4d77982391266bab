//! `TaintToleration`: a node's `NoSchedule` and `NoExecute` taints keep
//! away every pod that does not tolerate them (`PreferNoSchedule` is only a
//! preference and does not filter).

use crate::scheduler::framework::{FilterPlugin, NodeInfo, PodInfo, Status};
use k8s_openapi::api::core::v1::{Taint, Toleration};

/// See the module doc.
pub struct TaintToleration;

/// Whether `toleration` tolerates `taint`, with Kubernetes' rules: an empty
/// effect matches every effect, an empty key with `Exists` matches every
/// taint, `Exists` ignores the value and `Equal` (the default) compares it.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref()
        && !effect.is_empty()
        && effect != taint.effect
    {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    let operator = toleration.operator.as_deref().unwrap_or("Equal");
    if key.is_empty() {
        return operator == "Exists";
    }
    if key != taint.key {
        return false;
    }
    match operator {
        "Exists" => true,
        "Equal" | "" => {
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

impl FilterPlugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status {
        let untolerated = node.taints.iter().find(|taint| {
            matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
                && !pod.tolerations.iter().any(|t| tolerates(t, taint))
        });
        match untolerated {
            None => Status::success(),
            Some(t) => Status::unschedulable(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or("")
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::framework::testing::*;

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: (!value.is_empty()).then(|| value.into()),
            effect: effect.into(),
            ..Default::default()
        }
    }

    fn tol(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Toleration {
            key: opt(key),
            operator: opt(op),
            value: opt(value),
            effect: opt(effect),
            ..Default::default()
        }
    }

    #[test]
    fn tolerations_match_taints_by_kubernetes_rules() {
        let t = taint("gpu", "true", "NoSchedule");
        let cases = [
            (tol("gpu", "Equal", "true", "NoSchedule"), true),
            (tol("gpu", "", "true", ""), true),
            (tol("gpu", "Equal", "false", "NoSchedule"), false),
            (tol("gpu", "Exists", "", "NoSchedule"), true),
            (tol("gpu", "Exists", "", "NoExecute"), false),
            (tol("", "Exists", "", ""), true),
            (tol("", "Equal", "", ""), false),
            (tol("other", "Exists", "", ""), false),
        ];
        for (toleration, want) in cases {
            assert_eq!(tolerates(&toleration, &t), want, "{toleration:?}");
        }
    }

    #[test]
    fn no_schedule_and_no_execute_filter_and_prefer_no_schedule_does_not() {
        let cases = [
            (vec![], vec![], None),
            (
                vec![taint("dedicated", "db", "NoSchedule")],
                vec![],
                Some("node(s) had untolerated taint {dedicated: db}"),
            ),
            (
                vec![taint("dedicated", "db", "NoExecute")],
                vec![],
                Some("node(s) had untolerated taint {dedicated: db}"),
            ),
            (
                vec![taint("dedicated", "db", "PreferNoSchedule")],
                vec![],
                None,
            ),
            (
                vec![taint("dedicated", "db", "NoSchedule")],
                vec![tol("dedicated", "Equal", "db", "NoSchedule")],
                None,
            ),
            (
                vec![taint("a", "", "NoSchedule"), taint("b", "x", "NoExecute")],
                vec![tol("a", "Exists", "", "")],
                Some("node(s) had untolerated taint {b: x}"),
            ),
        ];
        for (taints, tolerations, want) in cases {
            let mut n = node("n", 1000, GI);
            n.taints = taints.clone();
            let mut p = pod(1, 1);
            p.tolerations = tolerations;
            let got = TaintToleration.filter(&p, &n);
            match want {
                None => assert!(got.is_success(), "{taints:?}: {got:?}"),
                Some(r) => assert_eq!(got, Status::unschedulable(r), "{taints:?}"),
            }
        }
    }
}
