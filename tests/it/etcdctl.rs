//! Stock etcdctl (Debian's `etcd-client`, v3 API) against a real
//! `wkube server` on loopback: it must print what it prints against etcd.

use crate::common;

use std::time::Duration;

use common::{TestServer, eventually, header_revision};

const LINE_TIMEOUT: Duration = Duration::from_secs(15);

fn put_rev(server: &TestServer, key: &str, value: &str) -> i64 {
    header_revision(&server.etcdctl(&["put", "-w", "json", key, value]).success())
}

#[test]
fn etcdctl_put_prints_ok_and_get_prints_key_then_value() {
    let server = TestServer::start();
    assert_eq!(
        server
            .etcdctl(&["put", "greeting", "hello world"])
            .success(),
        "OK\n"
    );
    assert_eq!(
        server.etcdctl(&["get", "greeting"]).success(),
        "greeting\nhello world\n"
    );
    assert_eq!(server.etcdctl(&["get", "missing"]).success(), "");
}

#[test]
fn etcdctl_get_prefix_lists_every_key_under_it_in_order() {
    let server = TestServer::start();
    for (k, v) in [
        ("app/b", "2"),
        ("app/a", "1"),
        ("apples", "x"),
        ("app/c", "3"),
    ] {
        server.etcdctl(&["put", k, v]).success();
    }
    assert_eq!(
        server.etcdctl(&["get", "--prefix", "app/"]).success(),
        "app/a\n1\napp/b\n2\napp/c\n3\n"
    );
    assert_eq!(
        server
            .etcdctl(&["get", "--prefix", "--keys-only", "app/"])
            .success(),
        "app/a\n\napp/b\n\napp/c\n\n"
    );
    assert_eq!(
        server
            .etcdctl(&["get", "--prefix", "--limit=2", "app/"])
            .success(),
        "app/a\n1\napp/b\n2\n"
    );
}

#[test]
fn etcdctl_get_at_an_old_revision_shows_the_value_of_that_time() {
    let server = TestServer::start();
    let first = put_rev(&server, "k", "v1");
    let second = put_rev(&server, "k", "v2");
    // The server's own controllers write too, so another write may come
    // between the two: each write takes a later revision, not always the next.
    assert!(second > first, "each write takes a later revision");
    assert_eq!(
        server
            .etcdctl(&["get", "k", &format!("--rev={first}")])
            .success(),
        "k\nv1\n"
    );
    assert_eq!(server.etcdctl(&["get", "k"]).success(), "k\nv2\n");
}

#[test]
fn etcdctl_get_json_has_the_header_revision_and_base64_key_values() {
    let server = TestServer::start();
    let created = put_rev(&server, "json/key", "value one");
    let modified = put_rev(&server, "json/key", "value two");
    let out = server.etcdctl(&["get", "-w", "json", "json/key"]).success();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // The header carries the store's revision at the read; the server's own
    // writes (node lease renewals, statuses) may have moved it past ours.
    let header = v["header"]["revision"].as_i64().expect("header revision");
    assert!(header >= modified, "header {header} < our write {modified}");
    assert_eq!(v["count"], 1);
    let kv = &v["kvs"][0];
    assert_eq!(kv["key"], "anNvbi9rZXk="); // base64("json/key")
    assert_eq!(kv["value"], "dmFsdWUgdHdv"); // base64("value two")
    assert_eq!(kv["create_revision"], created);
    assert_eq!(kv["mod_revision"], modified);
    assert_eq!(kv["version"], 2);
}

#[test]
fn etcdctl_del_prints_how_many_keys_it_deleted() {
    let server = TestServer::start();
    for k in ["d/1", "d/2", "d/3", "e"] {
        server.etcdctl(&["put", k, "v"]).success();
    }
    assert_eq!(server.etcdctl(&["del", "e"]).success(), "1\n");
    assert_eq!(server.etcdctl(&["del", "e"]).success(), "0\n");
    assert_eq!(server.etcdctl(&["del", "--prefix", "d/"]).success(), "3\n");
    assert_eq!(server.etcdctl(&["get", "--prefix", "d/"]).success(), "");
}

#[test]
fn etcdctl_txn_from_stdin_runs_the_branch_its_compare_selects() {
    let server = TestServer::start();
    server.etcdctl(&["put", "t/flag", "on"]).success();
    let txn = "value(\"t/flag\") = \"on\"\n\nput t/result yes\nget t/flag\n\nput t/result no\n\n";
    let out = server
        .etcdctl_with_stdin(&["txn"], Some(txn.as_bytes()))
        .success();
    assert_eq!(out, "SUCCESS\n\nOK\n\nt/flag\non\n");
    assert_eq!(
        server.etcdctl(&["get", "t/result"]).success(),
        "t/result\nyes\n"
    );

    let txn = "value(\"t/flag\") = \"off\"\n\nput t/result yes\n\nput t/result no\ndel t/flag\n\n";
    let out = server
        .etcdctl_with_stdin(&["txn"], Some(txn.as_bytes()))
        .success();
    assert_eq!(out, "FAILURE\n\nOK\n\n1\n");
    assert_eq!(
        server.etcdctl(&["get", "t/result"]).success(),
        "t/result\nno\n"
    );
    assert_eq!(server.etcdctl(&["get", "t/flag"]).success(), "");
}

#[test]
fn etcdctl_watch_replays_from_its_start_revision_then_follows_live_changes() {
    let server = TestServer::start();
    let start = put_rev(&server, "w/a", "1");
    server.etcdctl(&["put", "other", "x"]).success();
    let mut watch = server.spawn_lines(server.etcdctl_command(&[
        "watch",
        "--prefix",
        &format!("--rev={start}"),
        "w/",
    ]));
    assert_eq!(watch.next_lines(3, LINE_TIMEOUT), ["PUT", "w/a", "1"]);
    server.etcdctl(&["put", "w/b", "2"]).success();
    assert_eq!(watch.next_lines(3, LINE_TIMEOUT), ["PUT", "w/b", "2"]);
    server.etcdctl(&["del", "w/a"]).success();
    assert_eq!(watch.next_lines(3, LINE_TIMEOUT), ["DELETE", "w/a", ""]);
}

fn grant(server: &TestServer, ttl: u32) -> String {
    // "lease 694d7b6e1c8f3a0b granted with TTL(60s)"
    let out = server
        .etcdctl(&["lease", "grant", &ttl.to_string()])
        .success();
    let mut words = out.split_whitespace();
    assert_eq!(words.next(), Some("lease"), "{out}");
    let id = words.next().expect("lease id").to_owned();
    assert_eq!(
        out.trim(),
        format!("lease {id} granted with TTL({ttl}s)"),
        "grant output"
    );
    id
}

#[test]
fn revoking_a_lease_deletes_the_keys_attached_to_it() {
    let server = TestServer::start();
    let id = grant(&server, 60);
    server
        .etcdctl(&["put", &format!("--lease={id}"), "leased", "v"])
        .success();
    server.etcdctl(&["put", "unleased", "v"]).success();
    assert_eq!(server.etcdctl(&["get", "leased"]).success(), "leased\nv\n");
    assert_eq!(
        server.etcdctl(&["lease", "revoke", &id]).success(),
        format!("lease {id} revoked\n")
    );
    assert_eq!(server.etcdctl(&["get", "leased"]).success(), "");
    assert_eq!(
        server.etcdctl(&["get", "unleased"]).success(),
        "unleased\nv\n"
    );
}

#[test]
fn a_key_whose_lease_expires_disappears_within_a_few_seconds() {
    let server = TestServer::start();
    let id = grant(&server, 2);
    server
        .etcdctl(&["put", &format!("--lease={id}"), "ephemeral", "v"])
        .success();
    assert_eq!(
        server.etcdctl(&["get", "ephemeral"]).success(),
        "ephemeral\nv\n"
    );
    assert!(
        eventually(Duration::from_secs(10), || server
            .etcdctl(&["get", "ephemeral"])
            .success()
            .is_empty()),
        "the key outlived its 2 s lease by far"
    );
    server
        .etcdctl(&["lease", "revoke", &id])
        .fails_with("failed to revoke lease (etcdserver: requested lease not found)");
}

#[test]
fn after_compaction_reading_an_older_revision_fails_like_etcd() {
    let server = TestServer::start();
    let old = put_rev(&server, "c", "v1");
    let new = put_rev(&server, "c", "v2");
    assert_eq!(
        server.etcdctl(&["compaction", &new.to_string()]).success(),
        format!("compacted revision {new}\n")
    );
    server
        .etcdctl(&["get", "c", &format!("--rev={old}")])
        .fails_with("etcdserver: mvcc: required revision has been compacted");
    assert_eq!(
        server
            .etcdctl(&["get", "c", &format!("--rev={new}")])
            .success(),
        "c\nv2\n"
    );
    // A watch from before the compaction is cancelled the same way.
    let watch =
        server.spawn_lines(server.etcdctl_command(&["watch", &format!("--rev={old}"), "c"]));
    let (status, stderr) = watch.wait(LINE_TIMEOUT);
    assert!(!status.success());
    assert!(
        stderr.contains(
            "watch was canceled (etcdserver: mvcc: required revision has been compacted)"
        ),
        "{stderr}"
    );
}

#[test]
fn endpoint_status_reports_the_current_revision_and_version() {
    let server = TestServer::start();
    let rev = put_rev(&server, "s", "v");
    let out = server
        .etcdctl(&["endpoint", "status", "-w", "json"])
        .success();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["Endpoint"], server.endpoint.as_str());
    let status = &v[0]["Status"];
    let now = status["header"]["revision"].as_i64().expect("revision");
    assert!(now >= rev, "status revision {now} < our write {rev}");
    assert!(
        !status["version"].as_str().unwrap_or_default().is_empty(),
        "{out}"
    );
    assert!(status["dbSize"].as_i64().unwrap_or_default() > 0, "{out}");
    // The table form works too.
    let table = server.etcdctl(&["endpoint", "status"]).success();
    assert!(
        table.starts_with(&format!("{}, ", server.endpoint)),
        "{table}"
    );
}

#[test]
fn member_list_shows_one_started_member_with_the_client_url() {
    let server = TestServer::start();
    let out = server.etcdctl(&["member", "list"]).success();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    let fields: Vec<&str> = lines[0].split(", ").collect();
    assert_eq!(fields[1], "started", "{out}");
    assert_eq!(fields[2], "default", "{out}");
    assert_eq!(fields[4], server.endpoint, "{out}");
}

#[test]
fn tls_is_on_by_default_and_a_client_without_a_certificate_is_refused() {
    let server = TestServer::start();
    assert!(
        server.endpoint.starts_with("https://127.0.0.1:"),
        "{}",
        server.endpoint
    );
    server.etcdctl(&["put", "secret", "s3cr3t"]).success();

    let base = [
        format!("--endpoints={}", server.endpoint),
        "--dial-timeout=2s".to_owned(),
        "--command-timeout=3s".to_owned(),
    ];
    // Trusts the server, but presents no client certificate.
    let mut cmd = common::etcdctl_command();
    cmd.args(&base)
        .arg(format!("--cacert={}", server.pki("ca.crt").display()))
        .args(["get", "secret"]);
    let out = common::run(cmd, None, common::COMMAND_TIMEOUT);
    assert!(!out.status.success(), "read without a client cert: {out:?}");
    assert!(!out.stdout.contains("s3cr3t"));

    // Plaintext against the TLS port.
    let plain = server.endpoint.replace("https://", "http://");
    let mut cmd = common::etcdctl_command();
    cmd.args([
        &format!("--endpoints={plain}"),
        "--dial-timeout=2s",
        "--command-timeout=3s",
        "get",
        "secret",
    ]);
    let out = common::run(cmd, None, common::COMMAND_TIMEOUT);
    assert!(!out.status.success(), "plaintext read: {out:?}");
    assert!(!out.stdout.contains("s3cr3t"));

    // The refused clients did not disturb the server.
    assert_eq!(
        server.etcdctl(&["get", "secret"]).success(),
        "secret\ns3cr3t\n"
    );
}

#[test]
fn with_tls_off_plain_etcdctl_works_without_certificates() {
    let server = TestServer::builder().tls(false).start();
    assert!(
        server.endpoint.starts_with("http://127.0.0.1:"),
        "{}",
        server.endpoint
    );
    assert_eq!(server.etcdctl(&["put", "p", "v"]).success(), "OK\n");
    assert_eq!(server.etcdctl(&["get", "p"]).success(), "p\nv\n");
}

#[test]
fn bad_requests_get_etcds_errors_and_change_nothing() {
    let server = TestServer::start();
    server.etcdctl(&["put", "keep", "me"]).success();
    // The server's own writes go on meanwhile (statuses, lease renewals):
    // the check below tells them apart by key, so no quiet moment is needed.
    let before = server.revision();

    server
        .etcdctl(&["put", "", "v"])
        .fails_with("etcdserver: key is not provided");
    server
        .etcdctl(&["get", "keep", &format!("--rev={}", before + 1000)])
        .fails_with("etcdserver: mvcc: required revision is a future revision");
    // Over the 1.5 MiB request limit but under etcdctl's own 2 MiB send limit,
    // so the server (not the client) must refuse it.
    let big = vec![b'x'; 1_800_000];
    server
        .etcdctl_with_stdin(&["put", "big"], Some(&big))
        .fails_with("etcdserver: request is too large");
    let ops: String = (0..129).map(|i| format!("put t{i} v\n")).collect();
    let txn = format!("\n{ops}\n\n");
    server
        .etcdctl_with_stdin(&["txn"], Some(txn.as_bytes()))
        .fails_with("etcdserver: too many operations in txn request");
    server
        .etcdctl(&["put", "--lease=1234abcd", "leased", "v"])
        .fails_with("etcdserver: requested lease not found");

    // The node's lease renewal (every 10 s) may still write meanwhile; every
    // key written since `before` must be one of the server's own.
    let out = server
        .etcdctl(&["get", "", "--prefix", "--keys-only", "-w", "json"])
        .success();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for kv in v["kvs"].as_array().into_iter().flatten() {
        if kv["mod_revision"].as_i64().unwrap_or_default() <= before {
            continue;
        }
        use base64::Engine;
        let key = base64::engine::general_purpose::STANDARD
            .decode(kv["key"].as_str().unwrap_or_default())
            .unwrap_or_default();
        let key = String::from_utf8_lossy(&key);
        assert!(
            key.starts_with("/registry/"),
            "a refused request wrote {key}"
        );
    }
    assert_eq!(server.etcdctl(&["get", "keep"]).success(), "keep\nme\n");
    assert_eq!(server.etcdctl(&["get", "big"]).success(), "");
    assert_eq!(server.etcdctl(&["put", "after", "ok"]).success(), "OK\n");
}

#[test]
fn a_txn_at_the_op_limit_is_accepted() {
    let server = TestServer::start();
    let ops: String = (0..128).map(|i| format!("put limit/{i:03} v\n")).collect();
    let txn = format!("\n{ops}\n\n");
    let out = server
        .etcdctl_with_stdin(&["txn"], Some(txn.as_bytes()))
        .success();
    assert!(out.starts_with("SUCCESS\n"), "{out}");
    let keys = server
        .etcdctl(&["get", "--prefix", "--keys-only", "limit/"])
        .success();
    assert_eq!(keys.lines().filter(|l| !l.is_empty()).count(), 128);
}

#[test]
fn only_the_etcd_admin_certificate_opens_the_store_not_a_node_or_kubelet_client_one() {
    let server = TestServer::start();
    server
        .etcdctl(&["put", "/registry/secrets/default/s1", "s3cr3t"])
        .success();
    // What anyone with a join token can get, and the API server's
    // certificate towards agents: both signed by the cluster CA.
    let pki = wkube::pki::ClusterPki::open(&server.data_dir).unwrap();
    let node = pki
        .issue_node(
            "n1",
            vec!["127.0.0.1".parse().unwrap()],
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("node.crt"), &node.client.cert_pem).unwrap();
    std::fs::write(dir.path().join("node.key"), &node.client.key_pem).unwrap();
    let kubelet_client = pki.kubelet_client_tls().unwrap();
    std::fs::write(dir.path().join("kc.crt"), &kubelet_client.cert_pem).unwrap();
    std::fs::write(dir.path().join("kc.key"), &kubelet_client.key_pem).unwrap();
    for (who, cert, key) in [
        (
            "node",
            dir.path().join("node.crt"),
            dir.path().join("node.key"),
        ),
        (
            "kubelet client",
            dir.path().join("kc.crt"),
            dir.path().join("kc.key"),
        ),
    ] {
        for args in [
            &["get", "/registry/secrets/default/s1"][..],
            &["put", "/registry/x", "y"][..],
            &["del", "/registry/secrets/default/s1"][..],
        ] {
            let mut cmd = common::etcdctl_command();
            cmd.args([
                format!("--endpoints={}", server.endpoint),
                "--dial-timeout=2s".to_owned(),
                "--command-timeout=3s".to_owned(),
            ])
            .arg(format!("--cacert={}", server.pki("ca.crt").display()))
            .arg(format!("--cert={}", cert.display()))
            .arg(format!("--key={}", key.display()))
            .args(args);
            let out = common::run(cmd, None, common::COMMAND_TIMEOUT);
            assert!(!out.status.success(), "{who} {args:?}: {out:?}");
            assert!(!out.stdout.contains("s3cr3t"), "{who}: {out:?}");
        }
    }
    // The admin's etcd certificate still works, and nothing was changed.
    assert_eq!(
        server
            .etcdctl(&["get", "/registry/secrets/default/s1"])
            .success(),
        "/registry/secrets/default/s1\ns3cr3t\n"
    );
    assert_eq!(server.etcdctl(&["get", "/registry/x"]).success(), "");
}
