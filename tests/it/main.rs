//! wkube's integration tests, one binary: each module starts real `wkube`
//! processes on loopback and drives them with stock clients (kubectl,
//! etcdctl, curl, HTTP). One binary links wasmtime and the crate once
//! instead of once per file. Run one area with `cargo test --test it
//! kubectl::`.

mod common;

mod agent;
mod api_http;
mod apikinds;
mod apply;
mod arm64;
mod autoscaling;
mod backup;
mod batch;
mod clients;
mod cloud;
mod controllers;
mod crash;
mod crd;
mod disruption;
mod etcd_backend;
mod etcdctl;
mod gateway;
mod hosts;
mod ingress;
mod kubectl;
mod kubelet;
mod kv_cli;
mod lifecycle;
mod limits;
mod manifest;
mod metrics;
mod modules;
mod networkpolicy;
mod nodes;
mod operator;
mod precompiled;
mod proxy;
mod quota;
mod scheduler;
mod server;
