//! Field ownership: `metadata.managedFields`, which records for every
//! field manager (`kubectl`, a controller, an operator's apply) the fields
//! it set, so that server-side apply can
//! - refuse to change a field another manager set to something else
//!   (409, a conflict, unless the apply is forced, which takes it over);
//! - remove a field a manager applied before and no longer applies, when
//!   no one else owns it;
//!
//! and so that users can see who set what.
//!
//! A field set is kept in the `FieldsV1` form the API shows: a tree whose
//! keys are path elements (`f:name` a field, `k:{"name":"web"}` an element
//! of a list merged by key, `v:"a"` an element of a set, `.` the element
//! itself) and whose leaves are the owned fields. Lists without a merge
//! key are atomic: one leaf owns the whole list.
//!
//! An update (a create, a PUT, a non-apply patch) gives its manager the
//! fields it changed and takes them from everyone else; fields that are
//! gone lose their owners; an update that changes nothing changes no entry,
//! so a no-op write stays a no-op.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::objects::now_rfc3339;
use super::status::ApiError;
use crate::resources::patchmeta::{Field, ListMerge, OBJECT_META, TypeGraph};
use crate::resources::{Kind, Subresource};

/// Who takes ownership of the fields a write sets.
#[derive(Clone, Copy, Debug)]
pub enum Owner<'a> {
    /// A create or update by this field manager (operation `Update`).
    Writer(&'a str),
    /// Server-side apply, which has already written the object's
    /// `managedFields` (operation `Apply`).
    Applied,
}

/// Kubernetes keeps at most this many `Update` entries; older ones are
/// folded into one named [`ANCIENT`], so an object's history of writers
/// cannot grow without bound.
const MAX_UPDATE_ENTRIES: usize = 10;
const ANCIENT: &str = "ancient-changes";
/// Lists longer than this are owned whole rather than element by element,
/// and paths into their elements are not followed: finding an element is
/// a scan, and a write must not cost (fields × elements) without bound.
const MAX_ELEMENTS: usize = 256;
/// Longest accepted `fieldManager`, as in Kubernetes.
const MAX_MANAGER_LEN: usize = 128;

/// The field manager of a request: `fieldManager`, or the client's
/// User-Agent up to its first `/` (`kubectl/v1.31 …` is `kubectl`).
///
/// # Errors
/// 422 for a `fieldManager` that is too long or holds control characters.
pub fn manager_name(
    field_manager: Option<&str>,
    user_agent: Option<&str>,
) -> Result<String, ApiError> {
    if let Some(m) = field_manager.filter(|m| !m.is_empty()) {
        if m.len() > MAX_MANAGER_LEN || m.chars().any(char::is_control) {
            return Err(ApiError::Invalid {
                group: String::new(),
                kind: "PatchOptions".into(),
                name: String::new(),
                causes: vec![crate::resources::FieldError::invalid(
                    "fieldManager",
                    m.chars().take(MAX_MANAGER_LEN).collect::<String>(),
                    format!("must be at most {MAX_MANAGER_LEN} printable characters"),
                )],
            });
        }
        return Ok(m.to_string());
    }
    let agent: String = user_agent
        .unwrap_or("")
        .split('/')
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_MANAGER_LEN)
        .collect();
    Ok(if agent.is_empty() {
        "unknown".into()
    } else {
        agent
    })
}

/// The field manager of a request (see [`manager_name`]).
///
/// # Errors
/// As [`manager_name`].
pub fn request_manager(
    query: &super::request::Query,
    headers: &axum::http::HeaderMap,
) -> Result<String, ApiError> {
    manager_name(
        query.get("fieldManager"),
        headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
    )
}

/// A set of fields in `FieldsV1` form: children by path element; a node
/// without children is an owned field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet(BTreeMap<String, FieldSet>);

/// A path to a field: its `FieldsV1` elements from the object's root.
pub type Path = Vec<String>;

impl FieldSet {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// From the `fieldsV1` JSON form; `None` if it is not one.
    pub fn from_v1(v: &Value) -> Option<FieldSet> {
        let mut out = BTreeMap::new();
        for (k, child) in v.as_object()? {
            out.insert(k.clone(), FieldSet::from_v1(child)?);
        }
        Some(FieldSet(out))
    }

    pub fn to_v1(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .map(|(k, child)| (k.clone(), child.to_v1()))
                .collect(),
        )
    }

    /// Every owned field.
    pub fn leaves(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect_leaves(&mut Vec::new(), &mut out);
        out
    }

    fn collect_leaves(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        for (k, child) in &self.0 {
            prefix.push(k.clone());
            if child.0.is_empty() {
                out.push(prefix.clone());
            } else {
                child.collect_leaves(prefix, out);
            }
            prefix.pop();
        }
    }

    pub fn insert(&mut self, path: &[String]) {
        let mut node = self;
        for p in path {
            node = node.0.entry(p.clone()).or_default();
        }
    }

    /// Whether `path` is an owned field of this set.
    pub fn contains(&self, path: &[String]) -> bool {
        self.node(path).is_some_and(|n| n.0.is_empty())
    }

    /// Whether this set owns `path` or anything under it.
    pub fn touches(&self, path: &[String]) -> bool {
        self.node(path).is_some()
    }

    fn node(&self, path: &[String]) -> Option<&FieldSet> {
        let mut node = self;
        for p in path {
            node = node.0.get(p)?;
        }
        Some(node)
    }

    /// Drops the owned field `path`, and the nodes it leaves empty (an
    /// empty node would read as an owned field).
    pub fn remove(&mut self, path: &[String]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        if rest.is_empty() {
            if self.0.get(first).is_some_and(|c| c.0.is_empty()) {
                self.0.remove(first);
            }
            return;
        }
        if let Some(child) = self.0.get_mut(first) {
            let had_children = !child.0.is_empty();
            child.remove(rest);
            if had_children && child.0.is_empty() {
                self.0.remove(first);
            }
        }
    }

    /// Keeps only the fields for which `keep` holds.
    fn retain(&mut self, mut keep: impl FnMut(&[String]) -> bool) {
        for leaf in self.leaves() {
            if !keep(&leaf) {
                self.remove(&leaf);
            }
        }
    }
}

/// The fields `obj` sets, following its type for the lists' merge keys.
/// `part` limits them to the main resource or to the status.
pub fn fields_of(kind: &Kind, obj: &Value, part: Part) -> FieldSet {
    let graph = TypeGraph::get();
    let root = graph.root(kind);
    let mut set = FieldSet::default();
    let Some(top) = obj.as_object() else {
        return set;
    };
    for (k, v) in top {
        let wanted = match (k.as_str(), part) {
            ("apiVersion" | "kind", _) => false,
            ("status", Part::Main) => !kind.has_subresource(Subresource::Status),
            ("status", Part::Status) => true,
            ("metadata", Part::Main) => true,
            (_, Part::Main) => true,
            (_, Part::Status) => false,
        };
        if !wanted {
            continue;
        }
        let path = vec![format!("f:{k}")];
        if k == "metadata" {
            // Only what a user sets: the server's own fields (uid,
            // resourceVersion, timestamps…) and the identity are no one's.
            if let Some(m) = v.as_object() {
                for field in ["labels", "annotations", "finalizers", "ownerReferences"] {
                    if let Some(fv) = m.get(field) {
                        let mut p = path.clone();
                        p.push(format!("f:{field}"));
                        add_value(
                            graph,
                            &mut set,
                            &mut p,
                            fv,
                            graph.field(Some(OBJECT_META), field),
                        );
                    }
                }
            }
            continue;
        }
        let mut p = path;
        add_value(graph, &mut set, &mut p, v, graph.field(root, k));
    }
    set
}

/// Which part of an object a write may change: the status subresource
/// writes only the status; the main resource everything else (and the
/// status too, for kinds without a status subresource).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Main,
    Status,
}

impl Part {
    /// The part a write to subresource `sub` (`Some("status")`, …) changes.
    pub fn of(sub: Option<&str>) -> Part {
        if sub == Some("status") {
            Part::Status
        } else {
            Part::Main
        }
    }

    /// The `subresource` of its managedFields entries.
    fn subresource(self) -> &'static str {
        match self {
            Part::Main => "",
            Part::Status => "status",
        }
    }
}

fn add_value<'g>(
    graph: &'g TypeGraph,
    set: &mut FieldSet,
    path: &mut Path,
    v: &Value,
    field: Option<&'g Field>,
) {
    let ty = field.and_then(|f| f.ty.as_deref());
    match v {
        Value::Object(m) if !m.is_empty() => {
            // A map of free keys (labels, data) is itself owned too, as
            // Kubernetes marks it; a typed struct is only its fields.
            if ty.is_none() {
                insert_dot(set, path);
            }
            add_fields(graph, set, path, m, ty);
        }
        Value::Array(items) if !items.is_empty() && items.len() <= MAX_ELEMENTS => {
            match field.map(|f| &f.list) {
                Some(ListMerge::Key(key)) if items.iter().all(|i| i.get(*key).is_some()) => {
                    for item in items {
                        path.push(key_element(key, &item[*key]));
                        insert_dot(set, path);
                        if let Some(m) = item.as_object() {
                            add_fields(graph, set, path, m, ty);
                        }
                        path.pop();
                    }
                }
                Some(ListMerge::Set) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
                    for item in items {
                        path.push(format!("v:{item}"));
                        set.insert(path);
                        path.pop();
                    }
                }
                // An atomic list: owned whole.
                _ => set.insert(path),
            }
        }
        _ => set.insert(path),
    }
}

/// The fields of the object `m` of type `ty`, under `path`.
fn add_fields(
    graph: &TypeGraph,
    set: &mut FieldSet,
    path: &mut Path,
    m: &Map<String, Value>,
    ty: Option<&str>,
) {
    for (k, child) in m {
        path.push(format!("f:{k}"));
        add_value(graph, set, path, child, graph.field(ty, k));
        path.pop();
    }
}

/// Owns the element at `path` itself (`.`).
fn insert_dot(set: &mut FieldSet, path: &mut Path) {
    path.push(".".into());
    set.insert(path);
    path.pop();
}

fn key_element(key: &str, value: &Value) -> String {
    let mut m = Map::new();
    m.insert(key.to_string(), value.clone());
    format!("k:{}", Value::Object(m))
}

/// The value at `path` in `obj`; for a path ending in `.`, the element
/// itself.
pub fn value_at<'v>(obj: &'v Value, path: &[String]) -> Option<&'v Value> {
    let mut cur = obj;
    for p in path {
        cur = step(cur, p)?;
    }
    Some(cur)
}

fn step<'v>(cur: &'v Value, p: &str) -> Option<&'v Value> {
    if p == "." {
        return Some(cur);
    }
    if let Some(f) = p.strip_prefix("f:") {
        return cur.get(f);
    }
    let items = cur.as_array().filter(|i| i.len() <= MAX_ELEMENTS)?;
    if let Some(k) = p.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(k).ok()?;
        return items
            .iter()
            .find(|i| key.iter().all(|(kk, kv)| i.get(kk) == Some(kv)));
    }
    if let Some(v) = p.strip_prefix("v:") {
        let want: Value = serde_json::from_str(v).ok()?;
        return items.iter().find(|i| **i == want);
    }
    None
}

/// Removes the field (or list element) at `path` from `obj`.
fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    if last == "." {
        // The element itself: remove it from its list (or the field).
        remove_at(obj, parent_path);
        return;
    }
    let mut cur = obj;
    for p in parent_path {
        let next = if let Some(f) = p.strip_prefix("f:") {
            cur.get_mut(f)
        } else if let Some(k) = p.strip_prefix("k:") {
            let Ok(key) = serde_json::from_str::<Map<String, Value>>(k) else {
                return;
            };
            cur.as_array_mut().and_then(|items| {
                items
                    .iter_mut()
                    .find(|i| key.iter().all(|(kk, kv)| i.get(kk) == Some(kv)))
            })
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(items) = cur.as_array_mut().filter(|i| i.len() <= MAX_ELEMENTS) {
        if let Some(k) = last.strip_prefix("k:") {
            if let Ok(key) = serde_json::from_str::<Map<String, Value>>(k) {
                items.retain(|i| !key.iter().all(|(kk, kv)| i.get(kk) == Some(kv)));
            }
        } else if let Some(v) = last.strip_prefix("v:")
            && let Ok(want) = serde_json::from_str::<Value>(v)
        {
            items.retain(|i| *i != want);
        }
    }
}

/// One entry of `managedFields`.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: String,
    pub fields: FieldSet,
}

impl Entry {
    fn is(&self, manager: &str, operation: &str, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": self.fields.to_v1(),
        });
        if !self.subresource.is_empty() {
            v["subresource"] = json!(self.subresource);
        }
        v
    }
}

/// The entries of `obj`'s `managedFields`; malformed ones are dropped (a
/// client cannot make the server fail by sending nonsense there).
pub fn entries(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|e| {
                    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                    Some(Entry {
                        manager: s("manager"),
                        operation: s("operation"),
                        api_version: s("apiVersion"),
                        time: s("time"),
                        subresource: s("subresource"),
                        fields: FieldSet::from_v1(e.get("fieldsV1").unwrap_or(&json!({})))?,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn write_entries(obj: &mut Value, entries: &[Entry]) {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert(
            "managedFields".into(),
            Value::Array(entries.iter().map(Entry::to_json).collect()),
        );
    }
}

/// Whether the field at `path` differs between `old` and `new`; for an
/// element's own `.`, whether it is new.
fn differs(old: &Value, new: &Value, path: &[String]) -> bool {
    match path.split_last() {
        Some((last, parent)) if last == "." => value_at(old, parent).is_none(),
        _ => value_at(old, path) != value_at(new, path),
    }
}

/// The entries an update starts from: the stored ones, unless the client
/// sent others (an empty list clears them, as in Kubernetes).
fn base_entries(old: Option<&Value>, new: &Value) -> Vec<Entry> {
    let sent = new.pointer("/metadata/managedFields");
    let stored = old.and_then(|o| o.pointer("/metadata/managedFields"));
    match sent {
        Some(s) if Some(s) != stored && s.is_array() => entries(new),
        _ => old.map(entries).unwrap_or_default(),
    }
}

/// Records an update (or, with no `old`, a create) by `manager`: it takes
/// every field that changed, others lose those, and fields that are gone
/// lose their owners. Writes the result into `new`'s metadata.
pub fn record_update(kind: &Kind, old: Option<&Value>, new: &mut Value, manager: &str, part: Part) {
    let mut list = base_entries(old, new);
    let empty = json!({});
    let before = old.unwrap_or(&empty);
    let changed: Vec<Path> = fields_of(kind, new, part)
        .leaves()
        .into_iter()
        .filter(|p| differs(before, new, p))
        .collect();
    for e in &mut list {
        e.fields.retain(|p| value_at(new, p).is_some());
        for p in &changed {
            e.fields.remove(p);
        }
    }
    let subresource = part.subresource();
    if !changed.is_empty() {
        let pos = match list
            .iter()
            .position(|e| e.is(manager, "Update", subresource))
        {
            Some(i) => i,
            None => {
                list.push(Entry {
                    manager: manager.to_string(),
                    operation: "Update".into(),
                    api_version: kind.api_version(),
                    time: String::new(),
                    subresource: subresource.to_string(),
                    fields: FieldSet::default(),
                });
                list.len() - 1
            }
        };
        let entry = &mut list[pos];
        for p in &changed {
            entry.fields.insert(p);
        }
        entry.time = now_rfc3339();
        entry.api_version = kind.api_version();
    }
    list.retain(|e| !e.fields.is_empty());
    fold_ancient(&mut list);
    write_entries(new, &list);
}

/// Past [`MAX_UPDATE_ENTRIES`] `Update` entries, the oldest are merged
/// into one.
fn fold_ancient(list: &mut Vec<Entry>) {
    let updates = list.iter().filter(|e| e.operation == "Update").count();
    if updates <= MAX_UPDATE_ENTRIES {
        return;
    }
    let mut order: Vec<usize> = (0..list.len())
        .filter(|&i| list[i].operation == "Update" && list[i].manager != ANCIENT)
        .collect();
    order.sort_by(|&a, &b| list[a].time.cmp(&list[b].time));
    let excess = updates - MAX_UPDATE_ENTRIES + 1;
    let folded: Vec<usize> = order.into_iter().take(excess).collect();
    let mut ancient = list
        .iter()
        .position(|e| e.manager == ANCIENT && e.operation == "Update")
        .map(|i| list[i].clone())
        .unwrap_or(Entry {
            manager: ANCIENT.into(),
            operation: "Update".into(),
            api_version: String::new(),
            time: String::new(),
            subresource: String::new(),
            fields: FieldSet::default(),
        });
    for &i in &folded {
        for p in list[i].fields.leaves() {
            ancient.fields.insert(&p);
        }
        ancient.api_version = list[i].api_version.clone();
        ancient.time = ancient.time.clone().max(list[i].time.clone());
    }
    let mut i = 0;
    list.retain(|e| {
        let drop = folded.contains(&i) || (e.manager == ANCIENT && e.operation == "Update");
        i += 1;
        !drop
    });
    list.push(ancient);
}

/// A field another manager owns with another value.
#[derive(Debug)]
pub struct Conflict {
    pub manager: String,
    pub api_version: String,
    pub path: Path,
}

/// A field path as Kubernetes prints it in conflicts:
/// `.spec.containers[name="web"].image`.
pub fn render_path(path: &[String]) -> String {
    let mut out = String::new();
    for p in path {
        if let Some(f) = p.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = p.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = key.iter().map(|(kk, kv)| format!("{kk}={kv}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = p.strip_prefix("v:") {
            out.push_str(&format!("[{v}]"));
        }
    }
    out
}

/// The 409 of an unforced apply that would change others' fields.
pub fn conflict_error(kind: &Kind, name: &str, conflicts: &[Conflict]) -> ApiError {
    let n = conflicts.len();
    let lines: Vec<String> = conflicts
        .iter()
        .map(|c| {
            format!(
                "conflict with \"{}\" using {}: {}",
                c.manager,
                c.api_version,
                render_path(&c.path)
            )
        })
        .collect();
    let message = format!(
        "Apply failed with {n} conflict{}: {}",
        if n == 1 { "" } else { "s" },
        lines.join("\n")
    );
    ApiError::Conflict {
        group: kind.group.into(),
        resource: kind.plural.into(),
        name: name.into(),
        message,
    }
}

/// Server-side apply of `config` by `manager` onto `current` (`None`
/// when the object does not exist yet), given `merged`, the config merged
/// into the current object. Checks conflicts (taking the fields over when
/// forced), removes what the manager applied before and applies no more
/// (unless someone else owns it), and writes the entries into `merged`.
///
/// # Errors
/// The 409 of [`conflict_error`] for an unforced apply that conflicts.
#[allow(clippy::too_many_arguments)] // the inputs of one apply, each distinct
pub fn record_apply(
    kind: &Kind,
    name: &str,
    current: Option<&Value>,
    config: &Value,
    merged: &mut Value,
    manager: &str,
    part: Part,
    force: bool,
) -> Result<(), ApiError> {
    let subresource = part.subresource();
    let empty = json!({});
    let before = current.unwrap_or(&empty);
    let mut list = current.map(entries).unwrap_or_default();
    let applied = fields_of(kind, config, part);
    let mine = list
        .iter()
        .position(|e| e.is(manager, "Apply", subresource));
    let previous = mine.map(|i| list[i].fields.clone()).unwrap_or_default();

    let wanted = applied.leaves();
    let mut conflicts = Vec::new();
    for (i, e) in list.iter_mut().enumerate() {
        if Some(i) == mine {
            continue;
        }
        for p in &wanted {
            if e.fields.contains(p)
                && p.last().is_some_and(|l| l != ".")
                && differs(before, merged, p)
            {
                if force {
                    e.fields.remove(p);
                } else {
                    conflicts.push(Conflict {
                        manager: e.manager.clone(),
                        api_version: e.api_version.clone(),
                        path: p.clone(),
                    });
                }
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(conflict_error(kind, name, &conflicts));
    }

    // What this manager applied before and no longer does goes, unless
    // another manager still owns it (or, for an element, anything in it).
    let mut dropped: Vec<Path> = previous
        .leaves()
        .into_iter()
        .filter(|p| !applied.contains(p))
        .filter(|p| {
            let target: &[String] = match p.split_last() {
                Some((l, parent)) if l == "." => parent,
                _ => p,
            };
            !list
                .iter()
                .enumerate()
                .any(|(i, e)| Some(i) != mine && e.fields.touches(target))
                && !applied.touches(target)
        })
        .collect();
    // Deepest first, so an element's fields go before the element.
    dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in &dropped {
        remove_at(merged, p);
    }
    // A list whose last element went goes too (it was only there for
    // those elements).
    for p in &dropped {
        let element = match p.split_last() {
            Some((l, parent)) if l == "." => parent,
            _ => p.as_slice(),
        };
        if let Some((last, list)) = element.split_last()
            && (last.starts_with("k:") || last.starts_with("v:"))
            && value_at(merged, list)
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty)
        {
            remove_at(merged, list);
        }
    }

    let changed = merged != before || previous != applied;
    for e in &mut list {
        e.fields.retain(|p| value_at(merged, p).is_some());
    }
    match mine {
        Some(i) => {
            list[i].fields = applied;
            if changed {
                list[i].time = now_rfc3339();
                list[i].api_version = kind.api_version();
            }
        }
        None => list.push(Entry {
            manager: manager.to_string(),
            operation: "Apply".into(),
            api_version: kind.api_version(),
            time: now_rfc3339(),
            subresource: subresource.to_string(),
            fields: applied,
        }),
    }
    list.retain(|e| !e.fields.is_empty());
    write_entries(merged, &list);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::by_resource;

    fn deployments() -> &'static Kind {
        by_resource("apps", "v1", "deployments").unwrap()
    }

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "labels": {"app": "web"}},
               "spec": {"replicas": replicas,
                        "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    fn path(s: &[&str]) -> Path {
        s.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn fields_follow_merge_keys_and_leave_the_servers_own_out() {
        let mut obj = deployment(2, "a");
        obj["metadata"]["uid"] = json!("u");
        obj["status"] = json!({"replicas": 2});
        let set = fields_of(deployments(), &obj, Part::Main);
        let v1 = set.to_v1();
        assert_eq!(v1["f:metadata"]["f:labels"]["f:app"], json!({}));
        assert!(v1["f:metadata"].get("f:uid").is_none(), "{v1}");
        assert!(v1.get("f:status").is_none(), "{v1}");
        assert!(v1.get("f:apiVersion").is_none(), "{v1}");
        let c = &v1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"];
        assert_eq!(c["."], json!({}), "{v1}");
        assert_eq!(c["f:image"], json!({}), "{v1}");
        assert!(set.contains(&path(&["f:spec", "f:replicas"])));
        let status = fields_of(deployments(), &obj, Part::Status);
        assert!(status.contains(&path(&["f:status", "f:replicas"])));
        assert!(!status.touches(&path(&["f:spec"])));
    }

    #[test]
    fn an_update_takes_what_it_changed_from_the_creator() {
        let mut obj = deployment(1, "a");
        record_update(deployments(), None, &mut obj, "kubectl-create", Part::Main);
        let old = obj.clone();
        let mut new = obj.clone();
        new["spec"]["replicas"] = json!(3);
        record_update(deployments(), Some(&old), &mut new, "hpa", Part::Main);
        let list = entries(&new);
        assert_eq!(list.len(), 2, "{list:?}");
        let replicas = path(&["f:spec", "f:replicas"]);
        assert!(!list[0].fields.contains(&replicas));
        assert!(list[1].fields.contains(&replicas));
        assert_eq!(list[1].manager, "hpa");
        assert_eq!(list[1].operation, "Update");

        // A write that changes nothing changes no entry.
        let again = new.clone();
        let mut same = new.clone();
        record_update(deployments(), Some(&again), &mut same, "other", Part::Main);
        assert_eq!(same, again);
    }

    #[test]
    fn apply_conflicts_unless_forced_and_removes_what_it_no_longer_applies() {
        let kind = deployments();
        // Applied by "ci" with replicas and an env var.
        let mut config = deployment(2, "a");
        config["spec"]["template"]["spec"]["containers"][0]["env"] =
            json!([{"name": "MODE", "value": "x"}]);
        let mut obj = config.clone();
        record_apply(
            kind,
            "web",
            None,
            &config,
            &mut obj,
            "ci",
            Part::Main,
            false,
        )
        .unwrap();

        // Another manager changes replicas by update.
        let old = obj.clone();
        let mut scaled = obj.clone();
        scaled["spec"]["replicas"] = json!(5);
        record_update(kind, Some(&old), &mut scaled, "hpa", Part::Main);

        // Re-applying replicas 2 conflicts with the scaler.
        let mut merged = scaled.clone();
        merged["spec"]["replicas"] = json!(2);
        let err = record_apply(
            kind,
            "web",
            Some(&scaled),
            &config,
            &mut merged,
            "ci",
            Part::Main,
            false,
        )
        .unwrap_err();
        let ApiError::Conflict { message, .. } = err else {
            panic!("not a conflict: {err:?}");
        };
        assert_eq!(
            message,
            "Apply failed with 1 conflict: conflict with \"hpa\" using apps/v1: .spec.replicas"
        );

        // Without replicas and without the env var: no conflict; the env
        // var (only ci's) goes; replicas (now the scaler's) stays.
        let mut lean = deployment(2, "a");
        lean["spec"].as_object_mut().unwrap().remove("replicas");
        let mut merged = scaled.clone();
        record_apply(
            kind,
            "web",
            Some(&scaled),
            &lean,
            &mut merged,
            "ci",
            Part::Main,
            false,
        )
        .unwrap();
        assert_eq!(merged["spec"]["replicas"], 5);
        let c = &merged["spec"]["template"]["spec"]["containers"][0];
        assert!(c.get("env").is_none(), "{c}");
        assert_eq!(c["image"], "a");

        // Forced, the apply takes replicas over.
        let mut merged = scaled.clone();
        merged["spec"]["replicas"] = json!(2);
        record_apply(
            kind,
            "web",
            Some(&scaled),
            &config,
            &mut merged,
            "ci",
            Part::Main,
            true,
        )
        .unwrap();
        let list = entries(&merged);
        let replicas = path(&["f:spec", "f:replicas"]);
        let owner: Vec<&str> = list
            .iter()
            .filter(|e| e.fields.contains(&replicas))
            .map(|e| e.manager.as_str())
            .collect();
        assert_eq!(owner, ["ci"]);
    }

    #[test]
    fn long_lists_are_owned_whole_and_paths_into_them_are_not_followed() {
        let kind = deployments();
        let env: Vec<Value> = (0..20_000)
            .map(|i| json!({"name": format!("V{i}"), "value": "x"}))
            .collect();
        let mut obj = deployment(1, "a");
        obj["spec"]["template"]["spec"]["containers"][0]["env"] = json!(env);
        let env_path = path(&[
            "f:spec",
            "f:template",
            "f:spec",
            "f:containers",
            "k:{\"name\":\"web\"}",
            "f:env",
        ]);
        assert!(fields_of(kind, &obj, Part::Main).contains(&env_path));
        // A client's own managedFields naming every element: each path
        // stops at the long list instead of scanning it.
        let mut hostile = FieldSet::default();
        for i in 0..20_000 {
            let mut p = env_path.clone();
            p.push(format!("k:{{\"name\":\"V{i}\"}}"));
            p.push("f:value".into());
            hostile.insert(&p);
        }
        let mut sent = obj.clone();
        sent["metadata"]["managedFields"] = json!([{"manager": "m", "operation": "Update",
            "apiVersion": "apps/v1", "fieldsType": "FieldsV1", "fieldsV1": hostile.to_v1()}]);
        let started = std::time::Instant::now();
        record_update(kind, Some(&obj), &mut sent, "w", Part::Main);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert!(entries(&sent).iter().all(|e| e.manager != "m"));
    }

    #[test]
    fn update_entries_are_bounded() {
        let kind = by_resource("", "v1", "configmaps").unwrap();
        let mut obj =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}});
        for i in 0..30 {
            let old = obj.clone();
            obj["data"][format!("k{i}")] = json!("v");
            record_update(
                kind,
                Some(&old),
                &mut obj,
                &format!("writer-{i}"),
                Part::Main,
            );
        }
        let list = entries(&obj);
        assert!(list.len() <= MAX_UPDATE_ENTRIES, "{}", list.len());
        assert!(list.iter().any(|e| e.manager == ANCIENT));
        // Every field still has its one owner.
        let owned: usize = list.iter().map(|e| e.fields.leaves().len()).sum();
        assert!(owned >= 30, "{owned}");
    }

    #[test]
    fn managers_come_from_the_parameter_or_the_user_agent() {
        assert_eq!(manager_name(Some("ci"), Some("kubectl/v1")).unwrap(), "ci");
        assert_eq!(
            manager_name(None, Some("kubectl/v1.31.0 (linux)")).unwrap(),
            "kubectl"
        );
        assert_eq!(manager_name(Some(""), None).unwrap(), "unknown");
        assert!(manager_name(Some(&"x".repeat(129)), None).is_err());
    }
}
