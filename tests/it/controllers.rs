//! The controller manager inside `wkube server`, driven with stock kubectl:
//! Deployments roll out, roll back and scale; ReplicaSets replace pods.
//! Pods run on the server's own node (`spec.nodeName` in the template until
//! the scheduler places them).

use crate::common;

use std::time::Duration;

use common::{Kubectl, TEST_NODE, TestServer, eventually};
use serde_json::Value;

fn server() -> TestServer {
    common::node_server_with_examples()
}

fn deployment(name: &str, replicas: u32, image: &str) -> String {
    format!(
        r#"{{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {{"name": "{name}"}},
            "spec": {{"replicas": {replicas}, "selector": {{"matchLabels": {{"app": "{name}"}}}},
              "template": {{"metadata": {{"labels": {{"app": "{name}"}}}},
                "spec": {{"nodeName": "{TEST_NODE}",
                  "containers": [{{"name": "web", "image": "{image}"}}]}}}}}}}}"#
    )
}

fn running_pods(k: &Kubectl, selector: &str) -> Vec<Value> {
    let out = k.ok(&["get", "pods", "-l", selector, "-o", "json"]);
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .cloned()
        .collect()
}

#[test]
fn a_deployment_rolls_out_updates_rolls_back_and_scales() {
    let s = server();
    let k = s.kubectl();
    k.ok_with_stdin(&["apply", "-f", "-"], &deployment("web", 3, "hello:v1"));
    k.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    assert_eq!(running_pods(&k, "app=web").len(), 3);

    k.ok(&["set", "image", "deployment/web", "web=echo:v1"]);
    k.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    let images = || -> Vec<String> {
        running_pods(&k, "app=web")
            .iter()
            .map(|p| {
                p["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    assert!(eventually(Duration::from_secs(30), || images() == ["echo:v1"; 3]));
    let history = k.ok(&["rollout", "history", "deployment/web"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");

    k.ok(&["rollout", "undo", "deployment/web"]);
    k.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    assert!(eventually(Duration::from_secs(30), || images() == ["hello:v1"; 3]));
    let rev = k.ok(&[
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
    ]);
    assert_eq!(rev, "3", "a rollback is a new revision");

    k.ok(&["scale", "deployment/web", "--replicas=1"]);
    assert!(eventually(Duration::from_secs(30), || running_pods(
        &k, "app=web"
    )
    .len()
        == 1));
    let d: Value =
        serde_json::from_str(&k.ok(&["get", "deployment", "web", "-o", "json"])).unwrap();
    assert!(
        eventually(Duration::from_secs(30), || {
            let d: Value =
                serde_json::from_str(&k.ok(&["get", "deployment", "web", "-o", "json"])).unwrap();
            d["status"]["availableReplicas"] == 1 && d["status"]["replicas"] == 1
        }),
        "{}",
        d["status"]
    );

    // Deleting the Deployment takes its ReplicaSets and pods with it.
    k.ok(&["delete", "deployment", "web", "--timeout=60s"]);
    let gone = eventually(Duration::from_secs(60), || {
        k.ok(&["get", "rs,pods", "-l", "app=web", "-o", "name"])
            .trim()
            .is_empty()
    });
    assert!(
        gone,
        "{}",
        k.ok(&["get", "rs,pods", "-l", "app=web", "-o", "wide"])
    );
}

#[test]
fn a_replica_set_replaces_a_deleted_pod_and_deleting_it_removes_its_pods() {
    let s = server();
    let k = s.kubectl();
    k.ok_with_stdin(
        &["apply", "-f", "-"],
        &deployment("web", 2, "hello:v1").replace("\"Deployment\"", "\"ReplicaSet\""),
    );
    assert!(eventually(Duration::from_secs(60), || running_pods(
        &k, "app=web"
    )
    .len()
        == 2));
    let victim = running_pods(&k, "app=web")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    k.ok(&["delete", "pod", &victim]);
    assert!(eventually(Duration::from_secs(60), || {
        let pods = running_pods(&k, "app=web");
        pods.len() == 2
            && pods
                .iter()
                .all(|p| p["metadata"]["name"] != victim.as_str())
    }));
    let rs: Value = serde_json::from_str(&k.ok(&["get", "rs", "web", "-o", "json"])).unwrap();
    let pod = &running_pods(&k, "app=web")[0];
    assert_eq!(
        pod["metadata"]["ownerReferences"][0]["uid"], rs["metadata"]["uid"],
        "pods are owned by their ReplicaSet"
    );
    k.ok(&["delete", "rs", "web"]);
    assert!(
        eventually(Duration::from_secs(60), || k
            .ok(&["get", "pods", "-l", "app=web", "-o", "name"])
            .trim()
            .is_empty()),
        "the ReplicaSet's pods outlived it"
    );
}

#[test]
fn kubectl_create_deployment_runs_on_the_node_the_scheduler_picks() {
    let s = server();
    let k = s.kubectl();
    k.ok(&[
        "create",
        "deployment",
        "hello",
        "--image=hello:v1",
        "--replicas=2",
    ]);
    k.ok(&["rollout", "status", "deployment/hello", "--timeout=90s"]);
    let pods = running_pods(&k, "app=hello");
    assert_eq!(pods.len(), 2);
    for p in &pods {
        assert_eq!(p["spec"]["nodeName"], TEST_NODE);
        let name = p["metadata"]["name"].as_str().unwrap();
        let out = k.ok(&[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/default/pods/{name}/proxy/"),
        ]);
        assert_eq!(out, "Hello from wkube!\n");
    }
}

#[test]
fn a_rollout_that_makes_no_progress_fails_after_its_progress_deadline() {
    let s = server();
    let k = s.kubectl();
    k.ok_with_stdin(&["apply", "-f", "-"], &deployment("stuck", 1, "hello:v1"));
    k.ok(&["rollout", "status", "deployment/stuck", "--timeout=90s"]);
    // A module that was never pushed: the new pod waits in ErrModulePull.
    k.ok(&[
        "patch",
        "deployment",
        "stuck",
        "-p",
        r#"{"spec": {"progressDeadlineSeconds": 3,
             "template": {"spec": {"containers": [{"name": "web", "image": "missing:v1"}]}}}}"#,
    ]);
    let out = k.run(&["rollout", "status", "deployment/stuck", "--timeout=60s"]);
    assert!(!out.status.success(), "{}", out.stdout);
    assert!(
        out.stderr.contains("exceeded its progress deadline"),
        "{}",
        out.stderr
    );
    let d: Value =
        serde_json::from_str(&k.ok(&["get", "deployment", "stuck", "-o", "json"])).unwrap();
    let progressing = d["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .cloned()
        .unwrap();
    assert_eq!(progressing["status"], "False", "{progressing}");
    assert_eq!(progressing["reason"], "ProgressDeadlineExceeded");
    // The old pod keeps serving meanwhile.
    assert_eq!(running_pods(&k, "app=stuck").len(), 1);

    // The controllers' work shows in the server's metrics.
    let metrics = k.ok(&["get", "--raw", "/metrics"]);
    for controller in ["deployment", "replicaset"] {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "controller_runtime_reconcile_total{{controller=\"{controller}\",result=\"success\"}}"
                ))
            })
            .unwrap_or_else(|| panic!("no reconcile count for {controller}:\n{metrics}"));
        let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n >= 2, "{line}");
    }
}
