//! Backups and moves of a cluster's state: `etcdctl snapshot save`
//! against a running server, `wkube snapshot save|restore` on a stopped
//! one, and `wkube migrate` from the embedded store into a real etcd.

use crate::common;

use std::time::Duration;

use common::TestServer;
use common::etcd::EtcdCluster;

#[test]
fn an_etcdctl_snapshot_of_a_running_server_restores_with_wkube_snapshot_restore() {
    let mut server = TestServer::start();
    let k = server.kubectl();
    k.ok(&["create", "configmap", "before", "--from-literal=k=v"]);
    let uid = k.ok(&[
        "get",
        "configmap",
        "before",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);

    let snap = server.scratch().join("live.db");
    let out = server.etcdctl(&["snapshot", "save", snap.to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", out.stdout, out.stderr);
    k.ok(&["create", "configmap", "after", "--from-literal=k=v"]);

    // A running server's data directory is not touched.
    let refused = server.wkube(&["snapshot", "restore", snap.to_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(
        refused.stderr.contains("already running"),
        "{}",
        refused.stderr
    );

    server.stop();
    let out = server.wkube(&["snapshot", "restore", snap.to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", out.stdout, out.stderr);
    server.restart();
    let k = server.kubectl();
    assert_eq!(
        k.ok(&[
            "get",
            "configmap",
            "before",
            "-o",
            "jsonpath={.metadata.uid}"
        ]),
        uid
    );
    let gone = k.fails(&["get", "configmap", "after"]);
    assert!(
        gone.contains("NotFound") || gone.contains("not found"),
        "{gone}"
    );
    // Writes go on after the restored revision.
    k.ok(&["create", "configmap", "again", "--from-literal=k=v"]);

    // A stopped server's store, saved by wkube, and a damaged copy of it.
    server.stop();
    let saved = server.scratch().join("stopped.db");
    let out = server.wkube(&["snapshot", "save", saved.to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", out.stdout, out.stderr);
    let mut bytes = std::fs::read(&saved).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    let damaged = server.scratch().join("damaged.db");
    std::fs::write(&damaged, bytes).unwrap();
    let out = server.wkube(&["snapshot", "restore", damaged.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(out.stderr.contains("SHA-256"), "{}", out.stderr);
    let out = server.wkube(&["snapshot", "restore", saved.to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", out.stdout, out.stderr);
    server.restart();
    let names = server.kubectl().ok(&["get", "configmaps", "-o", "name"]);
    assert!(names.contains("configmap/again"), "{names}");
}

#[test]
fn migrate_moves_a_cluster_into_etcd_with_the_same_objects_uids_and_credentials() {
    let mut server = common::node_server_with_examples();
    let k = server.kubectl();
    k.ok(&[
        "create",
        "deployment",
        "web",
        "--image=hello:v1",
        "--replicas=2",
    ]);
    k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    k.ok(&[
        "create",
        "secret",
        "generic",
        "s1",
        "--from-literal=k=kept-secret",
    ]);
    let pods = k.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].metadata.uid}",
    ]);
    let deploy_uid = k.ok(&["get", "deployment", "web", "-o", "jsonpath={.metadata.uid}"]);
    server.stop();

    let etcd = EtcdCluster::start(1);
    let flags = etcd.server_flags("/migrated");
    let mut args = vec!["migrate"];
    args.extend(flags.iter().map(String::as_str));
    let out = server.wkube(&args);
    assert!(out.status.success(), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("Copied"), "{}", out.stdout);
    let keys = etcd
        .etcdctl(&["get", "--prefix", "/migrated/", "--keys-only"])
        .stdout;
    assert!(
        keys.contains("/migrated/apps/deployments/default/web"),
        "{keys}"
    );
    assert!(keys.contains("/migrated/wkube.dev/bootstrap"), "{keys}");

    // A second migration into the same prefix is refused.
    let again = server.wkube(&args);
    assert!(!again.status.success());
    assert!(again.stderr.contains("empty prefix"), "{}", again.stderr);

    // The same data directory, now on etcd: the admin kubeconfig still
    // works, objects keep their UIDs, and the pods run again.
    server.add_args(flags);
    server.restart();
    let k = server.kubectl();
    assert_eq!(
        k.ok(&["get", "deployment", "web", "-o", "jsonpath={.metadata.uid}"]),
        deploy_uid
    );
    assert_eq!(
        k.ok(&["get", "secret", "s1", "-o", "jsonpath={.data.k}"]),
        "a2VwdC1zZWNyZXQ="
    );
    assert!(
        common::eventually(Duration::from_secs(60), || {
            let now = k.ok(&[
                "get",
                "pods",
                "-l",
                "app=web",
                "--field-selector=status.phase=Running",
                "-o",
                "jsonpath={.items[*].metadata.uid}",
            ]);
            let mut a: Vec<&str> = now.split_whitespace().collect();
            let mut b: Vec<&str> = pods.split_whitespace().collect();
            a.sort_unstable();
            b.sort_unstable();
            a == b
        }),
        "the same pods did not run again: {}",
        server.log_tail(30)
    );
    let pod = pods.split_whitespace().next().unwrap();
    let name = k.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        &format!("jsonpath={{.items[?(@.metadata.uid==\"{pod}\")].metadata.name}}"),
    ]);
    assert_eq!(
        k.ok(&[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/default/pods/{name}/proxy/")
        ]),
        "Hello from wkube!\n"
    );
}
