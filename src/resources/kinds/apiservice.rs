//! APIService (`apiregistration.k8s.io/v1`): the group-versions the API
//! server answers. As kube-apiserver does, the server registers one local
//! APIService per built-in group-version at start (`api::bootstrap`),
//! each `Available`. wkube does not proxy to aggregated API servers, so an
//! APIService that names a `service` is stored but reported unavailable,
//! saying why.

use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService as Object;
use serde_json::{Value, json};

use super::{Access, Allocation, CreateContext, Deletion, KindSpec, StatusRule};
use crate::resources::Subresource;
use crate::resources::printer::{AGE, Column, NAME, age, col, name, s};
use crate::resources::validation::{FieldError, NameRule};

pub struct ApiService;

/// `groupPriorityMinimum` and `versionPriority` of a built-in group, as
/// kube-apiserver ranks its own (unknown groups come last).
pub fn priorities(group: &str, version: &str) -> (i64, i64) {
    let group_priority = match group {
        "" => 18000,
        "apps" => 17800,
        "events.k8s.io" => 17750,
        "authentication.k8s.io" => 17700,
        "authorization.k8s.io" => 17600,
        "autoscaling" => 17500,
        "batch" => 17400,
        "rbac.authorization.k8s.io" => 17000,
        "scheduling.k8s.io" => 16600,
        "coordination.k8s.io" => 16500,
        "discovery.k8s.io" => 16200,
        "apiregistration.k8s.io" => 18000,
        _ => 1000,
    };
    // Later versions of one group rank higher.
    let version_priority = match version {
        "v2" => 30,
        "v1" => 15,
        _ => 9,
    };
    (group_priority, version_priority)
}

/// The local APIService of a built-in group-version.
pub fn local(group: &str, version: &str) -> Value {
    let (gp, vp) = priorities(group, version);
    json!({
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": format!("{version}.{group}"),
            "labels": {"kube-aggregator.kubernetes.io/automanaged": "onstart"}},
        "spec": {"group": group, "version": version,
            "groupPriorityMinimum": gp, "versionPriority": vp},
    })
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

impl KindSpec for ApiService {
    type Object = Object;
    const PLURAL: &'static str = "apiservices";
    const SINGULAR: &'static str = "apiservice";
    const NAMESPACED: bool = false;
    const SHORT_NAMES: &'static [&'static str] = &[];
    const CATEGORIES: &'static [&'static str] = &["api-extensions"];
    const SUBRESOURCES: &'static [Subresource] = &[Subresource::Status];
    // `v1.` is the core group's: the name is checked against the spec in
    // `validate` instead.
    const NAME_RULE: NameRule = NameRule::Path;
    const COLUMNS: &'static [Column] = &[
        NAME,
        col("Service", "string", "The reference to the service that hosts this API endpoint."),
        col("Available", "string", "Whether this service is available."),
        AGE,
    ];
    const STATUS: StatusRule = StatusRule::Subresource;
    const IMMUTABLE: &'static [&'static str] = &[];
    const FIELD_SELECTORS: &'static [&'static str] = &[];
    const ALLOCATION: Allocation = Allocation::None;
    const DELETION: Deletion = Deletion::Immediate;
    // Everybody who may read may see what is served; only cluster
    // administrators write.
    const ACCESS: Access = Access::ReadOnly;

    fn default(_obj: &mut Value) {}

    fn validate(obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let version = s(obj, "/spec/version");
        if version.is_empty() {
            errs.push(FieldError::required("spec.version"));
        }
        let want = format!("{version}.{}", s(obj, "/spec/group"));
        let name = s(obj, "/metadata/name");
        if !version.is_empty() && name != want {
            errs.push(FieldError::invalid(
                "metadata.name",
                name,
                format!("must be {want}"),
            ));
        }
        for (field, max) in [("groupPriorityMinimum", 20000), ("versionPriority", 1000)] {
            let v = obj
                .pointer(&format!("/spec/{field}"))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if !(1..=max).contains(&v) {
                errs.push(FieldError::invalid(
                    format!("spec.{field}"),
                    v.to_string(),
                    format!("must be positive and less than {max}"),
                ));
            }
        }
        errs
    }

    fn cells(o: &Value) -> Vec<Value> {
        let service = match o.pointer("/spec/service").filter(|v| v.is_object()) {
            Some(svc) => format!("{}/{}", s(svc, "/namespace"), s(svc, "/name")),
            None => "Local".to_string(),
        };
        let available = o
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Available"))
            .map_or("Unknown".to_string(), |c| match s(c, "/status") {
                "True" => "True".to_string(),
                other => format!("{other} ({})", s(c, "/reason")),
            });
        vec![name(o), json!(service), json!(available), age(o)]
    }

    /// Local group-versions are served by this server, so available; a
    /// remote one never is, as nothing proxies to it.
    fn initial_status(obj: &Value) -> Option<Value> {
        let condition = if obj.pointer("/spec/service").is_none_or(Value::is_null) {
            json!({"type": "Available", "status": "True", "reason": "Local",
                "message": "Local APIServices are always available", "lastTransitionTime": now()})
        } else {
            json!({"type": "Available", "status": "False", "reason": "ServiceNotFound",
                "message": "wkube does not proxy to aggregated API servers", "lastTransitionTime": now()})
        };
        Some(json!({"conditions": [condition]}))
    }

    fn on_create(_obj: &mut Value, _ctx: &CreateContext<'_>) -> Result<(), FieldError> {
        Ok(())
    }

    fn on_update(_old: &Value, _new: &mut Value) -> Result<(), FieldError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_service_is_valid_and_available() {
        let o = local("apps", "v1");
        assert_eq!(o["metadata"]["name"], "v1.apps");
        assert!(ApiService::validate(&o).is_empty());
        let mut o = o;
        o["status"] = ApiService::initial_status(&o).unwrap();
        let cells = ApiService::cells(&o);
        assert_eq!(cells[1], "Local");
        assert_eq!(cells[2], "True");
    }

    #[test]
    fn the_name_must_be_version_dot_group() {
        let mut o = local("apps", "v1");
        o["metadata"]["name"] = json!("apps");
        let errs = ApiService::validate(&o);
        assert!(errs[0].message().contains("must be v1.apps"));
    }
}
