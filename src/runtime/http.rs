//! HTTP components: one fresh instance per request from the module's
//! `ProxyPre`, as `wasmtime serve` does, so requests share nothing and a
//! trapping request cannot poison the next one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView};

use super::cache::{LoadedModule, Prepared};
use super::context::{
    CpuQuota, MemoryBudget, PodContext, PodHooks, PodLimiter, PodLimits, PodState,
};
use super::engine::Awake;
use super::{ModuleKind, RuntimeError};

/// The body of a response from a guest (or of the error page standing in
/// for one).
pub type ResponseBody = HyperOutgoingBody;

/// Why a request got no response from the guest. Each maps to a status.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The request ran past its deadline (504).
    #[error("request exceeded its deadline of {0:?}")]
    DeadlineExceeded(Duration),
    /// The guest's memory growth was refused by the pod's limit and the
    /// guest failed (500; the kubelet reports it as an OOM).
    #[error("out of memory (growth past the memory limit refused): {0}")]
    OutOfMemory(String),
    /// The guest trapped or failed before answering (500).
    #[error("guest failed: {0}")]
    Trap(String),
    /// The guest returned without setting a response (500).
    #[error("guest did not produce a response")]
    NoResponse,
    /// The guest answered with a wasi-http error code (502 like a proxy).
    #[error("guest answered with an error: {0:?}")]
    Guest(ErrorCode),
    /// The pod's concurrent instances already hold its memory budget (503,
    /// with `Retry-After`).
    #[error("the pod's memory limit is in use by its other requests")]
    Overloaded,
    /// Every slot of the node's instance pool (the pooling allocator's
    /// instances, memories, tables or stacks) is taken by running
    /// instances: a matter of load, not of the pod (503, with
    /// `Retry-After`).
    #[error("the node's instance pool is exhausted: {0}")]
    PoolExhausted(String),
    /// The per-request store could not be set up (500).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl HttpError {
    /// The status a client sees for this failure.
    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
            HttpError::Guest(_) => StatusCode::BAD_GATEWAY,
            HttpError::Overloaded | HttpError::PoolExhausted(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Seconds after which the request may succeed if sent again, for the
    /// `Retry-After` header: set for refusals that depend only on load
    /// (instances free as requests end), none for the guest's own failures.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            HttpError::Overloaded | HttpError::PoolExhausted(_) => Some(RETRY_AFTER_SECS),
            _ => None,
        }
    }

    /// Whether the failure was a refused memory growth.
    pub fn is_oom(&self) -> bool {
        matches!(self, HttpError::OutOfMemory(_))
    }
}

/// `Retry-After` of a request refused for load (an instance frees as soon
/// as one of the requests holding them ends).
pub const RETRY_AFTER_SECS: u32 = 1;

/// An HTTP pod's container: the shared pre-instantiated component plus the
/// pod's context and limits. Cheap to share; `handle` takes `&self`.
pub struct HttpService {
    module: Arc<LoadedModule>,
    ctx: PodContext,
    limits: PodLimits,
    /// `limits.memory` across the pod's concurrent instances.
    budget: Option<Arc<MemoryBudget>>,
}

impl HttpService {
    /// # Errors
    /// [`RuntimeError::WrongKind`] unless `module` is an HTTP component.
    pub fn new(
        module: Arc<LoadedModule>,
        ctx: PodContext,
        limits: PodLimits,
    ) -> Result<HttpService, RuntimeError> {
        if module.kind() != ModuleKind::Http {
            return Err(RuntimeError::WrongKind {
                actual: module.kind(),
                wanted: "an HTTP service",
            });
        }
        let budget = limits.memory_bytes.map(|m| Arc::new(MemoryBudget::new(m)));
        Ok(HttpService {
            module,
            ctx,
            limits,
            budget,
        })
    }

    /// Serves one request; failures become a plain-text error response
    /// (504 past the deadline, 500 for traps and OOMs, 503 with
    /// `Retry-After` when the pod's memory limit or the node's instance
    /// pool has no room for another instance).
    pub async fn handle<B>(&self, req: hyper::Request<B>) -> hyper::Response<ResponseBody>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::fmt::Display,
    {
        match self.try_handle(req).await {
            Ok(resp) => resp,
            Err(e) => {
                let mut resp = error_response(e.status(), &e.to_string());
                if let Some(secs) = e.retry_after() {
                    resp.headers_mut()
                        .insert(hyper::header::RETRY_AFTER, secs.into());
                }
                resp
            }
        }
    }

    /// Serves one request in a fresh instance, returning why it failed
    /// rather than an error page, so the caller can count OOMs and
    /// timeouts. The response body streams from the instance, which lives
    /// until the body is done or the deadline passes.
    pub async fn try_handle<B>(
        &self,
        req: hyper::Request<B>,
    ) -> Result<hyper::Response<ResponseBody>, HttpError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::fmt::Display,
    {
        let Prepared::Http(pre) = &self.module.prepared else {
            return Err(HttpError::NoResponse);
        };
        let timeout = self.limits.request_timeout;
        let deadline = Instant::now() + timeout;
        let (mut store, refused) = self.new_store(deadline)?;

        let mut req = req
            .map(|b| b.map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(e.to_string()))));
        // Server-side requests carry only a path; wasi-http wants an
        // authority, which for an in-process pod is just a label.
        if req.uri().authority().is_none() && !req.headers().contains_key(hyper::header::HOST) {
            req.headers_mut().insert(
                hyper::header::HOST,
                hyper::header::HeaderValue::from_static("localhost"),
            );
        }
        // The guest's outparam answers into its own task (see `gather`),
        // which answers the caller.
        let (from_guest_tx, from_guest) = tokio::sync::oneshot::channel();
        let (to_caller, receiver) = tokio::sync::oneshot::channel();
        let (req, out) = {
            let mut http = store.data_mut().http();
            let req = http
                .new_incoming_request(Scheme::Http, req)
                .map_err(|e| HttpError::Trap(format!("bad request: {e:#}")))?;
            let out = http
                .new_response_outparam(from_guest_tx)
                .map_err(|e| HttpError::Trap(format!("{e:#}")))?;
            (req, out)
        };

        let pre = pre.clone();
        // Its own task so the body can keep streaming after the headers are
        // returned; bounded by the same deadline.
        let run = tokio::time::timeout_at(deadline.into(), async move {
            let result = match pre.instantiate_async(&mut store).await {
                Ok(proxy) => {
                    proxy
                        .wasi_http_incoming_handler()
                        .call_handle(&mut store, req, out)
                        .await
                }
                Err(e) => Err(e),
            };
            // The store goes back to the pool (its memory reset) only
            // after the caller has its response.
            (result, store)
        });
        let task = super::pool::start_guest(self.limits.share.as_ref(), async move {
            match gather::drive(run, from_guest, to_caller).await {
                Ok((result, store)) => {
                    drop(store);
                    Ok(result)
                }
                Err(elapsed) => Err(elapsed),
            }
        })
        .await;

        match tokio::time::timeout_at(deadline.into(), receiver).await {
            Err(_elapsed) => {
                task.abort();
                Err(HttpError::DeadlineExceeded(timeout))
            }
            Ok(Ok(Ok(resp))) => Ok(resp),
            Ok(Ok(Err(code))) => Err(HttpError::Guest(code)),
            // The outparam was dropped unset: the instance ended; its
            // result says why.
            Ok(Err(_)) => Err(match task.join().await {
                Ok(Ok(Ok(()))) => HttpError::NoResponse,
                Ok(Ok(Err(e))) => classify(e, &refused, timeout),
                Ok(Err(_elapsed)) => HttpError::DeadlineExceeded(timeout),
                Err(join) => HttpError::Trap(format!("request task: {join}")),
            }),
        }
    }

    /// Instantiates the component once without calling it. Used to check a
    /// pod's context (volumes exist, pool has room) before declaring it
    /// running, and to measure per-request instantiation overhead.
    pub async fn probe_instantiation(&self) -> Result<Duration, HttpError> {
        let Prepared::Http(pre) = &self.module.prepared else {
            return Err(HttpError::NoResponse);
        };
        let start = Instant::now();
        let (mut store, refused) = self.new_store(start + self.limits.request_timeout)?;
        pre.instantiate_async(&mut store)
            .await
            .map_err(|e| classify(e, &refused, self.limits.request_timeout))?;
        Ok(start.elapsed())
    }

    fn new_store(
        &self,
        deadline: Instant,
    ) -> Result<(Store<PodState>, Arc<AtomicBool>), HttpError> {
        let budget = match &self.budget {
            Some(b) => Some((
                b.clone(),
                b.reserve_instance().ok_or(HttpError::Overloaded)?,
            )),
            None => None,
        };
        // From here on the reservation is owned by the limiter, which gives
        // it back when the store is dropped, whatever fails next.
        let (limiter, refused) = PodLimiter::new(&self.limits, budget);
        let state = PodState {
            wasi: self.ctx.wasi_builder()?.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: PodHooks {
                outbound: self.ctx.outbound.clone(),
                router: self.ctx.router.clone(),
            },
            limiter,
            _awake: Awake::new(),
        };
        let Prepared::Http(pre) = &self.module.prepared else {
            return Err(HttpError::NoResponse);
        };
        let mut store = Store::new(pre.engine(), state);
        store.limiter(|s| &mut s.limiter);
        preempt(
            &mut store,
            &self.module,
            Some(deadline),
            self.limits.cpu.clone(),
        );
        Ok((store, refused))
    }
}

/// Makes a store yield to the executor every `yield_every_ticks` epochs (so
/// a spinning guest shares its worker thread), throttles it once its pod's
/// CPU quota for the current window is used, and traps it once `deadline`
/// has passed (so it cannot outlive a dropped future by spinning).
pub(crate) fn preempt<T: 'static>(
    store: &mut Store<T>,
    module: &LoadedModule,
    deadline: Option<Instant>,
    cpu: Option<Arc<CpuQuota>>,
) {
    let ticks = module.yield_every_ticks;
    // The most CPU a guest can have used between two callbacks; anything
    // beyond it was time spent waiting (in the executor queue or on host
    // I/O), which is not charged.
    let slice = module.epoch_tick * u32::try_from(ticks).unwrap_or(u32::MAX);
    let resumed = Arc::new(parking_lot::Mutex::new(Instant::now()));
    store.set_epoch_deadline(ticks);
    store.epoch_deadline_callback(move |_| {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Ok(UpdateDeadline::Interrupt);
        }
        let Some(quota) = &cpu else {
            return Ok(UpdateDeadline::Yield(ticks));
        };
        let ran = now.saturating_duration_since(*resumed.lock()).min(slice);
        let throttle_until = quota.charge(now, ran);
        let resumed = resumed.clone();
        Ok(UpdateDeadline::YieldCustom(
            ticks,
            Box::pin(async move {
                match throttle_until {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => tokio::task::yield_now().await,
                }
                *resumed.lock() = Instant::now();
            }),
        ))
    });
}

fn classify(e: wasmtime::Error, refused: &AtomicBool, timeout: Duration) -> HttpError {
    if e.is::<wasmtime::PoolConcurrencyLimitError>() {
        HttpError::PoolExhausted(format!("{e:#}"))
    } else if refused.load(Ordering::Relaxed) {
        HttpError::OutOfMemory(format!("{e:#}"))
    } else if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        HttpError::DeadlineExceeded(timeout)
    } else {
        HttpError::Trap(format!("{e:#}"))
    }
}

fn error_response(status: StatusCode, msg: &str) -> hyper::Response<ResponseBody> {
    let body = Full::new(Bytes::from(format!("{msg}\n")))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut resp = hyper::Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

mod gather;

#[cfg(test)]
mod tests;
