//! OpenAPI documents (`/openapi/v3`), which kubectl reads before `apply`,
//! `create -f` and `explain`. (Generation is being built.)

use axum::extract::Path;
use axum::response::{IntoResponse, Response};

use super::status::ApiError;

pub async fn v2() -> Response {
    ApiError::NoRoute.into_response()
}

pub async fn v3_index() -> Response {
    ApiError::NoRoute.into_response()
}

pub async fn v3_document(Path(_path): Path<String>) -> Response {
    ApiError::NoRoute.into_response()
}
