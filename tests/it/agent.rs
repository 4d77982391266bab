//! `wkube agent`: another node joining with the server's join token, as a
//! user would add a machine, and what its node credential may do.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::agent::{Agent, join_token, node_ready};
use common::{TestServer, eventually, guest};
use serde_json::{Value, json};

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
        agent.stderr()
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
    let err = Agent::start(&server, tmp.path(), "n-a", "127.0.0.3", Some(&other_ca)).exit_stderr();
    assert!(err.contains("does not match the join token"), "{err}");

    let wrong_secret = format!("{hash}::abcdef.0123456789abcdef");
    let err =
        Agent::start(&server, tmp.path(), "n-b", "127.0.0.3", Some(&wrong_secret)).exit_stderr();
    assert!(err.contains("refused to join"), "{err}");

    let err = Agent::start(&server, tmp.path(), "n-c", "127.0.0.3", None).exit_stderr();
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
    // Once the pod is gone, so is the node's way to its secret.
    k.ok(&["delete", "pod", "uses-mine", "--grace-period=0", "--force"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let after = as_node(&["get", "secret", "mine"]);
        if after.stderr.contains("no relationship found between node") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the node still reads its deleted pod's secret: {after:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Every node serves the Ingresses of the `wkube` class, so it may read
    // the certificates they name; not those of another class's Ingress.
    k.ok_with_stdin(
        &["create", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"List","items":[
          {"apiVersion":"v1","kind":"Secret","metadata":{"name":"served-cert"},"stringData":{"k":"v"}},
          {"apiVersion":"v1","kind":"Secret","metadata":{"name":"other-cert"},"stringData":{"k":"v"}},
          {"apiVersion":"networking.k8s.io/v1","kind":"IngressClass","metadata":{"name":"other"},
           "spec":{"controller":"example.com/other"}},
          {"apiVersion":"networking.k8s.io/v1","kind":"Ingress","metadata":{"name":"served"},
           "spec":{"tls":[{"hosts":["a.test"],"secretName":"served-cert"}],
             "defaultBackend":{"service":{"name":"x","port":{"number":80}}}}},
          {"apiVersion":"networking.k8s.io/v1","kind":"Ingress","metadata":{"name":"elsewhere"},
           "spec":{"ingressClassName":"other","tls":[{"hosts":["b.test"],"secretName":"other-cert"}],
             "defaultBackend":{"service":{"name":"x","port":{"number":80}}}}}]}"#,
    );
    assert!(as_node(&["get", "secret", "served-cert"]).status.success());
    let denied = as_node(&["get", "secret", "other-cert"]);
    assert!(
        denied.stderr.contains("no relationship found between node"),
        "{denied:?}"
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

    // Node restriction: a node creates only its own Node object, and
    // never gives itself a reserved role label.
    let run_as_node = |args: &[&str], stdin: &str| {
        let mut c = k.command(args);
        c.args(["--token", node_token]);
        common::run(c, Some(stdin.as_bytes()), common::COMMAND_TIMEOUT)
    };
    let forged = run_as_node(
        &["create", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n7"}}"#,
    );
    assert!(
        forged
            .stderr
            .contains(r#"node "n9" is not allowed to modify node "n7""#),
        "{forged:?}"
    );
    let own = run_as_node(
        &["create", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n9","labels":{"kubernetes.io/hostname":"n9"}}}"#,
    );
    assert!(own.status.success(), "{own:?}");
    let promoted = as_node(&[
        "label",
        "node",
        "n9",
        "node-role.kubernetes.io/control-plane=",
    ]);
    assert!(
        promoted
            .stderr
            .contains("is not allowed to modify labels: node-role.kubernetes.io/control-plane"),
        "{promoted:?}"
    );
    assert!(
        as_node(&["label", "node", "n9", "team=edge"])
            .status
            .success()
    );

    // The join token cannot take over a node that has joined.
    let again = common::run(
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
    let status: Value =
        serde_json::from_str(&again.stdout).unwrap_or_else(|e| panic!("{e}: {again:?}"));
    assert_eq!(status["code"], 409, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("has already joined"),
        "{status}"
    );
}

#[test]
fn join_tokens_expire_and_are_created_listed_and_revoked_with_wkube_token() {
    let server = TestServer::start();
    let k = server.kubectl();
    let join = |token: &str, node: &str| {
        let secret = token.trim().split_once("::").unwrap().1;
        let body = json!({"token": secret, "nodeName": node, "nodeIP": "127.0.0.9"}).to_string();
        let out = common::run(
            {
                let mut c = Command::new("curl");
                c.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
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
        out.stdout
    };
    // The token the server wrote is stored as a bootstrap-token Secret
    // with an expiry a day away.
    let file_token = join_token(&server);
    let id = file_token
        .split_once("::")
        .unwrap()
        .1
        .split('.')
        .next()
        .unwrap()
        .to_string();
    let listed = server.wkube(&["token", "join", "list"]).success();
    assert!(listed.contains(file_token.trim()), "{listed}");
    let secret: Value = serde_json::from_str(&k.ok(&[
        "-n",
        "kube-system",
        "get",
        "secret",
        &format!("bootstrap-token-{id}"),
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(secret["type"], "bootstrap.kubernetes.io/token");

    // A new token works, and stops working once revoked.
    let fresh = server
        .wkube(&["token", "join", "create", "--ttl", "1h"])
        .success();
    assert_eq!(join(&fresh, "j1"), "200");
    let out = server
        .wkube(&["token", "join", "delete", fresh.trim()])
        .success();
    assert!(out.contains("deleted"), "{out}");
    assert_eq!(join(&fresh, "j2"), "401");

    // An expired token is refused.
    k.ok(&[
        "-n",
        "kube-system",
        "patch",
        "secret",
        &format!("bootstrap-token-{id}"),
        "-p",
        r#"{"stringData":{"expiration":"2020-01-01T00:00:00Z"}}"#,
    ]);
    assert_eq!(join(&file_token, "j3"), "401");
    let listed = server.wkube(&["token", "join", "list"]).success();
    assert!(listed.contains("(expired)"), "{listed}");
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
                .arg(server.pki("apiserver-kubelet-client.crt"))
                .arg("--key")
                .arg(server.pki("apiserver-kubelet-client.key"));
        }
        c.arg(&url);
        common::run(c, None, common::COMMAND_TIMEOUT)
    };
    let anonymous = curl(false);
    assert!(!anonymous.status.success(), "{anonymous:?}");
    let admin = curl(true);
    assert_eq!(admin.stdout, "ok", "{admin:?}");

    // Another node's certificate delivers pod traffic, nothing more: no
    // logs, no pod proxy, no metrics.
    let dir = tempfile::tempdir().unwrap();
    let pki = wkube::pki::ClusterPki::open(&server.data_dir).unwrap();
    let other = pki
        .issue_node(
            "intruder",
            vec!["127.0.0.9".parse().unwrap()],
            Duration::from_secs(3600),
        )
        .unwrap();
    let (cert, key) = (dir.path().join("n.crt"), dir.path().join("n.key"));
    std::fs::write(&cert, other.client.cert_pem).unwrap();
    std::fs::write(&key, other.client.key_pem).unwrap();
    let as_node = |path: &str| {
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "10", "-w", " %{http_code}", "--cacert"])
            .arg(server.pki("ca.crt"))
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .arg(format!("https://{}:{port}{path}", server.addresses.node_ip));
        common::run(c, None, common::COMMAND_TIMEOUT).stdout
    };
    assert_eq!(as_node("/healthz"), "ok 200");
    for path in [
        "/containerLogs/default/p/c",
        "/proxy/default/p/80/",
        "/metrics",
    ] {
        let out = as_node(path);
        assert!(out.ends_with(" 403"), "{path}: {out}");
    }
}
