//! The module registry as users drive it: pushes with curl and with
//! `wkube push`, downloads by digest, kubectl listing Modules, refusals of
//! bad and oversized uploads, and blob collection when tags move.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{COMMAND_TIMEOUT, TestServer, run};
use serde_json::Value;
use sha2::{Digest, Sha256};
use wasm_encoder::{
    CodeSection, Component, ComponentExportKind, ComponentExportSection, ComponentInstanceSection,
    CustomSection, ExportKind, ExportSection, Function, FunctionSection, Module, TypeSection,
};

/// The server these tests share (Modules are cluster-scoped, so not the
/// one other modules share).
fn modules_server() -> &'static TestServer {
    static SERVER: std::sync::OnceLock<TestServer> = std::sync::OnceLock::new();
    SERVER.get_or_init(|| TestServer::builder().start_for_process())
}

/// A core module exporting a do-nothing `_start`, padded with a custom
/// section of `padding` bytes (custom sections are valid anywhere).
fn core_module(padding: usize) -> Vec<u8> {
    let mut m = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([], []);
    m.section(&types);
    let mut funcs = FunctionSection::new();
    funcs.function(0);
    m.section(&funcs);
    let mut exports = ExportSection::new();
    exports.export("_start", ExportKind::Func, 0);
    m.section(&exports);
    let mut code = CodeSection::new();
    let mut f = Function::new([]);
    f.instructions().end();
    code.function(&f);
    m.section(&code);
    if padding > 0 {
        let data: Vec<u8> = (0..padding).map(|i| (i % 251) as u8).collect();
        m.section(&CustomSection {
            name: "padding".into(),
            data: data.into(),
        });
    }
    m.finish()
}

/// A component exporting an empty instance under `interface`.
fn component_exporting(interface: &str) -> Vec<u8> {
    let mut c = Component::new();
    let mut instances = ComponentInstanceSection::new();
    instances.export_items(Vec::<(&str, ComponentExportKind, u32)>::new());
    c.section(&instances);
    let mut exports = ComponentExportSection::new();
    exports.export(interface, ComponentExportKind::Instance, 0, None);
    c.section(&exports);
    c.finish()
}

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The admin's bearer token, from DATA/admin.kubeconfig.
fn admin_token(server: &TestServer) -> String {
    let text = std::fs::read_to_string(server.admin_kubeconfig()).expect("admin kubeconfig");
    let kc: Value = serde_yaml_ng::from_str(&text).expect("kubeconfig yaml");
    kc["users"][0]["user"]["token"]
        .as_str()
        .expect("token in admin kubeconfig")
        .to_string()
}

/// curl as a user would type it, answering (HTTP code, body file).
struct Curl<'a> {
    server: &'a TestServer,
    dir: tempfile::TempDir,
}

impl<'a> Curl<'a> {
    fn new(server: &'a TestServer) -> Self {
        Curl {
            server,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).expect("write file");
        p
    }

    fn command(&self, out: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--http1.1", "--max-time", "60", "--cacert"])
            .arg(self.server.pki("ca.crt"))
            .arg("-H")
            .arg(format!(
                "Authorization: Bearer {}",
                admin_token(self.server)
            ))
            .arg("-o")
            .arg(out)
            .args(["-w", "%{http_code}"])
            .args(args);
        cmd
    }

    /// Runs curl; returns the HTTP code and the body.
    fn call(&self, args: &[&str]) -> (u16, Vec<u8>) {
        let out = self.dir.path().join("response");
        let _ = std::fs::remove_file(&out);
        let result = run(self.command(&out, args), None, COMMAND_TIMEOUT);
        let code = result
            .stdout
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("curl {args:?}: {result:?}"));
        (code, std::fs::read(&out).unwrap_or_default())
    }

    /// POSTs `bytes` to NAME's push subresource.
    fn push(&self, name: &str, tag: &str, bytes: &[u8]) -> (u16, Value) {
        let file = self.file("upload.wasm", bytes);
        let url = format!(
            "{}/apis/wkube.dev/v1/modules/{name}/push?tag={tag}",
            self.server.api_url
        );
        let (code, body) = self.call(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/wasm",
            "--data-binary",
            &format!("@{}", file.display()),
            &url,
        ]);
        let v = serde_json::from_slice(&body)
            .unwrap_or_else(|_| panic!("HTTP {code}: {}", String::from_utf8_lossy(&body)));
        (code, v)
    }

    fn download(&self, digest: &str) -> (u16, Vec<u8>) {
        let url = format!("{}/apis/wkube.dev/v1/blobs/{digest}", self.server.api_url);
        self.call(&[&url])
    }
}

#[test]
fn a_core_module_pushed_with_curl_becomes_a_module_and_downloads_byte_for_byte() {
    let server = modules_server();
    let curl = Curl::new(server);
    let bytes = core_module(0);
    let digest = digest_of(&bytes);
    let (code, module) = curl.push("hello-core", "v1", &bytes);
    assert_eq!(code, 201, "{module}");
    assert_eq!(module["kind"], "Module");
    assert_eq!(module["spec"]["tags"]["v1"], digest.as_str());
    let info = &module["status"]["blobs"][&digest];
    assert_eq!(info["format"], "module", "{module}");
    assert_eq!(info["size"], bytes.len());
    assert_eq!(info["exports"], serde_json::json!(["_start"]));

    // The same bytes under another tag: the Module exists, so 200.
    let (code, module) = curl.push("hello-core", "latest", &bytes);
    assert_eq!(code, 200, "{module}");
    assert_eq!(module["spec"]["tags"]["latest"], digest.as_str());

    let (code, body) = curl.download(&digest);
    assert_eq!(code, 200);
    assert_eq!(body, bytes);

    let missing = format!("sha256:{}", "0".repeat(64));
    let (code, body) = curl.download(&missing);
    assert_eq!(code, 404);
    let status: Value = serde_json::from_slice(&body).expect("Status");
    assert_eq!(status["reason"], "NotFound");
}

#[test]
fn a_component_push_records_the_interfaces_it_exports() {
    let server = modules_server();
    let curl = Curl::new(server);
    let bytes = component_exporting("wasi:http/incoming-handler@0.2.0");
    let digest = digest_of(&bytes);
    let (code, module) = curl.push("hello-http", "v1", &bytes);
    assert_eq!(code, 201, "{module}");
    let info = &module["status"]["blobs"][&digest];
    assert_eq!(info["format"], "component", "{module}");
    assert_eq!(
        info["exports"],
        serde_json::json!(["wasi:http/incoming-handler@0.2.0"])
    );
}

#[test]
fn bytes_that_are_not_wasm_are_refused_with_422_saying_what_is_wrong() {
    let server = modules_server();
    let curl = Curl::new(server);
    let (code, status) = curl.push("garbage", "v1", b"hello, world\n");
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["reason"], "Invalid");
    let msg = status["message"].as_str().unwrap_or_default();
    assert!(msg.contains("not a WebAssembly binary"), "{msg}");

    let mut truncated = core_module(0);
    truncated.truncate(truncated.len() - 3);
    let (code, status) = curl.push("garbage", "v1", &truncated);
    assert_eq!(code, 422, "{status}");
    let msg = status["message"].as_str().unwrap_or_default();
    assert!(msg.contains("fails validation at offset"), "{msg}");

    // Nothing was created for the refused uploads.
    let (code, _) = curl.call(&[&format!(
        "{}/apis/wkube.dev/v1/modules/garbage",
        server.api_url
    )]);
    assert_eq!(code, 404);
}

#[test]
fn a_module_over_the_limit_is_refused_with_413_before_it_is_read() {
    let server = modules_server();
    let curl = Curl::new(server);
    // Sparse: 64 MiB + 1 byte on disk costs nothing; curl announces its
    // length and waits for `100 Continue`, which never comes.
    let big = curl.dir.path().join("big.wasm");
    let f = std::fs::File::create(&big).expect("create");
    f.set_len(64 * 1024 * 1024 + 1).expect("set_len");
    let url = format!(
        "{}/apis/wkube.dev/v1/modules/too-big/push?tag=v1",
        server.api_url
    );
    let (code, body) = curl.call(&[
        "-T",
        &big.display().to_string(),
        "-H",
        "Content-Type: application/wasm",
        &url,
    ]);
    assert_eq!(code, 413, "{}", String::from_utf8_lossy(&body));
    let status: Value = serde_json::from_slice(&body).expect("Status");
    assert_eq!(status["reason"], "RequestEntityTooLarge");
}

#[test]
fn a_three_mebibyte_module_is_stored_in_chunks_and_round_trips() {
    let server = modules_server();
    let curl = Curl::new(server);
    let bytes = core_module(3 * 1024 * 1024);
    let digest = digest_of(&bytes);
    let (code, module) = curl.push("big", "v1", &bytes);
    assert_eq!(code, 201, "{module}");
    let hex = digest.trim_start_matches("sha256:");
    let keys = server
        .etcdctl(&[
            "get",
            "--prefix",
            "--keys-only",
            &format!("/registry/wkube.dev/blobs/{hex}/chunks/"),
        ])
        .success();
    let chunks = keys.lines().filter(|l| !l.is_empty()).count();
    assert!(chunks >= 4, "3 MiB + header in 1 MiB chunks: {keys}");
    let (code, body) = curl.download(&digest);
    assert_eq!(code, 200);
    assert_eq!(body.len(), bytes.len());
    assert!(body == bytes, "downloaded bytes differ");
}

#[test]
fn kubectl_lists_pushed_modules() {
    let server = modules_server();
    let curl = Curl::new(server);
    let (code, _) = curl.push("listed", "v1", &core_module(0));
    assert!(code == 200 || code == 201);
    let out = server.kubectl().ok(&["get", "modules"]);
    assert!(out.contains("listed"), "{out}");
    let yaml = server
        .kubectl()
        .ok(&["get", "module", "listed", "-o", "yaml"]);
    assert!(yaml.contains("sha256:"), "{yaml}");
}

#[test]
fn a_blob_is_removed_once_no_tag_refers_to_it() {
    let server = modules_server();
    let curl = Curl::new(server);
    let first = core_module(10);
    let second = core_module(20);
    assert_eq!(curl.push("moving", "v1", &first).0, 201);
    assert_eq!(curl.download(&digest_of(&first)).0, 200);
    // Moving the only tag leaves the first blob unreferenced.
    assert_eq!(curl.push("moving", "v1", &second).0, 200);
    assert!(
        common::eventually(Duration::from_secs(10), || curl
            .download(&digest_of(&first))
            .0
            == 404),
        "the untagged blob was not collected"
    );
    assert_eq!(curl.download(&digest_of(&second)).0, 200);
    // Deleting the Module leaves the second one unreferenced.
    server.kubectl().ok(&["delete", "module", "moving"]);
    assert!(
        common::eventually(Duration::from_secs(10), || curl
            .download(&digest_of(&second))
            .0
            == 404),
        "the blob of a deleted Module was not collected"
    );
}

#[test]
fn a_blob_shared_by_two_modules_survives_one_of_them() {
    let server = modules_server();
    let curl = Curl::new(server);
    let bytes = core_module(30);
    assert!(matches!(curl.push("share-a", "v1", &bytes).0, 200 | 201));
    assert!(matches!(curl.push("share-b", "v1", &bytes).0, 200 | 201));
    server.kubectl().ok(&["delete", "module", "share-a"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(curl.download(&digest_of(&bytes)).0, 200);
}

#[test]
fn wkube_push_uploads_a_file_and_says_what_it_stored() {
    let server = modules_server();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("hello.wasm");
    let bytes = component_exporting("wasi:cli/run@0.2.0");
    std::fs::write(&file, &bytes).expect("write");
    let out = server
        .wkube(&["push", &file.display().to_string(), "hello-cli:v2"])
        .success();
    assert_eq!(
        out.trim(),
        format!(
            "hello-cli:v2 pushed ({}, {} bytes, component exporting wasi:cli/run@0.2.0)",
            digest_of(&bytes),
            bytes.len()
        )
    );
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not wasm").expect("write");
    let out = server.wkube(&["push", &garbage.display().to_string(), "hello-cli"]);
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("not a WebAssembly binary"),
        "{}",
        out.stderr
    );
}
