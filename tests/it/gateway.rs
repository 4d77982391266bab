//! The Gateway API, as a user checks it with stock kubectl and curl: the
//! `wkube` GatewayClass is accepted, a Gateway's listeners are served on
//! the node's address (HTTP, and HTTPS with a Secret's certificate), an
//! HTTPRoute splits traffic by weight and routes a header to a canary, and
//! the statuses say what was accepted and what is missing.

use crate::common;

use std::time::Duration;

use common::{curl, deploy_app, eventually};
use serde_json::Value;

const HELLO: &str = "Hello from wkube!\n";

#[test]
fn a_gateway_serves_weighted_and_header_routes_over_http_and_https() {
    let s = common::node_server_with_examples();
    let k = s.kubectl();
    assert!(
        eventually(Duration::from_secs(20), || {
            k.ok(&["get", "gatewayclass", "wkube"]).contains("True")
        }),
        "{}",
        k.ok(&["get", "gatewayclass", "-o", "yaml"])
    );
    deploy_app(&k, "hello", "hello:v1");
    deploy_app(&k, "echo", "echo:v1");

    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["shop.example.test".to_string()]).unwrap();
    let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&crt, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
    k.ok(&[
        "create",
        "secret",
        "tls",
        "shop-tls",
        &format!("--cert={}", crt.display()),
        &format!("--key={}", key.display()),
    ]);
    k.ok_with_stdin(
        &["apply", "-f", "-"],
        r#"{"apiVersion": "v1", "kind": "List", "items": [
          {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
           "metadata": {"name": "edge"},
           "spec": {"gatewayClassName": "wkube", "listeners": [
             {"name": "http", "port": 8080, "protocol": "HTTP"},
             {"name": "https", "port": 8443, "protocol": "HTTPS",
              "hostname": "shop.example.test",
              "tls": {"certificateRefs": [{"name": "shop-tls"}]}}]}},
          {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
           "metadata": {"name": "shop"},
           "spec": {"parentRefs": [{"name": "edge"}],
             "hostnames": ["shop.example.test"],
             "rules": [
               {"backendRefs": [{"name": "hello", "port": 80, "weight": 3},
                                {"name": "echo", "port": 80, "weight": 1}]},
               {"matches": [{"headers": [{"name": "x-canary", "value": "yes"}]}],
                "backendRefs": [{"name": "echo", "port": 80}]}]}},
          {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
           "metadata": {"name": "broken"},
           "spec": {"parentRefs": [{"name": "edge", "sectionName": "http"}],
             "hostnames": ["broken.example.test"],
             "rules": [{"backendRefs": [{"name": "missing", "port": 80}]}]}}]}"#,
    );

    let node_ip = s.addresses.node_ip;
    let http = format!("http://{node_ip}:8080/");
    let shop = ["-H", "Host: shop.example.test"];
    assert!(
        eventually(Duration::from_secs(30), || {
            curl(&[&shop[..], &[http.as_str()]].concat()).0 == 200
        }),
        "the gateway never answered: {:?}\n{}",
        curl(&[&shop[..], &[http.as_str()]].concat()),
        s.log_tail(30)
    );
    // Weights 3:1, in a smooth rotation: any 8 requests in a row split 6:2.
    let bodies: Vec<String> = (0..8)
        .map(|_| curl(&[&shop[..], &[http.as_str()]].concat()).1)
        .collect();
    let to_hello = bodies.iter().filter(|b| *b == HELLO).count();
    assert_eq!(to_hello, 6, "{bodies:?}");
    // A header match outranks the rule without one.
    for _ in 0..4 {
        let (code, body) = curl(&[
            "-H",
            "Host: shop.example.test",
            "-H",
            "x-canary: yes",
            &http,
        ]);
        assert_eq!(code, 200);
        assert_ne!(body, HELLO);
    }
    // Unknown host: 404; a rule whose Service is missing: 500.
    assert_eq!(curl(&["-H", "Host: other.example.test", &http]).0, 404);
    assert_eq!(curl(&["-H", "Host: broken.example.test", &http]).0, 500);

    // HTTPS with the Secret's certificate, for the listener's host.
    let resolve = format!("shop.example.test:8443:{node_ip}");
    let https = |extra: &[&str]| {
        let mut args = vec![
            "--cacert",
            crt.to_str().unwrap(),
            "--resolve",
            resolve.as_str(),
        ];
        args.extend_from_slice(extra);
        args.push("https://shop.example.test:8443/");
        curl(&args)
    };
    assert!(
        eventually(Duration::from_secs(30), || https(&["-H", "x-canary: yes"])
            .0
            == 200),
        "{:?}",
        https(&[])
    );

    // Statuses: the Gateway's address and attached routes; each route's
    // acceptance, and the missing backend named.
    let node = node_ip.to_string();
    assert!(
        eventually(Duration::from_secs(20), || {
            let gw: Value =
                serde_json::from_str(&k.ok(&["get", "gateway", "edge", "-o", "json"])).unwrap();
            gw["status"]["addresses"][0]["value"] == node.as_str()
                && gw["status"]["listeners"][0]["attachedRoutes"] == 2
                && gw["status"]["listeners"][1]["attachedRoutes"] == 1
        }),
        "{}",
        k.ok(&["get", "gateway", "edge", "-o", "yaml"])
    );
    let table = k.ok(&["get", "gateway", "edge"]);
    assert!(table.contains(&node) && table.contains("True"), "{table}");
    let condition = |route: &str, ty: &str| -> (String, String) {
        let r: Value =
            serde_json::from_str(&k.ok(&["get", "httproute", route, "-o", "json"])).unwrap();
        let c = r["status"]["parents"][0]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == ty)
            .cloned()
            .unwrap_or(Value::Null);
        (
            c["status"].as_str().unwrap_or("").to_string(),
            c["reason"].as_str().unwrap_or("").to_string(),
        )
    };
    assert!(
        eventually(Duration::from_secs(20), || {
            condition("broken", "ResolvedRefs") == ("False".into(), "BackendNotFound".into())
        }),
        "{}",
        k.ok(&["get", "httproute", "broken", "-o", "yaml"])
    );
    assert_eq!(condition("broken", "Accepted").0, "True");
    assert_eq!(
        condition("shop", "ResolvedRefs"),
        ("True".into(), "ResolvedRefs".into())
    );
}

#[test]
fn unsupported_gateway_api_features_are_refused_with_the_field_named() {
    let s = common::TestServer::start();
    let k = s.kubectl();
    let out = k.run_with_stdin(
        &["create", "-f", "-"],
        r#"{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "r"},
            "spec": {"rules": [{"matches": [{"path": {"type": "RegularExpression", "value": "/.*"}}],
              "filters": [{"type": "RequestHeaderModifier"}],
              "backendRefs": [{"name": "x"}]}]}}"#,
    );
    assert!(!out.status.success());
    for field in [
        "spec.rules[0].matches[0].path.type",
        "spec.rules[0].filters",
        "spec.rules[0].backendRefs[0].port",
    ] {
        assert!(out.stderr.contains(field), "{field}: {}", out.stderr);
    }
    let out = k.run_with_stdin(
        &["create", "-f", "-"],
        r#"{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "g"},
            "spec": {"gatewayClassName": "wkube", "listeners": [
              {"name": "a", "port": 443, "protocol": "HTTPS"},
              {"name": "a", "port": 53, "protocol": "UDP"}]}}"#,
    );
    assert!(!out.status.success());
    for field in [
        "spec.listeners[0].tls.certificateRefs",
        "spec.listeners[1].name",
        "spec.listeners[1].protocol",
    ] {
        assert!(out.stderr.contains(field), "{field}: {}", out.stderr);
    }
}
