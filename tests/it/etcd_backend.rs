//! `wkube server --etcd-servers`: the cluster state in a real etcd cluster
//! (Debian's etcd, TLS with client certificates), driven by stock kubectl
//! and inspected with stock etcdctl.

use crate::common;

use std::time::Duration;

use common::TestServer;
use common::etcd::EtcdCluster;

const PREFIX: &str = "/wkube-it";

fn server_on(etcd: &EtcdCluster) -> TestServer {
    let mut b = TestServer::builder().with_node();
    for f in etcd.server_flags(PREFIX) {
        b = b.arg(f);
    }
    let s = b.start();
    s.wkube(&[
        "push",
        common::guest("hello-http").to_str().unwrap(),
        "hello:v1",
    ])
    .success();
    s
}

fn readyz(server: &TestServer) -> (bool, String) {
    let out = server.kubectl().run(&["get", "--raw", "/readyz"]);
    (
        out.status.success(),
        format!("{}{}", out.stdout, out.stderr),
    )
}

#[test]
fn a_server_on_etcd_keeps_kubernetes_layout_survives_restarts_and_rides_out_an_outage() {
    let mut etcd = EtcdCluster::start(1);
    let mut server = server_on(&etcd);
    let kubectl = server.kubectl();

    kubectl.ok(&[
        "create",
        "configmap",
        "c1",
        "--from-literal=k=visible-value",
    ]);
    kubectl.ok(&[
        "create",
        "secret",
        "generic",
        "s1",
        "--from-literal=k=secret-value-42",
    ]);
    let uid = kubectl.ok(&["get", "configmap", "c1", "-o", "jsonpath={.metadata.uid}"]);

    // Kubernetes' key layout under the chosen prefix, in the real etcd.
    let keys = etcd.etcdctl(&["get", "--prefix", &format!("{PREFIX}/"), "--keys-only"]);
    let keys = keys.stdout;
    for key in [
        "/wkube-it/configmaps/default/c1",
        "/wkube-it/secrets/default/s1",
        "/wkube-it/namespaces/kube-system",
        "/wkube-it/coordination.k8s.io/leases/kube-node-lease/node-1",
    ] {
        assert!(
            keys.lines().any(|l| l == key),
            "{key} missing from:\n{keys}"
        );
    }
    assert!(
        !keys.lines().any(|l| l.starts_with("/registry/")),
        "nothing outside the prefix:\n{keys}"
    );
    // Secrets stay sealed at rest in etcd too.
    let raw = etcd.etcdctl(&["get", "/wkube-it/secrets/default/s1", "--print-value-only"]);
    assert!(raw.status.success());
    assert!(
        !raw.stdout.contains("secret-value-42") && !raw.stdout.contains("c2VjcmV0LXZhbHVlLTQy"),
        "a Secret is readable in etcd"
    );

    // A watch sees a write made through another connection.
    let mut watch = kubectl.spawn_lines(&["get", "configmaps", "--watch-only", "-o", "name"]);
    std::thread::sleep(Duration::from_millis(500));
    kubectl.ok(&["create", "configmap", "c2", "--from-literal=k=v"]);
    assert_eq!(watch.next_line(Duration::from_secs(15)), "configmap/c2");
    // Every watcher of the API server (its controllers, its kubelet, and
    // these clients) shares the watch cache's one etcd watch.
    let more: Vec<_> = (0..5)
        .map(|_| kubectl.spawn_lines(&["get", "pods", "--watch-only", "-o", "name"]))
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let watchers = etcd.metric("etcd_debugging_mvcc_watcher_total");
    assert!(watchers <= 2.0, "etcd has {watchers} watchers");
    drop(more);
    drop(watch);

    // Pods run from state kept in etcd.
    kubectl.ok(&[
        "create",
        "deployment",
        "web",
        "--image=hello:v1",
        "--replicas=2",
    ]);
    assert!(
        common::eventually(Duration::from_secs(60), || {
            kubectl
                .ok(&[
                    "get",
                    "pods",
                    "-l",
                    "app=web",
                    "-o",
                    "jsonpath={.items[*].status.phase}",
                ])
                .split_whitespace()
                .filter(|p| *p == "Running")
                .count()
                == 2
        }),
        "pods did not run: {}",
        server.log_tail(30)
    );

    // A server restart loses nothing: same object, same uid.
    server.restart();
    let kubectl = server.kubectl();
    assert_eq!(
        kubectl.ok(&["get", "configmap", "c1", "-o", "jsonpath={.metadata.uid}"]),
        uid
    );
    assert_eq!(
        kubectl.ok(&["get", "secret", "s1", "-o", "jsonpath={.data.k}"]),
        "c2VjcmV0LXZhbHVlLTQy"
    );

    // etcd goes away: not ready, and requests get a clear 503, quickly.
    etcd.kill_member(0);
    assert!(
        common::eventually(Duration::from_secs(15), || !readyz(&server).0),
        "readyz stayed true with etcd gone"
    );
    let started = std::time::Instant::now();
    let err = kubectl.fails(&["get", "configmap", "c1"]);
    assert!(
        err.contains("ServiceUnavailable") || err.contains("storage is unavailable"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));

    // etcd is back: the server recovers by itself.
    etcd.start_member(0);
    assert!(
        common::eventually(Duration::from_secs(30), || readyz(&server).0),
        "readyz did not recover: {}",
        readyz(&server).1
    );
    kubectl.ok(&["create", "configmap", "after-outage", "--from-literal=k=v"]);
    kubectl.ok(&["scale", "deployment", "web", "--replicas=3"]);
    assert!(
        common::eventually(Duration::from_secs(60), || {
            kubectl
                .ok(&[
                    "get",
                    "pods",
                    "-l",
                    "app=web",
                    "-o",
                    "jsonpath={.items[*].status.phase}",
                ])
                .split_whitespace()
                .filter(|p| *p == "Running")
                .count()
                == 3
        }),
        "the controllers did not resume after the outage: {}",
        server.log_tail(30)
    );
}

/// Leader-election timing for the HA tests: a takeover well within 15 s.
const LEADER_FLAGS: [&str; 6] = [
    "--leader-elect-lease-duration",
    "8s",
    "--leader-elect-renew-deadline",
    "6s",
    "--leader-elect-retry-period",
    "1s",
];

fn lease_holder(k: &common::Kubectl, lease: &str) -> String {
    k.run(&[
        "get",
        "lease",
        "-n",
        "kube-system",
        lease,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
    .stdout
}

fn identity(server: &TestServer) -> String {
    std::fs::read_to_string(server.data_dir.join("leader-identity"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn two_servers_on_one_etcd_serve_together_and_the_survivor_takes_over_mid_rollout() {
    let etcd = EtcdCluster::start(3);
    let mut builder = TestServer::builder();
    for f in etcd
        .server_flags(PREFIX)
        .into_iter()
        .chain(LEADER_FLAGS.map(String::from))
    {
        builder = builder.arg(f);
    }
    // A: control plane only, started first so it holds the leader leases.
    let mut a = builder.start();
    let ka = a.kubectl();
    assert!(
        common::eventually(Duration::from_secs(20), || {
            ["kube-controller-manager", "kube-scheduler"]
                .iter()
                .all(|l| lease_holder(&ka, l) == identity(&a))
        }),
        "A did not take the leader leases: {}",
        a.log_tail(20)
    );

    // B joins with A's server token and runs the node.
    let token = std::fs::read_to_string(a.data_dir.join("server-token")).unwrap();
    let mut builder = TestServer::builder().with_node();
    for f in etcd
        .server_flags(PREFIX)
        .into_iter()
        .chain(LEADER_FLAGS.map(String::from))
        .chain(["--token".to_string(), token.trim().to_string()])
    {
        builder = builder.arg(f);
    }
    let b = builder.start();
    let kb = b.kubectl();
    assert_eq!(
        std::fs::read(a.pki("ca.crt")).unwrap(),
        std::fs::read(b.pki("ca.crt")).unwrap(),
        "the servers do not share the cluster CA"
    );
    // One cluster: A's admin credentials work on B, and B sees A's writes.
    ka.ok(&["create", "configmap", "from-a", "--from-literal=k=v"]);
    let uid = ka.ok(&[
        "get",
        "configmap",
        "from-a",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    assert_eq!(
        ka.ok(&[
            "get",
            "configmap",
            "from-a",
            "-o",
            "jsonpath={.metadata.uid}",
            "-s",
            &b.api_url
        ]),
        uid
    );
    assert_eq!(lease_holder(&kb, "kube-controller-manager"), identity(&a));

    b.wkube(&[
        "push",
        common::guest("hello-http").to_str().unwrap(),
        "hello:v1",
    ])
    .success();
    ka.ok(&[
        "create",
        "deployment",
        "web",
        "--image=hello:v1",
        "--replicas=3",
    ]);
    kb.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);

    // Writes acknowledged by A just before it dies, and where a watch
    // would have stopped.
    let before = ka.ok(&[
        "get",
        "configmaps",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    let mut acked = Vec::new();
    for i in 0..5 {
        let name = format!("acked-{i}");
        ka.ok(&["create", "configmap", &name, "--from-literal=k=v"]);
        acked.push(name);
    }
    // A rollout starts on A, and A is killed in its middle.
    ka.ok(&["set", "env", "deployment/web", "ROLLOUT=2"]);
    a.kill();
    let killed = std::time::Instant::now();

    assert!(
        common::eventually(Duration::from_secs(20), || {
            lease_holder(&kb, "kube-controller-manager") == identity(&b)
        }),
        "B did not take over: {}",
        b.log_tail(30)
    );
    let takeover = killed.elapsed();
    assert!(
        takeover <= Duration::from_secs(15),
        "takeover took {takeover:?}"
    );
    eprintln!("leader takeover after {takeover:?}");

    kb.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let envs = kb.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "--field-selector=status.phase=Running",
        "-o",
        "jsonpath={.items[*].spec.containers[0].env[0].value}",
    ]);
    assert_eq!(
        envs.split_whitespace().collect::<Vec<_>>(),
        ["2", "2", "2"],
        "{envs}"
    );

    // No acknowledged write is lost, and a watch resumed on B from where
    // it stood on A sees each of them exactly once.
    let names = kb.ok(&["get", "configmaps", "-o", "name"]);
    for name in &acked {
        assert!(
            names.contains(&format!("configmap/{name}")),
            "{name} lost: {names}"
        );
    }
    let events = kb.ok(&[
        "get",
        "--raw",
        &format!(
            "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={before}&timeoutSeconds=2"
        ),
    ]);
    for name in &acked {
        let added = events
            .lines()
            .filter(|l| l.contains("\"ADDED\"") && l.contains(&format!("\"name\":\"{name}\"")))
            .count();
        assert_eq!(added, 1, "{name} seen {added} times in:\n{events}");
    }
}

#[test]
fn etcd_losing_one_member_keeps_serving_losing_two_refuses_writes_cleanly_then_recovers() {
    let mut etcd = EtcdCluster::start(3);
    let mut builder = TestServer::builder();
    for f in etcd.server_flags(PREFIX) {
        builder = builder.arg(f);
    }
    let server = builder.start();
    let k = server.kubectl();
    k.ok(&["create", "configmap", "c0", "--from-literal=k=v"]);

    // One member down: quorum holds.
    etcd.kill_member(0);
    // A write caught in the election that follows may be refused ("leader
    // changed"), as etcd's own clients see; the cluster serves again at
    // once after it.
    assert!(
        common::eventually(Duration::from_secs(10), || {
            k.run(&["create", "configmap", "c1", "--from-literal=k=v"])
                .status
                .success()
        }),
        "writes did not go on with one member down"
    );
    assert_eq!(
        k.ok(&["get", "configmap", "c0", "-o", "name"]).trim(),
        "configmap/c0"
    );

    // Two down: writes fail with a clear error, within the deadline.
    etcd.kill_member(1);
    let started = std::time::Instant::now();
    let err = k.fails(&["create", "configmap", "c2", "--from-literal=k=v"]);
    assert!(
        err.contains("ServiceUnavailable") || err.contains("storage is unavailable"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(
        common::eventually(Duration::from_secs(15), || !readyz(&server).0),
        "readyz stayed true without a quorum"
    );

    // Both back: the server recovers, and nothing was corrupted.
    etcd.start_member(0);
    etcd.start_member(1);
    assert!(
        common::eventually(Duration::from_secs(45), || readyz(&server).0),
        "readyz did not recover: {}\n{}",
        readyz(&server).1,
        etcd.logs()
    );
    assert!(
        common::eventually(Duration::from_secs(20), || {
            k.run(&["create", "configmap", "c3", "--from-literal=k=v"])
                .status
                .success()
        }),
        "writes did not resume"
    );
    let names = k.ok(&["get", "configmaps", "-o", "name"]);
    for c in ["c0", "c1", "c3"] {
        assert!(names.contains(&format!("configmap/{c}")), "{c}: {names}");
    }
    assert!(
        !names.contains("configmap/c2"),
        "a refused write appeared: {names}"
    );
    // A member that was stopped answers health checks once it has caught
    // up with the leader, which under load can take a few seconds after
    // writes resume.
    let mut health = etcd.etcdctl(&["endpoint", "health"]);
    let healthy = health.status.success()
        || common::eventually(Duration::from_secs(20), || {
            health = etcd.etcdctl(&["endpoint", "health"]);
            health.status.success()
        });
    assert!(healthy, "{}{}", health.stdout, health.stderr);
}

#[test]
fn an_agent_given_every_server_fails_over_when_one_dies() {
    let etcd = EtcdCluster::start(1);
    let mut builder = TestServer::builder();
    for f in etcd.server_flags(PREFIX) {
        builder = builder.arg(f);
    }
    let mut a = builder.start();
    let token = std::fs::read_to_string(a.data_dir.join("server-token")).unwrap();
    let mut builder = TestServer::builder();
    for f in etcd
        .server_flags(PREFIX)
        .into_iter()
        .chain(["--token".to_string(), token.trim().to_string()])
    {
        builder = builder.arg(f);
    }
    let b = builder.start();
    let kb = b.kubectl();

    // An agent told about both servers, joined with A's join token.
    let join = std::fs::read_to_string(a.data_dir.join("join-token")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ip = b.addresses.node_ip.to_string();
    let log = dir.path().join("agent.log");
    let mut agent = std::process::Command::new(env!("CARGO_BIN_EXE_wkube"))
        .arg("--data-dir")
        .arg(dir.path().join("agent"))
        .args(["agent", "--server", &format!("{},{}", a.api_url, b.api_url)])
        .args(["--token", join.trim()])
        .args(["--node-name", "edge-1", "--node-ip", &ip])
        .args(["--agent-listen", &format!("{ip}:0")])
        .args(["--service-cidr", &b.addresses.service_cidr])
        .args(["--cluster-cidr", &b.addresses.cluster_cidr])
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("agent.err")).unwrap())
        .spawn()
        .unwrap();
    let agent_log = || {
        std::fs::read_to_string(&log).unwrap_or_default()
            + &std::fs::read_to_string(dir.path().join("agent.err")).unwrap_or_default()
    };
    let ready = |k: &common::Kubectl| {
        k.run(&[
            "get",
            "node",
            "edge-1",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ])
        .stdout
            == "True"
    };
    assert!(
        common::eventually(Duration::from_secs(30), || ready(&kb)),
        "the agent did not join: {}",
        agent_log()
    );

    // A goes; the agent keeps its node alive through B, and runs what is
    // created there.
    a.kill();
    b.wkube(&[
        "push",
        common::guest("hello-http").to_str().unwrap(),
        "hello:v1",
    ])
    .success();
    kb.ok(&[
        "create",
        "deployment",
        "web",
        "--image=hello:v1",
        "--replicas=2",
    ]);
    let status = kb.run(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(
        status.status.success(),
        "{}{}\nagent: {}",
        status.stdout,
        status.stderr,
        agent_log()
    );
    let lease_before = kb.ok(&[
        "get",
        "lease",
        "-n",
        "kube-node-lease",
        "edge-1",
        "-o",
        "jsonpath={.spec.renewTime}",
    ]);
    assert!(
        common::eventually(Duration::from_secs(25), || {
            kb.ok(&[
                "get",
                "lease",
                "-n",
                "kube-node-lease",
                "edge-1",
                "-o",
                "jsonpath={.spec.renewTime}",
            ]) != lease_before
        }),
        "the node lease is not renewed through B: {}",
        agent_log()
    );
    assert!(ready(&kb));
    let _ = agent.kill();
    let _ = agent.wait();
}
