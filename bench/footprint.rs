//! `wkube-bench footprint`: what wkube costs a machine when it does
//! nothing, measured against the targets:
//!
//! - **binary size**: the `wkube` binary next to this benchmark (the
//!   default build, with the compiler), the edge agent's build without
//!   the compiler and the control plane (`--edge`) and an aarch64 build
//!   (`--arm64`), each copied and stripped;
//! - **an idle all-in-one server**: `wkube server` with its own node, TLS
//!   on as deployed, measured once its node is Ready and it has been left
//!   alone for a while: resident memory (`VmRSS`) and CPU time over a
//!   window, as a share of one core; then the same with idle `hello-http`
//!   pods Running on its node;
//! - **an idle agent**: `wkube agent` joined to a server (which has no node
//!   of its own), the agent process alone measured the same way, without
//!   and with idle pods bound to it — for the default build and, when
//!   given, for the edge agent (which runs the code the server compiled
//!   for it);
//! - **an agent under emulation**: the aarch64 build as an agent under
//!   `qemu-aarch64`, which is what the emulator process costs (the agent
//!   and the emulator's own translation state).
//!
//! Inputs that are not given or tools that are missing are reported as
//! skipped, never estimated. The run fails only when something does not
//! work (a process dies, a node is never Ready, a pod never Runs), never on
//! the figures.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::PostParams;
use kube::runtime::watcher;
use serde_json::json;
use tempfile::TempDir;

use crate::procs::{self, ChildGuard, Resident};

pub(crate) const NAMESPACE: &str = "footprint";
/// The all-in-one server's own node.
const SERVER_NODE: &str = "footprint-server";
/// The agents' node name and address (one agent at a time).
const AGENT_NODE: &str = "footprint-agent";
const AGENT_IP: &str = "127.0.0.2";
/// The emulated aarch64 agent.
const ARM64_NODE: &str = "footprint-arm64";
const ARM64_IP: &str = "127.0.0.3";
/// A node's default `--max-pods`; more pods than this raise it.
const DEFAULT_MAX_PODS: usize = 1000;

/// Targets of the issue; sizes and memory in MB (10^6 bytes).
const SERVER_BINARY_MB: f64 = 40.0;
const AGENT_BINARY_MB: f64 = 15.0;
const AGENT_RSS_MB: f64 = 24.0;
const SERVER_RSS_MB: f64 = 64.0;
const IDLE_CPU_PCT: f64 = 0.5;
/// "A 1 GiB device can run an agent with 1,000 pods", read as: the agent
/// with 1,000 idle pods keeps at most half of the device resident, leaving
/// the rest to the operating system and to requests in flight.
const DEVICE_BYTES: f64 = 1024.0 * 1024.0 * 1024.0;
const DEVICE_PODS: usize = 1000;

#[derive(Args, Debug)]
pub struct FootprintArgs {
    /// A tiny, fast run that only checks the benchmark works (used by the
    /// test suite); never fails on figures.
    #[arg(long)]
    smoke: bool,
    /// Idle pods on the node of the second measurement of the server and
    /// of each native agent.
    #[arg(long, default_value_t = 1000)]
    pods: usize,
    /// Idle pods on the emulated aarch64 agent (0: only the idle agent).
    #[arg(long, default_value_t = 100)]
    arm64_pods: usize,
    /// Seconds a process is left alone before it is measured.
    #[arg(long, default_value_t = 10)]
    settle: u64,
    /// Seconds over which idle CPU is measured (and RSS sampled each second).
    #[arg(long, default_value_t = 30)]
    window: u64,
    /// Concurrent creators while filling a node with pods.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// The edge agent: `wkube` built without the compiler and the control
    /// plane (`cargo build --profile edge --no-default-features --bin
    /// wkube`), measured as an agent and by size.
    #[arg(long, alias = "compilerless", value_name = "PATH")]
    edge: Option<PathBuf>,
    /// An aarch64 `wkube` (the edge agent: `cargo build --profile edge
    /// --target aarch64-unknown-linux-gnu --no-default-features --bin
    /// wkube`), run as
    /// an agent under `qemu-aarch64` (`$WKUBE_QEMU_AARCH64`, else the PATH)
    /// with the aarch64 C library of `$WKUBE_ARM64_SYSROOT` (default
    /// /usr/aarch64-linux-gnu), and stripped with `aarch64-linux-gnu-strip`.
    #[arg(long, value_name = "PATH")]
    arm64: Option<PathBuf>,
    /// The HTTP component the pods run [default:
    /// guest-examples/out/hello-http.wasm of this source tree].
    #[arg(long)]
    module: Option<PathBuf>,
    /// The wkube binary: the all-in-one server, every agent's server, and
    /// the default-build agent [default: next to this benchmark].
    #[arg(long)]
    wkube: Option<PathBuf>,
}

/// The run's sizes and times, after `--smoke`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub(crate) pods: usize,
    pub(crate) arm64_pods: usize,
    pub(crate) settle: Duration,
    pub(crate) window: Duration,
    pub(crate) concurrency: usize,
}

/// A figure, or why it was not measured.
enum Outcome<T> {
    Measured(T),
    Skipped(String),
}

pub async fn run(args: FootprintArgs) -> Result<()> {
    let plan = if args.smoke {
        Plan {
            pods: 20,
            arm64_pods: 5,
            settle: Duration::from_secs(1),
            window: Duration::from_secs(3),
            concurrency: 4,
        }
    } else {
        Plan {
            pods: args.pods,
            arm64_pods: args.arm64_pods,
            settle: Duration::from_secs(args.settle),
            window: Duration::from_secs(args.window.max(1)),
            concurrency: args.concurrency.max(1),
        }
    };
    let bin = match &args.wkube {
        Some(b) => b.clone(),
        None => procs::sibling_binary("wkube")?,
    };
    if !bin.exists() {
        bail!(
            "wkube binary {} not found (build it with `cargo build --release --bins`, or pass --wkube BIN)",
            bin.display()
        );
    }
    let (_, module) = procs::hello_module(args.module.as_deref())?;
    if let Some(p) = &args.edge
        && !p.exists()
    {
        bail!("--edge {}: no such file", p.display());
    }
    if let Some(p) = &args.arm64 {
        match is_aarch64_elf(p) {
            Ok(true) => {}
            Ok(false) => bail!("--arm64 {}: not an aarch64 ELF binary", p.display()),
            Err(e) => bail!("--arm64 {}: {e}", p.display()),
        }
    }
    let (load, cores) = procs::machine_load();
    println!(
        "{} ({}); {cores} cores, load average {}; MB = 10^6 bytes",
        procs::version_of(&bin),
        bin.display(),
        load.map_or_else(|| "unknown".into(), |l| format!("{l:.2}"))
    );
    println!(
        "each process: its node Ready, left alone {} s, then CPU over {} s (RSS sampled every second)",
        plan.settle.as_secs(),
        plan.window.as_secs()
    );

    // --- sizes ---------------------------------------------------------------
    println!();
    println!("binary size (a stripped copy)");
    let no_strip = || Outcome::Skipped("strip is not on the PATH (Debian: binutils)".into());
    let has_strip = procs::on_path("strip").is_some();
    let size_default = if has_strip {
        Outcome::Measured(stripped_size(&bin, "strip")?)
    } else {
        no_strip()
    };
    print_size("wkube (default build, with the compiler)", &size_default);
    let size_edge = match &args.edge {
        Some(p) if has_strip => Outcome::Measured(stripped_size(p, "strip")?),
        Some(_) => no_strip(),
        None => Outcome::Skipped(
            "no --edge given; build one with `cargo build --profile edge --no-default-features --bin wkube`"
                .into(),
        ),
    };
    print_size(
        "wkube edge agent (no compiler, no control plane)",
        &size_edge,
    );
    let size_arm64 = match &args.arm64 {
        Some(p) => {
            if procs::on_path("aarch64-linux-gnu-strip").is_some() {
                Outcome::Measured(stripped_size(p, "aarch64-linux-gnu-strip")?)
            } else {
                Outcome::Skipped(
                    "aarch64-linux-gnu-strip is not on the PATH (Debian: binutils-aarch64-linux-gnu)"
                        .into(),
                )
            }
        }
        None => Outcome::Skipped("no --arm64 given".into()),
    };
    print_size("wkube for aarch64", &size_arm64);

    // --- the all-in-one server ------------------------------------------------
    println!();
    println!("idle processes");
    let (server_idle, server_pods) = server_scenario(&bin, &module, &plan).await?;

    // --- agents -----------------------------------------------------------------
    let native = |path: &Path| {
        let path = path.to_path_buf();
        move || Command::new(&path)
    };
    let agent_default = agent_scenario(
        "agent (default build)",
        &bin,
        &native(&bin),
        &module,
        &plan,
        AgentSetup::native(plan.pods),
    )
    .await?;
    let agent_edge = match &args.edge {
        Some(p) => Outcome::Measured(
            agent_scenario(
                "edge agent (no compiler, no control plane)",
                &bin,
                &native(p),
                &module,
                &plan,
                AgentSetup::native(plan.pods),
            )
            .await?,
        ),
        None => skipped_agent(
            "edge agent (no compiler, no control plane)",
            "no --edge given",
        ),
    };
    let agent_arm64 = match (&args.arm64, emulator()) {
        (None, _) => skipped_agent("agent (aarch64, emulated)", "no --arm64 given"),
        (Some(_), Err(why)) => skipped_agent("agent (aarch64, emulated)", &why),
        (Some(p), Ok((qemu, sysroot))) => {
            let p = p.clone();
            let cmd = move || {
                let mut c = Command::new(&qemu);
                c.arg("-L").arg(&sysroot).arg(&p);
                c
            };
            Outcome::Measured(
                agent_scenario(
                    "agent (aarch64, emulated)",
                    &bin,
                    &cmd,
                    &module,
                    &plan,
                    AgentSetup::emulated(plan.arm64_pods),
                )
                .await?,
            )
        }
    };

    report(&Report {
        size_default: &size_default,
        size_edge: &size_edge,
        size_arm64: &size_arm64,
        server_idle: &server_idle,
        server_pods: &server_pods,
        agent_default: &agent_default,
        agent_edge: &agent_edge,
        agent_arm64: &agent_arm64,
    });
    Ok(())
}

// --- binary size ------------------------------------------------------------------

struct Size {
    file: u64,
    stripped: u64,
}

/// Copies `bin` into a temporary dir and strips the copy with `strip`.
fn stripped_size(bin: &Path, strip: &str) -> Result<Size> {
    let dir = tempfile::Builder::new()
        .prefix("wkube-bench-strip-")
        .tempdir()?;
    let copy = dir.path().join("wkube");
    std::fs::copy(bin, &copy).with_context(|| format!("copying {}", bin.display()))?;
    let out = Command::new(strip)
        .arg(&copy)
        .output()
        .with_context(|| format!("running {strip} (binutils)"))?;
    if !out.status.success() {
        bail!(
            "{strip} {}: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(Size {
        file: std::fs::metadata(bin)?.len(),
        stripped: std::fs::metadata(&copy)?.len(),
    })
}

fn print_size(label: &str, size: &Outcome<Size>) {
    match size {
        Outcome::Measured(s) => println!(
            "  {label:<42} {:>6.1} MB stripped ({:.1} MiB; {:.1} MB as built)",
            mb(s.stripped),
            s.stripped as f64 / 1048576.0,
            mb(s.file)
        ),
        Outcome::Skipped(why) => println!("  {label:<42} skipped ({why})"),
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

pub(crate) fn kib_mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

/// Whether `file` is 64-bit little-endian ELF for aarch64 (e_machine 183).
fn is_aarch64_elf(file: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut header = [0u8; 20];
    std::fs::File::open(file)?.read_exact(&mut header)?;
    let machine = u16::from_le_bytes([header[18], header[19]]);
    Ok(header.starts_with(b"\x7fELF\x02\x01") && machine == 183)
}

fn skipped_agent(label: &str, why: &str) -> Outcome<AgentFigures> {
    println!("  {label:<36} skipped ({why})");
    Outcome::Skipped(why.to_string())
}

/// The emulator and the aarch64 sysroot, as `tests/it/arm64.rs` finds
/// them, or why they are not there.
fn emulator() -> std::result::Result<(PathBuf, PathBuf), String> {
    let env = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty());
    let qemu = env("WKUBE_QEMU_AARCH64")
        .map(PathBuf::from)
        .or_else(|| procs::on_path("qemu-aarch64"))
        .ok_or_else(|| "qemu-aarch64 is not on the PATH (Debian: qemu-user)".to_string())?;
    let sysroot = env("WKUBE_ARM64_SYSROOT")
        .map_or_else(|| PathBuf::from("/usr/aarch64-linux-gnu"), PathBuf::from);
    let loader = sysroot.join("lib/ld-linux-aarch64.so.1");
    if !loader.exists() {
        return Err(format!(
            "no aarch64 loader at {} (Debian: libc6-arm64-cross)",
            loader.display()
        ));
    }
    Ok((qemu, sysroot))
}

// --- processes under measurement --------------------------------------------------

/// A `wkube server` with TLS on, its own data dir, and an admin client.
/// Field order: the process is killed before its dir is removed.
pub(crate) struct Cluster {
    pub(crate) proc: ChildGuard,
    pub(crate) client: kube::Client,
    pub(crate) api_url: String,
    /// When the process was spawned.
    started: Instant,
    dir: TempDir,
}

impl Cluster {
    pub(crate) async fn start(bin: &Path, extra: &[String]) -> Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix("wkube-bench-footprint-")
            .tempdir()?;
        let data = dir.path().join("data");
        let mut cmd = Command::new(bin);
        cmd.arg("--data-dir")
            .arg(&data)
            .arg("server")
            .args(["--listen", "127.0.0.1:0", "--etcd-listen", "127.0.0.1:0"])
            .args(extra);
        let started = Instant::now();
        let mut proc = ChildGuard::spawn("wkube server", cmd, &dir.path().join("server.log"))?;
        // The API endpoint is published, then the admin kubeconfig naming it.
        let (api_url, token) =
            procs::wait_until(&mut proc, "wkube server", Duration::from_secs(120), || {
                let data = data.clone();
                async move {
                    let url = tokio::fs::read_to_string(data.join("api.endpoint")).await?;
                    let url = url.trim().to_string();
                    let kc = tokio::fs::read_to_string(data.join("admin.kubeconfig")).await?;
                    if url.is_empty() || !kc.contains(&url) {
                        bail!("the admin kubeconfig is not written yet");
                    }
                    Ok::<_, anyhow::Error>((url, procs::kubeconfig_token(&kc)?))
                }
            })
            .await?;
        let ca = std::fs::read_to_string(data.join("pki/ca.crt"))
            .context("reading the cluster CA (DATA/pki/ca.crt)")?;
        let client = wkube::client::build(&wkube::client::ClientConfig {
            server: api_url.clone(),
            ca_pem: Some(ca),
            credential: wkube::client::Credential::Token(token),
            connect_timeout: Duration::from_secs(10),
        })?;
        Ok(Cluster {
            proc,
            client,
            api_url,
            started,
            dir,
        })
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The namespace, and the module pushed as `hello:v1`.
    pub(crate) async fn deploy_module(&self, module: &[u8]) -> Result<()> {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?;
        kube::Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .context("creating the namespace")?;
        let push = hyper::http::Request::post("/apis/wkube.dev/v1/modules/hello/push?tag=v1")
            .header("content-type", "application/wasm")
            .body(module.to_vec())?;
        tokio::time::timeout(Duration::from_secs(60), self.client.request_text(push))
            .await
            .context("pushing the module timed out")?
            .context("pushing the module")?;
        Ok(())
    }
}

/// A `wkube agent` joined to a [`Cluster`]; killed before its dir is
/// removed.
pub(crate) struct Agent {
    pub(crate) proc: ChildGuard,
    /// When the process was spawned.
    started: Instant,
    _dir: TempDir,
}

impl Agent {
    pub(crate) fn start(
        mut cmd: Command,
        cluster: &Cluster,
        name: &str,
        ip: &str,
        extra: &[String],
    ) -> Result<Agent> {
        let token = std::fs::read_to_string(cluster.data().join("join-token"))
            .context("reading the server's join token (DATA/join-token)")?;
        let dir = tempfile::Builder::new()
            .prefix("wkube-bench-agent-")
            .tempdir()?;
        cmd.arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["agent", "--server", &cluster.api_url])
            .args(["--token", token.trim()])
            .args(["--node-name", name, "--node-ip", ip])
            .args(["--agent-listen", &format!("{ip}:0")])
            .args(extra);
        let started = Instant::now();
        let proc = ChildGuard::spawn("wkube agent", cmd, &dir.path().join("agent.log"))?;
        Ok(Agent {
            proc,
            started,
            _dir: dir,
        })
    }
}

/// Waits (bounded) until node `name` reports Ready=True.
pub(crate) async fn wait_node_ready(
    proc: &mut ChildGuard,
    client: &kube::Client,
    name: &str,
    timeout: Duration,
) -> Result<()> {
    let nodes = kube::Api::<Node>::all(client.clone());
    procs::wait_until(proc, &format!("node {name}"), timeout, || {
        let nodes = nodes.clone();
        async move {
            let node = nodes.get(name).await?;
            let ready = node
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if !ready {
                bail!("node {name} is not Ready yet");
            }
            Ok::<_, anyhow::Error>(())
        }
    })
    .await?;
    Ok(())
}

/// What one process costs while idle.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Idle {
    pub(crate) pods: usize,
    /// At the end of the window.
    pub(crate) mem: Resident,
    /// The largest VmRSS sampled during the window, KiB.
    pub(crate) rss_max_kib: u64,
    /// CPU time over the window as a share of one core, in percent.
    pub(crate) cpu_pct: f64,
    pub(crate) window: Duration,
}

/// Leaves `watched[0]` alone for `settle`, then measures its CPU over
/// `window`; every process in `watched` must stay up throughout.
pub(crate) async fn measure(
    watched: &mut [&mut ChildGuard],
    plan: &Plan,
    pods: usize,
) -> Result<Idle> {
    let pid = watched
        .first()
        .and_then(|p| p.pid())
        .context("no process to measure")?;
    let check = |watched: &mut [&mut ChildGuard]| -> Result<()> {
        for p in watched.iter_mut() {
            p.check_running()?;
        }
        Ok(())
    };
    let settle_end = Instant::now() + plan.settle;
    while Instant::now() < settle_end {
        check(watched)?;
        tokio::time::sleep_until(
            settle_end
                .min(Instant::now() + Duration::from_secs(1))
                .into(),
        )
        .await;
    }
    check(watched)?;
    let cpu0 = procs::cpu_time(Some(pid)).context("reading the process's CPU time")?;
    let t0 = Instant::now();
    let end = t0 + plan.window;
    let mut rss_max_kib = procs::resident(pid)?.rss_kib;
    while Instant::now() < end {
        tokio::time::sleep_until(end.min(Instant::now() + Duration::from_secs(1)).into()).await;
        check(watched)?;
        rss_max_kib = rss_max_kib.max(procs::resident(pid)?.rss_kib);
    }
    let cpu1 = procs::cpu_time(Some(pid)).context("reading the process's CPU time")?;
    let window = t0.elapsed();
    let mem = procs::resident(pid)?;
    Ok(Idle {
        pods,
        mem,
        rss_max_kib: rss_max_kib.max(mem.rss_kib),
        cpu_pct: (cpu1.saturating_sub(cpu0)).as_secs_f64() / window.as_secs_f64() * 100.0,
        window,
    })
}

pub(crate) fn print_idle(label: &str, idle: &Idle, note: &str) {
    println!(
        "  {label:<36} {:>5} pods  VmRSS {:>6.1} MB (max {:>6.1})  RssAnon {:>6.1} MB  RssFile {:>5.1} MB  threads {:>3}  CPU {:>5.2}% of a core over {:.0} s{note}",
        idle.pods,
        kib_mb(idle.mem.rss_kib),
        kib_mb(idle.rss_max_kib),
        kib_mb(idle.mem.anon_kib),
        kib_mb(idle.mem.file_kib),
        idle.mem.threads,
        idle.cpu_pct,
        idle.window.as_secs_f64(),
    );
}

// --- pods ---------------------------------------------------------------------------

/// Creates `count` idle `hello-http` pods bound to `node` and waits
/// (bounded by `timeout`) until all of them are Running; the time it took.
pub(crate) async fn fill(
    client: &kube::Client,
    watched: &mut [&mut ChildGuard],
    node: &str,
    count: usize,
    concurrency: usize,
    timeout: Duration,
) -> Result<Duration> {
    let started = Instant::now();
    let pods = kube::Api::<Pod>::namespaced(client.clone(), NAMESPACE);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.min(count) {
        let pods = pods.clone();
        let next = next.clone();
        let node = node.to_string();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<(), anyhow::Error>(());
                }
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("idle-{i}"), "labels": {"app": "idle"}},
                    "spec": {
                        "nodeName": node,
                        "containers": [{
                            "name": "web",
                            "image": "hello:v1",
                            "ports": [{"containerPort": 8080}],
                        }],
                    },
                }))?;
                tokio::time::timeout(
                    Duration::from_secs(30),
                    pods.create(&PostParams::default(), &pod),
                )
                .await
                .context("creating a pod timed out")?
                .with_context(|| format!("creating pod idle-{i}"))?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    // Running is counted from a watch (its first list, then every
    // change), not by listing all the pods again and again: a list of
    // 10,000 pods every few seconds would load the server being measured.
    let deadline = started + timeout;
    let cfg = watcher::Config::default().labels("app=idle");
    let mut events = std::pin::pin!(watcher::watcher(pods, cfg));
    // Pod name → whether it is Running, and how many are; a relist
    // (after the watch had to start over) replaces the map at its end.
    let mut running: HashMap<String, bool> = HashMap::new();
    let mut relist: Option<HashMap<String, bool>> = None;
    let mut now_running = 0usize;
    loop {
        for p in watched.iter_mut() {
            p.check_running()?;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let event =
            match tokio::time::timeout(left.min(Duration::from_secs(1)), events.next()).await {
                Ok(Some(event)) => Some(event.context("watching the pods")?),
                Ok(None) => bail!("the watch on the pods ended"),
                Err(_) => None,
            };
        let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
        let is_running = |p: &Pod| phase(p) == Some("Running");
        match event {
            Some(watcher::Event::Init) => relist = Some(HashMap::new()),
            Some(watcher::Event::InitApply(p)) => {
                relist
                    .get_or_insert_default()
                    .insert(name(&p), is_running(&p));
            }
            Some(watcher::Event::InitDone) => {
                running = relist.take().unwrap_or_default();
                now_running = running.values().filter(|r| **r).count();
            }
            Some(watcher::Event::Apply(p)) => {
                let now = is_running(&p);
                if running.insert(name(&p), now) == Some(true) {
                    now_running -= 1;
                }
                now_running += usize::from(now);
            }
            Some(watcher::Event::Delete(p)) => {
                now_running -= usize::from(running.remove(&name(&p)) == Some(true));
            }
            None => {}
        }
        if now_running >= count {
            return Ok(started.elapsed());
        }
        if Instant::now() >= deadline {
            let stuck = running.iter().find(|(_, r)| !**r).map(|(n, _)| n.clone());
            bail!(
                "{now_running} of {count} pods on {node} Running after {timeout:?}; one that is not: {}",
                stuck.unwrap_or_default()
            );
        }
    }
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

/// `--max-pods` for a node that must hold `pods`, when the default is too
/// small.
pub(crate) fn max_pods_args(pods: usize) -> Vec<String> {
    if pods > DEFAULT_MAX_PODS {
        vec!["--max-pods".into(), (pods + 16).to_string()]
    } else {
        Vec::new()
    }
}

// --- scenarios --------------------------------------------------------------------

/// The all-in-one server with its node: idle, then with `plan.pods` pods.
async fn server_scenario(bin: &Path, module: &[u8], plan: &Plan) -> Result<(Idle, Idle)> {
    let label = "all-in-one server with its node";
    let mut extra: Vec<String> = ["--node-name", SERVER_NODE, "--agent-listen", "127.0.0.1:0"]
        .map(String::from)
        .to_vec();
    extra.extend(max_pods_args(plan.pods));
    let mut cluster = Cluster::start(bin, &extra).await?;
    wait_node_ready(
        &mut cluster.proc,
        &cluster.client,
        SERVER_NODE,
        Duration::from_secs(120),
    )
    .await?;
    let ready = cluster.started.elapsed();
    let idle = measure(&mut [&mut cluster.proc], plan, 0).await?;
    print_idle(
        label,
        &idle,
        &format!("  (node Ready {:.1} s after start)", ready.as_secs_f64()),
    );
    cluster.deploy_module(module).await?;
    let timeout = Duration::from_secs(60) + Duration::from_millis(500) * plan.pods as u32;
    let filled = fill(
        &cluster.client,
        &mut [&mut cluster.proc],
        SERVER_NODE,
        plan.pods,
        plan.concurrency,
        timeout,
    )
    .await
    .with_context(|| format!("server log:\n{}", cluster.proc.log_tail(4096)))?;
    let with_pods = measure(&mut [&mut cluster.proc], plan, plan.pods).await?;
    print_idle(
        label,
        &with_pods,
        &format!(
            "  (pods Running {:.1} s after the first create)",
            filled.as_secs_f64()
        ),
    );
    Ok((idle, with_pods))
}

/// How an agent is run and how long it may take.
struct AgentSetup {
    name: &'static str,
    ip: &'static str,
    pods: usize,
    flags: Vec<String>,
    ready_timeout: Duration,
    per_pod: Duration,
}

impl AgentSetup {
    fn native(pods: usize) -> Self {
        Self {
            name: AGENT_NODE,
            ip: AGENT_IP,
            pods,
            flags: max_pods_args(pods),
            ready_timeout: Duration::from_secs(120),
            per_pod: Duration::from_millis(500),
        }
    }

    /// Under the emulator every instruction is translated: slower start,
    /// slower pods; and `--wasm-memory small`, because the emulator keeps
    /// state for every reserved page (README, "Arm64 agents").
    fn emulated(pods: usize) -> Self {
        let mut flags = vec!["--wasm-memory".to_string(), "small".to_string()];
        flags.extend(max_pods_args(pods));
        Self {
            name: ARM64_NODE,
            ip: ARM64_IP,
            pods,
            flags,
            ready_timeout: Duration::from_secs(300),
            per_pod: Duration::from_secs(3),
        }
    }
}

/// What an agent costs: idle, and with pods (when any are asked for).
struct AgentFigures {
    idle: Idle,
    with_pods: Option<Idle>,
    /// The server beside it (no node of its own) at the end, KiB.
    server_rss_kib: u64,
}

/// A server without a node of its own and one agent joined to it (`cmd`
/// runs the agent's `wkube`); the agent process alone is measured.
async fn agent_scenario(
    label: &str,
    server_bin: &Path,
    cmd: &dyn Fn() -> Command,
    module: &[u8],
    plan: &Plan,
    setup: AgentSetup,
) -> Result<AgentFigures> {
    let mut cluster = Cluster::start(server_bin, &["--no-agent".to_string()]).await?;
    let mut agent = Agent::start(cmd(), &cluster, setup.name, setup.ip, &setup.flags)?;
    wait_node_ready(
        &mut agent.proc,
        &cluster.client,
        setup.name,
        setup.ready_timeout,
    )
    .await
    .with_context(|| format!("server log:\n{}", cluster.proc.log_tail(2048)))?;
    let ready = agent.started.elapsed();
    let idle = measure(&mut [&mut agent.proc, &mut cluster.proc], plan, 0).await?;
    print_idle(
        label,
        &idle,
        &format!("  (node Ready {:.1} s after start)", ready.as_secs_f64()),
    );
    let mut with_pods = None;
    if setup.pods > 0 {
        cluster.deploy_module(module).await?;
        let timeout = Duration::from_secs(60) + setup.per_pod * setup.pods as u32;
        let filled = fill(
            &cluster.client,
            &mut [&mut agent.proc, &mut cluster.proc],
            setup.name,
            setup.pods,
            plan.concurrency,
            timeout,
        )
        .await
        .with_context(|| format!("agent log:\n{}", agent.proc.log_tail(4096)))?;
        let idle = measure(&mut [&mut agent.proc, &mut cluster.proc], plan, setup.pods).await?;
        print_idle(
            label,
            &idle,
            &format!(
                "  (pods Running {:.1} s after the first create)",
                filled.as_secs_f64()
            ),
        );
        with_pods = Some(idle);
    }
    let server_rss_kib =
        procs::resident(cluster.proc.pid().context("the server stopped")?)?.rss_kib;
    Ok(AgentFigures {
        idle,
        with_pods,
        server_rss_kib,
    })
}

// --- the summary ------------------------------------------------------------------

struct Report<'a> {
    size_default: &'a Outcome<Size>,
    size_edge: &'a Outcome<Size>,
    size_arm64: &'a Outcome<Size>,
    server_idle: &'a Idle,
    server_pods: &'a Idle,
    agent_default: &'a AgentFigures,
    agent_edge: &'a Outcome<AgentFigures>,
    agent_arm64: &'a Outcome<AgentFigures>,
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn report(r: &Report<'_>) {
    println!();
    println!(
        "servers beside the agents (no node of their own): VmRSS {:.1} MB (default-build agent's){}",
        kib_mb(r.agent_default.server_rss_kib),
        match r.agent_edge {
            Outcome::Measured(a) => format!(", {:.1} MB (edge agent's)", kib_mb(a.server_rss_kib)),
            Outcome::Skipped(_) => String::new(),
        }
    );
    for (label, a) in [
        ("default build", Some(r.agent_default)),
        (
            "edge agent",
            match r.agent_edge {
                Outcome::Measured(a) => Some(a),
                Outcome::Skipped(_) => None,
            },
        ),
    ] {
        if let Some(a) = a
            && let Some(p) = &a.with_pods
            && p.pods > 0
        {
            println!(
                "per idle pod on the agent ({label}): {:.1} KiB VmRSS, {:.1} KiB RssAnon, {:.1} KiB tmpfs",
                (p.mem.rss_kib as f64 - a.idle.mem.rss_kib as f64) / p.pods as f64,
                (p.mem.anon_kib as f64 - a.idle.mem.anon_kib as f64) / p.pods as f64,
                (p.mem.shmem_kib as f64 - a.idle.mem.shmem_kib as f64) / p.pods as f64,
            );
        }
    }
    println!(
        "per idle pod on the all-in-one server: {:.1} KiB VmRSS, {:.1} KiB tmpfs (control plane's share included)",
        (r.server_pods.mem.rss_kib as f64 - r.server_idle.mem.rss_kib as f64)
            / r.server_pods.pods.max(1) as f64,
        (r.server_pods.mem.shmem_kib as f64 - r.server_idle.mem.shmem_kib as f64)
            / r.server_pods.pods.max(1) as f64
    );

    println!();
    println!("targets:");
    let size_line = |target: &str, limit: f64, s: &Outcome<Size>| match s {
        Outcome::Measured(s) => println!(
            "  {target:<52} {} ({:.1} MB)",
            verdict(mb(s.stripped) <= limit),
            mb(s.stripped)
        ),
        Outcome::Skipped(why) => println!("  {target:<52} skipped ({why})"),
    };
    size_line(
        "all-in-one binary stripped <= 40 MB:",
        SERVER_BINARY_MB,
        r.size_default,
    );
    size_line(
        "edge agent (no compiler) stripped <= 15 MB:",
        AGENT_BINARY_MB,
        r.size_edge,
    );
    match r.size_arm64 {
        Outcome::Measured(s) => println!(
            "  {:<52} {:.1} MB (no target of its own)",
            "aarch64 binary stripped:",
            mb(s.stripped)
        ),
        Outcome::Skipped(why) => {
            println!("  {:<52} skipped ({why})", "aarch64 binary stripped:")
        }
    }
    let server_rss = kib_mb(r.server_idle.mem.rss_kib);
    println!(
        "  {:<52} {} ({server_rss:.1} MB; {:.1} MB with {} pods)",
        "idle all-in-one server with its node <= 64 MB RSS:",
        verdict(server_rss <= SERVER_RSS_MB),
        kib_mb(r.server_pods.mem.rss_kib),
        r.server_pods.pods
    );
    let mut agents: Vec<(&str, &AgentFigures)> = vec![("default build", r.agent_default)];
    if let Outcome::Measured(a) = r.agent_edge {
        agents.push(("edge agent", a));
    }
    for (label, a) in &agents {
        let rss = kib_mb(a.idle.mem.rss_kib);
        println!(
            "  {:<52} {} ({rss:.1} MB)",
            format!("idle agent <= 24 MB RSS ({label}):"),
            verdict(rss <= AGENT_RSS_MB),
        );
    }
    if let Outcome::Measured(a) = r.agent_arm64 {
        println!(
            "  {:<52} {:.1} MB idle{} (the emulator's own state included; no target of its own)",
            "agent for aarch64 under qemu-aarch64, RSS:",
            kib_mb(a.idle.mem.rss_kib),
            a.with_pods.map_or_else(String::new, |p| format!(
                ", {:.1} MB with {} pods",
                kib_mb(p.mem.rss_kib),
                p.pods
            ))
        );
    }
    let mut cpu = vec![("all-in-one server", r.server_idle.cpu_pct)];
    for (label, a) in &agents {
        cpu.push((*label, a.idle.cpu_pct));
    }
    let worst = cpu.iter().map(|(_, c)| *c).fold(0.0, f64::max);
    println!(
        "  {:<52} {} ({})",
        "idle CPU <= 0.5% of a core (server and agents):",
        verdict(worst <= IDLE_CPU_PCT),
        cpu.iter()
            .map(|(l, c)| format!("{l} {c:.2}%"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // The device's agent: the edge agent when measured.
    let (label, device) = agents
        .last()
        .copied()
        .unwrap_or(("default build", r.agent_default));
    let limit_kib = (DEVICE_BYTES / 2.0 / 1024.0) as u64;
    let target = "1 GiB device runs an agent with 1,000 pods:";
    match &device.with_pods {
        Some(p) if p.pods >= DEVICE_PODS => println!(
            "  {target:<52} {} (agent, {label}, with {} pods: {:.1} MB RSS, at most half the device: {:.0} MB)",
            verdict(p.mem.rss_kib <= limit_kib),
            p.pods,
            kib_mb(p.mem.rss_kib),
            kib_mb(limit_kib)
        ),
        Some(p) => println!(
            "  {target:<52} not judged (only {} pods: {:.1} MB RSS)",
            p.pods,
            kib_mb(p.mem.rss_kib)
        ),
        None => println!("  {target:<52} not judged (no pods)"),
    }
}
