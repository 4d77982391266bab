//! One container's run loop: start it (an HTTP service or a command), watch
//! it (probes for HTTP services, the exit status for commands), and apply
//! the pod's restart policy with crash-loop back-off.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Empty;
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::sync::watch;

use super::Shared;
use super::node::chrono_now;
use super::pods::{PodHandle, ServiceEntry};
use super::status::{RestartPolicy, State, Terminated};
use crate::events::EventType;
use crate::runtime::{ExitStatus, HttpService, LoadedModule, ModuleKind, PodContext, PodLimits};

/// Everything needed to start one container, built once per pod start.
#[derive(Clone)]
pub struct Prepared {
    pub spec: Container,
    pub module: Arc<LoadedModule>,
    /// Without a log sink: each run gets its own log file.
    pub ctx: PodContext,
    pub limits: PodLimits,
}

/// Exponential back-off between restarts: `initial`, doubling to `max`;
/// reset after a run that lasted longer than twice the cap, as Kubernetes
/// forgets a crash loop once a container has been up for a while.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The delay before the next start, given how long the last run lasted.
    pub fn next(&mut self, ran: Duration) -> Duration {
        if ran > self.max * 2 {
            self.next = self.initial;
        }
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
}

/// Which list of the pod a container is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Init(usize),
    Main(usize),
}

fn record_mut(r: &mut super::status::PodRecord, slot: Slot) -> &mut super::status::ContainerRecord {
    match slot {
        Slot::Init(i) => &mut r.init[i],
        Slot::Main(i) => &mut r.main[i],
    }
}

/// How a container's loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// It terminated and will not be restarted; the exit code.
    Exited(i32),
    /// The pod is stopping.
    Stopped,
}

/// Runs the container in `slot` until it ends for good under `policy` or
/// `stop` turns true.
pub async fn run(
    shared: Arc<Shared>,
    handle: Arc<PodHandle>,
    slot: Slot,
    prep: Arc<Prepared>,
    policy: RestartPolicy,
    mut stop: watch::Receiver<bool>,
) -> Ended {
    let name = prep.spec.name.clone();
    let mut backoff = Backoff::new(shared.config.backoff_initial, shared.config.backoff_max);
    let mut first = true;
    loop {
        if *stop.borrow() {
            return Ended::Stopped;
        }
        let attempt = handle.read(|r| match slot {
            Slot::Init(i) => r.init[i].restart_count,
            Slot::Main(i) => r.main[i].restart_count,
        });
        // Creating the log's directory and file blocks on the filesystem:
        // done on the blocking pool so the async workers keep serving.
        let opened = super::off_workers({
            let (logs, dir, name) = (shared.logs.clone(), handle.dir.join("logs"), name.clone());
            move || logs.open(&dir, &name, attempt.max(0) as u32)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
        let writer = match opened {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(pod = %handle.key(), container = %name, error = %e, "cannot open the container log; its output is discarded");
                None
            }
        };
        let mut ctx = prep.ctx.clone();
        ctx.logs = writer.as_ref().map(|w| w.sink());
        // Taken back from an earlier kubelet: the container keeps its
        // start time (an HTTP service has no state to lose).
        let started_at = handle
            .read(|r| match &record_ro(r, slot).state {
                State::Running { started_at } if first => Some(started_at.clone()),
                _ => None,
            })
            .unwrap_or_else(|| Time(chrono_now()));
        first = false;
        let began = Instant::now();
        let has_startup = prep.spec.startup_probe.is_some();
        let has_readiness = prep.spec.readiness_probe.is_some();
        handle.update(|r| {
            let c = record_mut(r, slot);
            c.state = State::Running {
                started_at: started_at.clone(),
            };
            c.started = !has_startup;
            c.ready = matches!(slot, Slot::Main(_)) && !has_startup && !has_readiness;
        });
        shared.events.record(
            &handle.pod_ref(),
            EventType::Normal,
            "Started",
            format!("Started container {name}"),
        );

        // The serving and running futures are boxed: this task lives as
        // long as the container, and inlined they would make every
        // container's task as large as the largest of them.
        let outcome = match prep.module.kind() {
            ModuleKind::Http if matches!(slot, Slot::Main(_)) => {
                Box::pin(serve_http(&shared, &handle, slot, &prep, ctx, &mut stop)).await
            }
            ModuleKind::Http => Outcome::Ended(Terminated {
                exit_code: 1,
                reason: "Error".into(),
                message: Some(
                    "an HTTP component cannot be an init container: init containers must run to completion".into(),
                ),
                started_at: Some(started_at.clone()),
                finished_at: Time(chrono_now()),
            }),
            ModuleKind::Command | ModuleKind::CoreCommand => {
                let run = Box::pin(crate::runtime::run_command(&prep.module, &ctx, &prep.limits));
                tokio::select! {
                    r = run => Outcome::Ended(match r {
                        Ok(status) => terminated_from(&status, &started_at),
                        Err(e) => start_terminated(e.to_string(), Some(started_at.clone())),
                    }),
                    _ = stop.wait_for(|s| *s) => Outcome::Stopped,
                }
            }
        };
        if let Some(w) = writer {
            w.finish();
        }
        let t = match outcome {
            Outcome::Stopped => {
                handle.update(|r| {
                    let c = record_mut(r, slot);
                    c.ready = false;
                    c.state = State::Terminated(Terminated {
                        exit_code: if prep.module.kind() == ModuleKind::Http {
                            0
                        } else {
                            137
                        },
                        reason: if prep.module.kind() == ModuleKind::Http {
                            "Completed"
                        } else {
                            "Error"
                        }
                        .into(),
                        message: None,
                        started_at: Some(started_at.clone()),
                        finished_at: Time(chrono_now()),
                    });
                });
                return Ended::Stopped;
            }
            Outcome::Ended(t) => t,
        };
        let code = t.exit_code;
        let restart = match slot {
            // An init container that succeeded is done; one that failed is
            // retried unless the policy is Never.
            Slot::Init(_) => code != 0 && policy != RestartPolicy::Never,
            Slot::Main(_) => policy.restarts(code),
        };
        if !restart {
            handle.update(|r| {
                let c = record_mut(r, slot);
                c.ready = false;
                c.state = State::Terminated(t);
            });
            return Ended::Exited(code);
        }
        let delay = backoff.next(began.elapsed());
        shared.events.record(
            &handle.pod_ref(),
            EventType::Warning,
            "BackOff",
            format!(
                "Back-off restarting failed container {name} in pod {}_{}({})",
                handle.name, handle.namespace, handle.uid
            ),
        );
        let message = format!(
            "back-off {} restarting failed container={} pod={}_{}({})",
            humantime(delay),
            name,
            handle.name,
            handle.namespace,
            handle.uid
        );
        handle.update(|r| {
            let c = record_mut(r, slot);
            c.ready = false;
            c.last_terminated = Some(t);
            c.restart_count += 1;
            c.state = State::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(message),
            };
        });
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => return Ended::Stopped,
        }
    }
}

enum Outcome {
    Ended(Terminated),
    Stopped,
}

/// A container that could not start (exit code 128, as a runtime reports
/// a failed start).
fn start_terminated(message: String, started_at: Option<Time>) -> Terminated {
    Terminated {
        exit_code: 128,
        reason: "StartError".into(),
        message: Some(message),
        started_at,
        finished_at: Time(chrono_now()),
    }
}

fn start_error(message: String, started_at: Option<Time>) -> Outcome {
    Outcome::Ended(start_terminated(message, started_at))
}

fn terminated_from(status: &ExitStatus, started_at: &Time) -> Terminated {
    Terminated {
        exit_code: status.code(),
        reason: status.reason().into(),
        message: match status {
            ExitStatus::Trapped(m) => Some(m.clone()),
            ExitStatus::OomKilled => Some("memory growth past limits.memory was refused".into()),
            _ => None,
        },
        started_at: Some(started_at.clone()),
        finished_at: Time(chrono_now()),
    }
}

/// A duration as Go prints it (`10s`, `2m40s`), as in Kubernetes' messages.
fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else if s > 0 {
        format!("{s}s")
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Serves the HTTP component until the pod stops or a probe says it is
/// dead.
async fn serve_http(
    shared: &Shared,
    handle: &Arc<PodHandle>,
    slot: Slot,
    prep: &Prepared,
    ctx: PodContext,
    stop: &mut watch::Receiver<bool>,
) -> Outcome {
    let started_at = handle.read(|r| match &record_ro(r, slot).state {
        State::Running { started_at } => Some(started_at.clone()),
        _ => None,
    });
    let svc = match HttpService::new(prep.module.clone(), ctx, prep.limits.clone()) {
        Ok(s) => Arc::new(s),
        Err(e) => return start_error(e.to_string(), started_at),
    };
    // One instantiation up front: a context that cannot be built (a
    // missing volume, an exhausted pool) fails the start, not every request.
    if let Err(e) = Box::pin(svc.probe_instantiation()).await {
        return start_error(e.to_string(), started_at);
    }
    let ports: Vec<u16> = prep
        .spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .collect();
    handle.add_service(
        &prep.spec.name,
        ServiceEntry {
            ports,
            service: svc.clone(),
        },
    );
    let result = tokio::select! {
        r = Box::pin(probe_loop(shared, handle, slot, &prep.spec, &svc)) => Outcome::Ended(Terminated {
            exit_code: 137,
            reason: "Error".into(),
            message: Some(r),
            started_at,
            finished_at: Time(chrono_now()),
        }),
        _ = stop.wait_for(|s| *s) => Outcome::Stopped,
    };
    handle.remove_service(&prep.spec.name);
    result
}

fn record_ro(r: &super::status::PodRecord, slot: Slot) -> &super::status::ContainerRecord {
    match slot {
        Slot::Init(i) => &r.init[i],
        Slot::Main(i) => &r.main[i],
    }
}

/// Probe settings with Kubernetes' defaults.
struct ProbeSpec {
    get: Option<HTTPGetAction>,
    initial_delay: Duration,
    period: Duration,
    timeout: Duration,
    success_threshold: u32,
    failure_threshold: u32,
}

impl ProbeSpec {
    fn from(p: &Probe) -> ProbeSpec {
        let secs = |v: Option<i32>, d: i32| Duration::from_secs(v.unwrap_or(d).max(0) as u64);
        ProbeSpec {
            get: p.http_get.clone(),
            initial_delay: secs(p.initial_delay_seconds, 0),
            period: secs(p.period_seconds, 10).max(Duration::from_millis(100)),
            timeout: secs(p.timeout_seconds, 1).max(Duration::from_millis(100)),
            success_threshold: p.success_threshold.unwrap_or(1).max(1) as u32,
            failure_threshold: p.failure_threshold.unwrap_or(3).max(1) as u32,
        }
    }
}

/// Runs the startup, then readiness and liveness probes. Returns only when
/// the container must be restarted, with the reason.
async fn probe_loop(
    shared: &Shared,
    handle: &Arc<PodHandle>,
    slot: Slot,
    spec: &Container,
    svc: &Arc<HttpService>,
) -> String {
    if let Some(p) = &spec.startup_probe {
        let p = ProbeSpec::from(p);
        tokio::time::sleep(p.initial_delay).await;
        let mut failures = 0;
        loop {
            match probe_once(svc, &p).await {
                Ok(()) => break,
                Err(e) => {
                    failures += 1;
                    if failures >= p.failure_threshold {
                        return format!("Startup probe failed: {e}");
                    }
                }
            }
            tokio::time::sleep(p.period).await;
        }
        let no_readiness = spec.readiness_probe.is_none();
        handle.update(|r| {
            let c = record_mut(r, slot);
            c.started = true;
            c.ready = no_readiness;
        });
    }
    let readiness = spec.readiness_probe.as_ref().map(ProbeSpec::from);
    let liveness = spec.liveness_probe.as_ref().map(ProbeSpec::from);
    let far = Duration::from_secs(365 * 24 * 3600);
    let now = tokio::time::Instant::now();
    let mut next_ready = now + readiness.as_ref().map_or(far, |p| p.initial_delay);
    let mut next_live = now + liveness.as_ref().map_or(far, |p| p.initial_delay);
    let (mut ok_streak, mut fail_streak, mut live_fail) = (0u32, 0u32, 0u32);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_ready), if readiness.is_some() => {
                let Some(p) = &readiness else { continue };
                next_ready = tokio::time::Instant::now() + p.period;
                match probe_once(svc, p).await {
                    Ok(()) => {
                        fail_streak = 0;
                        ok_streak += 1;
                        if ok_streak >= p.success_threshold {
                            handle.update(|r| record_mut(r, slot).ready = true);
                        }
                    }
                    Err(e) => {
                        ok_streak = 0;
                        fail_streak += 1;
                        if fail_streak == p.failure_threshold {
                            shared.events.record(
                                &handle.pod_ref(),
                                EventType::Warning,
                                "Unhealthy",
                                format!("Readiness probe failed: {e}"),
                            );
                        }
                        if fail_streak >= p.failure_threshold {
                            handle.update(|r| record_mut(r, slot).ready = false);
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(next_live), if liveness.is_some() => {
                let Some(p) = &liveness else { continue };
                next_live = tokio::time::Instant::now() + p.period;
                match probe_once(svc, p).await {
                    Ok(()) => live_fail = 0,
                    Err(e) => {
                        live_fail += 1;
                        let message = format!("Liveness probe failed: {e}");
                        shared.events.record(&handle.pod_ref(), EventType::Warning, "Unhealthy", message.clone());
                        if live_fail >= p.failure_threshold {
                            shared.events.record(
                                &handle.pod_ref(),
                                EventType::Normal,
                                "Killing",
                                format!("Container {} failed liveness probe, will be restarted", spec.name),
                            );
                            return message;
                        }
                    }
                }
            }
            _ = std::future::pending::<()>(), if readiness.is_none() && liveness.is_none() => {}
        }
    }
}

/// One httpGet probe, in-process: 200–399 within the timeout succeeds.
async fn probe_once(svc: &HttpService, p: &ProbeSpec) -> Result<(), String> {
    let Some(get) = &p.get else {
        // exec and tcpSocket probes have nothing to act on in a Wasm pod;
        // they pass, as the pod is serving if it is instantiable.
        return Ok(());
    };
    let path = get.path.clone().unwrap_or_else(|| "/".into());
    let mut req = hyper::Request::get(if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    });
    req = req.header(hyper::header::USER_AGENT, "kube-probe/1.33");
    if let Some(host) = &get.host {
        req = req.header(hyper::header::HOST, host);
    }
    for h in get.http_headers.iter().flatten() {
        req = req.header(h.name.as_str(), h.value.as_str());
    }
    let req = req
        .body(Empty::<bytes::Bytes>::new().map_err(|never| match never {}))
        .map_err(|e| format!("bad probe request: {e}"))?;
    match tokio::time::timeout(p.timeout, svc.try_handle(req)).await {
        Err(_) => Err(format!(
            "Get \"{}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
            get.path.as_deref().unwrap_or("/")
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(resp)) => {
            let code = resp.status().as_u16();
            if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("HTTP probe failed with statuscode: {code}"))
            }
        }
    }
}

use http_body_util::BodyExt as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets_after_a_long_run() {
        let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(40));
        let short = Duration::from_secs(1);
        assert_eq!(b.next(short), Duration::from_secs(10));
        assert_eq!(b.next(short), Duration::from_secs(20));
        assert_eq!(b.next(short), Duration::from_secs(40));
        assert_eq!(b.next(short), Duration::from_secs(40));
        assert_eq!(b.next(Duration::from_secs(81)), Duration::from_secs(10));
    }

    #[test]
    fn back_off_delays_print_like_go_durations() {
        assert_eq!(humantime(Duration::from_secs(10)), "10s");
        assert_eq!(humantime(Duration::from_secs(160)), "2m40s");
        assert_eq!(humantime(Duration::from_millis(50)), "50ms");
    }
}
