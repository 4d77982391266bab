//! The Kubernetes API over plain HTTPS requests, the way the README shows
//! it: `curl` with the cluster CA and a bearer token from `wkube token
//! create`. Bad input gets a Kubernetes `Status` that names the problem.

use crate::common;

use std::process::Command;
use std::sync::OnceLock;

use common::{COMMAND_TIMEOUT, TestServer, run};
use serde_json::{Value, json};

/// A body limit small enough to exceed cheaply.
const BODY_LIMIT: usize = 64 * 1024;

fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        TestServer::builder()
            .arg(format!("--max-api-body-bytes={BODY_LIMIT}"))
            .start_for_process()
    })
}

/// The cluster admin's token, minted as a user would.
fn admin_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let out = server()
            .wkube(&[
                "token",
                "create",
                "--user",
                "curl-admin",
                "--group",
                "system:masters",
            ])
            .success();
        out.trim().to_owned()
    })
}

/// What curl got back.
#[derive(Debug)]
struct Reply {
    code: u16,
    headers: String,
    body: String,
}

impl Reply {
    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.code, self.body))
    }

    /// Asserts a Kubernetes Status with this code and reason.
    #[track_caller]
    fn status(&self, code: u16, reason: &str) -> Value {
        assert_eq!(self.code, code, "{self:?}");
        let s = self.json();
        assert_eq!(s["kind"], "Status", "{s}");
        assert_eq!(s["apiVersion"], "v1", "{s}");
        assert_eq!(s["status"], "Failure", "{s}");
        assert_eq!(s["code"], code, "{s}");
        assert_eq!(s["reason"], reason, "{s}");
        s
    }
}

/// A curl request to the API server, trusting the cluster CA.
struct Request {
    cmd: Command,
    stdin: Option<String>,
    token: Option<String>,
}

fn request(method: &str, path: &str) -> Request {
    let mut cmd = Command::new("curl");
    cmd.args(["--silent", "--show-error", "--max-time", "20"])
        .arg("--cacert")
        .arg(server().pki("ca.crt"))
        .args(["-X", method, "--dump-header", "-"])
        // No `100 Continue` interim response to tell apart from the real one.
        .args(["-H", "Expect:"])
        .args(["--write-out", "\n%{http_code}"])
        .arg(format!("{}{path}", server().api_url));
    Request {
        cmd,
        stdin: None,
        token: Some(admin_token().to_owned()),
    }
}

impl Request {
    fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    /// No credentials at all.
    fn anonymous(mut self) -> Self {
        self.token = None;
        self
    }

    fn header(mut self, h: &str) -> Self {
        self.cmd.args(["-H", h]);
        self
    }

    fn json(self, body: &Value) -> Self {
        self.body_text(&body.to_string())
    }

    fn body_text(mut self, body: &str) -> Self {
        self.cmd.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
        ]);
        self.stdin = Some(body.to_owned());
        self
    }

    fn arg(mut self, a: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.arg(a);
        self
    }

    #[track_caller]
    fn send(mut self) -> Reply {
        if let Some(token) = &self.token {
            self.cmd
                .args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        let out = run(
            self.cmd,
            self.stdin.as_deref().map(str::as_bytes),
            COMMAND_TIMEOUT,
        );
        assert!(out.status.success(), "curl failed: {out:?}");
        let (rest, code) = out.stdout.rsplit_once('\n').expect("status code line");
        // Headers end at the first blank line (curl prints no interim
        // responses here: no `Expect: 100-continue` for small bodies).
        let (headers, body) = rest
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no header block in {rest:?}"));
        Reply {
            code: code.trim().parse().expect("numeric status code"),
            headers: headers.to_owned(),
            body: body.to_owned(),
        }
    }
}

/// A namespace of the test's own, created over HTTP.
fn namespace(name: &str) -> String {
    let r = request("POST", "/api/v1/namespaces")
        .json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
        .send();
    assert_eq!(r.code, 201, "{r:?}");
    name.to_owned()
}

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [{"name": "app", "image": "hello:v1"}]},
    })
}

fn configmap(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
           "data": {"k": "v"}})
}

#[test]
fn a_pod_posted_as_json_with_a_bearer_token_is_created_and_read_back() {
    let ns = namespace("curl-pod");
    let r = request("POST", &format!("/api/v1/namespaces/{ns}/pods"))
        .json(&pod("hello"))
        .send();
    assert_eq!(r.code, 201, "{r:?}");
    let created = r.json();
    assert_eq!(created["metadata"]["name"], "hello");
    assert_eq!(created["metadata"]["namespace"], ns);
    assert!(created["metadata"]["uid"].is_string(), "{created}");
    assert!(
        created["metadata"]["creationTimestamp"].is_string(),
        "{created}"
    );
    assert!(
        created["metadata"]["resourceVersion"].is_string(),
        "{created}"
    );
    assert_eq!(created["status"]["phase"], "Pending");
    // Defaulted as Kubernetes does.
    assert_eq!(created["spec"]["restartPolicy"], "Always");
    assert_eq!(
        created["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );

    let r = request("GET", &format!("/api/v1/namespaces/{ns}/pods/hello")).send();
    assert_eq!(r.code, 200, "{r:?}");
    assert_eq!(r.json()["metadata"]["uid"], created["metadata"]["uid"]);

    let r = request(
        "GET",
        &format!("/api/v1/namespaces/{ns}/pods?labelSelector=app%3Dhello"),
    )
    .send();
    assert_eq!(r.code, 200, "{r:?}");
    let list = r.json();
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");

    // The same name twice is a conflict of its own kind.
    let r = request("POST", &format!("/api/v1/namespaces/{ns}/pods"))
        .json(&pod("hello"))
        .send();
    let s = r.status(409, "AlreadyExists");
    assert_eq!(s["message"], "pods \"hello\" already exists");
}

#[test]
fn version_and_health_answer_anyone_but_nothing_else_does() {
    let r = request("GET", "/version").anonymous().send();
    assert_eq!(r.code, 200, "{r:?}");
    let v = r.json();
    assert_eq!(v["major"], "1");
    assert_eq!(v["minor"], "33");
    for path in ["/healthz", "/livez", "/readyz"] {
        let r = request("GET", path).anonymous().send();
        assert_eq!((r.code, r.body.as_str()), (200, "ok"), "{path}");
    }

    let r = request("GET", "/api/v1/namespaces/default/pods")
        .anonymous()
        .send();
    r.status(401, "Unauthorized");
    let r = request("GET", "/api").anonymous().send();
    r.status(401, "Unauthorized");
    let r = request("GET", "/api/v1/namespaces/default/pods")
        .token("not.a.jwt")
        .send();
    r.status(401, "Unauthorized");
    // A well-formed token signed by another key.
    let other = tempfile::tempdir().unwrap();
    let forged = wkube::api::authn::TokenAuthority::load_or_create(other.path())
        .unwrap()
        .issue_user(
            "curl-admin",
            &["system:masters".into()],
            std::time::Duration::from_secs(600),
        )
        .unwrap();
    let r = request("GET", "/api/v1/namespaces/default/pods")
        .token(&forged)
        .send();
    r.status(401, "Unauthorized");
}

#[test]
fn a_user_without_a_binding_is_forbidden_with_kubernetes_message() {
    let token = server()
        .wkube(&["token", "create", "--user", "carol"])
        .success();
    let r = request("POST", "/api/v1/namespaces/default/pods")
        .token(token.trim())
        .json(&pod("nope"))
        .send();
    let s = r.status(403, "Forbidden");
    assert_eq!(
        s["message"],
        "pods is forbidden: User \"carol\" cannot create resource \"pods\" in API group \"\" in the namespace \"default\""
    );
    assert_eq!(s["details"]["kind"], "pods");
}

#[test]
fn malformed_json_is_a_400_status() {
    let ns = namespace("curl-malformed");
    let r = request("POST", &format!("/api/v1/namespaces/{ns}/configmaps"))
        .body_text(r#"{"apiVersion":"v1","kind":"ConfigMap","#)
        .send();
    let s = r.status(400, "BadRequest");
    assert!(s["message"].as_str().unwrap().contains("json"), "{s}");

    // Valid JSON of the wrong shape: a string where an object belongs.
    let r = request("POST", &format!("/api/v1/namespaces/{ns}/configmaps"))
        .json(&json!({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": "x"}, "data": "not-a-map"}))
        .send();
    assert_eq!(r.code, 400, "{r:?}");
    let s = r.json();
    assert_eq!(s["kind"], "Status", "{s}");
}

#[test]
fn an_unknown_field_under_strict_validation_is_a_400_naming_it() {
    let ns = namespace("curl-strict");
    let mut body = pod("strict");
    body["spec"]["bogus"] = json!(1);
    let r = request(
        "POST",
        &format!("/api/v1/namespaces/{ns}/pods?fieldValidation=Strict"),
    )
    .json(&body)
    .send();
    let s = r.status(400, "BadRequest");
    assert_eq!(
        s["message"],
        "strict decoding error: unknown field \"spec.bogus\""
    );

    // The default (Warn) stores the object without it and says so.
    let r = request("POST", &format!("/api/v1/namespaces/{ns}/pods"))
        .json(&body)
        .send();
    assert_eq!(r.code, 201, "{r:?}");
    assert!(
        r.headers
            .to_ascii_lowercase()
            .contains("warning: 299 - \"unknown field \\\"spec.bogus\\\"\""),
        "{}",
        r.headers
    );
    assert!(r.json()["spec"].get("bogus").is_none());
}

#[test]
fn an_invalid_name_is_a_422_naming_metadata_name() {
    let ns = namespace("curl-names");
    let r = request("POST", &format!("/api/v1/namespaces/{ns}/configmaps"))
        .json(&configmap("Not_A_Name"))
        .send();
    let s = r.status(422, "Invalid");
    assert!(
        s["message"].as_str().unwrap().starts_with(
            "ConfigMap \"Not_A_Name\" is invalid: metadata.name: Invalid value: \"Not_A_Name\""
        ),
        "{s}"
    );
    assert_eq!(s["details"]["causes"][0]["field"], "metadata.name");
    assert_eq!(s["details"]["causes"][0]["reason"], "FieldValueInvalid");
}

#[test]
fn an_invalid_label_is_a_422_naming_metadata_labels() {
    let ns = namespace("curl-labels");
    let mut cm = configmap("labelled");
    cm["metadata"]["labels"] = json!({"bad key!": "x"});
    let r = request("POST", &format!("/api/v1/namespaces/{ns}/configmaps"))
        .json(&cm)
        .send();
    let s = r.status(422, "Invalid");
    assert_eq!(s["details"]["causes"][0]["field"], "metadata.labels", "{s}");
}

#[test]
fn an_invalid_quantity_is_refused_naming_the_resource() {
    let ns = namespace("curl-quantity");
    let mut p = pod("greedy");
    p["spec"]["containers"][0]["resources"] = json!({"limits": {"cpu": "lots"}});
    let r = request("POST", &format!("/api/v1/namespaces/{ns}/pods"))
        .json(&p)
        .send();
    assert!(
        r.code == 400 || r.code == 422,
        "an invalid quantity was accepted: {r:?}"
    );
    let s = r.json();
    assert_eq!(s["kind"], "Status", "{s}");
    let message = s["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("cpu") || message.contains("quantities"),
        "{s}"
    );
}

#[test]
fn a_body_over_the_limit_is_a_413_on_http1_and_http2() {
    let ns = namespace("curl-big");
    // Just over the limit on HTTP/1.1, where a client that is still
    // sending when the server answers and closes sees a broken pipe; far
    // over it (and over the flow-control window) on HTTP/2, where the
    // server may answer early and reset the stream with NO_ERROR.
    for (version, size) in [("--http1.1", BODY_LIMIT + 1), ("--http2", 4 << 20)] {
        let mut cm = configmap("big");
        cm["data"]["k"] = json!("x".repeat(size));
        let r = request("POST", &format!("/api/v1/namespaces/{ns}/configmaps"))
            .arg(version)
            .json(&cm)
            .send();
        let s = r.status(413, "RequestEntityTooLarge");
        assert_eq!(
            s["message"],
            format!("the request is too large: limit is {BODY_LIMIT} bytes"),
            "{version}"
        );
    }
    let r = request("GET", &format!("/api/v1/namespaces/{ns}/configmaps/big")).send();
    r.status(404, "NotFound");
}

#[test]
fn a_label_selector_that_does_not_parse_is_a_400() {
    let r = request(
        "GET",
        "/api/v1/namespaces/default/configmaps?labelSelector=app%20in%20(x",
    )
    .send();
    let s = r.status(400, "BadRequest");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("unable to parse requirement"),
        "{s}"
    );
    let r = request(
        "GET",
        "/api/v1/namespaces/default/pods?fieldSelector=spec.bogus%3Dx",
    )
    .send();
    let s = r.status(400, "BadRequest");
    assert!(
        s["message"].as_str().unwrap().contains("spec.bogus"),
        "the message names the field: {s}"
    );
    // `==` then `=b`: Kubernetes' lexer stops at a token it knows.
    let r = request(
        "GET",
        "/api/v1/namespaces/default/configmaps?labelSelector=a%3D%3D%3Db",
    )
    .send();
    r.status(400, "BadRequest");
}

#[test]
fn a_put_with_a_stale_resource_version_is_a_409_conflict() {
    let ns = namespace("curl-conflict");
    let path = format!("/api/v1/namespaces/{ns}/configmaps/cm");
    let r = request("POST", &format!("/api/v1/namespaces/{ns}/configmaps"))
        .json(&configmap("cm"))
        .send();
    assert_eq!(r.code, 201, "{r:?}");
    let first = r.json();

    let mut update = first.clone();
    update["data"]["k"] = json!("second");
    let r = request("PUT", &path).json(&update).send();
    assert_eq!(r.code, 200, "{r:?}");
    let second = r.json();
    assert_ne!(
        second["metadata"]["resourceVersion"],
        first["metadata"]["resourceVersion"]
    );

    // The same update again still carries the first resourceVersion.
    update["data"]["k"] = json!("lost");
    let r = request("PUT", &path).json(&update).send();
    let s = r.status(409, "Conflict");
    assert_eq!(
        s["message"],
        "Operation cannot be fulfilled on configmaps \"cm\": the object has been modified; please apply your changes to the latest version and try again"
    );
    let r = request("GET", &path).send();
    assert_eq!(r.json()["data"]["k"], "second");
}

#[test]
fn a_watch_streams_events_and_honours_a_table_request() {
    let ns = namespace("curl-watch");
    let r = request("POST", &format!("/api/v1/namespaces/{ns}/configmaps"))
        .json(&configmap("seen"))
        .send();
    assert_eq!(r.code, 201, "{r:?}");

    let path =
        format!("/api/v1/namespaces/{ns}/configmaps?watch=true&resourceVersion=0&timeoutSeconds=1");
    let r = request("GET", &path).send();
    assert_eq!(r.code, 200, "{r:?}");
    let events: Vec<Value> = r
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["kind"], "ConfigMap");
    assert_eq!(events[0]["object"]["metadata"]["name"], "seen");

    // kubectl get -w asks for Tables, and prints their rows.
    let r = request("GET", &path)
        .header("Accept: application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
        .send();
    assert_eq!(r.code, 200, "{r:?}");
    let event: Value = serde_json::from_str(r.body.lines().next().unwrap()).unwrap();
    assert_eq!(event["type"], "ADDED");
    let table = &event["object"];
    assert_eq!(table["kind"], "Table", "{table}");
    assert_eq!(table["rows"][0]["cells"][0], "seen", "{table}");
    assert_eq!(
        table["rows"][0]["object"]["metadata"]["name"], "seen",
        "{table}"
    );
}

#[test]
fn metadata_only_clients_get_partial_object_metadata_for_get_list_and_watch() {
    let ns = namespace("curl-metadata");
    let r = request("POST", &format!("/api/v1/namespaces/{ns}/configmaps"))
        .json(&configmap("meta"))
        .send();
    assert_eq!(r.code, 201, "{r:?}");
    let base = format!("/api/v1/namespaces/{ns}/configmaps");
    let accept = |as_: &str| format!("Accept: application/json;as={as_};v=v1;g=meta.k8s.io");

    let one = request("GET", &format!("{base}/meta"))
        .header(&accept("PartialObjectMetadata"))
        .send();
    assert_eq!(one.code, 200, "{one:?}");
    let one = one.json();
    assert_eq!(one["kind"], "PartialObjectMetadata", "{one}");
    assert_eq!(one["apiVersion"], "meta.k8s.io/v1", "{one}");
    assert_eq!(one["metadata"]["name"], "meta", "{one}");
    assert!(one.get("data").is_none(), "{one}");

    let list = request("GET", &base)
        .header(&accept("PartialObjectMetadataList"))
        .send()
        .json();
    assert_eq!(list["kind"], "PartialObjectMetadataList", "{list}");
    assert_eq!(list["apiVersion"], "meta.k8s.io/v1", "{list}");
    assert!(list["metadata"]["resourceVersion"].is_string(), "{list}");
    assert_eq!(list["items"][0]["kind"], "PartialObjectMetadata", "{list}");
    assert_eq!(list["items"][0]["metadata"]["name"], "meta", "{list}");
    assert!(list["items"][0].get("data").is_none(), "{list}");

    let r = request(
        "GET",
        &format!("{base}?watch=true&resourceVersion=0&timeoutSeconds=1"),
    )
    .header(&accept("PartialObjectMetadata"))
    .send();
    let event: Value = serde_json::from_str(r.body.lines().next().unwrap()).unwrap();
    assert_eq!(event["type"], "ADDED");
    assert_eq!(event["object"]["kind"], "PartialObjectMetadata", "{event}");
    assert_eq!(event["object"]["metadata"]["name"], "meta", "{event}");
    assert!(event["object"].get("data").is_none(), "{event}");
}

#[test]
fn creating_in_a_missing_or_terminating_namespace_is_refused() {
    let r = request("POST", "/api/v1/namespaces/no-such-ns/configmaps")
        .json(&configmap("c"))
        .send();
    let s = r.status(404, "NotFound");
    assert_eq!(s["message"], "namespaces \"no-such-ns\" not found");

    // A finalizer of the test's own holds the namespace in Terminating.
    let r = request("POST", "/api/v1/namespaces")
        .json(&json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "ending", "finalizers": ["example.com/hold"]}}))
        .send();
    assert_eq!(r.code, 201, "{r:?}");
    let r = request("DELETE", "/api/v1/namespaces/ending").send();
    assert_eq!(r.code, 200, "{r:?}");
    let r = request("POST", "/api/v1/namespaces/ending/configmaps")
        .json(&configmap("c"))
        .send();
    let s = r.status(403, "Forbidden");
    assert_eq!(
        s["message"],
        "configmaps \"c\" is forbidden: unable to create new content in namespace ending because it is being terminated"
    );
}

#[test]
fn a_binding_assigns_its_own_pod_once() {
    let ns = namespace("binding");
    // Another scheduler's pod: wkube's own leaves it to this test.
    let mut p = pod("web");
    p["spec"]["schedulerName"] = json!("test-scheduler");
    let r = request("POST", &format!("/api/v1/namespaces/{ns}/pods"))
        .json(&p)
        .send();
    assert_eq!(r.code, 201, "{r:?}");
    let uid = r.json()["metadata"]["uid"].as_str().unwrap().to_string();
    let binding = |uid: &str| {
        json!({"apiVersion": "v1", "kind": "Binding",
               "metadata": {"name": "web", "uid": uid},
               "target": {"apiVersion": "v1", "kind": "Node", "name": "n1"}})
    };
    let path = format!("/api/v1/namespaces/{ns}/pods/web/binding");

    // A binding decided for another pod of the same name.
    let s = request("POST", &path)
        .json(&binding("not-this-pod"))
        .send()
        .status(409, "Conflict");
    assert_eq!(
        s["message"],
        format!(
            "Operation cannot be fulfilled on pods \"web\": Precondition failed: UID in precondition: not-this-pod, UID in object meta: {uid}"
        )
    );

    let r = request("POST", &path).json(&binding(&uid)).send();
    assert_eq!(r.code, 201, "{r:?}");
    assert_eq!(r.json()["status"], "Success");
    let got = request("GET", &format!("/api/v1/namespaces/{ns}/pods/web"))
        .send()
        .json();
    assert_eq!(got["spec"]["nodeName"], "n1");
    let scheduled: Vec<&Value> = got["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["type"] == "PodScheduled")
        .collect();
    assert_eq!(scheduled.len(), 1, "{got}");
    assert_eq!(scheduled[0]["status"], "True");

    let s = request("POST", &path)
        .json(&binding(&uid))
        .send()
        .status(409, "Conflict");
    assert_eq!(
        s["message"],
        "Operation cannot be fulfilled on pods/binding \"web\": pod web is already assigned to node \"n1\""
    );
}

#[test]
fn a_delete_whose_uid_precondition_names_another_object_is_a_409() {
    let ns = namespace("precondition");
    let r = request("POST", &format!("/api/v1/namespaces/{ns}/configmaps"))
        .json(&configmap("c"))
        .send();
    assert_eq!(r.code, 201, "{r:?}");
    let uid = r.json()["metadata"]["uid"].as_str().unwrap().to_string();
    let path = format!("/api/v1/namespaces/{ns}/configmaps/c");
    let s = request("DELETE", &path)
        .json(&json!({"kind": "DeleteOptions", "apiVersion": "v1",
                      "preconditions": {"uid": "another"}}))
        .send()
        .status(409, "Conflict");
    assert_eq!(
        s["message"],
        format!(
            "Operation cannot be fulfilled on configmaps \"c\": Precondition failed: UID in precondition: another, UID in object meta: {uid}"
        )
    );
    let r = request("DELETE", &path)
        .json(&json!({"kind": "DeleteOptions", "apiVersion": "v1",
                      "preconditions": {"uid": uid}}))
        .send();
    assert_eq!(r.code, 200, "{r:?}");
}

#[test]
fn json_patch_copies_that_would_exhaust_memory_are_refused_and_the_server_keeps_serving() {
    let ns = namespace("patch-bomb");
    let mut cm = configmap("bomb");
    cm["data"] = json!({"k": "x".repeat(1024)});
    request("POST", &format!("/api/v1/namespaces/{ns}/configmaps"))
        .json(&cm)
        .send();
    // Each copy doubles /data: 17 of them in 900 bytes would be 128 MiB.
    let ops: Vec<Value> = (0..17)
        .map(|i| json!({"op": "copy", "from": "/data", "path": format!("/data/c{i}")}))
        .collect();
    let r = request("PATCH", &format!("/api/v1/namespaces/{ns}/configmaps/bomb"))
        .header("Content-Type: application/json-patch+json")
        .arg("--data-binary")
        .arg(Value::Array(ops).to_string())
        .send();
    let s = r.status(422, "Invalid");
    assert!(s["message"].as_str().unwrap().contains("copy"), "{s}");
    let r = request("GET", "/version").send();
    assert_eq!(r.code, 200, "{r:?}");
}

#[test]
fn a_patch_whose_result_is_not_an_object_is_a_400_not_a_dropped_connection() {
    let ns = namespace("patch-shape");
    request("POST", &format!("/api/v1/namespaces/{ns}/configmaps"))
        .json(&configmap("shape"))
        .send();
    let path = format!("/api/v1/namespaces/{ns}/configmaps/shape");
    for (ct, body) in [
        (
            "application/json-patch+json",
            r#"[{"op":"replace","path":"","value":[]}]"#,
        ),
        ("application/merge-patch+json", r#""str""#),
        ("application/merge-patch+json", r#"{"metadata":"x"}"#),
        (
            "application/json-patch+json",
            r#"[{"op":"replace","path":"/metadata","value":7}]"#,
        ),
    ] {
        let r = request("PATCH", &path)
            .header(&format!("Content-Type: {ct}"))
            .arg("--data-binary")
            .arg(body)
            .send();
        assert_eq!(r.code, 400, "{ct} {body}: {r:?}");
    }
    assert_eq!(request("GET", &path).send().code, 200);
}

#[test]
fn deeply_nested_yaml_is_a_400_at_once() {
    let ns = namespace("yaml-depth");
    let levels = 30_000; // 60 KB, under this server's 64 KiB body limit
    let body = format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
    let started = std::time::Instant::now();
    let r = request("POST", &format!("/api/v1/namespaces/{ns}/configmaps"))
        .header("Content-Type: application/yaml")
        .arg("--data-binary")
        .arg(&body)
        .send();
    r.status(400, "BadRequest");
    // Not a timing assertion on the feature, only a guard against the
    // quadratic parse coming back: it took seconds at this depth.
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
}

#[test]
fn a_key_given_twice_is_refused_under_strict_validation_and_warned_otherwise() {
    let ns = namespace("dup-keys");
    let body = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"dup"},"data":{"a":"1","a":"2"}}"#;
    let path = format!("/api/v1/namespaces/{ns}/configmaps");
    let r = request("POST", &format!("{path}?fieldValidation=Strict"))
        .body_text(body)
        .send();
    let s = r.status(400, "BadRequest");
    assert_eq!(
        s["message"], "strict decoding error: duplicate field \"data.a\"",
        "{s}"
    );
    let r = request("POST", &format!("{path}?fieldValidation=Warn"))
        .body_text(body)
        .send();
    assert_eq!(r.code, 201, "{r:?}");
    assert!(
        r.headers.contains(r#"duplicate field \"data.a\""#),
        "{}",
        r.headers
    );
}

/// One API path to try, with the verb to try it with.
#[derive(Clone, Debug)]
struct Probe {
    method: &'static str,
    path: String,
    /// The discovery name (`pods`, `pods/log`) and its group version.
    what: String,
}

/// Every resource and subresource discovery lists, as a request each:
/// collections with GET (or POST when they cannot be listed), subresources
/// with the first of GET, POST, PUT they support. Built from discovery so
/// that no resource added later escapes the matrix.
fn probes_from_discovery(ns: &str) -> Vec<Probe> {
    let mut versions = vec![("/api/v1".to_string(), "v1".to_string())];
    let groups = request("GET", "/apis").send().json();
    // Every version, not only the preferred one: a version served as a
    // view of another (autoscaling/v1) must be guarded as well.
    for g in groups["groups"].as_array().unwrap() {
        for v in g["versions"].as_array().unwrap() {
            let gv = v["groupVersion"].as_str().unwrap();
            versions.push((format!("/apis/{gv}"), gv.to_string()));
        }
    }
    let mut probes = Vec::new();
    for (base, gv) in versions {
        let list = request("GET", &base).send().json();
        for r in list["resources"].as_array().unwrap() {
            let name = r["name"].as_str().unwrap();
            let verbs: Vec<&str> = r["verbs"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let prefix = if r["namespaced"] == true {
                format!("{base}/namespaces/{ns}")
            } else {
                base.clone()
            };
            let (method, path) = match name.split_once('/') {
                None if verbs.contains(&"list") => ("GET", format!("{prefix}/{name}")),
                None if verbs.contains(&"create") => ("POST", format!("{prefix}/{name}")),
                None => continue,
                Some((res, sub)) => {
                    let method = ["get", "create", "update"]
                        .iter()
                        .zip(["GET", "POST", "PUT"])
                        .find(|(v, _)| verbs.contains(v))
                        .map(|(_, m)| m)
                        .unwrap_or("GET");
                    (method, format!("{prefix}/{res}/x/{sub}"))
                }
            };
            probes.push(Probe {
                method,
                path,
                what: format!("{gv} {name}"),
            });
        }
    }
    probes
}

fn send_probe(p: &Probe, token: Option<&str>) -> u16 {
    // Over HTTP/2 (curl's default here): a refusal must arrive as an
    // answer, not as a stream reset in the middle of the upload.
    let mut r = request(p.method, &p.path);
    r = match token {
        Some(t) => r.token(t),
        None => r.anonymous(),
    };
    if p.method != "GET" {
        r = r.json(&json!({}));
    }
    r.send().code
}

/// A JWT with `alg: none` and the admin token's claims.
fn unsigned_token(signed: &str) -> String {
    use base64::Engine;
    let claims = signed.split('.').nth(1).unwrap();
    let header =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    format!("{header}.{claims}.")
}

#[test]
fn every_resource_in_discovery_answers_401_403_or_allows_as_the_caller_deserves() {
    let s = server();
    let ns = namespace("authz-matrix");
    let probes = probes_from_discovery(&ns);
    assert!(probes.len() >= 30, "{probes:?}");
    for must in [
        "pods/log",
        "pods/proxy",
        "pods/binding",
        "serviceaccounts/token",
        "deployments/scale",
        "pods/status",
        "modules",
        "serviceactivations",
        "horizontalpodautoscalers/status",
        "pods/requests_per_second",
    ] {
        assert!(
            probes.iter().any(|p| p.what.ends_with(must)),
            "{must} not in discovery"
        );
    }

    // Credentials that must be refused outright.
    let admin = admin_token().to_string();
    let mut bad_signature = admin.clone();
    let last = bad_signature.pop().unwrap();
    bad_signature.push(if last == 'A' { 'B' } else { 'A' });
    // Expired an hour ago (beyond any leeway), signed with the cluster's
    // own key: only the expiry is wrong.
    let expired = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims: Value =
            serde_json::from_slice(&b64.decode(admin.split('.').nth(1).unwrap()).unwrap()).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        claims["iat"] = json!(now - 7200);
        claims["nbf"] = json!(now - 7200);
        claims["exp"] = json!(now - 3600);
        let key = std::fs::read(s.pki("sa.key")).unwrap();
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
            &claims,
            &jsonwebtoken::EncodingKey::from_ec_pem(&key).unwrap(),
        )
        .unwrap()
    };
    let sa_token = |audiences: Value| {
        let r = request(
            "POST",
            &format!("/api/v1/namespaces/{ns}/serviceaccounts/robot/token"),
        )
        .json(
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": audiences}}),
        )
        .send();
        assert_eq!(r.code, 201, "{r:?}");
        r.json()["status"]["token"].as_str().unwrap().to_string()
    };
    assert_eq!(
        request("POST", &format!("/api/v1/namespaces/{ns}/serviceaccounts"))
            .json(&json!({"metadata": {"name": "robot"}}))
            .send()
            .code,
        201
    );
    let wrong_audience = sa_token(json!(["https://elsewhere.example"]));
    let robot = sa_token(Value::Null);
    // The robot's own token works until the account is deleted.
    let whoami = request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews")
        .token(&robot)
        .json(&json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}))
        .send();
    assert_eq!(whoami.code, 201, "{whoami:?}");
    assert_eq!(
        request(
            "DELETE",
            &format!("/api/v1/namespaces/{ns}/serviceaccounts/robot")
        )
        .send()
        .code,
        200
    );
    let refused: Vec<(&str, Option<String>)> = vec![
        ("no credential", None),
        ("a bad signature", Some(bad_signature)),
        ("an expired token", Some(expired)),
        ("alg: none", Some(unsigned_token(&admin))),
        ("a wrong audience", Some(wrong_audience)),
        ("a deleted service account's token", Some(robot)),
    ];

    // A user with no rights, and one who may get and list everything.
    let nobody = s
        .wkube(&["token", "create", "--user", "matrix-nobody"])
        .success()
        .trim()
        .to_string();
    let reader = s
        .wkube(&["token", "create", "--user", "matrix-reader"])
        .success()
        .trim()
        .to_string();
    assert_eq!(
        request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles")
            .json(&json!({"metadata": {"name": "matrix-reader"},
                "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list"]}]}))
            .send()
            .code,
        201
    );
    assert_eq!(
        request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings")
            .json(&json!({"metadata": {"name": "matrix-reader"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "matrix-reader"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "matrix-reader"}]}))
            .send()
            .code,
        201
    );
    // What every authenticated user may do in Kubernetes (system:basic-user).
    let self_reviews = [
        "selfsubjectaccessreviews",
        "selfsubjectrulesreviews",
        "selfsubjectreviews",
    ];

    let mut wrong = Vec::new();
    for p in &probes {
        for (who, token) in &refused {
            let code = send_probe(p, token.as_deref());
            if code != 401 {
                wrong.push(format!(
                    "{} {} ({}) with {who}: {code}, want 401",
                    p.method, p.path, p.what
                ));
            }
        }
        let everyone_may = self_reviews.iter().any(|r| p.what.ends_with(r));
        let code = send_probe(p, Some(&nobody));
        if (code == 403) == everyone_may {
            wrong.push(format!(
                "{} {} ({}) as a user without rights: {code}",
                p.method, p.path, p.what
            ));
        }
        let code = send_probe(p, Some(&reader));
        // Connecting to a pod (exec, attach, port-forward) takes `create`
        // even over GET, as in Kubernetes.
        let connects = ["pods/exec", "pods/attach", "pods/portforward"]
            .iter()
            .any(|r| p.what.ends_with(r));
        let may = (p.method == "GET" && !connects) || everyone_may;
        if (code == 403) == may || code == 401 {
            wrong.push(format!(
                "{} {} ({}) as a reader: {code}",
                p.method, p.path, p.what
            ));
        }
        let code = send_probe(p, Some(&admin));
        if code == 401 || code == 403 {
            wrong.push(format!(
                "{} {} ({}) as the admin: {code}",
                p.method, p.path, p.what
            ));
        }
    }

    // Paths outside the resources: discovery and OpenAPI for every
    // authenticated user, health for anyone, metrics for those allowed.
    for (path, anyone, authenticated) in [
        ("/version", true, true),
        ("/healthz", true, true),
        ("/readyz", true, true),
        ("/api", false, true),
        ("/apis", false, true),
        ("/openapi/v2", false, true),
        ("/openapi/v3", false, true),
        ("/metrics", false, false),
    ] {
        let p = Probe {
            method: "GET",
            path: path.into(),
            what: path.into(),
        };
        let none = send_probe(&p, None);
        if (none == 200) != anyone || (!anyone && none != 401) {
            wrong.push(format!("GET {path} with no credential: {none}"));
        }
        let code = send_probe(&p, Some(&nobody));
        if (code == 200) != authenticated || (!authenticated && code != 403) {
            wrong.push(format!("GET {path} as a user without rights: {code}"));
        }
        if send_probe(&p, Some(&admin)) != 200 {
            wrong.push(format!("GET {path} as the admin"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// curl against `s` as `token`: the status code and the headers.
fn curl_as(s: &TestServer, token: &str, method: &str, path: &str) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "--silent",
        "--max-time",
        "20",
        "--dump-header",
        "-",
        "-o",
        "/dev/null",
    ])
    .arg("--cacert")
    .arg(s.pki("ca.crt"))
    .args([
        "-X",
        method,
        "-H",
        &format!("Authorization: Bearer {token}"),
    ])
    .args(["--write-out", "\n%{http_code}"])
    .arg(format!("{}{path}", s.api_url));
    let out = run(cmd, None, COMMAND_TIMEOUT);
    let (headers, code) = out.stdout.trim_end().rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), headers.to_string())
}

/// A request that holds its seat for seconds: a body uploaded slowly.
fn slow_upload(s: &TestServer, token: &str) -> std::process::Child {
    let body = json!({"metadata": {"name": "slow"}, "data": {"k": "x".repeat(60_000)}});
    let file = s.scratch().join(format!("slow-{}.json", rand_suffix()));
    std::fs::write(&file, body.to_string()).unwrap();
    Command::new("curl")
        .args([
            "--silent",
            "--max-time",
            "30",
            "--limit-rate",
            "6K",
            "-o",
            "/dev/null",
        ])
        .arg("--cacert")
        .arg(s.pki("ca.crt"))
        .args([
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {token}"),
        ])
        .args(["-H", "Content-Type: application/json", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg(format!(
            "{}/api/v1/namespaces/default/configmaps",
            s.api_url
        ))
        .spawn()
        .unwrap()
}

/// An open watch, until killed.
fn open_watch(s: &TestServer, token: &str) -> std::process::Child {
    Command::new("curl")
        .args(["--silent", "--max-time", "30", "-o", "/dev/null"])
        .arg("--cacert")
        .arg(s.pki("ca.crt"))
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(format!(
            "{}/api/v1/namespaces/default/configmaps?watch=true",
            s.api_url
        ))
        .spawn()
        .unwrap()
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[test]
fn a_user_past_its_seats_gets_429_while_everyone_else_is_served() {
    let s = TestServer::builder()
        .arg("--max-requests-inflight-per-user=2")
        .arg("--max-long-running-per-user=2")
        .start();
    let token = |user: &str| {
        s.wkube(&["token", "create", "--user", user])
            .success()
            .trim()
            .to_string()
    };
    let (flood, calm) = (token("flood"), token("calm"));
    // Both of flood's request seats held by slow uploads.
    // flood may read (so its watches stay open); calm may do nothing.
    s.kubectl().ok(&[
        "create",
        "rolebinding",
        "flood-view",
        "--clusterrole=view",
        "--user=flood",
    ]);
    let mut slow = [slow_upload(&s, &flood), slow_upload(&s, &flood)];
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (code, headers) = curl_as(&s, &flood, "GET", "/api/v1/namespaces/default/configmaps");
    assert_eq!(code, 429, "{headers}");
    assert!(
        headers.to_ascii_lowercase().contains("retry-after: 1"),
        "{headers}"
    );
    // Another user is served (and answered by RBAC, not by the limit); the
    // admin too.
    let (code, _) = curl_as(&s, &calm, "GET", "/api/v1/namespaces/default/configmaps");
    assert_eq!(code, 403);
    s.kubectl().ok(&["get", "namespaces"]);

    // Long-running seats are counted apart: two watches, then 429.
    let mut watches = [open_watch(&s, &flood), open_watch(&s, &flood)];
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let (code, _) = curl_as(
        &s,
        &flood,
        "GET",
        "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=1",
    );
    assert_eq!(code, 429);
    let (code, _) = curl_as(
        &s,
        &calm,
        "GET",
        "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=1",
    );
    assert_eq!(code, 403);

    // Seats come back when the requests end.
    for c in slow.iter_mut().chain(watches.iter_mut()) {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert!(
        common::eventually(std::time::Duration::from_secs(5), || {
            curl_as(&s, &flood, "GET", "/api/v1/namespaces/default/configmaps").0 == 200
        }),
        "flood's seats never came back"
    );
}

#[test]
fn concurrent_scale_patches_all_land_and_a_stale_scale_put_is_a_409() {
    let ns = namespace("curl-scale-race");
    let deploy = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "app", "image": "hello:v1"}]}}},
    });
    let r = request(
        "POST",
        &format!("/apis/apps/v1/namespaces/{ns}/deployments"),
    )
    .json(&deploy)
    .send();
    assert_eq!(r.code, 201, "{r:?}");
    let scale = format!("/apis/apps/v1/namespaces/{ns}/deployments/web/scale");

    // Patches carry no resourceVersion, so each must land however the
    // writes interleave (with each other and with the controllers' own).
    let threads: Vec<_> = (0..12)
        .map(|i| {
            let scale = scale.clone();
            std::thread::spawn(move || {
                request("PATCH", &scale)
                    .header("Content-Type: application/merge-patch+json")
                    .arg("--data-binary")
                    .arg(format!("{{\"spec\":{{\"replicas\":{}}}}}", i % 3))
                    .send()
            })
        })
        .collect();
    for t in threads {
        let r = t.join().expect("patch thread");
        assert_eq!(r.code, 200, "{r:?}");
        assert_eq!(r.json()["kind"], "Scale", "{r:?}");
    }

    // A Scale that names an old resourceVersion is the caller's conflict.
    // (The controllers write the Deployment's status meanwhile, so a fresh
    // read may itself go stale before the PUT: read again until one lands.)
    let mut stale = Value::Null;
    for _ in 0..50 {
        stale = request("GET", &scale).send().json();
        stale["spec"]["replicas"] = json!(5);
        let r = request("PUT", &scale).json(&stale).send();
        if r.code == 200 {
            break;
        }
        r.status(409, "Conflict");
        stale = Value::Null;
    }
    assert!(
        !stale.is_null(),
        "no PUT of a fresh Scale landed in 50 tries"
    );
    stale["spec"]["replicas"] = json!(6);
    let r = request("PUT", &scale).json(&stale).send();
    r.status(409, "Conflict");
    let after = request("GET", &scale).send().json();
    assert_eq!(after["spec"]["replicas"], 5, "{after}");
}

#[test]
fn the_dashboard_is_served_gzipped_to_browsers_and_inflated_to_others() {
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web/dist/app.js"),
    )
    .unwrap();
    let header = |r: &Reply, name: &str| {
        r.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    // curl --compressed asks for gzip and inflates what comes back.
    let gz = request("GET", "/ui/app.js")
        .anonymous()
        .arg("--compressed")
        .send();
    assert_eq!(gz.code, 200, "{:?}", gz.headers);
    assert_eq!(header(&gz, "content-encoding").as_deref(), Some("gzip"));
    assert_eq!(header(&gz, "vary").as_deref(), Some("Accept-Encoding"));
    assert!(
        gz.body == source,
        "the gzipped app.js inflates to web/dist/app.js"
    );
    // Without Accept-Encoding: the file as it is.
    let plain = request("GET", "/ui/app.js").anonymous().send();
    assert_eq!(plain.code, 200);
    assert_eq!(header(&plain, "content-encoding"), None);
    assert!(plain.body == source, "app.js as it is");
    // Each representation revalidates against its own tag.
    let gz_tag = header(&gz, "etag").expect("etag");
    let plain_tag = header(&plain, "etag").expect("etag");
    assert_ne!(gz_tag, plain_tag);
    let again = request("GET", "/ui/app.js")
        .anonymous()
        .arg("--compressed")
        .header(&format!("If-None-Match: {gz_tag}"))
        .send();
    assert_eq!(again.code, 304, "{again:?}");
    let crossed = request("GET", "/ui/app.js")
        .anonymous()
        .header(&format!("If-None-Match: {gz_tag}"))
        .send();
    assert_eq!(
        crossed.code, 200,
        "the gzip tag does not match the plain body"
    );
}
