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
