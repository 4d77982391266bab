//! Authentication: who is calling. JWT bearer tokens signed by the cluster's
//! signing key (ES256), or a client certificate issued by the cluster CA
//! (CN = user, O = groups). Anything else is anonymous, and anonymous
//! callers only reach the health and version endpoints.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

/// The audience every wkube API token carries unless a TokenRequest asks
/// for others.
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";
/// The issuer of wkube tokens.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The authenticated caller, as RBAC sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    pub fn is_anonymous(&self) -> bool {
        self.username == "system:anonymous"
    }

    pub fn anonymous() -> Self {
        UserInfo {
            username: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
        }
    }
}

/// Claims of a wkube token. Service-account tokens carry the
/// `kubernetes.io` claim naming the account (and the pod they are bound
/// to), which lets the API server reject them once either is gone.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: u64,
    pub iat: u64,
    pub nbf: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jti: String,
    #[serde(
        rename = "kubernetes.io",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub kubernetes: Option<KubernetesClaims>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KubernetesClaims {
    pub namespace: String,
    pub serviceaccount: ObjectRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

/// Why a token was refused. All of them answer 401; the variant is logged.
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    #[error("invalid bearer token: {0}")]
    InvalidToken(#[from] jsonwebtoken::errors::Error),
    #[error("token's service account or pod no longer exists")]
    Revoked,
    #[error("reading the signing key {path}: {source}")]
    Key {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("generating the signing key: {0}")]
    Generate(String),
    #[error("signing a token: {0}")]
    Sign(String),
}

/// Signs and verifies tokens with the cluster signing key.
pub struct TokenAuthority {
    /// Tokens are signed with ring: every pod start mints one, and ring's
    /// P-256 signing costs a fraction of the pure-Rust implementation's
    /// (which then showed as 7 % of the server's CPU in a burst of pod
    /// starts). Verification stays with `jsonwebtoken`, whose results are
    /// remembered below.
    signer: ring::signature::EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
    decoding: DecodingKey,
    /// Tokens whose signature checked out, by (token, audience): an ES256
    /// verification costs far more than the rest of a small request, and
    /// components send the same token on every request. Expiry and
    /// not-before are checked again on every hit; what a token is bound to
    /// (a pod, an account) is checked by the caller every time.
    verified: parking_lot::Mutex<std::collections::HashMap<(String, String), Claims>>,
}

/// Most verified tokens remembered; the cache starts over when full.
const VERIFIED_CACHE: usize = 4096;
/// Seconds of clock skew allowed on `exp` and `nbf`.
const LEEWAY: u64 = 5;

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TokenAuthority {
    /// Load `DATA/pki/sa.key` (PKCS#8 ECDSA P-256), creating it on first
    /// start.
    pub fn load_or_create(pki_dir: &Path) -> Result<Self, AuthnError> {
        let path = pki_dir.join("sa.key");
        let pem = match std::fs::read_to_string(&path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                    .map_err(|e| AuthnError::Generate(e.to_string()))?;
                let pem = key.serialize_pem();
                write_private(&path, &pem).map_err(|source| AuthnError::Key {
                    path: path.display().to_string(),
                    source,
                })?;
                pem
            }
            Err(source) => {
                return Err(AuthnError::Key {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        Self::from_pem(&pem)
    }

    pub fn from_pem(pem: &str) -> Result<Self, AuthnError> {
        let key = rcgen::KeyPair::from_pem(pem).map_err(|e| AuthnError::Generate(e.to_string()))?;
        let rng = ring::rand::SystemRandom::new();
        let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &rng,
        )
        .map_err(|e| AuthnError::Generate(format!("the signing key is not PKCS#8 P-256: {e}")))?;
        let decoding = DecodingKey::from_ec_pem(key.public_key_pem().as_bytes())?;
        Ok(TokenAuthority {
            signer,
            rng,
            decoding,
            verified: parking_lot::Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// Mint a token for a user.
    pub fn issue_user(
        &self,
        user: &str,
        groups: &[String],
        ttl: Duration,
    ) -> Result<String, AuthnError> {
        let now = now_secs();
        let claims = Claims {
            iss: ISSUER.into(),
            sub: user.into(),
            aud: vec![API_AUDIENCE.into()],
            exp: now + ttl.as_secs(),
            iat: now,
            nbf: now,
            groups: groups.to_vec(),
            jti: uuid::Uuid::new_v4().to_string(),
            kubernetes: None,
        };
        self.sign(&claims)
    }

    /// A compact JWS (RFC 7515) of `claims`: ES256, the signature as the
    /// fixed-width `r || s` that RFC 7518 asks of it.
    pub fn sign(&self, claims: &Claims) -> Result<String, AuthnError> {
        /// `{"typ":"JWT","alg":"ES256"}`, base64url-encoded.
        const HEADER: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NiJ9";
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = serde_json::to_vec(claims).map_err(|e| AuthnError::Sign(e.to_string()))?;
        let mut token = String::with_capacity(HEADER.len() + payload.len() * 4 / 3 + 100);
        token.push_str(HEADER);
        token.push('.');
        b64.encode_string(&payload, &mut token);
        let signature = self
            .signer
            .sign(&self.rng, token.as_bytes())
            .map_err(|e| AuthnError::Sign(e.to_string()))?;
        token.push('.');
        b64.encode_string(signature.as_ref(), &mut token);
        Ok(token)
    }

    /// Verify signature, expiry, not-before, issuer and audience. Only
    /// ES256 is accepted, so `alg: none` and HMAC confusion fail here.
    pub fn verify(&self, token: &str, audience: &str) -> Result<Claims, AuthnError> {
        let key = (token.to_string(), audience.to_string());
        let cached = self.verified.lock().get(&key).cloned();
        if let Some(claims) = cached {
            let now = now_secs();
            if now < claims.exp + LEEWAY && claims.nbf <= now + LEEWAY {
                return Ok(claims);
            }
            self.verified.lock().remove(&key);
        }
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&[audience]);
        v.set_issuer(&[ISSUER]);
        v.leeway = LEEWAY;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)?.claims;
        let mut cache = self.verified.lock();
        if cache.len() >= VERIFIED_CACHE {
            cache.clear();
        }
        cache.insert(key, claims.clone());
        Ok(claims)
    }
}

/// What the claims make of the caller.
pub fn user_from_claims(c: &Claims) -> UserInfo {
    let mut groups = c.groups.clone();
    if let Some(k) = &c.kubernetes {
        groups.push("system:serviceaccounts".into());
        groups.push(format!("system:serviceaccounts:{}", k.namespace));
    }
    groups.push("system:authenticated".into());
    UserInfo {
        username: c.sub.clone(),
        uid: c
            .kubernetes
            .as_ref()
            .map(|k| k.serviceaccount.uid.clone())
            .unwrap_or_default(),
        groups,
    }
}

/// The user a verified client certificate names (DER input).
pub fn user_from_cert(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let cn = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    groups.push("system:authenticated".into());
    Some(UserInfo {
        username: cn,
        uid: String::new(),
        groups,
    })
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn authority() -> TokenAuthority {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        TokenAuthority::from_pem(&key.serialize_pem()).unwrap()
    }

    #[test]
    fn minted_tokens_are_es256_jws_that_a_stock_decoder_reads() {
        let a = authority();
        let t = a.issue_user("dave", &[], Duration::from_secs(60)).unwrap();
        let header = jsonwebtoken::decode_header(&t).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        let sig = t.rsplit('.').next().unwrap();
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .unwrap();
        assert_eq!(sig.len(), 64, "r || s, 32 bytes each");
        // Every token is signed afresh, and each verifies.
        let u = a.issue_user("dave", &[], Duration::from_secs(60)).unwrap();
        assert_ne!(t, u);
        assert!(a.verify(&u, API_AUDIENCE).is_ok());
    }

    #[test]
    fn a_minted_token_verifies_and_names_the_user() {
        let a = authority();
        let t = a
            .issue_user("alice", &["dev".into()], Duration::from_secs(60))
            .unwrap();
        let user = user_from_claims(&a.verify(&t, API_AUDIENCE).unwrap());
        assert_eq!(user.username, "alice");
        assert_eq!(user.groups, vec!["dev", "system:authenticated"]);
    }

    #[test]
    fn verified_tokens_are_remembered_but_expiry_is_checked_on_every_use() {
        let a = authority();
        let t = a.issue_user("carol", &[], Duration::from_secs(60)).unwrap();
        let first = a.verify(&t, API_AUDIENCE).unwrap();
        assert_eq!(a.verify(&t, API_AUDIENCE).unwrap(), first);
        assert_eq!(a.verified.lock().len(), 1);
        // A remembered entry past its expiry is not trusted: the token is
        // verified again (and here it is valid, with its own claims).
        let mut stale = first.clone();
        stale.sub = "mallory".into();
        stale.exp = now_secs() - 3600;
        a.verified
            .lock()
            .insert((t.clone(), API_AUDIENCE.into()), stale);
        assert_eq!(a.verify(&t, API_AUDIENCE).unwrap().sub, "carol");
        // Another audience is another entry, checked on its own.
        assert!(a.verify(&t, "something-else").is_err());
    }

    #[test]
    fn another_keys_token_is_refused() {
        let t = authority()
            .issue_user("alice", &[], Duration::from_secs(60))
            .unwrap();
        assert!(authority().verify(&t, API_AUDIENCE).is_err());
    }

    #[test]
    fn an_expired_token_is_refused() {
        let a = authority();
        let mut c = a
            .verify(
                &a.issue_user("bob", &[], Duration::from_secs(60)).unwrap(),
                API_AUDIENCE,
            )
            .unwrap();
        c.exp = now_secs() - 3600;
        c.iat = c.exp - 60;
        c.nbf = c.iat;
        assert!(a.verify(&a.sign(&c).unwrap(), API_AUDIENCE).is_err());
    }

    #[test]
    fn a_wrong_audience_is_refused() {
        let a = authority();
        let t = a.issue_user("bob", &[], Duration::from_secs(60)).unwrap();
        assert!(a.verify(&t, "something-else").is_err());
    }

    #[test]
    fn alg_none_is_refused() {
        let a = authority();
        let t = a.issue_user("bob", &[], Duration::from_secs(60)).unwrap();
        let payload = t.split('.').nth(1).unwrap();
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"alg":"none","typ":"JWT"}"#);
        let forged = format!("{header}.{payload}.");
        assert!(a.verify(&forged, API_AUDIENCE).is_err());
    }
}
