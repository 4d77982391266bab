//! The scheduling queue, as in Kubernetes: an *active* heap ordered by
//! priority then age, a *back-off* heap of pods waiting out their back-off
//! after a failed attempt, and an *unschedulable* set of pods that did not
//! fit and wait for a cluster change (a node added or changed, a pod gone)
//! that could make them fit. A pod popped for a cycle is *in flight* until
//! it is bound or requeued.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::framework::PodInfo;

/// Where a queued pod is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Active,
    Backoff,
    Unschedulable,
    InFlight,
}

struct Entry {
    info: Arc<PodInfo>,
    place: Place,
    /// Failed attempts so far (sets the back-off).
    attempts: u32,
    backoff_until: Option<Instant>,
    /// Bumped on every move so stale heap entries are skipped.
    generation: u64,
}

/// Active-heap order: higher priority, then older, then first queued.
struct ActiveKey {
    priority: i32,
    created: Option<Time>,
    seq: u64,
    uid: String,
    generation: u64,
}

impl Ord for ActiveKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.created.cmp(&self.created))
            .then_with(|| other.seq.cmp(&self.seq))
    }
}
impl PartialOrd for ActiveKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for ActiveKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for ActiveKey {}

#[derive(Default)]
struct Inner {
    pods: HashMap<String, Entry>,
    active: BinaryHeap<ActiveKey>,
    backoff: BinaryHeap<Reverse<(Instant, u64, String)>>,
    /// Counts cluster changes; a pod that fails after a change that
    /// happened during its cycle goes to back-off, not unschedulable.
    move_cycle: u64,
    seq: u64,
    closed: bool,
}

/// A pod handed to a scheduling cycle.
pub struct Popped {
    pub info: Arc<PodInfo>,
    pub attempts: u32,
    /// The move cycle when it was popped.
    pub cycle: u64,
}

/// See the module doc.
pub struct SchedulingQueue {
    inner: Mutex<Inner>,
    wake: Notify,
    backoff_initial: Duration,
    backoff_max: Duration,
}

impl Inner {
    fn push_active(&mut self, uid: &str) {
        let Some(e) = self.pods.get_mut(uid) else {
            return;
        };
        self.seq += 1;
        e.generation = self.seq;
        e.place = Place::Active;
        self.active.push(ActiveKey {
            priority: e.info.priority,
            created: e.info.created.clone(),
            seq: self.seq,
            uid: uid.to_string(),
            generation: self.seq,
        });
    }

    fn push_backoff(&mut self, uid: &str, until: Instant) {
        let Some(e) = self.pods.get_mut(uid) else {
            return;
        };
        self.seq += 1;
        e.generation = self.seq;
        e.place = Place::Backoff;
        e.backoff_until = Some(until);
        self.backoff
            .push(Reverse((until, self.seq, uid.to_string())));
    }

    /// Back-off entries whose time has come go to the active heap.
    fn flush_backoff(&mut self, now: Instant) {
        while let Some(Reverse((until, generation, _))) = self.backoff.peek() {
            if *until > now {
                break;
            }
            let (generation, uid) = (*generation, self.backoff.pop().map(|Reverse((_, _, u))| u));
            let Some(uid) = uid else { break };
            if self
                .pods
                .get(&uid)
                .is_some_and(|e| e.place == Place::Backoff && e.generation == generation)
            {
                self.push_active(&uid);
            }
        }
    }
}

impl SchedulingQueue {
    /// A queue whose back-off starts at `initial` and doubles up to `max`.
    pub fn new(initial: Duration, max: Duration) -> SchedulingQueue {
        SchedulingQueue {
            inner: Mutex::new(Inner::default()),
            wake: Notify::new(),
            backoff_initial: initial,
            backoff_max: max,
        }
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let factor = 1u32 << attempts.saturating_sub(1).min(16);
        self.backoff_initial
            .saturating_mul(factor)
            .min(self.backoff_max)
    }

    /// Adds a pod waiting for a node, or updates a queued one. An update
    /// that changes what the pod needs gives an unschedulable pod another
    /// try at once.
    pub fn add(&self, info: PodInfo) {
        let mut q = self.inner.lock();
        let uid = info.uid.clone();
        match q.pods.get_mut(&uid) {
            None => {
                q.pods.insert(
                    uid.clone(),
                    Entry {
                        info: Arc::new(info),
                        place: Place::Active,
                        attempts: 0,
                        backoff_until: None,
                        generation: 0,
                    },
                );
                q.push_active(&uid);
            }
            Some(e) => {
                if *e.info == info {
                    return;
                }
                e.info = Arc::new(info);
                if e.place == Place::Unschedulable {
                    q.push_active(&uid);
                } else {
                    return;
                }
            }
        }
        drop(q);
        self.wake.notify_one();
    }

    /// Forgets a pod (deleted, or bound by someone).
    pub fn delete(&self, uid: &str) {
        self.inner.lock().pods.remove(uid);
    }

    /// Whether the queue holds `uid`, and where.
    pub fn place(&self, uid: &str) -> Option<Place> {
        self.inner.lock().pods.get(uid).map(|e| e.place)
    }

    /// The next pod to schedule, and after it up to `max - 1` more active
    /// pods of the same priority, in queue order; waits for the first.
    /// `None` once closed. Pods of one priority that are already waiting
    /// are placed together (see [`super::batch`]); every pod of the batch
    /// has the priority of the queue's head, so none goes before a pod of
    /// higher priority that was waiting (one that arrives while a burst's
    /// batch waits to fill comes after that batch).
    pub async fn pop_batch(&self, max: usize) -> Option<Vec<Popped>> {
        let first = self.pop().await?;
        let mut batch = vec![first];
        self.pop_more(&mut batch, max);
        Some(batch)
    }

    /// Adds to `batch` the active pods of its priority, in queue order,
    /// until it holds `max`.
    pub fn pop_more(&self, batch: &mut Vec<Popped>, max: usize) {
        let Some(priority) = batch.first().map(|p| p.info.priority) else {
            return;
        };
        let mut q = self.inner.lock();
        while batch.len() < max {
            let Some(key) = q.active.peek() else { break };
            if key.priority != priority {
                break;
            }
            let Some(key) = q.active.pop() else { break };
            let cycle = q.move_cycle;
            if let Some(e) = q.pods.get_mut(&key.uid)
                && e.place == Place::Active
                && e.generation == key.generation
            {
                e.place = Place::InFlight;
                batch.push(Popped {
                    info: e.info.clone(),
                    attempts: e.attempts,
                    cycle,
                });
            }
        }
    }

    /// The next pod to schedule; waits for one. `None` once closed.
    pub async fn pop(&self) -> Option<Popped> {
        loop {
            let notified = self.wake.notified();
            let next_backoff = {
                let mut q = self.inner.lock();
                if q.closed {
                    return None;
                }
                q.flush_backoff(Instant::now());
                while let Some(key) = q.active.pop() {
                    let cycle = q.move_cycle;
                    if let Some(e) = q.pods.get_mut(&key.uid)
                        && e.place == Place::Active
                        && e.generation == key.generation
                    {
                        e.place = Place::InFlight;
                        return Some(Popped {
                            info: e.info.clone(),
                            attempts: e.attempts,
                            cycle,
                        });
                    }
                }
                q.backoff.peek().map(|Reverse((t, _, _))| *t)
            };
            match next_backoff {
                Some(t) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(t) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// The pod was bound: it leaves the queue.
    pub fn done(&self, uid: &str) {
        self.inner.lock().pods.remove(uid);
    }

    /// The pod fit nowhere: it waits for a cluster change, or backs off at
    /// once if a change came while it was being scheduled.
    pub fn unschedulable(&self, uid: &str, cycle: u64) {
        let mut q = self.inner.lock();
        let move_cycle = q.move_cycle;
        let Some(e) = q.pods.get_mut(uid) else {
            return;
        };
        e.attempts += 1;
        let until = Instant::now() + self.backoff(e.attempts);
        e.backoff_until = Some(until);
        if move_cycle > cycle {
            q.push_backoff(uid, until);
            drop(q);
            self.wake.notify_one();
        } else {
            e.place = Place::Unschedulable;
        }
    }

    /// The attempt failed for another reason (an error, a refused
    /// binding): retry after the back-off.
    pub fn retry(&self, uid: &str) {
        let mut q = self.inner.lock();
        let Some(e) = q.pods.get_mut(uid) else {
            return;
        };
        e.attempts += 1;
        let until = Instant::now() + self.backoff(e.attempts);
        q.push_backoff(uid, until);
        drop(q);
        self.wake.notify_one();
    }

    /// A cluster change that could make pods fit: every unschedulable pod
    /// gets another try, after what is left of its back-off.
    pub fn move_all(&self) {
        let mut q = self.inner.lock();
        q.move_cycle += 1;
        let now = Instant::now();
        let waiting: Vec<(String, Option<Instant>)> = q
            .pods
            .iter()
            .filter(|(_, e)| e.place == Place::Unschedulable)
            .map(|(uid, e)| (uid.clone(), e.backoff_until))
            .collect();
        if waiting.is_empty() {
            return;
        }
        for (uid, until) in waiting {
            match until {
                Some(t) if t > now => q.push_backoff(&uid, t),
                _ => q.push_active(&uid),
            }
        }
        drop(q);
        self.wake.notify_one();
    }

    /// Wakes the consumer for good: `pop` returns `None`.
    pub fn close(&self) {
        self.inner.lock().closed = true;
        self.wake.notify_one();
    }

    /// Pods queued (any place), for logs.
    pub fn len(&self) -> usize {
        self.inner.lock().pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::framework::testing::pod;

    fn named(uid: &str, priority: i32) -> PodInfo {
        let mut p = pod(1, 1);
        p.uid = uid.into();
        p.name = uid.into();
        p.priority = priority;
        p
    }

    /// The scheduler's own back-off, 1 s doubling to 10 s: the tests run
    /// on paused time, which jumps ahead whenever every task waits, so
    /// they take no real time and measure the waits exactly.
    const UNIT: Duration = Duration::from_secs(1);

    fn queue() -> SchedulingQueue {
        SchedulingQueue::new(UNIT, UNIT * 10)
    }

    /// How many back-off units `elapsed` is, to the nearest.
    fn units(elapsed: Duration) -> u32 {
        ((elapsed.as_millis() + UNIT.as_millis() / 2) / UNIT.as_millis()) as u32
    }

    #[tokio::test(start_paused = true)]
    async fn higher_priority_first_then_first_come() {
        let q = queue();
        // (uid, priority) in arrival order, and the expected pop order.
        for (uid, prio) in [("a", 0), ("b", 10), ("c", 0), ("d", 10)] {
            q.add(named(uid, prio));
        }
        let mut order = Vec::new();
        for _ in 0..4 {
            order.push(q.pop().await.unwrap().info.uid.clone());
        }
        assert_eq!(order, ["b", "d", "a", "c"]);
    }

    #[tokio::test]
    async fn a_batch_is_the_head_and_the_pods_of_its_priority_up_to_the_limit() {
        let q = queue();
        for (uid, prio) in [("a", 10), ("b", 5), ("c", 10), ("d", 10), ("e", 5)] {
            q.add(named(uid, prio));
        }
        let uids = |b: Vec<Popped>| b.iter().map(|p| p.info.uid.clone()).collect::<Vec<_>>();
        assert_eq!(uids(q.pop_batch(2).await.unwrap()), ["a", "c"]);
        assert_eq!(uids(q.pop_batch(8).await.unwrap()), ["d"]);
        assert_eq!(uids(q.pop_batch(8).await.unwrap()), ["b", "e"]);
        assert_eq!(q.place("e"), Some(Place::InFlight));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unschedulable_pod_waits_for_a_cluster_change_then_its_back_off() {
        let q = queue();
        q.add(named("a", 0));
        let p = q.pop().await.unwrap();
        q.unschedulable("a", p.cycle);
        assert_eq!(q.place("a"), Some(Place::Unschedulable));
        // Nothing happens without a change, well past its back-off.
        assert!(tokio::time::timeout(UNIT * 3, q.pop()).await.is_err());
        q.move_all();
        // Its back-off has passed: straight to active.
        let p = tokio::time::timeout(UNIT / 4, q.pop()).await;
        assert_eq!(p.unwrap().unwrap().attempts, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_during_the_cycle_sends_the_pod_to_back_off_not_to_sleep() {
        let q = queue();
        q.add(named("a", 0));
        let p = q.pop().await.unwrap();
        q.move_all();
        q.unschedulable("a", p.cycle);
        assert_eq!(q.place("a"), Some(Place::Backoff));
        let start = Instant::now();
        q.pop().await.unwrap();
        assert_eq!(units(start.elapsed()), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn back_off_doubles_up_to_the_cap() {
        let q = queue();
        q.add(named("a", 0));
        let mut waits = Vec::new();
        for _ in 0..5 {
            q.pop().await.unwrap();
            q.retry("a");
            let start = Instant::now();
            q.pop().await.unwrap();
            waits.push(units(start.elapsed()));
            q.retry("a");
        }
        // Attempts 1, 3, 5, 7, 9 are waited for here.
        assert_eq!(waits, [1, 4, 10, 10, 10]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_update_that_changes_needs_retries_an_unschedulable_pod_at_once() {
        let q = queue();
        q.add(named("a", 0));
        let p = q.pop().await.unwrap();
        q.unschedulable("a", p.cycle);
        // The same pod again (e.g. our own status write): nothing moves.
        q.add(named("a", 0));
        assert_eq!(q.place("a"), Some(Place::Unschedulable));
        let mut changed = named("a", 0);
        changed.tolerations.push(Default::default());
        q.add(changed);
        assert_eq!(q.place("a"), Some(Place::Active));
    }
}
