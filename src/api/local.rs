//! A client for control-plane components running inside `wkube server`
//! that reaches the API without a socket.
//!
//! The scheduler and the controller managers run in the server's own
//! process. Over loopback TCP every one of their requests and every watch
//! event they receive cost a kernel round trip plus HTTP framing on both
//! sides, which was a large share of the server's CPU under load. This
//! client hands each request straight to the same router a socket's
//! requests reach, so authentication, RBAC, admission, limits and metrics
//! all apply unchanged; only the transport is skipped. The caller's
//! identity is attached the way a verified client certificate is.

use std::sync::Arc;

use axum::Extension;

use super::authn::UserInfo;
use super::{ApiState, PeerIdentity, router};

/// A `kube::Client` acting as `username` (in `groups`, plus
/// `system:authenticated`, as a client certificate would make it).
pub fn client(state: Arc<ApiState>, username: &str, groups: &[&str]) -> kube::Client {
    let mut all: Vec<String> = groups.iter().map(|g| (*g).to_string()).collect();
    all.push("system:authenticated".into());
    let user = UserInfo {
        username: username.to_string(),
        uid: String::new(),
        groups: all,
    };
    let app = router(state).layer(Extension(PeerIdentity(Some(user))));
    kube::Client::new(app, "default")
}
