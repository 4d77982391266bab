//! What a pod sees (args, env, volumes, stdio, outbound HTTP) and its
//! limits, turned into the per-instance store state.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::RuntimeError;

/// Which of the guest's output streams a log chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// Receives the guest's stdout/stderr as written (not line-buffered). Called
/// synchronously from the guest's write, so it must be quick (append to a
/// buffer or a channel).
pub type LogSink = Arc<dyn Fn(LogStream, &[u8]) + Send + Sync>;

/// Decides whether the guest may send an outgoing HTTP request to `uri`
/// (scheme and authority included). Refused requests fail in the guest with
/// `ErrorCode::HttpRequestDenied`.
pub type OutboundPolicy = Arc<dyn Fn(&hyper::Uri) -> bool + Send + Sync>;

/// A guest's outgoing request or the host's response to it, as wasi-http
/// carries them.
pub type GuestRequest = hyper::Request<wasmtime_wasi_http::WasiBody>;
pub type GuestResponse = hyper::Response<wasmtime_wasi_http::WasiBody>;
/// The answer a router gives for a request it took.
pub type RoutedResponse = Pin<
    Box<dyn Future<Output = Result<GuestResponse, wasmtime_wasi_http::Error>> + Send + 'static>,
>;

/// Takes a guest's outgoing requests for cluster destinations (services and
/// pods, by address or name) before the outbound policy sees them: the node
/// proxy, which serves them in-process or through the owning node, so they
/// never touch a socket the guest chose.
pub trait OutboundRouter: Send + Sync {
    /// `Ok` with the response to come when the request is for the cluster;
    /// `Err` gives the request back for the outbound policy.
    ///
    /// # Errors
    /// Not an error: `Err` hands the request back untouched.
    #[allow(clippy::result_large_err)]
    fn route(&self, req: GuestRequest) -> Result<RoutedResponse, GuestRequest>;
}

/// A host directory made visible to the guest (a pod volume).
#[derive(Debug, Clone)]
pub struct Preopen {
    pub host_path: PathBuf,
    /// Where the guest sees it, e.g. `/etc/config`.
    pub guest_path: String,
    /// ConfigMap and Secret volumes are read-only.
    pub read_only: bool,
}

/// Everything of the host a pod's instances see; nothing else is visible.
#[derive(Clone, Default)]
pub struct PodContext {
    /// `argv`, including `argv[0]` (the container name by convention).
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub preopens: Vec<Preopen>,
    /// Where stdout/stderr go; discarded when `None`.
    pub logs: Option<LogSink>,
    /// Outbound HTTP policy; every request is refused when `None`.
    pub outbound: Option<OutboundPolicy>,
    /// Routes requests for cluster destinations ahead of the policy.
    pub router: Option<Arc<dyn OutboundRouter>>,
}

impl std::fmt::Debug for PodContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodContext")
            .field("args", &self.args)
            .field("env", &self.env)
            .field("preopens", &self.preopens)
            .field("logs", &self.logs.is_some())
            .field("outbound", &self.outbound.is_some())
            .field("router", &self.router.is_some())
            .finish()
    }
}

/// Limits applied to each instance of a pod.
#[derive(Debug, Clone)]
pub struct PodLimits {
    /// Cap on the linear memory of one instance (`limits.memory`).
    pub memory_bytes: Option<usize>,
    /// Deadline of one HTTP request (answers 504 past it).
    pub request_timeout: Duration,
    /// `activeDeadlineSeconds` of a command pod.
    pub active_deadline: Option<Duration>,
    /// `limits.cpu`, shared by every instance of the pod (clone the
    /// `Arc` into each container's limits).
    pub cpu: Option<Arc<CpuQuota>>,
    /// The pod's weighted share of the node's CPU (`requests.cpu`), which
    /// every poll of its guest code goes through; `None`: not gated.
    pub share: Option<Arc<super::fair::CpuShare>>,
    /// Counts the memory of the container's live instances (what
    /// `kubectl top` shows); `None`: not counted.
    pub meter: Option<Arc<MemoryMeter>>,
}

impl Default for PodLimits {
    fn default() -> Self {
        PodLimits {
            memory_bytes: None,
            request_timeout: Duration::from_secs(30),
            active_deadline: None,
            cpu: None,
            share: None,
            meter: None,
        }
    }
}

/// The memory a container's live instances hold: their linear memories
/// and tables, summed over concurrent instances, with the most it has held
/// at once. Counted as the engine grows them, so reading it costs nothing.
#[derive(Debug, Default)]
pub struct MemoryMeter {
    in_use: AtomicUsize,
    peak: AtomicUsize,
    /// The most held since the last [`MemoryMeter::take_recent_peak`]:
    /// an instance per request may hold memory only between two readings.
    recent_peak: AtomicUsize,
}

/// Bytes a table element is counted as (a reference's size on the host).
const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

impl MemoryMeter {
    /// Bytes held now.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    /// The most bytes held at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// The most bytes held at once since the last call (or since the
    /// start), starting the next period at what is held now.
    pub fn take_recent_peak(&self) -> usize {
        let now = self.in_use();
        self.recent_peak.swap(now, Ordering::Relaxed).max(now)
    }

    fn add(&self, bytes: usize) {
        let now = self.in_use.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
        self.recent_peak.fetch_max(now, Ordering::Relaxed);
    }

    fn sub(&self, bytes: usize) {
        self.in_use.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// A CFS-style CPU quota: at most `limit` of CPU time per 100 ms window,
/// summed over all the pod's instances. Time is measured between epoch
/// callbacks, so it is accurate to about one epoch tick per slice.
#[derive(Debug)]
pub struct CpuQuota {
    per_window: Duration,
    state: parking_lot::Mutex<QuotaWindow>,
}

#[derive(Debug)]
struct QuotaWindow {
    start: Instant,
    used: Duration,
    throttled: u64,
}

/// The accounting period, as the kernel's default `cfs_period_us`.
pub const CPU_WINDOW: Duration = Duration::from_millis(100);

impl CpuQuota {
    /// A quota of `millicores` (1000 = one core); `limits.cpu: 500m` is 500.
    pub fn new(millicores: u32) -> CpuQuota {
        CpuQuota {
            per_window: CPU_WINDOW * millicores.max(1) / 1000,
            state: parking_lot::Mutex::new(QuotaWindow {
                start: Instant::now(),
                used: Duration::ZERO,
                throttled: 0,
            }),
        }
    }

    /// Windows in which the pod was throttled (cgroup's `nr_throttled`).
    pub fn throttled_windows(&self) -> u64 {
        self.state.lock().throttled
    }

    /// Charges `ran` of CPU at `now`; returns when the instance may run
    /// again if the window's quota is spent.
    pub(crate) fn charge(&self, now: Instant, ran: Duration) -> Option<Instant> {
        let mut w = self.state.lock();
        if now >= w.start + CPU_WINDOW {
            w.start = now;
            w.used = Duration::ZERO;
        }
        w.used += ran;
        if w.used < self.per_window {
            return None;
        }
        let until = w.start + CPU_WINDOW;
        // Count a window once, however many instances hit the quota in it.
        if w.used.saturating_sub(ran) < self.per_window {
            w.throttled += 1;
        }
        Some(until)
    }
}

impl PodContext {
    /// The WASI context of one instance. Preopens are opened here, per
    /// instance, so a volume replaced on disk is seen by the next request.
    pub(crate) fn wasi_builder(&self) -> Result<WasiCtxBuilder, RuntimeError> {
        let mut b = WasiCtx::builder();
        b.args(&self.args).envs(&self.env);
        for p in &self.preopens {
            let perms = if p.read_only {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            };
            b.preopened_dir(&p.host_path, &p.guest_path, perms)
                .map_err(|e| {
                    RuntimeError::Context(format!(
                        "volume {} at {}: {e:#}",
                        p.host_path.display(),
                        p.guest_path
                    ))
                })?;
        }
        if let Some(sink) = &self.logs {
            b.stdout(SinkStream {
                sink: sink.clone(),
                stream: LogStream::Stdout,
            });
            b.stderr(SinkStream {
                sink: sink.clone(),
                stream: LogStream::Stderr,
            });
        }
        Ok(b)
    }
}

/// The memory of all concurrent instances of an HTTP pod, held against
/// its `limits.memory`: a new request is refused (503) when an instance of
/// the usual size would not fit, rather than letting the pod's instances
/// together exceed its limit.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    limit: usize,
    in_use: AtomicUsize,
    /// Largest initial memory an instance asked for: what admitting one
    /// more request costs at least.
    instance_size: AtomicUsize,
}

impl MemoryBudget {
    pub(crate) fn new(limit: usize) -> MemoryBudget {
        MemoryBudget {
            limit,
            in_use: AtomicUsize::new(0),
            instance_size: AtomicUsize::new(0),
        }
    }

    /// Reserves the memory of one more instance of the usual size, or
    /// `None` if it does not fit. Reserving (rather than checking) keeps
    /// concurrent admissions from all passing before any of them grows.
    pub(crate) fn reserve_instance(&self) -> Option<usize> {
        let need = self.instance_size.load(Ordering::Relaxed);
        self.try_charge(need).then_some(need)
    }

    fn try_charge(&self, delta: usize) -> bool {
        self.in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(delta).filter(|&n| n <= self.limit)
            })
            .is_ok()
    }
}

/// A memory limiter that remembers refusals: a refused `memory.grow` only
/// returns -1 to the guest, which then usually traps with an unrelated
/// message, so the refusal is the only reliable sign of an OOM.
pub(crate) struct PodLimiter {
    inner: StoreLimits,
    refused: Arc<AtomicBool>,
    budget: Option<Arc<MemoryBudget>>,
    /// What this instance holds of `budget`, given back on drop.
    charged: usize,
    /// Part of `charged` reserved at admission and not yet grown into.
    prepaid: usize,
    meter: Option<Arc<MemoryMeter>>,
    /// What this instance holds of `meter`, given back on drop.
    metered: usize,
}

impl PodLimiter {
    /// `budget` is the pod's shared budget with `reserved` bytes of it
    /// already charged for this instance by [`MemoryBudget::reserve_instance`].
    pub(crate) fn new(
        limits: &PodLimits,
        budget: Option<(Arc<MemoryBudget>, usize)>,
    ) -> (PodLimiter, Arc<AtomicBool>) {
        let reserved = budget.as_ref().map_or(0, |(_, r)| *r);
        let mut b = StoreLimitsBuilder::new().trap_on_grow_failure(false);
        if let Some(m) = limits.memory_bytes {
            b = b.memory_size(m);
        }
        let refused = Arc::new(AtomicBool::new(false));
        (
            PodLimiter {
                inner: b.build(),
                refused: refused.clone(),
                budget: budget.map(|(b, _)| b),
                charged: reserved,
                prepaid: reserved,
                meter: limits.meter.clone(),
                metered: 0,
            },
            refused,
        )
    }
}

impl PodLimiter {
    /// Counts `bytes` more held by this instance.
    fn meter(&mut self, bytes: usize) {
        if let Some(m) = &self.meter {
            m.add(bytes);
            self.metered += bytes;
        }
    }
}

impl Drop for PodLimiter {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.in_use.fetch_sub(self.charged, Ordering::AcqRel);
        }
        if let Some(m) = &self.meter {
            m.sub(self.metered);
        }
    }
}

impl ResourceLimiter for PodLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let mut ok = self.inner.memory_growing(current, desired, maximum)?;
        if ok && let Some(b) = &self.budget {
            let delta = desired.saturating_sub(current);
            let from_prepaid = delta.min(self.prepaid);
            let rest = delta - from_prepaid;
            ok = b.try_charge(rest);
            if ok {
                self.prepaid -= from_prepaid;
                self.charged += rest;
            }
            if current == 0 {
                b.instance_size.fetch_max(desired, Ordering::Relaxed);
            }
        }
        if ok {
            self.meter(desired.saturating_sub(current));
        } else {
            self.refused.store(true, Ordering::Relaxed);
        }
        Ok(ok)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        // The engine itself could not grow (e.g. the pool slot is full):
        // that is an OOM too.
        self.refused.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = self.inner.table_growing(current, desired, maximum)?;
        if ok {
            self.meter(desired.saturating_sub(current) * TABLE_ELEMENT_BYTES);
        }
        Ok(ok)
    }
}

/// Store state of a component instance (HTTP or command).
pub(crate) struct PodState {
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) table: ResourceTable,
    pub(crate) hooks: PodHooks,
    pub(crate) limiter: PodLimiter,
    /// Keeps the epoch ticking while the store lives.
    pub(crate) _awake: super::engine::Awake,
}

impl WasiView for PodState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for PodState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Store state of a core module (WASI preview 1).
pub(crate) struct P1State {
    pub(crate) wasi: wasmtime_wasi::p1::WasiP1Ctx,
    pub(crate) limiter: PodLimiter,
    /// Keeps the epoch ticking while the store lives.
    pub(crate) _awake: super::engine::Awake,
}

/// wasi-http hooks enforcing the pod's outbound policy.
pub(crate) struct PodHooks {
    pub(crate) outbound: Option<OutboundPolicy>,
    pub(crate) router: Option<Arc<dyn OutboundRouter>>,
}

impl WasiHttpHooks for PodHooks {
    fn send_request(
        &mut self,
        request: hyper::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        hyper::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        let request = match &self.router {
            Some(router) => match router.route(request) {
                Ok(routed) => {
                    return Box::new(async move {
                        let res = routed.await?;
                        let done = async { Ok(()) };
                        Ok((res, Box::new(done) as Box<dyn Future<Output = _> + Send>))
                    });
                }
                Err(request) => request,
            },
            None => request,
        };
        let allowed = self
            .outbound
            .as_ref()
            .is_some_and(|policy| policy(request.uri()));
        Box::new(async move {
            use http_body_util::BodyExt;
            if !allowed {
                return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
            }
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// Guest stdout/stderr forwarded to a [`LogSink`]. Implements the p2
/// `OutputStream` directly (rather than through an async pipe) so a request
/// costs no extra task, and writes never block.
#[derive(Clone)]
struct SinkStream {
    sink: LogSink,
    stream: LogStream,
}

impl IsTerminal for SinkStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for SinkStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// Most a guest may write in one call; bounds the chunks handed to the sink.
const MAX_WRITE: usize = 64 * 1024;

impl OutputStream for SinkStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        (self.sink)(self.stream, &bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_WRITE)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for SinkStream {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for SinkStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        (self.sink)(self.stream, buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
