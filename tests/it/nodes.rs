//! Nodes and what the API server does for them, driven with stock kubectl:
//! pod CIDRs handed out on registration, logs and proxying passed on to a
//! node's agent, and exec/attach/port-forward refused with words a user
//! understands. The agent is a stand-in running in this test process: a
//! real HTTPS server with a certificate from the cluster CA that asks for
//! a client certificate, as the kubelet's endpoint does.

use crate::common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

use bytes::Bytes;
use common::builders::PodBuilder;
use common::{Kubectl, TestServer};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use serde_json::{Value, json};

/// Longest a streamed log line may take to arrive.
const LINE: Duration = Duration::from_secs(15);

/// One server for this file, with a cluster range small enough to reason
/// about (32 blocks of /18).
fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        TestServer::builder()
            .arg("--cluster-cidr=127.128.0.0/13")
            .arg("--node-cidr-mask-size=18")
            .start_for_process()
    })
}

// --- fixtures ------------------------------------------------------------

/// A Node as a kubelet registers it.
struct NodeBuilder {
    obj: Value,
}

impl NodeBuilder {
    fn new(name: &str) -> Self {
        NodeBuilder {
            obj: json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}),
        }
    }

    /// `status.addresses` InternalIP + Hostname, and the agent's port.
    fn agent(mut self, ip: &str, port: u16) -> Self {
        let name = self.obj["metadata"]["name"].clone();
        self.obj["status"] = json!({
            "addresses": [{"type": "InternalIP", "address": ip},
                          {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        });
        self
    }

    fn pod_cidr(mut self, cidr: &str) -> Self {
        self.obj["spec"]["podCIDR"] = json!(cidr);
        self
    }

    fn json(&self) -> String {
        self.obj.to_string()
    }
}

fn create(k: &Kubectl, ns: Option<&str>, manifest: &str) {
    let mut args = vec!["create", "--validate=false", "-f", "-"];
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    k.ok_with_stdin(&args, manifest);
}

fn namespace(k: &Kubectl, name: &str) -> String {
    let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    create(k, None, &obj.to_string());
    name.to_owned()
}

fn pod_cidr_of(k: &Kubectl, node: &str) -> (String, Value) {
    let out = k.ok(&["get", "node", node, "-o", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    (
        v["spec"]["podCIDR"].as_str().unwrap_or_default().to_owned(),
        v["spec"]["podCIDRs"].clone(),
    )
}

/// The allocation record of a block, as `wkube kv` shows it ("" when
/// there is none).
fn allocation_record(cidr: &str) -> String {
    let key = format!("/registry/allocations/podcidrs/{cidr}");
    let out = server().wkube_kv(&["get", &key]).success();
    out.lines().nth(1).unwrap_or_default().to_owned()
}

// --- pod CIDRs ---------------------------------------------------------------

#[test]
fn a_registered_node_gets_a_pod_cidr_from_the_cluster_range() {
    let k = server().kubectl();
    create(&k, None, &NodeBuilder::new("cidr-a").json());
    let (cidr, cidrs) = pod_cidr_of(&k, "cidr-a");
    assert!(cidr.starts_with("127.1"), "{cidr}");
    assert!(cidr.ends_with("/18"), "{cidr}");
    assert_eq!(cidrs, json!([cidr]));
    assert_eq!(allocation_record(&cidr), "cidr-a");
}

#[test]
fn two_nodes_get_different_pod_cidrs_and_a_deleted_ones_is_freed() {
    let k = server().kubectl();
    create(&k, None, &NodeBuilder::new("cidr-b1").json());
    create(&k, None, &NodeBuilder::new("cidr-b2").json());
    let (b1, _) = pod_cidr_of(&k, "cidr-b1");
    let (b2, _) = pod_cidr_of(&k, "cidr-b2");
    assert_ne!(b1, b2);

    k.ok(&["delete", "node", "cidr-b1"]);
    assert_eq!(allocation_record(&b1), "");
    // Free again: a new node may ask for it by name.
    create(&k, None, &NodeBuilder::new("cidr-b3").pod_cidr(&b1).json());
    assert_eq!(pod_cidr_of(&k, "cidr-b3").0, b1);
}

#[test]
fn a_taken_or_foreign_pod_cidr_is_refused_naming_the_field() {
    let k = server().kubectl();
    create(&k, None, &NodeBuilder::new("cidr-c1").json());
    let (taken, _) = pod_cidr_of(&k, "cidr-c1");
    let out = k.run_with_stdin(
        &["create", "--validate=false", "-f", "-"],
        &NodeBuilder::new("cidr-c2").pod_cidr(&taken).json(),
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "The Node \"cidr-c2\" is invalid: spec.podCIDR: Invalid value: \"{taken}\": failed to allocate pod CIDR {taken}: it is already allocated to node \"cidr-c1\""
        )),
        "{}",
        out.stderr
    );
    let err = k
        .run_with_stdin(
            &["create", "--validate=false", "-f", "-"],
            &NodeBuilder::new("cidr-c3").pod_cidr("10.0.0.0/18").json(),
        )
        .stderr;
    assert!(
        err.contains("spec.podCIDR: Invalid value: \"10.0.0.0/18\": must be a /18 block of the cluster range 127.128.0.0/13"),
        "{err}"
    );
}

#[test]
fn changing_a_pod_cidr_is_forbidden_as_in_kubernetes() {
    let k = server().kubectl();
    create(&k, None, &NodeBuilder::new("cidr-d").json());
    let (cidr, _) = pod_cidr_of(&k, "cidr-d");
    let out = k.run(&[
        "patch",
        "node",
        "cidr-d",
        "--type=merge",
        "-p",
        r#"{"spec":{"podCIDR":"127.135.192.0/18","podCIDRs":["127.135.192.0/18"]}}"#,
    ]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        out.stderr.contains(
            "The Node \"cidr-d\" is invalid: spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to valid"
        ),
        "{}",
        out.stderr
    );
    // Other changes go through and keep the CIDR.
    k.ok(&["label", "node", "cidr-d", "zone=a"]);
    assert_eq!(pod_cidr_of(&k, "cidr-d").0, cidr);
}

// --- exec, attach, port-forward, logs without a node ---------------------

/// A pod with `status.phase` Running, so kubectl gets as far as asking.
fn running_pod(k: &Kubectl, ns: &str, name: &str) {
    create(
        k,
        Some(ns),
        &PodBuilder::new(name)
            .container("app", "hello:v1")
            .port(8080)
            .json(),
    );
    let out = k.ok(&["-n", ns, "get", "pod", name, "-o", "json"]);
    let mut pod: Value = serde_json::from_str(&out).unwrap();
    pod["status"]["phase"] = json!("Running");
    k.ok_with_stdin(
        &[
            "-n",
            ns,
            "replace",
            "--subresource=status",
            "--validate=false",
            "-f",
            "-",
        ],
        &pod.to_string(),
    );
}

#[test]
fn exec_and_cp_say_a_wasm_pod_has_no_shell() {
    let k = server().kubectl();
    let ns = namespace(&k, "wasm-exec");
    running_pod(&k, &ns, "web");
    let expected = "Error from server (BadRequest): exec is not available for Wasm pods: pod \"web\" runs WebAssembly components, which have no shell or process to attach to";
    let err = k.fails(&["-n", &ns, "exec", "web", "--", "ls"]);
    assert!(err.contains(expected), "{err}");
    let err = k.fails(&["-n", &ns, "cp", "web:/etc/hosts", "/tmp/wkube-cp-test"]);
    assert!(err.contains(expected), "{err}");
}

#[test]
fn attach_and_port_forward_say_why_not_and_what_to_use() {
    let k = server().kubectl();
    let ns = namespace(&k, "wasm-attach");
    running_pod(&k, &ns, "web");
    let err = k.fails(&["-n", &ns, "attach", "web"]);
    assert!(
        err.contains("Error from server (BadRequest): attach is not available for Wasm pods: pod \"web\" runs WebAssembly components"),
        "{err}"
    );
    let err = k.fails(&["-n", &ns, "port-forward", "pod/web", "0:8080"]);
    assert!(
        err.contains("error: error upgrading connection: port-forward is not available for Wasm pods: pod \"web\" runs WebAssembly components"),
        "{err}"
    );
    assert!(
        err.contains(&format!("/api/v1/namespaces/{ns}/pods/web:PORT/proxy/")),
        "{err}"
    );
}

#[test]
fn exec_needs_create_on_pods_exec() {
    let admin = server().kubectl();
    let ns = namespace(&admin, "wasm-rbac");
    running_pod(&admin, &ns, "web");
    create(
        &admin,
        Some(&ns),
        &json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "viewer"},
            "subjects": [{"kind": "User", "name": "viewer", "apiGroup": "rbac.authorization.k8s.io"}],
            "roleRef": {"kind": "ClusterRole", "name": "view", "apiGroup": "rbac.authorization.k8s.io"},
        })
        .to_string(),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("viewer.kubeconfig");
    let doc = server()
        .wkube(&["kubeconfig", "--user", "viewer", "--ttl", "1h"])
        .success();
    std::fs::write(&path, doc).unwrap();
    let viewer = server().kubectl_with(&path);
    let err = viewer.fails(&["-n", &ns, "exec", "web", "--", "ls"]);
    assert!(err.contains("Error from server (Forbidden)"), "{err}");
    assert!(err.contains("resource \"pods/exec\""), "{err}");
    let out = viewer.run(&["-n", &ns, "auth", "can-i", "create", "pods/exec"]);
    assert_eq!(out.stdout.trim(), "no", "{out:?}");
    // The admin gets as far as the answer for Wasm pods.
    let err = admin.fails(&["-n", &ns, "exec", "web", "--", "ls"]);
    assert!(err.contains("exec is not available for Wasm pods"), "{err}");
}

#[test]
fn logs_of_a_pod_on_no_node_say_so() {
    let k = server().kubectl();
    let ns = namespace(&k, "unscheduled");
    create(
        &k,
        Some(&ns),
        &PodBuilder::new("p").container("app", "hello:v1").json(),
    );
    let err = k.fails(&["-n", &ns, "logs", "p"]);
    assert!(
        err.contains("Error from server (BadRequest): pod p does not have a host assigned"),
        "{err}"
    );
}

// --- an agent stand-in ---------------------------------------------------------

/// A request the agent received.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    /// Path and query, as received.
    uri: String,
    authorization: Option<String>,
    body: String,
    /// The common name of the client certificate.
    client: String,
}

/// An HTTPS agent in this process: serves `/containerLogs/...`,
/// `/proxy/...` and `/healthz` as the kubelet contract says, records every
/// request, and reports when a followed log stream is abandoned.
struct FakeAgent {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    follow_ended: Mutex<mpsc::Receiver<()>>,
    _runtime: tokio::runtime::Runtime,
}

impl FakeAgent {
    /// An agent speaking HTTPS with a certificate from `server`'s CA (and
    /// asking for one), or plain HTTP when `tls` is false (`--tls off`).
    fn start(server: &TestServer, tls: bool) -> FakeAgent {
        let pki = wkube::pki::ClusterPki::open(&server.data_dir).expect("cluster CA");
        let cert = pki
            .issue(&wkube::pki::CertSpec {
                common_name: "fake-node".into(),
                organizations: vec!["system:nodes".into()],
                dns_names: Vec::new(),
                ips: vec!["127.0.0.1".parse().unwrap()],
                server: true,
                client: false,
                validity: Duration::from_secs(3600),
            })
            .expect("agent certificate");
        let tls_config = server_tls(&cert.cert_pem, &cert.key_pem, pki.ca_cert_pem());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (ended_tx, ended_rx) = mpsc::channel();
        let acceptor = tls
            .then_some(tls_config)
            .map(tokio_rustls::TlsAcceptor::from);
        let state = (seen.clone(), ended_tx);
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let (seen, ended) = state.clone();
                tokio::spawn(async move {
                    let http = hyper::server::conn::http1::Builder::new();
                    let Some(acceptor) = acceptor else {
                        let svc = hyper::service::service_fn(move |req| {
                            serve(req, String::new(), seen.clone(), ended.clone())
                        });
                        let io = hyper_util::rt::TokioIo::new(tcp);
                        let _ = http.serve_connection(io, svc).await;
                        return;
                    };
                    // A handshake without a certificate from the CA fails here.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let client = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| common_name(c.as_ref()))
                        .unwrap_or_default();
                    let svc = hyper::service::service_fn(move |req| {
                        serve(req, client.clone(), seen.clone(), ended.clone())
                    });
                    let io = hyper_util::rt::TokioIo::new(tls);
                    let _ = http.serve_connection(io, svc).await;
                });
            }
        });
        FakeAgent {
            port,
            seen,
            follow_ended: Mutex::new(ended_rx),
            _runtime: runtime,
        }
    }

    /// Requests received whose path starts with `prefix`.
    fn seen(&self, prefix: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.uri.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Waits for a followed log stream to be abandoned by its reader.
    #[track_caller]
    fn expect_follow_ended(&self, within: Duration) {
        self.follow_ended
            .lock()
            .unwrap()
            .recv_timeout(within)
            .expect("the agent's follow stream was not ended by the API server");
    }
}

fn common_name(der: &[u8]) -> String {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return String::new();
    };
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn server_tls(cert_pem: &str, key_pem: &str, ca_pem: &str) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    // Client certificates are required, as the kubelet requires them.
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

type AgentBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn text(code: u16, body: &str) -> Response<AgentBody> {
    Response::builder()
        .status(code)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(body.to_owned())).boxed())
        .unwrap()
}

async fn serve(
    req: Request<Incoming>,
    client: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    ended: mpsc::Sender<()>,
) -> Result<Response<AgentBody>, Infallible> {
    let method = req.method().to_string();
    let uri = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let body = String::from_utf8_lossy(&body.unwrap_or_default()).into_owned();
    seen.lock().unwrap().push(Seen {
        method: method.clone(),
        uri: uri.clone(),
        authorization,
        body: body.clone(),
        client,
    });
    let segs: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    Ok(match segs.as_slice() {
        ["healthz"] => text(200, "ok"),
        ["containerLogs", _, _, "missing"] => text(404, "container \"missing\" not found here"),
        ["containerLogs", _, _, _] if query.contains("follow=true") => {
            // A line every 100 ms until the reader goes away.
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
            tokio::spawn(async move {
                for n in 1.. {
                    let line = Frame::data(Bytes::from(format!("line {n}\n")));
                    if tx.send(Ok(line)).await.is_err() {
                        let _ = ended.send(());
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
            Response::builder()
                .header("content-type", "text/plain")
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .unwrap()
        }
        ["containerLogs", _, pod, container] => {
            text(200, &format!("hello from {pod}/{container}\nsecond line\n"))
        }
        ["proxy", ..] => {
            let echo = json!({"method": method, "uri": uri, "body": body});
            Response::builder()
                .status(201)
                .header("content-type", "application/json")
                .header("x-agent", "stand-in")
                .body(Full::new(Bytes::from(echo.to_string())).boxed())
                .unwrap()
        }
        _ => text(404, "no such agent route"),
    })
}

/// The stand-in, registered as node `agent-1` with a pod `web` in `ns`.
fn agent_with_pod(ns_name: &str) -> (&'static FakeAgent, Kubectl, String) {
    static AGENT: OnceLock<FakeAgent> = OnceLock::new();
    let agent = AGENT.get_or_init(|| {
        let agent = FakeAgent::start(server(), true);
        let k = server().kubectl();
        create(
            &k,
            None,
            &NodeBuilder::new("agent-1")
                .agent("127.0.0.1", agent.port)
                .json(),
        );
        agent
    });
    let k = server().kubectl();
    let ns = namespace(&k, ns_name);
    create(
        &k,
        Some(&ns),
        &PodBuilder::new("web")
            .container("app", "hello:v1")
            .port(8080)
            .on_node("agent-1")
            .json(),
    );
    (agent, k, ns)
}

// --- logs and proxying through the agent -----------------------------------

#[test]
fn logs_come_from_the_agent_with_kubectls_options() {
    let (agent, k, ns) = agent_with_pod("logs-plain");
    let out = k.ok(&[
        "-n",
        &ns,
        "logs",
        "web",
        "--tail=5",
        "--timestamps",
        "--limit-bytes=100",
        "--since=1h",
    ]);
    assert_eq!(out, "hello from web/app\nsecond line\n");
    let seen = agent.seen(&format!("/containerLogs/{ns}/web/app"));
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "GET");
    assert_eq!(
        seen[0].uri,
        format!(
            "/containerLogs/{ns}/web/app?limitBytes=100&sinceSeconds=3600&tailLines=5&timestamps=true"
        )
    );
    // The API server presented its own client certificate.
    assert_eq!(seen[0].client, "wkube-apiserver");
    assert!(seen[0].authorization.is_none());
}

#[test]
fn an_agents_not_found_and_an_unreachable_agent_become_statuses() {
    let (_agent, k, ns) = agent_with_pod("logs-errors");
    create(
        &k,
        Some(&ns),
        &PodBuilder::new("two")
            .container("app", "hello:v1")
            .container("missing", "hello:v1")
            .on_node("agent-1")
            .json(),
    );
    let err = k.fails(&["-n", &ns, "logs", "two", "-c", "missing"]);
    assert!(
        err.contains("Error from server (NotFound): container \"missing\" not found here"),
        "{err}"
    );
    // kubectl picks and checks containers itself; the API checks them too.
    let log = format!("/api/v1/namespaces/{ns}/pods/two/log");
    let err = k.fails(&["get", "--raw", &format!("{log}?container=nope")]);
    assert!(
        err.contains("Error from server (BadRequest): container nope is not valid for pod two"),
        "{err}"
    );
    let err = k.fails(&["get", "--raw", &log]);
    assert!(
        err.contains("Error from server (BadRequest): a container name must be specified for pod two, choose one of: [app missing]"),
        "{err}"
    );

    // A node whose agent does not listen.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let node = format!("{ns}-gone");
    create(
        &k,
        None,
        &NodeBuilder::new(&node).agent("127.0.0.1", port).json(),
    );
    create(
        &k,
        Some(&ns),
        &PodBuilder::new("stranded")
            .container("app", "hello:v1")
            .on_node(&node)
            .json(),
    );
    let err = k.fails(&["-n", &ns, "logs", "stranded"]);
    assert!(
        err.contains(&format!(
            "Error from server (ServiceUnavailable): the agent of node \"{node}\" at 127.0.0.1:{port} cannot be reached"
        )),
        "{err}"
    );
}

/// `kubectl logs -f` reads streamed lines; killing it ends the agent's
/// stream too.
fn follow(agent: &FakeAgent, k: &Kubectl, ns: &str, http1: bool) {
    let mut cmd = k.command(&["-n", ns, "logs", "-f", "web"]);
    if http1 {
        // client-go's switch to HTTP/1.1 (it negotiates HTTP/2 otherwise).
        cmd.env("DISABLE_HTTP2", "1");
    }
    let mut lines = server().spawn_lines(cmd);
    assert_eq!(lines.next_lines(3, LINE), ["line 1", "line 2", "line 3"]);
    drop(lines);
    agent.expect_follow_ended(Duration::from_secs(15));
}

#[test]
fn logs_follow_streams_over_http2_and_http1_and_ends_with_the_client() {
    let (agent, k, ns) = agent_with_pod("logs-follow");
    follow(agent, &k, &ns, false);
    follow(agent, &k, &ns, true);
    let seen = agent.seen(&format!("/containerLogs/{ns}/web/app"));
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen.iter().all(|s| s.uri.ends_with("?follow=true")),
        "{seen:?}"
    );
}

#[test]
fn pod_proxy_reaches_the_pods_port_with_path_and_query() {
    let (agent, k, ns) = agent_with_pod("proxy");
    let out = k.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/{ns}/pods/web:8080/proxy/some/path/?x=1&y=two"),
    ]);
    let echo: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(echo["method"], "GET");
    assert_eq!(
        echo["uri"],
        format!("/proxy/{ns}/web/8080/some/path/?x=1&y=two")
    );
    // No port given: the pod's first declared one, as Kubernetes picks it.
    let out = k.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/{ns}/pods/web/proxy/x"),
    ]);
    assert!(out.contains(&format!("/proxy/{ns}/web/8080/x")), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.json");
    std::fs::write(&file, r#"{"order":42}"#).unwrap();
    let out = k.ok(&[
        "create",
        "--raw",
        &format!("/api/v1/namespaces/{ns}/pods/web:8080/proxy/submit"),
        "-f",
        file.to_str().unwrap(),
    ]);
    let echo: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body"], r#"{"order":42}"#);

    let seen = agent.seen(&format!("/proxy/{ns}/web/"));
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(
        seen.iter()
            .any(|s| s.method == "POST" && s.body == r#"{"order":42}"#),
        "{seen:?}"
    );
    for s in &seen {
        assert!(s.authorization.is_none(), "credentials leaked: {s:?}");
        assert_eq!(s.client, "wkube-apiserver");
    }
}

#[test]
fn node_proxy_reaches_the_agent_itself() {
    let (agent, k, _ns) = agent_with_pod("node-proxy");
    let out = k.ok(&["get", "--raw", "/api/v1/nodes/agent-1/proxy/healthz"]);
    assert_eq!(out, "ok");
    assert!(!agent.seen("/healthz").is_empty());
}

// --- with --tls off ------------------------------------------------------------

/// `curl` as a user with a token; kubectl sends no token over plain HTTP.
fn curl(server: &TestServer, token: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["--silent", "--show-error", "--max-time", "20", "-X", method])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-H", "Content-Type: application/json"])
        .args(["--write-out", "\n%{http_code}"]);
    if !body.is_empty() {
        cmd.args(["--data-binary", "@-"]);
    }
    cmd.arg(format!("{}{path}", server.api_url));
    let out = common::run(
        cmd,
        (!body.is_empty()).then_some(body.as_bytes()),
        common::COMMAND_TIMEOUT,
    );
    let (text, code) = out.stdout.rsplit_once('\n').expect("status code line");
    (code.trim().parse().expect("status code"), text.to_owned())
}

#[test]
fn with_tls_off_the_agent_is_reached_over_plain_http() {
    let server = TestServer::builder().tls(false).start();
    let agent = FakeAgent::start(&server, false);
    let token = server
        .wkube(&[
            "token",
            "create",
            "--user",
            "admin",
            "--group",
            "system:masters",
        ])
        .success();
    let token = token.trim();
    let node = NodeBuilder::new("plain-1").agent("127.0.0.1", agent.port);
    let (code, body) = curl(&server, token, "POST", "/api/v1/nodes", &node.json());
    assert_eq!(code, 201, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(created["spec"]["podCIDR"], "127.128.0.0/18");
    let pod = PodBuilder::new("web")
        .container("app", "hello:v1")
        .port(8080)
        .on_node("plain-1");
    let (code, body) = curl(
        &server,
        token,
        "POST",
        "/api/v1/namespaces/default/pods",
        &pod.json(),
    );
    assert_eq!(code, 201, "{body}");

    let (code, body) = curl(
        &server,
        token,
        "GET",
        "/api/v1/namespaces/default/pods/web/log?tailLines=1",
        "",
    );
    assert_eq!(
        (code, body.as_str()),
        (200, "hello from web/app\nsecond line\n")
    );
    let (code, body) = curl(
        &server,
        token,
        "PUT",
        "/api/v1/namespaces/default/pods/web/proxy/item/7",
        r#"{"n":7}"#,
    );
    assert_eq!(code, 201, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["uri"], "/proxy/default/web/8080/item/7");
    assert_eq!(echo["body"], r#"{"n":7}"#);
    let seen = agent.seen("/");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].uri, "/containerLogs/default/web/app?tailLines=1");
    assert!(seen.iter().all(|s| s.authorization.is_none()), "{seen:?}");
}
