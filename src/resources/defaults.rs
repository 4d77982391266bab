//! Defaulting as Kubernetes does it on create and update, for the fields
//! clients rely on seeing (kubectl, the Python client's strict decoding).

use serde_json::{Value, json};

fn set_default(obj: &mut Value, field: &str, value: Value) {
    if let Some(map) = obj.as_object_mut() {
        map.entry(field.to_string()).or_insert(value);
    }
}

fn default_pod_spec(spec: &mut Value) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    for list in ["initContainers", "containers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
                set_default(c, "terminationMessagePolicy", json!("File"));
                set_default(c, "imagePullPolicy", json!("IfNotPresent"));
                set_default(c, "resources", json!({}));
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        set_default(p, "protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

fn default_template(obj: &mut Value) {
    if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
        default_pod_spec(spec);
    }
}

/// Apply the defaults of `kind` to `obj`.
pub fn apply(kind: &str, obj: &mut Value) {
    match kind {
        "Pod" => {
            if let Some(spec) = obj.get_mut("spec") {
                default_pod_spec(spec);
            }
        }
        "Deployment" => {
            default_template(obj);
            if let Some(spec) = obj.get_mut("spec") {
                set_default(spec, "replicas", json!(1));
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(spec, "progressDeadlineSeconds", json!(600));
                set_default(
                    spec,
                    "strategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
                );
            }
        }
        "ReplicaSet" => {
            default_template(obj);
            if let Some(spec) = obj.get_mut("spec") {
                set_default(spec, "replicas", json!(1));
            }
        }
        "Job" => {
            default_template(obj);
            if let Some(spec) = obj.get_mut("spec") {
                set_default(spec, "backoffLimit", json!(6));
                set_default(spec, "completions", json!(1));
                set_default(spec, "parallelism", json!(1));
                set_default(spec, "completionMode", json!("NonIndexed"));
                set_default(spec, "suspend", json!(false));
            }
        }
        "Service" => {
            if let Some(spec) = obj.get_mut("spec") {
                set_default(spec, "type", json!("ClusterIP"));
                set_default(spec, "sessionAffinity", json!("None"));
                if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        set_default(p, "protocol", json!("TCP"));
                        if p.get("targetPort").is_none()
                            && let Some(port) = p.get("port").cloned()
                        {
                            p["targetPort"] = port;
                        }
                    }
                }
            }
        }
        "Secret" => set_default(obj, "type", json!("Opaque")),
        "Namespace" => {
            set_default(obj, "spec", json!({"finalizers": ["kubernetes"]}));
            set_default(obj, "status", json!({"phase": "Active"}));
        }
        _ => {}
    }
}
