//! The generic resource handlers: list, watch, get, create, update, patch,
//! delete and deletecollection for every kind in the kinds table.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use super::authn::UserInfo;
use super::body;
use super::managed::{self, Owner};
use super::objects::{self, FieldValidation};
use super::path::{self, Verb};
use super::request::{DeleteOptions, Query, Wants, json_response, selectors, wants};
use super::selectors::{FieldSelector, LabelSelector};
use super::status::{ApiError, success_status};
use super::verbs::{create, delete, update};
use super::{ApiState, patch, table, watch};
use crate::resources::Kind;

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
        // A Status (a delete's answer, say) is not an object to reduce.
        Wants::Metadata if obj["kind"] != "Status" => {
            json_response(code, &table::partial_metadata(obj))
        }
        Wants::Json | Wants::Metadata => json_response(code, &obj),
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
            let manager = managed::request_manager(&query, &headers)?;
            let obj = body::decode(&headers, &body_bytes, Some(kind))?;
            let validation = FieldValidation::parse(query.get("fieldValidation"))?;
            let duplicates = duplicates(&headers, &body_bytes, validation)?;
            let (created, unknown) = create(
                &state,
                &user,
                kind,
                ns,
                obj,
                validation,
                query.dry_run(),
                Owner::Writer(&manager),
            )
            .await?;
            let mut warnings = unknown_field_warnings(unknown);
            warnings.extend(duplicates);
            Ok(with_warnings(
                respond(StatusCode::CREATED, created, how, kind, &query),
                &warnings,
            ))
        }
        Verb::Update => {
            let manager = managed::request_manager(&query, &headers)?;
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
                Owner::Writer(&manager),
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
    if matches!(how, Wants::Json | Wants::Table) {
        return list_raw(state, kind, ns, query, how, limit, labels, fields).await;
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
    if how == Wants::Metadata {
        return Ok(json_response(
            StatusCode::OK,
            &table::partial_metadata_list(page.items, list_meta),
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

/// A plain JSON list or a Table, assembled from the stored bytes: a plain
/// list decodes objects only when a selector has to look inside them, and a
/// Table decodes them for its cells without their field managers. Listing
/// thousands of objects is dominated by JSON work, so this is the path
/// that matters.
#[allow(clippy::too_many_arguments)]
async fn list_raw(
    state: &ApiState,
    kind: &'static Kind,
    ns: Option<&str>,
    query: &Query,
    how: Wants,
    limit: i64,
    labels: LabelSelector,
    fields: FieldSelector,
) -> Result<Response, ApiError> {
    let filtered = !labels.is_empty() || !fields.is_empty();
    let keep = move |kv: &crate::store::KeyValue| {
        !filtered
            || super::registry::decode_skimmed(kv, None)
                .is_ok_and(|o| labels.matches(&o) && fields.matches(&o))
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
    let out = if how == Wants::Table {
        let include = query.get("includeObject").unwrap_or("Metadata").to_string();
        let items = page.items;
        // Thousands of rows are tens of milliseconds of CPU: not on the
        // async workers, where they would stall every other request.
        if items.len() > TABLE_INLINE_ROWS {
            tokio::task::spawn_blocking(move || {
                table::write_list(kind, &list_meta, &items, &include)
            })
            .await
            .map_err(ApiError::internal)??
        } else {
            table::write_list(kind, &list_meta, &items, &include)?
        }
    } else {
        plain_list(kind, &list_meta, &page.items)?
    };
    let mut r = (StatusCode::OK, out).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// Tables of up to this many rows are built on the request's own task.
const TABLE_INLINE_ROWS: usize = 256;

/// A list's JSON from its stored objects, spliced without decoding them.
fn plain_list(
    kind: &Kind,
    list_meta: &Value,
    items: &[Arc<crate::store::KeyValue>],
) -> Result<Vec<u8>, ApiError> {
    let size: usize = items.iter().map(|kv| kv.value.len() + 32).sum();
    let mut out = Vec::with_capacity(size + 256);
    out.extend_from_slice(b"{\"kind\":");
    serde_json::to_writer(&mut out, kind.list_kind).map_err(ApiError::internal)?;
    out.extend_from_slice(b",\"apiVersion\":");
    serde_json::to_writer(&mut out, &kind.api_version()).map_err(ApiError::internal)?;
    out.extend_from_slice(b",\"metadata\":");
    serde_json::to_writer(&mut out, list_meta).map_err(ApiError::internal)?;
    out.extend_from_slice(b",\"items\":[");
    for (i, kv) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        super::registry::write_served(kind, kv, kv.mod_revision, &mut out)?;
    }
    out.extend_from_slice(b"]}");
    Ok(out)
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
