//! Server-side apply with field ownership, driven with stock kubectl: who
//! set a field is recorded in managedFields; applying over another
//! manager's field is a conflict naming both until forced; a field no
//! longer applied is removed; and what others own stays.

use crate::common;

use common::{Kubectl, shared_server};
use serde_json::Value;

fn manifest(ns: &str, replicas: Option<u32>, env: bool) -> String {
    let replicas = replicas.map_or(String::new(), |r| format!("  replicas: {r}\n"));
    let env = if env {
        "        env:\n        - {name: MODE, value: fast}\n"
    } else {
        ""
    };
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {ns}
  labels: {{app: web}}
spec:
{replicas}  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers:
      - name: web
        image: hello:v1
{env}"#
    )
}

fn deployment(k: &Kubectl, ns: &str) -> Value {
    serde_json::from_str(&k.ok(&[
        "-n",
        ns,
        "get",
        "deployment",
        "web",
        "-o",
        "json",
        "--show-managed-fields",
    ]))
    .unwrap()
}

/// The managers owning `.spec.replicas`.
fn replica_owners(d: &Value) -> Vec<String> {
    d["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["fieldsV1"]["f:spec"].get("f:replicas").is_some())
        .map(|e| {
            format!(
                "{}/{}",
                e["manager"].as_str().unwrap(),
                e["operation"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn server_side_apply_follows_field_ownership() {
    let k = shared_server().kubectl();
    let ns = "ssa-owners";
    k.ok(&["create", "namespace", ns]);
    let apply = |m: &str, extra: &[&str]| {
        let mut args = vec!["apply", "--server-side", "-f", "-"];
        args.extend_from_slice(extra);
        k.run_with_stdin(&args, m)
    };

    let out = apply(&manifest(ns, Some(2), true), &[]);
    assert!(out.status.success(), "{out:?}");
    let d = deployment(&k, ns);
    assert_eq!(replica_owners(&d), ["kubectl/Apply"], "{}", d["metadata"]);
    let applied = d["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["operation"] == "Apply")
        .unwrap()
        .clone();
    assert_eq!(applied["fieldsType"], "FieldsV1");
    assert!(
        applied["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]
            .get("k:{\"name\":\"web\"}")
            .is_some(),
        "{applied}"
    );

    // Another manager takes replicas by an ordinary update.
    k.ok(&[
        "-n",
        ns,
        "patch",
        "deployment",
        "web",
        "--field-manager=autoscaler",
        "-p",
        r#"{"spec":{"replicas":5}}"#,
    ]);
    assert_eq!(replica_owners(&deployment(&k, ns)), ["autoscaler/Update"]);

    // Applying replicas 2 again now conflicts, naming the manager and field.
    let out = apply(&manifest(ns, Some(2), true), &[]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        out.stderr.contains("conflict with \"autoscaler\"")
            && out.stderr.contains(".spec.replicas"),
        "{}",
        out.stderr
    );
    assert_eq!(deployment(&k, ns)["spec"]["replicas"], 5);

    // Applying without replicas (leaving them to the autoscaler) and
    // without the env var: replicas stay 5, the env var goes.
    let out = apply(&manifest(ns, None, false), &[]);
    assert!(out.status.success(), "{out:?}");
    let d = deployment(&k, ns);
    assert_eq!(d["spec"]["replicas"], 5);
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert!(c.get("env").is_none(), "{c}");
    assert_eq!(c["image"], "hello:v1");

    // Forced, the apply takes replicas back.
    let out = apply(&manifest(ns, Some(3), false), &["--force-conflicts"]);
    assert!(out.status.success(), "{out:?}");
    let d = deployment(&k, ns);
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(replica_owners(&d), ["kubectl/Apply"]);

    // Applied again unchanged: nothing is written.
    let rv = d["metadata"]["resourceVersion"].clone();
    let out = apply(&manifest(ns, Some(3), false), &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(deployment(&k, ns)["metadata"]["resourceVersion"], rv);

    // A hostile field manager is refused.
    let long = format!("--field-manager={}", "m".repeat(200));
    let out = apply(&manifest(ns, Some(3), false), &[&long]);
    assert!(!out.status.success(), "{out:?}");
}
