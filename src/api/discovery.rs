//! Discovery: `/api`, `/apis`, the per-group-version resource lists, and
//! the aggregated form (`apidiscovery.k8s.io/v2`) that kubectl prefers.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::request::json_response;
use crate::resources::{self, Kind, Subresource};

/// The exact content type kubectl requires to accept an aggregated reply.
pub const AGGREGATED_CT: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Kinds that are not stored: the reviews (answered on create) and the
/// metrics (read-only views of what the node agents measure), listed in
/// discovery too.
pub struct VirtualKind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub verbs: &'static [&'static str],
    /// Subresources, each answered with `kind` and `verbs`.
    pub subresources: &'static [&'static str],
    /// Whether the resource itself is listed, not only its subresources
    /// (custom metrics list only `pods/METRIC`).
    pub listed: bool,
}

const REVIEW: &[&str] = &["create"];
const READ_ONLY: &[&str] = &["get", "list"];
const CUSTOM_METRICS: &[&str] = &["requests_per_second", "requests_in_flight"];

const fn review(group: &'static str, kind: &'static str, plural: &'static str) -> VirtualKind {
    VirtualKind {
        group,
        version: "v1",
        kind,
        plural,
        singular: "",
        namespaced: false,
        verbs: REVIEW,
        subresources: &[],
        listed: true,
    }
}

pub const VIRTUAL: &[VirtualKind] = &[
    // The v1 view of the autoscalers stored as autoscaling/v2
    // (`api::hpav1`, through `api::views`); v2 stays the preferred version.
    VirtualKind {
        group: "autoscaling",
        version: "v1",
        kind: "HorizontalPodAutoscaler",
        plural: "horizontalpodautoscalers",
        singular: "",
        namespaced: true,
        verbs: FULL_VERBS,
        subresources: &["status"],
        listed: true,
    },
    // The events.k8s.io view of the core Events (`api::eventsv1`).
    VirtualKind {
        group: "events.k8s.io",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "",
        namespaced: true,
        verbs: FULL_VERBS,
        subresources: &[],
        listed: true,
    },
    review(
        "authorization.k8s.io",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
    ),
    review(
        "authorization.k8s.io",
        "SelfSubjectRulesReview",
        "selfsubjectrulesreviews",
    ),
    review(
        "authentication.k8s.io",
        "SelfSubjectReview",
        "selfsubjectreviews",
    ),
    // The reviews for others (`api::reviews`): whom a token is, what a
    // named user may do.
    review("authentication.k8s.io", "TokenReview", "tokenreviews"),
    review(
        "authorization.k8s.io",
        "SubjectAccessReview",
        "subjectaccessreviews",
    ),
    VirtualKind {
        namespaced: true,
        ..review(
            "authorization.k8s.io",
            "LocalSubjectAccessReview",
            "localsubjectaccessreviews",
        )
    },
    VirtualKind {
        group: "wkube.dev",
        version: "v1",
        kind: "ServiceActivation",
        plural: "serviceactivations",
        singular: "",
        namespaced: true,
        verbs: REVIEW,
        subresources: &[],
        listed: true,
    },
    VirtualKind {
        group: "metrics.k8s.io",
        version: "v1beta1",
        kind: "PodMetrics",
        plural: "pods",
        singular: "",
        namespaced: true,
        verbs: READ_ONLY,
        subresources: &[],
        listed: true,
    },
    VirtualKind {
        group: "metrics.k8s.io",
        version: "v1beta1",
        kind: "NodeMetrics",
        plural: "nodes",
        singular: "",
        namespaced: false,
        verbs: READ_ONLY,
        subresources: &[],
        listed: true,
    },
    VirtualKind {
        group: "custom.metrics.k8s.io",
        version: "v1beta2",
        kind: "MetricValueList",
        plural: "pods",
        singular: "",
        namespaced: true,
        verbs: &["get"],
        subresources: CUSTOM_METRICS,
        listed: false,
    },
    VirtualKind {
        group: "custom.metrics.k8s.io",
        version: "v1beta2",
        kind: "MetricValueList",
        plural: "services",
        singular: "",
        namespaced: true,
        verbs: &["get"],
        subresources: CUSTOM_METRICS,
        listed: false,
    },
];

impl VirtualKind {
    /// The verbs of one of its subresources.
    fn sub_verbs(&self, sub: &str) -> &'static [&'static str] {
        if sub == "status" {
            &["get", "patch", "update"]
        } else {
            self.verbs
        }
    }

    /// Reviews are created and answered; the rest are read-only views
    /// with no OpenAPI schema of their own.
    pub fn is_review(&self) -> bool {
        self.verbs == REVIEW && self.kind.ends_with("Review")
    }

    /// The singular name discovery shows (the kind, lower-cased, unless
    /// set).
    fn singular(&self) -> String {
        if self.singular.is_empty() {
            self.kind.to_ascii_lowercase()
        } else {
            self.singular.to_string()
        }
    }
}

const FULL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn sub_info(
    kind: &Kind,
    sub: Subresource,
) -> (&'static str, &'static str, &'static str, Vec<&'static str>) {
    // (group, version, kind of the response, verbs)
    match sub {
        Subresource::Status => ("", "", "", vec!["get", "patch", "update"]),
        Subresource::Scale => ("autoscaling", "v1", "Scale", vec!["get", "patch", "update"]),
        Subresource::Binding => ("", "v1", "Binding", vec!["create"]),
        Subresource::Log => ("", "v1", "Pod", vec!["get"]),
        Subresource::Proxy => (
            "",
            "v1",
            if kind.kind == "Pod" {
                "PodProxyOptions"
            } else if kind.kind == "Node" {
                "NodeProxyOptions"
            } else {
                "ServiceProxyOptions"
            },
            vec!["create", "delete", "get", "patch", "update"],
        ),
        Subresource::Token => (
            "authentication.k8s.io",
            "v1",
            "TokenRequest",
            vec!["create"],
        ),
        Subresource::Exec => ("", "v1", "PodExecOptions", vec!["create", "get"]),
        Subresource::Attach => ("", "v1", "PodAttachOptions", vec!["create", "get"]),
        Subresource::PortForward => ("", "v1", "PodPortForwardOptions", vec!["create", "get"]),
        // kubectl drain looks for exactly this entry (group and version
        // set) before it evicts rather than deletes.
        Subresource::Eviction => ("policy", "v1", "Eviction", vec!["create"]),
    }
}

/// The group-versions with the kinds in them, including virtual kinds.
pub fn all_group_versions() -> Vec<(&'static str, &'static str)> {
    let mut gvs = resources::group_versions();
    for v in VIRTUAL {
        if !gvs.contains(&(v.group, v.version)) {
            gvs.push((v.group, v.version));
        }
    }
    gvs
}

/// `GET /api`.
pub fn api_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    })
}

/// `GET /apis`.
pub fn api_group_list() -> Value {
    let mut groups: Vec<Value> = Vec::new();
    for (g, v) in all_group_versions() {
        if g.is_empty() {
            continue;
        }
        let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
        if let Some(existing) = groups.iter_mut().find(|x| x["name"] == g) {
            if let Some(vs) = existing["versions"].as_array_mut() {
                vs.push(gv);
            }
        } else {
            groups.push(json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv}));
        }
    }
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/GROUP`.
pub fn api_group(group: &str) -> Option<Value> {
    let list = api_group_list();
    let g = list["groups"]
        .as_array()?
        .iter()
        .find(|x| x["name"] == group)?
        .clone();
    let mut g = g;
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Some(g)
}

/// `GET /api/v1` or `/apis/GROUP/VERSION`.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    if !all_group_versions().contains(&(group, version)) {
        return None;
    }
    let mut out = Vec::new();
    for k in resources::all_kinds()
        .into_iter()
        .filter(|k| k.group == group && k.version == version)
    {
        out.push(json!({
            "name": k.plural,
            "singularName": k.singular,
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": FULL_VERBS,
            "shortNames": k.short_names,
            "categories": k.categories,
        }));
        for sub in k.subresources {
            let (sg, sv, skind, verbs) = sub_info(k, *sub);
            let mut r = json!({
                "name": format!("{}/{}", k.plural, sub.name()),
                "singularName": "",
                "namespaced": k.namespaced,
                "kind": if skind.is_empty() { k.kind } else { skind },
                "verbs": verbs,
            });
            if !sg.is_empty() {
                r["group"] = json!(sg);
                r["version"] = json!(sv);
            }
            out.push(r);
        }
    }
    for v in VIRTUAL
        .iter()
        .filter(|v| v.group == group && v.version == version)
    {
        if v.listed {
            out.push(json!({
                "name": v.plural, "singularName": v.singular(), "namespaced": v.namespaced,
                "kind": v.kind, "verbs": v.verbs,
            }));
        }
        for sub in v.subresources {
            out.push(json!({
                "name": format!("{}/{sub}", v.plural), "singularName": "",
                "namespaced": v.namespaced, "kind": v.kind, "verbs": v.sub_verbs(sub),
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": out}),
    )
}

fn aggregated_resources(group: &str, version: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for k in resources::all_kinds()
        .into_iter()
        .filter(|k| k.group == group && k.version == version)
    {
        let subs: Vec<Value> = k
            .subresources
            .iter()
            .map(|sub| {
                let (sg, sv, skind, verbs) = sub_info(k, *sub);
                json!({
                    "subresource": sub.name(),
                    "responseKind": {
                        "group": if skind.is_empty() { k.group } else { sg },
                        "version": if skind.is_empty() { k.version } else { sv },
                        "kind": if skind.is_empty() { k.kind } else { skind },
                    },
                    "verbs": verbs,
                })
            })
            .collect();
        out.push(json!({
            "resource": k.plural,
            "responseKind": {"group": k.group, "version": k.version, "kind": k.kind},
            "scope": if k.namespaced { "Namespaced" } else { "Cluster" },
            "singularResource": k.singular,
            "verbs": FULL_VERBS,
            "shortNames": k.short_names,
            "categories": k.categories,
            "subresources": subs,
        }));
    }
    for v in VIRTUAL
        .iter()
        .filter(|v| v.group == group && v.version == version)
    {
        let kind = json!({"group": v.group, "version": v.version, "kind": v.kind});
        let subs: Vec<Value> = v
            .subresources
            .iter()
            .map(|sub| json!({"subresource": sub, "responseKind": kind, "verbs": v.sub_verbs(sub)}))
            .collect();
        out.push(json!({
            "resource": v.plural,
            "responseKind": kind,
            "scope": if v.namespaced { "Namespaced" } else { "Cluster" },
            "singularResource": v.singular(),
            "verbs": v.verbs,
            "subresources": subs,
        }));
    }
    out
}

/// The aggregated discovery document for `/api` (core only) or `/apis`.
pub fn aggregated(core: bool) -> Value {
    let mut items: Vec<Value> = Vec::new();
    for (g, v) in all_group_versions() {
        if core != g.is_empty() {
            continue;
        }
        let version =
            json!({"version": v, "resources": aggregated_resources(g, v), "freshness": "Current"});
        if let Some(existing) = items.iter_mut().find(|x| x["metadata"]["name"] == g) {
            if let Some(vs) = existing["versions"].as_array_mut() {
                vs.push(version);
            }
        } else {
            items.push(json!({"metadata": {"name": g}, "versions": [version]}));
        }
    }
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

/// Does the client ask for aggregated discovery?
pub fn wants_aggregated(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=APIGroupDiscoveryList") && a.contains("v=v2"))
}

/// Serve `/api` or `/apis`, aggregated when asked.
pub fn root(headers: &HeaderMap, core: bool) -> Response {
    if wants_aggregated(headers) {
        let body = serde_json::to_vec(&aggregated(core)).unwrap_or_default();
        let mut r = (StatusCode::OK, body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(AGGREGATED_CT),
        );
        r.headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Accept"));
        return r;
    }
    json_response(
        StatusCode::OK,
        &if core {
            api_versions()
        } else {
            api_group_list()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_resource_list_has_pods_with_short_names_and_subresources() {
        let l = resource_list("", "v1").unwrap();
        let res = l["resources"].as_array().unwrap();
        let pods = res.iter().find(|r| r["name"] == "pods").unwrap();
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert!(res.iter().any(|r| r["name"] == "pods/log"));
    }

    #[test]
    fn node_served_pod_subresources_are_listed_as_in_kubernetes() {
        let l = resource_list("", "v1").unwrap();
        let res = l["resources"].as_array().unwrap();
        let find = |name: &str| {
            res.iter()
                .find(|r| r["name"] == name)
                .unwrap_or_else(|| panic!("{name} missing"))
        };
        assert_eq!(find("pods/log")["kind"], "Pod");
        assert_eq!(find("pods/log")["verbs"], json!(["get"]));
        assert_eq!(find("pods/proxy")["kind"], "PodProxyOptions");
        assert_eq!(find("nodes/proxy")["kind"], "NodeProxyOptions");
        for (name, kind) in [
            ("pods/exec", "PodExecOptions"),
            ("pods/attach", "PodAttachOptions"),
            ("pods/portforward", "PodPortForwardOptions"),
        ] {
            assert_eq!(find(name)["kind"], kind);
            assert_eq!(find(name)["verbs"], json!(["create", "get"]));
        }
        let agg = aggregated(true);
        let pods = agg["items"][0]["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "pods")
            .unwrap();
        let subs: Vec<&str> = pods["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["subresource"].as_str().unwrap())
            .collect();
        for want in ["log", "proxy", "exec", "attach", "portforward"] {
            assert!(subs.contains(&want), "{want} missing from {subs:?}");
        }
    }

    #[test]
    fn scale_is_an_autoscaling_subresource() {
        let agg = aggregated(false);
        let apps = agg["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["metadata"]["name"] == "apps")
            .unwrap();
        let deploy = apps["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "deployments")
            .unwrap();
        let scale = deploy["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["subresource"] == "scale")
            .unwrap();
        assert_eq!(scale["responseKind"]["group"], "autoscaling");
        assert_eq!(scale["responseKind"]["kind"], "Scale");
    }

    #[test]
    fn groups_list_every_served_group() {
        let g = api_group_list();
        let names: Vec<&str> = g["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["name"].as_str().unwrap())
            .collect();
        for want in [
            "apps",
            "batch",
            "rbac.authorization.k8s.io",
            "coordination.k8s.io",
            "discovery.k8s.io",
            "authorization.k8s.io",
            "wkube.dev",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
    }
}
