//! `NodeResourcesBalancedAllocation`: prefers nodes whose resources would
//! be used evenly once the pod is placed. With CPU at 90 % and memory at
//! 20 %, the node's remaining memory can hardly be used (every pod also
//! needs CPU), so such a node scores low. Together with `MostAllocated`
//! this packs both dimensions at once, which is what keeps the number of
//! nodes close to the lower bound when CPU and memory requests are not
//! proportional.
//!
//! The score is `(1 − standard deviation of the used fractions) × 100`,
//! over the resources of the scoring strategy that the node has.

use crate::scheduler::framework::{MAX_NODE_SCORE, NodeInfo, PodInfo, ScorePlugin, Status};

use crate::scheduler::config::Resource;

/// See the module doc.
pub struct BalancedAllocation {
    /// The resources compared (those of the scoring strategy; `pods` is
    /// never part of the balance).
    pub resources: Vec<Resource>,
}

impl ScorePlugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        "NodeResourcesBalancedAllocation"
    }

    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        // At most a handful of resources: a fixed array, no allocation.
        let mut fractions = [0f64; 3];
        let mut n = 0;
        for &r in self.resources.iter().filter(|r| **r != Resource::Pods) {
            let capacity = node.allocatable.amount(r);
            if capacity <= 0 || n == fractions.len() {
                continue;
            }
            let used = node.score_requested.amount(r) + pod.score_requests.amount(r);
            fractions[n] = (used as f64 / capacity as f64).min(1.0);
            n += 1;
        }
        if n < 2 {
            return Ok(MAX_NODE_SCORE);
        }
        if n == 2 {
            // The usual case (CPU and memory): the deviation of two values
            // is half their distance.
            let std = (fractions[0] - fractions[1]).abs() / 2.0;
            return Ok(((1.0 - std) * MAX_NODE_SCORE as f64) as i64);
        }
        let fractions = &fractions[..n];
        let mean = fractions.iter().sum::<f64>() / n as f64;
        let variance = fractions.iter().map(|f| (f - mean).powi(2)).sum::<f64>() / n as f64;
        Ok(((1.0 - variance.sqrt()) * MAX_NODE_SCORE as f64) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::framework::testing::*;

    fn plugin() -> BalancedAllocation {
        BalancedAllocation {
            resources: vec![Resource::Cpu, Resource::Memory, Resource::Pods],
        }
    }

    #[test]
    fn even_use_scores_highest() {
        // (used cpu, used memory) of a 1000m / 4 GiB node, pod 0/0 → score
        let cases = [
            ((500, 2 * GI), 100),
            ((0, 0), 100),
            ((1000, 0), 50),
            ((900, GI), 67),
            // Over capacity counts as full.
            ((2000, 4 * GI), 100),
        ];
        for ((cpu, mem), want) in cases {
            let n = with_requested(node("n", 1000, 4 * GI), cpu, mem, 0);
            let got = plugin().score(&pod(0, 0), &n).unwrap();
            assert_eq!(got, want, "used {cpu}m / {mem}");
        }
    }

    #[test]
    fn the_pod_counts_as_placed() {
        let n = with_requested(node("n", 1000, 4 * GI), 0, 2 * GI, 0);
        // Placing 500m evens the node out; placing nothing leaves it lopsided.
        assert_eq!(plugin().score(&pod(500, 0), &n).unwrap(), 100);
        assert_eq!(plugin().score(&pod(0, 0), &n).unwrap(), 75);
    }

    #[test]
    fn one_resource_has_nothing_to_balance() {
        let p = BalancedAllocation {
            resources: vec![Resource::Cpu],
        };
        let n = with_requested(node("n", 1000, 4 * GI), 900, 0, 0);
        assert_eq!(p.score(&pod(0, 0), &n).unwrap(), MAX_NODE_SCORE);
    }
}
