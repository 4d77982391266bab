//! Native code compiled once per engine profile, kept beside the module's
//! blob and served to nodes.
//!
//! # API
//!
//! `GET /apis/wkube.dev/v1/blobs/sha256:<hex>/compiled?target=T&memory=M&wasmtime=V&fingerprint=F`
//! answers the module compiled for that engine profile
//! ([`EngineProfile`]) as `application/octet-stream`, with its sha256 in
//! `X-Wkube-Artifact-Sha256`, its kind (`component` or `module`) in
//! `X-Wkube-Artifact-Kind` and the profile's fingerprint in
//! `X-Wkube-Engine-Fingerprint`. RBAC: `get` on `blobs/compiled` (group
//! `wkube.dev`), which nodes have; the resource name is the digest.
//! The first request for a profile compiles the module (at most
//! `ApiConfig::max_concurrent_compiles` at once, one per profile and
//! digest; a request that waits too long for a slot gets 429 with
//! Retry-After); later ones read the stored artifact. A target, memory
//! layout or wasmtime version this server cannot compile for is a 400
//! naming what it can; an unknown blob is a 404.
//!
//! # Store layout
//!
//! ```text
//! /registry/wkube.dev/blobs/<hex>/compiled/<target>/<fingerprint>/chunks/000000
//! ...
//! /registry/wkube.dev/blobs/<hex>/compiled/<target>/<fingerprint>/meta   written last
//! ```
//!
//! Chunks follow the blob's own rules (at most 1 MiB). The meta record is
//! written by a transaction that holds only while the source blob's meta
//! record is unchanged, so an artifact is never published for a blob being
//! collected; collecting a blob deletes its whole prefix, artifacts
//! included, and the sweep removes chunks a crashed compile left behind
//! (they sit under a prefix without a blob meta record, or with one the
//! sweep later collects). Readers verify the chunks against the sha256 in
//! the meta record before serving them.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::blobs::{self, BLOB_PREFIX};
use crate::api::ApiState;
use crate::api::rbac::Attributes;
use crate::api::request::Query;
use crate::api::status::ApiError;
use crate::resources::module::{
    COMPILED_FINGERPRINT_HEADER, COMPILED_KIND_HEADER, COMPILED_SHA256_HEADER, is_digest,
};
use crate::runtime::profile::EngineProfile;
use crate::store::{KeyRange, RangeRequest, Store};

/// The route (axum syntax).
pub const COMPILED_ROUTE: &str = "/apis/wkube.dev/v1/blobs/{digest}/compiled";

#[cfg(feature = "compiler")]
/// Longest a request waits for a compile slot before it is told to come
/// back (429).
const SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The record that makes an artifact visible.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompiledMeta {
    pub size: u64,
    pub chunks: u32,
    /// Lowercase hex sha256 of the artifact's bytes.
    pub sha256: String,
    /// `component` or `module`.
    pub kind: String,
    pub profile: EngineProfile,
}

/// The prefix of one artifact's keys (ends with `/`).
pub fn artifact_prefix(hex: &str, profile: &EngineProfile) -> String {
    format!(
        "{BLOB_PREFIX}{hex}/compiled/{}/{}/",
        profile.target,
        profile.fingerprint()
    )
}

#[cfg(feature = "compiler")]
fn chunk_key(prefix: &str, i: usize) -> String {
    format!("{prefix}chunks/{i:06}")
}

fn meta_key(prefix: &str) -> String {
    format!("{prefix}meta")
}

/// Bounds on the compiling done for nodes, and the engines that do it
/// (nothing in a server built without the compiler: it serves only what
/// is stored).
pub struct Compiler {
    #[cfg(feature = "compiler")]
    slots: tokio::sync::Semaphore,
    /// One lock per artifact being compiled, so concurrent requests for the
    /// same artifact compile it once.
    #[cfg(feature = "compiler")]
    in_flight: parking_lot::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    #[cfg(feature = "compiler")]
    engines: Arc<crate::runtime::precompile::Precompiler>,
}

impl Compiler {
    /// A compiler running at most `concurrent` compiles at once.
    pub fn new(concurrent: usize) -> Compiler {
        #[cfg(not(feature = "compiler"))]
        let _ = concurrent;
        Compiler {
            #[cfg(feature = "compiler")]
            slots: tokio::sync::Semaphore::new(concurrent.max(1)),
            #[cfg(feature = "compiler")]
            in_flight: parking_lot::Mutex::new(std::collections::HashMap::new()),
            #[cfg(feature = "compiler")]
            engines: Arc::new(crate::runtime::precompile::Precompiler::new()),
        }
    }
}

/// Default for `ApiConfig::max_concurrent_compiles`: half the cores, at
/// least one, so the API server keeps cores for everything else.
pub fn default_concurrent_compiles() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() / 2)
        .unwrap_or(1)
        .max(1)
}

/// `GET /apis/wkube.dev/v1/blobs/sha256:<hex>/compiled?…`.
pub async fn compiled(
    State(state): State<Arc<ApiState>>,
    Path(digest): Path<String>,
    req: Request,
) -> Response {
    let user = crate::api::Caller::of(&req);
    let query = Query::parse(req.uri().query());
    let method = req.method().clone();
    match serve(&state, &digest, user, method, query).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn serve(
    state: &Arc<ApiState>,
    digest: &str,
    user: Result<crate::api::authn::UserInfo, ApiError>,
    method: Method,
    query: Result<Query, ApiError>,
) -> Result<Response, ApiError> {
    let user = user?;
    if method != Method::GET {
        return Err(ApiError::MethodNotAllowed);
    }
    state.check(
        &user,
        &Attributes {
            verb: "get".into(),
            group: "wkube.dev".into(),
            resource: "blobs".into(),
            subresource: "compiled".into(),
            name: digest.into(),
            ..Default::default()
        },
    )?;
    let query = query?;
    let param = |name: &str| query.get(name).unwrap_or("").to_string();
    let profile = EngineProfile::parse(
        &param("target"),
        &param("memory"),
        &param("wasmtime"),
        query.get("fingerprint"),
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let not_found = || ApiError::NotFound {
        group: "wkube.dev".into(),
        resource: "blobs".into(),
        name: digest.into(),
    };
    if !is_digest(digest) {
        return Err(not_found());
    }
    let hex = &digest["sha256:".len()..];
    let store = state.registry.store();
    let prefix = artifact_prefix(hex, &profile);
    if let Some(found) = read_artifact(store, &prefix).await? {
        return Ok(respond(found, &profile));
    }
    // Refused before any compile slot is taken.
    if blobs::read_meta(store, hex, 0).await?.is_none() {
        return Err(not_found());
    }
    let found = compile_once(state.clone(), hex.to_string(), profile.clone(), prefix).await?;
    Ok(respond(found, &profile))
}

/// Compiles and stores the artifact unless a concurrent request did.
#[cfg(feature = "compiler")]
async fn compile_once(
    state: Arc<ApiState>,
    hex: String,
    profile: EngineProfile,
    prefix: String,
) -> Result<(CompiledMeta, Vec<Bytes>), ApiError> {
    // A task of its own: a node that stops waiting (its connection drops,
    // its request times out) does not waste the compile; the next request
    // finds the artifact stored.
    let task = tokio::spawn(async move {
        let (hex, profile, prefix) = (hex.as_str(), &profile, prefix.as_str());
        compile_and_store(&state, hex, profile, prefix).await
    });
    task.await
        .map_err(|e| ApiError::internal(format!("compiling a module: {e}")))?
}

#[cfg(feature = "compiler")]
async fn compile_and_store(
    state: &ApiState,
    hex: &str,
    profile: &EngineProfile,
    prefix: &str,
) -> Result<(CompiledMeta, Vec<Bytes>), ApiError> {
    let compiler = &state.compiler;
    let lock = compiler
        .in_flight
        .lock()
        .entry(prefix.to_string())
        .or_default()
        .clone();
    let result = async {
        let _same = lock.lock().await;
        let store = state.registry.store();
        if let Some(found) = read_artifact(store, prefix).await? {
            return Ok(found);
        }
        let _slot = tokio::time::timeout(SLOT_WAIT, compiler.slots.acquire())
            .await
            .map_err(|_| ApiError::TooManyRequestsBecause {
                message: format!(
                    "every compile slot of the API server is busy; compiling sha256:{hex} for {} later",
                    profile.target
                ),
                causes: vec![],
                retry_after_seconds: 5,
            })?
            .map_err(|e| ApiError::internal(format!("compile slots: {e}")))?;
        let Some(source) = blobs::read_meta(store, hex, 0).await? else {
            return Err(ApiError::NotFound {
                group: "wkube.dev".into(),
                resource: "blobs".into(),
                name: format!("sha256:{hex}"),
            });
        };
        let Some((_, parts)) = blobs::read_blob(store, hex).await? else {
            return Err(ApiError::NotFound {
                group: "wkube.dev".into(),
                resource: "blobs".into(),
                name: format!("sha256:{hex}"),
            });
        };
        let wasm = parts.concat();
        let engines = compiler.engines.clone();
        let p = profile.clone();
        let started = std::time::Instant::now();
        let (kind, artifact) = tokio::task::spawn_blocking(move || engines.precompile(&p, &wasm))
            .await
            .map_err(|e| ApiError::internal(format!("compiling sha256:{hex}: {e}")))?
            .map_err(|e| match e {
                crate::runtime::RuntimeError::InvalidModule { reason } => {
                    ApiError::Invalid {
                        group: "wkube.dev".into(),
                        kind: "Module".into(),
                        name: format!("sha256:{hex}"),
                        causes: vec![crate::resources::FieldError {
                            kind: crate::resources::FieldErrorKind::Invalid,
                            field: "blob".into(),
                            value: None,
                            detail: format!("cannot be compiled for {}: {reason}", profile.target),
                        }],
                    }
                }
                other => ApiError::internal(format!("compiling sha256:{hex}: {other}")),
            })?;
        let artifact = Bytes::from(artifact);
        let meta = CompiledMeta {
            size: artifact.len() as u64,
            chunks: artifact.len().div_ceil(blobs::CHUNK_SIZE) as u32,
            sha256: blobs::sha256_hex(&artifact),
            kind: kind.as_str().into(),
            profile: profile.clone(),
        };
        store_artifact(store, prefix, &artifact, &meta, hex, source.mod_revision).await?;
        tracing::info!(
            digest = %format!("sha256:{hex}"),
            target = %profile.target,
            fingerprint = %profile.fingerprint(),
            size = meta.size,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compiled module for an engine profile"
        );
        Ok((meta, blobs::chunks(&artifact).collect()))
    }
    .await;
    compiler.in_flight.lock().remove(prefix);
    result
}

/// A server built without the compiler serves only what is stored.
#[cfg(not(feature = "compiler"))]
async fn compile_once(
    _: Arc<ApiState>,
    hex: String,
    profile: EngineProfile,
    _: String,
) -> Result<(CompiledMeta, Vec<Bytes>), ApiError> {
    Err(ApiError::ServiceUnavailable {
        message: format!(
            "sha256:{hex} is not compiled for {} yet and this API server is built without the compiler",
            profile.target
        ),
    })
}

fn respond((meta, parts): (CompiledMeta, Vec<Bytes>), profile: &EngineProfile) -> Response {
    let body = Body::from_stream(futures::stream::iter(
        parts.into_iter().map(Ok::<Bytes, Infallible>),
    ));
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.size));
    for (name, value) in [
        (COMPILED_SHA256_HEADER, meta.sha256),
        (COMPILED_KIND_HEADER, meta.kind),
        (COMPILED_FINGERPRINT_HEADER, profile.fingerprint()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    resp
}

#[cfg(feature = "compiler")]
/// Stores the chunks, then the meta record, the latter only while the
/// source blob's meta record is still at `source_rev`.
async fn store_artifact(
    store: &Store,
    prefix: &str,
    artifact: &Bytes,
    meta: &CompiledMeta,
    hex: &str,
    source_rev: i64,
) -> Result<(), ApiError> {
    use crate::store::{Compare, CompareResult, CompareTarget, PutRequest, TxnOp, TxnRequest};
    for (i, chunk) in blobs::chunks(artifact).enumerate() {
        store
            .put(PutRequest {
                key: Bytes::from(chunk_key(prefix, i)),
                value: chunk,
                ..Default::default()
            })
            .await?;
    }
    let value = Bytes::from(serde_json::to_vec(meta).map_err(ApiError::internal)?);
    let resp = store
        .txn(TxnRequest {
            compare: vec![Compare {
                range: KeyRange::single(blobs::meta_key(hex)),
                result: CompareResult::Equal,
                target: CompareTarget::Mod(source_rev),
            }],
            success: vec![TxnOp::Put(PutRequest {
                key: Bytes::from(meta_key(prefix)),
                value,
                ..Default::default()
            })],
            failure: vec![],
        })
        .await?;
    if !resp.succeeded {
        return Err(ApiError::NotFound {
            group: "wkube.dev".into(),
            resource: "blobs".into(),
            name: format!("sha256:{hex}"),
        });
    }
    Ok(())
}

/// Why a stored artifact cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum CorruptArtifact {
    #[error("compiled artifact {prefix}: bad meta record: {source}")]
    Meta {
        prefix: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("compiled artifact {prefix}: expected {want} chunks, found {found}")]
    ChunkCount {
        prefix: String,
        want: u32,
        found: usize,
    },
    #[error("compiled artifact {prefix}: its bytes hash to {got} ({size} bytes), not {want}")]
    Digest {
        prefix: String,
        got: String,
        want: String,
        size: u64,
    },
}

/// The artifact under `prefix`, verified against its meta record; `None`
/// when there is none (or it is still being written).
///
/// # Errors
/// An internal error naming the [`CorruptArtifact`] problem.
pub async fn read_artifact(
    store: &Store,
    prefix: &str,
) -> Result<Option<(CompiledMeta, Vec<Bytes>)>, ApiError> {
    let resp = store
        .range(RangeRequest {
            range: KeyRange::single(meta_key(prefix)),
            ..Default::default()
        })
        .await?;
    let Some(kv) = resp.kvs.first() else {
        return Ok(None);
    };
    let meta: CompiledMeta = serde_json::from_slice(&kv.value).map_err(|source| {
        ApiError::internal(CorruptArtifact::Meta {
            prefix: prefix.into(),
            source,
        })
    })?;
    // Read at the meta record's revision: a collector deleting the blob
    // meanwhile cannot hand us half of the artifact.
    let chunks = store
        .range(RangeRequest {
            range: KeyRange::prefix(format!("{prefix}chunks/")),
            revision: resp.header.revision,
            ..Default::default()
        })
        .await?;
    if chunks.kvs.len() != meta.chunks as usize {
        return Err(ApiError::internal(CorruptArtifact::ChunkCount {
            prefix: prefix.into(),
            want: meta.chunks,
            found: chunks.kvs.len(),
        }));
    }
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut parts = Vec::with_capacity(chunks.kvs.len());
    for kv in &chunks.kvs {
        hasher.update(&kv.value);
        size += kv.value.len() as u64;
        parts.push(kv.value.clone());
    }
    let got = hex::encode(hasher.finalize());
    if got != meta.sha256 || size != meta.size {
        return Err(ApiError::internal(CorruptArtifact::Digest {
            prefix: prefix.into(),
            got,
            want: meta.sha256.clone(),
            size,
        }));
    }
    Ok(Some((meta, parts)))
}

#[cfg(all(test, feature = "compiler"))]
mod tests {
    use super::blobs::CHUNK_SIZE;
    use super::*;
    use crate::runtime::profile::MemoryLayout;
    use crate::store::PutRequest;
    use crate::store::redb::{RedbOptions, RedbStore};

    fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store: Store =
            RedbStore::open(&dir.path().join("store.redb"), RedbOptions::default()).unwrap();
        (dir, store)
    }

    async fn put_source(store: &Store, bytes: &[u8]) -> (String, i64) {
        let hex = blobs::sha256_hex(bytes);
        let meta = blobs::BlobMeta {
            size: bytes.len() as u64,
            chunks: bytes.len().div_ceil(CHUNK_SIZE) as u32,
            format: "module".into(),
            exports: vec![],
        };
        blobs::store_blob(store, &hex, &Bytes::copy_from_slice(bytes), &meta)
            .await
            .unwrap();
        let rev = blobs::read_meta(store, &hex, 0)
            .await
            .unwrap()
            .unwrap()
            .mod_revision;
        (hex, rev)
    }

    fn meta_of(artifact: &Bytes, profile: &EngineProfile) -> CompiledMeta {
        CompiledMeta {
            size: artifact.len() as u64,
            chunks: artifact.len().div_ceil(CHUNK_SIZE) as u32,
            sha256: blobs::sha256_hex(artifact),
            kind: "component".into(),
            profile: profile.clone(),
        }
    }

    #[tokio::test]
    async fn an_artifact_of_several_chunks_round_trips_beside_its_blob() {
        let (_dir, store) = temp_store();
        let (hex, rev) = put_source(&store, b"\0asm source").await;
        let profile = EngineProfile::host(MemoryLayout::Guarded);
        let prefix = artifact_prefix(&hex, &profile);
        assert!(prefix.starts_with(&blobs::blob_prefix(&hex)));
        assert!(prefix.contains(&profile.target) && prefix.contains(&profile.fingerprint()));
        let artifact = Bytes::from(
            (0..(2 * CHUNK_SIZE + 5))
                .map(|i| (i % 251) as u8)
                .collect::<Vec<_>>(),
        );
        let meta = meta_of(&artifact, &profile);
        store_artifact(&store, &prefix, &artifact, &meta, &hex, rev)
            .await
            .unwrap();
        let (got, parts) = read_artifact(&store, &prefix).await.unwrap().unwrap();
        assert_eq!(got, meta);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts.concat(), artifact.to_vec());
        // Another profile has nothing yet.
        let small = EngineProfile::host(MemoryLayout::Small);
        assert!(
            read_artifact(&store, &artifact_prefix(&hex, &small))
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_tampered_artifact_in_the_store_is_never_served() {
        let (_dir, store) = temp_store();
        let (hex, rev) = put_source(&store, b"\0asm source").await;
        let profile = EngineProfile::host(MemoryLayout::Guarded);
        let prefix = artifact_prefix(&hex, &profile);
        let artifact = Bytes::from_static(b"\x7fELF native code");
        store_artifact(
            &store,
            &prefix,
            &artifact,
            &meta_of(&artifact, &profile),
            &hex,
            rev,
        )
        .await
        .unwrap();
        store
            .put(PutRequest {
                key: Bytes::from(chunk_key(&prefix, 0)),
                value: Bytes::from_static(b"\x7fELF evil  code"),
                ..Default::default()
            })
            .await
            .unwrap();
        let err = read_artifact(&store, &prefix).await.unwrap_err();
        assert!(err.to_string().contains("hash to"), "{err}");
    }

    #[tokio::test]
    async fn collecting_a_blob_removes_its_compiled_code_with_it() {
        let (_dir, store) = temp_store();
        let (hex, rev) = put_source(&store, b"\0asm source").await;
        let profile = EngineProfile::host(MemoryLayout::Guarded);
        let prefix = artifact_prefix(&hex, &profile);
        let artifact = Bytes::from_static(b"code");
        store_artifact(
            &store,
            &prefix,
            &artifact,
            &meta_of(&artifact, &profile),
            &hex,
            rev,
        )
        .await
        .unwrap();
        let deleted = super::super::gc::collect(&store, std::slice::from_ref(&hex))
            .await
            .unwrap();
        assert_eq!(deleted, vec![hex.clone()]);
        assert!(read_artifact(&store, &prefix).await.unwrap().is_none());
        let left = store
            .range(RangeRequest {
                range: KeyRange::prefix(blobs::blob_prefix(&hex)),
                keys_only: true,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(left.kvs.is_empty());
    }

    #[tokio::test]
    async fn no_artifact_is_published_for_a_blob_that_was_collected_meanwhile() {
        let (_dir, store) = temp_store();
        let (hex, rev) = put_source(&store, b"\0asm source").await;
        super::super::gc::collect(&store, std::slice::from_ref(&hex))
            .await
            .unwrap();
        let profile = EngineProfile::host(MemoryLayout::Guarded);
        let prefix = artifact_prefix(&hex, &profile);
        let artifact = Bytes::from_static(b"code");
        let err = store_artifact(
            &store,
            &prefix,
            &artifact,
            &meta_of(&artifact, &profile),
            &hex,
            rev,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ApiError::NotFound { .. }), "{err}");
        assert!(read_artifact(&store, &prefix).await.unwrap().is_none());
    }
}
