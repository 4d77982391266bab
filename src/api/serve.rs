//! Serving the API: a bounded accept loop, TLS with optional client
//! certificates (HTTP/2 and HTTP/1.1 by ALPN), and graceful shutdown that
//! lets in-flight requests finish.
//!
//! A connection holds one of `--max-api-connections` slots for as long as
//! it is open, so none may hold one without using it (see [`Deadlines`]):
//! the TLS handshake, the first request, each HTTP/1 request head and each
//! request body have deadlines, HTTP/2 connections are pinged, and a
//! connection with no request in flight is closed once idle. A request in
//! flight — a watch, a log stream, a proxied response — is never cut by
//! these, however long it is quiet.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Extension;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, Version, header};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::authn::user_from_cert;
use super::{ApiState, PeerIdentity, router};

/// Why the API server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("accepting connections: {0}")]
    Accept(#[from] std::io::Error),
}

/// Server TLS: serving certificate and key, plus the CA whose client
/// certificates authenticate users (optional for clients).
pub fn tls_config(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| ServeError::Tls(format!("serving certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| ServeError::Tls(format!("serving key: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
        let ca = ca.map_err(|e| ServeError::Tls(format!("client CA: {e}")))?;
        roots
            .add(ca)
            .map_err(|e| ServeError::Tls(format!("client CA: {e}")))?;
    }
    // Client certificates are optional: bearer tokens are the usual
    // credential, but a certificate from the cluster CA also identifies.
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| ServeError::Tls(format!("client verifier: {e}")))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Tls(format!("serving certificate: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// How long a connection may hold its slot without using it.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// From accept to the end of the TLS handshake (kubectl's own TLS
    /// handshake timeout is 10 s too).
    pub tls_handshake: Duration,
    /// From the connection's start (after TLS) to its first request head,
    /// whatever the protocol: a client connects when it has something to
    /// ask.
    pub first_request: Duration,
    /// HTTP/1: from the end of one exchange to the whole head of the next
    /// (hyper's `header_read_timeout`, which counts the keep-alive wait
    /// too, so an idle HTTP/1 connection lasts this long).
    pub header_read: Duration,
    /// A connection with no request in flight, once it has served one, is
    /// closed after this long (an HTTP/2 connection, as a rule: HTTP/1 is
    /// closed sooner by `header_read`). Watches and other streams are
    /// requests in flight: they are never cut for being quiet.
    pub idle: Duration,
    /// A request body must come within this long from when the handler
    /// starts reading it, plus one second per [`BODY_ALLOWANCE_RATE`]
    /// bytes that came (a large body at a fair rate is not cut; a trickle
    /// is), else the request is answered 408.
    pub body: Duration,
    /// HTTP/2: a PING after this long without a frame from the client...
    pub h2_ping_interval: Duration,
    /// ...and the connection closed if its acknowledgement takes longer.
    pub h2_ping_timeout: Duration,
    /// After an idle connection is told to close (HTTP/2 GOAWAY), how long
    /// it has to do so before it is dropped.
    pub close_grace: Duration,
}

/// Bytes per second of body that extend [`Deadlines::body`] by a second.
pub const BODY_ALLOWANCE_RATE: u64 = 64 << 10;

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            tls_handshake: Duration::from_secs(10),
            first_request: Duration::from_secs(10),
            header_read: Duration::from_secs(30),
            idle: Duration::from_secs(90),
            body: Duration::from_secs(60),
            h2_ping_interval: Duration::from_secs(30),
            h2_ping_timeout: Duration::from_secs(20),
            close_grace: Duration::from_secs(1),
        }
    }
}

/// Serve until `shutdown` resolves, then drain open connections (bounded
/// by `drain`).
pub async fn serve(
    state: Arc<ApiState>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> Result<(), ServeError> {
    let app = router(state.clone());
    let deadlines = Deadlines::default();
    let permits = Arc::new(Semaphore::new(state.config.max_connections.max(1)));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    // Every connection holds a receiver: `closed` resolves once all ended.
    let (stop, _) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    while let Some(crate::accept::Accepted { permit, stream, .. }) = crate::accept::next(
        &listener,
        &permits,
        &mut shutdown,
        "API server",
        Duration::from_millis(50),
    )
    .await
    {
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let acceptor = acceptor.clone();
        let stopped = stop.subscribe();
        tokio::spawn(async move {
            // The slot and the stop signal, shared with a tunnel the
            // connection may turn into.
            let hold = ConnectionHold {
                _slot: Arc::new(permit),
                stop: stopped.clone(),
            };
            let app = app.layer(Extension(hold));
            let Some(acceptor) = acceptor else {
                let peer = PeerIdentity(None);
                return serve_connection(TokioIo::new(stream), app, peer, deadlines, stopped).await;
            };
            let tls = match tokio::time::timeout(deadlines.tls_handshake, acceptor.accept(stream))
                .await
            {
                Ok(Ok(s)) => s,
                _ => return,
            };
            let user = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| user_from_cert(c.as_ref()));
            let peer = PeerIdentity(user);
            serve_connection(TokioIo::new(tls), app, peer, deadlines, stopped).await;
        });
    }
    drop(listener);
    let _ = stop.send(true);
    if tokio::time::timeout(drain, stop.closed()).await.is_err() {
        tracing::warn!("API connections still open after the drain period; closing them");
    }
    Ok(())
}

/// What an API connection holds while it lasts, lent to every request on
/// it (an extension) so that a connection upgraded into a node's tunnel,
/// which outlives its HTTP exchange, keeps holding it:
/// - its slot under `--max-api-connections`, given back once the
///   connection and its tunnel have both ended;
/// - the server's stop signal: at shutdown the tunnel closes, and the
///   drain waits for it as for any connection.
#[derive(Clone)]
pub struct ConnectionHold {
    _slot: Arc<OwnedSemaphorePermit>,
    stop: watch::Receiver<bool>,
}

impl ConnectionHold {
    /// Resolves once the server stops (or is gone).
    pub async fn stopping(&mut self) {
        let _ = self.stop.wait_for(|s| *s).await;
    }
}

/// What a connection is doing, for its idle deadline.
#[derive(Debug, Clone, Copy)]
struct Activity {
    /// Requests whose response (body included) is not done.
    in_flight: usize,
    /// Requests begun so far.
    requests: u64,
    /// When `in_flight` last went to zero (or the connection started).
    idle_since: Instant,
}

/// One request in flight on a connection, until dropped with its response
/// body.
struct Busy(Arc<watch::Sender<Activity>>);

impl Busy {
    fn begin(activity: &Arc<watch::Sender<Activity>>) -> Busy {
        activity.send_modify(|a| {
            a.in_flight += 1;
            a.requests += 1;
        });
        Busy(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.send_modify(|a| {
            a.in_flight -= 1;
            if a.in_flight == 0 {
                a.idle_since = Instant::now();
            }
        });
    }
}

/// Serves HTTP/1.1 or HTTP/2 (with upgrades) on `io` until the client
/// closes it, it breaks, a deadline closes it, or `stop` turns true (then
/// gracefully: requests in flight finish).
async fn serve_connection<I>(
    io: I,
    app: axum::Router,
    peer: PeerIdentity,
    deadlines: Deadlines,
    mut stop: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let started = Instant::now();
    let activity = Arc::new(watch::Sender::new(Activity {
        in_flight: 0,
        requests: 0,
        idle_since: started,
    }));
    let mut seen = activity.subscribe();
    let svc = Guarded {
        inner: TowerToHyperService::new(app.layer(Extension(peer))),
        activity: activity.clone(),
        body_deadline: deadlines.body,
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(deadlines.header_read);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(deadlines.h2_ping_interval)
        .keep_alive_timeout(deadlines.h2_ping_timeout);
    let conn = builder.serve_connection_with_upgrades(io, svc);
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    let mut closing_since: Option<Instant> = None;
    loop {
        let now = *seen.borrow_and_update();
        let deadline = if now.in_flight > 0 {
            None
        } else if let Some(t) = closing_since {
            Some(t + deadlines.close_grace)
        } else if now.requests == 0 {
            Some(started + deadlines.first_request)
        } else {
            Some(now.idle_since + deadlines.idle)
        };
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = seen.changed() => {}
            () = tokio::time::sleep_until(deadline.unwrap_or(started).into()), if deadline.is_some() => {
                if closing_since.is_some() {
                    // Told to close and did not: dropped.
                    return;
                }
                // Idle (or never used): told to close — an HTTP/2 client
                // gets a GOAWAY, an idle HTTP/1 connection or one that
                // never sent a request is closed at once.
                conn.as_mut().graceful_shutdown();
                closing_since = Some(Instant::now());
            }
        }
    }
}

/// The API's service on one connection: counts requests in flight for the
/// idle deadline, and bounds how long a request body may take to come.
#[derive(Clone)]
struct Guarded<S> {
    inner: S,
    activity: Arc<watch::Sender<Activity>>,
    body_deadline: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S> hyper::service::Service<Request<Incoming>> for Guarded<S>
where
    S: hyper::service::Service<Request<TimedBody<Incoming>>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Tracked<Body>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let busy = Busy::begin(&self.activity);
        let expired = Arc::new(AtomicBool::new(false));
        let http1 = req.version() <= Version::HTTP_11;
        let limit = self.body_deadline;
        let req = req.map(|b| TimedBody::new(b, limit, expired.clone()));
        let answer = self.inner.call(req);
        Box::pin(async move {
            let mut resp = answer.await?;
            if expired.load(Ordering::Acquire) {
                // Whatever the handler made of a body that broke off (a
                // 400 as a rule), the client was too slow to send it.
                resp = body_timeout(limit, http1);
            }
            Ok(resp.map(|body| Tracked {
                inner: body,
                _busy: busy,
            }))
        })
    }
}

/// The 408 for a request body that did not come in time, as a Kubernetes
/// `Status`. An HTTP/1 connection is closed after it: the rest of the body
/// may still be on its way.
fn body_timeout(limit: Duration, http1: bool) -> Response<Body> {
    let status = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "Timeout: the request body did not arrive within {}s", limit.as_secs()
        ),
        "reason": "Timeout",
        "code": 408,
    });
    let mut resp = Response::new(Body::from(status.to_string()));
    *resp.status_mut() = StatusCode::REQUEST_TIMEOUT;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if http1 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted as in flight until
    /// it is done (a watch's, for as long as it streams).
    struct Tracked<B> {
        #[pin]
        inner: B,
        _busy: Busy,
    }
}

impl<B: HttpBody> HttpBody for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A request body with a deadline, counted from when it is first read:
    /// [`Deadlines::body`] plus a second per [`BODY_ALLOWANCE_RATE`] bytes
    /// received. Past it, reading fails and `expired` is set.
    struct TimedBody<B> {
        #[pin]
        inner: B,
        limit: Duration,
        received: u64,
        started: Option<Instant>,
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
        expired: Arc<AtomicBool>,
    }
}

impl<B> TimedBody<B> {
    fn new(inner: B, limit: Duration, expired: Arc<AtomicBool>) -> TimedBody<B> {
        TimedBody {
            inner,
            limit,
            received: 0,
            started: None,
            timer: None,
            expired,
        }
    }
}

/// Why a request body read failed: it took too long.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within its deadline")]
struct BodyTimeout;

impl<B> HttpBody for TimedBody<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if this.expired.load(Ordering::Acquire) {
            return Poll::Ready(Some(Err(BodyTimeout.into())));
        }
        let started = *this.started.get_or_insert_with(Instant::now);
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.received += data.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let allowance =
                    Duration::from_millis(this.received.saturating_mul(1000) / BODY_ALLOWANCE_RATE);
                let deadline = tokio::time::Instant::from(started + *this.limit + allowance);
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    this.expired.store(true, Ordering::Release);
                    return Poll::Ready(Some(Err(BodyTimeout.into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::http::HeaderMap;
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    use http_body_util::{BodyExt, Empty};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    fn short() -> Deadlines {
        Deadlines {
            tls_handshake: Duration::from_secs(1),
            first_request: Duration::from_millis(300),
            header_read: Duration::from_secs(2),
            idle: Duration::from_millis(400),
            body: Duration::from_millis(400),
            h2_ping_interval: Duration::from_secs(30),
            h2_ping_timeout: Duration::from_secs(20),
            close_grace: Duration::from_millis(200),
        }
    }

    fn app() -> axum::Router {
        axum::Router::new()
            .route("/", get(|| async { "ok" }))
            // A watch with nothing to say after its first event.
            .route(
                "/stream",
                get(|| async {
                    let first = futures::stream::once(async {
                        Ok::<_, std::io::Error>(Bytes::from_static(b"event\n"))
                    });
                    Body::from_stream(futures::StreamExt::chain(first, futures::stream::pending()))
                }),
            )
            .route(
                "/upload",
                post(|headers: HeaderMap, body: Body| async move {
                    match crate::api::body::read_limited(&headers, body, 1 << 20).await {
                        Ok(b) => b.len().to_string().into_response(),
                        Err(e) => e.into_response(),
                    }
                }),
            )
    }

    /// A plain-TCP server of `app` with deadlines `d`.
    async fn server(d: Deadlines) -> (SocketAddr, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let peer = PeerIdentity(None);
                let io = TokioIo::new(stream);
                tokio::spawn(serve_connection(io, app(), peer, d, rx.clone()));
            }
        });
        (addr, stop)
    }

    /// Reads until the server closes `conn`; how long that took from
    /// `since` (or `None` past `within`).
    async fn closed_after(
        conn: &mut TcpStream,
        since: Instant,
        within: Duration,
    ) -> Option<Duration> {
        let mut buf = vec![0u8; 4096];
        tokio::time::timeout(within, async {
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => return since.elapsed(),
                    Ok(_) => {}
                }
            }
        })
        .await
        .ok()
    }

    #[tokio::test]
    async fn a_connection_that_sends_nothing_or_half_a_head_is_closed_at_the_first_request_deadline()
     {
        let d = short();
        let (addr, _stop) = server(d).await;
        let started = Instant::now();
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut partial = TcpStream::connect(addr).await.unwrap();
        partial
            .write_all(b"GET / HTTP/1.1\r\nHost: wkube\r\n")
            .await
            .unwrap();
        for conn in [&mut silent, &mut partial] {
            let took = closed_after(conn, started, Duration::from_secs(5)).await;
            let took = took.expect("the server closed the connection");
            assert!(
                took >= d.first_request
                    && took < d.first_request + d.close_grace + Duration::from_millis(700),
                "{took:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_idle_http1_connection_is_closed_but_not_while_a_quiet_stream_is_open() {
        let d = short();
        let (addr, _stop) = server(d).await;
        // Served, then idle: closed once idle for `d.idle`.
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET / HTTP/1.1\r\nHost: wkube\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = conn.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        let answered = Instant::now();
        let took = closed_after(&mut conn, answered, Duration::from_secs(5)).await;
        let took = took.expect("an idle connection is closed");
        assert!(
            took >= d.idle && took < d.idle + Duration::from_secs(1),
            "{took:?}"
        );
        // A stream quiet for longer than every deadline stays open.
        let mut watch = TcpStream::connect(addr).await.unwrap();
        watch
            .write_all(b"GET /stream HTTP/1.1\r\nHost: wkube\r\n\r\n")
            .await
            .unwrap();
        let n = watch.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        let quiet = d.first_request + d.idle + d.body + d.close_grace + Duration::from_millis(500);
        let cut = closed_after(&mut watch, Instant::now(), quiet).await;
        assert_eq!(cut, None, "a quiet stream was cut");
    }

    #[tokio::test]
    async fn an_idle_http2_connection_is_closed_but_not_while_a_quiet_stream_is_open() {
        let d = short();
        let (addr, _stop) = server(d).await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        let conn = tokio::spawn(conn);
        let req = |path: &str| Request::get(path).body(Empty::<Bytes>::new()).unwrap();
        let resp = send.send_request(req("/stream")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let mut stream = resp.into_body();
        let first = stream.frame().await.unwrap().unwrap();
        assert_eq!(first.data_ref().map(|b| &b[..]), Some(&b"event\n"[..]));
        tokio::time::sleep(d.first_request + d.idle + d.close_grace + Duration::from_millis(500))
            .await;
        // Still open: another request on it is served.
        let resp = send.send_request(req("/")).await.expect("connection open");
        assert_eq!(resp.status(), StatusCode::OK);
        drop(resp);
        // The stream ends: idle, the connection closes.
        drop(stream);
        let ended = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), conn)
            .await
            .expect("the server closed the idle connection")
            .unwrap()
            .unwrap();
        let took = ended.elapsed();
        assert!(
            took >= d.idle - Duration::from_millis(50) && took < d.idle + Duration::from_secs(1),
            "{took:?}"
        );
    }

    /// Sends a POST to /upload declaring `len` bytes, `first` bytes of
    /// them now, `rest` more after `pause`; the reply's head.
    async fn upload(
        addr: SocketAddr,
        len: usize,
        first: usize,
        pause: Duration,
        rest: usize,
    ) -> (String, Duration) {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        let head = format!("POST /upload HTTP/1.1\r\nHost: wkube\r\nContent-Length: {len}\r\n\r\n");
        conn.write_all(head.as_bytes()).await.unwrap();
        conn.write_all(&vec![b'x'; first]).await.unwrap();
        let (mut rd, mut wr) = conn.into_split();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(pause).await;
            let _ = wr.write_all(&vec![b'x'; rest]).await;
            // Hold the connection open.
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let mut reply = Vec::new();
        let mut buf = vec![0u8; 4096];
        let read = tokio::time::timeout(Duration::from_secs(5), async {
            while !reply.windows(4).any(|w| w == b"\r\n\r\n") {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => reply.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        writer.abort();
        assert!(read.is_ok(), "no reply within 5 s");
        (
            String::from_utf8_lossy(&reply).into_owned(),
            started.elapsed(),
        )
    }

    #[tokio::test]
    async fn a_trickled_body_is_answered_408_and_one_at_a_fair_rate_is_not() {
        let d = short();
        let (addr, _stop) = server(d).await;
        // 10 of 100 bytes, then nothing.
        let (head, took) = upload(addr, 100, 10, Duration::from_secs(60), 0).await;
        assert!(head.starts_with("HTTP/1.1 408"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        assert!(
            took >= d.body && took < d.body + Duration::from_secs(1),
            "{took:?}"
        );
        // 128 KiB, a pause past the base deadline but within the two
        // seconds those bytes earned, then the rest.
        let (head, _) = upload(
            addr,
            256 << 10,
            128 << 10,
            d.body + Duration::from_millis(300),
            128 << 10,
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
}
