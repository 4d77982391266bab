//! The `local` provider: the "cloud" is the machines wkube runs on.
//!
//! - Load balancers are addresses from a loopback range
//!   (`--lb-range`, default `127.0.0.100-127.0.0.199`); the node proxies
//!   serve them. The allocation lives in this process and is rebuilt from
//!   the Services' `status.loadBalancer` when a controller manager starts
//!   (or takes over as leader), so it survives restarts and fail-overs.
//! - A machine exists until `wkube node remove NAME` marks its Node with
//!   the [`MACHINE_REMOVED`] annotation: an API object, so it works from
//!   any host that can reach the API server.
//! - Routes: pod addresses are loopback addresses reached through the
//!   node agents, so there is nothing to route.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, Node, Service};
use kube::ResourceExt;
use parking_lot::Mutex;

use super::{CloudError, Provider};

/// The annotation `wkube node remove` puts on a Node whose machine is gone.
pub const MACHINE_REMOVED: &str = "wkube.dev/machine-removed";

/// An inclusive range of IPv4 addresses (`A.B.C.D-E.F.G.H`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressRange {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

impl AddressRange {
    /// Parses `127.0.0.100-127.0.0.199`.
    ///
    /// # Errors
    /// A message for the flag parser when the text is not a non-empty range.
    pub fn parse(s: &str) -> Result<AddressRange, String> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("{s:?}: expected FIRST-LAST, e.g. 127.0.0.100-127.0.0.199"))?;
        let first: Ipv4Addr = a.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
        let last: Ipv4Addr = b.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
        if u32::from(first) > u32::from(last) {
            return Err(format!("{s:?}: the first address is above the last"));
        }
        Ok(AddressRange { first, last })
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (u32::from(self.first)..=u32::from(self.last)).contains(&u32::from(ip))
    }
}

impl Default for AddressRange {
    fn default() -> Self {
        AddressRange {
            first: Ipv4Addr::new(127, 0, 0, 100),
            last: Ipv4Addr::new(127, 0, 0, 199),
        }
    }
}

impl std::fmt::Display for AddressRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// The local provider. Addresses are keyed by Service uid, so a Service
/// deleted and created again under its name never inherits a stale one.
pub struct LocalProvider {
    range: AddressRange,
    /// Address → uid of the Service holding it.
    allocated: Mutex<BTreeMap<Ipv4Addr, String>>,
}

/// The address a Service's status already shows, if any.
fn current_ip(svc: &Service) -> Option<Ipv4Addr> {
    svc.status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .iter()
        .find_map(|i| i.ip.as_deref()?.parse().ok())
}

impl LocalProvider {
    pub fn new(range: AddressRange) -> LocalProvider {
        LocalProvider {
            range,
            allocated: Mutex::new(BTreeMap::new()),
        }
    }

    /// Picks the Service's address: the one it holds; else the one its
    /// status or `spec.loadBalancerIP` names if free; else the lowest free.
    fn allocate(&self, svc: &Service) -> Result<Ipv4Addr, CloudError> {
        let uid = svc.uid().unwrap_or_default();
        let mut allocated = self.allocated.lock();
        if let Some((ip, _)) = allocated.iter().find(|(_, u)| **u == uid) {
            return Ok(*ip);
        }
        let requested: Option<Ipv4Addr> = svc
            .spec
            .as_ref()
            .and_then(|s| s.load_balancer_ip.as_deref())
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse().map_err(|_| CloudError::RequestedAddress {
                    address: s.to_string(),
                    range: self.range,
                })
            })
            .transpose()?;
        if let Some(ip) = requested {
            if !self.range.contains(ip) || allocated.contains_key(&ip) {
                return Err(CloudError::RequestedAddress {
                    address: ip.to_string(),
                    range: self.range,
                });
            }
            allocated.insert(ip, uid);
            return Ok(ip);
        }
        if let Some(ip) = current_ip(svc)
            && self.range.contains(ip)
            && !allocated.contains_key(&ip)
        {
            allocated.insert(ip, uid);
            return Ok(ip);
        }
        let free = (u32::from(self.range.first)..=u32::from(self.range.last))
            .map(Ipv4Addr::from)
            .find(|ip| !allocated.contains_key(ip))
            .ok_or(CloudError::RangeExhausted { range: self.range })?;
        allocated.insert(free, uid);
        Ok(free)
    }
}

#[async_trait::async_trait]
impl Provider for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    fn restore(&self, services: &[Service]) {
        let mut allocated = self.allocated.lock();
        allocated.clear();
        for svc in services {
            let is_lb = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
            if let Some(ip) = current_ip(svc)
                && is_lb
                && self.range.contains(ip)
            {
                // Two Services claiming one address (never written by
                // wkube): the first keeps it, the other gets a new one.
                allocated
                    .entry(ip)
                    .or_insert_with(|| svc.uid().unwrap_or_default());
            }
        }
    }

    async fn ensure_load_balancer(&self, svc: &Service) -> Result<LoadBalancerStatus, CloudError> {
        let ip = self.allocate(svc)?;
        Ok(LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress {
                ip: Some(ip.to_string()),
                ip_mode: Some("VIP".into()),
                ..LoadBalancerIngress::default()
            }]),
        })
    }

    async fn ensure_load_balancer_deleted(&self, svc: &Service) -> Result<(), CloudError> {
        let uid = svc.uid().unwrap_or_default();
        self.allocated.lock().retain(|_, u| *u != uid);
        Ok(())
    }

    async fn instance_exists(&self, node: &Node) -> Result<bool, CloudError> {
        Ok(!node.annotations().contains_key(MACHINE_REMOVED))
    }

    async fn ensure_route(&self, _node: &Node) -> Result<(), CloudError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServiceSpec, ServiceStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(uid: &str, status_ip: Option<&str>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(format!("svc-{uid}")),
                uid: Some(uid.into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                ..ServiceSpec::default()
            }),
            status: status_ip.map(|ip| ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(vec![LoadBalancerIngress {
                        ip: Some(ip.into()),
                        ..LoadBalancerIngress::default()
                    }]),
                }),
                ..ServiceStatus::default()
            }),
        }
    }

    fn ip_of(s: &LoadBalancerStatus) -> String {
        s.ingress.as_ref().unwrap()[0].ip.clone().unwrap()
    }

    fn small() -> LocalProvider {
        LocalProvider::new(AddressRange::parse("127.0.0.100-127.0.0.101").unwrap())
    }

    #[tokio::test]
    async fn services_get_distinct_addresses_until_the_range_runs_out() {
        let p = small();
        let a = p.ensure_load_balancer(&svc("a", None)).await.unwrap();
        let b = p.ensure_load_balancer(&svc("b", None)).await.unwrap();
        assert_eq!(ip_of(&a), "127.0.0.100");
        assert_eq!(
            a.ingress.as_ref().unwrap()[0].ip_mode.as_deref(),
            Some("VIP")
        );
        assert_eq!(ip_of(&b), "127.0.0.101");
        // Asking again is idempotent.
        let again = p.ensure_load_balancer(&svc("a", None)).await.unwrap();
        assert_eq!(ip_of(&again), "127.0.0.100");
        assert!(matches!(
            p.ensure_load_balancer(&svc("c", None)).await,
            Err(CloudError::RangeExhausted { .. })
        ));
        p.ensure_load_balancer_deleted(&svc("a", None))
            .await
            .unwrap();
        let c = p.ensure_load_balancer(&svc("c", None)).await.unwrap();
        assert_eq!(ip_of(&c), "127.0.0.100");
    }

    #[tokio::test]
    async fn a_restart_keeps_the_addresses_services_show() {
        let p = small();
        p.restore(&[svc("b", Some("127.0.0.100"))]);
        let a = p.ensure_load_balancer(&svc("a", None)).await.unwrap();
        assert_eq!(ip_of(&a), "127.0.0.101");
        let b = p
            .ensure_load_balancer(&svc("b", Some("127.0.0.100")))
            .await
            .unwrap();
        assert_eq!(ip_of(&b), "127.0.0.100");
    }

    #[test]
    fn ranges_parse_and_refuse_nonsense() {
        let r = AddressRange::parse("127.0.0.100-127.0.0.199").unwrap();
        assert_eq!(r, AddressRange::default());
        assert!(r.contains(Ipv4Addr::new(127, 0, 0, 150)));
        assert!(!r.contains(Ipv4Addr::new(127, 0, 0, 200)));
        assert!(AddressRange::parse("127.0.0.9-127.0.0.1").is_err());
        assert!(AddressRange::parse("x").is_err());
    }

    #[tokio::test]
    async fn a_machine_exists_until_it_is_marked_removed() {
        let p = small();
        let mut node = Node::default();
        assert!(p.instance_exists(&node).await.unwrap());
        node.metadata.annotations = Some([(MACHINE_REMOVED.to_string(), "true".into())].into());
        assert!(!p.instance_exists(&node).await.unwrap());
    }
}
