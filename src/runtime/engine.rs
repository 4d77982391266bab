//! The process-wide `Engine` and its epoch ticker.
//!
//! One engine per process so compiled code, the instance pool and the
//! signal handlers are shared by every pod. Epoch interruption (rather than
//! fuel) is used for preemption and deadlines: it costs one load and compare
//! per loop header and function entry, and a single ticker thread drives all
//! stores.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::profile::{MemoryLayout, apply_codegen};
use super::{PoolingMode, RuntimeConfig, RuntimeError};

/// The engine plus the ticker that advances its epoch.
pub(crate) struct WkubeEngine {
    pub(crate) engine: Engine,
    /// Whether the pooling allocator is in use (reported at startup).
    pub(crate) pooling: bool,
    /// The memory layout its code is compiled for (known only after the
    /// allocation probe: `auto` may end up with small reservations).
    pub(crate) memory: MemoryLayout,
    _ticker: EpochTicker,
}

impl WkubeEngine {
    pub(crate) fn new(config: &RuntimeConfig) -> Result<WkubeEngine, RuntimeError> {
        let ((engine, allocation), pooling) = match config.pooling {
            PoolingMode::Never => (build_on_demand(config)?, false),
            PoolingMode::Small => (
                (
                    build(config, Allocation::SmallReservations)?,
                    Allocation::SmallReservations,
                ),
                false,
            ),
            PoolingMode::Always => (
                (build(config, Allocation::Pooling)?, Allocation::Pooling),
                true,
            ),
            // Building the engine is the probe: the pool reserves its whole
            // address space (slots × reservation) up front, and that is
            // what fails on a small or `ulimit -v`-limited host.
            PoolingMode::Auto => match build(config, Allocation::Pooling) {
                Ok(engine) => ((engine, Allocation::Pooling), true),
                Err(err) => {
                    tracing::info!(
                        "pooling allocator unavailable ({err}); using on-demand allocation"
                    );
                    (build_on_demand(config)?, false)
                }
            },
        };
        let memory = match allocation {
            Allocation::SmallReservations => MemoryLayout::Small,
            Allocation::Pooling | Allocation::OnDemand => MemoryLayout::Guarded,
        };
        let ticker = EpochTicker::start(engine.clone(), config.epoch_tick);
        // A pod the CPU gate finds waiting behind a less deserving one has
        // every running guest yield now (guests yield at every epoch past
        // their deadline, which is one tick ahead).
        let weak = engine.weak();
        super::fair::CpuGate::global().on_preempt(Box::new(move || {
            weak.upgrade().map(|e| e.increment_epoch()).is_some()
        }));
        Ok(WkubeEngine {
            engine,
            pooling,
            memory,
            _ticker: ticker,
        })
    }
}

/// The engine configuration for serving: every store is async (host calls
/// may block on I/O), interruptible by epochs, and memory images are
/// copy-on-write so instantiation does not copy data segments.
fn build(config: &RuntimeConfig, allocation: Allocation) -> Result<Engine, RuntimeError> {
    let mut c = Config::new();
    let memory = if allocation == Allocation::SmallReservations {
        MemoryLayout::Small
    } else {
        MemoryLayout::Guarded
    };
    apply_codegen(&mut c, memory);
    c.max_wasm_stack(config.max_wasm_stack);
    #[cfg(feature = "compiler")]
    c.parallel_compilation(true);
    if allocation == Allocation::Pooling {
        let n = config.pool_instances;
        let mut pool = PoolingAllocationConfig::new();
        // A component built by Rust for wasip2 has one memory but a few core
        // instances and tables (the main module plus small shims), hence
        // the multipliers.
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(4))
            .total_memories(n)
            .total_tables(n.saturating_mul(4))
            .total_stacks(n)
            .max_memory_size(config.max_instance_memory);
        // A slot given back is reset for its next instance. By default
        // that is `madvise(MADV_DONTNEED)`, after which the next
        // instance's first write to each page faults, and in a
        // multi-threaded process each such fault flushes the other cores'
        // TLBs by interrupt: a third of a `hello-http` request's time on
        // two cores. Instead, the pages a request dirtied (found with
        // `PAGEMAP_SCAN` where the kernel has it, Linux 6.7 and later) are
        // rewritten in place and stay mapped, up to these sizes per slot;
        // beyond them, and on older kernels, the `madvise` remains.
        pool.linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
            .table_keep_resident(KEEP_RESIDENT_TABLE)
            .pagemap_scan(wasmtime::Enabled::Auto);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&c).map_err(|e| RuntimeError::Engine(format!("{e:#}")))
}

/// Linear memory a pool slot keeps mapped between instances (see
/// `build`): what a small HTTP guest dirties per request, with room.
const KEEP_RESIDENT_MEMORY: usize = 256 << 10;
/// Table memory a pool slot keeps mapped between instances.
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Allocation {
    /// Instance pool with a 4 GiB reservation per memory slot.
    Pooling,
    /// On demand, 4 GiB reservation per memory (wasmtime's default).
    OnDemand,
    /// On demand, memories reserve only what they use.
    SmallReservations,
}

/// On-demand allocation, with wasmtime's large per-memory reservations if
/// the host allows one (probed by creating a memory), else small ones: a
/// host that could not reserve the pool is often one that cannot reserve
/// 4 GiB per instance either (`ulimit -v`, small 32-bit-like limits).
fn build_on_demand(config: &RuntimeConfig) -> Result<(Engine, Allocation), RuntimeError> {
    let engine = build(config, Allocation::OnDemand)?;
    let mut store = wasmtime::Store::new(&engine, ());
    if wasmtime::Memory::new(&mut store, wasmtime::MemoryType::new(1, None)).is_ok() {
        return Ok((engine, Allocation::OnDemand));
    }
    tracing::info!("cannot reserve 4 GiB per memory; using small memory reservations");
    Ok((
        build(config, Allocation::SmallReservations)?,
        Allocation::SmallReservations,
    ))
}

/// Guests' stores alive in the process, and the ticker's wake-up call.
///
/// Epochs only matter while guest code can run, which needs a store; an
/// idle node (no stores: HTTP pods get one per request) would otherwise
/// wake a thousand times a second for nothing, which was most of an idle
/// server's CPU.
///
/// A ticker keeps ticking for [`LINGER`] after the last store goes, so
/// that requests arriving one after another (each with its own store) do
/// not wake the ticker's thread once each: that wake-up had been a
/// thread switch per request on a busy two-core node.
struct Activity {
    stores: AtomicUsize,
    /// Tickers waiting on `wake` (only they need a notification).
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

static ACTIVITY: Activity = Activity {
    stores: AtomicUsize::new(0),
    sleepers: AtomicUsize::new(0),
    lock: Mutex::new(()),
    wake: Condvar::new(),
};

/// How long a ticker goes on ticking without stores before it sleeps.
const LINGER: Duration = Duration::from_millis(50);

/// Held by every guest's store (in its state): the epoch ticks while one
/// lives.
#[derive(Debug)]
pub(crate) struct Awake(());

impl Awake {
    pub(crate) fn new() -> Awake {
        ACTIVITY.stores.fetch_add(1, Ordering::SeqCst);
        // A ticker counts itself a sleeper before it checks the stores
        // (both sequentially consistent), so either it sees this store or
        // this sees it.
        if ACTIVITY.sleepers.load(Ordering::SeqCst) > 0 {
            // Under the lock, so a ticker between its check and its wait
            // cannot miss this.
            let _held = ACTIVITY.lock.lock().unwrap_or_else(|p| p.into_inner());
            ACTIVITY.wake.notify_all();
        }
        Awake(())
    }
}

impl Drop for Awake {
    fn drop(&mut self) {
        ACTIVITY.stores.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Advances the engine's epoch every `tick` on a dedicated thread while
/// any guest store lives (see [`Activity`]); stopped and joined on drop.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine, tick: Duration) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("wkube-epoch".into())
            .spawn(move || {
                let linger_ticks = (LINGER.as_nanos() / tick.as_nanos().max(1)).max(1);
                let mut quiet_ticks = 0u128;
                while !flag.load(Ordering::Relaxed) {
                    if ACTIVITY.stores.load(Ordering::SeqCst) != 0 {
                        quiet_ticks = 0;
                    } else if quiet_ticks < linger_ticks {
                        quiet_ticks += 1;
                    } else {
                        let mut held = ACTIVITY.lock.lock().unwrap_or_else(|p| p.into_inner());
                        ACTIVITY.sleepers.fetch_add(1, Ordering::SeqCst);
                        while ACTIVITY.stores.load(Ordering::SeqCst) == 0
                            && !flag.load(Ordering::Relaxed)
                        {
                            held = ACTIVITY.wake.wait(held).unwrap_or_else(|p| p.into_inner());
                        }
                        ACTIVITY.sleepers.fetch_sub(1, Ordering::SeqCst);
                        quiet_ticks = 0;
                        continue;
                    }
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })
            .ok();
        if thread.is_none() {
            // Without a ticker no guest is ever preempted; surface it loudly
            // rather than failing the whole node.
            tracing::error!("could not start the epoch ticker thread");
        }
        EpochTicker { stop, thread }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        {
            let _held = ACTIVITY.lock.lock().unwrap_or_else(|p| p.into_inner());
            ACTIVITY.wake.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_without_pooling_always_builds() {
        let cfg = RuntimeConfig {
            pooling: PoolingMode::Never,
            ..RuntimeConfig::default()
        };
        let e = WkubeEngine::new(&cfg).expect("engine");
        assert!(!e.pooling);
    }

    #[test]
    fn small_memories_build_an_engine_without_the_pool() {
        let cfg = RuntimeConfig {
            pooling: PoolingMode::Small,
            ..RuntimeConfig::default()
        };
        let e = WkubeEngine::new(&cfg).expect("engine");
        assert!(!e.pooling);
        let mut store = wasmtime::Store::new(&e.engine, ());
        wasmtime::Memory::new(&mut store, wasmtime::MemoryType::new(1, None)).expect("a memory");
    }

    #[test]
    fn auto_pooling_builds_an_engine_with_the_default_pool_either_way() {
        let start = std::time::Instant::now();
        let e = WkubeEngine::new(&RuntimeConfig::default()).expect("engine");
        println!(
            "default config (1000 slots): pooling allocator in use: {}, engine built in {:?}",
            e.pooling,
            start.elapsed()
        );
    }

    #[test]
    fn a_pool_too_large_for_the_address_space_falls_back_to_on_demand() {
        // 2^20 slots of 4 GiB is 4 PiB, beyond any x86-64 or aarch64 user
        // address space: the probe must fail and the fallback must work.
        let cfg = RuntimeConfig {
            pool_instances: 1 << 20,
            ..RuntimeConfig::default()
        };
        let e = WkubeEngine::new(&cfg).expect("engine");
        assert!(!e.pooling);
    }
}
