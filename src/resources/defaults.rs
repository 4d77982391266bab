//! Defaulting as Kubernetes does it on create and update, for the fields
//! clients rely on seeing (kubectl, the Python client's strict decoding).

use serde_json::{Value, json};

use super::validation::FieldError;

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
                // Without either, a Job runs one pod to completion; with
                // only `parallelism` it is a work queue (no completions).
                if spec.get("parallelism").is_none() && spec.get("completions").is_none() {
                    set_default(spec, "completions", json!(1));
                }
                set_default(spec, "parallelism", json!(1));
                set_default(spec, "completionMode", json!("NonIndexed"));
                set_default(spec, "suspend", json!(false));
                set_default(spec, "manualSelector", json!(false));
                set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
            }
        }
        "CronJob" => {
            if let Some(spec) = obj.pointer_mut("/spec/jobTemplate/spec/template/spec") {
                default_pod_spec(spec);
            }
            if let Some(spec) = obj.get_mut("spec") {
                set_default(spec, "concurrencyPolicy", json!("Allow"));
                set_default(spec, "suspend", json!(false));
                set_default(spec, "successfulJobsHistoryLimit", json!(3));
                set_default(spec, "failedJobsHistoryLimit", json!(1));
            }
        }
        "DaemonSet" => {
            default_template(obj);
            if let Some(spec) = obj.get_mut("spec") {
                set_default(spec, "revisionHistoryLimit", json!(10));
                set_default(
                    spec,
                    "updateStrategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
                );
                if let Some(strategy) = spec.get_mut("updateStrategy")
                    && strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate")
                {
                    set_default(
                        strategy,
                        "rollingUpdate",
                        json!({"maxUnavailable": 1, "maxSurge": 0}),
                    );
                    if let Some(ru) = strategy.get_mut("rollingUpdate") {
                        set_default(ru, "maxUnavailable", json!(1));
                        set_default(ru, "maxSurge", json!(0));
                    }
                }
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

/// The labels a Job's pods carry, which its generated selector picks.
pub const JOB_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// The older spellings, still set so selectors written against them work.
pub const LEGACY_JOB_UID_LABEL: &str = "controller-uid";
pub const LEGACY_JOB_NAME_LABEL: &str = "job-name";

/// On create of a Job without `manualSelector: true`, the selector is the
/// Job's own uid and the template carries the matching labels (plus the
/// Job's name), so a Job never adopts another's pods. A selector the user
/// wrote is refused unless it is exactly the generated one.
///
/// # Errors
/// The field error for a hand-written selector without `manualSelector`.
pub fn job_selector(obj: &mut Value, uid: &str, name: &str) -> Result<(), FieldError> {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    if spec.get("manualSelector").and_then(Value::as_bool) == Some(true) {
        return Ok(());
    }
    let generated = json!({"matchLabels": {JOB_UID_LABEL: uid}});
    match spec.get("selector") {
        None | Some(Value::Null) => {}
        Some(given) if *given == generated => {}
        Some(given) => {
            return Err(FieldError::invalid(
                "spec.selector",
                given.to_string(),
                "`selector` will be auto-generated",
            ));
        }
    }
    spec.insert("selector".into(), generated);
    let template = spec
        .entry("template")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    if let Some(template) = template {
        let meta = template.entry("metadata").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if let Some(labels) = labels.as_object_mut() {
                for (k, v) in [
                    (LEGACY_JOB_UID_LABEL, uid),
                    (LEGACY_JOB_NAME_LABEL, name),
                    (JOB_UID_LABEL, uid),
                    (JOB_NAME_LABEL, name),
                ] {
                    labels.insert(k.into(), json!(v));
                }
            }
        }
    }
    Ok(())
}
