//! The scheduling framework: what a plugin sees ([`PodInfo`], [`NodeInfo`]),
//! the small traits for each extension point ([`FilterPlugin`],
//! [`ScorePlugin`], [`Binder`]), the [`Status`] a plugin answers with, and
//! the cycle itself ([`Framework::schedule`]): filter every node, score
//! every feasible one, pick the best.
//!
//! Everything here is synchronous and free of I/O, so a whole cycle runs
//! under the cache lock and its decision (the assumption) is taken before
//! anyone else can look at the same free room.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{
    Node, NodeSelector, Pod, PreferredSchedulingTerm, Taint, Toleration,
};

use crate::resources::quantity;

/// Highest score a score plugin may give a node after normalisation.
pub const MAX_NODE_SCORE: i64 = 100;

/// CPU (millicores) counted for a container without a CPU request when
/// scoring, as Kubernetes does, so that "best effort" pods still spread or
/// pack instead of all scoring alike.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Memory (bytes) counted for a container without a memory request when
/// scoring.
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// Amounts of the resources the scheduler accounts for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    /// Bytes.
    pub memory: i64,
    /// Number of pods.
    pub pods: i64,
}

impl Resources {
    /// The amount of one resource.
    pub fn amount(&self, which: crate::scheduler::config::Resource) -> i64 {
        use crate::scheduler::config::Resource;
        match which {
            Resource::Cpu => self.milli_cpu,
            Resource::Memory => self.memory,
            Resource::Pods => self.pods,
        }
    }

    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.pods += other.pods;
    }

    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.pods -= other.pods;
    }

    fn max(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.pods = self.pods.max(other.pods);
    }
}

/// What the plugins need to know about the pod being scheduled, taken from
/// the Pod once when it enters the queue. Equality tells whether an update
/// of the pod could change where it fits.
#[derive(Clone, Debug, PartialEq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `spec.priority` (set from the priority class at admission).
    pub priority: i32,
    /// `spec.preemptionPolicy` is not `Never`: the pod may preempt.
    pub may_preempt: bool,
    pub created: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// The requests that must fit: the sum over the containers, or the
    /// largest init container when that is larger; `pods` is 1.
    pub requests: Resources,
    /// The same with Kubernetes' defaults for containers that request no
    /// CPU or memory; used only for scoring.
    pub score_requests: Resources,
    pub node_selector: BTreeMap<String, String>,
    pub required_affinity: Option<NodeSelector>,
    pub preferred_affinity: Vec<PreferredSchedulingTerm>,
    pub tolerations: Vec<Toleration>,
}

impl PodInfo {
    /// `namespace/name`, for messages.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Takes what scheduling needs from `pod`.
    pub fn from_pod(pod: &Pod) -> PodInfo {
        // Borrowed, not cloned: only the fields below are copied out.
        let spec = pod.spec.as_ref();
        let (requests, score_requests) = pod_requests(pod);
        let affinity = spec
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref());
        PodInfo {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            priority: spec.and_then(|s| s.priority).unwrap_or(0),
            may_preempt: spec.and_then(|s| s.preemption_policy.as_deref()) != Some("Never"),
            created: pod.metadata.creation_timestamp.clone(),
            requests,
            score_requests,
            node_selector: spec
                .and_then(|s| s.node_selector.clone())
                .unwrap_or_default(),
            required_affinity: affinity.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .clone()
            }),
            preferred_affinity: affinity
                .and_then(|a| {
                    a.preferred_during_scheduling_ignored_during_execution
                        .clone()
                })
                .unwrap_or_default(),
            tolerations: spec.and_then(|s| s.tolerations.clone()).unwrap_or_default(),
        }
    }
}

/// A pod's requests `(to fit, to score)`: containers summed, then raised to
/// the largest init container (init containers run one at a time, before
/// the others).
pub fn pod_requests(pod: &Pod) -> (Resources, Resources) {
    let Some(spec) = &pod.spec else {
        return (
            Resources {
                pods: 1,
                ..Resources::default()
            },
            Resources {
                pods: 1,
                ..Resources::default()
            },
        );
    };
    let container = |c: &k8s_openapi::api::core::v1::Container| -> (Resources, Resources) {
        let req = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        let get = |name: &str, milli: bool| -> i64 {
            req.and_then(|r| r.get(name))
                .and_then(|q| quantity::parse(&q.0))
                .map(|q| {
                    let v = if milli { q.milli() } else { q.ceil_units() };
                    i64::try_from(v.max(0)).unwrap_or(i64::MAX)
                })
                .unwrap_or(0)
        };
        let fit = Resources {
            milli_cpu: get("cpu", true),
            memory: get("memory", false),
            pods: 0,
        };
        let score = Resources {
            milli_cpu: if fit.milli_cpu == 0 {
                DEFAULT_MILLI_CPU_REQUEST
            } else {
                fit.milli_cpu
            },
            memory: if fit.memory == 0 {
                DEFAULT_MEMORY_REQUEST
            } else {
                fit.memory
            },
            pods: 0,
        };
        (fit, score)
    };
    let mut fit = Resources::default();
    let mut score = Resources::default();
    for c in &spec.containers {
        let (f, s) = container(c);
        fit.add(&f);
        score.add(&s);
    }
    for c in spec.init_containers.iter().flatten() {
        let (f, s) = container(c);
        fit.max(&f);
        score.max(&s);
    }
    fit.pods = 1;
    score.pods = 1;
    (fit, score)
}

/// A node as the plugins see it: its own facts plus what is already placed
/// on it (bound pods and pods assumed by this scheduler).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// `status.allocatable` (or `capacity` when allocatable is missing).
    pub allocatable: Resources,
    /// Sum of the requests of the pods placed here.
    pub requested: Resources,
    /// The same with default requests, for scoring.
    pub score_requested: Resources,
}

impl NodeInfo {
    /// The node's own facts from a Node object (nothing placed yet).
    pub fn from_node(node: &Node) -> NodeInfo {
        let spec = node.spec.clone().unwrap_or_default();
        let status = node.status.clone().unwrap_or_default();
        let amounts = status.allocatable.or(status.capacity).unwrap_or_default();
        let get = |name: &str, milli: bool| -> i64 {
            amounts
                .get(name)
                .and_then(|q| quantity::parse(&q.0))
                .map(|q| {
                    let v = if milli { q.milli() } else { q.ceil_units() };
                    i64::try_from(v.max(0)).unwrap_or(i64::MAX)
                })
                .unwrap_or(0)
        };
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints: spec.taints.unwrap_or_default(),
            ready: status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True"),
            unschedulable: spec.unschedulable.unwrap_or(false),
            allocatable: Resources {
                milli_cpu: get("cpu", true),
                memory: get("memory", false),
                pods: get("pods", false),
            },
            requested: Resources::default(),
            score_requested: Resources::default(),
        }
    }
}

/// How a plugin's answer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// The node passes.
    Success,
    /// The pod does not fit on the node; an expected outcome, retried when
    /// the cluster changes.
    Unschedulable,
    /// The plugin could not decide (a bug or bad input); the cycle stops
    /// and the pod is retried after a back-off.
    Error,
}

/// A plugin's answer: a code and, unless it is a success, the reasons
/// (`Insufficient memory`), which the fit error counts per node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub reasons: Vec<Cow<'static, str>>,
}

impl Status {
    /// Passes; allocates nothing.
    pub const fn success() -> Status {
        Status {
            code: Code::Success,
            reasons: Vec::new(),
        }
    }

    /// Does not fit, for `reason`.
    pub fn unschedulable(reason: impl Into<Cow<'static, str>>) -> Status {
        Status {
            code: Code::Unschedulable,
            reasons: vec![reason.into()],
        }
    }

    /// Could not decide.
    pub fn error(message: impl Into<Cow<'static, str>>) -> Status {
        Status {
            code: Code::Error,
            reasons: vec![message.into()],
        }
    }

    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }
}

/// Decides whether a pod may run on a node at all.
pub trait FilterPlugin: Send + Sync {
    fn name(&self) -> &'static str;
    /// Whether the filter can refuse any node for `pod`; when not, a cycle
    /// skips it for every node (Kubernetes' PreFilter answering `Skip`).
    fn relevant(&self, _pod: &PodInfo) -> bool {
        true
    }
    /// [`Code::Success`] when `pod` may go to `node`.
    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status;
    /// Just the verdict of [`filter`](Self::filter), which a plugin may
    /// answer without building the reasons (the cycle asks this of every
    /// node and wants the reasons only when no node fits).
    fn fits(&self, pod: &PodInfo, node: &NodeInfo) -> Code {
        self.filter(pod, node).code
    }
}

/// Ranks the nodes that passed every filter.
pub trait ScorePlugin: Send + Sync {
    fn name(&self) -> &'static str;
    /// Whether the plugin can tell nodes apart for `pod`; when not, a cycle
    /// skips it (Kubernetes' PreScore answering `Skip`).
    fn relevant(&self, _pod: &PodInfo) -> bool {
        true
    }
    /// A raw score for `node`; higher is better.
    ///
    /// # Errors
    /// A [`Code::Error`] status when the plugin cannot score.
    fn score(&self, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status>;
    /// Brings the raw scores of one cycle into `0..=MAX_NODE_SCORE`; the
    /// default leaves scores that are already in range as they are.
    fn normalize(&self, _pod: &PodInfo, _scores: &mut [i64]) {}
    /// Whether [`normalize`](Self::normalize) scales by the other nodes'
    /// scores: then a node's score depends on every node, not only on the
    /// pod and that node, and a batch cannot update it one node at a time
    /// (see [`super::batch`]).
    fn normalizes(&self) -> bool {
        false
    }
}

/// Binds a pod to the chosen node (through the API, in wkube).
#[async_trait::async_trait]
pub trait Binder: Send + Sync {
    /// # Errors
    /// The binding was refused or could not be sent; the scheduler forgets
    /// its assumption and retries the pod.
    async fn bind(&self, pod: &PodInfo, node: &str) -> Result<(), String>;
}

/// Scales raw scores to `0..=MAX_NODE_SCORE` by the largest one
/// (Kubernetes' `DefaultNormalizeScore`); `reverse` makes the lowest raw
/// score the best.
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        *s = MAX_NODE_SCORE * *s / max;
        if reverse {
            *s = MAX_NODE_SCORE - *s;
        }
    }
}

/// No node can take the pod: how many nodes there were and how many failed
/// for each reason. Displays as Kubernetes' message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FitError {
    pub num_nodes: usize,
    pub reasons: HashMap<Cow<'static, str>, usize>,
}

impl std::fmt::Display for FitError {
    /// `0/5 nodes are available: 3 Insufficient memory, 2 node(s) had
    /// untolerated taint {k: v}.` — most frequent reason first.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0/{} nodes are available", self.num_nodes)?;
        let mut reasons: Vec<(&Cow<'static, str>, &usize)> = self.reasons.iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        for (i, (reason, count)) in reasons.iter().enumerate() {
            let sep = if i == 0 { ": " } else { ", " };
            write!(f, "{sep}{count} {reason}")?;
        }
        f.write_str(".")
    }
}

/// Why a cycle placed no pod.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ScheduleError {
    /// No node fits: an expected outcome.
    #[error("{0}")]
    Unfit(FitError),
    /// A plugin failed.
    #[error("plugin {plugin}: {message}")]
    Internal {
        plugin: &'static str,
        message: String,
    },
}

/// Where a cycle put a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleResult {
    pub node: String,
    /// Nodes that passed the filters (all of them were scored).
    pub feasible: usize,
}

/// The plugins of one profile, in order, with the score weights.
pub struct Framework {
    pub filters: Vec<Box<dyn FilterPlugin>>,
    pub scores: Vec<(Box<dyn ScorePlugin>, i64)>,
}

/// The node a pod scores highest on, by its position among the nodes
/// walked, and that score.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Best {
    pub index: usize,
    pub total: i64,
    /// Nodes that passed the filters when the pod was last walked over
    /// every node.
    pub feasible: usize,
}

impl Framework {
    /// Whether each node's score for `pod` depends only on the pod and that
    /// node (no relevant score plugin normalizes across nodes).
    pub fn scores_independently(&self, pod: &PodInfo) -> bool {
        !self
            .scores
            .iter()
            .any(|(p, w)| *w != 0 && p.relevant(pod) && p.normalizes())
    }

    /// The weighted score of `pod` on `node`, `None` when a filter refuses
    /// it. Only for pods that [score independently](Self::scores_independently):
    /// it is the total [`schedule`](Self::schedule) gives that node.
    ///
    /// # Errors
    /// [`ScheduleError::Internal`] when a plugin fails.
    pub fn score_on(&self, pod: &PodInfo, node: &NodeInfo) -> Result<Option<i64>, ScheduleError> {
        for f in self.filters.iter().filter(|f| f.relevant(pod)) {
            match f.fits(pod, node) {
                Code::Success => {}
                Code::Unschedulable => return Ok(None),
                Code::Error => {
                    return Err(ScheduleError::Internal {
                        plugin: f.name(),
                        message: f.filter(pod, node).reasons.join("; "),
                    });
                }
            }
        }
        let mut total = 0;
        for (plugin, weight) in &self.scores {
            if *weight == 0 || !plugin.relevant(pod) {
                continue;
            }
            let s = plugin
                .score(pod, node)
                .map_err(|status| ScheduleError::Internal {
                    plugin: plugin.name(),
                    message: status.reasons.join("; "),
                })?;
            total += s.clamp(0, MAX_NODE_SCORE) * weight;
        }
        Ok(Some(total))
    }

    /// The highest-scoring node of `nodes` for `pod` (the first on a tie),
    /// as [`schedule`](Self::schedule) chooses it, for a pod that scores
    /// independently.
    ///
    /// # Errors
    /// As [`schedule`](Self::schedule).
    pub fn best(&self, pod: &PodInfo, nodes: &[&NodeInfo]) -> Result<Best, ScheduleError> {
        let mut best: Option<Best> = None;
        let mut feasible = 0;
        for (index, node) in nodes.iter().enumerate() {
            let Some(total) = self.score_on(pod, node)? else {
                continue;
            };
            feasible += 1;
            if best.is_none_or(|b| total > b.total) {
                best = Some(Best {
                    index,
                    total,
                    feasible: 0,
                });
            }
        }
        match best {
            Some(b) => Ok(Best { feasible, ..b }),
            // The reasons, as a cycle reports them.
            None => self.schedule(pod, nodes.iter().copied()).and_then(|_| {
                Err(ScheduleError::Internal {
                    plugin: "framework",
                    message: "a node fits by the filters but was not scored".into(),
                })
            }),
        }
    }

    /// Whether `pod` passes every filter on `node`.
    pub fn feasible(&self, pod: &PodInfo, node: &NodeInfo) -> bool {
        self.filters
            .iter()
            .filter(|f| f.relevant(pod))
            .all(|f| f.fits(pod, node) == Code::Success)
    }

    /// One scheduling cycle over `nodes`: every node is filtered and every
    /// feasible node scored (no sampling); the highest weighted sum wins,
    /// the first such node in `nodes`' order on a tie.
    ///
    /// # Errors
    /// [`ScheduleError::Unfit`] when no node passes the filters,
    /// [`ScheduleError::Internal`] when a plugin fails.
    pub fn schedule<'a>(
        &self,
        pod: &PodInfo,
        nodes: impl Iterator<Item = &'a NodeInfo>,
    ) -> Result<ScheduleResult, ScheduleError> {
        let filters: Vec<&dyn FilterPlugin> = self
            .filters
            .iter()
            .map(|f| &**f)
            .filter(|f| f.relevant(pod))
            .collect();
        // Room for every node up front: no regrowth during the walk. The
        // reasons a node was refused are only counted when no node fits
        // (below): on a busy cluster most nodes are full, and tallying
        // "Insufficient cpu" for each of them on every cycle was a visible
        // share of the scheduler's time.
        let nodes: Vec<&NodeInfo> = nodes.collect();
        let mut feasible: Vec<&NodeInfo> = Vec::with_capacity(nodes.len());
        'nodes: for node in &nodes {
            for f in &filters {
                match f.fits(pod, node) {
                    Code::Success => {}
                    Code::Unschedulable => continue 'nodes,
                    Code::Error => {
                        return Err(ScheduleError::Internal {
                            plugin: f.name(),
                            message: f.filter(pod, node).reasons.join("; "),
                        });
                    }
                }
            }
            feasible.push(node);
        }
        match feasible.len() {
            0 => {
                return Err(ScheduleError::Unfit(FitError {
                    num_nodes: nodes.len(),
                    reasons: refusal_reasons(&filters, pod, &nodes),
                }));
            }
            1 => {
                return Ok(ScheduleResult {
                    node: feasible[0].name.clone(),
                    feasible: 1,
                });
            }
            _ => {}
        }
        let mut totals = vec![0i64; feasible.len()];
        let mut scores = vec![0i64; feasible.len()];
        for (plugin, weight) in &self.scores {
            if *weight == 0 || !plugin.relevant(pod) {
                continue;
            }
            for (slot, node) in scores.iter_mut().zip(&feasible) {
                *slot = plugin
                    .score(pod, node)
                    .map_err(|status| ScheduleError::Internal {
                        plugin: plugin.name(),
                        message: status.reasons.join("; "),
                    })?;
            }
            plugin.normalize(pod, &mut scores);
            for (total, s) in totals.iter_mut().zip(&scores) {
                *total += s.clamp(&0, &MAX_NODE_SCORE) * weight;
            }
        }
        let mut best = 0;
        for (i, t) in totals.iter().enumerate() {
            if *t > totals[best] {
                best = i;
            }
        }
        Ok(ScheduleResult {
            node: feasible[best].name.clone(),
            feasible: feasible.len(),
        })
    }
}

/// How many nodes each reason refused `pod` on, for the `FailedScheduling`
/// message: a node counts once under the first filter that refuses it.
fn refusal_reasons(
    filters: &[&dyn FilterPlugin],
    pod: &PodInfo,
    nodes: &[&NodeInfo],
) -> HashMap<Cow<'static, str>, usize> {
    let mut reasons: HashMap<Cow<'static, str>, usize> = HashMap::new();
    for node in nodes {
        if let Some(status) = filters
            .iter()
            .map(|f| f.filter(pod, node))
            .find(|s| s.code == Code::Unschedulable)
        {
            for r in status.reasons {
                *reasons.entry(r).or_insert(0) += 1;
            }
        }
    }
    reasons
}

#[cfg(test)]
pub(crate) mod testing {
    //! Builders for plugin tests.
    use super::*;

    pub const GI: i64 = 1 << 30;

    pub fn pod(cpu: i64, memory: i64) -> PodInfo {
        let r = Resources {
            milli_cpu: cpu,
            memory,
            pods: 1,
        };
        PodInfo {
            namespace: "default".into(),
            name: "p".into(),
            uid: "uid-p".into(),
            priority: 0,
            may_preempt: true,
            created: None,
            requests: r,
            score_requests: r,
            node_selector: BTreeMap::new(),
            required_affinity: None,
            preferred_affinity: Vec::new(),
            tolerations: Vec::new(),
        }
    }

    pub fn node(name: &str, cpu: i64, memory: i64) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            ready: true,
            allocatable: Resources {
                milli_cpu: cpu,
                memory,
                pods: 110,
            },
            ..NodeInfo::default()
        }
    }

    pub fn with_requested(mut n: NodeInfo, cpu: i64, memory: i64, pods: i64) -> NodeInfo {
        n.requested = Resources {
            milli_cpu: cpu,
            memory,
            pods,
        };
        n.score_requested = n.requested;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    struct Fixed(&'static str, Code);
    impl FilterPlugin for Fixed {
        fn name(&self) -> &'static str {
            "Fixed"
        }
        fn filter(&self, _: &PodInfo, node: &NodeInfo) -> Status {
            if node.name == self.0 {
                Status {
                    code: self.1,
                    reasons: vec!["nope".into()],
                }
            } else {
                Status::success()
            }
        }
    }

    #[test]
    fn the_fit_message_has_kubernetes_shape_most_frequent_reason_first() {
        let err = FitError {
            num_nodes: 5,
            reasons: HashMap::from([
                ("node(s) had untolerated taint {a: b}".into(), 2),
                ("Insufficient memory".into(), 3),
            ]),
        };
        assert_eq!(
            err.to_string(),
            "0/5 nodes are available: 3 Insufficient memory, 2 node(s) had untolerated taint {a: b}."
        );
    }

    #[test]
    fn an_internal_error_stops_the_cycle_and_a_misfit_does_not() {
        let nodes = [node("a", 1000, GI), node("b", 1000, GI)];
        let fw = Framework {
            filters: vec![Box::new(Fixed("a", Code::Unschedulable))],
            scores: vec![],
        };
        let r = fw.schedule(&pod(1, 1), nodes.iter()).unwrap();
        assert_eq!(r.node, "b");
        let fw = Framework {
            filters: vec![Box::new(Fixed("a", Code::Error))],
            scores: vec![],
        };
        assert!(matches!(
            fw.schedule(&pod(1, 1), nodes.iter()),
            Err(ScheduleError::Internal { .. })
        ));
    }

    #[test]
    fn init_containers_raise_requests_to_the_largest_one() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2", "memory": "1Gi"}}}],
                "containers": [
                    {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "100Mi"}}},
                    {"name": "b", "resources": {"requests": {"cpu": "700m"}}},
                ]
            }
        }))
        .unwrap();
        let (fit, score) = pod_requests(&pod);
        assert_eq!(
            fit,
            Resources {
                milli_cpu: 2000,
                memory: GI,
                pods: 1
            }
        );
        assert_eq!(score.memory, GI);
        assert_eq!(score.milli_cpu, 2000);
    }
}
