//! Secrets encrypted at rest: the API server seals every Secret with
//! AES-256-GCM before it reaches the store, and opens it on the way out.
//! The store, its file, its snapshots and the etcd API only ever hold
//! ciphertext; everything above the registry sees plain objects.
//!
//! Keys live in `DATA/pki/secrets-encryption.keys` (mode 0600), one per
//! line as `NAME BASE64(32 bytes)`. The first key seals; every key opens.
//! A sealed value is
//!
//! ```text
//! k8s:enc:aesgcm:v1:NAME: || nonce (12 bytes) || ciphertext || tag (16 bytes)
//! ```
//!
//! with the store key as associated data, so a sealed value copied to
//! another key does not open. Values without the prefix are read as
//! plaintext (Secrets written before encryption was on, or put through the
//! etcd API); the server re-seals those, and those sealed with an older key,
//! when it starts ([`Keyring::needs_reseal`]).
//!
//! Rotation: `wkube encryption rotate` puts a new key first; the next start
//! re-seals every Secret with it and logs which older keys nothing uses any
//! more, which may then be removed from the file.

use std::borrow::Cow;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// The file in the PKI directory that holds the keys.
pub const KEYS_FILE: &str = "secrets-encryption.keys";

/// What every sealed value starts with, before the key's name.
const PREFIX: &[u8] = b"k8s:enc:aesgcm:v1:";

/// The store keys whose values are sealed.
const SEALED_PREFIXES: &[&[u8]] = &[b"/registry/secrets/"];

const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
/// Longest key name accepted in the file (names are written into every
/// sealed value).
const MAX_NAME_LEN: usize = 64;

/// Why keys could not be loaded or a value could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{0}: no keys")]
    Empty(PathBuf),
    #[error("the system random generator failed")]
    Random,
    #[error("value sealed with key {0:?}, which is not in the key file")]
    UnknownKey(String),
    #[error("sealed value is malformed")]
    Malformed,
    #[error("sealed value does not open with key {0:?} (tampered, or moved from another key)")]
    Open(String),
}

/// One named AES-256-GCM key.
struct NamedKey {
    name: String,
    key: LessSafeKey,
}

/// The keys of `secrets-encryption.keys`, the first of which seals.
pub struct Keyring {
    keys: Vec<NamedKey>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.keys.iter().map(|k| k.name.as_str()).collect();
        f.debug_struct("Keyring").field("keys", &names).finish()
    }
}

/// Whether values stored under `key` are sealed.
#[must_use]
pub fn is_sealed_key(key: &[u8]) -> bool {
    SEALED_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// The name of the key a stored value is sealed with, if it is sealed.
#[must_use]
pub fn sealed_with(value: &[u8]) -> Option<&str> {
    let rest = value.strip_prefix(PREFIX)?;
    let end = rest
        .iter()
        .take(MAX_NAME_LEN + 1)
        .position(|b| *b == b':')?;
    std::str::from_utf8(&rest[..end]).ok()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EncryptionError + '_ {
    move |source| EncryptionError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn random_key(rng: &SystemRandom) -> Result<[u8; KEY_LEN], EncryptionError> {
    let mut bytes = [0u8; KEY_LEN];
    rng.fill(&mut bytes).map_err(|_| EncryptionError::Random)?;
    Ok(bytes)
}

fn key_line(name: &str, bytes: &[u8]) -> String {
    format!(
        "{name} {}\n",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// Writes `text` to `path` with mode 0600, atomically.
fn write_private(path: &Path, text: &str) -> Result<(), EncryptionError> {
    let tmp = path.with_extension("keys.tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp).map_err(io(&tmp))?;
        f.write_all(text.as_bytes()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))
}

impl Keyring {
    /// Reads `DIR/secrets-encryption.keys`, creating it with one fresh key
    /// (`key1`) when absent.
    ///
    /// # Errors
    /// A file that cannot be read or written, or a malformed one.
    pub fn load_or_create(pki_dir: &Path) -> Result<Keyring, EncryptionError> {
        let path = pki_dir.join(KEYS_FILE);
        if !path.exists() {
            let rng = SystemRandom::new();
            write_private(&path, &key_line("key1", &random_key(&rng)?))?;
        }
        Self::load(&path)
    }

    /// Reads a key file.
    ///
    /// # Errors
    /// A file that cannot be read, a malformed line, a duplicate name, or
    /// no keys at all.
    pub fn load(path: &Path) -> Result<Keyring, EncryptionError> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        Self::parse(path, &text)
    }

    /// Parses the text of the key file at `path` (named in errors).
    fn parse(path: &Path, text: &str) -> Result<Keyring, EncryptionError> {
        let mut keys: Vec<NamedKey> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parse = |message: &str| EncryptionError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                message: message.to_string(),
            };
            let (name, b64) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| parse("expected `NAME BASE64-KEY`"))?;
            if !valid_name(name) {
                return Err(parse("a key name is 1-64 letters, digits, '-', '_' or '.'"));
            }
            if keys.iter().any(|k| k.name == name) {
                return Err(parse(&format!("key {name:?} appears twice")));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| parse("the key is not base64"))?;
            if bytes.len() != KEY_LEN {
                return Err(parse("an AES-256 key is 32 bytes"));
            }
            let unbound =
                UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| parse("not an AES-256 key"))?;
            keys.push(NamedKey {
                name: name.to_string(),
                key: LessSafeKey::new(unbound),
            });
        }
        if keys.is_empty() {
            return Err(EncryptionError::Empty(path.to_path_buf()));
        }
        Ok(Keyring {
            keys,
            rng: SystemRandom::new(),
        })
    }

    /// Puts a fresh key first in `DIR/secrets-encryption.keys` (the next
    /// start of the server seals with it) and returns its name.
    ///
    /// # Errors
    /// The file cannot be read, parsed or written.
    pub fn rotate(pki_dir: &Path) -> Result<String, EncryptionError> {
        let path = pki_dir.join(KEYS_FILE);
        // Read once: the new file is this text with a line put first.
        let old = std::fs::read_to_string(&path).map_err(io(&path))?;
        let current = Self::parse(&path, &old)?;
        let mut n = current.keys.len() + 1;
        let name = loop {
            let candidate = format!("key{n}");
            if current.keys.iter().all(|k| k.name != candidate) {
                break candidate;
            }
            n += 1;
        };
        let new = key_line(&name, &random_key(&current.rng)?) + &old;
        write_private(&path, &new)?;
        Ok(name)
    }

    /// The name of the key that seals.
    #[must_use]
    pub fn primary(&self) -> &str {
        &self.keys[0].name
    }

    /// Every key's name, the sealing one first.
    #[must_use]
    pub fn names(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.name.as_str()).collect()
    }

    /// The value to store under `key`: sealed when `key` is a Secret's.
    ///
    /// # Errors
    /// The random generator failed.
    pub fn seal(&self, key: &[u8], plain: &[u8]) -> Result<Vec<u8>, EncryptionError> {
        if !is_sealed_key(key) {
            return Ok(plain.to_vec());
        }
        let k = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| EncryptionError::Random)?;
        let mut out =
            Vec::with_capacity(PREFIX.len() + k.name.len() + 1 + NONCE_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(PREFIX);
        out.extend_from_slice(k.name.as_bytes());
        out.push(b':');
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        k.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key),
                &mut body,
            )
            .map_err(|_| EncryptionError::Random)?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// The plain value of `stored` under `key`: opened when sealed,
    /// borrowed as it is otherwise.
    ///
    /// # Errors
    /// A sealed value whose key is unknown, that is cut short, or that
    /// does not authenticate.
    pub fn open<'a>(&self, key: &[u8], stored: &'a [u8]) -> Result<Cow<'a, [u8]>, EncryptionError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(Cow::Borrowed(stored));
        };
        let name = sealed_with(stored).ok_or(EncryptionError::Malformed)?;
        let rest = &rest[name.len() + 1..];
        let k = self
            .keys
            .iter()
            .find(|k| k.name == name)
            .ok_or_else(|| EncryptionError::UnknownKey(name.to_string()))?;
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(EncryptionError::Malformed);
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| EncryptionError::Malformed)?;
        let mut buf = body.to_vec();
        let plain_len = k
            .key
            .open_in_place(nonce, Aad::from(key), &mut buf)
            .map_err(|_| EncryptionError::Open(name.to_string()))?
            .len();
        buf.truncate(plain_len);
        Ok(Cow::Owned(buf))
    }

    /// Whether a value stored under `key` should be sealed again: it is a
    /// Secret's and is plaintext or sealed with another key than the first.
    #[must_use]
    pub fn needs_reseal(&self, key: &[u8], stored: &[u8]) -> bool {
        is_sealed_key(key) && sealed_with(stored) != Some(self.primary())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET_KEY: &[u8] = b"/registry/secrets/default/s1";

    fn ring_in(dir: &Path) -> Keyring {
        Keyring::load_or_create(dir).unwrap()
    }

    #[test]
    fn secrets_are_sealed_and_open_again_other_kinds_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let ring = ring_in(dir.path());
        let plain = br#"{"data":{"password":"aHVudGVyMg=="}}"#;
        let sealed = ring.seal(SECRET_KEY, plain).unwrap();
        assert!(sealed.starts_with(b"k8s:enc:aesgcm:v1:key1:"));
        assert!(!sealed.windows(8).any(|w| w == b"aHVudGVy"));
        assert_eq!(&*ring.open(SECRET_KEY, &sealed).unwrap(), plain);
        // Two seals of the same value differ (fresh nonces).
        assert_ne!(sealed, ring.seal(SECRET_KEY, plain).unwrap());

        let cm = b"/registry/configmaps/default/c";
        assert_eq!(ring.seal(cm, plain).unwrap(), plain);
        assert!(matches!(ring.open(cm, plain).unwrap(), Cow::Borrowed(_)));
        // Plaintext under a Secret's key (from before encryption) reads.
        assert_eq!(&*ring.open(SECRET_KEY, plain).unwrap(), plain);
        assert!(ring.needs_reseal(SECRET_KEY, plain));
        assert!(!ring.needs_reseal(SECRET_KEY, &sealed));
        assert!(!ring.needs_reseal(cm, plain));
    }

    #[test]
    fn tampered_moved_cut_and_unknown_values_do_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let ring = ring_in(dir.path());
        let sealed = ring.seal(SECRET_KEY, b"{}").unwrap();
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(
            ring.open(SECRET_KEY, &flipped),
            Err(EncryptionError::Open(_))
        ));
        // The store key is authenticated: a value copied to another
        // Secret's key does not open.
        assert!(matches!(
            ring.open(b"/registry/secrets/default/s2", &sealed),
            Err(EncryptionError::Open(_))
        ));
        assert!(matches!(
            ring.open(SECRET_KEY, &sealed[..sealed.len() - 20]),
            Err(EncryptionError::Malformed)
        ));
        assert!(matches!(
            ring.open(SECRET_KEY, b"k8s:enc:aesgcm:v1:nokey:0123456789012345678901234567"),
            Err(EncryptionError::UnknownKey(n)) if n == "nokey"
        ));
        assert!(matches!(
            ring.open(SECRET_KEY, b"k8s:enc:aesgcm:v1:no-colon-ever"),
            Err(EncryptionError::Malformed)
        ));
    }

    #[test]
    fn rotation_puts_a_new_key_first_and_old_values_still_open() {
        let dir = tempfile::tempdir().unwrap();
        let old = ring_in(dir.path());
        let sealed_old = old.seal(SECRET_KEY, b"{\"a\":1}").unwrap();
        assert_eq!(Keyring::rotate(dir.path()).unwrap(), "key2");
        let new = ring_in(dir.path());
        assert_eq!(new.names(), ["key2", "key1"]);
        assert_eq!(&*new.open(SECRET_KEY, &sealed_old).unwrap(), b"{\"a\":1}");
        assert!(new.needs_reseal(SECRET_KEY, &sealed_old));
        let sealed_new = new.seal(SECRET_KEY, b"{}").unwrap();
        assert_eq!(sealed_with(&sealed_new), Some("key2"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEYS_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn malformed_key_files_are_refused_with_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEYS_FILE);
        for (text, want) in [
            ("", "no keys"),
            ("key1\n", "line 1: expected `NAME BASE64-KEY`"),
            ("key1 !!!\n", "line 1: the key is not base64"),
            ("key1 AAAA\n", "line 1: an AES-256 key is 32 bytes"),
            ("b@d AAAA\n", "line 1: a key name is"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = Keyring::load(&path).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        let k = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        std::fs::write(&path, format!("# comment\na {k}\n\na {k}\n")).unwrap();
        let err = Keyring::load(&path).unwrap_err().to_string();
        assert!(err.contains("line 4: key \"a\" appears twice"), "{err}");
    }
}
