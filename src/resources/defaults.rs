//! Defaulting as Kubernetes does it on create and update, for the fields
//! clients rely on seeing (kubectl, the Python client's strict decoding):
//! the pieces several kinds share. Each kind's own defaults are in its
//! file under `kinds/`.

use serde_json::{Value, json};

use super::validation::FieldError;

/// Set `field` of `obj` to `value` unless it is set.
pub fn set_default(obj: &mut Value, field: &str, value: Value) {
    if let Some(map) = obj.as_object_mut() {
        map.entry(field.to_string()).or_insert(value);
    }
}

/// The defaults of a pod spec, wherever it appears.
pub fn default_pod_spec(spec: &mut Value) {
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

/// The defaults of the pod template at `spec.template.spec`.
pub fn default_template(obj: &mut Value) {
    if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
        default_pod_spec(spec);
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
