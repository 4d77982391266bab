//! Events the control-plane components record about the objects they act
//! on (nodes, pods, services, leases), so `kubectl describe` and `kubectl
//! get events` show what a controller did and why, as with Kubernetes.
//!
//! Recording is best effort: a failure is logged and never fails the
//! reconcile that wanted to record it.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};

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

/// Records events as one component (`node-controller`,
/// `service-controller`, …).
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    component: &'static str,
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

impl Recorder {
    pub fn new(client: kube::Client, component: &'static str) -> Recorder {
        Recorder { client, component }
    }

    /// Records one event about `obj`. Events about cluster-scoped objects
    /// (Nodes) go to `default`, where Kubernetes puts them too.
    pub async fn publish(
        &self,
        obj: &ObjectReference,
        type_: EventType,
        reason: &str,
        message: String,
    ) {
        let ns = obj
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", obj.name.as_deref().unwrap_or("object"))),
                namespace: Some(ns.clone()),
                ..ObjectMeta::default()
            },
            involved_object: obj.clone(),
            reason: Some(reason.to_string()),
            message: Some(message),
            type_: Some(type_.as_str().into()),
            source: Some(EventSource {
                component: Some(self.component.into()),
                host: None,
            }),
            reporting_component: Some(self.component.into()),
            reporting_instance: Some(self.component.into()),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Event::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::debug!(error = %e, reason, "event not recorded");
        }
    }
}

/// Records one event about `obj` as `component`, for controllers that keep
/// no [`Recorder`].
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
    Recorder::new(client.clone(), component)
        .publish(&reference(obj), type_, reason, message)
        .await;
}
