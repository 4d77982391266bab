//! The scheduler inside `wkube server`, driven through the API with stock
//! kubectl. Most tests use "hollow" nodes — Node objects with capacity and
//! a Ready condition but no agent — so that placement alone is observed;
//! one test runs the real local node and sees a scheduled pod run.

use crate::common;

use std::time::Duration;

use common::builders::PodBuilder;
use common::{Kubectl, TEST_NODE, TestServer, eventually, guest};
use serde_json::{Value, json};

/// Longest a placement may take (back-off after a miss is 1 s at first).
const PLACE_TIMEOUT: Duration = Duration::from_secs(30);

/// A hollow node: capacity, allocatable and a Ready condition, optionally
/// labels and taints.
struct NodeBuilder {
    obj: Value,
}

impl NodeBuilder {
    fn new(name: &str, cpu: &str, memory: &str) -> Self {
        let amounts = json!({"cpu": cpu, "memory": memory, "pods": "110"});
        NodeBuilder {
            obj: json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                "spec": {},
                "status": {
                    "capacity": amounts, "allocatable": amounts,
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                    "message": "hollow node"}],
                },
            }),
        }
    }

    fn label(mut self, key: &str, value: &str) -> Self {
        self.obj["metadata"]["labels"][key] = json!(value);
        self
    }

    fn taint(mut self, key: &str, value: &str, effect: &str) -> Self {
        let taints = self.obj["spec"]["taints"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut taints = taints;
        taints.push(json!({"key": key, "value": value, "effect": effect}));
        self.obj["spec"]["taints"] = json!(taints);
        self
    }

    /// Creates the node; its status is sent again through `nodes/status`
    /// so it holds whatever the create kept.
    fn create(self, k: &Kubectl) {
        let name = self.obj["metadata"]["name"].as_str().unwrap().to_string();
        k.ok_with_stdin(&["create", "-f", "-"], &self.obj.to_string());
        let status = json!({"status": self.obj["status"]}).to_string();
        k.ok(&[
            "patch",
            "node",
            &name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status,
        ]);
    }
}

fn pod_json(k: &Kubectl, name: &str) -> Value {
    serde_json::from_str(&k.ok(&["get", "pod", name, "-o", "json"])).expect("pod json")
}

fn node_of(k: &Kubectl, name: &str) -> Option<String> {
    pod_json(k, name)["spec"]["nodeName"]
        .as_str()
        .map(str::to_string)
}

/// Waits until the pod is bound and returns its node.
fn wait_placed(k: &Kubectl, name: &str) -> String {
    let mut node = None;
    let placed = eventually(PLACE_TIMEOUT, || {
        node = node_of(k, name);
        node.is_some()
    });
    assert!(placed, "pod {name} was not placed: {}", pod_json(k, name));
    node.unwrap()
}

fn hollow_server(strategy: Option<&str>) -> TestServer {
    let mut b = TestServer::builder();
    if let Some(s) = strategy {
        b = b.arg(format!("--scheduler-strategy={s}"));
    }
    b.start()
}

#[test]
fn a_pod_too_big_for_every_node_stays_pending_then_lands_on_a_big_node() {
    let server = hollow_server(None);
    let k = server.kubectl();
    NodeBuilder::new("small-1", "4", "8Gi").create(&k);
    NodeBuilder::new("small-2", "4", "8Gi").create(&k);
    NodeBuilder::new("tainted", "64", "256Gi")
        .taint("dedicated", "db", "NoSchedule")
        .create(&k);
    PodBuilder::new("big")
        .container("web", "hello:v1")
        .requests("1", "32Gi")
        .create(&k);

    let want = "0/3 nodes are available: 2 Insufficient memory, \
                1 node(s) had untolerated taint {dedicated: db}.";
    let mut last = Value::Null;
    let reported = eventually(PLACE_TIMEOUT, || {
        last = pod_json(&k, "big");
        last["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| {
                c["type"] == "PodScheduled"
                    && c["status"] == "False"
                    && c["reason"] == "Unschedulable"
                    && c["message"] == want
            })
    });
    assert!(reported, "no Unschedulable condition with {want:?}: {last}");
    assert!(last["spec"]["nodeName"].is_null());
    assert_eq!(last["status"]["phase"], "Pending");
    let events = k.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=big",
        "-o",
        "json",
    ]);
    let events: Value = serde_json::from_str(&events).unwrap();
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "FailedScheduling"
                && e["message"] == want
                && e["type"] == "Warning"),
        "no FailedScheduling event: {events}"
    );

    NodeBuilder::new("big-node", "16", "64Gi").create(&k);
    assert_eq!(wait_placed(&k, "big"), "big-node");
    let pod = pod_json(&k, "big");
    assert!(
        pod["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "PodScheduled" && c["status"] == "True"),
        "{pod}"
    );
    // And the Normal event `kubectl describe pod` shows.
    let scheduled = eventually(Duration::from_secs(10), || {
        let events = k.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=big,reason=Scheduled",
            "-o",
            "json",
        ]);
        let events: Value = serde_json::from_str(&events).unwrap();
        events["items"].as_array().unwrap().iter().any(|e| {
            e["message"] == "Successfully assigned default/big to big-node" && e["type"] == "Normal"
        })
    });
    assert!(scheduled, "no Scheduled event");
}

#[test]
fn taints_selectors_and_affinity_are_honoured() {
    let server = hollow_server(None);
    let k = server.kubectl();
    NodeBuilder::new("ssd", "8", "16Gi")
        .label("disk", "ssd")
        .label("zone", "a")
        .create(&k);
    NodeBuilder::new("hdd", "8", "16Gi")
        .label("disk", "hdd")
        .label("zone", "b")
        .create(&k);
    NodeBuilder::new("gpu", "8", "16Gi")
        .label("zone", "c")
        .taint("gpu", "true", "NoSchedule")
        .create(&k);

    // (pod, expected node)
    let cases = [
        (
            PodBuilder::new("by-selector")
                .container("web", "hello:v1")
                .node_selector("disk", "hdd"),
            "hdd",
        ),
        (
            PodBuilder::new("by-affinity")
                .container("web", "hello:v1")
                .required_affinity("zone", "In", &["a"]),
            "ssd",
        ),
        (
            PodBuilder::new("tolerates-gpu")
                .container("web", "hello:v1")
                .toleration("gpu", "true", "NoSchedule")
                .node_selector("zone", "c"),
            "gpu",
        ),
        (
            PodBuilder::new("prefers-b")
                .container("web", "hello:v1")
                .preferred_affinity("zone", "b"),
            "hdd",
        ),
    ];
    let names: Vec<(String, &str)> = cases
        .into_iter()
        .map(|(p, want)| {
            let name = p.name().to_string();
            p.create(&k);
            (name, want)
        })
        .collect();
    for (name, want) in &names {
        assert_eq!(&wait_placed(&k, name), want, "pod {name}");
    }

    // Without a toleration the tainted node is never chosen; NotIn keeps
    // pods off the named zones.
    for i in 0..4 {
        PodBuilder::new(&format!("not-a-{i}"))
            .container("web", "hello:v1")
            .required_affinity("zone", "NotIn", &["a"])
            .create(&k);
    }
    for i in 0..4 {
        assert_eq!(wait_placed(&k, &format!("not-a-{i}")), "hdd");
    }
    // A selector nothing matches stays pending with the affinity reason.
    PodBuilder::new("nowhere")
        .container("web", "hello:v1")
        .node_selector("disk", "nvme")
        .create(&k);
    let want = "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.";
    assert!(
        eventually(PLACE_TIMEOUT, || {
            pod_json(&k, "nowhere")["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["message"] == want)
        }),
        "{}",
        pod_json(&k, "nowhere")
    );
}

/// Three equal nodes, ten small pods: the nodes the pods landed on.
fn place_ten_small_pods(strategy: &str) -> std::collections::BTreeSet<String> {
    let server = hollow_server(Some(strategy));
    let k = server.kubectl();
    for n in ["n1", "n2", "n3"] {
        NodeBuilder::new(n, "4", "8Gi").create(&k);
    }
    for i in 0..10 {
        PodBuilder::new(&format!("small-{i}"))
            .container("web", "hello:v1")
            .requests("100m", "128Mi")
            .create(&k);
    }
    (0..10)
        .map(|i| wait_placed(&k, &format!("small-{i}")))
        .collect()
}

#[test]
fn with_most_allocated_ten_small_pods_land_on_one_node() {
    let used = place_ten_small_pods("MostAllocated");
    assert_eq!(used.len(), 1, "{used:?}");
}

#[test]
fn with_least_allocated_ten_small_pods_spread() {
    let used = place_ten_small_pods("LeastAllocated");
    assert_eq!(used.len(), 3, "{used:?}");
}

#[test]
fn a_pod_without_a_node_is_placed_on_the_local_node_and_runs() {
    let server = TestServer::builder().with_node().start();
    server
        .wkube(&["push", guest("hello-http").to_str().unwrap(), "hello:v1"])
        .success();
    let k = server.kubectl();
    PodBuilder::new("web")
        .container("web", "hello:v1")
        .requests("100m", "64Mi")
        .create(&k);
    assert_eq!(wait_placed(&k, "web"), TEST_NODE);
    let mut last = Value::Null;
    let running = eventually(Duration::from_secs(60), || {
        last = pod_json(&k, "web");
        last["status"]["phase"] == "Running"
    });
    assert!(running, "pod did not run: {last}");
}

#[test]
fn a_high_priority_pod_preempts_a_low_one_and_a_never_preempting_pod_waits() {
    let server = TestServer::builder().with_node().arg("--cpu=2").start();
    server
        .wkube(&["push", guest("hello-http").to_str().unwrap(), "hello:v1"])
        .success();
    let k = server.kubectl();
    k.ok(&["create", "priorityclass", "low", "--value=10"]);
    k.ok(&["create", "priorityclass", "high", "--value=1000"]);
    k.ok(&[
        "create",
        "priorityclass",
        "high-polite",
        "--value=1000",
        "--preemption-policy=Never",
    ]);
    let pod = |name: &str, class: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"priorityClassName": class, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "hello:v1",
                   "resources": {"requests": {"cpu": "1500m", "memory": "16Mi"}}}]}})
        .to_string()
    };
    let phase = |name: &str| {
        k.run(&["get", "pod", name, "-o", "jsonpath={.status.phase}"])
            .stdout
    };
    k.ok_with_stdin(&["create", "-f", "-"], &pod("low", "low"));
    assert!(
        eventually(PLACE_TIMEOUT, || phase("low") == "Running"),
        "{}",
        pod_json(&k, "low")
    );

    // Same priority as `high` but never preempting: it waits.
    k.ok_with_stdin(&["create", "-f", "-"], &pod("polite", "high-polite"));
    assert!(
        eventually(PLACE_TIMEOUT, || {
            pod_json(&k, "polite")["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["reason"] == "Unschedulable")
        }),
        "{}",
        pod_json(&k, "polite")
    );
    assert_eq!(phase("low"), "Running");
    k.ok(&["delete", "pod", "polite", "--wait=false"]);

    // `high` fits only in place of `low`: low is preempted, high runs.
    k.ok_with_stdin(&["create", "-f", "-"], &pod("high", "high"));
    assert!(
        eventually(Duration::from_secs(60), || phase("high") == "Running"),
        "{}\n{}",
        pod_json(&k, "high"),
        k.run(&["get", "pods", "-o", "wide"]).stdout
    );
    assert_eq!(pod_json(&k, "high")["spec"]["priority"], 1000);
    assert!(
        eventually(Duration::from_secs(30), || !k
            .run(&["get", "pod", "low"])
            .status
            .success()),
        "the preempted pod is still there"
    );
    let events = k.ok(&["get", "events", "--field-selector", "reason=Preempted"]);
    assert!(events.contains("pod/low"), "{events}");
}
