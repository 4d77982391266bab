//! Custom kinds: the kinds CustomResourceDefinitions add while the server
//! runs, served by the same generic handlers as the built-in ones.
//!
//! The built-in kinds live in a static table ([`super::KINDS`]); a custom
//! kind is built from its CRD at run time ([`build`]) and registered here.
//! Handlers hold kinds as `&'static Kind`, so a custom kind is leaked once
//! built; [`set`] reuses the kind already built for an unchanged CRD
//! version, and [`MAX_BUILT`] bounds how many distinct ones a process ever
//! builds (CRD writes are for cluster administrators only).
//!
//! Each served version of a CRD is a kind of its own, all sharing one key
//! prefix: objects are stored in the storage version and, with no
//! conversion, served in another by changing `apiVersion` only
//! ([`Kind::serve_as`]).

pub mod jsonpath;
pub mod schema;

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::schemars::generate::SchemaGenerator;
use serde_json::{Value, json};

use self::jsonpath::JsonPath;
use self::schema::Schema;
use super::kinds::{CreateContext, KindOps};
use super::printer::{Column, NAME, age_of, name};
use super::validation::{FieldError, NameRule};
use super::{Access, Allocation, Deletion, Kind, StatusRule, Subresource};

/// Most distinct custom kind versions one process builds. Each costs its
/// schema's size in memory for the life of the process.
pub const MAX_BUILT: usize = 4096;

/// What a custom kind knows beyond [`Kind`].
#[derive(Debug)]
pub struct CustomInfo {
    /// The CRD's name (`PLURAL.GROUP`).
    pub crd: &'static str,
    /// `apiVersion` objects are stored in.
    pub storage_api_version: &'static str,
    /// The scale subresource's paths, when the version has one.
    pub scale: Option<ScalePaths>,
}

/// Where the scale subresource reads and writes replicas.
#[derive(Debug)]
pub struct ScalePaths {
    pub spec_replicas: JsonPath,
    pub status_replicas: JsonPath,
    pub label_selector: Option<JsonPath>,
}

/// The functions of one custom kind version.
struct CustomOps {
    schema: Schema,
    /// Each printer column's path (`None` for Name).
    paths: Vec<Option<JsonPath>>,
    /// Column types, to render `date` cells as ages.
    types: Vec<&'static str>,
    status: bool,
}

impl KindOps for CustomOps {
    fn normalize(&self, value: &Value) -> Result<Value, String> {
        let mut out = value.clone();
        self.schema.prune(&mut out);
        // The metadata is checked as every kind's is: through its type.
        if let Some(meta) = out.get_mut("metadata") {
            let typed: ObjectMeta =
                serde_json::from_value(meta.clone()).map_err(|e| e.to_string())?;
            *meta = serde_json::to_value(typed).map_err(|e| e.to_string())?;
        }
        Ok(out)
    }

    fn default(&self, value: &mut Value) {
        self.schema.default(value);
    }

    fn validate(&self, value: &Value) -> Vec<FieldError> {
        self.schema.validate(value)
    }

    fn cells(&self, value: &Value) -> Vec<Value> {
        self.paths
            .iter()
            .zip(&self.types)
            .map(|(path, ty)| match path {
                None => name(value),
                Some(p) => match p.get(value) {
                    None => Value::Null,
                    Some(v) if *ty == "date" => json!(age_of(v.as_str())),
                    Some(v) => v.clone(),
                },
            })
            .collect()
    }

    fn initial_status(&self, _value: &Value) -> Option<Value> {
        None
    }

    fn on_create(&self, value: &mut Value, _ctx: &CreateContext<'_>) -> Result<(), FieldError> {
        // With a status subresource, a create sets no status: only the
        // subresource writes it.
        if self.status
            && let Some(map) = value.as_object_mut()
        {
            map.remove("status");
        }
        Ok(())
    }

    fn on_update(&self, _old: &Value, _new: &mut Value) -> Result<(), FieldError> {
        Ok(())
    }

    fn schema(&self, _generator: &mut SchemaGenerator) -> Option<String> {
        None
    }
}

impl CustomOps {
    fn openapi(&self) -> &Value {
        self.schema.root()
    }
}

/// The served custom kinds.
struct Registry {
    /// Served now, in CRD order.
    kinds: Vec<&'static Kind>,
    /// Every kind built, by the hash of what it was built from.
    built: HashMap<u64, &'static Kind>,
    /// The schema of each built kind, by kind address (for OpenAPI).
    schemas: HashMap<usize, &'static CustomOps>,
}

static REGISTRY: RwLock<Option<Registry>> = RwLock::new(None);
/// Bumped on every change of the served kinds (discovery and OpenAPI
/// documents are rebuilt when it moves).
static GENERATION: AtomicU64 = AtomicU64::new(0);

fn read<T>(f: impl FnOnce(&Registry) -> T) -> Option<T> {
    let guard = REGISTRY
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    guard.as_ref().map(f)
}

/// The custom kind serving `group/version` `plural`.
pub fn by_resource(group: &str, version: &str, plural: &str) -> Option<&'static Kind> {
    read(|r| {
        r.kinds
            .iter()
            .copied()
            .find(|k| k.group == group && k.version == version && k.plural == plural)
    })
    .flatten()
}

/// The custom kind `kind` of `group`, in its storage version.
pub fn by_kind(group: &str, kind: &str) -> Option<&'static Kind> {
    read(|r| {
        let mut found = r
            .kinds
            .iter()
            .copied()
            .filter(|k| k.group == group && k.kind == kind);
        let first = found.next()?;
        Some(
            std::iter::once(first)
                .chain(found)
                .find(|k| {
                    k.custom
                        .is_some_and(|c| c.storage_api_version == k.api_version())
                })
                .unwrap_or(first),
        )
    })
    .flatten()
}

/// Every served custom kind.
pub fn all() -> Vec<&'static Kind> {
    read(|r| r.kinds.clone()).unwrap_or_default()
}

/// The current generation of the served set.
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// The `openAPIV3Schema` a custom kind was built from.
pub fn openapi_schema(kind: &Kind) -> Option<Value> {
    read(|r| {
        r.schemas
            .get(&(std::ptr::from_ref(kind) as usize))
            .map(|ops| ops.openapi().clone())
    })
    .flatten()
}

/// Serve exactly the kinds of `crds` (established CustomResourceDefinitions,
/// as stored). Kinds of unchanged CRD versions are reused.
pub fn set(crds: &[Value]) {
    let mut guard = REGISTRY
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let reg = guard.get_or_insert_with(|| Registry {
        kinds: Vec::new(),
        built: HashMap::new(),
        schemas: HashMap::new(),
    });
    let mut kinds = Vec::new();
    for crd in crds {
        let Ok(versions) = versions(crd) else {
            continue;
        };
        for v in versions {
            let key = {
                let mut h = DefaultHasher::new();
                crd["spec"].to_string().hash(&mut h);
                crd["metadata"]["name"].as_str().hash(&mut h);
                v.name.hash(&mut h);
                h.finish()
            };
            let kind = match reg.built.get(&key) {
                Some(k) => *k,
                None if reg.built.len() >= MAX_BUILT => {
                    tracing::error!(
                        crd = crd["metadata"]["name"].as_str(),
                        "too many custom kind versions built in this process; restart to serve more"
                    );
                    continue;
                }
                None => match build(crd, &v) {
                    Ok((kind, ops)) => {
                        reg.built.insert(key, kind);
                        reg.schemas.insert(std::ptr::from_ref(kind) as usize, ops);
                        kind
                    }
                    Err(errs) => {
                        tracing::warn!(
                            crd = crd["metadata"]["name"].as_str(),
                            ?errs,
                            "custom kind not served"
                        );
                        continue;
                    }
                },
            };
            kinds.push(kind);
        }
    }
    if kinds != reg.kinds {
        reg.kinds = kinds;
        GENERATION.fetch_add(1, Ordering::AcqRel);
    }
}

/// One served version of a CRD, as read from its spec.
pub struct Version<'a> {
    pub name: &'a str,
    pub storage: bool,
    pub schema: &'a Value,
    pub columns: Vec<&'a Value>,
    pub subresources: &'a Value,
}

/// The served versions of `crd`.
///
/// # Errors
/// When the CRD has no storage version.
pub fn versions(crd: &Value) -> Result<Vec<Version<'_>>, String> {
    let list = crd["spec"]["versions"].as_array().ok_or("no versions")?;
    if !list.iter().any(|v| v["storage"] == true) {
        return Err("no storage version".into());
    }
    let mut list: Vec<&Value> = list.iter().collect();
    // Discovery lists a group's versions by priority, the first preferred.
    list.sort_by(|a, b| {
        version_priority(a["name"].as_str().unwrap_or_default())
            .cmp(&version_priority(b["name"].as_str().unwrap_or_default()))
    });
    Ok(list
        .into_iter()
        .filter(|v| v["served"] == true)
        .filter_map(|v| {
            Some(Version {
                name: v["name"].as_str()?,
                storage: v["storage"] == true,
                schema: &v["schema"]["openAPIV3Schema"],
                columns: v["additionalPrinterColumns"]
                    .as_array()
                    .map(|c| c.iter().collect())
                    .unwrap_or_default(),
                subresources: &v["subresources"],
            })
        })
        .collect())
}

/// The order Kubernetes gives versions: GA before beta before alpha,
/// higher numbers first within each, then any other name alphabetically.
pub fn version_priority(
    name: &str,
) -> (u8, std::cmp::Reverse<u64>, std::cmp::Reverse<u64>, String) {
    use std::cmp::Reverse;
    let parsed = name.strip_prefix('v').and_then(|rest| {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let major: u64 = rest[..digits].parse().ok()?;
        let tail = &rest[digits..];
        if tail.is_empty() {
            return Some((0, major, 0));
        }
        for (level, word) in [(1u8, "beta"), (2, "alpha")] {
            if let Some(n) = tail.strip_prefix(word)
                && let Ok(minor) = n.parse::<u64>()
            {
                return Some((level, major, minor));
            }
        }
        None
    });
    match parsed {
        Some((level, major, minor)) => (level, Reverse(major), Reverse(minor), String::new()),
        None => (3, Reverse(0), Reverse(0), name.to_string()),
    }
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

fn leak_list(list: &Value) -> &'static [&'static str] {
    let v: Vec<&'static str> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(leak)
        .collect();
    Box::leak(v.into_boxed_slice())
}

/// Build the kind of one served version of `crd`.
fn build(
    crd: &Value,
    v: &Version<'_>,
) -> Result<(&'static Kind, &'static CustomOps), Vec<FieldError>> {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let group = leak(spec["group"].as_str().unwrap_or_default());
    let storage = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["storage"] == true)
        .and_then(|v| v["name"].as_str())
        .unwrap_or(v.name);
    let schema = Schema::new(v.schema, "openAPIV3Schema")?;
    let status = v.subresources.get("status").is_some_and(Value::is_object);
    let scale = match v.subresources.get("scale").filter(|s| s.is_object()) {
        None => None,
        Some(s) => {
            let path = |k: &str| {
                s[k].as_str().map(JsonPath::parse).transpose().map_err(|e| {
                    vec![FieldError::invalid(
                        format!("subresources.scale.{k}"),
                        s[k].to_string(),
                        e,
                    )]
                })
            };
            Some(ScalePaths {
                spec_replicas: path("specReplicasPath")?.ok_or_else(|| {
                    vec![FieldError::required("subresources.scale.specReplicasPath")]
                })?,
                status_replicas: path("statusReplicasPath")?.ok_or_else(|| {
                    vec![FieldError::required(
                        "subresources.scale.statusReplicasPath",
                    )]
                })?,
                label_selector: path("labelSelectorPath")?,
            })
        }
    };
    let mut columns = vec![NAME];
    let mut paths = vec![None];
    let mut types = vec!["string"];
    let defaults = [json!({
        "name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp",
    })];
    let listed: Vec<&Value> = if v.columns.is_empty() {
        defaults.iter().collect()
    } else {
        v.columns.clone()
    };
    for c in listed {
        let path = JsonPath::parse(c["jsonPath"].as_str().unwrap_or_default()).map_err(|e| {
            vec![FieldError::invalid(
                "additionalPrinterColumns.jsonPath",
                c["jsonPath"].to_string(),
                e,
            )]
        })?;
        let ty = leak(c["type"].as_str().unwrap_or("string"));
        columns.push(Column {
            name: leak(c["name"].as_str().unwrap_or_default()),
            ty,
            format: leak(c["format"].as_str().unwrap_or_default()),
            priority: u8::try_from(c["priority"].as_u64().unwrap_or(0).min(1)).unwrap_or(1),
            description: leak(c["description"].as_str().unwrap_or_default()),
        });
        paths.push(Some(path));
        types.push(ty);
    }
    let mut subresources = Vec::new();
    if status {
        subresources.push(Subresource::Status);
    }
    if scale.is_some() {
        subresources.push(Subresource::Scale);
    }
    let ops: &'static CustomOps = Box::leak(Box::new(CustomOps {
        schema,
        paths,
        types,
        status,
    }));
    let info: &'static CustomInfo = Box::leak(Box::new(CustomInfo {
        crd: leak(crd["metadata"]["name"].as_str().unwrap_or_default()),
        storage_api_version: leak(&format!("{group}/{storage}")),
        scale,
    }));
    let kind_name = names["kind"].as_str().unwrap_or_default();
    let kind: &'static Kind = Box::leak(Box::new(Kind {
        group,
        version: leak(v.name),
        kind: leak(kind_name),
        list_kind: leak(
            names["listKind"]
                .as_str()
                .map_or_else(|| format!("{kind_name}List"), str::to_string)
                .as_str(),
        ),
        plural: leak(names["plural"].as_str().unwrap_or_default()),
        singular: leak(
            names["singular"]
                .as_str()
                .map_or_else(|| kind_name.to_lowercase(), str::to_string)
                .as_str(),
        ),
        namespaced: spec["scope"] != "Cluster",
        short_names: leak_list(&names["shortNames"]),
        categories: leak_list(&names["categories"]),
        subresources: Box::leak(subresources.into_boxed_slice()),
        stored: true,
        name_rule: NameRule::Subdomain,
        columns: Box::leak(columns.into_boxed_slice()),
        status: if status {
            StatusRule::Subresource
        } else {
            StatusRule::None
        },
        immutable: &[],
        field_selectors: &[],
        allocation: Allocation::None,
        deletion: Deletion::Immediate,
        access: Access::ClusterAdmin,
        ops,
        custom: Some(info),
    }));
    Ok((kind, ops))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd(plural: &str, storage: &str) -> Value {
        json!({
            "metadata": {"name": format!("{plural}.example.com")},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": plural, "singular": "widget", "kind": "Widget", "shortNames": ["wg"]},
                "versions": [
                    {"name": "v1", "served": true, "storage": storage == "v1",
                     "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}},
                     "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}],
                     "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.size", "statusReplicasPath": ".status.size"}}},
                    {"name": "v1beta1", "served": true, "storage": storage == "v1beta1",
                     "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
                    {"name": "v1alpha1", "served": false, "storage": false,
                     "schema": {"openAPIV3Schema": {"type": "object"}}},
                ],
            },
        })
    }

    #[test]
    fn versions_sort_as_kubernetes_prefers_them() {
        let mut v = vec!["v1alpha1", "foo", "v2", "v1beta2", "v1", "v1beta1", "v10"];
        v.sort_by_key(|n| version_priority(n));
        assert_eq!(
            v,
            ["v10", "v2", "v1", "v1beta2", "v1beta1", "v1alpha1", "foo"]
        );
    }

    #[test]
    fn each_served_version_is_a_kind_sharing_one_store_prefix() {
        set(&[crd("widgets", "v1")]);
        let v1 = by_resource("example.com", "v1", "widgets").unwrap();
        let beta = by_resource("example.com", "v1beta1", "widgets").unwrap();
        assert!(by_resource("example.com", "v1alpha1", "widgets").is_none());
        assert_eq!(v1.key_prefix(), beta.key_prefix());
        assert_eq!(by_kind("example.com", "Widget").unwrap().version, "v1");
        assert!(v1.has_subresource(Subresource::Scale));
        assert!(!beta.has_subresource(Subresource::Status));
        let row = v1
            .ops
            .cells(&json!({"metadata": {"name": "w"}, "spec": {"size": 3}}));
        assert_eq!(row, vec![json!("w"), json!(3)]);
        // Unchanged: the same kinds, no new generation.
        let generation = generation();
        set(&[crd("widgets", "v1")]);
        assert_eq!(generation, super::generation());
        assert!(std::ptr::eq(
            v1,
            by_resource("example.com", "v1", "widgets").unwrap()
        ));
        set(&[]);
        assert!(by_resource("example.com", "v1", "widgets").is_none());
    }
}
