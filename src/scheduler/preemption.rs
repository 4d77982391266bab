//! Preemption: when a pod fits nowhere, find the node where removing
//! pods of lower priority would let it fit, and the fewest, least
//! important such pods (the victims).
//!
//! For each node: every lower-priority pod that is not already leaving is
//! taken off in simulation; if the pod then passes the filters there, the
//! candidates are given back one at a time, most important first, keeping
//! each one the pod still fits beside. What is left are the victims.
//! Among the nodes that work, the one whose most important victim is the
//! least important wins, then the one with the smallest sum of victim
//! priorities, then the fewest victims, then node order.
//!
//! Kubernetes also weighs PodDisruptionBudgets when choosing victims;
//! wkube does not yet (a budget can be broken by preemption, as Kubernetes
//! also allows when nothing else works).

use super::cache::{Cache, PlacedPod};
use super::framework::{Framework, PodInfo};

/// The node to free and the pods to remove from it.
#[derive(Clone, Debug, PartialEq)]
pub struct Preemption {
    pub node: String,
    pub victims: Vec<PlacedPod>,
}

/// The best preemption for `pod`, if any node can be freed for it.
pub fn select(framework: &Framework, pod: &PodInfo, cache: &Cache) -> Option<Preemption> {
    if !pod.may_preempt {
        return None;
    }
    let mut best: Option<((i32, i64, usize), Preemption)> = None;
    for node in cache.nodes() {
        let mut candidates: Vec<PlacedPod> = cache
            .pods_on(&node.name)
            .into_iter()
            .filter(|p| p.priority < pod.priority && !p.terminating && p.uid != pod.uid)
            .collect();
        if candidates.is_empty() {
            continue;
        }
        let mut freed = node.clone();
        for c in &candidates {
            freed.requested.sub(&c.requests);
            freed.score_requested.sub(&c.score_requests);
        }
        if !framework.feasible(pod, &freed) {
            continue;
        }
        // Most important first, so the ones given back are the ones that
        // matter most.
        candidates.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.uid.cmp(&b.uid)));
        let mut victims = Vec::new();
        for c in candidates {
            let mut kept = freed.clone();
            kept.requested.add(&c.requests);
            kept.score_requested.add(&c.score_requests);
            if framework.feasible(pod, &kept) {
                freed = kept;
            } else {
                victims.push(c);
            }
        }
        let key = (
            victims.iter().map(|v| v.priority).max().unwrap_or(i32::MIN),
            victims.iter().map(|v| i64::from(v.priority)).sum::<i64>(),
            victims.len(),
        );
        if best.as_ref().is_none_or(|(k, _)| key < *k) {
            best = Some((
                key,
                Preemption {
                    node: node.name.clone(),
                    victims,
                },
            ));
        }
    }
    best.map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use serde_json::json;

    fn node(name: &str, cpu: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .unwrap()
    }

    fn pod(name: &str, cpu: &str, priority: i32) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": name},
            "spec": {"priority": priority, "containers": [{"name": "c", "image": "x",
                "resources": {"requests": {"cpu": cpu, "memory": "1Mi"}}}]},
        }))
        .unwrap()
    }

    fn framework() -> Framework {
        crate::scheduler::SchedulerConfig::default().framework()
    }

    #[test]
    fn the_fewest_least_important_pods_are_chosen() {
        let mut cache = Cache::default();
        cache.apply_node(&node("a", "2"));
        cache.apply_node(&node("b", "2"));
        // a: two 1-CPU pods of priority 10 and 5. b: one 2-CPU pod of 1.
        cache.apply_bound_pod(&pod("a10", "1", 10), "a");
        cache.apply_bound_pod(&pod("a5", "1", 5), "a");
        cache.apply_bound_pod(&pod("b1", "2", 1), "b");
        let fw = framework();

        // One CPU: on a only the priority-5 pod goes; on b the priority-1
        // pod. b's victim is the less important one.
        let p = PodInfo::from_pod(&pod("high", "1", 100));
        let chosen = select(&fw, &p, &cache).unwrap();
        assert_eq!(chosen.node, "b");
        assert_eq!(chosen.victims.len(), 1);
        assert_eq!(chosen.victims[0].name, "b1");

        // Priority 7: only a5 (and b1) are below it; a would need a10 too.
        let p = PodInfo::from_pod(&pod("mid", "2", 7));
        let chosen = select(&fw, &p, &cache).unwrap();
        assert_eq!(chosen.node, "b");

        // Nothing below priority 1: no preemption.
        let p = PodInfo::from_pod(&pod("low", "1", 1));
        assert!(select(&fw, &p, &cache).is_none());

        // `preemptionPolicy: Never`.
        let mut never = pod("polite", "1", 100);
        never.spec.as_mut().unwrap().preemption_policy = Some("Never".into());
        assert!(select(&fw, &PodInfo::from_pod(&never), &cache).is_none());
    }

    #[test]
    fn only_the_victims_needed_are_taken_and_leaving_pods_are_not_counted() {
        let mut cache = Cache::default();
        cache.apply_node(&node("a", "3"));
        cache.apply_bound_pod(&pod("p1", "1", 1), "a");
        cache.apply_bound_pod(&pod("p2", "1", 2), "a");
        cache.apply_bound_pod(&pod("p3", "1", 3), "a");
        let fw = framework();
        // Two CPUs: the two least important go, p3 is given back.
        let p = PodInfo::from_pod(&pod("high", "2", 100));
        let chosen = select(&fw, &p, &cache).unwrap();
        let mut names: Vec<_> = chosen.victims.iter().map(|v| v.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["p1", "p2"]);

        // Once those are terminating, nothing more is chosen for another.
        let mut leaving = pod("p1", "1", 1);
        leaving.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        cache.apply_bound_pod(&leaving, "a");
        let mut leaving = pod("p2", "1", 2);
        leaving.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        cache.apply_bound_pod(&leaving, "a");
        let chosen = select(&fw, &p, &cache);
        assert!(chosen.is_none(), "{chosen:?}");
    }
}
