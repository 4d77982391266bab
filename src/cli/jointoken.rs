//! `wkube token join create|list|delete`: the join tokens agents use,
//! kept as bootstrap-token Secrets in `kube-system` (see `api::join`).
//! These commands go through the running server's API as the admin, so
//! RBAC, validation and the audit of every write apply as they would to
//! `kubectl`.

use std::path::Path;
use std::time::Duration;

use clap::{Args, Subcommand};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use super::token::{
    ADMIN_GROUP, ADMIN_USER, CommonArgs, TokenError, api_url, create_token, parse_ttl,
};
use crate::api::join::{
    TOKEN_NAMESPACE, TOKEN_SECRET_PREFIX, TOKEN_SECRET_TYPE, format_token, new_token_secret,
    parse_token,
};
use crate::server::PKI_DIR;

/// Verbs of `wkube token join`.
#[derive(Debug, Subcommand)]
pub enum JoinCommand {
    /// Create a join token and print it (only the token).
    Create(JoinCreateArgs),
    /// List the join tokens with their expiry.
    List,
    /// Revoke a join token (its id, or the whole token).
    Delete {
        /// `ID`, `ID.SECRET` or the full `K10…::ID.SECRET` token.
        token: String,
    },
}

/// Flags of `wkube token join create`.
#[derive(Debug, Args)]
pub struct JoinCreateArgs {
    /// How long the token can be used to join, e.g. 1h, 24h or 7d.
    #[arg(long, default_value = "24h", value_parser = parse_ttl, value_name = "DURATION")]
    pub ttl: Duration,
    /// A note kept with the token.
    #[arg(long, default_value = "created by wkube token join create")]
    pub description: String,
}

/// Why a join-token command failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinTokenError {
    #[error(transparent)]
    Credentials(#[from] TokenError),
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    #[error("the API server refused: {0}")]
    Api(#[from] kube::Error),
    #[error("{0:?} is not a join token id, ID.SECRET or full token")]
    BadToken(String),
}

/// Runs one `wkube token join` command and returns what it prints.
///
/// # Errors
/// No server state in `data_dir`, the server cannot be reached, or it
/// refuses the request.
pub async fn run(cmd: JoinCommand, data_dir: &Path) -> Result<String, JoinTokenError> {
    let ca = std::fs::read_to_string(data_dir.join(PKI_DIR).join("ca.crt")).ok();
    let server = api_url(data_dir)?;
    let admin = create_token(
        ADMIN_USER,
        &CommonArgs {
            groups: vec![ADMIN_GROUP.into()],
            ttl: Duration::from_secs(300),
        },
        data_dir,
    )?;
    let client = crate::client::build(&crate::client::ClientConfig {
        server,
        ca_pem: ca.clone(),
        credential: crate::client::Credential::Token(admin),
        connect_timeout: Duration::from_secs(5),
    })?;
    let secrets: Api<Secret> = Api::namespaced(client, TOKEN_NAMESPACE);
    let ca = ca.unwrap_or_default();
    match cmd {
        JoinCommand::Create(args) => {
            let (token, obj) = new_token_secret(args.ttl, &args.description);
            let obj: Secret = serde_json::from_value(obj).map_err(|e| {
                JoinTokenError::BadToken(format!("internal: the token Secret does not decode: {e}"))
            })?;
            secrets.create(&PostParams::default(), &obj).await?;
            Ok(format!("{}\n", format_token(&ca, &token)))
        }
        JoinCommand::List => {
            let list = secrets
                .list(&ListParams::default().fields(&format!("type={TOKEN_SECRET_TYPE}")))
                .await?;
            let mut out = format!("{:<92} {:<22} DESCRIPTION\n", "TOKEN", "EXPIRES");
            for s in list.items {
                let field = |k: &str| {
                    s.data
                        .as_ref()
                        .and_then(|d| d.get(k))
                        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                        .unwrap_or_default()
                };
                let token = format_token(
                    &ca,
                    &format!("{}.{}", field("token-id"), field("token-secret")),
                );
                let expires = field("expiration");
                let expired = expires
                    .parse::<jiff::Timestamp>()
                    .is_ok_and(|t| t <= jiff::Timestamp::now());
                let expires = if expired {
                    format!("{expires} (expired)")
                } else {
                    expires
                };
                out.push_str(&format!(
                    "{token:<92} {expires:<22} {}\n",
                    field("description")
                ));
            }
            Ok(out)
        }
        JoinCommand::Delete { token } => {
            let id = token_id(&token).ok_or_else(|| JoinTokenError::BadToken(token.clone()))?;
            secrets
                .delete(
                    &format!("{TOKEN_SECRET_PREFIX}{id}"),
                    &DeleteParams::default(),
                )
                .await?;
            Ok(format!("join token {id} deleted\n"))
        }
    }
}

/// The id of `ID`, `ID.SECRET` or a full token.
fn token_id(token: &str) -> Option<&str> {
    let token = token.trim();
    let secret = match parse_token(token) {
        Some((_, secret)) => secret,
        None => token,
    };
    let id = secret.split('.').next()?;
    (id.len() == 6
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
    .then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_named_by_its_id_in_any_of_its_forms() {
        let full = format_token("CA", "abcdef.0123456789abcdef");
        for form in ["abcdef", "abcdef.0123456789abcdef", full.as_str()] {
            assert_eq!(token_id(form), Some("abcdef"), "{form}");
        }
        assert_eq!(token_id("ABC"), None);
        assert_eq!(token_id("../x"), None);
    }
}
