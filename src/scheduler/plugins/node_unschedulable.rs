//! `NodeUnschedulable`: a pod goes only to nodes that are Ready and not
//! cordoned (`spec.unschedulable`), unless it tolerates the
//! `node.kubernetes.io/unschedulable` taint that stands for cordoning.

use crate::scheduler::framework::{FilterPlugin, NodeInfo, PodInfo, Status};

use super::taint_toleration::tolerates;

/// The taint key Kubernetes uses for a cordoned node.
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

pub const REASON_NOT_READY: &str = "node(s) were not ready";
pub const REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";

/// See the module doc.
pub struct NodeUnschedulable;

impl FilterPlugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        "NodeUnschedulable"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status {
        if !node.ready {
            return Status::unschedulable(REASON_NOT_READY);
        }
        if node.unschedulable {
            let taint = k8s_openapi::api::core::v1::Taint {
                key: UNSCHEDULABLE_TAINT.into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            };
            if !pod.tolerations.iter().any(|t| tolerates(t, &taint)) {
                return Status::unschedulable(REASON_UNSCHEDULABLE);
            }
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::framework::testing::*;
    use k8s_openapi::api::core::v1::Toleration;

    #[test]
    fn only_ready_uncordoned_nodes_pass_unless_cordoning_is_tolerated() {
        let tolerate = Toleration {
            key: Some(UNSCHEDULABLE_TAINT.into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        };
        // (ready, unschedulable, tolerates cordon, expected reason)
        let cases = [
            (true, false, false, None),
            (false, false, false, Some(REASON_NOT_READY)),
            (false, true, true, Some(REASON_NOT_READY)),
            (true, true, false, Some(REASON_UNSCHEDULABLE)),
            (true, true, true, None),
        ];
        for (ready, cordoned, tolerant, want) in cases {
            let mut n = node("n", 1000, GI);
            n.ready = ready;
            n.unschedulable = cordoned;
            let mut p = pod(1, 1);
            if tolerant {
                p.tolerations.push(tolerate.clone());
            }
            let got = NodeUnschedulable.filter(&p, &n);
            match want {
                None => assert!(got.is_success(), "{ready} {cordoned} {tolerant}: {got:?}"),
                Some(r) => assert_eq!(
                    got,
                    Status::unschedulable(r),
                    "{ready} {cordoned} {tolerant}"
                ),
            }
        }
    }
}
