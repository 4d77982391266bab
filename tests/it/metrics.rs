//! The metrics APIs as users read them: `kubectl top` (metrics.k8s.io)
//! and `kubectl get --raw` on custom.metrics.k8s.io, with figures that
//! come from what guests really did.

use crate::common;

use std::sync::OnceLock;
use std::time::Duration;

use common::builders::PodBuilder;
use common::{Kubectl, TEST_NODE, TestServer, eventually};
use serde_json::{Value, json};

fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(common::node_server_with_examples)
}

/// Creates a pod of `echo:v1` with a CPU limit in `ns` and waits for it
/// to serve.
fn echo_pod(k: &Kubectl, ns: &str, name: &str, labels: Value) {
    let mut pod: Value = serde_json::from_str(
        &PodBuilder::new(name)
            .on_node(TEST_NODE)
            .container("web", "echo:v1")
            .last("ports", json!([{"containerPort": 80}]))
            .last(
                "resources",
                json!({"requests": {"cpu": "100m", "memory": "16Mi"}, "limits": {"cpu": "500m"}}),
            )
            .json(),
    )
    .unwrap();
    pod["metadata"]["namespace"] = json!(ns);
    pod["metadata"]["labels"] = labels;
    k.ok_with_stdin(&["create", "-f", "-"], &pod.to_string());
    k.ok(&[
        "wait",
        "-n",
        ns,
        "--for=condition=Ready",
        &format!("pod/{name}"),
        "--timeout=60s",
    ]);
}

/// A GET through the API server's pod proxy, run in the background.
fn spawn_get(k: &Kubectl, ns: &str, pod: &str, path: &str) -> std::process::Child {
    k.command(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/{ns}/pods/{pod}/proxy/{path}"),
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap()
}

/// `kubectl top pods` rows as (name, millicores, MiB).
fn top_pods(k: &Kubectl, args: &[&str]) -> Vec<(String, u64, u64)> {
    let mut cmd = vec!["top", "pods", "--no-headers"];
    cmd.extend_from_slice(args);
    let out = k.run(&cmd);
    out.stdout
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let n = f.len();
            if n < 3 {
                return None;
            }
            let cpu = f[n - 2].strip_suffix('m')?.parse().ok()?;
            let mem = f[n - 1].strip_suffix("Mi")?.parse().ok()?;
            Some((f[n - 3].to_string(), cpu, mem))
        })
        .collect()
}

fn row<'a>(rows: &'a [(String, u64, u64)], name: &str) -> Option<&'a (String, u64, u64)> {
    rows.iter().find(|r| r.0 == name)
}

#[test]
fn kubectl_top_shows_a_spinning_guest_near_its_limit_and_an_idle_one_near_zero() {
    let k = server().kubectl();
    let ns = "top-cpu";
    k.ok(&["create", "namespace", ns]);
    echo_pod(&k, ns, "busy", json!({"app": "busy"}));
    echo_pod(&k, ns, "idle", json!({"app": "idle"}));
    // Twelve seconds of spinning against a 500m limit: the guest gets
    // half a core for all of it (less when the machine is busier than
    // that, as the CPU time counted is what the guest really ran), and the
    // window (5 s) fills with it.
    let mut spinner = spawn_get(&k, ns, "busy", "spin/12000");
    let mut seen = Vec::new();
    let near_limit = eventually(Duration::from_secs(11), || {
        seen = top_pods(&k, &["-n", ns]);
        row(&seen, "busy").is_some_and(|r| (300..=600).contains(&r.1))
            && row(&seen, "idle").is_some_and(|r| r.1 <= 20)
    });
    let _ = spinner.kill();
    let _ = spinner.wait();
    assert!(
        near_limit,
        "top never showed busy near 500m and idle near 0: {seen:?}\n{}",
        k.run(&["top", "pods", "-n", ns]).stderr
    );

    // --containers names each container; -A shows every namespace, and
    // -l selects by the pods' labels.
    let out = k.ok(&["top", "pods", "-n", ns, "--containers"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("busy") && l.contains(" web ")),
        "{out}"
    );
    let all = k.ok(&["top", "pods", "-A"]);
    assert!(
        all.lines()
            .any(|l| l.starts_with(ns) && l.contains(" busy ")),
        "{all}"
    );
    let selected = top_pods(&k, &["-n", ns, "-l", "app=idle"]);
    assert_eq!(
        selected.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        ["idle"]
    );

    // The node's figure covers what its pods use.
    let nodes = k.ok(&["top", "nodes", "--no-headers"]);
    let line = nodes
        .lines()
        .find(|l| l.starts_with(TEST_NODE))
        .unwrap_or_else(|| panic!("no {TEST_NODE} in top nodes: {nodes}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    assert!(f[1].ends_with('m') && f[2].ends_with('%'), "{line}");
    k.ok(&["delete", "namespace", ns, "--wait=false"]);
}

#[test]
fn kubectl_top_shows_the_memory_a_guest_allocated() {
    let k = server().kubectl();
    let ns = "top-memory";
    k.ok(&["create", "namespace", ns]);
    echo_pod(&k, ns, "allocator", json!({"app": "allocator"}));
    let before = eventually(Duration::from_secs(10), || {
        row(&top_pods(&k, &["-n", ns]), "allocator").is_some()
    });
    assert!(before, "no metrics for a running pod");
    let idle = row(&top_pods(&k, &["-n", ns]), "allocator").unwrap().2;
    assert!(idle < 24, "an idle echo guest holds {idle} MiB");
    let out = k.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/{ns}/pods/allocator/proxy/alloc/48"),
    ]);
    assert!(out.contains("allocated 48 MiB"), "{out}");
    // The instance is gone once it answered, but the window remembers.
    let mut mem = 0;
    let grew = eventually(Duration::from_secs(4), || {
        mem = row(&top_pods(&k, &["-n", ns]), "allocator").map_or(0, |r| r.2);
        mem >= 48
    });
    assert!(grew, "top shows {mem} MiB after a 48 MiB allocation");
    k.ok(&["delete", "namespace", ns, "--wait=false"]);
}

#[test]
fn request_rates_are_served_as_custom_metrics_for_pods_and_services() {
    let k = server().kubectl();
    let ns = "custom-metrics";
    k.ok(&["create", "namespace", ns]);
    echo_pod(&k, ns, "web-1", json!({"app": "web"}));
    k.ok_with_stdin(
        &["create", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "namespace": ns},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})
        .to_string(),
    );
    // Three requests held for 3 s each: in flight together.
    let sleepers: Vec<_> = (0..3)
        .map(|_| spawn_get(&k, ns, "web-1", "sleep/3000"))
        .collect();
    let raw = |path: &str| -> Value {
        serde_json::from_str(&k.ok(&[
            "get",
            "--raw",
            &format!("/apis/custom.metrics.k8s.io/v1beta2/namespaces/{ns}/{path}"),
        ]))
        .unwrap()
    };
    let milli = |v: &Value| -> u64 {
        v["items"][0]["value"]
            .as_str()
            .and_then(|s| s.strip_suffix('m'))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    let mut last = Value::Null;
    let in_flight = eventually(Duration::from_secs(3), || {
        last = raw("services/web/requests_in_flight");
        milli(&last) == 3000
    });
    assert!(in_flight, "service in flight: {last}");
    for mut s in sleepers {
        let _ = s.wait();
    }
    // Four quick requests, then the rate is read while they are within
    // the 5 s window.
    let quick: Vec<_> = (0..4).map(|_| spawn_get(&k, ns, "web-1", "")).collect();
    for mut q in quick {
        let _ = q.wait();
    }
    let mut pods = Value::Null;
    let rated = eventually(Duration::from_secs(3), || {
        pods = raw("pods/*/requests_per_second");
        milli(&pods) > 0
    });
    assert!(rated, "{pods}");
    assert_eq!(pods["kind"], "MetricValueList");
    assert_eq!(pods["items"][0]["describedObject"]["name"], "web-1");
    assert!(
        milli(&pods) <= 7 * 1000 / 2,
        "7 requests in a >= 2 s window: {pods}"
    );
    let by_label = raw("pods/*/requests_per_second?labelSelector=app%3Dother");
    assert_eq!(by_label["items"], json!([]), "{by_label}");
    // Discovery lists the metrics; an unknown metric is a 404.
    let disco = k.ok(&["get", "--raw", "/apis/custom.metrics.k8s.io/v1beta2"]);
    assert!(disco.contains("pods/requests_per_second"), "{disco}");
    let missing = k.run(&[
        "get",
        "--raw",
        &format!("/apis/custom.metrics.k8s.io/v1beta2/namespaces/{ns}/pods/*/nope"),
    ]);
    assert!(missing.stderr.contains("NotFound"), "{}", missing.stderr);
    k.ok(&["delete", "namespace", ns, "--wait=false"]);
}

#[test]
fn metrics_are_read_under_rbac() {
    let s = server();
    let k = s.kubectl();
    let ns = "top-rbac";
    k.ok(&["create", "namespace", ns]);
    echo_pod(&k, ns, "watched", json!({"app": "watched"}));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = |user: &str| {
        let doc = s
            .wkube(&["kubeconfig", "--user", user, "--ttl", "1h"])
            .success();
        let path = dir.path().join(format!("{user}.kubeconfig"));
        std::fs::write(&path, doc).unwrap();
        s.kubectl_with(path)
    };
    let viewer = kubeconfig("top-viewer");
    let stranger = kubeconfig("top-stranger");
    k.ok(&[
        "create",
        "rolebinding",
        "viewer",
        "-n",
        ns,
        "--clusterrole=view",
        "--user=top-viewer",
    ]);
    let shown = eventually(Duration::from_secs(10), || {
        row(&top_pods(&viewer, &["-n", ns]), "watched").is_some()
    });
    assert!(shown, "{}", viewer.run(&["top", "pods", "-n", ns]).stderr);
    let refused = stranger.run(&["top", "pods", "-n", ns]);
    assert!(
        refused.stderr.contains("forbidden") && refused.stderr.contains("pods.metrics.k8s.io"),
        "{}",
        refused.stderr
    );
    // Node figures need a cluster-wide grant.
    let nodes = viewer.run(&["top", "nodes"]);
    assert!(nodes.stderr.contains("forbidden"), "{}", nodes.stderr);
    k.ok(&["delete", "namespace", ns, "--wait=false"]);
}
