//! Job: pods that run to completion, retried up to a limit.

use k8s_openapi::api::batch::v1::Job as Object;
use serde_json::{Value, json};

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::defaults::{default_template, job_selector, set_default};
use crate::resources::printer::{
    AGE, CONTAINERS, Column, IMAGES, NAME, age, age_of, col, human_duration, n, name, s,
    selector_string, template_containers, wide,
};
use crate::resources::validation::{
    FieldError, NameRule, non_negative, positive, validate_job_restart_policy, validate_pod_spec,
    validate_selector_matches_template,
};

pub struct Job;

impl KindSpec for Job {
    type Object = Object;
    const PLURAL: &'static str = "jobs";
    const SINGULAR: &'static str = "job";
    const NAMESPACED: bool = true;
    const SHORT_NAMES: &'static [&'static str] = &[];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [Subresource] = &[Subresource::Status];
    const NAME_RULE: NameRule = NameRule::Subdomain;
    const COLUMNS: &'static [Column] = &[
        NAME,
        col("Status", "string", "Status of the job."),
        col(
            "Completions",
            "string",
            "The desired number of successfully finished pods the job should be run with.",
        ),
        col("Duration", "string", "Time required to complete the job."),
        AGE,
        CONTAINERS,
        IMAGES,
        wide(
            "Selector",
            "string",
            "A label query over pods that should match the pod count.",
        ),
    ];
    const STATUS: StatusRule = StatusRule::Subresource;
    const IMMUTABLE: &'static [&'static str] =
        &["spec.selector", "spec.template", "spec.completionMode"];
    const FIELD_SELECTORS: &'static [&'static str] = &["status.successful"];
    const ALLOCATION: Allocation = Allocation::None;
    const DELETION: Deletion = Deletion::Immediate;
    const ACCESS: Access = Access::Workload;

    fn default(obj: &mut Value) {
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

    fn validate(obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        non_negative(
            obj,
            &[
                "spec.parallelism",
                "spec.completions",
                "spec.backoffLimit",
                "spec.ttlSecondsAfterFinished",
            ],
            &mut errs,
        );
        positive(obj, "spec.activeDeadlineSeconds", &mut errs);
        // Generated or hand-written (`manualSelector`), the selector
        // must pick the Job's own pods.
        validate_selector_matches_template(obj, &mut errs);
        validate_pod_spec(
            obj.pointer("/spec/template/spec"),
            "spec.template.spec",
            &mut errs,
        );
        validate_job_restart_policy(
            obj.pointer("/spec/template/spec"),
            "spec.template.spec",
            &mut errs,
        );
        errs
    }

    fn cells(o: &Value) -> Vec<Value> {
        let (c, i) = template_containers(o);
        let conds = o
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let is = |t: &str| {
            conds
                .iter()
                .any(|x| s(x, "/type") == t && s(x, "/status") == "True")
        };
        let status = if is("Complete") {
            "Complete"
        } else if is("Failed") {
            "Failed"
        } else if is("Suspended") {
            "Suspended"
        } else {
            "Running"
        };
        let completions = format!(
            "{}/{}",
            n(o, "/status/succeeded"),
            n(o, "/spec/completions").max(1)
        );
        let duration = match (
            o.pointer("/status/startTime").and_then(Value::as_str),
            o.pointer("/status/completionTime").and_then(Value::as_str),
        ) {
            (Some(started), None) => age_of(Some(started)),
            (Some(a), Some(b)) => {
                let p = |t: &str| {
                    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                        .ok()
                };
                match (p(a), p(b)) {
                    (Some(a), Some(b)) => human_duration((b - a).whole_seconds()),
                    _ => String::new(),
                }
            }
            _ => String::new(),
        };
        vec![
            name(o),
            json!(status),
            json!(completions),
            json!(duration),
            age(o),
            json!(c),
            json!(i),
            json!(selector_string(o.pointer("/spec/selector"))),
        ]
    }

    fn initial_status(_obj: &Value) -> Option<Value> {
        Some(json!({}))
    }

    fn on_create(obj: &mut Value, ctx: &CreateContext<'_>) -> Result<(), FieldError> {
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        job_selector(obj, ctx.uid, &name)
    }

    fn on_update(_old: &Value, _new: &mut Value) -> Result<(), FieldError> {
        Ok(())
    }
}
