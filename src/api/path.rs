//! Resource URL parsing: `/api/v1/namespaces/NS/pods/NAME/log` and friends
//! become a [`Target`] and a verb.

use axum::http::Method;

use super::status::ApiError;
use crate::resources::{self, Kind};

/// What a resource request addresses.
#[derive(Clone, Debug)]
pub struct Target {
    pub kind: &'static Kind,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// Path after a `proxy` subresource, with its leading `/`.
    pub rest: String,
}

/// RBAC verbs, as Kubernetes names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
    /// A method with no RBAC verb (OPTIONS and the like on a proxy): as in
    /// Kubernetes, only a rule with the verb `*` allows it.
    Unnamed,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
            Verb::Unnamed => "",
        }
    }
}

/// Parse a path below `/api` or `/apis`. Returns `None` for paths that are
/// not resource paths (discovery and the like).
pub fn parse(path: &str) -> Result<Option<Target>, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    // A proxied path keeps its trailing slash (`dir/` is not `dir`).
    let trailing_slash = path.len() > 1 && path.ends_with('/');
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return Ok(None),
    };
    let lookup =
        |plural: &str| resources::by_resource(group, version, plural).ok_or(ApiError::NoRoute);
    let t = match rest {
        // /namespaces/NS/RESOURCE[/NAME[/SUB[/...]]]
        ["namespaces", ns, plural, tail @ ..]
            if resources::by_resource(group, version, plural).is_some() =>
        {
            let kind = lookup(plural)?;
            if !kind.namespaced {
                return Err(ApiError::NoRoute);
            }
            let (name, sub, rest) = split_tail(tail, trailing_slash);
            Target {
                kind,
                namespace: Some(ns.to_string()),
                name,
                subresource: sub,
                rest,
            }
        }
        [plural, tail @ ..] => {
            let kind = lookup(plural)?;
            let (name, sub, rest) = split_tail(tail, trailing_slash);
            if kind.namespaced && name.is_some() {
                // A namespaced kind is only reachable by name inside its
                // namespace.
                return Err(ApiError::NoRoute);
            }
            Target {
                kind,
                namespace: None,
                name,
                subresource: sub,
                rest,
            }
        }
        [] => return Ok(None),
    };
    if let Some(n) = &t.name
        && (n.is_empty() || n == "." || n == "..")
    {
        return Err(ApiError::NoRoute);
    }
    Ok(Some(t))
}

fn split_tail(tail: &[&str], trailing_slash: bool) -> (Option<String>, Option<String>, String) {
    match tail {
        [] => (None, None, String::new()),
        [name] => (Some(name.to_string()), None, String::new()),
        [name, sub, more @ ..] => {
            let mut rest = if more.is_empty() {
                String::new()
            } else {
                format!("/{}", more.join("/"))
            };
            if trailing_slash {
                rest.push('/');
            }
            (Some(name.to_string()), Some(sub.to_string()), rest)
        }
    }
}

/// Subresources that are connections rather than objects: every method
/// reaches them, with the verb Kubernetes derives from it.
fn is_connection(sub: Option<&str>) -> bool {
    matches!(sub, Some("proxy" | "exec" | "attach" | "portforward"))
}

/// The verb of a request on a target.
pub fn verb(method: &Method, target: &Target, watch: bool) -> Result<Verb, ApiError> {
    if target.name.is_some() && is_connection(target.subresource.as_deref()) {
        return Ok(match *method {
            Method::GET | Method::HEAD => Verb::Get,
            Method::POST => Verb::Create,
            Method::PUT => Verb::Update,
            Method::PATCH => Verb::Patch,
            Method::DELETE => Verb::Delete,
            _ => Verb::Unnamed,
        });
    }
    Ok(match (method, target.name.is_some()) {
        (&Method::GET, false) if watch => Verb::Watch,
        (&Method::GET, false) => Verb::List,
        (&Method::GET, true) if watch => Verb::Watch,
        (&Method::GET, true) => Verb::Get,
        (&Method::POST, false) => Verb::Create,
        (&Method::POST, true) if target.subresource.is_some() => Verb::Create,
        (&Method::PUT, true) => Verb::Update,
        (&Method::PATCH, true) => Verb::Patch,
        (&Method::DELETE, true) => Verb::Delete,
        (&Method::DELETE, false) => Verb::DeleteCollection,
        _ => return Err(ApiError::MethodNotAllowed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_paths_parse() {
        let t = parse("/api/v1/namespaces/default/pods/web/log")
            .unwrap()
            .unwrap();
        assert_eq!(t.kind.plural, "pods");
        assert_eq!(t.namespace.as_deref(), Some("default"));
        assert_eq!(t.name.as_deref(), Some("web"));
        assert_eq!(t.subresource.as_deref(), Some("log"));
    }

    #[test]
    fn a_namespace_itself_is_a_cluster_scoped_object() {
        let t = parse("/api/v1/namespaces/kube-system").unwrap().unwrap();
        assert_eq!(t.kind.plural, "namespaces");
        assert_eq!(t.name.as_deref(), Some("kube-system"));
        let t = parse("/api/v1/namespaces/kube-system/status")
            .unwrap()
            .unwrap();
        assert_eq!(t.subresource.as_deref(), Some("status"));
    }

    #[test]
    fn grouped_collections_parse_across_namespaces() {
        let t = parse("/apis/apps/v1/deployments").unwrap().unwrap();
        assert_eq!(t.kind.kind, "Deployment");
        assert!(t.namespace.is_none() && t.name.is_none());
    }

    #[test]
    fn proxy_paths_keep_their_tail() {
        let t = parse("/api/v1/namespaces/d/services/web:80/proxy/a/b")
            .unwrap()
            .unwrap();
        assert_eq!(t.rest, "/a/b");
    }

    #[test]
    fn pod_proxy_paths_keep_the_port_and_the_trailing_slash() {
        let t = parse("/api/v1/namespaces/default/pods/p:8080/proxy/x/y/")
            .unwrap()
            .unwrap();
        assert_eq!(t.name.as_deref(), Some("p:8080"));
        assert_eq!(t.subresource.as_deref(), Some("proxy"));
        assert_eq!(t.rest, "/x/y/");
        let t = parse("/api/v1/namespaces/default/pods/p/proxy/")
            .unwrap()
            .unwrap();
        assert_eq!(t.rest, "/");
        let t = parse("/api/v1/namespaces/default/pods/p/proxy")
            .unwrap()
            .unwrap();
        assert_eq!(t.rest, "");
        let t = parse("/api/v1/nodes/n1/proxy/healthz").unwrap().unwrap();
        assert_eq!(t.kind.plural, "nodes");
        assert_eq!(t.rest, "/healthz");
    }

    #[test]
    fn every_method_reaches_a_proxy_with_kubernetes_verbs() {
        let t = parse("/api/v1/namespaces/d/pods/p/proxy/x")
            .unwrap()
            .unwrap();
        for (m, v) in [
            (Method::GET, Verb::Get),
            (Method::HEAD, Verb::Get),
            (Method::POST, Verb::Create),
            (Method::PUT, Verb::Update),
            (Method::PATCH, Verb::Patch),
            (Method::DELETE, Verb::Delete),
            (Method::OPTIONS, Verb::Unnamed),
        ] {
            assert_eq!(verb(&m, &t, false).unwrap(), v, "{m}");
        }
        let exec = parse("/api/v1/namespaces/d/pods/p/exec").unwrap().unwrap();
        assert_eq!(verb(&Method::GET, &exec, false).unwrap(), Verb::Get);
        assert_eq!(verb(&Method::POST, &exec, false).unwrap(), Verb::Create);
    }

    #[test]
    fn unknown_resources_are_not_found() {
        assert!(matches!(parse("/api/v1/bogus"), Err(ApiError::NoRoute)));
        assert!(parse("/apis/apps/v1").unwrap().is_none());
    }
}
