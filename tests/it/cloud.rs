//! The cloud controller manager inside `wkube server` with the `local`
//! provider, driven with stock kubectl: LoadBalancer Services get loopback
//! addresses, never the same one twice, released on deletion and type
//! change and kept across restarts; `wkube node remove` makes the cloud
//! node controller delete the Node.

use crate::common;

use std::time::{Duration, Instant};

use common::{Kubectl, TestServer};
use serde_json::Value;

/// Polls `check` every 300 ms (each kubectl run costs ~100 ms) until it
/// yields a value or `timeout` passes.
fn poll<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The EXTERNAL-IP column of `kubectl get svc NAME`.
fn external_ip(k: &Kubectl, name: &str) -> String {
    let out = k.run(&["get", "svc", name, "--no-headers"]);
    out.stdout
        .split_whitespace()
        .nth(3)
        .unwrap_or_default()
        .to_string()
}

fn assigned(k: &Kubectl, name: &str) -> String {
    poll(Duration::from_secs(30), || {
        let ip = external_ip(k, name);
        ip.starts_with("127.0.0.1").then_some(ip)
    })
    .unwrap_or_else(|| {
        panic!(
            "service {name} got no load balancer address: {}",
            k.run(&["get", "svc", name, "-o", "yaml"]).stdout
        )
    })
}

fn svc_json(k: &Kubectl, name: &str) -> Value {
    serde_json::from_str(&k.ok(&["get", "svc", name, "-o", "json"])).unwrap()
}

#[test]
fn load_balancer_services_get_distinct_addresses_that_are_freed_and_survive_restarts() {
    let mut server = TestServer::start();
    let k = server.kubectl();
    k.ok(&["create", "service", "loadbalancer", "lb-a", "--tcp=80:8080"]);
    let a = assigned(&k, "lb-a");
    let in_range = |ip: &str| {
        let last: u8 = ip.rsplit('.').next().unwrap().parse().unwrap();
        ip.starts_with("127.0.0.") && (100..=199).contains(&last)
    };
    assert!(in_range(&a), "{a}");
    let svc = svc_json(&k, "lb-a");
    assert_eq!(svc["status"]["loadBalancer"]["ingress"][0]["ipMode"], "VIP");
    assert_eq!(
        svc["metadata"]["finalizers"],
        serde_json::json!(["service.kubernetes.io/load-balancer-cleanup"])
    );
    let described = k.ok(&["describe", "svc", "lb-a"]);
    assert!(
        described.contains("EnsuringLoadBalancer") && described.contains("EnsuredLoadBalancer"),
        "{described}"
    );

    k.ok(&["create", "service", "loadbalancer", "lb-b", "--tcp=80:8080"]);
    let b = assigned(&k, "lb-b");
    assert!(in_range(&b), "{b}");
    assert_ne!(a, b, "two services share an address");

    // Deleting frees the address (the finalizer lets the Service go once
    // it is released), and the next Service gets it.
    k.ok(&["delete", "svc", "lb-a", "--timeout=30s"]);
    k.ok(&["create", "service", "loadbalancer", "lb-c", "--tcp=80:8080"]);
    let c = assigned(&k, "lb-c");
    assert_eq!(c, a, "the freed address was not reused");

    // A Service that stops being a LoadBalancer gives its address back.
    k.ok(&[
        "patch",
        "svc",
        "lb-b",
        "--type=merge",
        "-p",
        r#"{"spec":{"type":"ClusterIP"}}"#,
    ]);
    let released = poll(Duration::from_secs(30), || {
        let s = svc_json(&k, "lb-b");
        let finalizers = s["metadata"]["finalizers"].as_array().map_or(0, Vec::len);
        (s["status"]["loadBalancer"]["ingress"].is_null() && finalizers == 0).then_some(())
    });
    assert!(released.is_some(), "{}", svc_json(&k, "lb-b"));
    let described = k.ok(&["describe", "svc", "lb-b"]);
    assert!(described.contains("DeletedLoadBalancer"), "{described}");

    // After a restart the controller learns the addresses in use from the
    // Services: a new Service never gets lb-c's.
    server.restart();
    let k = server.kubectl();
    k.ok(&["create", "service", "loadbalancer", "lb-d", "--tcp=80:8080"]);
    let d = assigned(&k, "lb-d");
    assert_ne!(
        d, c,
        "an address in use was handed out again after a restart"
    );
    assert_eq!(external_ip(&k, "lb-c"), c);
}

#[test]
fn a_node_whose_machine_is_removed_is_deleted() {
    let server = TestServer::start();
    let k = server.kubectl();
    // A Node whose kubelet never reported: not Ready, so the cloud node
    // controller may delete it once its machine is gone.
    k.ok_with_stdin(
        &["create", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"gone-1"}}"#,
    );
    // Nothing happens while the machine exists.
    std::thread::sleep(Duration::from_secs(2));
    k.ok(&["get", "node", "gone-1"]);

    let out = server.wkube(&["node", "remove", "gone-1"]).success();
    assert!(out.contains("node/gone-1 marked removed"), "{out}");
    let deleted = poll(Duration::from_secs(30), || {
        let out = k.run(&["get", "node", "gone-1"]);
        out.stderr.contains("NotFound").then_some(())
    });
    assert!(deleted.is_some(), "node gone-1 was not deleted");
    // The cloud controller says why it deleted the Node, the node
    // lifecycle controller that it let go of it.
    let events = || {
        k.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=gone-1",
        ])
    };
    let both = poll(Duration::from_secs(20), || {
        let e = events();
        (e.contains("DeletingNode") && e.contains("RemovingNode")).then_some(())
    });
    assert!(both.is_some(), "{}", events());

    let missing = server.wkube(&["node", "remove", "nope"]);
    assert!(!missing.status.success());
    assert!(
        missing.stderr.contains("nodes \"nope\" not found"),
        "{missing:?}"
    );
}
