//! TLS for Ingresses: the certificates their `spec.tls` names, kept in
//! `kubernetes.io/tls` Secrets, chosen per connection by the name the
//! client asks for (SNI).
//!
//! The node reads those Secrets with its own credential; the node
//! authorizer lets it get a Secret only when an Ingress of a class the
//! proxies serve names it in `spec.tls` (every node serves every such
//! Ingress). Certificates are fetched again when the set of names changes
//! and every [`REFRESH`], so a renewed certificate is picked up.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::Proxy;
use super::ingress::TlsRef;

/// How often certificates are fetched again when nothing else changed.
const REFRESH: Duration = Duration::from_secs(30);

/// The certificates by host: exact names, and `*.example.com` patterns.
#[derive(Debug, Default)]
pub struct IngressCerts {
    by_host: RwLock<Arc<HashMap<String, Arc<CertifiedKey>>>>,
}

impl IngressCerts {
    /// The certificate for `name`: its own, else its one-label wildcard's.
    pub fn lookup(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = name.to_ascii_lowercase();
        let map = self.by_host.read().clone();
        if let Some(k) = map.get(&name) {
            return Some(k.clone());
        }
        // Gateway API wildcards cover any number of labels, Ingress ones
        // exactly one: the closest parent's wildcard is the one asked for
        // by both, and further parents serve only Gateway listeners'.
        let mut rest = name.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(k) = map.get(&format!("*.{parent}")) {
                return Some(k.clone());
            }
            rest = parent;
        }
        // A Gateway HTTPS listener without a host name serves any name.
        map.get("*").cloned()
    }

    fn install(&self, map: HashMap<String, Arc<CertifiedKey>>) {
        *self.by_host.write() = Arc::new(map);
    }

    /// How many host names have a certificate.
    pub fn len(&self) -> usize {
        self.by_host.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ResolvesServerCert for IngressCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // No SNI, or a name no Ingress serves: the handshake fails, rather
        // than show a certificate for some other host.
        self.lookup(hello.server_name()?)
    }
}

/// The server TLS of the ingress port: certificates from `certs`, HTTP/2
/// or HTTP/1.1.
///
/// # Errors
/// When the TLS library refuses the protocol versions (never in practice).
pub fn server_config(certs: Arc<IngressCerts>) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Why a Secret's certificate cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("secret has no {0}")]
    Missing(&'static str),
    #[error("tls.crt: {0}")]
    Certificate(String),
    #[error("tls.key: {0}")]
    Key(String),
}

/// The certified key in a `kubernetes.io/tls` Secret's data.
///
/// # Errors
/// A missing or unparsable certificate or key.
pub fn certified_key(secret: &Secret) -> Result<CertifiedKey, CertError> {
    let data = secret.data.as_ref();
    let field = |name: &'static str| {
        data.and_then(|d| d.get(name))
            .map(|b| b.0.as_slice())
            .filter(|b| !b.is_empty())
            .ok_or(CertError::Missing(name))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(field("tls.crt")?)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Certificate(e.to_string()))?;
    if certs.is_empty() {
        return Err(CertError::Certificate("no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(field("tls.key")?)
        .map_err(|e| CertError::Key(e.to_string()))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| CertError::Key(e.to_string()))?;
    Ok(CertifiedKey::new(certs, signing))
}

/// Keeps the proxy's ingress certificates current until `shutdown`.
pub async fn run(proxy: Arc<Proxy>, client: kube::Client, shutdown: impl Future<Output = ()>) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut generation = proxy.generation.subscribe();
    let mut loaded: Vec<TlsRef> = Vec::new();
    let mut last_fetch = tokio::time::Instant::now();
    loop {
        let wanted = proxy.table().edge_certificates();
        if wanted != loaded || last_fetch.elapsed() >= REFRESH {
            proxy.ingress_certs.install(fetch(&client, &wanted).await);
            loaded = wanted;
            last_fetch = tokio::time::Instant::now();
        }
        tokio::select! {
            r = generation.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(REFRESH) => {}
            _ = &mut shutdown => return,
        }
    }
}

/// Fetches the Secrets `refs` name; the first (oldest) Ingress's
/// certificate for a host wins.
async fn fetch(client: &kube::Client, refs: &[TlsRef]) -> HashMap<String, Arc<CertifiedKey>> {
    let mut keys: HashMap<(String, String), Option<Arc<CertifiedKey>>> = HashMap::new();
    let mut by_host = HashMap::new();
    for r in refs {
        let id = (r.namespace.clone(), r.secret.clone());
        if !keys.contains_key(&id) {
            let api: kube::Api<Secret> = kube::Api::namespaced(client.clone(), &r.namespace);
            let key = match api.get(&r.secret).await {
                Ok(secret) => match certified_key(&secret) {
                    Ok(k) => Some(Arc::new(k)),
                    Err(e) => {
                        tracing::warn!(namespace = %r.namespace, secret = %r.secret, error = %e, "ingress certificate unusable");
                        None
                    }
                },
                Err(e) => {
                    tracing::warn!(namespace = %r.namespace, secret = %r.secret, error = %e, "ingress certificate not readable");
                    None
                }
            };
            keys.insert(id.clone(), key);
        }
        if let Some(Some(key)) = keys.get(&id) {
            for host in &r.hosts {
                by_host.entry(host.clone()).or_insert_with(|| key.clone());
            }
        }
    }
    by_host
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn tls_secret(host: &str) -> Secret {
        let cert = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
        let data = BTreeMap::from([
            (
                "tls.crt".to_string(),
                ByteString(cert.cert.pem().into_bytes()),
            ),
            (
                "tls.key".to_string(),
                ByteString(cert.signing_key.serialize_pem().into_bytes()),
            ),
        ]);
        Secret {
            data: Some(data),
            type_: Some("kubernetes.io/tls".into()),
            ..Secret::default()
        }
    }

    #[test]
    fn a_tls_secret_gives_a_key_and_hosts_find_theirs() {
        let key = Arc::new(certified_key(&tls_secret("shop.test")).unwrap());
        let certs = IngressCerts::default();
        certs.install(HashMap::from([
            ("shop.test".to_string(), key.clone()),
            ("*.apps.test".to_string(), key),
        ]));
        assert!(certs.lookup("SHOP.test").is_some());
        assert!(certs.lookup("a.apps.test").is_some());
        // The closest wildcard (Gateway API wildcards cover more labels).
        assert!(certs.lookup("a.b.apps.test").is_some());
        assert!(certs.lookup("apps.test").is_none());
        assert!(certs.lookup("other.test").is_none());
        // A catch-all only from a listener without a host name.
        let any = Arc::new(certified_key(&tls_secret("any.test")).unwrap());
        certs.install(HashMap::from([("*".to_string(), any)]));
        assert!(certs.lookup("other.test").is_some());
    }

    #[test]
    fn a_secret_without_a_usable_pair_is_refused_with_the_reason() {
        let mut s = tls_secret("x.test");
        s.data.as_mut().unwrap().remove("tls.key");
        assert!(matches!(
            certified_key(&s),
            Err(CertError::Missing("tls.key"))
        ));
        let mut s = tls_secret("x.test");
        s.data
            .as_mut()
            .unwrap()
            .insert("tls.crt".into(), ByteString(b"garbage".to_vec()));
        assert!(certified_key(&s).is_err());
    }
}
