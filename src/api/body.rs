//! Request body decoding: JSON, YAML and the Kubernetes protobuf envelope.

use axum::http::{HeaderMap, header};
use bytes::Bytes;
use serde_json::Value;

use super::handlers::{DeleteOptions, Query};
use super::status::ApiError;
use crate::resources::Kind;

/// The protobuf envelope's magic prefix.
pub const PROTOBUF_MAGIC: &[u8] = b"k8s\0";

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Decode a request body into a JSON value. A missing Content-Type means
/// JSON (newer Python clients send none).
pub fn decode(headers: &HeaderMap, body: &Bytes, kind: Option<&Kind>) -> Result<Value, ApiError> {
    let ct = content_type(headers);
    let media = ct.split(';').next().unwrap_or("").trim();
    match media {
        "" | "application/json" | "*/*" => decode_json(body),
        "application/yaml" | "application/x-yaml" | "text/yaml" => decode_yaml(body),
        "application/vnd.kubernetes.protobuf" => super::protobuf::decode(body, kind),
        other => Err(ApiError::UnsupportedMediaType {
            message: format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {other})"
            ),
        }),
    }
}

pub fn decode_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.starts_with(PROTOBUF_MAGIC) {
        return super::protobuf::decode(&Bytes::copy_from_slice(body), None);
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })
}

pub fn decode_yaml(body: &[u8]) -> Result<Value, ApiError> {
    serde_yaml_ng::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))
}

/// Delete options from the body (a `DeleteOptions` object, possibly absent)
/// and the query.
pub fn delete_options(
    headers: &HeaderMap,
    body: &Bytes,
    query: &Query,
) -> Result<DeleteOptions, ApiError> {
    let mut opts = DeleteOptions::default();
    if !body.is_empty() {
        let v = decode(headers, body, None)?;
        opts.propagation = v
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .map(str::to_string);
        if v.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
            opts.propagation = Some("Orphan".into());
        }
        opts.grace_period = v.get("gracePeriodSeconds").and_then(Value::as_i64);
        opts.precondition_uid = v
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string);
        opts.precondition_rv = v
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    if let Some(p) = query.get("propagationPolicy") {
        opts.propagation = Some(p.to_string());
    }
    if let Some(g) = query.get("gracePeriodSeconds") {
        opts.grace_period =
            Some(g.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid gracePeriodSeconds: {g:?}"))
            })?);
    }
    match opts.propagation.as_deref() {
        None | Some("Orphan" | "Background" | "Foreground") => Ok(opts),
        Some(other) => Err(ApiError::Invalid {
            group: String::new(),
            kind: "DeleteOptions".into(),
            name: String::new(),
            causes: vec![crate::resources::FieldError {
                kind: crate::resources::FieldErrorKind::NotSupported,
                field: "propagationPolicy".into(),
                value: Some(other.to_string()),
                detail: "supported values: \"Orphan\", \"Background\", \"Foreground\"".into(),
            }],
        }),
    }
}
