//! What a pod's containers see, built from its spec: argv, environment,
//! volumes as preopened directories, the service-account mount, the
//! outbound HTTP policy and the limits. Nothing else of the host is given
//! to a guest.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, ServiceAccount};
use kube::api::{Api, PostParams};

use super::recent::Recent;
use crate::resources::quantity;
use crate::runtime::{CpuQuota, OutboundPolicy, PodContext, PodLimits, Preopen};

/// Where Kubernetes mounts the service-account token, CA and namespace.
pub const SERVICE_ACCOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Annotation listing extra hosts (comma-separated, `host` or
/// `host:port`) a pod may send HTTP requests to.
pub const ALLOWED_HOSTS_ANNOTATION: &str = "wkube.dev/allowed-outbound-hosts";
/// Annotation setting an HTTP pod's request deadline in seconds.
pub const REQUEST_TIMEOUT_ANNOTATION: &str = "wkube.dev/request-timeout-seconds";
/// Lifetime asked for the mounted token; it is refreshed at 80% of it.
pub const TOKEN_TTL_SECONDS: i64 = 3607;

/// Why a container's configuration could not be built. Kubernetes reports
/// these as `CreateContainerConfigError` (env) or a mount failure (volumes);
/// the worker retries with back-off.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{kind} {name:?} not found")]
    MissingObject { kind: &'static str, name: String },
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    MissingKey {
        kind: &'static str,
        namespace: String,
        name: String,
        key: String,
    },
    #[error("unsupported fieldRef {0:?}")]
    FieldRef(String),
    #[error(
        "volume {0:?} has a type wkube does not support (configMap, secret, emptyDir, projected service-account tokens)"
    )]
    UnsupportedVolume(String),
    #[error("volumeMount {mount:?} names no volume of the pod")]
    UnknownVolume { mount: String },
    #[error("cannot write volume {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("API request failed: {0}")]
    Api(String),
    /// The API server's flow control refused the request for now (429):
    /// retried after about the second its `Retry-After` names, not with
    /// the container back-off.
    #[error("API server busy: {0}")]
    Throttled(String),
    /// The blocking task writing the pod's files did not finish (the
    /// runtime is shutting down).
    #[error("writing the pod's files: {0}")]
    Blocking(String),
}

impl SpecError {
    /// The container's waiting reason for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            SpecError::MissingKey { .. } | SpecError::FieldRef(_) => "CreateContainerConfigError",
            SpecError::MissingObject { .. } | SpecError::Api(_) => "CreateContainerConfigError",
            _ => "ContainerCreating",
        }
    }

    /// Whether the API server refused for now (see [`SpecError::Throttled`]).
    pub fn throttled(&self) -> bool {
        matches!(self, SpecError::Throttled(_))
    }
}

fn api_err(e: kube::Error) -> SpecError {
    match &e {
        kube::Error::Api(r) if r.code == 429 => SpecError::Throttled(e.to_string()),
        _ => SpecError::Api(e.to_string()),
    }
}

/// The objects a pod refers to, fetched once per (re)start of the pod.
#[derive(Default)]
pub struct Referenced {
    config_maps: HashMap<String, Option<ConfigMap>>,
    secrets: HashMap<String, Option<Secret>>,
}

impl Referenced {
    async fn config_map(
        &mut self,
        client: &kube::Client,
        ns: &str,
        name: &str,
    ) -> Result<Option<&ConfigMap>, SpecError> {
        if !self.config_maps.contains_key(name) {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
            let cm = api.get_opt(name).await.map_err(api_err)?;
            self.config_maps.insert(name.to_string(), cm);
        }
        Ok(self.config_maps[name].as_ref())
    }

    async fn secret(
        &mut self,
        client: &kube::Client,
        ns: &str,
        name: &str,
    ) -> Result<Option<&Secret>, SpecError> {
        if !self.secrets.contains_key(name) {
            let api: Api<Secret> = Api::namespaced(client.clone(), ns);
            let s = api.get_opt(name).await.map_err(api_err)?;
            self.secrets.insert(name.to_string(), s);
        }
        Ok(self.secrets[name].as_ref())
    }
}

/// Values of a ConfigMap (string and binary data) by key.
fn config_map_data(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    out.extend(
        cm.binary_data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone())),
    );
    out
}

fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = s
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    out.extend(
        s.string_data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes())),
    );
    out
}

/// The pod's facts a `fieldRef` may name.
pub struct PodFacts<'a> {
    pub pod: &'a Pod,
    pub pod_ip: Option<String>,
    pub host_ip: String,
}

impl PodFacts<'_> {
    fn field(&self, path: &str) -> Result<String, SpecError> {
        let meta = &self.pod.metadata;
        let spec = self.pod.spec.as_ref();
        let from_map = |map: &Option<BTreeMap<String, String>>, prefix: &str| {
            path.strip_prefix(prefix)
                .and_then(|r| r.strip_suffix("']"))
                .map(|k| {
                    map.as_ref()
                        .and_then(|m| m.get(k))
                        .cloned()
                        .unwrap_or_default()
                })
        };
        Ok(match path {
            "metadata.name" => meta.name.clone().unwrap_or_default(),
            "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
            "metadata.uid" => meta.uid.clone().unwrap_or_default(),
            "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
            "spec.serviceAccountName" => spec
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_default(),
            "status.podIP" => self.pod_ip.clone().unwrap_or_default(),
            "status.podIPs" => self.pod_ip.clone().unwrap_or_default(),
            "status.hostIP" | "status.hostIPs" => self.host_ip.clone(),
            _ => {
                if let Some(v) = from_map(&meta.labels, "metadata.labels['") {
                    v
                } else if let Some(v) = from_map(&meta.annotations, "metadata.annotations['") {
                    v
                } else {
                    return Err(SpecError::FieldRef(path.to_string()));
                }
            }
        })
    }
}

/// `argv` of a container: `command` then `args` when a command is given
/// (its first word is argv[0]), else the container's name then `args`.
pub fn argv(c: &Container) -> Vec<String> {
    let mut out = match &c.command {
        Some(cmd) if !cmd.is_empty() => cmd.clone(),
        _ => vec![c.name.clone()],
    };
    out.extend(c.args.iter().flatten().cloned());
    out
}

/// The container's environment, in Kubernetes' order: `envFrom` sources,
/// then `env` entries (later ones win), with `$(VAR)` references to
/// earlier variables expanded.
///
/// # Errors
/// A missing (non-optional) ConfigMap, Secret or key; an unknown fieldRef.
pub async fn environment(
    client: &kube::Client,
    refs: &mut Referenced,
    facts: &PodFacts<'_>,
    c: &Container,
) -> Result<Vec<(String, String)>, SpecError> {
    let ns = facts.pod.metadata.namespace.clone().unwrap_or_default();
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(slot) = env.iter_mut().find(|(name, _)| *name == k) {
            slot.1 = v;
        } else {
            env.push((k, v));
        }
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let mut sources = Vec::new();
        if let Some(r) = &from.config_map_ref {
            let data = refs
                .config_map(client, &ns, &r.name)
                .await?
                .map(config_map_data);
            sources.push(("configmap", data, &r.name, r.optional));
        }
        if let Some(r) = &from.secret_ref {
            let data = refs.secret(client, &ns, &r.name).await?.map(secret_data);
            sources.push(("secret", data, &r.name, r.optional));
        }
        for (kind, data, name, optional) in sources {
            match data {
                Some(data) => {
                    for (k, v) in data {
                        set(
                            &mut env,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v).into(),
                        );
                    }
                }
                None if optional == Some(true) => {}
                None => {
                    return Err(SpecError::MissingObject {
                        kind,
                        name: name.clone(),
                    });
                }
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            expand(v, &env)
        } else if let Some(from) = &e.value_from {
            let key_ref = if let Some(r) = &from.config_map_key_ref {
                let data = refs
                    .config_map(client, &ns, &r.name)
                    .await?
                    .map(config_map_data);
                Some(("configmap", data, &r.name, &r.key, r.optional))
            } else if let Some(r) = &from.secret_key_ref {
                let data = refs.secret(client, &ns, &r.name).await?.map(secret_data);
                Some(("secret", data, &r.name, &r.key, r.optional))
            } else {
                None
            };
            if let Some((kind, data, name, key, optional)) = key_ref {
                match data.as_ref().map(|d| d.get(key)) {
                    Some(Some(v)) => String::from_utf8_lossy(v).into_owned(),
                    _ if optional == Some(true) => continue,
                    Some(None) => {
                        return Err(SpecError::MissingKey {
                            kind,
                            namespace: ns.clone(),
                            name: name.clone(),
                            key: key.clone(),
                        });
                    }
                    None => {
                        return Err(SpecError::MissingObject {
                            kind,
                            name: name.clone(),
                        });
                    }
                }
            } else if let Some(r) = &from.field_ref {
                facts.field(&r.field_path)?
            } else if let Some(r) = &from.resource_field_ref {
                resource_field(c, &r.resource, r.divisor.as_ref().map(|d| d.0.as_str()))
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set(&mut env, e.name.clone(), value);
    }
    Ok(env)
}

/// A `resourceFieldRef` value: the container's request or limit in units of
/// the divisor (default 1), rounded up as Kubernetes does.
fn resource_field(c: &Container, resource: &str, divisor: Option<&str>) -> String {
    let (which, name) = resource.split_once('.').unwrap_or(("", resource));
    let res = c.resources.as_ref();
    let q = match which {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => None,
    }
    .and_then(|m| m.get(name))
    .and_then(|q| quantity::parse(&q.0));
    let div = divisor
        .and_then(quantity::parse)
        .map_or(1000, |d| d.milli());
    match q {
        Some(v) if div > 0 => ((v.milli() + div - 1).div_euclid(div)).to_string(),
        _ => "0".into(),
    }
}

/// Expands `$(NAME)` with earlier variables; `$$(NAME)` escapes to a
/// literal `$(NAME)`; unknown references are left as written.
fn expand(value: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("$$") {
            out.push('$');
            rest = t;
        } else if let Some(t) = tail.strip_prefix("$(")
            && let Some(end) = t.find(')')
        {
            let name = &t[..end];
            match env.iter().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&tail[..end + 3]),
            }
            rest = &t[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Writes the pod's volumes: configMap, secret and service-account content
/// (replaced at each preparation) under `secrets_dir/volumes/<name>`, in
/// memory (see `kubelet::volatile`); emptyDir under
/// `pod_dir/volumes/<name>`, kept across restarts of the pod. Returns each
/// volume's host directory and whether it is read-only.
///
/// # Errors
/// A missing non-optional ConfigMap/Secret, an unsupported volume type,
/// I/O failures, a failed TokenRequest.
pub async fn prepare_volumes(
    client: &kube::Client,
    refs: &mut Referenced,
    pod: &Pod,
    pod_dir: &Path,
    secrets_dir: &Path,
    ca_pem: Option<&str>,
) -> Result<HashMap<String, (PathBuf, bool)>, SpecError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out = HashMap::new();
    let spec = pod.spec.as_ref();
    for v in spec.and_then(|s| s.volumes.as_ref()).into_iter().flatten() {
        let dir = secrets_dir.join("volumes").join(&v.name);
        let (files, read_only) = if let Some(src) = &v.config_map {
            let data = match refs.config_map(client, &ns, &src.name).await? {
                Some(cm) => config_map_data(cm),
                None if src.optional == Some(true) => BTreeMap::new(),
                None => {
                    return Err(SpecError::MissingObject {
                        kind: "configmap",
                        name: src.name.clone(),
                    });
                }
            };
            (select_items(data, src.items.as_deref()), true)
        } else if let Some(src) = &v.secret {
            let name = src.secret_name.clone().unwrap_or_default();
            let data = match refs.secret(client, &ns, &name).await? {
                Some(s) => secret_data(s),
                None if src.optional == Some(true) => BTreeMap::new(),
                None => {
                    return Err(SpecError::MissingObject {
                        kind: "secret",
                        name,
                    });
                }
            };
            (select_items(data, src.items.as_deref()), true)
        } else if v.empty_dir.is_some() {
            let dir = pod_dir.join("volumes").join(&v.name);
            let d = dir.clone();
            off_workers(move || create_dir(&d)).await?;
            out.insert(v.name.clone(), (dir, false));
            continue;
        } else if v.projected.is_some() && v.name.starts_with("kube-api-access-") {
            let sa_dir = service_account_dir(client, pod, secrets_dir, ca_pem).await?;
            out.insert(v.name.clone(), (sa_dir, true));
            continue;
        } else {
            return Err(SpecError::UnsupportedVolume(v.name.clone()));
        };
        let d = dir.clone();
        off_workers(move || write_files(&d, &files)).await?;
        out.insert(v.name.clone(), (dir, read_only));
    }
    Ok(out)
}

/// `items` of a configMap/secret volume: only those keys, at their paths.
fn select_items(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
) -> Vec<(String, Vec<u8>)> {
    match items {
        Some(items) if !items.is_empty() => items
            .iter()
            .filter_map(|i| data.get(&i.key).map(|v| (i.path.clone(), v.clone())))
            .collect(),
        _ => data.into_iter().collect(),
    }
}

/// A filesystem step of the pod's volumes, off the async workers (see
/// [`super::off_workers`]): creating directories and files blocks, on a
/// busy filesystem for a good fraction of a millisecond each.
async fn off_workers(
    f: impl FnOnce() -> Result<(), SpecError> + Send + 'static,
) -> Result<(), SpecError> {
    super::off_workers(f)
        .await
        .unwrap_or_else(|e| Err(SpecError::Blocking(e.to_string())))
}

fn create_dir(dir: &Path) -> Result<(), SpecError> {
    std::fs::create_dir_all(dir).map_err(|source| SpecError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

/// Replaces `dir`'s content with `files` (relative paths; `..` and
/// absolute paths are refused so a key cannot escape the volume).
fn write_files(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<(), SpecError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SpecError::Io { path, source }
    };
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io(dir))?;
    }
    create_dir(dir)?;
    for (rel, bytes) in files {
        let rel_path = Path::new(rel);
        if rel_path.is_absolute()
            || rel_path
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            continue;
        }
        let path = dir.join(rel_path);
        if let Some(parent) = path.parent() {
            create_dir(parent)?;
        }
        std::fs::write(&path, bytes).map_err(io(&path))?;
    }
    Ok(())
}

/// How long a ServiceAccount's `automountServiceAccountToken` is taken as
/// read. Pods created together (a Deployment scaled out, a scale from
/// zero) mostly share one ServiceAccount, and asking for it once per pod
/// was one of a pod start's eight API requests. Kubernetes decides the
/// mount when it admits the pod, from a watch cache that lags by about as
/// much.
const AUTOMOUNT_TTL: Duration = Duration::from_secs(1);

/// Most ServiceAccounts remembered (see [`Recent`]).
const AUTOMOUNT_ENTRIES: usize = 1024;

/// The ServiceAccounts' automount settings recently read by this kubelet,
/// by `namespace/name`.
pub fn automount_cache() -> Recent<bool> {
    Recent::new(AUTOMOUNT_TTL, AUTOMOUNT_ENTRIES)
}

/// Whether the pod gets the service-account mount: the pod's
/// `automountServiceAccountToken` wins over the ServiceAccount's; default
/// yes, as in Kubernetes.
pub async fn automount(client: &kube::Client, cache: &Recent<bool>, pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    if let Some(v) = spec.and_then(|s| s.automount_service_account_token) {
        return v;
    }
    // A pod that already has the projected volume gets it through that.
    if spec
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|vs| vs.iter().any(|v| v.name.starts_with("kube-api-access-")))
    {
        return false;
    }
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let sa_name = spec
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let key = format!("{ns}/{sa_name}");
    if let Some(v) = cache.get(&key) {
        return v;
    }
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    match api.get_opt(&sa_name).await {
        Ok(sa) => {
            let v = sa.is_none_or(|sa| sa.automount_service_account_token != Some(false));
            cache.put(key, v);
            v
        }
        // Not remembered: the next pod asks again.
        Err(_) => true,
    }
}

/// Writes `token`, `ca.crt` and `namespace` to `secrets_dir/serviceaccount`
/// and returns the directory. The token comes from the TokenRequest API,
/// bound to the pod, so it stops working when the pod is deleted.
///
/// `ca.crt` and `namespace` are the same for many pods: each is written
/// once under `_shared` beside the pods' directories and hard-linked into
/// the pod's (read-only to the guest), so a pod costs one page of memory
/// for its token rather than three.
///
/// # Errors
/// The TokenRequest failed, or the files could not be written.
pub async fn service_account_dir(
    client: &kube::Client,
    pod: &Pod,
    secrets_dir: &Path,
    ca_pem: Option<&str>,
) -> Result<PathBuf, SpecError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let token = request_token(client, pod).await?;
    let dir = secrets_dir.join("serviceaccount");
    let shared = secrets_dir.parent().unwrap_or(secrets_dir).join(SHARED_DIR);
    let files = vec![("token".to_string(), token.into_bytes())];
    let linked = vec![
        (
            "ca.crt",
            Some(shared.join("ca.crt")),
            ca_pem.unwrap_or_default().as_bytes().to_vec(),
        ),
        (
            "namespace",
            // A namespace is a DNS label; anything else is written as is
            // rather than become part of a path.
            ns.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
                .then(|| shared.join(format!("namespace-{ns}"))),
            ns.into_bytes(),
        ),
    ];
    let d = dir.clone();
    off_workers(move || {
        write_files(&d, &files)?;
        for (name, from, bytes) in linked {
            let target = d.join(name);
            match from {
                Some(from) => link_shared(&from, &target, &bytes)?,
                None => std::fs::write(&target, &bytes).map_err(|source| SpecError::Io {
                    path: target.clone(),
                    source,
                })?,
            }
        }
        Ok(())
    })
    .await?;
    Ok(dir)
}

/// Where the files many pods share are kept, beside the pods' directories
/// (not a pod UID, which has no underscore).
const SHARED_DIR: &str = "_shared";

/// Hard-links `shared` (written first if missing) to `target`; writes
/// `target` itself if linking fails.
fn link_shared(shared: &Path, target: &Path, bytes: &[u8]) -> Result<(), SpecError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SpecError::Io { path, source }
    };
    if !shared.exists()
        && let Some(parent) = shared.parent()
    {
        create_dir(parent)?;
        // Written aside and renamed: a pod linking at the same moment
        // never links half a file.
        let tmp = shared.with_extension(format!("tmp-{:x}", rand::random::<u64>()));
        std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
        std::fs::rename(&tmp, shared).map_err(io(shared))?;
    }
    if std::fs::hard_link(shared, target).is_ok() {
        return Ok(());
    }
    std::fs::write(target, bytes).map_err(io(target))
}

/// Refreshes the mounted token in place (written to a temporary file and
/// renamed, so a guest never reads half a token).
///
/// # Errors
/// The TokenRequest failed, or the file could not be written.
pub async fn refresh_token(
    client: &kube::Client,
    pod: &Pod,
    secrets_dir: &Path,
) -> Result<(), SpecError> {
    let token = request_token(client, pod).await?;
    let path = secrets_dir.join("serviceaccount").join("token");
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, token).map_err(|source| SpecError::Io {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, &path).map_err(|source| SpecError::Io { path, source })
}

async fn request_token(client: &kube::Client, pod: &Pod) -> Result<String, SpecError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let sa_name = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let req = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(TOKEN_TTL_SECONDS),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..TokenRequest::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let resp: TokenRequest = api
        .create_token_request(&sa_name, &PostParams::default(), &req)
        .await
        .map_err(api_err)?;
    resp.status
        .map(|s| s.token)
        .ok_or_else(|| SpecError::Api("TokenRequest answered without a token".into()))
}

/// The preopens of one container from its volumeMounts (plus the
/// service-account mount when it is automounted and not mounted already).
///
/// # Errors
/// A mount naming a volume the pod does not have.
pub fn preopens(
    c: &Container,
    volumes: &HashMap<String, (PathBuf, bool)>,
    sa_dir: Option<&Path>,
) -> Result<Vec<Preopen>, SpecError> {
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let (dir, ro) = volumes
            .get(&m.name)
            .ok_or_else(|| SpecError::UnknownVolume {
                mount: m.name.clone(),
            })?;
        let host_path = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) if !sub.split('/').any(|p| p == "..") => dir.join(sub),
            _ => dir.clone(),
        };
        out.push(Preopen {
            host_path,
            guest_path: m.mount_path.clone(),
            read_only: *ro || m.read_only == Some(true),
        });
    }
    if let Some(dir) = sa_dir
        && !out.iter().any(|p| p.guest_path == SERVICE_ACCOUNT_PATH)
    {
        out.push(Preopen {
            host_path: dir.to_path_buf(),
            guest_path: SERVICE_ACCOUNT_PATH.into(),
            read_only: true,
        });
    }
    Ok(out)
}

/// The limits of one container: `limits.memory` (bytes), `limits.cpu`
/// (shared quota), the request deadline from the pod annotation and the
/// pod's `activeDeadlineSeconds`.
pub fn limits(
    pod: &Pod,
    c: &Container,
    active_deadline: Option<Duration>,
    accounting: bool,
) -> PodLimits {
    let lim = c.resources.as_ref().and_then(|r| r.limits.as_ref());
    let memory_bytes = lim
        .and_then(|l| l.get("memory"))
        .and_then(|q| quantity::parse(&q.0))
        .map(|b| b.ceil_units().clamp(0, usize::MAX as i128) as usize);
    let cpu = lim
        .and_then(|l| l.get("cpu"))
        .and_then(|q| quantity::parse(&q.0))
        .map(|q| Arc::new(CpuQuota::new(q.milli().clamp(1, u32::MAX as i128) as u32)));
    let request_timeout = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REQUEST_TIMEOUT_ANNOTATION))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map_or(Duration::from_secs(30), Duration::from_secs_f64);
    // Kubernetes defaults a request to the limit when only the limit is set.
    let requested_cpu = c
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("cpu"))
        .or_else(|| lim.and_then(|l| l.get("cpu")))
        .and_then(|q| quantity::parse(&q.0))
        .map(|q| q.milli().clamp(0, i128::from(u64::MAX >> 12)) as u64);
    PodLimits {
        memory_bytes,
        request_timeout,
        active_deadline,
        cpu,
        share: Some(Arc::new({
            let share = crate::runtime::fair::CpuShare::new(
                crate::runtime::fair::CpuGate::global(),
                requested_cpu,
            );
            if accounting {
                share
            } else {
                share.unaccounted()
            }
        })),
        meter: accounting.then(|| Arc::new(crate::runtime::MemoryMeter::default())),
    }
}

/// Outgoing HTTP outside the cluster: the hosts of the pod's allow-list
/// annotation; everything else is refused. (Cluster destinations — service
/// names and addresses, pod addresses — are taken by the node proxy's
/// router before this policy is asked.)
pub fn outbound_policy(pod: &Pod) -> OutboundPolicy {
    let allowed: Vec<String> = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ALLOWED_HOSTS_ANNOTATION))
        .map(|v| {
            v.split(',')
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect()
        })
        .unwrap_or_default();
    Arc::new(move |uri: &hyper::Uri| {
        let Some(host) = uri.host() else {
            return false;
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        allowed.iter().any(|a| match a.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => h == host && p.parse() == Ok(port),
            _ => *a == host || a == "*",
        })
    })
}

/// Everything one container sees.
pub fn context(
    argv: Vec<String>,
    env: Vec<(String, String)>,
    preopens: Vec<Preopen>,
    pod: &Pod,
    logs: Option<crate::runtime::LogSink>,
) -> PodContext {
    PodContext {
        args: argv,
        env,
        preopens,
        logs,
        outbound: Some(outbound_policy(pod)),
        router: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_expand_to_earlier_variables_only() {
        let env = vec![("A".to_string(), "1".to_string())];
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$(B)", &env), "$(B)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("cost $5", &env), "cost $5");
    }

    #[test]
    fn argv_starts_with_the_command_or_the_container_name() {
        let mut c = Container {
            name: "job".into(),
            args: Some(vec!["a".into(), "b".into()]),
            ..Container::default()
        };
        assert_eq!(argv(&c), ["job", "a", "b"]);
        c.command = Some(vec!["run".into()]);
        assert_eq!(argv(&c), ["run", "a", "b"]);
    }

    #[test]
    fn volume_keys_cannot_escape_their_directory() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("v");
        write_files(
            &vol,
            &[
                ("../evil".into(), b"x".to_vec()),
                ("/abs".into(), b"x".to_vec()),
                ("ok/nested".into(), b"y".to_vec()),
            ],
        )
        .unwrap();
        assert!(!dir.path().join("evil").exists());
        assert_eq!(std::fs::read(vol.join("ok/nested")).unwrap(), b"y");
    }

    #[test]
    fn outbound_requests_leave_the_cluster_only_for_allowed_hosts() {
        let mut pod = Pod::default();
        pod.metadata.annotations = Some(BTreeMap::from([(
            ALLOWED_HOSTS_ANNOTATION.to_string(),
            "api.example.com, 127.0.0.1:8080".to_string(),
        )]));
        let p = outbound_policy(&pod);
        let ok = |u: &str| p(&u.parse().unwrap());
        // Service names are the proxy's: the policy never lets them out.
        assert!(!ok("http://hello.default.svc.cluster.local/"));
        assert!(ok("https://api.example.com/x"));
        assert!(ok("http://127.0.0.1:8080/"));
        assert!(!ok("http://127.0.0.1:8081/"));
        assert!(!ok("http://example.org/"));
    }
}
