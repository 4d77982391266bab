//! `wkube-bench api`: the Kubernetes API server's latency under a steady
//! load, measured the way Kubernetes' API SLOs are stated: single-object
//! create and get latency at a fixed request rate, and the time to list
//! many pods.
//!
//! The load is open-loop: requests are scheduled at fixed intervals and
//! each latency counts from its scheduled start, so a server that stalls
//! is charged for the requests queued behind the stall (no coordinated
//! omission). Every request is a real HTTP/1.1 request over loopback with a
//! bearer token, as any client sends it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::procs::{self, Server};
use crate::stats::{Recorder, Summary, fmt_latency_us};

#[derive(Args, Debug)]
pub struct ApiArgs {
    /// A tiny, fast run that only checks the benchmark works (used by the
    /// test suite); never fails on figures.
    #[arg(long)]
    smoke: bool,
    /// Requests per second of the create and get workloads.
    #[arg(long, default_value_t = 500)]
    rate: u32,
    /// Seconds each rate-driven workload runs.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Pods in the list workload.
    #[arg(long, default_value_t = 10_000)]
    list_pods: usize,
    /// Connections the load generator spreads requests over.
    #[arg(long, default_value_t = 16)]
    conns: usize,
    /// The wkube binary [default: next to this benchmark].
    #[arg(long)]
    wkube: Option<PathBuf>,
}

/// One HTTP/1.1 connection to the API server.
pub(crate) struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    pub(crate) async fn open(addr: &str) -> Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Conn { sender })
    }

    pub(crate) async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<(u16, Bytes)> {
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// Where the API server listens and the admin's bearer token.
pub(crate) struct Api {
    pub(crate) addr: String,
    pub(crate) token: String,
}

impl Api {
    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Request<Full<Bytes>>> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.addr)
            .header("authorization", format!("Bearer {}", self.token))
            .header("accept", "application/json");
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        Ok(b.body(Full::new(Bytes::from(body.unwrap_or_default())))?)
    }
}

fn pod(name: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench", "tier": "web"}},
        "spec": {"containers": [{
            "name": "web",
            "image": "hello:v1",
            "ports": [{"containerPort": 8080}],
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
        }]},
    }))
    .unwrap_or_default()
}

/// Run `total` requests at `rate` per second over `conns` connections;
/// `make(i)` builds request `i`; `expect` is the status every answer must
/// have.
async fn paced(
    api: &Arc<Api>,
    conns: usize,
    rate: u32,
    total: usize,
    expect: u16,
    make: Arc<dyn Fn(usize) -> Result<Request<Full<Bytes>>> + Send + Sync>,
) -> Result<(Recorder, Duration)> {
    let mut pool = Vec::new();
    for _ in 0..conns.max(1) {
        pool.push(Arc::new(Mutex::new(Conn::open(&api.addr).await?)));
    }
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let conn = pool[i % pool.len()].clone();
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let req = make(i)?;
            let mut conn = conn.lock().await;
            let (status, body) = tokio::time::timeout(Duration::from_secs(30), conn.send(req))
                .await
                .context("request timed out")??;
            if status != expect {
                bail!("status {status}: {}", String::from_utf8_lossy(&body));
            }
            // Latency from the scheduled start: queueing counts.
            Ok::<Duration, anyhow::Error>(due.elapsed())
        }));
    }
    let mut rec = Recorder::default();
    for t in tasks {
        match t.await {
            Ok(Ok(lat)) => rec.ok(lat),
            Ok(Err(e)) => rec.error(e),
            Err(e) => rec.error(e),
        }
    }
    Ok((rec, start.elapsed()))
}

fn line(name: &str, s: &Summary) {
    println!(
        "{name:<28} {:>8} ops {:>9.0}/s  p50 {:>9}  p99 {:>9}  max {:>9}  errors {}",
        s.ops,
        s.ops_per_sec,
        fmt_latency_us(s.p50_us),
        fmt_latency_us(s.p99_us),
        fmt_latency_us(s.max_us),
        s.errors
    );
}

pub async fn run(args: ApiArgs) -> Result<()> {
    let (rate, duration, list_pods) = if args.smoke {
        (50, 1, 200)
    } else {
        (args.rate, args.duration, args.list_pods)
    };
    let bin = match &args.wkube {
        Some(b) => b.clone(),
        None => procs::sibling_binary("wkube")?,
    };
    let server: Server = procs::spawn_wkube(&bin, &[], Duration::from_secs(120)).await?;
    let (api, url) = admin_api(&server).await?;
    let api = Arc::new(api);
    println!("wkube {} API at {url}", server.version);

    let mut conn = Conn::open(&api.addr).await?;
    let ns = serde_json::to_vec(
        &serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}}),
    )?;
    let (status, body) = conn
        .send(api.request("POST", "/api/v1/namespaces", Some(ns))?)
        .await?;
    if status != 201 {
        bail!(
            "creating the namespace: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }

    let total = (rate as u64 * duration) as usize;
    let a = api.clone();
    let make_create: Arc<dyn Fn(usize) -> Result<Request<Full<Bytes>>> + Send + Sync> =
        Arc::new(move |i| {
            a.request(
                "POST",
                "/api/v1/namespaces/bench/pods",
                Some(pod(&format!("c-{i}"))),
            )
        });
    let (rec, elapsed) = paced(&api, args.conns, rate, total, 201, make_create).await?;
    let create = rec.summary(elapsed);
    if let Some(e) = &rec.first_error {
        eprintln!("first create error: {e}");
    }
    let a = api.clone();
    let created = total.max(1);
    let make_get: Arc<dyn Fn(usize) -> Result<Request<Full<Bytes>>> + Send + Sync> =
        Arc::new(move |i| {
            a.request(
                "GET",
                &format!("/api/v1/namespaces/bench/pods/c-{}", (i * 7919) % created),
                None,
            )
        });
    let (rec, elapsed) = paced(&api, args.conns, rate, total, 200, make_get).await?;
    let get = rec.summary(elapsed);
    if let Some(e) = &rec.first_error {
        eprintln!("first get error: {e}");
    }

    // Fill up to `list_pods` pods as fast as the server takes them, then
    // time full lists.
    let missing = list_pods.saturating_sub(total);
    let fill_start = Instant::now();
    let mut fillers = Vec::new();
    let workers = args.conns.max(1);
    for w in 0..workers {
        let api = api.clone();
        fillers.push(tokio::spawn(async move {
            let mut conn = Conn::open(&api.addr).await?;
            let mut i = w;
            while i < missing {
                let req = api.request(
                    "POST",
                    "/api/v1/namespaces/bench/pods",
                    Some(pod(&format!("l-{i}"))),
                )?;
                let (status, body) = conn.send(req).await?;
                if status != 201 {
                    bail!("filling: {status} {}", String::from_utf8_lossy(&body));
                }
                i += workers;
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for f in fillers {
        f.await??;
    }
    let fill = fill_start.elapsed();
    // A fresh connection: the first one sat idle through the rate-driven
    // workloads, long enough for the server to close it.
    let mut conn = Conn::open(&api.addr).await?;
    let mut list_rec = Recorder::default();
    let mut table_rec = Recorder::default();
    let mut listed = 0;
    let rounds = if args.smoke { 2 } else { 10 };
    for _ in 0..rounds {
        let t = Instant::now();
        let (status, body) = conn
            .send(api.request("GET", "/api/v1/namespaces/bench/pods", None)?)
            .await?;
        let lat = t.elapsed();
        if status != 200 {
            bail!("list: {status}");
        }
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        listed = v["items"].as_array().map_or(0, Vec::len);
        list_rec.ok(lat);
        let mut req = api.request("GET", "/api/v1/namespaces/bench/pods", None)?;
        req.headers_mut().insert(
            "accept",
            hyper::header::HeaderValue::from_static(
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
            ),
        );
        let t = Instant::now();
        let (status, _) = conn.send(req).await?;
        if status != 200 {
            bail!("table list: {status}");
        }
        table_rec.ok(t.elapsed());
    }
    if listed < list_pods {
        bail!("listed {listed} pods, expected at least {list_pods}");
    }
    let list = list_rec.summary(Duration::from_secs(1));
    let table = table_rec.summary(Duration::from_secs(1));
    // The first server goes first, so the second has the machine.
    drop(conn);
    drop(server);
    let kubectl = kubectl_get_all(&bin, list_pods, rounds).await?;

    println!();
    line(&format!("create pod @{rate}/s"), &create);
    line(&format!("get pod @{rate}/s"), &get);
    println!(
        "{:<28} {listed} pods: p50 {}  max {}   (as a kubectl Table: p50 {}  max {}; filled at {:.0} pods/s)",
        "list pods",
        fmt_latency_us(list.p50_us),
        fmt_latency_us(list.max_us),
        fmt_latency_us(table.p50_us),
        fmt_latency_us(table.max_us),
        missing as f64 / fill.as_secs_f64().max(1e-9),
    );
    match &kubectl {
        Some(k) => println!(
            "{:<28} {} rows: p50 {}  max {}   (first, discovery cache empty: {}; \
             --chunk-size=0: p50 {})",
            "kubectl get pods -A",
            k.rows,
            fmt_latency_us(k.warm.p50_us),
            fmt_latency_us(k.warm.max_us),
            fmt_latency_us(k.first.as_secs_f64() * 1e6),
            fmt_latency_us(k.whole.p50_us),
        ),
        None => println!("kubectl get pods -A: skipped, no kubectl on the PATH"),
    }
    println!();
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!("targets (Kubernetes' SLO is 1 s for single objects):");
    println!(
        "  create p99 <= 10 ms:   {} ({})",
        verdict(create.p99_us <= 10_000.0),
        fmt_latency_us(create.p99_us)
    );
    println!(
        "  get p99 <= 5 ms:       {} ({})",
        verdict(get.p99_us <= 5_000.0),
        fmt_latency_us(get.p99_us)
    );
    println!(
        "  list of {list_pods} <= 100 ms: {} (p50 {})",
        verdict(list.p50_us <= 100_000.0),
        fmt_latency_us(list.p50_us)
    );
    println!(
        "  Table of {list_pods} <= 40 ms: {} (p50 {})",
        verdict(table.p50_us <= 40_000.0),
        fmt_latency_us(table.p50_us)
    );
    if let Some(k) = &kubectl {
        println!(
            "  kubectl get pods -A <= 0.5 s: {} (p50 {}; kubectl's own limiter lets \
             10 requests through, then 5/s, and pages of 500 make {} requests)",
            verdict(k.warm.p50_us <= 500_000.0),
            fmt_latency_us(k.warm.p50_us),
            k.rows.div_ceil(500)
        );
    }
    if create.errors + get.errors > 0 {
        bail!("{} requests failed", create.errors + get.errors);
    }
    Ok(())
}

/// The API of a server started with `--tls off`, as its admin, and its URL.
pub(crate) async fn admin_api(server: &Server) -> Result<(Api, String)> {
    let data = server.dir.path().join("data");
    let url = wait_for_file(&data.join("api.endpoint")).await?;
    let kubeconfig = wait_for_file(&data.join("admin.kubeconfig")).await?;
    let token = procs::kubeconfig_token(&kubeconfig)?;
    let addr = url
        .strip_prefix("http://")
        .context("the benchmark drives the API over plain HTTP (--tls off)")?
        .trim_end_matches('/')
        .to_string();
    Ok((Api { addr, token }, url))
}

pub(crate) async fn wait_for_file(path: &std::path::Path) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = tokio::fs::read_to_string(path).await
            && !s.trim().is_empty()
        {
            return Ok(s.trim().to_string());
        }
        if Instant::now() > deadline {
            bail!("{} did not appear", path.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `kubectl get pods -A` timings: the first run, with an empty discovery
/// cache, and the later ones.
struct KubectlTimes {
    rows: usize,
    first: Duration,
    warm: Summary,
    /// With `--chunk-size=0`: one request instead of pages of 500.
    whole: Summary,
}

/// Times stock `kubectl get pods -A` end to end on `pods` pods. kubectl
/// sends its token only over TLS, so this runs against a second server of
/// its own with TLS on (the default), filled through the API; kubectl gets
/// its own HOME so that the first run starts with an empty discovery
/// cache. `None` when there is no kubectl on the PATH.
async fn kubectl_get_all(
    bin: &std::path::Path,
    pods: usize,
    rounds: usize,
) -> Result<Option<KubectlTimes>> {
    if std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        return Ok(None);
    }
    let server = crate::soak::SoakServer::spawn(bin, Duration::from_secs(300)).await?;
    let mut s = crate::soak::Session::new(server.client.clone());
    let ns =
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}});
    s.call("POST", "/api/v1/namespaces", Some(ns)).await?;
    let workers = 16;
    let mut fillers = Vec::new();
    for w in 0..workers {
        let mut s = crate::soak::Session::new(server.client.clone());
        fillers.push(tokio::spawn(async move {
            let mut i = w;
            while i < pods {
                let body: serde_json::Value = serde_json::from_slice(&pod(&format!("k-{i}")))?;
                s.call("POST", "/api/v1/namespaces/bench/pods", Some(body))
                    .await?;
                i += workers;
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    for f in fillers {
        f.await??;
    }
    let data = server.dir().join("data");
    let kubeconfig = data.join("admin.kubeconfig");
    let home = tempfile::tempdir()?;
    let run = |extra: &'static [&'static str]| {
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["get", "pods", "-A", "--no-headers"])
            .args(extra)
            .env("HOME", home.path())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        cmd
    };
    let time = |extra: &'static [&'static str]| {
        let mut cmd = run(extra);
        async move {
            let t = Instant::now();
            let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
                .await
                .context("kubectl get pods -A took over 60 s")?
                .context("running kubectl")?;
            let took = t.elapsed();
            if !out.status.success() {
                bail!(
                    "kubectl get pods -A: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let rows = out
                .stdout
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count();
            if rows < pods {
                bail!("kubectl listed {rows} pods, expected at least {pods}");
            }
            Ok::<_, anyhow::Error>((took, rows))
        }
    };
    let (first, rows) = time(&[]).await?;
    let mut rec = Recorder::default();
    let mut whole = Recorder::default();
    for _ in 0..rounds {
        rec.ok(time(&[]).await?.0);
        whole.ok(time(&["--chunk-size=0"]).await?.0);
    }
    Ok(Some(KubectlTimes {
        rows,
        first,
        warm: rec.summary(Duration::from_secs(1)),
        whole: whole.summary(Duration::from_secs(1)),
    }))
}
