//! NetworkPolicy decisions, a pure function of the watched Pods,
//! Namespaces and NetworkPolicies.
//!
//! Kubernetes' semantics: a pod is isolated for ingress (egress) when some
//! policy selecting it has `Ingress` (`Egress`) among its effective
//! `policyTypes`; an isolated pod takes (sends) only what some rule of
//! those policies allows, and both ends must allow a pod-to-pod request.
//! Policies are additive, never deny by themselves.
//!
//! [`Policies::build`] resolves every selector once, when the proxy's
//! table is rebuilt: each isolated pod gets its rules with peers already
//! turned into a set of pod keys, so a request's decision is a few hash
//! lookups. Pods are watched (rather than read off EndpointSlices) because
//! a client needs no Service, slices carry no labels, and named ports need
//! the pods' containerPorts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec, PodStatus};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

/// One end of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer<'a> {
    /// A pod, by `namespace/name`.
    Pod(&'a str),
    /// Anything outside the pod network (a host, a NodePort or ingress
    /// client, an address a guest calls), by address when known.
    External(Option<Ipv4Addr>),
}

impl fmt::Display for Peer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Pod(key) => f.write_str(key),
            Peer::External(Some(ip)) => write!(f, "{ip}"),
            Peer::External(None) => f.write_str("outside the cluster"),
        }
    }
}

/// What the policies say about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Refused, with the sentence the caller gets.
    Denied(String),
}

/// A port a rule allows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PortMatch {
    Range(u16, u16),
    /// A container port's name, looked up on the destination pod.
    Named(String),
}

/// An IPv4 range of any prefix length (`/32` included, which the
/// allocator's ranges never are).
#[derive(Debug, Clone, Copy)]
struct Range {
    base: u32,
    mask: u32,
}

impl Range {
    /// `None` for IPv6 and anything unparsable: the pod network and the
    /// proxy's clients are IPv4, so such a range matches nothing.
    fn parse(s: &str) -> Option<Range> {
        let (ip, len) = s.split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
        let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
        Some(Range {
            base: u32::from(ip) & mask,
            mask,
        })
    }

    fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask == self.base
    }
}

/// An address range with holes.
#[derive(Debug, Clone)]
struct Block {
    cidr: Range,
    except: Vec<Range>,
}

impl Block {
    fn contains(&self, ip: Ipv4Addr) -> bool {
        self.cidr.contains(ip) && !self.except.iter().any(|e| e.contains(ip))
    }
}

/// One ingress or egress rule with its peers resolved.
#[derive(Debug, Default)]
struct Rule {
    /// Empty: every port.
    ports: Vec<PortMatch>,
    /// No peers listed: every source or destination.
    any_peer: bool,
    pods: HashSet<String>,
    blocks: Vec<Block>,
}

/// What is known of one pod.
#[derive(Debug, Default)]
struct PodEntry {
    ip: Option<Ipv4Addr>,
    /// containerPort names and numbers (TCP).
    ports: Vec<(String, u16)>,
    /// `Some` when isolated for ingress: the rules that let traffic in.
    ingress: Option<Vec<Arc<Rule>>>,
    egress: Option<Vec<Arc<Rule>>>,
}

/// Every pod's resolved policies.
#[derive(Debug, Default)]
pub struct Policies {
    pods: HashMap<String, PodEntry>,
    by_ip: HashMap<Ipv4Addr, String>,
    /// Whether any policy exists (none: every decision is a yes).
    any: bool,
}

/// Whether `labels` satisfy `sel`; an empty selector selects everything,
/// one with an operator Kubernetes does not know selects nothing.
fn selects(sel: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(sel) = sel else {
        return true;
    };
    match kube::core::Selector::try_from(sel.clone()) {
        Ok(s) => {
            use kube::core::SelectorExt;
            s.matches(labels)
        }
        Err(_) => false,
    }
}

/// Keeps of a pod only what [`Policies::build`] reads: its name,
/// namespace and labels, its phase and address, and its containers'
/// ports. The proxy caches every pod of the cluster for its policies, so
/// the rest would cost kilobytes per pod on every node.
pub fn trim_pod(pod: &mut Pod) {
    let meta = &mut pod.metadata;
    meta.annotations = None;
    meta.owner_references = None;
    meta.finalizers = None;
    meta.managed_fields = None;
    if let Some(spec) = pod.spec.take() {
        pod.spec = Some(PodSpec {
            containers: spec
                .containers
                .into_iter()
                .map(|c| Container {
                    name: c.name,
                    ports: c.ports,
                    ..Container::default()
                })
                .collect(),
            ..PodSpec::default()
        });
    }
    if let Some(status) = pod.status.take() {
        pod.status = Some(PodStatus {
            phase: status.phase,
            pod_ip: status.pod_ip,
            ..PodStatus::default()
        });
    }
}

/// The policy types a policy has once defaulted (Ingress, plus Egress
/// when it has egress rules).
fn types(p: &NetworkPolicy) -> (bool, bool) {
    let spec = p.spec.as_ref();
    match spec
        .and_then(|s| s.policy_types.as_ref())
        .filter(|t| !t.is_empty())
    {
        Some(t) => (
            t.iter().any(|t| t == "Ingress"),
            t.iter().any(|t| t == "Egress"),
        ),
        None => (true, spec.is_some_and(|s| s.egress.is_some())),
    }
}

impl Policies {
    /// Resolves `policies` against the pods and namespaces.
    pub fn build(
        policies: &[Arc<NetworkPolicy>],
        pods: &[Arc<Pod>],
        namespaces: &[Arc<Namespace>],
    ) -> Policies {
        // Without a policy every decision is a yes and nothing below is
        // looked at; indexing every pod anyway cost each rebuild of the
        // proxy's table (one per pod change) time linear in the pods.
        if policies.is_empty() {
            return Policies::default();
        }
        let ns_labels: HashMap<String, BTreeMap<String, String>> = namespaces
            .iter()
            .map(|n| (n.name_any(), n.labels().clone()))
            .collect();
        let mut out = Policies {
            any: !policies.is_empty(),
            ..Policies::default()
        };
        // Finished pods hold no address and take part in nothing.
        let live: Vec<&Arc<Pod>> = pods
            .iter()
            .filter(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                !matches!(phase, Some("Succeeded" | "Failed"))
            })
            .collect();
        for pod in &live {
            let key = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
            let ip = pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse().ok());
            let ports = pod
                .spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .flat_map(|c| c.ports.iter().flatten())
                .filter(|p| p.protocol.as_deref().is_none_or(|p| p == "TCP"))
                .filter_map(|p| Some((p.name.clone()?, u16::try_from(p.container_port).ok()?)))
                .collect();
            if let Some(ip) = ip {
                out.by_ip.insert(ip, key.clone());
            }
            out.pods.insert(
                key,
                PodEntry {
                    ip,
                    ports,
                    ..PodEntry::default()
                },
            );
        }
        for policy in policies {
            let ns = policy.namespace().unwrap_or_default();
            let Some(spec) = policy.spec.as_ref() else {
                continue;
            };
            let (ingress, egress) = types(policy);
            let compile = |ports: Option<&Vec<NetworkPolicyPort>>,
                           peers: Option<&Vec<NetworkPolicyPeer>>| {
                Arc::new(compile_rule(&ns, ports, peers, &live, &ns_labels))
            };
            let in_rules: Vec<Arc<Rule>> = spec
                .ingress
                .iter()
                .flatten()
                .map(|r| compile(r.ports.as_ref(), r.from.as_ref()))
                .collect();
            let out_rules: Vec<Arc<Rule>> = spec
                .egress
                .iter()
                .flatten()
                .map(|r| compile(r.ports.as_ref(), r.to.as_ref()))
                .collect();
            for pod in &live {
                if pod.namespace().as_deref() != Some(ns.as_str())
                    || !selects(spec.pod_selector.as_ref(), pod.labels())
                {
                    continue;
                }
                let key = format!("{ns}/{}", pod.name_any());
                let Some(entry) = out.pods.get_mut(&key) else {
                    continue;
                };
                if ingress {
                    entry
                        .ingress
                        .get_or_insert_with(Vec::new)
                        .extend(in_rules.iter().cloned());
                }
                if egress {
                    entry
                        .egress
                        .get_or_insert_with(Vec::new)
                        .extend(out_rules.iter().cloned());
                }
            }
        }
        out
    }

    /// Whether the pod keyed `key` is isolated for egress.
    pub fn egress_isolated(&self, key: &str) -> bool {
        self.pods.get(key).is_some_and(|e| e.egress.is_some())
    }

    /// The pod at a pod address.
    pub fn pod_at(&self, ip: Ipv4Addr) -> Option<&str> {
        self.by_ip.get(&ip).map(String::as_str)
    }

    /// Whether `from` may send a request to port `port` of `to`. Both
    /// ends are asked: the source's egress, then the destination's
    /// ingress.
    pub fn decide(&self, from: &Peer<'_>, to: &Peer<'_>, port: u16) -> Verdict {
        if !self.any {
            return Verdict::Allowed;
        }
        if let Peer::Pod(src) = from
            && let Some(rules) = self.pods.get(*src).and_then(|e| e.egress.as_ref())
            && !rules.iter().any(|r| self.allows(r, to, to, port))
        {
            return Verdict::Denied(format!(
                "denied by NetworkPolicy: pod {src} does not allow egress to {to}"
            ));
        }
        if let Peer::Pod(dst) = to
            && let Some(rules) = self.pods.get(*dst).and_then(|e| e.ingress.as_ref())
            && !rules.iter().any(|r| self.allows(r, from, to, port))
        {
            return Verdict::Denied(format!(
                "denied by NetworkPolicy: pod {dst} does not allow ingress from {from}"
            ));
        }
        Verdict::Allowed
    }

    /// Whether `rule` lets `peer` through on `port` of `dst` (whose named
    /// ports a named rule port refers to).
    fn allows(&self, rule: &Rule, peer: &Peer<'_>, dst: &Peer<'_>, port: u16) -> bool {
        let port_ok = rule.ports.is_empty()
            || rule.ports.iter().any(|p| match p {
                PortMatch::Range(lo, hi) => (*lo..=*hi).contains(&port),
                PortMatch::Named(name) => match dst {
                    Peer::Pod(key) => self
                        .pods
                        .get(*key)
                        .is_some_and(|e| e.ports.iter().any(|(n, p)| n == name && *p == port)),
                    Peer::External(_) => false,
                },
            });
        if !port_ok {
            return false;
        }
        if rule.any_peer {
            return true;
        }
        let ip = match peer {
            Peer::Pod(key) => {
                if rule.pods.contains(*key) {
                    return true;
                }
                self.pods.get(*key).and_then(|e| e.ip)
            }
            Peer::External(ip) => *ip,
        };
        ip.is_some_and(|ip| rule.blocks.iter().any(|b| b.contains(ip)))
    }
}

/// Resolves one rule of a policy in namespace `ns`.
fn compile_rule(
    ns: &str,
    ports: Option<&Vec<NetworkPolicyPort>>,
    peers: Option<&Vec<NetworkPolicyPeer>>,
    pods: &[&Arc<Pod>],
    ns_labels: &HashMap<String, BTreeMap<String, String>>,
) -> Rule {
    let empty = BTreeMap::new();
    let mut rule = Rule {
        any_peer: peers.is_none_or(Vec::is_empty),
        ..Rule::default()
    };
    for p in ports.into_iter().flatten() {
        // Only TCP is carried; a rule port of another protocol lets no
        // HTTP request through.
        if p.protocol.as_deref().is_some_and(|p| p != "TCP") {
            continue;
        }
        rule.ports.push(match &p.port {
            None => PortMatch::Range(1, u16::MAX),
            Some(IntOrString::Int(n)) => {
                let lo = u16::try_from(*n).unwrap_or(0);
                let hi = p.end_port.and_then(|e| u16::try_from(e).ok()).unwrap_or(lo);
                PortMatch::Range(lo, hi)
            }
            Some(IntOrString::String(name)) => PortMatch::Named(name.clone()),
        });
    }
    if ports.is_some_and(|p| !p.is_empty()) && rule.ports.is_empty() {
        // Every port listed was of another protocol: nothing matches.
        rule.ports.push(PortMatch::Range(1, 0));
    }
    for peer in peers.into_iter().flatten() {
        if let Some(b) = &peer.ip_block {
            if let Some(cidr) = Range::parse(&b.cidr) {
                rule.blocks.push(Block {
                    cidr,
                    except: b
                        .except
                        .iter()
                        .flatten()
                        .filter_map(|e| Range::parse(e))
                        .collect(),
                });
            }
            continue;
        }
        if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
            continue;
        }
        for pod in pods {
            let pod_ns = pod.namespace().unwrap_or_default();
            let ns_ok = match &peer.namespace_selector {
                None => pod_ns == ns,
                Some(sel) => selects(Some(sel), ns_labels.get(&pod_ns).unwrap_or(&empty)),
            };
            if ns_ok && selects(peer.pod_selector.as_ref(), pod.labels()) {
                rule.pods.insert(format!("{pod_ns}/{}", pod.name_any()));
            }
        }
    }
    rule
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn pod(ns: &str, name: &str, ip: &str, labels: Value) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": ns, "labels": labels},
                "spec": {"containers": [{"name": "c", "image": "x",
                    "ports": [{"name": "http", "containerPort": 8080}]}]},
                "status": {"podIP": ip, "phase": "Running"}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn a_trimmed_pod_keeps_what_policies_read() {
        let mut p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "a", "namespace": "ns1", "labels": {"app": "web"},
                         "annotations": {"big": "x"}},
            "spec": {"nodeName": "n1", "volumes": [{"name": "v", "emptyDir": {}}],
                     "containers": [{"name": "c", "image": "x", "env": [{"name": "E", "value": "1"}],
                                     "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"podIP": "10.0.0.9", "phase": "Running",
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        let full = pod_entry_of(&p);
        trim_pod(&mut p);
        assert_eq!(pod_entry_of(&p), full);
        assert_eq!(p.labels().get("app").map(String::as_str), Some("web"));
        assert!(p.metadata.annotations.is_none());
        let spec = p.spec.as_ref().unwrap();
        assert!(spec.volumes.is_none() && spec.node_name.is_none());
        assert!(spec.containers[0].env.is_none());
        assert!(p.status.as_ref().unwrap().conditions.is_none());
    }

    /// What [`Policies::build`] makes of a lone pod.
    fn pod_entry_of(p: &Pod) -> (Option<std::net::Ipv4Addr>, Vec<(String, u16)>) {
        let built = Policies::build(
            &[policy("ns1", "any", json!({"podSelector": {}}))],
            &[Arc::new(p.clone())],
            &[ns("ns1", json!({}))],
        );
        let e = &built.pods["ns1/a"];
        (e.ip, e.ports.clone())
    }

    fn ns(name: &str, labels: Value) -> Arc<Namespace> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap(),
        )
    }

    fn policy(ns: &str, name: &str, spec: Value) -> Arc<NetworkPolicy> {
        Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": name, "namespace": ns}, "spec": spec}),
            )
            .unwrap(),
        )
    }

    fn world(policies: Vec<Arc<NetworkPolicy>>) -> Policies {
        let pods = vec![
            pod("default", "a", "127.128.0.2", json!({"app": "echo"})),
            pod("default", "b", "127.128.0.3", json!({"app": "hello"})),
            pod("other", "c", "127.128.0.4", json!({"app": "echo"})),
            pod("team", "d", "127.128.0.5", json!({"app": "echo"})),
        ];
        let namespaces = vec![
            ns("default", json!({})),
            ns("other", json!({})),
            ns("team", json!({"team": "blue"})),
        ];
        Policies::build(&policies, &pods, &namespaces)
    }

    fn p(key: &str) -> Peer<'_> {
        Peer::Pod(key)
    }

    #[test]
    fn without_policies_everything_is_allowed() {
        let w = world(vec![]);
        assert_eq!(
            w.decide(&p("default/a"), &p("default/b"), 80),
            Verdict::Allowed
        );
    }

    #[test]
    fn a_default_deny_isolates_only_the_selected_pods() {
        let w = world(vec![policy(
            "default",
            "deny",
            json!({"podSelector": {"matchLabels": {"app": "hello"}}}),
        )]);
        assert_eq!(
            w.decide(&p("default/a"), &p("default/b"), 8080),
            Verdict::Denied(
                "denied by NetworkPolicy: pod default/b does not allow ingress from default/a"
                    .into()
            )
        );
        assert_eq!(
            w.decide(&p("default/b"), &p("default/a"), 8080),
            Verdict::Allowed
        );
        assert!(matches!(
            w.decide(&Peer::External(None), &p("default/b"), 8080),
            Verdict::Denied(m) if m.ends_with("from outside the cluster")
        ));
        assert_eq!(w.pod_at("127.128.0.3".parse().unwrap()), Some("default/b"));
    }

    #[test]
    fn policies_add_up_and_pod_selectors_stay_in_the_policys_namespace() {
        let w = world(vec![
            policy("default", "deny", json!({"podSelector": {}, "ingress": []})),
            policy(
                "default",
                "from-echo",
                json!({"podSelector": {"matchLabels": {"app": "hello"}},
                       "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "echo"}}}]}]}),
            ),
        ]);
        assert_eq!(
            w.decide(&p("default/a"), &p("default/b"), 8080),
            Verdict::Allowed
        );
        // Same labels, other namespace: not selected by a bare podSelector.
        assert!(matches!(
            w.decide(&p("other/c"), &p("default/b"), 8080),
            Verdict::Denied(_)
        ));
        // `a` is isolated by `deny` alone.
        assert!(matches!(
            w.decide(&p("default/b"), &p("default/a"), 8080),
            Verdict::Denied(_)
        ));
    }

    #[test]
    fn namespace_and_pod_selectors_in_one_peer_must_both_match() {
        let w = world(vec![policy(
            "default",
            "team",
            json!({"podSelector": {"matchLabels": {"app": "hello"}},
                   "ingress": [{"from": [{
                        "namespaceSelector": {"matchLabels": {"team": "blue"}},
                        "podSelector": {"matchLabels": {"app": "echo"}}}]}]}),
        )]);
        assert_eq!(
            w.decide(&p("team/d"), &p("default/b"), 8080),
            Verdict::Allowed
        );
        assert!(matches!(
            w.decide(&p("other/c"), &p("default/b"), 8080),
            Verdict::Denied(_)
        ));
        assert!(matches!(
            w.decide(&p("default/a"), &p("default/b"), 8080),
            Verdict::Denied(_)
        ));
    }

    #[test]
    fn ports_match_by_number_range_or_container_port_name() {
        let w = world(vec![policy(
            "default",
            "ports",
            json!({"podSelector": {"matchLabels": {"app": "hello"}},
                   "ingress": [{"ports": [{"port": "http", "protocol": "TCP"},
                                          {"port": 9000, "endPort": 9010}]}]}),
        )]);
        assert_eq!(
            w.decide(&p("default/a"), &p("default/b"), 8080),
            Verdict::Allowed
        );
        assert_eq!(
            w.decide(&p("default/a"), &p("default/b"), 9005),
            Verdict::Allowed
        );
        assert!(matches!(
            w.decide(&p("default/a"), &p("default/b"), 80),
            Verdict::Denied(_)
        ));
        let udp = world(vec![policy(
            "default",
            "udp",
            json!({"podSelector": {}, "ingress": [{"ports": [{"port": 8080, "protocol": "UDP"}]}]}),
        )]);
        assert!(matches!(
            udp.decide(&p("default/a"), &p("default/b"), 8080),
            Verdict::Denied(_)
        ));
    }

    #[test]
    fn egress_isolation_limits_what_a_pod_may_call_including_outside_addresses() {
        let w = world(vec![policy(
            "default",
            "egress",
            json!({"podSelector": {"matchLabels": {"app": "echo"}},
                   "policyTypes": ["Egress"],
                   "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]},
                              {"to": [{"podSelector": {"matchLabels": {"app": "hello"}}}],
                               "ports": [{"port": 8080}]}]}),
        )]);
        let ext = |ip: &str| Peer::External(Some(ip.parse().unwrap()));
        assert_eq!(
            w.decide(&p("default/a"), &ext("10.2.3.4"), 80),
            Verdict::Allowed
        );
        assert_eq!(
            w.decide(&p("default/a"), &ext("10.1.3.4"), 80),
            Verdict::Denied(
                "denied by NetworkPolicy: pod default/a does not allow egress to 10.1.3.4".into()
            )
        );
        assert_eq!(
            w.decide(&p("default/a"), &p("default/b"), 8080),
            Verdict::Allowed
        );
        assert!(matches!(
            w.decide(&p("default/a"), &p("default/b"), 9090),
            Verdict::Denied(_)
        ));
        // Not selected: not isolated for egress.
        assert_eq!(
            w.decide(&p("default/b"), &ext("10.1.3.4"), 80),
            Verdict::Allowed
        );
    }

    #[test]
    fn outside_sources_match_only_ip_blocks() {
        let w = world(vec![policy(
            "default",
            "nodeport",
            json!({"podSelector": {"matchLabels": {"app": "hello"}},
                   "ingress": [{"from": [{"namespaceSelector": {}},
                                         {"ipBlock": {"cidr": "192.168.0.0/16"}},
                                         {"ipBlock": {"cidr": "127.20.1.1/32"}},
                                         {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["0.0.0.0/1"]}}]}]}),
        )]);
        let ext = |ip: &str| Peer::External(Some(ip.parse().unwrap()));
        assert_eq!(
            w.decide(&ext("192.168.1.1"), &p("default/b"), 8080),
            Verdict::Allowed
        );
        assert!(matches!(
            w.decide(&ext("127.0.0.1"), &p("default/b"), 8080),
            Verdict::Denied(_)
        ));
        assert_eq!(
            w.decide(&p("other/c"), &p("default/b"), 8080),
            Verdict::Allowed
        );
    }
}
