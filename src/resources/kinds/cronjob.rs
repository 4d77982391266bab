//! CronJob: a Job created on a schedule.

use k8s_openapi::api::batch::v1::CronJob as Object;
use serde_json::{Value, json};

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::cron::Schedule;
use crate::resources::defaults::{default_pod_spec, set_default};
use crate::resources::printer::{
    AGE, CONTAINERS, Column, IMAGES, NAME, age, age_of, col, name, none_if_empty, s,
    selector_string, template_containers, wide,
};
use crate::resources::validation::{
    FieldError, NameRule, non_negative, validate_job_restart_policy, validate_pod_spec,
};

pub struct CronJob;

impl KindSpec for CronJob {
    type Object = Object;
    const PLURAL: &'static str = "cronjobs";
    const SINGULAR: &'static str = "cronjob";
    const NAMESPACED: bool = true;
    const SHORT_NAMES: &'static [&'static str] = &["cj"];
    const CATEGORIES: &'static [&'static str] = &["all"];
    const SUBRESOURCES: &'static [Subresource] = &[Subresource::Status];
    const NAME_RULE: NameRule = NameRule::Subdomain;
    const COLUMNS: &'static [Column] = &[
        NAME,
        col("Schedule", "string", "The schedule in Cron format."),
        col("Timezone", "string", "The time zone of the schedule."),
        col("Suspend", "boolean", "Whether later runs are suspended."),
        col("Active", "integer", "The number of running jobs."),
        col("Last Schedule", "string", "When a job was last scheduled."),
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
    const IMMUTABLE: &'static [&'static str] = &[];
    const FIELD_SELECTORS: &'static [&'static str] = &[];
    const ALLOCATION: Allocation = Allocation::None;
    const DELETION: Deletion = Deletion::Immediate;
    const ACCESS: Access = Access::Workload;

    fn default(obj: &mut Value) {
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

    fn validate(obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        non_negative(
            obj,
            &[
                "spec.startingDeadlineSeconds",
                "spec.successfulJobsHistoryLimit",
                "spec.failedJobsHistoryLimit",
                "spec.jobTemplate.spec.parallelism",
                "spec.jobTemplate.spec.completions",
                "spec.jobTemplate.spec.backoffLimit",
            ],
            &mut errs,
        );
        // Its Jobs are named NAME-<minutes since the epoch> (11 more
        // characters) and must stay valid label values.
        if let Some(name) = obj.pointer("/metadata/name").and_then(Value::as_str)
            && name.len() > 52
        {
            errs.push(FieldError::invalid(
                "metadata.name",
                name,
                "must be no more than 52 characters",
            ));
        }
        match obj.pointer("/spec/schedule").and_then(Value::as_str) {
            None | Some("") => errs.push(FieldError::required("spec.schedule")),
            Some(schedule) => {
                if let Err(e) = Schedule::parse(schedule) {
                    errs.push(FieldError::invalid(
                        "spec.schedule",
                        schedule,
                        e.to_string(),
                    ));
                }
            }
        }
        if let Some(tz) = obj.pointer("/spec/timeZone").and_then(Value::as_str)
            && jiff::tz::TimeZone::get(tz).is_err()
        {
            errs.push(FieldError::invalid(
                "spec.timeZone",
                tz,
                "unknown time zone",
            ));
        }
        let path = "spec.jobTemplate.spec.template.spec";
        let spec = obj.pointer("/spec/jobTemplate/spec/template/spec");
        validate_pod_spec(spec, path, &mut errs);
        validate_job_restart_policy(spec, path, &mut errs);
        errs
    }

    fn cells(o: &Value) -> Vec<Value> {
        let template = o.pointer("/spec/jobTemplate").cloned().unwrap_or_default();
        let (c, i) = template_containers(&template);
        let last = o
            .pointer("/status/lastScheduleTime")
            .and_then(Value::as_str)
            .map_or_else(|| "<none>".to_string(), |t| age_of(Some(t)));
        let active = o
            .pointer("/status/active")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        vec![
            name(o),
            json!(s(o, "/spec/schedule")),
            json!(none_if_empty(s(o, "/spec/timeZone").to_string())),
            json!(
                o.pointer("/spec/suspend")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
            ),
            json!(active),
            json!(last),
            age(o),
            json!(c),
            json!(i),
            json!(selector_string(template.pointer("/spec/selector"))),
        ]
    }

    fn initial_status(_obj: &Value) -> Option<Value> {
        Some(json!({}))
    }

    fn on_create(_obj: &mut Value, _ctx: &CreateContext<'_>) -> Result<(), FieldError> {
        Ok(())
    }

    fn on_update(_old: &Value, _new: &mut Value) -> Result<(), FieldError> {
        Ok(())
    }
}
