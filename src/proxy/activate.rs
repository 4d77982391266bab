//! Scale from zero, inside the proxy: a request for a Service with no
//! endpoints is held while the proxy asks the API server to wake the
//! workload behind it (a ServiceActivation, see `api::activation`), and is
//! sent on as soon as the routing table shows an endpoint.
//!
//! Per Service, one activation is asked at a time and every request that
//! arrives meanwhile waits for the same one. Waiting is bounded twice:
//! at most [`ActivationLimits::queue`] requests are held per Service, and
//! none longer than [`ActivationLimits::timeout`]; past either bound the
//! request gets `503` with `Retry-After`, never silence. A Service nothing
//! may wake (no autoscaler with `minReplicas: 0` selects its pods) is
//! remembered as such for [`REFUSED_FOR`], so its requests get their 503 at
//! once instead of asking again each time.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::Value;

use super::table::ProxiedService;

/// How long a Service found not wakeable is not asked about again.
pub const REFUSED_FOR: Duration = Duration::from_secs(5);

/// The bounds on held requests.
#[derive(Clone, Copy, Debug)]
pub struct ActivationLimits {
    /// Requests held per Service at once.
    pub queue: usize,
    /// Longest a request is held.
    pub timeout: Duration,
}

impl Default for ActivationLimits {
    fn default() -> Self {
        ActivationLimits {
            queue: 1000,
            timeout: Duration::from_secs(10),
        }
    }
}

/// What became of a held request.
#[derive(Debug)]
pub enum Held {
    /// The Service has an endpoint now: send the request on.
    Ready(Arc<ProxiedService>),
    /// Nothing may wake the Service.
    NotWakeable,
    /// The queue was full.
    QueueFull,
    /// No endpoint came within the timeout.
    TimedOut,
}

/// Where an activation of one Service stands.
#[derive(Clone, Debug)]
enum Asked {
    /// A request to the API server is in flight (or done: the workload is
    /// on its way up).
    Since(Instant),
    /// The API server said nothing may wake it.
    Refused(Instant),
}

/// The activations of one node's proxy.
#[derive(Default)]
pub struct Activator {
    /// The node's API client, set when the proxy starts watching (also
    /// what relays pod traffic to nodes behind NAT, see `route`).
    pub client: OnceLock<kube::Client>,
    asked: Mutex<HashMap<String, Asked>>,
    held: Mutex<HashMap<String, Arc<AtomicUsize>>>,
}

/// Releases a held slot.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Activator {
    /// Holds a request for `svc` (which has no endpoint on `port_index`)
    /// until an endpoint appears in the table `proxy` keeps.
    pub async fn hold(
        &self,
        proxy: &super::Proxy,
        svc: &ProxiedService,
        port_index: usize,
    ) -> Held {
        let key = svc.key().to_string();
        if let Some(Asked::Refused(at)) = self.asked.lock().get(&key)
            && at.elapsed() < REFUSED_FOR
        {
            return Held::NotWakeable;
        }
        let limits = proxy.config.activation;
        let counter = self.held.lock().entry(key.clone()).or_default().clone();
        if counter.fetch_add(1, Ordering::AcqRel) >= limits.queue {
            counter.fetch_sub(1, Ordering::AcqRel);
            return Held::QueueFull;
        }
        let _slot = Slot(counter);
        let mut generations = proxy.generation.subscribe();
        let deadline = tokio::time::Instant::now() + limits.timeout;
        let ask = {
            let mut asked = self.asked.lock();
            let stale = match asked.get(&key) {
                // Asked recently and still waiting: join that activation.
                Some(Asked::Since(at)) => at.elapsed() >= limits.timeout,
                _ => true,
            };
            if stale {
                asked.insert(key.clone(), Asked::Since(Instant::now()));
            }
            stale
        };
        if ask {
            match self.ask(&svc.namespace, &svc.name).await {
                Ok(()) => {}
                Err(Refusal::NotWakeable) => {
                    self.asked
                        .lock()
                        .insert(key, Asked::Refused(Instant::now()));
                    return Held::NotWakeable;
                }
                Err(Refusal::Failed(why)) => {
                    // Let the next request ask again.
                    self.asked.lock().remove(&key);
                    tracing::warn!(service = %key, error = %why, "activation failed");
                    return Held::TimedOut;
                }
            }
        }
        loop {
            if let Some(now) = proxy.table().service(&svc.namespace, &svc.name)
                && now
                    .ports
                    .get(port_index)
                    .is_some_and(|p| !p.endpoints.is_empty())
            {
                self.asked.lock().remove(&key);
                return Held::Ready(now);
            }
            match tokio::time::timeout_at(deadline, generations.changed()).await {
                Ok(Ok(())) => {}
                _ => return Held::TimedOut,
            }
        }
    }

    /// Asks the API server to wake the workload behind a Service.
    async fn ask(&self, namespace: &str, service: &str) -> Result<(), Refusal> {
        let client = self
            .client
            .get()
            .ok_or_else(|| Refusal::Failed("the proxy has no API client yet".into()))?;
        let body = crate::resources::activation::request(service).to_string();
        let req = axum::http::Request::post(crate::resources::activation::path(namespace))
            .header("content-type", "application/json")
            .body(body.into_bytes())
            .map_err(|e| Refusal::Failed(e.to_string()))?;
        match client.request::<Value>(req).await {
            Ok(answer) => {
                tracing::debug!(namespace, service, status = %answer["status"], "activation asked");
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 => Err(Refusal::NotWakeable),
            Err(e) => Err(Refusal::Failed(e.to_string())),
        }
    }
}

enum Refusal {
    NotWakeable,
    Failed(String),
}
