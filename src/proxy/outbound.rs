//! A pod's outgoing wasi:http requests to the cluster: service names
//! (`NAME`, `NAME.NS`, `NAME.NS.svc`, `NAME.NS.svc.cluster.local`),
//! ClusterIPs, load-balancer addresses and pod IPs are taken here, before
//! the outbound policy, and delivered by the node's proxy. Addresses in the
//! cluster's ranges with nothing behind them are refused, never sent to a
//! network.
//!
//! The pod's NetworkPolicies are asked for every request taken here (in
//! [`Proxy::forward`]). A pod isolated for egress that calls an address
//! outside the cluster is let through when an egress `ipBlock` allows it
//! (sent by the proxy, whatever the allow-list annotation says) and
//! refused with 403 otherwise; host names outside the cluster are still
//! the allow-list's, as the proxy resolves no DNS.

use std::net::Ipv4Addr;
use std::sync::Arc;

use http_body_util::BodyExt;

use super::Proxy;
use super::netpol::{Peer, Verdict};
use super::route::{BoxError, ForwardError, text};
use super::table::{Resolution, Target};
use crate::runtime::{GuestRequest, OutboundRouter, RoutedResponse};

/// The router of one pod.
pub struct PodRouter {
    proxy: Arc<Proxy>,
    /// The pod's namespace, for short service names.
    namespace: String,
    /// `namespace/name`, the pod as NetworkPolicies name it.
    key: String,
    /// The pod's address, the client address session affinity keys on.
    pod_ip: Option<Ipv4Addr>,
}

impl PodRouter {
    pub fn new(
        proxy: Arc<Proxy>,
        namespace: String,
        name: &str,
        pod_ip: Option<Ipv4Addr>,
    ) -> PodRouter {
        PodRouter {
            proxy,
            key: format!("{namespace}/{name}"),
            namespace,
            pod_ip,
        }
    }
}

impl OutboundRouter for PodRouter {
    fn route(&self, req: GuestRequest) -> Result<RoutedResponse, GuestRequest> {
        let Some(host) = req.uri().host().map(str::to_string) else {
            return Err(req);
        };
        let https = req.uri().scheme_str() == Some("https");
        let port = req.uri().port_u16().unwrap_or(if https { 443 } else { 80 });
        let table = self.proxy.table();
        let target = match table.resolve(&host, port, &self.namespace, &self.proxy.config.ranges) {
            Resolution::NotCluster => {
                let Ok(ip) = host.parse::<Ipv4Addr>() else {
                    return Err(req);
                };
                if https || !table.netpol().egress_isolated(&self.key) {
                    return Err(req);
                }
                let from = Peer::Pod(&self.key);
                let verdict = table
                    .netpol()
                    .decide(&from, &Peer::External(Some(ip)), port);
                let proxy = self.proxy.clone();
                return Ok(Box::pin(async move {
                    Ok(match verdict {
                        Verdict::Denied(why) => text(hyper::StatusCode::FORBIDDEN, why),
                        Verdict::Allowed => {
                            let req =
                                req.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync());
                            proxy.to_external(ip, port, req).await
                        }
                    })
                }));
            }
            Resolution::Refused(why) => {
                tracing::debug!(%host, port, %why, "outgoing request refused");
                return Ok(Box::pin(async {
                    Err(wasmtime_wasi_http::Error::ConnectionRefused)
                }));
            }
            Resolution::Found(t) => t,
            Resolution::Headless { svc, port } => {
                // The name stands for the pods; take one serving `port`.
                let eps: Vec<_> = svc
                    .ports
                    .iter()
                    .flat_map(|p| p.endpoints.iter())
                    .filter(|e| e.port == port)
                    .collect();
                match eps.get(svc.ports.first().map_or(0, |p| p.next_index()) % eps.len().max(1)) {
                    Some(e) => Target::PodIp { ip: e.ip, port },
                    None => {
                        return Ok(Box::pin(async {
                            Err(wasmtime_wasi_http::Error::ConnectionRefused)
                        }));
                    }
                }
            }
        };
        let proxy = self.proxy.clone();
        let client = self.pod_ip;
        let key = self.key.clone();
        Ok(Box::pin(async move {
            let req = req.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync());
            let from = Peer::Pod(&key);
            match proxy.forward(&target, &from, client, https, req).await {
                Ok(resp) => Ok(resp),
                Err(ForwardError::Refused(why)) => {
                    tracing::debug!(%why, "outgoing request refused");
                    Err(wasmtime_wasi_http::Error::ConnectionRefused)
                }
            }
        }))
    }
}
