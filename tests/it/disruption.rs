//! PodDisruptionBudgets and evictions, driven as a cluster operator drives
//! them: `kubectl cordon`, `uncordon` and `drain` against a server with
//! its own node, and the eviction subresource over plain HTTPS. The pods
//! are the `hello` guest (`guest-examples/hello-http`), placed by the
//! scheduler so a cordoned node gets no replacements.

use crate::common;

use std::time::Duration;

use common::{COMMAND_TIMEOUT, Kubectl, TEST_NODE, TestServer, eventually, run};
use serde_json::{Value, json};

/// The budget's message Kubernetes answers a refused eviction with.
const VIOLATES: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

fn deployment(name: &str, replicas: u32) -> String {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
             "template": {"metadata": {"labels": {"app": name}},
               "spec": {"containers": [{"name": "web", "image": "hello:v1"}]}}}})
    .to_string()
}

fn budget(name: &str, app: &str, min_available: u32) -> String {
    json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name},
           "spec": {"minAvailable": min_available, "selector": {"matchLabels": {"app": app}}}})
    .to_string()
}

fn json_of(k: &Kubectl, args: &[&str]) -> Value {
    serde_json::from_str(&k.ok(args)).expect("kubectl -o json")
}

/// The budget's status once the controller has counted `healthy` pods.
fn budget_settles(k: &Kubectl, name: &str, healthy: i64, allowed: i64) -> Value {
    let mut last = Value::Null;
    let settled = eventually(Duration::from_secs(60), || {
        last = json_of(k, &["get", "pdb", name, "-o", "json"]);
        last["status"]["currentHealthy"] == healthy
            && last["status"]["disruptionsAllowed"] == allowed
            && last["status"]["observedGeneration"] == last["metadata"]["generation"]
    });
    assert!(settled, "budget {name} did not settle: {}", last["status"]);
    last
}

fn running_pods(k: &Kubectl, selector: &str) -> Vec<String> {
    let list = json_of(k, &["get", "pods", "-l", selector, "-o", "json"]);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn node_row(k: &Kubectl) -> String {
    k.ok(&["get", "nodes", TEST_NODE, "--no-headers"])
}

#[test]
fn drain_stops_at_a_disruption_budget_and_finishes_once_the_budget_allows() {
    let s = common::node_server_with_examples();
    let k = s.kubectl();
    k.ok_with_stdin(&["apply", "-f", "-"], &deployment("web", 2));
    k.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    k.ok_with_stdin(&["apply", "-f", "-"], &budget("web", "web", 2));
    budget_settles(&k, "web", 2, 0);
    let table = k.ok(&["get", "pdb", "web"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap()
        .split("  ")
        .filter(|c| !c.is_empty())
        .map(str::trim)
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "MIN AVAILABLE",
            "MAX UNAVAILABLE",
            "ALLOWED DISRUPTIONS",
            "AGE"
        ]
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], ["web", "2", "N/A", "0"]);

    // cordon and uncordon show in the node's status column.
    k.ok(&["cordon", TEST_NODE]);
    assert!(
        node_row(&k).contains("Ready,SchedulingDisabled"),
        "{}",
        node_row(&k)
    );
    k.ok(&["uncordon", TEST_NODE]);
    assert!(
        !node_row(&k).contains("SchedulingDisabled"),
        "{}",
        node_row(&k)
    );

    // The budget allows nothing: drain retries its 429s until its timeout.
    let out = k.run(&["drain", TEST_NODE, "--ignore-daemonsets", "--timeout=6s"]);
    assert!(
        !out.status.success(),
        "drain finished past the budget: {}",
        out.stdout
    );
    assert!(out.stderr.contains(VIOLATES), "{}", out.stderr);
    // kubectl prints the Status message only; the budget's name is in its
    // causes (see the next test), the pods it holds back are named here.
    assert!(
        out.stderr.contains("error when evicting pods/\"web-"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("global timeout reached"),
        "{}",
        out.stderr
    );
    assert!(
        node_row(&k).contains("SchedulingDisabled"),
        "drain cordons first"
    );
    assert_eq!(running_pods(&k, "app=web").len(), 2, "no pod was evicted");

    // Relaxed, the budget lets drain evict both pods. Their replacements
    // cannot land on the cordoned node, so they stay Pending.
    k.ok(&[
        "patch",
        "pdb",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"minAvailable":0}}"#,
    ]);
    let out = k.ok(&["drain", TEST_NODE, "--ignore-daemonsets", "--timeout=90s"]);
    assert!(out.contains(&format!("node/{TEST_NODE} drained")), "{out}");
    assert!(running_pods(&k, "app=web").is_empty());
    let pending = json_of(&k, &["get", "pods", "-l", "app=web", "-o", "json"]);
    assert!(
        pending["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["spec"]["nodeName"].is_null()),
        "a replacement was placed on the cordoned node"
    );

    // Uncordoned, the node takes the replacements again.
    k.ok(&["uncordon", TEST_NODE]);
    assert!(
        eventually(Duration::from_secs(90), || running_pods(&k, "app=web")
            .len()
            == 2),
        "{}",
        k.ok(&["get", "pods", "-o", "wide"])
    );
}

/// POSTs an Eviction of `pod` with curl; the HTTP code and the body.
fn evict(s: &TestServer, pod: &str) -> (u16, Value) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("body");
    let token = admin_token(s);
    let body = json!({"apiVersion": "policy/v1", "kind": "Eviction",
                      "metadata": {"name": pod, "namespace": "default"}})
    .to_string();
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "--cacert"])
        .arg(s.pki("ca.crt"))
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args([
            "-H",
            "Content-Type: application/json",
            "-X",
            "POST",
            "-d",
            &body,
        ])
        .arg("-o")
        .arg(&out)
        .args(["-w", "%{http_code}"])
        .arg(format!(
            "{}/api/v1/namespaces/default/pods/{pod}/eviction",
            s.api_url
        ));
    let result = run(cmd, None, COMMAND_TIMEOUT);
    let code = result.stdout.trim().parse().expect("an HTTP code");
    let body = std::fs::read(&out).unwrap_or_default();
    (code, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn admin_token(s: &TestServer) -> String {
    let text = std::fs::read_to_string(s.admin_kubeconfig()).unwrap();
    let kc: Value = serde_yaml_ng::from_str(&text).unwrap();
    kc["users"][0]["user"]["token"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn an_eviction_spends_the_budget_then_is_refused_with_429() {
    let s = common::node_server_with_examples();
    let k = s.kubectl();
    k.ok_with_stdin(&["apply", "-f", "-"], &deployment("api", 3));
    k.ok(&["rollout", "status", "deployment/api", "--timeout=90s"]);
    // A share of the Deployment's replicas: 3 expected, 50% (rounded up)
    // may be down, so 1 must stay healthy and 2 may go.
    let share = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "share"},
        "spec": {"maxUnavailable": "50%", "selector": {"matchLabels": {"app": "api"}}}});
    k.ok_with_stdin(&["apply", "-f", "-"], &share.to_string());
    let status = budget_settles(&k, "share", 3, 2)["status"].clone();
    assert_eq!(
        (&status["expectedPods"], &status["desiredHealthy"]),
        (&json!(3), &json!(1)),
        "{status}"
    );
    let condition = &status["conditions"][0];
    assert_eq!(
        (
            &condition["type"],
            &condition["status"],
            &condition["reason"]
        ),
        (
            &json!("DisruptionAllowed"),
            &json!("True"),
            &json!("SufficientPods")
        )
    );
    k.ok(&["delete", "pdb", "share"]);

    // As a user would type it (kubectl sends it as protobuf).
    k.ok(&[
        "create",
        "pdb",
        "api",
        "--selector=app=api",
        "--min-available=2",
    ]);
    budget_settles(&k, "api", 3, 1);
    // Replacements of evicted pods stay Pending on a cordoned node, so
    // they never make the budget healthy again during the test.
    k.ok(&["cordon", TEST_NODE]);

    let pods = running_pods(&k, "app=api");
    let (code, status) = evict(&s, &pods[0]);
    assert_eq!(code, 201, "{status}");
    assert_eq!(status["status"], "Success");
    // Spent at once, with the pod recorded until its delete is seen.
    let pdb = json_of(&k, &["get", "pdb", "api", "-o", "json"]);
    assert!(
        pdb["status"]["disruptionsAllowed"] == 0,
        "{}",
        pdb["status"]
    );

    let (code, status) = evict(&s, &pods[1]);
    assert_eq!(code, 429, "{status}");
    assert_eq!(status["reason"], "TooManyRequests");
    assert_eq!(status["message"], VIOLATES);
    let cause = &status["details"]["causes"][0];
    assert_eq!(cause["reason"], "DisruptionBudget");
    assert!(
        cause["message"]
            .as_str()
            .unwrap()
            .starts_with("The disruption budget api needs 2 healthy pods and has"),
        "{cause}"
    );
    assert!(running_pods(&k, "app=api").contains(&pods[1]));

    // kubectl shows the same refusal.
    let body = json!({"apiVersion": "policy/v1", "kind": "Eviction",
                      "metadata": {"name": pods[1], "namespace": "default"}});
    let path = format!("/api/v1/namespaces/default/pods/{}/eviction", pods[1]);
    let out = k.run_with_stdin(&["create", "--raw", &path, "-f", "-"], &body.to_string());
    assert!(!out.status.success(), "{}", out.stdout);
    assert!(out.stderr.contains(VIOLATES), "{}", out.stderr);

    // A second budget over the same pods is a 500, as in Kubernetes.
    k.ok_with_stdin(&["apply", "-f", "-"], &budget("api-too", "api", 0));
    let (code, status) = evict(&s, &pods[1]);
    assert_eq!(code, 500, "{status}");
    assert_eq!(
        status["message"],
        "Internal error occurred: This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
    );

    // Evicting is part of `edit` (and so `admin`), as in Kubernetes.
    for role in ["edit", "admin"] {
        let rules = k.ok(&["get", "clusterrole", role, "-o", "json"]);
        let rules: Value = serde_json::from_str(&rules).unwrap();
        let allows = rules["rules"].as_array().unwrap().iter().any(|r| {
            r["resources"]
                .as_array()
                .is_some_and(|rs| rs.contains(&json!("pods/eviction")))
                && r["verbs"]
                    .as_array()
                    .is_some_and(|v| v.contains(&json!("create")))
        });
        assert!(allows, "{role} cannot create pods/eviction");
    }
}
