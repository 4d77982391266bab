//! Pod IPs from the node's `podCIDR`. They are virtual (loopback range by
//! default) and unique per pod on the node; the API server gives every node
//! its own CIDR, so they are unique in the cluster.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// Why a CIDR could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpamError {
    #[error("podCIDR {0:?} is not an IPv4 CIDR like 127.128.0.0/18")]
    BadCidr(String),
    #[error("no free pod IP left in {0}")]
    Exhausted(String),
}

/// Allocator over one IPv4 CIDR. The network and broadcast addresses are
/// never handed out, as on a real subnet.
#[derive(Debug)]
pub struct PodIps {
    cidr: String,
    base: u32,
    size: u32,
    used: BTreeSet<u32>,
    /// Where the next search starts, so a released IP is not reused at
    /// once (a late packet for the old pod must not reach the new one).
    next: u32,
}

impl PodIps {
    /// # Errors
    /// [`IpamError::BadCidr`] unless `cidr` is `A.B.C.D/N` with N in 8..=30.
    pub fn new(cidr: &str) -> Result<PodIps, IpamError> {
        let bad = || IpamError::BadCidr(cidr.to_string());
        let (addr, bits) = cidr.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let bits: u32 = bits.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&bits) {
            return Err(bad());
        }
        let size = 1u32 << (32 - bits);
        let base = u32::from(addr) & !(size - 1);
        Ok(PodIps {
            cidr: cidr.to_string(),
            base,
            size,
            used: BTreeSet::new(),
            next: 1,
        })
    }

    /// Whether `ip` lies in this CIDR.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip).wrapping_sub(self.base) < self.size
    }

    /// Marks `ip` as taken (a pod found running after a restart). Returns
    /// false if it is outside the CIDR or already taken.
    pub fn reserve(&mut self, ip: Ipv4Addr) -> bool {
        if !self.contains(ip) {
            return false;
        }
        self.used.insert(u32::from(ip) - self.base)
    }

    /// The next free IP.
    ///
    /// # Errors
    /// [`IpamError::Exhausted`] when every host address is in use.
    pub fn allocate(&mut self) -> Result<Ipv4Addr, IpamError> {
        let hosts = self.size - 2;
        for step in 0..hosts {
            let off = 1 + (self.next - 1 + step) % hosts;
            if !self.used.contains(&off) {
                self.used.insert(off);
                self.next = 1 + off % hosts;
                return Ok(Ipv4Addr::from(self.base + off));
            }
        }
        Err(IpamError::Exhausted(self.cidr.clone()))
    }

    /// Returns `ip` to the pool.
    pub fn release(&mut self, ip: Ipv4Addr) {
        if self.contains(ip) {
            self.used.remove(&(u32::from(ip) - self.base));
        }
    }

    /// IPs in use.
    pub fn in_use(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_come_from_the_cidr_skipping_network_and_broadcast() {
        let mut ips = PodIps::new("127.128.64.0/30").unwrap();
        assert_eq!(ips.allocate().unwrap(), Ipv4Addr::new(127, 128, 64, 1));
        assert_eq!(ips.allocate().unwrap(), Ipv4Addr::new(127, 128, 64, 2));
        assert_eq!(
            ips.allocate(),
            Err(IpamError::Exhausted("127.128.64.0/30".into()))
        );
    }

    #[test]
    fn a_released_ip_is_not_reused_at_once() {
        let mut ips = PodIps::new("10.0.0.0/24").unwrap();
        let a = ips.allocate().unwrap();
        ips.release(a);
        let b = ips.allocate().unwrap();
        assert_ne!(a, b);
        assert_eq!(ips.in_use(), 1);
    }

    #[test]
    fn reserved_ips_are_skipped_and_foreign_ones_refused() {
        let mut ips = PodIps::new("10.0.0.0/24").unwrap();
        assert!(ips.reserve(Ipv4Addr::new(10, 0, 0, 1)));
        assert!(!ips.reserve(Ipv4Addr::new(10, 0, 0, 1)));
        assert!(!ips.reserve(Ipv4Addr::new(10, 0, 1, 1)));
        assert_eq!(ips.allocate().unwrap(), Ipv4Addr::new(10, 0, 0, 2));
    }

    #[test]
    fn malformed_cidrs_are_refused() {
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "10.0.0.0/31"] {
            assert!(PodIps::new(bad).is_err(), "{bad}");
        }
    }
}
