//! The JSONPath subset CustomResourceDefinitions use for printer columns
//! and the scale subresource: `.a.b`, `.a[0]`, `.a['x.y']` and equality
//! filters `.a[?(@.type=="Ready")].status`. Parsed once, when the CRD is
//! written; evaluated on every row of a table.

use serde_json::Value;

/// One step of a parsed path.
#[derive(Clone, Debug, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    /// `[?(@.path == "value")]`: the first element whose field at `path`
    /// equals `value`.
    Filter(Vec<String>, Value),
}

/// A parsed path.
#[derive(Clone, Debug, PartialEq)]
pub struct JsonPath {
    steps: Vec<Step>,
}

/// Longest path accepted, in characters.
const MAX_LEN: usize = 512;

impl JsonPath {
    /// Parse `text`.
    ///
    /// # Errors
    /// Why the path is not in the supported subset.
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        if text.len() > MAX_LEN {
            return Err(format!("must be at most {MAX_LEN} characters"));
        }
        // `{.spec.x}` is the same path in kubectl's template form.
        let text = text
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or(text);
        if !text.starts_with('.') {
            return Err("must be a simple json path starting with .".into());
        }
        let mut steps = Vec::new();
        let b = text.as_bytes();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'.' => {
                    let start = i + 1;
                    let mut end = start;
                    while end < b.len() && b[end] != b'.' && b[end] != b'[' {
                        end += 1;
                    }
                    if end == start {
                        return Err("has an empty field name".into());
                    }
                    steps.push(Step::Field(text[start..end].to_string()));
                    i = end;
                }
                b'[' => {
                    let close = text[i..]
                        .find(']')
                        .map(|c| i + c)
                        .ok_or("has an unclosed [")?;
                    let inner = text[i + 1..close].trim();
                    steps.push(parse_bracket(inner)?);
                    i = close + 1;
                }
                _ => return Err(format!("unexpected {:?}", b[i] as char)),
            }
        }
        Ok(JsonPath { steps })
    }

    /// The value at the path, if there is one.
    pub fn get<'a>(&self, v: &'a Value) -> Option<&'a Value> {
        let mut cur = v;
        for step in &self.steps {
            cur = match step {
                Step::Field(f) => cur.get(f)?,
                Step::Index(n) => cur.get(*n)?,
                Step::Filter(path, want) => cur.as_array()?.iter().find(|item| {
                    path.iter()
                        .try_fold(*item, |v, f| v.get(f))
                        .is_some_and(|got| got == want)
                })?,
            };
        }
        Some(cur)
    }

    /// The dotted fields of a plain path (`.spec.replicas` →
    /// `["spec", "replicas"]`), for writing; `None` when it has indexes or
    /// filters.
    pub fn fields(&self) -> Option<Vec<&str>> {
        self.steps
            .iter()
            .map(|s| match s {
                Step::Field(f) => Some(f.as_str()),
                _ => None,
            })
            .collect()
    }
}

fn parse_bracket(inner: &str) -> Result<Step, String> {
    if let Some(q) = inner
        .strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
    {
        return Ok(Step::Field(q.to_string()));
    }
    if let Ok(n) = inner.parse::<usize>() {
        return Ok(Step::Index(n));
    }
    let filter = inner
        .strip_prefix("?(@.")
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("unsupported [{inner}]"))?;
    let (path, value) = filter
        .split_once("==")
        .ok_or_else(|| format!("unsupported filter [{inner}]"))?;
    let path: Vec<String> = path.trim().split('.').map(str::to_string).collect();
    if path.iter().any(String::is_empty) {
        return Err(format!("unsupported filter [{inner}]"));
    }
    let value = value.trim();
    let value = if let Some(s) = value
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| value.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
    {
        Value::String(s.to_string())
    } else {
        serde_json::from_str(value).map_err(|_| format!("unsupported filter value {value}"))?
    };
    Ok(Step::Filter(path, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_indexes_quotes_and_filters_are_followed() {
        let obj = json!({
            "spec": {"replicas": 3, "a.b": "dotted", "list": ["x", "y"]},
            "status": {"conditions": [
                {"type": "Synced", "status": "False"},
                {"type": "Ready", "status": "True"},
            ]},
        });
        let get = |p: &str| JsonPath::parse(p).unwrap().get(&obj).cloned();
        assert_eq!(get(".spec.replicas"), Some(json!(3)));
        assert_eq!(get("{.spec.replicas}"), Some(json!(3)));
        assert_eq!(get(".spec['a.b']"), Some(json!("dotted")));
        assert_eq!(get(".spec.list[1]"), Some(json!("y")));
        assert_eq!(
            get(".status.conditions[?(@.type==\"Ready\")].status"),
            Some(json!("True"))
        );
        assert_eq!(get(".spec.missing"), None);
        assert_eq!(
            JsonPath::parse(".spec.replicas").unwrap().fields(),
            Some(vec!["spec", "replicas"])
        );
    }

    #[test]
    fn paths_outside_the_subset_are_refused() {
        for bad in ["spec", ".a..b", ".a[", ".a[*]", ".a[?(@.x>1)]"] {
            assert!(JsonPath::parse(bad).is_err(), "{bad}");
        }
    }
}
