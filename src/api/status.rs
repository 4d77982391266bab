//! Errors of the API server and their one mapping to a Kubernetes `Status`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::resources::FieldError;
use crate::store::StoreError;

/// Every way an API request fails. Each variant maps to the HTTP code and
/// `reason` Kubernetes uses, in [`ApiError::status`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { message: String },
    #[error("Unauthorized")]
    Unauthorized,
    #[error("{message}")]
    Forbidden {
        message: String,
        kind: String,
        name: String,
        group: String,
    },
    #[error("{resource} \"{name}\" not found")]
    NotFound {
        group: String,
        resource: String,
        name: String,
    },
    #[error("the server could not find the requested resource")]
    NoRoute,
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists {
        group: String,
        resource: String,
        name: String,
    },
    #[error("{message}")]
    Conflict {
        group: String,
        resource: String,
        name: String,
        message: String,
    },
    #[error("{kind} \"{name}\" is invalid: {}", .causes.iter().map(FieldError::message).collect::<Vec<_>>().join(", "))]
    Invalid {
        group: String,
        kind: String,
        name: String,
        causes: Vec<FieldError>,
    },
    #[error("{message}")]
    Gone { message: String },
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    #[error("{message}")]
    UnsupportedMediaType { message: String },
    #[error("{message}")]
    NotAcceptable { message: String },
    #[error("the request is too large: limit is {limit} bytes")]
    TooLarge { limit: usize },
    /// A request within the body limit that asks for too much work.
    #[error("{message}")]
    TooLargeMessage { message: String },
    #[error("{message}")]
    ServiceUnavailable { message: String },
    #[error("too many requests, please try again later")]
    TooManyRequests,
    /// A 429 that says why in its causes (`(reason, message)` pairs) and
    /// when to try again (0: no advice): an eviction a disruption budget
    /// does not allow yet.
    #[error("{message}")]
    TooManyRequestsBecause {
        message: String,
        causes: Vec<(String, String)>,
        retry_after_seconds: u32,
    },
    #[error("Timeout: {message}")]
    Timeout { message: String },
    #[error("Internal error occurred: {message}")]
    Internal { message: String },
    /// An error a node agent answered with, passed on with its code.
    #[error("{message}")]
    FromNode { code: StatusCode, message: String },
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
        }
    }

    /// The 409 of a write whose UID precondition names another object
    /// than the one stored under the name (deleted and created again).
    pub fn uid_precondition(
        kind: &crate::resources::Kind,
        name: &str,
        wanted: &str,
        stored: &str,
    ) -> Self {
        ApiError::Conflict {
            group: kind.group.into(),
            resource: kind.plural.into(),
            name: name.into(),
            message: format!(
                "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {wanted}, UID in object meta: {stored}",
                kind.qualified_plural()
            ),
        }
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        ApiError::Internal {
            message: message.to_string(),
        }
    }

    pub fn code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Gone { .. } => StatusCode::GONE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotAcceptable { .. } => StatusCode::NOT_ACCEPTABLE,
            ApiError::TooLarge { .. } | ApiError::TooLargeMessage { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::ServiceUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooManyRequests | ApiError::TooManyRequestsBecause { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::FromNode { code, .. } => *code,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "BadRequest",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden { .. } => "Forbidden",
            ApiError::NotFound { .. } | ApiError::NoRoute => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::Gone { .. } => "Expired",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::UnsupportedMediaType { .. } => "UnsupportedMediaType",
            ApiError::NotAcceptable { .. } => "NotAcceptable",
            ApiError::TooLarge { .. } | ApiError::TooLargeMessage { .. } => "RequestEntityTooLarge",
            ApiError::ServiceUnavailable { .. } => "ServiceUnavailable",
            ApiError::TooManyRequests | ApiError::TooManyRequestsBecause { .. } => {
                "TooManyRequests"
            }
            ApiError::Timeout { .. } => "Timeout",
            ApiError::Internal { .. } => "InternalError",
            ApiError::FromNode { code, .. } => reason_of(*code),
        }
    }

    /// The `Status` object Kubernetes sends for this error.
    pub fn status(&self) -> Value {
        let details = match self {
            ApiError::NotFound {
                group,
                resource,
                name,
            }
            | ApiError::AlreadyExists {
                group,
                resource,
                name,
            }
            | ApiError::Conflict {
                group,
                resource,
                name,
                ..
            } => Some(json!({"name": name, "group": group, "kind": resource})),
            ApiError::Forbidden {
                kind, name, group, ..
            } => Some(json!({"name": name, "group": group, "kind": kind})),
            ApiError::Invalid {
                group,
                kind,
                name,
                causes,
            } => Some(json!({
                "name": name, "group": group, "kind": kind,
                "causes": causes.iter().map(|c| json!({
                    "reason": c.kind.reason(),
                    "message": c.message().split_once(": ").map(|(_, m)| m.to_string()).unwrap_or_default(),
                    "field": c.field,
                })).collect::<Vec<_>>(),
            })),
            ApiError::TooManyRequestsBecause {
                causes,
                retry_after_seconds,
                ..
            } => {
                let mut d = json!({"causes": causes.iter().map(|(reason, message)| json!({
                    "reason": reason, "message": message,
                })).collect::<Vec<_>>()});
                if *retry_after_seconds > 0 {
                    d["retryAfterSeconds"] = json!(retry_after_seconds);
                }
                Some(d)
            }
            _ => None,
        };
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code().as_u16(),
        });
        if let Some(mut d) = details {
            if let Some(obj) = d.as_object_mut() {
                obj.retain(|_, v| !v.as_str().is_some_and(str::is_empty));
            }
            status["details"] = d;
        }
        status
    }
}

/// The `reason` Kubernetes gives a status code it did not produce itself
/// (its `NewGenericServerResponse`); "" is `StatusReasonUnknown`.
fn reason_of(code: StatusCode) -> &'static str {
    match code.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Expired",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.status()).unwrap_or_default();
        let mut resp = (self.code(), body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // As Kubernetes answers a 429: when to try again, which client
        // libraries honour.
        match &self {
            ApiError::TooManyRequests => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::TooManyRequestsBecause {
                retry_after_seconds,
                ..
            } if *retry_after_seconds > 0 => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_seconds));
            }
            _ => {}
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Compacted { .. } => ApiError::Gone {
                message: "too old resource version".into(),
            },
            StoreError::FutureRevision => ApiError::Timeout {
                message: "Too large resource version".into(),
            },
            StoreError::Stopped => ApiError::ServiceUnavailable {
                message: "the storage is shutting down".into(),
            },
            StoreError::Unavailable(reason) => ApiError::ServiceUnavailable {
                message: format!("the storage is unavailable: {reason}"),
            },
            StoreError::TooManyWatchers => ApiError::TooManyRequests,
            StoreError::RequestTooLarge => ApiError::TooLarge { limit: 1536 * 1024 },
            other => ApiError::internal(other),
        }
    }
}

/// A success `Status` (for deletes of collections and the like).
pub fn success_status(details: Option<Value>) -> Value {
    let mut s = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
    });
    if let Some(d) = details {
        s["details"] = d;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_reads_like_kubernetes() {
        let e = ApiError::NotFound {
            group: String::new(),
            resource: "pods".into(),
            name: "web".into(),
        };
        let s = e.status();
        assert_eq!(s["message"], "pods \"web\" not found");
        assert_eq!(s["code"], 404);
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["details"]["kind"], "pods");
        assert!(s["details"].get("group").is_none());
    }

    #[test]
    fn invalid_lists_every_cause() {
        let e = ApiError::Invalid {
            group: String::new(),
            kind: "Pod".into(),
            name: "p".into(),
            causes: vec![FieldError::required("spec.containers[0].image")],
        };
        assert_eq!(
            e.to_string(),
            "Pod \"p\" is invalid: spec.containers[0].image: Required value"
        );
        let s = e.status();
        assert_eq!(
            s["details"]["causes"][0]["field"],
            "spec.containers[0].image"
        );
        assert_eq!(s["details"]["causes"][0]["reason"], "FieldValueRequired");
    }
}
