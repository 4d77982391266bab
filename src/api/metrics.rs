//! Prometheus metrics of the API server: request counts by verb, resource
//! and code, and request latency histograms by verb and resource.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;

use super::ApiState;

/// Latency buckets in seconds, as the Kubernetes API server uses.
const BUCKETS: &[f64] = &[
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<(String, String), Histogram>,
}

/// Counters, updated by the authentication middleware for every request.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// The verb and resource a request path belongs to, for labels.
fn labels(method: &Method, path: &str) -> (String, String) {
    let resource = match super::path::parse(path) {
        Ok(Some(t)) => match &t.subresource {
            Some(s) => format!("{}/{}", t.kind.plural, s),
            None => t.kind.plural.to_string(),
        },
        _ => String::new(),
    };
    let verb = match *method {
        Method::GET if resource.is_empty() => "GET",
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "OTHER",
    };
    (verb.to_string(), resource)
}

impl Metrics {
    pub fn observe(&self, method: &Method, path: &str, code: StatusCode, took: Duration) {
        let (verb, resource) = labels(method, path);
        let secs = took.as_secs_f64();
        let mut inner = self.inner.lock();
        *inner
            .requests
            .entry((verb.clone(), resource.clone(), code.as_u16()))
            .or_default() += 1;
        let h = inner.latency.entry((verb, resource)).or_default();
        if h.counts.is_empty() {
            h.counts = vec![0; BUCKETS.len()];
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let inner = self.inner.lock();
        let mut out = String::new();
        out.push_str("# HELP apiserver_request_total Counter of apiserver requests broken out by verb, resource and HTTP response code.\n# TYPE apiserver_request_total counter\n");
        for ((verb, resource, code), n) in &inner.requests {
            let _ = writeln!(
                out,
                "apiserver_request_total{{verb=\"{verb}\",resource=\"{resource}\",code=\"{code}\"}} {n}"
            );
        }
        out.push_str("# HELP apiserver_request_duration_seconds Response latency distribution in seconds for each verb and resource.\n# TYPE apiserver_request_duration_seconds histogram\n");
        for ((verb, resource), h) in &inner.latency {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "apiserver_request_duration_seconds_bucket{{verb=\"{verb}\",resource=\"{resource}\",le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "apiserver_request_duration_seconds_bucket{{verb=\"{verb}\",resource=\"{resource}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "apiserver_request_duration_seconds_sum{{verb=\"{verb}\",resource=\"{resource}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "apiserver_request_duration_seconds_count{{verb=\"{verb}\",resource=\"{resource}\"}} {}",
                h.count
            );
        }
        out
    }
}

pub async fn serve(State(state): State<Arc<ApiState>>) -> Response {
    // The controller manager runs in this process: its figures are served
    // here too.
    let text = state.metrics.render() + &crate::controllers::metrics::render();
    let mut r = (StatusCode::OK, text).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}
