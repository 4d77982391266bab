//! Ingress, as a user checks it with stock kubectl and curl: the `wkube`
//! class is there and the default, `kubectl create ingress` routes by host
//! and path to Services on the node's port 80, the address shows in
//! `kubectl get ingress`, and what matches no rule gets a 404.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::{curl_host, deploy_app, eventually};
use serde_json::Value;

#[test]
fn an_ingress_routes_by_host_and_path_and_shows_its_address() {
    let s = common::node_server_with_examples();
    let k = s.kubectl();

    // The built-in class, marked the default.
    let classes = k.ok(&["get", "ingressclass"]);
    assert!(classes.contains("wkube.dev/ingress"), "{classes}");
    let class: Value =
        serde_json::from_str(&k.ok(&["get", "ingressclass", "wkube", "-o", "json"])).unwrap();
    assert_eq!(
        class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"],
        "true"
    );

    deploy_app(&k, "hello", "hello:v1");
    deploy_app(&k, "echo", "echo:v1");

    // No class named: the default one is filled in.
    k.ok(&[
        "create",
        "ingress",
        "shop",
        "--rule=shop.example.test/*=hello:80",
        "--rule=shop.example.test/status*=echo:http",
        "--rule=echo.example.test/headers=echo:80",
    ]);
    let ing: Value =
        serde_json::from_str(&k.ok(&["get", "ingress", "shop", "-o", "json"])).unwrap();
    assert_eq!(ing["spec"]["ingressClassName"], "wkube", "{ing}");

    let url = |path: &str| format!("http://{}:80{path}", s.addresses.node_ip);
    assert!(
        eventually(Duration::from_secs(30), || {
            curl_host(&url("/"), "shop.example.test").0 == 200
        }),
        "the ingress never answered: {:?}\n{}",
        curl_host(&url("/"), "shop.example.test"),
        s.log_tail(30)
    );
    assert_eq!(
        curl_host(&url("/any/page"), "shop.example.test"),
        (200, "Hello from wkube!\n".to_string())
    );
    // The longer Prefix `/status` (by port name) goes to echo-http, with
    // the path passed on whole; `/statusx` is not under it.
    assert_eq!(curl_host(&url("/status/201"), "shop.example.test").0, 201);
    assert_eq!(
        curl_host(&url("/statusx"), "shop.example.test"),
        (200, "Hello from wkube!\n".to_string())
    );
    // Exact `/headers` on another host reaches echo-http, which shows the
    // request's headers.
    let (code, body) = curl_host(&url("/headers"), "echo.example.test");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("user-agent"), "{body}");
    // Exact means exact; an unknown host matches no rule.
    assert_eq!(curl_host(&url("/headers/x"), "echo.example.test").0, 404);
    assert_eq!(curl_host(&url("/"), "other.example.test").0, 404);

    // The node's address in the status, as `kubectl get ingress` shows it.
    let node_ip = s.addresses.node_ip.to_string();
    assert!(
        eventually(Duration::from_secs(20), || {
            k.ok(&["get", "ingress", "shop"]).contains(&node_ip)
        }),
        "{}",
        k.ok(&["get", "ingress", "shop", "-o", "yaml"])
    );
    let table = k.ok(&["get", "ingress", "shop"]);
    assert!(table.contains("wkube"), "{table}");
    assert!(table.contains("shop.example.test"), "{table}");

    // Deleted: the route goes with it.
    k.ok(&["delete", "ingress", "shop"]);
    assert!(
        eventually(Duration::from_secs(20), || {
            curl_host(&url("/"), "shop.example.test").0 != 200
        }),
        "the deleted ingress still routes"
    );
}

#[test]
fn an_ingress_with_tls_serves_its_secret_certificate_by_name() {
    let s = common::node_server_with_examples();
    let k = s.kubectl();
    deploy_app(&k, "hello", "hello:v1");

    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["secure.example.test".to_string()]).unwrap();
    let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&crt, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
    k.ok(&[
        "create",
        "secret",
        "tls",
        "secure-tls",
        &format!("--cert={}", crt.display()),
        &format!("--key={}", key.display()),
    ]);
    k.ok(&[
        "create",
        "ingress",
        "secure",
        "--rule=secure.example.test/*=hello:80,tls=secure-tls",
    ]);
    let table = k.ok(&["get", "ingress", "secure"]);
    assert!(table.contains("80, 443"), "{table}");

    let node_ip = s.addresses.node_ip;
    let https = |name: &str| {
        common::run(
            {
                let mut c = Command::new("curl");
                c.args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
                    .arg("--cacert")
                    .arg(&crt)
                    .args(["--resolve", &format!("{name}:443:{node_ip}")])
                    .arg(format!("https://{name}/"));
                c
            },
            None,
            Duration::from_secs(15),
        )
    };
    // The certificate verifies against its own CA for its host name.
    assert!(
        eventually(Duration::from_secs(30), || https("secure.example.test")
            .stdout
            .ends_with("\n200")),
        "{:?}\n{}",
        https("secure.example.test"),
        s.log_tail(30)
    );
    assert_eq!(
        https("secure.example.test").stdout,
        "Hello from wkube!\n\n200"
    );
    // A name no Ingress has a certificate for gets no certificate at all.
    let other = https("other.example.test");
    assert!(!other.status.success(), "{other:?}");
}

#[test]
fn an_invalid_ingress_is_refused_with_the_field_named() {
    let s = common::TestServer::start();
    let k = s.kubectl();
    let bad = r#"{"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "bad"},
        "spec": {"rules": [{"host": "1.2.3.4", "http": {"paths": [
            {"path": "nope", "pathType": "Prefix",
             "backend": {"service": {"name": "x", "port": {"number": 80}}}}]}}]}}"#;
    let out = k.run_with_stdin(&["create", "-f", "-"], bad);
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("spec.rules[0].host")
            && out.stderr.contains("spec.rules[0].http.paths[0].path"),
        "{}",
        out.stderr
    );
}
