//! `wkube-bench kubelet`: how fast the local node starts an HTTP pod and
//! what its pods cost, measured against the targets:
//!
//! - **create → first 200**: a pod with `spec.nodeName` set is POSTed and
//!   timed until its first `200` through the API server's pod proxy
//!   (`pods/NAME/proxy/`), split at the watch event that shows it Running
//!   and Ready: one pod after another, then from several creators at once,
//!   and once more by polling the proxy every millisecond instead of
//!   watching (the earliest moment a client could be answered);
//! - **instantiation overhead**: in this process, with the library's
//!   runtime, one fresh instance of the module (what every request costs
//!   before the guest runs) and one whole request through `HttpService`;
//! - **memory of idle pods**: the resident memory of the server process
//!   before and after a thousand pods of one module are Running and have
//!   each served one request.
//!
//! The module is compiled before anything is timed (a warm-up pod, created,
//! reached and deleted), as the issue asks. The node runs inside `wkube
//! server`, so the memory figure includes what the control plane keeps per
//! pod (its stored object and watch caches), not only the kubelet's share.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::{Bytes, BytesMut};
use clap::Args;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::api::{Api, Conn, admin_api};
use crate::procs::{self, Server};
use crate::stats::{Recorder, Summary, fmt_latency_us};

/// The node the benchmark's pods are bound to (there is no scheduler yet).
const NODE: &str = "bench-node";
const NAMESPACE: &str = "bench";
/// Longest any single pod may take to answer before the run fails.
const POD_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Args, Debug)]
pub struct KubeletArgs {
    /// A tiny, fast run that only checks the benchmark works (used by the
    /// test suite); never fails on figures.
    #[arg(long)]
    smoke: bool,
    /// Pods timed from create to first 200, one after another (and again
    /// from concurrent creators, and again by polling).
    #[arg(long, default_value_t = 100)]
    pods: usize,
    /// Concurrent creators of the second create → first 200 figure.
    #[arg(long, default_value_t = 10)]
    creators: usize,
    /// Instantiations (and whole requests) timed in-process.
    #[arg(long, default_value_t = 10_000)]
    instantiations: usize,
    /// Idle HTTP pods for the memory figure.
    #[arg(long, default_value_t = 1000)]
    idle_pods: usize,
    /// Concurrent creators while filling the node with idle pods.
    #[arg(long, default_value_t = 16)]
    idle_concurrency: usize,
    /// The HTTP component the pods run [default:
    /// guest-examples/out/hello-http.wasm of this source tree].
    #[arg(long)]
    module: Option<PathBuf>,
    /// The wkube binary [default: next to this benchmark].
    #[arg(long)]
    wkube: Option<PathBuf>,
}

pub async fn run(args: KubeletArgs) -> Result<()> {
    let (pods, creators, instantiations, idle_pods, idle_conc) = if args.smoke {
        (5, 2, 1_000, 20, 4)
    } else {
        (
            args.pods.max(1),
            args.creators.max(1),
            args.instantiations.max(1),
            args.idle_pods.max(1),
            args.idle_concurrency.max(1),
        )
    };
    let bin = match &args.wkube {
        Some(b) => b.clone(),
        None => procs::sibling_binary("wkube")?,
    };
    let (module_path, module) = procs::hello_module(args.module.as_deref())?;
    let (load, cores) = procs::machine_load();
    println!(
        "module {} ({} bytes); {cores} cores, load average {}",
        module_path.display(),
        module.len(),
        load.map_or_else(|| "unknown".into(), |l| format!("{l:.2}"))
    );

    // In-process first, while no server competes for the cores.
    let inst = instantiation(&module, instantiations).await?;

    println!();
    println!("create → first 200 (server 1)");
    let cluster = Cluster::start(&bin, &module).await?;
    println!("  {} API at {}", cluster.server.version, cluster.url);
    let watch = ReadyWatch::start(cluster.api.clone()).await?;
    let seq = start_latency(&cluster, &watch, "seq", pods, 1).await?;
    let conc = start_latency(&cluster, &watch, "conc", pods, creators).await?;
    let poll = poll_latency(&cluster, "poll", pods).await?;
    drop(watch);
    drop(cluster);

    println!();
    println!("memory of {idle_pods} idle pods (server 2)");
    let mem = idle_memory(&bin, &module, idle_pods, idle_conc).await?;

    report(&inst, &seq, &conc, creators, &poll, &mem);
    let errors = seq.total.errors + conc.total.errors + poll.total.errors + inst.errors;
    if errors > 0 {
        bail!("{errors} operations failed");
    }
    Ok(())
}

// --- the cluster under measurement ----------------------------------------

/// A `wkube server` with a local node, the module pushed as `hello:v1` and
/// compiled by a warm-up pod.
struct Cluster {
    api: Arc<Api>,
    url: String,
    server: Server,
}

impl Cluster {
    async fn start(bin: &Path, module: &[u8]) -> Result<Cluster> {
        let server = procs::spawn_wkube(
            bin,
            &[
                "--node-name",
                NODE,
                "--agent-listen",
                "127.0.0.1:0",
                "--max-pods",
                "2000",
            ],
            Duration::from_secs(120),
        )
        .await?;
        let (api, url) = admin_api(&server).await?;
        let cluster = Cluster {
            api: Arc::new(api),
            url,
            server,
        };
        let mut conn = Conn::open(&cluster.api.addr).await?;
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}});
        let (status, body) = conn
            .send(cluster.api.request(
                "POST",
                "/api/v1/namespaces",
                Some(serde_json::to_vec(&ns)?),
            )?)
            .await?;
        if status != 201 {
            bail!(
                "creating the namespace: {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
        let mut push = cluster.api.request(
            "POST",
            "/apis/wkube.dev/v1/modules/hello/push?tag=v1",
            Some(module.to_vec()),
        )?;
        push.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/wasm"),
        );
        let (status, body) = conn.send(push).await?;
        if !(200..300).contains(&status) {
            bail!(
                "pushing the module: {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
        // The warm-up pod: the node registers, the module is fetched and
        // compiled; then it is deleted so the measured node starts empty.
        let t = Instant::now();
        create_pod(&cluster.api, &mut conn, "warm-up").await?;
        wait_200(
            &cluster.api,
            &mut conn,
            "warm-up",
            Duration::from_millis(20),
        )
        .await
        .with_context(|| cluster.log_tail())?;
        let warm = t.elapsed();
        delete_pod(&cluster.api, &mut conn, "warm-up").await?;
        println!(
            "  warm-up pod answered {} after its create (node registration, fetch and compile included)",
            fmt_latency_us(warm.as_secs_f64() * 1e6)
        );
        Ok(cluster)
    }

    fn log_tail(&self) -> String {
        format!("server log:\n{}", self.server.proc.log_tail(4096))
    }
}

fn pod_json(name: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {
            "nodeName": NODE,
            "containers": [{
                "name": "web",
                "image": "hello:v1",
                "ports": [{"containerPort": 8080}],
            }],
        },
    }))
    .unwrap_or_default()
}

async fn create_pod(api: &Api, conn: &mut Conn, name: &str) -> Result<()> {
    let req = api.request(
        "POST",
        &format!("/api/v1/namespaces/{NAMESPACE}/pods"),
        Some(pod_json(name)),
    )?;
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), conn.send(req))
        .await
        .context("creating a pod timed out")??;
    if status != 201 {
        bail!(
            "creating pod {name}: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}

/// One GET through the pod proxy: the status and body.
async fn proxy_get(api: &Api, conn: &mut Conn, name: &str) -> Result<(u16, Bytes)> {
    let req = api.request(
        "GET",
        &format!("/api/v1/namespaces/{NAMESPACE}/pods/{name}/proxy/"),
        None,
    )?;
    tokio::time::timeout(Duration::from_secs(30), conn.send(req))
        .await
        .context("a pod proxy request timed out")?
}

/// Polls the pod proxy every `interval` until it answers 200 (bounded by
/// [`POD_TIMEOUT`]); the moment of the 200 and the requests it took.
async fn wait_200(
    api: &Api,
    conn: &mut Conn,
    name: &str,
    interval: Duration,
) -> Result<(Instant, u32)> {
    let deadline = Instant::now() + POD_TIMEOUT;
    let mut tries = 0;
    loop {
        tries += 1;
        let (status, body) = proxy_get(api, conn, name).await?;
        if status == 200 {
            return Ok((Instant::now(), tries));
        }
        if Instant::now() >= deadline {
            bail!(
                "pod {name} did not answer 200 within {POD_TIMEOUT:?}; last answer {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
        tokio::time::sleep(interval).await;
    }
}

/// Deletes a pod and waits (bounded) until the kubelet has removed it.
async fn delete_pod(api: &Api, conn: &mut Conn, name: &str) -> Result<()> {
    let path = format!("/api/v1/namespaces/{NAMESPACE}/pods/{name}");
    let (status, body) = conn.send(api.request("DELETE", &path, None)?).await?;
    if !(200..300).contains(&status) {
        bail!(
            "deleting pod {name}: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    let deadline = Instant::now() + POD_TIMEOUT;
    loop {
        let (status, _) = conn.send(api.request("GET", &path, None)?).await?;
        if status == 404 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("pod {name} still exists {POD_TIMEOUT:?} after its deletion");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// --- the watch that sees pods become ready ---------------------------------

/// When the watch first showed a pod Running, and then Running with every
/// container ready, and how many events it took.
#[derive(Clone, Copy, Debug)]
struct Seen {
    running: Instant,
    ready: Instant,
    events: u32,
}

#[derive(Default)]
struct Pending {
    running: Option<Instant>,
    events: u32,
    waiter: Option<oneshot::Sender<Seen>>,
}

/// One watch on the namespace's pods, stamping each pod's transitions as
/// they arrive; a creator registers before its POST so no event is missed.
struct ReadyWatch {
    pods: Arc<Mutex<HashMap<String, Pending>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ReadyWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ReadyWatch {
    async fn start(api: Arc<Api>) -> Result<ReadyWatch> {
        let stream = TcpStream::connect(&api.addr).await?;
        stream.set_nodelay(true)?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = api.request(
            "GET",
            &format!("/api/v1/namespaces/{NAMESPACE}/pods?watch=1&timeoutSeconds=3600"),
            None,
        )?;
        let resp = sender.send_request(req).await?;
        if resp.status() != 200 {
            bail!("watching pods: {}", resp.status());
        }
        let pods: Arc<Mutex<HashMap<String, Pending>>> = Arc::default();
        let table = pods.clone();
        let task = tokio::spawn(async move {
            let mut body = resp.into_body();
            let mut buf = BytesMut::new();
            while let Some(Ok(frame)) = body.frame().await {
                let now = Instant::now();
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                buf.extend_from_slice(&data);
                while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                    let line = buf.split_to(nl + 1);
                    if let Ok(ev) = serde_json::from_slice::<Value>(&line) {
                        seen_event(&table, &ev, now);
                    }
                }
            }
        });
        Ok(ReadyWatch { pods, task })
    }
}

fn seen_event(pods: &Mutex<HashMap<String, Pending>>, ev: &Value, now: Instant) {
    let obj = &ev["object"];
    let Some(name) = obj.pointer("/metadata/name").and_then(Value::as_str) else {
        return;
    };
    let mut pods = pods.lock();
    let Some(p) = pods.get_mut(name) else {
        return;
    };
    p.events += 1;
    let running = obj.pointer("/status/phase").and_then(Value::as_str) == Some("Running");
    if !running {
        return;
    }
    let running_at = *p.running.get_or_insert(now);
    let ready = obj
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c["ready"] == true));
    if ready && let Some(tx) = p.waiter.take() {
        let _ = tx.send(Seen {
            running: running_at,
            ready: now,
            events: p.events,
        });
    }
}

// --- create → first 200 -----------------------------------------------------

/// Latencies of one create → first 200 run, split at its steps.
#[derive(Default)]
struct StartFigures {
    /// The POST of the pod until its 201.
    create: Recorder,
    /// The 201 until the watch shows the pod Running.
    to_running: Recorder,
    /// Running until Running and Ready (often the same event).
    to_ready: Recorder,
    /// The ready event until the first 200 through the pod proxy.
    to_200: Recorder,
    /// The POST until the first 200.
    total: Recorder,
    /// Watch events per pod up to Ready; proxy requests per pod up to 200.
    events: u64,
    proxy_tries: u64,
    elapsed: Duration,
    pods: usize,
}

impl StartFigures {
    fn merge(&mut self, o: StartFigures) {
        self.create.merge(o.create);
        self.to_running.merge(o.to_running);
        self.to_ready.merge(o.to_ready);
        self.to_200.merge(o.to_200);
        self.total.merge(o.total);
        self.events += o.events;
        self.proxy_tries += o.proxy_tries;
        self.pods += o.pods;
    }
}

/// `count` pods from `creators` tasks, each created, watched until Ready
/// and then reached through the pod proxy.
async fn start_latency(
    cluster: &Cluster,
    watch: &ReadyWatch,
    prefix: &str,
    count: usize,
    creators: usize,
) -> Result<StartFigures> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..creators.min(count) {
        let api = cluster.api.clone();
        let next = next.clone();
        let prefix = prefix.to_string();
        let pods = watch.pods.clone();
        let expect = move |name: &str| {
            let (tx, rx) = oneshot::channel();
            pods.lock().insert(
                name.to_string(),
                Pending {
                    waiter: Some(tx),
                    ..Pending::default()
                },
            );
            rx
        };
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&api.addr).await?;
            let mut fig = StartFigures::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let name = format!("{prefix}-{i}");
                let ready = expect(&name);
                let t0 = Instant::now();
                if let Err(e) = create_pod(&api, &mut conn, &name).await {
                    fig.total.error(e);
                    continue;
                }
                let created = Instant::now();
                let seen = match tokio::time::timeout(POD_TIMEOUT, ready).await {
                    Ok(Ok(seen)) => seen,
                    _ => {
                        fig.total
                            .error(format!("pod {name} not ready within {POD_TIMEOUT:?}"));
                        continue;
                    }
                };
                let (answered, tries) =
                    match wait_200(&api, &mut conn, &name, Duration::from_millis(1)).await {
                        Ok(r) => r,
                        Err(e) => {
                            fig.total.error(e);
                            continue;
                        }
                    };
                fig.create.ok(created - t0);
                fig.to_running
                    .ok(seen.running.saturating_duration_since(created));
                fig.to_ready.ok(seen.ready - seen.running);
                fig.to_200.ok(answered - seen.ready);
                fig.total.ok(answered - t0);
                fig.events += u64::from(seen.events);
                fig.proxy_tries += u64::from(tries);
                fig.pods += 1;
            }
            Ok::<StartFigures, anyhow::Error>(fig)
        }));
    }
    let mut all = StartFigures::default();
    for t in tasks {
        all.merge(t.await??);
    }
    all.elapsed = started.elapsed();
    print_start(&format!("{prefix} ×{creators}"), &all);
    if let Some(e) = &all.total.first_error {
        eprintln!("  first error: {e}\n{}", cluster.log_tail());
    }
    Ok(all)
}

/// `count` pods one after another, each polled through the pod proxy every
/// millisecond from its 201 until it answers 200.
async fn poll_latency(cluster: &Cluster, prefix: &str, count: usize) -> Result<StartFigures> {
    let api = &cluster.api;
    let mut conn = Conn::open(&api.addr).await?;
    let mut fig = StartFigures::default();
    let started = Instant::now();
    for i in 0..count {
        let name = format!("{prefix}-{i}");
        let t0 = Instant::now();
        if let Err(e) = create_pod(api, &mut conn, &name).await {
            fig.total.error(e);
            continue;
        }
        let created = Instant::now();
        match wait_200(api, &mut conn, &name, Duration::from_millis(1)).await {
            Ok((answered, tries)) => {
                fig.create.ok(created - t0);
                fig.to_200.ok(answered - created);
                fig.total.ok(answered - t0);
                fig.proxy_tries += u64::from(tries);
                fig.pods += 1;
            }
            Err(e) => fig.total.error(e),
        }
    }
    fig.elapsed = started.elapsed();
    print_start(&format!("{prefix} ×1"), &fig);
    Ok(fig)
}

fn print_start(label: &str, f: &StartFigures) {
    let s = |r: &Recorder| r.summary(f.elapsed);
    let row = |step: &str, r: &Recorder| {
        if r.hist.is_empty() {
            return;
        }
        let x = s(r);
        println!(
            "  {label:<10} {step:<22} p50 {:>9}  p99 {:>9}  max {:>9}",
            fmt_latency_us(x.p50_us),
            fmt_latency_us(x.p99_us),
            fmt_latency_us(x.max_us)
        );
    };
    row("POST → 201", &f.create);
    row("201 → Running (watch)", &f.to_running);
    row("Running → Ready", &f.to_ready);
    if f.to_running.hist.is_empty() {
        row("201 → first 200 (poll)", &f.to_200);
    } else {
        row("Ready → first 200", &f.to_200);
    }
    row("create → first 200", &f.total);
    let pods = f.pods.max(1) as f64;
    println!(
        "  {label:<10} {} pods in {:.2} s ({:.0} pods/s); per pod {:.1} watch events, {:.1} proxy requests; errors {}",
        f.pods,
        f.elapsed.as_secs_f64(),
        f.pods as f64 / f.elapsed.as_secs_f64().max(1e-9),
        f.events as f64 / pods,
        f.proxy_tries as f64 / pods,
        f.total.errors
    );
}

// --- instantiation, in-process ----------------------------------------------

struct InstFigures {
    pooling: bool,
    bare: Summary,
    /// With a pod's context as the kubelet builds it (env, a preopen, a
    /// memory limit and a CPU quota).
    pod_like: Summary,
    request: Summary,
    /// The same with the pod's context and CPU share, as the kubelet
    /// serves a pod alone on its node.
    pod_request: Summary,
    errors: u64,
}

async fn instantiation(module: &[u8], n: usize) -> Result<InstFigures> {
    use wkube::runtime::cache::digest_of;
    use wkube::runtime::{
        CpuQuota, HttpService, PodContext, PodLimits, Preopen, Runtime, RuntimeConfig,
    };

    let dir = tempfile::Builder::new()
        .prefix("wkube-bench-runtime-")
        .tempdir()?;
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: dir.path().join("cache"),
        ..RuntimeConfig::default()
    })?;
    let t = Instant::now();
    let loaded = rt.load(&digest_of(module), module)?;
    let compile = t.elapsed();
    let bare = HttpService::new(loaded.clone(), PodContext::default(), PodLimits::default())?;
    let volume = dir.path().join("volume");
    std::fs::create_dir_all(&volume)?;
    let env: Vec<(String, String)> = (0..8)
        .map(|i| (format!("VAR_{i}"), format!("value-{i}")))
        .chain([
            ("KUBERNETES_SERVICE_HOST".into(), "127.96.0.1".into()),
            ("KUBERNETES_SERVICE_PORT".into(), "443".into()),
        ])
        .collect();
    let pod_like = HttpService::new(
        loaded,
        PodContext {
            args: vec!["web".into()],
            env,
            preopens: vec![Preopen {
                host_path: volume,
                guest_path: "/var/run/secrets/kubernetes.io/serviceaccount".into(),
                read_only: true,
            }],
            ..PodContext::default()
        },
        PodLimits {
            memory_bytes: Some(128 << 20),
            cpu: Some(Arc::new(CpuQuota::new(1000))),
            share: Some(Arc::new(wkube::runtime::fair::CpuShare::new(
                wkube::runtime::fair::CpuGate::global(),
                Some(100),
            ))),
            ..PodLimits::default()
        },
    )?;
    let (bare_rec, bare_s) = time_instantiations(&bare, n).await;
    let (pod_rec, pod_s) = time_instantiations(&pod_like, n).await;
    let mut errors = bare_rec.errors + pod_rec.errors;
    let (req_errors, request) = time_requests(&bare, n).await?;
    let (pod_req_errors, pod_request) = time_requests(&pod_like, n).await?;
    errors += req_errors + pod_req_errors;
    println!();
    println!(
        "instantiation, in-process (pooling allocator: {}; compiled in {})",
        rt.pooling(),
        fmt_latency_us(compile.as_secs_f64() * 1e6)
    );
    let row = |name: &str, s: &Summary| {
        println!(
            "  {name:<34} {:>7} ops  p50 {:>9}  p99 {:>9}  max {:>9}",
            s.ops,
            fmt_latency_us(s.p50_us),
            fmt_latency_us(s.p99_us),
            fmt_latency_us(s.max_us)
        );
    };
    row("store + instantiate (empty ctx)", &bare_s);
    row("store + instantiate (pod's ctx)", &pod_s);
    row("whole GET / (empty ctx)", &request);
    row("whole GET / (pod's ctx and share)", &pod_request);
    Ok(InstFigures {
        pooling: rt.pooling(),
        bare: bare_s,
        pod_like: pod_s,
        request,
        pod_request,
        errors,
    })
}

/// `n` whole requests (`GET /`, body read to its end) through
/// `HttpService::handle`, one after another.
async fn time_requests(svc: &wkube::runtime::HttpService, n: usize) -> Result<(u64, Summary)> {
    let mut rec = Recorder::default();
    let t = Instant::now();
    for _ in 0..n {
        let req = Request::get("/")
            .body(Empty::<Bytes>::new())
            .context("building a request")?;
        let start = Instant::now();
        let resp = svc.handle(req).await;
        let status = resp.status();
        match resp.into_body().collect().await {
            Ok(_) if status == 200 => rec.ok(start.elapsed()),
            Ok(_) => rec.error(format!("status {status}")),
            Err(e) => rec.error(e),
        }
    }
    Ok((rec.errors, rec.summary(t.elapsed())))
}

/// `n` instantiations of `svc` after a short warm-up (which fills the
/// instance pool's slots and the allocator's caches).
async fn time_instantiations(svc: &wkube::runtime::HttpService, n: usize) -> (Recorder, Summary) {
    let mut rec = Recorder::default();
    for _ in 0..(n / 10).clamp(10, 1000) {
        let _ = svc.probe_instantiation().await;
    }
    let t = Instant::now();
    for _ in 0..n {
        match svc.probe_instantiation().await {
            Ok(d) => rec.ok(d),
            Err(e) => rec.error(e),
        }
    }
    let summary = rec.summary(t.elapsed());
    (rec, summary)
}

// --- memory of idle pods ------------------------------------------------------

/// Memory of a process from `/proc/PID/status` and `smaps_rollup`, KiB.
#[derive(Clone, Copy, Debug, Default)]
struct Memory {
    rss: u64,
    rss_anon: u64,
    rss_file: u64,
    pss: Option<u64>,
    threads: u64,
    /// The machine's shared memory (`Shmem` of /proc/meminfo): the
    /// kubelet keeps pods' tokens and Secret volumes on tmpfs, which no
    /// process's RSS shows.
    shmem: u64,
}

fn memory_of(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |text: &str, key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
    };
    let pss = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|t| field(&t, "Pss:"));
    Ok(Memory {
        rss: field(&status, "VmRSS:").context("no VmRSS")?,
        rss_anon: field(&status, "RssAnon:").unwrap_or(0),
        rss_file: field(&status, "RssFile:").unwrap_or(0),
        pss,
        threads: field(&status, "Threads:").unwrap_or(0),
        shmem: procs::shmem_kib(),
    })
}

struct MemFigures {
    pods: usize,
    before: Memory,
    after: Memory,
    fill: Duration,
    first_200: Summary,
}

impl MemFigures {
    fn per_pod_kib(&self, f: impl Fn(&Memory) -> u64) -> f64 {
        (f(&self.after) as f64 - f(&self.before) as f64) / self.pods.max(1) as f64
    }
}

async fn idle_memory(
    bin: &Path,
    module: &[u8],
    count: usize,
    concurrency: usize,
) -> Result<MemFigures> {
    let cluster = Cluster::start(bin, module).await?;
    let pid = cluster
        .server
        .proc
        .pid()
        .context("the server is not running")?;
    // Let the warm-up pod's deletion and the first Lease writes settle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = memory_of(pid)?;
    let requests_before = request_counts(&cluster.api).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.min(count) {
        let api = cluster.api.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&api.addr).await?;
            let mut rec = Recorder::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let name = format!("idle-{i}");
                let t0 = Instant::now();
                create_pod(&api, &mut conn, &name).await?;
                let (answered, _) =
                    wait_200(&api, &mut conn, &name, Duration::from_millis(10)).await?;
                rec.ok(answered - t0);
            }
            Ok::<Recorder, anyhow::Error>(rec)
        }));
    }
    let mut rec = Recorder::default();
    for t in tasks {
        match t.await? {
            Ok(r) => rec.merge(r),
            Err(e) => bail!("filling the node: {e:#}\n{}", cluster.log_tail()),
        }
    }
    let fill = started.elapsed();
    // Status writes and the kubelet's bookkeeping of the last pods settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = memory_of(pid)?;
    let requests_after = request_counts(&cluster.api).await?;
    let first_200 = rec.summary(fill);
    let fig = MemFigures {
        pods: count,
        before,
        after,
        fill,
        first_200,
    };
    let kib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
    println!(
        "  {count} pods Running and answered in {:.1} s ({:.0} pods/s at {concurrency} creators; create → 200 p50 {}, p99 {})",
        fill.as_secs_f64(),
        count as f64 / fill.as_secs_f64().max(1e-9),
        fmt_latency_us(fig.first_200.p50_us),
        fmt_latency_us(fig.first_200.p99_us),
    );
    print_requests_per_pod(&requests_before, &requests_after, count);
    for (name, m) in [("after warm-up", &before), ("with the idle pods", &after)] {
        println!(
            "  {name:<20} VmRSS {:>10}  RssAnon {:>10}  RssFile {:>10}  Pss {:>10}  threads {}",
            kib(m.rss),
            kib(m.rss_anon),
            kib(m.rss_file),
            m.pss.map_or_else(|| "—".into(), kib),
            m.threads
        );
    }
    println!(
        "  per pod: VmRSS {:.1} KiB, tmpfs {:.1} KiB, RssAnon {:.1} KiB, RssFile {:.1} KiB{}",
        fig.per_pod_kib(|m| m.rss),
        fig.per_pod_kib(|m| m.shmem),
        fig.per_pod_kib(|m| m.rss_anon),
        fig.per_pod_kib(|m| m.rss_file),
        match (before.pss, after.pss) {
            (Some(_), Some(_)) =>
                format!(", Pss {:.1} KiB", fig.per_pod_kib(|m| m.pss.unwrap_or(0))),
            _ => String::new(),
        }
    );
    Ok(fig)
}

/// The API server's request counters (`apiserver_request_total`), summed
/// over response codes, by verb and resource.
async fn request_counts(api: &Api) -> Result<HashMap<(String, String), f64>> {
    let mut conn = Conn::open(&api.addr).await?;
    let (status, body) = conn.send(api.request("GET", "/metrics", None)?).await?;
    if status != 200 {
        bail!("GET /metrics: {status}");
    }
    let mut out: HashMap<(String, String), f64> = HashMap::new();
    for line in String::from_utf8_lossy(&body).lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix("=\""))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let n: f64 = value.trim().parse().unwrap_or(0.0);
        *out.entry((label("verb"), label("resource"))).or_default() += n;
    }
    Ok(out)
}

/// What a pod start costs the API server: requests per pod during the
/// fill (the bench's own create and GET included), largest first.
fn print_requests_per_pod(
    before: &HashMap<(String, String), f64>,
    after: &HashMap<(String, String), f64>,
    pods: usize,
) {
    let mut rows: Vec<(f64, &(String, String))> = after
        .iter()
        .map(|(k, v)| {
            (
                (v - before.get(k).copied().unwrap_or(0.0)) / pods.max(1) as f64,
                k,
            )
        })
        .filter(|(per, _)| *per >= 0.01)
        .collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    let total: f64 = rows.iter().map(|r| r.0).sum();
    let list: Vec<String> = rows
        .iter()
        .map(|(per, (verb, resource))| format!("{verb} {resource} {per:.2}"))
        .collect();
    println!(
        "  API requests per pod start: {total:.1} ({})",
        list.join(", ")
    );
}

// --- the summary --------------------------------------------------------------

fn report(
    inst: &InstFigures,
    seq: &StartFigures,
    conc: &StartFigures,
    creators: usize,
    poll: &StartFigures,
    mem: &MemFigures,
) {
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let total = seq.total.summary(seq.elapsed);
    let c = conc.total.summary(conc.elapsed);
    let p = poll.total.summary(poll.elapsed);
    let per_pod = mem.per_pod_kib(|m| m.rss + m.shmem);
    println!();
    println!("targets (Kubernetes' SLO for pod start is 5 s):");
    println!(
        "  create → first 200 p50 <= 15 ms:   {} ({} one at a time, watch then GET; {} with {creators} creators; {} polling)",
        verdict(total.p50_us <= 15_000.0),
        fmt_latency_us(total.p50_us),
        fmt_latency_us(c.p50_us),
        fmt_latency_us(p.p50_us),
    );
    println!(
        "  create → first 200 p99 <= 50 ms:   {} ({} one at a time; {} with {creators} creators; {} polling)",
        verdict(total.p99_us <= 50_000.0),
        fmt_latency_us(total.p99_us),
        fmt_latency_us(c.p99_us),
        fmt_latency_us(p.p99_us),
    );
    println!(
        "  instantiation p50 <= 50 µs:        {} ({}, p99 {}; with a pod's context {}; pooling {})",
        verdict(inst.bare.p50_us <= 50.0),
        fmt_latency_us(inst.bare.p50_us),
        fmt_latency_us(inst.bare.p99_us),
        fmt_latency_us(inst.pod_like.p50_us),
        inst.pooling,
    );
    println!(
        "  whole in-process request p50 <= 30 µs: {} ({}, p99 {}, with the pod's context and CPU share; {} with an empty one)",
        verdict(inst.pod_request.p50_us <= 30.0),
        fmt_latency_us(inst.pod_request.p50_us),
        fmt_latency_us(inst.pod_request.p99_us),
        fmt_latency_us(inst.request.p50_us),
    );
    println!(
        "  memory per idle pod <= 100 KiB:    {} ({per_pod:.1} KiB VmRSS + tmpfs over {} pods, control plane's share included ({:.1} KiB of it tmpfs); filled in {:.1} s)",
        verdict(per_pod <= 100.0),
        mem.pods,
        mem.per_pod_kib(|m| m.shmem),
        mem.fill.as_secs_f64(),
    );
}
