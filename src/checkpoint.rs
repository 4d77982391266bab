//! Checkpoints: what an agent keeps on its own disk so it can run, and
//! restart, while no API server answers.
//!
//! An edge node may lose its uplink for hours and be power-cycled in the
//! meantime. To start its pods again it needs what it last knew: the pods
//! bound to it, the Secrets, ConfigMaps, tokens and module tags they
//! use, and the Services and endpoints its proxy routes by. Each part
//! writes one file here, replaced whole, at most once per
//! [`DEBOUNCE`] while it changes.
//!
//! Every file is sealed with AES-256-GCM under a key of the node's own
//! (`checkpoint.key`, mode 0600, beside the node's credentials). The file's
//! name is the associated data, so one file cannot be passed off as
//! another. Secrets are therefore never in plain text in a checkpoint; a
//! copy of the directory without the key reveals nothing.
//!
//! ```text
//! DIR/<name>.sealed   "wkcp1" || nonce (12 bytes) || ciphertext || tag
//! ```

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

/// How long a part waits after a change before it writes, so a burst of
/// changes costs one write.
pub const DEBOUNCE: Duration = Duration::from_secs(1);

/// A part whose snapshot and write take a while (a node with thousands of
/// pods writes tens of megabytes) waits this many times as long as the
/// last one took before it writes again, so keeping checkpoints costs at
/// most about a twentieth of a core however large they grow.
const COST_RATIO: u32 = 20;

const MAGIC: &[u8] = b"wkcp1";
const KEY_LEN: usize = 32;

/// Why a checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: not a 32-byte key")]
    BadKey(PathBuf),
    #[error("the system random generator failed")]
    Random,
    #[error("{0}: not a checkpoint, or sealed with another key, or altered")]
    Open(PathBuf),
    #[error("{path}: {message}")]
    Encode { path: PathBuf, message: String },
}

/// The node's checkpoint directory and the key that seals its files.
#[derive(Clone)]
pub struct Checkpoint {
    dir: PathBuf,
    key: Arc<LessSafeKey>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Checkpoint {
    /// Opens `dir` (created when absent) with the key at `key_path`,
    /// creating a fresh key when there is none.
    ///
    /// # Errors
    /// The directory or key cannot be created or read, or the key file is
    /// not a key.
    pub fn open(dir: &Path, key_path: &Path) -> Result<Checkpoint, CheckpointError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CheckpointError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let rng = SystemRandom::new();
        let bytes = match std::fs::read(key_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut b = vec![0u8; KEY_LEN];
                rng.fill(&mut b).map_err(|_| CheckpointError::Random)?;
                if let Some(parent) = key_path.parent() {
                    std::fs::create_dir_all(parent).map_err(io(parent))?;
                }
                crate::pki::write_private_file(key_path, &b).map_err(io(key_path))?;
                b
            }
            Err(e) => return Err(io(key_path)(e)),
        };
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| CheckpointError::BadKey(key_path.to_path_buf()))?;
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            key: Arc::new(LessSafeKey::new(key)),
            rng,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.sealed"))
    }

    /// The value last written under `name`; `None` when there is none or
    /// it cannot be opened (which is logged: the node then starts as if
    /// new, from the API server).
    pub fn read<T: DeserializeOwned>(&self, name: &str) -> Option<T> {
        let path = self.path(name);
        let sealed = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read a checkpoint");
                return None;
            }
        };
        let plain = match self.unseal(name, sealed) {
            Some(p) => p,
            None => {
                tracing::warn!(error = %CheckpointError::Open(path), "ignoring a checkpoint");
                return None;
            }
        };
        match serde_json::from_slice(&plain) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring a malformed checkpoint");
                None
            }
        }
    }

    /// Replaces the file `name` with `value`, atomically.
    ///
    /// # Errors
    /// The value cannot be encoded, or the file cannot be written.
    pub fn write<T: Serialize + ?Sized>(
        &self,
        name: &str,
        value: &T,
    ) -> Result<(), CheckpointError> {
        let path = self.path(name);
        let plain = serde_json::to_vec(value).map_err(|e| CheckpointError::Encode {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let sealed = self.seal(name, plain)?;
        crate::pki::write_private_file(&path, &sealed)
            .map_err(|source| CheckpointError::Io { path, source })
    }

    fn seal(&self, name: &str, mut plain: Vec<u8>) -> Result<Vec<u8>, CheckpointError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| CheckpointError::Random)?;
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut plain,
            )
            .map_err(|_| CheckpointError::Random)?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + plain.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&plain);
        Ok(out)
    }

    fn unseal(&self, name: &str, sealed: Vec<u8>) -> Option<Vec<u8>> {
        let rest = sealed.strip_prefix(MAGIC)?;
        if rest.len() < NONCE_LEN {
            return None;
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(name.as_bytes()), &mut body)
            .ok()?;
        let n = plain.len();
        body.truncate(n);
        Some(body)
    }

    /// Keeps the file `name` up to date until `stop`: after each
    /// notification of `changed` it waits [`DEBOUNCE`] (or longer after a
    /// costly write, see [`COST_RATIO`]), takes `snapshot()` and writes it
    /// on the blocking pool. A change still unwritten when `stop`
    /// resolves is written then.
    pub async fn keep<T, F>(
        self,
        name: &'static str,
        snapshot: F,
        changed: Arc<Notify>,
        stop: impl Future<Output = ()>,
    ) where
        T: Serialize + Send + 'static,
        F: Fn() -> T,
    {
        let mut stop = std::pin::pin!(stop);
        let mut pause = DEBOUNCE;
        loop {
            // A change already signalled is written even when `stop` is
            // ready too.
            let stopping = tokio::select! {
                biased;
                _ = changed.notified() => false,
                _ = &mut stop => break,
            };
            let stopping = stopping
                || tokio::select! {
                    _ = tokio::time::sleep(pause) => false,
                    _ = &mut stop => true,
                };
            let started = std::time::Instant::now();
            let value = snapshot();
            let this = self.clone();
            let written = tokio::task::spawn_blocking(move || this.write(name, &value)).await;
            pause = DEBOUNCE.max(started.elapsed().saturating_mul(COST_RATIO));
            match written {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot write a checkpoint"),
                Err(e) => tracing::warn!(error = %e, "writing a checkpoint"),
            }
            if stopping {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_reads_back_and_holds_no_plain_text() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoint::open(&dir.path().join("cp"), &dir.path().join("key")).unwrap();
        let value = serde_json::json!({"password": "hunter2-plain"});
        cp.write("secrets", &value).unwrap();
        let raw = std::fs::read(dir.path().join("cp/secrets.sealed")).unwrap();
        assert!(!raw.windows(6).any(|w| w == b"hunter"));
        assert_eq!(cp.read::<serde_json::Value>("secrets"), Some(value.clone()));
        // The same key file opens it again after a restart.
        let again = Checkpoint::open(&dir.path().join("cp"), &dir.path().join("key")).unwrap();
        assert_eq!(again.read::<serde_json::Value>("secrets"), Some(value));
    }

    #[test]
    fn a_file_under_another_name_or_key_or_altered_does_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoint::open(&dir.path().join("cp"), &dir.path().join("key")).unwrap();
        cp.write("pods", &vec![1, 2, 3]).unwrap();
        std::fs::copy(
            dir.path().join("cp/pods.sealed"),
            dir.path().join("cp/other.sealed"),
        )
        .unwrap();
        assert_eq!(cp.read::<Vec<i32>>("other"), None);
        let stranger = Checkpoint::open(&dir.path().join("cp"), &dir.path().join("key2")).unwrap();
        assert_eq!(stranger.read::<Vec<i32>>("pods"), None);
        let path = dir.path().join("cp/pods.sealed");
        let mut raw = std::fs::read(&path).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        std::fs::write(&path, raw).unwrap();
        assert_eq!(cp.read::<Vec<i32>>("pods"), None);
        assert_eq!(cp.read::<Vec<i32>>("absent"), None);
    }

    #[tokio::test]
    async fn keep_writes_after_changes_and_on_stop() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoint::open(dir.path(), &dir.path().join("key")).unwrap();
        let value = Arc::new(parking_lot::Mutex::new(1));
        let changed = Arc::new(Notify::new());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let v = value.clone();
        let task =
            tokio::spawn(
                cp.clone()
                    .keep("n", move || *v.lock(), changed.clone(), async move {
                        let _ = rx.await;
                    }),
            );
        changed.notify_one();
        tokio::time::sleep(DEBOUNCE * 2).await;
        assert_eq!(cp.read::<i32>("n"), Some(1));
        *value.lock() = 2;
        changed.notify_one();
        tx.send(()).unwrap();
        task.await.unwrap();
        assert_eq!(cp.read::<i32>("n"), Some(2));
    }
}
