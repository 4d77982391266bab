//! NetworkPolicies, applied with stock kubectl and enforced by the node's
//! proxy on a guest's outgoing requests: the `echo:v1` guest's `/fetch`
//! calls the `hello` Service, reached through the API server's pod proxy.

use crate::common;

use std::time::Duration;

use common::{Kubectl, curl, eventually};

/// A Deployment `hello` of `hello:v1` pods labelled `app=hello`, serving
/// on the container port named `http`, and its Service on port 80.
const HELLO: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: hello}
spec:
  replicas: 2
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      containers:
      - name: web
        image: hello:v1
        ports: [{containerPort: 8080, name: http}]
---
apiVersion: v1
kind: Service
metadata: {name: hello}
spec:
  type: NodePort
  selector: {app: hello}
  ports: [{name: http, port: 80, targetPort: http}]
"#;

/// Isolates the hello pods for ingress, allowing nothing.
const DENY_HELLO: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: hello-deny}
spec:
  podSelector: {matchLabels: {app: hello}}
  policyTypes: [Ingress]
"#;

/// Lets pods labelled `app=echo` in, on the named port only.
const ALLOW_ECHO: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: hello-from-echo}
spec:
  podSelector: {matchLabels: {app: hello}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: echo}}}]
    ports: [{port: http}]
"#;

/// Lets the host in: NodePort clients on loopback, whether curl or the
/// proxy sending a guest's request out.
const ALLOW_HOST: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: hello-from-host}
spec:
  podSelector: {matchLabels: {app: hello}}
  ingress:
  - from: [{ipBlock: {cidr: 127.0.0.0/8, except: [127.128.0.0/9]}}]
"#;

/// Echo may call the hello pods and nothing else.
const ECHO_EGRESS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: echo-egress}
spec:
  podSelector: {matchLabels: {app: echo}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: hello}}}]
"#;

const HELLO_URL: &str = "http://hello.default.svc.cluster.local/";

/// GET through the echo pod's `/fetch`: (succeeded, stdout + stderr).
/// kubectl shows an error's body only when logging responses (`-v=8`).
fn fetch(k: &Kubectl, url: &str) -> (bool, String) {
    let path = format!("/api/v1/namespaces/default/pods/echo/proxy/fetch?url={url}");
    let out = k.run(&["get", "--raw", &path, "-v=8"]);
    (
        out.status.success(),
        format!("{}{}", out.stdout, out.stderr),
    )
}

/// Polls `fetch` until `want` holds of its answer; the last answer.
fn fetch_until(k: &Kubectl, url: &str, want: impl Fn(bool, &str) -> bool) -> (bool, String) {
    let mut last = (false, String::new());
    eventually(Duration::from_secs(30), || {
        last = fetch(k, url);
        want(last.0, &last.1)
    });
    last
}

#[test]
fn ingress_and_egress_policies_decide_what_a_guest_may_call() {
    let s = common::node_server_with_examples();
    let k = s.kubectl();
    k.ok_with_stdin(&["apply", "-f", "-"], HELLO);
    k.ok(&[
        "run",
        "echo",
        "--image=echo:v1",
        "--restart=Never",
        "--labels=app=echo",
    ]);
    k.ok(&["wait", "--for=condition=Ready", "pod/echo", "--timeout=90s"]);
    k.ok(&["rollout", "status", "deployment/hello", "--timeout=90s"]);
    let (ok, out) = fetch_until(&k, HELLO_URL, |ok, out| ok && out.contains("Hello"));
    assert!(
        ok && out.starts_with("Hello from wkube!\n"),
        "before any policy: {out}"
    );

    // A default deny on the hello pods: the request never reaches them.
    k.ok_with_stdin(&["apply", "-f", "-"], DENY_HELLO);
    let (ok, out) = fetch_until(&k, HELLO_URL, |ok, _| !ok);
    assert!(!ok, "{out}");
    assert!(
        out.contains("denied by NetworkPolicy: pod default/hello-")
            && out.contains("does not allow ingress from default/echo"),
        "{out}"
    );
    // From the host through the NodePort too: outside sources match only
    // ipBlock peers.
    let node_port = k.ok(&[
        "get",
        "service",
        "hello",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ]);
    let node_ip = s.addresses.node_ip.to_string();
    let node_url = format!("http://{node_ip}:{}/", node_port.trim());
    let (code, body) = curl(&[&node_url]);
    assert!(
        code == 403 && body.contains("does not allow ingress from"),
        "{code} {body}"
    );
    let table = k.ok(&["get", "netpol"]);
    assert!(
        table.contains("POD-SELECTOR") && table.contains("app=hello"),
        "{table}"
    );

    // Allowing pods labelled app=echo on the named port lets it through.
    k.ok_with_stdin(&["apply", "-f", "-"], ALLOW_ECHO);
    let (ok, out) = fetch_until(&k, HELLO_URL, |ok, _| ok);
    assert!(
        ok && out.starts_with("Hello from wkube!\n"),
        "allowed: {out}"
    );
    assert_eq!(curl(&[&node_url]).0, 403, "a pod selector lets no host in");
    k.ok_with_stdin(&["apply", "-f", "-"], ALLOW_HOST);
    assert!(
        eventually(Duration::from_secs(20), || curl(&[&node_url]).0 == 200),
        "{:?}",
        curl(&[&node_url])
    );

    // Echo limited to the hello pods: the API server behind `kubernetes`
    // is out of bounds, hello still in.
    k.ok_with_stdin(&["apply", "-f", "-"], ECHO_EGRESS);
    let api = "https://kubernetes.default.svc/version";
    let (ok, out) = fetch_until(&k, api, |_, out| out.contains("denied by NetworkPolicy"));
    assert!(
        !ok && out.contains("denied by NetworkPolicy: pod default/echo does not allow egress to"),
        "{out}"
    );
    let (ok, out) = fetch(&k, HELLO_URL);
    assert!(
        ok && out.starts_with("Hello from wkube!\n"),
        "egress to hello: {out}"
    );
    // An address outside the cluster (the node's NodePort) is refused
    // too, until an egress ipBlock allows it: then the proxy sends it,
    // though echo has no allowed-hosts annotation.
    let (ok, out) = fetch(&k, &node_url);
    assert!(
        !ok && out.contains(&format!(
            "denied by NetworkPolicy: pod default/echo does not allow egress to {node_ip}"
        )),
        "{out}"
    );
    let with_block = ECHO_EGRESS.replace(
        "- to: [{podSelector: {matchLabels: {app: hello}}}]",
        &format!("- to: [{{podSelector: {{matchLabels: {{app: hello}}}}}}, {{ipBlock: {{cidr: {node_ip}/32}}}}]"),
    );
    k.ok_with_stdin(&["apply", "-f", "-"], &with_block);
    let (ok, out) = fetch_until(&k, &node_url, |ok, _| ok);
    assert!(
        ok && out.starts_with("Hello from wkube!\n"),
        "ipBlock: {out}"
    );

    // Without the policies, all is open again.
    k.ok(&["delete", "networkpolicy", "--all"]);
    let (ok, out) = fetch_until(&k, api, |_, out| !out.contains("denied"));
    assert!(!out.contains("denied"), "{ok} {out}");
}

#[test]
fn invalid_policies_are_refused_naming_the_field() {
    let s = common::node_server_with_examples();
    let k = s.kubectl();
    let bad = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad}
spec:
  podSelector: {}
  policyTypes: [Sideways]
  egress:
  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [192.168.0.0/16]}}]
    ports: [{port: 90, endPort: 80}]
"#;
    let out = k.run_with_stdin(&["apply", "-f", "-"], bad);
    assert!(!out.status.success());
    for field in [
        "spec.policyTypes[0]",
        "spec.egress[0].to[0].ipBlock.except[0]",
        "spec.egress[0].ports[0].endPort",
    ] {
        assert!(out.stderr.contains(field), "{field}: {}", out.stderr);
    }
}
