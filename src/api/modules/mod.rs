//! The module registry: Wasm blobs uploaded over HTTP, stored
//! content-addressed in the cluster store, and indexed by cluster-scoped
//! `wkube.dev/v1` Module objects whose tags map to digests.
//!
//! # API
//!
//! - `POST` (or `PUT`) `/apis/wkube.dev/v1/modules/NAME/push?tag=TAG` with
//!   the raw `.wasm` bytes as the body (`Content-Type: application/wasm` or
//!   `application/octet-stream`; `tag` defaults to `latest`). RBAC: `create`
//!   on `modules/push` (group `wkube.dev`) for NAME. The bytes must be a
//!   valid component or core module (422 `Invalid` otherwise) and at most
//!   `ApiConfig::max_module_bytes` long (413). Creates the Module if missing
//!   (201) or moves the tag (200); answers with the Module, whose
//!   `status.blobs["sha256:<hex>"]` holds size, format and exports.
//!
//!   ```sh
//!   curl --cacert ca.crt -H "Authorization: Bearer $TOKEN" \
//!        -H 'Content-Type: application/wasm' --data-binary @hello.wasm \
//!        "$SERVER/apis/wkube.dev/v1/modules/hello/push?tag=v1"
//!   ```
//! - `GET /apis/wkube.dev/v1/blobs/sha256:<hex>`: the blob's bytes as
//!   `application/wasm`, verified against the digest before they are sent.
//!   RBAC: `get` on `blobs` (group `wkube.dev`), the resource name being the
//!   digest. 404 when absent.
//! - `GET /apis/wkube.dev/v1/blobs/sha256:<hex>/compiled?…`: the module
//!   compiled to native code for a node's engine profile, compiled once
//!   and kept beside the blob ([`compiled`]).
//! - [`resolve_image`]: a pod's `image` (`NAME[:TAG]`, `NAME@sha256:<hex>`,
//!   `sha256:<hex>`) to the digest it runs.
//!
//! Blobs are collected ([`gc`]) when no Module tag and no pod refers to them.

pub mod blobs;
pub mod compiled;
pub mod gc;
pub mod wasm;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use bytes::BytesMut;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use super::objects::{self, FieldValidation};
use super::rbac::Attributes;
use super::registry::Registry;
use super::request::{Query, json_response};
use super::status::ApiError;
use super::verbs;
use super::{ApiState, Caller};
use crate::resources::module::{DEFAULT_TAG, ImageRef, is_digest, is_valid_tag};
use crate::resources::validation::{NameRule, check_name};
use crate::resources::{self, FieldError, FieldErrorKind, Kind};

/// The upload route (axum syntax).
pub const PUSH_ROUTE: &str = "/apis/wkube.dev/v1/modules/{name}/push";
/// The download route (axum syntax).
pub const BLOB_ROUTE: &str = "/apis/wkube.dev/v1/blobs/{digest}";
const BLOB_PATH_PREFIX: &str = "/apis/wkube.dev/v1/blobs/";

/// Default largest module accepted.
pub const DEFAULT_MAX_MODULE_BYTES: usize = 64 * 1024 * 1024;
/// Environment variable that overrides [`DEFAULT_MAX_MODULE_BYTES`] until
/// `wkube server` has a flag for it.
pub const MAX_MODULE_BYTES_ENV: &str = "WKUBE_MAX_MODULE_BYTES";

/// The module size limit: `$WKUBE_MAX_MODULE_BYTES` or 64 MiB.
pub fn default_max_module_bytes() -> usize {
    std::env::var(MAX_MODULE_BYTES_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_MAX_MODULE_BYTES)
}

/// True for blob download paths; they are authorized as the `blobs`
/// resource by [`blob`], not as non-resource URLs.
pub fn is_blob_path(path: &str) -> bool {
    path.starts_with(BLOB_PATH_PREFIX)
}

fn modules_kind() -> Result<&'static Kind, ApiError> {
    resources::by_resource("wkube.dev", "v1", "modules").ok_or(ApiError::NoRoute)
}

fn invalid(name: &str, field: &str, value: Option<String>, detail: String) -> ApiError {
    ApiError::Invalid {
        group: "wkube.dev".into(),
        kind: "Module".into(),
        name: name.into(),
        causes: vec![FieldError {
            kind: FieldErrorKind::Invalid,
            field: field.into(),
            value,
            detail,
        }],
    }
}

/// `POST|PUT /apis/wkube.dev/v1/modules/NAME/push?tag=TAG`.
pub async fn push(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    match push_inner(&state, &name, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn push_inner(state: &ApiState, name: &str, req: Request) -> Result<Response, ApiError> {
    let user = Caller::of(&req)?;
    if req.method() != Method::POST && req.method() != Method::PUT {
        return Err(ApiError::MethodNotAllowed);
    }
    let query = Query::parse(req.uri().query())?;
    let tag = query
        .get("tag")
        .filter(|t| !t.is_empty())
        .unwrap_or(DEFAULT_TAG)
        .to_string();
    state.check(
        &user,
        &Attributes {
            verb: "create".into(),
            group: "wkube.dev".into(),
            resource: "modules".into(),
            subresource: "push".into(),
            name: name.into(),
            ..Default::default()
        },
    )?;
    if let Some(msg) = check_name(NameRule::Subdomain, name) {
        return Err(invalid(name, "metadata.name", Some(name.into()), msg));
    }
    if !is_valid_tag(&tag) {
        return Err(invalid(
            name,
            "tag",
            Some(tag),
            "a tag must be 1-128 characters of [A-Za-z0-9._-]".into(),
        ));
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    if let Some(ct) = content_type
        && ct != "application/wasm"
        && ct != "application/octet-stream"
    {
        return Err(ApiError::UnsupportedMediaType {
            message: format!(
                "the body of a module push must be the raw .wasm bytes sent as application/wasm or application/octet-stream, not {ct}"
            ),
        });
    }
    let limit = state.config.max_module_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // A client waiting for `100 Continue` never sends a body we refuse
    // before reading it; any other one is already sending.
    let waits_for_continue = req.version() <= Version::HTTP_11
        && req
            .headers()
            .get(header::EXPECT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    let mut body = req.into_body();
    if declared.is_some_and(|n| n > limit as u64) {
        if !waits_for_continue {
            drain(&mut body, drain_bound(declared, limit)).await;
        }
        return Err(ApiError::TooLarge { limit });
    }
    let bytes = read_limited(&mut body, limit, declared).await?;
    let inspected =
        wasm::inspect(&bytes).map_err(|e| invalid(name, "body", None, e.to_string()))?;
    let hex = blobs::sha256_hex(&bytes);
    let digest = format!("sha256:{hex}");
    let meta = blobs::BlobMeta {
        size: bytes.len() as u64,
        chunks: bytes.len().div_ceil(blobs::CHUNK_SIZE) as u32,
        format: inspected.format.as_str().into(),
        exports: inspected.exports,
    };
    let store = state.registry.store();
    blobs::store_blob(store, &hex, &bytes, &meta).await?;
    let (module, code, replaced) = tag_module(state, &user, name, &tag, &digest, &meta).await?;
    // A collector that decided before the tag landed may have removed a
    // blob that already existed; the tag now protects it, so put it back.
    if blobs::read_meta(store, &hex, 0).await?.is_none() {
        blobs::store_blob(store, &hex, &bytes, &meta).await?;
    }
    if let Some(old) = replaced {
        gc::spawn_collect(store.clone(), vec![old]);
    }
    tracing::info!(module = %name, %tag, %digest, size = meta.size, "module pushed");
    Ok(json_response(code, &module))
}

/// Read the whole body if it is at most `limit` bytes.
async fn read_limited(
    body: &mut Body,
    limit: usize,
    declared: Option<u64>,
) -> Result<Bytes, ApiError> {
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(limit as u64) as usize);
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad_request(format!("reading the module body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > limit {
            drain(body, drain_bound(declared, limit)).await;
            return Err(ApiError::TooLarge { limit });
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// How much of a refused body to discard: all of it as declared, but never
/// more than four times the limit (a bigger one is cut off).
fn drain_bound(declared: Option<u64>, limit: usize) -> usize {
    let declared = usize::try_from(declared.unwrap_or(0)).unwrap_or(usize::MAX);
    declared.max(limit).min(limit.saturating_mul(4))
}

/// Most time spent discarding a refused body.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Read and discard up to `max` more bytes of a refused body, for a
/// bounded time, so that the client reads our 413: over HTTP/2 a body
/// dropped unread resets the stream before the client sees the answer, and
/// an HTTP/1.1 client still writing may never read it.
async fn drain(body: &mut Body, max: usize) {
    let discard = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, Bytes::len);
            if seen > max {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, discard).await;
}

/// Point `tag` of Module `name` at `digest`, creating the Module through
/// the normal create path when missing. Returns the Module, 201 or 200, and
/// the digest the tag named before (when it changed).
async fn tag_module(
    state: &ApiState,
    user: &super::authn::UserInfo,
    name: &str,
    tag: &str,
    digest: &str,
    meta: &blobs::BlobMeta,
) -> Result<(Value, StatusCode, Option<String>), ApiError> {
    let kind = modules_kind()?;
    let mut code = StatusCode::OK;
    if state.registry.try_get(kind, None, name).await?.is_none() {
        let obj = json!({
            "apiVersion": "wkube.dev/v1",
            "kind": "Module",
            "metadata": {"name": name},
            "spec": {"tags": {tag: digest}},
        });
        // The pushing client named no field manager; the push is the
        // writer.
        let owner = super::managed::Owner::Writer("wkube-push");
        match verbs::create(
            state,
            user,
            kind,
            None,
            obj,
            FieldValidation::Strict,
            false,
            owner,
        )
        .await
        {
            Ok(_) => code = StatusCode::CREATED,
            // Someone else created it meanwhile: tag it like any other.
            Err(ApiError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let info = json!({
        "size": meta.size,
        "format": meta.format,
        "exports": meta.exports,
    });
    let mut replaced = None;
    let module = state
        .registry
        .guaranteed_update(kind, None, name, |current| {
            let (next, before) = with_tag(current.clone(), tag, digest, &info)?;
            replaced = before.filter(|b| b != digest);
            if next == *current {
                return Ok(false);
            }
            *current = next;
            Ok(true)
        })
        .await?;
    Ok((
        module,
        code,
        replaced.and_then(|d| d.strip_prefix("sha256:").map(str::to_string)),
    ))
}

/// `module` with `spec.tags[tag] = digest` and `status.blobs[digest] =
/// info`, status entries of digests no tag names any more dropped. Returns
/// it with the digest the tag named before.
fn with_tag(
    mut module: Value,
    tag: &str,
    digest: &str,
    info: &Value,
) -> Result<(Value, Option<String>), ApiError> {
    let name = objects::name_of(&module).to_string();
    if module.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(ApiError::Conflict {
            group: "wkube.dev".into(),
            resource: "modules".into(),
            name: name.clone(),
            message: format!(
                "Operation cannot be fulfilled on modules.wkube.dev \"{name}\": the module is being deleted"
            ),
        });
    }
    let old = module.clone();
    let Some(obj) = module.as_object_mut() else {
        return Err(ApiError::internal(format!(
            "module {name:?} is not an object"
        )));
    };
    let spec = object_at(obj, "spec");
    let tags = object_at(spec, "tags");
    let before = tags
        .insert(tag.to_string(), json!(digest))
        .and_then(|v| v.as_str().map(str::to_string));
    let named: std::collections::BTreeSet<String> = tags
        .values()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    let status = object_at(obj, "status");
    let blobs = object_at(status, "blobs");
    blobs.insert(digest.to_string(), info.clone());
    blobs.retain(|d, _| named.contains(d));
    objects::bump_generation(&old, &mut module);
    Ok((module, before))
}

/// The object under `key`, replacing anything that is not an object.
fn object_at<'a>(
    obj: &'a mut serde_json::Map<String, Value>,
    key: &str,
) -> &'a mut serde_json::Map<String, Value> {
    let slot = obj.entry(key).or_insert_with(|| json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    match slot {
        Value::Object(m) => m,
        // Made an object just above.
        _ => unreachable!("slot is an object"),
    }
}

/// `GET /apis/wkube.dev/v1/blobs/sha256:<hex>`.
pub async fn blob(
    State(state): State<Arc<ApiState>>,
    Path(digest): Path<String>,
    req: Request,
) -> Response {
    // The request itself is not `Sync`, so only what is needed of it is
    // carried across the awaits below.
    let user = Caller::of(&req);
    match blob_inner(&state, &digest, user, req.method().clone()).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn blob_inner(
    state: &ApiState,
    digest: &str,
    user: Result<super::authn::UserInfo, ApiError>,
    method: Method,
) -> Result<Response, ApiError> {
    let user = user?;
    if method != Method::GET && method != Method::HEAD {
        return Err(ApiError::MethodNotAllowed);
    }
    state.check(
        &user,
        &Attributes {
            verb: "get".into(),
            group: "wkube.dev".into(),
            resource: "blobs".into(),
            name: digest.into(),
            ..Default::default()
        },
    )?;
    let not_found = || ApiError::NotFound {
        group: "wkube.dev".into(),
        resource: "blobs".into(),
        name: digest.into(),
    };
    if !is_digest(digest) {
        return Err(not_found());
    }
    let hex = &digest["sha256:".len()..];
    let Some((meta, parts)) = blobs::read_blob(state.registry.store(), hex).await? else {
        return Err(not_found());
    };
    let body = Body::from_stream(futures::stream::iter(
        parts.into_iter().map(Ok::<Bytes, Infallible>),
    ));
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/wasm"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(meta.size));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{digest}\"")) {
        h.insert(header::ETAG, etag);
    }
    // Content-addressed: the bytes under this URL never change.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    Ok(resp)
}

/// Parse `NAME[:TAG]`, `NAME@sha256:<hex>` or `sha256:<hex>`.
///
/// # Errors
/// 400 naming the accepted forms.
pub fn parse_image(image: &str) -> Result<ImageRef, ApiError> {
    crate::resources::module::parse_image(image).map_err(ApiError::bad_request)
}

/// The digest (`sha256:<hex>`) a pod image runs: a tag resolved through
/// its Module, a digest as given. The blob must exist.
///
/// # Errors
/// 400 for a reference that is not a module reference; 404 for a missing
/// Module, tag or blob.
pub async fn resolve_image(registry: &Registry, image: &str) -> Result<String, ApiError> {
    let digest = match parse_image(image)? {
        ImageRef::Digest(d) | ImageRef::Pinned { digest: d, .. } => d,
        ImageRef::Tagged { name, tag } => {
            let module = registry.get(modules_kind()?, None, &name).await?;
            module
                .pointer("/spec/tags")
                .and_then(|t| t.get(&tag))
                .and_then(Value::as_str)
                .filter(|d| is_digest(d))
                .map(str::to_string)
                .ok_or_else(|| ApiError::NotFound {
                    group: "wkube.dev".into(),
                    resource: "modules".into(),
                    name: format!("{name}:{tag}"),
                })?
        }
    };
    let hex = &digest["sha256:".len()..];
    if blobs::read_meta(registry.store(), hex, 0).await?.is_none() {
        return Err(ApiError::NotFound {
            group: "wkube.dev".into(),
            resource: "blobs".into(),
            name: digest,
        });
    }
    Ok(digest)
}

#[cfg(test)]
mod tests;
