//! Authorization: RBAC evaluated as Kubernetes evaluates it, from a cache of
//! Roles, ClusterRoles and their bindings that a store watch keeps current.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::{Value, json};

use super::authn::UserInfo;
use crate::resources::{self, Access};
use crate::store::Store;
use crate::store::follow::{self, Change, Mirror};

/// What is being asked: a verb on a resource (or a non-resource URL).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// Set for non-resource requests (`/healthz`, `/api`, ...).
    pub path: Option<String>,
}

const RBAC_PREFIX: &str = "/registry/rbac.authorization.k8s.io/";

/// Who asks where: the key of the rules cache.
type RulesKey = (String, Vec<String>, String);

/// Most (user, namespace) rule sets remembered; past it the cache starts
/// over, so many one-off users cannot grow it without bound.
const MAX_CACHED_RULE_SETS: usize = 4096;

/// The RBAC objects, by store key, and the rules each (user, namespace)
/// gets from them. Components ask thousands of times a second with the same
/// identity, and collecting the rules walks every binding; the collected
/// rules are kept until any RBAC object changes.
#[derive(Default)]
pub struct RbacCache {
    objects: RwLock<HashMap<String, Value>>,
    rules: parking_lot::Mutex<HashMap<RulesKey, Arc<Vec<Value>>>>,
}

fn str_list(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn covers(list: &[&str], want: &str) -> bool {
    list.iter().any(|x| *x == "*" || *x == want)
}

/// Does one PolicyRule allow the request?
pub fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    let verbs = str_list(rule.get("verbs"));
    if !covers(&verbs, &a.verb) {
        return false;
    }
    if let Some(path) = &a.path {
        let urls = str_list(rule.get("nonResourceURLs"));
        return urls.iter().any(|u| {
            *u == "*" || *u == path || u.strip_suffix('*').is_some_and(|p| path.starts_with(p))
        });
    }
    let groups = str_list(rule.get("apiGroups"));
    if !covers(&groups, &a.group) {
        return false;
    }
    let resources = str_list(rule.get("resources"));
    let combined = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let resource_ok = resources.iter().any(|r| {
        *r == "*"
            || *r == combined
            || (!a.subresource.is_empty() && *r == format!("*/{}", a.subresource))
    });
    if !resource_ok {
        return false;
    }
    let names = str_list(rule.get("resourceNames"));
    names.is_empty() || names.contains(&a.name.as_str())
}

fn subject_matches(subject: &Value, user: &UserInfo, binding_ns: &str) -> bool {
    let name = subject.get("name").and_then(Value::as_str).unwrap_or("");
    match subject.get("kind").and_then(Value::as_str) {
        Some("User") => name == user.username,
        Some("Group") => user.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let ns = subject
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            user.username == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

impl RbacCache {
    /// Load every RBAC object and keep the cache current from the store
    /// (reloading it whenever the watch breaks; see `store::follow`).
    ///
    /// # Errors
    /// The first load failed.
    pub async fn start(store: Store) -> Result<Arc<Self>, crate::store::StoreError> {
        let cache = Arc::new(RbacCache::default());
        follow::follow(store, RBAC_PREFIX, &cache).await?;
        Ok(cache)
    }

    /// A cache over fixed objects (tests).
    pub fn from_objects(objs: impl IntoIterator<Item = (String, Value)>) -> Self {
        RbacCache {
            objects: RwLock::new(objs.into_iter().collect()),
            rules: Default::default(),
        }
    }

    fn role_rules(&self, objs: &HashMap<String, Value>, role_ref: &Value, ns: &str) -> Vec<Value> {
        let kind = role_ref.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = role_ref.get("name").and_then(Value::as_str).unwrap_or("");
        let key = match kind {
            "ClusterRole" => format!("{RBAC_PREFIX}clusterroles/{name}"),
            "Role" => format!("{RBAC_PREFIX}roles/{ns}/{name}"),
            _ => return Vec::new(),
        };
        objs.get(&key)
            .and_then(|r| r.get("rules"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }

    /// Every rule that applies to `user` in namespace `ns` (cluster-wide
    /// rules always; namespaced ones when `ns` is set).
    pub fn rules_for(&self, user: &UserInfo, ns: &str) -> Vec<Value> {
        self.collect_rules(&self.objects.read(), user, ns)
    }

    fn collect_rules(
        &self,
        objs: &HashMap<String, Value>,
        user: &UserInfo,
        ns: &str,
    ) -> Vec<Value> {
        let mut rules = Vec::new();
        for (key, b) in objs.iter() {
            let binding_ns = if let Some(rest) =
                key.strip_prefix(&format!("{RBAC_PREFIX}clusterrolebindings/"))
            {
                let _ = rest;
                ""
            } else if let Some(rest) = key.strip_prefix(&format!("{RBAC_PREFIX}rolebindings/")) {
                let bns = rest.split('/').next().unwrap_or("");
                if bns != ns || ns.is_empty() {
                    continue;
                }
                bns
            } else {
                continue;
            };
            let applies = b
                .get("subjects")
                .and_then(Value::as_array)
                .is_some_and(|s| s.iter().any(|s| subject_matches(s, user, binding_ns)));
            if applies && let Some(r) = b.get("roleRef") {
                rules.extend(self.role_rules(objs, r, binding_ns));
            }
        }
        rules
    }

    /// Is the request allowed?
    pub fn allows(&self, user: &UserInfo, a: &Attributes) -> bool {
        if user.groups.iter().any(|g| g == "system:masters") {
            return true;
        }
        self.cached_rules_for(user, &a.namespace)
            .iter()
            .any(|r| rule_allows(r, a))
    }

    /// Why `user` may do `a`, in the words Kubernetes' RBAC authorizer
    /// gives a SubjectAccessReview (`RBAC: allowed by ClusterRoleBinding
    /// "B" of ClusterRole "R" to User "U"`); `None` when it may not.
    pub fn allowed_by(&self, user: &UserInfo, a: &Attributes) -> Option<String> {
        if user.groups.iter().any(|g| g == "system:masters") {
            return Some(String::new());
        }
        let objs = self.objects.read();
        let mut found: Vec<String> = Vec::new();
        for (key, b) in objs.iter() {
            let (binding_kind, binding_ns, binding) = if let Some(name) =
                key.strip_prefix(&format!("{RBAC_PREFIX}clusterrolebindings/"))
            {
                ("ClusterRoleBinding", "", name.to_string())
            } else if let Some(rest) = key.strip_prefix(&format!("{RBAC_PREFIX}rolebindings/")) {
                let (bns, name) = rest.split_once('/').unwrap_or(("", rest));
                if bns != a.namespace || bns.is_empty() {
                    continue;
                }
                ("RoleBinding", bns, format!("{name}/{bns}"))
            } else {
                continue;
            };
            let subject = b
                .get("subjects")
                .and_then(Value::as_array)
                .and_then(|s| s.iter().find(|s| subject_matches(s, user, binding_ns)));
            let (Some(subject), Some(role_ref)) = (subject, b.get("roleRef")) else {
                continue;
            };
            if self
                .role_rules(&objs, role_ref, binding_ns)
                .iter()
                .any(|r| rule_allows(r, a))
            {
                let str_of =
                    |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                let subject_name = match str_of(subject, "kind").as_str() {
                    "ServiceAccount" => {
                        let ns = Some(str_of(subject, "namespace"))
                            .filter(|n| !n.is_empty())
                            .unwrap_or_else(|| binding_ns.to_string());
                        format!("ServiceAccount \"{}/{ns}\"", str_of(subject, "name"))
                    }
                    kind => format!("{kind} \"{}\"", str_of(subject, "name")),
                };
                found.push(format!(
                    "RBAC: allowed by {binding_kind} \"{binding}\" of {} \"{}\" to {subject_name}",
                    str_of(role_ref, "kind"),
                    str_of(role_ref, "name"),
                ));
            }
        }
        // The map's order is arbitrary: name the same binding every time.
        found.sort();
        found.into_iter().next()
    }

    /// [`RbacCache::rules_for`], remembered until an RBAC object changes.
    fn cached_rules_for(&self, user: &UserInfo, ns: &str) -> Arc<Vec<Value>> {
        let key = (user.username.clone(), user.groups.clone(), ns.to_string());
        if let Some(r) = self.rules.lock().get(&key) {
            return r.clone();
        }
        // The objects' read lock is held from collecting to storing, so a
        // change (which clears under the write lock) cannot slip between.
        let objs = self.objects.read();
        let rules = Arc::new(self.collect_rules(&objs, user, ns));
        let mut cached = self.rules.lock();
        if cached.len() >= MAX_CACHED_RULE_SETS {
            cached.clear();
        }
        cached.insert(key, rules.clone());
        drop(objs);
        rules
    }
}

/// While the watch is broken (`Lost`) the cache keeps answering from what
/// it holds, as any watch-fed cache must; the follower reloads at once, so
/// a revoked binding is applied as soon as the store can be read.
impl Mirror for RbacCache {
    fn apply(&self, change: Change<'_>) {
        let mut objs = self.objects.write();
        match change {
            Change::Loaded(_) => objs.clear(),
            Change::Events(_) => {}
            Change::Lost => return,
        }
        for (key, value) in change.updates() {
            let key = String::from_utf8_lossy(key);
            // An object that is gone, or no longer parses, grants nothing.
            match value.and_then(|v| serde_json::from_slice::<Value>(v).ok()) {
                Some(v) => {
                    objs.insert(key.into_owned(), v);
                }
                None => {
                    objs.remove(&*key);
                }
            }
        }
        // Cleared under the objects' lock: a reader cannot collect rules
        // from the old objects and store them after this.
        self.rules.lock().clear();
    }
}

/// Kubernetes' denial message.
pub fn forbidden_message(user: &UserInfo, a: &Attributes) -> String {
    if let Some(path) = &a.path {
        return format!(
            "forbidden: User \"{}\" cannot {} path \"{}\"",
            user.username, a.verb, path
        );
    }
    let resource = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let qualified = if a.group.is_empty() {
        resource.clone()
    } else {
        format!("{}.{}", resource, a.group)
    };
    let what = if a.name.is_empty() {
        format!("{qualified} is forbidden")
    } else {
        format!("{qualified} \"{}\" is forbidden", a.name)
    };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{}\"", a.namespace)
    };
    format!(
        "{what}: User \"{}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
        user.username, a.verb, resource, a.group
    )
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];

/// Resources of one rule bucket, grouped by API group in a stable order.
#[derive(Default)]
struct Bucket(std::collections::BTreeMap<&'static str, Vec<String>>);

impl Bucket {
    fn add(&mut self, group: &'static str, resource: impl Into<String>) {
        self.0.entry(group).or_default().push(resource.into());
    }

    fn rules(&self, verbs: &[&str]) -> Vec<Value> {
        self.0
            .iter()
            .map(|(group, resources)| {
                json!({"apiGroups": [group], "resources": resources, "verbs": verbs})
            })
            .collect()
    }
}

/// The rules of the user-facing roles `view`, `edit` and `admin`, from
/// each kind's [`Access`]: `view` reads workloads (with their status,
/// scale and logs); `edit` also writes them, reaches into them (proxy,
/// exec, attach, port-forward), reads and writes Secrets and asks for
/// ServiceAccount tokens; `admin` also manages a namespace's RBAC.
fn user_facing_rules() -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    use crate::resources::Subresource as S;
    let mut view_read = Bucket::default();
    let mut edit_write = Bucket::default();
    let mut edit_read = Bucket::default();
    let mut edit_create = Bucket::default();
    let mut admin_all = Bucket::default();
    for kind in resources::KINDS {
        let (group, plural) = (kind.group, kind.plural);
        let sub = |s: S| format!("{plural}/{}", s.name());
        match kind.access {
            Access::Workload => {
                view_read.add(group, plural);
                edit_write.add(group, plural);
                for &s in kind.subresources {
                    match s {
                        S::Status | S::Log => view_read.add(group, sub(s)),
                        S::Scale => {
                            view_read.add(group, sub(s));
                            edit_write.add(group, sub(s));
                        }
                        S::Binding => edit_write.add(group, sub(s)),
                        // Reading through a proxy or a stream reaches into
                        // the workload: `edit` may, `view` may not.
                        S::Proxy | S::Exec | S::Attach | S::PortForward => {
                            edit_read.add(group, sub(s));
                            edit_write.add(group, sub(s));
                        }
                        S::Token | S::Eviction => edit_create.add(group, sub(s)),
                    }
                }
            }
            Access::Sensitive => {
                edit_read.add(group, plural);
                edit_write.add(group, plural);
            }
            Access::ReadOnly => {
                view_read.add(group, plural);
                if kind.has_subresource(S::Status) {
                    view_read.add(group, sub(S::Status));
                }
            }
            Access::NamespaceAdmin => admin_all.add(group, plural),
            Access::ClusterAdmin => {}
        }
    }
    // The events.k8s.io view of core Events (`api::views`): granted as
    // the Events it shows.
    view_read.add("events.k8s.io", "events");
    edit_write.add("events.k8s.io", "events");
    // Not kinds: the module registry's blobs, and pushing a module.
    view_read.add("wkube.dev", "blobs");
    // What workloads use: read by whoever may read the workloads (node
    // figures only through a cluster-wide binding, as nodes are).
    view_read.add("metrics.k8s.io", "pods");
    view_read.add("metrics.k8s.io", "nodes");
    view_read.add("custom.metrics.k8s.io", "pods/requests_per_second");
    view_read.add("custom.metrics.k8s.io", "pods/requests_in_flight");
    view_read.add("custom.metrics.k8s.io", "services/requests_per_second");
    view_read.add("custom.metrics.k8s.io", "services/requests_in_flight");
    edit_write.add("wkube.dev", "modules/push");
    edit_write.add("wkube.dev", "serviceactivations");
    let view = view_read.rules(READ);
    let mut edit = view.clone();
    edit.extend(edit_write.rules(WRITE));
    edit.extend(edit_read.rules(READ));
    edit.extend(edit_create.rules(&["create"]));
    let mut admin = edit.clone();
    admin.extend(admin_all.rules(&[
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ]));
    admin.push(rule(
        &["authorization.k8s.io"],
        &["localsubjectaccessreviews"],
        &["create"],
    ));
    (view, edit, admin)
}

/// The default ClusterRoles and ClusterRoleBindings, created at first start.
pub fn bootstrap_policy() -> Vec<(&'static str, Value)> {
    let (view_rules, edit_rules, admin_rules) = user_facing_rules();
    let role = |name: &str, rules: Vec<Value>| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
               "rules": rules})
    };
    let binding = |name: &str, role: &str, kind: &str, subject: &str| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": subject}]})
    };
    vec![
        (
            "clusterroles",
            role(
                "cluster-admin",
                vec![
                    rule(&["*"], &["*"], &["*"]),
                    json!({"nonResourceURLs": ["*"], "verbs": ["*"]}),
                ],
            ),
        ),
        ("clusterroles", role("admin", admin_rules)),
        (
            "clusterroles",
            role(
                "system:kube-controller-manager",
                vec![
                    rule(
                        &[""],
                        &["pods"],
                        &[
                            "get", "list", "watch", "create", "delete", "patch", "update",
                        ],
                    ),
                    rule(&[""], &["events"], &["create", "patch", "update"]),
                    // Node lifecycle and the cloud controllers: node status
                    // and taints, pod readiness and eviction, node deletion,
                    // load balancer status and finalizers.
                    rule(
                        &[""],
                        &["nodes"],
                        &["get", "list", "watch", "update", "patch", "delete"],
                    ),
                    rule(
                        &[""],
                        &["nodes/status", "pods/status"],
                        &["patch", "update"],
                    ),
                    rule(
                        &[""],
                        &["services"],
                        &["get", "list", "watch", "update", "patch"],
                    ),
                    rule(&[""], &["services/status"], &["patch", "update"]),
                    // Leader election, and reading the nodes' heartbeats.
                    rule(
                        &["coordination.k8s.io"],
                        &["leases"],
                        &["get", "list", "watch", "create", "update", "patch"],
                    ),
                    rule(
                        &["apps"],
                        &["replicasets", "deployments"],
                        &[
                            "get", "list", "watch", "create", "delete", "patch", "update",
                        ],
                    ),
                    rule(
                        &["apps"],
                        &["replicasets/status", "deployments/status"],
                        &["patch", "update"],
                    ),
                    rule(
                        &[""],
                        &["replicationcontrollers"],
                        &["get", "list", "watch", "update", "patch"],
                    ),
                    rule(
                        &[""],
                        &["replicationcontrollers/status"],
                        &["patch", "update"],
                    ),
                    rule(&[""], &["services"], &["get", "list", "watch"]),
                    // The autoscaler: its objects, its targets' scale, and
                    // the metrics it decides by.
                    rule(
                        &["autoscaling"],
                        &["horizontalpodautoscalers"],
                        &["get", "list", "watch"],
                    ),
                    rule(
                        &["autoscaling"],
                        &["horizontalpodautoscalers/status"],
                        &["patch", "update"],
                    ),
                    rule(&["*"], &["*/scale"], &["get", "patch", "update"]),
                    rule(&["metrics.k8s.io"], &["pods"], &["get", "list"]),
                    rule(&["custom.metrics.k8s.io"], &["*"], &["get", "list"]),
                    rule(
                        &[""],
                        &["endpoints"],
                        &[
                            "get", "list", "watch", "create", "delete", "patch", "update",
                        ],
                    ),
                    rule(
                        &["discovery.k8s.io"],
                        &["endpointslices"],
                        &[
                            "get", "list", "watch", "create", "delete", "patch", "update",
                        ],
                    ),
                    // Jobs, CronJobs and DaemonSets (with their revisions).
                    rule(
                        &["batch"],
                        &["jobs", "cronjobs"],
                        &[
                            "get", "list", "watch", "create", "delete", "patch", "update",
                        ],
                    ),
                    rule(
                        &["batch"],
                        &["jobs/status", "cronjobs/status"],
                        &["patch", "update"],
                    ),
                    rule(
                        &["apps"],
                        &["daemonsets", "controllerrevisions"],
                        &[
                            "get", "list", "watch", "create", "delete", "patch", "update",
                        ],
                    ),
                    rule(&["apps"], &["daemonsets/status"], &["patch", "update"]),
                    // The ingress controller writes where Ingresses are
                    // served.
                    rule(
                        &["networking.k8s.io"],
                        &["ingresses", "ingressclasses"],
                        &["get", "list", "watch"],
                    ),
                    rule(
                        &["networking.k8s.io"],
                        &["ingresses/status"],
                        &["patch", "update"],
                    ),
                    // The gateway controller: where Gateways are served and
                    // which routes they accepted.
                    rule(
                        &["gateway.networking.k8s.io"],
                        &["gatewayclasses", "gateways", "httproutes"],
                        &["get", "list", "watch"],
                    ),
                    rule(
                        &["gateway.networking.k8s.io"],
                        &[
                            "gatewayclasses/status",
                            "gateways/status",
                            "httproutes/status",
                        ],
                        &["patch", "update"],
                    ),
                    // A DaemonSet runs a pod on each node that fits it.
                    rule(&[""], &["nodes"], &["get", "list", "watch"]),
                    // The namespace controller empties a terminating
                    // namespace of every kind, then finalizes it; the
                    // garbage collector follows every kind and deletes or
                    // releases dependents (patching their owner references
                    // and the owners' finalizers).
                    rule(
                        &["*"],
                        &["*"],
                        &[
                            "get",
                            "list",
                            "watch",
                            "patch",
                            "update",
                            "delete",
                            "deletecollection",
                        ],
                    ),
                    rule(&[""], &["namespaces"], &["update"]),
                    // The service-account controller.
                    rule(&[""], &["serviceaccounts"], &["create"]),
                ],
            ),
        ),
        (
            "clusterroles",
            role(
                "system:node",
                vec![
                    rule(
                        &[""],
                        &["nodes"],
                        &["get", "list", "watch", "create", "update", "patch"],
                    ),
                    rule(&[""], &["nodes/status"], &["patch", "update"]),
                    rule(&[""], &["pods"], &["get", "list", "watch", "delete"]),
                    rule(&[""], &["pods/status"], &["patch", "update"]),
                    // The service proxy wakes workloads scaled to zero.
                    rule(&["wkube.dev"], &["serviceactivations"], &["create"]),
                    rule(
                        &[""],
                        &["configmaps", "secrets", "services", "endpoints"],
                        READ,
                    ),
                    rule(&[""], &["serviceaccounts"], &["get"]),
                    rule(&[""], &["serviceaccounts/token"], &["create"]),
                    rule(&[""], &["events"], &["create", "patch", "update"]),
                    rule(
                        &["coordination.k8s.io"],
                        &["leases"],
                        &["get", "create", "update", "patch"],
                    ),
                    rule(&["discovery.k8s.io"], &["endpointslices"], READ),
                    // The proxy serves Ingresses of its classes and
                    // enforces NetworkPolicies, whose namespace selectors
                    // read namespaces' labels.
                    rule(
                        &["networking.k8s.io"],
                        &["ingresses", "ingressclasses", "networkpolicies"],
                        READ,
                    ),
                    rule(&[""], &["namespaces"], READ),
                    // And Gateways of its classes, with their routes.
                    rule(
                        &["gateway.networking.k8s.io"],
                        &["gatewayclasses", "gateways", "httproutes"],
                        READ,
                    ),
                    rule(&["wkube.dev"], &["modules", "blobs"], READ),
                    // Modules compiled for the node's engine (compiling
                    // on a miss, bounded by the server).
                    rule(&["wkube.dev"], &["blobs/compiled"], &["get"]),
                ],
            ),
        ),
        (
            "clusterroles",
            role(
                "system:kube-scheduler",
                vec![
                    rule(&[""], &["nodes"], READ),
                    rule(&[""], &["pods"], &["get", "list", "watch", "delete"]),
                    rule(&[""], &["bindings", "pods/binding"], &["create"]),
                    rule(&[""], &["pods/status"], &["patch", "update"]),
                    rule(&[""], &["events"], &["create", "patch", "update"]),
                    rule(
                        &["events.k8s.io"],
                        &["events"],
                        &["create", "patch", "update"],
                    ),
                    rule(
                        &["coordination.k8s.io"],
                        &["leases"],
                        &["get", "create", "update"],
                    ),
                ],
            ),
        ),
        ("clusterroles", role("edit", edit_rules)),
        ("clusterroles", role("view", view_rules)),
        (
            "clusterroles",
            role(
                "system:discovery",
                vec![
                    json!({"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/readyz", "/openapi", "/openapi/*", "/version", "/version/"], "verbs": ["get"]}),
                ],
            ),
        ),
        (
            "clusterroles",
            role(
                "system:basic-user",
                vec![
                    rule(
                        &["authorization.k8s.io"],
                        &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                        &["create"],
                    ),
                    rule(
                        &["authentication.k8s.io"],
                        &["selfsubjectreviews"],
                        &["create"],
                    ),
                ],
            ),
        ),
        // What a component that checks its own callers (a webhook, an
        // extension server) needs: bound by the cluster admin, never by
        // default.
        (
            "clusterroles",
            role(
                "system:auth-delegator",
                vec![
                    rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
                    rule(
                        &["authorization.k8s.io"],
                        &["subjectaccessreviews"],
                        &["create"],
                    ),
                ],
            ),
        ),
        (
            "clusterroles",
            role(
                "system:public-info-viewer",
                vec![
                    json!({"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]}),
                ],
            ),
        ),
        (
            "clusterrolebindings",
            binding("cluster-admin", "cluster-admin", "Group", "system:masters"),
        ),
        (
            "clusterrolebindings",
            binding(
                "system:kube-controller-manager",
                "system:kube-controller-manager",
                "User",
                "system:kube-controller-manager",
            ),
        ),
        // Nodes may do what a kubelet needs. Narrowing a node to its own
        // objects is the node authorizer's work (not in place yet).
        (
            "clusterrolebindings",
            binding("system:node", "system:node", "Group", "system:nodes"),
        ),
        (
            "clusterrolebindings",
            binding(
                "system:kube-scheduler",
                "system:kube-scheduler",
                "User",
                "system:kube-scheduler",
            ),
        ),
        (
            "clusterrolebindings",
            binding(
                "system:discovery",
                "system:discovery",
                "Group",
                "system:authenticated",
            ),
        ),
        (
            "clusterrolebindings",
            binding(
                "system:basic-user",
                "system:basic-user",
                "Group",
                "system:authenticated",
            ),
        ),
        (
            "clusterrolebindings",
            binding(
                "system:public-info-viewer",
                "system:public-info-viewer",
                "Group",
                "system:authenticated",
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            username: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn cache_with(objs: Vec<(&str, Value)>) -> RbacCache {
        RbacCache::from_objects(
            objs.into_iter()
                .map(|(k, v)| (format!("{RBAC_PREFIX}{k}"), v)),
        )
    }

    fn attrs(verb: &str, resource: &str, ns: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource: resource.into(),
            namespace: ns.into(),
            ..Default::default()
        }
    }

    fn defaults() -> Vec<(String, Value)> {
        bootstrap_policy()
            .into_iter()
            .map(|(plural, v)| {
                (
                    format!("{plural}/{}", v["metadata"]["name"].as_str().unwrap()),
                    v,
                )
            })
            .collect()
    }

    #[test]
    fn a_view_binding_allows_reads_but_not_writes() {
        let mut objs = defaults();
        objs.push((
            "rolebindings/dev/alice-view".into(),
            json!({
            "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "alice"}]}),
        ));
        let cache = cache_with(objs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect());
        let alice = user("alice", &["system:authenticated"]);
        assert!(cache.allows(&alice, &attrs("list", "pods", "dev")));
        assert!(!cache.allows(&alice, &attrs("create", "pods", "dev")));
        assert!(!cache.allows(&alice, &attrs("list", "pods", "other")));
        assert!(!cache.allows(&alice, &attrs("get", "secrets", "dev")));
    }

    #[test]
    fn masters_may_do_anything() {
        let cache = cache_with(vec![]);
        assert!(cache.allows(
            &user("root", &["system:masters"]),
            &attrs("delete", "nodes", "")
        ));
    }

    #[test]
    fn resource_names_and_subresources_are_exact() {
        let r = json!({"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"], "resourceNames": ["web"]});
        let mut a = attrs("get", "pods", "d");
        a.subresource = "log".into();
        a.name = "web".into();
        assert!(rule_allows(&r, &a));
        a.name = "db".into();
        assert!(!rule_allows(&r, &a));
        a.subresource = String::new();
        a.name = "web".into();
        assert!(!rule_allows(&r, &a));
    }

    #[test]
    fn service_account_subjects_default_to_the_binding_namespace() {
        let cache = cache_with(vec![
            (
                "roles/ns1/r",
                json!({"rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]}),
            ),
            (
                "rolebindings/ns1/b",
                json!({"roleRef": {"kind": "Role", "name": "r"},
                "subjects": [{"kind": "ServiceAccount", "name": "sa"}]}),
            ),
        ]);
        let sa = user("system:serviceaccount:ns1:sa", &[]);
        assert!(cache.allows(&sa, &attrs("list", "configmaps", "ns1")));
        assert!(!cache.allows(
            &user("system:serviceaccount:ns2:sa", &[]),
            &attrs("list", "configmaps", "ns1")
        ));
    }

    #[test]
    fn denials_read_like_kubernetes() {
        let mut a = attrs("create", "deployments", "default");
        a.group = "apps".into();
        assert_eq!(
            forbidden_message(&user("alice", &[]), &a),
            "deployments.apps is forbidden: User \"alice\" cannot create resource \"deployments\" in API group \"apps\" in the namespace \"default\""
        );
    }

    /// The cache must not keep granting what a binding gave once the
    /// binding is gone, even when the watch that told it of changes broke
    /// in between (a stale cache once went on granting for good).
    #[tokio::test]
    async fn a_binding_deleted_across_a_broken_watch_stops_granting() {
        use crate::store::follow::testing::{Breakable, until};
        use crate::store::{DeleteRangeRequest, KeyRange, PutRequest};

        let dir = tempfile::tempdir().unwrap();
        let breakable = Breakable::open(dir.path());
        let store: Store = breakable.clone();
        let objects = [
            (
                "roles/ns1/r",
                json!({"rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]}),
            ),
            (
                "rolebindings/ns1/b",
                json!({"roleRef": {"kind": "Role", "name": "r"},
                "subjects": [{"kind": "User", "name": "alice"}]}),
            ),
        ];
        for (key, v) in &objects {
            store
                .put(PutRequest {
                    key: format!("{RBAC_PREFIX}{key}").into_bytes().into(),
                    value: serde_json::to_vec(v).unwrap().into(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        let cache = RbacCache::start(store.clone()).await.unwrap();
        let alice = user("alice", &[]);
        let list = attrs("list", "configmaps", "ns1");
        assert!(cache.allows(&alice, &list));

        breakable.break_watches().await;
        store
            .delete_range(DeleteRangeRequest {
                range: KeyRange::single(format!("{RBAC_PREFIX}rolebindings/ns1/b")),
                ..Default::default()
            })
            .await
            .unwrap();
        until(
            "the deleted binding stops granting",
            std::time::Duration::from_secs(3),
            || !cache.allows(&alice, &list),
        )
        .await;
    }
}
