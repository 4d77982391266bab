//! The plugins, one per file, each with its table-driven tests.
//!
//! - [`node_unschedulable`]: filter — the node is Ready and not cordoned.
//! - [`taint_toleration`]: filter — NoSchedule/NoExecute taints are tolerated.
//! - [`node_affinity`]: filter — `nodeSelector` and required node affinity;
//!   score — preferred node affinity.
//! - [`node_resources`]: filter — CPU, memory and pod count fit; score —
//!   `MostAllocated`, `LeastAllocated` or `RequestedToCapacityRatio`.
//! - [`balanced_allocation`]: score — resources used evenly.

pub mod balanced_allocation;
pub mod node_affinity;
pub mod node_resources;
pub mod node_unschedulable;
pub mod taint_toleration;
