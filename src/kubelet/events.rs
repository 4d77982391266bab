//! Events the kubelet records about pods (module pulled, container
//! started, back-off, probe failures, killing), so `kubectl describe pod`
//! and `kubectl get events` show what happened, as with Kubernetes.
//!
//! Recording never blocks or fails a pod: events are sent by a background
//! task from a bounded queue and dropped (with a log line) when it is full.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};
use tokio::sync::mpsc;

use super::node::chrono_now;

/// How many events may wait to be sent.
const QUEUE: usize = 1024;

/// Normal or Warning, as Kubernetes types events.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Normal,
    Warning,
}

/// Which pod an event is about.
#[derive(Clone, Debug)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

struct Pending {
    pod: PodRef,
    kind: Kind,
    reason: &'static str,
    message: String,
}

/// Records events for this node's pods.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Pending>,
}

impl Recorder {
    /// Starts the sender task of the kubelet of `node`.
    pub fn start(client: kube::Client, node: String) -> Recorder {
        Recorder::for_component(client, "kubelet".into(), Some(node))
    }

    /// Starts the sender task of another component (the scheduler), whose
    /// events name it as their source; `host` is the node it runs on, if
    /// any.
    pub fn for_component(
        client: kube::Client,
        component: String,
        host: Option<String>,
    ) -> Recorder {
        let (tx, mut rx) = mpsc::channel::<Pending>(QUEUE);
        let node = Arc::new(host);
        tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                let api: Api<Event> = Api::namespaced(client.clone(), &p.pod.namespace);
                let now = Time(chrono_now());
                let event = Event {
                    metadata: ObjectMeta {
                        generate_name: Some(format!("{}.", p.pod.name)),
                        namespace: Some(p.pod.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    involved_object: ObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: Some(p.pod.name.clone()),
                        namespace: Some(p.pod.namespace.clone()),
                        uid: Some(p.pod.uid.clone()),
                        ..ObjectReference::default()
                    },
                    reason: Some(p.reason.into()),
                    message: Some(p.message),
                    type_: Some(
                        match p.kind {
                            Kind::Normal => "Normal",
                            Kind::Warning => "Warning",
                        }
                        .into(),
                    ),
                    source: Some(EventSource {
                        component: Some(component.clone()),
                        host: node.as_ref().clone(),
                    }),
                    reporting_component: Some(component.clone()),
                    reporting_instance: node.as_ref().clone(),
                    first_timestamp: Some(now.clone()),
                    last_timestamp: Some(now),
                    count: Some(1),
                    ..Event::default()
                };
                if let Err(e) = api.create(&PostParams::default(), &event).await {
                    tracing::debug!(error = %e, reason = p.reason, "event not recorded");
                }
            }
        });
        Recorder { tx }
    }

    /// Queues an event about `pod`.
    pub fn record(&self, pod: &PodRef, kind: Kind, reason: &'static str, message: String) {
        let pending = Pending {
            pod: pod.clone(),
            kind,
            reason,
            message,
        };
        if self.tx.try_send(pending).is_err() {
            tracing::debug!(reason, "event queue full; event dropped");
        }
    }
}
