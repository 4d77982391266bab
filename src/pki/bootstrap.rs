//! The secrets every API server of one cluster must share, passed between
//! servers through the store: the cluster CA, the etcd-client CA, the
//! token-signing key and the key that seals Secrets at rest.
//!
//! The first server on an empty store publishes its own; every later one
//! fetches them before it loads its certificates, so all servers issue and
//! accept the same credentials. The bundle is sealed with AES-256-GCM under
//! a key derived (PBKDF2-HMAC-SHA256) from the *server token*, which only
//! servers hold: whoever can read the store but lacks the token learns
//! nothing, and a server started with a wrong token stops with a clear
//! error instead of founding a second cluster on the same store.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::store::{
    Backend, Compare, CompareResult, CompareTarget, KeyRange, PutRequest, RangeRequest, StoreError,
    TxnOp, TxnOpResponse, TxnRequest,
};

/// Where the sealed bundle lives.
pub const BOOTSTRAP_KEY: &str = "/registry/wkube.dev/bootstrap";

/// The server token, kept in the data directory once known.
pub const SERVER_TOKEN_FILE: &str = "server-token";

/// The files of `DATA/pki` every server shares. Leaf certificates are not
/// shared: each server issues its own from the shared CAs.
const SHARED: &[&str] = &[
    "ca.crt",
    "ca.key",
    "etcd-client-ca.crt",
    "etcd-client-ca.key",
    "sa.key",
    "secrets-encryption.keys",
];

/// The Secrets key file, which `wkube encryption rotate` extends.
const KEYS: &str = "secrets-encryption.keys";

/// Files whose change makes every leaf certificate stale.
const CAS: &[&str] = &["ca.crt", "etcd-client-ca.crt"];

const MAGIC: &[u8] = b"WKB1";
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const PBKDF2_ROUNDS: u32 = 100_000;
const AAD: &[u8] = b"wkube cluster bootstrap v1";

/// Why the shared secrets could not be agreed on.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("cannot reach the store")]
    Store(#[from] StoreError),
    #[error("cannot read or write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the server token does not open this cluster's secrets: start this server with the \
         token of the cluster's first server (its DATA/server-token)"
    )]
    WrongToken,
    #[error("the cluster's shared secrets in the store are damaged: {0}")]
    Damaged(String),
    #[error("cannot create this server's certificates and keys: {0}")]
    Local(String),
}

/// What this server did with the shared secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The store had none: this server's own were published.
    Published,
    /// The cluster's were installed (unchanged, or replacing local ones).
    Installed { replaced: bool },
    /// A key rotated on this server was added to the cluster's.
    Rotated,
}

/// The server token: the one given, else the one kept from an earlier
/// start, else a new random one. Whichever it is, it is kept (mode 0600)
/// for the next start.
///
/// # Errors
/// The token file cannot be read or written.
pub fn server_token(data_dir: &Path, given: Option<&str>) -> Result<String, BootstrapError> {
    let path = data_dir.join(SERVER_TOKEN_FILE);
    let io = |source| BootstrapError::Io {
        path: path.clone(),
        source,
    };
    let token = match given {
        Some(t) => t.trim().to_string(),
        None => match std::fs::read_to_string(&path) {
            Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
            Ok(_) => random_token(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => random_token(),
            Err(e) => return Err(io(e)),
        },
    };
    super::write_atomic(&path, format!("{token}\n").as_bytes(), true)
        .map_err(|e| BootstrapError::Local(e.to_string()))?;
    Ok(token)
}

fn random_token() -> String {
    let mut bytes = [0u8; 24];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source works");
    format!("K10{}", hex::encode(bytes))
}

/// Agrees with the other servers on the shared secrets. `create_local`
/// makes this server's own (CA, keys) under `data_dir` when the store has
/// none yet; it is not called otherwise.
///
/// # Errors
/// See [`BootstrapError`]; a wrong token is [`BootstrapError::WrongToken`].
pub async fn share(
    store: &dyn Backend,
    data_dir: &Path,
    token: &str,
    create_local: impl FnOnce() -> Result<(), String>,
) -> Result<Outcome, BootstrapError> {
    let pki = data_dir.join("pki");
    if let Some((sealed, revision)) = fetch(store).await? {
        let mut files = open(token, &sealed)?;
        // `wkube encryption rotate` ran here since the bundle was written:
        // the local key file holds every key of the cluster's and more.
        // Publish it (if no other server changed the bundle meanwhile)
        // rather than overwrite the new key with the cluster's old file.
        if let Ok(local) = std::fs::read(pki.join(KEYS))
            && files
                .get(KEYS)
                .is_some_and(|cluster| extends(&local, cluster))
        {
            files.insert(KEYS.to_string(), local);
            let resp = store
                .txn(TxnRequest {
                    compare: vec![Compare {
                        range: KeyRange::single(BOOTSTRAP_KEY),
                        result: CompareResult::Equal,
                        target: CompareTarget::Mod(revision),
                    }],
                    success: vec![TxnOp::Put(PutRequest {
                        key: Bytes::from_static(BOOTSTRAP_KEY.as_bytes()),
                        value: Bytes::from(seal(token, &files)),
                        ..Default::default()
                    })],
                    failure: Vec::new(),
                })
                .await?;
            if !resp.succeeded {
                return Err(BootstrapError::Damaged(
                    "another server changed the shared secrets while this one published a \
                     rotated key; start it again"
                        .into(),
                ));
            }
            return Ok(Outcome::Rotated);
        }
        let replaced = install(&pki, &files)?;
        return Ok(Outcome::Installed { replaced });
    }
    create_local().map_err(BootstrapError::Local)?;
    let mut files = BTreeMap::new();
    for name in SHARED {
        let path = pki.join(name);
        let body = std::fs::read(&path).map_err(|source| BootstrapError::Io { path, source })?;
        files.insert((*name).to_string(), body);
    }
    let sealed = seal(token, &files);
    // Create-only: of two servers starting on an empty store at once, one
    // publishes and the other installs what it published.
    let resp = store
        .txn(TxnRequest {
            compare: vec![Compare {
                range: KeyRange::single(BOOTSTRAP_KEY),
                result: CompareResult::Equal,
                target: CompareTarget::Create(0),
            }],
            success: vec![TxnOp::Put(PutRequest {
                key: Bytes::from_static(BOOTSTRAP_KEY.as_bytes()),
                value: Bytes::from(sealed),
                ..Default::default()
            })],
            failure: vec![TxnOp::Range(RangeRequest {
                range: KeyRange::single(BOOTSTRAP_KEY),
                ..Default::default()
            })],
        })
        .await?;
    if resp.succeeded {
        return Ok(Outcome::Published);
    }
    let theirs = match resp.responses.first() {
        Some(TxnOpResponse::Range(r)) => r.kvs.first().map(|kv| kv.value.to_vec()),
        _ => None,
    }
    .ok_or_else(|| BootstrapError::Damaged("the bundle vanished while publishing".into()))?;
    let files = open(token, &theirs)?;
    let replaced = install(&pki, &files)?;
    Ok(Outcome::Installed { replaced })
}

/// The sealed bundle and the revision it was last written at.
async fn fetch(store: &dyn Backend) -> Result<Option<(Vec<u8>, i64)>, StoreError> {
    let r = store
        .range(RangeRequest {
            range: KeyRange::single(BOOTSTRAP_KEY),
            ..Default::default()
        })
        .await?;
    Ok(r.kvs.first().map(|kv| (kv.value.to_vec(), kv.mod_revision)))
}

/// True when key file `local` names every key of `cluster` (same name,
/// same key) and at least one more: a rotation made here.
fn extends(local: &[u8], cluster: &[u8]) -> bool {
    let lines = |b: &[u8]| -> std::collections::BTreeSet<String> {
        String::from_utf8_lossy(b)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect()
    };
    let (local, cluster) = (lines(local), lines(cluster));
    local.len() > cluster.len() && cluster.is_subset(&local)
}

/// Writes the cluster's files where they differ from the local ones.
/// Replacing a CA removes the leaf certificates it no longer signs (and
/// their records), so they are issued again from the shared CA.
fn install(pki: &Path, files: &BTreeMap<String, Vec<u8>>) -> Result<bool, BootstrapError> {
    super::create_private_dir(pki).map_err(|e| BootstrapError::Local(e.to_string()))?;
    let mut replaced = false;
    let mut ca_changed = false;
    for name in SHARED {
        let body = files
            .get(*name)
            .ok_or_else(|| BootstrapError::Damaged(format!("{name} is missing")))?;
        let path = pki.join(name);
        if std::fs::read(&path).is_ok_and(|local| &local == body) {
            continue;
        }
        super::write_atomic(
            &path,
            body,
            name.ends_with(".key") || name.ends_with(".keys"),
        )
        .map_err(|e| BootstrapError::Local(e.to_string()))?;
        replaced = true;
        ca_changed |= CAS.contains(name);
    }
    if ca_changed {
        let entries = std::fs::read_dir(pki).map_err(|source| BootstrapError::Io {
            path: pki.to_path_buf(),
            source,
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".meta") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(replaced)
}

fn derive(token: &str, salt: &[u8]) -> LessSafeKey {
    let mut key = [0u8; 32];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        NonZeroU32::new(PBKDF2_ROUNDS).expect("nonzero"),
        salt,
        token.as_bytes(),
        &mut key,
    );
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).expect("32-byte key"))
}

/// `MAGIC | salt | nonce | AES-256-GCM(JSON {file: base64})`.
fn seal(token: &str, files: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let rng = SystemRandom::new();
    let mut salt = [0u8; SALT_LEN];
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut salt).expect("random");
    rng.fill(&mut nonce).expect("random");
    let doc: BTreeMap<&str, String> = files
        .iter()
        .map(|(k, v)| (k.as_str(), B64.encode(v)))
        .collect();
    let mut body = serde_json::to_vec(&doc).expect("a map of strings serializes");
    derive(token, &salt)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(AAD),
            &mut body,
        )
        .expect("sealing fits in memory");
    [MAGIC, &salt, &nonce, &body].concat()
}

fn open(token: &str, sealed: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, BootstrapError> {
    let rest = sealed
        .strip_prefix(MAGIC)
        .ok_or_else(|| BootstrapError::Damaged("unknown format".into()))?;
    if rest.len() < SALT_LEN + NONCE_LEN {
        return Err(BootstrapError::Damaged("too short".into()));
    }
    let (salt, rest) = rest.split_at(SALT_LEN);
    let (nonce, body) = rest.split_at(NONCE_LEN);
    let mut body = body.to_vec();
    let nonce = Nonce::try_assume_unique_for_key(nonce)
        .map_err(|_| BootstrapError::Damaged("bad nonce".into()))?;
    let plain = derive(token, salt)
        .open_in_place(nonce, Aad::from(AAD), &mut body)
        .map_err(|_| BootstrapError::WrongToken)?;
    let doc: BTreeMap<String, String> =
        serde_json::from_slice(plain).map_err(|e| BootstrapError::Damaged(e.to_string()))?;
    doc.into_iter()
        .map(|(k, v)| {
            B64.decode(v)
                .map(|b| (k.clone(), b))
                .map_err(|e| BootstrapError::Damaged(format!("{k}: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redb::{RedbOptions, RedbStore};

    fn files(tag: &str) -> BTreeMap<String, Vec<u8>> {
        SHARED
            .iter()
            .map(|n| (n.to_string(), format!("{tag}:{n}").into_bytes()))
            .collect()
    }

    fn write_local(dir: &Path, tag: &str) -> Result<(), String> {
        std::fs::create_dir_all(dir.join("pki")).unwrap();
        for (n, b) in files(tag) {
            std::fs::write(dir.join("pki").join(n), b).unwrap();
        }
        std::fs::write(dir.join("pki").join("apiserver.meta"), "old").unwrap();
        Ok(())
    }

    #[test]
    fn a_sealed_bundle_opens_only_with_its_token() {
        let sealed = seal("tok-1", &files("a"));
        assert_eq!(open("tok-1", &sealed).unwrap(), files("a"));
        assert!(matches!(
            open("tok-2", &sealed),
            Err(BootstrapError::WrongToken)
        ));
        // Nothing of it is readable without the token.
        assert!(!String::from_utf8_lossy(&sealed).contains("a:ca.key"));
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(open("tok-1", &flipped).is_err());
        assert!(open("tok-1", b"junk").is_err());
    }

    #[tokio::test]
    async fn the_first_server_publishes_and_the_next_installs_the_same_secrets() {
        let store_dir = tempfile::tempdir().unwrap();
        let store =
            RedbStore::open(&store_dir.path().join("s.redb"), RedbOptions::default()).unwrap();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());

        let out = share(store.as_ref(), a.path(), "tok", || {
            write_local(a.path(), "A")
        })
        .await
        .unwrap();
        assert_eq!(out, Outcome::Published);

        // B had made its own CA already: it is replaced, and its leaf
        // records go so its certificates are issued again.
        write_local(b.path(), "B").unwrap();
        let out = share(store.as_ref(), b.path(), "tok", || panic!("not called"))
            .await
            .unwrap();
        assert_eq!(out, Outcome::Installed { replaced: true });
        for n in SHARED {
            assert_eq!(
                std::fs::read(b.path().join("pki").join(n)).unwrap(),
                std::fs::read(a.path().join("pki").join(n)).unwrap()
            );
        }
        assert!(!b.path().join("pki/apiserver.meta").exists());
        // A restart of A changes nothing.
        let out = share(store.as_ref(), a.path(), "tok", || panic!("not called"))
            .await
            .unwrap();
        assert_eq!(out, Outcome::Installed { replaced: false });
        assert!(a.path().join("pki/apiserver.meta").exists());

        // A third server with the wrong token is refused.
        let c = tempfile::tempdir().unwrap();
        let err = share(store.as_ref(), c.path(), "other", || panic!("not called")).await;
        assert!(matches!(err, Err(BootstrapError::WrongToken)));
    }

    #[tokio::test]
    async fn a_key_rotated_on_one_server_reaches_the_others() {
        let store_dir = tempfile::tempdir().unwrap();
        let store =
            RedbStore::open(&store_dir.path().join("s.redb"), RedbOptions::default()).unwrap();
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        share(store.as_ref(), a.path(), "tok", || {
            write_local(a.path(), "A")
        })
        .await
        .unwrap();
        share(store.as_ref(), b.path(), "tok", || panic!("not called"))
            .await
            .unwrap();
        // A rotates: a new key first, the old one kept.
        let keys = a.path().join("pki").join(KEYS);
        let old = std::fs::read_to_string(&keys).unwrap();
        std::fs::write(&keys, format!("key2 NEW\n{old}\n")).unwrap();
        let out = share(store.as_ref(), a.path(), "tok", || panic!("not called"))
            .await
            .unwrap();
        assert_eq!(out, Outcome::Rotated);
        assert!(std::fs::read_to_string(&keys).unwrap().contains("key2 NEW"));
        // B's next start takes the rotated file.
        let out = share(store.as_ref(), b.path(), "tok", || panic!("not called"))
            .await
            .unwrap();
        assert_eq!(out, Outcome::Installed { replaced: true });
        assert!(
            std::fs::read_to_string(b.path().join("pki").join(KEYS))
                .unwrap()
                .contains("key2 NEW")
        );
        // A file that drops a key is no rotation: the cluster's wins.
        std::fs::write(b.path().join("pki").join(KEYS), "key9 OTHER\n").unwrap();
        let out = share(store.as_ref(), b.path(), "tok", || panic!("not called"))
            .await
            .unwrap();
        assert_eq!(out, Outcome::Installed { replaced: true });
        assert!(
            std::fs::read_to_string(b.path().join("pki").join(KEYS))
                .unwrap()
                .contains("key2 NEW")
        );
    }

    #[test]
    fn the_server_token_is_kept_for_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let first = server_token(dir.path(), None).unwrap();
        assert!(first.len() > 40);
        assert_eq!(server_token(dir.path(), None).unwrap(), first);
        assert_eq!(server_token(dir.path(), Some("given")).unwrap(), "given");
        assert_eq!(server_token(dir.path(), None).unwrap(), "given");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(SERVER_TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
    }
}
