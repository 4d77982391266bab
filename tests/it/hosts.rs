//! A cluster spread over hosts that are network namespaces of their own
//! (`common::netns::Lab`): the server on one, agents on others, so every
//! request between them crosses interfaces and addresses. Nodes register,
//! pods spread, Services answer on every host, and calls cross nodes, from
//! the host and from inside a guest.

use crate::common;

use std::process::{Child, Stdio};
use std::time::Duration;

use common::netns::Lab;
use common::{TestServer, eventually, guest};

/// A joined agent on a lab host, killed on drop.
struct Agent {
    child: Child,
    host: String,
    server: String,
    token: String,
    /// Flags beyond those every lab agent gets.
    extra: Vec<String>,
    dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    /// Kills the agent and starts it again on the same data directory.
    fn restart(&mut self, lab: &Lab) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_agent(
            lab,
            &self.host,
            &self.server,
            &self.token,
            self.dir.path(),
            &self.extra,
        );
    }

    /// The agent's data directory.
    fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }
}

fn start_agent(lab: &Lab, host: &str, server: &TestServer, token: &str) -> Agent {
    start_agent_with(lab, host, server, token, &[])
}

fn start_agent_with(
    lab: &Lab,
    host: &str,
    server: &TestServer,
    token: &str,
    extra: &[&str],
) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let child = spawn_agent(lab, host, &server.api_url, token, dir.path(), &extra);
    Agent {
        child,
        host: host.to_string(),
        server: server.api_url.clone(),
        token: token.to_string(),
        extra,
        dir,
    }
}

fn spawn_agent(
    lab: &Lab,
    host: &str,
    server: &str,
    token: &str,
    dir: &std::path::Path,
    extra: &[String],
) -> Child {
    let ip = lab.host(host).ip;
    let log = |name: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(name))
            .unwrap()
    };
    lab.command(host, env!("CARGO_BIN_EXE_wkube"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["agent", "--server", server, "--token", token])
        .args(["--node-name", host, "--node-ip", &ip.to_string()])
        .args(["--agent-listen", &format!("{ip}:0")])
        // Heartbeats every 2 s, so a short grace period in a test still
        // spans several of them.
        .args(["--lease-renew-interval", "2"])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log("agent.log"))
        .stderr(log("agent.err"))
        .spawn()
        .expect("start the agent")
}

/// A Deployment of `image` with `replicas` pods labelled `app=NAME`, on
/// node `node` when one is given, and a NodePort Service `NAME` to it.
fn app(name: &str, image: &str, replicas: u32, node: Option<&str>) -> String {
    let node = node.map_or(String::new(), |n| format!(r#""nodeName": "{n}","#));
    format!(
        r#"{{"apiVersion": "v1", "kind": "List", "items": [
          {{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {{"name": "{name}"}},
            "spec": {{"replicas": {replicas}, "selector": {{"matchLabels": {{"app": "{name}"}}}},
              "template": {{"metadata": {{"labels": {{"app": "{name}"}}}},
                "spec": {{{node} "containers": [{{"name": "web", "image": "{image}",
                  "ports": [{{"containerPort": 8080, "name": "http"}}]}}]}}}}}}}},
          {{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "{name}"}},
            "spec": {{"type": "NodePort", "selector": {{"app": "{name}"}},
              "ports": [{{"name": "http", "port": 80, "targetPort": "http"}}]}}}}]}}"#
    )
}

#[test]
fn hosts_in_their_own_network_namespaces_form_one_cluster() {
    if let Err(e) = common::netns::available() {
        panic!("this test needs root and iproute2 (network namespaces): {e}");
    }
    let lab = Lab::new(&["server", "a1", "a2"]);
    let s = lab.host("server");
    let server = TestServer::builder()
        .netns(&s.ns, s.ip)
        .arg("--scheduler-strategy")
        .arg("LeastAllocated")
        .start();
    let k = server.kubectl();
    for (file, reference) in [("hello-http", "hello:v1"), ("echo-http", "echo:v1")] {
        server
            .wkube(&["push", guest(file).to_str().unwrap(), reference])
            .success();
    }
    let token = std::fs::read_to_string(server.data_dir.join("join-token")).unwrap();
    let _agents: Vec<Agent> = ["a1", "a2"]
        .iter()
        .map(|h| start_agent(&lab, h, &server, token.trim()))
        .collect();

    // Both nodes register, with their own addresses.
    assert!(
        eventually(Duration::from_secs(60), || {
            k.run(&[
                "get",
                "nodes",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}={.status.addresses[0].address}={.status.conditions[?(@.type==\"Ready\")].status} {end}",
            ])
            .stdout
            .split_whitespace()
            .filter(|n| {
                ["a1", "a2"].iter().any(|h| {
                    **n == format!("{h}={}=True", lab.host(h).ip)
                })
            })
            .count()
                == 2
        }),
        "nodes did not register: {}",
        k.ok(&["get", "nodes", "-o", "wide"])
    );

    // Pods spread over both.
    k.ok_with_stdin(&["apply", "-f", "-"], &app("hello", "hello:v1", 4, None));
    k.ok(&["rollout", "status", "deployment/hello", "--timeout=90s"]);
    let nodes = k.ok(&[
        "get",
        "pods",
        "-l",
        "app=hello",
        "-o",
        "jsonpath={.items[*].spec.nodeName}",
    ]);
    assert!(
        nodes.contains("a1") && nodes.contains("a2"),
        "pods did not spread: {nodes}"
    );

    // The NodePort answers on every node, from every host.
    let port = k.ok(&[
        "get",
        "svc",
        "hello",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);
    for from in ["server", "a1", "a2"] {
        for node in ["a1", "a2"] {
            let url = format!("http://{}:{port}/", lab.host(node).ip);
            let (code, body) = lab.curl(from, &url);
            assert_eq!(
                (code, body.as_str()),
                (200, "Hello from wkube!\n"),
                "{from} -> {url}"
            );
        }
    }
    // The ClusterIP answers on each agent host.
    let cluster_ip = k.ok(&["get", "svc", "hello", "-o", "jsonpath={.spec.clusterIP}"]);
    for from in ["a1", "a2"] {
        let (code, _) = lab.curl(from, &format!("http://{cluster_ip}/"));
        assert_eq!(code, 200, "{from} -> ClusterIP {cluster_ip}");
    }

    // Cross-node: a Service whose only pod is on a2, called from a1's host
    // and from a guest on a1, by address and by name.
    k.ok_with_stdin(
        &["apply", "-f", "-"],
        &app("far", "hello:v1", 1, Some("a2")),
    );
    k.ok_with_stdin(
        &["apply", "-f", "-"],
        &app("caller", "echo:v1", 1, Some("a1")),
    );
    k.ok(&["rollout", "status", "deployment/far", "--timeout=90s"]);
    k.ok(&["rollout", "status", "deployment/caller", "--timeout=90s"]);
    let far_ip = k.ok(&["get", "svc", "far", "-o", "jsonpath={.spec.clusterIP}"]);
    assert!(
        eventually(Duration::from_secs(30), || lab
            .curl("a1", &format!("http://{far_ip}/"))
            .0
            == 200),
        "a1 cannot reach a pod on a2 through its ClusterIP"
    );
    let caller = k.ok(&[
        "get",
        "pods",
        "-l",
        "app=caller",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    for url in ["http://far/", &format!("http://{far_ip}/")] {
        let out = k.run(&[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/default/pods/{caller}/proxy/fetch?url={url}"),
        ]);
        assert!(
            out.status.success() && out.stdout.contains("Hello from wkube!"),
            "guest on a1 -> {url}: {}{}",
            out.stdout,
            out.stderr
        );
    }
}

/// The Ready condition of node `name`, as the API server holds it.
fn ready(k: &common::Kubectl, name: &str) -> String {
    k.run(&[
        "get",
        "node",
        name,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ])
    .stdout
}

/// `NAME=NODE=PHASE` of the pods labelled `app=APP`.
fn pods(k: &common::Kubectl, app: &str) -> Vec<String> {
    let mut v: Vec<String> = k
        .ok(&[
            "get",
            "pods",
            "-l",
            &format!("app={app}"),
            "-o",
            "jsonpath={range .items[*]}{.metadata.uid}={.spec.nodeName}={.status.phase} {end}",
        ])
        .split_whitespace()
        .map(String::from)
        .collect();
    v.sort();
    v
}

/// The pod UIDs node `node`'s kubelet reports running (its Summary API);
/// `None` when the node does not answer.
fn running_on(k: &common::Kubectl, node: &str) -> Option<Vec<String>> {
    let out = k.run(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{node}/proxy/stats/summary"),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
    let mut uids: Vec<String> = v["pods"]
        .as_array()?
        .iter()
        .filter_map(|p| p["podRef"]["uid"].as_str().map(String::from))
        .collect();
    uids.sort();
    Some(uids)
}

/// A server on host `server` with `flags`, agent `a1` running two pods of
/// `web` behind a NodePort, then agent `a2` joined (so the pods are on
/// a1 only). Returns the server, the agents, the pods and the NodePort.
fn two_node_cluster(lab: &Lab, flags: &[&str]) -> (TestServer, Vec<Agent>, Vec<String>, String) {
    let s = lab.host("server");
    let mut b = TestServer::builder().netns(&s.ns, s.ip);
    for f in flags {
        b = b.arg(*f);
    }
    let server = b.start();
    let k = server.kubectl();
    server
        .wkube(&["push", guest("hello-http").to_str().unwrap(), "hello:v1"])
        .success();
    let token = std::fs::read_to_string(server.data_dir.join("join-token")).unwrap();
    let mut agents = vec![start_agent(lab, "a1", &server, token.trim())];
    assert!(eventually(Duration::from_secs(60), || ready(&k, "a1") == "True"));
    k.ok_with_stdin(&["apply", "-f", "-"], &app("web", "hello:v1", 2, None));
    k.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    agents.push(start_agent(lab, "a2", &server, token.trim()));
    assert!(eventually(Duration::from_secs(60), || ready(&k, "a2") == "True"));
    let before = pods(&k, "web");
    assert!(
        before.iter().all(|p| p.ends_with("=a1=Running")),
        "{before:?}"
    );
    let port = k.ok(&[
        "get",
        "svc",
        "web",
        "-o",
        "jsonpath={.spec.nodePort}{.spec.ports[0].nodePort}",
    ]);
    (server, agents, before, port)
}

/// The link cut, for as long as the report asks.
const CUT: Duration = Duration::from_secs(60);

#[test]
fn a_node_cut_off_for_a_minute_keeps_serving_its_pods_and_reconciles_on_return() {
    common::netns::available().expect("network namespaces");
    let lab = Lab::new(&["server", "a1", "a2"]);
    // Kubernetes' defaults: 40 s grace, pods tolerate an unreachable node
    // for 300 s.
    let (server, _agents, before, port) = two_node_cluster(&lab, &[]);
    let k = server.kubectl();
    let a1 = format!("http://{}:{port}/", lab.host("a1").ip);

    lab.cut("a1");
    let cut = std::time::Instant::now();
    let mut seen_unknown = false;
    while cut.elapsed() < CUT {
        // Clients on a1's side still reach its pods.
        let (code, body) = lab.curl("a1", &a1);
        assert_eq!(
            (code, body.as_str()),
            (200, "Hello from wkube!\n"),
            "at {:?}",
            cut.elapsed()
        );
        seen_unknown |= ready(&k, "a1") == "Unknown";
        std::thread::sleep(Duration::from_secs(5));
    }
    assert!(
        seen_unknown,
        "the server never marked the cut-off node Unknown"
    );
    // Within the pods' toleration: nothing was moved.
    assert_eq!(pods(&k, "web"), before);

    lab.heal("a1");
    assert!(
        eventually(Duration::from_secs(45), || ready(&k, "a1") == "True"),
        "a1 did not come back Ready"
    );
    assert_eq!(pods(&k, "web"), before, "the pods changed");
    let uids: Vec<&str> = before
        .iter()
        .map(|p| p.split('=').next().unwrap())
        .collect();
    assert_eq!(
        running_on(&k, "a1"),
        Some(uids.iter().map(|u| u.to_string()).collect()),
        "a1 does not run the same pods"
    );
}

#[test]
fn with_a_short_grace_a_cut_off_nodes_pods_move_and_its_stale_copies_stop_on_return() {
    common::netns::available().expect("network namespaces");
    let lab = Lab::new(&["server", "a1", "a2"]);
    let (server, _agents, before, port) = two_node_cluster(
        &lab,
        &[
            "--node-monitor-period=1s",
            "--node-monitor-grace-period=8s",
            "--default-unreachable-toleration-seconds=2",
            "--default-not-ready-toleration-seconds=2",
        ],
    );
    let k = server.kubectl();
    let old: Vec<String> = before
        .iter()
        .map(|p| p.split('=').next().unwrap().to_string())
        .collect();

    lab.cut("a1");
    let cut = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(45), || {
            let now = pods(&k, "web");
            now.len() == 2 && now.iter().all(|p| p.ends_with("=a2=Running"))
        }),
        "the pods were not re-placed: {:?}",
        pods(&k, "web")
    );
    eprintln!("pods re-placed on a2 {:?} after the cut", cut.elapsed());
    // The Service answers from the pods' new node meanwhile.
    let (code, _) = lab.curl("server", &format!("http://{}:{port}/", lab.host("a2").ip));
    assert_eq!(code, 200);
    std::thread::sleep(CUT.saturating_sub(cut.elapsed()));

    lab.heal("a1");
    assert!(
        eventually(Duration::from_secs(45), || ready(&k, "a1") == "True"),
        "a1 did not come back Ready"
    );
    assert!(
        eventually(Duration::from_secs(30), || {
            running_on(&k, "a1").is_some_and(|running| old.iter().all(|u| !running.contains(u)))
        }),
        "a1 still runs its stale pods: {:?}",
        running_on(&k, "a1")
    );
    let now = pods(&k, "web");
    assert!(
        now.iter().all(|p| p.ends_with("=a2=Running")) && now.len() == 2,
        "{now:?}"
    );
}

/// Two pods pinned to node a1 that read a Secret (as environment and as a
/// volume) and mount their service-account token, behind NodePort `kept`.
const KEPT: &str = r#"{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
   "stringData": {"password": "offline-secret-value-7f3a"}},
  {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "kept"},
   "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "kept"}},
     "template": {"metadata": {"labels": {"app": "kept"}},
       "spec": {"nodeName": "a1",
         "volumes": [{"name": "creds", "secret": {"secretName": "creds"}}],
         "containers": [{"name": "web", "image": "hello:v1",
           "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}],
           "volumeMounts": [{"name": "creds", "mountPath": "/etc/creds"}],
           "ports": [{"containerPort": 8080, "name": "http"}]}]}}}},
  {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kept"},
   "spec": {"type": "NodePort", "selector": {"app": "kept"},
     "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}]}"#;

#[test]
fn an_agent_restarted_while_cut_off_serves_from_its_sealed_checkpoint_and_applies_what_changed_on_return()
 {
    common::netns::available().expect("network namespaces");
    let lab = Lab::new(&["server", "a1", "a2"]);
    let (server, mut agents, _, web_port) = two_node_cluster(&lab, &[]);
    let k = server.kubectl();
    k.ok_with_stdin(&["apply", "-f", "-"], KEPT);
    k.ok(&["rollout", "status", "deployment/kept", "--timeout=90s"]);
    let kept_port = k.ok(&[
        "get",
        "svc",
        "kept",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);
    let a1 = lab.host("a1").ip;
    let hello = (200, "Hello from wkube!\n".to_string());
    for port in [&kept_port, &web_port] {
        let url = format!("http://{a1}:{port}/");
        assert!(
            eventually(Duration::from_secs(30), || lab.curl("a1", &url) == hello),
            "{url} does not answer before the cut"
        );
    }
    let kept_before = pods(&k, "kept");
    // The checkpoint is written a moment after the last change.
    std::thread::sleep(Duration::from_secs(3));

    // Cut off, the agent restarts: nothing but its disk to start from.
    lab.cut("a1");
    agents[0].restart(&lab);
    for port in [&kept_port, &web_port] {
        let url = format!("http://{a1}:{port}/");
        assert!(
            eventually(Duration::from_secs(60), || lab.curl("a1", &url) == hello),
            "{url} does not answer after a restart while cut off: {}",
            std::fs::read_to_string(agents[0].dir.path().join("agent.err")).unwrap_or_default()
        );
    }
    // The Secret reached the restarted pods from the checkpoint, which
    // holds no plain text of it.
    let cp = agents[0].data().join("kubelet/checkpoint");
    let files: Vec<_> = std::fs::read_dir(&cp).unwrap().flatten().collect();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().to_string_lossy().into_owned())
        .collect();
    for want in ["pods.sealed", "answers.sealed", "proxy-services.sealed"] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    for f in &files {
        let raw = std::fs::read(f.path()).unwrap();
        for plain in [&b"offline-secret-value-7f3a"[..], b"hello:v1", b"kept"] {
            assert!(
                !raw.windows(plain.len()).any(|w| w == plain),
                "{} holds {:?} in plain text",
                f.path().display(),
                String::from_utf8_lossy(plain)
            );
        }
    }

    // Meanwhile the cluster changes: one of a1's pods is deleted, and
    // its ReplicaSet makes a replacement bound to a1.
    let victim = k.ok(&[
        "get",
        "pods",
        "-l",
        "app=kept",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    let victim_uid = k.ok(&["get", "pod", &victim, "-o", "jsonpath={.metadata.uid}"]);
    k.ok(&["delete", "pod", &victim, "--wait=false"]);

    lab.heal("a1");
    assert!(
        eventually(Duration::from_secs(60), || ready(&k, "a1") == "True"),
        "a1 did not come back Ready"
    );
    // The deletion is carried out, the replacement runs, and a1 reports
    // both.
    assert!(
        eventually(Duration::from_secs(60), || {
            let now = pods(&k, "kept");
            now.len() == 2
                && now.iter().all(|p| p.ends_with("=a1=Running"))
                && !now.iter().any(|p| p.starts_with(&victim_uid))
                && running_on(&k, "a1").is_some_and(|uids| {
                    !uids.contains(&victim_uid)
                        && now
                            .iter()
                            .all(|p| uids.iter().any(|u| p.starts_with(u.as_str())))
                })
        }),
        "after the link returned: {:?} (before {kept_before:?}), a1 runs {:?}",
        pods(&k, "kept"),
        running_on(&k, "a1")
    );
    let url = format!("http://{a1}:{kept_port}/");
    assert_eq!(lab.curl("a1", &url), hello);
}

/// Host `name` may dial out but takes no new connection in, as behind a
/// NAT or a firewall that only lets connections out: nftables in its
/// namespace drops everything arriving on its link that does not belong
/// to a connection it opened.
fn only_outbound(lab: &Lab, name: &str) {
    for rule in [
        &["add", "table", "inet", "edge"][..],
        &[
            "add",
            "chain",
            "inet",
            "edge",
            "input",
            "{ type filter hook input priority 0; policy accept; }",
        ],
        &[
            "add",
            "rule",
            "inet",
            "edge",
            "input",
            "iifname",
            "eth0",
            "ct",
            "state",
            "established,related",
            "accept",
        ],
        &[
            "add", "rule", "inet", "edge", "input", "iifname", "eth0", "drop",
        ],
    ] {
        let out = lab
            .command(name, "nft")
            .args(rule)
            .output()
            .expect("run nft");
        assert!(
            out.status.success(),
            "nft {}: {}",
            rule.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Lines of an agent's log files that contain `needle`.
fn log_lines(agent: &Agent, needle: &str) -> usize {
    ["agent.log", "agent.err"]
        .iter()
        .map(|f| {
            std::fs::read_to_string(agent.dir.path().join(f))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(needle))
                .count()
        })
        .sum()
}

#[test]
fn an_agent_behind_nat_is_reached_through_the_connection_it_keeps_open() {
    common::netns::available().expect("network namespaces");
    let lab = Lab::new(&["server", "a1", "a2"]);
    only_outbound(&lab, "a1");
    let s = lab.host("server");
    // With its own node, whose proxy reaches the API server in-process.
    let mut server = TestServer::builder().netns(&s.ns, s.ip).with_node().start();
    let k = server.kubectl();
    server
        .wkube(&["push", guest("hello-http").to_str().unwrap(), "hello:v1"])
        .success();
    let token = std::fs::read_to_string(server.data_dir.join("join-token")).unwrap();
    let a1 = start_agent_with(&lab, "a1", &server, token.trim(), &["--behind-nat"]);
    let _a2 = start_agent(&lab, "a2", &server, token.trim());
    for node in ["a1", "a2"] {
        assert!(
            eventually(Duration::from_secs(60), || ready(&k, node) == "True"),
            "{node} did not become Ready: {}",
            k.ok(&["get", "nodes", "-o", "wide"])
        );
    }
    assert_eq!(
        k.ok(&[
            "get",
            "node",
            "a1",
            "-o",
            "jsonpath={.metadata.annotations.node\\.wkube\\.dev/behind-nat}",
        ]),
        "true"
    );
    // a1 really cannot be dialed, from the server or from a2.
    let agent_port = k.ok(&[
        "get",
        "node",
        "a1",
        "-o",
        "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}",
    ]);
    let a1_ip = lab.host("a1").ip;
    for from in ["server", "a2"] {
        let url = format!("https://{a1_ip}:{agent_port}/healthz");
        assert_eq!(
            lab.curl_with(from, &["-k", "--connect-timeout", "3"], &url)
                .0,
            0,
            "{from} reached a1's agent endpoint"
        );
    }

    k.ok_with_stdin(
        &["apply", "-f", "-"],
        &app("far", "hello:v1", 1, Some("a1")),
    );
    k.ok(&["rollout", "status", "deployment/far", "--timeout=90s"]);
    let pod = k.ok(&[
        "get",
        "pods",
        "-l",
        "app=far",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    let uid = k.ok(&["get", "pod", &pod, "-o", "jsonpath={.metadata.uid}"]);

    // The control plane reaches a1 through its tunnel: the agent's own
    // routes, the pod proxy, logs and the usage summary.
    assert_eq!(
        k.ok(&["get", "--raw", "/api/v1/nodes/a1/proxy/healthz"]),
        "ok"
    );
    let body = k.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/default/pods/{pod}/proxy/"),
    ]);
    assert_eq!(body.trim(), "Hello from wkube!");
    let logs = k.run(&["logs", &pod]);
    assert!(logs.status.success(), "kubectl logs: {}", logs.stderr);
    assert!(
        running_on(&k, "a1").is_some_and(|uids| uids.contains(&uid)),
        "a1's summary does not list {uid}"
    );

    // Other nodes' pod traffic goes through the API server: the ClusterIP
    // from a2's host, a2's NodePort and the server's own node's NodePort.
    let cluster_ip = k.ok(&["get", "svc", "far", "-o", "jsonpath={.spec.clusterIP}"]);
    let node_port = k.ok(&[
        "get",
        "svc",
        "far",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);
    for (from, url) in [
        ("a2", format!("http://{cluster_ip}/")),
        ("a2", format!("http://{}:{node_port}/", lab.host("a2").ip)),
        ("server", format!("http://{}:{node_port}/", s.ip)),
        ("a1", format!("http://{a1_ip}:{node_port}/")),
    ] {
        assert!(
            eventually(Duration::from_secs(30), || lab.curl(from, &url)
                == (200, "Hello from wkube!\n".to_string())),
            "{from} -> {url}: {:?}",
            lab.curl(from, &url)
        );
    }

    // Who may use a1's way in: only a1 opens its tunnel; nodes may send
    // pod traffic through the relay, a user without nodes/proxy may not.
    let a2_token = {
        let creds: serde_json::Value = serde_json::from_slice(
            &std::fs::read(_a2.data().join("agent").join("credentials.json")).unwrap(),
        )
        .unwrap();
        creds["token"].as_str().unwrap().to_string()
    };
    k.ok(&["create", "serviceaccount", "bot"]);
    let bot_token = k.ok(&["create", "token", "bot"]).trim().to_string();
    let pod_ip = k.ok(&["get", "pod", &pod, "-o", "jsonpath={.status.podIP}"]);
    let ca = server.data_dir.join("pki").join("ca.crt");
    let api = |token: &str, path: &str, upgrade: bool| {
        let bearer = format!("Authorization: Bearer {token}");
        let mut options = vec!["--cacert", ca.to_str().unwrap(), "-H", &bearer];
        if upgrade {
            options.extend(["--http1.1", "-H", "Connection: Upgrade"]);
            options.extend(["-H", "Upgrade: wkube-tunnel"]);
        }
        let (code, body) = lab.curl_with("server", &options, &format!("{}{path}", server.api_url));
        (code.to_string(), body)
    };
    let (code, body) = api(&a2_token, "/apis/wkube.dev/v1/nodes/a1/tunnel", true);
    assert_eq!(code, "403", "a2 opening a1's tunnel: {body}");
    assert!(
        body.contains("system:node:a2") && body.contains("may open its own tunnel"),
        "{body}"
    );
    let relay = format!("/apis/wkube.dev/v1/nodes/a1/podip/{pod_ip}/8080/");
    let (code, body) = api(&bot_token, &relay, false);
    assert_eq!(code, "403", "a service account relaying to a1: {body}");
    assert_eq!(
        api(&a2_token, &relay, false),
        ("200".to_string(), "Hello from wkube!\n".to_string())
    );
    // Nodes that reach each other are not relayed between, and a relayed
    // path stays under the pod's address.
    let (code, body) = api(
        &a2_token,
        &format!("/apis/wkube.dev/v1/nodes/a2/podip/{pod_ip}/8080/"),
        false,
    );
    assert_eq!(code, "400", "relay to a2, which is not behind NAT: {body}");
    let (code, body) = api(&a2_token, &format!("{relay}x/%2e%2e/healthz"), false);
    assert_eq!(code, "400", "a dot segment in a relayed path: {body}");
    // Every method crosses, not only GET: a POST through the ClusterIP
    // from a2's host.
    let (code, body) = lab.curl_with(
        "a2",
        &["-X", "POST", "-d", "x=1"],
        &format!("http://{cluster_ip}/"),
    );
    assert_eq!(code, 200, "POST from a2 to a1's pod: {body}");
    // The pod sees the host it was asked for, as it does without the relay.
    server
        .wkube(&["push", guest("echo-http").to_str().unwrap(), "echo:v1"])
        .success();
    k.ok_with_stdin(
        &["apply", "-f", "-"],
        &app("echo", "echo:v1", 1, Some("a1")),
    );
    k.ok(&["rollout", "status", "deployment/echo", "--timeout=90s"]);
    let echo_ip = k.ok(&["get", "svc", "echo", "-o", "jsonpath={.spec.clusterIP}"]);
    let echo = || {
        lab.curl_with(
            "a2",
            &["-H", "Host: shop.example.test"],
            &format!("http://{echo_ip}/host"),
        )
    };
    assert!(
        eventually(Duration::from_secs(30), || echo()
            == (200, "shop.example.test\n".to_string())),
        "the relayed request did not reach echo-http with its Host: {:?}",
        echo()
    );

    // Cut off for longer than the tunnel's pings allow, a1's tunnel dies;
    // back on the network, a1 dials again and is reachable again.
    let opened = log_lines(&a1, "tunnel open");
    assert!(opened >= 1, "a1 logged no open tunnel");
    // a1 opened a tunnel since `opened` openings, and is reached through it.
    let reopened = |opened: usize| {
        eventually(Duration::from_secs(60), || {
            k.run(&["get", "--raw", "/api/v1/nodes/a1/proxy/healthz"])
                .stdout
                .trim()
                == "ok"
                && log_lines(&a1, "tunnel open") > opened
        })
    };
    lab.cut("a1");
    std::thread::sleep(Duration::from_secs(35));
    lab.heal("a1");
    assert!(
        reopened(opened),
        "a1's tunnel did not come back: {} tunnel openings logged",
        log_lines(&a1, "tunnel open")
    );
    assert!(
        eventually(Duration::from_secs(30), || lab
            .curl("a2", &format!("http://{cluster_ip}/"))
            .0
            == 200),
        "a2 cannot reach a1's pod after the tunnel came back"
    );

    // A stopping server closes the tunnels it holds (each holds one of the
    // API server's connection slots, like any client's connection) rather
    // than waiting for them to end: it exits promptly, and a1 dials the
    // restarted server again.
    let opened = log_lines(&a1, "tunnel open");
    let closed_by_server = |server: &TestServer| {
        server
            .log_text()
            .matches("node tunnel closed by the server")
            .count()
    };
    // A tunnel replaced after the cut above may have logged it already.
    let closed_before = closed_by_server(&server);
    let stopping = std::time::Instant::now();
    server.stop();
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "the server took {:?} to stop with a1's tunnel open",
        stopping.elapsed()
    );
    assert!(
        closed_by_server(&server) > closed_before,
        "the stopping server did not close a1's tunnel:\n{}",
        server.log_tail(40)
    );
    server.restart();
    assert!(
        reopened(opened),
        "a1's tunnel did not come back after the server restarted: {} openings logged",
        log_lines(&a1, "tunnel open")
    );

    // A deleted Node's tunnel is closed by the server at once, not left
    // open until it drops (a new one is refused while the Node is gone).
    let closed_before = closed_by_server(&server);
    k.ok(&["delete", "node", "a1", "--wait=false"]);
    assert!(
        eventually(Duration::from_secs(10), || closed_by_server(&server)
            > closed_before),
        "a1's tunnel stayed open after its Node was deleted\n--- server ---\n{}\n--- a1 ---\n{}",
        server.log_tail(40),
        ["agent.log", "agent.err"]
            .iter()
            .map(|f| std::fs::read_to_string(a1.dir.path().join(f)).unwrap_or_default())
            .collect::<String>()
    );
}
