//! The review kinds: created, answered, and never stored.
//!
//! * About the caller: SelfSubjectAccessReview (`kubectl auth can-i`),
//!   SelfSubjectRulesReview (`can-i --list`) and SelfSubjectReview
//!   (`kubectl auth whoami`). Every authenticated user may create them.
//! * About someone else, for components that check their own callers
//!   (webhooks, extension servers): TokenReview (who is this bearer token,
//!   by the API server's own authenticator), SubjectAccessReview (may this
//!   user do that, by the cluster's RBAC) and LocalSubjectAccessReview (the
//!   same, within one namespace). They reveal what Kubernetes reveals and
//!   no more, so RBAC guards them: `create` on the review resource, which
//!   `system:auth-delegator` (and, for the local review, `admin`) grants.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};

use super::authn::{self, UserInfo};
use super::rbac::Attributes;
use super::request::json_response;
use super::status::ApiError;
use super::{ApiState, body};
use crate::resources::FieldError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Review {
    Access,
    Rules,
    Subject,
    Token,
    SubjectAccess,
    /// A SubjectAccessReview within the namespace of its URL.
    LocalSubjectAccess(String),
}

impl Review {
    /// Group, resource and kind.
    fn names(&self) -> (&'static str, &'static str, &'static str) {
        match self {
            Review::Access => (
                "authorization.k8s.io",
                "selfsubjectaccessreviews",
                "SelfSubjectAccessReview",
            ),
            Review::Rules => (
                "authorization.k8s.io",
                "selfsubjectrulesreviews",
                "SelfSubjectRulesReview",
            ),
            Review::Subject => (
                "authentication.k8s.io",
                "selfsubjectreviews",
                "SelfSubjectReview",
            ),
            Review::Token => ("authentication.k8s.io", "tokenreviews", "TokenReview"),
            Review::SubjectAccess => (
                "authorization.k8s.io",
                "subjectaccessreviews",
                "SubjectAccessReview",
            ),
            Review::LocalSubjectAccess(_) => (
                "authorization.k8s.io",
                "localsubjectaccessreviews",
                "LocalSubjectAccessReview",
            ),
        }
    }
}

/// Recognise a review collection path.
pub fn parse(path: &str) -> Option<Review> {
    let path = path.trim_end_matches('/');
    match path {
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" => Some(Review::Access),
        "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews" => Some(Review::Rules),
        "/apis/authentication.k8s.io/v1/selfsubjectreviews" => Some(Review::Subject),
        "/apis/authentication.k8s.io/v1/tokenreviews" => Some(Review::Token),
        "/apis/authorization.k8s.io/v1/subjectaccessreviews" => Some(Review::SubjectAccess),
        _ => {
            let (ns, rest) = path
                .strip_prefix("/apis/authorization.k8s.io/v1/namespaces/")?
                .split_once('/')?;
            (rest == "localsubjectaccessreviews"
                && crate::resources::validation::check_name(crate::resources::NameRule::Label, ns)
                    .is_none())
            .then(|| Review::LocalSubjectAccess(ns.to_string()))
        }
    }
}

fn s(v: &Value, p: &str) -> String {
    v.pointer(p)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// The request a review's `spec` asks about, or `None` when it names
/// neither resource nor non-resource attributes.
fn attributes_of(spec: &Value) -> Option<Attributes> {
    if let Some(r) = spec.get("resourceAttributes").filter(|r| r.is_object()) {
        Some(Attributes {
            verb: s(r, "/verb"),
            group: s(r, "/group"),
            resource: s(r, "/resource"),
            subresource: s(r, "/subresource"),
            namespace: s(r, "/namespace"),
            name: s(r, "/name"),
            path: None,
        })
    } else {
        spec.get("nonResourceAttributes")
            .filter(|n| n.is_object())
            .map(|n| Attributes {
                verb: s(n, "/verb"),
                path: Some(s(n, "/path")),
                ..Default::default()
            })
    }
}

/// Answer a review.
pub async fn handle(
    state: &ApiState,
    user: &UserInfo,
    review: Review,
    headers: &HeaderMap,
    raw: &Bytes,
) -> Result<Response, ApiError> {
    let (group, plural, kind) = review.names();
    let namespace = match &review {
        Review::LocalSubjectAccess(ns) => ns.clone(),
        _ => String::new(),
    };
    state.check(
        user,
        &Attributes {
            verb: "create".into(),
            group: group.into(),
            resource: plural.into(),
            namespace: namespace.clone(),
            ..Default::default()
        },
    )?;
    let req = body::decode(headers, raw, None)?;
    let mut out = json!({"kind": kind, "apiVersion": format!("{group}/v1"),
        "metadata": {"creationTimestamp": null}});
    if !namespace.is_empty() {
        out["metadata"]["namespace"] = json!(namespace);
    }
    let spec = req
        .get("spec")
        .filter(|s| s.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}));
    let invalid = |cause: FieldError| ApiError::Invalid {
        group: group.into(),
        kind: kind.into(),
        name: String::new(),
        causes: vec![cause],
    };
    let status = match &review {
        Review::Access => {
            let a = attributes_of(&spec)
                .ok_or_else(|| invalid(FieldError::required("spec.resourceAttributes")))?;
            let allowed = state.rbac.allows(user, &a);
            if allowed {
                json!({"allowed": true})
            } else {
                json!({"allowed": false, "reason": ""})
            }
        }
        Review::Rules => rules_status(state, user, &s(&spec, "/namespace")),
        Review::Subject => {
            json!({"userInfo": {"username": user.username, "uid": user.uid, "groups": user.groups}})
        }
        Review::Token => token_status(state, &spec).await?,
        Review::SubjectAccess | Review::LocalSubjectAccess(_) => {
            let mut spec = spec.clone();
            let a = subject_attributes(&mut spec, &namespace).map_err(invalid)?;
            let subject = subject_of(&spec).map_err(invalid)?;
            out["spec"] = spec;
            match state.rbac.allowed_by(&subject, &a) {
                Some(reason) if reason.is_empty() => json!({"allowed": true}),
                Some(reason) => json!({"allowed": true, "reason": reason}),
                None => json!({"allowed": false}),
            }
        }
    };
    out["status"] = status;
    if out.get("spec").is_none() {
        out["spec"] = spec;
    }
    Ok(json_response(StatusCode::CREATED, &out))
}

/// The rules the caller holds in a namespace (`kubectl auth can-i --list`).
fn rules_status(state: &ApiState, user: &UserInfo, ns: &str) -> Value {
    let (resource_rules, non_resource_rules) = if user.groups.iter().any(|g| g == "system:masters")
    {
        (
            vec![json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})],
            vec![json!({"verbs": ["*"], "nonResourceURLs": ["*"]})],
        )
    } else {
        let rules = state.rbac.rules_for(user, ns);
        let mut rr = Vec::new();
        let mut nr = Vec::new();
        for r in rules {
            if r.get("nonResourceURLs").is_some() {
                nr.push(
                    json!({"verbs": r.get("verbs"), "nonResourceURLs": r.get("nonResourceURLs")}),
                );
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
    json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false})
}

/// Most audiences a TokenReview may ask about: each one is a signature
/// check.
const MAX_AUDIENCES: usize = 16;

/// Whom a token proves, by the authenticator every request goes through,
/// for the audiences asked (the API server's own when none are).
async fn token_status(state: &ApiState, spec: &Value) -> Result<Value, ApiError> {
    let token = spec.get("token").and_then(Value::as_str).unwrap_or("");
    if token.is_empty() {
        return Err(ApiError::bad_request(
            "token is required for TokenReview in authentication",
        ));
    }
    let asked: Vec<&str> = match spec.get("audiences") {
        None | Some(Value::Null) => vec![authn::API_AUDIENCE],
        Some(Value::Array(a)) if a.len() <= MAX_AUDIENCES => {
            let a: Option<Vec<&str>> = a.iter().map(Value::as_str).collect();
            let a =
                a.ok_or_else(|| ApiError::bad_request("spec.audiences must be a list of strings"))?;
            if a.is_empty() {
                vec![authn::API_AUDIENCE]
            } else {
                a
            }
        }
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "spec.audiences must be a list of at most {MAX_AUDIENCES} strings"
            )));
        }
    };
    let mut claims = None;
    let mut audiences = Vec::new();
    for aud in asked {
        if let Ok(c) = super::authenticate_token(state, token, aud).await {
            claims.get_or_insert(c);
            audiences.push(aud);
        }
    }
    // Why a token is refused is the caller's business only in outline, as
    // in Kubernetes: no key, claim or account is named.
    let Some(claims) = claims else {
        return Ok(json!({"user": {}, "error": "invalid bearer token"}));
    };
    let u = authn::user_from_claims(&claims);
    let mut user = json!({"username": u.username, "uid": u.uid, "groups": u.groups});
    let mut extra = serde_json::Map::new();
    if let Some(pod) = claims.kubernetes.as_ref().and_then(|k| k.pod.as_ref()) {
        extra.insert(
            "authentication.kubernetes.io/pod-name".into(),
            json!([pod.name]),
        );
        extra.insert(
            "authentication.kubernetes.io/pod-uid".into(),
            json!([pod.uid]),
        );
    }
    if !claims.jti.is_empty() {
        extra.insert(
            "authentication.kubernetes.io/credential-id".into(),
            json!([format!("JTI={}", claims.jti)]),
        );
    }
    if !extra.is_empty() {
        user["extra"] = Value::Object(extra);
    }
    Ok(json!({"authenticated": true, "user": user, "audiences": audiences}))
}

/// The request a SubjectAccessReview asks about, checked as Kubernetes
/// checks it; a local review's namespace is its URL's.
fn subject_attributes(spec: &mut Value, namespace: &str) -> Result<Attributes, FieldError> {
    let has = |k: &str| spec.get(k).is_some_and(|v| !v.is_null());
    let (res, non_res) = (has("resourceAttributes"), has("nonResourceAttributes"));
    if res == non_res {
        return Err(FieldError::invalid(
            "spec.resourceAttributes",
            "",
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        ));
    }
    if !namespace.is_empty() {
        if non_res {
            return Err(FieldError::invalid(
                "spec.nonResourceAttributes",
                spec["nonResourceAttributes"].to_string(),
                "disallowed on this kind of request",
            ));
        }
        let stated = s(spec, "/resourceAttributes/namespace");
        if stated.is_empty() {
            if let Some(r) = spec["resourceAttributes"].as_object_mut() {
                r.insert("namespace".into(), json!(namespace));
            }
        } else if stated != namespace {
            return Err(FieldError::invalid(
                "spec.resourceAttributes.namespace",
                stated,
                "must match metadata.namespace",
            ));
        }
    }
    attributes_of(spec).ok_or_else(|| FieldError::required("spec.resourceAttributes"))
}

/// The user a SubjectAccessReview asks about.
fn subject_of(spec: &Value) -> Result<UserInfo, FieldError> {
    let groups: Option<Vec<String>> = match spec.get("groups") {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(g)) => g.iter().map(|g| g.as_str().map(str::to_string)).collect(),
        Some(_) => None,
    };
    let groups = groups
        .ok_or_else(|| FieldError::invalid("spec.groups", "", "must be a list of strings"))?;
    let username = s(spec, "/user");
    if username.is_empty() && groups.is_empty() {
        return Err(FieldError::invalid(
            "spec.user",
            "",
            "at least one of user or group must be specified",
        ));
    }
    Ok(UserInfo {
        username,
        uid: s(spec, "/uid"),
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn review_paths_are_recognised_and_others_not() {
        assert_eq!(
            parse("/apis/authentication.k8s.io/v1/tokenreviews"),
            Some(Review::Token)
        );
        assert_eq!(
            parse("/apis/authorization.k8s.io/v1/namespaces/team/localsubjectaccessreviews"),
            Some(Review::LocalSubjectAccess("team".into()))
        );
        assert_eq!(
            parse("/apis/authorization.k8s.io/v1/namespaces/a/b/localsubjectaccessreviews"),
            None
        );
        assert_eq!(
            parse("/apis/authorization.k8s.io/v1/namespaces/Bad_NS/localsubjectaccessreviews"),
            None
        );
    }

    #[test]
    fn a_subject_access_review_needs_a_subject_and_one_kind_of_attributes() {
        let mut both = json!({"user": "a", "resourceAttributes": {"verb": "get"},
            "nonResourceAttributes": {"verb": "get", "path": "/x"}});
        assert!(subject_attributes(&mut both, "").is_err());
        let mut none = json!({"user": "a"});
        assert!(subject_attributes(&mut none, "").is_err());
        assert!(subject_of(&json!({"resourceAttributes": {}})).is_err());
        assert!(subject_of(&json!({"groups": [1]})).is_err());
        let u = subject_of(&json!({"groups": ["g"]})).unwrap();
        assert_eq!(u.groups, vec!["g".to_string()]);
    }

    #[test]
    fn a_local_review_takes_its_namespace_from_the_url() {
        let mut spec =
            json!({"user": "a", "resourceAttributes": {"verb": "get", "resource": "pods"}});
        let a = subject_attributes(&mut spec, "team").unwrap();
        assert_eq!(a.namespace, "team");
        assert_eq!(spec["resourceAttributes"]["namespace"], "team");
        let mut other = json!({"user": "a", "resourceAttributes": {"namespace": "x"}});
        let e = subject_attributes(&mut other, "team").unwrap_err();
        assert!(e.message().contains("must match metadata.namespace"));
        let mut non = json!({"user": "a", "nonResourceAttributes": {"path": "/x"}});
        assert!(subject_attributes(&mut non, "team").is_err());
    }
}
