//! Module blobs for the pods of this node: a pod's `image` resolved to a
//! digest through the registry's Module objects, the blob fetched from the
//! API server, verified against its sha256 and kept on disk, so a restart
//! or a second pod of the same module fetches nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use kube::api::{Api, DynamicObject};
use kube::discovery::ApiResource;

use super::gates::Flights;
use super::recent::Recent;
use crate::resources::module::{ImageRef, is_digest, parse_image};
use crate::runtime::cache::digest_of;

/// Why a module could not be had. Each maps to a container's waiting
/// reason.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModuleError {
    /// The image is not a module reference, or the Module, tag or blob does
    /// not exist (`ErrModulePull`).
    #[error("{0}")]
    NotFound(String),
    /// The blob's bytes do not match its digest (`ErrModulePull`).
    #[error("module {digest} failed verification: its bytes hash to {actual}")]
    Corrupt { digest: String, actual: String },
    /// The API server could not be reached or refused (`ErrModulePull`).
    #[error("cannot fetch module {what}: {message}")]
    Api { what: String, message: String },
    /// The API server's flow control refused for now (429); retried soon.
    #[error("cannot fetch module {what} yet: the API server is busy")]
    Throttled { what: String },
    /// The disk cache failed.
    #[error("module cache {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
}

impl ModuleError {
    /// Whether the API server refused for now (see
    /// [`ModuleError::Throttled`]).
    pub fn throttled(&self) -> bool {
        matches!(self, ModuleError::Throttled { .. })
    }
}

/// How long a tag's resolution is reused. Pods created together (a
/// Deployment scaled out, a scale from zero) name the same tag, and asking
/// the registry once per pod was one of a pod start's eight API requests.
/// A tag pushed again is seen by pods that start on this node from this
/// long after the push.
const RESOLVED_TTL: Duration = Duration::from_secs(1);

/// Most tag resolutions remembered (see [`RESOLVED_TTL`]).
const RESOLVED_ENTRIES: usize = 1024;

/// The on-disk blob cache and the client that fills it.
pub struct ModuleStore {
    dir: PathBuf,
    client: kube::Client,
    /// Recent tag resolutions: `name:tag` → digest.
    resolved: Recent<String>,
    /// One registry request per `name:tag` at a time, its answer shared.
    resolving: Flights<Result<String, ModuleError>>,
}

impl ModuleStore {
    pub fn new(dir: PathBuf, client: kube::Client) -> ModuleStore {
        ModuleStore {
            dir,
            client,
            resolved: Recent::new(RESOLVED_TTL, RESOLVED_ENTRIES),
            resolving: Flights::default(),
        }
    }

    /// The digest `image` names: as given for `sha256:<hex>` and
    /// `NAME@sha256:<hex>`, through the Module's tags for `NAME[:TAG]`.
    ///
    /// # Errors
    /// [`ModuleError::NotFound`] for a malformed reference or a missing
    /// Module or tag; [`ModuleError::Api`] when the server cannot answer.
    pub async fn resolve(&self, image: &str) -> Result<String, ModuleError> {
        let (name, tag) = match parse_image(image).map_err(ModuleError::NotFound)? {
            ImageRef::Digest(d) | ImageRef::Pinned { digest: d, .. } => return Ok(d),
            ImageRef::Tagged { name, tag } => (name, tag),
        };
        let key = format!("{name}:{tag}");
        if let Some(digest) = self.resolved.get(&key) {
            return Ok(digest);
        }
        // Pods started together ask once and share the answer.
        self.resolving
            .run(&key, || async {
                if let Some(digest) = self.resolved.get(&key) {
                    return Ok(digest);
                }
                let digest = self.resolve_tag(image, &name, &tag).await?;
                self.resolved.put(key.clone(), digest.clone());
                Ok(digest)
            })
            .await
    }

    /// `tag` of Module `name`, asked of the registry.
    async fn resolve_tag(&self, image: &str, name: &str, tag: &str) -> Result<String, ModuleError> {
        let resource = ApiResource {
            group: "wkube.dev".into(),
            version: "v1".into(),
            api_version: "wkube.dev/v1".into(),
            kind: "Module".into(),
            plural: "modules".into(),
        };
        let modules: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
        let module = modules
            .get_opt(name)
            .await
            .map_err(|e| match e {
                kube::Error::Api(r) if r.code == 429 => ModuleError::Throttled {
                    what: image.to_string(),
                },
                e => ModuleError::Api {
                    what: image.to_string(),
                    message: e.to_string(),
                },
            })?
            .ok_or_else(|| {
                ModuleError::NotFound(format!(
                    "module {name:?} not found in the registry (push it with `wkube push FILE.wasm {name}:{tag}`)"
                ))
            })?;
        module
            .data
            .pointer(&format!(
                "/spec/tags/{}",
                tag.replace('~', "~0").replace('/', "~1")
            ))
            .and_then(|v| v.as_str())
            .filter(|d| is_digest(d))
            .map(str::to_string)
            .ok_or_else(|| ModuleError::NotFound(format!("module {name:?} has no tag {tag:?}")))
    }

    /// The blob of `digest`, from disk or else from the API server
    /// (verified, then written to disk).
    ///
    /// # Errors
    /// [`ModuleError::NotFound`] when the server has no such blob,
    /// [`ModuleError::Corrupt`], [`ModuleError::Api`], [`ModuleError::Io`].
    pub async fn fetch(&self, digest: &str) -> Result<Bytes, ModuleError> {
        let path = self.path_of(digest)?;
        if let Ok(bytes) = tokio::fs::read(&path).await {
            // A file we wrote was verified then; a torn or tampered one is
            // fetched again rather than run.
            if digest_of(&bytes) == digest {
                return Ok(Bytes::from(bytes));
            }
            tracing::warn!(%digest, path = %path.display(), "cached module does not match its digest; fetching again");
        }
        let bytes = self.download(digest).await?;
        let actual = digest_of(&bytes);
        if actual != digest {
            return Err(ModuleError::Corrupt {
                digest: digest.to_string(),
                actual,
            });
        }
        write_atomically(&path, &bytes)
            .await
            .map_err(|source| ModuleError::Io {
                path: path.clone(),
                source: source.into(),
            })?;
        Ok(bytes)
    }

    fn path_of(&self, digest: &str) -> Result<PathBuf, ModuleError> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|_| is_digest(digest))
            .ok_or_else(|| ModuleError::NotFound(format!("{digest:?} is not a sha256 digest")))?;
        Ok(self.dir.join(format!("{hex}.wasm")))
    }

    async fn download(&self, digest: &str) -> Result<Bytes, ModuleError> {
        let api_err = |message: String| ModuleError::Api {
            what: digest.to_string(),
            message,
        };
        let req = hyper::Request::get(format!("/apis/wkube.dev/v1/blobs/{digest}"))
            .body(Vec::new())
            .map_err(|e| api_err(e.to_string()))?;
        let resp = self
            .client
            .send(req.map(kube::client::Body::from))
            .await
            .map_err(|e| api_err(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| api_err(e.to_string()))?
            .to_bytes();
        match status.as_u16() {
            200 => Ok(body),
            404 => Err(ModuleError::NotFound(format!(
                "module blob {digest} not found in the registry"
            ))),
            429 => Err(ModuleError::Throttled {
                what: digest.to_string(),
            }),
            code => Err(api_err(format!(
                "HTTP {code}: {}",
                status_message(&body)
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned())
            ))),
        }
    }
}

/// The `message` of a Kubernetes Status body.
fn status_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("message")?.as_str().map(str::to_string)
}

async fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!(
        "tmp{}-{:x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, path).await
}
