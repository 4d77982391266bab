//! The resource quota controller: recounts what each ResourceQuota's
//! namespace holds of every resource the quota tracks, and writes it as
//! `status.used` next to `status.hard` (the spec's limits), so that
//! `kubectl describe quota` shows used against hard and a deleted object
//! gives its share back.
//!
//! Admission (`api::quota`) charges creates into `status.used` as they
//! happen; this controller is the recount that corrects it — usage that
//! went away, and charges for creates that failed after admission. Pods
//! are counted from the shared pod cache, at each pod change; every other
//! kind a quota counts from a watch-fed cache of that kind, started the
//! first time a quota counts it, whose changes bring the quotas of the
//! object's namespace back.
//!
//! The status is written with the quota's resourceVersion, so a recount
//! never overwrites a charge made after the quota was read: the write
//! fails and the charge's change brings the quota back. A charge made
//! just *before* the quota was read is another matter: its object may not
//! be stored (or seen) yet, and a recount that lowered `used` to what it
//! sees would hand that share out a second time. So a recount raises
//! `used` at once but lowers it only once the quota has gone [`SETTLE`]
//! without a charge.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, ResourceQuota};
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;

use super::ControllerError;
use crate::resources::kinds::resourcequota::{
    Usage, counted_kind, format, in_scope, object_usage, pod_counts, pod_usage,
};
use crate::resources::quantity::Quantity;

/// How long a quota must go without a charge before a recount may lower
/// its usage: longer than admission takes from charge to stored object.
const SETTLE: Duration = Duration::from_secs(2);

struct Ctx {
    client: kube::Client,
    pods: Arc<super::PodCache>,
    /// Per quota uid, its resourceVersion when last seen and since when.
    seen: parking_lot::Mutex<HashMap<String, (String, Instant)>>,
    /// The watch-fed cache of each kind besides pods that a quota counts,
    /// by `(group, plural)`.
    caches: parking_lot::Mutex<HashMap<(String, String), Store<DynamicObject>>>,
    /// Wakes quotas when an object of a cached kind changes.
    wake: futures::channel::mpsc::UnboundedSender<ObjectRef<ResourceQuota>>,
    quotas: Store<ResourceQuota>,
    stop: crate::shutdown::Stop,
}

/// Runs the controller until `shutdown`.
pub async fn run(
    client: kube::Client,
    pods: super::PodFeed,
    cache: Arc<super::PodCache>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let stop = crate::shutdown::Stop::new(shutdown);
    let quotas: Api<ResourceQuota> = Api::all(client.clone());
    let controller = Controller::new(quotas, watcher::Config::default());
    let store = controller.store();
    let quota_store = store.clone();
    let (wake, woken) = futures::channel::mpsc::unbounded();
    // A pod change concerns every quota of its namespace.
    let pod_to_quotas = move |pod: Arc<Pod>| {
        let ns = pod.namespace().unwrap_or_default();
        store
            .state()
            .into_iter()
            .filter(|q| q.namespace().as_deref() == Some(ns.as_str()))
            .map(|q| ObjectRef::from_obj(&*q))
            .collect::<Vec<_>>()
    };
    let controller = controller
        .watches_shared_stream(pods, pod_to_quotas)
        .reconcile_on(woken)
        .graceful_shutdown_on(stop.wait());
    super::drive(
        controller,
        "resourcequota",
        reconcile,
        Arc::new(Ctx {
            client,
            pods: cache,
            seen: Default::default(),
            caches: Default::default(),
            wake,
            quotas: quota_store,
            stop,
        }),
    )
    .await;
}

async fn reconcile(quota: Arc<ResourceQuota>, ctx: Arc<Ctx>) -> Result<Action, ControllerError> {
    if quota.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    ctx.pods.listed().await;
    let ns = quota.namespace().unwrap_or_default();
    let hard = quota
        .spec
        .as_ref()
        .and_then(|s| s.hard.clone())
        .unwrap_or_default();
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let quota_json = serde_json::to_value(&*quota).unwrap_or_default();
    let pods: Vec<Value> = ctx
        .pods
        .in_namespace(&ns)
        .iter()
        .filter_map(|p| serde_json::to_value(&**p).ok())
        .filter(|p| pod_counts(p, now) && in_scope(&quota_json, "", "pods", p))
        .collect();
    let mut objects: Vec<(String, String, Vec<Value>)> = Vec::new();
    for resource in hard.keys() {
        let Some((group, plural)) = counted_kind(resource) else {
            continue;
        };
        // A scoped quota counts pods only.
        if (group.is_empty() && plural == "pods")
            || !in_scope(&quota_json, &group, &plural, &Value::Null)
            || objects.iter().any(|(g, p, _)| *g == group && *p == plural)
        {
            continue;
        }
        let items = objects_of(&ctx, &ns, &group, &plural).await?;
        objects.push((group, plural, items));
    }
    let counted = count(hard.keys().map(String::as_str), &pods, &objects);
    let current = quota.status.clone().unwrap_or_default();
    let charged: Usage = current
        .used
        .iter()
        .flatten()
        .filter_map(|(r, q)| Some((r.clone(), crate::resources::quantity::parse(&q.0)?)))
        .collect();
    let quiet_for = {
        let rv = quota.resource_version().unwrap_or_default();
        let mut seen = ctx.seen.lock();
        let entry = seen
            .entry(quota.uid().unwrap_or_default())
            .or_insert_with(|| (rv.clone(), Instant::now()));
        if entry.0 != rv {
            *entry = (rv, Instant::now());
        }
        entry.1.elapsed()
    };
    let (used, deferred) = settle(&counted, &charged, quiet_for >= SETTLE);
    let used_json: std::collections::BTreeMap<
        String,
        k8s_openapi::apimachinery::pkg::api::resource::Quantity,
    > = used
        .iter()
        .map(|(r, q)| {
            (
                r.clone(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity(format(r, *q)),
            )
        })
        .collect();
    if current.hard.as_ref() != Some(&hard) || current.used.as_ref() != Some(&used_json) {
        let api: Api<ResourceQuota> = Api::namespaced(ctx.client.clone(), &ns);
        let mut next = (*quota).clone();
        next.status = Some(k8s_openapi::api::core::v1::ResourceQuotaStatus {
            hard: Some(hard.clone()),
            used: Some(used_json),
        });
        // Replaced with the resourceVersion read: see the module doc.
        match api
            .replace_status(&quota.name_any(), &PostParams::default(), &next)
            .await
        {
            Ok(_) => {}
            // A charge landed meanwhile; its change brings the quota back.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                return Ok(Action::requeue(Duration::from_millis(200)));
            }
            Err(e) => return Err(e.into()),
        }
    }
    if deferred {
        return Ok(Action::requeue(
            SETTLE.saturating_sub(quiet_for) + Duration::from_millis(100),
        ));
    }
    // Changes wake the quota; the resync is a safety net.
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// The usage to write: what was counted, except that a resource counted
/// below its charged usage keeps the charge until the quota is `settled`
/// (see the module doc). Also says whether anything was kept back.
pub fn settle(counted: &Usage, charged: &Usage, settled: bool) -> (Usage, bool) {
    let mut deferred = false;
    let used = counted
        .iter()
        .map(|(r, q)| match charged.get(r) {
            Some(c) if c.0 > q.0 && !settled => {
                deferred = true;
                (r.clone(), *c)
            }
            _ => (r.clone(), *q),
        })
        .collect();
    (used, deferred)
}

/// The namespace's objects of the kind `group`/`plural` (none for a kind
/// wkube does not serve), from the kind's cache.
async fn objects_of(
    ctx: &Ctx,
    ns: &str,
    group: &str,
    plural: &str,
) -> Result<Vec<Value>, ControllerError> {
    let Some(kind) = crate::resources::KINDS
        .iter()
        .find(|k| k.group == group && k.plural == plural && k.namespaced)
    else {
        return Ok(Vec::new());
    };
    let store = cache_of(ctx, kind);
    store.wait_until_ready().await.map_err(|_| {
        ControllerError::Invalid(format!("the {plural} watch stopped before its first list"))
    })?;
    Ok(store
        .state()
        .iter()
        .filter(|o| o.metadata.namespace.as_deref() == Some(ns))
        .filter_map(|o| serde_json::to_value(&**o).ok())
        .collect())
}

/// The cache of `kind`, started on first use: a watch of the kind that
/// fills it and wakes the quotas of each changed object's namespace, until
/// the controller stops.
fn cache_of(ctx: &Ctx, kind: &'static crate::resources::Kind) -> Store<DynamicObject> {
    let key = (kind.group.to_string(), kind.plural.to_string());
    let mut caches = ctx.caches.lock();
    if let Some(store) = caches.get(&key) {
        return store.clone();
    }
    let resource = super::api_resource(kind);
    let writer = reflector::store::Writer::<DynamicObject>::new(resource.clone());
    let reader = writer.as_reader();
    let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &resource);
    let events = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .take_until(ctx.stop.wait());
    let (wake, quotas) = (ctx.wake.clone(), ctx.quotas.clone());
    tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            let ns = match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => o.metadata.namespace,
                _ => continue,
            };
            for q in quotas.state() {
                if q.metadata.namespace == ns
                    && wake.unbounded_send(ObjectRef::from_obj(&*q)).is_err()
                {
                    // The controller is gone.
                    return;
                }
            }
        }
    });
    caches.insert(key, reader.clone());
    reader
}

/// What the namespace uses of each `tracked` resource: pods (already the
/// ones that count) and the `objects` listed per kind. Pure.
pub fn count<'a>(
    tracked: impl Iterator<Item = &'a str>,
    pods: &[Value],
    objects: &[(String, String, Vec<Value>)],
) -> Usage {
    let mut total = Usage::new();
    let mut add = |u: Usage| {
        for (r, q) in u {
            total.entry(r).or_insert(Quantity(0)).0 += q.0;
        }
    };
    for p in pods {
        add(pod_usage(p));
    }
    for (group, plural, items) in objects {
        for o in items {
            add(object_usage(group, plural, o));
        }
    }
    tracked
        .map(|r| (r.to_string(), total.get(r).copied().unwrap_or(Quantity(0))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_recount_raises_at_once_but_lowers_only_once_settled() {
        let q = |v: i128| Quantity(v * 1000);
        let counted = Usage::from([("pods".to_string(), q(3)), ("configmaps".to_string(), q(5))]);
        let charged = Usage::from([("pods".to_string(), q(4)), ("configmaps".to_string(), q(2))]);
        let (used, deferred) = settle(&counted, &charged, false);
        assert!(deferred);
        assert_eq!(used["pods"], q(4), "a charge not yet seen is kept");
        assert_eq!(used["configmaps"], q(5));
        let (used, deferred) = settle(&counted, &charged, true);
        assert!(!deferred);
        assert_eq!(used, counted);
    }

    #[test]
    fn usage_is_summed_for_the_tracked_resources_only() {
        let pods = vec![
            json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "250m"}}}]}}),
            json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "250m", "memory": "1Gi"}}}]}}),
        ];
        let objects = vec![(
            String::new(),
            "configmaps".to_string(),
            vec![json!({}), json!({}), json!({})],
        )];
        let used = count(
            [
                "pods",
                "requests.cpu",
                "requests.memory",
                "configmaps",
                "count/deployments.apps",
            ]
            .into_iter(),
            &pods,
            &objects,
        );
        let shown: Vec<(String, String)> = used
            .iter()
            .map(|(r, q)| (r.clone(), format(r, *q)))
            .collect();
        assert_eq!(
            shown,
            [
                ("configmaps".to_string(), "3".to_string()),
                ("count/deployments.apps".into(), "0".into()),
                ("pods".into(), "2".into()),
                ("requests.cpu".into(), "500m".into()),
                ("requests.memory".into(), "1Gi".into()),
            ]
        );
    }
}
