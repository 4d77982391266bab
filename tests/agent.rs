//! `wkube agent`: another node joining with the server's join token, as a
//! user would add a machine, and what its node credential may do.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{TestServer, eventually, guest};
use serde_json::{Value, json};

/// A `wkube agent` process, killed when dropped.
struct Agent {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
}

impl Agent {
    fn start(server: &TestServer, dir: &Path, name: &str, ip: &str, token: Option<&str>) -> Agent {
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wkube"));
        cmd.arg("--data-dir")
            .arg(dir.join(name))
            .args(["agent", "--server", &server.api_url])
            .args(["--node-name", name, "--node-ip", ip])
            .args(["--agent-listen", &format!("{ip}:0")])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.join(format!("{name}.err"))).unwrap());
        if let Some(t) = token {
            cmd.args(["--token", t]);
        }
        Agent {
            child: cmd.spawn().expect("spawn wkube agent"),
            dir: dir.join(name),
            log,
        }
    }

    /// Waits for the process to exit; its stderr.
    fn exit_stderr(mut self, name: &str) -> String {
        let ok = eventually(Duration::from_secs(30), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        assert!(ok, "agent kept running");
        std::fs::read_to_string(self.log.with_file_name(format!("{name}.err"))).unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn join_token(server: &TestServer) -> String {
    std::fs::read_to_string(server.data_dir.join("join-token"))
        .expect("the server writes DATA/join-token")
        .trim()
        .to_string()
}

fn node_ready(server: &TestServer, name: &str) -> bool {
    let out = server.kubectl().run(&["get", "node", name, "-o", "json"]);
    serde_json::from_str::<Value>(&out.stdout).is_ok_and(|n| {
        n["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

#[test]
fn an_agent_joins_with_the_token_runs_pods_and_rejoins_without_it() {
    let mut server = TestServer::builder().with_node().start();
    let tmp = tempfile::tempdir().unwrap();
    let k = server.kubectl();
    server
        .wkube(&["push", guest("hello-http").to_str().unwrap(), "hello:v1"])
        .success();

    let agent = Agent::start(
        &server,
        tmp.path(),
        "edge-1",
        "127.0.0.2",
        Some(&join_token(&server)),
    );
    assert!(
        eventually(Duration::from_secs(60), || node_ready(&server, "edge-1")),
        "the agent's node never became Ready: {}",
        std::fs::read_to_string(tmp.path().join("edge-1.err")).unwrap_or_default()
    );
    let node: Value =
        serde_json::from_str(&k.ok(&["get", "node", "edge-1", "-o", "json"])).unwrap();
    assert_eq!(node["status"]["addresses"][0]["address"], "127.0.0.2");
    assert!(node["spec"]["podCIDR"].is_string(), "{}", node["spec"]);

    k.ok_with_stdin(
        &["create", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "on-edge"},
                "spec": {"nodeName": "edge-1",
                         "containers": [{"name": "web", "image": "hello:v1"}]}})
        .to_string(),
    );
    let proxied = || {
        k.run(&[
            "get",
            "--raw",
            "/api/v1/namespaces/default/pods/on-edge/proxy/",
        ])
        .stdout
            == "Hello from wkube!\n"
    };
    assert!(
        eventually(Duration::from_secs(60), proxied),
        "pod on the agent never answered"
    );

    // A restart needs no token: the node credential was kept.
    let dir = agent.dir.clone();
    drop(agent);
    assert!(dir.join("agent/credentials.json").exists());
    let _again = Agent::start(&server, tmp.path(), "edge-1", "127.0.0.2", None);
    assert!(
        eventually(Duration::from_secs(60), proxied),
        "pod not served after the agent restarted"
    );
    let started = |k: &common::Kubectl| {
        k.ok(&[
            "get",
            "pod",
            "on-edge",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.running.startedAt}",
        ])
    };
    assert!(eventually(Duration::from_secs(30), || !started(&k).is_empty()));
    let before = started(&k);

    // The server goes away and comes back: the agent's pod runs on
    // untouched and the agent finds the server again.
    server.restart();
    let k = server.kubectl();
    let proxied = || {
        k.run(&[
            "get",
            "--raw",
            "/api/v1/namespaces/default/pods/on-edge/proxy/",
        ])
        .stdout
            == "Hello from wkube!\n"
    };
    assert!(eventually(Duration::from_secs(60), proxied));
    assert_eq!(started(&k), before, "the pod was restarted");
    assert!(eventually(Duration::from_secs(60), || node_ready(
        &server, "edge-1"
    )));
}

#[test]
fn a_token_for_another_cluster_or_a_wrong_secret_is_refused() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let token = join_token(&server);
    let (hash, secret) = token.split_once("::").unwrap();

    let other_ca = format!("K10{}::{secret}", "0".repeat(64));
    let err =
        Agent::start(&server, tmp.path(), "n-a", "127.0.0.3", Some(&other_ca)).exit_stderr("n-a");
    assert!(err.contains("does not match the join token"), "{err}");

    let wrong_secret = format!("{hash}::abcdef.0123456789abcdef");
    let err = Agent::start(&server, tmp.path(), "n-b", "127.0.0.3", Some(&wrong_secret))
        .exit_stderr("n-b");
    assert!(err.contains("refused to join"), "{err}");

    let err = Agent::start(&server, tmp.path(), "n-c", "127.0.0.3", None).exit_stderr("n-c");
    assert!(err.contains("pass --token"), "{err}");
}

#[test]
fn a_node_credential_reaches_only_what_its_node_needs() {
    let server = TestServer::start();
    let k = server.kubectl();
    // A node credential as `wkube agent` receives it.
    let token = join_token(&server);
    let secret = token.split_once("::").unwrap().1;
    let body = json!({"token": secret, "nodeName": "n9", "nodeIP": "127.0.0.9"}).to_string();
    let out = common::run(
        {
            let mut c = Command::new("curl");
            c.args(["-sS", "--cacert"])
                .arg(server.pki("ca.crt"))
                .args([
                    "-H",
                    "Content-Type: application/json",
                    "--data-binary",
                    &body,
                ])
                .arg(format!("{}/apis/wkube.dev/v1/join", server.api_url));
            c
        },
        None,
        common::COMMAND_TIMEOUT,
    );
    let creds: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let node_token = creds["token"].as_str().unwrap();

    k.ok_with_stdin(
        &["create", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"List","items":[
          {"apiVersion":"v1","kind":"Secret","metadata":{"name":"mine"},"stringData":{"k":"v"}},
          {"apiVersion":"v1","kind":"Secret","metadata":{"name":"theirs"},"stringData":{"k":"v"}},
          {"apiVersion":"v1","kind":"Node","metadata":{"name":"n8"}},
          {"apiVersion":"v1","kind":"Pod","metadata":{"name":"uses-mine"},
           "spec":{"nodeName":"n9","containers":[{"name":"c","image":"hello:v1",
             "env":[{"name":"K","valueFrom":{"secretKeyRef":{"name":"mine","key":"k"}}}]}]}}]}"#,
    );
    let as_node = |args: &[&str]| {
        let mut c = k.command(args);
        c.args(["--token", node_token]);
        common::run(c, None, common::COMMAND_TIMEOUT)
    };
    assert!(as_node(&["get", "secret", "mine"]).status.success());
    let denied = as_node(&["get", "secret", "theirs"]);
    assert!(
        denied.stderr.contains("no relationship found between node"),
        "{denied:?}"
    );
    assert!(
        !as_node(&["get", "secrets"]).status.success(),
        "a node may not list secrets"
    );
    let other = as_node(&["label", "node", "n8", "x=y"]);
    assert!(
        other.stderr.contains("may only change its own Node"),
        "{other:?}"
    );
    // Another node's pod may not be deleted; one that is gone is reported
    // gone rather than forbidden.
    k.ok_with_stdin(
        &["create", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"elsewhere"},
           "spec":{"nodeName":"n8","containers":[{"name":"c","image":"hello:v1"}]}}"#,
    );
    let theirs = as_node(&["delete", "pod", "elsewhere", "--wait=false"]);
    assert!(
        theirs.stderr.contains("may only change pods bound to it"),
        "{theirs:?}"
    );
    let gone = as_node(&["delete", "pod", "never-was", "--wait=false"]);
    assert!(
        gone.stderr.contains("pods \"never-was\" not found"),
        "{gone:?}"
    );
}

#[test]
fn the_agent_endpoint_lets_in_only_callers_with_a_cluster_certificate() {
    let server = TestServer::builder().with_node().start();
    let k = server.kubectl();
    assert!(eventually(Duration::from_secs(60), || node_ready(
        &server,
        common::TEST_NODE
    )));
    let node: Value =
        serde_json::from_str(&k.ok(&["get", "node", common::TEST_NODE, "-o", "json"])).unwrap();
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .expect("agent port");
    let url = format!("https://{}:{port}/healthz", server.addresses.node_ip);
    let curl = |with_cert: bool| {
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "10", "--cacert"])
            .arg(server.pki("ca.crt"));
        if with_cert {
            c.arg("--cert")
                .arg(server.pki("etcd-client.crt"))
                .arg("--key")
                .arg(server.pki("etcd-client.key"));
        }
        c.arg(&url);
        common::run(c, None, common::COMMAND_TIMEOUT)
    };
    let anonymous = curl(false);
    assert!(!anonymous.status.success(), "{anonymous:?}");
    let admin = curl(true);
    assert_eq!(admin.stdout, "ok", "{admin:?}");
}
