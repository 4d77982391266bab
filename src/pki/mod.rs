//! Cluster PKI: automatic TLS in the manner of k3s.
//!
//! On first start the server creates, under `DATA/pki/`, a cluster CA
//! (`ca.crt`/`ca.key`, ECDSA P-256), a serving certificate for the etcd
//! endpoint (`etcd-server.crt`/`.key`) and an admin client certificate for
//! `etcdctl` (`etcd-client.crt`/`.key`).
//!
//! The etcd endpoint gives whoever connects the raw store, Secrets included,
//! so its client certificates come from a CA of their own
//! (`etcd-client-ca.crt`/`.key`) that signs nothing else. The cluster CA
//! signs node certificates for anyone holding a join token; were it trusted
//! on the etcd port, every node would hold the whole store. Later starts reuse them; a leaf is
//! reissued when it is missing, close to expiry, or (for the server cert)
//! lacks a requested SAN. Each leaf has a small `.meta` sidecar recording
//! its SANs and expiry, so no certificate parsing is needed to decide.
//!
//! Key files are written with mode 0600, atomically (temp file + rename).

#[cfg(feature = "server")]
pub mod bootstrap;

use std::collections::BTreeSet;
use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const ETCD_CLIENT_CA_CERT: &str = "etcd-client-ca.crt";
const ETCD_CLIENT_CA_KEY: &str = "etcd-client-ca.key";
const ETCD_CLIENT_CA_COMMON_NAME: &str = "wkube-etcd-client-ca";
const ETCD_SERVER: &str = "etcd-server";
const ETCD_CLIENT: &str = "etcd-client";
/// The API server's client certificate towards node agents.
pub const KUBELET_CLIENT: &str = "apiserver-kubelet-client";

const CA_COMMON_NAME: &str = "wkube-ca";
const ADMIN_COMMON_NAME: &str = "wkube-admin";
const ADMIN_GROUP: &str = "system:masters";

/// A file only its owner may read (it holds a credential), written
/// atomically.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    std::io::Write::write_all(&mut f, contents)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
const DAY: Duration = Duration::from_secs(24 * 60 * 60);
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// A leaf this close to expiry is reissued at startup.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// Backdating tolerates clocks that are a little behind ours.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// Names every etcd serving certificate carries.
const DEFAULT_SERVER_SANS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Why certificates could not be loaded or created. Each carries the path
/// or name involved.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a usable PEM certificate or key: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    #[error("generating {what}: {source}")]
    Generate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("{name:?} is neither an IP address nor a valid DNS name: {source}")]
    InvalidName {
        name: String,
        #[source]
        source: rcgen::Error,
    },
    /// Only half of the CA exists. Creating a new CA would silently
    /// invalidate every certificate issued so far, so we refuse.
    #[error("{} exists but {} does not; restore it or remove both to create a new CA", present.display(), missing.display())]
    IncompleteCa { present: PathBuf, missing: PathBuf },
}

/// What to put in a leaf certificate.
#[derive(Clone, Debug)]
pub struct CertSpec {
    pub common_name: String,
    /// Subject O= entries; Kubernetes reads them as groups.
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    /// Usable as a TLS server certificate.
    pub server: bool,
    /// Usable as a TLS client certificate.
    pub client: bool,
    pub validity: Duration,
}

/// What [`ClusterPki::issue_node`] issues.
#[derive(Clone, Debug)]
pub struct NodeCerts {
    pub client: IssuedCert,
    pub serving: IssuedCert,
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// TLS material for a server: its certificate and key, and the CA that
/// client certificates must chain to (`None`: no client certificates asked).
#[derive(Clone)]
pub struct ServerTls {
    pub cert_pem: String,
    pub key_pem: String,
    pub client_ca_pem: Option<String>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .field("client_ca_pem", &self.client_ca_pem)
            .finish()
    }
}

/// TLS material for a client: its certificate and key, and the CA that
/// servers' certificates must chain to.
#[derive(Clone)]
pub struct ClientTls {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .field("ca_pem", &self.ca_pem)
            .finish()
    }
}

/// The cluster CA, loaded from (or created in) `DATA/pki`.
pub struct ClusterPki {
    /// `DATA/pki`.
    pub dir: PathBuf,
    ca: Ca,
    /// Signs the etcd endpoint's client certificates and nothing else;
    /// loaded by [`ClusterPki::load_or_create`] only (the server's own start).
    etcd_client_ca: Option<Ca>,
}

/// One certificate authority: its certificate and the key that signs.
struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// The CA's common name, recorded in each leaf's `.meta` so a leaf
    /// signed by another CA is reissued.
    name: &'static str,
}

/// Which CA signs a leaf.
#[derive(Clone, Copy)]
enum Signer {
    Cluster,
    EtcdClient,
}

impl fmt::Debug for ClusterPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterPki")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl ClusterPki {
    /// Load `DATA/pki`, creating what is missing: `ca.crt`/`ca.key` (ECDSA
    /// P-256, CN "wkube-ca", 10 years), `etcd-server.crt`/`.key` (SANs
    /// localhost, 127.0.0.1, ::1 plus `extra_sans`, each an IP or DNS name;
    /// 1 year) and `etcd-client.crt`/`.key` (CN "wkube-admin", O
    /// "system:masters"; 1 year).
    ///
    /// # Errors
    /// I/O failures, unparsable existing files, invalid SANs, or a CA of
    /// which only the certificate or only the key exists.
    pub fn load_or_create(data_dir: &Path, extra_sans: &[String]) -> Result<ClusterPki, PkiError> {
        let dir = data_dir.join("pki");
        create_private_dir(&dir)?;
        let mut pki = Self::load_or_create_ca(dir)?;
        pki.etcd_client_ca = Some(load_or_create_ca(
            &pki.dir,
            ETCD_CLIENT_CA_CERT,
            ETCD_CLIENT_CA_KEY,
            ETCD_CLIENT_CA_COMMON_NAME,
        )?);

        let mut sans: BTreeSet<String> =
            DEFAULT_SERVER_SANS.iter().map(|s| s.to_string()).collect();
        sans.extend(
            extra_sans
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
        );
        let (dns_names, ips) = split_sans(&sans)?;
        pki.ensure_leaf(
            ETCD_SERVER,
            Signer::Cluster,
            &CertSpec {
                common_name: "wkube-etcd".into(),
                organizations: Vec::new(),
                dns_names,
                ips,
                server: true,
                client: false,
                validity: LEAF_VALIDITY,
            },
        )?;
        pki.ensure_leaf(
            ETCD_CLIENT,
            Signer::EtcdClient,
            &CertSpec {
                common_name: ADMIN_COMMON_NAME.into(),
                organizations: vec![ADMIN_GROUP.into()],
                dns_names: Vec::new(),
                ips: Vec::new(),
                server: false,
                client: true,
                validity: LEAF_VALIDITY,
            },
        )?;
        Ok(pki)
    }

    /// Load the CA of `DATA/pki` (creating it if missing) without touching
    /// any leaf: for components that only issue certificates, and for
    /// tests that act as nodes of a running server.
    ///
    /// # Errors
    /// As [`ClusterPki::load_or_create`].
    pub fn open(data_dir: &Path) -> Result<ClusterPki, PkiError> {
        let dir = data_dir.join("pki");
        create_private_dir(&dir)?;
        Self::load_or_create_ca(dir)
    }

    fn load_or_create_ca(dir: PathBuf) -> Result<ClusterPki, PkiError> {
        let ca = load_or_create_ca(&dir, CA_CERT, CA_KEY, CA_COMMON_NAME)?;
        Ok(ClusterPki {
            dir,
            ca,
            etcd_client_ca: None,
        })
    }

    /// The CA certificate, PEM.
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    /// The CA the etcd endpoint trusts for client certificates, PEM.
    ///
    /// # Errors
    /// [`PkiError::Io`] when it was never created (only the server's own
    /// [`load_or_create`](Self::load_or_create) creates it).
    pub fn etcd_client_ca_pem(&self) -> Result<String, PkiError> {
        match &self.etcd_client_ca {
            Some(ca) => Ok(ca.cert_pem.clone()),
            None => read(&self.path(ETCD_CLIENT_CA_CERT)),
        }
    }

    /// A node's pair of certificates, both in `system:nodes`: its client
    /// certificate as `system:node:NAME`, and the serving certificate of
    /// its agent endpoint for `NAME` and `ips`.
    ///
    /// # Errors
    /// As [`issue`](Self::issue).
    pub fn issue_node(
        &self,
        node_name: &str,
        ips: Vec<IpAddr>,
        validity: Duration,
    ) -> Result<NodeCerts, PkiError> {
        let nodes = vec!["system:nodes".to_string()];
        let client = self.issue(&CertSpec {
            common_name: format!("system:node:{node_name}"),
            organizations: nodes.clone(),
            dns_names: Vec::new(),
            ips: Vec::new(),
            server: false,
            client: true,
            validity,
        })?;
        let serving = self.issue(&CertSpec {
            common_name: node_name.to_string(),
            organizations: nodes,
            dns_names: vec![node_name.to_string()],
            ips,
            server: true,
            client: false,
            validity,
        })?;
        Ok(NodeCerts { client, serving })
    }

    /// Issue a leaf certificate signed by the CA (for the API server,
    /// kubelets, client certificates). Nothing is written to disk.
    ///
    /// # Errors
    /// [`PkiError::InvalidName`] for a DNS name rcgen rejects,
    /// [`PkiError::Generate`] when key generation or signing fails.
    pub fn issue(&self, spec: &CertSpec) -> Result<IssuedCert, PkiError> {
        issue_with(&self.ca, spec)
    }

    fn ca_of(&self, signer: Signer) -> &Ca {
        match signer {
            Signer::Cluster => &self.ca,
            Signer::EtcdClient => self
                .etcd_client_ca
                .as_ref()
                .expect("load_or_create loads the etcd client CA before issuing from it"),
        }
    }

    /// Server TLS material for the etcd endpoint: server cert/key + the CA
    /// that client certificates must chain to.
    ///
    /// # Errors
    /// [`PkiError::Io`] when the files cannot be read.
    pub fn etcd_server_tls(&self) -> Result<ServerTls, PkiError> {
        Ok(ServerTls {
            cert_pem: read(&self.path(&format!("{ETCD_SERVER}.crt")))?,
            key_pem: read(&self.path(&format!("{ETCD_SERVER}.key")))?,
            client_ca_pem: Some(self.etcd_client_ca_pem()?),
        })
    }

    /// Server TLS material for the API server: `apiserver.crt`/`.key`,
    /// issued for localhost, the loopback addresses, the in-cluster names
    /// of the `kubernetes` service and `extra_sans`, reissued when a name is
    /// missing or it nears expiry. Client certificates are checked against
    /// the cluster CA (and are optional for API clients).
    ///
    /// # Errors
    /// Invalid names, key generation or file failures.
    pub fn api_server_tls(&self, extra_sans: &[String]) -> Result<ServerTls, PkiError> {
        let mut names: Vec<String> = [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "127.0.0.1",
            "::1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        names.extend(extra_sans.iter().cloned());
        let sans: BTreeSet<String> = names.into_iter().collect();
        let (dns_names, ips) = split_sans(&sans)?;
        let spec = CertSpec {
            common_name: "wkube-apiserver".into(),
            organizations: Vec::new(),
            dns_names,
            ips,
            server: true,
            client: false,
            validity: LEAF_VALIDITY,
        };
        self.ensure_leaf("apiserver", Signer::Cluster, &spec)?;
        Ok(ServerTls {
            cert_pem: read(&self.path("apiserver.crt"))?,
            key_pem: read(&self.path("apiserver.key"))?,
            client_ca_pem: Some(self.ca.cert_pem.clone()),
        })
    }

    /// The API server's client certificate towards node agents:
    /// `apiserver-kubelet-client.crt`/`.key` (CN `wkube-apiserver`, O
    /// `system:masters`, client usage), created on first use and reissued
    /// near expiry, with the CA that agents' serving certificates must
    /// chain to.
    ///
    /// # Errors
    /// Key generation or file failures.
    pub fn kubelet_client_tls(&self) -> Result<ClientTls, PkiError> {
        let spec = CertSpec {
            common_name: "wkube-apiserver".into(),
            organizations: vec![ADMIN_GROUP.into()],
            dns_names: Vec::new(),
            ips: Vec::new(),
            server: false,
            client: true,
            validity: LEAF_VALIDITY,
        };
        self.ensure_leaf(KUBELET_CLIENT, Signer::Cluster, &spec)?;
        Ok(ClientTls {
            cert_pem: read(&self.path(&format!("{KUBELET_CLIENT}.crt")))?,
            key_pem: read(&self.path(&format!("{KUBELET_CLIENT}.key")))?,
            ca_pem: self.ca.cert_pem.clone(),
        })
    }

    /// A file in the PKI directory, e.g. `path("ca.crt")`.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Makes sure `NAME.crt`/`NAME.key` exist, cover `spec`'s names and are
    /// not about to expire; reissues them (keeping names recorded before)
    /// otherwise.
    fn ensure_leaf(&self, name: &str, signer: Signer, spec: &CertSpec) -> Result<(), PkiError> {
        let ca = self.ca_of(signer);
        let cert_path = self.path(&format!("{name}.crt"));
        let key_path = self.path(&format!("{name}.key"));
        let meta_path = self.path(&format!("{name}.meta"));
        let wanted: BTreeSet<String> = spec
            .dns_names
            .iter()
            .cloned()
            .chain(spec.ips.iter().map(|ip| ip.to_string()))
            .collect();
        let meta = if meta_path.exists() {
            LeafMeta::parse(&read(&meta_path)?)
        } else {
            None
        };
        let now = OffsetDateTime::now_utc().unix_timestamp();
        if let Some(meta) = &meta
            && cert_path.exists()
            && key_path.exists()
            && meta.sans.is_superset(&wanted)
            && meta.issuer_name() == ca.name
            && meta.not_after > now + RENEW_BEFORE.as_secs() as i64
        {
            return Ok(());
        }
        // Names requested earlier stay valid: clients may rely on them.
        let mut sans = wanted;
        if let Some(meta) = meta {
            sans.extend(meta.sans);
        }
        let (dns_names, ips) = split_sans(&sans)?;
        let spec = CertSpec {
            dns_names,
            ips,
            ..spec.clone()
        };
        let issued = issue_with(ca, &spec)?;
        write_atomic(&key_path, issued.key_pem.as_bytes(), true)?;
        write_atomic(&cert_path, issued.cert_pem.as_bytes(), false)?;
        let meta = LeafMeta {
            not_after: now + spec.validity.as_secs() as i64,
            sans,
            issuer: Some(ca.name.to_string()),
        };
        write_atomic(&meta_path, meta.render().as_bytes(), false)?;
        Ok(())
    }
}

/// The `.meta` sidecar of a leaf: `not_after <unix seconds>`, then
/// `issuer <CA common name>`, then one `san <name>` line per SAN.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LeafMeta {
    not_after: i64,
    sans: BTreeSet<String>,
    /// Absent in sidecars written before the etcd client CA existed, when
    /// every leaf came from the cluster CA.
    issuer: Option<String>,
}

impl LeafMeta {
    /// `None` for anything unreadable: the leaf is then simply reissued.
    fn parse(text: &str) -> Option<LeafMeta> {
        let mut not_after = None;
        let mut issuer = None;
        let mut sans = BTreeSet::new();
        for line in text.lines() {
            match line.split_once(' ') {
                Some(("not_after", v)) => not_after = v.trim().parse().ok(),
                Some(("issuer", v)) => issuer = Some(v.trim().to_string()),
                Some(("san", v)) => {
                    sans.insert(v.trim().to_string());
                }
                _ => return None,
            }
        }
        Some(LeafMeta {
            not_after: not_after?,
            sans,
            issuer,
        })
    }

    fn issuer_name(&self) -> &str {
        self.issuer.as_deref().unwrap_or(CA_COMMON_NAME)
    }

    fn render(&self) -> String {
        let mut out = format!("not_after {}\n", self.not_after);
        if let Some(issuer) = &self.issuer {
            out.push_str(&format!("issuer {issuer}\n"));
        }
        for san in &self.sans {
            out.push_str(&format!("san {san}\n"));
        }
        out
    }
}

/// Loads the CA `cert_file`/`key_file` of `dir`, creating it (ECDSA P-256,
/// 10 years, CN `common_name`) when neither file exists.
fn load_or_create_ca(
    dir: &Path,
    cert_file: &str,
    key_file: &str,
    common_name: &'static str,
) -> Result<Ca, PkiError> {
    let cert_path = dir.join(cert_file);
    let key_path = dir.join(key_file);
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => {
            let cert_pem = read(&cert_path)?;
            let key_pem = read(&key_path)?;
            let key = KeyPair::from_pem(&key_pem).map_err(|source| PkiError::Parse {
                path: key_path.clone(),
                source,
            })?;
            let issuer =
                Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|source| PkiError::Parse {
                    path: cert_path.clone(),
                    source,
                })?;
            Ok(Ca {
                cert_pem,
                issuer,
                name: common_name,
            })
        }
        (true, false) => Err(PkiError::IncompleteCa {
            present: cert_path,
            missing: key_path,
        }),
        (false, true) => Err(PkiError::IncompleteCa {
            present: key_path,
            missing: cert_path,
        }),
        (false, false) => {
            let generate = |source| PkiError::Generate {
                what: format!("the CA {common_name:?}"),
                source,
            };
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate)?;
            let mut params = CertificateParams::default();
            params.distinguished_name = DistinguishedName::new();
            params
                .distinguished_name
                .push(DnType::CommonName, common_name);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            set_validity(&mut params, CA_VALIDITY);
            params.serial_number = Some(random_serial());
            let cert = params.self_signed(&key).map_err(generate)?;
            let cert_pem = cert.pem();
            // Key first: a crash in between leaves a key without a cert,
            // which load reports instead of silently replacing.
            write_atomic(&key_path, key.serialize_pem().as_bytes(), true)?;
            write_atomic(&cert_path, cert_pem.as_bytes(), false)?;
            Ok(Ca {
                cert_pem,
                issuer: Issuer::new(params, key),
                name: common_name,
            })
        }
    }
}

/// A leaf certificate for `spec`, signed by `ca`.
fn issue_with(ca: &Ca, spec: &CertSpec) -> Result<IssuedCert, PkiError> {
    let generate = |source| PkiError::Generate {
        what: format!("a certificate for {:?}", spec.common_name),
        source,
    };
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, spec.common_name.as_str());
    for org in &spec.organizations {
        params
            .distinguished_name
            .push(DnType::OrganizationName, org.as_str());
    }
    for name in &spec.dns_names {
        let dns = name
            .as_str()
            .try_into()
            .map_err(|source| PkiError::InvalidName {
                name: name.clone(),
                source,
            })?;
        params.subject_alt_names.push(SanType::DnsName(dns));
    }
    params
        .subject_alt_names
        .extend(spec.ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    if spec.server {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    if spec.client {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
    }
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    set_validity(&mut params, spec.validity);
    let cert = params.signed_by(&key, &ca.issuer).map_err(generate)?;
    Ok(IssuedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn split_sans(sans: &BTreeSet<String>) -> Result<(Vec<String>, Vec<IpAddr>), PkiError> {
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for san in sans {
        match san.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => {
                // Validate now so a bad name is reported as the user typed it.
                let _: rcgen::string::Ia5String =
                    san.as_str()
                        .try_into()
                        .map_err(|source| PkiError::InvalidName {
                            name: san.clone(),
                            source,
                        })?;
                dns.push(san.clone());
            }
        }
    }
    Ok((dns, ips))
}

fn set_validity(params: &mut CertificateParams, validity: Duration) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + validity;
}

/// 16 random bytes, top bit cleared so the DER integer stays positive.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // never a leading zero byte
    SerialNumber::from_slice(&bytes)
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn create_private_dir(dir: &Path) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    Ok(())
}

/// Writes via a temp file and rename, so a crash never leaves half a PEM.
/// Private files get mode 0600 from creation on.
fn write_atomic(path: &Path, contents: &[u8], private: bool) -> Result<(), PkiError> {
    let tmp = path.with_extension("tmp");
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| PkiError::Io { path: p, source }
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = opts.open(&tmp).map_err(io(&tmp))?;
    file.write_all(contents).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io(path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn first_start_creates_ca_server_and_admin_certs() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = ClusterPki::load_or_create(tmp.path(), &[]).unwrap();
        assert_eq!(pki.dir, tmp.path().join("pki"));
        for f in [
            "ca.crt",
            "ca.key",
            "etcd-server.crt",
            "etcd-server.key",
            "etcd-client.crt",
            "etcd-client.key",
            "etcd-client-ca.crt",
            "etcd-client-ca.key",
        ] {
            assert!(pki.path(f).exists(), "{f} missing: {:?}", files(&pki.dir));
        }
        assert!(pki.ca_cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(!files(&pki.dir).iter().any(|f| f.ends_with(".tmp")));
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let pki = ClusterPki::load_or_create(tmp.path(), &[]).unwrap();
        for f in [
            "ca.key",
            "etcd-server.key",
            "etcd-client.key",
            "etcd-client-ca.key",
        ] {
            let mode = std::fs::metadata(pki.path(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
    }

    #[test]
    fn reload_keeps_the_ca_and_the_leaves() {
        let tmp = tempfile::tempdir().unwrap();
        let first = ClusterPki::load_or_create(tmp.path(), &[]).unwrap();
        let server = first.etcd_server_tls().unwrap();
        let second = ClusterPki::load_or_create(tmp.path(), &[]).unwrap();
        assert_eq!(first.ca_cert_pem(), second.ca_cert_pem());
        let again = second.etcd_server_tls().unwrap();
        assert_eq!(server.cert_pem, again.cert_pem);
        assert_eq!(server.key_pem, again.key_pem);
        assert_eq!(
            again.client_ca_pem,
            Some(first.etcd_client_ca_pem().unwrap())
        );
    }

    #[test]
    fn new_sans_reissue_the_server_cert_and_keep_old_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let first = ClusterPki::load_or_create(tmp.path(), &["10.0.0.7".into()]).unwrap();
        let before = first.etcd_server_tls().unwrap().cert_pem;
        let second = ClusterPki::load_or_create(tmp.path(), &["etcd.example".into()]).unwrap();
        let after = second.etcd_server_tls().unwrap().cert_pem;
        assert_ne!(before, after);
        let meta = LeafMeta::parse(&read(&second.path("etcd-server.meta")).unwrap()).unwrap();
        for san in ["localhost", "127.0.0.1", "::1", "10.0.0.7", "etcd.example"] {
            assert!(meta.sans.contains(san), "{san} missing from {meta:?}");
        }
        // Asking for names it already has changes nothing.
        let third = ClusterPki::load_or_create(tmp.path(), &["10.0.0.7".into()]).unwrap();
        assert_eq!(after, third.etcd_server_tls().unwrap().cert_pem);
    }

    #[test]
    fn invalid_san_is_reported_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let err = ClusterPki::load_or_create(tmp.path(), &["bad name\u{e9}".into()]).unwrap_err();
        assert!(err.to_string().contains("bad name"), "{err}");
    }

    #[test]
    fn half_a_ca_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = ClusterPki::load_or_create(tmp.path(), &[]).unwrap();
        std::fs::remove_file(pki.path("ca.key")).unwrap();
        let err = ClusterPki::load_or_create(tmp.path(), &[]).unwrap_err();
        assert!(matches!(err, PkiError::IncompleteCa { .. }), "{err}");
        assert!(err.to_string().contains("ca.key"));
    }

    #[test]
    fn issued_certs_parse_back_and_name_the_ca_as_issuer() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = ClusterPki::load_or_create(tmp.path(), &[]).unwrap();
        let issued = pki
            .issue(&CertSpec {
                common_name: "node-1".into(),
                organizations: vec!["system:nodes".into()],
                dns_names: vec!["node-1".into()],
                ips: vec!["127.0.0.1".parse().unwrap()],
                server: true,
                client: true,
                validity: DAY,
            })
            .unwrap();
        // The key parses, and the certificate parses as X.509 (as a would-be
        // issuer, which reads its subject).
        let key = KeyPair::from_pem(&issued.key_pem).unwrap();
        Issuer::from_ca_cert_pem(&issued.cert_pem, key).unwrap();
        // The chain itself is checked by a real TLS handshake in the etcd
        // endpoint's tests (`tls_requires_a_client_cert_from_the_cluster_ca`).
    }

    #[test]
    fn the_kubelet_client_cert_is_made_once_and_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = ClusterPki::load_or_create(tmp.path(), &[]).unwrap();
        let first = pki.kubelet_client_tls().unwrap();
        assert_eq!(first.ca_pem, pki.ca_cert_pem());
        let again = ClusterPki::open(tmp.path())
            .unwrap()
            .kubelet_client_tls()
            .unwrap();
        assert_eq!(first.cert_pem, again.cert_pem);
        assert!(pki.path("apiserver-kubelet-client.key").exists());
        let (_, cert) = x509_parser::pem::parse_x509_pem(first.cert_pem.as_bytes()).unwrap();
        let cert = cert.parse_x509().unwrap();
        let subject = cert.subject().to_string();
        assert!(subject.contains("CN=wkube-apiserver"), "{subject}");
        assert!(subject.contains("O=system:masters"), "{subject}");
    }

    /// The subject of the issuer of the PEM certificate at `path`.
    fn issuer_of(path: &Path) -> String {
        let pem = std::fs::read(path).unwrap();
        let (_, cert) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        cert.parse_x509().unwrap().issuer().to_string()
    }

    #[test]
    fn the_etcd_admin_certificate_comes_from_its_own_ca_and_an_older_one_is_reissued() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = ClusterPki::load_or_create(tmp.path(), &[]).unwrap();
        let client = pki.path("etcd-client.crt");
        assert!(issuer_of(&client).contains(ETCD_CLIENT_CA_COMMON_NAME));
        assert!(issuer_of(&pki.path("etcd-server.crt")).contains(CA_COMMON_NAME));
        let trusted = pki.etcd_server_tls().unwrap().client_ca_pem.unwrap();
        assert_eq!(trusted, read(&pki.path(ETCD_CLIENT_CA_CERT)).unwrap());
        assert_ne!(trusted, pki.ca_cert_pem());

        // A data directory from before the etcd client CA: the admin's etcd
        // certificate was the cluster CA's, and its sidecar names no issuer.
        let old = pki
            .issue(&CertSpec {
                common_name: ADMIN_COMMON_NAME.into(),
                organizations: vec![ADMIN_GROUP.into()],
                dns_names: Vec::new(),
                ips: Vec::new(),
                server: false,
                client: true,
                validity: LEAF_VALIDITY,
            })
            .unwrap();
        std::fs::write(&client, &old.cert_pem).unwrap();
        let meta = format!("not_after {}\n", i64::MAX / 2);
        std::fs::write(pki.path("etcd-client.meta"), meta).unwrap();
        drop(pki);
        let pki = ClusterPki::load_or_create(tmp.path(), &[]).unwrap();
        assert!(issuer_of(&pki.path("etcd-client.crt")).contains(ETCD_CLIENT_CA_COMMON_NAME));
    }

    #[test]
    fn leaf_meta_round_trips() {
        let mut meta = LeafMeta {
            not_after: 42,
            sans: ["a".to_string(), "::1".to_string()].into_iter().collect(),
            issuer: None,
        };
        assert_eq!(LeafMeta::parse(&meta.render()), Some(meta.clone()));
        meta.issuer = Some(ETCD_CLIENT_CA_COMMON_NAME.into());
        assert_eq!(LeafMeta::parse(&meta.render()), Some(meta));
        assert_eq!(LeafMeta::parse("garbage"), None);
    }
}
