//! wkube: a Kubernetes-style orchestrator whose pods are WebAssembly
//! components.
//!
//! Modules, one per component:
//! - [`store`]: the etcd-role MVCC key-value store (embedded redb backend,
//!   etcd v3 gRPC endpoint).
//! - [`api`]: the Kubernetes API server (REST, authn, RBAC, admission, watch).
//! - [`resources`]: the kinds served, with defaulting and validation.
//! - [`pki`]: the cluster CA and the certificates the servers and clients use.
//! - [`runtime`]: the wasmtime embedding that runs pods (engine, module
//!   cache, HTTP and command instances, limits).
//! - [`kubelet`]: the node agent that runs pods with the runtime.
//! - [`scheduler`]: places pods on nodes (filter, score, bind) through the API.
//! - [`client`]: the API client the components use (with failover, and
//!   for agents, answers remembered for offline use).
//! - [`checkpoint`]: sealed files an agent keeps to run and restart while
//!   no API server answers.
//! - [`controllers`]: the controller manager (ReplicaSet, Deployment, Job,
//!   CronJob, DaemonSet, endpoints, node lifecycle) and leader election.
//! - [`cloud`]: the cloud controller manager and its providers.
//! - [`server`]: `wkube server`, which wires the components together.
//! - [`shutdown`]: one shutdown signal for a component's tasks.
//! - [`cli`]: the user-facing subcommands other than `server`.
//!
//! The control plane (`store`, `api`, `scheduler`, `controllers`, `cloud`,
//! `server`) is built with the `server` cargo feature, on by default.
//! Without it the crate is the node alone (kubelet, proxy, runtime and the
//! agent's join), which is the small edge agent; the node's modules never
//! reach into the control plane's.

pub mod accept;
pub mod agentapi;
#[cfg(feature = "server")]
pub mod api;
pub mod checkpoint;
pub mod cli;
pub mod client;
#[cfg(feature = "server")]
pub mod cloud;
pub mod cluster;
#[cfg(feature = "server")]
pub mod controllers;
pub mod embedded;
pub mod events;
pub mod kubelet;
pub mod metrics;
pub mod node;
pub mod pki;
pub mod proxy;
pub mod resources;
pub mod runtime;
#[cfg(feature = "server")]
pub mod scheduler;
#[cfg(feature = "server")]
pub mod server;
pub mod shutdown;
#[cfg(feature = "server")]
pub mod store;

// Fuzzing mostly drives the API server's decoders and patch engines.
#[cfg(all(test, feature = "server"))]
mod fuzz;
