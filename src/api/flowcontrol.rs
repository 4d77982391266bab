//! Fairness between API callers, after Kubernetes' API Priority and
//! Fairness but internal (no FlowSchema or PriorityLevelConfiguration
//! objects): every request is classified into a priority level, and
//! within a level into a flow (its user).
//!
//! | level      | who                                                    | requests                      |
//! |------------|--------------------------------------------------------|-------------------------------|
//! | `exempt`   | `system:masters`                                       | never limited                 |
//! | `system`   | nodes, the scheduler, the controller managers          | [`SYSTEM_SHARES`] of the seats |
//! | `workload` | everybody else, workloads' service accounts included   | the rest, and a cap per user  |
//!
//! The limited levels divide a server-wide number of seats
//! ([`FlowConfig::max_requests_inflight`], `--max-requests-inflight`) by
//! fixed shares, so a flood of users cannot take the seats the cluster's
//! own components need, nor the reverse. A request past its seats (its
//! level is full, or its user holds [`FlowConfig::requests_per_user`])
//! waits in its flow's queue, at most [`FlowConfig::queue_length`] long,
//! for at most [`FlowConfig::queue_wait`]; a freed seat goes to the
//! waiting flows in turn (round robin), so one user's hundred queued
//! requests delay another user's one by a single turn, not by a hundred.
//! A request that finds its queue full, or waits out its time, gets 429
//! with `Retry-After: 1`, as Kubernetes answers, and client libraries
//! retry.
//!
//! Long-running requests (watches, followed logs, proxied and exec
//! streams) are counted apart: a workload user may hold
//! [`FlowConfig::long_running_per_user`] of them, past which it gets 429
//! at once; the other levels are not limited. They do not take request
//! seats, as in Kubernetes, where a watch holds its seat only while it
//! starts.
//!
//! Responses name the level and the flow schema that classified the
//! request in `X-Kubernetes-PF-PriorityLevel-UID` and
//! `X-Kubernetes-PF-FlowSchema-UID`, as Kubernetes' do ([`set_headers`]).
//!
//! The bookkeeping of one level — who runs, who waits, who is next — is
//! pure ([`Queues`]); [`FlowControl`] adds the waiting.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::authn::UserInfo;
use super::request::Query;
use super::status::ApiError;

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

/// Parts of [`FlowConfig::max_requests_inflight`] the `system` level gets;
/// the `workload` level gets the rest.
pub const SYSTEM_SHARES: (usize, usize) = (1, 3);

/// `X-Kubernetes-PF-PriorityLevel-UID`.
pub const PRIORITY_LEVEL_HEADER: HeaderName =
    HeaderName::from_static("x-kubernetes-pf-prioritylevel-uid");
/// `X-Kubernetes-PF-FlowSchema-UID`.
pub const FLOW_SCHEMA_HEADER: HeaderName =
    HeaderName::from_static("x-kubernetes-pf-flowschema-uid");

/// A priority level, with the one flow schema that leads to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PriorityLevel {
    /// `system:masters`: never queued nor refused.
    Exempt,
    /// The cluster's own components.
    System,
    /// Everybody else.
    Workload,
}

impl PriorityLevel {
    /// The level of `user`'s requests.
    pub fn of(user: &UserInfo) -> PriorityLevel {
        if user.groups.iter().any(|g| g == "system:masters") {
            PriorityLevel::Exempt
        } else if user.groups.iter().any(|g| g == "system:nodes")
            || matches!(
                user.username.as_str(),
                "system:kube-scheduler"
                    | "system:kube-controller-manager"
                    | "system:cloud-controller-manager"
            )
        {
            PriorityLevel::System
        } else {
            PriorityLevel::Workload
        }
    }

    /// The level's name, as a PriorityLevelConfiguration would have it.
    pub fn name(self) -> &'static str {
        match self {
            PriorityLevel::Exempt => "exempt",
            PriorityLevel::System => "system",
            PriorityLevel::Workload => "workload",
        }
    }

    /// A UID that stays the same across restarts and servers, so clients
    /// may compare what they see.
    pub fn uid(self) -> &'static str {
        match self {
            PriorityLevel::Exempt => "8b5c3d4e-0f1a-4e6b-9c2d-7a1e0f000001",
            PriorityLevel::System => "8b5c3d4e-0f1a-4e6b-9c2d-7a1e0f000002",
            PriorityLevel::Workload => "8b5c3d4e-0f1a-4e6b-9c2d-7a1e0f000003",
        }
    }

    /// The UID of the flow schema that puts a request at this level
    /// (`exempt`, `system`, `global-default`).
    pub fn flow_schema_uid(self) -> &'static str {
        match self {
            PriorityLevel::Exempt => "3f2a9e71-6d4c-4b58-8e07-51c0d0000001",
            PriorityLevel::System => "3f2a9e71-6d4c-4b58-8e07-51c0d0000002",
            PriorityLevel::Workload => "3f2a9e71-6d4c-4b58-8e07-51c0d0000003",
        }
    }
}

/// Names `user`'s priority level and flow schema in `headers`, as
/// Kubernetes does on every response.
pub fn set_headers(headers: &mut HeaderMap, user: &UserInfo) {
    let level = PriorityLevel::of(user);
    headers.insert(PRIORITY_LEVEL_HEADER, HeaderValue::from_static(level.uid()));
    headers.insert(
        FLOW_SCHEMA_HEADER,
        HeaderValue::from_static(level.flow_schema_uid()),
    );
}

/// Seats, queues and their bounds.
#[derive(Clone, Debug)]
pub struct FlowConfig {
    /// Requests in flight across the server (`--max-requests-inflight`),
    /// the exempt level and long-running requests aside, divided between
    /// the levels by [`SYSTEM_SHARES`].
    pub max_requests_inflight: usize,
    /// Requests one user of the workload level may have in flight
    /// (`--max-requests-inflight-per-user`).
    pub requests_per_user: usize,
    /// Long-running requests one user of the workload level may have open
    /// (`--max-long-running-per-user`).
    pub long_running_per_user: usize,
    /// Requests one flow may have waiting for a seat; past it, 429 at once.
    pub queue_length: usize,
    /// Longest a request waits for a seat; then 429. Zero: no queuing.
    pub queue_wait: Duration,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            // Kubernetes' --max-requests-inflight plus
            // --max-mutating-requests-inflight.
            max_requests_inflight: 600,
            requests_per_user: 100,
            long_running_per_user: 1000,
            // Kubernetes' default queueLengthLimit.
            queue_length: 50,
            // Brief: a client retries a 429 sooner than Kubernetes' 15 s.
            queue_wait: Duration::from_secs(1),
        }
    }
}

impl FlowConfig {
    /// The seats of the (system, workload) levels: each at least one.
    fn level_seats(&self) -> (usize, usize) {
        let total = self.max_requests_inflight.max(2);
        let system = (total * SYSTEM_SHARES.0 / SYSTEM_SHARES.1).clamp(1, total - 1);
        (system, total - system)
    }
}

/// What [`Queues::arrive`] decided for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arrival {
    /// It holds a seat now.
    Seated,
    /// It waits in its flow's queue.
    Queued,
    /// Its flow's queue is full.
    Refused,
}

/// One flow's seats held and requests waiting (by ticket).
#[derive(Debug, Default)]
struct Flow {
    running: usize,
    waiting: VecDeque<u64>,
}

/// One priority level's seats and its flows' queues. Bookkeeping only: it
/// decides who runs and who waits and returns who got a seat; the waiting
/// is [`FlowControl`]'s.
///
/// # Guarantees
/// - At most `seats` requests run, and at most `per_flow` of one flow.
/// - A request is queued only when it could not run: whenever a seat is
///   free, no waiting request that its flow's cap allows is left waiting
///   (every release dispatches).
/// - Within a flow, first come first served; between flows, a freed seat
///   goes to the flow whose turn it is, which then goes to the back.
#[derive(Debug)]
struct Queues {
    seats: usize,
    per_flow: usize,
    queue_length: usize,
    in_use: usize,
    flows: HashMap<String, Flow>,
    /// The flows with requests waiting, in the order they are served.
    turn: VecDeque<String>,
}

impl Queues {
    fn new(seats: usize, per_flow: usize, queue_length: usize) -> Queues {
        Queues {
            seats: seats.max(1),
            per_flow: per_flow.max(1),
            queue_length,
            in_use: 0,
            flows: HashMap::new(),
            turn: VecDeque::new(),
        }
    }

    /// A request of `flow`, known as `ticket` while it waits.
    fn arrive(&mut self, flow: &str, ticket: u64) -> Arrival {
        let seat_free = self.in_use < self.seats;
        let f = self.flows.entry(flow.to_string()).or_default();
        if seat_free && f.running < self.per_flow && f.waiting.is_empty() {
            f.running += 1;
            self.in_use += 1;
            return Arrival::Seated;
        }
        if f.waiting.len() >= self.queue_length {
            self.forget_if_idle(flow);
            return Arrival::Refused;
        }
        f.waiting.push_back(ticket);
        if f.waiting.len() == 1 {
            self.turn.push_back(flow.to_string());
        }
        Arrival::Queued
    }

    /// `ticket` of `flow` stops waiting (its time is up, or its client
    /// left). False when it is not waiting: it was given a seat, which
    /// the caller now holds.
    fn leave(&mut self, flow: &str, ticket: u64) -> bool {
        let Some(f) = self.flows.get_mut(flow) else {
            return false;
        };
        let Some(i) = f.waiting.iter().position(|&t| t == ticket) else {
            return false;
        };
        f.waiting.remove(i);
        if f.waiting.is_empty() {
            self.turn.retain(|name| name != flow);
        }
        self.forget_if_idle(flow);
        true
    }

    /// A request of `flow` is done with its seat. Returns the waiting
    /// requests that got a seat.
    fn release(&mut self, flow: &str) -> Vec<u64> {
        if let Some(f) = self.flows.get_mut(flow) {
            f.running = f.running.saturating_sub(1);
            self.in_use = self.in_use.saturating_sub(1);
            self.forget_if_idle(flow);
        }
        self.dispatch()
    }

    /// Gives free seats to waiting requests, flow by flow in turn.
    fn dispatch(&mut self) -> Vec<u64> {
        let mut seated = Vec::new();
        // Flows passed over in a row because they hold their cap: once
        // every flow in line was, nobody can be seated.
        let mut passed = 0;
        while self.in_use < self.seats && passed < self.turn.len() {
            let Some(name) = self.turn.pop_front() else {
                break;
            };
            let Some(f) = self.flows.get_mut(&name) else {
                continue;
            };
            if f.running < self.per_flow
                && let Some(ticket) = f.waiting.pop_front()
            {
                f.running += 1;
                self.in_use += 1;
                seated.push(ticket);
                passed = 0;
            } else {
                passed += 1;
            }
            if f.waiting.is_empty() {
                self.forget_if_idle(&name);
            } else {
                self.turn.push_back(name);
            }
        }
        seated
    }

    fn forget_if_idle(&mut self, flow: &str) {
        if self
            .flows
            .get(flow)
            .is_some_and(|f| f.running == 0 && f.waiting.is_empty())
        {
            self.flows.remove(flow);
        }
    }
}

/// The seats and queues of the server.
pub struct FlowControl {
    config: FlowConfig,
    state: Mutex<State>,
}

struct State {
    system: Queues,
    workload: Queues,
    /// Long-running requests open per workload user.
    long_running: HashMap<String, usize>,
    /// How to wake each waiting request once it has a seat.
    wake: HashMap<u64, oneshot::Sender<()>>,
    next_ticket: u64,
}

impl State {
    fn queues(&mut self, level: PriorityLevel) -> &mut Queues {
        match level {
            PriorityLevel::System => &mut self.system,
            _ => &mut self.workload,
        }
    }

    /// Gives `level`'s seat of `flow` back and wakes whoever got it.
    fn release(&mut self, level: PriorityLevel, flow: &str) {
        for ticket in self.queues(level).release(flow) {
            if let Some(wake) = self.wake.remove(&ticket) {
                // The receiver lives as long as the ticket waits (see
                // `Waiting`), so this is never sent to nobody.
                let _ = wake.send(());
            }
        }
    }
}

/// What a permit holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// A request seat of this level.
    Request(PriorityLevel),
    /// One of a workload user's long-running seats.
    LongRunning,
}

/// A seat held until dropped (with the response body, for streams).
pub struct Permit {
    flow: Arc<FlowControl>,
    user: String,
    held: Held,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.flow.state.lock();
        match self.held {
            Held::Request(level) => state.release(level, &self.user),
            Held::LongRunning => {
                if let Some(n) = state.long_running.get_mut(&self.user) {
                    *n -= 1;
                    if *n == 0 {
                        state.long_running.remove(&self.user);
                    }
                }
            }
        }
    }
}

/// A request waiting in its flow's queue. Dropped before it is settled
/// (the client went away), it leaves the queue, or gives back the seat it
/// was given meanwhile.
struct Waiting<'a> {
    flow: &'a Arc<FlowControl>,
    level: PriorityLevel,
    user: &'a str,
    ticket: u64,
    woken: oneshot::Receiver<()>,
    settled: bool,
}

impl Waiting<'_> {
    /// Under the lock, whether the request got its seat: granted and
    /// still queued are exclusive there, whatever the wake-up said.
    fn settle(&mut self) -> Result<Option<Permit>, ApiError> {
        self.settled = true;
        let mut state = self.flow.state.lock();
        state.wake.remove(&self.ticket);
        if state.queues(self.level).leave(self.user, self.ticket) {
            return Err(ApiError::TooManyRequests);
        }
        Ok(Some(Permit {
            flow: self.flow.clone(),
            user: self.user.to_string(),
            held: Held::Request(self.level),
        }))
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut state = self.flow.state.lock();
        state.wake.remove(&self.ticket);
        if !state.queues(self.level).leave(self.user, self.ticket) {
            state.release(self.level, self.user);
        }
    }
}

impl FlowControl {
    /// Seats per user: `requests` in flight, `long_running` open; the
    /// rest of [`FlowConfig`] as by default.
    pub fn new(requests: usize, long_running: usize) -> Arc<FlowControl> {
        FlowControl::with_config(FlowConfig {
            requests_per_user: requests,
            long_running_per_user: long_running,
            ..FlowConfig::default()
        })
    }

    /// Seats and queues as `config` says.
    pub fn with_config(config: FlowConfig) -> Arc<FlowControl> {
        let (system, workload) = config.level_seats();
        let state = State {
            // The system level has no cap per component: its share is
            // theirs together.
            system: Queues::new(system, system, config.queue_length),
            workload: Queues::new(workload, config.requests_per_user, config.queue_length),
            long_running: HashMap::new(),
            wake: HashMap::new(),
            next_ticket: 0,
        };
        Arc::new(FlowControl {
            config,
            state: Mutex::new(state),
        })
    }

    /// A seat for `user` now, without waiting; `None` when exempt.
    ///
    /// # Errors
    /// [`ApiError::TooManyRequests`] when no seat is free for the user.
    pub fn admit(
        self: &Arc<Self>,
        user: &UserInfo,
        seat: Seat,
    ) -> Result<Option<Permit>, ApiError> {
        match self.try_admit(user, seat)? {
            Admission::Now(permit) => Ok(permit),
            Admission::Wait(mut waiting) => waiting.settle(),
        }
    }

    /// A seat for `user`, waiting for one in the user's queue for at most
    /// [`FlowConfig::queue_wait`]; `None` when exempt.
    ///
    /// # Errors
    /// [`ApiError::TooManyRequests`] when the queue is full, or no seat
    /// came within the wait.
    pub async fn acquire(
        self: &Arc<Self>,
        user: &UserInfo,
        seat: Seat,
    ) -> Result<Option<Permit>, ApiError> {
        match self.try_admit(user, seat)? {
            Admission::Now(permit) => Ok(permit),
            Admission::Wait(mut waiting) => {
                let _ = tokio::time::timeout(self.config.queue_wait, &mut waiting.woken).await;
                waiting.settle()
            }
        }
    }

    fn try_admit<'a>(
        self: &'a Arc<Self>,
        user: &'a UserInfo,
        seat: Seat,
    ) -> Result<Admission<'a>, ApiError> {
        let level = PriorityLevel::of(user);
        let permit = |held| {
            Ok(Admission::Now(Some(Permit {
                flow: self.clone(),
                user: user.username.clone(),
                held,
            })))
        };
        let mut state = self.state.lock();
        match (level, seat) {
            (PriorityLevel::Exempt, _) | (PriorityLevel::System, Seat::LongRunning) => {
                Ok(Admission::Now(None))
            }
            (PriorityLevel::Workload, Seat::LongRunning) => {
                let open = state.long_running.entry(user.username.clone()).or_default();
                if *open >= self.config.long_running_per_user.max(1) {
                    return Err(ApiError::TooManyRequests);
                }
                *open += 1;
                permit(Held::LongRunning)
            }
            (_, Seat::Request) => {
                let ticket = state.next_ticket;
                state.next_ticket += 1;
                let queues = state.queues(level);
                match queues.arrive(&user.username, ticket) {
                    Arrival::Seated => permit(Held::Request(level)),
                    Arrival::Refused => Err(ApiError::TooManyRequests),
                    Arrival::Queued => {
                        let (wake, woken) = oneshot::channel();
                        state.wake.insert(ticket, wake);
                        Ok(Admission::Wait(Waiting {
                            flow: self,
                            level,
                            user: &user.username,
                            ticket,
                            woken,
                            settled: false,
                        }))
                    }
                }
            }
        }
    }
}

enum Admission<'a> {
    Now(Option<Permit>),
    Wait(Waiting<'a>),
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
        // The cluster's admins are exempt; workloads are not.
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

    #[test]
    fn users_are_classified_into_levels_with_stable_uids_in_the_headers() {
        let cases = [
            (user("admin", &["system:masters"]), PriorityLevel::Exempt),
            (
                user("system:node:n1", &["system:nodes"]),
                PriorityLevel::System,
            ),
            (user("system:kube-scheduler", &[]), PriorityLevel::System),
            (
                user("system:kube-controller-manager", &[]),
                PriorityLevel::System,
            ),
            (
                user("alice", &["system:authenticated"]),
                PriorityLevel::Workload,
            ),
            (
                user(
                    "system:serviceaccount:kube-system:x",
                    &["system:serviceaccounts"],
                ),
                PriorityLevel::Workload,
            ),
            (user("system:anonymous", &[]), PriorityLevel::Workload),
        ];
        for (u, level) in &cases {
            assert_eq!(PriorityLevel::of(u), *level, "{}", u.username);
            let mut headers = HeaderMap::new();
            set_headers(&mut headers, u);
            assert_eq!(headers["x-kubernetes-pf-prioritylevel-uid"], level.uid());
            assert_eq!(
                headers["X-Kubernetes-PF-FlowSchema-UID"],
                level.flow_schema_uid()
            );
        }
        let levels = [
            PriorityLevel::Exempt,
            PriorityLevel::System,
            PriorityLevel::Workload,
        ];
        let uids: std::collections::HashSet<_> = levels
            .iter()
            .flat_map(|l| [l.uid(), l.flow_schema_uid()])
            .collect();
        assert_eq!(uids.len(), 6, "every UID differs");
    }

    #[test]
    fn the_server_wide_seats_are_split_by_fixed_shares() {
        let seats = |n| {
            FlowConfig {
                max_requests_inflight: n,
                ..FlowConfig::default()
            }
            .level_seats()
        };
        assert_eq!(seats(600), (200, 400));
        assert_eq!(seats(3), (1, 2));
        // Never a level without a seat.
        assert_eq!(seats(1), (1, 1));
        assert_eq!(seats(0), (1, 1));
    }

    #[test]
    fn a_flow_past_its_cap_waits_for_its_own_seat_while_others_run() {
        let mut q = Queues::new(10, 2, 5);
        assert_eq!(q.arrive("flood", 1), Arrival::Seated);
        assert_eq!(q.arrive("flood", 2), Arrival::Seated);
        assert_eq!(q.arrive("flood", 3), Arrival::Queued);
        assert_eq!(q.arrive("flood", 4), Arrival::Queued);
        // The level has room: another flow runs at once.
        assert_eq!(q.arrive("calm", 5), Arrival::Seated);
        assert!(q.release("calm").is_empty(), "flood is at its cap");
        // First come first served within the flow.
        assert_eq!(q.release("flood"), vec![3]);
        assert_eq!(q.release("flood"), vec![4]);
        assert_eq!((q.in_use, q.flows["flood"].running), (2, 2));
        q.release("flood");
        q.release("flood");
        assert!(q.flows.is_empty() && q.turn.is_empty(), "{q:?}");
        assert_eq!(q.in_use, 0);
    }

    #[test]
    fn a_full_level_gives_freed_seats_to_the_waiting_flows_in_turn() {
        let mut q = Queues::new(3, 3, 100);
        for t in 0..3 {
            assert_eq!(q.arrive("flood", t), Arrival::Seated);
        }
        // The flood queues fifty more, then calm and slow one each.
        for t in 10..60 {
            assert_eq!(q.arrive("flood", t), Arrival::Queued);
        }
        assert_eq!(q.arrive("calm", 100), Arrival::Queued);
        assert_eq!(q.arrive("slow", 200), Arrival::Queued);
        // Freed seats go flood, calm, slow, flood…: calm waits one turn,
        // not fifty.
        assert_eq!(q.release("flood"), vec![10]);
        assert_eq!(q.release("flood"), vec![100]);
        assert_eq!(q.release("flood"), vec![200]);
        assert_eq!(q.release("calm"), vec![11]);
        assert_eq!(q.release("slow"), vec![12]);
        // A newcomer while the level is full queues behind the flows in
        // line, and is not passed over by the flood's backlog.
        assert_eq!(q.arrive("late", 300), Arrival::Queued);
        assert_eq!(q.release("flood"), vec![13]);
        assert_eq!(q.release("flood"), vec![300]);
    }

    #[test]
    fn a_full_queue_refuses_at_once_and_leaving_frees_its_place() {
        let mut q = Queues::new(1, 1, 2);
        assert_eq!(q.arrive("a", 1), Arrival::Seated);
        assert_eq!(q.arrive("a", 2), Arrival::Queued);
        assert_eq!(q.arrive("a", 3), Arrival::Queued);
        assert_eq!(q.arrive("a", 4), Arrival::Refused);
        // Another flow's queue is its own.
        assert_eq!(q.arrive("b", 5), Arrival::Queued);
        assert!(q.leave("a", 2));
        assert!(!q.leave("a", 2), "left already");
        assert_eq!(q.arrive("a", 6), Arrival::Queued);
        // a, in line first, gets its oldest waiter seated, then b.
        assert_eq!(q.release("a"), vec![3]);
        assert_eq!(q.release("a"), vec![5]);
        // A ticket seated is no longer waiting.
        assert!(!q.leave("a", 3));
        assert!(q.leave("a", 6));
        q.release("b");
        assert!(q.flows.is_empty() && q.turn.is_empty(), "{q:?}");
        // No queue at all: refused at once.
        let mut q = Queues::new(1, 1, 0);
        assert_eq!(q.arrive("a", 1), Arrival::Seated);
        assert_eq!(q.arrive("a", 2), Arrival::Refused);
        assert!(q.flows.len() == 1 && q.turn.is_empty());
    }

    fn flow(seats: usize, per_user: usize) -> Arc<FlowControl> {
        FlowControl::with_config(FlowConfig {
            // Workload gets two thirds.
            max_requests_inflight: seats * 3 / 2,
            requests_per_user: per_user,
            long_running_per_user: 10,
            queue_length: 4,
            queue_wait: Duration::from_secs(1),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_request_runs_when_a_seat_frees_or_gets_429_after_the_wait() {
        let flow = flow(2, 1);
        let alice = user("alice", &[]);
        let held = flow.acquire(&alice, Seat::Request).await.unwrap();
        let started = tokio::time::Instant::now();
        // Nobody frees the seat: 429 after the queue wait, not before.
        let refused = flow.acquire(&alice, Seat::Request).await;
        assert!(matches!(refused, Err(ApiError::TooManyRequests)));
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        // The seat frees after 300 ms: the waiting request takes it then.
        let started = tokio::time::Instant::now();
        let waiter = {
            let flow = flow.clone();
            let alice = alice.clone();
            tokio::spawn(async move { flow.acquire(&alice, Seat::Request).await.is_ok() })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(held);
        assert!(waiter.await.unwrap());
        assert_eq!(started.elapsed(), Duration::from_millis(300));
        let state = flow.state.lock();
        assert_eq!(state.workload.in_use, 0, "the seat came back");
        assert!(state.wake.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_goes_away_gives_back_the_seat_it_was_given() {
        let flow = flow(1, 1);
        let (alice, bob) = (user("alice", &[]), user("bob", &[]));
        let held = flow.acquire(&alice, Seat::Request).await.unwrap();
        // Bob waits, and his client leaves just as the seat is his.
        let mut bob_waits = Box::pin(flow.acquire(&bob, Seat::Request));
        assert!(futures::poll!(bob_waits.as_mut()).is_pending());
        drop(held);
        drop(bob_waits);
        // A client that left while still queued leaves its place too.
        let held = flow.acquire(&alice, Seat::Request).await.unwrap();
        let mut gone = Box::pin(flow.acquire(&bob, Seat::Request));
        assert!(futures::poll!(gone.as_mut()).is_pending());
        drop(gone);
        drop(held);
        let state = flow.state.lock();
        assert_eq!(state.workload.in_use, 0);
        assert!(state.workload.flows.is_empty() && state.wake.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_system_level_is_not_taken_by_a_workload_flood() {
        // 3 seats: 1 system, 2 workload.
        let flow = flow(2, 10);
        let node = user("system:node:n1", &["system:nodes"]);
        let mut floods = Vec::new();
        for i in 0..2 {
            let u = user(&format!("flood-{i}"), &[]);
            floods.push(flow.acquire(&u, Seat::Request).await.unwrap());
        }
        assert!(flow.admit(&user("calm", &[]), Seat::Request).is_err());
        let n = flow.acquire(&node, Seat::Request).await.unwrap();
        assert!(n.is_some(), "the node holds a system seat");
        // Exempt requests take no seat at all.
        let admin = user("admin", &["system:masters"]);
        assert!(flow.acquire(&admin, Seat::Request).await.unwrap().is_none());
    }
}
