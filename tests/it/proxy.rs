//! The service proxy, as a user checks it with stock kubectl and curl:
//! Services reached at their NodePort and ClusterIP from the host, by name
//! and address from inside a guest, 503 with no endpoints, the
//! `kubernetes` service from a guest with its service-account token, and
//! per-pod counts in the node's `/metrics`.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::{Kubectl, TestServer, curl, eventually, guest};
use serde_json::Value;

fn server() -> TestServer {
    common::node_server_with_examples()
}

/// A Deployment of `replicas` pods of `image` labelled `app=NAME`.
fn deployment(name: &str, replicas: u32, image: &str) -> String {
    format!(
        r#"{{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {{"name": "{name}"}},
            "spec": {{"replicas": {replicas}, "selector": {{"matchLabels": {{"app": "{name}"}}}},
              "template": {{"metadata": {{"labels": {{"app": "{name}"}}}},
                "spec": {{"containers": [{{"name": "web", "image": "{image}",
                  "ports": [{{"containerPort": 8080, "name": "http"}}]}}]}}}}}}}}"#
    )
}

/// A Service `NAME` on port 80 to the pods' named port `http`.
fn service(name: &str, ty: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "{name}"}},
            "spec": {{"type": "{ty}", "selector": {{"app": "{name}"}},
              "ports": [{{"name": "http", "port": 80, "targetPort": "http"}}]}}}}"#
    )
}

fn json(k: &Kubectl, args: &[&str]) -> Value {
    serde_json::from_str(&k.ok(args)).unwrap()
}

/// GET through an echo-http pod's `/fetch`, via the API server's pod
/// proxy: (succeeded, stdout + stderr).
fn fetch(k: &Kubectl, pod: &str, url: &str, sa: bool) -> (bool, String) {
    let mut path = format!(
        "/api/v1/namespaces/default/pods/{pod}/proxy/fetch?url={}",
        url.replace('&', "%26").replace('?', "%3F")
    );
    if sa {
        path.push_str("&auth=sa");
    }
    let out = k.run(&["get", "--raw", &path]);
    (
        out.status.success(),
        format!("{}{}", out.stdout, out.stderr),
    )
}

fn node_metrics(k: &Kubectl) -> String {
    k.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{}/proxy/metrics", common::TEST_NODE),
    ])
}

/// Requests a pod served, from the node's metrics.
fn pod_requests(metrics: &str, pod: &str) -> u64 {
    metrics
        .lines()
        .find(|l| {
            l.starts_with("wkube_proxy_pod_requests_total{")
                && l.contains(&format!("pod=\"{pod}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn wait_endpoints(k: &Kubectl, svc: &str, n: usize) {
    let ok = eventually(Duration::from_secs(90), || {
        let ep = json(k, &["get", "endpoints", svc, "-o", "json"]);
        let ready = ep["subsets"]
            .as_array()
            .map(|s| {
                s.iter()
                    .map(|s| s["addresses"].as_array().map_or(0, Vec::len))
                    .sum::<usize>()
            })
            .unwrap_or(0);
        ready == n
    });
    assert!(
        ok,
        "service {svc} never had {n} ready endpoints: {}",
        k.ok(&["get", "endpoints,endpointslices,pods", "-o", "wide"])
    );
}

#[test]
fn a_node_port_service_balances_over_its_pods_and_answers_503_when_scaled_to_zero() {
    let s = server();
    let k = s.kubectl();
    k.ok_with_stdin(&["apply", "-f", "-"], &deployment("hello", 3, "hello:v1"));
    k.ok_with_stdin(&["apply", "-f", "-"], &service("hello", "NodePort"));
    k.ok(&["rollout", "status", "deployment/hello", "--timeout=90s"]);
    wait_endpoints(&k, "hello", 3);

    // EndpointSlices name the pods, their node and the resolved port.
    let slices = json(
        &k,
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=hello",
            "-o",
            "json",
        ],
    );
    let items = slices["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{slices}");
    assert_eq!(items[0]["ports"][0]["port"], 8080);
    assert_eq!(items[0]["endpoints"].as_array().unwrap().len(), 3);
    assert_eq!(items[0]["endpoints"][0]["nodeName"], common::TEST_NODE);

    let svc = json(&k, &["get", "service", "hello", "-o", "json"]);
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let node_ip = s.addresses.node_ip;

    // The NodePort on the node's address, and the ClusterIP from the host.
    let node_url = format!("http://{node_ip}:{node_port}/");
    assert!(
        eventually(Duration::from_secs(20), || curl(&[&node_url]).0 == 200),
        "NodePort {node_url} never answered: {:?}\n{}",
        curl(&[&node_url]),
        s.log_tail(30)
    );
    for _ in 0..30 {
        assert_eq!(curl(&[&node_url]), (200, "Hello from wkube!\n".to_string()));
    }
    assert_eq!(
        curl(&[&format!("http://{cluster_ip}/")]),
        (200, "Hello from wkube!\n".to_string())
    );

    // As a LoadBalancer: an address from the cluster's pool, served by the
    // node's proxy on the service port.
    k.ok(&[
        "patch",
        "service",
        "hello",
        "-p",
        r#"{"spec": {"type": "LoadBalancer"}}"#,
    ]);
    let mut lb_ip = String::new();
    assert!(
        eventually(Duration::from_secs(30), || {
            let svc = json(&k, &["get", "service", "hello", "-o", "json"]);
            lb_ip = svc["status"]["loadBalancer"]["ingress"][0]["ip"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            !lb_ip.is_empty()
        }),
        "no load-balancer address"
    );
    let (pool, _) = s.addresses.lb_range.split_once('-').unwrap();
    let (pool_net, _) = pool.rsplit_once('.').unwrap();
    assert!(
        lb_ip.starts_with(pool_net),
        "{lb_ip} not from {}",
        s.addresses.lb_range
    );
    let lb_url = format!("http://{lb_ip}/");
    assert!(
        eventually(Duration::from_secs(20), || curl(&[&lb_url])
            == (200, "Hello from wkube!\n".to_string())),
        "{lb_url}: {:?}",
        curl(&[&lb_url])
    );
    // The NodePort keeps working.
    assert_eq!(curl(&[&node_url]).0, 200);

    // The API server's service proxy path reaches it too.
    for id in ["hello", "hello:http", "hello:80", "http:hello:http"] {
        assert_eq!(
            k.ok(&[
                "get",
                "--raw",
                &format!("/api/v1/namespaces/default/services/{id}/proxy/")
            ]),
            "Hello from wkube!\n",
            "{id}"
        );
    }

    // Round robin: every pod served some.
    let metrics = node_metrics(&k);
    let pods = json(&k, &["get", "pods", "-l", "app=hello", "-o", "json"]);
    for p in pods["items"].as_array().unwrap() {
        let name = p["metadata"]["name"].as_str().unwrap();
        assert!(
            pod_requests(&metrics, name) >= 5,
            "pod {name} served too few requests:\n{metrics}"
        );
    }
    assert!(
        metrics.contains("wkube_proxy_service_requests_total{namespace=\"default\",node=\"node-1\",service=\"hello\"}"),
        "{metrics}"
    );

    // sessionAffinity ClientIP: one client sticks to one pod.
    k.ok(&[
        "patch",
        "service",
        "hello",
        "-p",
        r#"{"spec": {"sessionAffinity": "ClientIP"}}"#,
    ]);
    let names: Vec<String> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let counts = |m: &str| -> Vec<u64> { names.iter().map(|n| pod_requests(m, n)).collect() };
    // The proxy picks the change up from its watch.
    assert!(eventually(Duration::from_secs(10), || {
        let before = counts(&node_metrics(&k));
        for _ in 0..6 {
            curl(&[&node_url]);
        }
        let after = counts(&node_metrics(&k));
        let served = before.iter().zip(&after).filter(|(b, a)| a > b).count();
        served == 1
    }));

    // No endpoints: 503 naming the service; back again without a restart.
    k.ok(&["scale", "deployment/hello", "--replicas=0"]);
    wait_endpoints(&k, "hello", 0);
    let (code, body) = curl(&[&node_url]);
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("service \"hello\""), "{body}");
    let out = k.run(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/services/hello/proxy/",
    ]);
    assert!(
        out.stderr.contains("no endpoints available for service"),
        "{}",
        out.stderr
    );
    k.ok(&["scale", "deployment/hello", "--replicas=1"]);
    wait_endpoints(&k, "hello", 1);
    assert!(
        eventually(Duration::from_secs(20), || curl(&[&node_url]).0 == 200),
        "{:?}",
        curl(&[&node_url])
    );
}

#[test]
fn guests_reach_services_by_name_and_address_and_the_api_server_with_their_token() {
    let s = server();
    let k = s.kubectl();
    k.ok_with_stdin(&["apply", "-f", "-"], &deployment("hello", 2, "hello:v1"));
    k.ok_with_stdin(&["apply", "-f", "-"], &service("hello", "ClusterIP"));
    k.ok(&["run", "echo", "--image=echo:v1", "--restart=Never"]);
    k.ok(&["wait", "--for=condition=Ready", "pod/echo", "--timeout=90s"]);
    k.ok(&["rollout", "status", "deployment/hello", "--timeout=90s"]);
    wait_endpoints(&k, "hello", 2);
    let svc = json(&k, &["get", "service", "hello", "-o", "json"]);
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();

    for url in [
        "http://hello.default.svc.cluster.local/".to_string(),
        "http://hello.default.svc/".to_string(),
        "http://hello.default/".to_string(),
        "http://hello/".to_string(),
        format!("http://{cluster_ip}/"),
    ] {
        let (ok, out) = fetch(&k, "echo", &url, false);
        assert!(ok && out == "Hello from wkube!\n", "{url}: {out}");
    }
    // A pod by its address.
    let pod = json(&k, &["get", "pods", "-l", "app=hello", "-o", "json"]);
    let pod_ip = pod["items"][0]["status"]["podIP"].as_str().unwrap();
    let (ok, out) = fetch(&k, "echo", &format!("http://{pod_ip}:8080/"), false);
    assert!(ok && out == "Hello from wkube!\n", "pod IP {pod_ip}: {out}");
    // And from the host, as on a Kubernetes node.
    let url = format!("http://{pod_ip}:8080/");
    assert!(
        eventually(Duration::from_secs(10), || curl(&[&url]).0 == 200),
        "{url}: {:?}",
        curl(&[&url])
    );

    // Cluster addresses with nothing behind them are refused, and an
    // unknown service name never leaves the node.
    let (_, out) = fetch(
        &k,
        "echo",
        "http://nothing.default.svc.cluster.local/",
        false,
    );
    assert!(out.contains("502") || out.contains("fetch"), "{out}");
    assert!(!out.contains("Hello"), "{out}");
    let (net, _) = pod_ip.rsplit_once('.').unwrap();
    let (_, out) = fetch(&k, "echo", &format!("http://{net}.250/"), false);
    assert!(out.contains("ConnectionRefused"), "{out}");

    // The API server as `kubernetes.default.svc`, with the pod's token:
    // forbidden until its service account may list config maps (so the
    // request carried the pod's identity, not the node's).
    let api = "https://kubernetes.default.svc/api/v1/namespaces/default/configmaps";
    let (ok, out) = fetch(&k, "echo", api, true);
    assert!(!ok && out.to_lowercase().contains("forbidden"), "{out}");
    k.ok(&[
        "create",
        "role",
        "cm-reader",
        "--verb=list",
        "--resource=configmaps",
    ]);
    k.ok(&[
        "create",
        "rolebinding",
        "cm-reader",
        "--role=cm-reader",
        "--serviceaccount=default:default",
    ]);
    let (ok, out) = fetch(&k, "echo", api, true);
    assert!(ok, "{out}");
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["kind"], "ConfigMapList", "{out}");
}

#[test]
fn wkube_run_deploys_a_component_and_prints_a_url_that_serves_it() {
    let s = server();
    let wasm = guest("hello-http");
    let out = s
        .wkube(&[
            "run",
            "web",
            "--wasm",
            wasm.to_str().unwrap(),
            "--replicas",
            "2",
        ])
        .success();
    let url = out
        .trim()
        .rsplit(' ')
        .next()
        .filter(|u| u.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {out:?}"))
        .to_string();
    assert!(
        url.starts_with(&format!("http://{}:", s.addresses.node_ip)),
        "{url}"
    );
    assert_eq!(curl(&[&url]), (200, "Hello from wkube!\n".to_string()));
    let k = s.kubectl();
    let d = json(&k, &["get", "deployment", "web", "-o", "json"]);
    assert_eq!(d["status"]["availableReplicas"], 2);
    let image = d["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(image.starts_with("web:sha-"), "{image}");

    // The same file again changes nothing; another file rolls out.
    s.wkube(&[
        "run",
        "web",
        "--wasm",
        wasm.to_str().unwrap(),
        "--replicas",
        "2",
    ])
    .success();
    let again = json(&k, &["get", "deployment", "web", "-o", "json"]);
    assert_eq!(again["metadata"]["generation"], d["metadata"]["generation"]);
    let echo = guest("echo-http");
    let out = s
        .wkube(&[
            "run",
            "web",
            "--wasm",
            echo.to_str().unwrap(),
            "--replicas",
            "2",
        ])
        .success();
    assert!(out.contains(&url), "{out}");
    // The new pods answer (the old ones leave the endpoints as they
    // terminate).
    let headers = format!("{url}headers");
    assert!(
        eventually(Duration::from_secs(20), || curl(&[&headers])
            .1
            .starts_with('{')),
        "{:?}",
        curl(&[&headers])
    );
}

#[test]
fn the_quick_start_serves_the_built_in_example_with_no_file_at_hand() {
    let s = server();
    let listing = s.wkube(&["example"]).success();
    for name in ["hello-http", "echo-http", "job", "hello-p1"] {
        assert!(listing.contains(name), "{listing}");
    }
    // `wkube example NAME -o FILE` writes the module the sources build to.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hello.wasm");
    s.wkube(&["example", "hello-http", "-o", file.to_str().unwrap()])
        .success();
    assert_eq!(
        std::fs::read(&file).unwrap(),
        std::fs::read(guest("hello-http")).unwrap()
    );
    s.wkube(&["run", "hi", "--example", "nope"])
        .fails_with("no example \"nope\"; the examples are: hello-http, echo-http, job, hello-p1");

    let out = s.wkube(&["run", "hi", "--example", "hello-http"]).success();
    let url = out
        .trim()
        .rsplit(' ')
        .next()
        .filter(|u| u.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {out:?}"))
        .to_string();
    assert_eq!(curl(&[&url]), (200, "Hello from wkube!\n".to_string()));
}

/// A second node: `wkube agent` joined with the server's token, on the
/// next address of the test cluster's node range. Killed when dropped.
struct SecondNode {
    child: std::process::Child,
    ip: std::net::Ipv4Addr,
    _dir: tempfile::TempDir,
}

impl SecondNode {
    fn start(s: &TestServer, name: &str) -> SecondNode {
        let dir = tempfile::tempdir().unwrap();
        let [a, b, c, _] = s.addresses.node_ip.octets();
        let ip = std::net::Ipv4Addr::new(a, b, c, 2);
        let token = std::fs::read_to_string(s.data_dir.join("join-token")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_wkube"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["agent", "--server", &s.api_url, "--token", token.trim()])
            .args(["--node-name", name, "--node-ip", &ip.to_string()])
            .args(["--agent-listen", &format!("{ip}:0")])
            .args(["--service-cidr", &s.addresses.service_cidr])
            .args(["--cluster-cidr", &s.addresses.cluster_cidr])
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("agent.log")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("agent.err")).unwrap())
            .spawn()
            .expect("spawn wkube agent");
        let k = s.kubectl();
        let ready = eventually(Duration::from_secs(60), || {
            let out = k.run(&["get", "node", name, "-o", "json"]);
            serde_json::from_str::<Value>(&out.stdout).is_ok_and(|n| {
                n["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        });
        assert!(
            ready,
            "{name} never became Ready: {}",
            std::fs::read_to_string(dir.path().join("agent.err")).unwrap_or_default()
        );
        SecondNode {
            child,
            ip,
            _dir: dir,
        }
    }
}

impl Drop for SecondNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pod of `image` labelled `app=LABEL`, placed on `node`.
fn pinned_pod(name: &str, label: &str, node: &str, image: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod",
            "metadata": {{"name": "{name}", "labels": {{"app": "{label}"}}}},
            "spec": {{"nodeName": "{node}", "containers": [{{"name": "web", "image": "{image}",
              "ports": [{{"containerPort": 8080, "name": "http"}}]}}]}}}}"#
    )
}

#[test]
fn with_two_nodes_either_nodes_node_port_reaches_pods_on_both() {
    let s = server();
    let k = s.kubectl();
    let node2 = SecondNode::start(&s, "node-2");
    for (pod, node) in [("two-a", common::TEST_NODE), ("two-b", "node-2")] {
        k.ok_with_stdin(
            &["apply", "-f", "-"],
            &pinned_pod(pod, "two", node, "hello:v1"),
        );
    }
    k.ok_with_stdin(
        &["apply", "-f", "-"],
        &pinned_pod("caller", "caller", "node-2", "echo:v1"),
    );
    k.ok_with_stdin(&["apply", "-f", "-"], &service("two", "NodePort"));
    k.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/two-a",
        "pod/two-b",
        "pod/caller",
        "--timeout=90s",
    ]);
    wait_endpoints(&k, "two", 2);
    let svc = json(&k, &["get", "service", "two", "-o", "json"]);
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    for ip in [s.addresses.node_ip, node2.ip] {
        let url = format!("http://{ip}:{node_port}/");
        assert!(
            eventually(Duration::from_secs(20), || curl(&[&url]).0 == 200),
            "{url}: {:?}",
            curl(&[&url])
        );
        for _ in 0..10 {
            assert_eq!(
                curl(&[&url]),
                (200, "Hello from wkube!\n".to_string()),
                "{url}"
            );
        }
    }
    // Each node's proxy sent requests to both pods, the remote one through
    // its node's agent.
    for node in [common::TEST_NODE, "node-2"] {
        let metrics = k.ok(&[
            "get",
            "--raw",
            &format!("/api/v1/nodes/{node}/proxy/metrics"),
        ]);
        for pod in ["two-a", "two-b"] {
            assert!(
                pod_requests(&metrics, pod) >= 2,
                "{node} sent too few requests to {pod}:\n{metrics}"
            );
        }
    }
    // A guest on node-2 reaches a pod on node-1 by its address and the
    // service by name.
    let pod = json(&k, &["get", "pod", "two-a", "-o", "json"]);
    let pod_ip = pod["status"]["podIP"].as_str().unwrap();
    let (ok, out) = fetch(&k, "caller", &format!("http://{pod_ip}:8080/"), false);
    assert!(ok && out == "Hello from wkube!\n", "pod IP {pod_ip}: {out}");
    let (ok, out) = fetch(&k, "caller", "http://two/", false);
    assert!(ok && out == "Hello from wkube!\n", "{out}");

    // The metrics API gathers from both nodes' agents: `kubectl top`
    // shows each node, and the pods on either.
    let mut nodes = String::new();
    let mut pods = String::new();
    let both = eventually(Duration::from_secs(15), || {
        nodes = k.run(&["top", "nodes", "--no-headers"]).stdout;
        pods = k.run(&["top", "pods", "--no-headers"]).stdout;
        let has = |text: &str, name: &str| text.lines().any(|l| l.starts_with(&format!("{name} ")));
        has(&nodes, common::TEST_NODE)
            && has(&nodes, "node-2")
            && has(&pods, "two-a")
            && has(&pods, "two-b")
    });
    assert!(both, "top nodes:\n{nodes}\ntop pods:\n{pods}");
    // The custom metrics count the requests served on either node.
    let rates = k.ok(&[
        "get",
        "--raw",
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/default/pods/*/requests_per_second?labelSelector=app%3Dtwo",
    ]);
    for pod in ["two-a", "two-b"] {
        assert!(rates.contains(&format!("\"name\":\"{pod}\"")), "{rates}");
    }
}
