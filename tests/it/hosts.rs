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
        self.child = spawn_agent(lab, &self.host, &self.server, &self.token, self.dir.path());
    }

    /// The agent's data directory.
    fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }
}

fn start_agent(lab: &Lab, host: &str, server: &TestServer, token: &str) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let child = spawn_agent(lab, host, &server.api_url, token, dir.path());
    Agent {
        child,
        host: host.to_string(),
        server: server.api_url.clone(),
        token: token.to_string(),
        dir,
    }
}

fn spawn_agent(lab: &Lab, host: &str, server: &str, token: &str, dir: &std::path::Path) -> Child {
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
