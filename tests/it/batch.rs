//! Jobs, CronJobs and DaemonSets on a real server with a real node, driven
//! with stock kubectl: Jobs run the `job` guest to completion (or to their
//! backoff limit), a CronJob starts a Job on its minute, and a DaemonSet of
//! the `hello-http` guest runs once on each of two nodes (the server's own
//! and a `wkube agent`) and rolls out a new template.

use crate::common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{Kubectl, TEST_NODE, TestServer, eventually, guest};
use serde_json::{Value, json};

/// One server with a node for the Job and CronJob tests, each in a
/// namespace of its own; `job:v1` is the `job` guest.
fn batch_server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let s = TestServer::builder().with_node().start_for_process();
        s.wkube(&["push", guest("job").to_str().unwrap(), "job:v1"])
            .success();
        s
    })
}

fn namespace(name: &str) -> Kubectl {
    let k = batch_server().kubectl();
    k.ok(&["create", "namespace", name]);
    k
}

fn get(k: &Kubectl, ns: &str, what: &str) -> Value {
    serde_json::from_str(&k.ok(&["-n", ns, "get", what, "-o", "json"])).unwrap()
}

/// A Job of the `job` guest; `env` as (name, value) pairs.
fn job(name: &str, spec: Value, env: &[(&str, &str)]) -> String {
    let env: Vec<Value> = env
        .iter()
        .map(|(n, v)| json!({"name": n, "value": v}))
        .collect();
    let mut spec = spec;
    spec["template"] = json!({"spec": {"restartPolicy": "Never",
        "containers": [{"name": "job", "image": "job:v1", "args": ["run", name], "env": env}]}});
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec})
        .to_string()
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == "True")
}

/// Phases of the pods of Job `name`, found through the label the
/// controller puts on them.
fn pod_phases(k: &Kubectl, ns: &str, name: &str) -> Vec<String> {
    let out = k.ok(&[
        "-n",
        ns,
        "get",
        "pods",
        "-l",
        &format!("batch.kubernetes.io/job-name={name}"),
        "-o",
        "jsonpath={range .items[*]}{.status.phase}{\"\\n\"}{end}",
    ]);
    out.lines().map(str::to_string).collect()
}

#[test]
fn a_job_runs_its_completions_at_most_parallelism_at_once() {
    let (ns, k) = ("par", namespace("par"));
    k.ok_with_stdin(
        &["-n", ns, "create", "-f", "-"],
        &job(
            "par",
            json!({"completions": 3, "parallelism": 2}),
            &[("SLEEP_MS", "1500")],
        ),
    );
    // Watch the pods while the Job runs: never more than two unfinished.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut most_running = 0;
    loop {
        let phases = pod_phases(&k, ns, "par");
        let running = phases
            .iter()
            .filter(|p| *p != "Succeeded" && *p != "Failed")
            .count();
        most_running = most_running.max(running);
        assert!(running <= 2, "more than parallelism at once: {phases:?}");
        let j = get(&k, ns, "job/par");
        if condition(&j, "Complete").is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "job never completed: {}",
            j["status"]
        );
    }
    assert_eq!(most_running, 2, "parallelism 2 was never used");
    k.ok(&[
        "-n",
        ns,
        "wait",
        "--for=condition=complete",
        "job/par",
        "--timeout=30s",
    ]);
    let j = get(&k, ns, "job/par");
    assert_eq!(j["status"]["succeeded"], 3, "{}", j["status"]);
    // Zero counts are left out, as Kubernetes does.
    assert!(j["status"]["active"].is_null(), "{}", j["status"]);
    assert!(j["status"]["completionTime"].is_string());
    assert!(
        condition(&j, "SuccessCriteriaMet").is_some(),
        "{}",
        j["status"]
    );
    // The selector the API server generated picks the Job's own pods.
    let uid = j["metadata"]["uid"].as_str().unwrap();
    assert_eq!(
        j["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
        uid
    );
    let pods = get(&k, ns, "pods");
    let pods = pods["items"].as_array().unwrap();
    assert_eq!(pods.len(), 3);
    for p in pods {
        assert_eq!(p["metadata"]["labels"]["job-name"], "par");
        assert_eq!(p["metadata"]["labels"]["controller-uid"], uid);
        assert_eq!(p["metadata"]["ownerReferences"][0]["uid"], uid);
        assert_eq!(p["metadata"]["ownerReferences"][0]["controller"], true);
    }
    assert_eq!(
        k.ok(&[
            "-n",
            ns,
            "logs",
            &format!("pod/{}", pods[0]["metadata"]["name"].as_str().unwrap())
        ]),
        "run par\n\n"
    );
}

#[test]
fn a_job_whose_pods_fail_stops_at_its_backoff_limit() {
    let (ns, k) = ("fail", namespace("fail"));
    k.ok_with_stdin(
        &["-n", ns, "create", "-f", "-"],
        &job("fail", json!({"backoffLimit": 1}), &[("EXIT_CODE", "1")]),
    );
    // Two failures (the second after a 10 s back-off) end it.
    k.ok(&[
        "-n",
        ns,
        "wait",
        "--for=condition=failed",
        "job/fail",
        "--timeout=60s",
    ]);
    let j = get(&k, ns, "job/fail");
    let failed = condition(&j, "Failed").unwrap();
    assert_eq!(failed["reason"], "BackoffLimitExceeded");
    assert_eq!(
        condition(&j, "FailureTarget").unwrap()["reason"],
        "BackoffLimitExceeded"
    );
    assert_eq!(j["status"]["failed"], 2, "{}", j["status"]);
    assert!(j["status"]["succeeded"].is_null(), "{}", j["status"]);
    assert!(condition(&j, "Complete").is_none());
    assert_eq!(pod_phases(&k, ns, "fail"), ["Failed", "Failed"]);
    let described = k.ok(&["-n", ns, "describe", "job", "fail"]);
    assert!(
        described.contains("SuccessfulCreate") && described.contains("BackoffLimitExceeded"),
        "{described}"
    );
}

#[test]
fn a_job_restarting_in_place_counts_restarts_toward_its_backoff_limit() {
    let (ns, k) = ("restarts", namespace("restarts"));
    let manifest = job(
        "restarts",
        json!({"backoffLimit": 1}),
        &[("EXIT_CODE", "1")],
    )
    .replace("\"Never\"", "\"OnFailure\"");
    k.ok_with_stdin(&["-n", ns, "create", "-f", "-"], &manifest);
    k.ok(&[
        "-n",
        ns,
        "wait",
        "--for=condition=failed",
        "job/restarts",
        "--timeout=60s",
    ]);
    let j = get(&k, ns, "job/restarts");
    assert_eq!(
        condition(&j, "Failed").unwrap()["reason"],
        "BackoffLimitExceeded"
    );
    // The pod never failed as a whole: its restarts did.
    assert!(j["status"]["failed"].is_null(), "{}", j["status"]);
    assert!(
        eventually(Duration::from_secs(30), || pod_phases(&k, ns, "restarts")
            .is_empty()),
        "the failed Job's restarting pod was not removed"
    );
}

#[test]
fn an_indexed_job_completes_each_index_once() {
    let (ns, k) = ("indexed", namespace("indexed"));
    k.ok_with_stdin(
        &["-n", ns, "create", "-f", "-"],
        &job(
            "indexed",
            json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}),
            &[],
        ),
    );
    k.ok(&[
        "-n",
        ns,
        "wait",
        "--for=condition=complete",
        "job/indexed",
        "--timeout=60s",
    ]);
    let j = get(&k, ns, "job/indexed");
    assert_eq!(j["status"]["completedIndexes"], "0-2", "{}", j["status"]);
    assert_eq!(j["status"]["succeeded"], 3);
    let pods = get(&k, ns, "pods");
    let mut indexes: Vec<String> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let index = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
                .as_str()
                .unwrap()
                .to_string();
            assert_eq!(p["spec"]["hostname"], format!("indexed-{index}"));
            index
        })
        .collect();
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2"]);
}

#[test]
fn a_suspended_job_starts_no_pods_until_resumed() {
    let (ns, k) = ("suspend", namespace("suspend"));
    k.ok_with_stdin(
        &["-n", ns, "create", "-f", "-"],
        &job("later", json!({"suspend": true}), &[]),
    );
    assert!(
        eventually(Duration::from_secs(30), || condition(
            &get(&k, ns, "job/later"),
            "Suspended"
        )
        .is_some()),
        "{}",
        get(&k, ns, "job/later")["status"]
    );
    assert!(pod_phases(&k, ns, "later").is_empty());
    assert!(get(&k, ns, "job/later")["status"]["startTime"].is_null());
    k.ok(&[
        "-n",
        ns,
        "patch",
        "job/later",
        "--type=merge",
        "-p",
        r#"{"spec": {"suspend": false}}"#,
    ]);
    k.ok(&[
        "-n",
        ns,
        "wait",
        "--for=condition=complete",
        "job/later",
        "--timeout=60s",
    ]);
    let j = get(&k, ns, "job/later");
    assert!(j["status"]["startTime"].is_string());
    let suspended = j["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Suspended")
        .unwrap();
    assert_eq!(suspended["status"], "False");
    assert_eq!(suspended["reason"], "JobResumed");
}

#[test]
fn a_finished_job_with_a_ttl_is_deleted_with_its_pods() {
    let (ns, k) = ("ttl", namespace("ttl"));
    k.ok_with_stdin(
        &["-n", ns, "create", "-f", "-"],
        &job("ttl", json!({"ttlSecondsAfterFinished": 1}), &[]),
    );
    let gone = eventually(Duration::from_secs(60), || {
        k.run(&["-n", ns, "get", "job", "ttl"])
            .stderr
            .contains("NotFound")
    });
    assert!(gone, "the job outlived its TTL");
    assert!(
        eventually(Duration::from_secs(30), || pod_phases(&k, ns, "ttl")
            .is_empty()),
        "its pods outlived it"
    );
}

#[test]
fn a_cron_job_starts_a_job_on_its_minute() {
    let (ns, k) = ("cron", namespace("cron"));
    k.ok(&[
        "-n",
        ns,
        "create",
        "cronjob",
        "tick",
        "--image=job:v1",
        "--schedule=* * * * *",
        "--",
        "tick",
        "now",
    ]);
    let cj = get(&k, ns, "cronjob/tick");
    assert_eq!(cj["spec"]["concurrencyPolicy"], "Allow");
    let table = k.ok(&["-n", ns, "get", "cronjobs"]);
    assert!(
        table.contains("SCHEDULE") && table.contains("* * * * *"),
        "{table}"
    );
    let bad = k
        .run(&[
            "-n",
            ns,
            "create",
            "cronjob",
            "bad",
            "--image=job:v1",
            "--schedule=61 * * * *",
        ])
        .stderr;
    assert!(bad.contains("spec.schedule"), "{bad}");
    assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 3);

    // A Job made by hand from the CronJob's template runs at once.
    k.ok(&["-n", ns, "create", "job", "by-hand", "--from=cronjob/tick"]);
    k.ok(&[
        "-n",
        ns,
        "wait",
        "--for=condition=complete",
        "job/by-hand",
        "--timeout=60s",
    ]);
    assert_eq!(k.ok(&["-n", ns, "logs", "job/by-hand"]), "now\n\n");

    // The scheduled one comes at the next minute boundary.
    let scheduled = || -> Option<Value> {
        get(&k, ns, "jobs")["items"]
            .as_array()?
            .iter()
            .find(|j| {
                j["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("tick-"))
            })
            .cloned()
    };
    assert!(
        eventually(Duration::from_secs(70), || scheduled().is_some()),
        "no job within a minute: {}",
        get(&k, ns, "cronjob/tick")["status"]
    );
    let j = scheduled().unwrap();
    let name = j["metadata"]["name"].as_str().unwrap().to_string();
    let minutes: i64 = name.trim_start_matches("tick-").parse().unwrap();
    let stamp = j["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(stamp.ends_with(":00Z") || stamp.contains('+'), "{stamp}");
    assert_eq!(j["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    k.ok(&[
        "-n",
        ns,
        "wait",
        "--for=condition=complete",
        &format!("job/{name}"),
        "--timeout=60s",
    ]);
    assert!(
        eventually(Duration::from_secs(30), || {
            let s = &get(&k, ns, "cronjob/tick")["status"];
            s["lastSuccessfulTime"].is_string() && s["active"].is_null()
        }),
        "{}",
        get(&k, ns, "cronjob/tick")["status"]
    );
    let last = get(&k, ns, "cronjob/tick")["status"]["lastScheduleTime"]
        .as_str()
        .unwrap()
        .to_string();
    // Normally the same slot; the next minute may have come meanwhile.
    let last_minutes = k8s_minutes(&last);
    let names: Vec<String> = get(&k, ns, "jobs")["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        last_minutes >= minutes && names.contains(&format!("tick-{last_minutes}")),
        "{last} vs {names:?}"
    );
}

/// Minutes since the epoch of an RFC 3339 UTC time (`2026-01-01T10:00:00Z`).
fn k8s_minutes(t: &str) -> i64 {
    let out = Command::new("date")
        .args(["-u", "-d", t, "+%s"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse::<i64>()
        .unwrap()
        / 60
}

/// A `wkube agent` joining as one more node; killed when dropped.
struct Agent(Child);

impl Agent {
    fn start(server: &TestServer, dir: &Path, name: &str, ip: &str) -> Agent {
        let token = std::fs::read_to_string(server.data_dir.join("join-token")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_wkube"))
            .arg("--data-dir")
            .arg(dir.join(name))
            .args([
                "agent",
                "--server",
                &server.api_url,
                "--token",
                token.trim(),
            ])
            .args(["--node-name", name, "--node-ip", ip])
            .args(["--agent-listen", &format!("{ip}:0")])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{name}.err"))).unwrap())
            .spawn()
            .expect("spawn wkube agent");
        Agent(child)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn daemon_set(image: &str) -> String {
    json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": image}]}}}})
    .to_string()
}

#[test]
fn a_daemon_set_runs_one_pod_per_node_and_rolls_out_a_new_template() {
    let server = common::node_server_with_examples();
    let tmp = tempfile::tempdir().unwrap();
    let _agent = Agent::start(&server, tmp.path(), "edge-5", "127.0.0.5");
    let k = server.kubectl();
    let ready_nodes = || {
        get(&k, "default", "nodes")["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| condition(n, "Ready").is_some())
            .count()
    };
    assert!(
        eventually(Duration::from_secs(60), || ready_nodes() == 2),
        "the second node never became ready: {}",
        std::fs::read_to_string(tmp.path().join("edge-5.err")).unwrap_or_default()
    );

    k.ok_with_stdin(&["apply", "-f", "-"], &daemon_set("hello:v1"));
    k.ok(&["rollout", "status", "ds/web", "--timeout=90s"]);
    let running = |image: &str| -> Vec<String> {
        let pods = get(&k, "default", "pods");
        let mut nodes: Vec<String> = pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| {
                p["status"]["phase"] == "Running"
                    && p["metadata"]["deletionTimestamp"].is_null()
                    && p["spec"]["containers"][0]["image"] == image
            })
            .map(|p| p["spec"]["nodeName"].as_str().unwrap_or("").to_string())
            .collect();
        nodes.sort();
        nodes
    };
    // `rollout status` reads the DaemonSet's counts; the pods' own status
    // and the remaining counts may land a moment apart from them.
    assert!(
        eventually(Duration::from_secs(30), || running("hello:v1")
            == ["edge-5", TEST_NODE]),
        "{:?}",
        running("hello:v1")
    );
    let counts = [
        "desiredNumberScheduled",
        "currentNumberScheduled",
        "numberReady",
        "numberAvailable",
        "updatedNumberScheduled",
    ];
    assert!(
        eventually(Duration::from_secs(30), || {
            let ds = get(&k, "default", "ds/web");
            counts.iter().all(|f| ds["status"][f] == 2) && ds["status"]["numberMisscheduled"] == 0
        }),
        "{}",
        get(&k, "default", "ds/web")["status"]
    );
    // Each pod names its node the way the scheduler reads it.
    let pods = get(&k, "default", "pods");
    for p in pods["items"].as_array().unwrap() {
        let term = &p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0];
        assert_eq!(term["matchFields"][0]["key"], "metadata.name");
        assert_eq!(term["matchFields"][0]["values"][0], p["spec"]["nodeName"]);
        assert!(p["metadata"]["labels"]["controller-revision-hash"].is_string());
    }

    k.ok(&["set", "image", "ds/web", "web=echo:v1"]);
    k.ok(&["rollout", "status", "ds/web", "--timeout=90s"]);
    assert!(
        eventually(Duration::from_secs(30), || running("echo:v1")
            == ["edge-5", TEST_NODE]
            && running("hello:v1").is_empty()),
        "{:?} / {:?}",
        running("echo:v1"),
        running("hello:v1")
    );
    let revisions = get(&k, "default", "controllerrevisions");
    assert_eq!(revisions["items"].as_array().unwrap().len(), 2);
    let history = k.ok(&["rollout", "history", "ds/web"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");

    // Back to the first template, kept in its ControllerRevision.
    k.ok(&["rollout", "undo", "ds/web"]);
    k.ok(&["rollout", "status", "ds/web", "--timeout=90s"]);
    assert!(
        eventually(Duration::from_secs(30), || running("hello:v1")
            == ["edge-5", TEST_NODE]
            && running("echo:v1").is_empty()),
        "{:?} / {:?}",
        running("hello:v1"),
        running("echo:v1")
    );
    let table = k.ok(&["get", "ds", "web"]);
    assert!(
        table.contains("DESIRED") && table.contains("web"),
        "{table}"
    );

    // A node selector keeps a DaemonSet to the nodes it names, and
    // follows their labels.
    k.ok(&["label", "node", "edge-5", "role=edge"]);
    let edge_only = daemon_set("hello:v1")
        .replace("\"web\"", "\"edge\"")
        .replace(
            "\"containers\"",
            "\"nodeSelector\": {\"role\": \"edge\"}, \"containers\"",
        );
    k.ok_with_stdin(&["apply", "-f", "-"], &edge_only);
    k.ok(&["rollout", "status", "ds/edge", "--timeout=90s"]);
    let edge_pods = || -> Vec<String> {
        get(&k, "default", "pods")["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| {
                p["metadata"]["labels"]["app"] == "edge"
                    && p["metadata"]["deletionTimestamp"].is_null()
            })
            .map(|p| p["spec"]["nodeName"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(edge_pods(), ["edge-5"]);
    assert_eq!(
        get(&k, "default", "ds/edge")["status"]["desiredNumberScheduled"],
        1
    );
    k.ok(&["label", "node", "edge-5", "role-"]);
    assert!(
        eventually(Duration::from_secs(30), || edge_pods().is_empty()),
        "the daemon stayed on a node that no longer fits: {:?}",
        edge_pods()
    );
}
