//! `wkube server` as a process: what it prints, its data directory, its
//! lock, its shutdown.

use crate::common;

use std::time::Duration;

use common::{TestServer, run};

#[test]
fn the_server_prints_where_it_listens_and_the_etcdctl_command_that_reaches_it() {
    let server = TestServer::start();
    let log = server.log_text();
    assert!(
        log.contains(&format!("etcd v3 API listening on {}", server.endpoint)),
        "{log}"
    );
    // The printed etcdctl line must work when run as printed.
    let line = log
        .lines()
        .find(|l| l.trim_start().starts_with("ETCDCTL_API=3 etcdctl "))
        .unwrap_or_else(|| panic!("no etcdctl line in:\n{log}"));
    let mut cmd = common::etcdctl_command();
    // Skips "ETCDCTL_API=3 etcdctl", which etcdctl_command() provides.
    cmd.args(line.split_whitespace().skip(2));
    for f in ["ca.crt", "etcd-client.crt", "etcd-client.key"] {
        assert!(
            line.contains(&server.pki(f).display().to_string()),
            "{line}"
        );
        assert!(server.pki(f).exists(), "{f} missing");
    }
    let out = run(cmd, None, common::COMMAND_TIMEOUT);
    assert!(out.status.success(), "{out:?}");
    assert!(log.contains("kv get foo"), "{log}");
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused_with_a_clear_message() {
    let server = TestServer::start();
    let out = run(server.server_command(), None, common::COMMAND_TIMEOUT);
    assert!(!out.status.success());
    let pid = server.pid().expect("first server runs");
    assert!(
        out.stderr
            .contains("another wkube server is already running with data directory"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!("(pid {pid})")),
        "{}",
        out.stderr
    );
    // The first one is unharmed.
    assert_eq!(server.etcdctl(&["put", "k", "v"]).success(), "OK\n");
}

#[test]
fn sigterm_stops_the_server_cleanly_and_data_survives_a_restart() {
    let mut server = TestServer::start();
    server.etcdctl(&["put", "durable", "yes"]).success();
    let rev = server.revision();
    let status = server.signal_and_wait("TERM", Duration::from_secs(20));
    assert!(status.success(), "exit status {status}");
    assert!(
        !server.data_dir.join("etcd.endpoint").exists(),
        "a stopped server leaves no endpoint behind"
    );
    server.restart();
    assert_eq!(
        server.etcdctl(&["get", "durable"]).success(),
        "durable\nyes\n"
    );
    assert_eq!(server.revision(), rev);
}

#[test]
fn sigint_stops_the_server_even_with_a_watch_open() {
    let mut server = TestServer::start();
    let rev = common::header_revision(&server.etcdctl(&["put", "-w", "json", "x", "1"]).success());
    let mut watch =
        server.spawn_lines(server.etcdctl_command(&["watch", &format!("--rev={rev}"), "x"]));
    // The replayed event proves the watch stream is open.
    assert_eq!(
        watch.next_lines(3, Duration::from_secs(15)),
        ["PUT", "x", "1"]
    );
    let status = server.signal_and_wait("INT", Duration::from_secs(20));
    assert!(status.success(), "exit status {status}");
}

#[test]
fn etcd_flags_without_servers_or_with_a_bad_prefix_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wkube = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wkube"));
        cmd.arg("--data-dir")
            .arg(dir.path())
            .arg("server")
            .args(args);
        run(cmd, None, common::COMMAND_TIMEOUT)
    };
    // Certificates for an etcd that was not named: a usage error.
    let out = wkube(&["--etcd-cafile", "/nonexistent/ca.crt"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("--etcd-servers"), "{}", out.stderr);
    // A prefix that is not an absolute key path.
    let out = wkube(&[
        "--etcd-servers",
        "http://127.0.0.1:9",
        "--etcd-prefix",
        "registry/",
        "--no-agent",
    ]);
    assert!(!out.status.success());
    assert!(out.stderr.contains("--etcd-prefix"), "{}", out.stderr);
}

#[test]
fn the_data_dir_and_its_keys_are_private_to_the_owner() {
    use std::os::unix::fs::PermissionsExt;
    let server = TestServer::start();
    let mode = std::fs::metadata(&server.data_dir)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "data dir mode {mode:o}");
    for key in ["ca.key", "etcd-server.key", "etcd-client.key"] {
        let mode = std::fs::metadata(server.pki(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{key} mode {mode:o}");
    }
}
