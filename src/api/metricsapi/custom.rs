//! `custom.metrics.k8s.io/v1beta2`: the HTTP requests each pod serves, as
//! its node's agent counts them, and their sums over a Service's pods.
//!
//! - `namespaces/NS/pods/NAME/METRIC` (NAME `*`: every pod, filtered by
//!   `labelSelector`);
//! - `namespaces/NS/services/NAME/METRIC`: one value, the sum over the
//!   pods the Service selects (zero when it selects none, as a Service
//!   scaled to zero does).
//!
//! METRIC is `requests_per_second` (over the agent's sampling window) or
//! `requests_in_flight` (now).

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::super::ApiState;
use super::super::authn::UserInfo;
use super::super::rbac::Attributes;
use super::super::request::{Query, json_response};
use super::super::selectors::LabelSelector;
use super::super::status::ApiError;
use crate::agentapi::summary::{PodStats, WINDOW};
use crate::resources;

pub const GROUP: &str = "custom.metrics.k8s.io";
pub const VERSION: &str = "v1beta2";

/// The metrics served, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    RequestsPerSecond,
    RequestsInFlight,
}

impl Metric {
    pub const ALL: [Metric; 2] = [Metric::RequestsPerSecond, Metric::RequestsInFlight];

    pub fn name(self) -> &'static str {
        match self {
            Metric::RequestsPerSecond => "requests_per_second",
            Metric::RequestsInFlight => "requests_in_flight",
        }
    }

    fn parse(s: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.name() == s)
    }

    /// A pod's value, in thousandths (`None`: not measured yet).
    fn milli(self, p: &PodStats) -> Option<u64> {
        let r = p.requests.as_ref()?;
        match self {
            Metric::RequestsPerSecond => r.per_second_milli,
            Metric::RequestsInFlight => Some(r.in_flight * 1000),
        }
    }
}

/// The object kinds metrics describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Described {
    Pods,
    Services,
}

impl Described {
    pub const ALL: [Described; 2] = [Described::Pods, Described::Services];

    pub fn plural(self) -> &'static str {
        match self {
            Described::Pods => "pods",
            Described::Services => "services",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Described::Pods => "Pod",
            Described::Services => "Service",
        }
    }
}

/// What a custom metrics path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub namespace: String,
    pub described: Described,
    /// `*` for every pod.
    pub name: String,
    pub metric: Metric,
}

/// Why a custom metrics path is not one we serve; `None` from [`parse`]
/// means it is not under the group at all.
pub fn parse(path: &str) -> Option<Result<Target, ApiError>> {
    let rest = path
        .strip_prefix("/apis/custom.metrics.k8s.io/v1beta2/")?
        .trim_end_matches('/');
    let decoded: Vec<String> = rest
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let ["namespaces", ns, described, name, metric] = segs.as_slice() else {
        return Some(Err(ApiError::NoRoute));
    };
    let described = match *described {
        "pods" => Described::Pods,
        "services" => Described::Services,
        _ => return Some(Err(ApiError::NoRoute)),
    };
    let Some(metric) = Metric::parse(metric) else {
        return Some(Err(ApiError::NotFound {
            group: GROUP.into(),
            resource: format!("{}/{metric}", described.plural()),
            name: name.to_string(),
        }));
    };
    if *name == "*" && described == Described::Services {
        return Some(Err(ApiError::bad_request(
            "services are named one at a time; only pods may be named \"*\"",
        )));
    }
    Some(Ok(Target {
        namespace: ns.to_string(),
        described,
        name: name.to_string(),
        metric,
    }))
}

/// Answers a custom metrics request for `user`.
///
/// # Errors
/// 405 for anything but GET, 403 without `get` on the metric, 404 for an
/// object that does not exist or a pod not measured yet.
pub async fn handle(
    state: &ApiState,
    user: &UserInfo,
    method: &Method,
    target: Target,
    raw_query: Option<&str>,
) -> Result<Response, ApiError> {
    if method != Method::GET {
        return Err(ApiError::MethodNotAllowed);
    }
    let query = Query::parse(raw_query)?;
    let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))?;
    state.check(
        user,
        &Attributes {
            verb: "get".into(),
            group: GROUP.into(),
            resource: target.described.plural().into(),
            subresource: target.metric.name().into(),
            namespace: target.namespace.clone(),
            name: target.name.clone(),
            ..Default::default()
        },
    )?;
    let gathered = state.usage.gather(state).await?;
    let pods = super::pods_in(state, Some(&target.namespace)).await?;
    // Only the namespace's pods are listed, so only they are matched.
    let measured = super::measured(&gathered, &pods);
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let item = |name: &str, milli: u64| {
        json!({
            "describedObject": {
                "kind": target.described.kind(),
                "namespace": target.namespace,
                "name": name,
                "apiVersion": "/v1",
            },
            "metric": {"name": target.metric.name(), "selector": null},
            "timestamp": now,
            "windowSeconds": WINDOW.as_secs(),
            "value": format!("{milli}m"),
        })
    };
    let items: Vec<Value> = match target.described {
        Described::Pods => {
            let items: Vec<Value> = measured
                .iter()
                .filter(|(p, pod)| {
                    (target.name == "*" || p.pod_ref.name == target.name) && labels.matches(pod)
                })
                .filter_map(|(p, _)| Some(item(&p.pod_ref.name, target.metric.milli(p)?)))
                .collect();
            if items.is_empty() && target.name != "*" {
                return Err(ApiError::NotFound {
                    group: GROUP.into(),
                    resource: format!("pods/{}", target.metric.name()),
                    name: target.name.clone(),
                });
            }
            items
        }
        Described::Services => {
            let kind = resources::by_resource("", "v1", "services").ok_or(ApiError::NoRoute)?;
            let svc = state
                .registry
                .get(kind, Some(&target.namespace), &target.name)
                .await?;
            let selector = svc
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .filter(|m| !m.is_empty())
                .map(LabelSelector::from_map);
            let sum: u64 = match selector {
                Some(sel) => measured
                    .iter()
                    .filter(|(_, pod)| sel.matches(pod))
                    .filter_map(|(p, _)| target.metric.milli(p))
                    .sum(),
                None => 0,
            };
            vec![item(&target.name, sum)]
        }
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "kind": "MetricValueList",
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "metadata": {},
            "items": items,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_a_metric_of_pods_or_a_service() {
        let t =
            parse("/apis/custom.metrics.k8s.io/v1beta2/namespaces/ns/pods/*/requests_per_second")
                .unwrap()
                .unwrap();
        assert_eq!(t.name, "*");
        let escaped =
            parse("/apis/custom.metrics.k8s.io/v1beta2/namespaces/ns/pods/%2A/requests_per_second")
                .unwrap()
                .unwrap();
        assert_eq!(escaped, t);
        assert_eq!(t.metric, Metric::RequestsPerSecond);
        let t = parse(
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/ns/services/web/requests_in_flight",
        )
        .unwrap()
        .unwrap();
        assert_eq!(t.described, Described::Services);
        assert!(matches!(
            parse("/apis/custom.metrics.k8s.io/v1beta2/namespaces/ns/pods/a/nope"),
            Some(Err(ApiError::NotFound { .. }))
        ));
        assert!(matches!(
            parse(
                "/apis/custom.metrics.k8s.io/v1beta2/namespaces/ns/services/*/requests_in_flight"
            ),
            Some(Err(ApiError::BadRequest { .. }))
        ));
        assert!(matches!(
            parse("/apis/custom.metrics.k8s.io/v1beta2/pods"),
            Some(Err(ApiError::NoRoute))
        ));
        assert!(parse("/apis/metrics.k8s.io/v1beta1/pods").is_none());
    }
}
