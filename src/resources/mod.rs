//! The kinds wkube serves. Each kind's knowledge lives in one file under
//! `kinds/`, registered with one line in [`KINDS`], the table
//! discovery, routing, RBAC, printing and admission read.
//!
//! Objects travel through the API server as `serde_json::Value`, so that
//! handlers, patching and watch stay generic; each kind's typed
//! [`KindOps::normalize`] round-trips a value through its Rust type, which
//! both validates its shape and tells which fields the type does not know
//! (for `fieldValidation=Strict`).

pub mod activation;
pub mod cron;
pub mod custom;
pub mod defaults;
pub mod gateway;
pub mod kinds;
pub mod module;
pub mod patchmeta;
pub mod printer;
pub mod quantity;
pub mod validation;

use serde_json::Value;

pub use kinds::{Access, Allocation, CreateContext, Deletion, KindOps, KindSpec, StatusRule};
pub use validation::{FieldError, FieldErrorKind, NameRule};

/// The subresources a kind may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    Status,
    Scale,
    Binding,
    Log,
    Proxy,
    Token,
    /// Running a command in a container: refused for Wasm pods, listed so
    /// clients and RBAC see it as in Kubernetes.
    Exec,
    /// Attaching to a container's terminal: refused likewise.
    Attach,
    /// Forwarding a local port into a pod: refused likewise.
    PortForward,
    /// Deleting a pod through the disruption budgets that cover it
    /// (`policy/v1` Eviction; `api::eviction`).
    Eviction,
}

impl Subresource {
    pub fn name(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Scale => "scale",
            Subresource::Binding => "binding",
            Subresource::Log => "log",
            Subresource::Proxy => "proxy",
            Subresource::Token => "token",
            Subresource::Exec => "exec",
            Subresource::Attach => "attach",
            Subresource::PortForward => "portforward",
            Subresource::Eviction => "eviction",
        }
    }
}

/// Everything the API server needs to know about one kind: the constants
/// of its [`KindSpec`], and its functions as [`KindOps`].
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub list_kind: &'static str,
    /// The plural, lowercase resource name used in URLs and RBAC.
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: &'static [Subresource],
    /// False for virtual kinds (reviews) that are only created, never stored.
    pub stored: bool,
    pub name_rule: NameRule,
    pub columns: &'static [printer::Column],
    pub status: StatusRule,
    pub immutable: &'static [&'static str],
    pub field_selectors: &'static [&'static str],
    pub allocation: Allocation,
    pub deletion: Deletion,
    pub access: Access,
    pub ops: &'static dyn KindOps,
    /// Set for the kinds CustomResourceDefinitions add (`custom`).
    pub custom: Option<&'static custom::CustomInfo>,
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} {}", self.group, self.version, self.kind)
    }
}

/// A kind is its group and name.
impl PartialEq for Kind {
    fn eq(&self, other: &Self) -> bool {
        self.group == other.group && self.kind == other.kind
    }
}

impl Eq for Kind {}

impl Kind {
    /// `apiVersion` as written in objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The store key prefix of this kind's objects (ends with `/`).
    pub fn key_prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/registry/{}/", self.plural)
        } else {
            format!("/registry/{}/{}/", self.group, self.plural)
        }
    }

    /// The store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}{}/{}", self.key_prefix(), ns, name),
            _ => format!("{}{}", self.key_prefix(), name),
        }
    }

    /// Put an object read from the store into this kind's version. A
    /// custom kind's versions share its stored objects, which carry the
    /// storage version; with no conversion only `apiVersion` changes.
    pub fn serve_as(&self, obj: &mut Value) {
        if self.custom.is_some()
            && let Some(map) = obj.as_object_mut()
            && map.get("apiVersion").and_then(Value::as_str) != Some(&self.api_version())
        {
            map.insert("apiVersion".into(), Value::String(self.api_version()));
        }
    }

    /// An object as it is stored: in the storage version.
    pub fn store_as<'a>(&self, obj: &'a Value) -> std::borrow::Cow<'a, Value> {
        match self.custom {
            Some(c)
                if obj.get("apiVersion").and_then(Value::as_str) != Some(c.storage_api_version) =>
            {
                let mut owned = obj.clone();
                if let Some(map) = owned.as_object_mut() {
                    map.insert(
                        "apiVersion".into(),
                        Value::String(c.storage_api_version.to_string()),
                    );
                }
                std::borrow::Cow::Owned(owned)
            }
            _ => std::borrow::Cow::Borrowed(obj),
        }
    }

    pub fn has_subresource(&self, sub: Subresource) -> bool {
        self.subresources.contains(&sub)
    }

    /// `deployments.apps`-style name used in messages, as Kubernetes
    /// writes it.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

pub use kinds::KINDS;

/// The built-in kinds by plural resource name. Every request's path is
/// looked up here (twice: to serve it and to count it), and a walk over
/// every kind comparing strings showed in profiles of pod starts.
static BY_PLURAL: std::sync::LazyLock<std::collections::HashMap<&'static str, Vec<&'static Kind>>> =
    std::sync::LazyLock::new(|| {
        let mut m: std::collections::HashMap<&'static str, Vec<&'static Kind>> =
            std::collections::HashMap::new();
        for k in KINDS {
            m.entry(k.plural).or_default().push(k);
        }
        m
    });

/// Find a kind by group and plural resource name.
pub fn by_resource(group: &str, version: &str, plural: &str) -> Option<&'static Kind> {
    BY_PLURAL
        .get(plural)
        .and_then(|ks| {
            ks.iter()
                .find(|k| k.group == group && k.version == version)
                .copied()
        })
        .or_else(|| custom::by_resource(group, version, plural))
}

/// Find a kind by group and kind name.
pub fn by_kind(group: &str, kind: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.kind == kind)
        .or_else(|| custom::by_kind(group, kind))
}

/// Find a kind by group, version and kind name.
pub fn by_resource_kind(group: &str, version: &str, kind: &str) -> Option<&'static Kind> {
    all_kinds()
        .into_iter()
        .find(|k| k.group == group && k.version == version && k.kind == kind)
}

/// Every kind served now: the built-in ones, then the custom ones.
pub fn all_kinds() -> Vec<&'static Kind> {
    let mut out: Vec<&'static Kind> = KINDS.iter().collect();
    out.extend(custom::all());
    out
}

/// The group-versions served, in discovery order (core first).
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for k in all_kinds() {
        if !out.contains(&(k.group, k.version)) {
            out.push((k.group, k.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_unique_plural_in_its_group() {
        for (i, a) in KINDS.iter().enumerate() {
            for b in &KINDS[i + 1..] {
                assert!(
                    !(a.group == b.group && a.plural == b.plural),
                    "{} twice",
                    a.plural
                );
            }
        }
    }

    #[test]
    fn store_keys_follow_the_registry_layout() {
        let pods = by_resource("", "v1", "pods").unwrap();
        assert_eq!(
            pods.key(Some("default"), "web"),
            "/registry/pods/default/web"
        );
        let deploy = by_resource("apps", "v1", "deployments").unwrap();
        assert_eq!(
            deploy.key(Some("ns"), "d"),
            "/registry/apps/deployments/ns/d"
        );
        let ns = by_resource("", "v1", "namespaces").unwrap();
        assert_eq!(
            ns.key(None, "kube-system"),
            "/registry/namespaces/kube-system"
        );
    }

    #[test]
    fn a_status_rule_needs_a_status_subresource() {
        for kind in KINDS {
            let has = kind.has_subresource(Subresource::Status);
            assert_eq!(has, kind.status != StatusRule::None, "{}", kind.kind);
        }
    }

    #[test]
    fn every_kind_prints_a_cell_per_column() {
        let obj = serde_json::json!({"metadata": {"name": "x", "namespace": "d"}});
        for kind in KINDS {
            assert_eq!(
                kind.ops.cells(&obj).len(),
                kind.columns.len(),
                "{}",
                kind.kind
            );
        }
    }

    #[test]
    fn normalize_rejects_a_wrong_shape() {
        let cm = by_resource("", "v1", "configmaps").unwrap();
        let bad = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": 1}});
        assert!(cm.ops.normalize(&bad).is_err());
    }
}
