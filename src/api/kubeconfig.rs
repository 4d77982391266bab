//! Kubeconfig files: the admin kubeconfig written at first start and the
//! ones `wkube kubeconfig` prints.

use base64::Engine;
use serde_json::json;

/// A kubeconfig (YAML) for `server` trusting `ca_pem`, authenticating with
/// a bearer token.
pub fn render(
    cluster: &str,
    server: &str,
    ca_pem: Option<&str>,
    user: &str,
    token: &str,
) -> String {
    let mut cluster_entry = json!({"server": server});
    if let Some(ca) = ca_pem {
        cluster_entry["certificate-authority-data"] =
            json!(base64::engine::general_purpose::STANDARD.encode(ca));
    }
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": cluster_entry}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": format!("{user}@{cluster}"), "context": {"cluster": cluster, "user": user, "namespace": "default"}}],
        "current-context": format!("{user}@{cluster}"),
        "preferences": {},
    });
    serde_yaml_ng::to_string(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubeconfig_names_its_context_and_token() {
        let k = render(
            "wkube",
            "https://127.0.0.1:6443",
            Some("PEM"),
            "admin",
            "tok",
        );
        let v: serde_json::Value = serde_yaml_ng::from_str(&k).unwrap();
        assert_eq!(v["current-context"], "admin@wkube");
        assert_eq!(v["users"][0]["user"]["token"], "tok");
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
    }
}
