//! Test helpers: the real guest examples, built once per test process.

use std::path::PathBuf;
use std::sync::OnceLock;

use super::{PoolingMode, Runtime, RuntimeConfig};

/// Builds `guest-examples/` once (the script is idempotent and fast when
/// warm) and returns `guest-examples/out/<name>.wasm`.
pub(crate) fn guest(name: &str) -> Vec<u8> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let out = BUILT.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("guest-examples");
        let status = std::process::Command::new(root.join("build.sh"))
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("running guest-examples/build.sh: {e}"))?;
        if !status.success() {
            return Err(format!("guest-examples/build.sh failed: {status}"));
        }
        Ok(root.join("out"))
    });
    match out {
        Ok(dir) => {
            let path = dir.join(format!("{name}.wasm"));
            std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        }
        Err(e) => panic!("guest examples unavailable (need the wasm32-wasip1/2 targets): {e}"),
    }
}

/// A configuration small enough for many runtimes in one test process.
pub(crate) fn config() -> RuntimeConfig {
    RuntimeConfig {
        pool_instances: 32,
        pooling: PoolingMode::Auto,
        ..RuntimeConfig::default()
    }
}

/// A runtime with a fresh cache directory (kept alive by the returned guard).
pub(crate) fn runtime_in() -> (Runtime, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::new(RuntimeConfig {
        cache_dir: dir.path().join("cache"),
        ..config()
    })
    .expect("runtime");
    (rt, dir)
}
