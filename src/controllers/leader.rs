//! Leader election on `coordination.k8s.io/v1` Lease objects, the way
//! Kubernetes' control-plane components elect one active instance: every
//! candidate tries to take the Lease; the holder renews it every retry
//! period and the others wait until it has not been renewed for the
//! lease duration.
//!
//! Expiry is judged by the candidate's own clock: a candidate notes when it
//! last *saw* the Lease record change, and only takes over once the record
//! stood still for `leaseDurationSeconds`. Clocks of different machines
//! never get compared, so skew cannot make two leaders.
//!
//! A leader that cannot renew within the renew deadline stops its work
//! before the lease can expire for others, then competes again.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::time::Instant;

use crate::events::{EventType, Recorder, reference};

/// Lease timing, as the `--leader-elect-*` flags set it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderElectionConfig {
    /// How long others wait after the last renewal before taking over.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up.
    pub renew_deadline: Duration,
    /// How often candidates try to acquire, and the leader to renew.
    pub retry_period: Duration,
    /// Where the Lease objects live.
    pub namespace: String,
}

impl Default for LeaderElectionConfig {
    /// Kubernetes' defaults: 15 s, 10 s, 2 s in `kube-system`.
    fn default() -> Self {
        LeaderElectionConfig {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            namespace: "kube-system".into(),
        }
    }
}

/// A unique identity for this process: `HOSTNAME_UUID`, as Kubernetes'
/// components name themselves in a Lease's `holderIdentity`.
pub fn new_identity() -> String {
    format!("{}_{}", crate::cluster::host_name(), uuid::Uuid::new_v4())
}

/// The identity of the server whose data directory is `dir`: made once
/// with [`new_identity`] and kept in `DIR/leader-identity`, so a server
/// that restarts after a crash takes its own Leases back at once instead
/// of waiting for them to expire. Safe because the data directory's lock
/// lets only one live process use it. Falls back to a fresh identity if
/// the file cannot be written.
pub fn persistent_identity(dir: &std::path::Path) -> String {
    let path = dir.join("leader-identity");
    if let Ok(s) = std::fs::read_to_string(&path)
        && !s.trim().is_empty()
    {
        return s.trim().to_string();
    }
    let id = new_identity();
    if let Err(e) = std::fs::write(&path, format!("{id}\n")) {
        tracing::warn!(path = %path.display(), error = %e, "cannot keep the leader identity");
    }
    id
}

/// Why one acquire or renew attempt failed (a Lease held by another
/// candidate is not an error but `Ok(false)`).
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("cannot read or write lease {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// What a candidate last saw of the Lease, and when (by its own clock).
#[derive(Clone, Debug, PartialEq)]
struct Observed {
    holder: String,
    renew_time: Option<MicroTime>,
    duration: Duration,
}

/// One candidate for one Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    cfg: LeaderElectionConfig,
    observed: Option<(Observed, Instant)>,
}

fn now_micro() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl LeaderElector {
    pub fn new(
        client: kube::Client,
        name: impl Into<String>,
        identity: impl Into<String>,
        cfg: LeaderElectionConfig,
    ) -> LeaderElector {
        LeaderElector {
            api: Api::namespaced(client, &cfg.namespace),
            name: name.into(),
            identity: identity.into(),
            cfg,
            observed: None,
        }
    }

    fn api_err(&self, source: kube::Error) -> LeaderError {
        LeaderError::Api {
            namespace: self.cfg.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }

    fn lease_seconds(&self) -> i32 {
        self.cfg.lease_duration.as_secs().clamp(1, i32::MAX as u64) as i32
    }

    /// Takes the Lease if it is free, expired or already ours, and renews
    /// it. Returns whether this candidate holds it now.
    ///
    /// # Errors
    /// The API could not be reached or refused for another reason than a
    /// conflict (a conflict means another candidate won this round).
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaderError> {
        let now = now_micro();
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.api_err(e))?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.lease_seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created);
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(self.api_err(e)),
            };
        };
        self.observe(&lease);
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.identity;
        if !ours && !holder.is_empty() && !self.expired() {
            return Ok(false);
        }
        if !ours {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(self.lease_seconds());
        spec.renew_time = Some(now);
        // The resourceVersion read above makes this a compare-and-swap: of
        // two candidates taking an expired lease at once, one gets 409.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                self.observe(&written);
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(self.api_err(e)),
        }
    }

    /// Gives the Lease up (on a clean stop) so a standby need not wait for
    /// it to expire: no holder, and a one-second duration.
    pub async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        let now = now_micro();
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now.clone());
        spec.acquire_time = Some(now);
        if let Err(e) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(lease = %self.name, error = %e, "cannot release the lease");
        }
    }

    fn observe(&mut self, lease: &Lease) {
        let spec = lease.spec.clone().unwrap_or_default();
        let seen = Observed {
            holder: spec.holder_identity.unwrap_or_default(),
            renew_time: spec.renew_time,
            duration: Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64),
        };
        if self.observed.as_ref().map(|(o, _)| o) != Some(&seen) {
            self.observed = Some((seen, Instant::now()));
        }
    }

    /// Whether the record stood still for its own lease duration.
    fn expired(&self) -> bool {
        self.observed
            .as_ref()
            .is_none_or(|(o, at)| at.elapsed() >= o.duration)
    }
}

/// Runs `work` only while this candidate holds the Lease `name`, until
/// `shutdown`. `work` gets a future that resolves when it must stop (the
/// lease was lost or shutdown began); it is started again when the lease
/// is won back. On shutdown the Lease is released.
pub async fn run_elected<W, Fut>(
    client: kube::Client,
    name: &str,
    identity: String,
    cfg: LeaderElectionConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    work: W,
) where
    W: Fn(crate::shutdown::Stop) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let stop = crate::shutdown::Stop::new(shutdown);
    let recorder = Recorder::start(client.clone(), "leader-election", None);
    let mut elector = LeaderElector::new(client, name, identity.clone(), cfg.clone());
    let retry = cfg.retry_period.max(Duration::from_millis(50));
    tracing::info!(lease = name, %identity, "attempting to acquire leader lease");
    loop {
        // Acquire, trying at once and then every retry period.
        loop {
            match elector.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = stop.wait() => return,
            }
        }
        tracing::info!(lease = name, %identity, "successfully acquired lease");
        if let Ok(Some(lease)) = elector.api.get_opt(name).await {
            recorder.record(
                &reference(&lease),
                EventType::Normal,
                "LeaderElection",
                format!("{identity} became leader"),
            );
        }

        let (lost_tx, lost_rx) = tokio::sync::watch::channel(false);
        let work_stop = {
            let shutdown = stop.wait();
            let mut lost = lost_rx.clone();
            crate::shutdown::Stop::new(async move {
                tokio::select! {
                    _ = shutdown => {}
                    _ = lost.wait_for(|l| *l) => {}
                }
            })
        };
        let running = tokio::spawn(work(work_stop));
        let mut last_renewed = Instant::now();
        let shutting_down = loop {
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = stop.wait() => break true,
            }
            let attempt =
                tokio::time::timeout(cfg.renew_deadline, elector.try_acquire_or_renew()).await;
            match attempt {
                Ok(Ok(true)) => last_renewed = Instant::now(),
                Ok(Ok(false)) => {
                    tracing::warn!(lease = name, "another candidate took the lease");
                    break false;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "lease renewal failed"),
                Err(_) => tracing::warn!(lease = name, "lease renewal timed out"),
            }
            if last_renewed.elapsed() >= cfg.renew_deadline {
                tracing::error!(
                    lease = name,
                    "failed to renew the lease within the renew deadline"
                );
                break false;
            }
        };
        let _ = lost_tx.send(true);
        finish_within_grace(running, name).await;
        if shutting_down {
            elector.release().await;
            return;
        }
        tracing::warn!(lease = name, %identity, "leader election lost; work stopped");
    }
}

/// [`run_elected`] with `Some(cfg)`; with `None` (`--leader-elect=false`)
/// `work` simply runs until `shutdown`.
pub async fn run_maybe_elected<W, Fut>(
    client: kube::Client,
    name: &str,
    identity: String,
    cfg: Option<LeaderElectionConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    work: W,
) where
    W: Fn(crate::shutdown::Stop) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    match cfg {
        Some(cfg) => run_elected(client, name, identity, cfg, shutdown, work).await,
        None => {
            let stop = crate::shutdown::Stop::new(shutdown);
            let mut running = tokio::spawn(work(stop.clone()));
            tokio::select! {
                _ = &mut running => {}
                _ = stop.wait() => finish_within_grace(running, name).await,
            }
        }
    }
}

/// How long stopped work may take to wind down before it is dropped.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Waits for stopped work to end, for at most [`STOP_GRACE`], then aborts
/// it. A kube-runtime controller stopped before its caches filled waits for
/// them without end, and a shutdown must not hang on that.
async fn finish_within_grace(mut running: tokio::task::JoinHandle<()>, name: &str) {
    tokio::select! {
        _ = &mut running => {}
        _ = tokio::time::sleep(STOP_GRACE) => {
            running.abort();
            tracing::warn!(lease = name, grace = ?STOP_GRACE, "work did not stop in time; dropped it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_kubernetes() {
        let c = LeaderElectionConfig::default();
        assert_eq!(c.lease_duration, Duration::from_secs(15));
        assert_eq!(c.renew_deadline, Duration::from_secs(10));
        assert_eq!(c.retry_period, Duration::from_secs(2));
        assert_eq!(c.namespace, "kube-system");
    }

    #[test]
    fn a_data_directory_keeps_its_identity() {
        let dir = tempfile::tempdir().unwrap();
        let first = persistent_identity(dir.path());
        assert_eq!(persistent_identity(dir.path()), first);
        assert_ne!(
            persistent_identity(tempfile::tempdir().unwrap().path()),
            first
        );
    }

    #[test]
    fn an_identity_is_the_host_name_and_a_unique_suffix() {
        let a = new_identity();
        let b = new_identity();
        assert_ne!(a, b);
        let (host, id) = a.rsplit_once('_').unwrap();
        assert!(!host.is_empty());
        assert!(uuid::Uuid::parse_str(id).is_ok());
    }
}
