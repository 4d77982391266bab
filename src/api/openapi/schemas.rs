//! `components.schemas` of one group-version document: the `k8s-openapi`
//! types' schemars output under Kubernetes' definition names, plus the
//! vendor extensions kubectl reads that `k8s-openapi` does not carry.

use k8s_openapi::api::{authentication, authorization, autoscaling, core, policy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::schemars::JsonSchema;
use k8s_openapi::schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use super::Gvk;

/// Where OpenAPI 3 documents keep their schemas; schemars' `openapi3`
/// settings write `$ref`s with the same prefix.
pub const REF_PREFIX: &str = "#/components/schemas/";

/// A `$ref` to a component schema.
pub fn reference(name: &str) -> Value {
    json!({ "$ref": format!("{REF_PREFIX}{name}") })
}

/// Kubernetes' definition names of the shared meta types the paths use.
pub const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
pub const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
pub const API_RESOURCE_LIST: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList";
/// The group of wkube's own `Module` kind.
const MODULE_GROUP: &str = "wkube.dev";
use crate::resources::patchmeta::OBJECT_META;
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";

/// Collects the schemas one document needs.
pub struct Collector {
    generator: SchemaGenerator,
    /// Schemas built here rather than by schemars (lists, wkube's kinds).
    extra: Map<String, Value>,
    /// Schema name → the kinds it is the schema of.
    gvks: Vec<(String, Gvk)>,
}

impl Collector {
    pub fn new() -> Self {
        let mut c = Collector {
            generator: SchemaSettings::openapi3().into_generator(),
            extra: Map::new(),
            gvks: Vec::new(),
        };
        // Every document's operations refer to these.
        c.generator.subschema_for::<meta::DeleteOptions>();
        c.generator.subschema_for::<meta::Status>();
        c.generator.subschema_for::<meta::Patch>();
        c.generator.subschema_for::<meta::APIResourceList>();
        // The event's schema does not depend on the object type.
        c.generator
            .subschema_for::<meta::WatchEvent<core::v1::Pod>>();
        c
    }

    /// Add the schema of a kind (and of its list, when `list_kind` is
    /// set); returns the kind's schema name. `None` for a kind this
    /// module has no schema for.
    pub fn add_kind(&mut self, gvk: Gvk, list_kind: Option<&'static str>) -> Option<String> {
        let custom = crate::resources::by_resource_kind(gvk.group, gvk.version, gvk.kind)
            .filter(|k| k.custom.is_some());
        let name = if (gvk.group, gvk.kind) == (MODULE_GROUP, "Module") {
            self.add_module()
        } else if let Some(kind) = custom {
            self.add_custom(kind)?
        } else {
            typed_schema(&mut self.generator, gvk.group, gvk.kind)?
        };
        self.gvks.push((name.clone(), gvk));
        if let Some(list_kind) = list_kind {
            let list_name = format!("{name}List");
            let list_gvk = Gvk {
                kind: list_kind,
                ..gvk
            };
            self.extra
                .insert(list_name.clone(), list_schema(&name, gvk.kind));
            self.gvks.push((list_name, list_gvk));
        }
        Some(name)
    }

    /// The finished schemas with their vendor extensions.
    pub fn finish(mut self) -> Map<String, Value> {
        let mut schemas = self.generator.take_definitions(true);
        schemas.append(&mut self.extra);
        for (name, gvk) in &self.gvks {
            if let Some(Value::Object(s)) = schemas.get_mut(name) {
                // `k8s-openapi` lists `metadata` as required because its
                // Rust field is not optional; in Kubernetes it is not (a
                // review has none), and kubectl's client-side validation
                // of v2 would refuse objects without it.
                if let Some(Value::Array(required)) = s.get_mut("required") {
                    required.retain(|r| r != "metadata");
                    if required.is_empty() {
                        s.remove("required");
                    }
                }
                s.insert(
                    "x-kubernetes-group-version-kind".into(),
                    json!([{ "group": gvk.group, "version": gvk.version, "kind": gvk.kind }]),
                );
            }
        }
        for schema in schemas.values_mut() {
            add_conditions_metadata(schema);
        }
        for m in crate::resources::patchmeta::LIST_METADATA {
            let Some(field) = schemas
                .get_mut(m.schema)
                .and_then(|s| s.get_mut("properties"))
                .and_then(|p| p.get_mut(m.field))
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            if let Some(key) = m.merge_key {
                field.insert("x-kubernetes-patch-merge-key".into(), json!(key));
            }
            field.insert("x-kubernetes-patch-strategy".into(), json!(m.strategy));
            if let Some(list_type) = m.list_type {
                field.insert("x-kubernetes-list-type".into(), json!(list_type));
                if !m.map_keys.is_empty() {
                    field.insert("x-kubernetes-list-map-keys".into(), json!(m.map_keys));
                }
            }
        }
        schemas
    }

    /// A custom kind's schema: its CRD version's `openAPIV3Schema`, with
    /// the metadata every object has.
    fn add_custom(&mut self, kind: &crate::resources::Kind) -> Option<String> {
        let mut schema = crate::resources::custom::openapi_schema(kind)?;
        self.generator.subschema_for::<meta::ObjectMeta>();
        self.generator.subschema_for::<meta::ListMeta>();
        let props = schema
            .as_object_mut()?
            .entry("properties")
            .or_insert_with(|| json!({}));
        if let Some(props) = props.as_object_mut() {
            props.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
            props.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
            props.insert("metadata".into(), json!({"allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}], "description": "Standard object's metadata."}));
        }
        // Named as Kubernetes names custom resources' schemas: the group
        // reversed, then version and kind.
        let reversed: Vec<&str> = kind.group.split('.').rev().collect();
        let name = format!("{}.{}.{}", reversed.join("."), kind.version, kind.kind);
        self.extra.insert(name.clone(), schema);
        Some(name)
    }

    fn add_module(&mut self) -> String {
        // Module references ObjectMeta (and its list ListMeta) by name.
        self.generator.subschema_for::<meta::ObjectMeta>();
        self.generator.subschema_for::<meta::ListMeta>();
        // Named as Kubernetes names custom resources' schemas: the group
        // reversed, then version and kind.
        let name = "dev.wkube.v1.Module".to_string();
        self.extra.insert(name.clone(), module_schema());
        name
    }
}

/// Registers the schemars schema of a kind; returns its name. A served
/// kind's schema comes from its type (see `resources::kinds`); the types
/// only subresources and reviews use are listed here.
fn typed_schema(generator: &mut SchemaGenerator, group: &str, kind: &str) -> Option<String> {
    if let Some(served) = crate::resources::by_kind(group, kind) {
        let name = served.ops.schema(generator)?;
        // The list's `metadata`.
        generator.subschema_for::<meta::ListMeta>();
        return Some(name);
    }
    macro_rules! kinds {
        ($($ty:ty),* $(,)?) => {
            $(
                if <$ty as k8s_openapi::Resource>::GROUP == group && <$ty as k8s_openapi::Resource>::KIND == kind {
                    generator.subschema_for::<$ty>();
                    generator.subschema_for::<meta::ListMeta>();
                    return Some(<$ty as JsonSchema>::schema_name().into_owned());
                }
            )*
        };
    }
    kinds!(
        core::v1::Binding,
        autoscaling::v1::Scale,
        authentication::v1::TokenRequest,
        policy::v1::Eviction,
        authentication::v1::SelfSubjectReview,
        authentication::v1::TokenReview,
        authorization::v1::SelfSubjectAccessReview,
        authorization::v1::SelfSubjectRulesReview,
        authorization::v1::SubjectAccessReview,
        authorization::v1::LocalSubjectAccessReview,
    );
    None
}

/// `FooList`: Kubernetes' list envelope, which `k8s-openapi` models as a
/// generic `List<T>` without a schema of its own.
fn list_schema(item: &str, kind: &str) -> Value {
    json!({
        "description": format!("{kind}List is a list of {kind} objects."),
        "type": "object",
        "properties": {
            "apiVersion": { "description": API_VERSION_DOC, "type": "string" },
            "kind": { "description": KIND_DOC, "type": "string" },
            "items": {
                "description": format!("The {kind} objects."),
                "type": "array",
                "items": reference(item),
            },
            "metadata": {
                "description": "Standard list metadata: the resourceVersion to watch from and the continue token of a paginated list.",
                "allOf": [reference(LIST_META)],
            },
        },
        "required": ["items"],
    })
}

const API_VERSION_DOC: &str = "APIVersion is the versioned schema of this representation of an object, GROUP/VERSION (or VERSION for the core group).";
const KIND_DOC: &str = "Kind is the REST resource this object represents, in CamelCase.";

/// wkube's `Module` (see `resources::module`), written by hand: it has no
/// schemars implementation. The shape follows the Rust type.
fn module_schema() -> Value {
    json!({
        "description": "Module is wkube's module registry index: a cluster-scoped object, named after a module repository, that maps tags to the sha256 digests of uploaded WebAssembly blobs, as an image repository maps tags to manifests.",
        "type": "object",
        "properties": {
            "apiVersion": { "description": API_VERSION_DOC, "type": "string" },
            "kind": { "description": KIND_DOC, "type": "string" },
            "metadata": {
                "description": "Standard object's metadata.",
                "allOf": [reference(OBJECT_META)],
            },
            "spec": {
                "description": "ModuleSpec is the desired state: the tags of the repository.",
                "type": "object",
                "properties": {
                    "tags": {
                        "description": "Tags maps a tag (1-128 characters of [A-Za-z0-9._-]) to the digest of a blob, written sha256:<64 lowercase hex digits>.",
                        "type": "object",
                        "additionalProperties": { "type": "string" },
                    },
                },
            },
            "status": {
                "description": "ModuleStatus is what the registry learnt about the uploaded blobs. Written by the server.",
                "type": "object",
                "properties": {
                    "blobs": {
                        "description": "Blobs maps a digest to what the registry learnt about that blob.",
                        "type": "object",
                        "additionalProperties": {
                            "description": "BlobInfo describes one uploaded blob.",
                            "type": "object",
                            "properties": {
                                "size": {
                                    "description": "Size of the blob in bytes.",
                                    "type": "integer",
                                    "format": "int64",
                                },
                                "format": {
                                    "description": "Format is `component` (a WebAssembly component) or `module` (a core WebAssembly module).",
                                    "type": "string",
                                },
                                "exports": {
                                    "description": "The interfaces or functions the blob exports.",
                                    "type": "array",
                                    "items": { "type": "string" },
                                },
                            },
                            "required": ["size", "format"],
                        },
                    },
                },
            },
        },
    })
}

/// Every `conditions` list of objects keyed by `type` (pod, node,
/// deployment, job, … conditions, and meta/v1 `Condition`) merges by
/// `type`, so a controller's status patch does not wipe others'
/// conditions.
fn add_conditions_metadata(schema: &mut Value) {
    let Some(field) = schema
        .get_mut("properties")
        .and_then(|p| p.get_mut("conditions"))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let item_is_condition = field
        .get("items")
        .and_then(|i| i.get("$ref"))
        .and_then(Value::as_str)
        .is_some_and(|r| r.ends_with("Condition"));
    if field.get("type").and_then(Value::as_str) == Some("array") && item_is_condition {
        field.insert("x-kubernetes-patch-merge-key".into(), json!("type"));
        field.insert("x-kubernetes-patch-strategy".into(), json!("merge"));
        field.insert("x-kubernetes-list-type".into(), json!("map"));
        field.insert("x-kubernetes-list-map-keys".into(), json!(["type"]));
    }
}
