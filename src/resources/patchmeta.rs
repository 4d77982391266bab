//! How strategic merge patch treats each field of each kind: the merge
//! keys and strategies of Kubernetes' API types, kept once, for the patch
//! engine and for the OpenAPI documents (whose `x-kubernetes-patch-*`
//! extensions kubectl reads).
//!
//! The metadata is a property of a *type* (a Container's `ports` merge by
//! `containerPort`, a ServiceSpec's by `port`), so the patch engine follows
//! the type of each field down from the kind's own type: [`TypeGraph`],
//! built once from the kinds' schemas.

use std::collections::HashMap;
use std::sync::OnceLock;

use k8s_openapi::schemars::generate::SchemaSettings;
use serde_json::Value;

use super::{KINDS, Kind};

pub const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
/// How strategic merge patch and server-side apply treat one list (or
/// struct) field.
pub struct ListMetadata {
    pub schema: &'static str,
    pub field: &'static str,
    pub merge_key: Option<&'static str>,
    pub strategy: &'static str,
    pub list_type: Option<&'static str>,
    pub map_keys: &'static [&'static str],
}

const fn keyed(
    schema: &'static str,
    field: &'static str,
    key: &'static str,
    map_keys: &'static [&'static str],
) -> ListMetadata {
    ListMetadata {
        schema,
        field,
        merge_key: Some(key),
        strategy: "merge",
        list_type: Some("map"),
        map_keys,
    }
}

pub const POD_SPEC: &str = "io.k8s.api.core.v1.PodSpec";
pub const CONTAINER: &str = "io.k8s.api.core.v1.Container";
pub const EPHEMERAL_CONTAINER: &str = "io.k8s.api.core.v1.EphemeralContainer";

/// The merge semantics kubectl's client-side apply, `edit` and `patch`
/// need to merge lists element by element instead of replacing them. These
/// are properties of the Kubernetes API (its documented patch strategies);
/// `k8s-openapi` does not carry them. Without an entry a list is replaced
/// whole, which is what Kubernetes does for unmarked lists too.
/// `conditions` lists of conditions merge by `type` wherever they are
/// ([`is_conditions`]).
pub const LIST_METADATA: &[ListMetadata] = &[
    keyed(POD_SPEC, "containers", "name", &["name"]),
    keyed(POD_SPEC, "initContainers", "name", &["name"]),
    keyed(POD_SPEC, "ephemeralContainers", "name", &["name"]),
    keyed(POD_SPEC, "imagePullSecrets", "name", &["name"]),
    keyed(POD_SPEC, "hostAliases", "ip", &["ip"]),
    keyed(
        POD_SPEC,
        "topologySpreadConstraints",
        "topologyKey",
        &["topologyKey", "whenUnsatisfiable"],
    ),
    keyed(POD_SPEC, "schedulingGates", "name", &["name"]),
    // A volume's source is a one-of: retainKeys drops the old source when
    // an apply switches, say, from emptyDir to configMap.
    ListMetadata {
        schema: POD_SPEC,
        field: "volumes",
        merge_key: Some("name"),
        strategy: "merge,retainKeys",
        list_type: Some("map"),
        map_keys: &["name"],
    },
    ListMetadata {
        schema: POD_SPEC,
        field: "resourceClaims",
        merge_key: Some("name"),
        strategy: "merge,retainKeys",
        list_type: Some("map"),
        map_keys: &["name"],
    },
    keyed(CONTAINER, "env", "name", &["name"]),
    keyed(
        CONTAINER,
        "ports",
        "containerPort",
        &["containerPort", "protocol"],
    ),
    keyed(CONTAINER, "volumeMounts", "mountPath", &["mountPath"]),
    keyed(CONTAINER, "volumeDevices", "devicePath", &["devicePath"]),
    keyed(EPHEMERAL_CONTAINER, "env", "name", &["name"]),
    keyed(
        EPHEMERAL_CONTAINER,
        "ports",
        "containerPort",
        &["containerPort", "protocol"],
    ),
    keyed(
        EPHEMERAL_CONTAINER,
        "volumeMounts",
        "mountPath",
        &["mountPath"],
    ),
    keyed(
        EPHEMERAL_CONTAINER,
        "volumeDevices",
        "devicePath",
        &["devicePath"],
    ),
    keyed(
        "io.k8s.api.core.v1.ServiceSpec",
        "ports",
        "port",
        &["port", "protocol"],
    ),
    keyed("io.k8s.api.core.v1.PodStatus", "podIPs", "ip", &["ip"]),
    keyed("io.k8s.api.core.v1.PodStatus", "hostIPs", "ip", &["ip"]),
    keyed(
        "io.k8s.api.core.v1.NodeStatus",
        "addresses",
        "type",
        &["type"],
    ),
    keyed(
        "io.k8s.api.core.v1.ServiceAccount",
        "secrets",
        "name",
        &["name"],
    ),
    keyed(OBJECT_META, "ownerReferences", "uid", &["uid"]),
    ListMetadata {
        schema: OBJECT_META,
        field: "finalizers",
        merge_key: None,
        strategy: "merge",
        list_type: Some("set"),
        map_keys: &[],
    },
    ListMetadata {
        schema: "io.k8s.api.core.v1.NodeSpec",
        field: "podCIDRs",
        merge_key: None,
        strategy: "merge",
        list_type: Some("set"),
        map_keys: &[],
    },
    // Switching the deployment strategy type must drop `rollingUpdate`.
    ListMetadata {
        schema: "io.k8s.api.apps.v1.DeploymentSpec",
        field: "strategy",
        merge_key: None,
        strategy: "retainKeys",
        list_type: None,
        map_keys: &[],
    },
];

/// Whether a list of `items_type` named `field` is a list of conditions,
/// which merges by `type` (pod, node, deployment, job, … conditions, and
/// meta/v1 `Condition`).
pub fn is_conditions(field: &str, items_type: Option<&str>) -> bool {
    field == "conditions" && items_type.is_some_and(|t| t.ends_with("Condition"))
}

/// How a list field merges under a strategic merge patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListMerge {
    /// Replaced whole (every list without patch metadata).
    Replace,
    /// Elements merged by the value of this key.
    Key(&'static str),
    /// A list of scalars merged as a set.
    Set,
}

/// What the patch engine knows of one field of a type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// The type of the field (of its elements, for a list), when it is one
    /// of the API's object types.
    pub ty: Option<String>,
    pub list: ListMerge,
}

/// Every object type the kinds use, by schema name, with its fields.
#[derive(Debug, Default)]
pub struct TypeGraph {
    types: HashMap<String, HashMap<String, Field>>,
    /// (group, kind) → the kind's type.
    roots: HashMap<(&'static str, &'static str), String>,
}

impl TypeGraph {
    /// The graph of every served kind, built on first use.
    pub fn get() -> &'static TypeGraph {
        static GRAPH: OnceLock<TypeGraph> = OnceLock::new();
        GRAPH.get_or_init(|| TypeGraph::build(KINDS))
    }

    fn build(kinds: &[Kind]) -> TypeGraph {
        let mut generator = SchemaSettings::openapi3().into_generator();
        let mut roots = HashMap::new();
        for kind in kinds {
            if let Some(name) = kind.ops.schema(&mut generator) {
                roots.insert((kind.group, kind.kind), name);
            }
        }
        let mut types = HashMap::new();
        for (name, schema) in generator.definitions() {
            let Some(props) = schema.get("properties").and_then(Value::as_object) else {
                continue;
            };
            let fields = props
                .iter()
                .map(|(field, prop)| (field.clone(), describe(name, field, prop)))
                .collect();
            types.insert(name.clone(), fields);
        }
        TypeGraph { types, roots }
    }

    /// The type of `kind`'s objects; `None` for a kind without a schema
    /// (its lists are replaced whole).
    pub fn root(&self, kind: &Kind) -> Option<&str> {
        self.roots.get(&(kind.group, kind.kind)).map(String::as_str)
    }

    /// Field `field` of type `ty`.
    pub fn field(&self, ty: Option<&str>, field: &str) -> Option<&Field> {
        self.types.get(ty?)?.get(field)
    }
}

/// The name a `$ref` points at.
fn ref_name(schema: &Value) -> Option<String> {
    let r = schema.get("$ref").and_then(Value::as_str).or_else(|| {
        schema
            .get("allOf")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(|s| s.get("$ref"))
            .and_then(Value::as_str)
    })?;
    Some(r.rsplit('/').next().unwrap_or(r).to_string())
}

fn describe(schema: &str, field: &str, prop: &Value) -> Field {
    if prop.get("type").and_then(Value::as_str) == Some("array") {
        let items = prop.get("items").and_then(ref_name);
        let meta = LIST_METADATA
            .iter()
            .find(|m| m.schema == schema && m.field == field && m.list_type.is_some());
        let list = match meta {
            Some(ListMetadata {
                merge_key: Some(key),
                ..
            }) => ListMerge::Key(key),
            Some(_) => ListMerge::Set,
            None if is_conditions(field, items.as_deref()) => ListMerge::Key("type"),
            None => ListMerge::Replace,
        };
        return Field { ty: items, list };
    }
    Field {
        ty: ref_name(prop),
        list: ListMerge::Replace,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(plural: &str) -> &'static Kind {
        KINDS.iter().find(|k| k.plural == plural).unwrap()
    }

    /// Follows `path` from the kind's type; the last field's description.
    fn at(plural: &str, path: &[&str]) -> Field {
        let g = TypeGraph::get();
        let mut ty = g.root(kind(plural)).map(str::to_string);
        let mut last = None;
        for f in path {
            let field = g
                .field(ty.as_deref(), f)
                .unwrap_or_else(|| panic!("{f} in {ty:?}"));
            ty = field.ty.clone();
            last = Some(field.clone());
        }
        last.unwrap()
    }

    #[test]
    fn merge_keys_follow_the_type_of_each_field() {
        let cases: &[(&str, &[&str], ListMerge)] = &[
            ("pods", &["spec", "containers"], ListMerge::Key("name")),
            (
                "pods",
                &["spec", "containers", "ports"],
                ListMerge::Key("containerPort"),
            ),
            ("services", &["spec", "ports"], ListMerge::Key("port")),
            (
                "deployments",
                &["spec", "template", "spec", "containers", "env"],
                ListMerge::Key("name"),
            ),
            (
                "deployments",
                &["status", "conditions"],
                ListMerge::Key("type"),
            ),
            ("nodes", &["status", "conditions"], ListMerge::Key("type")),
            ("nodes", &["status", "addresses"], ListMerge::Key("type")),
            ("configmaps", &["metadata", "finalizers"], ListMerge::Set),
            (
                "configmaps",
                &["metadata", "ownerReferences"],
                ListMerge::Key("uid"),
            ),
            ("pods", &["spec", "containers", "args"], ListMerge::Replace),
            ("pods", &["spec", "tolerations"], ListMerge::Replace),
        ];
        for (plural, path, want) in cases {
            assert_eq!(at(plural, path).list, *want, "{plural} {path:?}");
        }
    }

    #[test]
    fn a_kind_without_a_schema_has_no_root() {
        assert!(TypeGraph::get().root(kind("modules")).is_none());
    }
}
