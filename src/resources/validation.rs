//! Validation as Kubernetes does it: every problem is a [`FieldError`]
//! naming the field path, and the API server joins them into one 422
//! `Status` (`Pod "x" is invalid: spec.containers[0].image: Required value`).

use serde_json::Value;

/// What is wrong with a field (Kubernetes' `field.ErrorType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldErrorKind {
    Required,
    Invalid,
    NotSupported,
    Duplicate,
    Forbidden,
    TooLong,
    TooMany,
}

impl FieldErrorKind {
    /// The reason string Kubernetes puts in `details.causes[].reason`.
    pub fn reason(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::TooMany => "FieldValueTooMany",
        }
    }
}

/// One problem with one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub kind: FieldErrorKind,
    /// Dotted path, e.g. `spec.containers[0].image`.
    pub field: String,
    /// The offending value, rendered, when there is one.
    pub value: Option<String>,
    pub detail: String,
}

impl FieldError {
    pub fn required(field: impl Into<String>) -> Self {
        FieldError {
            kind: FieldErrorKind::Required,
            field: field.into(),
            value: None,
            detail: String::new(),
        }
    }

    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            kind: FieldErrorKind::Invalid,
            field: field.into(),
            value: Some(value.into()),
            detail: detail.into(),
        }
    }

    /// A value outside a closed set, listing the set as Kubernetes does.
    pub fn not_supported(
        field: impl Into<String>,
        value: impl Into<String>,
        allowed: &[&str],
    ) -> Self {
        let list: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
        FieldError {
            kind: FieldErrorKind::NotSupported,
            field: field.into(),
            value: Some(value.into()),
            detail: format!("supported values: {}", list.join(", ")),
        }
    }

    /// A field the object may not have (or not have so).
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            kind: FieldErrorKind::Forbidden,
            field: field.into(),
            value: None,
            detail: detail.into(),
        }
    }

    /// Rendered as Kubernetes renders a field error.
    pub fn message(&self) -> String {
        let what = match self.kind {
            FieldErrorKind::Required => "Required value".to_string(),
            FieldErrorKind::Invalid => match &self.value {
                Some(v) => format!("Invalid value: {v:?}"),
                None => "Invalid value".to_string(),
            },
            FieldErrorKind::NotSupported => match &self.value {
                Some(v) => format!("Unsupported value: {v:?}"),
                None => "Unsupported value".to_string(),
            },
            FieldErrorKind::Duplicate => match &self.value {
                Some(v) => format!("Duplicate value: {v:?}"),
                None => "Duplicate value".to_string(),
            },
            FieldErrorKind::Forbidden => "Forbidden".to_string(),
            FieldErrorKind::TooLong => "Too long".to_string(),
            FieldErrorKind::TooMany => match &self.value {
                Some(v) => format!("Too many: {v}"),
                None => "Too many".to_string(),
            },
        };
        if self.detail.is_empty() {
            format!("{}: {}", self.field, what)
        } else {
            format!("{}: {}: {}", self.field, what, self.detail)
        }
    }
}

const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// RFC 1035 label (Service names): a DNS-1123 label starting with a letter.
/// A host name as Ingress rules and Gateway listeners and routes take it:
/// a DNS subdomain, optionally with one leading `*.`
/// label, and never an IP address.
pub fn validate_host(host: &str, field: &str, errs: &mut Vec<FieldError>) {
    if host.parse::<std::net::IpAddr>().is_ok() {
        errs.push(FieldError::invalid(
            field,
            host.to_string(),
            "must be a DNS name, not an IP address",
        ));
        return;
    }
    let bare = host.strip_prefix("*.").unwrap_or(host);
    if !is_dns1123_subdomain(bare) {
        let detail = if host.starts_with('*') {
            "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character"
        } else {
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        };
        errs.push(FieldError::invalid(field, host.to_string(), detail));
    }
}

pub fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

/// How a kind's object names are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    Subdomain,
    Label,
    Dns1035,
    /// RBAC names and the like: anything without `/` or `%`.
    Path,
}

/// Problems with a name under `rule`, as messages without the field.
pub fn check_name(rule: NameRule, name: &str) -> Option<String> {
    match rule {
        NameRule::Subdomain if !is_dns1123_subdomain(name) => Some(DNS1123_SUBDOMAIN_MSG.into()),
        NameRule::Label if !is_dns1123_label(name) => Some(DNS1123_LABEL_MSG.into()),
        NameRule::Dns1035 if !is_dns1035_label(name) => Some(DNS1035_LABEL_MSG.into()),
        NameRule::Path if name == "." || name == ".." => Some(format!("may not be '{name}'")),
        NameRule::Path if name.contains('/') => Some("may not contain '/'".into()),
        NameRule::Path if name.contains('%') => Some("may not contain '%'".into()),
        _ => None,
    }
}

fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix
        && !is_dns1123_subdomain(p)
    {
        return false;
    }
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric())
}

/// Validate `metadata`: labels and annotations keys and values.
pub fn validate_metadata(meta: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(labels) = meta.get("labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if !is_qualified_name(k) {
                errs.push(FieldError::invalid("metadata.labels", k.clone(),
                    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"));
            }
            let v = v.as_str().unwrap_or_default();
            if !is_label_value(v) {
                errs.push(FieldError::invalid("metadata.labels", v.to_string(),
                    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"));
            }
        }
    }
    if let Some(ann) = meta.get("annotations").and_then(Value::as_object) {
        let mut total = 0usize;
        for (k, v) in ann {
            total += k.len() + v.as_str().map_or(0, str::len);
            if !is_qualified_name(&k.to_ascii_lowercase()) {
                errs.push(FieldError::invalid("metadata.annotations", k.clone(), "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
            }
        }
        if total > 256 * 1024 {
            errs.push(FieldError {
                kind: FieldErrorKind::TooLong,
                field: "metadata.annotations".into(),
                value: None,
                detail: "may not be more than 262144 bytes".into(),
            });
        }
    }
    errs
}

/// The integer at a dotted path (`spec.replicas`), if there is one.
pub fn int_at(obj: &Value, field: &str) -> Option<i64> {
    let pointer = format!("/{}", field.replace('.', "/"));
    obj.pointer(&pointer).and_then(Value::as_i64)
}

/// Each of `fields` that is set must be 0 or more.
pub fn non_negative(obj: &Value, fields: &[&str], errs: &mut Vec<FieldError>) {
    for field in fields {
        if let Some(n) = int_at(obj, field)
            && n < 0
        {
            errs.push(FieldError::invalid(
                *field,
                n.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
}

/// `field`, when set, must be 1 or more.
pub fn positive(obj: &Value, field: &str, errs: &mut Vec<FieldError>) {
    if let Some(n) = int_at(obj, field)
        && n <= 0
    {
        errs.push(FieldError::invalid(
            field,
            n.to_string(),
            "must be greater than 0",
        ));
    }
}

/// A Job's pods run to completion: `Always` would never let one finish.
pub fn validate_job_restart_policy(spec: Option<&Value>, path: &str, errs: &mut Vec<FieldError>) {
    let policy = spec
        .and_then(|s| s.get("restartPolicy"))
        .and_then(Value::as_str);
    if let Some(p) = policy
        && p != "OnFailure"
        && p != "Never"
    {
        errs.push(FieldError::not_supported(
            format!("{path}.restartPolicy"),
            p,
            &["OnFailure", "Never"],
        ));
    }
}

/// A selector must be set and pick the pods its template makes.
pub fn validate_selector_matches_template(obj: &Value, errs: &mut Vec<FieldError>) {
    let Some(selector) = obj.pointer("/spec/selector") else {
        errs.push(FieldError::required("spec.selector"));
        return;
    };
    let labels = obj
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object);
    if let Some(ml) = selector.get("matchLabels").and_then(Value::as_object) {
        let matches = ml
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
        if !matches {
            let rendered = labels
                .map(|l| {
                    l.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            errs.push(FieldError::invalid(
                "spec.template.metadata.labels",
                rendered,
                "`selector` does not match template `labels`",
            ));
        }
    }
}

/// The checks of a pod spec, wherever it appears (`path` names it).
pub fn validate_pod_spec(spec: Option<&Value>, path: &str, errs: &mut Vec<FieldError>) {
    let Some(spec) = spec else {
        errs.push(FieldError::required(path.to_string()));
        return;
    };
    let containers = spec.get("containers").and_then(Value::as_array);
    match containers {
        None => errs.push(FieldError::required(format!("{path}.containers"))),
        Some(c) if c.is_empty() => errs.push(FieldError::required(format!("{path}.containers"))),
        Some(_) => {}
    }
    if let Some(n) = spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        && n < 0
    {
        errs.push(FieldError::invalid(
            format!("{path}.terminationGracePeriodSeconds"),
            n.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    if let Some(n) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64)
        && !(1..=i64::from(i32::MAX)).contains(&n)
    {
        errs.push(FieldError::invalid(
            format!("{path}.activeDeadlineSeconds"),
            n.to_string(),
            "must be between 1 and 2147483647, inclusive",
        ));
    }
    let mut names = std::collections::HashSet::new();
    for list in ["initContainers", "containers"] {
        for (i, c) in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let field = format!("{path}.{list}[{i}]");
            match c.get("name").and_then(Value::as_str) {
                None | Some("") => errs.push(FieldError::required(format!("{field}.name"))),
                Some(n) => {
                    if !is_dns1123_label(n) {
                        errs.push(FieldError::invalid(
                            format!("{field}.name"),
                            n,
                            DNS1123_LABEL_MSG,
                        ));
                    }
                    if !names.insert(n.to_string()) {
                        errs.push(FieldError {
                            kind: FieldErrorKind::Duplicate,
                            field: format!("{field}.name"),
                            value: Some(n.to_string()),
                            detail: String::new(),
                        });
                    }
                }
            }
            if c.get("image")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                errs.push(FieldError::required(format!("{field}.image")));
            }
            validate_resources(c.get("resources"), &format!("{field}.resources"), errs);
            validate_container_numbers(c, &field, errs);
        }
    }
}

/// Ports in range and probe timings not negative, as Kubernetes checks.
fn validate_container_numbers(c: &Value, field: &str, errs: &mut Vec<FieldError>) {
    for (i, port) in c
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let Some(n) = port.get("containerPort").and_then(Value::as_i64)
            && !(1..=65535).contains(&n)
        {
            errs.push(FieldError::invalid(
                format!("{field}.ports[{i}].containerPort"),
                n.to_string(),
                "must be between 1 and 65535, inclusive",
            ));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let Some(p) = c.get(probe) else { continue };
        for timing in [
            "initialDelaySeconds",
            "timeoutSeconds",
            "periodSeconds",
            "successThreshold",
            "failureThreshold",
            "terminationGracePeriodSeconds",
        ] {
            if let Some(n) = p.get(timing).and_then(Value::as_i64)
                && n < 0
            {
                errs.push(FieldError::invalid(
                    format!("{field}.{probe}.{timing}"),
                    n.to_string(),
                    "must be greater than or equal to 0",
                ));
            }
        }
    }
}

/// Every quantity in `resources.requests`/`limits` must parse, be
/// non-negative, and a request may not exceed its limit.
fn validate_resources(res: Option<&Value>, path: &str, errs: &mut Vec<FieldError>) {
    let Some(res) = res else { return };
    let mut parsed = std::collections::HashMap::new();
    for section in ["limits", "requests"] {
        for (name, q) in res
            .get(section)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let field = format!("{path}.{section}[{name}]");
            let text = q
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| q.to_string());
            match super::quantity::parse(&text) {
                None => errs.push(FieldError::invalid(
                    field,
                    text,
                    format!(
                        "quantities must match the regular expression '{}'",
                        super::quantity::QUANTITY_FORMAT
                    ),
                )),
                Some(v) if v.0 < 0 => errs.push(FieldError::invalid(
                    field,
                    text,
                    "must be greater than or equal to 0",
                )),
                Some(v) => {
                    parsed.insert((section, name.clone()), v);
                }
            }
        }
    }
    for ((section, name), req) in &parsed {
        if *section == "requests"
            && let Some(lim) = parsed.get(&("limits", name.clone()))
            && req > lim
        {
            errs.push(FieldError::invalid(
                format!("{path}.requests"),
                res.pointer(&format!("/requests/{name}"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                format!(
                    "must be less than or equal to {name} limit of {}",
                    res.pointer(&format!("/limits/{name}"))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The validation of the kind named `kind`.
    fn validate_kind(kind: &str, obj: &Value) -> Vec<FieldError> {
        let kind = crate::resources::KINDS
            .iter()
            .find(|k| k.kind == kind)
            .expect("a served kind");
        kind.ops.validate(obj)
    }
    use serde_json::json;

    #[test]
    fn names_follow_rfc_1123() {
        assert!(is_dns1123_subdomain("web-1.example"));
        assert!(!is_dns1123_subdomain("Web"));
        assert!(!is_dns1123_subdomain("-web"));
        assert!(check_name(NameRule::Label, "a.b").is_some());
        assert!(check_name(NameRule::Dns1035, "1abc").is_some());
        assert!(check_name(NameRule::Path, "system:masters").is_none());
    }

    #[test]
    fn batch_and_daemon_kinds_check_their_own_fields() {
        let pod = |policy: &str| json!({"restartPolicy": policy, "containers": [{"name": "c", "image": "i"}]});
        let job = |policy: &str| {
            json!({"spec": {"selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b"}}, "spec": pod(policy)}}})
        };
        let cron = |name: &str, schedule: &str, tz: Option<&str>| {
            json!({"metadata": {"name": name}, "spec": {"schedule": schedule, "timeZone": tz,
                "jobTemplate": {"spec": {"template": {"spec": pod("OnFailure")}}}}})
        };
        let ds = |policy: &str| {
            json!({"spec": {"selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b"}}, "spec": pod(policy)}}})
        };
        let long = "c".repeat(53);
        let cases = [
            ("Job", job("Never"), None),
            ("Job", job("OnFailure"), None),
            (
                "Job",
                job("Always"),
                Some("spec.template.spec.restartPolicy"),
            ),
            (
                "Job",
                json!({"spec": {"manualSelector": true, "template": {"spec": pod("Never")}}}),
                Some("spec.selector"),
            ),
            ("CronJob", cron("c", "*/5 * * * *", None), None),
            ("CronJob", cron("c", "@hourly", Some("Europe/Berlin")), None),
            ("CronJob", cron("c", "* * * *", None), Some("spec.schedule")),
            (
                "CronJob",
                cron("c", "@hourly", Some("Mars/Olympus")),
                Some("spec.timeZone"),
            ),
            (
                "CronJob",
                cron(&long, "@hourly", None),
                Some("metadata.name"),
            ),
            ("DaemonSet", ds("Always"), None),
            (
                "DaemonSet",
                ds("Never"),
                Some("spec.template.spec.restartPolicy"),
            ),
        ];
        for (i, (kind, obj, field)) in cases.into_iter().enumerate() {
            let errs = validate_kind(kind, &obj);
            assert_eq!(
                errs.first().map(|e| e.field.as_str()),
                field,
                "case {i}: {errs:?}"
            );
        }
    }

    #[test]
    fn a_pod_without_image_names_the_field() {
        let pod = json!({"spec": {"containers": [{"name": "c"}]}});
        let errs = validate_kind("Pod", &pod);
        assert_eq!(
            errs[0].message(),
            "spec.containers[0].image: Required value"
        );
    }

    #[test]
    fn a_deployment_selector_must_match_its_template() {
        let d = json!({"spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let errs = validate_kind("Deployment", &d);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0]
                .message()
                .contains("`selector` does not match template `labels`")
        );
    }

    #[test]
    fn an_invalid_quantity_names_the_resource() {
        let pod = json!({"spec": {"containers": [{"name": "c", "image": "i",
            "resources": {"limits": {"cpu": "lots"}}}]}});
        let errs = validate_kind("Pod", &pod);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0]
                .message()
                .starts_with("spec.containers[0].resources.limits[cpu]: Invalid value: \"lots\""),
            "{}",
            errs[0].message()
        );
    }

    #[test]
    fn a_request_above_its_limit_is_invalid() {
        let pod = json!({"spec": {"containers": [{"name": "c", "image": "i",
            "resources": {"limits": {"memory": "64Mi"}, "requests": {"memory": "1Gi"}}}]}});
        assert_eq!(validate_kind("Pod", &pod).len(), 1);
    }

    #[test]
    fn bad_label_values_are_rejected() {
        let errs = validate_metadata(&json!({"labels": {"app": "-bad"}}));
        assert_eq!(errs.len(), 1);
    }

    #[test]
    fn negative_counts_and_durations_are_invalid_as_in_kubernetes() {
        let deployment = json!({
            "spec": {
                "replicas": -5,
                "minReadySeconds": 10,
                "progressDeadlineSeconds": 5,
                "selector": {"matchLabels": {"a": "b"}},
                "template": {
                    "metadata": {"labels": {"a": "b"}},
                    "spec": {
                        "terminationGracePeriodSeconds": -1,
                        "activeDeadlineSeconds": 0,
                        "containers": [{
                            "name": "c", "image": "i",
                            "ports": [{"containerPort": 70000}],
                            "livenessProbe": {"periodSeconds": -3}
                        }]
                    }
                }
            }
        });
        let errs: Vec<String> = validate_kind("Deployment", &deployment)
            .iter()
            .map(FieldError::message)
            .collect();
        for want in [
            "spec.replicas: Invalid value: \"-5\": must be greater than or equal to 0",
            "spec.progressDeadlineSeconds: Invalid value: \"5\": must be greater than minReadySeconds",
            "spec.template.spec.terminationGracePeriodSeconds: Invalid value: \"-1\": must be greater than or equal to 0",
            "spec.template.spec.activeDeadlineSeconds: Invalid value: \"0\": must be between 1 and 2147483647, inclusive",
            "spec.template.spec.containers[0].ports[0].containerPort: Invalid value: \"70000\": must be between 1 and 65535, inclusive",
            "spec.template.spec.containers[0].livenessProbe.periodSeconds: Invalid value: \"-3\": must be greater than or equal to 0",
        ] {
            assert!(errs.iter().any(|e| e == want), "{want} not in {errs:#?}");
        }
        let job = json!({"spec": {"parallelism": -1, "backoffLimit": -2, "activeDeadlineSeconds": 0,
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}});
        let errs = validate_kind("Job", &job);
        assert_eq!(
            errs.iter()
                .filter(|e| e.field.starts_with("spec.") && !e.field.starts_with("spec.selector"))
                .count(),
            3,
            "{errs:?}"
        );
    }
}
