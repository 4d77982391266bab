//! The body of [`super::STATS_SUMMARY`], defined once for the agent that
//! writes it and the API server that reads it: what each container of
//! each pod uses, in the shape of Kubernetes' kubelet Summary API, with
//! wkube's own additions (the memory high-water mark and each pod's HTTP
//! requests) in fields that API does not have.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often an agent reads its usage counters.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(1);

/// How far back an agent's rates look. Short, so an autoscaler sees a
/// load change within seconds; several samples, so one late reading does
/// not swing it.
pub const WINDOW: Duration = Duration::from_secs(5);

/// A node's summary.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub node: NodeStats,
    #[serde(default)]
    pub pods: Vec<PodStats>,
}

/// The node's totals over the pods it runs.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    pub node_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
}

/// Which pod a [`PodStats`] is about.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodReference {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

/// One pod: its containers, and the HTTP requests it served.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    pub pod_ref: PodReference,
    #[serde(default)]
    pub containers: Vec<ContainerStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<RequestStats>,
}

/// One container.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
}

/// CPU: the time spent running guest code, and its recent rate.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    /// When the figures were taken (RFC 3339).
    pub time: String,
    /// Cores in use over the last sampling window, in billionths; absent
    /// until two samples exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_nano_cores: Option<u64>,
    /// CPU time since the container started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_core_nano_seconds: Option<u64>,
    /// How long the window of `usage_nano_cores` was, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_millis: Option<u64>,
}

/// Memory: the linear memories and tables of live instances.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_set_bytes: Option<u64>,
    /// The most held at once since the container started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_working_set_bytes: Option<u64>,
    /// The most held at once within the last [`WINDOW`]. A component that
    /// runs an instance per request holds memory only while it answers,
    /// so this, not the instant's figure, is what it needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent_max_working_set_bytes: Option<u64>,
}

/// The HTTP requests a pod's containers served.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequestStats {
    pub time: String,
    /// Requests taken since the pod started.
    pub total: u64,
    /// Requests being served now.
    pub in_flight: u64,
    /// Requests per second over the last sampling window, in thousandths;
    /// absent until two samples exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_second_milli: Option<u64>,
}
