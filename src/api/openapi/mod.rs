//! OpenAPI v3 documents (`/openapi/v3`), which kubectl reads before
//! `apply`, `create -f`, `replace`, `edit` and `explain`:
//!
//! - the index, `GET /openapi/v3`, lists one document per served
//!   group-version with a content hash in its URL;
//! - each document (`/openapi/v3/api/v1`, `/openapi/v3/apis/GROUP/VERSION`)
//!   holds the kinds' schemas ([`schemas`]: `k8s-openapi`'s schemars
//!   output under Kubernetes' definition names, plus patch-merge metadata)
//!   and their REST operations ([`paths`]).
//!
//! kubectl uses a document to decide whether the server validates fields
//! (the `fieldValidation` parameter on the kind's PATCH), whether it may
//! send strategic merge patches (the PATCH content types), how to merge
//! lists in client-side apply (`x-kubernetes-patch-merge-key`/`-strategy`)
//! and, for `explain`, the descriptions.
//!
//! Documents are built once, on first use, and served from memory.
//! `/openapi/v2` ([`v2`]) carries the same definitions for what kubectl
//! still reads from v2.

mod paths;
mod schemas;
mod v2;

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::discovery::VIRTUAL;
use super::status::ApiError;
use crate::resources;

/// A group, version and kind, as the `x-kubernetes-group-version-kind`
/// extension writes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gvk {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
}

impl Gvk {
    fn to_json(self) -> Value {
        json!({ "group": self.group, "version": self.version, "kind": self.kind })
    }
}

/// One serialized document and the hash of its bytes.
struct Doc {
    body: Bytes,
    hash: String,
    content_type: &'static str,
}

/// The media type of the protobuf-encoded v2 document in a reply. Clients
/// ask with `…spec.v2@v1.0+protobuf`, but `@` is not allowed in a media
/// type, and Go's client fails to parse a reply labelled with it.
const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

impl Doc {
    fn new(value: &Value) -> Doc {
        Doc::bytes(
            serde_json::to_vec(value).expect("a JSON value serializes"),
            "application/json",
        )
    }

    fn bytes(body: Vec<u8>, content_type: &'static str) -> Doc {
        let hash = hex::encode_upper(Sha256::digest(&body));
        Doc {
            body: Bytes::from(body),
            hash,
            content_type,
        }
    }
}

/// The index and every group-version document.
struct Documents {
    index: Doc,
    /// `api/v1`, `apis/apps/v1`, … → document.
    by_path: HashMap<String, Doc>,
    /// `/openapi/v2` as JSON and as protobuf.
    v2_json: Doc,
    v2_protobuf: Doc,
}

/// Built on first use: a few MB of JSON and tens of milliseconds of CPU
/// that a server nobody runs kubectl against never spends. A `OnceLock`
/// rather than a `LazyLock` so that a handler can tell whether the build
/// is still to come, and do it off the async workers.
static DOCUMENTS: OnceLock<Documents> = OnceLock::new();

async fn documents() -> &'static Documents {
    if let Some(d) = DOCUMENTS.get() {
        return d;
    }
    match tokio::task::spawn_blocking(|| DOCUMENTS.get_or_init(Documents::build)).await {
        Ok(d) => d,
        // The build panicked (a bug); a second attempt would panic again,
        // but surfacing it here beats hanging the request.
        Err(_) => DOCUMENTS.get_or_init(Documents::build),
    }
}

/// Every served group-version: stored kinds' and the review kinds'.
fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut gvs = resources::group_versions();
    for v in VIRTUAL.iter().filter(|v| v.is_review()) {
        if !gvs.contains(&(v.group, v.version)) {
            gvs.push((v.group, v.version));
        }
    }
    gvs
}

/// The document path of a group-version, as the index names it.
fn doc_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

impl Documents {
    fn build() -> Documents {
        let mut by_path = HashMap::new();
        let mut index = Map::new();
        let mut definitions = Map::new();
        for (group, version) in group_versions() {
            let path = doc_path(group, version);
            let value = document(group, version);
            if let Some(schemas) = value["components"]["schemas"].as_object() {
                for (name, schema) in schemas {
                    // wkube's own kinds stay out of v2, as custom resources'
                    // do: kubectl would otherwise compute strategic merge
                    // patches for them from v2.
                    if !name.starts_with("dev.wkube.") {
                        definitions
                            .entry(name.clone())
                            .or_insert_with(|| schema.clone());
                    }
                }
            }
            let doc = Doc::new(&value);
            index.insert(
                path.clone(),
                json!({ "serverRelativeURL": format!("/openapi/v3/{path}?hash={}", doc.hash) }),
            );
            by_path.insert(path, doc);
        }
        let (v2_json, v2_protobuf) = v2::encode(&definitions, super::KUBE_GIT_VERSION);
        Documents {
            index: Doc::new(&json!({ "paths": index })),
            by_path,
            v2_json: Doc::new(&v2_json),
            v2_protobuf: Doc::bytes(v2_protobuf, V2_PROTOBUF),
        }
    }
}

/// The OpenAPI 3.0 document of one group-version.
fn document(group: &'static str, version: &'static str) -> Value {
    let mut collector = schemas::Collector::new();
    let mut paths = Map::new();
    paths::add_discovery(&mut paths, group, version);
    for kind in resources::all_kinds()
        .into_iter()
        .filter(|k| k.group == group && k.version == version)
    {
        let gvk = Gvk {
            group,
            version,
            kind: kind.kind,
        };
        match collector.add_kind(gvk, Some(kind.list_kind)) {
            Some(schema) => paths::add_kind(&mut paths, &mut collector, kind, &schema),
            None => tracing::warn!(?gvk, "no OpenAPI schema for a served kind"),
        }
    }
    for v in VIRTUAL
        .iter()
        .filter(|v| v.is_review() && v.group == group && v.version == version)
    {
        let gvk = Gvk {
            group,
            version,
            kind: v.kind,
        };
        match collector.add_kind(gvk, None) {
            Some(schema) => paths::add_virtual(&mut paths, v, &schema),
            None => tracing::warn!(?gvk, "no OpenAPI schema for a served kind"),
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": super::KUBE_GIT_VERSION },
        "paths": paths,
        "components": {
            "schemas": collector.finish(),
            "securitySchemes": {
                "BearerToken": {
                    "type": "apiKey",
                    "description": "Bearer token: Authorization: Bearer <token>",
                    "name": "authorization",
                    "in": "header",
                },
            },
        },
        "security": [{ "BearerToken": [] }],
    })
}

/// A stored document with caching headers. A request naming the current
/// hash may cache the reply forever (the URL changes with the content);
/// any other must revalidate with the ETag.
fn serve(doc: &Doc, headers: &HeaderMap, requested_hash: Option<&str>) -> Response {
    let etag = format!("\"{}\"", doc.hash);
    let cache = if requested_hash == Some(doc.hash.as_str()) {
        "public, immutable, max-age=31536000"
    } else {
        "no-cache, private"
    };
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, doc.body.clone()).into_response()
    };
    let h = resp.headers_mut();
    // v3 is JSON whatever the Accept header asks for: kubectl may prefer
    // the protobuf encoding of v3 documents, and accepts JSON.
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(doc.content_type),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    resp
}

/// `GET /openapi/v2`: protobuf when asked for (client-go always asks, and
/// only decodes protobuf), JSON otherwise.
pub async fn v2(headers: HeaderMap) -> Response {
    let docs = documents().await;
    let wants_protobuf = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("protobuf"));
    let doc = if wants_protobuf {
        &docs.v2_protobuf
    } else {
        &docs.v2_json
    };
    serve(doc, &headers, None)
}

/// The documents of the custom kinds' group-versions, rebuilt when the
/// served custom kinds change (see `resources::custom::generation`).
struct CustomDocs {
    generation: u64,
    by_path: HashMap<String, Doc>,
    index: Doc,
}

static CUSTOM_DOCS: std::sync::Mutex<Option<std::sync::Arc<CustomDocs>>> =
    std::sync::Mutex::new(None);

fn custom_documents(docs: &Documents) -> std::sync::Arc<CustomDocs> {
    let generation = resources::custom::generation();
    let mut guard = CUSTOM_DOCS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(d) = guard.as_ref()
        && d.generation == generation
    {
        return d.clone();
    }
    let mut gvs: Vec<(&'static str, &'static str)> = Vec::new();
    for k in resources::custom::all() {
        if !gvs.contains(&(k.group, k.version)) {
            gvs.push((k.group, k.version));
        }
    }
    let mut by_path = HashMap::new();
    let mut index: Map<String, Value> = serde_json::from_slice::<Value>(&docs.index.body)
        .ok()
        .and_then(|v| v.get("paths").and_then(Value::as_object).cloned())
        .unwrap_or_default();
    for (group, version) in gvs {
        let path = doc_path(group, version);
        let doc = Doc::new(&document(group, version));
        index.insert(
            path.clone(),
            json!({ "serverRelativeURL": format!("/openapi/v3/{path}?hash={}", doc.hash) }),
        );
        by_path.insert(path, doc);
    }
    let built = std::sync::Arc::new(CustomDocs {
        generation,
        by_path,
        index: Doc::new(&json!({ "paths": index })),
    });
    *guard = Some(built.clone());
    built
}

/// `GET /openapi/v3`.
pub async fn v3_index(headers: HeaderMap) -> Response {
    let docs = documents().await;
    if resources::custom::all().is_empty() {
        return serve(&docs.index, &headers, None);
    }
    let custom = custom_documents(docs);
    serve(&custom.index, &headers, None)
}

/// `GET /openapi/v3/api/v1`, `/openapi/v3/apis/GROUP/VERSION`.
pub async fn v3_document(
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let hash = query
        .as_deref()
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == "hash").map(|(_, v)| v));
    let docs = documents().await;
    let path = path.trim_matches('/');
    if let Some(doc) = docs.by_path.get(path) {
        return serve(doc, &headers, hash.as_deref());
    }
    match custom_documents(docs).by_path.get(path) {
        Some(doc) => serve(doc, &headers, hash.as_deref()),
        None => ApiError::NoRoute.into_response(),
    }
}

#[cfg(test)]
mod tests;
