//! Request bodies in the Kubernetes protobuf envelope (`k8s\0` +
//! `runtime.Unknown`), as kubectl 1.32+ sends for `create` of several
//! kinds and for `auth can-i`. (Decoding is being built.)

use bytes::Bytes;
use serde_json::Value;

use super::status::ApiError;
use crate::resources::Kind;

/// Decode a protobuf request body into the JSON form of its object.
pub fn decode(_body: &Bytes, _kind: Option<&Kind>) -> Result<Value, ApiError> {
    Err(ApiError::UnsupportedMediaType {
        message: "protobuf request bodies are not supported yet; send application/json".into(),
    })
}
