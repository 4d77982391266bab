//! Prometheus metrics of the API server: request counts by verb, resource
//! and code, and request latency histograms by verb and resource.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus::{HistogramVec, IntCounterVec, Registry};

use super::ApiState;

/// The API server's series, in a registry of its own (one per server, so
/// several servers in one test process do not share counts).
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let requests = crate::metrics::counter_vec(
            &registry,
            "apiserver_request_total",
            "Counter of apiserver requests broken out by verb, resource and HTTP response code.",
            &["verb", "resource", "code"],
        );
        let latency = crate::metrics::histogram_vec(
            &registry,
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb and resource.",
            &["verb", "resource"],
            crate::metrics::API_REQUEST_BUCKETS,
        );
        Metrics {
            registry,
            requests,
            latency,
        }
    }
}

/// The verb and resource a request path belongs to, for labels.
fn labels(method: &Method, path: &str) -> (&'static str, String) {
    let resource = match super::path::parse(path) {
        Ok(Some(t)) => match &t.subresource {
            Some(s) => format!("{}/{}", t.kind.plural, s),
            None => t.kind.plural.to_string(),
        },
        _ => String::new(),
    };
    let verb = match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "OTHER",
    };
    (verb, resource)
}

impl Metrics {
    /// Counts one request and its latency (called by the authentication
    /// middleware for every request).
    pub fn observe(&self, method: &Method, path: &str, code: StatusCode, took: Duration) {
        let (verb, resource) = labels(method, path);
        self.requests
            .with_label_values(&[verb, resource.as_str(), code.as_str()])
            .inc();
        self.latency
            .with_label_values(&[verb, resource.as_str()])
            .observe(took.as_secs_f64());
    }
}

pub async fn serve(State(state): State<Arc<ApiState>>) -> Response {
    // The controller manager runs in this process: its figures are served
    // here too.
    let text = crate::metrics::render(&[
        &state.metrics.registry,
        crate::metrics::reconcile::registry(),
    ]);
    let mut r = (StatusCode::OK, text).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    r
}
