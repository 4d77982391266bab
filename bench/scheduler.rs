//! `wkube-bench scheduler`: the scheduler end to end through the API, with
//! "hollow" nodes — Node objects with capacity and a Ready condition whose
//! Leases this benchmark renews, with no agent behind them.
//!
//! For each scoring strategy a fresh `wkube server --no-agent` is started;
//! the benchmark creates N nodes, then M pods with a mix of request sizes
//! as fast as its connections allow, and watches the pods until every one
//! is bound. It prints pods/s from the first create to the last binding,
//! the nodes used against the lower bound ⌈total requests / node
//! capacity⌉ of the binding resource, the server's CPU per pod, and checks
//! that no node is overcommitted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use serde_json::{Value, json};
use tokio::net::TcpStream;

use crate::api::{Api, Conn, admin_api};
use crate::procs::{self, Server};

#[derive(Args, Debug)]
pub struct SchedulerArgs {
    /// A tiny run (20 nodes × 200 pods) that only checks the benchmark
    /// works; fails only on overcommitted nodes or unbound pods.
    #[arg(long)]
    smoke: bool,
    /// Hollow nodes.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Pods to place.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// CPU of each node, in millicores.
    #[arg(long, default_value_t = 16_000)]
    node_cpu_millis: i64,
    /// Memory of each node, in MiB (with 16 cores, CPU and memory bind
    /// about equally for the size mix below).
    #[arg(long, default_value_t = 32 * 1024)]
    node_memory_mib: i64,
    /// Connections pods are created over.
    #[arg(long, default_value_t = 32)]
    conns: usize,
    /// Strategies to measure, comma-separated.
    #[arg(
        long,
        default_value = "MostAllocated,LeastAllocated",
        value_delimiter = ','
    )]
    strategies: Vec<String>,
    /// Longest to wait for every pod to be bound, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// The wkube binary [default: next to this benchmark].
    #[arg(long)]
    wkube: Option<std::path::PathBuf>,
}

/// Request sizes, (millicores, MiB): a mix of small and large pods whose
/// CPU and memory are not proportional, so either may bind.
const SIZES: [(i64, i64); 8] = [
    (100, 128),
    (250, 256),
    (250, 1024),
    (500, 512),
    (500, 2048),
    (1000, 1024),
    (1000, 4096),
    (2000, 2048),
];

/// Deterministic pseudo-random sizes (a fixed LCG), so runs compare.
fn sizes(n: usize) -> Vec<(i64, i64)> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            SIZES[(x >> 33) as usize % SIZES.len()]
        })
        .collect()
}

pub async fn run(args: SchedulerArgs) -> Result<()> {
    let (nodes, pods) = if args.smoke {
        (20, 200)
    } else {
        (args.nodes, args.pods)
    };
    let bin = match &args.wkube {
        Some(b) => b.clone(),
        None => procs::sibling_binary("wkube")?,
    };
    let (load, cores) = procs::machine_load();
    println!(
        "scheduler: {nodes} hollow nodes ({}m CPU, {} MiB), {pods} pods, {} creating connections; \
         {cores} cores, load {}",
        args.node_cpu_millis,
        args.node_memory_mib,
        args.conns,
        load.map_or("?".into(), |l| format!("{l:.2}"))
    );
    let mut failed = Vec::new();
    for strategy in &args.strategies {
        let r = run_one(&bin, strategy, nodes, pods, &args).await?;
        if r.overcommitted > 0 {
            failed.push(format!(
                "{strategy}: {} overcommitted nodes",
                r.overcommitted
            ));
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(())
}

struct Outcome {
    overcommitted: usize,
}

async fn run_one(
    bin: &std::path::Path,
    strategy: &str,
    nodes: usize,
    pods: usize,
    args: &SchedulerArgs,
) -> Result<Outcome> {
    let flag = format!("--scheduler-strategy={strategy}");
    // /24 blocks of the default /9 pod range: room for 32k nodes.
    let server: Server = procs::spawn_wkube(
        bin,
        &["--no-agent", "--node-cidr-mask-size=24", &flag],
        Duration::from_secs(120),
    )
    .await?;
    let (api, _url) = admin_api(&server).await?;
    let api = Arc::new(api);
    let server_pid = server.proc.pid();

    // Namespace, nodes and their Leases.
    let mut conn = Conn::open(&api.addr).await?;
    expect(
        &mut conn,
        &api,
        "POST",
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}),
        201,
    )
    .await?;
    let names: Vec<String> = (0..nodes).map(|i| format!("hollow-{i:05}")).collect();
    let cpu = args.node_cpu_millis;
    let mem_mib = args.node_memory_mib;
    // One connection: the API server allocates pod CIDRs one at a time and
    // refuses concurrent allocations beyond a few.
    run_parallel(&api, 1, names.len(), {
        let names = names.clone();
        move |i| {
            let amounts = json!({"cpu": format!("{cpu}m"), "memory": format!("{mem_mib}Mi"), "pods": "110"});
            let node = json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": names[i], "labels": {"kubernetes.io/hostname": names[i], "type": "hollow"}},
                "status": {"capacity": amounts, "allocatable": amounts,
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "hollow"}]},
            });
            ("POST", "/api/v1/nodes".to_string(), node, 201)
        }
    })
    .await
    .context("creating nodes")?;
    run_parallel(&api, args.conns, names.len(), {
        let names = names.clone();
        move |i| {
            (
                "POST",
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases".to_string(),
                lease(&names[i]),
                201,
            )
        }
    })
    .await
    .context("creating leases")?;
    let renewer = tokio::spawn(renew_leases(api.clone(), names.clone()));

    // Watch from now, so every binding is seen.
    let (status, body) = conn
        .send(api.request("GET", "/api/v1/namespaces/bench/pods?limit=1", None)?)
        .await?;
    if status != 200 {
        bail!("listing pods: {status}");
    }
    let rv = serde_json::from_slice::<Value>(&body)?["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let watch = tokio::spawn(watch_bindings(api.clone(), rv, pods));

    let sizes = sizes(pods);
    let cpu_before = procs::cpu_time(server_pid);
    let self_before = procs::cpu_time(None);
    let start = Instant::now();
    run_parallel(&api, args.conns, pods, {
        let sizes = sizes.clone();
        move |i| {
            let (c, m) = sizes[i];
            let pod = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("p-{i:06}"), "namespace": "bench"},
                "spec": {"containers": [{"name": "c", "image": "hello:v1",
                    "resources": {"requests": {"cpu": format!("{c}m"), "memory": format!("{m}Mi")}}}]},
            });
            ("POST", "/api/v1/namespaces/bench/pods".to_string(), pod, 201)
        }
    })
    .await
    .context("creating pods")?;
    let created = start.elapsed();
    let bound = tokio::time::timeout(Duration::from_secs(args.timeout), watch)
        .await
        .map_err(|_| anyhow::anyhow!("not every pod was bound within {}s", args.timeout))??;
    let bound = bound?;
    let elapsed = start.elapsed();
    let cpu_after = procs::cpu_time(server_pid);
    let self_after = procs::cpu_time(None);
    renewer.abort();

    // Placement quality and overcommit, from the requests we sent.
    let mut per_node: HashMap<&str, (i64, i64, i64)> = HashMap::new();
    for (name, node) in &bound.nodes {
        let i: usize = name.trim_start_matches("p-").parse().unwrap_or(0);
        let (c, m) = sizes[i];
        let e = per_node.entry(node.as_str()).or_default();
        e.0 += c;
        e.1 += m;
        e.2 += 1;
    }
    let overcommitted = per_node
        .values()
        .filter(|(c, m, p)| *c > cpu || *m > mem_mib || *p > 110)
        .count();
    let total_cpu: i64 = sizes.iter().map(|s| s.0).sum();
    let total_mem: i64 = sizes.iter().map(|s| s.1).sum();
    let lb_cpu = (total_cpu + cpu - 1) / cpu;
    let lb_mem = (total_mem + mem_mib - 1) / mem_mib;
    let lb_pods = (pods as i64 + 109) / 110;
    let (lower, binding) = [(lb_cpu, "cpu"), (lb_mem, "memory"), (lb_pods, "pods")]
        .into_iter()
        .max_by_key(|x| x.0)
        .unwrap_or((1, "cpu"));
    let used = per_node.len();
    let rate = pods as f64 / elapsed.as_secs_f64();
    let cpu_per_pod = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) => format!("{:.0} µs", (a - b).as_secs_f64() * 1e6 / pods as f64),
        _ => "?".into(),
    };
    let self_per_pod = match (self_before, self_after) {
        (Some(b), Some(a)) => format!("{:.0} µs", (a - b).as_secs_f64() * 1e6 / pods as f64),
        _ => "?".into(),
    };
    println!();
    println!("{strategy}:");
    println!(
        "  {pods} pods bound in {:.2}s: {rate:.0} pods/s end to end (creates done after {:.2}s)",
        elapsed.as_secs_f64(),
        created.as_secs_f64()
    );
    println!(
        "  nodes used: {used} of {nodes}; lower bound {lower} ({binding} binds: cpu {lb_cpu}, memory {lb_mem}); \
         ratio {:.3}",
        used as f64 / lower.max(1) as f64
    );
    println!("  overcommitted nodes: {overcommitted}");
    println!("  server CPU per pod: {cpu_per_pod} (load generator: {self_per_pod})");
    if bound.nodes.len() != pods {
        bail!("{strategy}: {} of {pods} pods bound", bound.nodes.len());
    }
    Ok(Outcome { overcommitted })
}

fn lease(node: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": node, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": now_micro()},
    })
}

fn now_micro() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_micros()
    )
}

/// Renews every hollow node's Lease each 10 s, as a kubelet would.
async fn renew_leases(api: Arc<Api>, names: Vec<String>) {
    let Ok(mut conn) = Conn::open(&api.addr).await else {
        return;
    };
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.tick().await;
    loop {
        tick.tick().await;
        for n in &names {
            let patch = json!({"spec": {"renewTime": now_micro()}});
            let path =
                format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{n}");
            let Ok(mut req) = api.request("PATCH", &path, Some(patch.to_string().into_bytes()))
            else {
                return;
            };
            req.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static("application/merge-patch+json"),
            );
            if conn.send(req).await.is_err() {
                return;
            }
        }
    }
}

async fn expect(
    conn: &mut Conn,
    api: &Api,
    method: &str,
    path: &str,
    body: Value,
    want: u16,
) -> Result<()> {
    let (status, reply) = conn
        .send(api.request(method, path, Some(serde_json::to_vec(&body)?))?)
        .await?;
    if status != want {
        bail!(
            "{method} {path}: {status} {}",
            String::from_utf8_lossy(&reply)
        );
    }
    Ok(())
}

/// Sends `total` requests built by `make(i)` over `conns` connections,
/// each as fast as the server answers.
async fn run_parallel<F>(api: &Arc<Api>, conns: usize, total: usize, make: F) -> Result<()>
where
    F: Fn(usize) -> (&'static str, String, Value, u16) + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conns.max(1) {
        let (api, make, next) = (api.clone(), make.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&api.addr).await?;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return Ok::<(), anyhow::Error>(());
                }
                let (method, path, body, want) = make(i);
                expect(&mut conn, &api, method, &path, body, want).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// The part of a pod watch event the benchmark reads.
#[derive(serde::Deserialize)]
struct WatchLine {
    object: WatchedPod,
}

#[derive(serde::Deserialize)]
struct WatchedPod {
    metadata: WatchedMeta,
    #[serde(default)]
    spec: WatchedSpec,
}

#[derive(serde::Deserialize)]
struct WatchedMeta {
    name: String,
}

#[derive(serde::Deserialize, Default)]
struct WatchedSpec {
    #[serde(rename = "nodeName")]
    node_name: Option<String>,
}

struct Bound {
    /// Pod name → node.
    nodes: HashMap<String, String>,
}

/// Watches the bench namespace's pods until `want` of them are bound.
async fn watch_bindings(api: Arc<Api>, rv: String, want: usize) -> Result<Bound> {
    let stream = TcpStream::connect(&api.addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let path = format!(
        "/api/v1/namespaces/bench/pods?watch=true&allowWatchBookmarks=false&resourceVersion={rv}"
    );
    let req: Request<Full<Bytes>> = api.request("GET", &path, None)?;
    let resp = sender.send_request(req).await?;
    if resp.status() != 200 {
        bail!("watch: {}", resp.status());
    }
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    let mut nodes = HashMap::new();
    while nodes.len() < want {
        let Some(frame) = body.frame().await else {
            bail!("the watch ended after {} bindings", nodes.len());
        };
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            // Only the two fields read are decoded: the load generator's
            // CPU is taken from the same two cores as the server's.
            let Ok(ev) = serde_json::from_slice::<WatchLine>(&line) else {
                continue;
            };
            if let Some(node) = ev.object.spec.node_name {
                nodes.insert(ev.object.metadata.name, node);
            }
        }
    }
    Ok(Bound { nodes })
}
