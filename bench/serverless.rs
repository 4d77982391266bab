//! `wkube-bench serverless`: scaling from zero and following load, on one
//! `wkube server` with `hello-http` behind a NodePort Service and an
//! autoscaler with `minReplicas: 0` on requests per second:
//!
//! - **cold activation:** rounds of one request to the workload at zero
//!   replicas (pods gone, the module already compiled on the node); the
//!   time to the first response, p50 and p99;
//! - **burst from zero:** many requests over many connections at once at
//!   zero; errors and the time until all are served;
//! - **follow a step:** load going 0 → N req/s → 0; the time to scale out,
//!   and back to zero, and failed requests;
//! - **the cost of accounting:** `hello-http` requests/s (wrk) on a server
//!   counting each container's CPU and memory against one that does not
//!   (`--no-pod-accounting`), in the same run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::api::{Api, Conn, admin_api};
use crate::procs;
use crate::proxy::{api_call, get, node_port, push, wait_answers, which, wrk};

const NODE: &str = "bench-node";
const NAMESPACE: &str = "bench";

#[derive(Args, Debug)]
pub struct ServerlessArgs {
    /// A tiny, fast run that only checks the benchmark works (used by the
    /// test suite); never fails on figures.
    #[arg(long)]
    smoke: bool,
    /// Cold activation rounds.
    #[arg(long, default_value_t = 100)]
    rounds: u32,
    /// Requests of the burst from zero.
    #[arg(long, default_value_t = 1000)]
    burst: u32,
    /// Connections of the burst from zero.
    #[arg(long, default_value_t = 64)]
    burst_connections: u32,
    /// Requests per second of the step.
    #[arg(long, default_value_t = 60)]
    step_rate: u32,
    /// Seconds the step lasts.
    #[arg(long, default_value_t = 15)]
    step_seconds: u64,
    /// Seconds of wrk per accounting measurement.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// The wkube binary [default: next to this benchmark].
    #[arg(long)]
    wkube: Option<std::path::PathBuf>,
}

/// Requests per second each pod is sized for.
const PER_POD: u32 = 20;

pub async fn run(args: ServerlessArgs) -> Result<()> {
    let (rounds, burst, step_seconds, duration) = if args.smoke {
        (3, 50, 2, 1)
    } else {
        (
            args.rounds.max(1),
            args.burst.max(1),
            args.step_seconds.max(1),
            args.duration.max(1),
        )
    };
    let bin = match &args.wkube {
        Some(b) => b.clone(),
        None => procs::sibling_binary("wkube")?,
    };
    let hello =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("guest-examples/out/hello-http.wasm");
    if !hello.exists() {
        bail!(
            "{} is missing (build it with guest-examples/build.sh)",
            hello.display()
        );
    }
    let (load, cores) = procs::machine_load();
    println!(
        "{cores} cores, load average {}",
        load.map_or_else(|| "unknown".into(), |l| format!("{l:.2}"))
    );
    let server = procs::spawn_wkube(
        &bin,
        &[
            "--node-name",
            NODE,
            "--agent-listen",
            "127.0.0.1:0",
            "--horizontal-pod-autoscaler-sync-period",
            "1s",
        ],
        Duration::from_secs(120),
    )
    .await?;
    let (api, _) = admin_api(&server).await?;
    let mut conn = Conn::open(&api.addr).await?;
    setup(&api, &mut conn, &hello).await?;
    let port = node_port(&api, &mut conn, "hello").await?;
    let url = format!("http://127.0.0.1:{port}/");
    wait_answers(&url, "Hello")
        .await
        .with_context(|| server.proc.log_tail(4096))?;

    // Cold activation.
    let mut firsts = Vec::new();
    let mut failures = 0;
    for _ in 0..rounds {
        to_zero(&api, &mut conn).await?;
        let start = Instant::now();
        match get(&url).await {
            Ok((200, _)) => firsts.push(start.elapsed()),
            _ => failures += 1,
        }
    }
    firsts.sort();
    let pct = |p: f64| {
        firsts
            .get(((firsts.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    };
    println!();
    println!("cold activation ({rounds} rounds, one request at zero replicas each)");
    println!(
        "  first response p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; failed {failures}",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        firsts.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!("  targets: p99 ≤ 50 ms, p50 ≤ 20 ms");

    // Burst from zero.
    to_zero(&api, &mut conn).await?;
    let connections = args.burst_connections.clamp(1, burst);
    let errors = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (errors, next, url) = (errors.clone(), next.clone(), url.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < u64::from(burst) {
                    if !matches!(get(&url).await, Ok((200, _))) {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let all = start.elapsed();
    let burst_errors = errors.load(Ordering::Relaxed);
    println!();
    println!("burst from zero ({burst} requests over {connections} connections)");
    println!(
        "  all served in {:.0} ms, errors {burst_errors} (target 0)",
        all.as_secs_f64() * 1e3
    );

    // Follow a step.
    to_zero(&api, &mut conn).await?;
    let rate = if args.smoke {
        10
    } else {
        args.step_rate.max(1)
    };
    let want = rate.div_ceil(PER_POD);
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, failed, sent, url) = (stop.clone(), failed.clone(), sent.clone(), url.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
            let mut inflight = tokio::task::JoinSet::new();
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let (failed, url) = (failed.clone(), url.clone());
                sent.fetch_add(1, Ordering::Relaxed);
                inflight.spawn(async move {
                    if !matches!(get(&url).await, Ok((200, _))) {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            while inflight.join_next().await.is_some() {}
        })
    };
    let start = Instant::now();
    let out = wait_replicas(
        &api,
        &mut conn,
        |r| r >= i64::from(want),
        Duration::from_secs(step_seconds.max(60)),
    )
    .await
    .map(|()| start.elapsed());
    let remaining = Duration::from_secs(step_seconds).saturating_sub(start.elapsed());
    tokio::time::sleep(remaining).await;
    stop.store(true, Ordering::Relaxed);
    let _ = load.await;
    let stopped = Instant::now();
    let back = wait_replicas(&api, &mut conn, |r| r == 0, Duration::from_secs(120))
        .await
        .map(|()| stopped.elapsed());
    println!();
    println!(
        "follow a step (0 → {rate} req/s for {step_seconds} s → 0; {PER_POD} req/s per pod, scale-in window 5 s, sync 1 s)"
    );
    match out {
        Ok(d) => println!("  out to {want} replicas in {:.1} s", d.as_secs_f64()),
        Err(e) => println!("  never reached {want} replicas: {e}"),
    }
    match back {
        Ok(d) => println!(
            "  back to zero {:.1} s after the load stopped",
            d.as_secs_f64()
        ),
        Err(e) => println!("  never back to zero: {e}"),
    }
    let step_failed = failed.load(Ordering::Relaxed);
    println!(
        "  {} requests sent, {step_failed} failed (target 0)",
        sent.load(Ordering::Relaxed)
    );

    // The cost of accounting: both servers up at once (an idle one costs
    // nothing), measured in turns with the order swapped each round, so
    // drift in the machine's load falls on both alike.
    println!();
    let turns = if args.smoke { 1 } else { 3 };
    println!(
        "the cost of accounting (hello-http, wrk 2 connections, {turns} turns of {duration} s each, warm pods; medians)"
    );
    if which("wrk").is_none() {
        println!("  wrk is not on the PATH: skipped (apt-get install wrk)");
    } else {
        let mut servers = Vec::new();
        for accounting in [true, false] {
            let mut extra = vec!["--node-name", NODE, "--agent-listen", "127.0.0.1:0"];
            if !accounting {
                extra.push("--no-pod-accounting");
            }
            let s = procs::spawn_wkube(&bin, &extra, Duration::from_secs(120)).await?;
            let (api, _) = admin_api(&s).await?;
            let mut conn = Conn::open(&api.addr).await?;
            setup(&api, &mut conn, &hello).await?;
            let port = node_port(&api, &mut conn, "hello").await?;
            let url = format!("http://127.0.0.1:{port}/");
            wait_answers(&url, "Hello").await?;
            let _ = wrk(&url, 2, 2, 1)?;
            servers.push((s, url));
        }
        let mut rps = [Vec::new(), Vec::new()];
        for turn in 0..turns {
            let order = if turn % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                rps[i].push(wrk(&servers[i].1, 2, 2, duration)?.rps);
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (on, off) = (median(&mut rps[0]), median(&mut rps[1]));
        println!("  accounting on   {on:>9.0} req/s");
        println!("  accounting off  {off:>9.0} req/s");
        println!(
            "  on is {:.1}% {} than off (target: at most 3% lower)",
            ((off - on) / off.max(1e-9) * 100.0).abs(),
            if on <= off { "lower" } else { "higher" }
        );
    }
    drop(server);
    if !args.smoke && (failures > 0 || burst_errors > 0 || step_failed > 0) {
        bail!("{failures} cold, {burst_errors} burst and {step_failed} step requests failed");
    }
    Ok(())
}

/// The namespace, `hello` pushed, its Deployment (one replica), a
/// NodePort Service and an autoscaler that may take it to zero.
async fn setup(api: &Api, conn: &mut Conn, hello: &std::path::Path) -> Result<()> {
    api_call(
        api,
        conn,
        "POST",
        "/api/v1/namespaces",
        Some(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})),
    )
    .await?;
    push(api, conn, "hello", hello).await?;
    api_call(
        api,
        conn,
        "POST",
        &format!("/apis/apps/v1/namespaces/{NAMESPACE}/deployments"),
        Some(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "hello"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "hello"}},
              "template": {"metadata": {"labels": {"app": "hello"}},
                "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 1,
                  "containers": [{"name": "web", "image": "hello:v1",
                  "ports": [{"name": "http", "containerPort": 8080}]}]}}}})),
    )
    .await?;
    api_call(
        api,
        conn,
        "POST",
        &format!("/api/v1/namespaces/{NAMESPACE}/services"),
        Some(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hello"},
            "spec": {"type": "NodePort", "selector": {"app": "hello"},
              "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
        ),
    )
    .await?;
    api_call(
        api,
        conn,
        "POST",
        &format!("/apis/autoscaling/v2/namespaces/{NAMESPACE}/horizontalpodautoscalers"),
        Some(json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "hello"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "hello"},
              "minReplicas": 0, "maxReplicas": 10,
              "metrics": [{"type": "Pods", "pods": {"metric": {"name": "requests_per_second"},
                "target": {"type": "AverageValue", "averageValue": PER_POD.to_string()}}}],
              "behavior": {"scaleDown": {"stabilizationWindowSeconds": 5}}}})),
    )
    .await?;
    Ok(())
}

/// The Deployment's `spec.replicas`.
async fn replicas(api: &Api, conn: &mut Conn) -> Result<i64> {
    let d = api_call(
        api,
        conn,
        "GET",
        &format!("/apis/apps/v1/namespaces/{NAMESPACE}/deployments/hello"),
        None,
    )
    .await?;
    Ok(d.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0))
}

async fn wait_replicas(
    api: &Api,
    conn: &mut Conn,
    done: impl Fn(i64) -> bool,
    within: Duration,
) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let r = replicas(api, conn).await?;
        if done(r) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("still at {r} replicas after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sets the workload to zero and waits until its pods and endpoints are
/// gone (at most a minute).
async fn to_zero(api: &Api, conn: &mut Conn) -> Result<()> {
    let mut req = api.request(
        "PATCH",
        &format!("/apis/apps/v1/namespaces/{NAMESPACE}/deployments/hello/scale"),
        Some(br#"{"spec":{"replicas":0}}"#.to_vec()),
    )?;
    req.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/merge-patch+json"),
    );
    let (status, body) = conn.send(req).await?;
    if !(200..300).contains(&status) {
        bail!(
            "scaling to zero: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pods = api_call(
            api,
            conn,
            "GET",
            &format!("/api/v1/namespaces/{NAMESPACE}/pods?labelSelector=app%3Dhello"),
            None,
        )
        .await?;
        let slices = api_call(
            api,
            conn,
            "GET",
            &format!(
                "/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dhello"
            ),
            None,
        )
        .await?;
        let no_pods = pods["items"].as_array().is_none_or(Vec::is_empty);
        let no_endpoints = slices["items"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|s| s["endpoints"].as_array().is_none_or(Vec::is_empty));
        if no_pods && no_endpoints {
            // The node's proxy learns of the empty slice by its watch.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("the pods of hello never went");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
