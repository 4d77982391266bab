//! ResourceQuotas and LimitRanges, driven with stock kubectl against the
//! shared server (no node: the pods stay Pending, which is enough to count
//! them), each test in a namespace of its own.

use crate::common;

use std::time::Duration;

use common::{Kubectl, eventually, shared_server};
use serde_json::{Value, json};

fn namespace(k: &Kubectl, name: &str) {
    k.ok(&["create", "namespace", name]);
}

fn pod(ns: &str, name: &str, resources: Value) -> String {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
           "spec": {"containers": [{"name": "web", "image": "hello:v1", "resources": resources}]}})
    .to_string()
}

/// Waits until the quota controller has counted the namespace: `used`
/// shows `resource` at `value`.
fn quota_shows(k: &Kubectl, ns: &str, quota: &str, resource: &str, value: &str) {
    let mut last = Value::Null;
    let shown = eventually(Duration::from_secs(30), || {
        last =
            serde_json::from_str(&k.ok(&["-n", ns, "get", "quota", quota, "-o", "json"])).unwrap();
        last["status"]["used"][resource] == value
    });
    assert!(
        shown,
        "quota {quota} never showed {resource}={value}: {}",
        last["status"]
    );
}

#[test]
fn a_quota_of_ten_pods_refuses_the_eleventh_and_gives_a_share_back_on_delete() {
    let k = shared_server().kubectl();
    let ns = "quota-ten";
    namespace(&k, ns);
    k.ok(&["-n", ns, "create", "quota", "q", "--hard=pods=10"]);
    quota_shows(&k, ns, "q", "pods", "0");
    let pods: Vec<Value> = (1..=10)
        .map(|i| serde_json::from_str(&pod(ns, &format!("p{i}"), json!({}))).unwrap())
        .collect();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": pods}).to_string();
    k.ok_with_stdin(&["apply", "-f", "-"], &list);

    let out = k.run_with_stdin(&["create", "-f", "-"], &pod(ns, "p11", json!({})));
    assert!(!out.status.success(), "the 11th pod was admitted");
    assert!(
        out.stderr.contains(
            "pods \"p11\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=10, limited: pods=10"
        ),
        "{}",
        out.stderr
    );

    // describe shows used against hard.
    let described = k.ok(&["-n", ns, "describe", "quota", "q"]);
    let row: Vec<&str> = described
        .lines()
        .find(|l| l.trim_start().starts_with("pods"))
        .unwrap_or_else(|| panic!("no pods row in:\n{described}"))
        .split_whitespace()
        .collect();
    assert_eq!(row, ["pods", "10", "10"], "{described}");
    let table = k.ok(&["-n", ns, "get", "quota", "q"]);
    assert!(table.contains("pods: 10/10"), "{table}");

    // A deleted pod's share is given back, and the 11th fits.
    k.ok(&["-n", ns, "delete", "pod", "p1", "--wait=false"]);
    quota_shows(&k, ns, "q", "pods", "9");
    k.ok_with_stdin(&["create", "-f", "-"], &pod(ns, "p11", json!({})));
}

#[test]
fn kubectl_create_quota_tracks_counts_and_compute() {
    let k = shared_server().kubectl();
    let ns = "quota-create";
    namespace(&k, ns);
    k.ok(&[
        "-n",
        ns,
        "create",
        "quota",
        "small",
        "--hard=pods=2,requests.cpu=1,configmaps=20",
    ]);
    quota_shows(&k, ns, "small", "requests.cpu", "0");
    let table = k.ok(&["-n", ns, "get", "quota", "small"]);
    assert!(table.contains("pods: 0/2"), "{table}");

    // A quota on requests.cpu needs every pod to state it.
    let out = k.run_with_stdin(&["create", "-f", "-"], &pod(ns, "bare", json!({})));
    assert!(
        out.stderr
            .contains("pods \"bare\" is forbidden: failed quota: small: must specify requests.cpu"),
        "{}",
        out.stderr
    );
    let cpu = |c: &str| json!({"requests": {"cpu": c}});
    k.ok_with_stdin(&["create", "-f", "-"], &pod(ns, "a", cpu("600m")));
    let out = k.run_with_stdin(&["create", "-f", "-"], &pod(ns, "b", cpu("500m")));
    assert!(
        out.stderr.contains(
            "exceeded quota: small, requested: requests.cpu=500m, used: requests.cpu=600m, limited: requests.cpu=1"
        ),
        "{}",
        out.stderr
    );
    k.ok_with_stdin(&["create", "-f", "-"], &pod(ns, "b", cpu("400m")));
    quota_shows(&k, ns, "small", "requests.cpu", "1");
}

#[test]
fn concurrent_creates_never_overcommit_a_quota() {
    let k = shared_server().kubectl();
    let ns = "quota-race";
    namespace(&k, ns);
    k.ok(&["-n", ns, "create", "quota", "five", "--hard=configmaps=5"]);
    quota_shows(&k, ns, "five", "configmaps", "0");
    let admitted: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..12)
            .map(|i| {
                let k = &k;
                scope.spawn(move || {
                    let name = format!("cm{i}");
                    k.run(&["-n", ns, "create", "configmap", &name, "--from-literal=a=b"])
                        .status
                        .success()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(false))
            .filter(|admitted| *admitted)
            .count()
    });
    assert_eq!(
        admitted, 5,
        "the quota let {admitted} of 12 racing creates in"
    );
    let listed = k.ok(&["-n", ns, "get", "configmaps", "-o", "name"]);
    let ours = listed
        .lines()
        .filter(|l| l.starts_with("configmap/cm"))
        .count();
    assert_eq!(ours, 5, "{listed}");
    quota_shows(&k, ns, "five", "configmaps", "5");

    // A deleted ConfigMap gives its share back.
    let one = listed
        .lines()
        .find(|l| l.starts_with("configmap/cm"))
        .unwrap()
        .to_string();
    k.ok(&["-n", ns, "delete", &one]);
    quota_shows(&k, ns, "five", "configmaps", "4");
}

#[test]
fn limit_range_defaults_land_on_a_created_pod_and_its_bounds_refuse() {
    let k = shared_server().kubectl();
    let ns = "limits";
    namespace(&k, ns);
    let range = json!({"apiVersion": "v1", "kind": "LimitRange",
        "metadata": {"name": "defaults", "namespace": ns},
        "spec": {"limits": [{"type": "Container",
            "default": {"cpu": "500m", "memory": "256Mi"},
            "defaultRequest": {"cpu": "100m"},
            "max": {"cpu": "1"}}]}});
    k.ok_with_stdin(&["apply", "-f", "-"], &range.to_string());
    let stored: Value =
        serde_json::from_str(&k.ok(&["-n", ns, "get", "limits", "defaults", "-o", "json"]))
            .unwrap();
    assert_eq!(
        stored["spec"]["limits"][0]["defaultRequest"]["memory"], "256Mi",
        "the default request follows the default limit"
    );

    k.ok_with_stdin(&["create", "-f", "-"], &pod(ns, "plain", json!({})));
    let got: Value =
        serde_json::from_str(&k.ok(&["-n", ns, "get", "pod", "plain", "-o", "json"])).unwrap();
    let res = &got["spec"]["containers"][0]["resources"];
    assert_eq!(
        res["requests"],
        json!({"cpu": "100m", "memory": "256Mi"}),
        "{res}"
    );
    assert_eq!(
        res["limits"],
        json!({"cpu": "500m", "memory": "256Mi"}),
        "{res}"
    );
    assert!(
        got["metadata"]["annotations"]["kubernetes.io/limit-ranger"]
            .as_str()
            .is_some_and(|a| a.starts_with("LimitRanger plugin set: ")),
        "{}",
        got["metadata"]
    );

    let big = json!({"limits": {"cpu": "2"}, "requests": {"cpu": "2"}});
    let out = k.run_with_stdin(&["create", "-f", "-"], &pod(ns, "big", big));
    assert!(
        out.stderr.contains(
            "pods \"big\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
        ),
        "{}",
        out.stderr
    );
}
