//! Watch: a store watch on the kind's key prefix, turned into Kubernetes
//! watch events (newline-delimited JSON, chunked), with selectors applied
//! to both the old and the new object (an object that stops matching is
//! DELETED for this watcher, one that starts matching is ADDED), bookmarks,
//! and `410 Gone` as an ERROR event when the start is compacted.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};

use super::ApiState;
use super::registry::{decode, parse_rv, write_served};
use super::request::{Query, Wants, selectors};
use super::status::ApiError;
use super::table;
use crate::resources::Kind;
use crate::store::{EventType, KeyRange, KeyValue, Revision, StoreError, WatchRequest};

/// How the objects of events are shaped: as stored, or as one-row Tables
/// when the client asked for `as=Table` (`kubectl get -w` does, and prints
/// the rows under the columns of the list before it; plain objects would
/// make it fall back to NAME and AGE and repeat the header).
enum Shape {
    Object,
    /// The kind and the `includeObject` of the request.
    Table(&'static Kind, String),
    /// `as=PartialObjectMetadata`: metadata-only informers.
    Metadata,
}

impl Shape {
    fn event(&self, ty: &str, obj: &Value) -> Bytes {
        match self {
            Shape::Object => event_line(ty, obj),
            Shape::Table(kind, include) => event_line(ty, &table::single(kind, obj, include)),
            Shape::Metadata => event_line(ty, &table::metadata_object(obj["metadata"].clone())),
        }
    }
}

fn event_line(ty: &str, obj: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": ty, "object": obj})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// The event of a store change for a watcher without selectors, built
/// from the stored bytes (see [`super::registry::write_stamped_at`]).
fn raw_event_line(kind: &Kind, ev: &crate::store::Event) -> Option<Bytes> {
    let (ty, kv, rv) = match (ev.kind, &ev.prev_kv) {
        (EventType::Put, None) => ("ADDED", &ev.kv, ev.kv.mod_revision),
        (EventType::Put, Some(_)) => ("MODIFIED", &ev.kv, ev.kv.mod_revision),
        // Deleted objects carry the deletion's revision.
        (EventType::Delete, Some(prev)) => ("DELETED", prev, ev.kv.mod_revision),
        (EventType::Delete, None) => return None,
    };
    stamped_event(kind, ty, kv, rv).ok()
}

/// `{"type":TY,"object":STORED}` and a newline, the object stamped with `rv`.
fn stamped_event(kind: &Kind, ty: &str, kv: &KeyValue, rv: Revision) -> Result<Bytes, ApiError> {
    let mut line = Vec::with_capacity(kv.value.len() + 64);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(ty.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    write_served(kind, kv, rv, &mut line)?;
    line.extend_from_slice(b"}\n");
    Ok(Bytes::from(line))
}

fn gone_line(message: &str) -> Bytes {
    event_line(
        "ERROR",
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": "Expired", "code": 410,
        }),
    )
}

/// Serve a watch request.
pub async fn serve(
    state: &ApiState,
    kind: &'static Kind,
    ns: Option<&str>,
    name: Option<&str>,
    query: &Query,
    how: Wants,
) -> Result<Response, ApiError> {
    let (labels, mut fields) = selectors(kind, query)?;
    let shape = match how {
        Wants::Table => Shape::Table(
            kind,
            query.get("includeObject").unwrap_or("Metadata").to_owned(),
        ),
        Wants::Metadata => Shape::Metadata,
        Wants::Json | Wants::Yaml => Shape::Object,
    };
    if let Some(n) = name {
        fields.0.push(("metadata.name".into(), true, n.to_string()));
    }
    let prefix = match ns {
        Some(ns) if kind.namespaced => format!("{}{}/", kind.key_prefix(), ns),
        _ => kind.key_prefix(),
    };
    let rv = match query.get("resourceVersion") {
        None | Some("") | Some("0") => None,
        Some(rv) => Some(parse_rv(rv)?),
    };
    let bookmarks = query.flag("allowWatchBookmarks");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(state.config.max_watch_duration)
        .min(state.config.max_watch_duration);

    // With no selector and plain objects, nothing needs the decoded
    // object: each event is the stored JSON with its revision spliced in,
    // so a watcher costs a copy rather than a decode and an encode.
    let raw = labels.is_empty() && fields.is_empty() && matches!(shape, Shape::Object);

    // "" or "0": replay the current state as ADDED events, then follow.
    let mut initial = Vec::new();
    let start = match rv {
        Some(rv) => rv + 1,
        None if raw => {
            let page = state
                .registry
                .list_raw(kind, ns, 0, None, &|_: &KeyValue| true)
                .await?;
            for kv in &page.items {
                initial.push(stamped_event(kind, "ADDED", kv, kv.mod_revision)?);
            }
            page.revision + 1
        }
        None => {
            let keep = |o: &Value| labels.matches(o) && fields.matches(o);
            let page = state.registry.list(kind, ns, 0, None, &keep).await?;
            for item in page.items {
                initial.push(shape.event("ADDED", &item));
            }
            page.revision + 1
        }
    };
    let watch = state
        .registry
        .store()
        .watch(WatchRequest {
            range: KeyRange::prefix(prefix),
            start_revision: start,
            prev_kv: true,
            progress_notify: bookmarks,
            ..Default::default()
        })
        .await;
    let watch = match watch {
        Ok(w) => w,
        Err(StoreError::Compacted { .. }) => {
            // Kubernetes answers 200 and an ERROR event for a watch whose
            // start has been compacted; clients then re-list.
            let body = Body::from(gone_line(&format!(
                "too old resource version: {} ({})",
                start - 1,
                state.registry.revision().await.unwrap_or(0)
            )));
            return Ok(stream_response(body));
        }
        Err(e) => return Err(e.into()),
    };
    let api_version = kind.api_version();
    let kind_name = kind.kind;
    let registry = state.registry.clone();
    let events = watch.flat_map(move |item| {
        let lines: Vec<Bytes> = match item {
            Ok(batch) => {
                if batch.events.is_empty() {
                    if bookmarks {
                        vec![event_line(
                            "BOOKMARK",
                            &json!({"kind": kind_name, "apiVersion": api_version,
                                "metadata": {"resourceVersion": batch.header.revision.to_string()}}),
                        )]
                    } else {
                        Vec::new()
                    }
                } else {
                    batch
                        .events
                        .iter()
                        .filter_map(|ev| {
                            // Sealed Secrets are opened here; an event that
                            // does not open is dropped (and logged), as a
                            // list would fail on it.
                            let ev = match registry.open_event(ev) {
                                Ok(ev) => ev,
                                Err(e) => {
                                    tracing::warn!("watch: {e:?}");
                                    return None;
                                }
                            };
                            let ev = &*ev;
                            if raw {
                                return raw_event_line(kind, ev);
                            }
                            let served = |kv: &KeyValue| {
                                let mut o = decode(kv).ok()?;
                                kind.serve_as(&mut o);
                                Some(o)
                            };
                            let new = match ev.kind {
                                EventType::Put => served(&ev.kv),
                                EventType::Delete => None,
                            };
                            let old = ev.prev_kv.as_ref().and_then(|p| served(p));
                            let matches = |o: &Option<Value>| {
                                o.as_ref().is_some_and(|o| labels.matches(o) && fields.matches(o))
                            };
                            match (matches(&old), matches(&new)) {
                                (false, true) => Some(shape.event("ADDED", new.as_ref()?)),
                                (true, true) => Some(shape.event("MODIFIED", new.as_ref()?)),
                                (true, false) => {
                                    // Deleted objects carry the deletion's
                                    // revision.
                                    let mut gone = new.or(old)?;
                                    gone["metadata"]["resourceVersion"] =
                                        Value::String(ev.kv.mod_revision.to_string());
                                    Some(shape.event("DELETED", &gone))
                                }
                                (false, false) => None,
                            }
                        })
                        .collect()
                }
            }
            Err(StoreError::Compacted { .. }) => vec![gone_line("too old resource version")],
            Err(e) => vec![event_line(
                "ERROR",
                &ApiError::from(e).status(),
            )],
        };
        futures::stream::iter(lines.into_iter().map(Ok::<Bytes, std::io::Error>))
    });
    let initial = futures::stream::iter(initial.into_iter().map(Ok::<Bytes, std::io::Error>));
    let stream = initial.chain(events);
    // Every watch ends after its timeout; clients re-watch from the last
    // resourceVersion they saw.
    let stream = stream.take_until(tokio::time::sleep(timeout));
    Ok(stream_response(Body::from_stream(stream)))
}

fn stream_response(body: Body) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    r
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::Event;

    fn kv(rev: Revision, value: &str) -> Arc<KeyValue> {
        Arc::new(KeyValue {
            key: Bytes::from_static(b"/registry/pods/default/a"),
            value: Bytes::copy_from_slice(value.as_bytes()),
            create_revision: 2,
            mod_revision: rev,
            version: 1,
            lease: 0,
        })
    }

    fn parse(line: &Bytes) -> Value {
        assert!(line.ends_with(b"\n"), "one event per line");
        serde_json::from_slice(line).expect("an event is JSON")
    }

    #[test]
    fn raw_events_are_the_decoded_events_with_the_right_revision() {
        let stored = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","namespace":"default"},"spec":{"x":1}}"#;
        let old = kv(5, stored);
        let new = kv(7, stored);
        let added = Event {
            kind: EventType::Put,
            kv: old.clone(),
            prev_kv: None,
        };
        let modified = Event {
            kind: EventType::Put,
            kv: new.clone(),
            prev_kv: Some(old.clone()),
        };
        let deleted = Event {
            kind: EventType::Delete,
            kv: kv(9, ""),
            prev_kv: Some(new.clone()),
        };
        let pods = crate::resources::by_kind("", "Pod").unwrap();
        for (ev, ty, rv) in [
            (&added, "ADDED", "5"),
            (&modified, "MODIFIED", "7"),
            (&deleted, "DELETED", "9"),
        ] {
            let line = parse(&raw_event_line(pods, ev).expect("an event"));
            assert_eq!(line["type"], ty);
            assert_eq!(line["object"]["metadata"]["resourceVersion"], rv);
            assert_eq!(line["object"]["metadata"]["name"], "a");
            assert_eq!(line["object"]["spec"]["x"], 1);
        }
        // A delete whose previous value is unknown has nothing to show.
        let bare = Event {
            kind: EventType::Delete,
            kv: kv(9, ""),
            prev_kv: None,
        };
        assert!(raw_event_line(pods, &bare).is_none());
    }
}
