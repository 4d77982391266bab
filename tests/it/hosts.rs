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
    _dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_agent(lab: &Lab, host: &str, server: &TestServer, token: &str) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let ip = lab.host(host).ip;
    let child = lab
        .command(host, env!("CARGO_BIN_EXE_wkube"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["agent", "--server", &server.api_url, "--token", token])
        .args(["--node-name", host, "--node-ip", &ip.to_string()])
        .args(["--agent-listen", &format!("{ip}:0")])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.path().join("agent.log")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("agent.err")).unwrap())
        .spawn()
        .expect("start the agent");
    Agent { child, _dir: dir }
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
