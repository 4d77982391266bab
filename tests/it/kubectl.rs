//! Stock kubectl against `wkube server`: issue 3's acceptance, as a user
//! would check it. Every test runs kubectl with a fresh HOME (an empty
//! discovery cache) against one server per test binary, each in namespaces
//! of its own.

use crate::common;

use std::time::Duration;

use common::builders::{ConfigMapBuilder, DeploymentBuilder};
use common::{Kubectl, TestServer, shared_server};
use serde_json::{Value, json};

/// Longest a watch line may take to arrive.
const WATCH_LINE: Duration = Duration::from_secs(15);

// --- fixtures ------------------------------------------------------------

/// The eight kinds issue 3 names, as one multi-document file.
fn shop_manifest(ns: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: shop-config
  namespace: {ns}
data:
  greeting: hello
---
apiVersion: v1
kind: Secret
metadata:
  name: shop-secret
  namespace: {ns}
data:
  password: aHVudGVyMg==
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: shop-sa
  namespace: {ns}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: shop-reader
  namespace: {ns}
rules:
- apiGroups: [""]
  resources: ["pods", "configmaps"]
  verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: shop-reader
  namespace: {ns}
subjects:
- kind: ServiceAccount
  name: shop-sa
  namespace: {ns}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: shop-reader
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {ns}
  labels:
    app: web
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: hello:v1
        ports:
        - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: {ns}
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 8080
"#
    )
}

/// Creates objects from JSON the way a manifest is created without
/// server-side validation (plain JSON POSTs, no OpenAPI download), so that
/// a test's set-up does not depend on the feature another test checks.
fn create(k: &Kubectl, ns: &str, manifest: &str) {
    k.ok_with_stdin(
        &["-n", ns, "create", "--validate=false", "-f", "-"],
        manifest,
    );
}

/// A namespace of the test's own.
fn namespace(k: &Kubectl, name: &str) -> String {
    let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    k.ok_with_stdin(&["create", "--validate=false", "-f", "-"], &obj.to_string());
    name.to_owned()
}

/// `kubectl get ... -o json`, parsed.
#[track_caller]
fn get_json(k: &Kubectl, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = k.ok(&all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Whitespace-separated columns of each line.
fn rows(table: &str) -> Vec<Vec<&str>> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect()
}

/// A kubeconfig for `user` made by `wkube kubeconfig`, in a file.
fn user_kubeconfig(server: &TestServer, dir: &tempfile::TempDir, user: &str) -> std::path::PathBuf {
    let doc = server
        .wkube(&["kubeconfig", "--user", user, "--ttl", "1h"])
        .success();
    let path = dir.path().join(format!("{user}.kubeconfig"));
    std::fs::write(&path, doc).unwrap();
    path
}

// --- apply ---------------------------------------------------------------

#[test]
fn applying_a_multi_document_file_creates_all_then_reports_unchanged_then_configured() {
    let server = shared_server();
    let k = server.kubectl();
    let ns = "apply-shop";
    let expected = [
        "namespace/apply-shop",
        "configmap/shop-config",
        "secret/shop-secret",
        "serviceaccount/shop-sa",
        "role.rbac.authorization.k8s.io/shop-reader",
        "rolebinding.rbac.authorization.k8s.io/shop-reader",
        "deployment.apps/web",
        "service/web",
    ];
    let lines = |out: &str, verdicts: &[&str]| {
        for (object, verdict) in expected.iter().zip(verdicts) {
            let line = format!("{object} {verdict}");
            assert!(out.lines().any(|l| l == line), "no `{line}` in:\n{out}");
        }
    };

    let out = k.ok_with_stdin(&["apply", "-f", "-"], &shop_manifest(ns, 2));
    lines(&out, &["created"; 8]);
    for (kind, name) in [
        ("configmap", "shop-config"),
        ("secret", "shop-secret"),
        ("serviceaccount", "shop-sa"),
        ("role", "shop-reader"),
        ("rolebinding", "shop-reader"),
        ("deployment", "web"),
        ("service", "web"),
    ] {
        let obj = get_json(&k, &["-n", ns, "get", kind, name]);
        assert_eq!(obj["metadata"]["name"], name);
        assert!(
            obj["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
                .is_string(),
            "{kind}/{name} lacks the last-applied annotation: {obj}"
        );
    }
    let secret = get_json(&k, &["-n", ns, "get", "secret", "shop-secret"]);
    assert_eq!(secret["data"]["password"], "aHVudGVyMg==");

    let out = k.ok_with_stdin(&["apply", "-f", "-"], &shop_manifest(ns, 2));
    lines(&out, &["unchanged"; 8]);

    let out = k.ok_with_stdin(&["apply", "-f", "-"], &shop_manifest(ns, 3));
    let mut verdicts = ["unchanged"; 8];
    verdicts[6] = "configured";
    lines(&out, &verdicts);
    let web = get_json(&k, &["-n", ns, "get", "deployment", "web"]);
    assert_eq!(web["spec"]["replicas"], 3);
}

// --- get -----------------------------------------------------------------

#[test]
fn get_prints_the_columns_kubectl_users_know_plain_and_wide() {
    let server = shared_server();
    let k = server.kubectl();
    let ns = namespace(&k, "get-columns");
    create(&k, &ns, &DeploymentBuilder::new("web").replicas(2).json());

    let plain = k.ok(&["-n", &ns, "get", "deployments"]);
    let table = rows(&plain);
    assert_eq!(
        table[0],
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{plain}"
    );
    // No node runs pods here: none is ready or available. UP-TO-DATE is 0
    // or 2 depending on whether the deployment controller got to it yet.
    assert_eq!(table[1][..2], ["web", "0/2"], "{plain}");
    assert!(["0", "2"].contains(&table[1][2]), "{plain}");
    assert_eq!(table[1][3], "0", "{plain}");

    let wide = k.ok(&["-n", &ns, "get", "deployments", "-o", "wide"]);
    let table = rows(&wide);
    assert_eq!(
        table[0],
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ],
        "{wide}"
    );
    assert_eq!(table[1][5..], ["web", "hello:v1", "app=web"], "{wide}");

    // The `kubernetes` service of the bootstrap, with its ClusterIP.
    let svc = k.ok(&["-n", "default", "get", "services", "kubernetes"]);
    let table = rows(&svc);
    assert_eq!(
        table[0],
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ],
        "{svc}"
    );
    assert_eq!(
        table[1][..5],
        ["kubernetes", "ClusterIP", "127.96.0.1", "<none>", "443/TCP"],
        "{svc}"
    );
}

#[test]
fn get_prints_yaml_and_json_of_the_stored_object() {
    let server = shared_server();
    let k = server.kubectl();
    let ns = namespace(&k, "get-formats");
    create(&k, &ns, &DeploymentBuilder::new("web").replicas(2).json());

    let yaml = k.ok(&["-n", &ns, "get", "deployment", "web", "-o", "yaml"]);
    let from_yaml: Value = serde_yaml_ng::from_str(&yaml).unwrap();
    let from_json = get_json(&k, &["-n", &ns, "get", "deployment", "web"]);
    for obj in [&from_yaml, &from_json] {
        assert_eq!(obj["apiVersion"], "apps/v1");
        assert_eq!(obj["kind"], "Deployment");
        assert_eq!(obj["metadata"]["namespace"], ns);
        assert_eq!(obj["spec"]["replicas"], 2);
        assert!(obj["metadata"]["uid"].is_string(), "{obj}");
        assert!(obj["metadata"]["creationTimestamp"].is_string(), "{obj}");
        // Defaulted as Kubernetes does.
        assert_eq!(obj["spec"]["strategy"]["type"], "RollingUpdate", "{obj}");
    }
    assert_eq!(from_yaml["metadata"]["uid"], from_json["metadata"]["uid"]);

    let list = get_json(&k, &["-n", &ns, "get", "deployments"]);
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"][0]["metadata"]["name"], "web");
}

#[test]
fn get_across_namespaces_shows_the_namespace_column() {
    let server = shared_server();
    let k = server.kubectl();
    let a = namespace(&k, "all-ns-a");
    let b = namespace(&k, "all-ns-b");
    create(
        &k,
        &a,
        &ConfigMapBuilder::new("settings").data("x", "1").json(),
    );
    create(
        &k,
        &b,
        &ConfigMapBuilder::new("settings").data("y", "2").json(),
    );

    let out = k.ok(&["get", "configmaps", "-A"]);
    let table = rows(&out);
    assert_eq!(table[0], ["NAMESPACE", "NAME", "DATA", "AGE"], "{out}");
    for ns in [&a, &b] {
        assert!(
            table
                .iter()
                .any(|r| r.len() == 4 && r[0] == ns && r[1] == "settings" && r[2] == "1"),
            "no row for {ns}/settings in:\n{out}"
        );
    }
}

#[test]
fn get_with_a_label_selector_shows_only_matching_objects() {
    let server = shared_server();
    let k = server.kubectl();
    let ns = namespace(&k, "get-labels");
    create(
        &k,
        &ns,
        &ConfigMapBuilder::new("db").label("tier", "db").json(),
    );
    create(
        &k,
        &ns,
        &ConfigMapBuilder::new("web").label("tier", "web").json(),
    );
    create(&k, &ns, &ConfigMapBuilder::new("plain").json());

    let names = |selector: &str| -> Vec<String> {
        k.ok(&["-n", &ns, "get", "configmaps", "-l", selector, "-o", "name"])
            .lines()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(names("tier=db"), ["configmap/db"]);
    assert_eq!(names("tier!=db,tier"), ["configmap/web"]);
    assert_eq!(names("tier in (db,web)"), ["configmap/db", "configmap/web"]);
    assert_eq!(names("!tier"), ["configmap/plain"]);

    let out = k.run(&["-n", &ns, "get", "configmaps", "-l", "tier=nothing"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        out.stderr.trim(),
        format!("No resources found in {ns} namespace.")
    );
}

#[test]
fn get_sorted_by_a_field_orders_the_rows() {
    let server = shared_server();
    let k = server.kubectl();
    let ns = namespace(&k, "get-sorted");
    // Names in one order, the sort key in the other.
    for (name, rank) in [("a", "3"), ("b", "1"), ("c", "2")] {
        create(
            &k,
            &ns,
            &ConfigMapBuilder::new(name).data("rank", rank).json(),
        );
    }
    let out = k.ok(&["-n", &ns, "get", "configmaps", "--sort-by=.data.rank"]);
    let names: Vec<&str> = rows(&out).iter().skip(1).map(|r| r[0]).collect();
    assert_eq!(names, ["b", "c", "a"], "{out}");
}

#[test]
fn get_watch_prints_an_added_then_a_modified_event_in_the_list_columns() {
    let server = shared_server();
    let k = server.kubectl();
    let ns = namespace(&k, "get-watch");
    create(
        &k,
        &ns,
        &ConfigMapBuilder::new("first").data("a", "1").json(),
    );

    let mut watch = k.spawn_lines(&[
        "-n",
        &ns,
        "get",
        "configmaps",
        "--watch",
        "--output-watch-events",
    ]);
    let header = watch.next_line(WATCH_LINE);
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["EVENT", "NAME", "DATA", "AGE"]
    );
    // The list before the watch.
    let listed = watch.next_line(WATCH_LINE);
    assert_eq!(
        listed.split_whitespace().take(3).collect::<Vec<_>>(),
        ["ADDED", "first", "1"]
    );

    // kubectl watches from the list's resourceVersion: nothing is missed
    // even if this lands before its watch request does.
    create(
        &k,
        &ns,
        &ConfigMapBuilder::new("second").data("b", "2").json(),
    );
    let added = watch.next_line(WATCH_LINE);
    k.ok(&["-n", &ns, "label", "configmap", "second", "touched=yes"]);
    let modified = watch.next_line(WATCH_LINE);
    // Watch events come as Table rows too: same columns, no second header.
    assert_eq!(
        added.split_whitespace().take(3).collect::<Vec<_>>(),
        ["ADDED", "second", "1"],
        "{added}"
    );
    assert_eq!(
        modified.split_whitespace().take(3).collect::<Vec<_>>(),
        ["MODIFIED", "second", "1"],
        "{modified}"
    );
}

// --- describe, scale, edits ------------------------------------------------

#[test]
fn describe_deployment_shows_its_replicas_selector_and_pod_template() {
    let server = shared_server();
    let k = server.kubectl();
    let ns = namespace(&k, "describe");
    create(
        &k,
        &ns,
        &DeploymentBuilder::new("web")
            .replicas(3)
            .image("hello:v7")
            .json(),
    );

    let out = k.ok(&["-n", &ns, "describe", "deployment", "web"]);
    for expected in [
        "Name:                   web".to_owned(),
        format!("Namespace:              {ns}"),
        "Selector:               app=web".to_owned(),
        "Replicas:               3 desired".to_owned(),
        "StrategyType:           RollingUpdate".to_owned(),
        "Image:         hello:v7".to_owned(),
    ] {
        assert!(out.contains(&expected), "no `{expected}` in:\n{out}");
    }
}

#[test]
fn scale_changes_the_replica_count() {
    let server = shared_server();
    let k = server.kubectl();
    let ns = namespace(&k, "scale");
    create(&k, &ns, &DeploymentBuilder::new("web").replicas(1).json());

    let out = k.ok(&["-n", &ns, "scale", "deployment", "web", "--replicas=5"]);
    assert_eq!(out.trim(), "deployment.apps/web scaled");
    let web = get_json(&k, &["-n", &ns, "get", "deployment", "web"]);
    assert_eq!(web["spec"]["replicas"], 5);
    assert_eq!(
        web["metadata"]["generation"], 2,
        "a spec change bumps the generation"
    );
}

#[test]
fn label_annotate_and_set_image_edit_a_deployment() {
    let server = shared_server();
    let k = server.kubectl();
    let ns = namespace(&k, "edits");
    create(&k, &ns, &DeploymentBuilder::new("web").json());

    assert_eq!(
        k.ok(&["-n", &ns, "label", "deployment", "web", "tier=frontend"])
            .trim(),
        "deployment.apps/web labeled"
    );
    assert_eq!(
        k.ok(&["-n", &ns, "annotate", "deployment", "web", "owner=team-a"])
            .trim(),
        "deployment.apps/web annotated"
    );
    assert_eq!(
        k.ok(&["-n", &ns, "set", "image", "deployment/web", "web=hello:v2"])
            .trim(),
        "deployment.apps/web image updated"
    );
    let web = get_json(&k, &["-n", &ns, "get", "deployment", "web"]);
    assert_eq!(web["metadata"]["labels"]["tier"], "frontend");
    assert_eq!(web["metadata"]["labels"]["app"], "web");
    assert_eq!(web["metadata"]["annotations"]["owner"], "team-a");
    assert_eq!(
        web["spec"]["template"]["spec"]["containers"][0]["image"],
        "hello:v2"
    );

    // Removing a label.
    k.ok(&["-n", &ns, "label", "deployment", "web", "tier-"]);
    let web = get_json(&k, &["-n", &ns, "get", "deployment", "web"]);
    assert!(web["metadata"]["labels"].get("tier").is_none(), "{web}");
}

#[test]
fn patches_of_every_type_apply_as_kubernetes_defines_them() {
    let server = shared_server();
    let k = server.kubectl();
    let ns = namespace(&k, "patches");
    create(
        &k,
        &ns,
        &DeploymentBuilder::new("web").image("hello:v1").json(),
    );
    let patch = |ty: &str, body: &str| {
        let out = k.ok(&[
            "-n",
            &ns,
            "patch",
            "deployment",
            "web",
            "--type",
            ty,
            "-p",
            body,
        ]);
        assert_eq!(out.trim(), "deployment.apps/web patched", "{ty}");
        get_json(&k, &["-n", &ns, "get", "deployment", "web"])
    };

    let web = patch(
        "json",
        r#"[{"op":"replace","path":"/spec/replicas","value":4}]"#,
    );
    assert_eq!(web["spec"]["replicas"], 4);

    let web = patch("merge", r#"{"metadata":{"labels":{"patched":"merge"}}}"#);
    assert_eq!(web["metadata"]["labels"]["patched"], "merge");
    assert_eq!(
        web["metadata"]["labels"]["app"], "web",
        "merge keeps other keys"
    );

    // Strategic merge merges containers by name: the image stays.
    let web = patch(
        "strategic",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"MODE","value":"fast"}]}]}}}}"#,
    );
    let containers = &web["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers.as_array().unwrap().len(), 1, "{containers}");
    assert_eq!(containers[0]["image"], "hello:v1");
    assert_eq!(
        containers[0]["env"][0],
        json!({"name": "MODE", "value": "fast"})
    );

    // ... and `$patch: delete` removes one entry of a merged list.
    let web = patch(
        "strategic",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"MODE","$patch":"delete"}]}]}}}}"#,
    );
    let env = &web["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.is_null() || env.as_array().is_some_and(Vec::is_empty),
        "{env}"
    );

    // A JSON patch whose test fails changes nothing.
    let err = k.fails(&[
        "-n",
        &ns,
        "patch",
        "deployment",
        "web",
        "--type",
        "json",
        "-p",
        r#"[{"op":"test","path":"/spec/replicas","value":99},{"op":"replace","path":"/spec/replicas","value":1}]"#,
    ]);
    assert!(err.contains("/spec/replicas"), "{err}");
    let web = get_json(&k, &["-n", &ns, "get", "deployment", "web"]);
    assert_eq!(web["spec"]["replicas"], 4);
}

#[test]
fn delete_removes_the_object() {
    let server = shared_server();
    let k = server.kubectl();
    let ns = namespace(&k, "delete");
    create(&k, &ns, &ConfigMapBuilder::new("doomed").json());

    assert_eq!(
        k.ok(&["-n", &ns, "delete", "configmap", "doomed", "--timeout=20s"])
            .trim(),
        "configmap \"doomed\" deleted"
    );
    let err = k.fails(&["-n", &ns, "get", "configmap", "doomed"]);
    assert_eq!(
        err.trim(),
        "Error from server (NotFound): configmaps \"doomed\" not found"
    );
}

#[test]
fn deleting_a_namespace_removes_it_and_everything_in_it() {
    let server = shared_server();
    let k = server.kubectl();
    let ns = namespace(&k, "doomed-ns");
    create(&k, &ns, &ConfigMapBuilder::new("inside").json());
    create(&k, &ns, &DeploymentBuilder::new("web").json());

    // kubectl waits until the namespace is gone.
    let out = k.ok(&["delete", "namespace", &ns, "--timeout=30s"]);
    assert_eq!(out.trim(), format!("namespace \"{ns}\" deleted"));
    let err = k.fails(&["get", "namespace", &ns]);
    assert!(
        err.contains(&format!("namespaces \"{ns}\" not found")),
        "{err}"
    );
    for kind in ["configmaps", "deployments", "serviceaccounts"] {
        let out = k.ok(&["get", kind, "-A", "-o", "json"]);
        let list: Value = serde_json::from_str(&out).unwrap();
        let left: Vec<&Value> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["metadata"]["namespace"] == ns.as_str())
            .collect();
        assert!(left.is_empty(), "{kind} left in {ns}: {left:?}");
    }
}

// --- create (protobuf request bodies) --------------------------------------

#[test]
fn create_deployment_makes_a_deployment_with_the_image() {
    let server = shared_server();
    let k = server.kubectl();
    let ns = namespace(&k, "create-deploy");
    let out = k.ok(&[
        "-n",
        &ns,
        "create",
        "deployment",
        "hello",
        "--image=hello:v3",
        "--replicas=2",
    ]);
    assert_eq!(out.trim(), "deployment.apps/hello created");
    let d = get_json(&k, &["-n", &ns, "get", "deployment", "hello"]);
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "hello");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "hello:v3"
    );
}

#[test]
fn create_configmap_from_literals_stores_the_data() {
    let server = shared_server();
    let k = server.kubectl();
    let ns = namespace(&k, "create-cm");
    let out = k.ok(&[
        "-n",
        &ns,
        "create",
        "configmap",
        "settings",
        "--from-literal=color=blue",
        "--from-literal=size=10",
    ]);
    assert_eq!(out.trim(), "configmap/settings created");
    let cm = get_json(&k, &["-n", &ns, "get", "configmap", "settings"]);
    assert_eq!(cm["data"], json!({"color": "blue", "size": "10"}));
}

#[test]
fn create_namespace_and_secret_work_too() {
    let server = shared_server();
    let k = server.kubectl();
    assert_eq!(
        k.ok(&["create", "namespace", "made-by-kubectl"]).trim(),
        "namespace/made-by-kubectl created"
    );
    let out = k.ok(&[
        "-n",
        "made-by-kubectl",
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=password=s3cret",
    ]);
    assert_eq!(out.trim(), "secret/creds created");
    let s = get_json(&k, &["-n", "made-by-kubectl", "get", "secret", "creds"]);
    assert_eq!(s["data"]["password"], "czNjcmV0");
    assert_eq!(s["type"], "Opaque");
}

#[test]
fn a_secrets_string_data_is_stored_base64_encoded_in_data() {
    let server = shared_server();
    let k = server.kubectl();
    let ns = namespace(&k, "string-data");
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                        "data": {"user": "YWRtaW4="}, "stringData": {"password": "hunter2"}});
    create(&k, &ns, &secret.to_string());
    let s = get_json(&k, &["-n", &ns, "get", "secret", "s"]);
    assert_eq!(
        s["data"],
        json!({"user": "YWRtaW4=", "password": "aHVudGVyMg=="})
    );
    assert!(
        s.get("stringData").is_none(),
        "stringData is write-only: {s}"
    );
}

#[test]
fn create_token_for_a_service_account_authenticates_as_that_account() {
    let server = shared_server();
    let k = server.kubectl();
    let ns = namespace(&k, "create-token");
    create(
        &k,
        &ns,
        &json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bot"}})
            .to_string(),
    );
    let token = k.ok(&["-n", &ns, "create", "token", "bot", "--duration=10m"]);
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token}");

    // Authenticated (not 401) but not authorized: the account has no role.
    let err = k.fails(&["--token", token, "-n", &ns, "get", "pods"]);
    assert!(
        err.contains(&format!(
            "User \"system:serviceaccount:{ns}:bot\" cannot list resource \"pods\" in API group \"\" in the namespace \"{ns}\""
        )),
        "{err}"
    );
}

#[test]
fn expose_deployment_allocates_a_cluster_ip_in_the_loopback_range() {
    let server = shared_server();
    let k = server.kubectl();
    let ns = namespace(&k, "expose");
    create(&k, &ns, &DeploymentBuilder::new("web").json());

    let out = k.ok(&[
        "-n",
        &ns,
        "expose",
        "deployment",
        "web",
        "--port=80",
        "--target-port=8080",
    ]);
    assert_eq!(out.trim(), "service/web exposed");
    let svc = get_json(&k, &["-n", &ns, "get", "service", "web"]);
    let ip: std::net::Ipv4Addr = svc["spec"]["clusterIP"]
        .as_str()
        .unwrap_or_else(|| panic!("no clusterIP: {svc}"))
        .parse()
        .unwrap();
    assert_eq!(ip.octets()[..2], [127, 96], "{ip} outside 127.96.0.0/16");
    assert_eq!(svc["spec"]["clusterIPs"], json!([ip.to_string()]));
    assert_eq!(svc["spec"]["selector"], json!({"app": "web"}));
    assert_eq!(svc["spec"]["ports"][0]["port"], 80);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
}

#[test]
fn a_second_service_asking_for_a_taken_cluster_ip_is_refused_with_422() {
    let server = shared_server();
    let k = server.kubectl();
    let ns = namespace(&k, "ip-clash");
    let service = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
               "spec": {"clusterIP": "127.96.251.17", "ports": [{"port": 80}]}})
        .to_string()
    };
    create(&k, &ns, &service("first"));
    // -v=6 logs each request with its status code.
    let out = k.run_with_stdin(
        &["-n", &ns, "create", "--validate=false", "-f", "-", "-v=6"],
        &service("second"),
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(
        out.stderr.contains("422 Unprocessable Entity"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("The Service \"second\" is invalid")
            && out.stderr.contains("127.96.251.17")
            && out.stderr.contains("already allocated"),
        "{}",
        out.stderr
    );
    // The first one keeps its address.
    let first = get_json(&k, &["-n", &ns, "get", "service", "first"]);
    assert_eq!(first["spec"]["clusterIP"], "127.96.251.17");
}

// --- discovery, OpenAPI, version ---------------------------------------------

#[test]
fn explain_describes_the_pod_spec() {
    let server = shared_server();
    let k = server.kubectl();
    let out = k.ok(&["explain", "pods.spec"]);
    assert!(out.contains("KIND:       Pod"), "{out}");
    assert!(out.contains("VERSION:    v1"), "{out}");
    assert!(out.contains("FIELD: spec <PodSpec>"), "{out}");
    assert!(
        out.contains("containers\t<[]Container> -required-"),
        "{out}"
    );
}

#[test]
fn version_reports_kubernetes_1_33() {
    let server = shared_server();
    let k = server.kubectl();
    let v: Value = serde_json::from_str(&k.ok(&["version", "-o", "json"])).unwrap();
    assert_eq!(v["serverVersion"]["major"], "1", "{v}");
    assert_eq!(v["serverVersion"]["minor"], "33", "{v}");
    // The dispatcher picked the matching kubectl.
    assert_eq!(v["clientVersion"]["minor"], "33", "{v}");
}

#[test]
fn api_resources_lists_the_built_in_kinds_with_short_names() {
    let server = shared_server();
    let k = server.kubectl();
    let out = k.ok(&["api-resources"]);
    let table = rows(&out);
    for (name, short) in [
        ("pods", "po"),
        ("deployments", "deploy"),
        ("services", "svc"),
        ("configmaps", "cm"),
        ("namespaces", "ns"),
    ] {
        assert!(
            table
                .iter()
                .any(|r| r[0] == name && r.get(1) == Some(&short)),
            "no `{name} {short}` in:\n{out}"
        );
    }
    // Short names work as kubectl users type them.
    k.ok(&["-n", "default", "get", "svc,cm,deploy"]);
}

// --- authentication and authorization -----------------------------------------

#[test]
fn the_admin_can_create_pods() {
    let server = shared_server();
    let k = server.kubectl();
    assert_eq!(k.ok(&["auth", "can-i", "create", "pods"]).trim(), "yes");
    assert_eq!(
        k.ok(&["auth", "can-i", "delete", "nodes", "--all-namespaces"])
            .trim(),
        "yes"
    );
}

#[test]
fn a_user_bound_to_view_can_get_but_not_create() {
    let server = shared_server();
    let admin = server.kubectl();
    let ns = namespace(&admin, "viewer");
    create(&admin, &ns, &ConfigMapBuilder::new("visible").json());
    create(
        &admin,
        &ns,
        &json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "alice-view"},
            "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}],
            "roleRef": {"kind": "ClusterRole", "name": "view", "apiGroup": "rbac.authorization.k8s.io"},
        })
        .to_string(),
    );
    let dir = tempfile::tempdir().unwrap();
    let alice = server.kubectl_with(user_kubeconfig(server, &dir, "alice"));

    let out = alice.ok(&["-n", &ns, "get", "configmaps", "-o", "name"]);
    assert_eq!(out.trim(), "configmap/visible");
    let out = alice.run(&["-n", &ns, "get", "pods"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        out.stderr.trim(),
        format!("No resources found in {ns} namespace.")
    );

    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                     "spec": {"containers": [{"name": "c", "image": "hello:v1"}]}});
    let out = alice.run_with_stdin(
        &["-n", &ns, "create", "--validate=false", "-f", "-"],
        &pod.to_string(),
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "Error from server (Forbidden): error when creating \"STDIN\": pods is forbidden: User \"alice\" cannot create resource \"pods\" in API group \"\" in the namespace \"{ns}\""
        )),
        "{}",
        out.stderr
    );
    // The binding is namespaced: nothing elsewhere.
    let err = alice.fails(&["-n", "default", "get", "configmaps"]);
    assert!(
        err.contains("Error from server (Forbidden): configmaps is forbidden: User \"alice\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"default\""),
        "{err}"
    );

    // can-i answers the same, with exit code 1 for "no".
    let out = alice.run(&["-n", &ns, "auth", "can-i", "create", "pods"]);
    assert_eq!(out.stdout.trim(), "no", "{out:?}");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        alice
            .ok(&["-n", &ns, "auth", "can-i", "get", "pods"])
            .trim(),
        "yes"
    );
}

#[test]
fn a_token_from_wkube_token_create_is_accepted_by_kubectl() {
    let server = shared_server();
    let k = server.kubectl();
    let token = server
        .wkube(&[
            "token",
            "create",
            "--user",
            "ops",
            "--group",
            "system:masters",
            "--ttl",
            "30m",
        ])
        .success();
    let token = token.trim();
    assert_eq!(token.lines().count(), 1, "only the token is printed");
    let out = k.ok(&["--token", token, "get", "namespaces", "-o", "name"]);
    assert!(out.lines().any(|l| l == "namespace/kube-system"), "{out}");

    // Without the group the same user is authenticated but may do nothing.
    let token = server
        .wkube(&["token", "create", "--user", "nobody"])
        .success();
    let err = k.fails(&["--token", token.trim(), "get", "namespaces"]);
    assert!(
        err.contains("User \"nobody\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope"),
        "{err}"
    );
}

#[test]
fn a_garbage_or_expired_token_or_none_is_unauthorized() {
    let server = shared_server();
    let k = server.kubectl();
    // The reason in parentheses depends on whether kubectl's discovery or
    // the request itself reports the 401 first; both mean 401.
    let unauthorized = "error: You must be logged in to the server (";

    let err = k.fails(&["--token", "garbage", "get", "pods"]);
    assert!(err.contains(unauthorized), "{err}");

    // Signed by the cluster's own key, but an hour past its expiry.
    let authority =
        wkube::api::authn::TokenAuthority::load_or_create(&server.data_dir.join("pki")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expired = authority
        .sign(&wkube::api::authn::Claims {
            iss: wkube::api::authn::ISSUER.into(),
            sub: "wkube-admin".into(),
            aud: vec![wkube::api::authn::API_AUDIENCE.into()],
            exp: now - 3600,
            iat: now - 7200,
            nbf: now - 7200,
            groups: vec!["system:masters".into()],
            jti: String::new(),
            kubernetes: None,
        })
        .unwrap();
    let err = k.fails(&["--token", &expired, "get", "pods"]);
    assert!(err.contains(unauthorized), "{err}");

    // No token at all is refused too, but kubectl then prompts for a
    // password instead of reporting it: tests/api_http.rs checks that with
    // curl.
}

// --- the CLI without a server ------------------------------------------------

#[test]
fn token_and_kubeconfig_without_server_state_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["token", "create", "--user", "alice"][..],
        &["kubeconfig"][..],
    ] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wkube"));
        cmd.arg("--data-dir").arg(dir.path()).args(args);
        let out = common::run(cmd, None, common::COMMAND_TIMEOUT);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
        assert!(
            out.stderr.starts_with("Error: ") && out.stderr.contains("start `wkube server`"),
            "{args:?}: {}",
            out.stderr
        );
    }
}

// --- security: escalation, impersonation, validation -------------------------

/// A (Cluster)Role or binding as JSON, for `create`.
fn rbac_obj(kind: &str, name: &str, body: Value) -> String {
    let mut obj = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
        "metadata": {"name": name},
    });
    for (k, v) in body.as_object().unwrap() {
        obj[k] = v.clone();
    }
    obj.to_string()
}

fn user_subject(user: &str) -> Value {
    json!([{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}])
}

fn role_ref(kind: &str, name: &str) -> Value {
    json!({"kind": kind, "name": name, "apiGroup": "rbac.authorization.k8s.io"})
}

#[test]
fn nobody_grants_rbac_rights_they_do_not_hold() {
    let server = shared_server();
    let admin = server.kubectl();
    let ns = namespace(&admin, "escalation");
    create(
        &admin,
        &ns,
        &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1"},
                "stringData": {"k": "top-secret"}})
        .to_string(),
    );
    let dir = tempfile::tempdir().unwrap();
    let not_held = "is attempting to grant RBAC permissions not currently held";

    // 1. Allowed only to create rolebindings: may not bind cluster-admin.
    create(
        &admin,
        &ns,
        &rbac_obj(
            "Role",
            "binder",
            json!({"rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"], "verbs": ["create"]}]}),
        ),
    );
    create(
        &admin,
        &ns,
        &rbac_obj(
            "RoleBinding",
            "binder",
            json!({"subjects": user_subject("mallory"), "roleRef": role_ref("Role", "binder")}),
        ),
    );
    let mallory = server.kubectl_with(user_kubeconfig(server, &dir, "mallory"));
    let err = mallory.fails(&[
        "-n",
        &ns,
        "create",
        "rolebinding",
        "mine",
        "--clusterrole=cluster-admin",
        "--user=mallory",
    ]);
    assert!(
        err.contains(&format!(
            "rolebindings.rbac.authorization.k8s.io \"mine\" is forbidden: user \"mallory\" (groups=[\"system:authenticated\"]) {not_held}"
        )),
        "{err}"
    );
    let err = mallory.fails(&["-n", &ns, "get", "secret", "s1"]);
    assert!(err.contains("Forbidden"), "{err}");

    // 2. Allowed only to create clusterrolebindings: no cluster-admin.
    let crb = format!("crb-binder-{ns}");
    admin.ok_with_stdin(
        &["create", "-f", "-"],
        &rbac_obj(
            "ClusterRole",
            &crb,
            json!({"rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterrolebindings"], "verbs": ["create"]}]}),
        ),
    );
    admin.ok_with_stdin(
        &["create", "-f", "-"],
        &rbac_obj(
            "ClusterRoleBinding",
            &crb,
            json!({"subjects": user_subject("trudy"), "roleRef": role_ref("ClusterRole", &crb)}),
        ),
    );
    let trudy = server.kubectl_with(user_kubeconfig(server, &dir, "trudy"));
    let err = trudy.fails(&[
        "create",
        "clusterrolebinding",
        &format!("{crb}-mine"),
        "--clusterrole=cluster-admin",
        "--user=trudy",
    ]);
    assert!(err.contains(not_held), "{err}");

    // 3. Allowed to update its own Role: may not widen it to everything.
    create(
        &admin,
        &ns,
        &rbac_obj(
            "Role",
            "own",
            json!({"rules": [
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
                {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "resourceNames": ["own"], "verbs": ["get", "update", "patch"]}
            ]}),
        ),
    );
    create(
        &admin,
        &ns,
        &rbac_obj(
            "RoleBinding",
            "own",
            json!({"subjects": user_subject("eve"), "roleRef": role_ref("Role", "own")}),
        ),
    );
    let eve = server.kubectl_with(user_kubeconfig(server, &dir, "eve"));
    let err = eve.fails(&[
        "-n", &ns, "patch", "role", "own", "--type=json",
        "-p", r#"[{"op":"add","path":"/rules/-","value":{"apiGroups":["*"],"resources":["*"],"verbs":["*"]}}]"#,
    ]);
    assert!(err.contains(not_held), "{err}");
    assert!(
        err.contains(r#"{APIGroups:["*"], Resources:["*"], Verbs:["*"]}"#),
        "{err}"
    );

    // 4. A namespace admin: may not create a `*` Role nor bind cluster-admin,
    //    but may grant what `admin` itself holds.
    create(
        &admin,
        &ns,
        &rbac_obj(
            "RoleBinding",
            "nsadmin",
            json!({"subjects": user_subject("nadia"), "roleRef": role_ref("ClusterRole", "admin")}),
        ),
    );
    let nadia = server.kubectl_with(user_kubeconfig(server, &dir, "nadia"));
    let err = nadia.fails(&[
        "-n",
        &ns,
        "create",
        "role",
        "all",
        "--verb=*",
        "--resource=*.*",
    ]);
    assert!(err.contains(not_held), "{err}");
    let err = nadia.fails(&[
        "-n",
        &ns,
        "create",
        "rolebinding",
        "root",
        "--clusterrole=cluster-admin",
        "--user=nadia",
    ]);
    assert!(err.contains(not_held), "{err}");
    nadia.ok(&[
        "-n",
        &ns,
        "create",
        "role",
        "reader",
        "--verb=get",
        "--resource=pods",
    ]);
    nadia.ok(&[
        "-n",
        &ns,
        "create",
        "rolebinding",
        "viewers",
        "--clusterrole=view",
        "--user=someone",
    ]);

    // 5. The `bind` verb on one role lets a user bind exactly that role.
    create(
        &admin,
        &ns,
        &rbac_obj(
            "Role",
            "bind-view",
            json!({"rules": [
                {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"], "verbs": ["create"]},
                {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["bind"], "resourceNames": ["view"]}
            ]}),
        ),
    );
    create(
        &admin,
        &ns,
        &rbac_obj(
            "RoleBinding",
            "bind-view",
            json!({"subjects": user_subject("bob"), "roleRef": role_ref("Role", "bind-view")}),
        ),
    );
    let bob = server.kubectl_with(user_kubeconfig(server, &dir, "bob"));
    bob.ok(&[
        "-n",
        &ns,
        "create",
        "rolebinding",
        "bob-view",
        "--clusterrole=view",
        "--user=bob",
    ]);
    let err = bob.fails(&[
        "-n",
        &ns,
        "create",
        "rolebinding",
        "bob-edit",
        "--clusterrole=edit",
        "--user=bob",
    ]);
    assert!(err.contains(not_held), "{err}");
}

#[test]
fn kubectl_as_impersonates_only_with_the_impersonate_verb() {
    let server = shared_server();
    let admin = server.kubectl();
    let ns = namespace(&admin, "impersonation");
    create(&admin, &ns, &ConfigMapBuilder::new("cm").json());
    let dir = tempfile::tempdir().unwrap();
    let carl = server.kubectl_with(user_kubeconfig(server, &dir, "carl"));

    // The admin acting as a user without rights is refused as that user,
    // not let through as the admin.
    let err = admin.fails(&["--as", "nobody-at-all", "-n", &ns, "get", "configmaps"]);
    assert!(
        err.contains("User \"nobody-at-all\" cannot list resource \"configmaps\""),
        "{err}"
    );

    // Without `impersonate`, carl may not act as anyone. kubectl meets the
    // refusal at discovery already and prints only its reason; the
    // message itself is checked over plain HTTP.
    let err = carl.fails(&["--as", "dora", "-n", &ns, "get", "configmaps"]);
    assert!(err.contains("Error from server (Forbidden)"), "{err}");
    let carl_token = server
        .wkube(&["token", "create", "--user", "carl"])
        .success();
    let out = common::run(
        {
            let mut c = std::process::Command::new("curl");
            c.args(["-sS", "--cacert"])
                .arg(server.pki("ca.crt"))
                .args([
                    "-H",
                    &format!("Authorization: Bearer {}", carl_token.trim()),
                ])
                .args(["-H", "Impersonate-User: dora"])
                .arg(format!(
                    "{}/api/v1/namespaces/{ns}/configmaps",
                    server.api_url
                ));
            c
        },
        None,
        common::COMMAND_TIMEOUT,
    );
    let status: Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(status["code"], 403, "{status}");
    assert_eq!(
        status["message"],
        "users \"dora\" is forbidden: User \"carl\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
    );

    // With it (for dora only), carl acts as dora and has dora's rights.
    let role = format!("impersonate-dora-{ns}");
    admin.ok_with_stdin(
        &["create", "-f", "-"],
        &rbac_obj(
            "ClusterRole",
            &role,
            json!({"rules": [{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"], "resourceNames": ["dora"]}]}),
        ),
    );
    admin.ok_with_stdin(
        &["create", "-f", "-"],
        &rbac_obj(
            "ClusterRoleBinding",
            &role,
            json!({"subjects": user_subject("carl"), "roleRef": role_ref("ClusterRole", &role)}),
        ),
    );
    create(
        &admin,
        &ns,
        &rbac_obj(
            "RoleBinding",
            "dora-view",
            json!({"subjects": user_subject("dora"), "roleRef": role_ref("ClusterRole", "view")}),
        ),
    );
    let out = carl.ok(&["--as", "dora", "-n", &ns, "get", "configmaps", "-o", "name"]);
    assert!(out.contains("configmap/cm"), "{out}");
    let err = carl.fails(&["--as", "dora", "-n", &ns, "delete", "configmap", "cm"]);
    assert!(err.contains("User \"dora\" cannot delete"), "{err}");
    let err = carl.fails(&["--as", "erin", "-n", &ns, "get", "configmaps"]);
    assert!(err.contains("cannot impersonate"), "{err}");
    // Groups need their own grant.
    let err = carl.fails(&[
        "--as",
        "dora",
        "--as-group",
        "system:masters",
        "get",
        "secrets",
        "-A",
    ]);
    assert!(
        err.contains("User \"carl\" cannot impersonate resource \"groups\""),
        "{err}"
    );
}

#[test]
fn negative_replicas_are_refused_as_kubernetes_does() {
    let server = shared_server();
    let admin = server.kubectl();
    let ns = namespace(&admin, "numbers");
    let deployment = |replicas: i64| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "neg"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "neg"}},
                "template": {"metadata": {"labels": {"app": "neg"}},
                    "spec": {"containers": [{"name": "c", "image": "hello:v1"}]}}}})
        .to_string()
    };
    let out = admin.run_with_stdin(
        &["-n", &ns, "create", "--validate=false", "-f", "-"],
        &deployment(-5),
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(
        out.stderr
            .contains("spec.replicas: Invalid value: \"-5\": must be greater than or equal to 0"),
        "{}",
        out.stderr
    );
}

#[test]
fn secrets_are_encrypted_at_rest_and_their_key_rotates() {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut s = TestServer::start();
    let k = s.kubectl();
    let secret = "hunter2-at-rest-9f3a";
    k.ok(&[
        "create",
        "secret",
        "generic",
        "s1",
        &format!("--from-literal=password={secret}"),
    ]);
    let raw_value = |s: &TestServer, key: &str| {
        s.etcdctl(&["get", key, "--print-value-only"])
            .success()
            .trim_end()
            .to_string()
    };
    // The store holds ciphertext; every API read path gives the plain
    // object: get, the raw JSON list, a watch's replay.
    let stored = raw_value(&s, "/registry/secrets/default/s1");
    assert!(stored.starts_with("k8s:enc:aesgcm:v1:key1:"), "{stored:?}");
    assert!(!stored.contains(secret) && !stored.contains(&b64(secret)));
    assert_eq!(
        k.ok(&["get", "secret", "s1", "-o", "jsonpath={.data.password}"]),
        b64(secret)
    );
    assert!(
        k.ok(&["get", "secrets", "-o", "json"])
            .contains(&b64(secret))
    );
    let watched = k.ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/secrets?watch=true&timeoutSeconds=1",
    ]);
    assert!(watched.contains(&b64(secret)), "{watched}");
    // Other kinds stay plain JSON in the store.
    k.ok(&["create", "configmap", "c1", "--from-literal=k=visible"]);
    assert!(raw_value(&s, "/registry/configmaps/default/c1").contains("visible"));

    // A Secret stored in plaintext (from before encryption, or put through
    // the etcd API) still reads, and is sealed at the next start.
    let legacy = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "legacy", "namespace": "default",
            "uid": "6d1e4c2a-0000-4000-8000-000000000001",
            "creationTimestamp": "2026-01-01T00:00:00Z"},
        "data": {"k": b64("legacy-plain")}});
    s.etcdctl(&[
        "put",
        "/registry/secrets/default/legacy",
        &legacy.to_string(),
    ])
    .success();
    assert_eq!(
        k.ok(&["get", "secret", "legacy", "-o", "jsonpath={.data.k}"]),
        b64("legacy-plain")
    );

    // A sealed value that does not open is a server error on read, and
    // does not keep the server from starting.
    s.etcdctl(&[
        "put",
        "/registry/secrets/default/broken",
        "k8s:enc:aesgcm:v1:key1:cut-short",
    ])
    .success();
    let err = k.fails(&["get", "secret", "broken"]);
    assert!(
        err.contains("InternalError") && err.contains("sealed value is malformed"),
        "{err}"
    );

    // Rotation: a new key first; the next start seals everything with it.
    let out = s.wkube(&["encryption", "rotate"]).success();
    assert!(out.starts_with("key2 added first"), "{out}");
    s.restart();
    let k = s.kubectl();
    for key in [
        "/registry/secrets/default/s1",
        "/registry/secrets/default/legacy",
    ] {
        let v = raw_value(&s, key);
        assert!(v.starts_with("k8s:enc:aesgcm:v1:key2:"), "{key}: {v:?}");
    }
    assert_eq!(
        k.ok(&["get", "secret", "s1", "-o", "jsonpath={.data.password}"]),
        b64(secret)
    );
    assert_eq!(
        k.ok(&["get", "secret", "legacy", "-o", "jsonpath={.data.k}"]),
        b64("legacy-plain")
    );
    assert_eq!(
        s.wkube(&["encryption", "list"]).success(),
        "key2  (seals)\nkey1\n"
    );

    // The store's files (redb and its write-ahead log, which holds the
    // latest writes first) hold no trace of a Secret that was only ever
    // written through the API.
    s.kill();
    let has =
        |file: &[u8], needle: &str| file.windows(needle.len()).any(|w| w == needle.as_bytes());
    let mut keys_seen = 0;
    for name in ["store.redb", "store.redb.wal"] {
        let file = std::fs::read(s.data_dir.join(name)).unwrap();
        for needle in [secret.to_string(), b64(secret)] {
            assert!(!has(&file, &needle), "{needle} found in {name}");
        }
        keys_seen += usize::from(has(&file, "/registry/secrets/default/s1"));
    }
    // The files searched do hold the Secret (its key is not encrypted).
    assert!(keys_seen > 0, "the Secret's key is in neither file");
}
