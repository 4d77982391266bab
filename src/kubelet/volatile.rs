//! Where the files of a pod's secret-bearing volumes live: the
//! service-account token, Secret and ConfigMap volumes.
//!
//! They are written to a memory-backed directory (`/dev/shm`, a tmpfs on
//! Linux) private to this kubelet, as Kubernetes keeps them on tmpfs:
//! - a token or a Secret never reaches the disk, so it is not left behind
//!   in free blocks or backups once the pod is gone;
//! - creating a file there costs no search for a free inode. On a disk
//!   that has freed many inodes recently (a node that just replaced
//!   thousands of pods), each new file's inode search was a large part of
//!   a pod start's CPU.
//!
//! The directory is `/dev/shm/wkube-<16 hex digits of the hash of the
//! kubelet's data directory>`, mode 0700, with an `owner` file naming that
//! data directory. A kubelet empties its own at start (its pods are
//! prepared again) and removes those whose data directory no longer
//! exists (a kubelet killed before it could clean up). Without a usable
//! `/dev/shm` (missing, under 256 MiB free, or the name taken by something
//! that is not our private directory) the files stay under the data
//! directory, as pod directories do.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The memory-backed filesystem looked for.
const SHM: &str = "/dev/shm";
/// Prefix of the directories kubelets create in [`SHM`].
const PREFIX: &str = "wkube-";
/// Most entries of [`SHM`] looked at when sweeping stale directories.
const SWEEP_LIMIT: usize = 4096;
/// Free space [`SHM`] must have to be used (a container's is often only
/// 64 MiB): a pod costs a page for its token, and Secret and ConfigMap
/// volumes up to a MiB each.
const MIN_FREE: u64 = 256 << 20;

/// The root of this kubelet's pod secret directories.
#[derive(Debug, Clone)]
pub struct VolatileRoot {
    root: PathBuf,
    in_memory: bool,
}

impl VolatileRoot {
    /// Sets up the root for the kubelet whose data directory is
    /// `data_dir` (which exists): empty, private, in memory when it can be.
    pub fn open(data_dir: &Path) -> VolatileRoot {
        let fallback = || VolatileRoot {
            root: data_dir.join("pods"),
            in_memory: false,
        };
        let Ok(data_dir) = data_dir.canonicalize() else {
            return fallback();
        };
        let free = rustix::fs::statvfs(SHM)
            .map(|v| v.f_bavail.saturating_mul(v.f_frsize))
            .unwrap_or(0);
        if free < MIN_FREE {
            tracing::info!(
                free,
                "{SHM} is missing or small; pod secrets are kept under the data directory"
            );
            return fallback();
        }
        sweep(Path::new(SHM));
        let digest = crate::runtime::cache::digest_of(data_dir.as_os_str().as_encoded_bytes());
        let hex = digest.trim_start_matches("sha256:");
        let root = Path::new(SHM).join(format!("{PREFIX}{}", &hex[..16]));
        match claim(&root, &data_dir) {
            Ok(()) => VolatileRoot {
                root,
                in_memory: true,
            },
            Err(e) => {
                tracing::warn!(
                    dir = %root.display(),
                    error = %e,
                    "cannot use a private directory in memory for pod secrets; they are kept under the data directory"
                );
                fallback()
            }
        }
    }

    /// The directory of pod `uid`'s secret-bearing files.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root.join(uid)
    }

    /// Whether the files are kept in memory.
    pub fn in_memory(&self) -> bool {
        self.in_memory
    }
}

/// Makes `root` this kubelet's: created private, or (left by an earlier
/// run of the same data directory) checked to be a private directory of
/// ours and emptied.
fn claim(root: &Path, data_dir: &Path) -> std::io::Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(root) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Anyone may create names in /dev/shm: the name must be a real
            // directory (not a link to elsewhere), ours and closed to
            // others before anything is written into it.
            let meta = std::fs::symlink_metadata(root)?;
            if !meta.is_dir()
                || meta.uid() != rustix::process::geteuid().as_raw()
                || meta.mode() & 0o077 != 0
            {
                return Err(std::io::Error::other(
                    "the name exists and is not a private directory of this user",
                ));
            }
            for entry in std::fs::read_dir(root)? {
                let path = entry?.path();
                if path.is_dir() {
                    std::fs::remove_dir_all(&path)?;
                } else {
                    std::fs::remove_file(&path)?;
                }
            }
        }
        Err(e) => return Err(e),
    }
    std::fs::write(root.join("owner"), data_dir.as_os_str().as_encoded_bytes())
}

/// Removes the directories of kubelets whose data directory is gone.
fn sweep(shm: &Path) {
    let Ok(entries) = std::fs::read_dir(shm) else {
        return;
    };
    let me = rustix::process::geteuid().as_raw();
    for entry in entries.take(SWEEP_LIMIT).flatten() {
        if !entry.file_name().to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let dir = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&dir) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != me {
            continue;
        }
        let Ok(owner) = std::fs::read(dir.join("owner")) else {
            continue;
        };
        let owner = PathBuf::from(String::from_utf8_lossy(&owner).into_owned());
        if !owner.exists() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_is_private_emptied_at_start_and_swept_once_its_data_dir_is_gone() {
        let data = tempfile::tempdir().unwrap();
        let root = VolatileRoot::open(data.path());
        if !root.in_memory() {
            // No /dev/shm here: the files stay under the data directory.
            assert_eq!(root.pod_dir("u"), data.path().join("pods").join("u"));
            return;
        }
        let dir = root.pod_dir("u1");
        assert!(dir.starts_with(SHM));
        let top = dir.parent().unwrap().to_path_buf();
        assert_eq!(
            std::fs::metadata(&top).unwrap().mode() & 0o777,
            0o700,
            "private"
        );
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), b"t").unwrap();

        // The same data directory again: the same root, emptied.
        let again = VolatileRoot::open(data.path());
        assert_eq!(again.pod_dir("u1"), dir);
        assert!(!dir.exists(), "emptied at start");

        // Its data directory gone, another kubelet's start removes it.
        drop(data);
        let other = tempfile::tempdir().unwrap();
        let _ = VolatileRoot::open(other.path());
        assert!(!top.exists(), "swept");
        let mine = VolatileRoot::open(other.path());
        let _ = std::fs::remove_dir_all(mine.pod_dir("x").parent().unwrap());
    }

    #[test]
    fn a_name_taken_by_a_link_is_not_used() {
        let data = tempfile::tempdir().unwrap();
        let probe = VolatileRoot::open(data.path());
        if !probe.in_memory() {
            return;
        }
        let top = probe.pod_dir("x").parent().unwrap().to_path_buf();
        std::fs::remove_dir_all(&top).unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), &top).unwrap();
        let root = VolatileRoot::open(data.path());
        let _ = std::fs::remove_file(&top);
        assert!(!root.in_memory(), "a link is refused");
        assert_eq!(root.pod_dir("u"), data.path().join("pods").join("u"));
    }
}
