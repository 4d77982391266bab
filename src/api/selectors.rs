//! Label and field selectors, parsed and matched as Kubernetes does.

use std::collections::BTreeSet;

use serde_json::Value;

use super::status::ApiError;

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    Eq(String, String),
    NotEq(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
    Gt(String, i64),
    Lt(String, i64),
}

/// A parsed label selector: every requirement must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<Requirement>);

fn label_of<'a>(labels: Option<&'a serde_json::Map<String, Value>>, key: &str) -> Option<&'a str> {
    labels.and_then(|l| l.get(key)).and_then(Value::as_str)
}

impl LabelSelector {
    /// Parse `app=web,tier!=db,env in (a,b),!legacy,version>2`.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        let bad = |why: &str| ApiError::bad_request(format!("unable to parse requirement: {why}"));
        let blank = s.trim().is_empty();
        for part in split_top_level(s) {
            let part = part.trim();
            if part.is_empty() {
                // `a=b,,` names an empty requirement; only a wholly empty
                // selector (everything) may be blank.
                if blank {
                    continue;
                }
                return Err(bad("found ',', expected: identifier"));
            }
            if let Some(key) = part.strip_prefix('!') {
                reqs.push(Requirement::DoesNotExist(check_key(key.trim())?));
                continue;
            }
            let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
            if words.len() == 2 {
                let key = check_key(words[0])?;
                let rest = words[1].trim();
                let (op, list) = if let Some(l) = rest.strip_prefix("notin") {
                    ("notin", l)
                } else if let Some(l) = rest.strip_prefix("in") {
                    ("in", l)
                } else {
                    return Err(bad(&format!(
                        "found '{rest}', expected: in, notin, =, ==, !=, gt, lt"
                    )));
                };
                let list = list.trim();
                let inner = list
                    .strip_prefix('(')
                    .and_then(|l| l.strip_suffix(')'))
                    .ok_or_else(|| bad("expected '(' and ')' around the values"))?;
                let values: BTreeSet<String> = inner
                    .split(',')
                    .map(check_value)
                    .collect::<Result<_, _>>()?;
                reqs.push(if op == "in" {
                    Requirement::In(key, values)
                } else {
                    Requirement::NotIn(key, values)
                });
                continue;
            }
            if let Some((k, v)) = part.split_once("!=") {
                reqs.push(Requirement::NotEq(check_key(k.trim())?, check_value(v)?));
            } else if let Some((k, v)) = part.split_once("==") {
                reqs.push(Requirement::Eq(check_key(k.trim())?, check_value(v)?));
            } else if let Some((k, v)) = part.split_once('=') {
                reqs.push(Requirement::Eq(check_key(k.trim())?, check_value(v)?));
            } else if let Some((k, v)) = part.split_once('>') {
                let n = v
                    .trim()
                    .parse()
                    .map_err(|_| bad("for 'gt', 'lt' operators, the value must be an integer"))?;
                reqs.push(Requirement::Gt(check_key(k.trim())?, n));
            } else if let Some((k, v)) = part.split_once('<') {
                let n = v
                    .trim()
                    .parse()
                    .map_err(|_| bad("for 'gt', 'lt' operators, the value must be an integer"))?;
                reqs.push(Requirement::Lt(check_key(k.trim())?, n));
            } else {
                reqs.push(Requirement::Exists(check_key(part)?));
            }
        }
        Ok(LabelSelector(reqs))
    }

    /// Build from a `metav1.LabelSelector` object (matchLabels +
    /// matchExpressions), as controllers and Services use.
    pub fn from_object(sel: &Value) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in ml {
                reqs.push(Requirement::Eq(
                    k.clone(),
                    v.as_str().unwrap_or_default().to_string(),
                ));
            }
        }
        if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e
                    .get("key")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let values: BTreeSet<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect();
                reqs.push(match e.get("operator").and_then(Value::as_str) {
                    Some("In") => Requirement::In(key, values),
                    Some("NotIn") => Requirement::NotIn(key, values),
                    Some("Exists") => Requirement::Exists(key),
                    Some("DoesNotExist") => Requirement::DoesNotExist(key),
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "{other:?} is not a valid label selector operator"
                        )));
                    }
                });
            }
        }
        Ok(LabelSelector(reqs))
    }

    /// A selector from a plain `key: value` map (Service selectors).
    pub fn from_map(map: &serde_json::Map<String, Value>) -> Self {
        LabelSelector(
            map.iter()
                .map(|(k, v)| {
                    Requirement::Eq(k.clone(), v.as_str().unwrap_or_default().to_string())
                })
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Does an object's `metadata.labels` satisfy every requirement?
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        self.0.iter().all(|r| match r {
            Requirement::Eq(k, v) => label_of(labels, k) == Some(v.as_str()),
            Requirement::NotEq(k, v) => label_of(labels, k) != Some(v.as_str()),
            Requirement::In(k, vs) => label_of(labels, k).is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(k, vs) => !label_of(labels, k).is_some_and(|l| vs.contains(l)),
            Requirement::Exists(k) => label_of(labels, k).is_some(),
            Requirement::DoesNotExist(k) => label_of(labels, k).is_none(),
            Requirement::Gt(k, n) => label_of(labels, k)
                .and_then(|l| l.parse::<i64>().ok())
                .is_some_and(|l| l > *n),
            Requirement::Lt(k, n) => label_of(labels, k)
                .and_then(|l| l.parse::<i64>().ok())
                .is_some_and(|l| l < *n),
        })
    }
}

fn check_key(k: &str) -> Result<String, ApiError> {
    let ok = !k.is_empty()
        && k.len() <= 317
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
    if ok {
        Ok(k.to_string())
    } else {
        Err(ApiError::bad_request(format!(
            "unable to parse requirement: invalid label key {k:?}"
        )))
    }
}

/// A label value: empty, or at most 63 characters of `[A-Za-z0-9_.-]`
/// starting and ending alphanumeric.
fn check_value(v: &str) -> Result<String, ApiError> {
    let v = v.trim();
    let ok = v.is_empty()
        || (v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && v.as_bytes()[0].is_ascii_alphanumeric()
            && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric());
    if ok {
        Ok(v.to_string())
    } else {
        Err(ApiError::bad_request(format!(
            "unable to parse requirement: values[0]: Invalid value: {v:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        )))
    }
}

/// Split on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// A field selector: `metadata.name=x,spec.nodeName!=`, with the fields
/// each kind supports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parse `s` against the fields `supported` (the kind's field
    /// selectors; `metadata.name` and `metadata.namespace` always).
    pub fn parse(s: &str, supported: &[&str]) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        let blank = s.trim().is_empty();
        for part in s.split(',') {
            let part = part.trim();
            if part.is_empty() {
                if blank {
                    continue;
                }
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            }
            let (field, eq, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            if !matches!(field, "metadata.name" | "metadata.namespace")
                && !supported.contains(&field)
            {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            reqs.push((field.to_string(), eq, value.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, eq, want)| {
            let have = field_value(obj, field);
            (have == *want) == *eq
        })
    }
}

fn field_value(obj: &Value, field: &str) -> String {
    let pointer = format!("/{}", field.replace('.', "/"));
    match obj.pointer(&pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        None if field == "spec.unschedulable" || field == "spec.hostNetwork" => "false".into(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::KindSpec;
    use serde_json::json;

    const POD: &[&str] = crate::resources::kinds::pod::Pod::FIELD_SELECTORS;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"labels": labels}})
    }

    #[test]
    fn set_based_and_equality_requirements_combine() {
        let sel = LabelSelector::parse("app=web,env in (prod, staging),!legacy,tier!=db").unwrap();
        assert!(sel.matches(&obj(json!({"app": "web", "env": "prod"}))));
        assert!(!sel.matches(&obj(json!({"app": "web", "env": "dev"}))));
        assert!(!sel.matches(&obj(json!({"app": "web", "env": "prod", "legacy": "y"}))));
        assert!(!sel.matches(&obj(json!({"app": "web", "env": "prod", "tier": "db"}))));
    }

    #[test]
    fn a_bad_selector_is_a_bad_request() {
        assert!(LabelSelector::parse("app in prod").is_err());
        assert!(LabelSelector::parse("a b c").is_err());
        assert!(LabelSelector::parse("a===b").is_err());
        assert!(FieldSelector::parse("spec.bogus=1", POD).is_err());
    }

    #[test]
    fn field_selectors_read_nested_fields() {
        let sel = FieldSelector::parse("spec.nodeName=n1,metadata.name!=x", POD).unwrap();
        assert!(sel.matches(&json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}})));
        let unbound = FieldSelector::parse("spec.nodeName=", POD).unwrap();
        assert!(unbound.matches(&json!({"metadata": {"name": "p"}, "spec": {}})));
    }

    #[test]
    fn empty_requirements_between_commas_are_refused() {
        for bad in ["a=b,,", ",a=b", "a=b, ,c=d", ","] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad:?}");
            assert!(
                FieldSelector::parse(&bad.replace('a', "metadata.name"), POD).is_err(),
                "{bad:?}"
            );
        }
        assert!(LabelSelector::parse("").is_ok());
        assert!(LabelSelector::parse("  ").is_ok());
        assert!(FieldSelector::parse("", POD).is_ok());
    }
}
