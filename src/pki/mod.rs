//! Cluster PKI (in progress).
