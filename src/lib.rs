//! wkube: a Kubernetes-style orchestrator whose pods are WebAssembly
//! components.
//!
//! Modules, one per component:
//! - [`store`]: the etcd-role MVCC key-value store (embedded redb backend,
//!   etcd v3 gRPC endpoint).
//! - [`pki`]: the cluster CA and the certificates the servers and clients use.
//! - [`server`]: `wkube server`, which wires the components together.
//! - [`cli`]: the user-facing subcommands other than `server`.

pub mod cli;
pub mod pki;
pub mod server;
pub mod store;
