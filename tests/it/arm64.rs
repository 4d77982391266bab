//! An arm64 node: the edge agent (`wkube` built without default features:
//! no compiler, no control plane) cross-built for
//! `aarch64-unknown-linux-gnu` runs under user-mode emulation
//! (`qemu-aarch64`) as `wkube agent`, joined to this build's server, whose
//! own node is the host's architecture. The node reports the architecture
//! of the binary, pods pinned to arm64 wait for such a node and run there
//! (their module compiled for aarch64 by the API server, or on the node by
//! an agent built with the compiler), and their NodePort answers.
//!
//! scripts/test installs the emulator, the aarch64 C library and the
//! cross linker, and builds the binary before the tests. Without them this
//! test fails and says what is missing: it never passes by skipping.

use crate::common;

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::agent::{Agent, join_token, node_ready};
use common::builders::DeploymentBuilder;
use common::{TestServer, curl, eventually, guest};
use serde_json::{Value, json};

const CROSS_TARGET: &str = "aarch64-unknown-linux-gnu";

/// Starting a debug build under emulation (and its first TLS handshakes)
/// takes seconds where a native start takes milliseconds.
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(180);

/// Bound to Running under emulation. The edge agent loads code the API
/// server compiled (about 0.9 s); an agent built with the compiler runs
/// cranelift for aarch64 with every instruction emulated (about 3 s on a
/// 2-core x86-64 machine). The bound allows for a loaded machine.
const POD_RUNNING_TIMEOUT: Duration = Duration::from_secs(600);

/// The cross-built binary: `$WKUBE_ARM64_BIN`, or the debug build of
/// [`CROSS_TARGET`] in this build's target directory.
fn arm64_binary() -> PathBuf {
    let bin = env_path("WKUBE_ARM64_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // CARGO_BIN_EXE_wkube is TARGET_DIR/debug/wkube.
            let native = Path::new(env!("CARGO_BIN_EXE_wkube"));
            let target_dir = native
                .parent()
                .and_then(Path::parent)
                .expect("the wkube binary lives in TARGET_DIR/PROFILE/");
            target_dir.join(CROSS_TARGET).join("debug").join("wkube")
        });
    match is_aarch64_elf(&bin) {
        Ok(true) => bin,
        Ok(false) => panic!("{} is not an aarch64 ELF binary", bin.display()),
        Err(e) => panic!(
            "no arm64 wkube at {} ({e}): build it with \
             `cargo build --no-default-features --target {CROSS_TARGET} --bin wkube` (scripts/test does), \
             or point WKUBE_ARM64_BIN at one",
            bin.display()
        ),
    }
}

/// Whether `file` is 64-bit little-endian ELF for aarch64 (e_machine 183).
fn is_aarch64_elf(file: &Path) -> std::io::Result<bool> {
    let mut header = [0u8; 20];
    std::fs::File::open(file)?.read_exact(&mut header)?;
    let machine = u16::from_le_bytes([header[18], header[19]]);
    Ok(header.starts_with(b"\x7fELF\x02\x01") && machine == 183)
}

/// The files under `dir` whose names end in `suffix`, a bounded walk.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    // The data directory of one agent holds a few dozen entries.
    for _ in 0..10_000 {
        let Some(d) = todo.pop() else { break };
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                found.push(path);
            }
        }
    }
    found
}

/// A path from the environment; set but empty counts as unset.
fn env_path(var: &str) -> Option<OsString> {
    std::env::var_os(var).filter(|v| !v.is_empty())
}

/// `program` on the PATH.
fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// A command that runs the arm64 `wkube` under the emulator, which finds
/// the aarch64 loader and C library under `$WKUBE_ARM64_SYSROOT` (default
/// `/usr/aarch64-linux-gnu`, where Debian's libc6-arm64-cross puts them).
fn emulated_wkube() -> Command {
    let qemu = env_path("WKUBE_QEMU_AARCH64")
        .map(PathBuf::from)
        .or_else(|| on_path("qemu-aarch64"))
        .unwrap_or_else(|| {
            panic!(
                "qemu-aarch64 is not on the PATH: install Debian's qemu-user \
                 (scripts/test does), or point WKUBE_QEMU_AARCH64 at one"
            )
        });
    let sysroot =
        env_path("WKUBE_ARM64_SYSROOT").unwrap_or_else(|| OsString::from("/usr/aarch64-linux-gnu"));
    let loader = Path::new(&sysroot).join("lib/ld-linux-aarch64.so.1");
    assert!(
        loader.exists(),
        "no aarch64 loader at {}: install Debian's libc6-arm64-cross \
         (scripts/test does), or set WKUBE_ARM64_SYSROOT",
        loader.display()
    );
    let mut cmd = Command::new(qemu);
    cmd.arg("-L").arg(&sysroot).arg(arm64_binary());
    cmd
}

/// Node `name` as JSON.
fn node(k: &common::Kubectl, name: &str) -> Value {
    serde_json::from_str(&k.ok(&["get", "node", name, "-o", "json"])).expect("node JSON")
}

/// The pods of `app`.
fn pods(k: &common::Kubectl, app: &str) -> Vec<Value> {
    let list: Value =
        serde_json::from_str(&k.ok(&["get", "pods", "-l", &format!("app={app}"), "-o", "json"]))
            .expect("pod list JSON");
    list["items"].as_array().cloned().unwrap_or_default()
}

/// The pod's condition of type `type_`.
fn condition<'a>(pod: &'a Value, type_: &str) -> Option<&'a Value> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

#[test]
fn an_arm64_agent_under_emulation_runs_the_pods_pinned_to_arm64() {
    // Fail before starting anything when the emulator or the binary is missing.
    let emulated = emulated_wkube();

    let server = TestServer::builder().with_node().start();
    let k = server.kubectl();
    server
        .wkube(&["push", guest("hello-http").to_str().unwrap(), "hello:v1"])
        .success();
    assert!(
        eventually(Duration::from_secs(60), || node_ready(
            &server,
            common::TEST_NODE
        )),
        "the server's own node never became Ready"
    );
    // The server's node is the host's architecture, which is not arm64:
    // that is what makes the selector below mean something.
    let host_arch = node(&k, common::TEST_NODE)["metadata"]["labels"]["kubernetes.io/arch"]
        .as_str()
        .expect("the server's node has kubernetes.io/arch")
        .to_string();
    assert_eq!(host_arch, wkube::cluster::node_arch());
    assert_ne!(
        host_arch, "arm64",
        "this test runs an arm64 agent beside a node of another architecture"
    );

    // Two replicas pinned to arm64, behind a NodePort. With only the
    // server's node in the cluster they must wait, unscheduled.
    let app = "hello-arm";
    k.ok_with_stdin(
        &["create", "-f", "-"],
        &DeploymentBuilder::new(app)
            .replicas(2)
            .node_selector("kubernetes.io/arch", "arm64")
            .http_port(8080)
            .json(),
    );
    k.ok_with_stdin(
        &["create", "-f", "-"],
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": app},
                "spec": {"type": "NodePort", "selector": {"app": app},
                         "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
        .to_string(),
    );
    let unschedulable = |p: &Value| {
        condition(p, "PodScheduled")
            .is_some_and(|c| c["status"] == "False" && c["reason"] == "Unschedulable")
    };
    let mut seen = Vec::new();
    assert!(
        eventually(Duration::from_secs(60), || {
            seen = pods(&k, app);
            seen.len() == 2 && seen.iter().all(unschedulable)
        }),
        "the arm64 pods were not reported unschedulable: {seen:#?}"
    );
    for p in &seen {
        assert!(
            p["spec"]["nodeName"].is_null(),
            "an arm64 pod was bound to the {host_arch} node: {p:#}"
        );
    }

    // The arm64 agent joins, on an address of this cluster's own.
    let ip = {
        let [a, b, c, _] = server.addresses.node_ip.octets();
        format!("{a}.{b}.{c}.2")
    };
    let tmp = tempfile::tempdir().unwrap();
    let joined = Instant::now();
    let agent = Agent::start_with(
        emulated,
        &server,
        tmp.path(),
        "arm-1",
        &ip,
        Some(&join_token(&server)),
        // The emulator keeps state for every page of reserved address
        // space: the instance pool's terabytes would cost it gigabytes.
        &["--wasm-memory", "small"],
    );
    assert!(
        eventually(NODE_READY_TIMEOUT, || node_ready(&server, "arm-1")),
        "the arm64 agent's node never became Ready within {NODE_READY_TIMEOUT:?}: {}",
        agent.stderr()
    );
    println!("arm64 agent: start to node Ready {:?}", joined.elapsed());
    let arm = node(&k, "arm-1");
    let labels = &arm["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/arch"], "arm64", "{labels:#}");
    assert_eq!(labels["kubernetes.io/os"], "linux", "{labels:#}");
    assert_eq!(arm["status"]["nodeInfo"]["architecture"], "arm64");
    assert_eq!(arm["status"]["nodeInfo"]["operatingSystem"], "linux");

    // Both pods land on the arm64 node; bound to Running is timed as the
    // API shows it (kubectl polls cost about 0.1 s each).
    let mut bound_at: Option<Instant> = None;
    let mut running_at: Option<Instant> = None;
    let mut last = Vec::new();
    let running = |p: &Value| {
        p["status"]["phase"] == "Running"
            && condition(p, "Ready").is_some_and(|c| c["status"] == "True")
    };
    let done = eventually(NODE_READY_TIMEOUT + POD_RUNNING_TIMEOUT, || {
        last = pods(&k, app);
        let bound = last.len() == 2 && last.iter().all(|p| p["spec"]["nodeName"].is_string());
        if bound && bound_at.is_none() {
            bound_at = Some(Instant::now());
        }
        let all_running = bound && last.iter().all(running);
        if all_running {
            running_at = Some(Instant::now());
        }
        all_running
    });
    assert!(
        done,
        "the arm64 pods were not bound and Running within {:?}: \
         {last:#?}\n--- agent ---\n{}",
        NODE_READY_TIMEOUT + POD_RUNNING_TIMEOUT,
        agent.stderr()
    );
    for p in &last {
        assert_eq!(
            p["spec"]["nodeName"], "arm-1",
            "a pod pinned to arm64 ran elsewhere: {p:#}"
        );
    }
    // The module's code on the node is for its machine: compiled for
    // aarch64 by the API server (which cross-compiles) or on the node.
    let compiled = files_ending(&agent.dir, ".cwasm");
    assert!(
        !compiled.is_empty(),
        "no compiled module under {}",
        agent.dir.display()
    );
    for f in &compiled {
        assert!(
            is_aarch64_elf(f).unwrap_or(false),
            "{} is not aarch64 code",
            f.display()
        );
    }
    println!(
        "arm64 agent: module code {}",
        if agent
            .stderr()
            .contains("loaded module code precompiled by the API server")
        {
            "precompiled for aarch64 by the API server"
        } else {
            "compiled on the node"
        }
    );
    let (bound_at, running_at) = (bound_at.unwrap(), running_at.unwrap());
    println!(
        "arm64 agent: pods bound {:?} after the agent started, Running {:?} after being bound",
        bound_at - joined,
        running_at - bound_at
    );

    // The NodePort answers on the arm64 node (served by its proxy under
    // emulation) and on the server's node (forwarded to the arm64 node).
    let port = k.ok(&[
        "get",
        "svc",
        app,
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);
    for node_ip in [ip.clone(), server.addresses.node_ip.to_string()] {
        let url = format!("http://{node_ip}:{port}/");
        let mut answer = (0, String::new());
        assert!(
            eventually(Duration::from_secs(60), || {
                answer = curl(&[&url]);
                answer.0 == 200
            }),
            "{url} never answered 200: {answer:?}\n--- agent ---\n{}",
            agent.stderr()
        );
        assert_eq!(answer, (200, "Hello from wkube!\n".to_string()), "{url}");
    }
}
