//! The API client that wkube's own components (kubelet, and later the
//! scheduler and controllers) use to talk to the API server — always
//! through the API, never the store, so they can run in another process or
//! on another machine.
//!
//! It is `kube`'s client configured from what wkube knows: the server URL,
//! the cluster CA and a credential (a client certificate for nodes, a bearer
//! token otherwise).

pub mod failover;
pub mod join;
pub mod offline;

use base64::Engine as _;
use kube::config::AuthInfo;

/// The error of the tower services behind wkube's clients.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The future of those services' answers.
pub(crate) type ResponseFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<hyper::Response<kube::client::Body>, BoxError>>
            + Send,
    >,
>;

/// Who the client is to the API server.
#[derive(Clone)]
pub enum Credential {
    /// A bearer token (service-account or `wkube token create` JWT).
    Token(String),
    /// A client certificate signed by the cluster CA, PEM.
    ClientCert { cert_pem: String, key_pem: String },
    /// No credential (requests the server lets anyone make).
    None,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Token(_) => f.write_str("Token(<redacted>)"),
            Credential::ClientCert { .. } => f.write_str("ClientCert(<redacted>)"),
            Credential::None => f.write_str("None"),
        }
    }
}

/// Where the API server is and how to trust and authenticate to it.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `https://HOST:PORT` (or `http://` for a `--tls off` cluster).
    pub server: String,
    /// The cluster CA the server's certificate must chain to.
    pub ca_pem: Option<String>,
    pub credential: Credential,
    /// Bound on connecting to the server.
    pub connect_timeout: std::time::Duration,
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid API server URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("the cluster CA certificate is not valid PEM: {0}")]
    Ca(String),
    #[error("cannot build the API client: {0}")]
    Build(#[from] kube::Error),
}

/// Builds a client for `cfg`.
///
/// # Errors
/// A malformed URL or CA, or a TLS setup failure.
pub fn build(cfg: &ClientConfig) -> Result<kube::Client, ClientError> {
    let uri: hyper::Uri = cfg
        .server
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| ClientError::Url {
            url: cfg.server.clone(),
            reason: e.to_string(),
        })?;
    let mut config = kube::Config::new(uri);
    config.connect_timeout = Some(cfg.connect_timeout);
    if let Some(ca) = &cfg.ca_pem {
        config.root_cert = Some(pem_to_der(ca)?);
    }
    let mut auth = AuthInfo::default();
    match &cfg.credential {
        Credential::Token(t) => auth.token = Some(t.clone().into()),
        Credential::ClientCert { cert_pem, key_pem } => {
            let b64 = base64::engine::general_purpose::STANDARD;
            auth.client_certificate_data = Some(b64.encode(cert_pem));
            auth.client_key_data = Some(b64.encode(key_pem).into());
        }
        Credential::None => {}
    }
    config.auth_info = auth;
    Ok(kube::Client::try_from(config)?)
}

/// The DER certificates of a PEM bundle.
fn pem_to_der(pem: &str) -> Result<Vec<Vec<u8>>, ClientError> {
    let mut out = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| ClientError::Ca(e.to_string()))?;
        out.push(block.contents);
    }
    if out.is_empty() {
        return Err(ClientError::Ca("no certificate found".into()));
    }
    Ok(out)
}
