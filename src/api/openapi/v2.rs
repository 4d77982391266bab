//! `/openapi/v2`: a Swagger 2.0 document holding the definitions (no
//! paths), in the protobuf encoding kubectl asks for (gnostic's
//! `openapi.v2.Document`) or as JSON.
//!
//! kubectl still reads v2 where v3 cannot answer: a `kind: List` file
//! (what `kubectl get -o yaml` writes) and create-only kinds such as
//! SelfSubjectAccessReview have no PATCH operation, so `create -f`/`apply
//! -f` fall back to validating them client-side against the v2
//! definitions; without a v2 document they fail with `failed to download
//! openapi`. The paths are left out: with none, kubectl's v2 check of the
//! `fieldValidation` parameter answers "unsupported", which is what makes
//! it validate client-side, and every kind with a PATCH is settled by v3.

use prost::Message;
use serde_json::{Map, Value, json};

use super::schemas::REF_PREFIX;

const V2_REF_PREFIX: &str = "#/definitions/";

/// Only the fields wkube fills in; the tags are gnostic's.
#[derive(Clone, PartialEq, Message)]
struct Document {
    #[prost(string, tag = "1")]
    swagger: String,
    #[prost(message, optional, tag = "2")]
    info: Option<Info>,
    #[prost(message, optional, tag = "8")]
    paths: Option<Paths>,
    #[prost(message, optional, tag = "9")]
    definitions: Option<Definitions>,
}

#[derive(Clone, PartialEq, Message)]
struct Info {
    #[prost(string, tag = "1")]
    title: String,
    #[prost(string, tag = "2")]
    version: String,
}

#[derive(Clone, PartialEq, Message)]
struct Paths {}

#[derive(Clone, PartialEq, Message)]
struct Definitions {
    #[prost(message, repeated, tag = "1")]
    additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, Message)]
struct NamedSchema {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Schema>,
}

#[derive(Clone, PartialEq, Message)]
struct Schema {
    #[prost(string, tag = "1")]
    reference: String,
    #[prost(string, tag = "2")]
    format: String,
    #[prost(string, tag = "4")]
    description: String,
    #[prost(string, repeated, tag = "19")]
    required: Vec<String>,
    #[prost(message, optional, boxed, tag = "21")]
    additional_properties: Option<Box<AdditionalProperties>>,
    #[prost(message, optional, tag = "22")]
    r#type: Option<TypeItem>,
    #[prost(message, optional, tag = "23")]
    items: Option<ItemsItem>,
    #[prost(message, optional, tag = "25")]
    properties: Option<Properties>,
    #[prost(message, repeated, tag = "31")]
    vendor_extension: Vec<NamedAny>,
}

#[derive(Clone, PartialEq, Message)]
struct AdditionalProperties {
    #[prost(oneof = "AdditionalPropertiesKind", tags = "1, 2")]
    kind: Option<AdditionalPropertiesKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum AdditionalPropertiesKind {
    #[prost(message, tag = "1")]
    Schema(Schema),
    #[prost(bool, tag = "2")]
    Boolean(bool),
}

#[derive(Clone, PartialEq, Message)]
struct TypeItem {
    #[prost(string, repeated, tag = "1")]
    value: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ItemsItem {
    #[prost(message, repeated, tag = "1")]
    schema: Vec<Schema>,
}

#[derive(Clone, PartialEq, Message)]
struct Properties {
    #[prost(message, repeated, tag = "1")]
    additional_properties: Vec<NamedSchema>,
}

#[derive(Clone, PartialEq, Message)]
struct NamedAny {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, Message)]
struct AnyValue {
    /// The value as YAML; JSON is YAML.
    #[prost(string, tag = "2")]
    yaml: String,
}

/// The v3 `$ref` of a schema, if it is one: `{"$ref"}` or, with sibling
/// fields, `{"allOf": [{"$ref"}], …}`.
fn v3_ref(s: &Map<String, Value>) -> Option<&str> {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        return Some(r);
    }
    match s.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
        Some([one]) => one.get("$ref").and_then(Value::as_str),
        _ => None,
    }
}

fn v2_ref(r: &str) -> String {
    match r.strip_prefix(REF_PREFIX) {
        Some(name) => format!("{V2_REF_PREFIX}{name}"),
        None => r.to_string(),
    }
}

/// A v3 component schema in Swagger 2.0's JSON form: `$ref`s point into
/// `definitions`, and a described reference is `$ref` with siblings, as
/// Kubernetes writes v2.
pub fn to_v2_json(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            if let Some(r) = v3_ref(m) {
                out.insert("$ref".into(), json!(v2_ref(r)));
            }
            for (k, val) in m {
                match k.as_str() {
                    "$ref" | "allOf" if v3_ref(m).is_some() => {}
                    _ => {
                        out.insert(k.clone(), to_v2_json(val));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(to_v2_json).collect()),
        other => other.clone(),
    }
}

fn to_proto(v: &Value) -> Schema {
    let empty = Map::new();
    let m = v.as_object().unwrap_or(&empty);
    let text = |k: &str| {
        m.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let mut s = Schema {
        reference: v3_ref(m).map(v2_ref).unwrap_or_default(),
        format: text("format"),
        description: text("description"),
        ..Default::default()
    };
    if let Some(req) = m.get("required").and_then(Value::as_array) {
        s.required = req
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect();
    }
    if let Some(t) = m.get("type").and_then(Value::as_str) {
        s.r#type = Some(TypeItem {
            value: vec![t.to_string()],
        });
    }
    if let Some(items) = m.get("items") {
        s.items = Some(ItemsItem {
            schema: vec![to_proto(items)],
        });
    }
    if let Some(props) = m.get("properties").and_then(Value::as_object) {
        s.properties = Some(Properties {
            additional_properties: named(props),
        });
    }
    s.additional_properties = match m.get("additionalProperties") {
        Some(Value::Bool(b)) => Some(Box::new(AdditionalProperties {
            kind: Some(AdditionalPropertiesKind::Boolean(*b)),
        })),
        Some(other @ Value::Object(_)) => Some(Box::new(AdditionalProperties {
            kind: Some(AdditionalPropertiesKind::Schema(to_proto(other))),
        })),
        _ => None,
    };
    s.vendor_extension = m
        .iter()
        .filter(|(k, _)| k.starts_with("x-"))
        .map(|(k, val)| NamedAny {
            name: k.clone(),
            value: Some(AnyValue {
                yaml: val.to_string(),
            }),
        })
        .collect();
    s
}

fn named(m: &Map<String, Value>) -> Vec<NamedSchema> {
    m.iter()
        .map(|(name, v)| NamedSchema {
            name: name.clone(),
            value: Some(to_proto(v)),
        })
        .collect()
}

/// The JSON and protobuf encodings of the document over `definitions`
/// (v3 component schemas by name).
pub fn encode(definitions: &Map<String, Value>, version: &str) -> (Value, Vec<u8>) {
    let doc = Document {
        swagger: "2.0".into(),
        info: Some(Info {
            title: "Kubernetes".into(),
            version: version.into(),
        }),
        paths: Some(Paths {}),
        definitions: Some(Definitions {
            additional_properties: named(definitions),
        }),
    };
    let v2_defs: Map<String, Value> = definitions
        .iter()
        .map(|(k, v)| (k.clone(), to_v2_json(v)))
        .collect();
    let json = json!({
        "swagger": "2.0",
        "info": { "title": "Kubernetes", "version": version },
        "paths": {},
        "definitions": v2_defs,
    });
    (json, doc.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn described_refs_become_v2_refs() {
        let v3 = json!({"description": "d", "allOf": [{"$ref": "#/components/schemas/a.B"}]});
        assert_eq!(
            to_v2_json(&v3),
            json!({"description": "d", "$ref": "#/definitions/a.B"})
        );
        let p = to_proto(&v3);
        assert_eq!(p.reference, "#/definitions/a.B");
        assert_eq!(p.description, "d");
    }

    #[test]
    fn protobuf_round_trips() {
        let mut defs = Map::new();
        defs.insert(
            "a.B".into(),
            json!({"type": "object", "properties": {"xs": {"type": "array", "items": {"type": "string"},
                   "x-kubernetes-patch-strategy": "merge"}},
                   "additionalProperties": {"type": "string"},
                   "x-kubernetes-group-version-kind": [{"group": "", "version": "v1", "kind": "B"}]}),
        );
        let (_, bytes) = encode(&defs, "v");
        let doc = Document::decode(bytes.as_slice()).unwrap();
        let b = &doc.definitions.unwrap().additional_properties[0];
        assert_eq!(b.name, "a.B");
        let s = b.value.as_ref().unwrap();
        assert_eq!(s.r#type.as_ref().unwrap().value, ["object"]);
        assert_eq!(
            s.vendor_extension[0].name,
            "x-kubernetes-group-version-kind"
        );
        let xs = &s.properties.as_ref().unwrap().additional_properties[0];
        assert_eq!(
            xs.value.as_ref().unwrap().vendor_extension[0]
                .value
                .as_ref()
                .unwrap()
                .yaml,
            "\"merge\""
        );
    }
}
