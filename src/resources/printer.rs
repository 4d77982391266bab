//! What `kubectl get` prints: the column type every kind's file lists its
//! columns with, and the cell helpers those files share.

use serde_json::Value;

/// The parts of an object a kind's cells read, so that a Table decodes
/// only those (besides `metadata`, which every row carries).
#[derive(Clone, Copy, Debug)]
pub enum Keep {
    /// The whole value.
    All,
    /// An array's length only: its elements decode as nulls.
    Count,
    /// These keys of an object, each with what of it is kept.
    Only(&'static [(&'static str, Keep)]),
}

/// One printer column, as a Table's `columnDefinitions` entry.
#[derive(Clone, Copy, Debug)]
pub struct Column {
    pub name: &'static str,
    pub ty: &'static str,
    pub format: &'static str,
    /// 0: always shown; 1: only with `-o wide`.
    pub priority: u8,
    pub description: &'static str,
}

/// A column shown always.
pub const fn col(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column {
        name,
        ty,
        format: "",
        priority: 0,
        description,
    }
}

/// A column shown only with `-o wide`.
pub const fn wide(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column {
        name,
        ty,
        format: "",
        priority: 1,
        description,
    }
}

pub const NAME: Column = Column {
    name: "Name",
    ty: "string",
    format: "name",
    priority: 0,
    description: "Name must be unique within a namespace.",
};

pub const AGE: Column = col(
    "Age",
    "string",
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);

/// The `Created At` column of kinds without columns of their own.
pub const CREATED_AT: Column = col(
    "Created At",
    "date",
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);

/// The Containers, Images and Selector columns of kinds with a pod
/// template, shown with `-o wide`.
pub const CONTAINERS: Column = wide(
    "Containers",
    "string",
    "Names of each container in the template.",
);
pub const IMAGES: Column = wide(
    "Images",
    "string",
    "Images referenced by each container in the template.",
);

/// The object's name cell.
pub fn name(o: &Value) -> Value {
    Value::from(s(o, "/metadata/name"))
}

/// The object's age cell.
pub fn age(o: &Value) -> Value {
    Value::from(age_of(
        at(o, "/metadata/creationTimestamp").and_then(Value::as_str),
    ))
}

/// The `Created At` cell.
pub fn created_at(o: &Value) -> Value {
    Value::from(s(o, "/metadata/creationTimestamp"))
}

/// Kubernetes' short human duration (`5s`, `2m30s`, `3h`, `4d5h`, `2y`).
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    let m = s / 60;
    let h = m / 60;
    let d = h / 24;
    let y = d / 365;
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else if y < 8 {
        if d % 365 == 0 {
            format!("{y}y")
        } else {
            format!("{y}y{}d", d % 365)
        }
    } else {
        format!("{y}y")
    }
}

pub fn age_of(ts: Option<&str>) -> String {
    let Some(ts) = ts else {
        return "<unknown>".into();
    };
    match time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339) {
        Ok(t) => human_duration((time::OffsetDateTime::now_utc() - t).whole_seconds()),
        Err(_) => "<unknown>".into(),
    }
}

/// `o.pointer(p)` without its cost for plain paths: `Value::pointer`
/// unescapes every segment into a new string, which was a tenth of a
/// Table's time when cells are read from thousands of objects.
pub fn at<'a>(o: &'a Value, p: &str) -> Option<&'a Value> {
    if p.contains('~') {
        return o.pointer(p);
    }
    if p.is_empty() {
        return Some(o);
    }
    let mut cur = o;
    for seg in p.strip_prefix('/')?.split('/') {
        cur = match cur {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(index(seg)?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// An array index as JSON pointers write it: digits, no leading zero.
fn index(seg: &str) -> Option<usize> {
    if seg.len() > 1 && seg.starts_with('0') || !seg.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    seg.parse().ok()
}

pub fn s<'a>(o: &'a Value, p: &str) -> &'a str {
    at(o, p).and_then(Value::as_str).unwrap_or("")
}

pub fn n(o: &Value, p: &str) -> i64 {
    at(o, p).and_then(Value::as_i64).unwrap_or(0)
}

pub fn none_if_empty(v: String) -> String {
    if v.is_empty() { "<none>".into() } else { v }
}

pub fn selector_string(sel: Option<&Value>) -> String {
    match sel {
        Some(sel) => none_if_empty(label_selector_string(sel)),
        None => "<none>".into(),
    }
}

/// A label selector (`matchLabels`/`matchExpressions`, or a plain map as a
/// Service's) in Kubernetes' string form, `a=b,c in (d,e),!f`; empty for an
/// empty selector.
pub fn label_selector_string(sel: &Value) -> String {
    let map = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .or(sel.as_object());
    let mut parts: Vec<String> = map
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
                .collect()
        })
        .unwrap_or_default();
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = s(e, "/key");
            let vals: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            parts.push(match s(e, "/operator") {
                "In" => format!("{key} in ({})", vals.join(",")),
                "NotIn" => format!("{key} notin ({})", vals.join(",")),
                "Exists" => key.to_string(),
                "DoesNotExist" => format!("!{key}"),
                _ => String::new(),
            });
        }
    }
    parts.join(",")
}

pub fn template_containers(o: &Value) -> (String, String) {
    let cs = o
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = cs.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(c, "/image")).collect();
    (names.join(","), images.join(","))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn at_reads_paths_as_json_pointers_do() {
        let o = json!({"a": {"b": [10, {"c": "x"}], "d/e": 1, "f~g": 2, "": 3, "01": 4}});
        for p in [
            "",
            "/a",
            "/a/b",
            "/a/b/0",
            "/a/b/1/c",
            "/a/b/2",
            "/a/b/01",
            "/a/b/-",
            "/a/b/x",
            "/a/d~1e",
            "/a/f~0g",
            "/a/",
            "/a/01",
            "a",
            "/a/b/1/c/z",
            "/nope",
        ] {
            assert_eq!(at(&o, p), o.pointer(p), "{p:?}");
        }
    }
}
