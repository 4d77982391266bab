//! What the proxy needs of the pods on its own node, as a seam: the
//! kubelet implements it, so the proxy never reaches into the kubelet.

use std::future::Future;
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::sync::Arc;

use hyper::Request;

use super::route::{ProxyBody, ProxyResponse};

/// A request's answer from a local pod, or why it got none.
pub type Served<'a> = Pin<Box<dyn Future<Output = Result<ProxyResponse, String>> + Send + 'a>>;

/// The pods on this node.
pub trait LocalPods: Send + Sync {
    /// The pod keyed `namespace/name`.
    fn by_key(&self, key: &str) -> Option<Arc<dyn LocalPod>>;
    /// The pod with this address.
    fn by_ip(&self, ip: Ipv4Addr) -> Option<Arc<dyn LocalPod>>;
    /// Every pod.
    fn all(&self) -> Vec<Arc<dyn LocalPod>>;
    /// Changes whenever a pod comes or goes, gets its address, or starts
    /// or stops serving: the set of pod addresses to listen on is only
    /// looked for again when it moved.
    fn serving_epoch(&self) -> u64;
}

/// One pod on this node.
pub trait LocalPod: Send + Sync {
    /// `namespace/name`.
    fn key(&self) -> String;
    /// Its address, once it has one.
    fn ip(&self) -> Option<Ipv4Addr>;
    /// Whether it has an HTTP container serving.
    fn is_serving(&self) -> bool;
    /// Whether it takes requests on `port` (`None`: its first HTTP
    /// container).
    fn can_serve(&self, port: Option<u16>) -> bool;
    /// The containerPorts its serving HTTP containers declared.
    fn serving_ports(&self) -> Vec<u16>;
    /// Answers `req` on `port`, in-process.
    fn serve(&self, port: Option<u16>, req: Request<ProxyBody>) -> Served<'_>;
}
