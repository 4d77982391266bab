//! Gateway API routing: which Service a request entering one of a
//! Gateway's listener ports goes to, from the HTTPRoutes attached to the
//! Gateways whose class the proxy serves.
//!
//! - The listener is the one on the port whose host name matches the
//!   request's host most closely (exact, then the longest wildcard, then
//!   one with no host name).
//! - Among the rules of the routes attached to it, the match that wins is
//!   the one the Gateway API ranks first: an exact host before a wildcard;
//!   an `Exact` path, then the longest `PathPrefix`; then a method match;
//!   then the most header matches, then the most query matches; then the
//!   oldest route, then `namespace/name`, then the rule's order.
//! - A rule splits its requests between its backends by weight, in a
//!   smooth rotation (3:1 sends exactly three of every four requests to
//!   the first backend). A rule whose weights are all 0, or whose backend
//!   does not exist, answers 500, as the Gateway API asks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kube::ResourceExt;

use super::ingress::{TlsRef, strip_port};
use super::table::{Table, Target};
use crate::resources::gateway::{
    Gateway, GatewayClass, HTTPRoute, HTTPRouteMatch, attaches, host_matches, refers_to,
};
use crate::resources::kinds::gatewayclass::WKUBE_CONTROLLER;

/// One backend of a rule and its weight.
#[derive(Debug)]
struct WeightedBackend {
    namespace: String,
    service: String,
    port: u16,
    weight: u64,
}

/// One rule of a route, as attached to one listener.
#[derive(Debug)]
struct Rule {
    /// The route's host names narrowed by nothing (empty: any).
    hostnames: Vec<String>,
    matches: Vec<HTTPRouteMatch>,
    backends: Vec<WeightedBackend>,
    /// Age order of the route (0 = oldest), then the rule's index.
    rank: (usize, usize),
    /// `namespace/name#index`: the rule across table rebuilds.
    key: String,
    /// Requests this rule has routed, for the weighted rotation; carried
    /// over from the previous table, so that a rebuild (any endpoint or
    /// status change) does not restart the rotation at the first backend.
    served: Arc<AtomicU64>,
}

#[derive(Debug)]
struct PortListener {
    hostname: Option<String>,
    https: bool,
    rules: Vec<Arc<Rule>>,
}

/// The routes of the served Gateways, by listener port. Immutable once
/// built (the counters aside).
#[derive(Debug, Default)]
pub struct GatewayRoutes {
    ports: BTreeMap<u16, Vec<PortListener>>,
    tls: Vec<TlsRef>,
}

/// What a request to a Gateway port carries that routes match on.
pub struct RequestView<'a> {
    pub host: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub method: &'a str,
    pub headers: &'a hyper::HeaderMap,
}

/// What routing came to.
#[derive(Debug)]
pub enum GatewayRouted {
    To(Target),
    /// A rule matched but cannot be served (its backend is missing, or
    /// every weight is 0): 500.
    Invalid(String),
    /// Nothing matched: 404.
    NoRoute,
}

impl GatewayRoutes {
    /// The routes of the served Gateways; `previous` lends its rules'
    /// rotation counters.
    pub fn build(
        classes: &[Arc<GatewayClass>],
        gateways: &[Arc<Gateway>],
        routes: &[Arc<HTTPRoute>],
        previous: Option<&GatewayRoutes>,
    ) -> GatewayRoutes {
        let mut counters: std::collections::HashMap<String, Arc<AtomicU64>> = previous
            .into_iter()
            .flat_map(|p| p.ports.values())
            .flatten()
            .flat_map(|l| &l.rules)
            .map(|r| (r.key.clone(), r.served.clone()))
            .collect();
        let ours: Vec<String> = classes
            .iter()
            .filter(|c| c.spec.controller_name == WKUBE_CONTROLLER)
            .map(|c| c.name_any())
            .collect();
        let mut routes: Vec<&HTTPRoute> = routes
            .iter()
            .map(AsRef::as_ref)
            .filter(|r| r.metadata.deletion_timestamp.is_none())
            .collect();
        routes.sort_by(|a, b| {
            let key = |r: &HTTPRoute| {
                (
                    r.metadata.creation_timestamp.clone(),
                    r.namespace().unwrap_or_default(),
                    r.name_any(),
                )
            };
            key(a).cmp(&key(b))
        });
        let mut out = GatewayRoutes::default();
        for gw in gateways {
            if gw.metadata.deletion_timestamp.is_some()
                || !ours.contains(&gw.spec.gateway_class_name)
            {
                continue;
            }
            let gw_ns = gw.namespace().unwrap_or_default();
            for l in &gw.spec.listeners {
                let Ok(port) = u16::try_from(l.port) else {
                    continue;
                };
                let https = l.protocol == "HTTPS";
                if https {
                    let secret = l
                        .tls
                        .as_ref()
                        .and_then(|t| t.certificate_refs.first())
                        .map(|r| r.name.clone());
                    if let Some(secret) = secret {
                        out.tls.push(TlsRef {
                            namespace: gw_ns.clone(),
                            secret,
                            hosts: vec![
                                l.hostname
                                    .clone()
                                    .filter(|h| !h.is_empty())
                                    .unwrap_or_else(|| "*".into())
                                    .to_ascii_lowercase(),
                            ],
                        });
                    }
                }
                let mut rules = Vec::new();
                for (rank, route) in routes.iter().enumerate() {
                    let route_ns = route.namespace().unwrap_or_default();
                    let attached =
                        route.spec.parent_refs.iter().any(|p| {
                            refers_to(&route_ns, p, gw) && attaches(route, p, gw, l).is_ok()
                        });
                    if !attached {
                        continue;
                    }
                    for (i, rule) in route.spec.rules.iter().enumerate() {
                        let backends = rule
                            .backend_refs
                            .iter()
                            .filter_map(|b| {
                                Some(WeightedBackend {
                                    namespace: b.namespace.clone().unwrap_or(route_ns.clone()),
                                    service: b.name.clone(),
                                    port: u16::try_from(b.port?).ok()?,
                                    weight: u64::try_from(b.weight.unwrap_or(1)).unwrap_or(0),
                                })
                            })
                            .collect();
                        let key = format!("{route_ns}/{}#{i}", route.name_any());
                        let served = counters.entry(key.clone()).or_default().clone();
                        rules.push(Arc::new(Rule {
                            hostnames: route
                                .spec
                                .hostnames
                                .iter()
                                .map(|h| h.to_ascii_lowercase())
                                .collect(),
                            // No match given matches every request (the
                            // API server writes this default too).
                            matches: if rule.matches.is_empty() {
                                vec![HTTPRouteMatch::default()]
                            } else {
                                rule.matches.clone()
                            },
                            backends,
                            rank: (rank, i),
                            key,
                            served,
                        }));
                    }
                }
                out.ports.entry(port).or_default().push(PortListener {
                    hostname: l.hostname.clone().filter(|h| !h.is_empty()),
                    https,
                    rules,
                });
            }
        }
        out
    }

    /// The ports listeners are on, and whether each serves TLS.
    pub fn ports(&self) -> impl Iterator<Item = (u16, bool)> + '_ {
        self.ports
            .iter()
            .map(|(p, ls)| (*p, ls.iter().any(|l| l.https)))
    }

    /// Whether a listener is on `port`, and whether it is HTTPS.
    pub fn port(&self, port: u16) -> Option<bool> {
        self.ports.get(&port).map(|ls| ls.iter().any(|l| l.https))
    }

    /// The certificates HTTPS listeners name.
    pub fn tls(&self) -> &[TlsRef] {
        &self.tls
    }

    /// Routes a request that came in on `port`.
    pub fn route(&self, table: &Table, port: u16, req: &RequestView<'_>) -> GatewayRouted {
        let backend = match self.choose(port, req) {
            Chosen::Backend(b) => b,
            Chosen::AllWeightsZero => {
                return GatewayRouted::Invalid("no backend with a weight above 0".into());
            }
            Chosen::Nothing => return GatewayRouted::NoRoute,
        };
        let Some(svc) = table.service(&backend.namespace, &backend.service) else {
            return GatewayRouted::Invalid(format!(
                "backend service {}/{} not found",
                backend.namespace, backend.service
            ));
        };
        match svc.port(backend.port) {
            Some(port) => GatewayRouted::To(Target::Service { svc, port }),
            None => GatewayRouted::Invalid(format!(
                "backend service {}/{} has no port {}",
                backend.namespace, backend.service, backend.port
            )),
        }
    }

    /// The backend the best-matching rule gives this request.
    fn choose(&self, port: u16, req: &RequestView<'_>) -> Chosen<'_> {
        let host = strip_port(req.host).to_ascii_lowercase();
        let Some(listeners) = self.ports.get(&port) else {
            return Chosen::Nothing;
        };
        // The listener whose host name fits best.
        let listener = listeners
            .iter()
            .filter(|l| l.hostname.as_deref().is_none_or(|h| host_matches(h, &host)))
            .max_by_key(|l| match l.hostname.as_deref() {
                None => (0, 0),
                Some(h) if h.starts_with('*') => (1, h.len()),
                Some(h) => (2, h.len()),
            });
        let Some(listener) = listener else {
            return Chosen::Nothing;
        };
        let mut best: Option<(MatchRank, &Arc<Rule>)> = None;
        for rule in &listener.rules {
            let host_rank = if rule.hostnames.is_empty() {
                Some((0, 0))
            } else {
                rule.hostnames
                    .iter()
                    .filter(|h| host_matches(h, &host))
                    .map(|h| {
                        if h.starts_with('*') {
                            (1, h.len())
                        } else {
                            (2, h.len())
                        }
                    })
                    .max()
            };
            let Some(host_rank) = host_rank else {
                continue;
            };
            for m in &rule.matches {
                let Some(rank) = match_rank(m, req) else {
                    continue;
                };
                let key = MatchRank {
                    host: host_rank,
                    request: rank,
                    age: std::cmp::Reverse(rule.rank),
                };
                if best.as_ref().is_none_or(|(b, _)| key > *b) {
                    best = Some((key, rule));
                }
            }
        }
        let Some((_, rule)) = best else {
            return Chosen::Nothing;
        };
        let total: u64 = rule.backends.iter().map(|b| b.weight).sum();
        if total == 0 {
            return Chosen::AllWeightsZero;
        }
        let mut turn = rule.served.fetch_add(1, Ordering::Relaxed) % total;
        for b in &rule.backends {
            if turn < b.weight {
                return Chosen::Backend(b);
            }
            turn -= b.weight;
        }
        Chosen::AllWeightsZero
    }
}

/// What [`GatewayRoutes::choose`] found.
enum Chosen<'a> {
    Backend(&'a WeightedBackend),
    AllWeightsZero,
    Nothing,
}

/// How well a match fits, compared field by field (greater wins).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct MatchRank {
    host: (u8, usize),
    request: (bool, usize, bool, usize, usize),
    /// Older routes and earlier rules win ties.
    age: std::cmp::Reverse<(usize, usize)>,
}

/// The rank of `m` for `req`, if it matches: (exact path, path length,
/// method given, header matches, query matches).
fn match_rank(
    m: &HTTPRouteMatch,
    req: &RequestView<'_>,
) -> Option<(bool, usize, bool, usize, usize)> {
    let (exact, value) = match &m.path {
        Some(p) => (
            p.type_.as_deref() == Some("Exact"),
            p.value.as_deref().unwrap_or("/"),
        ),
        None => (false, "/"),
    };
    let path_ok = if exact {
        req.path == value
    } else {
        let v = value.trim_end_matches('/');
        req.path
            .strip_prefix(v)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    if !path_ok {
        return None;
    }
    if let Some(method) = &m.method
        && method != req.method
    {
        return None;
    }
    let headers_ok = m.headers.iter().all(|h| {
        req.headers
            .get_all(h.name.as_str())
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v == h.value))
    });
    if !headers_ok {
        return None;
    }
    let query_ok = m.query_params.iter().all(|q| {
        req.query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .any(|(k, v)| k == q.name && v == q.value)
    });
    if !query_ok {
        return None;
    }
    Some((
        exact,
        value.len(),
        m.method.is_some(),
        m.headers.len(),
        m.query_params.len(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn class() -> Arc<GatewayClass> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "wkube"},
                "spec": {"controllerName": WKUBE_CONTROLLER}}))
            .unwrap(),
        )
    }

    fn gateway(listeners: serde_json::Value) -> Arc<Gateway> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "gw", "namespace": "web"},
                "spec": {"gatewayClassName": "wkube", "listeners": listeners}}))
            .unwrap(),
        )
    }

    fn route(ns: &str, name: &str, created: &str, spec: serde_json::Value) -> Arc<HTTPRoute> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns,
                "creationTimestamp": created}, "spec": spec}))
            .unwrap(),
        )
    }

    /// The backend chosen, by service name.
    fn pick(
        r: &GatewayRoutes,
        port: u16,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Option<String> {
        let mut h = hyper::HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let req = RequestView {
            host,
            path,
            query,
            method: "GET",
            headers: &h,
        };
        match r.choose(port, &req) {
            Chosen::Backend(b) => Some(b.service.clone()),
            _ => None,
        }
    }

    #[test]
    fn matches_rank_by_host_path_headers_and_age_and_weights_rotate() {
        let gw = gateway(json!([
            {"name": "http", "port": 8080, "protocol": "HTTP",
             "allowedRoutes": {"namespaces": {"from": "Same"}}},
        ]));
        let old = route(
            "web",
            "old",
            "2026-01-01T00:00:00Z",
            json!({
                "parentRefs": [{"name": "gw"}],
                "hostnames": ["shop.test"],
                "rules": [
                    {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                     "backendRefs": [{"name": "stable", "port": 80, "weight": 3},
                                     {"name": "canary", "port": 80, "weight": 1}]},
                    {"matches": [{"path": {"type": "PathPrefix", "value": "/"},
                                  "headers": [{"type": "Exact", "name": "x-canary", "value": "yes"}]}],
                     "backendRefs": [{"name": "canary", "port": 80}]},
                    {"matches": [{"path": {"type": "Exact", "value": "/login"}}],
                     "backendRefs": [{"name": "auth", "port": 80}]},
                ],
            }),
        );
        let newer = route(
            "web",
            "newer",
            "2026-02-01T00:00:00Z",
            json!({
                "parentRefs": [{"name": "gw"}],
                "hostnames": ["shop.test"],
                "rules": [{"matches": [{"path": {"type": "Exact", "value": "/login"}}],
                           "backendRefs": [{"name": "thief", "port": 80}]}],
            }),
        );
        let wild = route(
            "web",
            "wild",
            "2026-01-01T00:00:00Z",
            json!({
                "parentRefs": [{"name": "gw"}],
                "hostnames": ["*.test"],
                "rules": [{"backendRefs": [{"name": "wild", "port": 80}]}],
            }),
        );
        // Another namespace: not allowed by a `Same` listener.
        let foreign = route(
            "other",
            "foreign",
            "2025-01-01T00:00:00Z",
            json!({
                "parentRefs": [{"name": "gw", "namespace": "web"}],
                "rules": [{"backendRefs": [{"name": "foreign", "port": 80}]}],
            }),
        );
        let r = GatewayRoutes::build(
            &[class()],
            std::slice::from_ref(&gw),
            &[newer.clone(), wild.clone(), foreign.clone(), old.clone()],
            None,
        );
        let p = |host: &str, path: &str, h: &[(&str, &str)]| pick(&r, 8080, host, path, h);

        let picks: Vec<_> = (0..8).map(|_| p("shop.test", "/a", &[]).unwrap()).collect();
        assert_eq!(
            picks.iter().filter(|s| *s == "stable").count(),
            6,
            "{picks:?}"
        );
        assert_eq!(
            picks.iter().filter(|s| *s == "canary").count(),
            2,
            "{picks:?}"
        );
        assert_eq!(
            p("shop.test", "/a", &[("x-canary", "yes")]).as_deref(),
            Some("canary")
        );
        assert_eq!(p("shop.test:8080", "/login", &[]).as_deref(), Some("auth"));
        assert_eq!(p("a.b.test", "/", &[]).as_deref(), Some("wild"));
        assert_eq!(p("example.org", "/", &[]), None);
        assert!(pick(&r, 9090, "shop.test", "/", &[]).is_none());

        // A rebuilt table carries the rotation on: 3 more requests after
        // one to `stable` still split as 3:1 over the 4.
        assert_eq!(p("shop.test", "/a", &[]).as_deref(), Some("stable"));
        let again = GatewayRoutes::build(&[class()], &[gw], &[newer, wild, foreign, old], Some(&r));
        let next: Vec<_> = (0..3)
            .map(|_| pick(&again, 8080, "shop.test", "/a", &[]).unwrap())
            .collect();
        assert_eq!(next, ["stable", "stable", "canary"]);
    }
}
