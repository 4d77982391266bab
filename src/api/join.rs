//! Joining nodes: the join token and the exchange that turns it into a
//! node credential.
//!
//! A join token is `K10<sha256 of the CA certificate PEM>::<id>.<secret>`.
//! Its `<id>.<secret>` part lives in the cluster as a bootstrap-token
//! Secret, `kube-system/bootstrap-token-<id>` of type
//! `bootstrap.kubernetes.io/token`, with an `expiration`, as kubeadm keeps
//! its tokens: `wkube token join create|list|delete` (or kubectl) manage
//! them, and deleting the Secret revokes the token. At each start the
//! server makes sure `DATA/join-token` holds a token that is still valid,
//! creating one that lasts [`DEFAULT_JOIN_TOKEN_TTL`] when it does not.
//!
//! An agent given a token
//! 1. fetches the CA from `GET /cacerts` (public, like the CA bundle any
//!    client may read) and accepts it only if its hash matches the token —
//!    so it trusts its own cluster and no other;
//! 2. `POST /apis/wkube.dev/v1/join` with `{"token": "<id>.<secret>",
//!    "nodeName": N, "nodeIP": IP}` over TLS checked against that CA, and
//!    gets back a client certificate for `system:node:N` (group
//!    `system:nodes`, which the node authorizer confines to that node), a
//!    token for the same user (for `--tls off` clusters), and the serving
//!    certificate of its agent endpoint.
//!
//! A node name that already has a Node object is refused: the token must
//! not let one machine take over another's identity. The node itself (its
//! client certificate) may join again under its own name.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::ApiState;
use super::status::ApiError;
pub use crate::client::join::{
    CACERTS_ROUTE, JOIN_ROUTE, JoinRequest, JoinResponse, ca_hash, format_token, parse_token,
};
use crate::pki::ClusterPki;
use crate::resources::validation::{NameRule, check_name};

/// The token file under the data directory.
pub const JOIN_TOKEN_FILE: &str = "join-token";
/// How long node credentials live.
const NODE_CREDENTIAL_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long the token the server writes to `DATA/join-token` lasts.
pub const DEFAULT_JOIN_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// The namespace of bootstrap-token Secrets.
pub const TOKEN_NAMESPACE: &str = "kube-system";
/// The Secret type of join tokens.
pub const TOKEN_SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// Name prefix of join-token Secrets; the token id follows.
pub const TOKEN_SECRET_PREFIX: &str = "bootstrap-token-";

/// What the join endpoint needs: the CA to issue with. Tokens are read
/// from their Secrets at each join.
pub struct Joiner {
    pki: ClusterPki,
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
    #[error("storing the join token: {0}")]
    Api(#[source] ApiError),
}

impl Joiner {
    /// Loads the CA from `data_dir`.
    ///
    /// # Errors
    /// PKI failures.
    pub fn load(data_dir: &Path) -> Result<Joiner, JoinError> {
        Ok(Joiner {
            pki: ClusterPki::open(data_dir)?,
        })
    }

    /// Makes sure `DATA/join-token` holds a token whose Secret exists and
    /// has not expired, creating a new token (and its Secret, valid for
    /// [`DEFAULT_JOIN_TOKEN_TTL`]) otherwise. Returns the full token.
    ///
    /// # Errors
    /// The file cannot be written, or the Secret cannot be created.
    pub async fn ensure_token_file(
        &self,
        state: &ApiState,
        data_dir: &Path,
    ) -> Result<String, JoinError> {
        let path = data_dir.join(JOIN_TOKEN_FILE);
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Some((hash, secret)) = parse_token(&text)
            && hash == ca_hash(self.pki.ca_cert_pem())
            && matches!(check_secret(state, secret).await, Ok(()))
        {
            return Ok(text.trim().to_string());
        }
        let secret = create_token_secret(
            state,
            DEFAULT_JOIN_TOKEN_TTL,
            "written to DATA/join-token at server start",
        )
        .await
        .map_err(JoinError::Api)?;
        let token = format_token(self.pki.ca_cert_pem(), &secret);
        crate::pki::write_private_file(&path, format!("{token}\n").as_bytes()).map_err(
            |source| JoinError::Io {
                path: path.clone(),
                source,
            },
        )?;
        Ok(token)
    }
}

/// A new join token's `<id>.<secret>`, stored as its bootstrap-token
/// Secret that expires after `ttl`.
///
/// # Errors
/// The Secret cannot be stored.
pub async fn create_token_secret(
    state: &ApiState,
    ttl: Duration,
    description: &str,
) -> Result<String, ApiError> {
    let (token, obj) = new_token_secret(ttl, description);
    let kind = crate::resources::by_resource("", "v1", "secrets").ok_or(ApiError::NoRoute)?;
    let admin = super::authn::UserInfo {
        username: "system:apiserver".into(),
        uid: String::new(),
        groups: vec!["system:masters".into()],
    };
    super::verbs::create(
        state,
        &admin,
        kind,
        Some(TOKEN_NAMESPACE),
        obj,
        super::objects::FieldValidation::Strict,
        false,
        super::managed::Owner::Writer("wkube-token"),
    )
    .await?;
    Ok(token)
}

/// A fresh join token's `<id>.<secret>` and the bootstrap-token Secret
/// that makes it valid until `ttl` from now.
pub fn new_token_secret(ttl: Duration, description: &str) -> (String, serde_json::Value) {
    let id = random_alnum(6);
    let secret = random_alnum(16);
    let expiration = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::try_from(ttl).unwrap_or(jiff::SignedDuration::MAX))
        .unwrap_or(jiff::Timestamp::MAX)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let obj = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": format!("{TOKEN_SECRET_PREFIX}{id}"), "namespace": TOKEN_NAMESPACE},
        "type": TOKEN_SECRET_TYPE,
        "stringData": {
            "token-id": id,
            "token-secret": secret,
            "expiration": expiration,
            "usage-bootstrap-authentication": "true",
            "description": description,
        },
    });
    (format!("{id}.{secret}"), obj)
}

/// Why a join token's `<id>.<secret>` is not accepted.
#[derive(Debug, PartialEq, Eq)]
enum TokenProblem {
    /// No Secret, a wrong secret, or not a join token: one answer for all,
    /// so the response tells a guesser nothing.
    Invalid,
    Expired,
}

/// Checks `<id>.<secret>` against its bootstrap-token Secret.
async fn check_secret(state: &ApiState, token: &str) -> Result<(), TokenProblem> {
    let (id, given) = token.trim().split_once('.').ok_or(TokenProblem::Invalid)?;
    let kind = crate::resources::by_resource("", "v1", "secrets").ok_or(TokenProblem::Invalid)?;
    let stored = state
        .registry
        .try_get(
            kind,
            Some(TOKEN_NAMESPACE),
            &format!("{TOKEN_SECRET_PREFIX}{id}"),
        )
        .await
        .ok()
        .flatten()
        .ok_or(TokenProblem::Invalid)?;
    let field = |name: &str| -> Option<String> {
        let b64 = stored.pointer(&format!("/data/{name}"))?.as_str()?;
        let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).ok()?;
        String::from_utf8(bytes).ok()
    };
    if stored.get("type").and_then(serde_json::Value::as_str) != Some(TOKEN_SECRET_TYPE)
        || field("usage-bootstrap-authentication").as_deref() != Some("true")
        || field("token-id").as_deref() != Some(id)
    {
        return Err(TokenProblem::Invalid);
    }
    let want = field("token-secret").ok_or(TokenProblem::Invalid)?;
    if !constant_time_eq(given.as_bytes(), want.as_bytes()) {
        return Err(TokenProblem::Invalid);
    }
    if let Some(expiration) = field("expiration") {
        let expires: jiff::Timestamp = expiration.parse().map_err(|_| TokenProblem::Invalid)?;
        if expires <= jiff::Timestamp::now() {
            return Err(TokenProblem::Expired);
        }
    }
    Ok(())
}

/// Compares without an early exit, so the time taken does not tell how
/// much of a guessed secret was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

/// `POST /apis/wkube.dev/v1/join`.
pub async fn join(
    State(state): State<Arc<ApiState>>,
    peer: Option<axum::Extension<super::PeerIdentity>>,
    body: axum::body::Bytes,
) -> Response {
    let peer = peer.and_then(|axum::Extension(super::PeerIdentity(user))| user);
    match try_join(&state, peer.as_ref(), &body).await {
        Ok(resp) => (StatusCode::OK, Json(resp)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn try_join(
    state: &ApiState,
    peer: Option<&super::authn::UserInfo>,
    body: &[u8],
) -> Result<JoinResponse, ApiError> {
    let Some(joiner) = &state.joiner else {
        return Err(ApiError::NoRoute);
    };
    let req: JoinRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid join request: {e}")))?;
    match check_secret(state, &req.token).await {
        Ok(()) => {}
        Err(TokenProblem::Invalid) => return Err(ApiError::Unauthorized),
        Err(TokenProblem::Expired) => {
            tracing::warn!(node = %req.node_name, "join refused: the token has expired");
            return Err(ApiError::Unauthorized);
        }
    }
    if let Some(msg) = check_name(NameRule::Subdomain, &req.node_name) {
        return Err(ApiError::bad_request(format!(
            "invalid node name {:?}: {msg}",
            req.node_name
        )));
    }
    let user = format!("system:node:{}", req.node_name);
    let nodes = crate::resources::by_resource("", "v1", "nodes").ok_or(ApiError::NoRoute)?;
    let is_that_node =
        peer.is_some_and(|p| p.username == user && p.groups.iter().any(|g| g == "system:nodes"));
    if !is_that_node
        && state
            .registry
            .try_get(nodes, None, &req.node_name)
            .await?
            .is_some()
    {
        return Err(ApiError::Conflict {
            group: String::new(),
            resource: "nodes".into(),
            name: req.node_name.clone(),
            message: format!(
                "node {:?} has already joined: a join token cannot take over a joined node's name (delete the Node first to join another machine under it)",
                req.node_name
            ),
        });
    }
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
