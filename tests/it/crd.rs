//! CustomResourceDefinitions as a user drives them with stock kubectl:
//! a CRD's kind is served once Established, with its schema's pruning,
//! defaults and validation, printer columns, status and scale
//! subresources, two versions, `explain`, `edit` and `-w`; deleting the
//! CRD deletes its objects.

use std::time::Duration;

use crate::common;

use common::{Kubectl, shared_server};
use serde_json::{Value, json};

/// A CRD of kind Widget in `group`, served in v1 (stored) and v1beta1.
fn widget_crd(group: &str) -> Value {
    let schema = json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["size"],
                "properties": {
                    "size": {"type": "integer", "minimum": 0, "maximum": 100},
                    "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                },
            },
            "status": {
                "type": "object",
                "properties": {"size": {"type": "integer"}, "phase": {"type": "string"}},
            },
        },
    });
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{group}")},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wdg"]},
            "versions": [
                {
                    "name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": schema},
                    "additionalPrinterColumns": [
                        {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                        {"name": "Color", "type": "string", "jsonPath": ".spec.color"},
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "subresources": {
                        "status": {},
                        "scale": {"specReplicasPath": ".spec.size", "statusReplicasPath": ".status.size"},
                    },
                },
                {
                    "name": "v1beta1", "served": true, "storage": false,
                    "schema": {"openAPIV3Schema": schema},
                },
            ],
        },
    })
}

fn namespace(k: &Kubectl, name: &str) {
    k.ok(&["create", "namespace", name]);
}

fn install(k: &Kubectl, group: &str) {
    k.ok_with_stdin(&["apply", "-f", "-"], &widget_crd(group).to_string());
    k.ok(&[
        "wait",
        "--for",
        "condition=established",
        &format!("crd/widgets.{group}"),
        "--timeout=30s",
    ]);
}

#[track_caller]
fn json_of(k: &Kubectl, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = k.ok(&all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn a_crds_kind_is_served_with_its_schema_columns_subresources_and_versions() {
    let k = shared_server().kubectl();
    let group = "crd1.example.com";
    install(&k, group);
    namespace(&k, "crd1");
    let crd = json_of(&k, &["get", "crd", &format!("widgets.{group}")]);
    assert_eq!(crd["status"]["acceptedNames"]["kind"], "Widget", "{crd}");
    assert_eq!(crd["status"]["storedVersions"], json!(["v1"]), "{crd}");

    // Created with an undeclared field, which is pruned (kubectl warns
    // of it), and without a color, which is defaulted.
    let w = json!({
        "apiVersion": format!("{group}/v1"), "kind": "Widget",
        "metadata": {"name": "w1", "namespace": "crd1"},
        "spec": {"size": 2, "extra": "dropped", "free": {"kept": {"deep": [1, 2]}}},
    });
    let out = k.run_with_stdin(&["apply", "-f", "-"], &w.to_string());
    assert!(
        out.stderr
            .contains("strict decoding error: unknown field \"spec.extra\""),
        "{}",
        out.stderr
    );
    let out = k.run_with_stdin(&["apply", "--validate=warn", "-f", "-"], &w.to_string());
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stderr.contains("unknown field \"spec.extra\""),
        "{}",
        out.stderr
    );
    let got = json_of(&k, &["get", "widget", "w1", "-n", "crd1"]);
    assert_eq!(got["spec"]["color"], "red", "{got}");
    assert!(got["spec"].get("extra").is_none(), "{got}");
    assert_eq!(got["spec"]["free"]["kept"]["deep"], json!([1, 2]), "{got}");
    assert_eq!(got["metadata"]["generation"], 1, "{got}");

    // The printer columns, through the short name.
    let out = k.ok(&["get", "wdg", "-n", "crd1"]);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["NAME", "SIZE", "COLOR", "PHASE", "AGE"], "{out}");
    assert_eq!(&lines[1][..3], ["w1", "2", "red"], "{out}");

    // Validation names the field, as Kubernetes does.
    let bad = json!({
        "apiVersion": format!("{group}/v1"), "kind": "Widget",
        "metadata": {"name": "bad", "namespace": "crd1"},
        "spec": {"size": "big", "color": "green"},
    });
    let out = k.run_with_stdin(&["create", "--validate=false", "-f", "-"], &bad.to_string());
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("spec.size: Invalid value: \"big\": spec.size in body must be of type integer: \"string\""),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("spec.color: Unsupported value: \"green\""),
        "{}",
        out.stderr
    );
    let missing = json!({
        "apiVersion": format!("{group}/v1"), "kind": "Widget",
        "metadata": {"name": "bad", "namespace": "crd1"}, "spec": {},
    });
    let out = k.run_with_stdin(
        &["create", "--validate=false", "-f", "-"],
        &missing.to_string(),
    );
    assert!(
        out.stderr.contains("spec.size: Required value"),
        "{}",
        out.stderr
    );

    // explain reads the schema from the OpenAPI documents.
    let out = k.ok(&["explain", "widgets.spec"]);
    assert!(out.contains("size") && out.contains("color"), "{out}");

    // The scale subresource, through its paths.
    k.ok(&["scale", "widget", "w1", "-n", "crd1", "--replicas=5"]);
    let got = json_of(&k, &["get", "widget", "w1", "-n", "crd1"]);
    assert_eq!(got["spec"]["size"], 5, "{got}");
    assert_eq!(got["metadata"]["generation"], 2, "{got}");

    // The status subresource: only it writes status.
    k.ok(&[
        "patch",
        "widget",
        "w1",
        "-n",
        "crd1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"size":5,"phase":"Ready"}}"#,
    ]);
    k.ok(&[
        "patch",
        "widget",
        "w1",
        "-n",
        "crd1",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Hacked"}}"#,
    ]);
    let got = json_of(&k, &["get", "widget", "w1", "-n", "crd1"]);
    assert_eq!(got["status"]["phase"], "Ready", "{got}");
    let scale: Value = serde_json::from_str(&k.ok(&[
        "get",
        "--raw",
        &format!("/apis/{group}/v1/namespaces/crd1/widgets/w1/scale"),
    ]))
    .unwrap();
    assert_eq!(scale["spec"]["replicas"], 5, "{scale}");
    assert_eq!(scale["status"]["replicas"], 5, "{scale}");

    // The same object in the other served version.
    let beta = json_of(
        &k,
        &[
            "get",
            &format!("widgets.v1beta1.{group}"),
            "w1",
            "-n",
            "crd1",
        ],
    );
    assert_eq!(beta["apiVersion"], format!("{group}/v1beta1"), "{beta}");
    assert_eq!(beta["spec"]["size"], 5, "{beta}");
    let list = json_of(
        &k,
        &["get", &format!("widgets.v1beta1.{group}"), "-n", "crd1"],
    );
    assert_eq!(
        list["items"][0]["apiVersion"],
        format!("{group}/v1beta1"),
        "{list}"
    );

    // -w shows a change; edit goes through a merge patch.
    let mut watch = k.spawn_lines(&[
        "get",
        "widgets",
        "-n",
        "crd1",
        "-w",
        "--output-watch-events",
    ]);
    let header = watch.next_line(Duration::from_secs(20));
    assert!(header.starts_with("EVENT"), "{header}");
    let first = watch.next_line(Duration::from_secs(20));
    assert!(first.contains("ADDED") && first.contains("w1"), "{first}");
    let mut edit = k.command(&["edit", "widget", "w1", "-n", "crd1"]);
    edit.env("KUBE_EDITOR", "sed -i s/color:\\ red/color:\\ blue/");
    let out = common::run(edit, None, Duration::from_secs(60));
    assert!(out.status.success(), "{}", out.stderr);
    let changed = watch.next_line(Duration::from_secs(20));
    assert!(
        changed.contains("MODIFIED") && changed.contains("blue"),
        "{changed}"
    );
    assert_eq!(
        json_of(&k, &["get", "widget", "w1", "-n", "crd1"])["spec"]["color"],
        "blue"
    );

    // Applying the same object again changes nothing.
    let w2 = json!({
        "apiVersion": format!("{group}/v1"), "kind": "Widget",
        "metadata": {"name": "w2", "namespace": "crd1"}, "spec": {"size": 1},
    });
    k.ok_with_stdin(&["apply", "-f", "-"], &w2.to_string());
    let out = k.ok_with_stdin(&["apply", "-f", "-"], &w2.to_string());
    assert!(out.contains("unchanged"), "{out}");
}

#[test]
fn deleting_a_crd_deletes_its_objects_and_stops_serving_its_kind() {
    let k = shared_server().kubectl();
    let group = "crd2.example.com";
    install(&k, group);
    namespace(&k, "crd2");
    for name in ["a", "b"] {
        let w = json!({
            "apiVersion": format!("{group}/v1"), "kind": "Widget",
            "metadata": {"name": name, "namespace": "crd2"}, "spec": {"size": 1},
        });
        k.ok_with_stdin(&["create", "-f", "-"], &w.to_string());
    }
    k.ok(&[
        "delete",
        "crd",
        &format!("widgets.{group}"),
        "--timeout=60s",
    ]);
    let err = k.fails(&["get", &format!("widgets.{group}"), "-n", "crd2"]);
    assert!(err.contains("doesn't have a resource type"), "{err}");
    // Defined again, the kind starts empty: the old objects were deleted.
    install(&k, group);
    let out = k.run(&["get", &format!("widgets.{group}"), "-n", "crd2"]);
    assert!(
        out.stderr.contains("No resources found"),
        "{} {}",
        out.stdout,
        out.stderr
    );
}

#[test]
fn a_crd_that_is_not_structural_or_names_itself_wrongly_is_refused() {
    let k = shared_server().kubectl();
    let mut crd = widget_crd("crd3.example.com");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["size"] =
        json!({});
    let out = k.run_with_stdin(&["create", "-f", "-"], &crd.to_string());
    assert!(
        out.stderr.contains("spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[size].type: Required value"),
        "{}",
        out.stderr
    );
    let mut crd = widget_crd("crd3.example.com");
    crd["metadata"]["name"] = json!("gadgets.crd3.example.com");
    let out = k.run_with_stdin(&["create", "-f", "-"], &crd.to_string());
    assert!(
        out.stderr.contains("metadata.name: Invalid value"),
        "{}",
        out.stderr
    );
    // Only cluster administrators may define kinds.
    let out = k.run(&[
        "auth",
        "can-i",
        "create",
        "customresourcedefinitions",
        "--as",
        "someone",
    ]);
    assert_eq!(out.stdout.trim(), "no", "{}", out.stderr);
}
