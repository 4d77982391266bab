//! `wkube-bench`: benchmarks that print figures for wkube next to the peers
//! it stands in for, measured by the same client in the same run.
//!
//! Each benchmark is a subcommand; this file only parses the command line
//! and makes sure every server a benchmark started is killed, also when the
//! run is interrupted (the servers are owned by the benchmark's future, so
//! dropping that future runs their `Drop` guards).

mod api;
mod density;
mod footprint;
mod kubelet;
mod procs;
mod proxy;
mod rawkv;
mod scheduler;
mod serverless;
mod soak;
mod stats;
mod store;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "wkube-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,

    /// Worker threads of the load generator's runtime [default: one per
    /// core]. The load generator shares the machine with the servers it
    /// measures, so its own CPU cost is part of every figure.
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    client_threads: Option<u16>,
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// The etcd-role store: wkube's etcd v3 endpoint against a real etcd,
    /// durable puts and reads at several concurrencies.
    Store(store::StoreArgs),
    /// The Kubernetes API server: create and get latency at a fixed rate,
    /// and listing thousands of pods.
    Api(api::ApiArgs),
    /// The kubelet: pod create → first 200 through the pod proxy,
    /// per-request instantiation overhead, and the memory of idle pods.
    Kubelet(kubelet::KubeletArgs),
    /// The scheduler end to end through the API: hollow nodes, thousands
    /// of pods, pods/s to bound and packing quality per strategy.
    Scheduler(scheduler::SchedulerArgs),
    /// The service proxy: wrk against a NodePort Service and against
    /// `wasmtime serve` with the same component, and a same-node
    /// service-to-service call.
    Proxy(proxy::ProxyArgs),
    /// Serverless scaling: cold activation from zero replicas, a burst
    /// from zero, following a load step, and what accounting costs.
    Serverless(serverless::ServerlessArgs),
    /// A bounded mixed load for minutes on one server (TLS on): ConfigMap
    /// writes, watches checked for lost events, HTTP to pods, pod churn;
    /// fails on any error or on RSS growth after warm-up.
    Soak(soak::SoakArgs),
    /// What wkube costs a machine: stripped binary size, and RSS and idle
    /// CPU of an all-in-one server and of an agent, idle and with 1,000
    /// idle pods (and of an aarch64 agent under qemu-aarch64).
    Footprint(footprint::FootprintArgs),
    /// One node packed with HTTP pods of one module (10,000 by default):
    /// time to Running and routable, memory per pod, and the proxy's
    /// requests/s with that many endpoints behind one Service.
    Density(density::DensityArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut builder = match cli.client_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(usize::from(n));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wkube-bench: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    let run = async {
        match cli.bench {
            Bench::Store(args) => store::run(args).await,
            Bench::Api(args) => api::run(args).await,
            Bench::Kubelet(args) => kubelet::run(args).await,
            Bench::Scheduler(args) => scheduler::run(args).await,
            Bench::Proxy(args) => proxy::run(args).await,
            Bench::Serverless(args) => serverless::run(args).await,
            Bench::Soak(args) => soak::run(args).await,
            Bench::Footprint(args) => footprint::run(args).await,
            Bench::Density(args) => density::run(args).await,
        }
    };
    let result = tokio::select! {
        r = run => r,
        sig = shutdown_signal() => Err(anyhow::anyhow!("interrupted by {sig}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wkube-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM, naming the signal.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        // Without a SIGTERM handler, still honour Ctrl-C.
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}
