//! Command pods: a `wasi:cli/run` component or a core module with `_start`,
//! run once to its exit code.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime::{Store, Trap};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi_http::WasiHttpCtx;

use super::cache::{LoadedModule, Prepared};
use super::context::{P1State, PodContext, PodHooks, PodLimiter, PodLimits, PodState};
use super::engine::Awake;
use super::http::preempt;
use super::{ModuleKind, RuntimeError};

/// How a command ended, in the terms a container status uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    /// It returned or called exit with this code.
    Exited(i32),
    /// A memory growth past `limits.memory` was refused and the guest
    /// failed: reported as `OOMKilled`, exit code 137.
    OomKilled,
    /// `activeDeadlineSeconds` passed; the guest was stopped (137).
    DeadlineExceeded,
    /// The guest trapped (e.g. `unreachable` after a panic); reported like
    /// a native abort (134).
    Trapped(String),
}

impl ExitStatus {
    /// The exit code a Kubernetes user expects to see.
    pub fn code(&self) -> i32 {
        match self {
            ExitStatus::Exited(c) => *c,
            ExitStatus::OomKilled | ExitStatus::DeadlineExceeded => 137,
            ExitStatus::Trapped(_) => 134,
        }
    }

    /// The `terminated.reason` of the container status.
    pub fn reason(&self) -> &'static str {
        match self {
            ExitStatus::Exited(0) => "Completed",
            ExitStatus::Exited(_) | ExitStatus::Trapped(_) => "Error",
            ExitStatus::OomKilled => "OOMKilled",
            ExitStatus::DeadlineExceeded => "DeadlineExceeded",
        }
    }

    /// Whether it succeeded (exit code 0).
    pub fn success(&self) -> bool {
        self.code() == 0
    }
}

/// Runs a command module to completion with the pod's context and limits,
/// on the guest threads ([`super::pool`]) and through the pod's CPU share.
/// The guest yields every epoch tick, so it never holds a thread for long;
/// `limits.active_deadline` bounds its wall time. Dropping the returned
/// future stops the guest.
///
/// # Errors
/// [`RuntimeError::WrongKind`] for an HTTP component,
/// [`RuntimeError::Context`] when the WASI context cannot be built (e.g. a
/// missing volume). Everything the guest does is an [`ExitStatus`].
pub async fn run_command(
    module: &LoadedModule,
    ctx: &PodContext,
    limits: &PodLimits,
) -> Result<ExitStatus, RuntimeError> {
    let deadline = limits.active_deadline.map(|d| Instant::now() + d);
    let (limiter, refused) = PodLimiter::new(limits, None);
    // The store is built here; only running it moves to the guest threads.
    let run: Pin<Box<dyn Future<Output = ExitStatus> + Send>> = match &module.prepared {
        Prepared::Command(pre) => {
            let state = PodState {
                wasi: ctx.wasi_builder()?.build(),
                http: WasiHttpCtx::new(),
                table: ResourceTable::new(),
                hooks: PodHooks {
                    outbound: ctx.outbound.clone(),
                    router: ctx.router.clone(),
                },
                limiter,
                _awake: Awake::new(),
            };
            let mut store = Store::new(pre.engine(), state);
            store.limiter(|s| &mut s.limiter);
            preempt(&mut store, module, deadline, limits.cpu.clone());
            let pre = pre.clone();
            Box::pin(async move {
                let result = async {
                    let cmd = pre.instantiate_async(&mut store).await?;
                    cmd.wasi_cli_run().call_run(&mut store).await
                }
                .await;
                match result {
                    Ok(Ok(())) => ExitStatus::Exited(0),
                    Ok(Err(())) => ExitStatus::Exited(1),
                    Err(e) => classify(e, &refused),
                }
            })
        }
        Prepared::Core(pre) => {
            let state = P1State {
                wasi: ctx.wasi_builder()?.build_p1(),
                limiter,
                _awake: Awake::new(),
            };
            let mut store = Store::new(pre.module().engine(), state);
            store.limiter(|s| &mut s.limiter);
            preempt(&mut store, module, deadline, limits.cpu.clone());
            let pre = pre.clone();
            Box::pin(async move {
                let result = async {
                    let instance = pre.instantiate_async(&mut store).await?;
                    let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
                    start.call_async(&mut store, ()).await
                }
                .await;
                match result {
                    Ok(()) => ExitStatus::Exited(0),
                    Err(e) => classify(e, &refused),
                }
            })
        }
        Prepared::Http(_) => {
            return Err(RuntimeError::WrongKind {
                actual: ModuleKind::Http,
                wanted: "a command",
            });
        }
    };
    let task = AbortOnDrop(super::pool::spawn_guest(limits.share.as_ref(), run));
    let joined = async {
        task.await
            .unwrap_or_else(|e| ExitStatus::Trapped(format!("guest task ended: {e}")))
    };
    Ok(match deadline {
        Some(d) => tokio::time::timeout_at(d.into(), joined)
            .await
            .unwrap_or(ExitStatus::DeadlineExceeded),
        None => joined.await,
    })
}

/// A task on the guest threads that is stopped when its handle is dropped
/// (a deleted pod's command stops with the kubelet's future for it).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

fn classify(e: wasmtime::Error, refused: &Arc<AtomicBool>) -> ExitStatus {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        ExitStatus::Exited(exit.0)
    } else if refused.load(Ordering::Relaxed) {
        ExitStatus::OomKilled
    } else if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        ExitStatus::DeadlineExceeded
    } else {
        ExitStatus::Trapped(format!("{e:#}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::cache::digest_of;
    use crate::runtime::testutil::{guest, runtime_in};
    use crate::runtime::{LogSink, LogStream};
    use parking_lot::Mutex;

    /// What a test sink collected: (stdout, stderr).
    type Captured = Arc<Mutex<(Vec<u8>, Vec<u8>)>>;

    /// A sink collecting stdout and stderr separately.
    fn capture() -> (LogSink, Captured) {
        let buf = Arc::new(Mutex::new((Vec::new(), Vec::new())));
        let b = buf.clone();
        let sink: LogSink = Arc::new(move |stream, bytes: &[u8]| {
            let mut g = b.lock();
            match stream {
                LogStream::Stdout => g.0.extend_from_slice(bytes),
                LogStream::Stderr => g.1.extend_from_slice(bytes),
            }
        });
        (sink, buf)
    }

    async fn run_job(env: &[(&str, &str)]) -> (ExitStatus, String) {
        let (rt, _dir) = runtime_in();
        let bytes = guest("job");
        let loaded = rt.load(&digest_of(&bytes), &bytes).expect("load job");
        let (sink, buf) = capture();
        let ctx = PodContext {
            args: vec!["job".into(), "hello".into(), "world".into()],
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            logs: Some(sink),
            ..PodContext::default()
        };
        let status = run_command(&loaded, &ctx, &PodLimits::default())
            .await
            .expect("run");
        let out = String::from_utf8_lossy(&buf.lock().0).into_owned();
        (status, out)
    }

    #[tokio::test]
    async fn job_prints_its_two_lines_and_exits_with_exit_code() {
        let (status, out) = run_job(&[("JOB_MESSAGE", "done"), ("EXIT_CODE", "3")]).await;
        assert_eq!(out, "hello world\ndone\n");
        assert_eq!(status, ExitStatus::Exited(3));
        assert_eq!(status.reason(), "Error");
    }

    #[tokio::test]
    async fn job_without_exit_code_completes() {
        let (status, out) = run_job(&[("JOB_MESSAGE", "ok")]).await;
        assert_eq!(out, "hello world\nok\n");
        assert!(status.success());
        assert_eq!(status.reason(), "Completed");
    }

    #[tokio::test]
    async fn job_exit_codes_wrap_like_a_shell() {
        assert_eq!(
            run_job(&[("EXIT_CODE", "-1")]).await.0,
            ExitStatus::Exited(255)
        );
        assert_eq!(
            run_job(&[("EXIT_CODE", "300")]).await.0,
            ExitStatus::Exited(44)
        );
    }

    #[tokio::test]
    async fn hello_p1_prints_and_exits_zero() {
        let (rt, _dir) = runtime_in();
        let bytes = guest("hello-p1");
        let loaded = rt.load(&digest_of(&bytes), &bytes).expect("load hello-p1");
        assert_eq!(loaded.kind(), ModuleKind::CoreCommand);
        let (sink, buf) = capture();
        let ctx = PodContext {
            args: vec!["hello-p1".into()],
            logs: Some(sink),
            ..PodContext::default()
        };
        let status = run_command(&loaded, &ctx, &PodLimits::default())
            .await
            .expect("run");
        assert_eq!(status, ExitStatus::Exited(0));
        assert_eq!(
            String::from_utf8_lossy(&buf.lock().0),
            "hello from a core module\n"
        );
    }

    #[tokio::test]
    async fn an_http_component_is_not_run_as_a_command() {
        let (rt, _dir) = runtime_in();
        let bytes = guest("hello-http");
        let loaded = rt.load(&digest_of(&bytes), &bytes).expect("load");
        let err = run_command(&loaded, &PodContext::default(), &PodLimits::default())
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::WrongKind { .. }));
    }

    /// A core module whose `_start` runs `body` (and has one page of memory).
    fn core_module(body: impl FnOnce(&mut wasm_encoder::InstructionSink<'_>)) -> Vec<u8> {
        use wasm_encoder::{
            CodeSection, ExportKind, ExportSection, Function, FunctionSection, MemorySection,
            MemoryType, Module, TypeSection,
        };
        let mut m = Module::new();
        let mut types = TypeSection::new();
        types.ty().function([], []);
        m.section(&types);
        let mut funcs = FunctionSection::new();
        funcs.function(0);
        m.section(&funcs);
        let mut mems = MemorySection::new();
        mems.memory(MemoryType {
            minimum: 1,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        m.section(&mems);
        let mut exports = ExportSection::new();
        exports.export("_start", ExportKind::Func, 0);
        m.section(&exports);
        let mut code = CodeSection::new();
        let mut f = Function::new([]);
        body(&mut f.instructions());
        f.instructions().end();
        code.function(&f);
        m.section(&code);
        m.finish()
    }

    #[tokio::test]
    async fn a_command_whose_memory_growth_is_refused_is_oom_killed_with_137() {
        use wasm_encoder::BlockType;
        let (rt, _dir) = runtime_in();
        // Grows by 100 pages (6.25 MiB) and traps if that is refused, as
        // an aborting allocator would.
        let bytes = core_module(|i| {
            i.i32_const(100)
                .memory_grow(0)
                .i32_const(-1)
                .i32_eq()
                .if_(BlockType::Empty)
                .unreachable()
                .end();
        });
        let loaded = rt.load(&digest_of(&bytes), &bytes).expect("load");
        let limits = PodLimits {
            memory_bytes: Some(1 << 20),
            ..PodLimits::default()
        };
        let status = run_command(&loaded, &PodContext::default(), &limits)
            .await
            .expect("run");
        assert_eq!(status, ExitStatus::OomKilled);
        assert_eq!((status.code(), status.reason()), (137, "OOMKilled"));
        // Within the limit it completes.
        let status = run_command(&loaded, &PodContext::default(), &PodLimits::default())
            .await
            .expect("run");
        assert_eq!(status, ExitStatus::Exited(0));
    }

    #[tokio::test]
    async fn a_spinning_command_is_stopped_at_its_active_deadline() {
        use wasm_encoder::BlockType;
        let (rt, _dir) = runtime_in();
        let bytes = core_module(|i| {
            i.loop_(BlockType::Empty).br(0).end();
        });
        let loaded = rt.load(&digest_of(&bytes), &bytes).expect("load");
        let limits = PodLimits {
            active_deadline: Some(std::time::Duration::from_millis(200)),
            ..PodLimits::default()
        };
        let start = Instant::now();
        let status = run_command(&loaded, &PodContext::default(), &limits)
            .await
            .expect("run");
        assert_eq!(status, ExitStatus::DeadlineExceeded);
        assert_eq!(status.reason(), "DeadlineExceeded");
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }
}
