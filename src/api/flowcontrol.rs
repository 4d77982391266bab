//! Fairness between API callers: each user may have at most so many
//! requests in flight and so many long-running ones (watches, followed
//! logs, proxied and exec streams) open, so one caller that floods the API
//! server takes only its own seats and everyone else is still served.
//! Past its seats a caller gets 429 with `Retry-After: 1`, as Kubernetes'
//! in-flight limit answers, and client libraries retry.
//!
//! The cluster's own components are exempt, as Kubernetes' flow control
//! gives them priority levels of their own: `system:masters`, the
//! scheduler, the controller managers and nodes (`system:nodes`).
//! Workloads' service accounts are callers like any other.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::Method;
use bytes::Bytes;
use parking_lot::Mutex;

use super::authn::UserInfo;
use super::request::Query;

/// Which seats a request takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seat {
    /// Answered and done.
    Request,
    /// Open for as long as the client listens: a watch, followed logs, a
    /// proxied or exec stream.
    LongRunning,
}

impl Seat {
    /// The seat of a request to `path` with `query`, read as the handlers
    /// read it ([`Query::flag`]), so whatever a handler serves as a watch
    /// takes a long-running seat. A query that does not parse is refused
    /// by the handler; it takes a request seat meanwhile.
    pub fn of(method: &Method, path: &str, query: Option<&str>) -> Seat {
        let query = Query::parse(query).ok();
        let flag = |name: &str| query.as_ref().is_some_and(|q| q.flag(name));
        let long = (method == Method::GET && (flag("watch") || path.contains("/watch/")))
            || flag("follow")
            || ["/proxy", "/exec", "/attach", "/portforward"]
                .iter()
                .any(|s| path.contains(s));
        if long {
            Seat::LongRunning
        } else {
            Seat::Request
        }
    }
}

/// The seats each user holds.
pub struct FlowControl {
    requests_per_user: usize,
    long_running_per_user: usize,
    held: Mutex<HashMap<String, [usize; 2]>>,
}

/// A seat held until dropped (with the response body, for streams).
pub struct Permit {
    flow: Arc<FlowControl>,
    user: String,
    seat: Seat,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut held = self.flow.held.lock();
        if let Some(counts) = held.get_mut(&self.user) {
            counts[self.seat as usize] -= 1;
            if counts == &[0, 0] {
                held.remove(&self.user);
            }
        }
    }
}

/// Whether `user` is one of the cluster's own components.
fn exempt(user: &UserInfo) -> bool {
    user.groups
        .iter()
        .any(|g| g == "system:masters" || g == "system:nodes")
        || matches!(
            user.username.as_str(),
            "system:kube-scheduler"
                | "system:kube-controller-manager"
                | "system:cloud-controller-manager"
        )
}

impl FlowControl {
    /// Seats per user: `requests` in flight, `long_running` open.
    pub fn new(requests: usize, long_running: usize) -> Arc<FlowControl> {
        Arc::new(FlowControl {
            requests_per_user: requests.max(1),
            long_running_per_user: long_running.max(1),
            held: Mutex::new(HashMap::new()),
        })
    }

    /// A seat for `user`, `None` when exempt.
    ///
    /// # Errors
    /// [`super::status::ApiError::TooManyRequests`] when the user holds
    /// every seat of that kind.
    pub fn admit(
        self: &Arc<Self>,
        user: &UserInfo,
        seat: Seat,
    ) -> Result<Option<Permit>, super::status::ApiError> {
        if exempt(user) {
            return Ok(None);
        }
        let limit = match seat {
            Seat::Request => self.requests_per_user,
            Seat::LongRunning => self.long_running_per_user,
        };
        let mut held = self.held.lock();
        let counts = held.entry(user.username.clone()).or_default();
        if counts[seat as usize] >= limit {
            return Err(super::status::ApiError::TooManyRequests);
        }
        counts[seat as usize] += 1;
        Ok(Some(Permit {
            flow: self.clone(),
            user: user.username.clone(),
            seat,
        }))
    }
}

/// A response body that gives its seat back when it ends or is dropped.
pub struct HeldBody {
    inner: Body,
    _permit: Permit,
}

impl HeldBody {
    pub fn wrap(inner: Body, permit: Permit) -> Body {
        Body::new(HeldBody {
            inner,
            _permit: permit,
        })
    }
}

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
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

    #[test]
    fn each_user_has_its_own_seats_and_gets_them_back() {
        let flow = FlowControl::new(2, 1);
        let alice = user("alice", &[]);
        let a1 = flow.admit(&alice, Seat::Request).unwrap();
        let _a2 = flow.admit(&alice, Seat::Request).unwrap();
        assert!(flow.admit(&alice, Seat::Request).is_err());
        // Another user, and alice's long-running seat, are not affected.
        assert!(flow.admit(&user("bob", &[]), Seat::Request).is_ok());
        let w = flow.admit(&alice, Seat::LongRunning).unwrap();
        assert!(flow.admit(&alice, Seat::LongRunning).is_err());
        drop(a1);
        assert!(flow.admit(&alice, Seat::Request).is_ok());
        drop(w);
        assert!(flow.admit(&alice, Seat::LongRunning).is_ok());
        // The cluster's components are exempt; workloads are not.
        let admin = user("admin", &["system:masters"]);
        for _ in 0..10 {
            assert!(flow.admit(&admin, Seat::Request).unwrap().is_none());
        }
        let sa = user(
            "system:serviceaccount:default:x",
            &["system:serviceaccounts"],
        );
        let _s = flow.admit(&sa, Seat::LongRunning).unwrap();
        assert!(flow.admit(&sa, Seat::LongRunning).is_err());
    }

    #[test]
    fn watches_streams_and_followed_logs_are_long_running() {
        let get = Method::GET;
        let seat = |path: &str, query: &str| Seat::of(&get, path, Some(query));
        assert_eq!(seat("/api/v1/pods", "watch=true"), Seat::LongRunning);
        // Spelled as the handlers accept it, too.
        assert_eq!(seat("/api/v1/pods", "watch=yes"), Seat::LongRunning);
        assert_eq!(seat("/api/v1/pods", "watch=TRUE"), Seat::LongRunning);
        assert_eq!(seat("/api/v1/watch/pods", ""), Seat::LongRunning);
        assert_eq!(
            seat("/api/v1/namespaces/d/pods/p/log", "follow=true"),
            Seat::LongRunning
        );
        assert_eq!(
            seat("/api/v1/namespaces/d/pods/p/proxy/x", ""),
            Seat::LongRunning
        );
        assert_eq!(seat("/api/v1/pods", "watch=false"), Seat::Request);
        assert_eq!(seat("/api/v1/pods", "watch=0"), Seat::Request);
        assert_eq!(seat("/api/v1/pods", "limit=5"), Seat::Request);
        assert_eq!(Seat::of(&get, "/api/v1/pods", None), Seat::Request);
    }
}
