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

/// Objects in the namespace the kill interrupts: enough that emptying it
/// takes far longer than the moment between the delete and the kill.
const DOOMED_OBJECTS: usize = 400;

#[test]
fn a_namespace_deletion_cut_short_by_sigkill_completes_after_restart() {
    let mut server = TestServer::start();
    let k = server.kubectl();
    k.ok(&["create", "namespace", "big"]);
    let items: Vec<Value> = (0..DOOMED_OBJECTS)
        .map(|i| {
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("cm-{i}"), "namespace": "big"},
                "data": {"i": i.to_string()}})
        })
        .collect();
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    k.ok_with_stdin(&["create", "-f", "-"], &list.to_string());
    let count = |k: &Kubectl| {
        k.ok(&["get", "configmaps", "-n", "big", "-o", "name"])
            .lines()
            .filter(|l| l.starts_with("configmap/cm-"))
            .count()
    };
    assert_eq!(count(&k), DOOMED_OBJECTS);

    // The delete only marks the namespace; the kill comes as soon as it
    // is answered, while the namespace controller is emptying it.
    k.ok(&["delete", "namespace", "big", "--wait=false"]);
    server.kill();
    server.restart();

    let k = server.kubectl();
    let phase = k.run(&["get", "namespace", "big", "-o", "jsonpath={.status.phase}"]);
    assert!(
        phase.status.success() && phase.stdout == "Terminating",
        "the kill came after the namespace was gone, so nothing was cut short: {phase:?}"
    );
    let gone = eventually(Duration::from_secs(60), || {
        let out = k.run(&["get", "namespace", "big"]);
        out.stderr.contains("namespaces \"big\" not found")
    });
    assert!(
        gone,
        "namespace still there after restart: {}",
        k.ok(&["get", "namespace", "big", "-o", "yaml"])
    );
    assert_eq!(count(&k), 0);
    // A namespace of the same name starts empty, with its default account.
    k.ok(&["create", "namespace", "big"]);
    assert!(eventually(Duration::from_secs(10), || {
        k.run(&["get", "serviceaccount", "default", "-n", "big"])
            .status
            .success()
    }));
}

/// ConfigMaps `dep-0..n` owned by the ConfigMap `owner` (whose uid is
/// returned): owner references with nothing else that acts on them.
fn owner_with_dependents(k: &Kubectl, ns: &str, owner: &str, n: usize) -> String {
    let out = k.ok(&[
        "-n",
        ns,
        "create",
        "configmap",
        owner,
        "--from-literal=a=b",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let uid = out.trim().to_string();
    let items: Vec<Value> = (0..n)
        .map(|i| {
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("{owner}-dep-{i}"), "namespace": ns,
                    "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap",
                        "name": owner, "uid": uid, "blockOwnerDeletion": true}]}})
        })
        .collect();
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    k.ok_with_stdin(&["create", "-f", "-"], &list.to_string());
    uid
}

fn dependents(k: &Kubectl, ns: &str, owner: &str) -> Vec<Value> {
    let out = k.ok(&["-n", ns, "get", "configmaps", "-o", "json"]);
    let list: Value = serde_json::from_str(&out).unwrap();
    let prefix = format!("{owner}-dep-");
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .cloned()
        .collect()
}

#[test]
fn deleting_an_owner_collects_releases_or_waits_for_its_dependents_as_cascade_says() {
    let server = TestServer::start();
    let k = server.kubectl();
    let ns = "default";

    // Background (kubectl's default): the owner goes at once, then its
    // dependents.
    owner_with_dependents(&k, ns, "bg", 5);
    k.ok(&["-n", ns, "delete", "configmap", "bg"]);
    assert!(
        eventually(Duration::from_secs(30), || dependents(&k, ns, "bg")
            .is_empty()),
        "background dependents left: {:?}",
        dependents(&k, ns, "bg")
    );

    // Foreground: kubectl waits until the owner is gone, which is after
    // every dependent.
    owner_with_dependents(&k, ns, "fg", 5);
    k.ok(&[
        "-n",
        ns,
        "delete",
        "configmap",
        "fg",
        "--cascade=foreground",
        "--timeout=30s",
    ]);
    assert!(dependents(&k, ns, "fg").is_empty());

    // Orphan: the owner goes, the dependents stay without its reference.
    let uid = owner_with_dependents(&k, ns, "or", 5);
    k.ok(&[
        "-n",
        ns,
        "delete",
        "configmap",
        "or",
        "--cascade=orphan",
        "--timeout=30s",
    ]);
    let left = dependents(&k, ns, "or");
    assert_eq!(left.len(), 5);
    for d in left {
        let refs = d["metadata"]["ownerReferences"].as_array().cloned();
        assert!(
            refs.unwrap_or_default()
                .iter()
                .all(|r| r["uid"] != uid.as_str()),
            "{d}"
        );
    }
}

#[test]
fn dependents_of_an_owner_deleted_just_before_a_sigkill_are_collected_after_restart() {
    let mut server = TestServer::start();
    let k = server.kubectl();
    owner_with_dependents(&k, "default", "boss", DOOMED_OBJECTS);
    k.ok(&["delete", "configmap", "boss", "--wait=false"]);
    server.kill();
    server.restart();
    let k = server.kubectl();
    let left = dependents(&k, "default", "boss").len();
    assert!(
        left > 0,
        "the kill came after every dependent was gone, so nothing was cut short"
    );
    assert!(
        eventually(Duration::from_secs(60), || dependents(
            &k, "default", "boss"
        )
        .is_empty()),
        "{} dependents left after restart",
        dependents(&k, "default", "boss").len()
    );
}
