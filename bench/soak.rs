//! `wkube-bench soak`: a bounded mixed load against one `wkube server`
//! (TLS on, as deployed) for a fixed time, to find leaks and lost events:
//!
//! - **API writes:** ConfigMaps created, updated (merge patch) and deleted
//!   in turn at a fixed rate, over HTTPS with the admin's bearer token;
//! - **watches:** two watches on the ConfigMaps and two on pods (the
//!   namespace's and all namespaces'), re-opened from the last
//!   resourceVersion each time they end (`timeoutSeconds`); at the end
//!   every create, update and delete must have reached every ConfigMap
//!   watch, and every pod watch must have seen the same pods come and go;
//! - **HTTP to pods:** `hello-http` (two replicas) behind a NodePort
//!   Service, one request per connection at a fixed rate;
//! - **pod churn:** a second Deployment scaled 0 ↔ N at a fixed period,
//!   each time until its pods are ready (or gone).
//!
//! The server's RSS (`VmRSS`) is sampled throughout. The run fails on any
//! error, on a lost watch event, or when RSS grew after warm-up (20 % of
//! the run) by more than both `--max-rss-growth-pct` and
//! `--max-rss-growth-mb`. Every loop is bounded by the run's stop signal
//! and every request by a timeout; all traffic stays on loopback.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine;
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use parking_lot::Mutex;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::api::Api;
use crate::procs::{self, ChildGuard};
use crate::proxy::{get, wait_answers};
use crate::stats::{Recorder, fmt_latency_us};

const NODE: &str = "soak-node";
const NAMESPACE: &str = "soak";
/// ConfigMaps kept alive at least; below it the writer only creates.
const MIN_LIVE: usize = 20;
/// HTTP requests in flight at most; past it a tick counts as an error.
const MAX_INFLIGHT: usize = 256;

#[derive(Args, Debug)]
pub struct SoakArgs {
    /// About 15 s of the same mix (churn 0 ↔ 3 every 5 s, watches
    /// re-opened every 4 s, RSS sampled every second), used by the test
    /// suite; fails on errors and lost events like the full run.
    #[arg(long)]
    smoke: bool,
    /// Seconds of load.
    #[arg(long, default_value_t = 600)]
    duration: u64,
    /// ConfigMap writes per second (create, update, delete in turn).
    #[arg(long, default_value_t = 20)]
    write_rate: u32,
    /// Requests per second to hello-http through its NodePort Service.
    #[arg(long, default_value_t = 100)]
    http_rate: u32,
    /// Replicas the churn Deployment is scaled up to (and back to zero).
    #[arg(long, default_value_t = 5)]
    churn_replicas: u32,
    /// Seconds between two scalings of the churn Deployment.
    #[arg(long, default_value_t = 20)]
    churn_period: u64,
    /// Seconds each watch stays open before the server ends it.
    #[arg(long, default_value_t = 60)]
    watch_timeout: u64,
    /// RSS growth after warm-up, in percent, that fails the run (only
    /// together with --max-rss-growth-mb).
    #[arg(long, default_value_t = 25.0)]
    max_rss_growth_pct: f64,
    /// RSS growth after warm-up, in MB, that fails the run (only together
    /// with --max-rss-growth-pct).
    #[arg(long, default_value_t = 64.0)]
    max_rss_growth_mb: f64,
    /// The wkube binary [default: next to this benchmark].
    #[arg(long)]
    wkube: Option<PathBuf>,
    /// The server's `--etcd-compaction-interval`, in seconds. Its history
    /// grows until a compaction drops it, so RSS can only level off within
    /// a run several intervals long (the server's default is 300).
    #[arg(long, default_value_t = 60)]
    compaction_interval: u64,
}

/// The kinds of operations, in the order of the table.
const KINDS: &[(&str, &str)] = &[
    ("cm create", "POST a ConfigMap"),
    ("cm update", "merge-PATCH a ConfigMap"),
    ("cm delete", "DELETE a ConfigMap"),
    ("watch open", "to the watch's response headers"),
    ("watch event", "write sent → its event (creates, deletes)"),
    ("http get", "new connection + GET via NodePort"),
    ("scale", "PATCH deployments/churn/scale"),
    ("churn settle", "scale sent → pods ready (or gone)"),
];

/// Latencies and errors per kind of operation.
#[derive(Default)]
struct Stats {
    kinds: Mutex<BTreeMap<&'static str, Recorder>>,
}

impl Stats {
    fn ok(&self, kind: &'static str, latency: Duration) {
        self.kinds.lock().entry(kind).or_default().ok(latency);
    }

    fn err(&self, kind: &'static str, e: impl std::fmt::Display) {
        self.kinds.lock().entry(kind).or_default().error(e);
    }

    /// (successful operations, errors) over all kinds.
    fn totals(&self) -> (u64, u64) {
        let k = self.kinds.lock();
        k.values()
            .fold((0, 0), |(o, e), r| (o + r.hist.len(), e + r.errors))
    }
}

/// What the writer did, for checking what the watches saw.
#[derive(Default)]
struct Ledger {
    /// When the create (or delete) of a name was sent.
    create_sent: HashMap<String, Instant>,
    delete_sent: HashMap<String, Instant>,
    /// Names created and deleted, and the resourceVersions updates made.
    created: HashSet<String>,
    deleted: HashSet<String>,
    updated: HashSet<String>,
}

/// What one watch saw over all its openings.
#[derive(Default)]
struct Seen {
    events: u64,
    bookmarks: u64,
    opens: u64,
    expired: u64,
    added: HashSet<String>,
    deleted: HashSet<String>,
    modified: HashSet<String>,
}

pub async fn run(args: SoakArgs) -> Result<()> {
    let (duration, replicas, period, watch_timeout, rss_every) = if args.smoke {
        (15, 3, 5, 4, 1)
    } else {
        (
            args.duration.max(10),
            args.churn_replicas.max(1),
            args.churn_period.max(1),
            args.watch_timeout.max(1),
            5,
        )
    };
    let (write_rate, http_rate) = (args.write_rate.max(1), args.http_rate.max(1));
    let bin = match &args.wkube {
        Some(b) => b.clone(),
        None => procs::sibling_binary("wkube")?,
    };
    let hello = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest-examples/out/hello-http.wasm");
    if !hello.exists() {
        bail!(
            "{} is missing (build it with guest-examples/build.sh)",
            hello.display()
        );
    }
    let compaction = Duration::from_secs(args.compaction_interval.max(1));
    let (load, cores) = procs::machine_load();
    println!(
        "{cores} cores, load average {}; {} build",
        load.map_or_else(|| "unknown".into(), |l| format!("{l:.2}")),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!(
        "soak {duration} s: ConfigMap writes {write_rate}/s over HTTPS, hello-http {http_rate} req/s via NodePort, \
         churn 0 ↔ {replicas} every {period} s, 2 ConfigMap + 2 pod watches re-opened every {watch_timeout} s, \
         store compacted every {} s",
        compaction.as_secs()
    );

    let mut server = SoakServer::spawn(&bin, compaction).await?;
    let client = server.client.clone();
    let mut setup = Session::new(client.clone());
    let node_port = prepare(&mut setup, &hello)
        .await
        .with_context(|| server.proc.log_tail(4096))?;
    let url = format!("http://127.0.0.1:{node_port}/");
    wait_answers(&url, "Hello")
        .await
        .with_context(|| server.proc.log_tail(4096))?;
    wait_ready(&mut setup, "hello", 2, Duration::from_secs(60)).await?;
    let pid = server.proc.pid().context("the server has no pid")?;
    println!("{} (pid {pid}) ready", procs::version_of(&bin));

    // Every watch starts at the resourceVersion of a list taken before any
    // load, so nothing written later can slip past it.
    let cm_rv = list_rv(
        &mut setup,
        &format!("/api/v1/namespaces/{NAMESPACE}/configmaps"),
    )
    .await?;
    let pod_rv = list_rv(&mut setup, &format!("/api/v1/namespaces/{NAMESPACE}/pods")).await?;
    let all_pod_rv = list_rv(&mut setup, "/api/v1/pods").await?;

    let stats = Arc::new(Stats::default());
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let (load_stop_tx, load_stop) = watch::channel(false);
    let (watch_stop_tx, watch_stop) = watch::channel(false);

    let watches: Vec<(String, String, bool)> = vec![
        (
            format!("/api/v1/namespaces/{NAMESPACE}/configmaps"),
            cm_rv.clone(),
            true,
        ),
        (
            format!("/api/v1/namespaces/{NAMESPACE}/configmaps"),
            cm_rv,
            true,
        ),
        (
            format!("/api/v1/namespaces/{NAMESPACE}/pods"),
            pod_rv,
            false,
        ),
        ("/api/v1/pods".to_string(), all_pod_rv, false),
    ];
    let mut watchers = Vec::new();
    let mut seens = Vec::new();
    for (path, rv, is_cm) in watches {
        let seen = Arc::new(Mutex::new(Seen::default()));
        seens.push((path.clone(), is_cm, seen.clone()));
        watchers.push(tokio::spawn(watcher(
            client.clone(),
            path,
            rv,
            watch_timeout,
            is_cm.then(|| ledger.clone()),
            seen,
            stats.clone(),
            watch_stop.clone(),
        )));
    }

    let start = Instant::now();
    let rss = Arc::new(Mutex::new(Vec::<(f64, f64)>::new()));
    let sampler = tokio::spawn(sample_rss(
        pid,
        Duration::from_secs(rss_every),
        start,
        rss.clone(),
        stats.clone(),
        (!args.smoke).then_some(Duration::from_secs(60)),
        load_stop.clone(),
    ));
    let loads = vec![
        tokio::spawn(writer(
            client.clone(),
            write_rate,
            stats.clone(),
            ledger.clone(),
            load_stop.clone(),
        )),
        tokio::spawn(http_load(
            url.clone(),
            http_rate,
            stats.clone(),
            load_stop.clone(),
        )),
        tokio::spawn(churn(
            client.clone(),
            replicas,
            Duration::from_secs(period),
            stats.clone(),
            load_stop.clone(),
        )),
    ];

    // The run: the server must stay up throughout.
    let end = start + Duration::from_secs(duration);
    let mut died = None;
    while Instant::now() < end {
        tokio::time::sleep_until(end.min(Instant::now() + Duration::from_secs(1)).into()).await;
        if let Err(e) = server.proc.check_running() {
            died = Some(e);
            break;
        }
    }
    let _ = load_stop_tx.send(true);
    for l in loads {
        let _ = l.await;
    }
    let elapsed = start.elapsed();
    let _ = sampler.await;
    if let Some(kb) = rss_kb(pid) {
        rss.lock().push((start.elapsed().as_secs_f64(), kb));
    }
    if let Some(e) = died {
        return Err(e.context("the server died during the soak"));
    }

    // Let the watches catch up (bounded), then check what they saw.
    let churn_pods: HashSet<String> = setup
        .call(
            "GET",
            &format!("/api/v1/namespaces/{NAMESPACE}/pods?labelSelector=app%3Dchurn"),
            None,
        )
        .await?["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.pointer("/metadata/name")?.as_str())
        .map(|n| format!("{NAMESPACE}/{n}"))
        .collect();
    let catch_up = Instant::now() + Duration::from_secs(20);
    let mut lost = lost_events(&ledger.lock(), &seens, &churn_pods);
    while lost.iter().any(|l| !l.is_empty()) && Instant::now() < catch_up {
        tokio::time::sleep(Duration::from_millis(200)).await;
        lost = lost_events(&ledger.lock(), &seens, &churn_pods);
    }
    let _ = watch_stop_tx.send(true);
    for w in watchers {
        let _ = w.await;
    }
    for ((path, _, _), l) in seens.iter().zip(&lost) {
        if !l.is_empty() {
            stats.err("watch event", format!("{path}: {l}"));
        }
    }
    server.proc.check_running()?;

    // The report.
    println!();
    println!(
        "{:<13} {:>8} {:>7} {:>10} {:>10} {:>10}  what",
        "kind", "ops", "errors", "p50", "p99", "max"
    );
    let kinds = stats.kinds.lock();
    let mut errors = 0;
    for (kind, what) in KINDS {
        let empty = Recorder::default();
        let r = kinds.get(kind).unwrap_or(&empty);
        let s = r.summary(elapsed);
        errors += s.errors;
        println!(
            "{kind:<13} {:>8} {:>7} {:>10} {:>10} {:>10}  {what}",
            s.ops,
            s.errors,
            fmt_latency_us(s.p50_us),
            fmt_latency_us(s.p99_us),
            fmt_latency_us(s.max_us),
        );
    }
    for (kind, r) in kinds.iter() {
        if let Some(e) = &r.first_error {
            println!("  first {kind} error: {e}");
        }
    }
    drop(kinds);
    println!();
    for ((path, is_cm, seen), l) in seens.iter().zip(&lost) {
        let s = seen.lock();
        println!(
            "watch {path:<34} {:>7} events ({} {}), {} opens, {} bookmarks, {} expired; lost: {}",
            s.events,
            s.added.len(),
            if *is_cm { "creates" } else { "pods added" },
            s.opens,
            s.bookmarks,
            s.expired,
            if l.is_empty() { "none" } else { l.as_str() }
        );
    }

    let samples = rss.lock().clone();
    let verdict = rss_verdict(
        &samples,
        duration as f64,
        args.max_rss_growth_pct,
        args.max_rss_growth_mb,
    );
    println!();
    println!("{}", verdict.report);
    println!(
        "  fails when it grows after warm-up by more than {}% and more than {} MB",
        args.max_rss_growth_pct, args.max_rss_growth_mb
    );
    drop(server);
    if errors > 0 {
        bail!("{errors} operations failed or events were lost");
    }
    if verdict.too_much {
        bail!("the server's RSS grew too much after warm-up");
    }
    Ok(())
}

/// The server, with TLS (the default) and its own data dir; killed before
/// its dir is removed (field order).
pub(crate) struct SoakServer {
    proc: ChildGuard,
    pub(crate) client: Client,
    dir: tempfile::TempDir,
}

impl SoakServer {
    /// The server's own directory (`data/` holds its kubeconfig).
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) async fn spawn(bin: &Path, compaction: Duration) -> Result<Self> {
        if !bin.exists() {
            bail!(
                "wkube binary {} not found (build it with `cargo build --bins`, or pass --wkube BIN)",
                bin.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("wkube-bench-soak-")
            .tempdir()?;
        let data = dir.path().join("data");
        let mut cmd = Command::new(bin);
        cmd.arg("server")
            .arg("--data-dir")
            .arg(&data)
            .args(["--etcd-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"])
            .args(["--agent-listen", "127.0.0.1:0", "--node-name", NODE])
            .arg("--etcd-compaction-interval")
            .arg(format!("{}s", compaction.as_secs()));
        let mut proc = ChildGuard::spawn("wkube server", cmd, &dir.path().join("wkube.log"))?;
        let client = procs::wait_until(&mut proc, "wkube server", Duration::from_secs(120), || {
            let data = data.clone();
            async move {
                let url = tokio::fs::read_to_string(data.join("api.endpoint")).await?;
                let kc = tokio::fs::read_to_string(data.join("admin.kubeconfig")).await?;
                Client::from_kubeconfig(url.trim(), &kc)
            }
        })
        .await?;
        Ok(Self { proc, client, dir })
    }
}

/// The API over HTTPS: where it is, the admin token, and a TLS client
/// trusting the cluster CA.
#[derive(Clone)]
pub(crate) struct Client {
    api: Arc<Api>,
    tls: tokio_rustls::TlsConnector,
    ip: IpAddr,
}

impl Client {
    fn from_kubeconfig(url: &str, kubeconfig: &str) -> Result<Self> {
        let addr = url
            .strip_prefix("https://")
            .with_context(|| format!("the API is not served over HTTPS: {url:?}"))?
            .trim_end_matches('/')
            .to_string();
        let ip: IpAddr = addr
            .rsplit_once(':')
            .context("no port in the API address")?
            .0
            .parse()?;
        let doc: Value = serde_yaml_ng::from_str(kubeconfig)?;
        let token = doc
            .pointer("/users/0/user/token")
            .and_then(Value::as_str)
            .context("no token in the admin kubeconfig")?
            .to_string();
        let ca = doc
            .pointer("/clusters/0/cluster/certificate-authority-data")
            .and_then(Value::as_str)
            .context("no CA in the admin kubeconfig")?;
        let ca = base64::engine::general_purpose::STANDARD.decode(ca)?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&ca) {
            roots.add(cert?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            api: Arc::new(Api { addr, token }),
            tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            ip,
        })
    }

    async fn connect(&self) -> Result<TlsConn> {
        let open = async {
            let tcp = TcpStream::connect(&self.api.addr).await?;
            tcp.set_nodelay(true)?;
            let name = rustls::pki_types::ServerName::from(self.ip);
            let tls = self.tls.connect(name, tcp).await?;
            let (sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
            tokio::spawn(conn);
            Ok::<_, anyhow::Error>(TlsConn { sender })
        };
        tokio::time::timeout(Duration::from_secs(10), open)
            .await
            .context("connecting to the API timed out")?
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: Option<&'static str>,
    ) -> Result<Request<Full<Bytes>>> {
        let mut req = self.api.request(method, path, body)?;
        if let Some(ct) = content_type {
            req.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(ct),
            );
        }
        Ok(req)
    }
}

/// One HTTP/1.1 connection over TLS.
struct TlsConn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

/// A connection used for a sequence of requests, opened again when it was
/// closed, failed, or sat idle (the server may close idle ones).
pub(crate) struct Session {
    client: Client,
    conn: Option<(TlsConn, Instant)>,
}

impl Session {
    pub(crate) fn new(client: Client) -> Self {
        Self { client, conn: None }
    }

    async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<(u16, Bytes)> {
        let stale = self.conn.as_ref().is_none_or(|(c, used)| {
            c.sender.is_closed() || used.elapsed() > Duration::from_secs(5)
        });
        if stale {
            self.conn = Some((self.client.connect().await?, Instant::now()));
        }
        let Some((conn, used)) = self.conn.as_mut() else {
            bail!("no connection");
        };
        let exchange = async {
            conn.sender.ready().await?;
            let resp = conn.sender.send_request(req).await?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((status, body))
        };
        match tokio::time::timeout(Duration::from_secs(30), exchange).await {
            Ok(Ok(r)) => {
                *used = Instant::now();
                Ok(r)
            }
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                bail!("request timed out after 30 s")
            }
        }
    }

    /// A JSON request that must answer 2xx; its JSON answer.
    pub(crate) async fn call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let body = body.map(|b| serde_json::to_vec(&b)).transpose()?;
        let req = self.client.request(method, path, body, None)?;
        self.expect_2xx(method, path, req).await
    }

    async fn merge_patch(&mut self, path: &str, patch: Value) -> Result<Value> {
        let req = self.client.request(
            "PATCH",
            path,
            Some(serde_json::to_vec(&patch)?),
            Some("application/merge-patch+json"),
        )?;
        self.expect_2xx("PATCH", path, req).await
    }

    async fn expect_2xx(
        &mut self,
        method: &str,
        path: &str,
        req: Request<Full<Bytes>>,
    ) -> Result<Value> {
        let (status, bytes) = self.send(req).await?;
        if !(200..300).contains(&status) {
            bail!(
                "{method} {path}: {status} {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}

/// The namespace, hello pushed, its Deployment (two replicas) behind a
/// NodePort Service, and the churn Deployment at zero; the NodePort.
async fn prepare(s: &mut Session, hello: &Path) -> Result<u64> {
    // The API may take a moment after writing its endpoint file.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}});
        match s.call("POST", "/api/v1/namespaces", Some(ns)).await {
            Ok(_) => break,
            Err(e) if Instant::now() >= deadline => return Err(e.context("creating the namespace")),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let wasm = std::fs::read(hello).with_context(|| format!("reading {}", hello.display()))?;
    let req = s.client.request(
        "POST",
        "/apis/wkube.dev/v1/modules/hello/push?tag=v1",
        Some(wasm),
        Some("application/wasm"),
    )?;
    s.expect_2xx("POST", "modules/hello/push", req).await?;
    for (name, replicas) in [("hello", 2), ("churn", 0)] {
        s.call(
            "POST",
            &format!("/apis/apps/v1/namespaces/{NAMESPACE}/deployments"),
            Some(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                  "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"terminationGracePeriodSeconds": 1,
                      "containers": [{"name": "web", "image": "hello:v1",
                      "ports": [{"name": "http", "containerPort": 8080}]}]}}}})),
        )
        .await?;
    }
    let svc = s
        .call(
            "POST",
            &format!("/api/v1/namespaces/{NAMESPACE}/services"),
            Some(
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hello"},
                "spec": {"type": "NodePort", "selector": {"app": "hello"},
                  "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
            ),
        )
        .await?;
    svc.pointer("/spec/ports/0/nodePort")
        .and_then(Value::as_u64)
        .with_context(|| format!("service hello has no nodePort: {svc}"))
}

/// Whether Deployment `name` has exactly `want` pods, all ready.
async fn settled(s: &mut Session, name: &str, want: i64) -> Result<bool> {
    let d = s
        .call(
            "GET",
            &format!("/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}"),
            None,
        )
        .await?;
    let num = |p: &str| d.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    if num("/status/observedGeneration") < num("/metadata/generation")
        || num("/status/readyReplicas") != want
        || num("/status/replicas") != want
    {
        return Ok(false);
    }
    let pods = s
        .call(
            "GET",
            &format!("/api/v1/namespaces/{NAMESPACE}/pods?labelSelector=app%3D{name}"),
            None,
        )
        .await?;
    Ok(pods["items"].as_array().map_or(0, Vec::len) as i64 == want)
}

async fn wait_ready(s: &mut Session, name: &str, want: i64, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while !settled(s, name, want).await? {
        if Instant::now() >= deadline {
            bail!("deployment {name} never had {want} ready pods within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn list_rv(s: &mut Session, path: &str) -> Result<String> {
    let list = s.call("GET", path, None).await?;
    list.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(str::to_string)
        .with_context(|| format!("{path}: a list without resourceVersion"))
}

/// Resolves once `stop` says so (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn ticker(rate: u32) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    tick
}

/// ConfigMap writes at `rate`: create, update, delete in turn, keeping at
/// least [`MIN_LIVE`] alive; each one noted in the ledger.
async fn writer(
    client: Client,
    rate: u32,
    stats: Arc<Stats>,
    ledger: Arc<Mutex<Ledger>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut s = Session::new(client);
    let mut tick = ticker(rate);
    let mut live: VecDeque<String> = VecDeque::new();
    let base = format!("/api/v1/namespaces/{NAMESPACE}/configmaps");
    let filler = "x".repeat(512);
    for i in 0u64.. {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped(&mut stop) => break,
        }
        let turn = i % 3;
        if turn == 0 || live.len() < MIN_LIVE {
            let name = format!("cm-{i}");
            let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "labels": {"soak": "yes"}},
                "data": {"n": i.to_string(), "filler": filler}});
            let t = Instant::now();
            ledger.lock().create_sent.insert(name.clone(), t);
            match s.call("POST", &base, Some(body)).await {
                Ok(_) => {
                    stats.ok("cm create", t.elapsed());
                    ledger.lock().created.insert(name.clone());
                    live.push_back(name);
                }
                Err(e) => stats.err("cm create", e),
            }
        } else if turn == 1 {
            let name = &live[(i as usize / 3) % live.len()];
            let t = Instant::now();
            match s
                .merge_patch(
                    &format!("{base}/{name}"),
                    json!({"data": {"n": i.to_string()}}),
                )
                .await
            {
                Ok(obj) => {
                    stats.ok("cm update", t.elapsed());
                    match obj
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                    {
                        Some(rv) => {
                            ledger.lock().updated.insert(rv.to_string());
                        }
                        None => stats.err("cm update", "an update answered no resourceVersion"),
                    }
                }
                Err(e) => stats.err("cm update", e),
            }
        } else if let Some(name) = live.pop_front() {
            let t = Instant::now();
            ledger.lock().delete_sent.insert(name.clone(), t);
            match s.call("DELETE", &format!("{base}/{name}"), None).await {
                Ok(_) => {
                    stats.ok("cm delete", t.elapsed());
                    ledger.lock().deleted.insert(name);
                }
                Err(e) => stats.err("cm delete", e),
            }
        }
    }
}

/// GETs to hello-http at `rate`, each on a new connection, open loop (a
/// slow answer does not hold back the next request).
async fn http_load(url: String, rate: u32, stats: Arc<Stats>, mut stop: watch::Receiver<bool>) {
    let mut tick = ticker(rate);
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_INFLIGHT));
    let mut inflight = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped(&mut stop) => break,
        }
        while inflight.try_join_next().is_some() {}
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            stats.err("http get", format!("{MAX_INFLIGHT} requests in flight"));
            continue;
        };
        let (url, stats) = (url.clone(), stats.clone());
        inflight.spawn(async move {
            let t = Instant::now();
            match tokio::time::timeout(Duration::from_secs(10), get(&url)).await {
                Ok(Ok((200, body))) if body.contains("Hello") => stats.ok("http get", t.elapsed()),
                Ok(Ok((code, body))) => stats.err("http get", format!("{code} {body}")),
                Ok(Err(e)) => stats.err("http get", e),
                Err(_) => stats.err("http get", "timed out after 10 s"),
            }
            drop(permit);
        });
    }
    while inflight.join_next().await.is_some() {}
}

/// Scales the churn Deployment 0 ↔ `replicas` every `period`, each time
/// until its pods are ready (or gone), at most a minute.
async fn churn(
    client: Client,
    replicas: u32,
    period: Duration,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) {
    let mut s = Session::new(client);
    let path = format!("/apis/apps/v1/namespaces/{NAMESPACE}/deployments/churn/scale");
    let mut up = true;
    loop {
        let round = Instant::now();
        let want = if up { i64::from(replicas) } else { 0 };
        up = !up;
        let t = Instant::now();
        match s
            .merge_patch(&path, json!({"spec": {"replicas": want}}))
            .await
        {
            Ok(_) => stats.ok("scale", t.elapsed()),
            Err(e) => stats.err("scale", e),
        }
        let deadline = t + Duration::from_secs(60);
        loop {
            match settled(&mut s, "churn", want).await {
                Ok(true) => {
                    stats.ok("churn settle", t.elapsed());
                    break;
                }
                Ok(false) if Instant::now() >= deadline => {
                    stats.err(
                        "churn settle",
                        format!("not at {want} ready pods after 60 s"),
                    );
                    break;
                }
                Ok(false) => {}
                Err(e) => {
                    stats.err("churn settle", e);
                    break;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                // Stopped while settling: nothing to count.
                _ = stopped(&mut stop) => return,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep_until((round + period).into()) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

/// One watch, re-opened from the last resourceVersion whenever it ends,
/// until `stop`. ConfigMap watches (`ledger` given) also time each create
/// and delete from when it was sent.
#[allow(clippy::too_many_arguments)]
async fn watcher(
    client: Client,
    path: String,
    mut rv: String,
    timeout_s: u64,
    ledger: Option<Arc<Mutex<Ledger>>>,
    seen: Arc<Mutex<Seen>>,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let outcome = tokio::select! {
            r = watch_once(&client, &path, &mut rv, timeout_s, ledger.as_deref(), &seen, &stats) => r,
            _ = stopped(&mut stop) => return,
        };
        if let Err(e) = outcome {
            stats.err("watch open", format!("{path}: {e:#}"));
            // Do not spin on a failing server.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stopped(&mut stop) => return,
            }
        }
    }
}

/// One opening of a watch, to its end; `rv` follows what it saw.
async fn watch_once(
    client: &Client,
    path: &str,
    rv: &mut String,
    timeout_s: u64,
    ledger: Option<&Mutex<Ledger>>,
    seen: &Mutex<Seen>,
    stats: &Stats,
) -> Result<()> {
    let t = Instant::now();
    let mut conn = client.connect().await?;
    let req = client.request(
        "GET",
        &format!(
            "{path}?watch=true&allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds={timeout_s}"
        ),
        None,
        None,
    )?;
    let resp = tokio::time::timeout(Duration::from_secs(30), async {
        conn.sender.ready().await?;
        Ok::<_, anyhow::Error>(conn.sender.send_request(req).await?)
    })
    .await
    .context("no answer within 30 s")??;
    if resp.status() != 200 {
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        bail!("{status} {}", String::from_utf8_lossy(&body));
    }
    stats.ok("watch open", t.elapsed());
    seen.lock().opens += 1;
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    // The server ends the watch after `timeout_s`; a watch much older than
    // that is stuck.
    let deadline = t + Duration::from_secs(timeout_s + 30);
    loop {
        let frame = match tokio::time::timeout_at(deadline.into(), body.frame()).await {
            Err(_) => bail!("the watch did not end after {timeout_s} s"),
            Ok(None) => return Ok(()),
            Ok(Some(f)) => f.context("reading the watch")?,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let ev: Value = serde_json::from_slice(&line).context("a watch event is not JSON")?;
            let ty = ev["type"].as_str().unwrap_or_default();
            let meta = &ev["object"]["metadata"];
            if ty == "ERROR" {
                if ev["object"]["code"].as_i64() == Some(410) {
                    // Events between here and a fresh list are lost: the
                    // final check will say which.
                    seen.lock().expired += 1;
                    let mut s = Session::new(client.clone());
                    *rv = list_rv(&mut s, path).await?;
                    bail!("410 Gone: {}", ev["object"]["message"]);
                }
                bail!("ERROR event: {}", ev["object"]);
            }
            if let Some(v) = meta["resourceVersion"].as_str() {
                v.clone_into(rv);
            }
            if ty == "BOOKMARK" {
                seen.lock().bookmarks += 1;
                continue;
            }
            let name = match meta["namespace"].as_str() {
                Some(ns) if ledger.is_none() => {
                    format!("{ns}/{}", meta["name"].as_str().unwrap_or(""))
                }
                _ => meta["name"].as_str().unwrap_or("").to_string(),
            };
            // One lock at a time: the final check takes the ledger's
            // and then each watch's.
            let sent = ledger.and_then(|l| {
                let l = l.lock();
                match ty {
                    "ADDED" => l.create_sent.get(&name).copied(),
                    "DELETED" => l.delete_sent.get(&name).copied(),
                    _ => None,
                }
            });
            if let Some(sent) = sent {
                stats.ok("watch event", sent.elapsed());
            }
            let mut s = seen.lock();
            s.events += 1;
            match ty {
                "ADDED" => {
                    s.added.insert(name);
                }
                "DELETED" => {
                    s.deleted.insert(name);
                }
                "MODIFIED" => {
                    s.modified.insert(rv.clone());
                }
                _ => {}
            }
        }
    }
}

/// Per watch, what it has not seen (empty when nothing): ConfigMap watches
/// against the ledger; pod watches against each other (pods of the
/// namespace any of them saw added or deleted) and the churn pods alive now.
fn lost_events(
    ledger: &Ledger,
    seens: &[(String, bool, Arc<Mutex<Seen>>)],
    churn_pods: &HashSet<String>,
) -> Vec<String> {
    let prefix = format!("{NAMESPACE}/");
    let mut pods_added: HashSet<String> = churn_pods.clone();
    let mut pods_deleted = HashSet::new();
    for (_, is_cm, seen) in seens {
        if !is_cm {
            let s = seen.lock();
            pods_added.extend(s.added.iter().filter(|n| n.starts_with(&prefix)).cloned());
            pods_deleted.extend(s.deleted.iter().filter(|n| n.starts_with(&prefix)).cloned());
        }
    }
    seens
        .iter()
        .map(|(_, is_cm, seen)| {
            let s = seen.lock();
            let (a, m, d) = if *is_cm {
                (
                    ledger.created.difference(&s.added).count(),
                    ledger.updated.difference(&s.modified).count(),
                    ledger.deleted.difference(&s.deleted).count(),
                )
            } else {
                (
                    pods_added.difference(&s.added).count(),
                    0,
                    pods_deleted.difference(&s.deleted).count(),
                )
            };
            if a + m + d == 0 {
                String::new()
            } else {
                format!("{a} ADDED, {m} MODIFIED, {d} DELETED missing")
            }
        })
        .collect()
}

/// The server's resident set, in KB.
fn rss_kb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Samples RSS every `every` (seconds since `start`, KB) until `stop`, and
/// prints a progress line every `progress` when given.
async fn sample_rss(
    pid: u32,
    every: Duration,
    start: Instant,
    samples: Arc<Mutex<Vec<(f64, f64)>>>,
    stats: Arc<Stats>,
    progress: Option<Duration>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    let mut next_progress = progress.map(|p| start + p);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped(&mut stop) => return,
        }
        let Some(kb) = rss_kb(pid) else { continue };
        samples.lock().push((start.elapsed().as_secs_f64(), kb));
        if let (Some(at), Some(p)) = (next_progress, progress)
            && Instant::now() >= at
        {
            let (ops, errors) = stats.totals();
            println!(
                "  {:>5.0} s: {ops} ops, {errors} errors, RSS {:.1} MB",
                start.elapsed().as_secs_f64(),
                kb / 1024.0
            );
            next_progress = Some(at + p);
        }
    }
}

struct RssVerdict {
    report: String,
    too_much: bool,
}

/// RSS at the start, after warm-up (the first sample at 20 % of the run),
/// at the end; the least-squares slope over the second half of the run;
/// too much when the growth after warm-up exceeds both limits.
fn rss_verdict(samples: &[(f64, f64)], duration: f64, max_pct: f64, max_mb: f64) -> RssVerdict {
    let mb = |kb: f64| kb / 1024.0;
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return RssVerdict {
            report: "server RSS: no samples".into(),
            too_much: false,
        };
    };
    let warm = samples
        .iter()
        .find(|(t, _)| *t >= 0.2 * duration)
        .unwrap_or(last);
    let half: Vec<(f64, f64)> = samples
        .iter()
        .filter(|(t, _)| *t >= 0.5 * duration)
        .copied()
        .collect();
    let slope = least_squares_slope(&half).map(|kb_per_s| mb(kb_per_s) * 60.0);
    let growth_mb = mb(last.1 - warm.1);
    let growth_pct = (last.1 - warm.1) / warm.1.max(1.0) * 100.0;
    let too_much = growth_pct > max_pct && growth_mb > max_mb;
    let report = format!(
        "server RSS: start {:.1} MB; after warm-up ({:.0} s) {:.1} MB; end ({:.0} s) {:.1} MB: {:+.1} MB ({:+.1}%) after warm-up, max {:.1} MB\n  \
         slope over the second half ({} samples): {} MB/min — {}",
        mb(first.1),
        warm.0,
        mb(warm.1),
        last.0,
        mb(last.1),
        growth_mb,
        growth_pct,
        mb(samples.iter().map(|s| s.1).fold(0.0, f64::max)),
        half.len(),
        slope.map_or_else(|| "n/a".into(), |s| format!("{s:+.3}")),
        if too_much { "TOO MUCH" } else { "ok" }
    );
    RssVerdict { report, too_much }
}

/// The slope of the least-squares line through `points`; `None` with
/// fewer than two distinct x.
fn least_squares_slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line() {
        let pts: Vec<(f64, f64)> = (0..10)
            .map(|i| (f64::from(i), 3.0 + 2.0 * f64::from(i)))
            .collect();
        assert!((least_squares_slope(&pts).unwrap() - 2.0).abs() < 1e-9);
        assert!(least_squares_slope(&pts[..1]).is_none());
    }

    #[test]
    fn lost_events_are_named_per_watch() {
        let mut ledger = Ledger::default();
        ledger.created.extend(["a".to_string(), "b".to_string()]);
        ledger.updated.insert("7".to_string());
        ledger.deleted.insert("a".to_string());
        let full = Seen {
            added: ledger.created.clone(),
            modified: ledger.updated.clone(),
            deleted: ledger.deleted.clone(),
            ..Seen::default()
        };
        let partial = Seen {
            added: ["a".to_string()].into(),
            ..Seen::default()
        };
        let pods_all = Seen {
            added: ["soak/p1".to_string(), "soak/p2".to_string()].into(),
            ..Seen::default()
        };
        let pods_some = Seen {
            added: ["soak/p1".to_string()].into(),
            ..Seen::default()
        };
        let seens: Vec<(String, bool, Arc<Mutex<Seen>>)> = [
            (true, full),
            (true, partial),
            (false, pods_all),
            (false, pods_some),
        ]
        .into_iter()
        .map(|(cm, s)| (String::new(), cm, Arc::new(Mutex::new(s))))
        .collect();
        let churn: HashSet<String> = ["soak/p3".to_string()].into();
        let lost = lost_events(&ledger, &seens, &churn);
        assert_eq!(lost[0], "");
        assert_eq!(lost[1], "1 ADDED, 1 MODIFIED, 1 DELETED missing");
        assert_eq!(lost[2], "1 ADDED, 0 MODIFIED, 0 DELETED missing");
        assert_eq!(lost[3], "2 ADDED, 0 MODIFIED, 0 DELETED missing");
    }

    #[test]
    fn rss_growth_needs_both_limits() {
        // 100 MB → 140 MB: +40 % but +40 MB, under 64 MB: fine.
        let s = [
            (0.0, 50.0 * 1024.0),
            (20.0, 100.0 * 1024.0),
            (100.0, 140.0 * 1024.0),
        ];
        assert!(!rss_verdict(&s, 100.0, 25.0, 64.0).too_much);
        // 100 MB → 200 MB: +100 % and +100 MB.
        let s = [
            (0.0, 50.0 * 1024.0),
            (20.0, 100.0 * 1024.0),
            (100.0, 200.0 * 1024.0),
        ];
        assert!(rss_verdict(&s, 100.0, 25.0, 64.0).too_much);
    }
}
