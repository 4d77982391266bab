//! What a resource request carries and how it is answered, shared by
//! every handler: query parameters, the wanted response format, delete
//! options, selectors.

use std::collections::HashMap;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use crate::resources::Kind;

/// Parsed query parameters of a resource request.
pub struct Query(pub HashMap<String, String>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let map: HashMap<String, String> = serde_urlencoded::from_str(raw.unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
        Ok(Query(map))
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    /// Booleans as clients send them: anything but "", "0" and "false"
    /// (any case) is true.
    pub fn flag(&self, k: &str) -> bool {
        self.get(k)
            .is_some_and(|v| !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false")))
    }

    pub fn dry_run(&self) -> bool {
        self.get("dryRun").is_some_and(|v| v == "All")
    }
}

/// The response body format the client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wants {
    Json,
    Table,
    /// `as=PartialObjectMetadata` (or `…List`): only each object's
    /// metadata, as metadata-only informers and `kubectl` caches ask.
    Metadata,
    Yaml,
}

pub fn wants(headers: &HeaderMap) -> Wants {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Clients list preferences; take the first we serve.
    for part in accept.split(',') {
        let p = part.trim();
        if p.contains("as=Table") {
            return Wants::Table;
        }
        if p.contains("as=PartialObjectMetadata") {
            return Wants::Metadata;
        }
        if p.starts_with("application/json")
            || p.starts_with("*/*")
            || p.starts_with("application/vnd.kubernetes.protobuf")
        {
            return Wants::Json;
        }
        if p.starts_with("application/yaml") {
            return Wants::Yaml;
        }
    }
    Wants::Json
}

/// A JSON response with a status code.
pub fn json_response(code: StatusCode, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = (code, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Options of a delete (from the body or the query).
#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    pub propagation: Option<String>,
    pub grace_period: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
}

/// The label and field selectors of a list, delete or watch.
pub fn selectors(kind: &Kind, query: &Query) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))?;
    let fields = FieldSelector::parse(
        query.get("fieldSelector").unwrap_or(""),
        kind.field_selectors,
    )?;
    Ok((labels, fields))
}
