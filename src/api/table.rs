//! `Table` responses for `kubectl get`: the columns Kubernetes prints for
//! each kind, each row carrying its object (as PartialObjectMetadata by
//! default) so that `-A`, `--sort-by` and `-o wide` work.

use serde_json::{Value, json};

use crate::resources::Kind;

struct Column {
    name: &'static str,
    ty: &'static str,
    format: &'static str,
    priority: u8,
    description: &'static str,
}

const fn col(
    name: &'static str,
    ty: &'static str,
    priority: u8,
    description: &'static str,
) -> Column {
    Column {
        name,
        ty,
        format: "",
        priority,
        description,
    }
}

const NAME: Column = Column {
    name: "Name",
    ty: "string",
    format: "name",
    priority: 0,
    description: "Name must be unique within a namespace.",
};
const AGE: Column = col(
    "Age",
    "string",
    0,
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
);

fn columns(kind: &str) -> Vec<Column> {
    match kind {
        "Pod" => vec![
            NAME,
            col(
                "Ready",
                "string",
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            col(
                "Status",
                "string",
                0,
                "The aggregate status of the containers in this pod.",
            ),
            col(
                "Restarts",
                "string",
                0,
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            AGE,
            col(
                "IP",
                "string",
                1,
                "IP address allocated to the pod. Routable at least within the cluster.",
            ),
            col(
                "Node",
                "string",
                1,
                "NodeName is a request to schedule this pod onto a specific node.",
            ),
            col(
                "Nominated Node",
                "string",
                1,
                "nominatedNodeName is set only when this pod preempts other pods on the node.",
            ),
            col(
                "Readiness Gates",
                "string",
                1,
                "If specified, all readiness gates will be evaluated for pod readiness.",
            ),
        ],
        "Node" => vec![
            NAME,
            col("Status", "string", 0, "The status of the node"),
            col("Roles", "string", 0, "The roles of the node"),
            AGE,
            col(
                "Version",
                "string",
                0,
                "Kubelet Version reported by the node.",
            ),
            col("Internal-IP", "string", 1, "List of internal IPs."),
            col("External-IP", "string", 1, "List of external IPs."),
            col(
                "OS-Image",
                "string",
                1,
                "OS Image reported by the node from /etc/os-release.",
            ),
            col(
                "Kernel-Version",
                "string",
                1,
                "Kernel Version reported by the node.",
            ),
            col(
                "Container-Runtime",
                "string",
                1,
                "Container Runtime Version reported by the node.",
            ),
        ],
        "Deployment" => vec![
            NAME,
            col("Ready", "string", 0, "Number of the pod with ready state"),
            col(
                "Up-to-date",
                "string",
                0,
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
            ),
            col(
                "Available",
                "string",
                0,
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
            ),
            AGE,
            col(
                "Containers",
                "string",
                1,
                "Names of each container in the template.",
            ),
            col(
                "Images",
                "string",
                1,
                "Images referenced by each container in the template.",
            ),
            col("Selector", "string", 1, "Label selector for pods."),
        ],
        "ReplicaSet" => vec![
            NAME,
            col(
                "Desired",
                "integer",
                0,
                "Replicas is the number of desired replicas.",
            ),
            col(
                "Current",
                "integer",
                0,
                "Replicas is the most recently observed number of replicas.",
            ),
            col(
                "Ready",
                "integer",
                0,
                "The number of ready replicas for this replica set.",
            ),
            AGE,
            col(
                "Containers",
                "string",
                1,
                "Names of each container in the template.",
            ),
            col(
                "Images",
                "string",
                1,
                "Images referenced by each container in the template.",
            ),
            col(
                "Selector",
                "string",
                1,
                "Selector is a label query over pods that should match the replica count.",
            ),
        ],
        "Service" => vec![
            NAME,
            col(
                "Type",
                "string",
                0,
                "type determines how the Service is exposed.",
            ),
            col(
                "Cluster-IP",
                "string",
                0,
                "clusterIP is the IP address of the service.",
            ),
            col(
                "External-IP",
                "string",
                0,
                "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
            ),
            col(
                "Port(s)",
                "string",
                0,
                "The list of ports that are exposed by this service.",
            ),
            AGE,
            col(
                "Selector",
                "string",
                1,
                "Route service traffic to pods with label keys and values matching this selector.",
            ),
        ],
        "Namespace" => vec![
            NAME,
            col("Status", "string", 0, "The status of the namespace"),
            AGE,
        ],
        "ConfigMap" => vec![
            NAME,
            col("Data", "string", 0, "Data contains the configuration data."),
            AGE,
        ],
        "Secret" => vec![
            NAME,
            col(
                "Type",
                "string",
                0,
                "Used to facilitate programmatic handling of secret data.",
            ),
            col("Data", "string", 0, "Data contains the secret data."),
            AGE,
        ],
        "ServiceAccount" => vec![
            NAME,
            col(
                "Secrets",
                "string",
                0,
                "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
            ),
            AGE,
        ],
        "Job" => vec![
            NAME,
            col("Status", "string", 0, "Status of the job."),
            col(
                "Completions",
                "string",
                0,
                "The desired number of successfully finished pods the job should be run with.",
            ),
            col(
                "Duration",
                "string",
                0,
                "Time required to complete the job.",
            ),
            AGE,
            col(
                "Containers",
                "string",
                1,
                "Names of each container in the template.",
            ),
            col(
                "Images",
                "string",
                1,
                "Images referenced by each container in the template.",
            ),
            col(
                "Selector",
                "string",
                1,
                "A label query over pods that should match the pod count.",
            ),
        ],
        "DaemonSet" => vec![
            NAME,
            col(
                "Desired",
                "integer",
                0,
                "The desired number of nodes running the daemon pod.",
            ),
            col(
                "Current",
                "integer",
                0,
                "The number of nodes running at least one daemon pod.",
            ),
            col(
                "Ready",
                "integer",
                0,
                "The number of nodes with a ready daemon pod.",
            ),
            col(
                "Up-to-date",
                "integer",
                0,
                "The number of nodes running the updated daemon pod.",
            ),
            col(
                "Available",
                "integer",
                0,
                "The number of nodes with an available daemon pod.",
            ),
            col(
                "Node Selector",
                "string",
                0,
                "The node selector of the pod template.",
            ),
            AGE,
            col(
                "Containers",
                "string",
                1,
                "Names of each container in the template.",
            ),
            col(
                "Images",
                "string",
                1,
                "Images referenced by each container in the template.",
            ),
            col(
                "Selector",
                "string",
                1,
                "A label query over pods that are managed by the daemon set.",
            ),
        ],
        "CronJob" => vec![
            NAME,
            col("Schedule", "string", 0, "The schedule in Cron format."),
            col("Timezone", "string", 0, "The time zone of the schedule."),
            col("Suspend", "boolean", 0, "Whether later runs are suspended."),
            col("Active", "integer", 0, "The number of running jobs."),
            col(
                "Last Schedule",
                "string",
                0,
                "When a job was last scheduled.",
            ),
            AGE,
            col(
                "Containers",
                "string",
                1,
                "Names of each container in the template.",
            ),
            col(
                "Images",
                "string",
                1,
                "Images referenced by each container in the template.",
            ),
            col(
                "Selector",
                "string",
                1,
                "A label query over pods that should match the pod count.",
            ),
        ],
        "Endpoints" => vec![
            NAME,
            col(
                "Endpoints",
                "string",
                0,
                "Endpoints is the list of endpoints for this service.",
            ),
            AGE,
        ],
        "EndpointSlice" => vec![
            NAME,
            col(
                "AddressType",
                "string",
                0,
                "addressType specifies the type of address carried by this EndpointSlice.",
            ),
            col(
                "Ports",
                "string",
                0,
                "ports specifies the list of network ports exposed by each endpoint in this slice.",
            ),
            col(
                "Endpoints",
                "string",
                0,
                "endpoints is a list of unique endpoints in this slice.",
            ),
            AGE,
        ],
        "Event" => vec![
            col(
                "Last Seen",
                "string",
                0,
                "Time when this Event was last observed.",
            ),
            col("Type", "string", 0, "Type of this event (Normal, Warning)."),
            col(
                "Reason",
                "string",
                0,
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
            ),
            col(
                "Object",
                "string",
                0,
                "The object that this event is about.",
            ),
            col(
                "Message",
                "string",
                0,
                "A human-readable description of the status of this operation.",
            ),
        ],
        "Lease" => vec![
            NAME,
            col(
                "Holder",
                "string",
                0,
                "holderIdentity contains the identity of the holder of a current lease.",
            ),
            AGE,
        ],
        "RoleBinding" | "ClusterRoleBinding" => vec![
            NAME,
            col("Role", "string", 0, "RoleRef is the reference to the role."),
            AGE,
            col("Users", "string", 1, "Users in the binding"),
            col("Groups", "string", 1, "Groups in the binding"),
            col(
                "ServiceAccounts",
                "string",
                1,
                "ServiceAccounts in the binding",
            ),
        ],
        "Role" | "ClusterRole" => vec![
            NAME,
            col(
                "Created At",
                "date",
                0,
                "CreationTimestamp is a timestamp representing the server time when this object was created.",
            ),
        ],
        _ => vec![
            NAME,
            col(
                "Created At",
                "date",
                0,
                "CreationTimestamp is a timestamp representing the server time when this object was created.",
            ),
        ],
    }
}

/// Kubernetes' short human duration (`5s`, `2m30s`, `3h`, `4d5h`, `2y`).
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    let m = s / 60;
    let h = m / 60;
    let d = h / 24;
    let y = d / 365;
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", s % 60)
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else if y < 8 {
        if d % 365 == 0 {
            format!("{y}y")
        } else {
            format!("{y}y{}d", d % 365)
        }
    } else {
        format!("{y}y")
    }
}

fn age_of(ts: Option<&str>) -> String {
    let Some(ts) = ts else {
        return "<unknown>".into();
    };
    match time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339) {
        Ok(t) => human_duration((time::OffsetDateTime::now_utc() - t).whole_seconds()),
        Err(_) => "<unknown>".into(),
    }
}

fn s<'a>(o: &'a Value, p: &str) -> &'a str {
    o.pointer(p).and_then(Value::as_str).unwrap_or("")
}

fn n(o: &Value, p: &str) -> i64 {
    o.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

fn none_if_empty(v: String) -> String {
    if v.is_empty() { "<none>".into() } else { v }
}

fn selector_string(sel: Option<&Value>) -> String {
    match sel {
        Some(sel) => none_if_empty(label_selector_string(sel)),
        None => "<none>".into(),
    }
}

/// A label selector (`matchLabels`/`matchExpressions`, or a plain map as a
/// Service's) in Kubernetes' string form, `a=b,c in (d,e),!f`; empty for an
/// empty selector.
pub(crate) fn label_selector_string(sel: &Value) -> String {
    let map = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .or(sel.as_object());
    let mut parts: Vec<String> = map
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
                .collect()
        })
        .unwrap_or_default();
    if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = s(e, "/key");
            let vals: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            parts.push(match s(e, "/operator") {
                "In" => format!("{key} in ({})", vals.join(",")),
                "NotIn" => format!("{key} notin ({})", vals.join(",")),
                "Exists" => key.to_string(),
                "DoesNotExist" => format!("!{key}"),
                _ => String::new(),
            });
        }
    }
    parts.join(",")
}

fn template_containers(o: &Value) -> (String, String) {
    let cs = o
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = cs.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(c, "/image")).collect();
    (names.join(","), images.join(","))
}

fn pod_cells(o: &Value) -> Vec<Value> {
    let statuses = o
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let total = o
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = statuses
        .iter()
        .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
        .count();
    let restarts: i64 = statuses.iter().map(|c| n(c, "/restartCount")).sum();
    let mut reason = s(o, "/status/phase").to_string();
    if !s(o, "/status/reason").is_empty() {
        reason = s(o, "/status/reason").to_string();
    }
    for c in &statuses {
        let waiting = s(c, "/state/waiting/reason");
        let term = s(c, "/state/terminated/reason");
        if !waiting.is_empty() {
            reason = waiting.to_string();
        } else if !term.is_empty() {
            reason = term.to_string();
        } else if c.pointer("/state/terminated").is_some() {
            reason = format!("ExitCode:{}", n(c, "/state/terminated/exitCode"));
        }
    }
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        reason = "Terminating".into();
    }
    if reason.is_empty() {
        reason = "Pending".into();
    }
    vec![
        json!(s(o, "/metadata/name")),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts.to_string()),
        json!(age_of(
            o.pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str)
        )),
        json!(none_if_empty(s(o, "/status/podIP").to_string())),
        json!(none_if_empty(s(o, "/spec/nodeName").to_string())),
        json!(none_if_empty(s(o, "/status/nominatedNodeName").to_string())),
        json!("<none>"),
    ]
}

fn cells(kind: &str, o: &Value) -> Vec<Value> {
    let name = json!(s(o, "/metadata/name"));
    let age = json!(age_of(
        o.pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
    ));
    match kind {
        "Pod" => pod_cells(o),
        "Node" => {
            let conds = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let ready = conds.iter().find(|c| s(c, "/type") == "Ready");
            let mut status = match ready.map(|c| s(c, "/status")) {
                Some("True") => "Ready".to_string(),
                _ => "NotReady".to_string(),
            };
            if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
                status.push_str(",SchedulingDisabled");
            }
            let roles: Vec<String> = o
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|l| {
                    l.keys()
                        .filter_map(|k| {
                            k.strip_prefix("node-role.kubernetes.io/")
                                .map(str::to_string)
                        })
                        .collect()
                })
                .unwrap_or_default();
            let addr = |t: &str| {
                o.pointer("/status/addresses")
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().find(|x| s(x, "/type") == t))
                    .map(|x| s(x, "/address").to_string())
                    .unwrap_or_else(|| "<none>".into())
            };
            vec![
                name,
                json!(status),
                json!(none_if_empty(roles.join(","))),
                age,
                json!(s(o, "/status/nodeInfo/kubeletVersion")),
                json!(addr("InternalIP")),
                json!(addr("ExternalIP")),
                json!(s(o, "/status/nodeInfo/osImage")),
                json!(s(o, "/status/nodeInfo/kernelVersion")),
                json!(s(o, "/status/nodeInfo/containerRuntimeVersion")),
            ]
        }
        "Deployment" => {
            let (c, i) = template_containers(o);
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    n(o, "/status/readyReplicas"),
                    n(o, "/spec/replicas")
                )),
                json!(n(o, "/status/updatedReplicas")),
                json!(n(o, "/status/availableReplicas")),
                age,
                json!(c),
                json!(i),
                json!(selector_string(o.pointer("/spec/selector"))),
            ]
        }
        "ReplicaSet" => {
            let (c, i) = template_containers(o);
            vec![
                name,
                json!(n(o, "/spec/replicas")),
                json!(n(o, "/status/replicas")),
                json!(n(o, "/status/readyReplicas")),
                age,
                json!(c),
                json!(i),
                json!(selector_string(o.pointer("/spec/selector"))),
            ]
        }
        "Service" => {
            let ty = s(o, "/spec/type");
            let ports: Vec<String> = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            let node = p.get("nodePort").and_then(Value::as_i64);
                            match node {
                                Some(np) if np > 0 => {
                                    format!("{}:{}/{}", n(p, "/port"), np, s(p, "/protocol"))
                                }
                                _ => format!("{}/{}", n(p, "/port"), s(p, "/protocol")),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            let mut external: Vec<String> = o
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|x| s(x, "/ip").to_string())
                        .filter(|x| !x.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            if let Some(e) = o.pointer("/spec/externalIPs").and_then(Value::as_array) {
                external.extend(e.iter().filter_map(Value::as_str).map(str::to_string));
            }
            let external = if external.is_empty() {
                if ty == "LoadBalancer" {
                    "<pending>".to_string()
                } else {
                    "<none>".to_string()
                }
            } else {
                external.join(",")
            };
            vec![
                name,
                json!(ty),
                json!(none_if_empty(s(o, "/spec/clusterIP").to_string())),
                json!(external),
                json!(none_if_empty(ports.join(","))),
                age,
                json!(selector_string(o.pointer("/spec/selector"))),
            ]
        }
        "Namespace" => vec![name, json!(s(o, "/status/phase")), age],
        "ConfigMap" => {
            let count = o
                .get("data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len())
                + o.get("binaryData")
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len());
            vec![name, json!(count), age]
        }
        "Secret" => {
            let count = o
                .get("data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len());
            vec![name, json!(s(o, "/type")), json!(count), age]
        }
        "ServiceAccount" => {
            let count = o
                .get("secrets")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            vec![name, json!(count), age]
        }
        "Job" => {
            let (c, i) = template_containers(o);
            let conds = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let is = |t: &str| {
                conds
                    .iter()
                    .any(|x| s(x, "/type") == t && s(x, "/status") == "True")
            };
            let status = if is("Complete") {
                "Complete"
            } else if is("Failed") {
                "Failed"
            } else if is("Suspended") {
                "Suspended"
            } else {
                "Running"
            };
            let completions = format!(
                "{}/{}",
                n(o, "/status/succeeded"),
                n(o, "/spec/completions").max(1)
            );
            let duration = match (
                o.pointer("/status/startTime").and_then(Value::as_str),
                o.pointer("/status/completionTime").and_then(Value::as_str),
            ) {
                (Some(_), None) => age_of(o.pointer("/status/startTime").and_then(Value::as_str)),
                (Some(a), Some(b)) => {
                    let p = |t: &str| {
                        time::OffsetDateTime::parse(
                            t,
                            &time::format_description::well_known::Rfc3339,
                        )
                        .ok()
                    };
                    match (p(a), p(b)) {
                        (Some(a), Some(b)) => human_duration((b - a).whole_seconds()),
                        _ => String::new(),
                    }
                }
                _ => String::new(),
            };
            vec![
                name,
                json!(status),
                json!(completions),
                json!(duration),
                age,
                json!(c),
                json!(i),
                json!(selector_string(o.pointer("/spec/selector"))),
            ]
        }
        "DaemonSet" => {
            let (c, i) = template_containers(o);
            let node_selector = o
                .pointer("/spec/template/spec/nodeSelector")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                name,
                json!(n(o, "/status/desiredNumberScheduled")),
                json!(n(o, "/status/currentNumberScheduled")),
                json!(n(o, "/status/numberReady")),
                json!(n(o, "/status/updatedNumberScheduled")),
                json!(n(o, "/status/numberAvailable")),
                json!(none_if_empty(node_selector)),
                age,
                json!(c),
                json!(i),
                json!(selector_string(o.pointer("/spec/selector"))),
            ]
        }
        "CronJob" => {
            let template = o.pointer("/spec/jobTemplate").cloned().unwrap_or_default();
            let (c, i) = template_containers(&template);
            let last = o
                .pointer("/status/lastScheduleTime")
                .and_then(Value::as_str)
                .map_or_else(|| "<none>".to_string(), |t| age_of(Some(t)));
            let active = o
                .pointer("/status/active")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            vec![
                name,
                json!(s(o, "/spec/schedule")),
                json!(none_if_empty(s(o, "/spec/timeZone").to_string())),
                json!(
                    o.pointer("/spec/suspend")
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                ),
                json!(active),
                json!(last),
                age,
                json!(c),
                json!(i),
                json!(selector_string(template.pointer("/spec/selector"))),
            ]
        }
        "Endpoints" => {
            let mut eps = Vec::new();
            for sub in o
                .get("subsets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let ports: Vec<i64> = sub
                    .get("ports")
                    .and_then(Value::as_array)
                    .map(|p| p.iter().map(|x| n(x, "/port")).collect())
                    .unwrap_or_default();
                for a in sub
                    .get("addresses")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if ports.is_empty() {
                        eps.push(s(a, "/ip").to_string());
                    }
                    for p in &ports {
                        eps.push(format!("{}:{}", s(a, "/ip"), p));
                    }
                }
            }
            let shown = if eps.len() > 3 {
                format!("{} + {} more...", eps[..3].join(","), eps.len() - 3)
            } else {
                none_if_empty(eps.join(","))
            };
            vec![name, json!(shown), age]
        }
        "EndpointSlice" => {
            let ports: Vec<String> = o
                .get("ports")
                .and_then(Value::as_array)
                .map(|p| p.iter().map(|x| n(x, "/port").to_string()).collect())
                .unwrap_or_default();
            let addrs: Vec<String> = o
                .get("endpoints")
                .and_then(Value::as_array)
                .map(|e| {
                    e.iter()
                        .flat_map(|x| {
                            x.get("addresses")
                                .and_then(Value::as_array)
                                .cloned()
                                .unwrap_or_default()
                        })
                        .filter_map(|a| a.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            vec![
                name,
                json!(s(o, "/addressType")),
                json!(none_if_empty(ports.join(","))),
                json!(none_if_empty(addrs.join(","))),
                age,
            ]
        }
        "Event" => {
            let last = o
                .get("lastTimestamp")
                .and_then(Value::as_str)
                .or(o.get("eventTime").and_then(Value::as_str))
                .or(o
                    .pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str));
            let obj = format!(
                "{}/{}",
                s(o, "/involvedObject/kind").to_lowercase(),
                s(o, "/involvedObject/name")
            );
            vec![
                json!(age_of(last)),
                json!(s(o, "/type")),
                json!(s(o, "/reason")),
                json!(obj),
                json!(s(o, "/message")),
            ]
        }
        "Lease" => vec![
            name,
            json!(none_if_empty(s(o, "/spec/holderIdentity").to_string())),
            age,
        ],
        "RoleBinding" | "ClusterRoleBinding" => {
            let subjects = o
                .get("subjects")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let of = |k: &str| {
                subjects
                    .iter()
                    .filter(|x| s(x, "/kind") == k)
                    .map(|x| {
                        if k == "ServiceAccount" {
                            format!("{}/{}", s(x, "/namespace"), s(x, "/name"))
                        } else {
                            s(x, "/name").to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    s(o, "/roleRef/kind"),
                    s(o, "/roleRef/name")
                )),
                age,
                json!(of("User")),
                json!(of("Group")),
                json!(of("ServiceAccount")),
            ]
        }
        _ => vec![name, json!(s(o, "/metadata/creationTimestamp"))],
    }
}

fn row_object(kind: &Kind, o: &Value, include: &str) -> Option<Value> {
    match include {
        "None" => None,
        "Object" => Some(o.clone()),
        _ => Some(json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": o.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }))
        .map(|mut v| {
            let _ = kind;
            if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("managedFields");
            }
            v
        }),
    }
}

fn column_defs(kind: &str) -> Vec<Value> {
    columns(kind)
        .iter()
        .map(|c| {
            json!({"name": c.name, "type": c.ty, "format": c.format,
                   "description": c.description, "priority": c.priority})
        })
        .collect()
}

fn row(kind: &Kind, o: &Value, include: &str) -> Value {
    let mut r = json!({"cells": cells(kind.kind, o)});
    if let Some(obj) = row_object(kind, o, include) {
        r["object"] = obj;
    }
    r
}

/// A Table of a list.
pub fn list(kind: &Kind, items: &[Value], list_meta: Value, include: &str) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": column_defs(kind.kind),
        "rows": items.iter().map(|o| row(kind, o, include)).collect::<Vec<_>>(),
    })
}

/// A Table of one object.
pub fn single(kind: &Kind, o: &Value, include: &str) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": s(o, "/metadata/resourceVersion")},
        "columnDefinitions": column_defs(kind.kind),
        "rows": [row(kind, o, include)],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::by_resource;

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(3600 * 3 + 60 * 5), "3h5m");
        assert_eq!(human_duration(86400 * 3), "3d");
        assert_eq!(human_duration(86400 * 400), "400d");
    }

    #[test]
    fn pod_rows_show_ready_and_status() {
        let pods = by_resource("", "v1", "pods").unwrap();
        let pod = json!({"metadata": {"name": "web", "namespace": "d"},
            "spec": {"containers": [{"name": "c"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "127.128.0.5",
                "containerStatuses": [{"ready": true, "restartCount": 2, "state": {"running": {}}}]}});
        let t = list(pods, &[pod], json!({}), "Metadata");
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "web");
        assert_eq!(cells[1], "1/1");
        assert_eq!(cells[2], "Running");
        assert_eq!(cells[3], "2");
        assert_eq!(cells[6], "n1");
        assert_eq!(t["rows"][0]["object"]["metadata"]["namespace"], "d");
        assert_eq!(
            t["columnDefinitions"].as_array().unwrap().len(),
            cells.as_array().unwrap().len()
        );
    }
}
