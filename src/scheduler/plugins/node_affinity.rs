//! `NodeAffinity`: the filter keeps a pod to nodes whose labels match its
//! `nodeSelector` and its required node affinity; the score prefers nodes
//! matching its preferred terms (the sum of the matching terms' weights,
//! scaled so the best node gets 100).

use k8s_openapi::api::core::v1::{NodeSelector, NodeSelectorRequirement, NodeSelectorTerm};

use crate::scheduler::framework::{
    FilterPlugin, NodeInfo, PodInfo, ScorePlugin, Status, default_normalize,
};

pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

/// See the module doc.
pub struct NodeAffinity;

/// Whether one requirement holds for `node`; `field` requirements look at
/// the node's name (`metadata.name`), the only field Kubernetes allows.
fn requirement_matches(r: &NodeSelectorRequirement, node: &NodeInfo, field: bool) -> bool {
    let value: Option<&str> = if field {
        (r.key == "metadata.name").then_some(node.name.as_str())
    } else {
        node.labels.get(&r.key).map(String::as_str)
    };
    let values = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => !value.is_some_and(|v| values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        // Both sides must be integers; a single value is allowed.
        "Gt" | "Lt" => {
            let (Some(v), [bound]) = (value, values) else {
                return false;
            };
            match (v.parse::<i64>(), bound.parse::<i64>()) {
                (Ok(v), Ok(b)) if r.operator == "Gt" => v > b,
                (Ok(v), Ok(b)) => v < b,
                _ => false,
            }
        }
        _ => false,
    }
}

/// A term holds when all its requirements do; an empty term matches no
/// node, as in Kubernetes.
pub fn term_matches(term: &NodeSelectorTerm, node: &NodeInfo) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs.iter().all(|r| requirement_matches(r, node, false))
        && fields.iter().all(|r| requirement_matches(r, node, true))
}

/// A selector holds when any of its terms does.
pub fn selector_matches(selector: &NodeSelector, node: &NodeInfo) -> bool {
    selector
        .node_selector_terms
        .iter()
        .any(|t| term_matches(t, node))
}

impl FilterPlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    fn relevant(&self, pod: &PodInfo) -> bool {
        !pod.node_selector.is_empty() || pod.required_affinity.is_some()
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status {
        let selector_ok = pod
            .node_selector
            .iter()
            .all(|(k, v)| node.labels.get(k) == Some(v));
        let affinity_ok = pod
            .required_affinity
            .as_ref()
            .is_none_or(|s| selector_matches(s, node));
        if selector_ok && affinity_ok {
            Status::success()
        } else {
            Status::unschedulable(REASON)
        }
    }
}

impl ScorePlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    fn relevant(&self, pod: &PodInfo) -> bool {
        pod.preferred_affinity.iter().any(|t| t.weight != 0)
    }

    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        Ok(pod
            .preferred_affinity
            .iter()
            .filter(|t| t.weight != 0 && term_matches(&t.preference, node))
            .map(|t| i64::from(t.weight))
            .sum())
    }

    fn normalize(&self, _pod: &PodInfo, scores: &mut [i64]) {
        default_normalize(scores, false);
    }

    fn normalizes(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::framework::testing::*;
    use crate::scheduler::framework::{Code, MAX_NODE_SCORE};
    use k8s_openapi::api::core::v1::PreferredSchedulingTerm;

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn labelled(labels: &[(&str, &str)]) -> NodeInfo {
        let mut n = node("node-a", 1000, GI);
        n.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        n
    }

    #[test]
    fn each_operator_matches_as_in_kubernetes() {
        let n = labelled(&[("zone", "a"), ("cores", "8")]);
        let cases = [
            (req("zone", "In", &["a", "b"]), true),
            (req("zone", "In", &["b"]), false),
            (req("zone", "NotIn", &["b"]), true),
            (req("zone", "NotIn", &["a"]), false),
            (req("missing", "NotIn", &["a"]), true),
            (req("zone", "Exists", &[]), true),
            (req("missing", "Exists", &[]), false),
            (req("missing", "DoesNotExist", &[]), true),
            (req("zone", "DoesNotExist", &[]), false),
            (req("cores", "Gt", &["4"]), true),
            (req("cores", "Gt", &["8"]), false),
            (req("cores", "Lt", &["16"]), true),
            (req("zone", "Gt", &["1"]), false),
            (req("missing", "Lt", &["1"]), false),
            (req("zone", "Bogus", &["a"]), false),
        ];
        for (r, want) in cases {
            let term = NodeSelectorTerm {
                match_expressions: Some(vec![r.clone()]),
                match_fields: None,
            };
            assert_eq!(term_matches(&term, &n), want, "{r:?}");
        }
        let by_name = NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![req("metadata.name", "In", &["node-a"])]),
        };
        assert!(term_matches(&by_name, &n));
        assert!(!term_matches(&NodeSelectorTerm::default(), &n));
    }

    #[test]
    fn selector_and_required_affinity_both_filter() {
        let n = labelled(&[("disk", "ssd"), ("zone", "a")]);
        let zone_b = NodeSelector {
            node_selector_terms: vec![
                NodeSelectorTerm {
                    match_expressions: Some(vec![req("zone", "In", &["b"])]),
                    match_fields: None,
                },
                NodeSelectorTerm {
                    match_expressions: Some(vec![req("disk", "In", &["hdd"])]),
                    match_fields: None,
                },
            ],
        };
        let zone_a_or_b = NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(vec![req("zone", "In", &["a", "b"])]),
                match_fields: None,
            }],
        };
        // (nodeSelector, required affinity, fits)
        let cases = [
            (vec![], None, true),
            (vec![("disk", "ssd")], None, true),
            (vec![("disk", "hdd")], None, false),
            (vec![("gpu", "yes")], None, false),
            (vec![], Some(zone_b), false),
            (vec![], Some(zone_a_or_b.clone()), true),
            (vec![("disk", "hdd")], Some(zone_a_or_b), false),
        ];
        for (sel, aff, want) in cases {
            let mut p = pod(1, 1);
            p.node_selector = sel
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            p.required_affinity = aff;
            let got = FilterPlugin::filter(&NodeAffinity, &p, &n);
            assert_eq!(got.code == Code::Success, want, "{sel:?}: {got:?}");
            if !want {
                assert_eq!(got.reasons, [REASON]);
            }
        }
    }

    #[test]
    fn preferred_terms_score_by_weight_normalised_to_100() {
        let nodes = [
            labelled(&[("zone", "a")]),
            labelled(&[("zone", "b"), ("disk", "ssd")]),
            labelled(&[]),
        ];
        let term = |weight, key: &str, value: &str| PreferredSchedulingTerm {
            weight,
            preference: NodeSelectorTerm {
                match_expressions: Some(vec![req(key, "In", &[value])]),
                match_fields: None,
            },
        };
        let mut p = pod(1, 1);
        p.preferred_affinity = vec![
            term(20, "zone", "a"),
            term(80, "zone", "b"),
            term(20, "disk", "ssd"),
        ];
        let mut scores: Vec<i64> = nodes
            .iter()
            .map(|n| NodeAffinity.score(&p, n).unwrap())
            .collect();
        assert_eq!(scores, [20, 100, 0]);
        NodeAffinity.normalize(&p, &mut scores);
        assert_eq!(scores, [20, MAX_NODE_SCORE, 0]);
    }
}
