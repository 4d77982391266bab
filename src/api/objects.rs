//! What happens to an object on its way into the store: identity and
//! timestamps on create, immutable fields and generation on update,
//! defaulting, the typed round trip, strict field checks and validation.

use serde_json::{Map, Value, json};

use super::status::ApiError;
use crate::resources::validation::{NameRule, check_name, validate_metadata};
use crate::resources::{CreateContext, FieldError, FieldErrorKind, Kind, StatusRule, Subresource};

/// How unknown fields are treated (`fieldValidation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(s: Option<&str>) -> Result<Self, ApiError> {
        match s {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation parameter unsupported: {other}"
            ))),
        }
    }
}

/// RFC 3339 timestamp with second precision, as Kubernetes writes them.
pub fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
}

pub fn name_of(obj: &Value) -> &str {
    meta_str(obj, "name").unwrap_or_default()
}

pub fn rv_of(obj: &Value) -> Option<&str> {
    meta_str(obj, "resourceVersion").filter(|s| !s.is_empty())
}

fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

/// Characters Kubernetes draws generated name suffixes from.
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

pub fn random_suffix(n: usize) -> String {
    (0..n)
        .map(|_| SUFFIX_ALPHABET[rand::random_range(0..SUFFIX_ALPHABET.len())] as char)
        .collect()
}

/// Check `apiVersion`/`kind` of a body against the endpoint, filling them
/// in when absent.
pub fn check_type(kind: &Kind, obj: &mut Value) -> Result<(), ApiError> {
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON or YAML object",
        ));
    };
    let api_version = kind.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("apiVersion".into(), Value::String(api_version));
        }
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("kind".into(), Value::String(kind.kind.to_string()));
        }
        Some(k) if k == kind.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                kind.kind
            )));
        }
    }
    Ok(())
}

pub(super) fn invalid(kind: &Kind, name: &str, causes: Vec<FieldError>) -> ApiError {
    ApiError::Invalid {
        group: kind.group.to_string(),
        kind: kind.kind.to_string(),
        name: name.to_string(),
        causes,
    }
}

/// Set namespace and name from the URL and the body, as Kubernetes does on
/// create. Returns the final (namespace, name).
pub fn prepare_create(
    kind: &Kind,
    url_ns: Option<&str>,
    obj: &mut Value,
    tolerations: (i64, i64),
) -> Result<(Option<String>, String), ApiError> {
    check_type(kind, obj)?;
    let meta = metadata_mut(obj);
    let ns = if kind.namespaced {
        let body_ns = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
        let ns = match (url_ns, body_ns) {
            (Some(u), "") => u.to_string(),
            (Some(u), b) if u == b => u.to_string(),
            (Some(_), _) => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            (None, _) => {
                return Err(ApiError::MethodNotAllowed);
            }
        };
        meta.insert("namespace".into(), Value::String(ns.clone()));
        Some(ns)
    } else {
        meta.remove("namespace");
        None
    };
    let mut name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if name.is_empty() {
        let generate = meta
            .get("generateName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if generate.is_empty() {
            return Err(invalid(
                kind,
                "",
                vec![FieldError {
                    kind: FieldErrorKind::Required,
                    field: "metadata.name".into(),
                    value: None,
                    detail: "name or generateName is required".into(),
                }],
            ));
        }
        // Kubernetes keeps the prefix to leave room for the suffix.
        let prefix: String = generate.chars().take(63 - 5).collect();
        name = format!("{prefix}{}", random_suffix(5));
        meta.insert("name".into(), Value::String(name.clone()));
    }
    let uid = uuid::Uuid::new_v4().to_string();
    meta.insert("uid".into(), Value::String(uid.clone()));
    meta.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
    meta.remove("resourceVersion");
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    meta.remove("selfLink");
    if obj.get("spec").is_some() || kind.has_subresource(Subresource::Scale) {
        metadata_mut(obj).insert("generation".into(), json!(1));
    }
    let ctx = CreateContext {
        uid: &uid,
        not_ready_toleration_seconds: tolerations.0,
        unreachable_toleration_seconds: tolerations.1,
    };
    kind.ops
        .on_create(obj, &ctx)
        .map_err(|e| invalid(kind, &name, vec![e]))?;
    if let Some(status) = kind.ops.initial_status(obj)
        && let Some(map) = obj.as_object_mut()
    {
        map.insert("status".into(), status);
    }
    Ok((ns, name))
}

/// Carry what an update may not change from the stored object, and bump
/// the generation when the spec changed. `sub` is the subresource written
/// (`status` writes only the status; the main resource keeps the status).
pub fn prepare_update(
    kind: &Kind,
    old: &Value,
    new: &mut Value,
    sub: Option<&str>,
) -> Result<(), ApiError> {
    check_type(kind, new)?;
    let name = name_of(old).to_string();
    let body_name = meta_str(new, "name").unwrap_or("");
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    if kind.namespaced {
        let old_ns = meta_str(old, "namespace").unwrap_or("");
        let body_ns = meta_str(new, "namespace").unwrap_or("");
        if !body_ns.is_empty() && body_ns != old_ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    if sub == Some("status") {
        // A status write changes the status and nothing else.
        let status = new.get("status").cloned();
        let rv = rv_of(new).map(str::to_string);
        *new = old.clone();
        match status {
            Some(s) => new["status"] = s,
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        if let Some(rv) = rv {
            metadata_mut(new).insert("resourceVersion".into(), Value::String(rv));
        }
        return Ok(());
    }
    let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let meta = metadata_mut(new);
    meta.insert("name".into(), Value::String(name));
    for field in [
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old_meta.get(field) {
            Some(v) => {
                meta.insert(field.into(), v.clone());
            }
            None => {
                meta.remove(field);
            }
        }
    }
    if kind.status == StatusRule::Subresource {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    Ok(())
}

/// The kind's immutable fields an update may not change (checked after
/// defaulting, so a body that leaves a default out is not a change).
///
/// # Errors
/// `Invalid` naming each changed field.
pub fn check_immutable(kind: &Kind, old: &Value, new: &Value) -> Result<(), ApiError> {
    let causes: Vec<FieldError> = kind
        .immutable
        .iter()
        .filter_map(|field| {
            let pointer = format!("/{}", field.replace('.', "/"));
            let (was, now) = (old.pointer(&pointer), new.pointer(&pointer));
            (was != now).then(|| {
                FieldError::invalid(
                    *field,
                    now.map(Value::to_string).unwrap_or_default(),
                    "field is immutable",
                )
            })
        })
        .collect();
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid(kind, name_of(old), causes))
    }
}

/// After defaulting: bump `metadata.generation` when anything but
/// metadata and status changed.
pub fn bump_generation(old: &Value, new: &mut Value) {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
            m.remove("status");
        }
        v
    };
    let gen_of = |v: &Value| v.pointer("/metadata/generation").and_then(Value::as_i64);
    if let Some(g) = gen_of(old) {
        let g = if strip(old) != strip(new) { g + 1 } else { g };
        metadata_mut(new).insert("generation".into(), json!(g));
    }
}

/// Default, normalize through the typed representation and validate.
/// Returns the canonical object and the unknown fields found (which the
/// caller reports according to `fieldValidation`).
pub fn admit(
    kind: &Kind,
    obj: Value,
    validation: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    let name = name_of(&obj).to_string();
    let mut obj = obj;
    kind.ops.default(&mut obj);
    let normalized = kind
        .ops
        .normalize(&obj)
        .map_err(|e| ApiError::bad_request(format!("{} in body is invalid: {e}", kind.kind)))?;
    let unknown = if validation == FieldValidation::Ignore {
        Vec::new()
    } else {
        let mut out = Vec::new();
        unknown_fields(&obj, &normalized, &mut out);
        out
    };
    if validation == FieldValidation::Strict && !unknown.is_empty() {
        let msg = unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(ApiError::bad_request(format!(
            "strict decoding error: {msg}"
        )));
    }
    let mut errs = Vec::new();
    if let Some(msg) = check_name(kind.name_rule, &name) {
        errs.push(FieldError::invalid("metadata.name", name.clone(), msg));
    }
    if kind.namespaced
        && let Some(ns) = meta_str(&normalized, "namespace")
        && let Some(msg) = check_name(NameRule::Label, ns)
    {
        errs.push(FieldError::invalid("metadata.namespace", ns, msg));
    }
    if let Some(meta) = normalized.get("metadata") {
        errs.extend(validate_metadata(meta));
    }
    errs.extend(kind.ops.validate(&normalized));
    if !errs.is_empty() {
        return Err(invalid(kind, &name, errs));
    }
    Ok((normalized, unknown))
}

/// Fields present in `input` but dropped by the typed round trip.
fn unknown_fields(input: &Value, known: &Value, out: &mut Vec<String>) {
    walk_unknown(input, known, &mut Vec::new(), out);
}

/// One step of a field path: `.key` or `[index]`.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// The dotted form of a path (`spec.containers[0].name`).
fn dotted(path: &[Step]) -> String {
    let mut s = String::new();
    for step in path {
        match step {
            Step::Key(k) if s.is_empty() => s.push_str(k),
            Step::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Step::Index(i) => {
                s.push('[');
                s.push_str(&i.to_string());
                s.push(']');
            }
        }
    }
    s
}

/// The walk behind [`unknown_fields`]: the path is kept as steps and only
/// written out for a field that is reported, since every create and update
/// walks the whole object.
fn walk_unknown<'a>(
    input: &'a Value,
    known: &Value,
    path: &mut Vec<Step<'a>>,
    out: &mut Vec<String>,
) {
    match (input, known) {
        (Value::Object(i), Value::Object(k)) => {
            for (key, v) in i {
                path.push(Step::Key(key));
                match k.get(key) {
                    Some(kv) => walk_unknown(v, kv, path, out),
                    None => {
                        // Nulls and empty values vanish in the round trip
                        // without being unknown.
                        let empty = match v {
                            Value::Null => true,
                            Value::Object(m) => m.is_empty(),
                            Value::Array(a) => a.is_empty(),
                            _ => false,
                        };
                        if !empty {
                            let p = dotted(path);
                            if !is_known_metadata_extra(&p) {
                                out.push(p);
                            }
                        }
                    }
                }
                path.pop();
            }
        }
        (Value::Array(i), Value::Array(k)) => {
            for (idx, (iv, kv)) in i.iter().zip(k.iter()).enumerate() {
                path.push(Step::Index(idx));
                walk_unknown(iv, kv, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn is_known_metadata_extra(path: &str) -> bool {
    // Stamped by the server after the round trip.
    path == "metadata.resourceVersion"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::by_resource;

    fn cm() -> &'static Kind {
        by_resource("", "v1", "configmaps").unwrap()
    }

    #[test]
    fn create_fills_identity_and_the_url_namespace() {
        let mut obj = json!({"metadata": {"generateName": "web-"}, "data": {"a": "b"}});
        let (ns, name) = prepare_create(cm(), Some("default"), &mut obj, (300, 300)).unwrap();
        assert_eq!(ns.as_deref(), Some("default"));
        assert!(name.starts_with("web-") && name.len() == 9);
        assert_eq!(obj["kind"], "ConfigMap");
        assert!(obj["metadata"]["uid"].as_str().unwrap().len() == 36);
    }

    #[test]
    fn a_namespace_mismatch_is_refused() {
        let mut obj = json!({"metadata": {"name": "a", "namespace": "other"}});
        assert!(prepare_create(cm(), Some("default"), &mut obj, (300, 300)).is_err());
    }

    #[test]
    fn strict_validation_names_unknown_fields() {
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "d"}, "data": {"x": "y"}, "bogus": 1});
        let err = admit(cm(), obj.clone(), FieldValidation::Strict).unwrap_err();
        assert_eq!(
            err.to_string(),
            "strict decoding error: unknown field \"bogus\""
        );
        let (_, unknown) = admit(cm(), obj, FieldValidation::Warn).unwrap();
        assert_eq!(unknown, vec!["bogus"]);
    }

    #[test]
    fn nested_unknown_fields_have_their_path() {
        let pods = by_resource("", "v1", "pods").unwrap();
        let obj = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "d"},
            "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolice": "x"}]}});
        let err = admit(pods, obj, FieldValidation::Strict).unwrap_err();
        assert!(
            err.to_string()
                .contains("spec.containers[0].imagePullPolice"),
            "{err}"
        );
    }

    #[test]
    fn a_secrets_string_data_is_stored_encoded_in_data() {
        let secrets = crate::resources::by_resource("", "v1", "secrets").unwrap();
        let obj = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "data": {"a": "eA==", "b": "eQ=="}, "stringData": {"b": "hunter2"}});
        let (obj, unknown) = admit(secrets, obj, FieldValidation::Strict).unwrap();
        assert!(unknown.is_empty(), "{unknown:?}");
        assert!(obj.get("stringData").is_none(), "{obj}");
        assert_eq!(obj["data"], json!({"a": "eA==", "b": "aHVudGVyMg=="}));
    }

    #[test]
    fn an_invalid_name_is_unprocessable() {
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name", "namespace": "d"}});
        let err = admit(cm(), obj, FieldValidation::Warn).unwrap_err();
        assert!(matches!(err, ApiError::Invalid { .. }));
        assert!(err.to_string().starts_with(
            "ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\""
        ));
    }

    #[test]
    fn a_jobs_selector_and_template_are_immutable() {
        let jobs = crate::resources::by_resource("batch", "v1", "jobs").unwrap();
        let old = json!({"metadata": {"name": "j"},
            "spec": {"selector": {"matchLabels": {"a": "1"}}, "parallelism": 1,
                     "template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}});
        let mut scaled = old.clone();
        scaled["spec"]["parallelism"] = json!(3);
        assert!(check_immutable(jobs, &old, &scaled).is_ok());
        let mut retemplated = old.clone();
        retemplated["spec"]["template"]["spec"]["containers"][0]["image"] = json!("y");
        let Err(ApiError::Invalid { causes, .. }) = check_immutable(jobs, &old, &retemplated)
        else {
            panic!("a new template was accepted");
        };
        assert_eq!(causes[0].field, "spec.template");
        let cm = crate::resources::by_resource("", "v1", "configmaps").unwrap();
        assert!(check_immutable(cm, &old, &retemplated).is_ok());
    }

    #[test]
    fn generation_moves_only_with_the_spec() {
        let old = json!({"metadata": {"generation": 3}, "spec": {"replicas": 1}});
        let mut same =
            json!({"metadata": {"generation": 3, "labels": {"a": "b"}}, "spec": {"replicas": 1}});
        bump_generation(&old, &mut same);
        assert_eq!(same["metadata"]["generation"], 3);
        let mut changed = json!({"metadata": {"generation": 3}, "spec": {"replicas": 2}});
        bump_generation(&old, &mut changed);
        assert_eq!(changed["metadata"]["generation"], 4);
    }
}
