//! HorizontalPodAutoscalers driven as users drive them: created with
//! `kubectl autoscale` or applied, read with `kubectl get hpa`, and
//! following real load on real guests.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Kubectl, TestServer, eventually, guest};
use serde_json::{Value, json};

fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let s = TestServer::builder()
            .with_node()
            .arg("--horizontal-pod-autoscaler-sync-period=1s")
            .arg("--activation-timeout=3s")
            .arg("--activation-queue=300")
            .start();
        s.wkube(&["push", guest("echo-http").to_str().unwrap(), "echo:v1"])
            .success();
        s
    })
}

/// A Deployment of `echo:v1` in `ns` with a CPU request and limit, and a
/// NodePort Service for it; returns the NodePort.
fn workload(k: &Kubectl, ns: &str, name: &str, replicas: u32) -> u16 {
    k.ok(&["create", "namespace", ns]);
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
          "template": {"metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "web", "image": "echo:v1",
              "ports": [{"containerPort": 8080, "name": "http"}],
              "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "500m"}}}]}}}});
    let svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"type": "NodePort", "selector": {"app": name},
          "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}});
    k.ok_with_stdin(&["apply", "-f", "-"], &deploy.to_string());
    k.ok_with_stdin(&["apply", "-f", "-"], &svc.to_string());
    k.ok(&[
        "rollout",
        "status",
        "-n",
        ns,
        &format!("deployment/{name}"),
        "--timeout=60s",
    ]);
    let svc: Value =
        serde_json::from_str(&k.ok(&["get", "-n", ns, "service", name, "-o", "json"])).unwrap();
    svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap() as u16
}

fn replicas(k: &Kubectl, ns: &str, name: &str) -> i64 {
    k.ok(&[
        "get",
        "-n",
        ns,
        "deployment",
        name,
        "-o",
        "jsonpath={.spec.replicas}",
    ])
    .trim()
    .parse()
    .unwrap_or(-1)
}

#[track_caller]
fn wait_replicas(k: &Kubectl, ns: &str, name: &str, want: i64, within: Duration) {
    let mut seen = -1;
    let ok = eventually(within, || {
        seen = replicas(k, ns, name);
        seen == want
    });
    assert!(
        ok,
        "{ns}/{name} stayed at {seen} replicas, not {want}:\n{}\n{}",
        k.run(&["get", "hpa", "-n", ns, "-o", "yaml"]).stdout,
        k.run(&["get", "events", "-n", ns]).stdout
    );
}

/// One HTTP/1.1 GET of `path`: the status code (0: no answer), whether
/// it carried `Retry-After`, and the body.
fn request(addr: &str, path: &str) -> (u16, bool, String) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, false, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return (0, false, String::new());
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let retry = out.to_ascii_lowercase().contains("\r\nretry-after: ");
    let body = out.split_once("\r\n\r\n").map_or("", |b| b.1).to_string();
    (code, retry, body)
}

/// One GET: the status code (0: no answer) and the body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let (code, _, body) = request(addr, path);
    (code, body)
}

/// Sends `rate` requests per second to `addr` until `stop` is set (at
/// most `limit`), from a thread; counts the failures.
fn load(addr: String, rate: u32, stop: Arc<AtomicBool>, failed: Arc<AtomicU64>, limit: Duration) {
    std::thread::spawn(move || {
        let start = Instant::now();
        let gap = Duration::from_secs(1) / rate;
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) && start.elapsed() < limit {
            if http_get(&addr, "/").0 != 200 {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            next += gap;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    });
}

#[test]
fn an_hpa_on_cpu_scales_out_under_load_and_back_in_after_it() {
    let s = server();
    let k = s.kubectl();
    let ns = "hpa-cpu";
    workload(&k, ns, "spinner", 1);
    let made = k.ok(&[
        "autoscale",
        "-n",
        ns,
        "deployment",
        "spinner",
        "--cpu-percent=50",
        "--min=1",
        "--max=3",
    ]);
    assert!(made.contains("autoscaled"), "{made}");
    // Scale in after 3 s of quiet rather than the default five minutes.
    k.ok(&[
        "patch",
        "-n",
        ns,
        "hpa.v2.autoscaling",
        "spinner",
        "--type=merge",
        "-p",
        r#"{"spec":{"behavior":{"scaleDown":{"stabilizationWindowSeconds":3}}}}"#,
    ]);
    let table = k.ok(&["get", "hpa", "-n", ns]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "REFERENCE",
            "TARGETS",
            "MINPODS",
            "MAXPODS",
            "REPLICAS",
            "AGE"
        ]
    );
    assert!(table.contains("Deployment/spinner"), "{table}");
    assert!(table.contains("/50%"), "{table}");

    // One pod spinning at its 500m limit is 500% of its 100m request.
    let pod = k
        .ok(&[
            "get",
            "pods",
            "-n",
            ns,
            "-l",
            "app=spinner",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ])
        .trim()
        .to_string();
    let mut spinner = k
        .command(&[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/{ns}/pods/{pod}/proxy/spin/20000"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_replicas(&k, ns, "spinner", 3, Duration::from_secs(20));
    let hpa: Value = serde_json::from_str(&k.ok(&[
        "get",
        "hpa.v2.autoscaling",
        "-n",
        ns,
        "spinner",
        "-o",
        "json",
    ]))
    .unwrap();
    let conditions = hpa["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let condition = |ty: &str| {
        conditions
            .iter()
            .find(|c| c["type"] == ty)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(condition("ScalingActive")["status"], "True", "{hpa}");
    assert_eq!(
        condition("ScalingActive")["reason"],
        "ValidMetricFound",
        "{hpa}"
    );
    let events = k.ok(&[
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        "reason=SuccessfulRescale",
    ]);
    assert!(events.contains("New size: 3"), "{events}");
    let _ = spinner.kill();
    let _ = spinner.wait();

    // Idle again: back to one after the stabilization window.
    wait_replicas(&k, ns, "spinner", 1, Duration::from_secs(30));
    k.ok(&["delete", "namespace", ns, "--wait=false"]);
}

#[test]
fn an_hpa_on_request_rate_follows_a_load_step() {
    let s = server();
    let k = s.kubectl();
    let ns = "hpa-rps";
    let port = workload(&k, ns, "web", 1);
    let hpa = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
          "minReplicas": 1, "maxReplicas": 4,
          "metrics": [{"type": "Pods", "pods": {"metric": {"name": "requests_per_second"},
                        "target": {"type": "AverageValue", "averageValue": "10"}}}],
          "behavior": {"scaleDown": {"stabilizationWindowSeconds": 2}}}});
    k.ok_with_stdin(&["apply", "-f", "-"], &hpa.to_string());
    let addr = format!("{}:{port}", s.addresses.node_ip);
    assert!(
        eventually(Duration::from_secs(10), || http_get(&addr, "/").0 == 200),
        "the NodePort never answered"
    );
    // 40 requests per second against 10 per pod: four pods.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    load(
        addr,
        40,
        stop.clone(),
        failed.clone(),
        Duration::from_secs(40),
    );
    let started = Instant::now();
    wait_replicas(&k, ns, "web", 4, Duration::from_secs(25));
    let out = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let table = k.ok(&["get", "hpa", "-n", ns, "web"]);
    assert!(table.contains("requests_per_second: "), "{table}");
    // The step down: back to one.
    let started = Instant::now();
    wait_replicas(&k, ns, "web", 1, Duration::from_secs(30));
    eprintln!("scaled out in {out:?}, back in in {:?}", started.elapsed());
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the step"
    );
    k.ok(&["delete", "namespace", ns, "--wait=false"]);
}

#[test]
fn invalid_autoscalers_are_refused_with_the_field_named() {
    let k = server().kubectl();
    let bad = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "bad"},
        "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"},
          "minReplicas": 5, "maxReplicas": 2}});
    let out = k.run_with_stdin(&["create", "-f", "-"], &bad.to_string());
    assert!(
        out.stderr.contains("spec.maxReplicas")
            && out
                .stderr
                .contains("must be greater than or equal to `minReplicas`"),
        "{}",
        out.stderr
    );
}

/// An autoscaler with `minReplicas: 0` on request rate, scaling in after
/// `window` seconds of quiet.
fn to_zero_hpa(k: &Kubectl, ns: &str, name: &str, window: u32) {
    let hpa = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
          "minReplicas": 0, "maxReplicas": 3,
          "metrics": [{"type": "Pods", "pods": {"metric": {"name": "requests_per_second"},
                        "target": {"type": "AverageValue", "averageValue": "5"}}}],
          "behavior": {"scaleDown": {"stabilizationWindowSeconds": window}}}});
    k.ok_with_stdin(&["apply", "-f", "-"], &hpa.to_string());
}

/// Sends `n` requests at once; their status codes, whether each carried
/// Retry-After, and their bodies.
fn burst(addr: &str, n: usize) -> Vec<(u16, bool, String)> {
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let addr = addr.to_string();
            std::thread::spawn(move || request(&addr, "/"))
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// Waits until the workload is at zero and its pods are gone.
#[track_caller]
fn back_to_zero(k: &Kubectl, ns: &str, name: &str) {
    wait_replicas(k, ns, name, 0, Duration::from_secs(30));
    assert!(
        eventually(Duration::from_secs(20), || k
            .ok(&[
                "get",
                "pods",
                "-n",
                ns,
                "-l",
                &format!("app={name}"),
                "-o",
                "name"
            ])
            .trim()
            .is_empty()),
        "the pods never went"
    );
}

#[test]
fn at_min_replicas_zero_an_idle_workload_goes_to_zero_and_requests_bring_it_back() {
    let s = server();
    let k = s.kubectl();
    let ns = "hpa-zero";
    let port = workload(&k, ns, "sleepy", 1);
    to_zero_hpa(&k, ns, "sleepy", 2);
    let addr = format!("{}:{port}", s.addresses.node_ip);
    // No requests: down to zero once the window passes.
    back_to_zero(&k, ns, "sleepy");
    let hpa: Value = serde_json::from_str(&k.ok(&[
        "get",
        "hpa.v2.autoscaling",
        "-n",
        ns,
        "sleepy",
        "-o",
        "json",
    ]))
    .unwrap();
    assert!(
        hpa["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["reason"] == "ScaledToZero"),
        "{hpa}"
    );

    // The first request is held while the workload wakes, then answered.
    let started = Instant::now();
    let (code, body) = http_get(&addr, "/");
    let first = started.elapsed();
    assert_eq!(code, 200, "{body}\n{}", s.log_tail(40));
    assert!(!body.is_empty());
    assert_eq!(replicas(&k, ns, "sleepy"), 1);
    let events = k.ok(&[
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        "reason=Activated",
    ]);
    assert!(
        events.contains("a request for service sleepy arrived at zero replicas"),
        "{events}"
    );

    // Back to zero; through the API server's service proxy too.
    back_to_zero(&k, ns, "sleepy");
    let through_api = k.run(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/{ns}/services/sleepy:http/proxy/"),
    ]);
    assert!(through_api.status.success(), "{}", through_api.stderr);
    assert_eq!(replicas(&k, ns, "sleepy"), 1);

    // Back to zero; from a guest calling the Service by name.
    k.ok_with_stdin(
        &["apply", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "caller", "namespace": ns, "labels": {"app": "caller"}},
            "spec": {"containers": [{"name": "web", "image": "echo:v1",
                "ports": [{"containerPort": 8080}]}]}})
        .to_string(),
    );
    k.ok(&[
        "wait",
        "-n",
        ns,
        "--for=condition=Ready",
        "pod/caller",
        "--timeout=60s",
    ]);
    back_to_zero(&k, ns, "sleepy");
    let from_guest = k.run(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/{ns}/pods/caller/proxy/fetch?url=http://sleepy/"),
    ]);
    assert!(from_guest.status.success(), "{}", from_guest.stderr);
    assert_eq!(replicas(&k, ns, "sleepy"), 1);

    // Back to zero; at a load-balancer address.
    k.ok(&[
        "patch",
        "-n",
        ns,
        "service",
        "sleepy",
        "--type=merge",
        "-p",
        r#"{"spec":{"type":"LoadBalancer"}}"#,
    ]);
    let mut lb = String::new();
    assert!(
        eventually(Duration::from_secs(20), || {
            lb = k.ok(&[
                "get",
                "-n",
                ns,
                "service",
                "sleepy",
                "-o",
                "jsonpath={.status.loadBalancer.ingress[0].ip}",
            ]);
            !lb.trim().is_empty()
        }),
        "no load-balancer address"
    );
    back_to_zero(&k, ns, "sleepy");
    let (code, body) = http_get(&format!("{}:80", lb.trim()), "/");
    assert_eq!(code, 200, "{body}");

    // Back to zero, then 200 requests at once to the ClusterIP: all
    // answered.
    back_to_zero(&k, ns, "sleepy");
    let svc: Value =
        serde_json::from_str(&k.ok(&["get", "-n", ns, "service", "sleepy", "-o", "json"])).unwrap();
    let cluster_ip = format!("{}:80", svc["spec"]["clusterIP"].as_str().unwrap());
    let started = Instant::now();
    let answers = burst(&cluster_ip, 200);
    let all = started.elapsed();
    let failed: Vec<_> = answers.iter().filter(|a| a.0 != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of 200 failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    eprintln!("first request from zero: {first:?}; 200 at once from zero: {all:?} (ClusterIP)");
    k.ok(&["delete", "namespace", ns, "--wait=false"]);
}

#[test]
fn requests_for_a_workload_that_cannot_start_get_503_with_retry_after() {
    let s = server();
    let k = s.kubectl();
    let ns = "hpa-stuck";
    let port = workload(&k, ns, "stuck", 0);
    // Its pods can never run: the module does not exist.
    k.ok(&[
        "set",
        "image",
        "-n",
        ns,
        "deployment/stuck",
        "web=missing:v1",
    ]);
    to_zero_hpa(&k, ns, "stuck", 2);
    let addr = format!("{}:{port}", s.addresses.node_ip);
    // 310 at once against a queue of 300 held for at most 3 s: the ten
    // over the bound are refused at once, the rest when the time is up;
    // every refusal says when to retry.
    let started = Instant::now();
    let answers = burst(&addr, 310);
    let took = started.elapsed();
    assert!(
        answers.iter().all(|a| a.0 == 503 && a.1),
        "{:?}",
        answers.iter().find(|a| a.0 != 503 || !a.1)
    );
    let full = answers
        .iter()
        .filter(|a| a.2.contains("too many requests wait"))
        .count();
    let late = answers
        .iter()
        .filter(|a| a.2.contains("did not start in time"))
        .count();
    assert!(
        full >= 10,
        "{full} refused for the queue bound: {:?}\n{}",
        answers.first(),
        s.log_tail(40)
    );
    assert_eq!(full + late, 310);
    assert!(took < Duration::from_secs(10), "{took:?}");
    k.ok(&["delete", "namespace", ns, "--wait=false"]);
}

#[test]
fn autoscalers_are_served_as_autoscaling_v1_too() {
    let s = server();
    let k = s.kubectl();
    let ns = "hpa-v1";
    workload(&k, ns, "old", 1);
    let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "old", "namespace": ns},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "old"},
          "minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 70}});
    let out = k.ok_with_stdin(&["apply", "-f", "-"], &v1.to_string());
    assert!(out.contains("created"), "{out}");
    // Stored once: v2 shows the CPU target as a metric.
    let as_v2: Value =
        serde_json::from_str(&k.ok(&["get", "hpa.v2.autoscaling", "-n", ns, "old", "-o", "json"]))
            .unwrap();
    assert_eq!(
        as_v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 70,
        "{as_v2}"
    );
    // v1 reads it back in its own shape, with the controller's figure.
    let mut as_v1 = Value::Null;
    let measured = eventually(Duration::from_secs(15), || {
        as_v1 = serde_json::from_str(&k.ok(&[
            "get",
            "horizontalpodautoscalers.v1.autoscaling",
            "-n",
            ns,
            "old",
            "-o",
            "json",
        ]))
        .unwrap();
        as_v1["status"]["currentCPUUtilizationPercentage"].is_number()
    });
    assert!(measured, "{as_v1}");
    assert_eq!(as_v1["apiVersion"], "autoscaling/v1");
    assert_eq!(as_v1["spec"]["targetCPUUtilizationPercentage"], 70);
    assert!(
        as_v1["metadata"]["annotations"]["autoscaling.alpha.kubernetes.io/conditions"]
            .as_str()
            .is_some_and(|c| c.contains("AbleToScale")),
        "{as_v1}"
    );
    // A v1 patch means what it says in v1, and a v2 field survives it.
    k.ok(&[
        "patch",
        "-n",
        ns,
        "hpa.v2.autoscaling",
        "old",
        "--type=merge",
        "-p",
        r#"{"spec":{"behavior":{"scaleDown":{"stabilizationWindowSeconds":7}}}}"#,
    ]);
    k.ok(&[
        "patch",
        "-n",
        ns,
        "horizontalpodautoscalers.v1.autoscaling",
        "old",
        "--type=merge",
        "-p",
        r#"{"spec":{"targetCPUUtilizationPercentage":40}}"#,
    ]);
    let after: Value =
        serde_json::from_str(&k.ok(&["get", "hpa.v2.autoscaling", "-n", ns, "old", "-o", "json"]))
            .unwrap();
    assert_eq!(
        after["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 40,
        "{after}"
    );
    assert_eq!(
        after["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"], 7,
        "{after}"
    );
    // A patch whose result is no object is refused, and nothing breaks.
    let hostile = k.run(&[
        "patch",
        "-n",
        ns,
        "horizontalpodautoscalers.v1.autoscaling",
        "old",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"","value":[]}]"#,
    ]);
    assert!(
        hostile.stderr.contains("not an object"),
        "{}",
        hostile.stderr
    );
    // Discovery offers both, v2 first.
    let group = k.ok(&["get", "--raw", "/apis/autoscaling"]);
    let group: Value = serde_json::from_str(&group).unwrap();
    assert_eq!(group["preferredVersion"]["version"], "v2", "{group}");
    assert!(
        group["versions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["version"] == "v1")
    );
    // Invalid in v1 is invalid with v1's field names where they are v1's.
    let bad = k.run_with_stdin(
        &["apply", "-f", "-"],
        &json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "bad", "namespace": ns},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "old"}, "maxReplicas": 0}})
        .to_string(),
    );
    assert!(bad.stderr.contains("spec.maxReplicas"), "{}", bad.stderr);
    k.ok(&[
        "delete",
        "-n",
        ns,
        "horizontalpodautoscalers.v1.autoscaling",
        "old",
    ]);
    k.ok(&["delete", "namespace", ns, "--wait=false"]);
}

#[test]
fn an_object_metric_reads_the_services_request_rate() {
    let s = server();
    let k = s.kubectl();
    let ns = "hpa-object";
    let port = workload(&k, ns, "front", 1);
    let hpa = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "front", "namespace": ns},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "front"},
          "minReplicas": 1, "maxReplicas": 2,
          "metrics": [{"type": "Object", "object": {
              "describedObject": {"apiVersion": "v1", "kind": "Service", "name": "front"},
              "metric": {"name": "requests_per_second"},
              "target": {"type": "Value", "value": "1k"}}}]}});
    k.ok_with_stdin(&["apply", "-f", "-"], &hpa.to_string());
    let addr = format!("{}:{port}", s.addresses.node_ip);
    for _ in 0..5 {
        assert_eq!(http_get(&addr, "/").0, 200);
    }
    let mut seen = Value::Null;
    let measured = eventually(Duration::from_secs(15), || {
        seen = serde_json::from_str(&k.ok(&[
            "get",
            "hpa.v2.autoscaling",
            "-n",
            ns,
            "front",
            "-o",
            "json",
        ]))
        .unwrap();
        seen["status"]["currentMetrics"][0]["object"]["current"]["value"].is_string()
            && seen["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "ScalingActive" && c["reason"] == "ValidMetricFound")
    });
    assert!(measured, "{seen}");
    // Far below its target: the workload stays at its minimum.
    assert_eq!(replicas(&k, ns, "front"), 1);
    k.ok(&["delete", "namespace", ns, "--wait=false"]);
}
