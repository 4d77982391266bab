//! The node agent's HTTP API, defined once: the routes the agent serves
//! (`kubelet::server`), the paths the API server calls (`api::nodeproxy`,
//! logs and the pod proxy) and the path other nodes' proxies deliver pod
//! traffic to (`proxy::route`).
//!
//! [`client`] is how the control plane and other nodes call agents;
//! [`tunnel`] is how they reach an agent behind NAT, over the connection
//! it keeps open to the API server.
//!
//! Each route is a pattern (for the agent's router) and a function that
//! builds a concrete path (for its callers), side by side so they cannot
//! drift apart.

use std::fmt::Display;

use axum::http::{HeaderMap, header};

pub mod client;
pub mod summary;
pub mod tunnel;

/// `GET`: a container's log (query: follow, tailLines, previous,
/// timestamps, limitBytes, sinceSeconds, sinceTime). Control plane only.
pub const CONTAINER_LOGS: &str = "/containerLogs/{namespace}/{pod}/{container}";

/// The path of [`CONTAINER_LOGS`] for one container.
pub fn container_logs(namespace: &str, pod: &str, container: &str) -> String {
    format!("/containerLogs/{namespace}/{pod}/{container}")
}

/// Any method: a request to a pod by name, on a container port (empty or
/// `-`: its first HTTP container). Control plane only. Also served with a
/// trailing `/` and with `/{*rest}`.
pub const POD_PROXY: &str = "/proxy/{namespace}/{pod}/{port}";

/// The path of [`POD_PROXY`]; `rest` is empty or starts with `/`.
pub fn pod_proxy(namespace: &str, pod: &str, port: impl Display, rest: &str) -> String {
    format!("/proxy/{namespace}/{pod}/{port}{rest}")
}

/// Any method: a request to the pod with this address, as a network would
/// deliver it; the one route other nodes may use. Also served with a
/// trailing `/` and with `/{*rest}`.
pub const POD_IP: &str = "/podip/{ip}/{port}";

/// The path of [`POD_IP`], without a rest.
pub fn pod_ip(ip: impl Display, port: impl Display) -> String {
    format!("/podip/{ip}/{port}")
}

/// Set by an agent answering [`POD_IP`] when it has no such pod, so the
/// caller can tell "refused" from the pod's own 404.
pub const NO_POD_HEADER: &str = "x-wkube-no-pod";

/// The agent's Prometheus metrics (the proxy's counters). Control plane
/// only.
pub const METRICS: &str = "/metrics";

/// What each container of each pod uses: CPU time and memory, in the
/// shape of Kubernetes' kubelet Summary API (`/stats/summary`).
pub const STATS_SUMMARY: &str = "/stats/summary";

/// Liveness, for anyone.
pub const HEALTHZ: &str = "/healthz";

/// Headers that describe one connection, not the message (RFC 9110 7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// `headers` without hop-by-hop ones (and those `Connection` names).
pub fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || named.iter().any(|h| h == n) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// A route pattern with a trailing slash.
pub fn with_slash(pattern: &str) -> String {
    format!("{pattern}/")
}

/// A route pattern with any rest of the path.
pub fn with_rest(pattern: &str) -> String {
    format!("{pattern}/{{*rest}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each builder fills its pattern, placeholder for placeholder.
    #[test]
    fn paths_are_their_patterns_filled_in() {
        let fill = |pattern: &str, values: &[&str]| {
            let mut out = pattern.to_string();
            for v in values {
                let start = out.find('{').unwrap();
                let end = out[start..].find('}').unwrap() + start;
                out.replace_range(start..=end, v);
            }
            out
        };
        assert_eq!(
            container_logs("ns", "p", "c"),
            fill(CONTAINER_LOGS, &["ns", "p", "c"])
        );
        assert_eq!(
            pod_proxy("ns", "p", 80, ""),
            fill(POD_PROXY, &["ns", "p", "80"])
        );
        assert_eq!(
            pod_proxy("ns", "p", 80, "/x"),
            fill(POD_PROXY, &["ns", "p", "80"]) + "/x"
        );
        assert_eq!(
            pod_ip("127.128.0.5", 8080),
            fill(POD_IP, &["127.128.0.5", "8080"])
        );
        assert_eq!(with_rest(POD_IP), "/podip/{ip}/{port}/{*rest}");
    }
}
