//! Content-addressed module cache: digest-verified bytes, or code the API
//! server compiled for this engine → compiled code (on disk, keyed by
//! digest and engine profile) → pre-instantiated component (in memory,
//! shared by every pod of the module).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker as ComponentLinker};
use wasmtime::{Engine, ExternType, InstancePre, Linker, Module};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use super::context::{P1State, PodState};
use super::engine::WkubeEngine;
use super::profile::EngineProfile;
use super::{RuntimeConfig, RuntimeError};

/// How a loaded module is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleKind {
    /// A component exporting `wasi:http/incoming-handler`: an instance per
    /// request ([`super::HttpService`]).
    Http,
    /// A component exporting `wasi:cli/run`: runs to its exit code.
    Command,
    /// A core module exporting `_start` (WASI preview 1): runs to its exit
    /// code.
    CoreCommand,
}

/// The ready-to-instantiate form of a module.
pub(crate) enum Prepared {
    Http(ProxyPre<PodState>),
    Command(CommandPre<PodState>),
    Core(InstancePre<P1State>),
}

/// A verified, compiled and pre-instantiated module. Shared (`Arc`) by every
/// pod that runs the same digest.
pub struct LoadedModule {
    digest: String,
    kind: ModuleKind,
    pub(crate) prepared: Prepared,
    /// Preemption granularity, copied from the runtime configuration.
    pub(crate) yield_every_ticks: u64,
    /// Epoch period, to bound the CPU time charged per slice.
    pub(crate) epoch_tick: std::time::Duration,
}

impl LoadedModule {
    /// How this module is run.
    pub fn kind(&self) -> ModuleKind {
        self.kind
    }

    /// The `sha256:<hex>` digest it was loaded under.
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

impl std::fmt::Debug for LoadedModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModule")
            .field("digest", &self.digest)
            .field("kind", &self.kind)
            .finish()
    }
}

/// Counters, mostly for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Modules compiled by cranelift on this node.
    pub compiles: u64,
    /// Modules loaded from a compiled artifact on disk.
    pub disk_hits: u64,
    /// Modules loaded from code the API server compiled for this node's
    /// engine profile.
    pub precompiled: u64,
    /// Loads answered from memory.
    pub memory_hits: u64,
}

/// What a compiled artifact holds: a component or a core module (they are
/// deserialized by different wasmtime types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactKind {
    Component,
    Module,
}

impl ArtifactKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::Component => "component",
            ArtifactKind::Module => "module",
        }
    }

    pub fn parse(s: &str) -> Option<ArtifactKind> {
        match s {
            "component" => Some(ArtifactKind::Component),
            "module" => Some(ArtifactKind::Module),
            _ => None,
        }
    }

    /// Tells a component from a core module by the version/layer word
    /// after the `\0asm` magic.
    ///
    /// # Errors
    /// [`RuntimeError::InvalidModule`] for anything else.
    pub fn of_wasm(bytes: &[u8]) -> Result<ArtifactKind, RuntimeError> {
        match bytes.get(..8) {
            Some([0, b'a', b's', b'm', 0x01, 0, 0, 0]) => Ok(ArtifactKind::Module),
            Some([0, b'a', b's', b'm', _, _, 0x01, 0]) => Ok(ArtifactKind::Component),
            _ => Err(RuntimeError::InvalidModule {
                reason: "not a WebAssembly module or component (bad preamble)".into(),
            }),
        }
    }

    fn file_suffix(self) -> &'static str {
        match self {
            ArtifactKind::Component => "component.cwasm",
            ArtifactKind::Module => "module.cwasm",
        }
    }
}

/// Compiled code of either kind, before linking.
enum Code {
    Component(Component),
    Module(Module),
}

/// One slot per digest, locked while that digest compiles so two pods of
/// the same new module compile it once; other digests are not blocked.
type Slot = Arc<Mutex<Option<Arc<LoadedModule>>>>;

pub(crate) struct ModuleCache {
    engine: Engine,
    /// `<cache_dir>/engine-<fingerprint>`: artifacts of another engine
    /// profile (other wasmtime version, target or memory layout) are never
    /// even looked at.
    dir: PathBuf,
    /// Whether this runtime compiles modules itself (false: only code the
    /// API server compiled runs).
    compile: bool,
    component_linker: ComponentLinker<PodState>,
    module_linker: Linker<P1State>,
    slots: Mutex<HashMap<String, Slot>>,
    compiles: AtomicU64,
    disk_hits: AtomicU64,
    precompiled: AtomicU64,
    memory_hits: AtomicU64,
    yield_every_ticks: u64,
    epoch_tick: std::time::Duration,
}

impl ModuleCache {
    pub(crate) fn new(
        engine: &WkubeEngine,
        config: &RuntimeConfig,
        profile: &EngineProfile,
    ) -> Result<ModuleCache, RuntimeError> {
        let dir = config
            .cache_dir
            .join(format!("engine-{}", profile.fingerprint()));
        let engine = engine.engine.clone();
        create_private_dir(&config.cache_dir)?;
        create_private_dir(&dir)?;

        let link_err = |e: wasmtime::Error| RuntimeError::Engine(format!("linker: {e:#}"));
        let mut component_linker = ComponentLinker::new(&engine);
        // Rust's std imports wasi:cli and friends even in HTTP components,
        // so both kinds get the whole WASI p2 command world plus wasi:http.
        wasmtime_wasi::p2::add_to_linker_async(&mut component_linker).map_err(link_err)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut component_linker)
            .map_err(link_err)?;
        let mut module_linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut module_linker, |s: &mut P1State| &mut s.wasi)
            .map_err(link_err)?;

        Ok(ModuleCache {
            engine,
            dir,
            compile: config.compile && cfg!(feature = "compiler"),
            component_linker,
            module_linker,
            slots: Mutex::new(HashMap::new()),
            compiles: AtomicU64::new(0),
            disk_hits: AtomicU64::new(0),
            precompiled: AtomicU64::new(0),
            memory_hits: AtomicU64::new(0),
            yield_every_ticks: config.yield_every_ticks.max(1),
            epoch_tick: config.epoch_tick,
        })
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            compiles: self.compiles.load(Ordering::Relaxed),
            disk_hits: self.disk_hits.load(Ordering::Relaxed),
            precompiled: self.precompiled.load(Ordering::Relaxed),
            memory_hits: self.memory_hits.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn compiles_locally(&self) -> bool {
        self.compile
    }

    pub(crate) fn get(&self, digest: &str) -> Option<Arc<LoadedModule>> {
        let slot = self.slots.lock().get(digest).cloned()?;
        slot.lock().clone()
    }

    fn slot(&self, digest: &str) -> Slot {
        self.slots
            .lock()
            .entry(digest.to_string())
            .or_default()
            .clone()
    }

    pub(crate) fn load(
        &self,
        digest: &str,
        bytes: &[u8],
    ) -> Result<Arc<LoadedModule>, RuntimeError> {
        let hex = parse_digest(digest)?;
        // Verified even on a memory hit: the caller's bytes must be what
        // the digest says, or it has a bug or a corrupted blob to report.
        let actual = hex::encode(Sha256::digest(bytes));
        if actual != hex {
            return Err(RuntimeError::DigestMismatch {
                expected: digest.to_string(),
                actual: format!("sha256:{actual}"),
            });
        }
        let slot = self.slot(digest);
        let mut guard = slot.lock();
        if let Some(loaded) = guard.as_ref() {
            self.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(loaded.clone());
        }
        let kind = ArtifactKind::of_wasm(bytes)?;
        let code = match self.cached_code(hex, kind) {
            Some(code) => code,
            None => self.compile(hex, kind, bytes)?,
        };
        self.finish(digest, code, &mut guard)
    }

    /// The module from memory or from an artifact on disk, without its
    /// source; `None` when neither has it.
    pub(crate) fn load_cached(
        &self,
        digest: &str,
    ) -> Result<Option<Arc<LoadedModule>>, RuntimeError> {
        let hex = parse_digest(digest)?;
        let slot = self.slot(digest);
        let mut guard = slot.lock();
        if let Some(loaded) = guard.as_ref() {
            self.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(loaded.clone()));
        }
        for kind in [ArtifactKind::Component, ArtifactKind::Module] {
            if let Some(code) = self.cached_code(hex, kind) {
                return self.finish(digest, code, &mut guard).map(Some);
            }
        }
        Ok(None)
    }

    /// Loads code the API server compiled for this engine's profile. The
    /// caller has checked the bytes against the sha256 the server
    /// published; they are kept on disk so a restart downloads nothing.
    pub(crate) fn load_precompiled(
        &self,
        digest: &str,
        kind: ArtifactKind,
        artifact: &[u8],
    ) -> Result<Arc<LoadedModule>, RuntimeError> {
        let hex = parse_digest(digest)?;
        let slot = self.slot(digest);
        let mut guard = slot.lock();
        if let Some(loaded) = guard.as_ref() {
            self.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(loaded.clone());
        }
        let path = self.path_of(hex, kind);
        self.store_artifact(&path, artifact)?;
        // SAFETY: deserializing maps the bytes as native code, which
        // wasmtime cannot sandbox. They come only from the API server this
        // node trusts (TLS verified against the cluster CA, the request
        // authenticated with the node's credential; the kubelet refuses
        // precompiled code over plain HTTP), the caller verified them
        // against the sha256 the server recorded when it compiled them
        // from the digest-verified module, and wasmtime checks the
        // artifact's wasmtime version, target, flags and tunables against
        // this engine before it maps anything.
        let code = match kind {
            ArtifactKind::Component => {
                unsafe { Component::deserialize_file(&self.engine, &path) }.map(Code::Component)
            }
            ArtifactKind::Module => {
                unsafe { Module::deserialize_file(&self.engine, &path) }.map(Code::Module)
            }
        };
        let code = code.map_err(|e| {
            let _ = std::fs::remove_file(&path);
            RuntimeError::IncompatibleArtifact {
                digest: digest.to_string(),
                reason: format!("{e:#}"),
            }
        })?;
        self.precompiled.fetch_add(1, Ordering::Relaxed);
        self.finish(digest, code, &mut guard)
    }

    fn path_of(&self, hex: &str, kind: ArtifactKind) -> PathBuf {
        self.dir.join(format!("{hex}.{}", kind.file_suffix()))
    }

    /// The artifact cached on disk for `hex`, if it loads.
    fn cached_code(&self, hex: &str, kind: ArtifactKind) -> Option<Code> {
        let path = self.path_of(hex, kind);
        if !path.exists() {
            return None;
        }
        // SAFETY: `deserialize_file` trusts the file to be a wasmtime
        // artifact (it maps it executable). The file was written by
        // `store_artifact`, either from this engine's own compilation of
        // the digest-verified source or from code the API server compiled
        // for this engine profile and `load_precompiled` verified: the
        // directory is private to this user (0700), named after the engine
        // profile's fingerprint, the file is named after the sha256 of the
        // source, and appears only by an atomic rename of a complete file.
        let code = match kind {
            ArtifactKind::Component => {
                unsafe { Component::deserialize_file(&self.engine, &path) }.map(Code::Component)
            }
            ArtifactKind::Module => {
                unsafe { Module::deserialize_file(&self.engine, &path) }.map(Code::Module)
            }
        };
        match code {
            Ok(code) => {
                self.disk_hits.fetch_add(1, Ordering::Relaxed);
                Some(code)
            }
            Err(e) => {
                tracing::warn!("discarding cached {}: {e:#}", path.display());
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Compiles `bytes` with cranelift and keeps the artifact on disk.
    #[cfg(feature = "compiler")]
    fn compile(&self, hex: &str, kind: ArtifactKind, bytes: &[u8]) -> Result<Code, RuntimeError> {
        if !self.compile {
            return Err(RuntimeError::NotPrecompiled {
                digest: format!("sha256:{hex}"),
            });
        }
        self.compiles.fetch_add(1, Ordering::Relaxed);
        let path = self.path_of(hex, kind);
        match kind {
            ArtifactKind::Component => {
                let c = Component::new(&self.engine, bytes).map_err(invalid)?;
                self.store_artifact(&path, &c.serialize().map_err(invalid)?)?;
                Ok(Code::Component(c))
            }
            ArtifactKind::Module => {
                let m = Module::new(&self.engine, bytes).map_err(invalid)?;
                self.store_artifact(&path, &m.serialize().map_err(invalid)?)?;
                Ok(Code::Module(m))
            }
        }
    }

    /// Without cranelift nothing compiles here.
    #[cfg(not(feature = "compiler"))]
    fn compile(&self, hex: &str, _: ArtifactKind, _: &[u8]) -> Result<Code, RuntimeError> {
        Err(RuntimeError::NotPrecompiled {
            digest: format!("sha256:{hex}"),
        })
    }

    /// Links `code` into the slot held by `guard`.
    fn finish(
        &self,
        digest: &str,
        code: Code,
        guard: &mut Option<Arc<LoadedModule>>,
    ) -> Result<Arc<LoadedModule>, RuntimeError> {
        let prepared = match code {
            Code::Component(c) => self.prepare_component(&c)?,
            Code::Module(m) => self.prepare_module(&m)?,
        };
        let kind = match &prepared {
            Prepared::Http(_) => ModuleKind::Http,
            Prepared::Command(_) => ModuleKind::Command,
            Prepared::Core(_) => ModuleKind::CoreCommand,
        };
        let loaded = Arc::new(LoadedModule {
            digest: digest.to_string(),
            kind,
            prepared,
            yield_every_ticks: self.yield_every_ticks,
            epoch_tick: self.epoch_tick,
        });
        *guard = Some(loaded.clone());
        Ok(loaded)
    }

    fn prepare_component(&self, component: &Component) -> Result<Prepared, RuntimeError> {
        let pre = self
            .component_linker
            .instantiate_pre(component)
            .map_err(invalid)?;
        if let Ok(proxy) = ProxyPre::new(pre.clone()) {
            return Ok(Prepared::Http(proxy));
        }
        CommandPre::new(pre)
            .map(Prepared::Command)
            .map_err(|_| RuntimeError::InvalidModule {
                reason: "component exports neither wasi:http/incoming-handler nor wasi:cli/run"
                    .into(),
            })
    }

    fn prepare_module(&self, module: &Module) -> Result<Prepared, RuntimeError> {
        if !matches!(module.get_export("_start"), Some(ExternType::Func(_))) {
            return Err(RuntimeError::InvalidModule {
                reason: "core module does not export a `_start` function".into(),
            });
        }
        let pre = self
            .module_linker
            .instantiate_pre(module)
            .map_err(invalid)?;
        Ok(Prepared::Core(pre))
    }

    /// Writes a complete artifact under a temporary name and renames it, so
    /// a reader never maps a half-written file.
    fn store_artifact(&self, path: &Path, bytes: &[u8]) -> Result<(), RuntimeError> {
        let io = |source| RuntimeError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir).map_err(io)?;
        tmp.write_all(bytes).map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        Ok(())
    }
}

fn invalid(e: wasmtime::Error) -> RuntimeError {
    RuntimeError::InvalidModule {
        reason: format!("{e:#}"),
    }
}

/// The hex part of a `sha256:<64 lowercase hex>` digest.
fn parse_digest(digest: &str) -> Result<&str, RuntimeError> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(hex)
        }
        _ => Err(RuntimeError::MalformedDigest(digest.to_string())),
    }
}

fn create_private_dir(dir: &Path) -> Result<(), RuntimeError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io = |source| RuntimeError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io)?;
    // An existing directory keeps its mode under `recursive`; tighten it.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::testutil::{guest, runtime_in};
    use crate::runtime::{Runtime, RuntimeConfig};

    #[test]
    fn garbage_bytes_are_an_invalid_module() {
        let (rt, _dir) = runtime_in();
        let bytes = b"this is not wasm at all";
        let err = rt.load(&digest_of(bytes), bytes).unwrap_err();
        assert!(matches!(err, RuntimeError::InvalidModule { .. }), "{err}");
    }

    #[test]
    fn a_truncated_component_is_an_invalid_module() {
        let (rt, _dir) = runtime_in();
        let bytes = &guest("hello-http")[..200];
        let err = rt.load(&digest_of(bytes), bytes).unwrap_err();
        assert!(matches!(err, RuntimeError::InvalidModule { .. }), "{err}");
    }

    #[test]
    fn bytes_that_do_not_match_the_digest_are_refused() {
        let (rt, _dir) = runtime_in();
        let bytes = guest("hello-http");
        let wrong = digest_of(b"something else");
        let err = rt.load(&wrong, &bytes).unwrap_err();
        assert!(matches!(err, RuntimeError::DigestMismatch { .. }), "{err}");
        let err = rt.load("sha256:XYZ", &bytes).unwrap_err();
        assert!(matches!(err, RuntimeError::MalformedDigest(_)), "{err}");
    }

    #[test]
    fn a_second_load_of_the_same_digest_neither_compiles_nor_deserializes() {
        let (rt, _dir) = runtime_in();
        let bytes = guest("hello-http");
        let d = digest_of(&bytes);
        let a = rt.load(&d, &bytes).expect("first load");
        let b = rt.load(&d, &bytes).expect("second load");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.kind(), ModuleKind::Http);
        let s = rt.cache_stats();
        assert_eq!((s.compiles, s.disk_hits, s.memory_hits), (1, 0, 1));
    }

    #[test]
    fn a_restarted_runtime_loads_the_compiled_artifact_from_disk() {
        let (rt, dir) = runtime_in();
        let bytes = guest("job");
        let d = digest_of(&bytes);
        rt.load(&d, &bytes).expect("compile");
        drop(rt);
        let rt = Runtime::new(RuntimeConfig {
            cache_dir: dir.path().join("cache"),
            ..crate::runtime::testutil::config()
        })
        .expect("runtime");
        let loaded = rt.load(&d, &bytes).expect("from disk");
        assert_eq!(loaded.kind(), ModuleKind::Command);
        let s = rt.cache_stats();
        assert_eq!((s.compiles, s.disk_hits), (0, 1));
    }

    #[test]
    fn kinds_are_told_apart_by_their_exports() {
        let (rt, _dir) = runtime_in();
        for (name, kind) in [
            ("hello-http", ModuleKind::Http),
            ("echo-http", ModuleKind::Http),
            ("job", ModuleKind::Command),
            ("hello-p1", ModuleKind::CoreCommand),
        ] {
            let bytes = guest(name);
            let loaded = rt.load(&digest_of(&bytes), &bytes).expect(name);
            assert_eq!(loaded.kind(), kind, "{name}");
        }
    }
}
