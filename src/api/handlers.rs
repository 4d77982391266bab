//! The generic resource handlers: list, watch, get, create, update, patch,
//! delete and deletecollection for every kind in the kinds table.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use super::authn::UserInfo;
use super::body;
use super::objects::{self, FieldValidation};
use super::path::{self, Target, Verb};
use super::registry::parse_rv;
use super::selectors::{FieldSelector, LabelSelector};
use super::status::{ApiError, success_status};
use super::{ApiState, patch, table, watch};
use crate::resources::{self, Kind};

/// Parsed query parameters of a resource request.
pub struct Query(pub HashMap<String, String>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let map: HashMap<String, String> = serde_urlencoded::from_str(raw.unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
        Ok(Query(map))
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    /// Booleans as clients send them: anything but "", "0" and "false"
    /// (any case) is true.
    pub fn flag(&self, k: &str) -> bool {
        self.get(k)
            .is_some_and(|v| !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false")))
    }

    fn dry_run(&self) -> bool {
        self.get("dryRun").is_some_and(|v| v == "All")
    }
}

/// The response body format the client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wants {
    Json,
    Table,
    Yaml,
}

pub fn wants(headers: &HeaderMap) -> Wants {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Clients list preferences; take the first we serve.
    for part in accept.split(',') {
        let p = part.trim();
        if p.contains("as=Table") {
            return Wants::Table;
        }
        if p.starts_with("application/json")
            || p.starts_with("*/*")
            || p.starts_with("application/vnd.kubernetes.protobuf")
        {
            return Wants::Json;
        }
        if p.starts_with("application/yaml") {
            return Wants::Yaml;
        }
    }
    Wants::Json
}

/// A JSON response with a status code.
pub fn json_response(code: StatusCode, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = (code, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn respond(code: StatusCode, obj: Value, how: Wants, kind: &Kind, query: &Query) -> Response {
    match how {
        Wants::Table => {
            let include = query.get("includeObject").unwrap_or("Metadata");
            json_response(code, &table::single(kind, &obj, include))
        }
        Wants::Yaml => {
            let body = serde_yaml_ng::to_string(&obj).unwrap_or_default();
            let mut r = (code, body).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/yaml"),
            );
            r
        }
        Wants::Json => json_response(code, &obj),
    }
}

/// The warning for each field of the body the kind does not know.
fn unknown_field_warnings(fields: Vec<String>) -> Vec<String> {
    fields
        .into_iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect()
}

/// Adds a `Warning: 299 - "…"` header per message.
fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        let text = format!("299 - \"{escaped}\"");
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append("Warning", v);
        }
    }
    resp
}

/// Entry point for every request under `/api/` and `/apis/` that names a
/// resource.
pub async fn dispatch(
    state: Arc<ApiState>,
    user: UserInfo,
    method: Method,
    path_str: &str,
    raw_query: Option<&str>,
    headers: HeaderMap,
    body_bytes: Bytes,
) -> Result<Response, ApiError> {
    let Some(target) = path::parse(path_str)? else {
        return Err(ApiError::NoRoute);
    };
    let query = Query::parse(raw_query)?;
    let watching = query.flag("watch");
    let verb = path::verb(&method, &target, watching)?;
    state.authorize(&user, verb, &target).await?;
    let how = wants(&headers);
    if let Some(sub) = target.subresource.clone() {
        let req = super::subresources::SubRequest {
            method: &method,
            raw_query,
            query: &query,
            headers: &headers,
            body: body_bytes,
            how,
        };
        return super::subresources::handle(&state, &user, verb, &target, &sub, req).await;
    }
    let kind = target.kind;
    let ns = target.namespace.as_deref();
    match verb {
        Verb::Get => {
            let name = target.name.as_deref().unwrap_or_default();
            let obj = state.registry.get(kind, ns, name).await?;
            Ok(respond(StatusCode::OK, obj, how, kind, &query))
        }
        Verb::List => list(&state, kind, ns, &query, how).await,
        Verb::Watch => watch::serve(&state, kind, ns, target.name.as_deref(), &query, how).await,
        Verb::Create => {
            let obj = body::decode(&headers, &body_bytes, Some(kind))?;
            let validation = FieldValidation::parse(query.get("fieldValidation"))?;
            let duplicates = duplicates(&headers, &body_bytes, validation)?;
            let (created, unknown) =
                create(&state, &user, kind, ns, obj, validation, query.dry_run()).await?;
            let mut warnings = unknown_field_warnings(unknown);
            warnings.extend(duplicates);
            Ok(with_warnings(
                respond(StatusCode::CREATED, created, how, kind, &query),
                &warnings,
            ))
        }
        Verb::Update => {
            let obj = body::decode(&headers, &body_bytes, Some(kind))?;
            let validation = FieldValidation::parse(query.get("fieldValidation"))?;
            let duplicates = duplicates(&headers, &body_bytes, validation)?;
            let name = target.name.as_deref().unwrap_or_default();
            let (obj, code, unknown) = update(
                &state,
                &user,
                kind,
                ns,
                name,
                obj,
                None,
                validation,
                query.dry_run(),
            )
            .await?;
            let mut warnings = unknown_field_warnings(unknown);
            warnings.extend(duplicates);
            Ok(with_warnings(
                respond(code, obj, how, kind, &query),
                &warnings,
            ))
        }
        Verb::Patch => {
            let name = target.name.as_deref().unwrap_or_default();
            let validation = FieldValidation::parse(query.get("fieldValidation"))?;
            let (obj, code, warnings) = patch::handle(
                &state,
                &user,
                kind,
                ns,
                name,
                None,
                &headers,
                &body_bytes,
                &query,
                validation,
            )
            .await?;
            Ok(with_warnings(
                respond(code, obj, how, kind, &query),
                &unknown_field_warnings(warnings),
            ))
        }
        Verb::Delete => {
            let name = target.name.as_deref().unwrap_or_default();
            let opts = body::delete_options(&headers, &body_bytes, &query)?;
            let (code, obj) = delete(&state, kind, ns, name, &opts, query.dry_run()).await?;
            Ok(respond(code, obj, how, kind, &query))
        }
        Verb::DeleteCollection => {
            let opts = body::delete_options(&headers, &body_bytes, &query)?;
            delete_collection(&state, kind, ns, &query, &opts).await?;
            Ok(json_response(StatusCode::OK, &success_status(None)))
        }
        Verb::Unnamed => Err(ApiError::MethodNotAllowed),
    }
}

/// Keys a JSON body gives twice in one object: refused under
/// `fieldValidation=Strict`, warnings under `Warn`, as in Kubernetes.
fn duplicates(
    headers: &HeaderMap,
    body: &Bytes,
    validation: FieldValidation,
) -> Result<Vec<String>, ApiError> {
    if validation == FieldValidation::Ignore {
        return Ok(Vec::new());
    }
    let found: Vec<String> = body::duplicate_fields(headers, body)
        .into_iter()
        .map(|f| format!("duplicate field \"{f}\""))
        .collect();
    if validation == FieldValidation::Strict && !found.is_empty() {
        return Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            found.join(", ")
        )));
    }
    Ok(found)
}

/// Selectors of a list or watch.
pub fn selectors(kind: &Kind, query: &Query) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").unwrap_or(""))?;
    let fields = FieldSelector::parse(
        query.get("fieldSelector").unwrap_or(""),
        kind.field_selectors,
    )?;
    Ok((labels, fields))
}

async fn list(
    state: &ApiState,
    kind: &'static Kind,
    ns: Option<&str>,
    query: &Query,
    how: Wants,
) -> Result<Response, ApiError> {
    let (labels, fields) = selectors(kind, query)?;
    let limit = match query.get("limit") {
        Some(l) if !l.is_empty() => l
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit: {l:?}")))?,
        _ => 0,
    };
    if how == Wants::Json {
        return list_json(state, kind, ns, query, limit, labels, fields).await;
    }
    let keep = move |o: &Value| labels.matches(o) && fields.matches(o);
    let page = state
        .registry
        .list(
            kind,
            ns,
            limit,
            query.get("continue").filter(|c| !c.is_empty()),
            &keep,
        )
        .await?;
    let mut list_meta = json!({"resourceVersion": page.revision.to_string()});
    if let Some(c) = &page.continue_token {
        list_meta["continue"] = json!(c);
    }
    if let Some(r) = page.remaining {
        list_meta["remainingItemCount"] = json!(r);
    }
    if how == Wants::Table {
        let include = query.get("includeObject").unwrap_or("Metadata");
        return Ok(json_response(
            StatusCode::OK,
            &table::list(kind, &page.items, list_meta, include),
        ));
    }
    let body = json!({
        "kind": kind.list_kind,
        "apiVersion": kind.api_version(),
        "metadata": list_meta,
        "items": page.items,
    });
    Ok(respond(StatusCode::OK, body, how, kind, query))
}

/// A plain JSON list, assembled from the stored bytes: objects are only
/// decoded when a selector has to look inside them. Listing thousands of
/// objects is dominated by JSON work, so this is the path that matters.
async fn list_json(
    state: &ApiState,
    kind: &'static Kind,
    ns: Option<&str>,
    query: &Query,
    limit: i64,
    labels: LabelSelector,
    fields: FieldSelector,
) -> Result<Response, ApiError> {
    let filtered = !labels.is_empty() || !fields.is_empty();
    let keep = move |kv: &crate::store::KeyValue| {
        !filtered
            || super::registry::decode(kv).is_ok_and(|o| labels.matches(&o) && fields.matches(&o))
    };
    let page = state
        .registry
        .list_raw(
            kind,
            ns,
            limit,
            query.get("continue").filter(|c| !c.is_empty()),
            &keep,
        )
        .await?;
    let mut list_meta = json!({"resourceVersion": page.revision.to_string()});
    if let Some(c) = &page.continue_token {
        list_meta["continue"] = json!(c);
    }
    if let Some(r) = page.remaining {
        list_meta["remainingItemCount"] = json!(r);
    }
    let size: usize = page.items.iter().map(|kv| kv.value.len() + 32).sum();
    let mut out = Vec::with_capacity(size + 256);
    out.extend_from_slice(b"{\"kind\":");
    serde_json::to_writer(&mut out, kind.list_kind).map_err(ApiError::internal)?;
    out.extend_from_slice(b",\"apiVersion\":");
    serde_json::to_writer(&mut out, &kind.api_version()).map_err(ApiError::internal)?;
    out.extend_from_slice(b",\"metadata\":");
    serde_json::to_writer(&mut out, &list_meta).map_err(ApiError::internal)?;
    out.extend_from_slice(b",\"items\":[");
    for (i, kv) in page.items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        super::registry::write_stamped(kv, &mut out)?;
    }
    out.extend_from_slice(b"]}");
    let mut r = (StatusCode::OK, out).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// Create an object through every admission step.
pub async fn create(
    state: &ApiState,
    user: &UserInfo,
    kind: &'static Kind,
    url_ns: Option<&str>,
    mut obj: Value,
    validation: FieldValidation,
    dry_run: bool,
) -> Result<(Value, Vec<String>), ApiError> {
    if !kind.stored {
        return Err(ApiError::MethodNotAllowed);
    }
    let (ns, name) =
        objects::prepare_create(kind, url_ns, &mut obj, state.config.default_tolerations())?;
    if let Some(ns) = &ns {
        state.require_active_namespace(ns, kind, &name).await?;
    }
    let (mut obj, warnings) = objects::admit(kind, obj, validation)?;
    super::nodeauthz::admit(user, kind, None, &obj)?;
    super::escalation::check(state, user, kind, ns.as_deref(), None, &obj).await?;
    state.admission.on_create(state, kind, &mut obj).await?;
    if dry_run {
        // Nothing is stored, so nothing may stay allocated either.
        state.admission.on_create_failed(state, kind, &obj).await;
        return Ok((obj, warnings));
    }
    match state
        .registry
        .insert(kind, ns.as_deref(), &name, &obj)
        .await
    {
        Ok(rev) => {
            super::registry::stamp(&mut obj, rev);
            Ok((obj, warnings))
        }
        Err(e) => {
            state.admission.on_create_failed(state, kind, &obj).await;
            Err(e)
        }
    }
}

/// Replace an object. `sub` is `Some("status")` for status writes.
/// Returns the stored object and 200 (or 201 when it was created, for
/// kinds that allow create-on-update).
#[allow(clippy::too_many_arguments)] // mirrors the REST verb's inputs
pub async fn update(
    state: &ApiState,
    user: &UserInfo,
    kind: &'static Kind,
    ns: Option<&str>,
    name: &str,
    new: Value,
    sub: Option<&str>,
    validation: FieldValidation,
    dry_run: bool,
) -> Result<(Value, StatusCode, Vec<String>), ApiError> {
    let old = state.registry.get(kind, ns, name).await?;
    let expected = match objects::rv_of(&new) {
        Some(rv) => parse_rv(rv)?,
        // Built-in kinds allow unconditional updates.
        None => parse_rv(objects::rv_of(&old).unwrap_or("0"))?,
    };
    let mut new = new;
    objects::prepare_update(kind, &old, &mut new, sub)?;
    let (mut admitted, warnings) = objects::admit(kind, new, validation)?;
    objects::check_immutable(kind, &old, &admitted)?;
    super::nodeauthz::admit(user, kind, Some(&old), &admitted)?;
    super::escalation::check(state, user, kind, ns, Some(&old), &admitted).await?;
    objects::bump_generation(&old, &mut admitted);
    state
        .admission
        .on_update(state, kind, &old, &mut admitted)
        .await?;
    let unchanged = {
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
            v
        };
        strip(&old) == strip(&admitted)
    };
    if dry_run {
        return Ok((admitted, StatusCode::OK, warnings));
    }
    if unchanged && objects::rv_of(&old) == Some(&expected.to_string()) {
        // A no-op update writes nothing and keeps the resourceVersion.
        return Ok((old, StatusCode::OK, warnings));
    }
    let stored = state
        .registry
        .update(kind, ns, name, expected, admitted)
        .await?;
    let stored = state.finish_if_deleting(kind, ns, name, stored).await?;
    Ok((stored, StatusCode::OK, warnings))
}

/// Options of a delete (from the body or the query).
#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    pub propagation: Option<String>,
    pub grace_period: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
}

/// Delete one object, honouring finalizers and preconditions. Returns 200
/// with the object (gone, or marked for deletion while finalizers run).
pub async fn delete(
    state: &ApiState,
    kind: &'static Kind,
    ns: Option<&str>,
    name: &str,
    opts: &DeleteOptions,
    dry_run: bool,
) -> Result<(StatusCode, Value), ApiError> {
    for _ in 0..16 {
        let current = state.registry.get(kind, ns, name).await?;
        let stored_uid = current.pointer("/metadata/uid").and_then(Value::as_str);
        if let Some(uid) = &opts.precondition_uid
            && stored_uid != Some(uid.as_str())
        {
            return Err(ApiError::uid_precondition(
                kind,
                name,
                uid,
                stored_uid.unwrap_or(""),
            ));
        }
        let rv = parse_rv(objects::rv_of(&current).unwrap_or("0"))?;
        if let Some(want) = &opts.precondition_rv
            && *want != rv.to_string()
        {
            return Err(ApiError::Conflict {
                group: kind.group.into(),
                resource: kind.plural.into(),
                name: name.into(),
                message: format!(
                    "Operation cannot be fulfilled on {} \"{}\": Precondition failed: ResourceVersion in precondition: {}, ResourceVersion in object meta: {}",
                    kind.qualified_plural(),
                    name,
                    want,
                    rv
                ),
            });
        }
        if dry_run {
            return Ok((StatusCode::OK, current));
        }
        let mut marked = current.clone();
        let needs_mark = state
            .admission
            .on_delete(state, kind, &mut marked, opts)
            .await?;
        let has_finalizers = marked
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers || needs_mark {
            if marked.pointer("/metadata/deletionTimestamp").is_none() {
                marked["metadata"]["deletionTimestamp"] = json!(objects::now_rfc3339());
                marked["metadata"]["deletionGracePeriodSeconds"] =
                    json!(opts.grace_period.unwrap_or(0));
            }
            if marked == current {
                return Ok((StatusCode::OK, current));
            }
            match state.registry.update(kind, ns, name, rv, marked).await {
                Ok(stored) => {
                    // Foreground and orphan deletions finish once the
                    // dependents are gone or released.
                    match opts.propagation.as_deref() {
                        Some("Foreground") => {
                            state.spawn_gc(kind, &stored, super::bootstrap::GcPolicy::Foreground)
                        }
                        Some("Orphan") => {
                            state.spawn_gc(kind, &stored, super::bootstrap::GcPolicy::Orphan)
                        }
                        _ => {}
                    }
                    return Ok((StatusCode::OK, stored));
                }
                Err(ApiError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        match state.registry.delete(kind, ns, name, rv).await {
            Ok(gone) => {
                state.admission.on_deleted(state, kind, &gone).await;
                state.spawn_gc(kind, &gone, super::bootstrap::GcPolicy::Background);
                return Ok((StatusCode::OK, gone));
            }
            Err(ApiError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::Conflict {
        group: kind.group.into(),
        resource: kind.plural.into(),
        name: name.into(),
        message: format!(
            "Operation cannot be fulfilled on {} \"{}\": too many concurrent changes",
            kind.qualified_plural(),
            name
        ),
    })
}

async fn delete_collection(
    state: &ApiState,
    kind: &'static Kind,
    ns: Option<&str>,
    query: &Query,
    opts: &DeleteOptions,
) -> Result<(), ApiError> {
    let (labels, fields) = selectors(kind, query)?;
    let keep = move |o: &Value| labels.matches(o) && fields.matches(o);
    let page = state.registry.list(kind, ns, 0, None, &keep).await?;
    for item in page.items {
        let name = objects::name_of(&item).to_string();
        let item_ns = item.pointer("/metadata/namespace").and_then(Value::as_str);
        match delete(state, kind, item_ns.or(ns), &name, opts, query.dry_run()).await {
            Ok(_) | Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Look up a kind for a body-only request (e.g. reviews).
pub fn kind_for(group: &str, version: &str, plural: &str) -> Result<&'static Kind, ApiError> {
    resources::by_resource(group, version, plural).ok_or(ApiError::NoRoute)
}

pub fn empty_body() -> Body {
    Body::empty()
}

#[allow(dead_code)]
fn _target_is_used(t: &Target) -> bool {
    t.name.is_some()
}
