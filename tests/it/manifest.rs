//! One application as a chart would ship it: a single multi-document
//! manifest with every everyday kind (a namespace with its quota, limit
//! range, accounts and roles; a CRD and one of its objects; a Deployment
//! and a ReplicationController with a priority class; a Service, an
//! Ingress, a Gateway and its HTTPRoute; an autoscaler, a disruption
//! budget, a network policy; a storage class and a claim). Applied with
//! stock kubectl, applied again it is `unchanged` line for line, and the
//! application answers through its Ingress and its Gateway.
//!
//! Lists kubectl compares whole (those of kinds it has no merge keys for,
//! like the Gateway API's, and unkeyed ones like a NetworkPolicy's rules)
//! are written with the defaults the server fills in, and the Secret with
//! `data` rather than `stringData`: otherwise kubectl reports them
//! `configured` on every apply, against Kubernetes as well.

use crate::common;

use std::time::Duration;

use common::{curl_host, eventually};

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: shop-high}
value: 1000
description: The shop's own pods.
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: shop-disks}
provisioner: example.test/none
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: carts.shop.example.test}
spec:
  group: shop.example.test
  scope: Namespaced
  names: {plural: carts, singular: cart, kind: Cart}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              items: {type: integer, minimum: 0}
              owner: {type: string}
---
apiVersion: shop.example.test/v1
kind: Cart
metadata: {name: first, namespace: shop}
spec: {items: 3, owner: ada}
---
apiVersion: v1
kind: ResourceQuota
metadata: {name: shop-quota, namespace: shop}
spec:
  hard: {pods: "10", requests.cpu: "2", limits.memory: 2Gi}
---
apiVersion: v1
kind: LimitRange
metadata: {name: shop-defaults, namespace: shop}
spec:
  limits:
  - type: Container
    default: {cpu: 500m, memory: 128Mi}
    defaultRequest: {cpu: 100m, memory: 64Mi}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: shop-app, namespace: shop}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: shop-config, namespace: shop}
data: {greeting: hello}
---
apiVersion: v1
kind: Secret
metadata: {name: shop-secret, namespace: shop}
data: {token: czNjcmV0}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: shop-reader, namespace: shop}
rules:
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: shop-reader, namespace: shop}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: shop-reader}
subjects:
- {kind: ServiceAccount, name: shop-app, namespace: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      serviceAccountName: shop-app
      priorityClassName: shop-high
      containers:
      - name: web
        image: hello:v1
        ports: [{containerPort: 8080, name: http}]
---
apiVersion: v1
kind: ReplicationController
metadata: {name: legacy, namespace: shop}
spec:
  replicas: 1
  selector: {app: legacy}
  template:
    metadata: {labels: {app: legacy}}
    spec:
      containers:
      - name: echo
        image: echo:v1
        ports: [{containerPort: 8080, name: http}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: shop}
spec:
  rules:
  - host: shop.example.test
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {service: {name: web, port: {name: http}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  gatewayClassName: wkube
  listeners:
  - name: http
    port: 8088
    protocol: HTTP
    allowedRoutes: {namespaces: {from: Same}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge}]
  hostnames: [gw.example.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{group: "", kind: Service, name: web, port: 80, weight: 1}]
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web, namespace: shop}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 1
  maxReplicas: 3
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 80}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web, namespace: shop}
spec:
  minAvailable: 1
  selector: {matchLabels: {app: web}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-http-only, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress:
  - ports: [{port: http, protocol: TCP}]
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: shop}
spec:
  storageClassName: shop-disks
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
"#;

/// The number of documents in [`MANIFEST`].
fn documents() -> usize {
    MANIFEST.split("\n---\n").count()
}

#[test]
fn a_manifest_of_every_kind_applies_then_applies_again_unchanged_and_serves() {
    let s = common::node_server_with_examples();
    let k = s.kubectl();

    // As with any cluster, a CRD and its objects in one file take two
    // applies: kubectl maps every document before it sends the first, so
    // the Cart has no kind yet. Everything else goes in the first time.
    let first = k.run_with_stdin(&["apply", "-f", "-"], MANIFEST);
    if !first.status.success() {
        let only_the_cart = first
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .all(|l| {
                l.contains("no matches for kind \"Cart\"") || l == "ensure CRDs are installed first"
            });
        assert!(
            only_the_cart && first.stderr.contains("Cart"),
            "the first apply failed for more than the Cart:\n{}\n{}",
            first.stdout,
            first.stderr
        );
    }
    k.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/carts.shop.example.test",
        "--timeout=30s",
    ]);
    let second = k.ok_with_stdin(&["apply", "-f", "-"], MANIFEST);
    assert_eq!(second.lines().count(), documents(), "{second}");
    assert!(second.contains("cart.shop.example.test/first"), "{second}");

    // The app is up, through the Ingress on the node's port 80 and through
    // the Gateway's listener.
    k.ok(&[
        "-n",
        "shop",
        "rollout",
        "status",
        "deployment/web",
        "--timeout=90s",
    ]);
    let node_ip = s.addresses.node_ip;
    for (url, host) in [
        (format!("http://{node_ip}:80/"), "shop.example.test"),
        (format!("http://{node_ip}:8088/"), "gw.example.test"),
    ] {
        assert!(
            eventually(Duration::from_secs(30), || {
                curl_host(&url, host) == (200, "Hello from wkube!\n".to_string())
            }),
            "{host} never answered: {:?}\n{}",
            curl_host(&url, host),
            s.log_tail(30)
        );
    }

    // Admission filled in what the namespace's limit range gives, and the
    // pods carry the priority class's value.
    let pod = k.ok(&[
        "-n",
        "shop",
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[0].spec.containers[0].resources.requests.cpu} {.items[0].spec.priority}",
    ]);
    assert_eq!(pod, "100m 1000");

    // Applied again once the controllers have written their statuses,
    // revisions and defaults: nothing to change, line for line.
    let again = k.ok_with_stdin(&["apply", "-f", "-"], MANIFEST);
    let lines: Vec<&str> = again.lines().collect();
    assert_eq!(lines.len(), documents(), "{again}");
    for line in &lines {
        assert!(
            line.ends_with(" unchanged"),
            "not unchanged: {line}\n{again}"
        );
    }

    // `kubectl get all` lists the workloads and the Service.
    let all = k.ok(&["-n", "shop", "get", "all"]);
    for name in [
        "deployment.apps/web",
        "replicationcontroller/legacy",
        "service/web",
        "horizontalpodautoscaler.autoscaling/web",
    ] {
        assert!(all.contains(name), "{name} missing from get all:\n{all}");
    }
}
