//! `wkube-bench store`: wkube's etcd v3 endpoint against a real etcd.
//!
//! Both servers are started side by side in one run, on loopback, plaintext,
//! each in a fresh temp data dir, and measured by the very same client (the
//! `etcd-client` crate; `--client raw` swaps in a minimal tonic client to
//! show the client's own share), one server after the other for each
//! workload so that neither competes with the other's load for the two
//! cores. The CPU each side used per op is reported next to the figures.
//!
//! Load model: a *client* is a task that issues requests back to back (a
//! closed loop: the next request leaves when the previous answer arrived).
//! Clients are spread round-robin over `--conns` gRPC connections (default
//! `min(clients, 16)`), each connection being one `etcd_client::Client` with
//! its own HTTP/2 channel — the way an application with a small connection
//! pool drives etcd. Every workload has a warm-up (connections established,
//! server caches primed) that is not measured, and is bounded both by an op
//! count and by wall time, whichever comes first.
//!
//! Puts write distinct keys, so every put is a new key and a new revision;
//! both servers acknowledge a put only once it is durable (etcd fsyncs its
//! WAL per commit by default; wkube group-commits into redb).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use etcd_client::{Client, ConnectOptions, GetOptions, KvClient};
use rand::Rng;
use serde_json::json;
use tokio::sync::Barrier;

use crate::procs::{self, Server};
use crate::rawkv::RawKv;
use crate::stats::{Recorder, Summary, cpu_per_op_us, fmt_latency_us, fmt_rate, fmt_ratio};

#[derive(Args, Debug)]
pub struct StoreArgs {
    /// Tiny fast run (200 ops per workload, 1 and 4 clients) for the test
    /// suite: fails on any request error, never on performance figures.
    #[arg(long)]
    smoke: bool,

    /// Measured ops per workload, at most [default: 50000; smoke: 200].
    #[arg(long)]
    ops: Option<u64>,

    /// Measured seconds per workload, at most [default: 10; smoke: 5].
    #[arg(long)]
    duration: Option<f64>,

    /// Bytes per value written by the put workloads.
    #[arg(long, default_value_t = 256)]
    value_size: usize,

    /// Concurrent clients of the put workloads [default: 1,16,64,256;
    /// smoke: 1,4].
    #[arg(long, value_delimiter = ',')]
    clients: Option<Vec<usize>>,

    /// Concurrent clients of the get and range workloads [default: 1,64;
    /// smoke: 1,4].
    #[arg(long, value_delimiter = ',')]
    get_clients: Option<Vec<usize>>,

    /// Keys read by one range request (a prefix read); 0 skips the range
    /// workloads.
    #[arg(long, default_value_t = 100)]
    range_keys: usize,

    /// gRPC connections the clients are spread over [default: min(clients, 16)].
    #[arg(long)]
    conns: Option<usize>,

    /// The wkube binary to start [default: `wkube` next to this executable].
    #[arg(long, value_name = "BIN")]
    wkube: Option<PathBuf>,

    /// The etcd binary to start as the reference.
    #[arg(long, value_name = "BIN", default_value = "/usr/bin/etcd")]
    etcd: PathBuf,

    /// Measure one running etcd v3 endpoint only (plaintext), start nothing.
    #[arg(long, value_name = "URL", conflicts_with_all = ["only", "wkube"])]
    endpoint: Option<String>,

    /// Start and measure only one of the two servers.
    #[arg(long, value_enum)]
    only: Option<Only>,

    /// Which client library drives the load: `etcd-client` (the crate
    /// applications use), or `raw`, a minimal client straight on tonic that
    /// shows how much of each figure is the client's own CPU.
    #[arg(long, value_enum, default_value_t = ClientLib::EtcdClient)]
    client: ClientLib,

    /// Print the results as one JSON document instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ClientLib {
    EtcdClient,
    Raw,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Only {
    Wkube,
    Etcd,
}

/// Settings resolved from the arguments and the mode.
struct Config {
    smoke: bool,
    ops: u64,
    duration: Duration,
    warm_ops: u64,
    warm_duration: Duration,
    value: Arc<[u8]>,
    conns: Option<usize>,
    client: ClientLib,
    /// Deadline for one request: a hung server fails the run instead of
    /// hanging it.
    request_timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Put,
    Get,
    Range,
}

#[derive(Clone, Debug)]
struct Workload {
    /// Position in the run; part of the put keys, so no two workloads
    /// write the same key.
    index: usize,
    kind: Kind,
    clients: usize,
    conns: usize,
}

impl Workload {
    fn name(&self, value_size: usize, range_keys: usize) -> String {
        match self.kind {
            Kind::Put => format!("put {value_size} B"),
            Kind::Get => "get 1 key".into(),
            Kind::Range => format!("range {range_keys} keys"),
        }
    }
}

/// A server being measured, with its pool of connections.
struct Target {
    name: String,
    endpoint: String,
    version: String,
    /// For readiness checks and writing the keys the reads read.
    admin: Client,
    /// The connections the workloads' clients are spread over.
    pool: Vec<Conn>,
    /// Kept to kill the process (and remove its data dir) at the end;
    /// `None` for `--endpoint`.
    server: Option<Server>,
}

/// Keys the read workloads use, written once before the run.
const GET_KEY: &str = "/bench/get/key";
const RANGE_PREFIX: &str = "/bench/range/";
/// Upper bound on concurrent clients of one workload: every client is a
/// task and a stream, and the point is to load a server, not the client.
const MAX_CLIENTS: usize = 4096;

pub async fn run(args: StoreArgs) -> Result<()> {
    let cfg = config(&args)?;
    let workloads = workloads(&args, &cfg)?;
    let load_before = procs::machine_load();

    let mut targets = start_targets(&args, &cfg).await?;
    for t in &mut targets {
        prepare(t, &args, &cfg).await?;
    }

    if !args.json {
        print_header(&args, &cfg, &targets);
    }

    // results[w][t]: workload w measured on target t.
    let mut results: Vec<Vec<Summary>> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    for w in &workloads {
        let mut row = Vec::new();
        for t in &mut targets {
            let name = w.name(args.value_size, args.range_keys);
            eprint!(
                "  {:<6} {name:<16} clients {:>3} conns {:>2} ... ",
                t.name, w.clients, w.conns
            );
            let (summary, first_error) = measure(t, w, &cfg, args.range_keys).await?;
            eprintln!(
                "{} ops/s, p50 {}, p99 {}, CPU/op client {} server {}{}",
                fmt_rate(summary.ops_per_sec),
                fmt_latency_us(summary.p50_us),
                fmt_latency_us(summary.p99_us),
                fmt_cpu(summary.client_cpu_us_per_op),
                fmt_cpu(summary.server_cpu_us_per_op),
                if summary.errors > 0 {
                    format!(", {} ERRORS", summary.errors)
                } else {
                    String::new()
                }
            );
            if let Some(e) = first_error {
                errors.push(format!(
                    "{} {name} x{}: {} errors, first: {e}",
                    t.name, w.clients, summary.errors
                ));
            }
            row.push(summary);
            // A server that died makes every later figure meaningless;
            // stop here and show why it died.
            if let Some(server) = t.server.as_mut() {
                server.proc.check_running()?;
            }
        }
        results.push(row);
    }

    let load_after = procs::machine_load();
    let goals = evaluate_targets(&targets, &workloads, &results);
    let machine = Machine {
        cores: load_before.1,
        load_before: load_before.0,
        load_after: load_after.0,
    };
    if args.json {
        let run = Run {
            args: &args,
            cfg: &cfg,
            targets: &targets,
            workloads: &workloads,
            results: &results,
        };
        print_json(&run, &machine, &goals, &errors)?;
    } else {
        print_table(&args, &targets, &workloads, &results);
        print_cpu_table(&args, &targets, &workloads, &results);
        print_machine(&machine);
        print_goals(&goals, cfg.smoke);
    }

    // Servers are killed here (and by their guards on any early return).
    drop(targets);

    if !errors.is_empty() {
        bail!("requests failed:\n  {}", errors.join("\n  "));
    }
    Ok(())
}

fn config(args: &StoreArgs) -> Result<Config> {
    // etcd refuses requests over 1.5 MiB; keep well below so the value
    // size never turns into an error-path benchmark.
    if args.value_size == 0 || args.value_size > 1 << 20 {
        bail!("--value-size must be between 1 and 1048576 bytes");
    }
    let ops = args.ops.unwrap_or(if args.smoke { 200 } else { 50_000 });
    let secs = args.duration.unwrap_or(if args.smoke { 5.0 } else { 10.0 });
    if ops == 0 || !(secs > 0.0 && secs <= 3600.0) {
        bail!("--ops must be positive and --duration in (0, 3600] seconds");
    }
    // A range answer must fit the client's 4 MiB message limit.
    if args.range_keys * (args.value_size + 64) > 4_000_000 {
        bail!("--range-keys x --value-size must stay under 4 MB, a gRPC message's limit");
    }
    if args.conns == Some(0) {
        bail!("--conns must be positive");
    }
    let mut value = vec![0u8; args.value_size];
    // Random bytes: neither server compresses, but a real value is not a
    // run of zeros either.
    rand::rng().fill(&mut value[..]);
    let duration = Duration::from_secs_f64(secs);
    Ok(Config {
        smoke: args.smoke,
        ops,
        duration,
        // Enough ops to open every connection and reach a steady state,
        // bounded so warm-up never dominates the run.
        warm_ops: (ops / 10).clamp(20, 2_000),
        warm_duration: (duration / 5).min(Duration::from_secs(2)),
        value: value.into(),
        conns: args.conns,
        client: args.client,
        request_timeout: Duration::from_secs(10),
    })
}

fn workloads(args: &StoreArgs, cfg: &Config) -> Result<Vec<Workload>> {
    let default_put: &[usize] = if cfg.smoke {
        &[1, 4]
    } else {
        &[1, 16, 64, 256]
    };
    let default_get: &[usize] = if cfg.smoke { &[1, 4] } else { &[1, 64] };
    let put = args.clients.clone().unwrap_or_else(|| default_put.to_vec());
    let get = args
        .get_clients
        .clone()
        .unwrap_or_else(|| default_get.to_vec());
    let mut kinds: Vec<(Kind, usize)> = put.iter().map(|&c| (Kind::Put, c)).collect();
    kinds.extend(get.iter().map(|&c| (Kind::Get, c)));
    if args.range_keys > 0 {
        kinds.extend(get.iter().map(|&c| (Kind::Range, c)));
    }
    if let Some(&(_, c)) = kinds.iter().find(|&&(_, c)| c == 0 || c > MAX_CLIENTS) {
        bail!("{c} clients: each workload needs between 1 and {MAX_CLIENTS}");
    }
    Ok(kinds
        .into_iter()
        .enumerate()
        .map(|(index, (kind, clients))| Workload {
            index,
            kind,
            clients,
            conns: cfg.conns.unwrap_or(16).min(clients),
        })
        .collect())
}

/// Starts (or, with `--endpoint`, just names) the servers and waits until
/// each answers a read.
async fn start_targets(args: &StoreArgs, cfg: &Config) -> Result<Vec<Target>> {
    let mut targets = Vec::new();
    if let Some(url) = &args.endpoint {
        if !is_loopback_url(url) {
            bail!(
                "--endpoint {url}: not a plaintext loopback URL such as http://127.0.0.1:2379 \
                 (the benchmark only talks to this machine)"
            );
        }
        let client = connect(url, cfg).await?;
        let mut kv = client.kv_client();
        tokio::time::timeout(Duration::from_secs(10), kv.get("/bench/ready", None))
            .await
            .with_context(|| format!("{url} did not answer within 10 s"))?
            .with_context(|| format!("reading from {url}"))?;
        targets.push(Target {
            name: "endpoint".into(),
            endpoint: url.clone(),
            version: String::new(),
            admin: client,
            pool: Vec::new(),
            server: None,
        });
        return Ok(targets);
    }

    let startup = Duration::from_secs(if cfg.smoke { 60 } else { 120 });
    if args.only != Some(Only::Etcd) {
        let bin = match &args.wkube {
            Some(b) => b.clone(),
            None => procs::sibling_binary("wkube")?,
        };
        let server = procs::spawn_wkube(&bin, &[], startup).await?;
        targets.push(ready_target(server, cfg, startup).await?);
    }
    if args.only != Some(Only::Wkube) {
        let server = procs::spawn_etcd(&args.etcd)?;
        targets.push(ready_target(server, cfg, startup).await?);
    }
    Ok(targets)
}

/// `http://HOST:PORT` (scheme optional) where HOST is a loopback address or
/// `localhost`.
fn is_loopback_url(url: &str) -> bool {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    if rest.contains("://") {
        return false;
    }
    let authority = rest.split('/').next().unwrap_or_default();
    let Some((host, port)) = authority.rsplit_once(':') else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    port.parse::<u16>().is_ok()
        && (host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback()))
}

async fn ready_target(mut server: Server, cfg: &Config, timeout: Duration) -> Result<Target> {
    let client = connect(&server.endpoint, cfg).await?;
    let what = format!("{} at {}", server.name, server.endpoint);
    procs::wait_until(&mut server.proc, &what, timeout, || {
        let mut kv = client.kv_client();
        async move {
            kv.get("/bench/ready", None).await?;
            Ok(())
        }
    })
    .await?;
    eprintln!(
        "started {} (pid {}) at {}, data in {}",
        server.name,
        server.proc.pid().unwrap_or(0),
        server.endpoint,
        server.dir.path().display()
    );
    Ok(Target {
        name: server.name.clone(),
        endpoint: server.endpoint.clone(),
        version: server.version.clone(),
        admin: client,
        pool: Vec::new(),
        server: Some(server),
    })
}

async fn connect(endpoint: &str, cfg: &Config) -> Result<Client> {
    let opts = ConnectOptions::new()
        .with_timeout(cfg.request_timeout)
        .with_connect_timeout(Duration::from_secs(5));
    Client::connect([endpoint], Some(opts))
        .await
        .with_context(|| format!("connecting to {endpoint}"))
}

/// Writes the keys the read workloads read.
async fn prepare(t: &mut Target, args: &StoreArgs, cfg: &Config) -> Result<()> {
    let mut kv = t.admin.kv_client();
    kv.put(GET_KEY, cfg.value.to_vec(), None)
        .await
        .with_context(|| format!("{}: writing {GET_KEY}", t.name))?;
    for i in 0..args.range_keys {
        kv.put(range_key(i), cfg.value.to_vec(), None)
            .await
            .with_context(|| format!("{}: writing the range keys", t.name))?;
    }
    Ok(())
}

fn range_key(i: usize) -> String {
    format!("{RANGE_PREFIX}{i:06}")
}

/// One connection of a target's pool.
enum Conn {
    EtcdClient(Box<Client>),
    Raw(RawKv),
}

impl Conn {
    /// A handle for one client task; handles of one `Conn` share its
    /// HTTP/2 connection.
    fn kv(&self) -> Kv {
        match self {
            Conn::EtcdClient(c) => Kv::EtcdClient(Box::new(c.kv_client())),
            Conn::Raw(r) => Kv::Raw(r.clone()),
        }
    }
}

enum Kv {
    EtcdClient(Box<KvClient>),
    Raw(RawKv),
}

/// One request of a workload.
#[derive(Clone)]
enum Op {
    /// A put of `value` to `{prefix}{op number}`: a new key every time.
    Put {
        prefix: Arc<str>,
        value: Arc<[u8]>,
    },
    Get,
    Range {
        expect: usize,
    },
}

impl Op {
    async fn call(&self, kv: &mut Kv, n: u64) -> Result<()> {
        // Keys read back; a wrong count is an error, not a fast op.
        let (found, expect) = match (self, kv) {
            (Op::Put { prefix, value }, Kv::EtcdClient(kv)) => {
                kv.put(format!("{prefix}{n:010}"), value.to_vec(), None)
                    .await?;
                return Ok(());
            }
            (Op::Put { prefix, value }, Kv::Raw(kv)) => {
                kv.put(format!("{prefix}{n:010}").into_bytes(), value.to_vec())
                    .await?;
                return Ok(());
            }
            (Op::Get, Kv::EtcdClient(kv)) => (kv.get(GET_KEY, None).await?.kvs().len(), 1),
            (Op::Get, Kv::Raw(kv)) => (kv.range(GET_KEY.as_bytes(), false).await?.kvs.len(), 1),
            (Op::Range { expect }, Kv::EtcdClient(kv)) => {
                let opts = GetOptions::new().with_prefix();
                (kv.get(RANGE_PREFIX, Some(opts)).await?.kvs().len(), *expect)
            }
            (Op::Range { expect }, Kv::Raw(kv)) => (
                kv.range(RANGE_PREFIX.as_bytes(), true).await?.kvs.len(),
                *expect,
            ),
        };
        if found != expect {
            bail!("read returned {found} keys, expected {expect}");
        }
        Ok(())
    }
}

/// Warm-up, then the measured phase, of one workload on one target.
/// Returns the measured summary (its error count includes the warm-up's)
/// and the first error message.
async fn measure(
    t: &mut Target,
    w: &Workload,
    cfg: &Config,
    range_keys: usize,
) -> Result<(Summary, Option<String>)> {
    while t.pool.len() < w.conns {
        let conn = match cfg.client {
            ClientLib::EtcdClient => Conn::EtcdClient(Box::new(connect(&t.endpoint, cfg).await?)),
            ClientLib::Raw => Conn::Raw(RawKv::connect(&t.endpoint, cfg.request_timeout).await?),
        };
        t.pool.push(conn);
    }
    let op = |phase: &str| match w.kind {
        Kind::Put => Op::Put {
            prefix: format!("/bench/put/w{:02}/{phase}/", w.index).into(),
            value: cfg.value.clone(),
        },
        Kind::Get => Op::Get,
        Kind::Range => Op::Range { expect: range_keys },
    };
    let (warm, _) = drive(t, w, op("warm"), cfg.warm_ops, cfg.warm_duration, cfg).await?;
    let server_pid = t.server.as_ref().and_then(|s| s.proc.pid());
    let usage = || {
        (
            procs::cpu_time(None),
            server_pid.and_then(|p| procs::cpu_time(Some(p))),
            server_pid.and_then(procs::disk_write_bytes),
        )
    };
    let (client0, server0, disk0) = usage();
    let (mut rec, elapsed) = drive(t, w, op("run"), cfg.ops, cfg.duration, cfg).await?;
    let (client1, server1, disk1) = usage();
    rec.errors += warm.errors;
    let first = warm.first_error.or(rec.first_error.clone());
    let mut summary = rec.summary(elapsed);
    summary.client_cpu_us_per_op = cpu_per_op_us(client0, client1, summary.ops);
    summary.server_cpu_us_per_op = cpu_per_op_us(server0, server1, summary.ops);
    summary.server_disk_bytes_per_op = match (disk0, disk1) {
        (Some(a), Some(b)) if summary.ops > 0 => {
            Some(b.saturating_sub(a) as f64 / summary.ops as f64)
        }
        _ => None,
    };
    Ok((summary, first))
}

/// Runs `w.clients` closed-loop clients until `ops` requests were issued or
/// `duration` passed. Returns what they recorded and the wall time from the
/// common start to the last client's end.
async fn drive(
    t: &Target,
    w: &Workload,
    op: Op,
    ops: u64,
    duration: Duration,
    cfg: &Config,
) -> Result<(Recorder, Duration)> {
    let next = Arc::new(AtomicU64::new(0));
    // Every client waits here so that connection setup and task spawning
    // are outside the measured interval.
    let barrier = Arc::new(Barrier::new(w.clients + 1));
    let mut tasks = Vec::with_capacity(w.clients);
    for c in 0..w.clients {
        let mut kv = t.pool[c % w.conns].kv();
        let op = op.clone();
        let next = next.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let deadline = Instant::now() + duration;
            let mut rec = Recorder::default();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= ops || Instant::now() >= deadline {
                    break;
                }
                let t0 = Instant::now();
                match op.call(&mut kv, n).await {
                    Ok(()) => rec.ok(t0.elapsed()),
                    Err(e) => rec.error(format!("{e:#}")),
                }
            }
            (rec, Instant::now())
        }));
    }
    barrier.wait().await;
    let start = Instant::now();
    let mut total = Recorder::default();
    let mut end = start;
    // Bounded even if a request ignores its own timeout.
    let limit = duration + cfg.request_timeout + Duration::from_secs(10);
    let joined = tokio::time::timeout(limit, futures::future::join_all(tasks))
        .await
        .with_context(|| format!("{}: workload did not finish within {limit:?}", t.name))?;
    for r in joined {
        let (rec, finished) = r.context("client task panicked")?;
        total.merge(rec);
        end = end.max(finished);
    }
    Ok((total, end - start))
}

/// One line of the summary against the targets.
struct Goal {
    text: &'static str,
    /// `None`: the workloads it needs were not measured in this run.
    met: Option<bool>,
    detail: String,
}

fn evaluate_targets(
    targets: &[Target],
    workloads: &[Workload],
    results: &[Vec<Summary>],
) -> Vec<Goal> {
    let idx = |name: &str| targets.iter().position(|t| t.name == name);
    let (wk, et) = (idx("wkube"), idx("etcd"));
    // The last workload of a kind and client count (there is normally one).
    let find = |kind: Kind, clients: usize, target: Option<usize>| -> Option<&Summary> {
        let t = target?;
        workloads
            .iter()
            .rposition(|w| w.kind == kind && w.clients == clients)
            .map(|i| &results[i][t])
    };
    let mut goals = Vec::new();

    let text = "puts/s at 64 clients >= 3x etcd's, p99 <= etcd's";
    goals.push(match (find(Kind::Put, 64, wk), find(Kind::Put, 64, et)) {
        (Some(w), Some(e)) => Goal {
            text,
            met: Some(w.ops_per_sec >= 3.0 * e.ops_per_sec && w.p99_us <= e.p99_us),
            detail: format!(
                "{} vs {} puts/s = {}; p99 {} vs {}",
                fmt_rate(w.ops_per_sec),
                fmt_rate(e.ops_per_sec),
                fmt_ratio(w.ops_per_sec, e.ops_per_sec),
                fmt_latency_us(w.p99_us),
                fmt_latency_us(e.p99_us)
            ),
        },
        _ => not_measured(text),
    });

    let text = ">= 10,000 puts/s (best put workload)";
    let best = wk.and_then(|t| {
        workloads
            .iter()
            .zip(results)
            .filter(|(w, _)| w.kind == Kind::Put)
            .map(|(w, r)| (w.clients, &r[t]))
            .max_by(|a, b| a.1.ops_per_sec.total_cmp(&b.1.ops_per_sec))
    });
    goals.push(match best {
        Some((clients, s)) => Goal {
            text,
            met: Some(s.ops_per_sec >= 10_000.0),
            detail: format!("{} puts/s at {clients} clients", fmt_rate(s.ops_per_sec)),
        },
        None => not_measured(text),
    });

    let text = "single-client put p50 <= 0.6x etcd's";
    goals.push(match (find(Kind::Put, 1, wk), find(Kind::Put, 1, et)) {
        (Some(w), Some(e)) => Goal {
            text,
            met: Some(w.p50_us <= 0.6 * e.p50_us),
            detail: format!(
                "{} vs {} = {}",
                fmt_latency_us(w.p50_us),
                fmt_latency_us(e.p50_us),
                fmt_ratio(w.p50_us, e.p50_us)
            ),
        },
        _ => not_measured(text),
    });

    for (clients, text) in [
        (64, "gets/s at 64 clients >= 5x etcd's"),
        (1, "gets/s at 1 client >= 5x etcd's"),
    ] {
        goals.push(
            match (find(Kind::Get, clients, wk), find(Kind::Get, clients, et)) {
                (Some(w), Some(e)) => Goal {
                    text,
                    met: Some(w.ops_per_sec >= 5.0 * e.ops_per_sec),
                    detail: format!(
                        "{} vs {} gets/s = {}",
                        fmt_rate(w.ops_per_sec),
                        fmt_rate(e.ops_per_sec),
                        fmt_ratio(w.ops_per_sec, e.ops_per_sec)
                    ),
                },
                _ => not_measured(text),
            },
        );
    }
    goals
}

fn not_measured(text: &'static str) -> Goal {
    Goal {
        text,
        met: None,
        detail: "not measured in this run".into(),
    }
}

fn print_header(args: &StoreArgs, cfg: &Config, targets: &[Target]) {
    println!(
        "wkube-bench store{}: {}-byte values; per workload at most {} ops / {:.0} s after a warm-up of {} ops / {:.1} s",
        if cfg.smoke { " --smoke" } else { "" },
        args.value_size,
        cfg.ops,
        cfg.duration.as_secs_f64(),
        cfg.warm_ops,
        cfg.warm_duration.as_secs_f64()
    );
    println!(
        "clients: closed-loop tasks, round-robin over {} gRPC connections of {}; the same client for every server",
        match cfg.conns {
            Some(n) => format!("min(clients, {n})"),
            None => "min(clients, 16)".into(),
        },
        match cfg.client {
            ClientLib::EtcdClient => "the etcd-client crate",
            ClientLib::Raw => "a minimal tonic client (--client raw)",
        }
    );
    for t in targets {
        let version = if t.version.is_empty() {
            String::new()
        } else {
            format!(" ({})", t.version)
        };
        println!("  {:<6} {}{version}", t.name, t.endpoint);
    }
    println!();
}

fn print_table(
    args: &StoreArgs,
    targets: &[Target],
    workloads: &[Workload],
    results: &[Vec<Summary>],
) {
    let pair = targets.len() == 2;
    let mut head = format!("{:<16} {:>7} {:>5}", "workload", "clients", "conns");
    for t in targets {
        head += &format!(
            " | {:>12} {:>8} {:>8}",
            format!("{} ops/s", t.name),
            "p50",
            "p99"
        );
    }
    if pair {
        head += &format!(" | {:>7} {:>7}", "ops/s x", "p99 x");
    }
    println!("{head}");
    println!("{}", "-".repeat(head.chars().count()));
    for (w, row) in workloads.iter().zip(results) {
        let mut line = format!(
            "{:<16} {:>7} {:>5}",
            w.name(args.value_size, args.range_keys),
            w.clients,
            w.conns
        );
        for s in row {
            line += &format!(
                " | {:>12} {:>8} {:>8}",
                fmt_rate(s.ops_per_sec),
                fmt_latency_us(s.p50_us),
                fmt_latency_us(s.p99_us)
            );
        }
        if pair {
            line += &format!(
                " | {:>7} {:>7}",
                fmt_ratio(row[0].ops_per_sec, row[1].ops_per_sec),
                fmt_ratio(row[0].p99_us, row[1].p99_us)
            );
        }
        println!("{line}");
    }
    if pair {
        println!(
            "ratios are {} / {}: ops/s x above 1 and p99 x below 1 favour {}",
            targets[0].name, targets[1].name, targets[0].name
        );
    }
    println!();
}

/// Where the time goes: CPU per op in each server and in the load
/// generator, and the bytes each server wrote to storage per op. On two
/// cores, client + server CPU per op bounds the throughput (at most about
/// 2 s / (client + server) ops per second).
fn print_cpu_table(
    args: &StoreArgs,
    targets: &[Target],
    workloads: &[Workload],
    results: &[Vec<Summary>],
) {
    let mut head = format!("{:<16} {:>7}", "CPU, disk per op", "clients");
    for t in targets {
        head += &format!(
            " | {:>14} {:>8} {:>9}",
            format!("{} server", t.name),
            "client",
            "disk/op"
        );
    }
    println!("{head}");
    println!("{}", "-".repeat(head.chars().count()));
    for (w, row) in workloads.iter().zip(results) {
        let mut line = format!(
            "{:<16} {:>7}",
            w.name(args.value_size, args.range_keys),
            w.clients
        );
        for s in row {
            line += &format!(
                " | {:>14} {:>8} {:>9}",
                fmt_cpu(s.server_cpu_us_per_op),
                fmt_cpu(s.client_cpu_us_per_op),
                fmt_bytes(s.server_disk_bytes_per_op)
            );
        }
        println!("{line}");
    }
    println!();
}

fn fmt_bytes(bytes: Option<f64>) -> String {
    match bytes {
        Some(b) if b >= 1024.0 => format!("{:.1} KiB", b / 1024.0),
        Some(b) => format!("{b:.0} B"),
        None => "—".into(),
    }
}

fn fmt_cpu(us: Option<f64>) -> String {
    match us {
        Some(us) if us < 10.0 => format!("{us:.1} µs"),
        Some(us) => format!("{us:.0} µs"),
        None => "—".into(),
    }
}

fn print_goals(goals: &[Goal], smoke: bool) {
    println!(
        "targets{}",
        if smoke {
            " (smoke run: figures are not meaningful)"
        } else {
            ""
        }
    );
    for g in goals {
        // A smoke run is too short to judge; "MISSED" in a test log would
        // only mislead.
        let mark = match g.met {
            _ if smoke => "-",
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "n/a",
        };
        println!("  {mark:<7} {:<52} {}", g.text, g.detail);
    }
}

/// Everything a report is made of.
struct Run<'a> {
    args: &'a StoreArgs,
    cfg: &'a Config,
    targets: &'a [Target],
    workloads: &'a [Workload],
    results: &'a [Vec<Summary>],
}

struct Machine {
    cores: usize,
    load_before: Option<f64>,
    load_after: Option<f64>,
}

fn print_machine(m: &Machine) {
    let fmt = |l: Option<f64>| l.map_or("?".into(), |l| format!("{l:.2}"));
    println!(
        "machine: {} cores; 1-min load average {} before the run, {} after{}",
        m.cores,
        fmt(m.load_before),
        fmt(m.load_after),
        // The run itself adds about 1 (client + server) to the load; a
        // higher load before it means something else was competing.
        if m.load_before.is_some_and(|l| l > 0.5) {
            " (other work was running: figures are lower than on an idle machine)"
        } else {
            ""
        }
    );
    println!();
}

fn print_json(run: &Run, machine: &Machine, goals: &[Goal], errors: &[String]) -> Result<()> {
    let Run {
        args,
        cfg,
        targets,
        workloads,
        results,
    } = *run;
    let rows: Vec<_> = workloads
        .iter()
        .zip(results)
        .map(|(w, row)| {
            let by_target: serde_json::Map<String, serde_json::Value> = targets
                .iter()
                .zip(row)
                .map(|(t, s)| Ok((t.name.clone(), serde_json::to_value(s)?)))
                .collect::<Result<_>>()?;
            Ok(json!({
                "workload": w.name(args.value_size, args.range_keys),
                "kind": format!("{:?}", w.kind).to_lowercase(),
                "clients": w.clients,
                "conns": w.conns,
                "results": by_target,
            }))
        })
        .collect::<Result<_>>()?;
    let doc = json!({
        "benchmark": "store",
        "smoke": cfg.smoke,
        "value_size": args.value_size,
        "ops": cfg.ops,
        "duration_s": cfg.duration.as_secs_f64(),
        "warmup_ops": cfg.warm_ops,
        "client": match cfg.client {
            ClientLib::EtcdClient => "etcd-client",
            ClientLib::Raw => "raw",
        },
        "machine": {
            "cores": machine.cores,
            "load_before": machine.load_before,
            "load_after": machine.load_after,
        },
        "servers": targets.iter().map(|t| json!({
            "name": t.name, "endpoint": t.endpoint, "version": t.version,
        })).collect::<Vec<_>>(),
        "workloads": rows,
        "targets": goals.iter().map(|g| json!({
            "target": g.text, "met": g.met, "detail": g.detail,
        })).collect::<Vec<_>>(),
        "errors": errors,
    });
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_loopback_url;

    #[test]
    fn loopback_urls() {
        assert!(is_loopback_url("http://127.0.0.1:2379"));
        assert!(is_loopback_url("127.0.0.5:2379"));
        assert!(is_loopback_url("http://localhost:2379/"));
        assert!(is_loopback_url("http://[::1]:2379"));
        assert!(!is_loopback_url("http://127.0.0.1.example.com:2379"));
        assert!(!is_loopback_url("http://10.0.0.1:2379"));
        assert!(!is_loopback_url("https://127.0.0.1:2379"));
        assert!(!is_loopback_url("http://127.0.0.1"));
    }
}
