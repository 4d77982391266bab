//! Placing the pods of one priority that wait together.
//!
//! One pod at a time, in arrival order, each pod goes to the node it scores
//! highest on, and with most-allocated scoring the nodes fill up with
//! whatever shapes arrive: a node that has CPU left but little memory
//! takes the next pod that fits, not the pod that would use what it has
//! left. The benchmark's mix of pods needs 5 % more nodes than its lower
//! bound that way (`bench/packing-sim.py`).
//!
//! When several pods of the same priority are already waiting, the
//! scheduler takes them together (with the most-allocated strategy, the
//! one that packs; spreading gains nothing from the order). Every pod still goes to the node the
//! framework scores highest for it at the moment it is placed, exactly as
//! a cycle of its own would put it there; only the order among the batch
//! changes: next is the pod whose best node is the fullest, and among
//! those the pod whose requests point most nearly along what that node has
//! left. So the fullest nodes are topped up with the shapes that fill them.
//!
//! Placing a pod changes one node; the others' best nodes are brought up to
//! date by scoring that node alone (a full walk over the nodes only when a
//! pod's best node was that node and it now scores lower there). That
//! needs each node's score to depend on the pod and that node only: a
//! batch with a pod whose scoring normalizes across nodes (preferred node
//! affinity) is placed one pod at a time in queue order instead.

use std::sync::Arc;

use super::cache::Cache;
use super::config::Resource;
use super::framework::{Best, Framework, NodeInfo, PodInfo, ScheduleError, ScheduleResult};

/// Where each pod of a batch went, in the order they were placed (each
/// already assumed in the cache); the `usize` is the pod's position in the
/// batch.
pub type Placements = Vec<(usize, Result<ScheduleResult, ScheduleError>)>;

/// Places `pods` (one priority, in queue order) and assumes each placed
/// pod in `cache`. `resources` are the scoring strategy's resources and
/// weights, which say what "full" and "along what is left" weigh.
pub fn place(
    framework: &Framework,
    resources: &[(Resource, i64)],
    pods: &[Arc<PodInfo>],
    cache: &mut Cache,
) -> Placements {
    if pods.len() < 2 || !pods.iter().all(|p| framework.scores_independently(p)) {
        return in_queue_order(framework, pods, cache);
    }
    reordered(framework, resources, pods, cache)
        .unwrap_or_else(|| in_queue_order(framework, pods, cache))
}

/// One pod after the other, as they came.
fn in_queue_order(framework: &Framework, pods: &[Arc<PodInfo>], cache: &mut Cache) -> Placements {
    let mut out: Placements = Vec::with_capacity(pods.len());
    for (i, pod) in pods.iter().enumerate() {
        let r = framework.schedule(pod, cache.nodes());
        if let Ok(result) = &r {
            cache.assume(pod, &result.node);
        }
        out.push((i, r));
    }
    out
}

/// The batch in the packing order; `None` (with nothing left assumed) when
/// that order would leave a pod without a node it had when the batch
/// began: the cluster is nearly full, and then the pods that came first
/// are placed first, as one at a time would.
fn reordered(
    framework: &Framework,
    resources: &[(Resource, i64)],
    pods: &[Arc<PodInfo>],
    cache: &mut Cache,
) -> Option<Placements> {
    let mut out: Placements = Vec::with_capacity(pods.len());
    // Each waiting pod with its best node as the nodes stand now.
    let mut pending: Vec<(usize, Best)> = Vec::with_capacity(pods.len());
    {
        let nodes: Vec<&NodeInfo> = cache.nodes().collect();
        for (i, pod) in pods.iter().enumerate() {
            match framework.best(pod, &nodes) {
                Ok(best) => pending.push((i, best)),
                Err(e) => out.push((i, Err(e))),
            }
        }
    }

    while !pending.is_empty() {
        let (i, best, node) = {
            let nodes: Vec<&NodeInfo> = cache.nodes().collect();
            let k = next(resources, pods, &pending, &nodes);
            let (i, best) = pending.remove(k);
            (i, best, nodes[best.index].name.clone())
        };
        cache.assume(&pods[i], &node);
        out.push((
            i,
            Ok(ScheduleResult {
                node,
                feasible: best.feasible,
            }),
        ));

        // Only that node changed: score it again for every other pod.
        let nodes: Vec<&NodeInfo> = cache.nodes().collect();
        let changed = best.index;
        let mut k = 0;
        while k < pending.len() {
            let (q, was) = pending[k];
            let update = match framework.score_on(&pods[q], nodes[changed]) {
                // Still best there: every other node scored at most `was`.
                Ok(Some(total)) if was.index == changed && total >= was.total => {
                    Ok(Best { total, ..was })
                }
                // Lower there, or no longer fits: walk every node again.
                Ok(_) if was.index == changed => framework.best(&pods[q], &nodes),
                // Better there than on its best node (or as good and
                // earlier in node order, as a cycle breaks ties).
                Ok(Some(total))
                    if total > was.total || (total == was.total && changed < was.index) =>
                {
                    Ok(Best {
                        index: changed,
                        total,
                        feasible: was.feasible,
                    })
                }
                Ok(_) => Ok(was),
                Err(e) => Err(e),
            };
            match update {
                Ok(b) => {
                    pending[k].1 = b;
                    k += 1;
                }
                Err(ScheduleError::Unfit(_)) => {
                    for (i, r) in &out {
                        if r.is_ok() {
                            cache.forget(&pods[*i].uid);
                        }
                    }
                    return None;
                }
                Err(e) => {
                    pending.remove(k);
                    out.push((q, Err(e)));
                }
            }
        }
    }
    Some(out)
}

/// The position in `pending` of the pod to place next: the one whose best
/// node is fullest, then the one that fits best along what that node has
/// left, then the first in queue order.
fn next(
    resources: &[(Resource, i64)],
    pods: &[Arc<PodInfo>],
    pending: &[(usize, Best)],
    nodes: &[&NodeInfo],
) -> usize {
    let mut chosen = 0;
    let mut chosen_key = (f64::MIN, f64::MIN);
    for (k, (i, best)) in pending.iter().enumerate() {
        let node = nodes[best.index];
        let key = (
            fullness(resources, node),
            alignment(resources, &pods[*i], node),
        );
        // Strictly greater: on a tie the earlier pod stays chosen.
        if key.0 > chosen_key.0 || (key.0 == chosen_key.0 && key.1 > chosen_key.1) {
            chosen = k;
            chosen_key = key;
        }
    }
    chosen
}

/// The weighted mean of the node's requested share of each resource.
fn fullness(resources: &[(Resource, i64)], node: &NodeInfo) -> f64 {
    let (mut sum, mut weights) = (0.0, 0.0);
    for &(r, w) in resources {
        let capacity = node.allocatable.amount(r);
        if capacity <= 0 || w <= 0 {
            continue;
        }
        sum += w as f64 * node.score_requested.amount(r) as f64 / capacity as f64;
        weights += w as f64;
    }
    if weights == 0.0 { 0.0 } else { sum / weights }
}

/// How nearly the pod's requests point along what the node has left: the
/// projection of what is left onto the direction of the requests (each
/// resource as a share of the node's capacity). Large when the pod is
/// made of what the node has most of.
fn alignment(resources: &[(Resource, i64)], pod: &PodInfo, node: &NodeInfo) -> f64 {
    let (mut dot, mut norm) = (0.0, 0.0);
    for &(r, w) in resources {
        let capacity = node.allocatable.amount(r);
        if capacity <= 0 || w <= 0 {
            continue;
        }
        let capacity = capacity as f64;
        let want = pod.score_requests.amount(r) as f64 / capacity;
        let left = (capacity - node.score_requested.amount(r) as f64).max(0.0) / capacity;
        dot += w as f64 * want * left;
        norm += w as f64 * want * want;
    }
    if norm == 0.0 { 0.0 } else { dot / norm.sqrt() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::SchedulerConfig;
    use crate::scheduler::framework::testing::pod;
    use k8s_openapi::api::core::v1::Node;

    const MI: i64 = 1 << 20;

    /// The benchmark's node: 16 cores, 32 GiB, 110 pods.
    fn node_obj(name: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": {"allocatable": {"cpu": "16", "memory": "32Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap()
    }

    fn cache(nodes: usize) -> Cache {
        let mut c = Cache::default();
        for i in 0..nodes {
            c.apply_node(&node_obj(&format!("node-{i:04}")));
        }
        c
    }

    /// `wkube-bench scheduler`'s request mix from the same LCG.
    fn mix(n: usize) -> Vec<Arc<PodInfo>> {
        const SIZES: [(i64, i64); 8] = [
            (100, 128),
            (250, 256),
            (250, 1024),
            (500, 512),
            (500, 2048),
            (1000, 1024),
            (1000, 4096),
            (2000, 2048),
        ];
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        (0..n)
            .map(|i| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let (cpu, mem) = SIZES[((x >> 33) % SIZES.len() as u64) as usize];
                let mut p = pod(cpu, mem * MI);
                p.name = format!("p{i}");
                p.uid = format!("uid-{i}");
                Arc::new(p)
            })
            .collect()
    }

    fn framework() -> (Framework, Vec<(Resource, i64)>) {
        let config = SchedulerConfig::default();
        (config.framework(), config.strategy.resources.clone())
    }

    fn used(c: &Cache) -> usize {
        c.nodes().filter(|n| n.requested.pods > 0).count()
    }

    #[test]
    fn each_pod_goes_where_a_cycle_of_its_own_would_put_it() {
        let (fw, resources) = framework();
        let pods = mix(600);
        let mut c = cache(40);
        let mut replay = cache(40);
        for chunk in pods.chunks(50) {
            for (i, r) in place(&fw, &resources, chunk, &mut c) {
                let r = r.expect("fits");
                // The same pod, scheduled alone at that moment on a cache
                // that saw the same placements before it, lands there too.
                let alone = fw.schedule(&chunk[i], replay.nodes()).expect("fits");
                assert_eq!(alone.node, r.node, "{}", chunk[i].name);
                replay.assume(&chunk[i], &r.node);
            }
        }
        for n in c.nodes() {
            assert!(n.requested.milli_cpu <= n.allocatable.milli_cpu, "{n:?}");
            assert!(n.requested.memory <= n.allocatable.memory, "{n:?}");
            assert!(n.requested.pods <= n.allocatable.pods, "{n:?}");
        }
    }

    #[test]
    fn batches_pack_the_benchmark_mix_onto_fewer_nodes() {
        let (fw, resources) = framework();
        let pods = mix(3000);
        let mut one_by_one = cache(200);
        for p in &pods {
            place(&fw, &resources, std::slice::from_ref(p), &mut one_by_one);
        }
        let mut batched = cache(200);
        for chunk in pods.chunks(64) {
            place(&fw, &resources, chunk, &mut batched);
        }
        let (a, b) = (used(&one_by_one), used(&batched));
        assert!(b < a, "batched {b} nodes, one by one {a}");
    }

    #[test]
    fn a_pod_that_scores_against_every_node_keeps_the_batch_in_queue_order() {
        let (fw, resources) = framework();
        let mut pods = mix(10);
        let mut with_preference = (*pods[3]).clone();
        with_preference.preferred_affinity = vec![serde_json::from_value(serde_json::json!({
            "weight": 10,
            "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
        }))
        .unwrap()];
        pods[3] = Arc::new(with_preference);
        let mut c = cache(3);
        let order: Vec<usize> = place(&fw, &resources, &pods, &mut c)
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(order, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn when_the_batch_order_would_crowd_out_a_pod_the_batch_goes_in_queue_order() {
        let (fw, resources) = framework();
        // One node with room for exactly the first pod, or for the second
        // and third together; the packing order would place the smaller
        // later pods first (their best node is the same, and they align
        // better) and leave the first pod without room.
        let mut c = Cache::default();
        c.apply_node(
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "only"},
                "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                           "conditions": [{"type": "Ready", "status": "True"}]}
            }))
            .unwrap(),
        );
        let mk = |name: &str, cpu: i64, mem: i64| {
            let mut p = pod(cpu, mem * MI);
            p.name = name.into();
            p.uid = format!("uid-{name}");
            Arc::new(p)
        };
        let pods = vec![
            mk("first", 2000, 1024),
            mk("second", 1000, 2048),
            mk("third", 1000, 2048),
        ];
        let out = place(&fw, &resources, &pods, &mut c);
        let first = out.iter().find(|(i, _)| *i == 0).unwrap();
        assert!(first.1.is_ok(), "{out:?}");
        assert!(c.is_placed("uid-first"));
        let order: Vec<usize> = out.iter().map(|(i, _)| *i).collect();
        assert_eq!(order, [0, 1, 2]);
        let used = c.nodes().next().unwrap().requested;
        assert_eq!(
            used.milli_cpu, 2000,
            "only the first pod is counted: {used:?}"
        );
    }

    #[test]
    fn pods_that_fit_nowhere_are_reported_and_the_rest_placed() {
        let (fw, resources) = framework();
        let mut pods = mix(20);
        let mut huge = pod(64_000, MI);
        huge.uid = "uid-huge".into();
        pods.insert(5, Arc::new(huge));
        let mut c = cache(2);
        let out = place(&fw, &resources, &pods, &mut c);
        assert_eq!(out.len(), pods.len());
        for (i, r) in &out {
            if *i == 5 {
                assert!(
                    matches!(r, Err(ScheduleError::Unfit(f)) if f.to_string().contains("Insufficient cpu")),
                    "{r:?}"
                );
            } else {
                assert!(r.is_ok(), "{i}: {r:?}");
                assert!(c.is_placed(&pods[*i].uid));
            }
        }
        assert!(!c.is_placed("uid-huge"));
    }
}
