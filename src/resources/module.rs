//! wkube's own kind: `Module` (group `wkube.dev`), the module registry's
//! index. A cluster-scoped Module named NAME maps tags to the sha256
//! digests of uploaded Wasm blobs, as an image repository maps tags to
//! manifests.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{FieldError, KindOps};

/// The Module object.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Module {
    pub api_version: String,
    pub kind: String,
    pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    #[serde(default)]
    pub spec: ModuleSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ModuleStatus>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModuleSpec {
    /// Tag → `sha256:<hex>` digest.
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModuleStatus {
    /// Digest → what the registry learnt about the blob.
    #[serde(default)]
    pub blobs: std::collections::BTreeMap<String, BlobInfo>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BlobInfo {
    pub size: u64,
    /// `component` or `module` (core Wasm).
    pub format: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exports: Vec<String>,
}

pub struct ModuleOps;

/// True for `sha256:` followed by 64 lowercase hex digits.
pub fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

impl KindOps for ModuleOps {
    fn normalize(&self, value: &Value) -> Result<Value, String> {
        let m: Module = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
        serde_json::to_value(&m).map_err(|e| e.to_string())
    }

    fn default(&self, _value: &mut Value) {}

    fn validate(&self, value: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if let Some(tags) = value.pointer("/spec/tags").and_then(Value::as_object) {
            for (tag, digest) in tags {
                let d = digest.as_str().unwrap_or("");
                if !is_digest(d) {
                    errs.push(FieldError::invalid(
                        format!("spec.tags[{tag}]"),
                        d,
                        "must be sha256:<64 lowercase hex digits>",
                    ));
                }
                let tag_ok = !tag.is_empty()
                    && tag.len() <= 128
                    && tag
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
                if !tag_ok {
                    errs.push(FieldError::invalid(
                        "spec.tags",
                        tag.clone(),
                        "a tag must be 1-128 characters of [A-Za-z0-9._-]",
                    ));
                }
            }
        }
        errs
    }
}
