//! The HorizontalPodAutoscaler controller: every sync period, for each
//! autoscaler, reads the target's `/scale`, measures each metric (pod CPU
//! and memory from `metrics.k8s.io`, request rates from
//! `custom.metrics.k8s.io`), takes the largest count any metric asks for
//! ([`replicas`]), holds it to the stabilization windows and rate
//! policies ([`behavior`]) and to `minReplicas`..`maxReplicas`, writes
//! the count through `/scale`, and reports it all in the status: current
//! metrics, `AbleToScale`, `ScalingActive`, `ScalingLimited`, and an Event
//! per rescale.
//!
//! A target at zero replicas with `minReplicas: 0` stays there: no pod
//! means no measurement, and the service proxy wakes it on the next
//! request. A target set to zero by hand (with `minReplicas` above zero)
//! is left alone, as Kubernetes does.

pub mod behavior;
pub mod replicas;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::{
    HPAScalingRules, HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition, MetricSpec,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use parking_lot::Mutex;
use serde_json::{Value, json};

use self::behavior::{Policy, PolicyKind, Recommendation, Rules, ScaleEvent, Select};
use self::replicas::{NoProposal, ObjectTarget, PodSample, PodTarget, Proposal};
use super::{ControllerError, PodCache};
use crate::events::EventType::{Normal, Warning};
use crate::events::record;
use crate::resources::kinds::horizontalpodautoscaler::{default_scale_down, default_scale_up};
use crate::resources::quantity;

/// The name events from this controller carry.
const COMPONENT: &str = "horizontal-pod-autoscaler";

/// Timing of the controller.
#[derive(Clone, Debug)]
pub struct AutoscalerConfig {
    /// How often each autoscaler is evaluated.
    pub sync_period: Duration,
}

impl Default for AutoscalerConfig {
    fn default() -> Self {
        // Shorter than Kubernetes' 15 s: a Wasm pod starts in
        // milliseconds, so acting sooner costs little.
        AutoscalerConfig {
            sync_period: Duration::from_secs(5),
        }
    }
}

/// What the controller remembers of each autoscaler between syncs.
#[derive(Default)]
struct History {
    recommendations: Vec<Recommendation>,
    events: Vec<ScaleEvent>,
}

struct Ctx {
    client: kube::Client,
    pods: Arc<PodCache>,
    config: AutoscalerConfig,
    history: Mutex<HashMap<String, History>>,
}

/// Runs the controller until `shutdown`.
pub async fn run(
    client: kube::Client,
    pods: Arc<PodCache>,
    config: AutoscalerConfig,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let hpas: Api<HorizontalPodAutoscaler> = Api::all(client.clone());
    let controller =
        Controller::new(hpas, watcher::Config::default()).graceful_shutdown_on(shutdown);
    let ctx = Arc::new(Ctx {
        client,
        pods,
        config,
        history: Mutex::new(HashMap::new()),
    });
    super::drive(controller, "horizontalpodautoscaler", reconcile, ctx).await;
}

/// One metric's verdict.
struct Measured {
    proposal: Proposal,
    /// The metric's entry in `status.currentMetrics`.
    status: Value,
    /// How the metric is named in events and conditions.
    describe: String,
}

/// Why a metric could not be measured: the condition reason and message.
struct Unmeasured {
    reason: &'static str,
    message: String,
}

async fn reconcile(
    hpa: Arc<HorizontalPodAutoscaler>,
    ctx: Arc<Ctx>,
) -> Result<Action, ControllerError> {
    ctx.pods.listed().await;
    let ns = hpa.namespace().unwrap_or_default();
    let key = format!("{ns}/{}", hpa.name_any());
    let requeue = Action::requeue(ctx.config.sync_period);
    let Some(spec) = hpa.spec.as_ref() else {
        return Ok(requeue);
    };
    let now = Instant::now();
    let mut conditions: Vec<(&str, bool, &str, String)> = Vec::new();

    // The target and its scale.
    let target = &spec.scale_target_ref;
    let Some(kind) = crate::resources::KINDS.iter().find(|k| {
        k.kind == target.kind
            && k.has_subresource(crate::resources::Subresource::Scale)
            && target
                .api_version
                .as_deref()
                .is_none_or(|v| v == k.api_version())
    }) else {
        conditions.push((
            "AbleToScale",
            false,
            "FailedGetScale",
            format!(
                "the HPA controller was unable to get the target's current scale: no scalable kind {:?} in {:?}",
                target.kind,
                target.api_version.as_deref().unwrap_or("")
            ),
        ));
        write_status(&ctx, &hpa, None, None, &[], conditions, None).await?;
        return Ok(requeue);
    };
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &ns, &super::api_resource(kind));
    let (scale, object) = match tokio::try_join!(api.get_scale(&target.name), api.get(&target.name))
    {
        Ok(both) => both,
        Err(e) => {
            let message = format!(
                "the HPA controller was unable to get the target's current scale: {}",
                api_message(&e)
            );
            if !already(&hpa, "AbleToScale", "FailedGetScale") {
                record(
                    &ctx.client,
                    COMPONENT,
                    &*hpa,
                    Warning,
                    "FailedGetScale",
                    message.clone(),
                )
                .await;
            }
            conditions.push(("AbleToScale", false, "FailedGetScale", message));
            write_status(&ctx, &hpa, None, None, &[], conditions, None).await?;
            return Ok(requeue);
        }
    };
    let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let status_replicas = scale.status.as_ref().map_or(0, |s| s.replicas);
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;

    if current == 0 {
        let (reason, message) = if min == 0 {
            (
                "ScaledToZero",
                "the target is at zero replicas; the service proxy asks for one at the next request".to_string(),
            )
        } else {
            (
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero".to_string(),
            )
        };
        conditions.push((
            "AbleToScale",
            true,
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale".into(),
        ));
        conditions.push(("ScalingActive", false, reason, message));
        // Forget the recommendations that led here: when traffic wakes
        // the target, its scale-down window starts afresh.
        ctx.history
            .lock()
            .entry(key)
            .or_default()
            .recommendations
            .clear();
        write_status(
            &ctx,
            &hpa,
            Some(status_replicas),
            Some(0),
            &[],
            conditions,
            None,
        )
        .await?;
        return Ok(requeue);
    }

    // The target's pods.
    let selector: Option<LabelSelector> = object
        .data
        .pointer("/spec/selector")
        .and_then(|s| serde_json::from_value(s.clone()).ok());
    let pods: Vec<Arc<Pod>> = match &selector {
        Some(sel) => ctx
            .pods
            .in_namespace(&ns)
            .into_iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Failed")
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Succeeded")
                    && super::selector_matches(sel, &p.labels().clone())
            })
            .collect(),
        None => Vec::new(),
    };
    let selector_query = selector
        .as_ref()
        .map(super::selector_query)
        .unwrap_or_default();

    // Each metric's proposal; the largest wins.
    let mut measured = Vec::new();
    let mut failures = Vec::new();
    for m in spec.metrics.iter().flatten() {
        match measure(&ctx, &ns, m, current, &pods, &selector_query).await {
            Ok(x) => measured.push(x),
            Err(u) => failures.push(u),
        }
    }
    let Some(best) = measured.iter().max_by_key(|m| m.proposal.replicas) else {
        let u = failures.into_iter().next().unwrap_or(Unmeasured {
            reason: "FailedGetResourceMetric",
            message: "no metrics are configured".into(),
        });
        if !already(&hpa, "ScalingActive", u.reason) {
            record(
                &ctx.client,
                COMPONENT,
                &*hpa,
                Warning,
                u.reason,
                u.message.clone(),
            )
            .await;
        }
        conditions.push((
            "AbleToScale",
            true,
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale".into(),
        ));
        conditions.push((
            "ScalingActive",
            false,
            u.reason,
            format!(
                "the HPA was unable to compute the replica count: {}",
                u.message
            ),
        ));
        write_status(
            &ctx,
            &hpa,
            Some(status_replicas),
            Some(current),
            &[],
            conditions,
            None,
        )
        .await?;
        return Ok(requeue);
    };
    let recommendation = best.proposal.replicas;
    let metric_statuses: Vec<Value> = measured.iter().map(|m| m.status.clone()).collect();

    // Stabilization and rate limits, then the bounds.
    let behavior = spec.behavior.as_ref();
    let up = rules(
        behavior.and_then(|b| b.scale_up.as_ref()),
        &default_scale_up(),
    );
    let down = rules(
        behavior.and_then(|b| b.scale_down.as_ref()),
        &default_scale_down(),
    );
    let (stabilized, up_limit, down_limit) = {
        let mut all = ctx.history.lock();
        let h = all.entry(key.clone()).or_default();
        let longest = up.stabilization.max(down.stabilization);
        h.recommendations
            .retain(|r| now.duration_since(r.at) <= longest);
        let stabilized =
            behavior::stabilize(now, current, recommendation, &h.recommendations, &up, &down);
        h.recommendations.push(Recommendation {
            at: now,
            replicas: recommendation,
        });
        let longest_period = up
            .policies
            .iter()
            .chain(&down.policies)
            .map(|p| p.period)
            .max()
            .unwrap_or_default();
        h.events
            .retain(|e| now.duration_since(e.at) <= longest_period);
        (
            stabilized,
            behavior::scale_up_limit(now, current, &h.events, &up),
            behavior::scale_down_limit(now, current, &h.events, &down),
        )
    };
    let (desired, limited) = bound(stabilized, current, min, max, up_limit, down_limit);
    conditions.push(match limited {
        Some((reason, message)) => ("ScalingLimited", true, reason, message.to_string()),
        None => (
            "ScalingLimited",
            false,
            "DesiredWithinRange",
            "the desired count is within the acceptable range".into(),
        ),
    });
    conditions.push((
        "ScalingActive",
        true,
        "ValidMetricFound",
        format!(
            "the HPA was able to successfully calculate a replica count from {}",
            best.describe
        ),
    ));

    let mut last_scale = None;
    if desired != current {
        let patch = json!({"spec": {"replicas": desired}});
        match api
            .patch_scale(&target.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                ctx.history
                    .lock()
                    .entry(key)
                    .or_default()
                    .events
                    .push(ScaleEvent {
                        at: now,
                        change: desired - current,
                    });
                let why = if desired > current {
                    format!("{} above target", best.describe)
                } else {
                    "All metrics below target".to_string()
                };
                record(
                    &ctx.client,
                    COMPONENT,
                    &*hpa,
                    Normal,
                    "SuccessfulRescale",
                    format!("New size: {desired}; reason: {why}"),
                )
                .await;
                conditions.insert(
                    0,
                    (
                        "AbleToScale",
                        true,
                        "SucceededRescale",
                        format!(
                            "the HPA controller was able to update the target scale to {desired}"
                        ),
                    ),
                );
                last_scale = Some(Time(k8s_openapi::jiff::Timestamp::now()));
            }
            Err(e) => {
                let message = format!(
                    "the HPA controller was unable to update the target scale: {}",
                    api_message(&e)
                );
                record(
                    &ctx.client,
                    COMPONENT,
                    &*hpa,
                    Warning,
                    "FailedRescale",
                    message.clone(),
                )
                .await;
                conditions.insert(0, ("AbleToScale", false, "FailedUpdateScale", message));
            }
        }
    } else {
        conditions.insert(
            0,
            (
                "AbleToScale",
                true,
                "ReadyForNewScale",
                "recommended size matches current size".into(),
            ),
        );
    }
    write_status(
        &ctx,
        &hpa,
        Some(status_replicas),
        Some(desired),
        &metric_statuses,
        conditions,
        last_scale,
    )
    .await?;
    Ok(requeue)
}

/// Whether the status already reports condition `ty` false for `reason`:
/// a failure that lasts is recorded as an Event once, when it starts, not
/// at every sync.
fn already(hpa: &HorizontalPodAutoscaler, ty: &str, reason: &str) -> bool {
    hpa.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.type_ == ty && c.status == "False" && c.reason.as_deref() == Some(reason)
            })
        })
}

/// What an API error says, without the client's wrapping.
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// `desired` held to the rate limits and `min..=max`, with the limit
/// that applied (the `ScalingLimited` reason and message).
fn bound(
    desired: i32,
    current: i32,
    min: i32,
    max: i32,
    up_limit: i32,
    down_limit: i32,
) -> (i32, Option<(&'static str, &'static str)>) {
    let mut out = desired;
    let mut why = None;
    if out > current && out > up_limit && up_limit < max {
        out = up_limit;
        why = Some((
            "ScaleUpLimit",
            "the desired replica count is increasing faster than the maximum scale rate",
        ));
    }
    if out < current && out < down_limit && down_limit > min {
        out = down_limit;
        why = Some((
            "ScaleDownLimit",
            "the desired replica count is decreasing faster than the maximum scale rate",
        ));
    }
    if out > max {
        out = max;
        why = Some((
            "TooManyReplicas",
            "the desired replica count is more than the maximum replica count",
        ));
    }
    if out < min {
        out = min;
        why = Some((
            "TooFewReplicas",
            "the desired replica count is less than the minimum replica count",
        ));
    }
    (out, why)
}

/// One direction's rules from the spec, each unset field from `defaults`.
fn rules(given: Option<&HPAScalingRules>, defaults: &Value) -> Rules {
    let window = given
        .and_then(|g| g.stabilization_window_seconds)
        .map_or_else(
            || defaults["stabilizationWindowSeconds"].as_i64().unwrap_or(0),
            i64::from,
        );
    let select = given
        .and_then(|g| g.select_policy.clone())
        .unwrap_or_else(|| {
            defaults["selectPolicy"]
                .as_str()
                .unwrap_or("Max")
                .to_string()
        });
    let policies: Vec<Policy> = match given.and_then(|g| g.policies.as_ref()) {
        Some(ps) => ps
            .iter()
            .map(|p| Policy {
                kind: if p.type_ == "Pods" {
                    PolicyKind::Pods
                } else {
                    PolicyKind::Percent
                },
                value: p.value,
                period: Duration::from_secs(p.period_seconds.max(1) as u64),
            })
            .collect(),
        None => defaults["policies"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| Policy {
                kind: if p["type"] == "Pods" {
                    PolicyKind::Pods
                } else {
                    PolicyKind::Percent
                },
                value: p["value"].as_i64().unwrap_or(0) as i32,
                period: Duration::from_secs(p["periodSeconds"].as_u64().unwrap_or(15)),
            })
            .collect(),
    };
    Rules {
        stabilization: Duration::from_secs(window.max(0) as u64),
        select: match select.as_str() {
            "Min" => Select::Min,
            "Disabled" => Select::Disabled,
            _ => Select::Max,
        },
        policies,
    }
}

/// A quantity as a plain number of its unit (`250m` → 0.25).
fn number(q: &str) -> Option<f64> {
    quantity::parse(q).map(|v| v.0 as f64 / 1000.0)
}

/// GET a metrics API path as JSON.
async fn get_json(client: &kube::Client, path: &str) -> Result<Value, String> {
    let req = axum::http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    client
        .request::<Value>(req)
        .await
        .map_err(|e| api_message(&e))
}

/// Whether a pod is Ready.
fn ready(p: &Pod) -> bool {
    super::replicaset::is_ready(p)
}

/// The sum of a pod's containers' requests of `resource`; `None` when a
/// container has none.
fn requested(p: &Pod, resource: &str) -> Option<f64> {
    let containers = &p.spec.as_ref()?.containers;
    let mut sum = 0.0;
    for c in containers {
        let q = c.resources.as_ref()?.requests.as_ref()?.get(resource)?;
        sum += number(&q.0)?;
    }
    Some(sum)
}

async fn measure(
    ctx: &Ctx,
    ns: &str,
    m: &MetricSpec,
    current: i32,
    pods: &[Arc<Pod>],
    selector: &str,
) -> Result<Measured, Unmeasured> {
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    match m.type_.as_str() {
        "Resource" => {
            let src = m.resource.as_ref().ok_or_else(|| invalid("resource"))?;
            let resource = src.name.as_str();
            let fail = |message: String| Unmeasured {
                reason: "FailedGetResourceMetric",
                message,
            };
            let target = match src.target.type_.as_str() {
                "Utilization" => {
                    PodTarget::Utilization(f64::from(src.target.average_utilization.unwrap_or(0)))
                }
                _ => PodTarget::AverageValue(
                    src.target
                        .average_value
                        .as_ref()
                        .and_then(|q| number(&q.0))
                        .unwrap_or(0.0),
                ),
            };
            let list = get_json(
                &ctx.client,
                &format!(
                    "/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods?labelSelector={}",
                    enc(selector)
                ),
            )
            .await
            .map_err(|e| {
                fail(format!(
                    "unable to get metrics for resource {resource}: {e}"
                ))
            })?;
            let usage: HashMap<String, f64> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|item| {
                    let name = item["metadata"]["name"].as_str()?.to_string();
                    let sum: f64 = item["containers"]
                        .as_array()?
                        .iter()
                        .filter_map(|c| number(c["usage"][resource].as_str()?))
                        .sum();
                    Some((name, sum))
                })
                .collect();
            let mut samples = Vec::new();
            for p in pods {
                let request = match target {
                    PodTarget::Utilization(_) => requested(p, resource).ok_or_else(|| {
                        fail(format!(
                            "missing request for {resource} in pod {}",
                            p.name_any()
                        ))
                    })?,
                    PodTarget::AverageValue(_) => 0.0,
                };
                samples.push(match usage.get(&p.name_any()) {
                    Some(&value) if ready(p) => PodSample::Ready { value, request },
                    Some(&value) => PodSample::Unready { value, request },
                    None => PodSample::Missing { request },
                });
            }
            let proposal = replicas::per_pod(current, &samples, target).map_err(|e| match e {
                NoProposal::NoMetrics => fail(format!("unable to get metrics for resource {resource}: no metrics returned from resource metrics API")),
                other => fail(other.to_string()),
            })?;
            let current_status = match target {
                PodTarget::Utilization(_) => {
                    let avg: f64 = usage.values().sum::<f64>() / usage.len().max(1) as f64;
                    json!({"averageUtilization": proposal.current.round() as i64,
                           "averageValue": quantity_string(resource, avg)})
                }
                PodTarget::AverageValue(_) => {
                    json!({"averageValue": quantity_string(resource, proposal.current)})
                }
            };
            Ok(Measured {
                proposal,
                status: json!({"type": "Resource", "resource": {"name": resource, "current": current_status}}),
                describe: match target {
                    PodTarget::Utilization(_) => {
                        format!("{resource} resource utilization (percentage of request)")
                    }
                    PodTarget::AverageValue(_) => format!("{resource} resource"),
                },
            })
        }
        "Pods" => {
            let src = m.pods.as_ref().ok_or_else(|| invalid("pods"))?;
            let metric = src.metric.name.as_str();
            let fail = |message: String| Unmeasured {
                reason: "FailedGetPodsMetric",
                message,
            };
            let target = src
                .target
                .average_value
                .as_ref()
                .and_then(|q| number(&q.0))
                .unwrap_or(0.0);
            let list = get_json(
                &ctx.client,
                &format!(
                    "/apis/custom.metrics.k8s.io/v1beta2/namespaces/{ns}/pods/*/{}?labelSelector={}",
                    enc(metric),
                    enc(selector)
                ),
            )
            .await
            .map_err(|e| fail(format!("unable to get metric {metric}: {e}")))?;
            let values: HashMap<String, f64> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| {
                    Some((
                        i["describedObject"]["name"].as_str()?.to_string(),
                        number(i["value"].as_str()?)?,
                    ))
                })
                .collect();
            let samples: Vec<PodSample> = pods
                .iter()
                .map(|p| match values.get(&p.name_any()) {
                    Some(&value) if ready(p) => PodSample::Ready {
                        value,
                        request: 0.0,
                    },
                    Some(&value) => PodSample::Unready {
                        value,
                        request: 0.0,
                    },
                    None => PodSample::Missing { request: 0.0 },
                })
                .collect();
            let proposal = replicas::per_pod(current, &samples, PodTarget::AverageValue(target))
                .map_err(|e| fail(format!("unable to get metric {metric}: {e}")))?;
            Ok(Measured {
                proposal,
                status: json!({"type": "Pods", "pods": {"metric": {"name": metric},
                    "current": {"averageValue": plain_quantity(proposal.current)}}}),
                describe: format!("pods metric {metric}"),
            })
        }
        "Object" => {
            let src = m.object.as_ref().ok_or_else(|| invalid("object"))?;
            let metric = src.metric.name.as_str();
            let fail = |message: String| Unmeasured {
                reason: "FailedGetObjectMetric",
                message,
            };
            let described = &src.described_object;
            if described.kind != "Service" {
                return Err(fail(format!(
                    "unable to get metric {metric}: only Services are described by custom metrics, not {}",
                    described.kind
                )));
            }
            let list = get_json(
                &ctx.client,
                &format!(
                    "/apis/custom.metrics.k8s.io/v1beta2/namespaces/{ns}/services/{}/{}",
                    enc(&described.name),
                    enc(metric)
                ),
            )
            .await
            .map_err(|e| fail(format!("unable to get metric {metric}: {e}")))?;
            let value = list["items"][0]["value"]
                .as_str()
                .and_then(number)
                .ok_or_else(|| fail(format!("unable to get metric {metric}: no value")))?;
            let target = match src.target.type_.as_str() {
                "AverageValue" => ObjectTarget::AverageValue(
                    src.target
                        .average_value
                        .as_ref()
                        .and_then(|q| number(&q.0))
                        .unwrap_or(1.0),
                ),
                _ => ObjectTarget::Value(
                    src.target
                        .value
                        .as_ref()
                        .and_then(|q| number(&q.0))
                        .unwrap_or(1.0),
                ),
            };
            let ready_pods = pods.iter().filter(|p| ready(p)).count() as i32;
            let proposal = replicas::object(current, ready_pods, value, target);
            let current_status = match target {
                ObjectTarget::Value(_) => json!({"value": plain_quantity(value)}),
                ObjectTarget::AverageValue(_) => {
                    json!({"averageValue": plain_quantity(proposal.current)})
                }
            };
            Ok(Measured {
                proposal,
                status: json!({"type": "Object", "object": {"metric": {"name": metric},
                    "describedObject": {"kind": described.kind, "name": described.name, "apiVersion": described.api_version},
                    "current": current_status}}),
                describe: format!("{metric} on {}/{}", described.kind, described.name),
            })
        }
        other => Err(Unmeasured {
            reason: "InvalidMetricSourceType",
            message: format!("the metric source type {other:?} is not served by this cluster"),
        }),
    }
}

fn invalid(field: &str) -> Unmeasured {
    Unmeasured {
        reason: "InvalidMetricSourceType",
        message: format!("the metric has no {field} source"),
    }
}

/// A value as a quantity, in thousandths when it is not whole.
fn plain_quantity(v: f64) -> String {
    let milli = (v * 1000.0).round() as i64;
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

/// A resource figure as Kubernetes writes it: CPU in millicores, memory
/// in bytes.
fn quantity_string(resource: &str, v: f64) -> String {
    if resource == "cpu" {
        format!("{}m", (v * 1000.0).round() as i64)
    } else {
        (v.round() as i64).to_string()
    }
}

/// Writes the status, keeping each condition's transition time while its
/// status holds.
async fn write_status(
    ctx: &Ctx,
    hpa: &HorizontalPodAutoscaler,
    current: Option<i32>,
    desired: Option<i32>,
    metrics: &[Value],
    conditions: Vec<(&str, bool, &str, String)>,
    last_scale: Option<Time>,
) -> Result<(), ControllerError> {
    let old = hpa.status.as_ref();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let mut seen = std::collections::HashSet::new();
    let conditions: Vec<HorizontalPodAutoscalerCondition> = conditions
        .into_iter()
        .filter(|(ty, ..)| seen.insert(*ty))
        .map(|(ty, ok, reason, message)| {
            let status = if ok { "True" } else { "False" }.to_string();
            let since = old
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == ty && c.status == status))
                .and_then(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            HorizontalPodAutoscalerCondition {
                type_: ty.to_string(),
                status,
                reason: Some(reason.to_string()),
                message: Some(message),
                last_transition_time: Some(since),
            }
        })
        .collect();
    let mut status = json!({
        "observedGeneration": hpa.metadata.generation,
        "currentReplicas": current.or(old.and_then(|s| s.current_replicas)).unwrap_or(0),
        "desiredReplicas": desired.unwrap_or(old.map_or(0, |s| s.desired_replicas)),
        "currentMetrics": metrics,
        "conditions": conditions,
    });
    let scaled_now = last_scale.is_some();
    if let Some(t) = last_scale.or_else(|| old.and_then(|s| s.last_scale_time.clone())) {
        status["lastScaleTime"] = json!(t);
    }
    // Nothing changed but the clock: no write.
    if let Some(o) = old {
        let mut before = serde_json::to_value(o).unwrap_or_default();
        let mut after = status.clone();
        for v in [&mut before, &mut after] {
            if let Some(cs) = v["conditions"].as_array_mut() {
                for c in cs {
                    c.as_object_mut().map(|m| m.remove("lastTransitionTime"));
                }
            }
        }
        if before.get("currentMetrics").is_none_or(Value::is_null) {
            before["currentMetrics"] = json!([]);
        }
        if before == after && !scaled_now {
            return Ok(());
        }
    }
    let api: Api<HorizontalPodAutoscaler> =
        Api::namespaced(ctx.client.clone(), &hpa.namespace().unwrap_or_default());
    api.patch_status(
        &hpa.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_name_the_limit_that_applied() {
        assert_eq!(bound(12, 4, 1, 10, 100, 0).1.unwrap().0, "TooManyReplicas");
        assert_eq!(bound(12, 4, 1, 10, 100, 0).0, 10);
        assert_eq!(
            bound(0, 4, 1, 10, 100, 0),
            (
                1,
                Some((
                    "TooFewReplicas",
                    "the desired replica count is less than the minimum replica count"
                ))
            )
        );
        assert_eq!(bound(9, 4, 1, 10, 8, 0).0, 8);
        assert_eq!(bound(9, 4, 1, 10, 8, 0).1.unwrap().0, "ScaleUpLimit");
        assert_eq!(bound(5, 4, 1, 10, 8, 0), (5, None));
        // Scaling to zero is allowed with minReplicas 0.
        assert_eq!(bound(0, 2, 0, 10, 8, 0), (0, None));
    }

    #[test]
    fn unset_rules_take_the_defaults() {
        let up = rules(None, &default_scale_up());
        assert_eq!(up.stabilization, Duration::ZERO);
        assert_eq!(up.policies.len(), 2);
        let down = rules(
            Some(&HPAScalingRules {
                stabilization_window_seconds: Some(3),
                ..Default::default()
            }),
            &default_scale_down(),
        );
        assert_eq!(down.stabilization, Duration::from_secs(3));
        assert_eq!(down.select, Select::Max);
        assert_eq!(down.policies[0].kind, PolicyKind::Percent);
    }

    #[test]
    fn figures_are_written_as_quantities() {
        assert_eq!(plain_quantity(2.0), "2");
        assert_eq!(plain_quantity(1.5), "1500m");
        assert_eq!(quantity_string("cpu", 0.25), "250m");
        assert_eq!(quantity_string("memory", 1024.4), "1024");
    }
}
