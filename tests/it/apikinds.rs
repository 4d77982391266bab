//! Issue 20's further API kinds, as a user drives them with stock kubectl:
//! PriorityClass and pod priority admission, TokenReview and
//! SubjectAccessReview (with LocalSubjectAccessReview), Events in
//! events.k8s.io/v1.

use crate::common;

use common::{Kubectl, TestServer, shared_server};
use serde_json::{Value, json};

/// A namespace of the test's own.
fn namespace(k: &Kubectl, name: &str) -> String {
    let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    k.ok_with_stdin(&["create", "--validate=false", "-f", "-"], &obj.to_string());
    name.to_owned()
}

/// `kubectl ARGS -o json`, parsed.
#[track_caller]
fn json_of(k: &Kubectl, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = k.ok(&all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// `kubectl create -f - -o json` of `obj`, parsed.
#[track_caller]
fn create_json(k: &Kubectl, obj: &Value) -> Value {
    let out = k.ok_with_stdin(
        &["create", "--validate=false", "-f", "-", "-o", "json"],
        &obj.to_string(),
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn pod(name: &str, spec_extra: Value) -> Value {
    let mut spec = json!({"containers": [{"name": "c", "image": "hello:v1"}]});
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), spec_extra.as_object()) {
        s.extend(extra.clone());
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
}

// --- PriorityClass --------------------------------------------------------

#[test]
fn the_system_priority_classes_exist_from_the_start() {
    let k = shared_server().kubectl();
    let out = k.ok(&["get", "priorityclasses"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].split_whitespace().collect::<Vec<_>>()
            == ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"],
        "{out}"
    );
    for (name, value) in [
        ("system-cluster-critical", "2000000000"),
        ("system-node-critical", "2000001000"),
    ] {
        assert!(
            lines.iter().any(|l| {
                let c: Vec<&str> = l.split_whitespace().collect();
                c[0] == name && c[1] == value && c[2] == "false"
            }),
            "{out}"
        );
    }
    // The short name, and `explain` from the OpenAPI documents.
    assert!(
        k.ok(&["get", "pc", "-o", "name"])
            .contains("priorityclass.scheduling.k8s.io/system-node-critical")
    );
    let out = k.ok(&["explain", "priorityclass.value"]);
    assert!(out.contains("scheduling.k8s.io"), "{out}");
}

#[test]
fn kubectl_create_priorityclass_validates_as_kubernetes_does() {
    let k = shared_server().kubectl();
    let out = k.ok(&[
        "create",
        "priorityclass",
        "apikinds-gold",
        "--value=1000",
        "--description=gold",
        "--preemption-policy=Never",
    ]);
    assert_eq!(
        out.trim(),
        "priorityclass.scheduling.k8s.io/apikinds-gold created"
    );
    let pc = json_of(&k, &["get", "priorityclass", "apikinds-gold"]);
    assert_eq!(pc["value"], 1000);
    assert_eq!(pc["preemptionPolicy"], "Never");

    let err = k.fails(&[
        "create",
        "priorityclass",
        "apikinds-huge",
        "--value=1000000001",
    ]);
    assert!(
        err.contains(
            "value: Forbidden: maximum allowed value of a user defined priority is 1000000000"
        ),
        "{err}"
    );
    let err = k.fails(&["create", "priorityclass", "system-mine", "--value=10"]);
    assert!(err.contains("reserved for system use only"), "{err}");
    // The value is immutable.
    let err = k.fails(&[
        "patch",
        "priorityclass",
        "apikinds-gold",
        "--type=merge",
        "-p",
        r#"{"value": 5}"#,
    ]);
    assert!(
        err.contains("value: Forbidden: may not be changed in an update."),
        "{err}"
    );
}

/// A server of its own: a global default class changes every pod created
/// while it exists.
#[test]
fn a_pods_priority_comes_from_its_class_or_the_global_default() {
    let server = TestServer::start();
    let k = server.kubectl();
    let ns = namespace(&k, "prio");
    k.ok(&["create", "priorityclass", "high", "--value=100000"]);

    // No class named and no default: priority 0.
    let mut plain = pod("plain", json!({}));
    plain["metadata"]["namespace"] = json!(ns);
    let p = create_json(&k, &plain);
    assert_eq!(p["spec"]["priority"], 0);
    assert_eq!(p["spec"]["preemptionPolicy"], "PreemptLowerPriority");

    let mut named = pod("named", json!({"priorityClassName": "high"}));
    named["metadata"]["namespace"] = json!(ns);
    let p = create_json(&k, &named);
    assert_eq!(p["spec"]["priority"], 100000);

    let mut critical = pod(
        "critical",
        json!({"priorityClassName": "system-node-critical"}),
    );
    critical["metadata"]["namespace"] = json!(ns);
    assert_eq!(create_json(&k, &critical)["spec"]["priority"], 2000001000);

    // An unknown class, and a priority the class does not give.
    let mut unknown = pod("unknown", json!({"priorityClassName": "gold"}));
    unknown["metadata"]["namespace"] = json!(ns);
    let out = k.run_with_stdin(
        &["create", "--validate=false", "-f", "-"],
        &unknown.to_string(),
    );
    assert!(
        out.stderr
            .contains("pods \"unknown\" is forbidden: no PriorityClass with name gold was found"),
        "{out:?}"
    );
    let mut lying = pod("lying", json!({"priorityClassName": "high", "priority": 7}));
    lying["metadata"]["namespace"] = json!(ns);
    let out = k.run_with_stdin(
        &["create", "--validate=false", "-f", "-"],
        &lying.to_string(),
    );
    assert!(
        out.stderr.contains("the integer value of priority (7) must not be provided in pod spec; priority admission controller computed 100000 from the given PriorityClass name"),
        "{out:?}"
    );

    // One global default, which applies to pods naming no class.
    k.ok(&[
        "create",
        "priorityclass",
        "usual",
        "--value=50",
        "--global-default",
    ]);
    let err = k.fails(&[
        "create",
        "priorityclass",
        "other",
        "--value=60",
        "--global-default",
    ]);
    assert!(
        err.contains(
            "PriorityClass usual is already marked as default. Only one default can exist"
        ),
        "{err}"
    );
    let mut defaulted = pod("defaulted", json!({}));
    defaulted["metadata"]["namespace"] = json!(ns);
    let p = create_json(&k, &defaulted);
    assert_eq!(p["spec"]["priorityClassName"], "usual");
    assert_eq!(p["spec"]["priority"], 50);
}

// --- TokenReview and SubjectAccessReview ------------------------------------

/// A kubeconfig for `user` made by `wkube kubeconfig`, in a file.
fn user_kubectl(server: &TestServer, dir: &tempfile::TempDir, user: &str) -> Kubectl {
    let doc = server
        .wkube(&["kubeconfig", "--user", user, "--ttl", "1h"])
        .success();
    let path = dir.path().join(format!("{user}.kubeconfig"));
    std::fs::write(&path, doc).unwrap();
    server.kubectl_with(path)
}

/// `kubectl create -f - -o json` of a review (kubectl validates it against
/// the served OpenAPI document first), parsed.
#[track_caller]
fn review(k: &Kubectl, ns: Option<&str>, obj: &Value) -> Value {
    let mut args = vec!["create", "-f", "-", "-o", "json"];
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    let out = k.ok_with_stdin(&args, &obj.to_string());
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn token_review(token: &str) -> Value {
    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
           "spec": {"token": token}})
}

#[test]
fn a_token_review_tells_a_valid_token_from_a_forged_one() {
    let server = shared_server();
    let k = server.kubectl();
    let token = server
        .wkube(&[
            "token", "create", "--user", "reviewed", "--group", "devs", "--ttl", "10m",
        ])
        .success();
    let token = token.trim();

    let r = review(&k, None, &token_review(token));
    assert_eq!(r["kind"], "TokenReview");
    assert_eq!(r["status"]["authenticated"], true, "{r}");
    assert_eq!(r["status"]["user"]["username"], "reviewed");
    let groups = r["status"]["user"]["groups"].to_string();
    assert!(
        groups.contains("\"devs\"") && groups.contains("system:authenticated"),
        "{r}"
    );
    assert_eq!(
        r["status"]["audiences"],
        json!([wkube::api::authn::API_AUDIENCE])
    );

    // The same claims with a signature that is not the cluster's.
    let (signed, _sig) = token.rsplit_once('.').unwrap();
    let forged = format!("{signed}.{}", "A".repeat(86));
    let r = review(&k, None, &token_review(&forged));
    assert_ne!(r["status"]["authenticated"], true, "{r}");
    assert!(
        r["status"]["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{r}"
    );
    // An audience the token was not issued for.
    let mut other = token_review(token);
    other["spec"]["audiences"] = json!(["https://elsewhere.example"]);
    let r = review(&k, None, &other);
    assert_ne!(r["status"]["authenticated"], true, "{r}");

    // A service account's token names the account.
    let ns = namespace(&k, "tokenreview");
    k.ok(&["-n", &ns, "create", "serviceaccount", "bot"]);
    let sa_token = k.ok(&["-n", &ns, "create", "token", "bot"]);
    let r = review(&k, None, &token_review(sa_token.trim()));
    assert_eq!(
        r["status"]["user"]["username"],
        format!("system:serviceaccount:{ns}:bot"),
        "{r}"
    );

    // Reviewing tokens takes `create` on tokenreviews.
    let dir = tempfile::tempdir().unwrap();
    let nobody = user_kubectl(server, &dir, "token-nobody");
    let out = nobody.run_with_stdin(
        &["create", "--validate=false", "-f", "-", "-o", "json"],
        &token_review(token).to_string(),
    );
    assert!(
        out.stderr.contains("User \"token-nobody\" cannot create resource \"tokenreviews\" in API group \"authentication.k8s.io\" at the cluster scope"),
        "{out:?}"
    );
}

#[test]
fn a_subject_access_review_answers_for_the_named_user_by_rbac() {
    let server = shared_server();
    let k = server.kubectl();
    let ns = namespace(&k, "sar");
    k.ok(&[
        "-n",
        &ns,
        "create",
        "rolebinding",
        "carol-view",
        "--clusterrole=view",
        "--user=carol",
    ]);
    let sar = |verb: &str| {
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
               "spec": {"user": "carol", "resourceAttributes":
                   {"namespace": ns, "verb": verb, "resource": "pods"}}})
    };
    let r = review(&k, None, &sar("list"));
    assert_eq!(r["status"]["allowed"], true, "{r}");
    assert_eq!(
        r["status"]["reason"],
        format!(
            "RBAC: allowed by RoleBinding \"carol-view/{ns}\" of ClusterRole \"view\" to User \"carol\""
        )
    );
    let r = review(&k, None, &sar("create"));
    assert_eq!(r["status"]["allowed"], false, "{r}");

    // The local review is bound to its namespace.
    let local = |namespace: &str| {
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "LocalSubjectAccessReview",
               "metadata": {"namespace": ns},
               "spec": {"user": "carol", "resourceAttributes":
                   {"namespace": namespace, "verb": "get", "resource": "configmaps"}}})
    };
    let r = review(&k, Some(&ns), &local(""));
    assert_eq!(r["status"]["allowed"], true, "{r}");
    assert_eq!(r["spec"]["resourceAttributes"]["namespace"], ns.as_str());
    let out = k.run_with_stdin(
        &["-n", &ns, "create", "--validate=false", "-f", "-"],
        &local("default").to_string(),
    );
    assert!(
        out.stderr.contains("must match metadata.namespace"),
        "{out:?}"
    );

    // A subject is required.
    let out = k.run_with_stdin(
        &["create", "--validate=false", "-f", "-"],
        &json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}})
        .to_string(),
    );
    assert!(
        out.stderr
            .contains("at least one of user or group must be specified"),
        "{out:?}"
    );

    // Carol herself may not ask what others may do.
    let dir = tempfile::tempdir().unwrap();
    let carol = user_kubectl(server, &dir, "carol");
    let out = carol.run_with_stdin(
        &["create", "--validate=false", "-f", "-"],
        &sar("get").to_string(),
    );
    assert!(
        out.stderr
            .contains("User \"carol\" cannot create resource \"subjectaccessreviews\""),
        "{out:?}"
    );

    // Listed in discovery.
    let out = k.ok(&[
        "api-resources",
        "--api-group=authorization.k8s.io",
        "-o",
        "name",
    ]);
    for r in ["subjectaccessreviews", "localsubjectaccessreviews"] {
        assert!(out.lines().any(|l| l.starts_with(r)), "{out}");
    }
    let out = k.ok(&[
        "api-resources",
        "--api-group=authentication.k8s.io",
        "-o",
        "name",
    ]);
    assert!(out.lines().any(|l| l.starts_with("tokenreviews")), "{out}");
}

// --- events.k8s.io/v1 -----------------------------------------------------------

#[test]
fn an_event_is_one_object_in_core_v1_and_events_k8s_io() {
    let k = shared_server().kubectl();
    let ns = namespace(&k, "events-view");
    let now = "2026-12-05T10:00:00Z";
    let core = json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "web.core", "namespace": ns},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": "web", "namespace": ns},
        "reason": "Started", "message": "started from core", "type": "Normal",
        "source": {"component": "tester"}, "count": 3,
        "firstTimestamp": now, "lastTimestamp": now,
        "reportingComponent": "tester", "reportingInstance": "tester-1"});
    k.ok_with_stdin(
        &["create", "--validate=false", "-f", "-"],
        &core.to_string(),
    );
    let grouped = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "web.grouped", "namespace": ns},
        "regarding": {"apiVersion": "v1", "kind": "Pod", "name": "other", "namespace": ns},
        "reason": "Pulled", "note": "written through events.k8s.io", "type": "Warning",
        "action": "Pull", "eventTime": "2026-12-05T10:00:01.000000Z",
        "reportingController": "wkube.dev/tester", "reportingInstance": "tester-2"});
    k.ok_with_stdin(
        &["create", "--validate=false", "-f", "-"],
        &grouped.to_string(),
    );

    // Each seen through the other group.
    let v = json_of(&k, &["-n", &ns, "get", "events.events.k8s.io", "web.core"]);
    assert_eq!(v["apiVersion"], "events.k8s.io/v1");
    assert_eq!(v["regarding"]["name"], "web");
    assert_eq!(v["note"], "started from core");
    assert_eq!(v["reportingController"], "tester");
    assert_eq!(v["deprecatedSource"]["component"], "tester");
    assert_eq!(v["deprecatedCount"], 3);
    assert_eq!(v["deprecatedFirstTimestamp"], now);
    let c = json_of(&k, &["-n", &ns, "get", "events", "web.grouped"]);
    assert_eq!(c["apiVersion"], "v1");
    assert_eq!(c["involvedObject"]["name"], "other");
    assert_eq!(c["message"], "written through events.k8s.io");
    assert_eq!(c["reportingComponent"], "wkube.dev/tester");
    assert_eq!(c["action"], "Pull");

    // Listed in both, with a field selector over the group's own names.
    let out = k.ok(&["-n", &ns, "get", "events.events.k8s.io", "-o", "name"]);
    assert_eq!(out.lines().count(), 2, "{out}");
    let out = k.ok(&[
        "-n",
        &ns,
        "get",
        "events.events.k8s.io",
        "--field-selector",
        "regarding.name=other",
        "-o",
        "name",
    ]);
    assert_eq!(out.trim(), "event.events.k8s.io/web.grouped");
    let out = k.ok(&["-n", &ns, "events"]);
    assert!(
        out.contains("started from core") && out.contains("written through events.k8s.io"),
        "{out}"
    );

    // A patch through the group means the group's field names.
    k.ok(&[
        "-n",
        &ns,
        "patch",
        "events.events.k8s.io",
        "web.core",
        "--type=merge",
        "-p",
        r#"{"note": "patched"}"#,
    ]);
    let c = json_of(&k, &["-n", &ns, "get", "events", "web.core"]);
    assert_eq!(c["message"], "patched");
}

// --- ReplicationController and `get all` -----------------------------------------

/// Names of the pods in `ns` that are not being deleted, owned by a
/// `kind` named `owner`.
fn live_pods_of(k: &Kubectl, ns: &str, kind: &str, owner: &str) -> Vec<String> {
    let list = json_of(k, &["-n", ns, "get", "pods"]);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| {
            p["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|o| o["kind"] == kind && o["name"] == owner && o["controller"] == true)
        })
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_replication_controller_keeps_its_pods_and_scales() {
    let k = shared_server().kubectl();
    let ns = namespace(&k, "rc");
    // No selector: it defaults to the template's labels.
    let rc = json!({"apiVersion": "v1", "kind": "ReplicationController",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "hello:v1"}]}}}});
    let created = create_json(&k, &rc);
    assert_eq!(created["spec"]["selector"], json!({"app": "web"}));
    let deadline = std::time::Duration::from_secs(30);
    assert!(
        common::eventually(deadline, || live_pods_of(
            &k,
            &ns,
            "ReplicationController",
            "web"
        )
        .len()
            == 2),
        "{:?}",
        live_pods_of(&k, &ns, "ReplicationController", "web")
    );

    let out = k.ok(&["-n", &ns, "scale", "rc", "web", "--replicas=3"]);
    assert_eq!(out.trim(), "replicationcontroller/web scaled");
    assert!(common::eventually(deadline, || {
        live_pods_of(&k, &ns, "ReplicationController", "web").len() == 3
            && json_of(&k, &["-n", &ns, "get", "rc", "web"])["status"]["replicas"] == 3
    }));
    k.ok(&[
        "-n",
        &ns,
        "scale",
        "replicationcontroller",
        "web",
        "--replicas=1",
    ]);
    assert!(common::eventually(deadline, || {
        live_pods_of(&k, &ns, "ReplicationController", "web").len() == 1
    }));
    let out = k.ok(&["-n", &ns, "get", "rc"]);
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        "{out}"
    );

    // A selector that misses the template is refused.
    let mut bad = rc.clone();
    bad["metadata"]["name"] = json!("bad");
    bad["spec"]["selector"] = json!({"app": "other"});
    let out = k.run_with_stdin(&["create", "--validate=false", "-f", "-"], &bad.to_string());
    assert!(
        out.stderr
            .contains("`selector` does not match template `labels`"),
        "{out:?}"
    );
}

#[test]
fn get_all_lists_the_workload_kinds_and_nothing_else() {
    let k = shared_server().kubectl();
    let ns = namespace(&k, "get-all");
    let n = ["-n", ns.as_str()];
    let with_ns =
        |args: &[&str]| -> Vec<String> { n.iter().chain(args).map(|s| s.to_string()).collect() };
    for args in [
        &["create", "deployment", "web", "--image=hello:v1"][..],
        &["create", "service", "clusterip", "web", "--tcp=80:8080"],
        &["create", "job", "once", "--image=hello:v1"],
        &[
            "create",
            "cronjob",
            "nightly",
            "--image=hello:v1",
            "--schedule=0 0 * * *",
        ],
        &["autoscale", "deployment", "web", "--max=3"],
        &[
            "create",
            "configmap",
            "not-a-workload",
            "--from-literal=a=b",
        ],
    ] {
        let args = with_ns(args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        k.ok(&args);
    }
    let rc = json!({"apiVersion": "v1", "kind": "ReplicationController",
        "metadata": {"name": "old", "namespace": ns},
        "spec": {"replicas": 0, "selector": {"app": "old"},
            "template": {"metadata": {"labels": {"app": "old"}},
            "spec": {"containers": [{"name": "old", "image": "hello:v1"}]}}}});
    create_json(&k, &rc);

    let expected = [
        "pod/",
        "service/web",
        "replicationcontroller/old",
        "deployment.apps/web",
        "replicaset.apps/web-",
        "job.batch/once",
        "cronjob.batch/nightly",
        "horizontalpodautoscaler.autoscaling/web",
    ];
    let mut out = String::new();
    let all_there = common::eventually(std::time::Duration::from_secs(30), || {
        out = k.ok(&["-n", &ns, "get", "all", "-o", "name"]);
        expected
            .iter()
            .all(|e| out.lines().any(|l| l.starts_with(e)))
    });
    assert!(all_there, "{out}");
    assert!(!out.contains("configmap"), "{out}");
}

// --- APIService ---------------------------------------------------------------

#[test]
fn every_served_group_version_is_a_local_available_apiservice() {
    let k = shared_server().kubectl();
    let out = k.ok(&["get", "apiservices"]);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "SERVICE", "AVAILABLE", "AGE"], "{out}");
    for name in [
        "v1.",
        "v1.apps",
        "v2.autoscaling",
        "v1.autoscaling",
        "v1.scheduling.k8s.io",
        "v1.events.k8s.io",
        "v1.apiregistration.k8s.io",
    ] {
        assert!(
            rows.iter()
                .any(|r| r[0] == name && r[1] == "Local" && r[2] == "True"),
            "{name} in\n{out}"
        );
    }
    let v = json_of(&k, &["get", "apiservice", "v1.apps"]);
    assert_eq!(v["spec"]["group"], "apps");
    assert_eq!(v["status"]["conditions"][0]["type"], "Available");
    assert_eq!(v["status"]["conditions"][0]["reason"], "Local");
    let out = k.ok(&[
        "api-resources",
        "--api-group=apiregistration.k8s.io",
        "-o",
        "name",
    ]);
    assert_eq!(out.trim(), "apiservices.apiregistration.k8s.io");
}

// --- storage -----------------------------------------------------------------

#[test]
fn a_claim_stays_pending_saying_wasm_pods_mount_no_volumes() {
    let k = shared_server().kubectl();
    let ns = namespace(&k, "storage");
    let sc = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "apikinds-fast"}, "provisioner": "example.com/fast"});
    create_json(&k, &sc);
    let out = k.ok(&["get", "sc", "apikinds-fast"]);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "NAME",
            "PROVISIONER",
            "RECLAIMPOLICY",
            "VOLUMEBINDINGMODE",
            "ALLOWVOLUMEEXPANSION",
            "AGE"
        ],
        "{out}"
    );
    assert_eq!(
        rows[1][..5],
        [
            "apikinds-fast",
            "example.com/fast",
            "Delete",
            "Immediate",
            "false"
        ]
    );

    let pv = json!({"apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "apikinds-pv"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "hostPath": {"path": "/tmp/pv"}}});
    let created = create_json(&k, &pv);
    assert_eq!(created["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    let out = k.ok(&["get", "pv", "apikinds-pv", "--no-headers"]);
    assert!(
        out.contains("1Gi") && out.contains("RWO") && out.contains("Available"),
        "{out}"
    );

    let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": ns},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "apikinds-fast",
                 "resources": {"requests": {"storage": "1Gi"}}}});
    create_json(&k, &pvc);
    let out = k.ok(&["-n", &ns, "get", "pvc", "data", "--no-headers"]);
    assert!(out.split_whitespace().nth(1) == Some("Pending"), "{out}");
    let c = json_of(&k, &["-n", &ns, "get", "pvc", "data"]);
    let message = c["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap_or("");
    assert!(message.contains("mount no block"), "{c}");

    // Kubernetes' validation: a claim needs an access mode and a size.
    let bad = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "bad", "namespace": ns}, "spec": {}});
    let out = k.run_with_stdin(&["create", "--validate=false", "-f", "-"], &bad.to_string());
    assert!(
        out.stderr
            .contains("spec.accessModes: Required value: at least 1 access mode is required")
            && out
                .stderr
                .contains("spec.resources[storage]: Required value"),
        "{out:?}"
    );
}

// --- discovery and OpenAPI of the new kinds ---------------------------------------

#[test]
fn explain_and_api_resources_know_the_new_kinds() {
    let k = shared_server().kubectl();
    let out = k.ok(&["api-resources", "-o", "wide"]);
    for (name, short) in [
        ("priorityclasses", "pc"),
        ("replicationcontrollers", "rc"),
        ("persistentvolumeclaims", "pvc"),
        ("persistentvolumes", "pv"),
        ("storageclasses", "sc"),
    ] {
        assert!(
            out.lines().any(|l| {
                let c: Vec<&str> = l.split_whitespace().collect();
                c.first() == Some(&name) && c.get(1) == Some(&short)
            }),
            "{name} ({short}) in\n{out}"
        );
    }
    for (kind, field) in [
        ("priorityclass", "preemptionPolicy"),
        ("replicationcontroller.spec", "selector"),
        ("persistentvolumeclaim.spec", "accessModes"),
        ("storageclass", "provisioner"),
        ("apiservice.spec", "groupPriorityMinimum"),
    ] {
        let out = k.ok(&["explain", kind]);
        assert!(out.contains(field), "explain {kind}:\n{out}");
    }
}
