//! `wkube push FILE.wasm NAME[:TAG]`: upload a Wasm component or module to
//! the cluster's module registry.
//!
//! The bytes go in one `POST /apis/wkube.dev/v1/modules/NAME/push?tag=TAG`
//! (see `crate::api::modules`) to the API server named by DATA/api.endpoint,
//! authenticated with the bearer token and CA of DATA/admin.kubeconfig, or
//! to the server, token and CA of `--kubeconfig`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::server::{ADMIN_KUBECONFIG, API_ENDPOINT_FILE};

/// Flags of `wkube push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The .wasm file: a component or a core module.
    #[arg(value_name = "FILE.wasm")]
    pub file: PathBuf,

    /// Module name and tag; the tag defaults to `latest`.
    #[arg(value_name = "NAME[:TAG]")]
    pub reference: String,

    /// Kubeconfig to authenticate with (and whose server to push to)
    /// instead of DATA/admin.kubeconfig and DATA/api.endpoint.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub timeout: u64,
}

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{0:?} is not NAME[:TAG]")]
    Reference(String),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: PathBuf, message: String },
    #[error("no API server address: {path} is missing ({source}); is `wkube server` running?")]
    Endpoint {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("API server URL {0:?} is not http(s)://HOST:PORT")]
    Url(String),
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("connecting to {url}: {source}")]
    Connect { url: String, source: std::io::Error },
    #[error("talking to {url}: {message}")]
    Http { url: String, message: String },
    #[error("no answer from {url} within {secs} seconds")]
    Timeout { url: String, secs: u64 },
    /// The server refused the push; the message is its `Status` message.
    #[error("{message}")]
    Refused { message: String },
    #[error("unexpected answer from the server: {0}")]
    Answer(String),
}

/// Run `wkube push`.
pub async fn run(args: PushArgs, data_dir: &Path) -> ExitCode {
    match push(&args, data_dir).await {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Where and how to reach the API server.
pub(crate) struct Target {
    pub(crate) url: String,
    pub(crate) token: Option<String>,
    pub(crate) ca_pem: Option<Vec<u8>>,
}

fn split_reference(reference: &str) -> Result<(&str, &str), PushError> {
    let (name, tag) = reference
        .split_once(':')
        .unwrap_or((reference, crate::resources::module::DEFAULT_TAG));
    let ok = crate::resources::validation::is_dns1123_subdomain(name)
        && crate::resources::module::is_valid_tag(tag);
    if ok {
        Ok((name, tag))
    } else {
        Err(PushError::Reference(reference.to_string()))
    }
}

pub(crate) async fn push(args: &PushArgs, data_dir: &Path) -> Result<String, PushError> {
    let bytes = tokio::fs::read(&args.file)
        .await
        .map_err(|source| PushError::Read {
            path: args.file.clone(),
            source,
        })?;
    push_bytes(args, bytes, data_dir).await
}

/// Pushes `bytes` as `args.reference` (`args.file` is not read).
pub(crate) async fn push_bytes(
    args: &PushArgs,
    bytes: Vec<u8>,
    data_dir: &Path,
) -> Result<String, PushError> {
    let (name, tag) = split_reference(&args.reference)?;
    let target = target(args.kubeconfig.as_deref(), data_dir)?;
    let url = format!(
        "{}/apis/wkube.dev/v1/modules/{name}/push?tag={tag}",
        target.url.trim_end_matches('/')
    );
    let local_digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    let size = bytes.len();
    let secs = args.timeout;
    let (code, body) = tokio::time::timeout(
        Duration::from_secs(secs),
        post(&url, &target, Bytes::from(bytes)),
    )
    .await
    .map_err(|_| PushError::Timeout {
        url: url.clone(),
        secs,
    })??;
    let answer: Value = serde_json::from_slice(&body).map_err(|_| {
        PushError::Answer(format!(
            "HTTP {code}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ))
    })?;
    if !code.is_success() {
        return Err(PushError::Refused {
            message: answer
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| format!("HTTP {code}")),
        });
    }
    let digest = answer
        .pointer("/spec/tags")
        .and_then(|t| t.get(tag))
        .and_then(Value::as_str)
        .ok_or_else(|| PushError::Answer(format!("the Module has no tag {tag:?}")))?;
    // The server hashed what it received; a difference means the bytes
    // changed on the way.
    if digest != local_digest {
        return Err(PushError::Answer(format!(
            "the server stored {digest}, but the file is {local_digest}"
        )));
    }
    let info = answer.pointer("/status/blobs").and_then(|b| b.get(digest));
    let format = info
        .and_then(|i| i.get("format"))
        .and_then(Value::as_str)
        .unwrap_or("wasm");
    let exports: Vec<String> = info
        .and_then(|i| i.get("exports"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Ok(format!(
        "{name}:{tag} pushed ({digest}, {size} bytes, {})",
        crate::api::modules::wasm::describe(format, &exports)
    ))
}

/// An API client for the server and credentials `push` would use
/// (`--kubeconfig`, else the admin kubeconfig of the data directory), for
/// the other client subcommands.
///
/// # Errors
/// The kubeconfig or endpoint cannot be read, or the client not built.
pub(crate) fn api_client(
    kubeconfig: Option<&Path>,
    data_dir: &Path,
) -> Result<kube::Client, PushError> {
    use crate::client::{ClientConfig, Credential};
    let t = target(kubeconfig, data_dir)?;
    crate::client::build(&ClientConfig {
        server: t.url.clone(),
        ca_pem: t
            .ca_pem
            .map(|pem| String::from_utf8_lossy(&pem).into_owned()),
        credential: t.token.map_or(Credential::None, Credential::Token),
        connect_timeout: std::time::Duration::from_secs(10),
    })
    .map_err(|e| PushError::Http {
        url: t.url,
        message: e.to_string(),
    })
}

pub(crate) fn target(kubeconfig: Option<&Path>, data_dir: &Path) -> Result<Target, PushError> {
    let kc_path = kubeconfig
        .map(Path::to_path_buf)
        .unwrap_or_else(|| data_dir.join(ADMIN_KUBECONFIG));
    let kc = read_kubeconfig(&kc_path)?;
    let url = match (kubeconfig, kc.server.clone()) {
        (Some(_), Some(server)) => server,
        _ => {
            let path = data_dir.join(API_ENDPOINT_FILE);
            match std::fs::read_to_string(&path) {
                Ok(s) => s.trim().to_string(),
                Err(source) => match kc.server {
                    Some(server) => server,
                    None => return Err(PushError::Endpoint { path, source }),
                },
            }
        }
    };
    Ok(Target {
        url,
        token: kc.token,
        ca_pem: kc.ca_pem,
    })
}

/// What `push` needs from a kubeconfig: the current context's server, CA
/// and bearer token.
#[derive(Debug, Default)]
struct Kubeconfig {
    server: Option<String>,
    token: Option<String>,
    ca_pem: Option<Vec<u8>>,
}

fn read_kubeconfig(path: &Path) -> Result<Kubeconfig, PushError> {
    let err = |message: String| PushError::Kubeconfig {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let doc: Value = serde_yaml_ng::from_str(&text).map_err(|e| err(e.to_string()))?;
    let find = |list: &str, name: Option<&str>| -> Option<Value> {
        let items = doc.get(list)?.as_array()?;
        match name {
            Some(n) => items
                .iter()
                .find(|i| i.get("name").and_then(Value::as_str) == Some(n))
                .cloned(),
            None => items.first().cloned(),
        }
    };
    let context = find(
        "contexts",
        doc.get("current-context").and_then(Value::as_str),
    )
    .and_then(|c| c.get("context").cloned())
    .unwrap_or(Value::Null);
    let cluster = find("clusters", context.get("cluster").and_then(Value::as_str))
        .and_then(|c| c.get("cluster").cloned())
        .unwrap_or(Value::Null);
    let user = find("users", context.get("user").and_then(Value::as_str))
        .and_then(|u| u.get("user").cloned())
        .unwrap_or(Value::Null);
    // Relative file paths in a kubeconfig are relative to the file.
    let relative = |p: &str| path.parent().unwrap_or(Path::new(".")).join(p);
    let ca_pem = match (
        cluster
            .get("certificate-authority-data")
            .and_then(Value::as_str),
        cluster.get("certificate-authority").and_then(Value::as_str),
    ) {
        (Some(data), _) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|e| err(format!("certificate-authority-data: {e}")))?,
        ),
        (None, Some(file)) => Some(
            std::fs::read(relative(file))
                .map_err(|e| err(format!("certificate-authority: {e}")))?,
        ),
        (None, None) => None,
    };
    let token = match (
        user.get("token").and_then(Value::as_str),
        user.get("tokenFile").and_then(Value::as_str),
    ) {
        (Some(t), _) => Some(t.to_string()),
        (None, Some(file)) => Some(
            std::fs::read_to_string(relative(file))
                .map_err(|e| err(format!("tokenFile: {e}")))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    Ok(Kubeconfig {
        server: cluster
            .get("server")
            .and_then(Value::as_str)
            .map(str::to_string),
        token,
        ca_pem,
    })
}

/// One HTTP/1.1 POST of the module bytes; returns the status and body.
async fn post(
    url: &str,
    target: &Target,
    body: Bytes,
) -> Result<(hyper::StatusCode, Bytes), PushError> {
    let uri: hyper::Uri = url.parse().map_err(|_| PushError::Url(url.into()))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(PushError::Url(url.into())),
    };
    let host = uri
        .host()
        .ok_or_else(|| PushError::Url(url.into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|source| PushError::Connect {
            url: url.into(),
            source,
        })?;
    let http_err = |e: hyper::Error| PushError::Http {
        url: url.into(),
        message: e.to_string(),
    };
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let mut req = Request::post(path)
        .header(
            header::HOST,
            uri.authority().map(|a| a.as_str()).unwrap_or(""),
        )
        .header(header::CONTENT_TYPE, "application/wasm")
        .header(header::ACCEPT, "application/json");
    if let Some(token) = &target.token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let req = req.body(Full::new(body)).map_err(|e| PushError::Http {
        url: url.into(),
        message: e.to_string(),
    })?;
    let resp = if tls {
        let connector = tokio_rustls::TlsConnector::from(client_tls(target.ca_pem.as_deref())?);
        let name = ServerName::try_from(host.clone()).map_err(|e| PushError::Tls(e.to_string()))?;
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|source| PushError::Connect {
                url: url.into(),
                source,
            })?;
        send(TokioIo::new(stream), req).await.map_err(http_err)?
    } else {
        send(TokioIo::new(tcp), req).await.map_err(http_err)?
    };
    Ok(resp)
}

async fn send<IO>(
    io: IO,
    req: Request<Full<Bytes>>,
) -> Result<(hyper::StatusCode, Bytes), hyper::Error>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    // The connection task ends when the response is read and `sender` is
    // dropped.
    let conn = tokio::spawn(conn);
    let resp = sender.send_request(req).await?;
    let code = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    drop(sender);
    conn.abort();
    Ok((code, body))
}

fn client_tls(ca_pem: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, PushError> {
    let mut roots = rustls::RootCertStore::empty();
    let ca_pem = ca_pem.ok_or_else(|| {
        PushError::Tls("the kubeconfig names no certificate authority for an https server".into())
    })?;
    for ca in CertificateDer::pem_slice_iter(ca_pem) {
        let ca = ca.map_err(|e| PushError::Tls(format!("CA certificate: {e}")))?;
        roots
            .add(ca)
            .map_err(|e| PushError::Tls(format!("CA certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PushError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_without_a_tag_means_latest() {
        assert_eq!(split_reference("hello").unwrap(), ("hello", "latest"));
        assert_eq!(split_reference("hello:v1").unwrap(), ("hello", "v1"));
        assert!(split_reference("Hello:v1").is_err());
        assert!(split_reference("hello:").is_err());
    }

    #[test]
    fn the_kubeconfig_yields_server_token_and_ca() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kc");
        let text = crate::api::kubeconfig::render(
            "wkube",
            "https://127.0.0.1:6443",
            Some("PEM"),
            "admin",
            "tok",
        );
        std::fs::write(&path, text).unwrap();
        let kc = read_kubeconfig(&path).unwrap();
        assert_eq!(kc.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(kc.token.as_deref(), Some("tok"));
        assert_eq!(kc.ca_pem.as_deref(), Some(&b"PEM"[..]));
    }
}
