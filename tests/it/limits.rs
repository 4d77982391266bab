//! Limits under load: hitting a limit gives a clean refusal (429 or 503,
//! 413 for bodies, 4xx for patches), never a reset connection or another
//! 5xx, never a hang, and the server keeps serving kubectl meanwhile.
//!
//! Each test drives the API with its own HTTP/1.1 client over TLS (one
//! task per connection, as separate clients would be), bounded in count
//! and in time, and prints what it measured.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::builders::PodBuilder;
use common::{Kubectl, TestServer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Watches opened at once by one user: half again its allowance.
const WATCHES: usize = 1500;
/// `--max-long-running-per-user`'s default.
const PER_USER: usize = 1000;

// --- a small HTTP/1.1 client ----------------------------------------------

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;
type Conn = BufReader<Tls>;

/// How the tests reach one server's API.
#[derive(Clone)]
struct Api {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
}

impl Api {
    fn of(server: &TestServer) -> Api {
        let addr = server
            .api_url
            .trim_start_matches("https://")
            .parse()
            .expect("API address");
        let ca = std::fs::read(server.pki("ca.crt")).expect("CA");
        Api {
            addr,
            tls: tls_config(&ca),
        }
    }

    /// A TCP connection, not yet TLS.
    async fn tcp(&self) -> std::io::Result<tokio::net::TcpStream> {
        tokio::net::TcpStream::connect(self.addr).await
    }

    /// TLS over `tcp`.
    async fn handshake(&self, tcp: tokio::net::TcpStream) -> std::io::Result<Conn> {
        let name = ServerName::IpAddress(self.addr.ip().into());
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await?;
        Ok(BufReader::new(tls))
    }

    async fn connect(&self) -> std::io::Result<Conn> {
        self.handshake(self.tcp().await?).await
    }
}

fn tls_config(ca_pem: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(ca.expect("CA certificate")).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// A response: its code, its header block (names lowercased) and body.
#[derive(Debug)]
struct Reply {
    code: u16,
    headers: String,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            (n == name).then_some(v.trim())
        })
    }
}

/// The head of a request as `token`'s user, without its body.
fn head(method: &str, path: &str, token: &str, extra: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: wkube\r\nAuthorization: Bearer {token}\r\n{extra}\r\n"
    )
}

/// Sends a request with a `Content-Length` body and reads the reply; the
/// connection stays open for the next one.
async fn exchange(
    conn: &mut Conn,
    method: &str,
    path: &str,
    token: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<Reply> {
    let extra = if body.is_empty() && method == "GET" {
        String::new()
    } else {
        format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            body.len()
        )
    };
    let mut req = head(method, path, token, &extra).into_bytes();
    req.extend_from_slice(body);
    conn.get_mut().write_all(&req).await?;
    read_reply(conn).await
}

async fn get(conn: &mut Conn, path: &str, token: &str) -> std::io::Result<Reply> {
    exchange(conn, "GET", path, token, "", b"").await
}

/// Reads a status line, headers and a body framed by `Content-Length`,
/// chunks or neither (then up to the end of the connection).
async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(conn: &mut R) -> std::io::Result<Reply> {
    let eof = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed");
    let mut line = String::new();
    if conn.read_line(&mut line).await? == 0 {
        return Err(eof());
    }
    let code = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line: {line:?}")))?;
    let mut headers = String::new();
    loop {
        let mut l = String::new();
        if conn.read_line(&mut l).await? == 0 {
            return Err(eof());
        }
        if l.trim().is_empty() {
            break;
        }
        let (name, value) = l.split_once(':').unwrap_or((&l, ""));
        headers.push_str(&format!("{}:{}\n", name.to_ascii_lowercase(), value.trim()));
    }
    let mut reply = Reply {
        code,
        headers,
        body: Vec::new(),
    };
    if let Some(n) = reply.header("content-length") {
        let n: usize = n.parse().map_err(std::io::Error::other)?;
        reply.body.resize(n, 0);
        conn.read_exact(&mut reply.body).await?;
    } else if reply.header("transfer-encoding") == Some("chunked") {
        loop {
            let mut size = String::new();
            conn.read_line(&mut size).await?;
            let n = usize::from_str_radix(size.trim(), 16).map_err(std::io::Error::other)?;
            let mut chunk = vec![0; n + 2];
            conn.read_exact(&mut chunk).await?;
            reply.body.extend_from_slice(&chunk[..n]);
            if n == 0 {
                break;
            }
        }
    } else if code != 204 && code != 304 {
        conn.read_to_end(&mut reply.body).await?;
    }
    Ok(reply)
}

/// A token for `user` in `groups`.
fn token(server: &TestServer, user: &str, groups: &[&str]) -> Arc<String> {
    let mut args = vec!["token", "create", "--user", user];
    for g in groups {
        args.extend(["--group", g]);
    }
    Arc::new(server.wkube(&args).success().trim().to_string())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs stock kubectl on a blocking thread; its output and how long it
/// took.
async fn kubectl(k: &Arc<Kubectl>, args: &[&str]) -> (common::Output, Duration) {
    let (k, args) = (
        k.clone(),
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
    );
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = k.run(&args);
        (out, started.elapsed())
    })
    .await
    .expect("kubectl thread")
}

/// Counts of each outcome, for the report and the assertions.
fn tally<'a>(
    codes: impl IntoIterator<Item = &'a String>,
) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for c in codes {
        *counts.entry(c.clone()).or_insert(0usize) += 1;
    }
    counts
}

fn outcome(r: &std::io::Result<Reply>) -> String {
    match r {
        Ok(r) => r.code.to_string(),
        Err(e) => format!("error: {e}"),
    }
}

/// The server's resident memory, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

// --- 1. connections ---------------------------------------------------------

/// `--max-api-connections` counts connections, whoever holds them: when
/// every slot is taken, new connections (the admin's too) are not refused
/// but wait, TCP-connected, in the kernel's backlog until a slot frees,
/// and are then served in turn.
#[test]
fn connections_past_the_limit_wait_for_a_slot_and_are_served_when_one_frees() {
    const SLOTS: usize = 8;
    const EXTRA: usize = 6;
    const HOLD: Duration = Duration::from_secs(2);
    let server = TestServer::builder()
        .arg(format!("--max-api-connections={SLOTS}"))
        .start();
    let api = Api::of(&server);
    let user = token(&server, "idle", &[]);
    let k = Arc::new(server.kubectl());
    runtime().block_on(async {
        // Every slot taken: half by connections that sent one request and
        // idle, half by connections that finished TLS and sent nothing.
        let mut held = Vec::new();
        for i in 0..SLOTS {
            let mut c = api.connect().await.expect("a slot is free");
            if i % 2 == 0 {
                let r = get(&mut c, "/version", &user).await.expect("reply");
                assert_eq!(r.code, 200);
            }
            held.push(c);
        }
        let waiting: Vec<_> = (0..EXTRA)
            .map(|_| {
                let (api, user) = (api.clone(), user.clone());
                tokio::spawn(async move {
                    let started = Instant::now();
                    let tcp = api.tcp().await;
                    let connected = started.elapsed();
                    let reply = async {
                        let mut c = api.handshake(tcp?).await?;
                        get(&mut c, "/version", &user).await
                    };
                    let reply = tokio::time::timeout(Duration::from_secs(20), reply).await;
                    (connected, reply, started.elapsed())
                })
            })
            .collect();
        let admin = tokio::spawn({
            let k = k.clone();
            async move { kubectl(&k, &["get", "namespaces", "--request-timeout=20s"]).await }
        });
        tokio::time::sleep(HOLD).await;
        assert!(
            waiting.iter().all(|w| !w.is_finished()) && !admin.is_finished(),
            "a connection past the limit was served (or refused) while every slot was held"
        );
        // The idle connections close: their slots go to those waiting.
        drop(held);
        let mut codes = Vec::new();
        let mut waited = Vec::new();
        for w in waiting {
            let (connected, reply, took) = w.await.expect("client task");
            assert!(
                connected < Duration::from_secs(1),
                "TCP connect {connected:?}"
            );
            codes.push(match reply {
                Ok(r) => outcome(&r),
                Err(_) => "timed out".into(),
            });
            waited.push(took);
        }
        let (out, admin_took) = admin.await.expect("kubectl task");
        let counts = tally(&codes);
        eprintln!(
            "{SLOTS} slots held, {EXTRA} more clients: {counts:?}, served after {:?}..{:?}; \
             kubectl as admin answered after {admin_took:?}",
            waited.iter().min().unwrap(),
            waited.iter().max().unwrap()
        );
        assert_eq!(counts.get("200"), Some(&EXTRA), "{counts:?}");
        assert!(out.status.success(), "kubectl: {}", out.stderr);
        assert!(
            waited
                .iter()
                .all(|w| *w >= HOLD && *w < HOLD + Duration::from_secs(5)),
            "{waited:?}"
        );
        assert!(
            admin_took >= HOLD && admin_took < HOLD + Duration::from_secs(10),
            "{admin_took:?}"
        );
    });
}

// --- 2. requests in flight per user, and priority levels -------------------

/// A user floods the API: two slow uploads hold both its seats
/// (`--max-requests-inflight-per-user=2`) while 62 more of its clients
/// send requests back to back for three seconds. Past its seats (and its
/// queue, where requests wait), it gets 429 with `Retry-After: 1`.
/// Another user's requests, one after another meanwhile, are all served
/// with bounded latency, and so is kubectl.
#[test]
fn a_user_flooding_the_api_gets_429s_while_another_user_and_kubectl_are_served_promptly() {
    const FLOOD_CLIENTS: usize = 62;
    const FOR: Duration = Duration::from_secs(3);
    let server = TestServer::builder()
        .arg("--max-requests-inflight-per-user=2")
        .start();
    let api = Api::of(&server);
    let k = Arc::new(server.kubectl());
    for user in ["flood", "calm"] {
        k.ok(&[
            "create",
            "rolebinding",
            &format!("{user}-view"),
            "--clusterrole=view",
            &format!("--user={user}"),
        ]);
    }
    let (flood, calm) = (token(&server, "flood", &[]), token(&server, "calm", &[]));
    const PATH: &str = "/api/v1/namespaces/default/configmaps";
    let (flood_codes, retry_after, mut calm_took, kubectl_took) = runtime().block_on(async {
        let until = Instant::now() + FOR;
        // 8 KiB every 100 ms: a little longer than the flood.
        let uploads =
            [0, 1].map(|_| trickle(&api, &flood, 8 << 10, 32, Duration::from_millis(100), false).0);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let flooders: Vec<_> = (0..FLOOD_CLIENTS)
            .map(|_| {
                let (api, flood) = (api.clone(), flood.clone());
                tokio::spawn(async move {
                    let mut codes = Vec::new();
                    let mut retry_after = Vec::new();
                    let mut conn = api.connect().await.expect("connect");
                    // Bounded in count as well as in time.
                    for _ in 0..500 {
                        if Instant::now() > until {
                            break;
                        }
                        let r = get(&mut conn, PATH, &flood).await;
                        codes.push(outcome(&r));
                        match r {
                            Ok(r) if r.code == 429 => {
                                retry_after.push(r.header("retry-after").map(str::to_string))
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                    (codes, retry_after)
                })
            })
            .collect();
        let kubectl = tokio::spawn({
            let k = k.clone();
            async move { kubectl(&k, &["get", "configmaps"]).await }
        });
        let mut calm_took = Vec::new();
        let mut conn = api.connect().await.expect("connect");
        for _ in 0..200 {
            if Instant::now() > until {
                break;
            }
            let started = Instant::now();
            let r = get(&mut conn, PATH, &calm).await.expect("calm's reply");
            assert_eq!(r.code, 200, "calm was refused: {r:?}");
            calm_took.push(started.elapsed());
        }
        let mut codes = Vec::new();
        let mut retry_after = Vec::new();
        for f in flooders {
            let (c, r) = f.await.expect("flood task");
            codes.extend(c);
            retry_after.extend(r);
        }
        for u in uploads {
            u.abort();
        }
        let (out, kubectl_took) = kubectl.await.expect("kubectl task");
        assert!(out.status.success(), "kubectl: {}", out.stderr);
        (codes, retry_after, calm_took, kubectl_took)
    });
    let counts = tally(&flood_codes);
    calm_took.sort();
    let (p50, max) = (percentile(&calm_took, 50), *calm_took.last().unwrap());
    eprintln!(
        "flood (2 uploads + {FLOOD_CLIENTS} clients, {FOR:?}): {counts:?}; calm: {} requests \
         all 200, p50 {p50:?}, p99 {:?}, max {max:?}; kubectl {kubectl_took:?}",
        calm_took.len(),
        percentile(&calm_took, 99),
    );
    assert!(counts.get("429").is_some_and(|n| *n > 0), "{counts:?}");
    assert!(
        counts.keys().all(|c| c == "200" || c == "429"),
        "outcomes other than 200 and 429: {counts:?}"
    );
    assert!(
        retry_after.iter().all(|r| r.as_deref() == Some("1")),
        "a 429 without Retry-After: 1"
    );
    assert!(
        calm_took.len() >= 10,
        "calm got only {} answers",
        calm_took.len()
    );
    assert!(max < Duration::from_secs(1), "calm waited {max:?}");
    assert!(kubectl_took < Duration::from_secs(10), "{kubectl_took:?}");
}

/// Kubernetes' API Priority and Fairness, internally: answers name the
/// priority level and flow schema (exempt for `system:masters`, system for
/// nodes, workload for everybody else); a request past its seats waits in
/// its flow's queue and gets a seat when one frees, or 429 after the queue
/// wait (1 s); the workload level's seats (two of
/// `--max-requests-inflight=3`) taken do not hold up a node.
#[test]
fn requests_queue_per_flow_within_their_priority_level_and_answers_name_it() {
    use wkube::api::flowcontrol::PriorityLevel;
    let server = TestServer::builder()
        .arg("--max-requests-inflight=3")
        .arg("--max-requests-inflight-per-user=1")
        .start();
    let api = Api::of(&server);
    let k = server.kubectl();
    let [alice, bob, carol] = ["alice", "bob", "carol"].map(|u| token(&server, u, &[]));
    let node = token(&server, "system:node:n1", &["system:nodes"]);
    // Stock kubectl sees the headers too (`-v=8` prints them).
    let out = k.run(&["get", "namespaces", "-v=8"]);
    assert!(out.status.success(), "{}", out.stderr);
    let logged = out.stderr.to_ascii_lowercase();
    for (header, uid) in [
        ("prioritylevel", PriorityLevel::Exempt.uid()),
        ("flowschema", PriorityLevel::Exempt.flow_schema_uid()),
    ] {
        let line = format!("x-kubernetes-pf-{header}-uid: {uid}");
        assert!(logged.contains(&line), "kubectl -v=8 does not show {line}");
    }
    const PATH: &str = "/api/v1/namespaces";
    let slow = Duration::from_millis(100);
    runtime().block_on(async {
        for (who, level) in [
            (&alice, PriorityLevel::Workload),
            (&node, PriorityLevel::System),
        ] {
            let r = get(&mut api.connect().await.unwrap(), PATH, who)
                .await
                .unwrap();
            assert_eq!(
                r.header("x-kubernetes-pf-prioritylevel-uid"),
                Some(level.uid())
            );
            assert_eq!(
                r.header("x-kubernetes-pf-flowschema-uid"),
                Some(level.flow_schema_uid())
            );
        }
        // Alice's only seat held by an upload that ends after 400 ms: her
        // next request waits for it, then is answered (403: no RBAC).
        let (upload, _) = trickle(&api, &alice, 4 << 10, 4, slow, true);
        tokio::time::sleep(slow).await;
        let started = Instant::now();
        let r = get(&mut api.connect().await.unwrap(), PATH, &alice)
            .await
            .unwrap();
        let queued = started.elapsed();
        assert_eq!(r.code, 403, "{r:?}");
        assert!(queued >= Duration::from_millis(200), "{queued:?}");
        let _ = upload.await;
        // Held for longer than the wait: 429 after the wait, not before.
        let (long, _) = trickle(&api, &alice, 4 << 10, 40, slow, true);
        tokio::time::sleep(slow).await;
        let started = Instant::now();
        let r = get(&mut api.connect().await.unwrap(), PATH, &alice)
            .await
            .unwrap();
        let refused = started.elapsed();
        assert_eq!((r.code, r.header("retry-after")), (429, Some("1")));
        assert!(
            refused >= Duration::from_millis(900) && refused < Duration::from_secs(3),
            "{refused:?}"
        );
        // Alice and Bob hold the workload level's two seats: Carol waits
        // for the first to free (Bob's, at 400 ms), a node does not wait.
        let (short, _) = trickle(&api, &bob, 4 << 10, 4, slow, true);
        tokio::time::sleep(slow).await;
        let started = Instant::now();
        let r = get(&mut api.connect().await.unwrap(), PATH, &node)
            .await
            .unwrap();
        let node_took = started.elapsed();
        assert_ne!(r.code, 429);
        let r = get(&mut api.connect().await.unwrap(), PATH, &carol)
            .await
            .unwrap();
        let carol_took = started.elapsed();
        assert_eq!(r.code, 403, "{r:?}");
        assert!(carol_took >= Duration::from_millis(200), "{carol_took:?}");
        assert!(node_took < Duration::from_millis(200), "{node_took:?}");
        let _ = short.await;
        long.abort();
        eprintln!(
            "queued behind its own seat: served after {queued:?}, refused after {refused:?}; \
             workload level full: node served in {node_took:?}, carol after {carol_took:?}"
        );
    });
}

// --- 3. watchers ------------------------------------------------------------

/// Opens a watch and returns its status code (or what went wrong) and the
/// stream, kept open by the caller.
async fn open_watch(api: Api, token: Arc<String>) -> (String, Option<Conn>) {
    // How far a connection got, for the report of one that hangs.
    let stage = std::sync::Mutex::new("connect");
    let step = async {
        let tcp = api.tcp().await?;
        *stage.lock().unwrap() = "handshake";
        let mut conn = api.handshake(tcp).await?;
        *stage.lock().unwrap() = "response";
        let req = head(
            "GET",
            "/api/v1/namespaces/default/configmaps?watch=1",
            &token,
            "",
        );
        conn.get_mut().write_all(req.as_bytes()).await?;
        let mut line = String::new();
        conn.read_line(&mut line).await?;
        Ok::<_, std::io::Error>((line, conn))
    };
    match tokio::time::timeout(Duration::from_secs(60), step).await {
        Ok(Ok((line, conn))) => {
            let code = line.split_whitespace().nth(1).unwrap_or("EOF").to_string();
            (code, Some(conn))
        }
        Ok(Err(e)) => (format!("error: {e}"), None),
        Err(_) => (format!("timed out in {}", stage.lock().unwrap()), None),
    }
}

#[test]
fn a_user_past_its_watch_allowance_gets_429s_not_resets_and_kubectl_still_works() {
    let server = TestServer::start();
    let k = server.kubectl();
    let token = token(&server, "watcher", &[]);
    k.ok(&[
        "create",
        "rolebinding",
        "watcher-view",
        "--clusterrole=view",
        "--user=watcher",
        "-n",
        "default",
    ]);
    let api = Api::of(&server);
    let results = runtime().block_on(async {
        // A task per connection, as separate clients would be.
        let opens: Vec<_> = (0..WATCHES)
            .map(|_| tokio::spawn(open_watch(api.clone(), token.clone())))
            .collect();
        let mut results = Vec::new();
        for open in opens {
            results.push(open.await.expect("watch task"));
        }
        results
    });
    // Every watch open: the server still answers kubectl.
    let started = Instant::now();
    k.ok(&["get", "configmaps", "-n", "default"]);
    let kubectl_took = started.elapsed();
    let counts = tally(results.iter().map(|(code, _)| code));
    eprintln!("{WATCHES} watches: {counts:?}; kubectl meanwhile {kubectl_took:?}");
    assert_eq!(counts.get("200"), Some(&PER_USER), "{counts:?}");
    assert_eq!(counts.get("429"), Some(&(WATCHES - PER_USER)), "{counts:?}");
    assert_eq!(counts.len(), 2, "refusals other than 429: {counts:?}");
    assert!(kubectl_took < Duration::from_secs(10), "{kubectl_took:?}");
    drop(results);
}

// --- 4. body sizes ------------------------------------------------------------

/// Sends a ConfigMap body of `chunks` × `chunk` bytes, one chunk every
/// `every`, chunked (`declared` false) or with its full `Content-Length`
/// declared up front, and never ends it if it is cut short by the reply.
/// Returns the reply (or what went wrong) with the time it took, and the
/// writer, which stops at the reply.
fn trickle(
    api: &Api,
    token: &Arc<String>,
    chunk: usize,
    chunks: usize,
    every: Duration,
    declared: bool,
) -> (
    tokio::task::JoinHandle<(String, Duration)>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (api, token, counter) = (api.clone(), token.clone(), sent.clone());
    let task = tokio::spawn(async move {
        let started = Instant::now();
        let conn = match api.connect().await {
            Ok(c) => c,
            Err(e) => return (format!("error: {e}"), started.elapsed()),
        };
        let (rd, mut wr) = tokio::io::split(conn);
        let mut rd = BufReader::new(rd);
        // A JSON object that stays valid until the last chunk.
        let total = chunk * chunks;
        let framing = if declared {
            format!("Content-Length: {total}\r\n")
        } else {
            "Transfer-Encoding: chunked\r\n".to_string()
        };
        let req = head(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            &token,
            &format!("Content-Type: application/json\r\n{framing}"),
        );
        let writer = async {
            wr.write_all(req.as_bytes()).await?;
            for i in 0..chunks {
                let mut data = vec![b' '; chunk];
                if i == 0 {
                    data[..1].copy_from_slice(b"{");
                }
                if i + 1 == chunks {
                    data[chunk - 1] = b'}';
                }
                if declared {
                    wr.write_all(&data).await?;
                } else {
                    wr.write_all(format!("{chunk:x}\r\n").as_bytes()).await?;
                    wr.write_all(&data).await?;
                    wr.write_all(b"\r\n").await?;
                }
                counter.fetch_add(chunk, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(every).await;
            }
            if !declared {
                wr.write_all(b"0\r\n\r\n").await?;
            }
            // Then wait for the reply.
            std::future::pending::<()>().await;
            Ok::<_, std::io::Error>(())
        };
        let reader = read_reply(&mut rd);
        let outcome = tokio::time::timeout(Duration::from_secs(20), async {
            tokio::select! {
                r = reader => outcome(&r),
                w = writer => match w {
                    Err(e) => format!("write error: {e}"),
                    Ok(()) => unreachable!(),
                },
            }
        })
        .await
        .unwrap_or_else(|_| "timed out".into());
        (outcome, started.elapsed())
    });
    (task, sent)
}

/// `--max-api-body-bytes=65536`: a body past it gets 413 however it comes
/// — with its length declared, chunked, trickled slowly, or from kubectl
/// over HTTP/2 — and the server then goes on as before.
#[test]
fn bodies_past_the_limit_get_413_however_they_are_sent_and_the_server_goes_on() {
    const LIMIT: usize = 64 << 10;
    let server = TestServer::builder()
        .arg(format!("--max-api-body-bytes={LIMIT}"))
        .start();
    let api = Api::of(&server);
    let admin = token(&server, "root", &["system:masters"]);
    let k = Arc::new(server.kubectl());
    let big = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"},
        "data": {"k": "x".repeat(1 << 20)}})
    .to_string();
    let manifest = server.scratch().join("big.json");
    std::fs::write(&manifest, &big).unwrap();
    let results = runtime().block_on(async {
        let mut results = Vec::new();
        let fast = Duration::ZERO;
        let slow = Duration::from_millis(100);
        // (what, chunk, chunks, every, Content-Length declared)
        for (what, chunk, chunks, every, declared) in [
            ("1 MiB, Content-Length", 64 << 10, 16, fast, true),
            ("1 MiB, chunked", 64 << 10, 16, fast, false),
            (
                "trickle of 8 KiB/100 ms, chunked",
                8 << 10,
                128,
                slow,
                false,
            ),
            (
                "trickle of 8 KiB/100 ms, 1 MiB declared",
                8 << 10,
                128,
                slow,
                true,
            ),
        ] {
            let (task, sent) = trickle(&api, &admin, chunk, chunks, every, declared);
            let (code, took) = task.await.expect("upload task");
            let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
            results.push((what, code, took, sent));
        }
        let (out, took) = kubectl(&k, &["create", "-f", manifest.to_str().unwrap()]).await;
        results.push((
            "1 MiB from kubectl (HTTP/2)",
            if !out.status.success() && out.stderr.contains("too large") {
                "413".into()
            } else {
                format!("kubectl: {} {}", out.status, out.stderr)
            },
            took,
            big.len(),
        ));
        results
    });
    for (what, code, took, sent) in &results {
        eprintln!("{what}: {code} after {took:?}, {} KiB sent", sent >> 10);
    }
    for (what, code, took, _) in &results {
        assert_eq!(code, "413", "{what}");
        // The refusal goes out once the limit is passed (the rest of a
        // body still coming is drained afterwards, in the background).
        assert!(*took < Duration::from_secs(3), "{what}: {took:?}");
    }
    // Whole bodies are answered at once.
    for (_, _, took, _) in &results[..2] {
        assert!(*took < Duration::from_secs(2), "{took:?}");
    }
    // And the server goes on.
    k.ok(&["create", "configmap", "small", "--from-literal=k=v"]);
    assert!(
        k.ok(&["get", "configmap", "small", "-o", "name"])
            .contains("small")
    );
}

// --- 5. patch work ------------------------------------------------------------

/// JSON patches that ask for too much work — more operations than
/// Kubernetes allows, copies that double a map again and again, copies of
/// a large value to many keys — are refused (4xx) quickly, eight at a
/// time, and the server's resident memory stays bounded meanwhile.
#[test]
fn patches_that_would_blow_memory_are_refused_quickly_and_rss_stays_bounded() {
    const ROUNDS: usize = 3;
    const CLIENTS: usize = 8;
    let server = TestServer::start();
    let pid = server.pid().expect("server pid");
    let api = Api::of(&server);
    let admin = token(&server, "root", &["system:masters"]);
    let k = server.kubectl();
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"},
        "data": {"a": "x".repeat(512 << 10)}});
    k.ok_with_stdin(&["create", "-f", "-"], &cm.to_string());
    let too_many: Vec<_> = (0..=10_000)
        .map(|_| json!({"op": "test", "path": "/metadata/name", "value": "big"}))
        .collect();
    let doubling: Vec<_> = (0..40)
        .map(|_| json!({"op": "copy", "from": "/data", "path": "/data/b"}))
        .collect();
    let fan_out: Vec<_> = (0..200)
        .map(|i| json!({"op": "copy", "from": "/data/a", "path": format!("/data/k{i}")}))
        .collect();
    let patches: Vec<(&str, Vec<u8>)> = vec![
        ("10,001 operations", serde_json::to_vec(&too_many).unwrap()),
        (
            "40 self-doubling copies",
            serde_json::to_vec(&doubling).unwrap(),
        ),
        (
            "200 copies of 512 KiB",
            serde_json::to_vec(&fan_out).unwrap(),
        ),
    ];
    let patches = Arc::new(patches);
    let baseline = rss_kib(pid);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    let results = runtime().block_on(async {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (api, admin, patches) = (api.clone(), admin.clone(), patches.clone());
                tokio::spawn(async move {
                    let mut results = Vec::new();
                    let mut conn = api.connect().await.expect("connect");
                    for _ in 0..ROUNDS {
                        for (what, patch) in patches.iter() {
                            let started = Instant::now();
                            let r = exchange(
                                &mut conn,
                                "PATCH",
                                "/api/v1/namespaces/default/configmaps/big",
                                &admin,
                                "application/json-patch+json",
                                patch,
                            )
                            .await;
                            results.push((*what, outcome(&r), started.elapsed()));
                            if r.is_err() {
                                conn = api.connect().await.expect("reconnect");
                            }
                        }
                    }
                    results
                })
            })
            .collect();
        let mut results = Vec::new();
        for c in clients {
            results.extend(c.await.expect("client task"));
        }
        results
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    for (what, _) in patches.iter() {
        let mine: Vec<_> = results.iter().filter(|r| r.0 == *what).collect();
        let mut took: Vec<_> = mine.iter().map(|r| r.2).collect();
        took.sort();
        eprintln!(
            "{what}: {:?}, p50 {:?}, max {:?}",
            tally(mine.iter().map(|r| &r.1)),
            percentile(&took, 50),
            took.last().unwrap()
        );
    }
    eprintln!(
        "server RSS: {} MiB before, peak {} MiB during {} patches",
        baseline >> 10,
        peak >> 10,
        results.len()
    );
    for (what, code, took) in &results {
        let code: u16 = code.parse().unwrap_or_else(|_| panic!("{what}: {code}"));
        assert!((400..500).contains(&code), "{what}: {code}");
        assert!(*took < Duration::from_secs(5), "{what}: {took:?}");
    }
    assert!(peak < 400 << 10, "peak RSS {} MiB", peak >> 10);
    // The object is as it was, and the server answers.
    let data = k.ok(&["get", "configmap", "big", "-o", "jsonpath={.data}"]);
    assert_eq!(data.len(), (512 << 10) + r#"{"a":""}"#.len());
}

// --- 6. instances -------------------------------------------------------------

/// A pod's concurrent instances are bounded by its `limits.memory` (each
/// takes what one instance of it starts with): a pod hammered with more
/// concurrent requests than fit gets 503 for the rest at once, while
/// another pod on the same node keeps answering, and so does kubectl.
#[test]
fn a_pod_past_its_instances_answers_503_while_another_pod_on_the_node_keeps_answering() {
    const HAMMER: usize = 40;
    let server = common::node_server_with_examples();
    let k = Arc::new(server.kubectl());
    PodBuilder::new("busy")
        .on_node(common::TEST_NODE)
        .container("echo", "echo:v1")
        .last("resources", json!({"limits": {"memory": "4Mi"}}))
        .create(&k);
    PodBuilder::new("calm")
        .on_node(common::TEST_NODE)
        .container("hello", "hello:v1")
        .create(&k);
    k.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/busy",
        "pod/calm",
        "--timeout=60s",
    ]);
    let api = Api::of(&server);
    let admin = token(&server, "root", &["system:masters"]);
    let proxy =
        |pod: &str, path: &str| format!("/api/v1/namespaces/default/pods/{pod}/proxy/{path}");
    let (busy, calm_took, kubectl_took) = runtime().block_on(async {
        let hammer: Vec<_> = (0..HAMMER)
            .map(|_| {
                let (api, admin, path) = (api.clone(), admin.clone(), proxy("busy", "sleep/1500"));
                tokio::spawn(async move {
                    let started = Instant::now();
                    let r = async { get(&mut api.connect().await?, &path, &admin).await };
                    let r = tokio::time::timeout(Duration::from_secs(20), r).await;
                    let code = r.map_or("timed out".into(), |r| outcome(&r));
                    (code, started.elapsed())
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let kubectl = tokio::spawn({
            let k = k.clone();
            async move { kubectl(&k, &["get", "pods"]).await }
        });
        let mut calm_took = Vec::new();
        let mut conn = api.connect().await.expect("connect");
        for _ in 0..10 {
            let started = Instant::now();
            let r = get(&mut conn, &proxy("calm", ""), &admin)
                .await
                .expect("calm");
            assert_eq!(r.code, 200, "{r:?}");
            calm_took.push(started.elapsed());
        }
        let mut busy = Vec::new();
        for h in hammer {
            busy.push(h.await.expect("hammer task"));
        }
        let (out, kubectl_took) = kubectl.await.expect("kubectl task");
        assert!(out.status.success(), "kubectl: {}", out.stderr);
        (busy, calm_took, kubectl_took)
    });
    let counts = tally(busy.iter().map(|(c, _)| c));
    let refused: Vec<_> = busy
        .iter()
        .filter(|(c, _)| c == "503")
        .map(|(_, t)| *t)
        .collect();
    let calm_max = calm_took.iter().max().unwrap();
    eprintln!(
        "{HAMMER} concurrent requests to a pod of 4 MiB: {counts:?}, 503s within {:?}; \
         the other pod answered 10 of 10, slowest {calm_max:?}; kubectl {kubectl_took:?}",
        refused.iter().max()
    );
    let served = counts.get("200").copied().unwrap_or(0);
    assert!((1..HAMMER / 2).contains(&served), "{counts:?}");
    assert_eq!(served + refused.len(), HAMMER, "{counts:?}");
    // Refused at once, not after waiting for an instance.
    assert!(
        refused.iter().all(|t| *t < Duration::from_millis(1500)),
        "{refused:?}"
    );
    assert!(*calm_max < Duration::from_secs(1), "{calm_took:?}");
    assert!(kubectl_took < Duration::from_secs(10), "{kubectl_took:?}");
}

// --- 7. idle connections ------------------------------------------------------

/// Connections that take every `--max-api-connections` slot and then send
/// nothing — some only TCP-connected, some through their TLS handshake —
/// are closed by the server at its deadlines (10 s for the TLS handshake,
/// then 10 s for the first request), so idle clients, however many, cannot
/// lock everyone out: kubectl is served once they are gone.
#[test]
fn idle_connections_holding_every_slot_are_closed_at_their_deadlines_and_kubectl_is_served() {
    const SLOTS: usize = 4;
    /// The TLS handshake's deadline, and the first request's after it.
    const DEADLINE: Duration = Duration::from_secs(10);
    let server = TestServer::builder()
        .arg(format!("--max-api-connections={SLOTS}"))
        .start();
    let api = Api::of(&server);
    let k = Arc::new(server.kubectl());
    runtime().block_on(async {
        // Half TCP only, half TLS then silence; each reads until the
        // server closes it.
        let mut idle = Vec::new();
        for i in 0..SLOTS {
            let tcp = api.tcp().await.expect("connect");
            let opened = Instant::now();
            let task = if i % 2 == 0 {
                tokio::spawn(async move {
                    let mut tcp = tcp;
                    let mut buf = [0u8; 64];
                    let r = tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut buf)).await;
                    ("TCP only", r.is_ok(), opened.elapsed())
                })
            } else {
                let mut tls = api.handshake(tcp).await.expect("a slot is free");
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let r =
                        tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut buf))
                            .await;
                    ("TLS, no request", r.is_ok(), opened.elapsed())
                })
            };
            idle.push(task);
        }
        // Every slot is held: one more client is not served meanwhile.
        let late = tokio::time::timeout(Duration::from_secs(2), api.connect()).await;
        assert!(late.is_err(), "a client past the limit was served");
        let mut closed = Vec::new();
        for t in idle {
            closed.push(t.await.expect("idle task"));
        }
        let (out, took) = kubectl(&k, &["get", "namespaces", "--request-timeout=10s"]).await;
        eprintln!(
            "{SLOTS} idle connections closed by the server: {closed:?}; kubectl then took {took:?}"
        );
        for (what, by_server, after) in &closed {
            assert!(by_server, "{what}: still open after {after:?}");
            assert!(
                *after >= DEADLINE - Duration::from_secs(1)
                    && *after < DEADLINE + Duration::from_secs(3),
                "{what}: closed after {after:?}"
            );
        }
        assert!(out.status.success(), "kubectl: {}", out.stderr);
        assert!(took < Duration::from_secs(5), "kubectl took {took:?}");
    });
}

/// A pod refusing requests for want of instances (its `limits.memory`
/// holds no more) says when to try again: every 503 through the API's pod
/// proxy carries `Retry-After: 1`, as a 429 does.
#[test]
fn a_pod_out_of_instances_answers_503_with_retry_after() {
    const CLIENTS: usize = 16;
    let server = common::node_server_with_examples();
    let k = Arc::new(server.kubectl());
    PodBuilder::new("busy")
        .on_node(common::TEST_NODE)
        .container("echo", "echo:v1")
        .last("resources", json!({"limits": {"memory": "4Mi"}}))
        .create(&k);
    k.ok(&["wait", "--for=condition=Ready", "pod/busy", "--timeout=60s"]);
    let api = Api::of(&server);
    let admin = token(&server, "root", &["system:masters"]);
    let path = "/api/v1/namespaces/default/pods/busy/proxy/sleep/1000";
    let replies = runtime().block_on(async {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (api, admin) = (api.clone(), admin.clone());
                tokio::spawn(async move {
                    let r = async { get(&mut api.connect().await?, path, &admin).await };
                    match tokio::time::timeout(Duration::from_secs(20), r).await {
                        Ok(Ok(r)) => (
                            r.code.to_string(),
                            r.header("retry-after").map(str::to_string),
                        ),
                        Ok(Err(e)) => (format!("error: {e}"), None),
                        Err(_) => ("timed out".to_string(), None),
                    }
                })
            })
            .collect();
        let mut replies = Vec::new();
        for c in clients {
            replies.push(c.await.expect("client task"));
        }
        replies
    });
    let counts = tally(replies.iter().map(|(c, _)| c));
    eprintln!("{CLIENTS} concurrent requests to a pod of 4 MiB: {counts:?}");
    assert!(counts.contains_key("503"), "{counts:?}");
    for (code, retry) in &replies {
        assert!(code == "200" || code == "503", "{counts:?}");
        if code == "503" {
            assert_eq!(retry.as_deref(), Some("1"), "{replies:?}");
        }
    }
}
