//! An agent's API client that remembers the answers its pods need, so a
//! node cut off from every API server can still (re)start them.
//!
//! A pod's start reads a few objects through the API: its ServiceAccount,
//! a token for it (TokenRequest), the ConfigMaps and Secrets it mounts or
//! takes environment from, and the Module its image tag names. This layer
//! keeps the last successful answer to each of those requests (nothing
//! else: lists, watches and writes pass through untouched) and, when the
//! request cannot reach any server, answers with it instead.
//!
//! - Only transport failures fall back: an HTTP answer, even an error, is
//!   the cluster's word. A 404 forgets the remembered answer.
//! - After one transport failure the node counts as offline for
//!   [`OFFLINE_HOLD`]: remembered answers are given at once instead of
//!   waiting for another connect timeout each.
//! - What is remembered is bounded ([`MAX_ENTRIES`], [`MAX_BYTES`], least
//!   recently used first out) and written to the node's checkpoint
//!   (sealed, see [`crate::checkpoint`]), so it survives the agent's own
//!   restart.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{Method, Request, Response, StatusCode};
use kube::client::Body;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tokio::sync::Notify;

use super::BoxError;
use crate::checkpoint::Checkpoint;

/// How long the node counts as offline after a request could not reach
/// any server.
pub const OFFLINE_HOLD: Duration = Duration::from_secs(10);
/// Bounds on what is remembered.
pub const MAX_ENTRIES: usize = 4096;
pub const MAX_BYTES: usize = 32 << 20;
/// The checkpoint file's name.
const CHECKPOINT: &str = "answers";

/// One remembered answer.
#[derive(Clone, Serialize, Deserialize)]
struct Answer {
    body: String,
    #[serde(skip)]
    used: u64,
}

#[derive(Default)]
struct Memory {
    answers: HashMap<String, Answer>,
    bytes: usize,
    clock: u64,
    offline_until: Option<Instant>,
}

impl Memory {
    fn insert(&mut self, key: String, body: String) {
        self.clock += 1;
        self.bytes += body.len();
        if let Some(old) = self.answers.insert(
            key,
            Answer {
                body,
                used: self.clock,
            },
        ) {
            self.bytes -= old.body.len();
        }
        while self.answers.len() > MAX_ENTRIES || self.bytes > MAX_BYTES {
            let Some(oldest) = self
                .answers
                .iter()
                .min_by_key(|(_, a)| a.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(a) = self.answers.remove(&oldest) {
                self.bytes -= a.body.len();
            }
        }
    }

    fn remove(&mut self, key: &str) -> bool {
        match self.answers.remove(key) {
            Some(a) => {
                self.bytes -= a.body.len();
                true
            }
            None => false,
        }
    }

    fn recall(&mut self, key: &str) -> Option<String> {
        self.clock += 1;
        let clock = self.clock;
        self.answers.get_mut(key).map(|a| {
            a.used = clock;
            a.body.clone()
        })
    }
}

/// The tower service behind a remembering [`kube::Client`].
#[derive(Clone)]
pub struct Remembering {
    inner: kube::Client,
    memory: Arc<Mutex<Memory>>,
    changed: Arc<Notify>,
}

/// Whether a request is one of those a pod's start needs (only those are
/// buffered and remembered).
fn remembered(method: &Method, path: &str) -> bool {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let wanted = match (method, segs.as_slice()) {
        (
            &Method::GET,
            [
                "api",
                "v1",
                "namespaces",
                _,
                "secrets" | "configmaps" | "serviceaccounts",
                _,
            ],
        ) => true,
        (&Method::GET, ["apis", "wkube.dev", "v1", "modules", _]) => true,
        // A token is bound to its pod, named in the body: the body is part
        // of the key, so no pod is ever handed another pod's token.
        (&Method::POST, ["api", "v1", "namespaces", _, "serviceaccounts", _, "token"]) => true,
        _ => false,
    };
    wanted && !segs.iter().any(|s| s.is_empty())
}

/// The key a remembered request is kept under.
fn remembered_key(method: &Method, path: &str, body: &[u8]) -> Option<String> {
    if !remembered(method, path) {
        return None;
    }
    let mut key = format!("{method} {path}");
    if !body.is_empty() {
        let digest = sha2::Sha256::digest(body);
        key.push(' ');
        key.push_str(&hex::encode(digest));
    }
    Some(key)
}

impl Remembering {
    /// Wraps `inner`, starting from what `checkpoint` remembers.
    pub fn new(inner: kube::Client, checkpoint: Option<&Checkpoint>) -> Remembering {
        let mut memory = Memory::default();
        let saved: Vec<(String, Answer)> = checkpoint
            .and_then(|c| c.read(CHECKPOINT))
            .unwrap_or_default();
        for (key, answer) in saved {
            memory.insert(key, answer.body);
        }
        Remembering {
            inner,
            memory: Arc::new(Mutex::new(memory)),
            changed: Arc::new(Notify::new()),
        }
    }

    /// Writes what is remembered to `checkpoint` after each change, until
    /// `stop`.
    pub async fn keep(self, checkpoint: Checkpoint, stop: impl Future<Output = ()>) {
        let memory = self.memory.clone();
        checkpoint
            .keep(
                CHECKPOINT,
                move || {
                    memory
                        .lock()
                        .answers
                        .iter()
                        .map(|(k, a)| (k.clone(), a.clone()))
                        .collect::<Vec<_>>()
                },
                self.changed.clone(),
                stop,
            )
            .await;
    }

    /// A client over this service.
    pub fn client(self) -> kube::Client {
        kube::Client::new(self, "default")
    }

    fn answer(body: String) -> Response<Body> {
        let mut resp = Response::new(Body::from(body.into_bytes()));
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        resp
    }
}

impl tower::Service<Request<Body>> for Remembering {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = super::ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let path = parts.uri.path().to_string();
            // Only the small requests worth remembering are buffered.
            let (key, body) = if remembered(&parts.method, &path) {
                let bytes: Bytes = body.collect().await?.to_bytes();
                (
                    remembered_key(&parts.method, &path, &bytes),
                    Body::from(bytes.to_vec()),
                )
            } else {
                (None, body)
            };
            let Some(key) = key else {
                let req = Request::from_parts(parts, body);
                return this
                    .inner
                    .send(req)
                    .await
                    .map_err(|e| Box::new(e) as BoxError);
            };
            let offline = {
                let mut m = this.memory.lock();
                let offline = m.offline_until.is_some_and(|t| Instant::now() < t);
                if offline && let Some(body) = m.recall(&key) {
                    return Ok(Self::answer(body));
                }
                offline
            };
            match this.inner.send(Request::from_parts(parts, body)).await {
                Ok(resp) => {
                    if offline {
                        tracing::info!("the API server answers again");
                    }
                    this.memory.lock().offline_until = None;
                    let status = resp.status();
                    if status == StatusCode::NOT_FOUND {
                        if this.memory.lock().remove(&key) {
                            this.changed.notify_one();
                        }
                        return Ok(resp);
                    }
                    if !status.is_success() {
                        return Ok(resp);
                    }
                    let (parts, body) = resp.into_parts();
                    let bytes = body.collect().await?.to_bytes();
                    if let Ok(text) = std::str::from_utf8(&bytes) {
                        let mut m = this.memory.lock();
                        if m.answers.get(&key).is_none_or(|a| a.body != text) {
                            m.insert(key, text.to_string());
                            drop(m);
                            this.changed.notify_one();
                        }
                    }
                    Ok(Response::from_parts(parts, Body::from(bytes.to_vec())))
                }
                Err(e) => {
                    let mut m = this.memory.lock();
                    if !offline {
                        tracing::warn!(error = %e, "no API server answers; using what this node remembers");
                    }
                    m.offline_until = Some(Instant::now() + OFFLINE_HOLD);
                    match m.recall(&key) {
                        Some(body) => Ok(Self::answer(body)),
                        None => Err(Box::new(e) as BoxError),
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_reads_a_pod_start_needs_are_remembered() {
        let get = Method::GET;
        assert!(remembered_key(&get, "/api/v1/namespaces/a/secrets/s", b"").is_some());
        assert!(remembered_key(&get, "/api/v1/namespaces/a/configmaps/c", b"").is_some());
        assert!(remembered_key(&get, "/apis/wkube.dev/v1/modules/hello", b"").is_some());
        assert!(remembered_key(&get, "/api/v1/namespaces/a/secrets", b"").is_none());
        assert!(remembered_key(&get, "/api/v1/pods", b"").is_none());
        assert!(remembered_key(&get, "/api/v1/namespaces/a/secrets/", b"").is_none());
        assert!(remembered_key(&Method::PUT, "/api/v1/namespaces/a/secrets/s", b"{}").is_none());
        let t = "/api/v1/namespaces/a/serviceaccounts/default/token";
        let one = remembered_key(&Method::POST, t, br#"{"pod":"one"}"#).unwrap();
        let two = remembered_key(&Method::POST, t, br#"{"pod":"two"}"#).unwrap();
        assert_ne!(one, two, "tokens of two pods are told apart");
    }

    #[test]
    fn memory_stays_within_its_bounds_dropping_the_least_recently_used() {
        let mut m = Memory::default();
        for i in 0..MAX_ENTRIES + 10 {
            m.insert(format!("k{i}"), "x".into());
            if i == 0 {
                continue;
            }
            // k0 stays in use.
            m.recall("k0");
        }
        assert_eq!(m.answers.len(), MAX_ENTRIES);
        assert!(m.answers.contains_key("k0"));
        assert!(!m.answers.contains_key("k1"));
        let big = "y".repeat(MAX_BYTES / 2 + 1);
        m.insert("a".into(), big.clone());
        m.insert("b".into(), big);
        assert!(m.bytes <= MAX_BYTES);
        assert!(m.answers.contains_key("b") && !m.answers.contains_key("a"));
    }

    #[tokio::test]
    async fn an_unreachable_server_is_answered_from_memory_and_the_checkpoint() {
        use tower::ServiceExt;
        // A server that answers one GET of a Secret, then goes away.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/api/v1/namespaces/a/secrets/s",
            axum::routing::get(|| async { r#"{"kind":"Secret"}"# }),
        );
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let cfg = kube::Config::new(format!("http://{addr}").parse().unwrap());
        let inner = kube::Client::try_from(cfg).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoint::open(dir.path(), &dir.path().join("key")).unwrap();
        let svc = Remembering::new(inner.clone(), Some(&cp));
        let get = || {
            Request::get("/api/v1/namespaces/a/secrets/s")
                .body(Body::empty())
                .unwrap()
        };
        let text = |r: Response<Body>| async move {
            String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
        };
        let first = svc.clone().oneshot(get()).await.unwrap();
        assert_eq!(text(first).await, r#"{"kind":"Secret"}"#);
        server.abort();
        let _ = server.await;
        let offline = svc.clone().oneshot(get()).await.unwrap();
        assert_eq!(text(offline).await, r#"{"kind":"Secret"}"#);
        // Unremembered requests still fail.
        let list = Request::get("/api/v1/namespaces/a/secrets")
            .body(Body::empty())
            .unwrap();
        assert!(svc.clone().oneshot(list).await.is_err());
        // After a restart, from the checkpoint.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        svc.changed.notify_one();
        tx.send(()).unwrap();
        svc.clone()
            .keep(cp.clone(), async move {
                let _ = rx.await;
            })
            .await;
        let restarted = Remembering::new(inner, Some(&cp));
        let answer = restarted.oneshot(get()).await.unwrap();
        assert_eq!(text(answer).await, r#"{"kind":"Secret"}"#);
    }
}
