//! The self-review kinds: SelfSubjectAccessReview (`kubectl auth can-i`),
//! SelfSubjectRulesReview (`can-i --list`) and SelfSubjectReview
//! (`kubectl auth whoami`). They are created, answered, and never stored.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};

use super::authn::UserInfo;
use super::rbac::Attributes;
use super::request::json_response;
use super::status::ApiError;
use super::{ApiState, body};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Review {
    Access,
    Rules,
    Subject,
}

/// Recognise a review collection path.
pub fn parse(path: &str) -> Option<Review> {
    match path.trim_end_matches('/') {
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" => Some(Review::Access),
        "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews" => Some(Review::Rules),
        "/apis/authentication.k8s.io/v1/selfsubjectreviews" => Some(Review::Subject),
        _ => None,
    }
}

fn s(v: &Value, p: &str) -> String {
    v.pointer(p)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// Answer a review for the caller.
pub async fn handle(
    state: &ApiState,
    user: &UserInfo,
    review: Review,
    headers: &HeaderMap,
    raw: &Bytes,
) -> Result<Response, ApiError> {
    let (group, plural, kind, api_version) = match review {
        Review::Access => (
            "authorization.k8s.io",
            "selfsubjectaccessreviews",
            "SelfSubjectAccessReview",
            "authorization.k8s.io/v1",
        ),
        Review::Rules => (
            "authorization.k8s.io",
            "selfsubjectrulesreviews",
            "SelfSubjectRulesReview",
            "authorization.k8s.io/v1",
        ),
        Review::Subject => (
            "authentication.k8s.io",
            "selfsubjectreviews",
            "SelfSubjectReview",
            "authentication.k8s.io/v1",
        ),
    };
    state.check(
        user,
        &Attributes {
            verb: "create".into(),
            group: group.into(),
            resource: plural.into(),
            ..Default::default()
        },
    )?;
    let req = body::decode(headers, raw, None)?;
    let mut out =
        json!({"kind": kind, "apiVersion": api_version, "metadata": {"creationTimestamp": null}});
    out["spec"] = req.get("spec").cloned().unwrap_or_else(|| json!({}));
    match review {
        Review::Access => {
            let a = if let Some(r) = req.pointer("/spec/resourceAttributes") {
                Attributes {
                    verb: s(r, "/verb"),
                    group: s(r, "/group"),
                    resource: s(r, "/resource"),
                    subresource: s(r, "/subresource"),
                    namespace: s(r, "/namespace"),
                    name: s(r, "/name"),
                    path: None,
                }
            } else if let Some(n) = req.pointer("/spec/nonResourceAttributes") {
                Attributes {
                    verb: s(n, "/verb"),
                    path: Some(s(n, "/path")),
                    ..Default::default()
                }
            } else {
                return Err(ApiError::Invalid {
                    group: group.into(),
                    kind: kind.into(),
                    name: String::new(),
                    causes: vec![crate::resources::FieldError::required(
                        "spec.resourceAttributes",
                    )],
                });
            };
            let allowed = state.rbac.allows(user, &a);
            out["status"] = json!({"allowed": allowed});
            if !allowed {
                out["status"]["reason"] = json!("");
            }
        }
        Review::Rules => {
            let ns = s(&req, "/spec/namespace");
            let (resource_rules, non_resource_rules) = if user
                .groups
                .iter()
                .any(|g| g == "system:masters")
            {
                (
                    vec![json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})],
                    vec![json!({"verbs": ["*"], "nonResourceURLs": ["*"]})],
                )
            } else {
                let rules = state.rbac.rules_for(user, &ns);
                let mut rr = Vec::new();
                let mut nr = Vec::new();
                for r in rules {
                    if r.get("nonResourceURLs").is_some() {
                        nr.push(json!({"verbs": r.get("verbs"), "nonResourceURLs": r.get("nonResourceURLs")}));
                    } else {
                        let mut x = json!({"verbs": r.get("verbs"), "apiGroups": r.get("apiGroups"), "resources": r.get("resources")});
                        if let Some(n) = r.get("resourceNames") {
                            x["resourceNames"] = n.clone();
                        }
                        rr.push(x);
                    }
                }
                (rr, nr)
            };
            out["status"] = json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false});
        }
        Review::Subject => {
            out["status"] = json!({"userInfo": {"username": user.username, "uid": user.uid, "groups": user.groups}});
        }
    }
    Ok(json_response(StatusCode::CREATED, &out))
}
