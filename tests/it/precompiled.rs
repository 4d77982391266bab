//! Compile once per architecture: agents that never saw a module run the
//! native code the API server compiled for their engine instead of
//! compiling it themselves.
//!
//! The agent that runs only precompiled code is started with
//! `--module-code precompiled`, which takes the very path of a build
//! without the `compiler` feature (the runtime refuses to compile, the
//! kubelet asks the API server only); building that second binary here
//! would add minutes to the test command. The README's figures for the
//! compiler-less build were measured by hand.

use crate::common;

use std::time::{Duration, Instant};

use common::agent::{Agent, join_token, node_ready};
use common::{TestServer, eventually, guest};
use serde_json::json;
use sha2::{Digest, Sha256};

/// Creates pod `name` bound to `node` running `image`; returns the time
/// from the create until the watch shows it Running (the create itself,
/// one kubectl invocation, is about 0.1 s of it).
fn bound_to_running(server: &TestServer, name: &str, node: &str, image: &str) -> Duration {
    let k = server.kubectl();
    let mut watch = k.spawn_lines(&[
        "get",
        "pod",
        "--field-selector",
        &format!("metadata.name={name}"),
        "-w",
        "-o",
        "jsonpath={.status.phase}{\"\\n\"}",
    ]);
    // Let the watch start before the pod exists.
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    k.ok_with_stdin(
        &["create", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"nodeName": node,
                         "containers": [{"name": "web", "image": image}]}})
        .to_string(),
    );
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "pod {name} never ran"
        );
        if watch.next_line(Duration::from_secs(120)) == "Running" {
            return start.elapsed();
        }
    }
}

#[test]
fn agents_run_code_the_server_compiled_once_for_their_engine() {
    let server = TestServer::builder().start();
    let tmp = tempfile::tempdir().unwrap();
    let k = server.kubectl();
    let wasm = std::fs::read(guest("hello-http")).unwrap();
    let hex = hex::encode(Sha256::digest(&wasm));
    server
        .wkube(&["push", guest("hello-http").to_str().unwrap(), "hello:v1"])
        .success();
    let token = join_token(&server);
    let pre = Agent::start_with(
        std::process::Command::new(env!("CARGO_BIN_EXE_wkube")),
        &server,
        tmp.path(),
        "pre-1",
        "127.0.0.2",
        Some(&token),
        &["--module-code", "precompiled"],
    );
    let local = Agent::start_with(
        std::process::Command::new(env!("CARGO_BIN_EXE_wkube")),
        &server,
        tmp.path(),
        "local-1",
        "127.0.0.3",
        Some(&token),
        &["--module-code", "local"],
    );
    for (name, agent) in [("pre-1", &pre), ("local-1", &local)] {
        assert!(
            eventually(Duration::from_secs(60), || node_ready(&server, name)),
            "{name} never became Ready: {}",
            agent.stderr()
        );
    }

    // Never seen by either node: one runs the server's code, the other
    // compiles.
    let with_precompiled = bound_to_running(&server, "pre", "pre-1", "hello:v1");
    let compiled_here = bound_to_running(&server, "local", "local-1", "hello:v1");
    println!(
        "bound → Running on a node new to the module: {with_precompiled:?} with precompiled code, {compiled_here:?} compiling it there"
    );
    let answers = |pod: &str| {
        k.run(&[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/default/pods/{pod}/proxy/"),
        ])
        .stdout
            == "Hello from wkube!\n"
    };
    assert!(eventually(Duration::from_secs(30), || answers("pre")));
    assert!(eventually(Duration::from_secs(30), || answers("local")));

    let pre_log = pre.stderr();
    assert!(
        pre_log.contains("loaded module code precompiled by the API server"),
        "{pre_log}"
    );
    assert!(
        !pre_log.contains("compiled module on this node"),
        "{pre_log}"
    );
    let local_log = local.stderr();
    assert!(
        local_log.contains("compiled module on this node"),
        "{local_log}"
    );
    assert!(!local_log.contains("precompiled by the API server"));
    // The artifact is kept on the node's disk, under its engine profile.
    let kept = std::fs::read_dir(pre.dir.join("kubelet/compiled"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("engine-"))
        .any(|e| e.path().join(format!("{hex}.component.cwasm")).exists());
    assert!(kept, "no compiled artifact kept on pre-1");
    // Compiled once, stored beside the blob in the cluster store.
    let server_log = server.log_text();
    assert_eq!(
        server_log
            .matches("compiled module for an engine profile")
            .count(),
        1,
        "{server_log}"
    );
    let keys = server.wkube_kv(&[
        "get",
        "--prefix",
        "--keys-only",
        &format!("/registry/wkube.dev/blobs/{hex}/compiled/"),
    ]);
    let keys = keys.success();
    assert!(
        keys.contains("/compiled/x86_64-unknown-linux-gnu/") && keys.contains("/meta"),
        "{keys}"
    );

    // Another node of the same engine, in the default mode, gets the
    // stored artifact: the server does not compile again.
    let auto = Agent::start(&server, tmp.path(), "auto-1", "127.0.0.4", Some(&token));
    assert!(
        eventually(Duration::from_secs(60), || node_ready(&server, "auto-1")),
        "auto-1 never became Ready: {}",
        auto.stderr()
    );
    let again = bound_to_running(&server, "auto", "auto-1", "hello:v1");
    println!("bound → Running with the stored artifact: {again:?}");
    assert!(
        auto.stderr()
            .contains("loaded module code precompiled by the API server")
    );
    assert_eq!(
        server
            .log_text()
            .matches("compiled module for an engine profile")
            .count(),
        1
    );

    // A profile the server cannot compile for is refused, saying why.
    let refused = k.run(&[
        "get",
        "--raw",
        &format!(
            "/apis/wkube.dev/v1/blobs/sha256:{hex}/compiled?target=mips-unknown-linux-gnu&memory=guarded&wasmtime=48.0.8"
        ),
    ]);
    assert!(
        refused.stderr.contains("BadRequest") && refused.stderr.contains("unsupported target"),
        "{}",
        refused.stderr
    );
}
