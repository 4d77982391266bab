//! The Wasm runtime: wasmtime 48 embedded as wkube's container runtime.
//!
//! - [`engine`]: the one `Engine` of the process, its configuration
//!   (pooling allocator when the host allows it) and the epoch ticker.
//! - [`cache`]: digest-verified loading, compiled artifacts cached on disk and
//!   in memory, pre-instantiated components ([`LoadedModule`]).
//! - [`context`]: what a pod sees ([`PodContext`]) and its limits
//!   ([`PodLimits`]), turned into a per-instance store.
//! - [`http`]: HTTP components, one fresh instance per request
//!   ([`HttpService`]).
//! - [`command`]: `wasi:cli/run` components and core modules with `_start`,
//!   run to their exit code ([`run_command`]).
//!
//! The kubelet drives it as:
//!
//! ```ignore
//! let rt = Runtime::new(RuntimeConfig::default())?;     // once per process
//! let loaded = rt.load("sha256:…", &bytes)?;           // spawn_blocking on a miss
//! let limits = PodLimits { memory_bytes: Some(64 << 20), cpu: Some(Arc::new(CpuQuota::new(500))), ..Default::default() };
//! match loaded.kind() {
//!     ModuleKind::Http => {
//!         let svc = HttpService::new(loaded, ctx, limits)?; // one per pod container
//!         let resp = svc.handle(req).await;                  // one instance per request
//!     }
//!     ModuleKind::Command | ModuleKind::CoreCommand => {
//!         let status = run_command(&loaded, &ctx, &limits).await?; // status.code(), status.reason()
//!     }
//! }
//! ```

pub mod cache;
pub mod command;
pub mod context;
pub mod engine;
pub mod fair;
pub mod http;
pub mod pool;
#[cfg(feature = "compiler")]
pub mod precompile;
pub mod priority;
pub mod profile;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use cache::{ArtifactKind, CacheStats, LoadedModule, ModuleKind};
pub use command::{ExitStatus, run_command};
pub use context::{
    CPU_WINDOW, CpuQuota, GuestRequest, GuestResponse, LogSink, LogStream, MemoryMeter,
    OutboundPolicy, OutboundRouter, PodContext, PodLimits, Preopen, RoutedResponse,
};
pub use http::{HttpError, HttpService};

/// Failures of the runtime. Outcomes of running a guest (exit codes, OOM,
/// deadlines) are values ([`ExitStatus`], [`HttpError`]), not errors.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The bytes are not a loadable Wasm component or module for this host:
    /// not Wasm, invalid, importing what wkube does not provide, or
    /// exporting neither an HTTP handler nor an entry point.
    #[error("invalid module: {reason}")]
    InvalidModule { reason: String },
    /// The bytes do not hash to the digest they were fetched under.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    /// The digest is not of the form `sha256:<64 lowercase hex>`.
    #[error("malformed digest {0:?}: expected sha256:<64 hex digits>")]
    MalformedDigest(String),
    /// The on-disk cache could not be read or written.
    #[error("module cache {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The engine could not be built with the requested configuration.
    #[error("wasmtime engine: {0}")]
    Engine(String),
    /// A pod's WASI context could not be built (e.g. a volume directory is
    /// missing).
    #[error("pod context: {0}")]
    Context(String),
    /// Instantiation failed for a reason other than the guest's own
    /// behaviour (e.g. the instance pool is exhausted).
    #[error("instantiate: {0}")]
    Instantiate(String),
    /// No compiled code for the module is at hand and this runtime does not
    /// compile: built without the `compiler` feature, or configured to run
    /// only code the API server compiled.
    #[error(
        "module {digest} is not precompiled for this node, and this node does not compile modules itself"
    )]
    NotPrecompiled { digest: String },
    /// Precompiled code that wasmtime refuses to load into this engine
    /// (another version, target or setting).
    #[error("precompiled code for {digest} does not fit this engine: {reason}")]
    IncompatibleArtifact { digest: String, reason: String },
    /// The loaded module is not of the kind the caller asked to run.
    #[error("module is a {actual:?}, not runnable as {wanted}")]
    WrongKind {
        actual: ModuleKind,
        wanted: &'static str,
    },
}

/// Configuration of the process-wide runtime.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled artifacts are cached. Created with mode 0700.
    pub cache_dir: PathBuf,
    /// Period of the epoch ticker; the granularity of preemption and
    /// deadlines.
    pub epoch_tick: Duration,
    /// Ticks a guest may run before it yields to the executor, so a
    /// spinning guest cannot hold a worker thread.
    pub yield_every_ticks: u64,
    /// Pooling allocator: `Auto` probes whether the host can reserve the
    /// address space and falls back to on-demand allocation.
    pub pooling: PoolingMode,
    /// Instance slots of the pool (concurrent instances across all pods).
    pub pool_instances: u32,
    /// Largest linear memory a single instance may grow to, whatever its
    /// pod's limit (also the pool's slot size).
    pub max_instance_memory: usize,
    /// Largest Wasm stack, in bytes.
    pub max_wasm_stack: usize,
    /// Whether modules may be compiled here. False runs only artifacts
    /// the API server compiled, exactly as a build without the `compiler`
    /// feature does (which ignores `true`).
    pub compile: bool,
}

/// How guests' memories get their address space: wasmtime's pooling
/// instance allocator (all of it reserved up front) or on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolingMode {
    /// Use it when an engine with it can be built, else on-demand.
    Auto,
    /// Require it (engine creation fails otherwise).
    Always,
    /// On-demand allocation only.
    Never,
    /// On demand, each memory reserving only what it uses (bounds checked
    /// by the compiled code instead of guard pages). Slower guests, but no
    /// large reservations: for a host where reserved address space costs
    /// real memory, as under user-mode emulation, which keeps state for
    /// every reserved page.
    Small,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: std::env::temp_dir().join("wkube-module-cache"),
            epoch_tick: Duration::from_millis(1),
            yield_every_ticks: 1,
            pooling: PoolingMode::Auto,
            pool_instances: 1000,
            max_instance_memory: 4 << 30,
            max_wasm_stack: 512 << 10,
            compile: true,
        }
    }
}

/// The process-wide runtime: one engine, its epoch ticker, the linkers and
/// the module cache. Cheap to share behind an `Arc`.
pub struct Runtime {
    engine: engine::WkubeEngine,
    cache: cache::ModuleCache,
    profile: profile::EngineProfile,
}

impl Runtime {
    /// Builds the engine (probing for the pooling allocator), starts the
    /// epoch ticker and opens the cache directory.
    ///
    /// # Errors
    /// [`RuntimeError::Engine`] if no engine can be built,
    /// [`RuntimeError::Io`] if the cache directory cannot be created.
    pub fn new(config: RuntimeConfig) -> Result<Runtime, RuntimeError> {
        let engine = engine::WkubeEngine::new(&config)?;
        let profile = profile::EngineProfile::host(engine.memory);
        let cache = cache::ModuleCache::new(&engine, &config, &profile)?;
        Ok(Runtime {
            engine,
            cache,
            profile,
        })
    }

    /// Verifies `bytes` against `digest` and returns the compiled,
    /// pre-instantiated module, compiling only if neither the memory nor the
    /// disk cache has it. CPU-heavy on a miss: call from `spawn_blocking`.
    ///
    /// # Errors
    /// [`RuntimeError::MalformedDigest`], [`RuntimeError::DigestMismatch`],
    /// [`RuntimeError::InvalidModule`], [`RuntimeError::Io`].
    pub fn load(&self, digest: &str, bytes: &[u8]) -> Result<Arc<LoadedModule>, RuntimeError> {
        self.cache.load(digest, bytes)
    }

    /// The module from memory or from compiled code on this node's disk,
    /// without its source; `None` when it has to be fetched. Deserializing
    /// maps files: call from `spawn_blocking`.
    ///
    /// # Errors
    /// [`RuntimeError::MalformedDigest`], [`RuntimeError::InvalidModule`].
    pub fn load_cached(&self, digest: &str) -> Result<Option<Arc<LoadedModule>>, RuntimeError> {
        self.cache.load_cached(digest)
    }

    /// Loads `artifact`, code the API server compiled from `digest` for
    /// [`Runtime::profile`]. The caller must have verified it against the
    /// sha256 the server published for it: it is native code.
    ///
    /// # Errors
    /// [`RuntimeError::IncompatibleArtifact`] when wasmtime refuses it,
    /// [`RuntimeError::InvalidModule`], [`RuntimeError::Io`].
    pub fn load_precompiled(
        &self,
        digest: &str,
        kind: ArtifactKind,
        artifact: &[u8],
    ) -> Result<Arc<LoadedModule>, RuntimeError> {
        self.cache.load_precompiled(digest, kind, artifact)
    }

    /// What this engine's code is compiled for; the API server compiles
    /// for it.
    pub fn profile(&self) -> &profile::EngineProfile {
        &self.profile
    }

    /// Whether modules are compiled here when no precompiled code exists.
    pub fn compiles_locally(&self) -> bool {
        self.cache.compiles_locally()
    }

    /// The module already loaded under `digest`, if any (no bytes needed).
    pub fn get(&self, digest: &str) -> Option<Arc<LoadedModule>> {
        self.cache.get(digest)
    }

    /// Cache counters (compiles, disk hits, precompiled loads, memory hits).
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Whether the engine runs with the pooling allocator.
    pub fn pooling(&self) -> bool {
        self.engine.pooling
    }

    /// The wasmtime engine, for diagnostics.
    pub fn engine(&self) -> &wasmtime::Engine {
        &self.engine.engine
    }
}

#[cfg(test)]
pub(crate) mod testutil;
