//! Reaching an agent the control plane cannot dial (a node behind NAT or a
//! firewall that lets connections out only).
//!
//! Such an agent (`wkube agent --behind-nat`) dials every API server and
//! asks, on [`TUNNEL`], to turn that connection around:
//!
//! 1. an HTTP/1.1 `GET` with `Upgrade: wkube-tunnel`, authenticated as the
//!    node itself (only node N may open node N's tunnel);
//! 2. the server answers `101 Switching Protocols`;
//! 3. on the upgraded connection the roles swap: the agent serves its
//!    endpoint's routes over HTTP/2 and the API server is the client, so
//!    one connection carries every log stream, proxied request and summary
//!    read the server sends that node, multiplexed.
//!
//! The API server keeps the open tunnels in [`Tunnels`], by node name; its
//! node client sends through a node's tunnel whenever one is open.
//!
//! Other nodes cannot use that connection: their proxies send pod traffic
//! for a node behind NAT to [`RELAY`] on the API server instead, which
//! passes it on through the tunnel. The Node carries [`BEHIND_NAT`] so
//! they know.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http2::SendRequest;
use parking_lot::Mutex;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// The API server route an agent opens its tunnel on (`GET`, upgraded).
pub const TUNNEL: &str = "/apis/wkube.dev/v1/nodes/{node}/tunnel";

/// The path of [`TUNNEL`] for one node.
pub fn tunnel(node: &str) -> String {
    format!("/apis/wkube.dev/v1/nodes/{node}/tunnel")
}

/// The `Upgrade` protocol name of a tunnel.
pub const PROTOCOL: &str = "wkube-tunnel";

/// HTTP/2 flow-control windows of a tunnel, both ends: per stream, and
/// for the whole connection (64 streams' worth), so a few readers that
/// stop reading (a paused `kubectl logs -f`) cannot stall the node's
/// other streams by filling the connection's window.
pub const STREAM_WINDOW: u32 = 512 << 10;
pub const CONNECTION_WINDOW: u32 = 64 * STREAM_WINDOW;

/// The API server route that passes pod traffic on to a node behind NAT:
/// any method, the agent's [`super::POD_IP`] path under the node's. Also
/// served with a trailing `/` and with `/{*rest}`.
pub const RELAY: &str = "/apis/wkube.dev/v1/nodes/{node}/podip/{ip}/{port}";

/// The path of [`RELAY`] for `agent_path`, a [`super::POD_IP`] path (with
/// its rest and query) on node `node`'s agent.
pub fn relay(node: &str, agent_path: &str) -> String {
    format!("/apis/wkube.dev/v1/nodes/{node}{agent_path}")
}

/// Whether `path` is a [`RELAY`] path.
pub fn is_relay(path: &str) -> bool {
    let segs: Vec<&str> = path.split('/').collect();
    segs.len() >= 9 && segs[..5] == ["", "apis", "wkube.dev", "v1", "nodes"] && segs[6] == "podip"
}

/// Whether `path` is a [`TUNNEL`] path.
pub fn is_tunnel(path: &str) -> bool {
    let segs: Vec<&str> = path.split('/').collect();
    segs.len() == 7 && segs[..5] == ["", "apis", "wkube.dev", "v1", "nodes"] && segs[6] == "tunnel"
}

/// The header a relayed request's own `Authorization` travels in (the
/// relay's `Authorization` is the sending node's credential).
pub const POD_AUTHORIZATION: &str = "x-wkube-pod-authorization";

/// The header a relayed request's own `Host` travels in (the relay's
/// `Host` names the API server), so the pod sees the host it was asked
/// for, as it does without the relay.
pub const POD_HOST: &str = "x-wkube-pod-host";

/// Set by the relay on the answers it passed on from an agent, so the
/// sending proxy can tell the pod's answer from the API server's own
/// refusal (which is a failed delivery, not a response).
pub const RELAYED: &str = "x-wkube-relayed";

/// Relayed requests in flight on one API server, bodies included: at
/// most half the node client's requests, so logs, `top` and proxying for
/// users keep the rest.
pub const MAX_RELAYS: usize = 512;
/// Relayed requests in flight from one sender.
pub const MAX_RELAYS_PER_SENDER: usize = 128;

/// The bounds on relayed requests: all of them, and each sender's.
pub struct RelayLimits {
    all: Arc<Semaphore>,
    by_sender: Arc<Mutex<HashMap<String, usize>>>,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            all: Arc::new(Semaphore::new(MAX_RELAYS)),
            by_sender: Arc::default(),
        }
    }
}

/// One relayed request's place, given back when dropped.
pub struct RelaySeat {
    _all: OwnedSemaphorePermit,
    sender: String,
    by_sender: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for RelaySeat {
    fn drop(&mut self) {
        let mut by = self.by_sender.lock();
        if let Some(n) = by.get_mut(&self.sender) {
            *n -= 1;
            if *n == 0 {
                by.remove(&self.sender);
            }
        }
    }
}

impl RelayLimits {
    /// A seat for a request from `sender`, or `None` at either bound.
    pub fn seat(&self, sender: &str) -> Option<RelaySeat> {
        let all = self.all.clone().try_acquire_owned().ok()?;
        let mut by = self.by_sender.lock();
        let n = by.entry(sender.to_string()).or_insert(0);
        if *n >= MAX_RELAYS_PER_SENDER {
            return None;
        }
        *n += 1;
        Some(RelaySeat {
            _all: all,
            sender: sender.to_string(),
            by_sender: self.by_sender.clone(),
        })
    }
}

/// The Node annotation an agent behind NAT sets (value `"true"`): reach
/// it through the API server.
pub const BEHIND_NAT: &str = "node.wkube.dev/behind-nat";

/// The open tunnels of one API server, by node name: one per node, the
/// newest winning (an agent that reconnects replaces its old tunnel, which
/// is then closed).
#[derive(Default)]
pub struct Tunnels {
    open: Mutex<HashMap<String, Open>>,
    next: AtomicU64,
    /// Bounds on pod traffic relayed to nodes behind NAT.
    pub relays: RelayLimits,
}

/// One open tunnel: its id, its sender, and what tells the task that keeps
/// its connection to close it.
struct Open {
    id: u64,
    send: Sender,
    close: Arc<Notify>,
}

/// Sends requests to an agent over its tunnel.
pub type Sender = SendRequest<Full<Bytes>>;

impl Tunnels {
    /// Records node `node`'s tunnel. Returns its id for [`Tunnels::detach`]
    /// and what is notified when the tunnel must close: a newer tunnel of
    /// the node replaced it, or [`Tunnels::close`] was called (its Node is
    /// gone). The task that keeps the connection waits on it.
    pub fn attach(&self, node: &str, send: Sender) -> (u64, Arc<Notify>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        let replaced = self.open.lock().insert(
            node.to_string(),
            Open {
                id,
                send,
                close: close.clone(),
            },
        );
        if let Some(old) = replaced {
            // `notify_one` keeps the wake-up if the task is not waiting yet.
            old.close.notify_one();
        }
        (id, close)
    }

    /// Forgets tunnel `id` of `node` (not a newer one that replaced it).
    pub fn detach(&self, node: &str, id: u64) {
        let mut open = self.open.lock();
        if open.get(node).is_some_and(|o| o.id == id) {
            open.remove(node);
        }
    }

    /// Closes `node`'s tunnel, if it has one.
    pub fn close(&self, node: &str) {
        if let Some(old) = self.open.lock().remove(node) {
            old.close.notify_one();
        }
    }

    /// Closes the tunnel of every node for which `keep` is false.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.open.lock().retain(|node, o| {
            let kept = keep(node);
            if !kept {
                o.close.notify_one();
            }
            kept
        });
    }

    /// A sender on `node`'s tunnel, if one is open.
    pub fn get(&self, node: &str) -> Option<Sender> {
        let open = self.open.lock();
        let o = open.get(node)?;
        (!o.send.is_closed()).then(|| o.send.clone())
    }

    /// The nodes with an open tunnel, sorted.
    pub fn nodes(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .open
            .lock()
            .iter()
            .filter(|(_, o)| !o.send.is_closed())
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::{Request, Response};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    /// A sender on an HTTP/2 connection to an in-memory server answering
    /// 200 "hi", and the task driving the client side.
    async fn sender() -> (Sender, tokio::task::JoinHandle<()>) {
        let (near, far) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let hi = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(
                    b"hi",
                ))))
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(far), hi)
                .await;
        });
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(near))
                .await
                .unwrap();
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        (send, task)
    }

    #[test]
    fn relay_and_tunnel_paths_are_told_apart() {
        assert!(is_relay("/apis/wkube.dev/v1/nodes/n1/podip/10.42.0.5/8080"));
        assert!(is_relay(
            "/apis/wkube.dev/v1/nodes/n1/podip/10.42.0.5/8080/a/b"
        ));
        assert!(!is_relay("/apis/wkube.dev/v1/nodes/n1/podip/10.42.0.5"));
        assert!(!is_relay("/apis/wkube.dev/v1/nodes/n1/tunnel"));
        assert!(!is_relay("/api/v1/nodes/n1/proxy/podip/10.42.0.5/8080"));
        assert!(is_tunnel("/apis/wkube.dev/v1/nodes/n1/tunnel"));
        assert!(!is_tunnel("/apis/wkube.dev/v1/nodes/n1/tunnel/x"));
        assert!(!is_tunnel("/apis/wkube.dev/v1/modules/n1/tunnel"));
    }

    #[test]
    fn relays_are_bounded_per_sender_and_given_back() {
        let limits = RelayLimits::default();
        let seats: Vec<RelaySeat> = (0..MAX_RELAYS_PER_SENDER)
            .map(|_| limits.seat("system:node:a").expect("a seat"))
            .collect();
        assert!(
            limits.seat("system:node:a").is_none(),
            "past the sender's bound"
        );
        assert!(
            limits.seat("system:node:b").is_some(),
            "another sender waits on nobody"
        );
        drop(seats);
        assert!(limits.seat("system:node:a").is_some());
        assert!(limits.by_sender.lock().is_empty(), "counts are given back");
    }

    #[tokio::test]
    async fn the_newest_tunnel_of_a_node_wins_and_a_closed_one_is_never_handed_out() {
        let tunnels = Tunnels::default();
        let (old, _old_conn) = sender().await;
        let (new, _new_conn) = sender().await;
        let (old_id, old_close) = tunnels.attach("n1", old);
        let (new_id, new_close) = tunnels.attach("n1", new);
        // The replaced tunnel is told to close, its successor is not.
        tokio::time::timeout(std::time::Duration::from_secs(1), old_close.notified())
            .await
            .expect("the replaced tunnel is told to close");
        // The replaced tunnel ending does not take its successor along.
        tunnels.detach("n1", old_id);
        assert_eq!(tunnels.nodes(), vec!["n1".to_string()]);
        let mut send = tunnels.get("n1").expect("n1's tunnel");
        let req = Request::get("http://n1/")
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(send.send_request(req).await.unwrap().status(), 200);
        tunnels.detach("n1", new_id);
        assert!(tunnels.get("n1").is_none());
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), new_close.notified())
                .await
                .is_err(),
            "a tunnel that ended by itself is not told to close"
        );

        let (gone, conn) = sender().await;
        let _ = tunnels.attach("n2", gone);
        conn.abort();
        let _ = conn.await;
        assert!(
            tunnels.get("n2").is_none(),
            "a closed tunnel was handed out"
        );
        assert!(tunnels.nodes().is_empty());
    }

    #[tokio::test]
    async fn closing_a_node_or_every_node_but_some_tells_their_tunnels() {
        let tunnels = Tunnels::default();
        let mut closes = HashMap::new();
        let mut conns = Vec::new();
        for n in ["a", "b", "c"] {
            let (send, conn) = sender().await;
            conns.push(conn);
            closes.insert(n, tunnels.attach(n, send).1);
        }
        let told = |n: &str| {
            let close = closes[n].clone();
            async move {
                tokio::time::timeout(std::time::Duration::from_millis(200), close.notified())
                    .await
                    .is_ok()
            }
        };
        tunnels.close("a");
        tunnels.close("nobody");
        assert!(told("a").await);
        assert_eq!(tunnels.nodes(), ["b", "c"]);
        tunnels.retain(|n| n == "c");
        assert!(told("b").await);
        assert!(!told("c").await, "a kept tunnel is not told to close");
        assert_eq!(tunnels.nodes(), ["c"]);
    }
}
