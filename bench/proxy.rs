//! `wkube-bench proxy`: requests through the service proxy against
//! `wasmtime serve` running the same component, with `wrk` as the load
//! generator for both, on the same machine in the same run:
//!
//! - `hello-http` behind a NodePort Service (one pod, served in-process by
//!   the node's proxy) and under `wasmtime serve -Scli`, at several
//!   connection counts: requests/s, p50 and p99, and the ratios;
//! - a same-node service-to-service call: `echo-http`'s
//!   `/fetch?url=http://hello.bench.svc.cluster.local/` against the same
//!   `echo-http` answering `/status/200` (its own cost) and a direct
//!   request to `hello-http` — what routing the inner call adds.
//!
//! `wrk` comes from Debian (`apt-get install wrk`); `wasmtime` from
//! `cargo install wasmtime-cli --version 48.0.8 --locked`. Without
//! `wasmtime` on the PATH (or `--wasmtime`), the comparison is skipped and
//! said so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::api::{Api, Conn, admin_api};
use crate::procs::{self, ChildGuard};

const NODE: &str = "bench-node";
const NAMESPACE: &str = "bench";

#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// A tiny, fast run that only checks the benchmark works (used by the
    /// test suite); never fails on figures.
    #[arg(long)]
    smoke: bool,
    /// Connection counts to measure at.
    #[arg(long, value_delimiter = ',', default_value = "2,16,64")]
    connections: Vec<u32>,
    /// Seconds of load per measurement.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// wrk threads (at most the connection count).
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// The `wasmtime` binary [default: `wasmtime` on the PATH].
    #[arg(long)]
    wasmtime: Option<PathBuf>,
    /// The wkube binary [default: next to this benchmark].
    #[arg(long)]
    wkube: Option<PathBuf>,
}

/// One wrk measurement.
#[derive(Debug, Clone, Default)]
pub(crate) struct Wrk {
    pub(crate) rps: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) errors: u64,
}

pub async fn run(args: ProxyArgs) -> Result<()> {
    let (connections, duration) = if args.smoke {
        (vec![2], 1)
    } else {
        (args.connections.clone(), args.duration.max(1))
    };
    if which("wrk").is_none() {
        bail!("wrk is not on the PATH (apt-get install wrk)");
    }
    let bin = match &args.wkube {
        Some(b) => b.clone(),
        None => procs::sibling_binary("wkube")?,
    };
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest-examples/out");
    let hello = examples.join("hello-http.wasm");
    let echo = examples.join("echo-http.wasm");
    for m in [&hello, &echo] {
        if !m.exists() {
            bail!(
                "{} is missing (build it with guest-examples/build.sh)",
                m.display()
            );
        }
    }
    let (load, cores) = procs::machine_load();
    println!(
        "{cores} cores, load average {}; wrk {duration} s per point",
        load.map_or_else(|| "unknown".into(), |l| format!("{l:.2}"))
    );

    // wkube: one hello-http pod behind a NodePort, one echo-http pod.
    let server = procs::spawn_wkube(
        &bin,
        &["--node-name", NODE, "--agent-listen", "127.0.0.1:0"],
        Duration::from_secs(120),
    )
    .await?;
    let (api, _url) = admin_api(&server).await?;
    let api = Arc::new(api);
    let mut conn = Conn::open(&api.addr).await?;
    setup(&api, &mut conn, &hello, &echo).await?;
    let hello_port = node_port(&api, &mut conn, "hello").await?;
    let echo_port = node_port(&api, &mut conn, "echo").await?;
    let hello_url = format!("http://127.0.0.1:{hello_port}/");
    let echo_url = format!("http://127.0.0.1:{echo_port}/");
    wait_answers(&hello_url, "Hello")
        .await
        .with_context(|| server.proc.log_tail(4096))?;
    wait_answers(
        &format!("{echo_url}fetch?url=http://hello.{NAMESPACE}.svc.cluster.local/"),
        "Hello",
    )
    .await
    .with_context(|| server.proc.log_tail(4096))?;

    // wasmtime serve with the same component.
    let wasmtime = args.wasmtime.clone().or_else(|| which("wasmtime"));
    let mut serve: Option<(ChildGuard, String, tempfile::TempDir)> = None;
    match &wasmtime {
        Some(w) => {
            let port = procs::free_port()?;
            let dir = tempfile::tempdir()?;
            let mut cmd = Command::new(w);
            cmd.args(["serve", "-Scli", "--addr", &format!("127.0.0.1:{port}")])
                .arg(&hello);
            let child = ChildGuard::spawn("wasmtime serve", cmd, &dir.path().join("serve.log"))?;
            let url = format!("http://127.0.0.1:{port}/");
            wait_answers(&url, "Hello")
                .await
                .context("wasmtime serve never answered")?;
            println!("wasmtime serve: {}", procs::version_of(w));
            serve = Some((child, url, dir));
        }
        None => println!(
            "wasmtime is not installed: the comparison is skipped \
             (cargo install wasmtime-cli --version 48.0.8 --locked)"
        ),
    }

    println!();
    println!("hello-http: wkube NodePort vs wasmtime serve");
    println!(
        "{:>6}  {:>12} {:>9} {:>9}  {:>12} {:>9} {:>9}  {:>7} {:>9}",
        "conns", "wkube req/s", "p50", "p99", "serve req/s", "p50", "p99", "rps ×", "p99 ×"
    );
    let mut errors = 0;
    // (connections, req/s ×, p99 ×) against wasmtime serve.
    let mut ratios: Vec<(usize, f64, f64)> = Vec::new();
    for c in &connections {
        let w = wrk(&hello_url, *c, args.threads, duration)?;
        errors += w.errors;
        let s = match &serve {
            Some((_, url, _)) => Some(wrk(url, *c, args.threads, duration)?),
            None => None,
        };
        let fmt_us = |us: f64| crate::stats::fmt_latency_us(us);
        if let Some(s) = &s {
            ratios.push((
                *c as usize,
                w.rps / s.rps.max(1e-9),
                w.p99_us / s.p99_us.max(1e-9),
            ));
        }
        match s {
            Some(s) => println!(
                "{c:>6}  {:>12.0} {:>9} {:>9}  {:>12.0} {:>9} {:>9}  {:>7.2} {:>9.2}",
                w.rps,
                fmt_us(w.p50_us),
                fmt_us(w.p99_us),
                s.rps,
                fmt_us(s.p50_us),
                fmt_us(s.p99_us),
                w.rps / s.rps.max(1e-9),
                w.p99_us / s.p99_us.max(1e-9),
            ),
            None => println!(
                "{c:>6}  {:>12.0} {:>9} {:>9}  {:>12} {:>9} {:>9}",
                w.rps,
                fmt_us(w.p50_us),
                fmt_us(w.p99_us),
                "-",
                "-",
                "-"
            ),
        }
    }
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    for (c, rps, p99) in ratios.iter().filter(|(c, _, _)| *c == 16 || *c == 64) {
        println!(
            "  target at {c} connections: req/s ≥ 1.5× wasmtime serve: {} ({rps:.2}×); p99 ≤ 1.0×: {} ({p99:.2}×)",
            verdict(*rps >= 1.5),
            verdict(*p99 <= 1.0),
        );
    }
    if ratios.is_empty() {
        println!(
            "  targets (against wasmtime serve): req/s ≥ 1.5×, p99 ≤ 1.0× at 16 and 64 connections"
        );
    }

    // Service to service on one node, one connection at a time.
    println!();
    println!("same-node service-to-service (1 connection, p50)");
    let direct = wrk(&hello_url, 1, 1, duration)?;
    let own = wrk(&format!("{echo_url}status/200"), 1, 1, duration)?;
    let via = wrk(
        &format!("{echo_url}fetch?url=http://hello.{NAMESPACE}.svc.cluster.local/"),
        1,
        1,
        duration,
    )?;
    errors += direct.errors + own.errors + via.errors;
    let inner = via.p50_us - own.p50_us;
    println!(
        "  direct hello-http            {}",
        crate::stats::fmt_latency_us(direct.p50_us)
    );
    println!(
        "  echo-http /status/200        {}",
        crate::stats::fmt_latency_us(own.p50_us)
    );
    println!(
        "  echo-http /fetch → hello     {}",
        crate::stats::fmt_latency_us(via.p50_us)
    );
    println!(
        "  the inner call costs {} (fetch − status), {} {} than a direct request; target ≤ +50 µs: {}",
        crate::stats::fmt_latency_us(inner.max(0.0)),
        crate::stats::fmt_latency_us((inner - direct.p50_us).abs()),
        if inner >= direct.p50_us {
            "more"
        } else {
            "less"
        },
        if inner - direct.p50_us <= 50.0 {
            "met"
        } else {
            "MISSED"
        }
    );
    // CPU fairness: the same direct request while another pod spins on
    // four requests at once (neither pod has CPU requests or limits).
    println!();
    println!("CPU fairness: hello-http (1 connection) beside echo-http spinning on 4 requests");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spin_url = format!("{echo_url}spin/200");
    let spinners: Vec<_> = (0..4)
        .map(|_| {
            let (stop, url) = (stop.clone(), spin_url.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = get(&url).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let beside = wrk(&hello_url, 1, 1, duration)?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in spinners {
        let _ = s.await;
    }
    errors += beside.errors;
    let fmt_us = crate::stats::fmt_latency_us;
    println!(
        "  alone        p50 {:>9}  p99 {:>9}",
        fmt_us(direct.p50_us),
        fmt_us(direct.p99_us)
    );
    println!(
        "  beside spin  p50 {:>9}  p99 {:>9}   p99 × {:.2} (target ≤ 2)",
        fmt_us(beside.p50_us),
        fmt_us(beside.p99_us),
        beside.p99_us / direct.p99_us.max(1e-9)
    );
    drop(serve);
    drop(server);
    if errors > 0 && !args.smoke {
        bail!("{errors} requests failed or answered non-2xx");
    }
    Ok(())
}

pub(crate) fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

pub(crate) async fn api_call(
    api: &Api,
    conn: &mut Conn,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<Value> {
    let body = body.map(|b| serde_json::to_vec(&b)).transpose()?;
    let req = api.request(method, path, body)?;
    let (status, bytes) = tokio::time::timeout(Duration::from_secs(30), conn.send(req))
        .await
        .context("API request timed out")??;
    if !(200..300).contains(&status) {
        bail!(
            "{method} {path}: {status} {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

pub(crate) async fn push(api: &Api, conn: &mut Conn, name: &str, file: &Path) -> Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let mut req = api.request(
        "POST",
        &format!("/apis/wkube.dev/v1/modules/{name}/push?tag=v1"),
        Some(bytes),
    )?;
    req.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/wasm"),
    );
    let (status, body) = conn.send(req).await?;
    if !(200..300).contains(&status) {
        bail!(
            "pushing {name}: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}

async fn setup(api: &Api, conn: &mut Conn, hello: &Path, echo: &Path) -> Result<()> {
    api_call(
        api,
        conn,
        "POST",
        "/api/v1/namespaces",
        Some(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})),
    )
    .await?;
    push(api, conn, "hello", hello).await?;
    push(api, conn, "echo", echo).await?;
    for app in ["hello", "echo"] {
        api_call(
            api,
            conn,
            "POST",
            &format!("/api/v1/namespaces/{NAMESPACE}/pods"),
            Some(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": app, "labels": {"app": app}},
                "spec": {"nodeName": NODE, "containers": [{
                    "name": "web", "image": format!("{app}:v1"),
                    "ports": [{"name": "http", "containerPort": 8080}],
                }]},
            })),
        )
        .await?;
        api_call(
            api,
            conn,
            "POST",
            &format!("/api/v1/namespaces/{NAMESPACE}/services"),
            Some(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": app},
                "spec": {"type": "NodePort", "selector": {"app": app},
                    "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
            })),
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn node_port(api: &Api, conn: &mut Conn, name: &str) -> Result<u64> {
    let svc = api_call(
        api,
        conn,
        "GET",
        &format!("/api/v1/namespaces/{NAMESPACE}/services/{name}"),
        None,
    )
    .await?;
    svc.pointer("/spec/ports/0/nodePort")
        .and_then(Value::as_u64)
        .with_context(|| format!("service {name} has no nodePort: {svc}"))
}

/// Waits (at most a minute) until `url` answers 200 with `needle` in its
/// body.
pub(crate) async fn wait_answers(url: &str, needle: &str) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while std::time::Instant::now() < deadline {
        match get(url).await {
            Ok((200, body)) if body.contains(needle) => return Ok(()),
            Ok((code, body)) => last = format!("{code} {body}"),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{url} did not answer 200 with {needle:?} within a minute (last: {last})")
}

pub(crate) async fn get(url: &str) -> Result<(u16, String)> {
    let uri: hyper::Uri = url.parse()?;
    let authority = uri.authority().context("no authority")?.to_string();
    let stream = tokio::net::TcpStream::connect(&authority).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, &authority)
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let resp = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req)).await??;
    let status = resp.status().as_u16();
    use http_body_util::BodyExt;
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Runs wrk and reads its summary.
pub(crate) fn wrk(url: &str, connections: u32, threads: u32, secs: u64) -> Result<Wrk> {
    let threads = threads.clamp(1, connections.max(1));
    let out = Command::new("wrk")
        .args([
            "--latency",
            &format!("-t{threads}"),
            &format!("-c{connections}"),
            &format!("-d{secs}s"),
            "--timeout",
            "5s",
            url,
        ])
        .output()
        .context("running wrk")?;
    if !out.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

/// A wrk duration (`850.00us`, `1.23ms`, `2.00s`) in microseconds.
fn wrk_us(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * scale)
}

fn parse_wrk(text: &str) -> Result<Wrk> {
    let mut w = Wrk::default();
    for line in text.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            w.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("50%") {
            w.p50_us = wrk_us(v).unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("99%") {
            w.p99_us = wrk_us(v).unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            w.errors += v.trim().parse::<u64>().unwrap_or(0);
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            // connect 0, read 0, write 0, timeout 0
            w.errors += v
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    if w.rps == 0.0 {
        bail!("wrk printed no Requests/sec:\n{text}");
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read() {
        let text = "Running 1s test @ http://127.0.0.1:1/\n  2 threads and 16 connections\n\
            Thread Stats   Avg      Stdev     Max   +/- Stdev\n\
            Latency     1.40ms  300.00us   5.00ms   90.00%\n\
            Latency Distribution\n     50%  850.00us\n     75%    1.20ms\n     90%    1.50ms\n     99%    3.70ms\n\
            11000 requests in 1.00s, 1.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n\
            Requests/sec:  11000.50\nTransfer/sec:      1.00MB\n";
        let w = parse_wrk(text).unwrap();
        assert_eq!(w.rps, 11000.5);
        assert_eq!(w.p50_us, 850.0);
        assert_eq!(w.p99_us, 3700.0);
        assert_eq!(w.errors, 3);
    }
}
