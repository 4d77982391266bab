//! wkube's own kind: `Module` (group `wkube.dev`), the module registry's
//! index. A cluster-scoped Module named NAME maps tags to the sha256
//! digests of uploaded Wasm blobs, as an image repository maps tags to
//! manifests.

use serde::{Deserialize, Serialize};

use super::validation::{NameRule, check_name};

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

/// The tag a reference without one means.
pub const DEFAULT_TAG: &str = "latest";

/// The wire format of compiled code (`api::modules::compiled` serves it,
/// `kubelet::precompiled` reads it): the path of the code compiled from
/// `digest` for the engine profile given as query string `profile_query`,
/// and the response headers that describe it.
pub fn compiled_path(digest: &str, profile_query: &str) -> String {
    format!("/apis/wkube.dev/v1/blobs/{digest}/compiled?{profile_query}")
}
/// Lowercase hex sha256 of the compiled code.
pub const COMPILED_SHA256_HEADER: &str = "x-wkube-artifact-sha256";
/// `component` or `module`.
pub const COMPILED_KIND_HEADER: &str = "x-wkube-artifact-kind";
/// The engine profile's fingerprint the code was compiled for.
pub const COMPILED_FINGERPRINT_HEADER: &str = "x-wkube-engine-fingerprint";

/// Tags as Module validation accepts them (and OCI registries do).
pub fn is_valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// A pod image reference to the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageRef {
    /// `sha256:<hex>`.
    Digest(String),
    /// `NAME[:TAG]`.
    Tagged { name: String, tag: String },
    /// `NAME@sha256:<hex>`: the digest, named for readers.
    Pinned { name: String, digest: String },
}

/// Parse `NAME[:TAG]`, `NAME@sha256:<hex>` or `sha256:<hex>`.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_image(image: &str) -> Result<ImageRef, String> {
    let bad = || {
        format!(
            "image {image:?} is not a module reference: expected NAME[:TAG], NAME@sha256:<hex> or sha256:<hex> (NAME a Module of wkube's registry; OCI registries are not supported yet)"
        )
    };
    let image = image.trim();
    if image.starts_with("sha256:") {
        return if is_digest(image) {
            Ok(ImageRef::Digest(image.to_string()))
        } else {
            Err(bad())
        };
    }
    if let Some((name, digest)) = image.split_once('@') {
        if check_name(NameRule::Subdomain, name).is_some() || !is_digest(digest) {
            return Err(bad());
        }
        return Ok(ImageRef::Pinned {
            name: name.into(),
            digest: digest.into(),
        });
    }
    let (name, tag) = image.split_once(':').unwrap_or((image, DEFAULT_TAG));
    if check_name(NameRule::Subdomain, name).is_some() || !is_valid_tag(tag) {
        return Err(bad());
    }
    Ok(ImageRef::Tagged {
        name: name.into(),
        tag: tag.into(),
    })
}

/// True for `sha256:` followed by 64 lowercase hex digits.
pub fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}
