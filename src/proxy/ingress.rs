//! Ingress routing: which Service port a request entering the node's
//! ingress port goes to, by its `Host` and path, from the Ingresses whose
//! class the proxy serves.
//!
//! The rules of every such Ingress are merged, as one ingress controller
//! merges them:
//! - a request's host picks the rules of that exact host, else those of
//!   the wildcard (`*.example.com` covers exactly one more label), else
//!   the rules with no host;
//! - among those, the longest matching path wins, an `Exact` path before
//!   a `Prefix` of the same length, and the older Ingress before the newer
//!   one on a tie (so a new Ingress cannot take over another's route);
//! - `Prefix` matches whole path elements (`/foo` matches `/foo/bar`, not
//!   `/foobar`); `ImplementationSpecific` is treated as `Prefix`;
//! - with no matching path, the oldest `defaultBackend` answers, else the
//!   proxy answers 404.

use std::sync::Arc;

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};
use kube::ResourceExt;

use super::table::{Table, Target};
use crate::resources::kinds::ingressclass::WKUBE_CONTROLLER;

/// How a path rule compares paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PathMatch {
    // Ordered so that, at equal length, Exact sorts first.
    Exact,
    Prefix,
}

/// A Service port named by number or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

/// Where a matched rule sends the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub namespace: String,
    pub service: String,
    pub port: PortRef,
}

#[derive(Debug)]
struct PathRule {
    path: String,
    how: PathMatch,
    /// The Ingress's age rank (0 = oldest), for ties.
    rank: usize,
    backend: Backend,
}

/// Which hosts a group of rules is for.
#[derive(Debug, PartialEq, Eq)]
enum HostMatch {
    Exact(String),
    /// `*.example.com`, kept as `.example.com`.
    Wildcard(String),
}

/// The merged rules of the served Ingresses. Immutable once built.
#[derive(Debug, Default)]
pub struct IngressRoutes {
    /// Rules for a host, each group sorted by preference.
    hosts: Vec<(HostMatch, Vec<PathRule>)>,
    /// Rules that apply to any host.
    any_host: Vec<PathRule>,
    /// The oldest Ingress's `defaultBackend`.
    default_backend: Option<Backend>,
    /// How many Ingresses are served.
    count: usize,
    /// The certificates `spec.tls` names, oldest Ingress first.
    tls: Vec<TlsRef>,
}

/// A `spec.tls` entry: the hosts a Secret's certificate serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsRef {
    pub namespace: String,
    pub secret: String,
    pub hosts: Vec<String>,
}

/// What routing a request came to.
#[derive(Debug)]
pub enum Routed {
    To(Target),
    /// A rule matched, but its Service or port does not exist (503).
    NoService(Backend),
    /// No rule and no default backend matched (404).
    NoRoute,
}

impl IngressRoutes {
    /// The routes of the Ingresses whose class the proxy serves.
    pub fn build(ingresses: &[Arc<Ingress>], classes: &[Arc<IngressClass>]) -> IngressRoutes {
        let ours = |class: &str| {
            classes.iter().any(|c| {
                c.name_any() == class
                    && c.spec.as_ref().and_then(|s| s.controller.as_deref())
                        == Some(WKUBE_CONTROLLER)
            })
        };
        let mut served: Vec<&Ingress> = ingresses
            .iter()
            .map(AsRef::as_ref)
            .filter(|i| {
                i.metadata.deletion_timestamp.is_none()
                    && i.spec
                        .as_ref()
                        .and_then(|s| s.ingress_class_name.as_deref())
                        .is_some_and(ours)
            })
            .collect();
        served.sort_by(|a, b| {
            let key = |i: &Ingress| {
                (
                    i.metadata.creation_timestamp.clone(),
                    i.namespace().unwrap_or_default(),
                    i.name_any(),
                )
            };
            key(a).cmp(&key(b))
        });
        let mut routes = IngressRoutes {
            count: served.len(),
            ..IngressRoutes::default()
        };
        for (rank, ing) in served.iter().enumerate() {
            let ns = ing.namespace().unwrap_or_default();
            let Some(spec) = &ing.spec else {
                continue;
            };
            for tls in spec.tls.iter().flatten() {
                let (Some(secret), Some(hosts)) = (&tls.secret_name, &tls.hosts) else {
                    continue;
                };
                routes.tls.push(TlsRef {
                    namespace: ns.clone(),
                    secret: secret.clone(),
                    hosts: hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
                });
            }
            if routes.default_backend.is_none() {
                routes.default_backend =
                    spec.default_backend.as_ref().and_then(|b| backend(&ns, b));
            }
            for rule in spec.rules.iter().flatten() {
                let Some(http) = &rule.http else {
                    continue;
                };
                let group = match rule.host.as_deref().filter(|h| !h.is_empty()) {
                    None => &mut routes.any_host,
                    Some(host) => {
                        let host = host.to_ascii_lowercase();
                        let m = match host.strip_prefix('*') {
                            Some(suffix) => HostMatch::Wildcard(suffix.to_string()),
                            None => HostMatch::Exact(host),
                        };
                        let i = match routes.hosts.iter().position(|(h, _)| *h == m) {
                            Some(i) => i,
                            None => {
                                routes.hosts.push((m, Vec::new()));
                                routes.hosts.len() - 1
                            }
                        };
                        &mut routes.hosts[i].1
                    }
                };
                for p in &http.paths {
                    let Some(b) = backend(&ns, &p.backend) else {
                        continue;
                    };
                    let how = if p.path_type == "Exact" {
                        PathMatch::Exact
                    } else {
                        PathMatch::Prefix
                    };
                    let path = p.path.clone().unwrap_or_else(|| "/".into());
                    group.push(PathRule {
                        path,
                        how,
                        rank,
                        backend: b,
                    });
                }
            }
        }
        let order = |a: &PathRule, b: &PathRule| {
            b.path
                .len()
                .cmp(&a.path.len())
                .then(a.how.cmp(&b.how))
                .then(a.rank.cmp(&b.rank))
        };
        routes.any_host.sort_by(order);
        for (_, group) in &mut routes.hosts {
            group.sort_by(order);
        }
        routes
    }

    /// How many Ingresses are served (none: the port need not be open).
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The certificates to serve, oldest Ingress first.
    pub fn tls(&self) -> &[TlsRef] {
        &self.tls
    }

    /// The backend for a request to `host` (a `Host` header, port and all)
    /// at `path` (without its query).
    pub fn backend(&self, host: &str, path: &str) -> Option<&Backend> {
        let host = strip_port(host).to_ascii_lowercase();
        let exact = self
            .hosts
            .iter()
            .find(|(m, _)| matches!(m, HostMatch::Exact(h) if *h == host));
        let wildcard = || {
            self.hosts.iter().find(|(m, _)| match m {
                HostMatch::Wildcard(suffix) => host
                    .strip_suffix(suffix.as_str())
                    .is_some_and(|label| !label.is_empty() && !label.contains('.')),
                HostMatch::Exact(_) => false,
            })
        };
        let rules = match exact.or_else(wildcard) {
            Some((_, group)) => group,
            None => &self.any_host,
        };
        rules
            .iter()
            .find(|r| path_matches(r.how, &r.path, path))
            .map(|r| &r.backend)
            .or(self.default_backend.as_ref())
    }

    /// Routes a request through `table`.
    pub fn route(&self, table: &Table, host: &str, path: &str) -> Routed {
        let Some(b) = self.backend(host, path) else {
            return Routed::NoRoute;
        };
        let Some(svc) = table.service(&b.namespace, &b.service) else {
            return Routed::NoService(b.clone());
        };
        let port = match &b.port {
            PortRef::Number(n) => svc.port(*n),
            PortRef::Name(name) => svc.ports.iter().position(|p| p.name == *name),
        };
        match port {
            Some(port) => Routed::To(Target::Service { svc, port }),
            None => Routed::NoService(b.clone()),
        }
    }
}

fn backend(ns: &str, b: &IngressBackend) -> Option<Backend> {
    let svc = b.service.as_ref()?;
    let port = svc.port.as_ref()?;
    let port = match (port.number, &port.name) {
        (Some(n), _) => PortRef::Number(u16::try_from(n).ok()?),
        (None, Some(name)) => PortRef::Name(name.clone()),
        (None, None) => return None,
    };
    Some(Backend {
        namespace: ns.to_string(),
        service: svc.name.clone(),
        port,
    })
}

/// `host` without a trailing `:port`.
pub(super) fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Whether `rule` of kind `how` matches the request path `path`.
fn path_matches(how: PathMatch, rule: &str, path: &str) -> bool {
    match how {
        PathMatch::Exact => rule == path,
        PathMatch::Prefix => {
            // Element-wise: a trailing slash in the rule is ignored, and
            // the request must continue with a `/` (or end) after it.
            let rule = rule.trim_end_matches('/');
            match path.strip_prefix(rule) {
                Some(rest) => rest.is_empty() || rest.starts_with('/'),
                None => false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ingress(ns: &str, name: &str, created: &str, spec: serde_json::Value) -> Arc<Ingress> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": ns, "creationTimestamp": created},
                "spec": spec,
            }))
            .unwrap(),
        )
    }

    fn classes() -> Vec<Arc<IngressClass>> {
        vec![Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "wkube"}, "spec": {"controller": WKUBE_CONTROLLER}}))
            .unwrap(),
        )]
    }

    fn path(p: &str, ty: &str, svc: &str) -> serde_json::Value {
        json!({"path": p, "pathType": ty,
               "backend": {"service": {"name": svc, "port": {"number": 80}}}})
    }

    fn svc_of(r: &IngressRoutes, host: &str, p: &str) -> Option<String> {
        r.backend(host, p).map(|b| b.service.clone())
    }

    #[test]
    fn hosts_paths_and_ties_resolve_as_documented() {
        let a = ingress(
            "default",
            "a",
            "2026-01-01T00:00:00Z",
            json!({"ingressClassName": "wkube", "rules": [
                {"host": "shop.example.com", "http": {"paths": [
                    path("/", "Prefix", "web"),
                    path("/api", "Prefix", "api"),
                    path("/api/v1", "Exact", "v1exact"),
                ]}},
                {"host": "*.example.com", "http": {"paths": [path("/", "Prefix", "wild")]}},
                {"http": {"paths": [path("/", "Prefix", "catchall")]}},
            ]}),
        );
        // Newer, same route: the older one keeps it.
        let b = ingress(
            "other",
            "b",
            "2026-02-01T00:00:00Z",
            json!({"ingressClassName": "wkube", "rules": [
                {"host": "shop.example.com", "http": {"paths": [path("/api", "Prefix", "thief")]}},
            ]}),
        );
        // Another class: not ours.
        let c = ingress(
            "default",
            "c",
            "2025-01-01T00:00:00Z",
            json!({"ingressClassName": "nginx", "rules": [
                {"host": "shop.example.com", "http": {"paths": [path("/", "Prefix", "nginx")]}},
            ]}),
        );
        let r = IngressRoutes::build(&[b, c, a], &classes());
        assert_eq!(r.len(), 2);
        assert_eq!(svc_of(&r, "shop.example.com", "/").as_deref(), Some("web"));
        assert_eq!(
            svc_of(&r, "SHOP.example.com:80", "/api/x").as_deref(),
            Some("api")
        );
        assert_eq!(
            svc_of(&r, "shop.example.com", "/api").as_deref(),
            Some("api")
        );
        assert_eq!(
            svc_of(&r, "shop.example.com", "/apix").as_deref(),
            Some("web")
        );
        assert_eq!(
            svc_of(&r, "shop.example.com", "/api/v1").as_deref(),
            Some("v1exact")
        );
        assert_eq!(
            svc_of(&r, "shop.example.com", "/api/v1/").as_deref(),
            Some("api")
        );
        assert_eq!(
            svc_of(&r, "blog.example.com", "/x").as_deref(),
            Some("wild")
        );
        // A wildcard covers one label only.
        assert_eq!(
            svc_of(&r, "a.b.example.com", "/").as_deref(),
            Some("catchall")
        );
        assert_eq!(svc_of(&r, "example.com", "/").as_deref(), Some("catchall"));
        assert_eq!(svc_of(&r, "10.0.0.1", "/").as_deref(), Some("catchall"));
    }

    #[test]
    fn the_default_backend_answers_what_no_rule_matches() {
        let a = ingress(
            "default",
            "a",
            "2026-01-01T00:00:00Z",
            json!({"ingressClassName": "wkube",
                   "defaultBackend": {"service": {"name": "fallback", "port": {"name": "http"}}},
                   "rules": [{"host": "x.test", "http": {"paths": [path("/only", "Exact", "only")]}}]}),
        );
        let r = IngressRoutes::build(&[a], &classes());
        assert_eq!(svc_of(&r, "x.test", "/only").as_deref(), Some("only"));
        let b = r.backend("x.test", "/other").unwrap();
        assert_eq!(b.service, "fallback");
        assert_eq!(b.port, PortRef::Name("http".into()));
        assert_eq!(svc_of(&r, "y.test", "/").as_deref(), Some("fallback"));
        let none = IngressRoutes::build(&[], &classes());
        assert!(none.backend("x.test", "/").is_none());
    }
}
