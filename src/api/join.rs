//! Joining nodes: the join token and the exchange that turns it into a
//! node credential.
//!
//! The server writes `DATA/join-token` at first start:
//! `K10<sha256 of the CA certificate PEM>::<id>.<secret>`. An agent
//! given it
//! 1. fetches the CA from `GET /cacerts` (public, like the CA bundle any
//!    client may read) and accepts it only if its hash matches the token —
//!    so it trusts its own cluster and no other;
//! 2. `POST /apis/wkube.dev/v1/join` with `{"token": "<id>.<secret>",
//!    "nodeName": N, "nodeIP": IP}` over TLS checked against that CA, and
//!    gets back a client certificate for `system:node:N` (group
//!    `system:nodes`, which the node authorizer confines to that node), a
//!    token for the same user (for `--tls off` clusters), and the serving
//!    certificate of its agent endpoint.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ApiState;
use super::status::ApiError;
use crate::pki::ClusterPki;
use crate::resources::validation::{NameRule, check_name};

/// Public route serving the cluster CA certificate.
pub const CACERTS_ROUTE: &str = "/cacerts";
/// Where agents exchange the join token for a node credential.
pub const JOIN_ROUTE: &str = "/apis/wkube.dev/v1/join";
/// The token file under the data directory.
pub const JOIN_TOKEN_FILE: &str = "join-token";
/// How long node credentials live.
const NODE_CREDENTIAL_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// What the join endpoint needs: the CA to issue with and the secret.
pub struct Joiner {
    pki: ClusterPki,
    /// `<id>.<secret>`.
    secret: String,
}

impl std::fmt::Debug for Joiner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Joiner(<redacted>)")
    }
}

/// Why the join token could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("join token file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cluster PKI: {0}")]
    Pki(#[from] crate::pki::PkiError),
}

/// `K10<hex sha256 of ca_pem>::<id>.<secret>`.
pub fn format_token(ca_pem: &str, secret: &str) -> String {
    format!("K10{}::{secret}", ca_hash(ca_pem))
}

/// The hex sha256 of the CA certificate PEM, as the token pins it.
pub fn ca_hash(ca_pem: &str) -> String {
    hex::encode(Sha256::digest(ca_pem.as_bytes()))
}

/// Splits a join token into the CA hash and the `<id>.<secret>` part.
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.trim().strip_prefix("K10")?;
    let (hash, secret) = rest.split_once("::")?;
    let valid_hash = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
    let (id, s) = secret.split_once('.')?;
    let valid_secret = id.len() == 6
        && s.len() == 16
        && secret
            .bytes()
            .all(|b| b == b'.' || b.is_ascii_lowercase() || b.is_ascii_digit());
    (valid_hash && valid_secret).then_some((hash, secret))
}

impl Joiner {
    /// Loads the CA and the join secret from `data_dir`, creating the
    /// token file (mode 0600) on first start. Returns the joiner and the
    /// full join token.
    ///
    /// # Errors
    /// I/O or PKI failures.
    pub fn load_or_create(data_dir: &Path) -> Result<(Joiner, String), JoinError> {
        let pki = ClusterPki::open(data_dir)?;
        let path = data_dir.join(JOIN_TOKEN_FILE);
        let io = |source| JoinError::Io {
            path: path.clone(),
            source,
        };
        let token = match std::fs::read_to_string(&path) {
            Ok(t) if parse_token(&t).is_some_and(|(h, _)| h == ca_hash(pki.ca_cert_pem())) => {
                t.trim().to_string()
            }
            Ok(_) | Err(_) => {
                let secret = format!("{}.{}", random_alnum(6), random_alnum(16));
                let token = format_token(pki.ca_cert_pem(), &secret);
                crate::pki::write_private_file(&path, format!("{token}\n").as_bytes())
                    .map_err(io)?;
                token
            }
        };
        let secret = parse_token(&token)
            .map(|(_, s)| s.to_string())
            .unwrap_or_default();
        Ok((Joiner { pki, secret }, token))
    }
}

fn random_alnum(n: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..n)
        .map(|_| CHARS[rand::random_range(0..CHARS.len())] as char)
        .collect()
}

/// `GET /cacerts`: the cluster CA certificate (public).
pub async fn cacerts(State(state): State<Arc<ApiState>>) -> Response {
    match &state.joiner {
        Some(j) => {
            let mut r = j.pki.ca_cert_pem().to_string().into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-pem-file"),
            );
            r
        }
        None => (StatusCode::NOT_FOUND, "joining is not enabled").into_response(),
    }
}

/// The join request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    pub token: String,
    pub node_name: String,
    #[serde(rename = "nodeIP")]
    pub node_ip: IpAddr,
}

/// What a joined node gets.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinResponse {
    pub ca_cert: String,
    pub client_cert: String,
    pub client_key: String,
    /// A bearer token for the same user, for clusters without TLS.
    pub token: String,
    pub serving_cert: String,
    pub serving_key: String,
}

/// `POST /apis/wkube.dev/v1/join`.
pub async fn join(State(state): State<Arc<ApiState>>, body: axum::body::Bytes) -> Response {
    match try_join(&state, &body) {
        Ok(resp) => (StatusCode::OK, Json(resp)).into_response(),
        Err(e) => e.into_response(),
    }
}

fn try_join(state: &ApiState, body: &[u8]) -> Result<JoinResponse, ApiError> {
    let Some(joiner) = &state.joiner else {
        return Err(ApiError::NoRoute);
    };
    let req: JoinRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid join request: {e}")))?;
    // Constant-time comparison: the secret must not leak through timing.
    let given = req.token.trim().as_bytes();
    let want = joiner.secret.as_bytes();
    let same = given.len() == want.len()
        && given
            .iter()
            .zip(want)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err(ApiError::Unauthorized);
    }
    if let Some(msg) = check_name(NameRule::Subdomain, &req.node_name) {
        return Err(ApiError::bad_request(format!(
            "invalid node name {:?}: {msg}",
            req.node_name
        )));
    }
    let user = format!("system:node:{}", req.node_name);
    let certs = joiner
        .pki
        .issue_node(&req.node_name, vec![req.node_ip], NODE_CREDENTIAL_TTL)
        .map_err(|e| ApiError::Internal {
            message: e.to_string(),
        })?;
    let token = state
        .tokens
        .issue_user(&user, &["system:nodes".to_string()], NODE_CREDENTIAL_TTL)
        .map_err(|e| ApiError::Internal {
            message: e.to_string(),
        })?;
    tracing::info!(node = %req.node_name, ip = %req.node_ip, "node joined");
    Ok(JoinResponse {
        ca_cert: joiner.pki.ca_cert_pem().to_string(),
        client_cert: certs.client.cert_pem,
        client_key: certs.client.key_pem,
        token,
        serving_cert: certs.serving.cert_pem,
        serving_key: certs.serving.key_pem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_malformed_ones_are_refused() {
        let t = format_token("CA", "abcdef.0123456789abcdef");
        let (hash, secret) = parse_token(&t).unwrap();
        assert_eq!(hash, ca_hash("CA"));
        assert_eq!(secret, "abcdef.0123456789abcdef");
        for bad in [
            "abcdef.0123456789abcdef",
            "K10xyz::abcdef.0123456789abcdef",
            &format!("K10{}::ABCDEF.0123456789abcdef", ca_hash("CA")),
            &format!("K10{}::abc.def", ca_hash("CA")),
        ] {
            assert!(parse_token(bad).is_none(), "{bad}");
        }
    }
}
