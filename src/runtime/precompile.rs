//! Compiling modules for other nodes' engines (the API server's side of
//! "compile once per architecture"): an engine per [`EngineProfile`],
//! configured by the same [`apply_codegen`] as a node's own engine but for
//! the profile's target, producing artifacts that node deserializes.
//!
//! Only in builds with the `compiler` feature.

use std::collections::HashMap;

use parking_lot::Mutex;
use wasmtime::{Config, Engine};

use super::RuntimeError;
use super::cache::ArtifactKind;
use super::profile::{EngineProfile, SUPPORTED_TARGETS, apply_codegen};

/// Compiling engines by profile. At most one per supported target and
/// memory layout, so the map stays tiny.
#[derive(Default)]
pub struct Precompiler {
    engines: Mutex<HashMap<EngineProfile, Engine>>,
}

impl Precompiler {
    pub fn new() -> Precompiler {
        Precompiler::default()
    }

    /// Compiles `wasm` (a component or a core module) for `profile`. CPU
    /// heavy and single-threaded: call from `spawn_blocking`, with the
    /// caller bounding how many run at once.
    ///
    /// # Errors
    /// [`RuntimeError::InvalidModule`] when the bytes do not validate,
    /// [`RuntimeError::Engine`] for a profile no engine can be built for.
    pub fn precompile(
        &self,
        profile: &EngineProfile,
        wasm: &[u8],
    ) -> Result<(ArtifactKind, Vec<u8>), RuntimeError> {
        let kind = ArtifactKind::of_wasm(wasm)?;
        let engine = self.engine(profile)?;
        let invalid = |e: wasmtime::Error| RuntimeError::InvalidModule {
            reason: format!("{e:#}"),
        };
        let artifact = match kind {
            ArtifactKind::Component => engine.precompile_component(wasm).map_err(invalid)?,
            ArtifactKind::Module => engine.precompile_module(wasm).map_err(invalid)?,
        };
        Ok((kind, artifact))
    }

    fn engine(&self, profile: &EngineProfile) -> Result<Engine, RuntimeError> {
        if !SUPPORTED_TARGETS.contains(&profile.target.as_str()) {
            return Err(RuntimeError::Engine(format!(
                "unsupported target {:?}",
                profile.target
            )));
        }
        let mut engines = self.engines.lock();
        if let Some(e) = engines.get(profile) {
            return Ok(e.clone());
        }
        let mut c = Config::new();
        c.target(&profile.target)
            .map_err(|e| RuntimeError::Engine(format!("target {}: {e:#}", profile.target)))?;
        apply_codegen(&mut c, profile.memory);
        // One compile, one core: the server bounds compiles by count, and a
        // compile must not take every core from the API server.
        c.parallel_compilation(false);
        let engine = Engine::new(&c).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        engines.insert(profile.clone(), engine.clone());
        Ok(engine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::cache::digest_of;
    use crate::runtime::profile::MemoryLayout;
    use crate::runtime::testutil::{config, guest};
    use crate::runtime::{ModuleKind, PoolingMode, Runtime, RuntimeConfig, RuntimeError};

    /// A runtime that never compiles, like a build without the compiler.
    fn precompiled_only(pooling: PoolingMode) -> (Runtime, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = Runtime::new(RuntimeConfig {
            cache_dir: dir.path().join("cache"),
            pooling,
            compile: false,
            ..config()
        })
        .expect("runtime");
        (rt, dir)
    }

    #[test]
    fn code_compiled_for_a_nodes_profile_loads_there_without_a_compiler() {
        let pc = Precompiler::new();
        for pooling in [PoolingMode::Auto, PoolingMode::Never, PoolingMode::Small] {
            let (rt, _dir) = precompiled_only(pooling);
            for (name, kind) in [
                ("hello-http", ModuleKind::Http),
                ("job", ModuleKind::Command),
                ("hello-p1", ModuleKind::CoreCommand),
            ] {
                let wasm = guest(name);
                let digest = digest_of(&wasm);
                let err = rt.load(&digest, &wasm).unwrap_err();
                assert!(
                    matches!(err, RuntimeError::NotPrecompiled { .. }),
                    "{name}: {err}"
                );
                let (akind, artifact) = pc.precompile(rt.profile(), &wasm).expect(name);
                let loaded = rt
                    .load_precompiled(&digest, akind, &artifact)
                    .unwrap_or_else(|e| panic!("{name} under {pooling:?}: {e}"));
                assert_eq!(loaded.kind(), kind, "{name}");
            }
            let s = rt.cache_stats();
            assert_eq!((s.compiles, s.precompiled), (0, 3), "{pooling:?}");
        }
    }

    #[test]
    fn a_precompiled_module_is_kept_on_disk_for_the_next_start() {
        let pc = Precompiler::new();
        let (rt, dir) = precompiled_only(PoolingMode::Never);
        let wasm = guest("job");
        let digest = digest_of(&wasm);
        let (kind, artifact) = pc.precompile(rt.profile(), &wasm).unwrap();
        rt.load_precompiled(&digest, kind, &artifact).unwrap();
        drop(rt);
        let rt = Runtime::new(RuntimeConfig {
            cache_dir: dir.path().join("cache"),
            pooling: PoolingMode::Never,
            compile: false,
            ..config()
        })
        .unwrap();
        let loaded = rt.load_cached(&digest).unwrap().expect("from disk");
        assert_eq!(loaded.kind(), ModuleKind::Command);
        assert_eq!(rt.cache_stats().disk_hits, 1);
    }

    #[test]
    fn code_for_another_memory_layout_is_refused_by_wasmtime() {
        let pc = Precompiler::new();
        let (rt, _dir) = precompiled_only(PoolingMode::Never);
        assert_eq!(rt.profile().memory, MemoryLayout::Guarded);
        let wasm = guest("hello-http");
        let small = EngineProfile {
            memory: MemoryLayout::Small,
            ..rt.profile().clone()
        };
        let (kind, artifact) = pc.precompile(&small, &wasm).unwrap();
        let err = rt
            .load_precompiled(&digest_of(&wasm), kind, &artifact)
            .unwrap_err();
        assert!(
            matches!(err, RuntimeError::IncompatibleArtifact { .. }),
            "{err}"
        );
    }

    #[test]
    fn modules_are_cross_compiled_for_aarch64() {
        let pc = Precompiler::new();
        let arm = EngineProfile {
            target: "aarch64-unknown-linux-gnu".into(),
            ..EngineProfile::host(MemoryLayout::Small)
        };
        let (kind, artifact) = pc.precompile(&arm, &guest("hello-http")).unwrap();
        assert_eq!(kind, ArtifactKind::Component);
        // An ELF object for e_machine 183 (aarch64).
        assert!(artifact.starts_with(b"\x7fELF\x02\x01"));
        assert_eq!(u16::from_le_bytes([artifact[18], artifact[19]]), 183);
    }
}
