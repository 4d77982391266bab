//! What the cluster's parts agree on about addresses and names: the IPv4
//! ranges (services, pods), their defaults, the host's name as a node
//! name and the machine's architecture under Kubernetes' names. The API
//! server, the kubelet, the proxy and the command line all take them from
//! here.

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

/// The architecture this binary was built for, under the name Kubernetes
/// uses (Go's `GOARCH`): what a node reports in its `kubernetes.io/arch`
/// label and `nodeInfo`, and the API server in `/version`. A scheduled
/// pod's `nodeSelector` matches against it, so it must name the machine
/// the code runs on, not the one that built it (a cross-built agent on an
/// Arm box is `arm64`).
pub fn node_arch() -> &'static str {
    go_arch(std::env::consts::ARCH, cfg!(target_endian = "little"))
}

/// Rust's architecture name (`std::env::consts::ARCH`) under Go's name.
/// Go tells the endianness of some architectures by name; Rust does not.
fn go_arch(rust_arch: &str, little_endian: bool) -> &str {
    match (rust_arch, little_endian) {
        ("x86_64", _) => "amd64",
        ("x86", _) => "386",
        ("aarch64", _) => "arm64",
        ("loongarch64", _) => "loong64",
        ("powerpc64", true) => "ppc64le",
        ("powerpc64", false) => "ppc64",
        ("powerpc", _) => "ppc",
        ("mips64", true) => "mips64le",
        ("mips", true) => "mipsle",
        // arm, riscv64, s390x, wasm32, big-endian mips: the same names.
        (other, _) => other,
    }
}

/// Raises this process's soft limit on open files to its hard limit, as a
/// long-running server should: a node keeps a listening socket per serving
/// pod port, and the soft limit many systems start processes with (1,024)
/// would cap it far below `--max-pods`. Returns the limit now in force.
pub fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return limit.maximum;
        }
    }
    limit.current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_files_limit_rises_to_the_hard_limit() {
        use rustix::process::{Resource, getrlimit};
        let before = getrlimit(Resource::Nofile);
        let now = raise_open_files_limit();
        let after = getrlimit(Resource::Nofile);
        assert_eq!(now, after.current);
        assert!(after.current >= before.current);
        if before.maximum.is_some() {
            assert_eq!(after.current, before.maximum);
        }
    }

    #[test]
    fn rust_architectures_map_to_the_names_kubernetes_labels_use() {
        for (rust, little, go) in [
            ("x86_64", true, "amd64"),
            ("aarch64", true, "arm64"),
            ("x86", true, "386"),
            ("arm", true, "arm"),
            ("riscv64", true, "riscv64"),
            ("s390x", false, "s390x"),
            ("powerpc64", true, "ppc64le"),
            ("powerpc64", false, "ppc64"),
            ("loongarch64", true, "loong64"),
            ("mips64", true, "mips64le"),
            ("mips64", false, "mips64"),
        ] {
            assert_eq!(
                go_arch(rust, little),
                go,
                "{rust} (little endian: {little})"
            );
        }
    }

    #[test]
    fn this_build_names_its_own_architecture() {
        let expected = if cfg!(target_arch = "x86_64") {
            "amd64"
        } else if cfg!(target_arch = "aarch64") {
            "arm64"
        } else {
            return;
        };
        assert_eq!(node_arch(), expected);
    }
}
