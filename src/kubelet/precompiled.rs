//! Native code for this node's engine, compiled once by the API server
//! (`api::modules::compiled`) instead of on every node.
//!
//! Native code is not sandboxed the way Wasm is, so it is taken from one
//! source only: the API server, over the kubelet's own client (TLS checked
//! against the cluster CA and the node's credential, or the in-process
//! client of `wkube server`'s own node; an agent on plain HTTP never asks,
//! see `cli::agent`). The bytes must hash to the sha256 the server recorded
//! when it compiled them and be for this node's engine fingerprint before
//! the runtime maps them.

use bytes::Bytes;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

use crate::resources::module::{
    COMPILED_FINGERPRINT_HEADER, COMPILED_KIND_HEADER, COMPILED_SHA256_HEADER, compiled_path,
};
use crate::runtime::ArtifactKind;
use crate::runtime::profile::EngineProfile;

/// Where a node's compiled code comes from (`--module-code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ModuleCode {
    /// Code the API server compiled for this node's engine; compiled here
    /// when the server cannot provide it.
    #[default]
    Auto,
    /// Only code the API server compiled: what a build without the
    /// `compiler` feature does.
    Precompiled,
    /// Always compiled here: native code never comes over the network.
    Local,
}

/// Why no precompiled code could be had.
#[derive(Debug, thiserror::Error)]
pub enum PrecompiledError {
    /// The server answered with an error (404 no such blob, 400 a profile
    /// it cannot compile for, 422 a module that does not compile, 429 busy,
    /// 503 a server without the compiler).
    #[error("the API server answered {status}: {message}")]
    Refused { status: u16, message: String },
    /// The bytes do not hash to the sha256 the server published.
    #[error(
        "compiled code for {digest} failed verification: it hashes to {actual}, not {expected}"
    )]
    Tampered {
        digest: String,
        expected: String,
        actual: String,
    },
    /// The answer lacks a header or names another engine or kind.
    #[error("the API server's answer for {digest} is unusable: {problem}")]
    Malformed { digest: String, problem: String },
    /// The server could not be reached.
    #[error("cannot fetch compiled code for {digest}: {message}")]
    Api { digest: String, message: String },
}

impl PrecompiledError {
    /// Whether the module itself cannot be compiled (not worth compiling
    /// it here either).
    pub fn is_invalid_module(&self) -> bool {
        matches!(self, PrecompiledError::Refused { status: 422, .. })
    }

    /// Whether the server's flow control refused for now (429).
    pub fn throttled(&self) -> bool {
        matches!(self, PrecompiledError::Refused { status: 429, .. })
    }
}

/// Verified compiled code.
pub struct Precompiled {
    pub kind: ArtifactKind,
    pub bytes: Bytes,
}

/// Downloads and verifies the code the API server compiled from `digest`
/// for `profile` (compiling it there first if it is the first node of the
/// profile to ask).
///
/// # Errors
/// See [`PrecompiledError`].
pub async fn fetch(
    client: &kube::Client,
    digest: &str,
    profile: &EngineProfile,
) -> Result<Precompiled, PrecompiledError> {
    let api_err = |message: String| PrecompiledError::Api {
        digest: digest.to_string(),
        message,
    };
    let req = hyper::Request::get(compiled_path(digest, &profile.to_query()))
        .body(Vec::new())
        .map_err(|e| api_err(e.to_string()))?;
    let resp = client
        .send(req.map(kube::client::Body::from))
        .await
        .map_err(|e| api_err(e.to_string()))?;
    let status = resp.status();
    let (parts, body) = resp.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let published = Published {
        sha256: header(COMPILED_SHA256_HEADER),
        kind: header(COMPILED_KIND_HEADER),
        fingerprint: header(COMPILED_FINGERPRINT_HEADER),
    };
    let body = body
        .collect()
        .await
        .map_err(|e| api_err(e.to_string()))?
        .to_bytes();
    if status.as_u16() != 200 {
        return Err(PrecompiledError::Refused {
            status: status.as_u16(),
            message: status_message(&body)
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned()),
        });
    }
    let kind = verify(digest, profile, &published, &body)?;
    Ok(Precompiled { kind, bytes: body })
}

/// What the server's headers say about the artifact.
#[derive(Debug, Default, Clone)]
pub struct Published {
    pub sha256: Option<String>,
    pub kind: Option<String>,
    pub fingerprint: Option<String>,
}

/// Checks `body` against what the server published for it: the
/// fingerprint is this node's, the kind is known and the bytes hash to the
/// published sha256.
///
/// # Errors
/// [`PrecompiledError::Malformed`] or [`PrecompiledError::Tampered`].
pub fn verify(
    digest: &str,
    profile: &EngineProfile,
    published: &Published,
    body: &[u8],
) -> Result<ArtifactKind, PrecompiledError> {
    let malformed = |problem: String| PrecompiledError::Malformed {
        digest: digest.to_string(),
        problem,
    };
    let ours = profile.fingerprint();
    match published.fingerprint.as_deref() {
        Some(fp) if fp == ours => {}
        other => {
            return Err(malformed(format!(
                "compiled for engine {other:?}, this node's is {ours}"
            )));
        }
    }
    let kind = published
        .kind
        .as_deref()
        .and_then(ArtifactKind::parse)
        .ok_or_else(|| malformed(format!("unknown artifact kind {:?}", published.kind)))?;
    let expected = published
        .sha256
        .as_deref()
        .filter(|h| h.len() == 64)
        .ok_or_else(|| malformed("no sha256 published".into()))?;
    let actual = hex::encode(Sha256::digest(body));
    if !actual.eq_ignore_ascii_case(expected) {
        return Err(PrecompiledError::Tampered {
            digest: digest.to_string(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(kind)
}

/// The `message` of a Kubernetes Status body.
fn status_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("message")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::profile::MemoryLayout;

    const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    fn published(body: &[u8], profile: &EngineProfile) -> Published {
        Published {
            sha256: Some(hex::encode(Sha256::digest(body))),
            kind: Some("component".into()),
            fingerprint: Some(profile.fingerprint()),
        }
    }

    #[test]
    fn code_that_hashes_to_what_the_server_published_is_accepted() {
        let profile = EngineProfile::host(MemoryLayout::Guarded);
        let body = b"\x7fELF compiled code";
        let kind = verify(DIGEST, &profile, &published(body, &profile), body).unwrap();
        assert_eq!(kind, ArtifactKind::Component);
    }

    #[test]
    fn a_tampered_artifact_is_refused_before_it_is_loaded() {
        let profile = EngineProfile::host(MemoryLayout::Guarded);
        let good = published(b"\x7fELF compiled code", &profile);
        let err = verify(DIGEST, &profile, &good, b"\x7fELF compiled c0de").unwrap_err();
        assert!(matches!(err, PrecompiledError::Tampered { .. }), "{err}");
        let truncated = verify(DIGEST, &profile, &good, b"\x7fELF compiled").unwrap_err();
        assert!(matches!(truncated, PrecompiledError::Tampered { .. }));
    }

    #[test]
    fn code_for_another_engine_or_without_a_hash_is_refused() {
        let ours = EngineProfile::host(MemoryLayout::Guarded);
        let small = EngineProfile::host(MemoryLayout::Small);
        let body = b"code";
        let err = verify(DIGEST, &ours, &published(body, &small), body).unwrap_err();
        assert!(matches!(err, PrecompiledError::Malformed { .. }), "{err}");
        let mut p = published(body, &ours);
        p.sha256 = None;
        assert!(matches!(
            verify(DIGEST, &ours, &p, body).unwrap_err(),
            PrecompiledError::Malformed { .. }
        ));
        let mut p = published(body, &ours);
        p.kind = Some("elf".into());
        assert!(matches!(
            verify(DIGEST, &ours, &p, body).unwrap_err(),
            PrecompiledError::Malformed { .. }
        ));
    }
}
