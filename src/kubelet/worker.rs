//! A pod's lifecycle on this node, as an explicit state machine:
//!
//! ```text
//!            ┌──── error: waiting reason + back-off ───┐
//!            ▼                                         │
//!   ──▶ Preparing ──▶ Initializing(i) ──▶ Running ──▶ Finished (Succeeded/Failed)
//!            │              │                │              │
//!            └──────────────┴── deletion ────┴──────────────┴──▶ Terminating ──▶ Gone
//! ```
//!
//! - **Preparing**: pod IP, modules (resolve, then code from disk, code
//!   the API server compiled for this node, or fetch, verify, compile),
//!   volumes, the service-account mount, each container's environment. A
//!   failure leaves the containers Waiting with Kubernetes' reason
//!   (`ErrModulePull`, `InvalidModule`, `ModuleNotPrecompiled`,
//!   `CreateContainerConfigError`) and is
//!   retried with back-off; the kubelet itself never fails.
//! - **Initializing(i)**: init container `i` runs to completion (retried on
//!   failure unless `restartPolicy: Never`, which fails the pod).
//! - **Running**: every main container runs its own loop (restart policy,
//!   crash-loop back-off, probes); the pod ends when all have ended for
//!   good, or at `activeDeadlineSeconds`.
//! - **Finished**: a terminal phase; nothing runs, the object stays until
//!   deleted.
//! - **Terminating**: the pod is deleted: no new requests, in-flight ones
//!   get up to the grace period, then containers stop, the final status is
//!   written and the object is removed (`gracePeriodSeconds=0`).
//! - **Gone**: volumes, logs and the pod IP are released.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::watch;

use super::Shared;
use super::container::{self, Backoff, Ended, Prepared, Slot};
use super::ipam::PodIps;
use super::modules::ModuleError;
use super::pods::PodHandle;
use super::precompiled::{self, ModuleCode};
use super::spec::{self, PodFacts, Referenced};
use super::status::{Phase, PodRecord, RestartPolicy, State};
use crate::runtime::{LoadedModule, RuntimeError};

/// The states of a pod worker. Each arm's handler returns the next state.
#[derive(Debug)]
enum Step {
    Preparing,
    Initializing(usize),
    Running,
    Finished,
    Terminating,
    Gone,
}

/// Drives one pod.
pub struct PodWorker {
    shared: Arc<Shared>,
    /// The latest object; `None` once it is deleted from the API.
    pod: watch::Receiver<Option<Arc<Pod>>>,
    ips: Arc<Mutex<Option<PodIps>>>,
    /// Built by Preparing: one per init container, then one per container.
    /// Shared with the containers' tasks, which hold them for the pod's
    /// life: one copy per pod, not two.
    init: Vec<Arc<Prepared>>,
    main: Vec<Arc<Prepared>>,
    /// Stops the running containers.
    stop: watch::Sender<bool>,
    running: Vec<tokio::task::JoinHandle<Ended>>,
    /// The object as last seen, for writes after it is gone from the watch.
    last: Arc<Pod>,
    backoff: Backoff,
    /// Preparations refused with 429 in a row (see [`THROTTLED_LIMIT`]).
    throttled: u32,
}

impl PodWorker {
    pub fn new(
        shared: Arc<Shared>,
        pod: watch::Receiver<Option<Arc<Pod>>>,
        ips: Arc<Mutex<Option<PodIps>>>,
    ) -> PodWorker {
        let last = pod.borrow().clone().unwrap_or_default();
        let backoff = Backoff::new(shared.config.backoff_initial, shared.config.backoff_max);
        PodWorker {
            shared,
            pod,
            ips,
            init: Vec::new(),
            main: Vec::new(),
            stop: watch::channel(false).0,
            running: Vec::new(),
            last,
            backoff,
            throttled: 0,
        }
    }

    /// Runs the pod until its object is gone.
    pub async fn run(mut self) {
        let pod = self.last.clone();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let record = PodRecord::new(&pod, self.shared.config.node_ip.to_string());
        let handle = Arc::new(PodHandle::new(
            &pod,
            self.shared.pod_dir(&uid),
            self.shared.pod_secrets_dir(&uid),
            record,
        ));
        self.shared.pods.insert(handle.clone());
        let status = Arc::new(StatusWriter::new(self.shared.client.clone(), &pod));
        let writer = tokio::spawn(status.clone().run(handle.clone(), self.pod.clone()));

        let mut step = if handle.read(|r| r.terminal.is_some()) {
            Step::Finished
        } else {
            Step::Preparing
        };
        // Each step's future is boxed for as long as it runs: inlined,
        // this task would be as large as its largest step (the fetches of
        // preparing) for the whole life of the pod, kilobytes per pod on a
        // node with thousands of them.
        loop {
            tracing::debug!(pod = %handle.key(), ?step, "pod worker");
            step = match step {
                Step::Preparing => Box::pin(self.prepare(&handle)).await,
                Step::Initializing(i) => Box::pin(self.initialize(&handle, i)).await,
                Step::Running => Box::pin(self.running(&handle)).await,
                Step::Finished => Box::pin(self.finished()).await,
                Step::Terminating => Box::pin(self.terminate(&handle, &status)).await,
                Step::Gone => break,
            };
        }
        writer.abort();
        Box::pin(self.release(&handle)).await;
    }

    /// The pod is being deleted (or already gone from the API).
    fn deleting(&self) -> bool {
        self.pod
            .borrow()
            .as_ref()
            .is_none_or(|p| p.metadata.deletion_timestamp.is_some())
    }

    /// Waits for a deletion, or `delay`. True if the pod is being deleted.
    async fn wait_or_deleted(&mut self, delay: Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        let mut sleep = std::pin::pin!(sleep);
        loop {
            if self.deleting() {
                return true;
            }
            tokio::select! {
                _ = &mut sleep => return false,
                changed = self.pod.changed() => if changed.is_err() { return true },
            }
        }
    }

    async fn prepare(&mut self, handle: &Arc<PodHandle>) -> Step {
        if self.deleting() {
            return Step::Terminating;
        }
        match self.try_prepare(handle).await {
            Ok(()) => {
                self.throttled = 0;
                self.backoff = Backoff::new(
                    self.shared.config.backoff_initial,
                    self.shared.config.backoff_max,
                );
                if handle.read(|r| r.initialized) {
                    Step::Running
                } else {
                    Step::Initializing(0)
                }
            }
            Err(failure) if failure.throttled && self.throttled < THROTTLED_LIMIT => {
                // Still creating: no event, no back-off step (the server is
                // busy, nothing is wrong with the pod). Spread over a
                // second more, so pods refused together do not all come
                // back together.
                self.throttled += 1;
                tracing::debug!(pod = %handle.key(), message = %failure.message, "API server busy while preparing the pod; retrying");
                let jitter = Duration::from_millis(rand::random::<u64>() % 1000);
                if self.wait_or_deleted(THROTTLED_RETRY + jitter).await {
                    return Step::Terminating;
                }
                Step::Preparing
            }
            Err(failure) => {
                // Refused for long: from here on like any other failure,
                // with an event and the back-off.
                self.throttled = 0;
                tracing::info!(pod = %handle.key(), reason = failure.reason, message = %failure.message, "pod cannot start yet");
                self.shared.events.record(
                    &handle.pod_ref(),
                    crate::events::EventType::Warning,
                    "Failed",
                    format!("Error: {}", failure.message),
                );
                set_waiting(
                    handle,
                    failure.container.as_deref(),
                    failure.reason,
                    &failure.message,
                );
                let delay = self.backoff.next(Duration::ZERO);
                if self.wait_or_deleted(delay).await {
                    return Step::Terminating;
                }
                if failure.reason == "ErrModulePull" {
                    set_waiting(
                        handle,
                        failure.container.as_deref(),
                        "ModulePullBackOff",
                        &format!("Back-off pulling module: {}", failure.message),
                    );
                }
                Step::Preparing
            }
        }
    }

    async fn try_prepare(&mut self, handle: &Arc<PodHandle>) -> Result<(), Failure> {
        let pod = self.current();
        let spec = pod.spec.clone().unwrap_or_default();
        // The pod IP first: env (status.podIP) and status need it.
        let pod_ip = match handle.read(|r| r.pod_ip.clone()) {
            Some(ip) => Some(ip),
            None => {
                let ip = self.ips.lock().as_mut().map(|ips| ips.allocate());
                match ip {
                    Some(Ok(ip)) => {
                        let ip = ip.to_string();
                        // Reported with the next visible change (Running, or
                        // a waiting reason): a status write of its own would
                        // put a durable commit ahead of the Running one.
                        self.shared.pods.set_ip(handle, &ip);
                        Some(ip)
                    }
                    Some(Err(e)) => {
                        return Err(Failure::pod("ContainerCreating", e.to_string()));
                    }
                    None => None,
                }
            }
        };

        // Modules and mounts are independent: fetch and compile the one
        // while the API calls of the other (ServiceAccount, TokenRequest,
        // ConfigMaps, Secrets) are in flight.
        let (loaded, mounts) = tokio::join!(
            self.load_modules(handle, &spec),
            self.prepare_mounts(handle, &pod)
        );
        let loaded = loaded?;
        let (mut refs, volumes, sa_dir) = mounts?;
        let client = &self.shared.client;
        let facts = PodFacts {
            pod: &pod,
            pod_ip,
            host_ip: self.shared.config.node_ip.to_string(),
        };
        let build = |c: &Container| {
            let module = loaded[c.image.as_deref().unwrap_or_default()].clone();
            (c.clone(), module)
        };
        let mut init = Vec::new();
        let mut main = Vec::new();
        for (is_init, c) in spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| (true, c))
            .chain(spec.containers.iter().map(|c| (false, c)))
        {
            let (c, module) = build(c);
            let env = spec::environment(client, &mut refs, &facts, &c)
                .await
                .map_err(|e| Failure::spec(Some(c.name.clone()), e.reason(), &e))?;
            let preopens = spec::preopens(&c, &volumes, sa_dir.as_deref()).map_err(|e| {
                Failure::spec(Some(c.name.clone()), "CreateContainerConfigError", &e)
            })?;
            let mut ctx = spec::context(spec::argv(&c), env, preopens, &pod, None);
            ctx.router = Some(Arc::new(crate::proxy::PodRouter::new(
                self.shared.proxy.clone(),
                pod.metadata.namespace.clone().unwrap_or_default(),
                pod.metadata.name.as_deref().unwrap_or_default(),
                facts.pod_ip.as_deref().and_then(|ip| ip.parse().ok()),
            )));
            let limits = spec::limits(&pod, &c, None, self.shared.config.accounting);
            handle.set_usage(
                &c.name,
                super::pods::Usage {
                    cpu: limits.share.clone(),
                    memory: limits.meter.clone(),
                },
            );
            let prepared = Arc::new(Prepared {
                spec: c,
                module,
                ctx,
                limits,
            });
            if is_init {
                init.push(prepared);
            } else {
                main.push(prepared);
            }
        }
        self.init = init;
        self.main = main;
        if sa_dir.is_some() {
            self.spawn_token_refresh(handle);
        }
        Ok(())
    }

    /// Resolves, fetches and compiles each distinct image of the pod.
    async fn load_modules(
        &self,
        handle: &Arc<PodHandle>,
        spec: &k8s_openapi::api::core::v1::PodSpec,
    ) -> Result<HashMap<String, Arc<LoadedModule>>, Failure> {
        let mut loaded: HashMap<String, Arc<LoadedModule>> = HashMap::new();
        let all = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter());
        for c in all {
            let image = c.image.clone().unwrap_or_default();
            if loaded.contains_key(&image) {
                continue;
            }
            let module = self.load_module(&image).await.map_err(|f| Failure {
                container: Some(c.name.clone()),
                ..f
            })?;
            let digest = module.digest().to_string();
            self.shared.events.record(
                &handle.pod_ref(),
                crate::events::EventType::Normal,
                "Pulled",
                format!("Module {image:?} ({digest}) is ready"),
            );
            // Reported with the next visible change, as the pod IP.
            handle.update_quiet(|r| {
                for rec in r.init.iter_mut().chain(r.main.iter_mut()) {
                    if rec.image == image {
                        rec.image_id = digest.clone();
                    }
                }
            });
            loaded.insert(image, module);
        }
        Ok(loaded)
    }

    /// Writes the pod's volumes and, when automounted, its service-account
    /// mount. Returns the objects read (for the environment), the volume
    /// directories and the service-account directory.
    async fn prepare_mounts(
        &self,
        handle: &Arc<PodHandle>,
        pod: &Pod,
    ) -> Result<
        (
            Referenced,
            HashMap<String, (std::path::PathBuf, bool)>,
            Option<std::path::PathBuf>,
        ),
        Failure,
    > {
        let client = &self.shared.client;
        let ca = self.shared.ca_pem.as_deref();
        let mut refs = Referenced::default();
        let volumes =
            spec::prepare_volumes(client, &mut refs, pod, &handle.dir, &handle.secrets_dir, ca)
                .await
                .map_err(|e| Failure::spec(None, e.reason(), &e))?;
        let sa_dir = if spec::automount(client, &self.shared.automount, pod).await {
            Some(
                spec::service_account_dir(client, pod, &handle.secrets_dir, ca)
                    .await
                    .map_err(|e| Failure::spec(None, "ContainerCreating", &e))?,
            )
        } else {
            None
        };
        Ok((refs, volumes, sa_dir))
    }

    /// Keeps the mounted service-account token fresh (at 80% of its life).
    fn spawn_token_refresh(&self, handle: &Arc<PodHandle>) {
        let client = self.shared.client.clone();
        let pod = self.current();
        let dir = handle.secrets_dir.clone();
        let mut stop = self.stop.subscribe();
        let period = Duration::from_secs(spec::TOKEN_TTL_SECONDS as u64 * 8 / 10);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                let mut delay = Duration::from_secs(1);
                // Boxed: the request's state only while it runs, not in
                // the task that sleeps between refreshes.
                while let Err(e) = Box::pin(spec::refresh_token(&client, &pod, &dir)).await {
                    tracing::warn!(error = %e, "service-account token refresh failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    delay = (delay * 2).min(Duration::from_secs(60));
                }
            }
        });
    }

    /// Resolves `image` and loads its code: from memory, from this node's
    /// disk, precompiled by the API server, or compiled here from the
    /// fetched module (see [`ModuleCode`]).
    async fn load_module(&self, image: &str) -> Result<Arc<LoadedModule>, Failure> {
        let digest = self
            .shared
            .modules
            .resolve(image)
            .await
            .map_err(Failure::pull)?;
        if let Some(m) = self.shared.runtime.get(&digest) {
            return Ok(m);
        }
        // Pods started together share the first one's load (see
        // [`super::gates`]).
        self.shared
            .loads
            .run(&digest, || self.load_code(image, &digest))
            .await
    }

    /// [`Self::load_module`]'s work once `image` is resolved to `digest`
    /// and its code is not in memory.
    async fn load_code(&self, image: &str, digest: &str) -> Result<Arc<LoadedModule>, Failure> {
        let digest = digest.to_string();
        if let Some(m) = self.shared.runtime.get(&digest) {
            return Ok(m);
        }
        let runtime = self.shared.runtime.clone();
        let started = std::time::Instant::now();
        let d = digest.clone();
        match tokio::task::spawn_blocking(move || runtime.load_cached(&d)).await {
            Ok(Ok(Some(m))) => return Ok(m),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!(%digest, error = %e, "compiled module on disk unusable"),
            Err(e) => tracing::warn!(%digest, error = %e, "loading a compiled module from disk"),
        }
        let runtime = self.shared.runtime.clone();
        let compiles = runtime.compiles_locally();
        if self.shared.config.module_code != ModuleCode::Local {
            let profile = runtime.profile().clone();
            let mut throttled = false;
            let failure = match precompiled::fetch(&self.shared.client, &digest, &profile).await {
                Ok(code) => {
                    let d = digest.clone();
                    let loaded = tokio::task::spawn_blocking(move || {
                        runtime.load_precompiled(&d, code.kind, &code.bytes)
                    })
                    .await
                    .map_err(|e| RuntimeError::Engine(e.to_string()))
                    .and_then(|r| r);
                    match loaded {
                        Ok(m) => {
                            tracing::info!(
                                %digest,
                                target = %profile.target,
                                fingerprint = %profile.fingerprint(),
                                elapsed_ms = started.elapsed().as_millis() as u64,
                                "loaded module code precompiled by the API server"
                            );
                            return Ok(m);
                        }
                        Err(RuntimeError::InvalidModule { reason }) => {
                            return Err(Failure::pod(
                                "InvalidModule",
                                format!("module {image} ({digest}) cannot run: {reason}"),
                            ));
                        }
                        Err(e) => e.to_string(),
                    }
                }
                Err(e) if e.is_invalid_module() => {
                    return Err(Failure::pod(
                        "InvalidModule",
                        format!("module {image} ({digest}) cannot run: {e}"),
                    ));
                }
                Err(e) => {
                    throttled = e.throttled();
                    e.to_string()
                }
            };
            if !compiles && throttled {
                // Asked again soon: the server is busy, the code may exist.
                return Err(Failure {
                    throttled,
                    ..Failure::pod("ContainerCreating", failure)
                });
            }
            if !compiles {
                return Err(Failure::pod(
                    "ModuleNotPrecompiled",
                    format!(
                        "module {image} ({digest}) has no precompiled code for {} (engine {}), and this node runs only precompiled modules ({}): {failure}",
                        profile.target,
                        profile.fingerprint(),
                        if cfg!(feature = "compiler") {
                            "--module-code precompiled"
                        } else {
                            "built without the compiler"
                        },
                    ),
                ));
            }
            tracing::info!(%digest, reason = %failure, "no precompiled code from the API server; compiling here");
        }
        let bytes = self
            .shared
            .modules
            .fetch(&digest)
            .await
            .map_err(Failure::pull)?;
        let runtime = self.shared.runtime.clone();
        let d = digest.clone();
        let loaded = tokio::task::spawn_blocking(move || runtime.load(&d, &bytes))
            .await
            .map_err(|e| Failure::pod("InvalidModule", format!("compiling {digest}: {e}")))?;
        let loaded = loaded.map_err(|e| match e {
            RuntimeError::InvalidModule { reason } => Failure::pod(
                "InvalidModule",
                format!("module {image} ({digest}) cannot run: {reason}"),
            ),
            other => Failure::pod(
                "ErrModulePull",
                format!("module {image} ({digest}): {other}"),
            ),
        })?;
        tracing::info!(
            %digest,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compiled module on this node"
        );
        Ok(loaded)
    }

    async fn initialize(&mut self, handle: &Arc<PodHandle>, i: usize) -> Step {
        if self.deleting() {
            return Step::Terminating;
        }
        if i >= self.init.len() {
            handle.update(|r| r.initialized = true);
            return Step::Running;
        }
        let policy = RestartPolicy::parse(self.policy().as_deref());
        // Main containers wait while init containers run.
        handle.update(|r| {
            for c in &mut r.main {
                c.state = State::Waiting {
                    reason: "PodInitializing".into(),
                    message: None,
                };
            }
        });
        let _ = self.stop.send(false);
        let task = tokio::spawn(container::run(
            self.shared.clone(),
            handle.clone(),
            Slot::Init(i),
            self.init[i].clone(),
            policy,
            self.stop.subscribe(),
        ));
        let mut task = std::pin::pin!(task);
        let ended = loop {
            tokio::select! {
                r = &mut task => break r.unwrap_or(Ended::Stopped),
                changed = self.pod.changed() => {
                    if changed.is_err() || self.deleting() {
                        let _ = self.stop.send(true);
                    }
                }
            }
        };
        match ended {
            Ended::Exited(0) => Step::Initializing(i + 1),
            Ended::Exited(code) => {
                let name = self.init[i].spec.name.clone();
                handle.update(|r| {
                    r.terminal = Some((
                        Phase::Failed,
                        None,
                        Some(format!(
                            "init container {name:?} failed with exit code {code}"
                        )),
                    ));
                    for c in &mut r.main {
                        c.state = State::Waiting {
                            reason: "PodInitializing".into(),
                            message: None,
                        };
                    }
                });
                Step::Finished
            }
            Ended::Stopped => Step::Terminating,
        }
    }

    async fn running(&mut self, handle: &Arc<PodHandle>) -> Step {
        if self.deleting() {
            return Step::Terminating;
        }
        let policy = RestartPolicy::parse(self.policy().as_deref());
        let _ = self.stop.send(false);
        for (i, prep) in self.main.iter().enumerate() {
            // A container that ended for good before a kubelet restart stays
            // ended.
            let done = handle.read(|r| {
                matches!(&r.main[i].state, State::Terminated(t) if !policy.restarts(t.exit_code))
            });
            if done {
                continue;
            }
            self.running.push(tokio::spawn(container::run(
                self.shared.clone(),
                handle.clone(),
                Slot::Main(i),
                prep.clone(),
                policy,
                self.stop.subscribe(),
            )));
        }
        let deadline = self.active_deadline(handle);
        let mut all = std::pin::pin!(futures::future::join_all(std::mem::take(&mut self.running)));
        loop {
            tokio::select! {
                _ = &mut all => {
                    let phase = handle.read(|r| r.phase());
                    if phase.is_terminal() {
                        handle.update(|r| r.terminal = Some((phase, None, None)));
                    }
                    return Step::Finished;
                }
                changed = self.pod.changed() => {
                    if changed.is_err() || self.deleting() {
                        let _ = self.stop.send(true);
                        // The containers see the stop; Terminating waits
                        // for them via the drain and the join below.
                        (&mut all).await;
                        return Step::Terminating;
                    }
                }
                _ = sleep_until_opt(deadline) => {
                    let _ = self.stop.send(true);
                    (&mut all).await;
                    let secs = self.current().spec.as_ref().and_then(|s| s.active_deadline_seconds).unwrap_or(0);
                    handle.update(|r| {
                        r.terminal = Some((
                            Phase::Failed,
                            Some("DeadlineExceeded".into()),
                            Some(format!("Pod was active on the node longer than the specified deadline ({secs}s)")),
                        ));
                    });
                    return Step::Finished;
                }
            }
        }
    }

    /// When `activeDeadlineSeconds` (counted from the pod's start) passes.
    fn active_deadline(&self, handle: &PodHandle) -> Option<tokio::time::Instant> {
        let secs = self.current().spec.as_ref()?.active_deadline_seconds?;
        let start = handle.read(|r| r.start_time.0);
        let elapsed = super::node::chrono_now()
            .duration_since(start)
            .try_into()
            .unwrap_or(Duration::ZERO);
        let left = Duration::from_secs(secs.max(0) as u64).saturating_sub(elapsed);
        Some(tokio::time::Instant::now() + left)
    }

    async fn finished(&mut self) -> Step {
        loop {
            if self.deleting() {
                return Step::Terminating;
            }
            if self.pod.changed().await.is_err() {
                return Step::Terminating;
            }
        }
    }

    async fn terminate(&mut self, handle: &Arc<PodHandle>, status: &StatusWriter) -> Step {
        let current = self.pod.borrow().clone();
        handle.stop_accepting();
        if let Some(pod) = &current {
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .or_else(|| {
                    pod.spec
                        .as_ref()
                        .and_then(|s| s.termination_grace_period_seconds)
                })
                .unwrap_or(30)
                .max(0) as u64;
            let _ = tokio::time::timeout(Duration::from_secs(grace), handle.drained()).await;
        }
        self.shared.events.record(
            &handle.pod_ref(),
            crate::events::EventType::Normal,
            "Killing",
            "Stopping the pod's containers".into(),
        );
        let _ = self.stop.send(true);
        for t in std::mem::take(&mut self.running) {
            let _ = t.await;
        }
        let Some(pod) = current else {
            return Step::Gone;
        };
        // The final status, then the object goes.
        handle.update(|r| {
            for c in r.main.iter_mut().chain(r.init.iter_mut()) {
                c.ready = false;
            }
        });
        status.sync(handle).await;
        let api: Api<Pod> = Api::namespaced(
            self.shared.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        let mut delay = Duration::from_millis(100);
        loop {
            match api.delete(&name, &params).await {
                Ok(_) => break,
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => break,
                Err(e) => {
                    tracing::warn!(pod = %handle.key(), error = %e, "deleting the pod failed; retrying");
                    if self.wait_gone(delay).await {
                        break;
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
        // Wait for the watch to confirm, so a late event cannot restart it.
        let _ = tokio::time::timeout(Duration::from_secs(30), async {
            while self.pod.borrow().is_some() {
                if self.pod.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
        Step::Gone
    }

    /// Waits `delay` or until the object is gone; true if it is gone.
    async fn wait_gone(&mut self, delay: Duration) -> bool {
        let _ = tokio::time::timeout(delay, async {
            while self.pod.borrow().is_some() {
                if self.pod.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
        self.pod.borrow().is_none()
    }

    /// Frees what the pod held on this node.
    async fn release(&self, handle: &Arc<PodHandle>) {
        self.shared.pods.remove(handle);
        if let Some(ip) = handle
            .read(|r| r.pod_ip.clone())
            .and_then(|ip| ip.parse().ok())
            && let Some(ips) = self.ips.lock().as_mut()
        {
            ips.release(ip);
        }
        // Off the async workers: removing a directory tree is a series of
        // blocking syscalls that the API server's requests would wait behind.
        // Without a directory in memory the two are the same one.
        let mut dirs = vec![handle.dir.clone(), handle.secrets_dir.clone()];
        dirs.dedup();
        for dir in dirs {
            let removed = super::off_workers({
                let dir = dir.clone();
                move || std::fs::remove_dir_all(&dir)
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            if let Err(e) = removed
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the pod's directory");
            }
        }
        tracing::info!(pod = %handle.key(), "pod released");
    }

    fn current(&self) -> Arc<Pod> {
        self.pod
            .borrow()
            .clone()
            .unwrap_or_else(|| self.last.clone())
    }

    fn policy(&self) -> Option<String> {
        self.current()
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Why Preparing failed: the waiting reason and message, for one container
/// or (when `None`) all of them.
#[derive(Clone, Debug)]
pub struct Failure {
    container: Option<String>,
    reason: &'static str,
    message: String,
    /// The API server refused a request for now (429): retried after
    /// [`THROTTLED_RETRY`] and up to a second more rather than the
    /// container back-off, which would hold the pod back 10 s for the
    /// server being busy a moment (see [`THROTTLED_LIMIT`]).
    throttled: bool,
}

impl Failure {
    fn pod(reason: &'static str, message: String) -> Failure {
        Failure {
            container: None,
            reason,
            message,
            throttled: false,
        }
    }

    /// A module that could not be had (`ErrModulePull`).
    fn pull(e: ModuleError) -> Failure {
        Failure {
            throttled: e.throttled(),
            ..Failure::pod("ErrModulePull", e.to_string())
        }
    }

    /// A failure preparing the pod's files or environment.
    fn spec(container: Option<String>, reason: &'static str, e: &spec::SpecError) -> Failure {
        Failure {
            container,
            reason,
            message: e.to_string(),
            throttled: e.throttled(),
        }
    }
}

fn set_waiting(handle: &PodHandle, container: Option<&str>, reason: &str, message: &str) {
    handle.update(|r| {
        for c in r.init.iter_mut().chain(r.main.iter_mut()) {
            if container.is_none_or(|n| n == c.name) {
                c.state = State::Waiting {
                    reason: reason.to_string(),
                    message: Some(message.to_string()),
                };
            }
        }
    });
}

/// How a status write went.
pub enum Synced {
    /// Written, or nothing to write.
    Done,
    /// Refused for now by the API server's flow control (429).
    Throttled,
    /// Failed otherwise; retried with back-off.
    Failed,
}

/// Preparations refused with 429 in a row that are retried soon, without
/// an event; after them the pod backs off as after any failure and says
/// why.
const THROTTLED_LIMIT: u32 = 10;

/// How long a throttled status write waits: the `Retry-After` the API
/// server sends with 429.
const THROTTLED_RETRY: Duration = Duration::from_secs(1);

/// Status writes the kubelet has in flight at most, over all its pods: far
/// below what the API server queues for one node (its flow's queue holds
/// 50, see `api::flowcontrol`), as Kubernetes' kubelet bounds its client
/// by a rate.
const MAX_STATUS_WRITES: usize = 16;
static STATUS_WRITES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_STATUS_WRITES);

/// Writes a pod's status whenever its record changes, skipping writes that
/// would change nothing.
pub struct StatusWriter {
    api: Api<Pod>,
    name: String,
    last: tokio::sync::Mutex<Option<Sent>>,
}

/// The status last sent: its JSON (a byte string is a tenth of the memory
/// of a JSON tree, kept for every pod of the node) and its Ready
/// condition's status, which every change of the pod is compared with.
struct Sent {
    json: Vec<u8>,
    ready: Option<String>,
}

/// The status of `status`'s Ready condition.
fn ready_of(status: &PodStatus) -> Option<&str> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

impl StatusWriter {
    fn new(client: kube::Client, pod: &Pod) -> StatusWriter {
        StatusWriter {
            api: Api::namespaced(
                client,
                pod.metadata.namespace.as_deref().unwrap_or_default(),
            ),
            name: pod.metadata.name.clone().unwrap_or_default(),
            last: tokio::sync::Mutex::new(None),
        }
    }

    async fn run(
        self: Arc<Self>,
        handle: Arc<PodHandle>,
        mut pod: watch::Receiver<Option<Arc<Pod>>>,
    ) {
        loop {
            tokio::select! {
                _ = handle.changed.notified() => {}
                changed = pod.changed() => {
                    if changed.is_err() {
                        // The worker is gone; only its own changes remain.
                        handle.changed.notified().await;
                    } else {
                        let seen = pod.borrow_and_update().clone();
                        if !self.overwritten(seen.as_deref()).await {
                            continue;
                        }
                    }
                }
            }
            let mut delay = Duration::from_millis(100);
            // Boxed: the request's state only while it runs, not in the
            // task that waits for the next change.
            loop {
                match Box::pin(self.sync(&handle)).await {
                    Synced::Done => break,
                    // The API server asked for a second's patience (429
                    // with Retry-After: 1, as it answers a node whose flow
                    // is full): waiting longer would only report the pod
                    // late; doubling the delay made the last pods of a
                    // 1,000-pod start Running 10 s late.
                    Synced::Throttled => tokio::time::sleep(THROTTLED_RETRY).await,
                    Synced::Failed => {
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(10));
                    }
                }
            }
        }
    }

    /// Whether someone else changed the pod's Ready condition since this
    /// kubelet reported it (the node lifecycle controller marks pods not
    /// Ready while their node is unreachable): then the next sync must
    /// send the status again even though the kubelet's own view is the same.
    async fn overwritten(&self, seen: Option<&Pod>) -> bool {
        let Some(seen) = seen.and_then(|p| p.status.as_ref()) else {
            return false;
        };
        let mut last = self.last.lock().await;
        let Some(sent) = last.as_ref() else {
            return false;
        };
        if sent.ready.as_deref() == ready_of(seen) {
            return false;
        }
        *last = None;
        true
    }

    /// Sends the current status if it changed.
    pub async fn sync(&self, handle: &PodHandle) -> Synced {
        let mut last = self.last.lock().await;
        let current = || {
            let status = handle.update_quiet(|r| r.to_status());
            let bytes = serde_json::to_vec(&status).ok()?;
            let changed = last.as_ref().is_none_or(|sent| sent.json != bytes);
            changed.then_some((status, bytes))
        };
        if current().is_none() {
            return Synced::Done;
        }
        // One write at a time per permit, so that a node starting a
        // thousand pods at once queues its writes here instead of flooding
        // its flow at the API server (past its queue: 429 and this pod's
        // back-off, measured at 10 s for a 1,000-pod fill).
        let _permit = STATUS_WRITES.acquire().await;
        // Whatever changed while this waited goes in the same write.
        let Some((status, bytes)) = current() else {
            return Synced::Done;
        };
        let patch = json!({ "status": status });
        match self
            .api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                *last = Some(Sent {
                    ready: ready_of(&status).map(str::to_string),
                    json: bytes,
                });
                Synced::Done
            }
            // The pod is gone; nothing left to report.
            Err(kube::Error::Api(e)) if e.code == 404 => Synced::Done,
            Err(kube::Error::Api(e)) if e.code == 429 => {
                tracing::debug!(pod = %handle.key(), "status update throttled; retrying");
                Synced::Throttled
            }
            Err(e) => {
                tracing::warn!(pod = %handle.key(), error = %e, "status update failed; retrying");
                Synced::Failed
            }
        }
    }
}
