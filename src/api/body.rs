//! Request bodies: reading them within the size limit, and decoding JSON,
//! YAML and the Kubernetes protobuf envelope.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use serde_json::Value;

use super::request::{DeleteOptions, Query};
use super::status::ApiError;
use crate::resources::Kind;

/// The protobuf envelope's magic prefix.
pub const PROTOBUF_MAGIC: &[u8] = b"k8s\0";

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Most of a refused body read and dropped after the refusal.
pub const DRAIN_AFTER_REFUSAL: usize = 64 << 20;
/// Longest a refused body is read after the refusal.
pub const DRAIN_FOR: Duration = Duration::from_secs(5);

/// Reads a request body of at most `limit` bytes.
///
/// A body whose `Content-Length` says it is larger is refused before a
/// byte of it is read; one without (chunked, HTTP/2) as soon as more than
/// `limit` bytes came, however slowly they come. What the client still
/// sends of a refused body is read and dropped in the background (at most
/// [`DRAIN_AFTER_REFUSAL`] for [`DRAIN_FOR`]), so the 413 goes out at once
/// while an HTTP/2 upload in progress is not reset before its client reads
/// the answer (curl 7.x reports such a reset as a stream error instead of
/// the 413).
///
/// # Errors
/// [`ApiError::TooLarge`] past `limit`; 400 when the body breaks off.
pub async fn read_limited(
    headers: &HeaderMap,
    mut body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        drain_in_background(body);
        return Err(ApiError::TooLarge { limit });
    }
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > limit {
            drain_in_background(body);
            return Err(ApiError::TooLarge { limit });
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// Reads and drops what is left of `body`, bounded by
/// [`DRAIN_AFTER_REFUSAL`] and [`DRAIN_FOR`].
fn drain_in_background(mut body: Body) {
    tokio::spawn(async move {
        let mut seen = 0usize;
        let _ = tokio::time::timeout(DRAIN_FOR, async {
            while let Some(Ok(frame)) = body.frame().await {
                seen += frame.data_ref().map_or(0, Bytes::len);
                if seen > DRAIN_AFTER_REFUSAL {
                    return;
                }
            }
        })
        .await;
    });
}

/// Decode a request body into a JSON value. A missing Content-Type means
/// JSON (newer Python clients send none).
pub fn decode(headers: &HeaderMap, body: &Bytes, kind: Option<&Kind>) -> Result<Value, ApiError> {
    let ct = content_type(headers);
    let media = ct.split(';').next().unwrap_or("").trim();
    match media {
        "" | "application/json" | "*/*" => decode_json(body),
        "application/yaml" | "application/x-yaml" | "text/yaml" => decode_yaml(body),
        "application/vnd.kubernetes.protobuf" => super::protobuf::decode(body, kind),
        other => Err(ApiError::UnsupportedMediaType {
            message: format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {other})"
            ),
        }),
    }
}

pub fn decode_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.starts_with(PROTOBUF_MAGIC) {
        return super::protobuf::decode(&Bytes::copy_from_slice(body), None);
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })
}

/// Deepest nesting a YAML body may have: JSON bodies stop at serde_json's
/// 128 levels, and so do these.
pub const MAX_YAML_DEPTH: usize = 128;

pub fn decode_yaml(body: &[u8]) -> Result<Value, ApiError> {
    check_yaml_depth(body)?;
    serde_yaml_ng::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))
}

/// Refuses YAML nested deeper than [`MAX_YAML_DEPTH`] before the full
/// parse. libyaml's time grows with the square of the nesting depth (a
/// 600 KB body of 100,000 levels took over a minute of CPU), while this
/// streaming pass stops at the first level too many, so its work is linear
/// in the body and never deeper than the limit.
fn check_yaml_depth(body: &[u8]) -> Result<(), ApiError> {
    use yaml_rust2::parser::{Event, Parser};
    let bad = |why: String| ApiError::bad_request(format!("error converting YAML to JSON: {why}"));
    let text = std::str::from_utf8(body).map_err(|e| bad(format!("invalid UTF-8: {e}")))?;
    let mut parser = Parser::new_from_str(text);
    let mut depth = 0usize;
    loop {
        match parser.next_token() {
            Ok((Event::StreamEnd, _)) => return Ok(()),
            Ok((Event::SequenceStart(..) | Event::MappingStart(..), _)) => {
                depth += 1;
                if depth > MAX_YAML_DEPTH {
                    return Err(bad(format!("yaml: exceeded max depth of {MAX_YAML_DEPTH}")));
                }
            }
            Ok((Event::SequenceEnd | Event::MappingEnd, _)) => depth = depth.saturating_sub(1),
            Ok(_) => {}
            Err(e) => return Err(bad(e.to_string())),
        }
    }
}

/// The fields a JSON body names twice in one object, as dotted paths
/// (`spec.replicas`); YAML decoding refuses duplicates by itself. Decoding
/// into a map keeps the last value silently, so strict field validation
/// looks at the raw body. Stops at serde_json's nesting limit like the
/// decode does.
pub fn duplicate_fields(headers: &HeaderMap, body: &[u8]) -> Vec<String> {
    let media = content_type(headers).split(';').next().unwrap_or("").trim();
    if !matches!(media, "" | "application/json" | "*/*") || body.starts_with(PROTOBUF_MAGIC) {
        return Vec::new();
    }
    let found = std::cell::RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_slice(body);
    let _ = serde::de::DeserializeSeed::deserialize(
        DupScan {
            path: String::new(),
            found: &found,
        },
        &mut de,
    );
    found.into_inner()
}

/// Walks a JSON document noting keys seen twice in one object.
struct DupScan<'a> {
    path: String,
    found: &'a std::cell::RefCell<Vec<String>>,
}

impl<'de> serde::de::DeserializeSeed<'de> for DupScan<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for DupScan<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            if !seen.insert(key) {
                self.found.borrow_mut().push(path.clone());
            }
            map.next_value_seed(DupScan {
                path,
                found: self.found,
            })?;
        }
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0usize;
        while seq
            .next_element_seed(DupScan {
                path: format!("{}[{i}]", self.path),
                found: self.found,
            })?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Delete options from the body (a `DeleteOptions` object, possibly absent)
/// and the query.
pub fn delete_options(
    headers: &HeaderMap,
    body: &Bytes,
    query: &Query,
) -> Result<DeleteOptions, ApiError> {
    let mut opts = DeleteOptions::default();
    if !body.is_empty() {
        let v = decode(headers, body, None)?;
        opts.propagation = v
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .map(str::to_string);
        if v.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
            opts.propagation = Some("Orphan".into());
        }
        opts.grace_period = v.get("gracePeriodSeconds").and_then(Value::as_i64);
        opts.precondition_uid = v
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string);
        opts.precondition_rv = v
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    if let Some(p) = query.get("propagationPolicy") {
        opts.propagation = Some(p.to_string());
    }
    if let Some(g) = query.get("gracePeriodSeconds") {
        opts.grace_period =
            Some(g.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid gracePeriodSeconds: {g:?}"))
            })?);
    }
    match opts.propagation.as_deref() {
        None | Some("Orphan" | "Background" | "Foreground") => Ok(opts),
        Some(other) => Err(ApiError::Invalid {
            group: String::new(),
            kind: "DeleteOptions".into(),
            name: String::new(),
            causes: vec![crate::resources::FieldError {
                kind: crate::resources::FieldErrorKind::NotSupported,
                field: "propagationPolicy".into(),
                value: Some(other.to_string()),
                detail: "supported values: \"Orphan\", \"Background\", \"Foreground\"".into(),
            }],
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(levels: usize) -> String {
        format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn yaml_bodies_decode_as_before() {
        let v = decode_yaml(
            b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata: {a: '1', b: \"x\"}\n",
        )
        .unwrap();
        assert_eq!(v["data"]["a"], "1");
        assert_eq!(v["metadata"]["name"], "c");
    }

    #[test]
    fn yaml_nested_past_the_limit_is_refused_before_it_is_parsed() {
        decode_yaml(flow(64).as_bytes()).unwrap();
        for body in [
            flow(MAX_YAML_DEPTH + 1),
            // 100,000 levels: libyaml alone spent over a minute on this.
            flow(100_000),
            format!("{}x", "{a: ".repeat(50_000)),
            // Block sequences nest without indentation growth per line.
            format!("{}x\n", "- ".repeat(50_000)),
        ] {
            let err = decode_yaml(body.as_bytes()).unwrap_err();
            // Our limit, or the streaming parser's own (it refuses flow
            // nesting past 256 levels by itself).
            let msg = err.to_string();
            assert_eq!(err.code().as_u16(), 400, "{msg}");
            assert!(
                msg.contains("exceeded max depth of 128")
                    || msg.contains("recursion limit exceeded"),
                "{msg}: {}",
                &body[..20]
            );
        }
    }

    #[test]
    fn duplicate_json_keys_are_found_with_their_path() {
        let body = br#"{"kind":"Deployment","spec":{"replicas":1,"replicas":2,
            "template":{"spec":{"containers":[{"name":"a","name":"b"}]}}},"kind":"X"}"#;
        assert_eq!(
            duplicate_fields(&HeaderMap::new(), body),
            vec![
                "spec.replicas".to_string(),
                "spec.template.spec.containers[0].name".into(),
                "kind".into()
            ]
        );
        assert!(duplicate_fields(&HeaderMap::new(), br#"{"a":{"b":1},"c":{"b":2}}"#).is_empty());
    }

    /// A body that sends `chunks` and then nothing more, ever.
    fn stalled_body(chunks: Vec<Bytes>) -> Body {
        let sent = futures::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
        Body::from_stream(futures::StreamExt::chain(sent, futures::stream::pending()))
    }

    #[tokio::test]
    async fn a_body_past_the_limit_is_refused_as_soon_as_it_is_known_to_be() {
        async fn quick<F: std::future::Future>(f: F) -> Result<F::Output, ()> {
            tokio::time::timeout(Duration::from_secs(1), f)
                .await
                .map_err(drop)
        }
        // Its Content-Length says so: refused before any byte comes.
        let mut declared = HeaderMap::new();
        declared.insert(header::CONTENT_LENGTH, "1000001".parse().unwrap());
        let r = quick(read_limited(&declared, stalled_body(vec![]), 1_000_000)).await;
        assert!(matches!(
            r,
            Ok(Err(ApiError::TooLarge { limit: 1_000_000 }))
        ));
        // Without one: refused once the limit is passed, though the client
        // has not finished (a trickle, or a chunked body cut short).
        let chunks = vec![Bytes::from(vec![b'x'; 600]), Bytes::from(vec![b'x'; 600])];
        let r = quick(read_limited(&HeaderMap::new(), stalled_body(chunks), 1000)).await;
        assert!(matches!(r, Ok(Err(ApiError::TooLarge { limit: 1000 }))));
        // Within the limit: the whole body.
        declared.insert(header::CONTENT_LENGTH, "1000".parse().unwrap());
        let ok = read_limited(&declared, Body::from(vec![b'y'; 1000]), 1000).await;
        assert_eq!(ok.unwrap().len(), 1000);
        let ok = read_limited(&HeaderMap::new(), Body::from("{}"), 1000).await;
        assert_eq!(ok.unwrap(), Bytes::from("{}"));
    }

    #[test]
    fn broken_yaml_is_a_bad_request() {
        let err = decode_yaml(b"a: [1, 2\nb: }").unwrap_err();
        assert_eq!(err.code().as_u16(), 400, "{err}");
    }
}
