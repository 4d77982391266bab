//! `wkube-bench density`: one node packed with HTTP pods of one module
//! (10,000 by default, where Kubernetes allows 110 per node), all placed,
//! Running and routable through one Service:
//!
//! - **time to start them all**: from the first create to every pod
//!   Running, and to every one of them ready in the Service's
//!   EndpointSlices;
//! - **memory per pod**: the agent's resident memory with the pods against
//!   its idle figure, divided by the pods (the agent alone is measured: a
//!   `wkube agent` joined to a server without a node of its own);
//! - **the proxy with that many endpoints**: `wrk` against the Service's
//!   NodePort on the node, requests/s and latency, with every answer
//!   checked to be a 2xx.
//!
//! The run fails only when something does not work (a pod never Runs, the
//! Service never has every endpoint, a request fails), never on the
//! figures.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, PostParams};
use serde_json::json;

use crate::footprint::{self, Agent, Cluster, NAMESPACE, Plan};
use crate::procs;

/// The agent's node name and address.
const NODE: &str = "density-agent";
const NODE_IP: &str = "127.0.0.4";
/// Pods Running on one node within this long (the performance issue's
/// target for 10,000 pods).
const RUNNING_TARGET: Duration = Duration::from_secs(20);

#[derive(Args, Debug)]
pub struct DensityArgs {
    /// A tiny, fast run that only checks the benchmark works (used by the
    /// test suite); never fails on figures.
    #[arg(long)]
    smoke: bool,
    /// Pods on the node.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Concurrent creators.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds of wrk against the NodePort.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// wrk connections.
    #[arg(long, default_value_t = 16)]
    connections: u32,
    /// The HTTP component the pods run [default:
    /// guest-examples/out/hello-http.wasm of this source tree].
    #[arg(long)]
    module: Option<PathBuf>,
    /// The wkube binary [default: next to this benchmark].
    #[arg(long)]
    wkube: Option<PathBuf>,
}

/// The smallest per-node prefix whose block holds `pods` addresses (and
/// the node's gateway and broadcast), at least /16 (the default cluster
/// range is one /16).
fn node_mask_for(pods: usize) -> u8 {
    let mut mask = 24u8;
    while mask > 16 && (1usize << (32 - mask)) < pods + 2 {
        mask -= 1;
    }
    mask
}

pub async fn run(args: DensityArgs) -> Result<()> {
    let (pods, plan, secs) = if args.smoke {
        let plan = Plan {
            pods: 20,
            arm64_pods: 0,
            settle: Duration::from_secs(1),
            window: Duration::from_secs(2),
            concurrency: 4,
        };
        (20, plan, 1)
    } else {
        let plan = Plan {
            pods: args.pods,
            arm64_pods: 0,
            settle: Duration::from_secs(10),
            window: Duration::from_secs(10),
            concurrency: args.concurrency.max(1),
        };
        (args.pods.max(1), plan, args.duration.max(1))
    };
    if procs::on_path("wrk").is_none() {
        bail!("wrk is not on the PATH (apt-get install wrk)");
    }
    let bin = match &args.wkube {
        Some(p) => p.clone(),
        None => procs::sibling_binary("wkube")?,
    };
    let (_, module) = procs::hello_module(args.module.as_deref())?;
    let (load, cores) = procs::machine_load();
    println!(
        "density: {pods} hello-http pods on one agent, {cores} cores, load average {}",
        load.map_or("unknown".into(), |l| format!("{l:.2}"))
    );

    let mask = node_mask_for(pods + 16);
    let mut cluster = Cluster::start(
        &bin,
        &[
            "--no-agent".to_string(),
            "--node-cidr-mask-size".to_string(),
            mask.to_string(),
        ],
    )
    .await?;
    let mut agent = Agent::start(
        Command::new(&bin),
        &cluster,
        NODE,
        NODE_IP,
        &footprint::max_pods_args(pods),
    )?;
    footprint::wait_node_ready(
        &mut agent.proc,
        &cluster.client,
        NODE,
        Duration::from_secs(120),
    )
    .await
    .with_context(|| format!("server log:\n{}", cluster.proc.log_tail(2048)))?;
    let idle = footprint::measure(&mut [&mut agent.proc, &mut cluster.proc], &plan, 0).await?;
    footprint::print_idle("agent, idle", &idle, "");

    cluster.deploy_module(&module).await?;
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "idle"},
        "spec": {
            "type": "NodePort",
            "selector": {"app": "idle"},
            "ports": [{"port": 80, "targetPort": 8080}],
        },
    }))?;
    let svc = kube::Api::<Service>::namespaced(cluster.client.clone(), NAMESPACE)
        .create(&PostParams::default(), &svc)
        .await
        .context("creating the Service")?;
    let node_port = svc
        .spec
        .and_then(|s| s.ports)
        .and_then(|p| p.first().and_then(|p| p.node_port))
        .context("the Service has no NodePort")?;

    let started = Instant::now();
    let timeout = Duration::from_secs(120) + Duration::from_millis(100) * pods as u32;
    let running = footprint::fill(
        &cluster.client,
        &mut [&mut agent.proc, &mut cluster.proc],
        NODE,
        pods,
        plan.concurrency,
        timeout,
    )
    .await
    .with_context(|| format!("agent log:\n{}", agent.proc.log_tail(4096)))?;
    println!(
        "  {pods} pods Running {:.1} s after the first create ({:.0} pods/s)",
        running.as_secs_f64(),
        pods as f64 / running.as_secs_f64()
    );
    let routable = all_endpoints_ready(&cluster.client, pods, started, timeout).await?;
    println!(
        "  all {pods} ready in the Service's EndpointSlices {:.1} s after the first create",
        routable.as_secs_f64()
    );
    let with = footprint::measure(&mut [&mut agent.proc, &mut cluster.proc], &plan, pods).await?;
    footprint::print_idle("agent, with the pods", &with, "");
    let per_pod_kib = with.mem.rss_kib.saturating_sub(idle.mem.rss_kib) as f64 / pods as f64;
    let tmpfs_kib = (with.mem.shmem_kib as f64 - idle.mem.shmem_kib as f64) / pods as f64;
    println!(
        "  memory per pod: {:.1} KiB ({per_pod_kib:.1} KiB of agent RSS, {tmpfs_kib:.1} KiB of tmpfs)",
        per_pod_kib + tmpfs_kib
    );

    // Every endpoint answers (a few passes round robin would take long at
    // 10,000; wrk spreads its requests over them), then the load.
    let url = format!("http://{NODE_IP}:{node_port}/");
    let w = crate::proxy::wrk(&url, args.connections.max(1), 2, secs)?;
    println!(
        "  proxy, {pods} endpoints, {} connections: {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
        args.connections.max(1),
        w.rps,
        w.p50_us / 1e3,
        w.p99_us / 1e3,
        w.errors
    );
    agent.proc.check_running()?;
    cluster.proc.check_running()?;
    if w.errors > 0 {
        bail!("{} requests through the NodePort failed", w.errors);
    }
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    println!(
        "  target: {pods} pods Running within {:.0} s: {} ({:.1} s)",
        RUNNING_TARGET.as_secs_f64(),
        verdict(running <= RUNNING_TARGET),
        running.as_secs_f64()
    );
    Ok(())
}

/// Waits (bounded) until the EndpointSlices of Service `idle` list
/// `count` ready endpoints; the time since `started`.
async fn all_endpoints_ready(
    client: &kube::Client,
    count: usize,
    started: Instant,
    timeout: Duration,
) -> Result<Duration> {
    let slices = kube::Api::<EndpointSlice>::namespaced(client.clone(), NAMESPACE);
    let lp = ListParams::default().labels("kubernetes.io/service-name=idle");
    let deadline = Instant::now() + timeout;
    loop {
        let list = tokio::time::timeout(Duration::from_secs(30), slices.list(&lp))
            .await
            .context("listing EndpointSlices timed out")??;
        let ready: usize = list
            .items
            .iter()
            .flat_map(|s| s.endpoints.iter())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
            .count();
        if ready >= count {
            return Ok(started.elapsed());
        }
        if Instant::now() >= deadline {
            bail!("{ready} of {count} endpoints ready after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_block_holds_its_pods() {
        assert_eq!(node_mask_for(36), 24);
        assert_eq!(node_mask_for(254), 24);
        assert_eq!(node_mask_for(255), 23);
        assert_eq!(node_mask_for(10_016), 18);
        assert_eq!(node_mask_for(1_000_000), 16);
    }
}
