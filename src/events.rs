//! Events, one way for every component: the kubelet (pulled, started,
//! back-off, probe failures), the scheduler (scheduled) and the controllers
//! record what they did and why, so `kubectl describe` and `kubectl get
//! events` show it, as with Kubernetes.
//!
//! Recording never blocks or fails the work that wanted it: a [`Recorder`]
//! sends from a bounded queue on a task of its own and drops (with a log
//! line) what does not fit; [`record`] sends at once for a control loop
//! without a recorder and only logs a failure.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};
use tokio::sync::mpsc;

/// How many events a recorder holds while its sender catches up.
const QUEUE: usize = 1024;

/// Normal or Warning, as Kubernetes types events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// The reference an event names: kind, name, namespace and uid, which is
/// what `kubectl describe` selects events by.
pub fn reference<K>(obj: &K) -> ObjectReference
where
    K: Resource<DynamicType = ()>,
{
    ObjectReference {
        api_version: Some(K::api_version(&()).to_string()),
        kind: Some(K::kind(&()).to_string()),
        name: Some(obj.name_any()),
        namespace: obj.namespace(),
        uid: obj.uid(),
        resource_version: None,
        field_path: None,
    }
}

/// The reference of a pod known by name and uid.
pub fn pod_reference(namespace: &str, name: &str, uid: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        uid: Some(uid.into()),
        ..ObjectReference::default()
    }
}

/// Who records: the component's name and, for node components, the node.
#[derive(Clone, Debug)]
struct Source {
    component: String,
    host: Option<String>,
}

/// The event, in the namespace of its object (cluster-scoped objects such
/// as Nodes: `default`, where Kubernetes puts them too).
fn event(
    source: &Source,
    obj: &ObjectReference,
    type_: EventType,
    reason: String,
    message: String,
) -> Event {
    let ns = obj
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into());
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", obj.name.as_deref().unwrap_or("object"))),
            namespace: Some(ns),
            ..ObjectMeta::default()
        },
        involved_object: obj.clone(),
        reason: Some(reason),
        message: Some(message),
        type_: Some(type_.as_str().into()),
        source: Some(EventSource {
            component: Some(source.component.clone()),
            host: source.host.clone(),
        }),
        reporting_component: Some(source.component.clone()),
        reporting_instance: Some(
            source
                .host
                .clone()
                .unwrap_or_else(|| source.component.clone()),
        ),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Event::default()
    }
}

async fn send(client: &kube::Client, event: Event) {
    let ns = event.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        tracing::debug!(error = %e, reason = ?event.reason, "event not recorded");
    }
}

/// Records events as one component, from a bounded queue.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Event>,
    source: Source,
}

impl Recorder {
    /// Starts the sender task of `component` (`kubelet`, `default-scheduler`,
    /// `node-controller`, …); `host` is the node it runs on, if any.
    pub fn start(client: kube::Client, component: impl Into<String>, host: Option<String>) -> Self {
        let (tx, mut rx) = mpsc::channel::<Event>(QUEUE);
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                send(&client, event).await;
            }
        });
        Recorder {
            tx,
            source: Source {
                component: component.into(),
                host,
            },
        }
    }

    /// Queues an event about `obj`.
    pub fn record(
        &self,
        obj: &ObjectReference,
        type_: EventType,
        reason: impl Into<String>,
        message: String,
    ) {
        let event = event(&self.source, obj, type_, reason.into(), message);
        if self.tx.try_send(event).is_err() {
            tracing::debug!("event queue full; event dropped");
        }
    }
}

/// Records one event about `obj` as `component` now, for control loops
/// that keep no [`Recorder`]; a failure is only logged.
pub async fn record<K>(
    client: &kube::Client,
    component: &'static str,
    obj: &K,
    type_: EventType,
    reason: &str,
    message: String,
) where
    K: Resource<DynamicType = ()>,
{
    let source = Source {
        component: component.into(),
        host: None,
    };
    send(
        client,
        event(&source, &reference(obj), type_, reason.into(), message),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_names_its_object_source_and_namespace() {
        let source = Source {
            component: "kubelet".into(),
            host: Some("node-1".into()),
        };
        let pod = pod_reference("dev", "web-1", "u-1");
        let e = event(
            &source,
            &pod,
            EventType::Warning,
            "BackOff".into(),
            "m".into(),
        );
        assert_eq!(e.metadata.namespace.as_deref(), Some("dev"));
        assert_eq!(e.metadata.generate_name.as_deref(), Some("web-1."));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.involved_object.uid.as_deref(), Some("u-1"));
        assert_eq!(e.source.unwrap().host.as_deref(), Some("node-1"));
        assert_eq!(e.reporting_instance.as_deref(), Some("node-1"));

        // A cluster-scoped object's events go to `default`.
        let node = ObjectReference {
            kind: Some("Node".into()),
            name: Some("node-1".into()),
            ..ObjectReference::default()
        };
        let e = event(
            &source,
            &node,
            EventType::Normal,
            "Ready".into(),
            "m".into(),
        );
        assert_eq!(e.metadata.namespace.as_deref(), Some("default"));
    }
}
