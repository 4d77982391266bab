//! The kubelet inside `wkube server`, driven as a user drives it: modules
//! pushed with `wkube push`, pods applied and inspected with stock kubectl,
//! HTTP pods reached through the API server's pod proxy, logs through
//! `kubectl logs`. The pods are the real guest examples.

use crate::common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::builders::PodBuilder;
use common::{Kubectl, TEST_NODE, TestServer, eventually, guest};
use serde_json::{Value, json};

/// Longest a pod may take to reach a state in these tests (debug build,
/// first compile of each module included).
const POD_TIMEOUT: Duration = Duration::from_secs(60);

/// One server for this file, with quick back-off and Lease renewal so
/// restarts and heartbeats are seen within a test's patience.
fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let s = fast_server().start_for_process();
        push_examples(&s);
        s
    })
}

fn fast_server() -> common::TestServerBuilder {
    TestServer::builder()
        .with_node()
        .arg("--backoff-initial=0.2")
        .arg("--backoff-max=1")
        .arg("--lease-renew-interval=1")
}

/// The guest examples as modules `hello:v1`, `echo:v1`, `job:v1`, `p1:v1`,
/// `probe:v1`.
fn push_examples(s: &TestServer) {
    for (file, reference) in [
        ("hello-http", "hello:v1"),
        ("echo-http", "echo:v1"),
        ("job", "job:v1"),
        ("hello-p1", "p1:v1"),
        ("sandbox-probe", "probe:v1"),
    ] {
        let path = guest(file);
        s.wkube(&["push", path.to_str().unwrap(), reference])
            .success();
    }
}

// --- fixtures ------------------------------------------------------------

fn pod(k: &Kubectl, name: &str) -> Value {
    serde_json::from_str(&k.ok(&["get", "pod", name, "-o", "json"])).unwrap()
}

/// Waits until `check` holds for the pod; on timeout fails with the pod as
/// last seen.
#[track_caller]
fn wait_pod(k: &Kubectl, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let ok = eventually(POD_TIMEOUT, || {
        let out = k.run(&["get", "pod", name, "-o", "json"]);
        if let Ok(v) = serde_json::from_str::<Value>(&out.stdout) {
            last = v;
            check(&last)
        } else {
            false
        }
    });
    assert!(
        ok,
        "pod {name} never got {what}; last seen status:\n{}\n--- server log ---\n{}",
        serde_json::to_string_pretty(&last["status"]).unwrap(),
        server().log_tail(40)
    );
    last
}

fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or("")
}

fn running_and_ready(p: &Value) -> bool {
    phase(p) == "Running"
        && p["status"]["containerStatuses"]
            .as_array()
            .is_some_and(|cs| cs.iter().all(|c| c["ready"] == true))
}

/// GET through the API server's pod proxy.
fn proxy(k: &Kubectl, pod: &str, path: &str) -> common::Output {
    k.run(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/default/pods/{pod}/proxy/{path}"),
    ])
}

// --- tests ---------------------------------------------------------------

#[test]
fn a_pushed_http_module_runs_as_a_pod_and_answers_through_the_pod_proxy() {
    let k = server().kubectl();
    let start = Instant::now();
    PodBuilder::new("hello")
        .on_node(TEST_NODE)
        .container("web", "hello:v1")
        .last("ports", json!([{"containerPort": 80}]))
        .create(&k);
    let p = wait_pod(&k, "hello", "Running and ready", running_and_ready);
    eprintln!("hello Running after {:?}", start.elapsed());
    let out = proxy(&k, "hello", "");
    assert_eq!(out.stdout, "Hello from wkube!\n", "stderr: {}", out.stderr);

    // What Kubernetes reports of a running pod.
    let status = &p["status"];
    assert_eq!(status["hostIP"], server().addresses.node_ip.to_string());
    let node: Value =
        serde_json::from_str(&k.ok(&["get", "node", TEST_NODE, "-o", "json"])).unwrap();
    let cidr = node["spec"]["podCIDR"].as_str().expect("node podCIDR");
    let ip: std::net::Ipv4Addr = status["podIP"].as_str().unwrap().parse().unwrap();
    let (base, bits) = cidr.split_once('/').unwrap();
    let base: std::net::Ipv4Addr = base.parse().unwrap();
    let mask = u32::MAX << (32 - bits.parse::<u32>().unwrap());
    assert_eq!(u32::from(ip) & mask, u32::from(base), "{ip} not in {cidr}");
    let c = &status["containerStatuses"][0];
    assert!(c["state"]["running"]["startedAt"].is_string(), "{c}");
    assert!(c["imageID"].as_str().unwrap().starts_with("sha256:"), "{c}");
    assert_eq!(c["restartCount"], 0);
    for cond in ["Initialized", "Ready", "ContainersReady", "PodScheduled"] {
        let found = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["type"] == cond)
            .unwrap_or_else(|| panic!("no {cond} condition"));
        assert_eq!(found["status"], "True", "{cond}");
    }
    let table = k.ok(&["get", "pod", "hello"]);
    assert!(
        table.contains("1/1") && table.contains("Running"),
        "{table}"
    );
}

#[test]
fn a_job_pod_ends_with_its_exit_code_and_kubectl_logs_prints_its_output() {
    let k = server().kubectl();
    PodBuilder::new("job-fails")
        .on_node(TEST_NODE)
        .container("job", "job:v1")
        .last("args", json!(["hello", "world"]))
        .env("JOB_MESSAGE", json!("the message"))
        .env("EXIT_CODE", json!("3"))
        .spec("restartPolicy", json!("Never"))
        .create(&k);
    PodBuilder::new("job-ok")
        .on_node(TEST_NODE)
        .container("job", "job:v1")
        .last("args", json!(["fine"]))
        .spec("restartPolicy", json!("Never"))
        .create(&k);
    let p = wait_pod(&k, "job-fails", "Failed", |p| phase(p) == "Failed");
    let t = &p["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(t["exitCode"], 3, "{t}");
    assert_eq!(t["reason"], "Error", "{t}");
    assert_eq!(k.ok(&["logs", "job-fails"]), "hello world\nthe message\n");

    let p = wait_pod(&k, "job-ok", "Succeeded", |p| phase(p) == "Succeeded");
    let t = &p["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(t["exitCode"], 0, "{t}");
    assert_eq!(t["reason"], "Completed", "{t}");
    let ts = k.ok(&["logs", "job-ok", "--timestamps"]);
    assert!(ts.lines().next().unwrap().ends_with("Z fine"), "{ts}");
}

#[test]
fn a_core_module_runs_to_completion() {
    let k = server().kubectl();
    PodBuilder::new("p1")
        .on_node(TEST_NODE)
        .container("main", "p1:v1")
        .spec("restartPolicy", json!("Never"))
        .create(&k);
    wait_pod(&k, "p1", "Succeeded", |p| phase(p) == "Succeeded");
    assert_eq!(k.ok(&["logs", "p1"]), "hello from a core module\n");
}

#[test]
fn a_failing_command_is_restarted_with_back_off_and_its_previous_log_kept() {
    let k = server().kubectl();
    PodBuilder::new("crashy")
        .on_node(TEST_NODE)
        .container("job", "job:v1")
        .last("args", json!(["run"]))
        .env("EXIT_CODE", json!("1"))
        .spec("restartPolicy", json!("OnFailure"))
        .create(&k);
    let p = wait_pod(&k, "crashy", "two restarts", |p| {
        p["status"]["containerStatuses"][0]["restartCount"]
            .as_i64()
            .is_some_and(|n| n >= 2)
    });
    assert_eq!(phase(&p), "Running", "a crash-looping pod stays Running");
    let last = &p["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert_eq!(last["exitCode"], 1, "{last}");
    let prev = k.ok(&["logs", "crashy", "--previous"]);
    assert_eq!(prev, "run\n\n");
    // While it waits in back-off, the table says so.
    assert!(eventually(POD_TIMEOUT, || {
        k.ok(&["get", "pod", "crashy"]).contains("CrashLoopBackOff")
    }));
}

#[test]
fn init_containers_run_in_order_before_the_main_container() {
    let k = server().kubectl();
    PodBuilder::new("with-init")
        .on_node(TEST_NODE)
        .init("first", "job:v1", &[("JOB_MESSAGE", "one")])
        .init("second", "job:v1", &[("JOB_MESSAGE", "two")])
        .container("web", "hello:v1")
        .create(&k);
    let p = wait_pod(&k, "with-init", "Running", running_and_ready);
    let inits = p["status"]["initContainerStatuses"].as_array().unwrap();
    assert_eq!(inits.len(), 2);
    for i in inits {
        assert_eq!(i["state"]["terminated"]["reason"], "Completed", "{i}");
    }
    let first_done = inits[0]["state"]["terminated"]["finishedAt"]
        .as_str()
        .unwrap();
    let second_start = inits[1]["state"]["terminated"]["startedAt"]
        .as_str()
        .unwrap();
    assert!(second_start >= first_done, "{second_start} < {first_done}");
    assert_eq!(k.ok(&["logs", "with-init", "-c", "first"]), "\none\n");
    assert_eq!(k.ok(&["logs", "with-init", "-c", "second"]), "\ntwo\n");
    assert_eq!(proxy(&k, "with-init", "").stdout, "Hello from wkube!\n");
}

#[test]
fn a_pod_sees_its_env_volumes_and_service_account_and_nothing_else() {
    let k = server().kubectl();
    k.ok_with_stdin(
        &["apply", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"List","items":[
          {"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"settings"},
           "data":{"greeting.txt":"hi from a config map","mode":"fast"}},
          {"apiVersion":"v1","kind":"Secret","metadata":{"name":"creds"},
           "stringData":{"password":"s3cret"}}]}"#,
    );
    PodBuilder::new("echo-sees")
        .on_node(TEST_NODE)
        .container("echo", "echo:v1")
        .env("PLAIN", json!("value"))
        .env(
            "MODE",
            json!({"configMapKeyRef": {"name": "settings", "key": "mode"}}),
        )
        .env(
            "PASSWORD",
            json!({"secretKeyRef": {"name": "creds", "key": "password"}}),
        )
        .env(
            "POD_NAME",
            json!({"fieldRef": {"fieldPath": "metadata.name"}}),
        )
        .env(
            "POD_NS",
            json!({"fieldRef": {"fieldPath": "metadata.namespace"}}),
        )
        .env("POD_IP", json!({"fieldRef": {"fieldPath": "status.podIP"}}))
        .env("NODE", json!({"fieldRef": {"fieldPath": "spec.nodeName"}}))
        .env("COMBINED", json!("$(PLAIN)-$(MODE)"))
        .last(
            "envFrom",
            json!([{"configMapRef": {"name": "settings"}, "prefix": "CFG_"},
                   {"secretRef": {"name": "absent", "optional": true}}]),
        )
        .last(
            "volumeMounts",
            json!([{"name": "cfg", "mountPath": "/etc/cfg"},
                   {"name": "sec", "mountPath": "/etc/sec"},
                   {"name": "scratch", "mountPath": "/tmp/scratch"}]),
        )
        .spec(
            "volumes",
            json!([{"name": "cfg", "configMap": {"name": "settings"}},
                   {"name": "sec", "secret": {"secretName": "creds"}},
                   {"name": "scratch", "emptyDir": {}}]),
        )
        .create(&k);
    let p = wait_pod(&k, "echo-sees", "Running", running_and_ready);

    let env: Value = serde_json::from_str(&proxy(&k, "echo-sees", "env").stdout).unwrap();
    assert_eq!(env["PLAIN"], "value");
    assert_eq!(env["MODE"], "fast");
    assert_eq!(env["PASSWORD"], "s3cret");
    assert_eq!(env["POD_NAME"], "echo-sees");
    assert_eq!(env["POD_NS"], "default");
    assert_eq!(env["POD_IP"], p["status"]["podIP"]);
    assert_eq!(env["NODE"], TEST_NODE);
    assert_eq!(env["COMBINED"], "value-fast");
    assert_eq!(env["CFG_mode"], "fast");
    assert!(
        env.get("HOME").is_none() && env.get("PATH").is_none(),
        "{env}"
    );

    let file = |path: &str| proxy(&k, "echo-sees", &format!("file{path}"));
    assert_eq!(file("/etc/cfg/greeting.txt").stdout, "hi from a config map");
    assert_eq!(file("/etc/sec/password").stdout, "s3cret");
    let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
    assert_eq!(file(&format!("{sa}/namespace")).stdout, "default");
    assert!(
        file(&format!("{sa}/ca.crt"))
            .stdout
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    let token = file(&format!("{sa}/token")).stdout;
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    // Nothing of the host.
    let passwd = file("/etc/passwd");
    assert!(
        !passwd.status.success(),
        "read /etc/passwd: {}",
        passwd.stdout
    );
    assert!(!file("/proc/self/environ").status.success());
}

#[test]
fn the_mounted_token_authenticates_as_the_pods_service_account() {
    let k = server().kubectl();
    PodBuilder::new("token-holder")
        .on_node(TEST_NODE)
        .container("echo", "echo:v1")
        .create(&k);
    wait_pod(&k, "token-holder", "Running", running_and_ready);
    let token = proxy(
        &k,
        "token-holder",
        "file/var/run/secrets/kubernetes.io/serviceaccount/token",
    )
    .stdout;
    // Ask the server who the token's holder is.
    let mut cmd = std::process::Command::new("kubectl");
    cmd.env("HOME", server().scratch())
        .env("KUBECONFIG", server().admin_kubeconfig())
        .args([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .args(["--token", token.trim()]);
    let out = common::run(cmd, None, common::COMMAND_TIMEOUT);
    assert_eq!(
        out.stdout.trim(),
        "system:serviceaccount:default:default",
        "{}",
        out.stderr
    );
}

#[test]
fn a_request_past_the_memory_limit_fails_and_the_next_one_is_served() {
    let k = server().kubectl();
    PodBuilder::new("echo-mem")
        .on_node(TEST_NODE)
        .container("echo", "echo:v1")
        .last("resources", json!({"limits": {"memory": "32Mi"}}))
        .create(&k);
    wait_pod(&k, "echo-mem", "Running", running_and_ready);
    let big = proxy(&k, "echo-mem", "alloc/64");
    assert!(
        !big.status.success(),
        "64 MiB under a 32 MiB limit: {}",
        big.stdout
    );
    let small = proxy(&k, "echo-mem", "alloc/1");
    assert!(small.status.success(), "{}", small.stderr);
    let p = pod(&k, "echo-mem");
    assert_eq!(phase(&p), "Running");
    assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);
}

#[test]
fn a_missing_module_leaves_the_pod_waiting_until_it_is_pushed() {
    let k = server().kubectl();
    PodBuilder::new("later")
        .on_node(TEST_NODE)
        .container("web", "later:v1")
        .create(&k);
    let p = wait_pod(&k, "later", "a module-pull reason", |p| {
        let reason = p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            .as_str()
            .unwrap_or("");
        reason == "ErrModulePull" || reason == "ModulePullBackOff"
    });
    assert_eq!(phase(&p), "Pending");
    let msg = p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap();
    assert!(msg.contains("later"), "{msg}");
    server()
        .wkube(&["push", guest("hello-http").to_str().unwrap(), "later:v1"])
        .success();
    wait_pod(&k, "later", "Running once pushed", running_and_ready);
}

#[test]
fn deleting_a_pod_lets_its_in_flight_request_finish_then_removes_it() {
    let k = server().kubectl();
    PodBuilder::new("echo-del")
        .on_node(TEST_NODE)
        .container("echo", "echo:v1")
        .spec("terminationGracePeriodSeconds", json!(10))
        .create(&k);
    wait_pod(&k, "echo-del", "Running", running_and_ready);
    let slow = {
        let k = server().kubectl();
        std::thread::spawn(move || proxy(&k, "echo-del", "sleep/1500"))
    };
    std::thread::sleep(Duration::from_millis(400));
    k.ok(&["delete", "pod", "echo-del", "--wait=false"]);
    let answered = slow.join().unwrap();
    assert!(
        answered.status.success(),
        "the in-flight request was cut: {}",
        answered.stderr
    );
    assert!(
        eventually(POD_TIMEOUT, || {
            k.run(&["get", "pod", "echo-del"])
                .stderr
                .contains("NotFound")
        }),
        "the pod was never removed"
    );
}

#[test]
fn probes_drive_readiness_and_liveness_restarts_the_container() {
    let k = server().kubectl();
    PodBuilder::new("not-ready")
        .on_node(TEST_NODE)
        .container("echo", "echo:v1")
        .last(
            "readinessProbe",
            json!({"httpGet": {"path": "/status/503", "port": 80}, "periodSeconds": 1}),
        )
        .create(&k);
    PodBuilder::new("dies")
        .on_node(TEST_NODE)
        .container("echo", "echo:v1")
        .last(
            "livenessProbe",
            json!({"httpGet": {"path": "/status/500", "port": 80},
                   "periodSeconds": 1, "failureThreshold": 2}),
        )
        .create(&k);
    let p = wait_pod(&k, "dies", "a liveness restart", |p| {
        p["status"]["containerStatuses"][0]["restartCount"]
            .as_i64()
            .is_some_and(|n| n >= 1)
    });
    let last = &p["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert!(
        last["message"]
            .as_str()
            .unwrap_or("")
            .contains("Liveness probe failed"),
        "{last}"
    );
    // What happened is told in the pod's events.
    assert!(eventually(POD_TIMEOUT, || {
        let d = k.ok(&["describe", "pod", "dies"]);
        d.contains("Unhealthy") && d.contains("Liveness probe failed") && d.contains("Started")
    }));
    let p = wait_pod(&k, "not-ready", "Running", |p| phase(p) == "Running");
    let ready = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["status"], "False", "{ready}");
    assert!(k.ok(&["get", "pod", "not-ready"]).contains("0/1"));
}

#[test]
fn active_deadline_seconds_ends_a_pod_as_failed() {
    let k = server().kubectl();
    PodBuilder::new("deadline")
        .on_node(TEST_NODE)
        .container("echo", "echo:v1")
        .spec("activeDeadlineSeconds", json!(1))
        .create(&k);
    let p = wait_pod(&k, "deadline", "Failed", |p| phase(p) == "Failed");
    assert_eq!(p["status"]["reason"], "DeadlineExceeded");
}

#[test]
fn the_node_registers_with_capacity_and_labels_and_renews_its_lease() {
    let k = server().kubectl();
    let node: Value =
        serde_json::from_str(&k.ok(&["get", "node", TEST_NODE, "-o", "json"])).unwrap();
    let labels = &node["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/hostname"], TEST_NODE);
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert!(labels["kubernetes.io/arch"].is_string());
    let alloc = &node["status"]["allocatable"];
    assert_eq!(alloc["pods"], "1000");
    assert!(
        alloc["cpu"].is_string() && alloc["memory"].is_string(),
        "{alloc}"
    );
    let ready = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["status"], "True");
    let renew = || {
        let l: Value = serde_json::from_str(&k.ok(&[
            "get",
            "lease",
            "-n",
            "kube-node-lease",
            TEST_NODE,
            "-o",
            "json",
        ]))
        .unwrap();
        assert_eq!(l["spec"]["holderIdentity"], TEST_NODE);
        l["spec"]["renewTime"].as_str().unwrap().to_string()
    };
    assert!(eventually(Duration::from_secs(20), || k
        .run(&["get", "lease", "-n", "kube-node-lease", TEST_NODE])
        .status
        .success()));
    let first = renew();
    assert!(
        eventually(Duration::from_secs(20), || renew() != first),
        "the lease was not renewed"
    );
}

#[test]
fn a_restarted_server_takes_its_pods_back_without_resetting_them() {
    let mut s = fast_server().start();
    push_examples(&s);
    let k = s.kubectl();
    PodBuilder::new("keeps")
        .on_node(TEST_NODE)
        .container("web", "hello:v1")
        .create(&k);
    PodBuilder::new("done")
        .on_node(TEST_NODE)
        .container("job", "job:v1")
        .spec("restartPolicy", json!("Never"))
        .create(&k);
    let before = {
        let ok = eventually(POD_TIMEOUT, || running_and_ready(&pod(&k, "keeps")));
        assert!(ok, "{}", s.log_tail(30));
        pod(&k, "keeps")
    };
    assert!(eventually(POD_TIMEOUT, || phase(&pod(&k, "done")) == "Succeeded"));
    s.restart();
    let k = s.kubectl();
    assert!(eventually(POD_TIMEOUT, || proxy(&k, "keeps", "").stdout
        == "Hello from wkube!\n"));
    let after = pod(&k, "keeps");
    assert_eq!(after["status"]["podIP"], before["status"]["podIP"]);
    assert_eq!(after["status"]["startTime"], before["status"]["startTime"]);
    assert_eq!(
        after["status"]["containerStatuses"][0]["state"]["running"]["startedAt"],
        before["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
    );
    assert_eq!(after["status"]["containerStatuses"][0]["restartCount"], 0);
    let done = pod(&k, "done");
    assert_eq!(phase(&done), "Succeeded");
    assert_eq!(done["status"]["containerStatuses"][0]["restartCount"], 0);
    assert_eq!(k.ok(&["logs", "done"]), "\n\n");
}

#[test]
fn kubectl_logs_follow_streams_each_request_line_as_it_is_served() {
    let k = server().kubectl();
    PodBuilder::new("echo-logs")
        .on_node(TEST_NODE)
        .container("echo", "echo:v1")
        .create(&k);
    wait_pod(&k, "echo-logs", "Running", running_and_ready);
    // Nothing printed yet (so no log file yet): an empty log, and a
    // follower that waits for the first line.
    assert_eq!(k.ok(&["logs", "echo-logs"]), "");
    let mut first = k.spawn_lines(&["logs", "-f", "echo-logs"]);
    proxy(&k, "echo-logs", "status/201");
    assert_eq!(
        first.next_line(Duration::from_secs(20)),
        "GET /status/201 -> 201"
    );
    let mut follow = k.spawn_lines(&["logs", "-f", "echo-logs", "--tail=1"]);
    assert_eq!(
        follow.next_line(Duration::from_secs(20)),
        "GET /status/201 -> 201"
    );
    proxy(&k, "echo-logs", "status/202");
    assert_eq!(
        follow.next_line(Duration::from_secs(20)),
        "GET /status/202 -> 202"
    );
}

#[test]
fn a_guest_trying_every_way_out_of_its_sandbox_is_refused_each_time() {
    let s = server();
    let k = s.kubectl();
    // Another pod's volume, with something in it, and another namespace's
    // Secret.
    PodBuilder::new("victim")
        .on_node(TEST_NODE)
        .container("web", "hello:v1")
        .last(
            "volumeMounts",
            json!([{"name": "cache", "mountPath": "/cache"}]),
        )
        .spec("volumes", json!([{"name": "cache", "emptyDir": {}}]))
        .create(&k);
    let victim = wait_pod(&k, "victim", "Running", running_and_ready);
    let uid = victim["metadata"]["uid"].as_str().unwrap();
    let victim_volume = s
        .data_dir
        .join("kubelet/pods")
        .join(uid)
        .join("volumes/cache");
    std::fs::write(victim_volume.join("private"), "victim's data").unwrap();
    k.ok(&["create", "namespace", "probe-other"]);
    k.ok(&[
        "create",
        "secret",
        "generic",
        "s",
        "-n",
        "probe-other",
        "--from-literal=k=v",
    ]);

    let api = s.api_url.trim_start_matches("https://").to_string();
    PodBuilder::new("probe")
        .on_node(TEST_NODE)
        .container("probe", "probe:v1")
        .last(
            "args",
            json!([
                "--volume",
                "/data",
                "--other",
                victim_volume.join("private").to_str().unwrap(),
                "--memory-mib",
                "16",
                "--denied-url",
                "http://127.0.0.1:1/",
                "--tcp",
                api,
                "--api",
                "https://kubernetes.default.svc/api/v1/namespaces/probe-other/secrets",
            ]),
        )
        .last(
            "volumeMounts",
            json!([{"name": "scratch", "mountPath": "/data"}]),
        )
        .last("resources", json!({"limits": {"memory": "16Mi"}}))
        .spec("volumes", json!([{"name": "scratch", "emptyDir": {}}]))
        .spec("restartPolicy", json!("Never"))
        .create(&k);
    let p = wait_pod(&k, "probe", "to finish", |p| {
        matches!(phase(p), "Succeeded" | "Failed")
    });
    let report = k.ok(&["logs", "probe"]);
    eprintln!("{report}");
    assert_eq!(phase(&p), "Succeeded", "{report}");
    for attempt in [
        "path traversal",
        "symlinks",
        "another pod's volume",
        "memory past the limit",
        "outbound to an unlisted host",
        "raw socket",
        "token against another namespace",
    ] {
        assert!(
            report.contains(&format!("REFUSED {attempt}: ")),
            "{attempt}:\n{report}"
        );
    }
    assert!(report.ends_with("7 attempts, all refused\n"), "{report}");
    // Nothing was left behind outside the probe's own volume.
    assert_eq!(
        std::fs::read_to_string(victim_volume.join("private")).unwrap(),
        "victim's data"
    );
}

/// The node's kubelet Summary API, through the API server's node proxy.
fn stats_summary(k: &Kubectl) -> Value {
    let out = k.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{TEST_NODE}/proxy/stats/summary"),
    ]);
    serde_json::from_str(&out).expect("summary JSON")
}

fn container_stats(summary: &Value, pod: &str, container: &str) -> Value {
    summary["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .find(|p| p["podRef"]["name"] == pod)
        .and_then(|p| {
            p["containers"]
                .as_array()?
                .iter()
                .find(|c| c["name"] == container)
                .cloned()
        })
        .unwrap_or_else(|| panic!("no {pod}/{container} in {summary}"))
}

#[test]
fn the_stats_summary_counts_a_containers_cpu_time_and_memory() {
    let k = server().kubectl();
    PodBuilder::new("metered")
        .on_node(TEST_NODE)
        .container("web", "echo:v1")
        .last("ports", json!([{"containerPort": 80}]))
        .create(&k);
    wait_pod(&k, "metered", "Running and ready", running_and_ready);
    let before = container_stats(&stats_summary(&k), "metered", "web");
    let cpu_before = before["cpu"]["usageCoreNanoSeconds"].as_u64().unwrap();

    // 300 ms of busy guest code, then an 8 MiB allocation.
    assert!(proxy(&k, "metered", "spin/300").status.success());
    assert!(proxy(&k, "metered", "alloc/8").status.success());
    let after = container_stats(&stats_summary(&k), "metered", "web");
    let cpu = after["cpu"]["usageCoreNanoSeconds"].as_u64().unwrap() - cpu_before;
    // The CPU time counted is what the guest's thread really ran: at most
    // the 300 ms it spun (plus its instantiation), and, on a machine busy
    // with other tests, less than all of it.
    assert!(
        (100_000_000..=400_000_000).contains(&cpu),
        "{cpu} ns of CPU counted for 300 ms of spinning: {after}"
    );
    let peak = after["memory"]["maxWorkingSetBytes"].as_u64().unwrap();
    assert!(peak >= 8 << 20, "peak {peak} after an 8 MiB allocation");
    // Each request's instance is gone once it answered.
    assert!(
        eventually(Duration::from_secs(5), || {
            let now = container_stats(&stats_summary(&k), "metered", "web");
            now["memory"]["workingSetBytes"].as_u64().unwrap() < 8 << 20
        }),
        "memory still held: {}",
        container_stats(&stats_summary(&k), "metered", "web")
    );
    // The node's totals include the pod's.
    let node = &stats_summary(&k)["node"];
    assert!(node["cpu"]["usageCoreNanoSeconds"].as_u64().unwrap() >= cpu);
    k.ok(&["delete", "pod", "metered", "--wait=false"]);
}
