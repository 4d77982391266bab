//! `NodeResourcesFit`: the filter checks that the pod's CPU, memory and pod
//! count fit in what the node has left (allocatable minus the requests of
//! the pods placed or assumed there); the score ranks feasible nodes by the
//! configured strategy — `MostAllocated` packs pods onto the fullest nodes,
//! `LeastAllocated` spreads them, `RequestedToCapacityRatio` follows a
//! utilisation → score shape.

use crate::scheduler::config::{ScoringStrategy, StrategyType};
use crate::scheduler::framework::{
    Code, FilterPlugin, MAX_NODE_SCORE, NodeInfo, PodInfo, ScorePlugin, Status,
};

pub const INSUFFICIENT_CPU: &str = "Insufficient cpu";
pub const INSUFFICIENT_MEMORY: &str = "Insufficient memory";
pub const TOO_MANY_PODS: &str = "Too many pods";

/// See the module doc.
pub struct NodeResourcesFit {
    pub strategy: ScoringStrategy,
}

impl FilterPlugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status {
        let (want, have, used) = (&pod.requests, &node.allocatable, &node.requested);
        let mut reasons = Vec::new();
        if used.pods + 1 > have.pods {
            reasons.push(TOO_MANY_PODS.into());
        }
        if want.milli_cpu > 0 && want.milli_cpu > have.milli_cpu - used.milli_cpu {
            reasons.push(INSUFFICIENT_CPU.into());
        }
        if want.memory > 0 && want.memory > have.memory - used.memory {
            reasons.push(INSUFFICIENT_MEMORY.into());
        }
        if reasons.is_empty() {
            Status::success()
        } else {
            Status {
                code: Code::Unschedulable,
                reasons,
            }
        }
    }

    fn fits(&self, pod: &PodInfo, node: &NodeInfo) -> Code {
        let (want, have, used) = (&pod.requests, &node.allocatable, &node.requested);
        let fits = used.pods < have.pods
            && (want.milli_cpu <= 0 || want.milli_cpu <= have.milli_cpu - used.milli_cpu)
            && (want.memory <= 0 || want.memory <= have.memory - used.memory);
        if fits {
            Code::Success
        } else {
            Code::Unschedulable
        }
    }
}

impl NodeResourcesFit {
    /// The 0–100 score of one resource at `requested` out of `capacity`
    /// (`capacity` > 0).
    fn resource_score(&self, requested: i64, capacity: i64) -> i64 {
        let requested = requested.clamp(0, capacity);
        match self.strategy.kind {
            StrategyType::LeastAllocated => (capacity - requested) * MAX_NODE_SCORE / capacity,
            StrategyType::MostAllocated => requested * MAX_NODE_SCORE / capacity,
            StrategyType::RequestedToCapacityRatio => {
                let utilization = requested * 100 / capacity;
                shape_score(&self.strategy.shape, utilization)
            }
        }
    }
}

/// The shape's score at `utilization` (percent), linearly interpolated
/// between its points and flat outside them. Shape scores run 0–10 as in
/// Kubernetes' configuration and are scaled to 0–100.
pub fn shape_score(shape: &[(i64, i64)], utilization: i64) -> i64 {
    let scale = MAX_NODE_SCORE / 10;
    let Some(first) = shape.first() else {
        return 0;
    };
    if utilization <= first.0 {
        return first.1 * scale;
    }
    for w in shape.windows(2) {
        let ((u0, s0), (u1, s1)) = (w[0], w[1]);
        if utilization <= u1 {
            let s0 = s0 * scale;
            let s1 = s1 * scale;
            return s0 + (s1 - s0) * (utilization - u0) / (u1 - u0).max(1);
        }
    }
    shape.last().map_or(0, |l| l.1 * scale)
}

impl ScorePlugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let mut total = 0;
        let mut weights = 0;
        for &(resource, weight) in &self.strategy.resources {
            let capacity = node.allocatable.amount(resource);
            if capacity <= 0 || weight <= 0 {
                continue;
            }
            let requested =
                node.score_requested.amount(resource) + pod.score_requests.amount(resource);
            total += self.resource_score(requested, capacity) * weight;
            weights += weight;
        }
        Ok(if weights == 0 { 0 } else { total / weights })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::config::Resource;
    use crate::scheduler::framework::testing::*;

    fn fit(kind: StrategyType) -> NodeResourcesFit {
        NodeResourcesFit {
            strategy: ScoringStrategy {
                kind,
                ..ScoringStrategy::default()
            },
        }
    }

    #[test]
    fn a_pod_fits_only_in_what_is_left() {
        // ((pod cpu, pod memory), (used cpu, used memory, used pods)) → reasons
        type Case = ((i64, i64), (i64, i64, i64), &'static [&'static str]);
        let both: &[&str] = &[INSUFFICIENT_CPU, INSUFFICIENT_MEMORY];
        let cases: [Case; 7] = [
            ((500, GI), (0, 0, 0), &[]),
            ((1000, 2 * GI), (0, 0, 0), &[]),
            ((1001, GI), (0, 0, 0), &[INSUFFICIENT_CPU]),
            ((500, GI), (600, 0, 0), &[INSUFFICIENT_CPU]),
            ((500, GI), (0, GI + 1, 0), &[INSUFFICIENT_MEMORY]),
            ((2000, 3 * GI), (0, 0, 0), both),
            ((0, 0), (1000, 2 * GI, 110), &[TOO_MANY_PODS]),
        ];
        for ((cpu, mem), (ucpu, umem, upods), want) in cases {
            let n = with_requested(node("n", 1000, 2 * GI), ucpu, umem, upods);
            let got = fit(StrategyType::MostAllocated).filter(&pod(cpu, mem), &n);
            assert_eq!(
                got.reasons, want,
                "pod {cpu}m/{mem} on used {ucpu}m/{umem}/{upods}"
            );
            assert_eq!(got.is_success(), want.is_empty());
            // The reason-free verdict the cycle asks first agrees.
            let f = fit(StrategyType::MostAllocated);
            assert_eq!(
                f.fits(&pod(cpu, mem), &n),
                got.code,
                "fits: pod {cpu}m/{mem}"
            );
        }
    }

    #[test]
    fn strategies_score_the_fuller_or_emptier_node_higher() {
        let empty = node("empty", 4000, 4 * GI);
        let half = with_requested(node("half", 4000, 4 * GI), 2000, 2 * GI, 2);
        let p = pod(1000, GI);
        // (strategy, score of empty, score of half)
        let cases = [
            (StrategyType::MostAllocated, 25, 75),
            (StrategyType::LeastAllocated, 75, 25),
            // The default shape (0→0, 100→10) is MostAllocated-like.
            (StrategyType::RequestedToCapacityRatio, 25, 75),
        ];
        for (kind, want_empty, want_half) in cases {
            let f = fit(kind);
            assert_eq!(f.score(&p, &empty).unwrap(), want_empty, "{kind:?}");
            assert_eq!(f.score(&p, &half).unwrap(), want_half, "{kind:?}");
        }
    }

    #[test]
    fn resource_weights_mix_the_per_resource_scores() {
        let n = with_requested(node("n", 1000, 4 * GI), 0, 0, 0);
        let p = pod(1000, 0);
        let f = NodeResourcesFit {
            strategy: ScoringStrategy {
                kind: StrategyType::MostAllocated,
                resources: vec![(Resource::Cpu, 3), (Resource::Memory, 1)],
                ..ScoringStrategy::default()
            },
        };
        // CPU 100 (weight 3), memory 0 (weight 1).
        assert_eq!(f.score(&p, &n).unwrap(), 75);
    }

    #[test]
    fn the_shape_interpolates_between_points() {
        let shape = [(0, 10), (50, 0), (100, 10)];
        for (u, want) in [
            (0, 100),
            (25, 50),
            (50, 0),
            (75, 50),
            (100, 100),
            (120, 100),
        ] {
            assert_eq!(shape_score(&shape, u), want, "utilization {u}");
        }
    }
}
