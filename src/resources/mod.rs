//! The kinds wkube serves: their names, scopes and subresources (the table
//! discovery, routing and RBAC read), and per-kind defaulting and
//! validation over the `k8s-openapi` types.
//!
//! Objects travel through the API server as `serde_json::Value`, so that
//! handlers, patching and watch stay generic; each kind's typed
//! [`KindOps::normalize`] round-trips a value through its Rust type, which
//! both validates its shape and tells which fields the type does not know
//! (for `fieldValidation=Strict`).

pub mod cron;
pub mod defaults;
pub mod module;
pub mod quantity;
pub mod validation;

use k8s_openapi::{ListableResource, Metadata, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use validation::{FieldError, FieldErrorKind};

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
        }
    }
}

/// Everything the API server needs to know about one kind.
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
    pub ops: &'static dyn KindOps,
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} {}", self.group, self.version, self.kind)
    }
}

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

/// Kind-specific behaviour, implemented once generically over the
/// `k8s-openapi` type.
pub trait KindOps: Send + Sync {
    /// Round-trip `value` through the typed representation. Returns the
    /// normalized value, or the decode error message.
    fn normalize(&self, value: &Value) -> Result<Value, String>;
    /// Fill in the defaults Kubernetes fills in on create and update.
    fn default(&self, value: &mut Value);
    /// Kind-specific validation beyond the shape.
    fn validate(&self, value: &Value) -> Vec<FieldError>;
}

struct Typed<T>(std::marker::PhantomData<fn() -> T>);

impl<T> KindOps for Typed<T>
where
    T: Resource + Metadata + DeserializeOwned + Serialize + 'static,
{
    fn normalize(&self, value: &Value) -> Result<Value, String> {
        // Decoded straight from the borrowed value: no deep copy first.
        let typed = <T as serde::Deserialize>::deserialize(value).map_err(|e| e.to_string())?;
        serde_json::to_value(&typed).map_err(|e| e.to_string())
    }

    fn default(&self, value: &mut Value) {
        defaults::apply(T::KIND, value);
    }

    fn validate(&self, value: &Value) -> Vec<FieldError> {
        validation::validate_kind(T::KIND, value)
    }
}

macro_rules! kind {
    ($ty:ty, plural: $plural:literal, singular: $singular:literal, namespaced: $ns:literal,
     short: [$($short:literal),*], categories: [$($cat:literal),*], sub: [$($sub:ident),*]) => {
        Kind {
            group: <$ty as Resource>::GROUP,
            version: <$ty as Resource>::VERSION,
            kind: <$ty as Resource>::KIND,
            list_kind: <$ty as ListableResource>::LIST_KIND,
            plural: $plural,
            singular: $singular,
            namespaced: $ns,
            short_names: &[$($short),*],
            categories: &[$($cat),*],
            subresources: &[$(Subresource::$sub),*],
            stored: true,
            ops: &Typed::<$ty>(std::marker::PhantomData),
        }
    };
}

use k8s_openapi::api::{apps, batch, coordination, core, discovery, rbac};

/// Every stored kind wkube serves, in discovery order.
pub static KINDS: &[Kind] = &[
    kind!(core::v1::Namespace, plural: "namespaces", singular: "namespace", namespaced: false,
          short: ["ns"], categories: [], sub: [Status]),
    kind!(core::v1::Node, plural: "nodes", singular: "node", namespaced: false,
          short: ["no"], categories: [], sub: [Status, Proxy]),
    kind!(core::v1::Pod, plural: "pods", singular: "pod", namespaced: true,
          short: ["po"], categories: ["all"], sub: [Status, Binding, Log, Proxy, Exec, Attach, PortForward]),
    kind!(core::v1::Service, plural: "services", singular: "service", namespaced: true,
          short: ["svc"], categories: ["all"], sub: [Status, Proxy]),
    kind!(core::v1::Endpoints, plural: "endpoints", singular: "endpoints", namespaced: true,
          short: ["ep"], categories: [], sub: []),
    kind!(core::v1::ConfigMap, plural: "configmaps", singular: "configmap", namespaced: true,
          short: ["cm"], categories: [], sub: []),
    kind!(core::v1::Secret, plural: "secrets", singular: "secret", namespaced: true,
          short: [], categories: [], sub: []),
    kind!(core::v1::ServiceAccount, plural: "serviceaccounts", singular: "serviceaccount", namespaced: true,
          short: ["sa"], categories: [], sub: [Token]),
    kind!(core::v1::Event, plural: "events", singular: "event", namespaced: true,
          short: ["ev"], categories: [], sub: []),
    kind!(apps::v1::Deployment, plural: "deployments", singular: "deployment", namespaced: true,
          short: ["deploy"], categories: ["all"], sub: [Status, Scale]),
    kind!(apps::v1::ReplicaSet, plural: "replicasets", singular: "replicaset", namespaced: true,
          short: ["rs"], categories: ["all"], sub: [Status, Scale]),
    kind!(apps::v1::DaemonSet, plural: "daemonsets", singular: "daemonset", namespaced: true,
          short: ["ds"], categories: ["all"], sub: [Status]),
    kind!(apps::v1::ControllerRevision, plural: "controllerrevisions", singular: "controllerrevision", namespaced: true,
          short: [], categories: [], sub: []),
    kind!(batch::v1::Job, plural: "jobs", singular: "job", namespaced: true,
          short: [], categories: ["all"], sub: [Status]),
    kind!(batch::v1::CronJob, plural: "cronjobs", singular: "cronjob", namespaced: true,
          short: ["cj"], categories: ["all"], sub: [Status]),
    kind!(rbac::v1::Role, plural: "roles", singular: "role", namespaced: true,
          short: [], categories: [], sub: []),
    kind!(rbac::v1::ClusterRole, plural: "clusterroles", singular: "clusterrole", namespaced: false,
          short: [], categories: [], sub: []),
    kind!(rbac::v1::RoleBinding, plural: "rolebindings", singular: "rolebinding", namespaced: true,
          short: [], categories: [], sub: []),
    kind!(rbac::v1::ClusterRoleBinding, plural: "clusterrolebindings", singular: "clusterrolebinding", namespaced: false,
          short: [], categories: [], sub: []),
    kind!(coordination::v1::Lease, plural: "leases", singular: "lease", namespaced: true,
          short: [], categories: [], sub: []),
    kind!(discovery::v1::EndpointSlice, plural: "endpointslices", singular: "endpointslice", namespaced: true,
          short: [], categories: [], sub: []),
    Kind {
        group: "wkube.dev",
        version: "v1",
        kind: "Module",
        list_kind: "ModuleList",
        plural: "modules",
        singular: "module",
        namespaced: false,
        short_names: &["mod"],
        categories: &[],
        subresources: &[Subresource::Status],
        stored: true,
        ops: &module::ModuleOps,
    },
];

/// Find a kind by group and plural resource name.
pub fn by_resource(group: &str, version: &str, plural: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
}

/// Find a kind by group and kind name.
pub fn by_kind(group: &str, kind: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.group == group && k.kind == kind)
}

/// The group-versions served, in discovery order (core first).
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for k in KINDS {
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
    fn normalize_rejects_a_wrong_shape() {
        let cm = by_resource("", "v1", "configmaps").unwrap();
        let bad = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": 1}});
        assert!(cm.ops.normalize(&bad).is_err());
    }
}
