//! `wkube kv` against a real server, typed the way a user types it: no
//! connection flags, the endpoint and certificates found in the data dir.

use crate::common;

use std::time::Duration;

use common::{TestServer, header_revision};

const LINE_TIMEOUT: Duration = Duration::from_secs(15);

#[test]
fn the_readme_demo_works_as_typed() {
    let server = TestServer::start();
    assert_eq!(
        server.wkube_kv(&["put", "key", "I am a value"]).success(),
        "OK\n"
    );
    assert_eq!(
        server.wkube_kv(&["get", "key"]).success(),
        "key\nI am a value\n"
    );
    assert_eq!(server.wkube_kv(&["del", "key"]).success(), "1\n");
    assert_eq!(server.wkube_kv(&["get", "key"]).success(), "");
}

#[test]
fn wkube_kv_prints_exactly_what_etcdctl_prints() {
    let server = TestServer::start();
    for (k, v) in [("p/a", "1"), ("p/b", "two words"), ("p/c", ""), ("q", "x")] {
        server.etcdctl(&["put", k, v]).success();
    }
    let rev = server.revision().to_string();
    let cases: Vec<Vec<&str>> = vec![
        vec!["get", "p/a"],
        vec!["get", "--prefix", "p/"],
        vec!["get", "--prefix", "--keys-only", "p/"],
        vec!["get", "--prefix", "--print-value-only", "p/"],
        vec!["get", "--prefix", "--limit=2", "p/"],
        vec!["get", "p/", "p/c"],
        vec!["get", "--from-key", "p/b"],
        vec!["get", "-w", "json", "--prefix", "p/"],
        vec!["get", "-w", "json", "nothing"],
        vec!["get", "--rev", &rev, "q"],
    ];
    for args in cases {
        let ours = server.wkube_kv(&args).success();
        let theirs = server.etcdctl(&args).success();
        assert_eq!(ours, theirs, "output of `{}`", args.join(" "));
    }
    // Writes: the same output for the same change.
    assert_eq!(server.wkube_kv(&["del", "--prefix", "p/"]).success(), "3\n");
    assert_eq!(server.etcdctl(&["del", "--prefix", "p/"]).success(), "0\n");
    let ours = server.wkube_kv(&["put", "-w", "json", "j", "1"]).success();
    let theirs = server.etcdctl(&["put", "-w", "json", "j", "2"]).success();
    assert_eq!(header_revision(&theirs), header_revision(&ours) + 1);
    let without_revision = |s: &str| {
        s.replace(
            &format!("\"revision\":{}", header_revision(s)),
            "\"revision\":R",
        )
    };
    assert_eq!(without_revision(&ours), without_revision(&theirs));
}

#[test]
fn wkube_kv_put_reads_the_value_from_stdin_when_none_is_given() {
    let server = TestServer::start();
    let value = "line one\nline two";
    assert_eq!(
        server
            .wkube_kv_with_stdin(&["put", "from-stdin"], Some(value.as_bytes()))
            .success(),
        "OK\n"
    );
    assert_eq!(
        server
            .etcdctl(&["get", "--print-value-only", "from-stdin"])
            .success(),
        format!("{value}\n")
    );
}

#[test]
fn wkube_kv_get_rev_shows_an_old_value() {
    let server = TestServer::start();
    let first = header_revision(
        &server
            .wkube_kv(&["put", "-w", "json", "r", "old"])
            .success(),
    );
    server.wkube_kv(&["put", "r", "new"]).success();
    assert_eq!(
        server
            .wkube_kv(&["get", "--rev", &first.to_string(), "r"])
            .success(),
        "r\nold\n"
    );
}

#[test]
fn wkube_kv_watch_prints_events_like_etcdctl() {
    let server = TestServer::start();
    let start = header_revision(
        &server
            .wkube_kv(&["put", "-w", "json", "wk/1", "a"])
            .success(),
    );
    let mut watch = server.spawn_lines(server.wkube_kv_command(&[
        "watch",
        "--prefix",
        "--rev",
        &start.to_string(),
        "wk/",
    ]));
    assert_eq!(watch.next_lines(3, LINE_TIMEOUT), ["PUT", "wk/1", "a"]);
    server.wkube_kv(&["put", "wk/2", "b"]).success();
    assert_eq!(watch.next_lines(3, LINE_TIMEOUT), ["PUT", "wk/2", "b"]);
    server.wkube_kv(&["del", "--prefix", "wk/"]).success();
    let mut deleted = watch.next_lines(6, LINE_TIMEOUT);
    assert_eq!(deleted[0], "DELETE");
    assert_eq!(deleted[3], "DELETE");
    deleted.retain(|l| l != "DELETE" && !l.is_empty());
    assert_eq!(deleted, ["wk/1", "wk/2"]);
}

#[test]
fn wkube_kv_watch_of_a_compacted_revision_is_cancelled_like_etcdctl() {
    let server = TestServer::start();
    let old = header_revision(&server.wkube_kv(&["put", "-w", "json", "cw", "1"]).success());
    let new = header_revision(&server.wkube_kv(&["put", "-w", "json", "cw", "2"]).success());
    server.etcdctl(&["compaction", &new.to_string()]).success();
    let watch =
        server.spawn_lines(server.wkube_kv_command(&["watch", "--rev", &old.to_string(), "cw"]));
    let (status, stderr) = watch.wait(LINE_TIMEOUT);
    assert_eq!(
        status.code(),
        Some(5),
        "etcdctl's exit code for a cancelled watch"
    );
    assert_eq!(
        stderr,
        "watch was canceled (etcdserver: mvcc: required revision has been compacted)\n\
         Error: watch is canceled by the server\n"
    );
}

#[test]
fn wkube_kv_reports_server_errors_like_etcdctl_and_exits_1() {
    let server = TestServer::start();
    server
        .wkube_kv(&["put", "", "v"])
        .fails_with("etcdserver: key is not provided");
    server
        .wkube_kv(&["get", "--rev", "1000000", "k"])
        .fails_with("etcdserver: mvcc: required revision is a future revision");
    // Over the 1.5 MiB limit, under the 2 MiB where gRPC itself refuses.
    let big = vec![b'v'; 1_900_000];
    server
        .wkube_kv_with_stdin(&["put", "big"], Some(&big))
        .fails_with("etcdserver: request is too large");
    server
        .wkube_kv(&["put", "--lease", "1234abcd", "k", "v"])
        .fails_with("etcdserver: requested lease not found");
    // And the server goes on serving.
    assert_eq!(server.wkube_kv(&["put", "k", "v"]).success(), "OK\n");
}

#[test]
fn wkube_kv_with_explicit_flags_reaches_the_server_like_etcdctl_does() {
    let server = TestServer::start();
    let elsewhere = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wkube"));
    cmd.args(["--data-dir"])
        .arg(elsewhere.path())
        .arg("kv")
        .args(server.etcdctl_flags())
        .args(["put", "flagged", "yes"]);
    assert_eq!(
        common::run(cmd, None, common::COMMAND_TIMEOUT).success(),
        "OK\n"
    );
    assert_eq!(
        server.etcdctl(&["get", "flagged"]).success(),
        "flagged\nyes\n"
    );
}

#[test]
fn wkube_kv_without_a_running_server_says_how_to_start_one() {
    let empty = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wkube"));
    cmd.env("WKUBE_DATA_DIR", empty.path())
        .args(["kv", "get", "k"]);
    let out = common::run(cmd, None, common::COMMAND_TIMEOUT);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr
            .starts_with("Error: cannot find a running server"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("wkube server"), "{}", out.stderr);
}
