//! Backups of the embedded store.
//!
//! A snapshot is the store file as of one commit, followed by the SHA-256
//! of those bytes: the layout `etcdctl snapshot save` writes (it copies
//! what the Maintenance `Snapshot` call streams, and etcd streams its
//! database followed by its hash). The trailer lets a restore refuse a
//! truncated or damaged file before it replaces anything.
//!
//! - [`save_stopped`] copies a stopped data directory's store;
//! - a running server answers `etcdctl snapshot save` (the etcd endpoint
//!   streams [`Backend::snapshot`](super::Backend::snapshot)'s copy);
//! - [`restore`] checks a file and installs it as a data directory's
//!   store, keeping the store it replaces beside it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Length of the trailer.
pub const HASH_LEN: usize = 32;

/// Why a snapshot could not be saved or restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read or write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a whole wkube snapshot: its SHA-256 trailer does not match (truncated, \
         damaged, or not a snapshot)"
    )]
    BadHash { path: PathBuf },
    #[error("{path} does not hold a store: {message}")]
    NotAStore { path: PathBuf, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Appends the SHA-256 trailer to a copied store file, making it a
/// snapshot. Returns its size.
///
/// # Errors
/// The file cannot be read or written.
pub fn seal(path: &Path) -> Result<u64, SnapshotError> {
    let hash = hash_of(path, None)?;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io(path))?;
    f.write_all(&hash).map_err(io(path))?;
    f.sync_all().map_err(io(path))?;
    f.metadata().map(|m| m.len()).map_err(io(path))
}

/// SHA-256 of the file's first `len` bytes (all of it when `None`).
fn hash_of(path: &Path, len: Option<u64>) -> Result<[u8; HASH_LEN], SnapshotError> {
    let f = std::fs::File::open(path).map_err(io(path))?;
    let mut reader: Box<dyn Read> = match len {
        Some(n) => Box::new(f.take(n)),
        None => Box::new(f),
    };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

/// Checks the trailer; returns the length of the store bytes before it.
///
/// # Errors
/// [`SnapshotError::BadHash`] for a file whose trailer does not match.
pub fn verify(path: &Path) -> Result<u64, SnapshotError> {
    let len = std::fs::metadata(path).map_err(io(path))?.len();
    if len < HASH_LEN as u64 {
        return Err(SnapshotError::BadHash {
            path: path.to_path_buf(),
        });
    }
    let body = len - HASH_LEN as u64;
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut trailer = [0u8; HASH_LEN];
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(body)).map_err(io(path))?;
    f.read_exact(&mut trailer).map_err(io(path))?;
    if hash_of(path, Some(body))? != trailer {
        return Err(SnapshotError::BadHash {
            path: path.to_path_buf(),
        });
    }
    Ok(body)
}

/// Writes a snapshot of the stopped store `store_file` to `dest`. The
/// store is opened first, so one left by a crash is recovered and the
/// copy is whole.
///
/// # Errors
/// The store cannot be opened or the copy written.
pub async fn save_stopped(store_file: &Path, dest: &Path) -> Result<u64, SnapshotError> {
    let store = super::redb::RedbStore::open(store_file, super::redb::RedbOptions::default())
        .map_err(|e| SnapshotError::NotAStore {
            path: store_file.to_path_buf(),
            message: e.to_string(),
        })?;
    let partial = dest.with_extension("part");
    super::Backend::snapshot(store.as_ref(), &partial)
        .await
        .map_err(|e| SnapshotError::NotAStore {
            path: store_file.to_path_buf(),
            message: e.to_string(),
        })?;
    store.close();
    let size = seal(&partial)?;
    std::fs::rename(&partial, dest).map_err(io(dest))?;
    Ok(size)
}

/// Installs the snapshot `file` as the store `store_file` (whose server
/// must be stopped). The store it replaces is kept as
/// `STORE.before-restore`. Returns the restored store's revision.
///
/// # Errors
/// A damaged snapshot, or one that does not open as a store; nothing is
/// replaced then.
pub async fn restore(file: &Path, store_file: &Path) -> Result<i64, SnapshotError> {
    let body = verify(file)?;
    let staged = store_file.with_extension("restoring");
    {
        let mut src = std::fs::File::open(file).map_err(io(file))?.take(body);
        let mut dst = std::fs::File::create(&staged).map_err(io(&staged))?;
        std::io::copy(&mut src, &mut dst).map_err(io(&staged))?;
        dst.sync_all().map_err(io(&staged))?;
    }
    // Open the staged copy before it replaces anything.
    let revision = {
        let store = super::redb::RedbStore::open(&staged, super::redb::RedbOptions::default())
            .map_err(|e| {
                let _ = std::fs::remove_file(&staged);
                SnapshotError::NotAStore {
                    path: file.to_path_buf(),
                    message: e.to_string(),
                }
            })?;
        let revision = store.committed_revision();
        store.close();
        revision
    };
    // Closed, the staged store holds everything its log did.
    let staged_log = super::wal::path_for(&staged);
    std::fs::remove_file(&staged_log).map_err(io(&staged_log))?;
    if store_file.exists() {
        let kept = store_file.with_extension("redb.before-restore");
        std::fs::rename(store_file, &kept).map_err(io(store_file))?;
        // The replaced store's log goes with it: a crash may have left
        // writes there that its redb file lacks, and replaying them on
        // the restored store would mix two histories.
        let log = super::wal::path_for(store_file);
        if log.exists() {
            let kept_log = super::wal::path_for(&kept);
            std::fs::rename(&log, &kept_log).map_err(io(&log))?;
        }
    }
    std::fs::rename(&staged, store_file).map_err(io(store_file))?;
    Ok(revision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redb::{RedbOptions, RedbStore};
    use crate::store::{Backend, KeyRange, PutRequest, RangeRequest};

    async fn put(store: &dyn Backend, key: &str) {
        store
            .put(PutRequest {
                key: bytes::Bytes::copy_from_slice(key.as_bytes()),
                value: bytes::Bytes::from_static(b"v"),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    async fn has(store: &dyn Backend, key: &str) -> bool {
        let r = store
            .range(RangeRequest {
                range: KeyRange::single(key.to_string()),
                ..Default::default()
            })
            .await
            .unwrap();
        !r.kvs.is_empty()
    }

    #[tokio::test]
    async fn a_snapshot_restores_the_state_it_was_taken_at() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("store.redb");
        let snap = dir.path().join("snap.db");
        {
            let store = RedbStore::open(&file, RedbOptions::default()).unwrap();
            put(store.as_ref(), "/before").await;
            let at = store.snapshot(&snap).await.unwrap().revision;
            assert_eq!(at, store.committed_revision());
            put(store.as_ref(), "/after").await;
            store.close();
        }
        seal(&snap).unwrap();
        let revision = restore(&snap, &file).await.unwrap();
        assert!(revision >= 2);
        assert!(file.with_extension("redb.before-restore").exists());
        let store = RedbStore::open(&file, RedbOptions::default()).unwrap();
        assert!(has(store.as_ref(), "/before").await);
        assert!(!has(store.as_ref(), "/after").await);
    }

    #[tokio::test]
    async fn a_damaged_or_foreign_file_replaces_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("store.redb");
        {
            let store = RedbStore::open(&file, RedbOptions::default()).unwrap();
            put(store.as_ref(), "/kept").await;
            store.close();
        }
        let snap = dir.path().join("snap.db");
        save_stopped(&file, &snap).await.unwrap();
        // One flipped byte: the trailer no longer matches.
        let mut bytes = std::fs::read(&snap).unwrap();
        bytes[100] ^= 0xff;
        let bad = dir.path().join("bad.db");
        std::fs::write(&bad, &bytes).unwrap();
        assert!(matches!(
            restore(&bad, &file).await,
            Err(SnapshotError::BadHash { .. })
        ));
        // A file with a matching trailer that is no store.
        let foreign = dir.path().join("foreign.db");
        std::fs::write(&foreign, b"not a database at all").unwrap();
        seal(&foreign).unwrap();
        assert!(matches!(
            restore(&foreign, &file).await,
            Err(SnapshotError::NotAStore { .. })
        ));
        let store = RedbStore::open(&file, RedbOptions::default()).unwrap();
        assert!(has(store.as_ref(), "/kept").await);
    }
}
