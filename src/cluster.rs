//! What the cluster's parts agree on about addresses and names: the IPv4
//! ranges (services, pods), their defaults, and the host's name as a node
//! name. The API server, the kubelet, the proxy and the command line all
//! take them from here.

use std::net::Ipv4Addr;

/// The service range ClusterIPs come from by default (loopback, so a
/// service address can never leak onto a network).
pub const DEFAULT_SERVICE_CIDR: &str = "127.96.0.0/16";
/// The pod range by default.
pub const DEFAULT_CLUSTER_CIDR: &str = "127.128.0.0/9";

/// An IPv4 CIDR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub base: u32,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (expected a.b.c.d/n)"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let prefix: u8 = len.parse().map_err(|e| format!("{s:?}: {e}"))?;
        if prefix > 30 {
            return Err(format!("{s:?}: prefix length must be at most 30"));
        }
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Ok(Cidr {
            base: u32::from(ip) & mask,
            prefix,
        })
    }

    pub fn size(&self) -> u32 {
        1u32 << (32 - self.prefix)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        };
        u32::from(ip) & mask == self.base
    }

    /// The `i`-th address of the range.
    pub fn nth(&self, i: u32) -> Ipv4Addr {
        Ipv4Addr::from(self.base + i)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

/// The host's name, for the default node name (lower-cased, as node names
/// are DNS subdomains).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_ascii_lowercase())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "wkube-node".into())
}
