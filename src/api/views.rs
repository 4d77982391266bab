//! Views: a kind served in a second group-version from the objects stored
//! once under the first, as Kubernetes serves one object in every version
//! of its group (and Events in two groups).
//!
//! A request to a view is answered by the stored kind's handlers: its path
//! is rewritten to the stored group-version, a body it sends is converted
//! to the stored shape first, and what comes back (object, list, table
//! rows, each line of a watch) is converted to the view. A patch is applied
//! to the view of the current object and written back as an update, so a
//! patch means what it says in the view's shape. Responses are JSON (views
//! are offered in no other format).
//!
//! RBAC sees the view's own group: a request to a view must be allowed
//! there (as Kubernetes checks it), and the stored kind's handlers check
//! the stored group as well, so a view never reads or writes more than
//! the caller may through the stored kind. The default roles grant both
//! alike.
//!
//! Each view lives in a file of its own with its two conversions
//! (`hpav1`, `eventsv1`) and is listed in [`VIEWS`].

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use super::ApiState;
use super::authn::UserInfo;
use super::rbac::Attributes;
use super::status::ApiError;

/// Largest body of a converted response read whole (a list of every
/// object of a big cluster is well within it).
const MAX_BODY: usize = 64 << 20;

/// One kind seen in a second group-version.
pub struct View {
    /// `/apis/GROUP/VERSION/` of the view.
    pub view_prefix: &'static str,
    /// `/api/v1/` or `/apis/GROUP/VERSION/` of the stored kind.
    pub stored_prefix: &'static str,
    pub plural: &'static str,
    /// The kind's name, the same in both.
    pub kind: &'static str,
    pub view_api_version: &'static str,
    pub stored_api_version: &'static str,
    pub stored_group: &'static str,
    pub stored_version: &'static str,
    /// The view of a stored object.
    pub to_view: fn(&Value) -> Value,
    /// The stored object of a view.
    pub to_stored: fn(&Value) -> Value,
    /// A field selector over the view's fields, over the stored ones.
    pub selector: fn(&str) -> String,
}

/// Every view served.
pub static VIEWS: &[&View] = &[&super::hpav1::VIEW, &super::eventsv1::VIEW];

/// The view `path` belongs to.
pub fn find(path: &str) -> Option<&'static View> {
    VIEWS.iter().copied().find(|v| v.matches(path))
}

impl View {
    /// Whether `path` is a path of this view's resource.
    pub fn matches(&self, path: &str) -> bool {
        let plural = self.plural;
        path.strip_prefix(self.view_prefix).is_some_and(|rest| {
            let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
            let resource_at = match segs.as_slice() {
                ["watch", rest @ ..] => rest,
                all => all,
            };
            match resource_at {
                [p, ..] if *p == plural => true,
                ["namespaces", _, p, ..] => *p == plural,
                _ => false,
            }
        })
    }

    fn view_group(&self) -> &'static str {
        self.view_api_version
            .rsplit_once('/')
            .map_or("", |(group, _)| group)
    }

    /// Converts whatever the stored kind's handler answered into the view.
    fn answer_to_view(&self, v: &mut Value) {
        let list_kind = format!("{}List", self.kind);
        match v["kind"].as_str() {
            Some(k) if k == self.kind => *v = (self.to_view)(v),
            Some(k) if k == list_kind => {
                v["apiVersion"] = json!(self.view_api_version);
                if let Some(items) = v["items"].as_array_mut() {
                    for i in items {
                        *i = (self.to_view)(i);
                    }
                }
            }
            Some("Table") => {
                if let Some(rows) = v["rows"].as_array_mut() {
                    for r in rows {
                        self.object_to_view(&mut r["object"]);
                    }
                }
            }
            _ => {}
        }
    }

    /// A full object becomes the view; a partial one (table rows' metadata
    /// only) just changes its apiVersion.
    fn object_to_view(&self, obj: &mut Value) {
        if obj["kind"] == self.kind {
            *obj = (self.to_view)(obj);
        } else if obj["apiVersion"] == self.stored_api_version {
            obj["apiVersion"] = json!(self.view_api_version);
        }
    }

    /// One line of a watch stream, converted.
    fn event_to_view(&self, line: &[u8]) -> Vec<u8> {
        match serde_json::from_slice::<Value>(line) {
            Ok(mut event) => {
                self.object_to_view(&mut event["object"]);
                serde_json::to_vec(&event).unwrap_or_else(|_| line.to_vec())
            }
            Err(_) => line.to_vec(),
        }
    }

    /// The query with its field selector over the stored fields.
    fn stored_query(&self, raw: Option<&str>) -> Result<Option<String>, ApiError> {
        let Some(raw) = raw else { return Ok(None) };
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
            .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
        let pairs: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| {
                if k == "fieldSelector" {
                    let v = (self.selector)(&v);
                    (k, v)
                } else {
                    (k, v)
                }
            })
            .collect();
        serde_urlencoded::to_string(pairs)
            .map(Some)
            .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))
    }
}

/// Serves a request to `view` through the stored kind's handlers.
#[allow(clippy::too_many_arguments)] // the view, then the REST request's parts
pub async fn handle(
    view: &'static View,
    state: Arc<ApiState>,
    user: UserInfo,
    method: Method,
    path: &str,
    raw_query: Option<&str>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match serve(view, state, user, method, path, raw_query, headers, body).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

#[allow(clippy::too_many_arguments)] // mirrors the REST request's parts
async fn serve(
    view: &'static View,
    state: Arc<ApiState>,
    user: UserInfo,
    method: Method,
    path: &str,
    raw_query: Option<&str>,
    mut headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let rest = &path[view.view_prefix.len()..];
    let stored_path = format!("{}{rest}", view.stored_prefix);
    let query = view.stored_query(raw_query)?;
    let raw_query = query.as_deref();
    let watching =
        rest.starts_with("watch/") || super::request::Query::parse(raw_query)?.flag("watch");
    authorize(view, &state, &user, &method, &stored_path, watching)?;
    // Views answer in JSON only.
    headers.insert(header::ACCEPT, accept_json(&headers));
    let resp = if method == Method::PATCH {
        patch(
            view,
            &state,
            &user,
            &stored_path,
            raw_query,
            &headers,
            &body,
        )
        .await?
    } else {
        let body = if matches!(method, Method::POST | Method::PUT) && !body.is_empty() {
            let v = super::body::decode(&headers, &body, None)?;
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Bytes::from(serde_json::to_vec(&(view.to_stored)(&v)).unwrap_or_default())
        } else {
            body
        };
        super::handlers::dispatch(state, user, method, &stored_path, raw_query, headers, body)
            .await?
    };
    Ok(convert_response(view, resp, watching).await)
}

/// RBAC in the view's group, for the verb the request means.
fn authorize(
    view: &View,
    state: &ApiState,
    user: &UserInfo,
    method: &Method,
    stored_path: &str,
    watching: bool,
) -> Result<(), ApiError> {
    let Some(target) = super::path::parse(stored_path)? else {
        return Err(ApiError::NoRoute);
    };
    let verb = super::path::verb(method, &target, watching)?;
    state.check(
        user,
        &Attributes {
            verb: verb.as_str().to_string(),
            group: view.view_group().to_string(),
            resource: view.plural.to_string(),
            subresource: target.subresource.clone().unwrap_or_default(),
            namespace: target.namespace.clone().unwrap_or_default(),
            name: target.name.clone().unwrap_or_default(),
            path: None,
        },
    )
}

/// Keeps a Table request a Table (JSON), anything else plain JSON.
fn accept_json(headers: &HeaderMap) -> HeaderValue {
    let wants_table = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"));
    HeaderValue::from_static(if wants_table {
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    } else {
        "application/json"
    })
}

async fn convert_response(view: &'static View, resp: Response, watching: bool) -> Response {
    let (mut parts, body) = resp.into_parts();
    if watching && parts.status == StatusCode::OK {
        // A watch: convert line by line as events come.
        let mut pending: Vec<u8> = Vec::new();
        let stream = body.into_data_stream().map(move |chunk| {
            let chunk = chunk?;
            pending.extend_from_slice(&chunk);
            let mut out = Vec::new();
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                out.extend(view.event_to_view(&line[..line.len() - 1]));
                out.push(b'\n');
            }
            Ok::<Bytes, axum::Error>(Bytes::from(out))
        });
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::from_stream(stream));
    }
    let bytes = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return ApiError::internal("response too large to convert").into_response(),
    };
    let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    view.answer_to_view(&mut v);
    let out = serde_json::to_vec(&v).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(out))
}

/// A patch of the view: applied to the view of the stored object, written
/// back as an update (with the read's resourceVersion, so a concurrent
/// write makes it a 409, not a lost update).
async fn patch(
    view: &View,
    state: &Arc<ApiState>,
    user: &UserInfo,
    stored_path: &str,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let mut get_headers = headers.clone();
    get_headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    let current = super::handlers::dispatch(
        state.clone(),
        user.clone(),
        Method::GET,
        stored_path,
        None,
        get_headers,
        Bytes::new(),
    )
    .await?;
    let status = current.status();
    let bytes = http_body_util::Limited::new(current.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|_| ApiError::internal("object too large"))?
        .to_bytes();
    if !status.is_success() {
        return Ok((status, bytes).into_response());
    }
    let stored: Value = serde_json::from_slice(&bytes).map_err(ApiError::internal)?;
    // The project's patch engine, with its bounds on work and depth and
    // its check that an object comes out.
    let ty = super::patch::PatchType::from_headers(headers)?;
    if ty == super::patch::PatchType::Apply {
        return Err(ApiError::UnsupportedMediaType {
            message: format!(
                "server-side apply is served for {} only",
                view.stored_api_version
            ),
        });
    }
    let patch = super::body::decode_json(body)?;
    let kind = crate::resources::by_resource(view.stored_group, view.stored_version, view.plural)
        .ok_or(ApiError::NoRoute)?;
    let mut patched = super::patch::patched_object(ty, &(view.to_view)(&stored), &patch, kind)?;
    patched["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"].clone();
    let mut put_headers = headers.clone();
    put_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    super::handlers::dispatch(
        state.clone(),
        user.clone(),
        Method::PUT,
        stored_path,
        raw_query,
        put_headers,
        Bytes::from(serde_json::to_vec(&(view.to_stored)(&patched)).unwrap_or_default()),
    )
    .await
}
