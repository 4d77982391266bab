//! Decoding a stored object without its `metadata.managedFields`.
//!
//! Field managers are often the larger half of a stored object, and the
//! paths that decode thousands of objects at once (Table rows, selector
//! matching) never look at them. Building them into a `Value` only to drop
//! them was most of a Table's cost, so they are skipped while parsing:
//! still read and checked as JSON, but never allocated.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::resources::printer::Keep;

/// The top-level fields (besides `metadata`) to keep; `None` keeps all.
pub type Fields = Option<&'static [(&'static str, Keep)]>;

/// `bytes` (a JSON object) as a `Value`, without `metadata.managedFields`.
/// Anything that is not an object with an object `metadata` decodes
/// whole, as [`serde_json::from_slice`] would.
pub fn decode(bytes: &[u8]) -> serde_json::Result<Value> {
    decode_fields(bytes, None)
}

/// [`decode`] keeping only `fields` besides `metadata` (see
/// [`crate::resources::printer::Keep`]). A value of another shape than
/// `fields` expects decodes as [`decode`] would.
pub fn decode_fields(bytes: &[u8], fields: Fields) -> serde_json::Result<Value> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match (Top { fields })
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
    {
        Ok(v) => Ok(v),
        Err(_) if fields.is_some() => decode(bytes),
        Err(_) => serde_json::from_slice(bytes),
    }
}

/// The top-level object: `metadata` goes through [`Metadata`], the rest
/// through `fields`.
struct Top {
    fields: Fields,
}

impl<'de> DeserializeSeed<'de> for Top {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Top {
    type Value = Value;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = m.next_key::<String>()? {
            if k == "metadata" {
                let v = m.next_value_seed(Metadata)?;
                out.insert(k, v);
                continue;
            }
            match self.fields {
                None => {
                    let v = m.next_value()?;
                    out.insert(k, v);
                }
                Some(fields) => match fields.iter().find(|(name, _)| *name == k) {
                    Some((_, keep)) => {
                        let v = m.next_value_seed(Part(*keep))?;
                        out.insert(k, v);
                    }
                    None => {
                        m.next_value::<IgnoredAny>()?;
                    }
                },
            }
        }
        Ok(Value::Object(out))
    }
}

/// An object's metadata, its `managedFields` read past.
struct Metadata;

impl<'de> DeserializeSeed<'de> for Metadata {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Metadata {
    type Value = Value;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object's metadata")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = m.next_key::<String>()? {
            if k == "managedFields" {
                m.next_value::<IgnoredAny>()?;
            } else {
                out.insert(k, m.next_value()?);
            }
        }
        Ok(Value::Object(out))
    }
}

/// A value below the top level, decoded as far as its [`Keep`] says.
struct Part(Keep);

impl<'de> DeserializeSeed<'de> for Part {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match self.0 {
            Keep::All => <Value as serde::Deserialize>::deserialize(d),
            Keep::Count => d.deserialize_seq(self),
            Keep::Only(_) => d.deserialize_map(self),
        }
    }
}

impl<'de> Visitor<'de> for Part {
    type Value = Value;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Keep::Count => "an array",
            _ => "an object",
        })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while s.next_element::<IgnoredAny>()?.is_some() {
            out.push(Value::Null);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Value, A::Error> {
        let Keep::Only(fields) = self.0 else {
            return Err(serde::de::Error::invalid_type(
                serde::de::Unexpected::Map,
                &self,
            ));
        };
        let mut out = Map::new();
        while let Some(k) = m.next_key::<String>()? {
            match fields.iter().find(|(name, _)| *name == k) {
                Some((_, keep)) => {
                    let v = m.next_value_seed(Part(*keep))?;
                    out.insert(k, v);
                }
                None => {
                    m.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn managed_fields_are_left_out_and_everything_else_kept() {
        let obj = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "a", "labels": {"x": "y"},
                         "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"managedFields": "kept: only metadata's are skipped"},
        });
        let got = decode(&serde_json::to_vec(&obj).unwrap()).unwrap();
        let mut want = obj.clone();
        want["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
        assert_eq!(got, want);
    }

    #[test]
    fn odd_shapes_decode_whole_and_bad_json_fails() {
        for odd in [
            json!([1, 2]),
            json!({"metadata": "m"}),
            json!("s"),
            json!({"metadata": null}),
        ] {
            assert_eq!(decode(&serde_json::to_vec(&odd).unwrap()).unwrap(), odd);
        }
        assert!(decode(b"{\"metadata\":{\"managedFields\":[}").is_err());
        assert!(decode(b"{} trailing").is_err());
    }

    #[test]
    fn fields_keep_only_what_they_name_and_odd_shapes_fall_back() {
        const FIELDS: &[(&str, Keep)] = &[
            (
                "spec",
                Keep::Only(&[("items", Keep::Count), ("node", Keep::All)]),
            ),
            ("status", Keep::All),
        ];
        let obj = json!({"kind": "K", "metadata": {"name": "a", "managedFields": []},
            "spec": {"items": [{"big": 1}, 2, [3]], "node": {"n": 1}, "other": "x"},
            "status": {"phase": "Up"}, "extra": [1]});
        let got = decode_fields(&serde_json::to_vec(&obj).unwrap(), Some(FIELDS)).unwrap();
        assert_eq!(
            got,
            json!({"metadata": {"name": "a"},
                   "spec": {"items": [null, null, null], "node": {"n": 1}},
                   "status": {"phase": "Up"}})
        );
        // `items` is no array: the whole object, without field managers.
        let odd = json!({"metadata": {"name": "a", "managedFields": []}, "spec": {"items": 5}});
        let got = decode_fields(&serde_json::to_vec(&odd).unwrap(), Some(FIELDS)).unwrap();
        assert_eq!(
            got,
            json!({"metadata": {"name": "a"}, "spec": {"items": 5}})
        );
    }
}
