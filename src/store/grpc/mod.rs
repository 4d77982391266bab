//! etcd v3 gRPC service (in progress).
