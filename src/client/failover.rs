//! One API client over several API servers: requests go to the server
//! that answered last, and move on to the next when it cannot be reached.
//!
//! Every server of a highly available control plane serves the same
//! cluster from the same store, so any of them can take any request; a
//! watch broken by a server's death is resumed by the caller (kube's
//! watcher) from its last resourceVersion, and that request lands on a
//! live server.
//!
//! Only transport failures move a request on: an HTTP answer, even an
//! error, is the cluster's answer. The request body is buffered so the
//! request can be sent again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use http_body_util::BodyExt;
use hyper::{Request, Response};
use kube::client::Body;

use super::BoxError;

/// The tower service behind a failover [`kube::Client`].
#[derive(Clone)]
pub struct Failover {
    clients: Arc<[kube::Client]>,
    /// The server that answered last.
    current: Arc<AtomicUsize>,
}

impl Failover {
    /// `clients` in order of preference; at least one.
    pub fn new(clients: Vec<kube::Client>) -> Failover {
        assert!(!clients.is_empty(), "a failover client needs a server");
        Failover {
            clients: clients.into(),
            current: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl tower::Service<Request<Body>> for Failover {
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
            let body = body.collect().await?.to_bytes();
            let n = this.clients.len();
            let first = this.current.load(Ordering::Relaxed);
            let mut last_err = None;
            for i in 0..n {
                let at = (first + i) % n;
                let mut attempt = Request::new(Body::from(body.to_vec()));
                *attempt.method_mut() = parts.method.clone();
                *attempt.uri_mut() = parts.uri.clone();
                *attempt.version_mut() = parts.version;
                *attempt.headers_mut() = parts.headers.clone();
                match this.clients[at].send(attempt).await {
                    Ok(resp) => {
                        if at != first {
                            tracing::info!(server = at, "API requests fail over to another server");
                            this.current.store(at, Ordering::Relaxed);
                        }
                        return Ok(resp);
                    }
                    Err(e) => {
                        tracing::debug!(server = at, error = %e, "API server unreachable");
                        last_err = Some(e);
                    }
                }
            }
            Err(last_err.map_or_else(|| "no API server".into(), |e| Box::new(e) as BoxError))
        })
    }
}

/// A [`kube::Client`] that fails over between `clients`.
pub fn client(clients: Vec<kube::Client>) -> kube::Client {
    if clients.len() == 1 {
        return clients.into_iter().next().expect("one client");
    }
    kube::Client::new(Failover::new(clients), "default")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn serve_ok() -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let app = axum::Router::new().route(
                "/version",
                axum::routing::get(|| async {
                    axum::Json(serde_json::json!({
                        "major": "1", "minor": "33", "gitVersion": "v1", "gitCommit": "",
                        "gitTreeState": "", "buildDate": "", "goVersion": "", "compiler": "",
                        "platform": ""
                    }))
                }),
            );
            let _ = axum::serve(listener, app).await;
        });
        (url, task)
    }

    fn plain(url: &str) -> kube::Client {
        let mut cfg = kube::Config::new(url.parse().unwrap());
        cfg.connect_timeout = Some(std::time::Duration::from_secs(1));
        kube::Client::try_from(cfg).unwrap()
    }

    #[tokio::test]
    async fn a_request_moves_on_from_a_dead_server_and_stays_with_the_live_one() {
        // A port with nobody listening.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let (live, _task) = serve_ok().await;
        let failover = Failover::new(vec![plain(&dead), plain(&live)]);
        let current = failover.current.clone();
        let client = kube::Client::new(failover, "default");
        let v = client.apiserver_version().await.unwrap();
        assert_eq!(v.git_version, "v1");
        assert_eq!(current.load(Ordering::Relaxed), 1);
        client.apiserver_version().await.unwrap();
        assert_eq!(current.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn with_every_server_down_the_error_is_the_transport_error() {
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let client = kube::Client::new(Failover::new(vec![plain(&dead), plain(&dead)]), "default");
        assert!(client.apiserver_version().await.is_err());
    }
}
