//! The wire format of joining, shared by the agent that asks and the API
//! server that answers (`api::join`): the token's shape, the two routes and
//! the request and response bodies. It lives with the client so that an
//! agent-only build (without the `server` feature) can join.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Public route serving the cluster CA certificate.
pub const CACERTS_ROUTE: &str = "/cacerts";
/// Route trading a join token for a node credential.
pub const JOIN_ROUTE: &str = "/apis/wkube.dev/v1/join";

/// `K10<hex sha256 of ca_pem>::<id>.<secret>`.
pub fn format_token(ca_pem: &str, secret: &str) -> String {
    format!("K10{}::{secret}", ca_hash(ca_pem))
}

/// The hex sha256 of the CA certificate PEM, as the token pins it.
pub fn ca_hash(ca_pem: &str) -> String {
    hex::encode(Sha256::digest(ca_pem.as_bytes()))
}

/// Splits a join token into the CA hash and the `<id>.<secret>` part.
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.trim().strip_prefix("K10")?;
    let (hash, secret) = rest.split_once("::")?;
    let valid_hash = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
    let (id, s) = secret.split_once('.')?;
    let valid_secret = id.len() == 6
        && s.len() == 16
        && secret
            .bytes()
            .all(|b| b == b'.' || b.is_ascii_lowercase() || b.is_ascii_digit());
    (valid_hash && valid_secret).then_some((hash, secret))
}

/// The join request: the token's `<id>.<secret>` part and who joins.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    pub token: String,
    pub node_name: String,
    #[serde(rename = "nodeIP")]
    pub node_ip: IpAddr,
}

/// What a joined node gets.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinResponse {
    pub ca_cert: String,
    pub client_cert: String,
    pub client_key: String,
    /// A bearer token for the same user, for clusters without TLS.
    pub token: String,
    pub serving_cert: String,
    pub serving_key: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_malformed_ones_are_refused() {
        let t = format_token("CA", "abcdef.0123456789abcdef");
        let (hash, secret) = parse_token(&t).unwrap();
        assert_eq!(hash, ca_hash("CA"));
        assert_eq!(secret, "abcdef.0123456789abcdef");
        for bad in [
            "abcdef.0123456789abcdef",
            "K10xyz::abcdef.0123456789abcdef",
            &format!("K10{}::ABCDEF.0123456789abcdef", ca_hash("CA")),
            &format!("K10{}::abc.def", ca_hash("CA")),
        ] {
            assert!(parse_token(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_request_is_what_the_server_reads() {
        let req = JoinRequest {
            token: "abcdef.0123456789abcdef".into(),
            node_name: "n1".into(),
            node_ip: "127.0.0.2".parse().unwrap(),
        };
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"token": "abcdef.0123456789abcdef", "nodeName": "n1", "nodeIP": "127.0.0.2"})
        );
    }
}
