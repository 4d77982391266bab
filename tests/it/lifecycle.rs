//! Node lifecycle, leader election and service-account token revocation
//! against a real `wkube server`, with stock kubectl and real `wkube
//! agent` processes.

use crate::common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Kubectl, TEST_NODE, TestServer, guest};
use serde_json::{Value, json};

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

/// A `wkube agent` process, killed (SIGKILL, like a machine failing) when
/// dropped.
struct Agent {
    child: Child,
}

impl Agent {
    fn start(server: &TestServer, dir: &Path, name: &str, ip: &str) -> Agent {
        let token = std::fs::read_to_string(server.data_dir.join("join-token")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wkube"));
        cmd.arg("--data-dir")
            .arg(dir.join(name))
            .args(["agent", "--server", &server.api_url])
            .args(["--node-name", name, "--node-ip", ip])
            .args(["--agent-listen", &format!("{ip}:0")])
            .args(["--lease-renew-interval", "1"])
            .args(["--token", token.trim()])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join(format!("{name}.err")))
                    .unwrap(),
            );
        Agent {
            child: cmd.spawn().expect("spawn wkube agent"),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node(k: &Kubectl, name: &str) -> Value {
    serde_json::from_str(&k.ok(&["get", "node", name, "-o", "json"])).unwrap()
}

fn ready_status(node: &Value) -> String {
    node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn taint_keys(node: &Value) -> Vec<String> {
    node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            format!(
                "{}:{}",
                t["key"].as_str().unwrap(),
                t["effect"].as_str().unwrap()
            )
        })
        .collect()
}

/// Running, not terminating pods of `app=web`: (name, node).
fn web_pods(k: &Kubectl) -> Vec<(String, String)> {
    let list: Value =
        serde_json::from_str(&k.ok(&["get", "pods", "-l", "app=web", "-o", "json"])).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["spec"]["nodeName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

#[test]
fn a_dead_node_is_tainted_its_pods_move_and_it_recovers_when_its_agent_returns() {
    let server = TestServer::builder()
        .with_node()
        .arg("--node-monitor-period=1s")
        .arg("--lease-renew-interval=1")
        .arg("--node-monitor-grace-period=6s")
        .arg("--default-unreachable-toleration-seconds=5")
        .arg("--default-not-ready-toleration-seconds=5")
        .start();
    let k = server.kubectl();
    let tmp = tempfile::tempdir().unwrap();
    server
        .wkube(&["push", guest("hello-http").to_str().unwrap(), "hello:v1"])
        .success();
    let agent = Agent::start(&server, tmp.path(), "edge-1", "127.0.0.2");
    let ready = |name: &str| {
        poll(Duration::from_secs(60), || {
            (ready_status(&node(&k, name)) == "True").then_some(())
        })
    };
    assert!(ready("edge-1").is_some(), "edge-1 never became Ready");
    assert!(ready(TEST_NODE).is_some());

    // The pod lands on edge-1: node-1 is cordoned while it is scheduled.
    k.ok(&["cordon", TEST_NODE]);
    k.ok_with_stdin(
        &["apply", "-f", "-"],
        &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
              "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"terminationGracePeriodSeconds": 2,
                  "containers": [{"name": "web", "image": "hello:v1"}]}}}})
        .to_string(),
    );
    let (victim, on) =
        poll(Duration::from_secs(60), || web_pods(&k).pop()).expect("no running pod");
    assert_eq!(on, "edge-1");
    let pod: Value = serde_json::from_str(&k.ok(&["get", "pod", &victim, "-o", "json"])).unwrap();
    let tolerations = pod["spec"]["tolerations"].to_string();
    assert!(
        tolerations.contains("node.kubernetes.io/unreachable")
            && tolerations.contains("\"tolerationSeconds\":5"),
        "default tolerations missing: {tolerations}"
    );
    k.ok(&["uncordon", TEST_NODE]);

    // The machine fails.
    drop(agent);
    let unknown = poll(Duration::from_secs(30), || {
        let n = node(&k, "edge-1");
        (ready_status(&n) == "Unknown").then_some(n)
    })
    .expect("edge-1 was never marked Unknown");
    let cond = unknown["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(cond["reason"], "NodeStatusUnknown");
    assert_eq!(cond["message"], "Kubelet stopped posting node status.");
    let tainted = poll(Duration::from_secs(10), || {
        let n = node(&k, "edge-1");
        let keys = taint_keys(&n);
        (keys.contains(&"node.kubernetes.io/unreachable:NoSchedule".to_string())
            && keys.contains(&"node.kubernetes.io/unreachable:NoExecute".to_string()))
        .then_some(n)
    })
    .expect("edge-1 was not tainted unreachable");
    let no_execute = tainted["spec"]["taints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["effect"] == "NoExecute")
        .unwrap();
    assert!(no_execute["timeAdded"].is_string(), "{no_execute}");
    assert!(k.ok(&["get", "nodes"]).contains("NotReady"));

    // Its pod is evicted once the 5 s toleration ran out and replaced on
    // node-1; the old one, which no kubelet can confirm, is removed.
    let moved = poll(Duration::from_secs(60), || {
        web_pods(&k)
            .into_iter()
            .find(|(name, on)| name != &victim && on == TEST_NODE)
    });
    assert!(
        moved.is_some(),
        "the pod was not replaced on {TEST_NODE}: {}",
        k.ok(&["get", "pods", "-o", "wide"])
    );
    let events = k.ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={victim}"),
    ]);
    assert!(events.contains("TaintManagerEviction"), "{events}");
    assert!(events.contains("NodeNotReady"), "{events}");
    let gone = poll(Duration::from_secs(30), || {
        k.run(&["get", "pod", &victim])
            .stderr
            .contains("NotFound")
            .then_some(())
    });
    assert!(gone.is_some(), "the evicted pod was never removed");

    // The machine comes back: Ready again, untainted.
    let _agent = Agent::start(&server, tmp.path(), "edge-1", "127.0.0.2");
    let healed = poll(Duration::from_secs(60), || {
        let n = node(&k, "edge-1");
        (ready_status(&n) == "True" && taint_keys(&n).is_empty()).then_some(())
    });
    assert!(
        healed.is_some(),
        "edge-1 did not recover: {}",
        node(&k, "edge-1")
    );
}

fn pod_ready(k: &Kubectl, name: &str) -> String {
    k.run(&[
        "get",
        "pod",
        name,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ])
    .stdout
}

#[test]
fn a_node_that_pauses_briefly_keeps_its_pods_and_reports_them_ready_again() {
    let server = TestServer::builder()
        .arg("--node-monitor-period=1s")
        .arg("--node-monitor-grace-period=4s")
        .start();
    let k = server.kubectl();
    let tmp = tempfile::tempdir().unwrap();
    server
        .wkube(&["push", guest("hello-http").to_str().unwrap(), "hello:v1"])
        .success();
    let agent = Agent::start(&server, tmp.path(), "edge-2", "127.0.0.3");
    k.ok_with_stdin(
        &["create", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "steady"},
            "spec": {"nodeName": "edge-2", "containers": [{"name": "web", "image": "hello:v1"}]}})
        .to_string(),
    );
    let ready = poll(Duration::from_secs(60), || {
        (pod_ready(&k, "steady") == "True").then_some(())
    });
    assert!(ready.is_some(), "the pod never became Ready");

    // The agent stops answering (as behind a network cut) for longer than
    // the grace period but much shorter than the pods' 300 s tolerations.
    let pid = agent.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let marked = poll(Duration::from_secs(20), || {
        (ready_status(&node(&k, "edge-2")) == "Unknown" && pod_ready(&k, "steady") == "False")
            .then_some(())
    });
    assert!(
        Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(
        marked.is_some(),
        "edge-2 or its pod was not marked: {}",
        node(&k, "edge-2")
    );
    let described = k.ok(&["describe", "node", "edge-2"]);
    assert!(described.contains("NodeNotReady"), "{described}");

    // Back: the kubelet reports the node and its pod Ready again, the
    // taints go, and the pod was never evicted.
    let healed = poll(Duration::from_secs(30), || {
        let n = node(&k, "edge-2");
        (ready_status(&n) == "True"
            && taint_keys(&n).is_empty()
            && pod_ready(&k, "steady") == "True")
            .then_some(())
    });
    assert!(
        healed.is_some(),
        "edge-2 did not recover: {} / pod Ready={}",
        node(&k, "edge-2"),
        pod_ready(&k, "steady")
    );
}

/// An API client as the cluster admin, from the admin kubeconfig.
fn admin_client(server: &TestServer) -> kube::Client {
    let text = std::fs::read_to_string(server.admin_kubeconfig()).unwrap();
    let doc: Value = serde_yaml_ng::from_str(&text).unwrap();
    let ca = doc["clusters"][0]["cluster"]["certificate-authority-data"]
        .as_str()
        .map(|b64| {
            use base64::Engine as _;
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap(),
            )
            .unwrap()
        });
    let token = doc["users"][0]["user"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    wkube::client::build(&wkube::client::ClientConfig {
        server: server.api_url.clone(),
        ca_pem: ca,
        credential: wkube::client::Credential::Token(token),
        connect_timeout: Duration::from_secs(5),
    })
    .unwrap()
}

fn lease(k: &Kubectl, name: &str) -> Value {
    serde_json::from_str(&k.ok(&["get", "lease", "-n", "kube-system", name, "-o", "json"])).unwrap()
}

/// One candidate: its work flags itself active while it runs.
struct Candidate {
    identity: String,
    active: Arc<AtomicBool>,
    stop: tokio::sync::oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

fn candidate(rt: &tokio::runtime::Runtime, client: kube::Client, name: &str) -> Candidate {
    use wkube::controllers::leader::{LeaderElectionConfig, run_elected};
    let identity = format!("{name}_{}", uuid::Uuid::new_v4());
    let active = Arc::new(AtomicBool::new(false));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let cfg = LeaderElectionConfig {
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(300),
        ..Default::default()
    };
    let flag = active.clone();
    let id = identity.clone();
    let done = rt.spawn(async move {
        run_elected(
            client,
            "test-elect",
            id,
            cfg,
            async move {
                let _ = stopped.await;
            },
            move |s| {
                let flag = flag.clone();
                async move {
                    flag.store(true, Ordering::SeqCst);
                    s.wait().await;
                    flag.store(false, Ordering::SeqCst);
                }
            },
        )
        .await
    });
    Candidate {
        identity,
        active,
        stop,
        done,
    }
}

#[test]
fn one_candidate_leads_and_another_takes_over_when_it_dies_or_steps_down() {
    let server = TestServer::builder().arg("--leader-elect=true").start();
    let k = server.kubectl();
    // The server's own components hold their Leases under one identity.
    for name in [
        "kube-controller-manager",
        "kube-scheduler",
        "cloud-controller-manager",
    ] {
        let held = poll(Duration::from_secs(30), || {
            let l = lease(&k, name);
            let holder = l["spec"]["holderIdentity"].as_str()?.to_string();
            (holder.contains('_') && l["spec"]["leaseDurationSeconds"] == 15).then_some(holder)
        });
        assert!(
            held.is_some(),
            "lease {name} not held: {}",
            k.run(&["get", "lease", "-n", "kube-system", name, "-o", "yaml"])
                .stdout
        );
    }

    // The elected components work: the controller manager makes a
    // Deployment's pod, the cloud controller manager a load balancer.
    k.ok(&["create", "deployment", "elected", "--image=hello:v1"]);
    k.ok(&[
        "create",
        "service",
        "loadbalancer",
        "elected",
        "--tcp=80:8080",
    ]);
    let working = poll(Duration::from_secs(30), || {
        let pods = k.ok(&["get", "pods", "-l", "app=elected", "-o", "name"]);
        let ip = k.ok(&[
            "get",
            "svc",
            "elected",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        ]);
        (!pods.trim().is_empty() && !ip.trim().is_empty()).then_some(())
    });
    assert!(working.is_some(), "the elected controllers did nothing");

    let rt_a = tokio::runtime::Runtime::new().unwrap();
    let rt_b = tokio::runtime::Runtime::new().unwrap();
    // A client belongs to the runtime it was made in.
    let client_a = rt_a.block_on(async { admin_client(&server) });
    let client_b = rt_b.block_on(async { admin_client(&server) });
    let a = candidate(&rt_a, client_a, "a");
    let b = candidate(&rt_b, client_b, "b");
    let holder = || {
        lease(&k, "test-elect")["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let leader = poll(Duration::from_secs(10), || {
        let (x, y) = (
            a.active.load(Ordering::SeqCst),
            b.active.load(Ordering::SeqCst),
        );
        (x != y).then_some(if x { "a" } else { "b" })
    })
    .expect("no leader elected");
    // Exactly one stays active while both run.
    for _ in 0..10 {
        assert!(
            a.active.load(Ordering::SeqCst) != b.active.load(Ordering::SeqCst),
            "two leaders"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (first, second, rt_first, rt_second) = if leader == "a" {
        (a, b, rt_a, rt_b)
    } else {
        (b, a, rt_b, rt_a)
    };
    assert_eq!(holder(), first.identity);

    // The leader dies without a word (its runtime is torn down): the other
    // takes over once the lease has not been renewed for its duration.
    let died = Instant::now();
    rt_first.shutdown_background();
    drop(first.stop);
    let took_over = poll(Duration::from_secs(10), || {
        second.active.load(Ordering::SeqCst).then_some(())
    });
    assert!(took_over.is_some(), "no take-over");
    let after = died.elapsed();
    assert!(
        after >= Duration::from_secs(2),
        "took over before the lease expired ({after:?})"
    );
    assert_eq!(holder(), second.identity);
    assert_eq!(lease(&k, "test-elect")["spec"]["leaseTransitions"], 1);

    // Someone else writes the Lease: the leader notices on its next renewal
    // and stops its work.
    let now = k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ");
    k.ok(&[
        "patch",
        "lease",
        "-n",
        "kube-system",
        "test-elect",
        "--type=merge",
        "-p",
        &json!({"spec": {"holderIdentity": "intruder", "renewTime": now.to_string()}}).to_string(),
    ]);
    let stopped = poll(Duration::from_secs(10), || {
        (!second.active.load(Ordering::SeqCst)).then_some(())
    });
    assert!(
        stopped.is_some(),
        "the leader kept working after losing the lease"
    );

    // The intruder never renews: the old leader competes again and wins
    // once the intruder's record expired.
    let back = poll(Duration::from_secs(10), || {
        second.active.load(Ordering::SeqCst).then_some(())
    });
    assert!(back.is_some(), "the candidate did not compete again");
    assert_eq!(holder(), second.identity);

    // A clean stop ends the work and releases the Lease at once.
    let _ = second.stop.send(());
    rt_second.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), second.done)
            .await
            .expect("the candidate did not stop")
            .expect("the candidate panicked");
    });
    assert!(!second.active.load(Ordering::SeqCst));
    assert_eq!(holder(), "", "the lease was not released");
}

#[test]
fn a_bound_service_account_token_stops_working_when_its_pod_is_gone() {
    let server = TestServer::start();
    let k = server.kubectl();
    k.ok(&["create", "serviceaccount", "bot"]);
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "holder"},
        "spec": {"serviceAccountName": "bot", "containers": [{"name": "c", "image": "hello:v1"}]}})
    .to_string();
    k.ok_with_stdin(&["create", "-f", "-"], &pod);
    let token = k
        .ok(&[
            "create",
            "token",
            "bot",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "holder",
        ])
        .trim()
        .to_string();
    let as_bot = || {
        let mut c = k.command(&["get", "--raw", "/api"]);
        c.args(["--token", &token]);
        common::run(c, None, common::COMMAND_TIMEOUT)
    };
    let ok = as_bot();
    assert!(ok.status.success(), "{ok:?}");

    k.ok(&["delete", "pod", "holder", "--wait=true"]);
    let refused = as_bot();
    assert!(!refused.status.success());
    assert!(refused.stderr.contains("Unauthorized"), "{refused:?}");

    // A new pod of the same name is another object: still refused.
    k.ok_with_stdin(&["create", "-f", "-"], &pod);
    let refused = as_bot();
    assert!(refused.stderr.contains("Unauthorized"), "{refused:?}");

    // A token bound only to the account dies with the account.
    let token = k.ok(&["create", "token", "bot"]).trim().to_string();
    let mut c = k.command(&["get", "--raw", "/api"]);
    c.args(["--token", &token]);
    assert!(
        common::run(c, None, common::COMMAND_TIMEOUT)
            .status
            .success()
    );
    k.ok(&["delete", "serviceaccount", "bot"]);
    let mut c = k.command(&["get", "--raw", "/api"]);
    c.args(["--token", &token]);
    let refused = common::run(c, None, common::COMMAND_TIMEOUT);
    assert!(refused.stderr.contains("Unauthorized"), "{refused:?}");
}
