//! Fair CPU between pods, as the kernel's CFS shares give containers.
//!
//! Guest code runs on the executor's worker threads. Left to the executor,
//! a pod with four spinning requests takes four turns for each one of a
//! neighbour's, and the neighbour's latency grows with the spinner's load.
//! Here every poll of a guest's future must hold one of a fixed number of
//! CPU slots (one per core), and the gate, not the executor, decides who
//! runs next: a gated future is handed to the executor only once it holds
//! a slot. A guest gives its slot back whenever its poll returns, which is
//! at the latest at its next epoch yield (every tick) or when it waits for
//! host I/O. A freed slot goes to the first waiting guest of the pod that
//! has used the least CPU relative to its weight (`requests.cpu`, as CPU
//! shares), so pods share the node by their requests however many requests
//! each has in flight, and a pod back from idle runs next.
//!
//! A guest that comes to the line well behind a pod that runs now (by more
//! than [`PREEMPT_GRANULARITY`] of that pod's CPU) does not wait for the
//! runner's next tick: the gate bumps the engine's epoch, and every running
//! guest yields at its next check. A pod back from idle, or new, is placed
//! near the least-served pod (with [`WAKEUP_CREDIT`] of head start), so it
//! neither banks idle time nor starts from zero.
//!
//! Guests run on their own threads ([`super::pool`]), so the gate's line
//! is the only queue a waiting guest is in.
//!
//! Time is measured around each poll: the wall time keeps the line fair
//! (a slot held is a slot others lack), and the thread's own CPU clock is
//! the pod's CPU usage ([`CpuShare::used`]), which time the OS gave to
//! other threads meanwhile does not inflate.
//!
//! One gated future (a [`Ticket`]) moves through these states, always under
//! the gate's lock:
//!
//! ```text
//!          created / wake               slot given
//!   Idle ───────────────────▶ Queued ─────────────▶ Granted
//!    ▲  ╲ (a slot is free)                            │ poll
//!    │   ╲──────────────────────────────────────────▶ ▼
//!    │◀──────── poll returns, not woken ─────────── Running ──poll Ready──▶ Done
//!                                                     │ woken while running
//!             poll returns: back in line   Queued ◀── RunningWoken
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// CPU shares of one core, as in cgroup v1 `cpu.shares`.
const SHARES_PER_CORE: u64 = 1024;
/// The least weight a pod has (Kubernetes' `cpu.shares` for BestEffort).
const MIN_SHARES: u64 = 2;
/// How far behind the pod last served a pod returning from idle is placed:
/// it runs first, but cannot bank idle time for a burst longer than this
/// much of its own CPU time.
const WAKEUP_CREDIT: Duration = Duration::from_millis(3);
/// A waiting pod preempts a running one only when it is behind it by more
/// than this much of the running pod's CPU time, so two busy pods do not
/// take turns faster than the epoch tick already makes them.
const PREEMPT_GRANULARITY: Duration = Duration::from_millis(1);
/// A pod whose guests have not run for this long is idle, not merely
/// between two polls.
const IDLE_AFTER: Duration = Duration::from_millis(2);
/// A pod's guests run at the OS priority of its weight (see
/// [`super::priority`]) while another pod has run within this long; a
/// pod alone on the node runs at the process's own, as fast as it can.
const CONTENDED_FOR: Duration = Duration::from_millis(100);

/// The node's CPU slots and who waits for one.
///
/// Waiting guests are queued per pod, and the pods with waiters are kept in
/// order of their virtual runtime (CPU used divided by weight). A pod's key
/// changes only under the gate's lock, when it is charged for a poll or
/// placed on return from idle, so the order is always current: four
/// requests of one pod wait behind each other, not beside a neighbour's one.
pub struct CpuGate {
    state: Mutex<GateState>,
    /// The zero of every pod's `last_ran_ns`.
    epoch: Instant,
    /// Make every running guest yield at its next check (the runtime
    /// registers its engine's epoch here); each returns false once its
    /// engine is gone.
    preempters: Mutex<Vec<Preempter>>,
}

/// Asks running guests to yield now; false once it can no longer.
pub type Preempter = Box<dyn Fn() -> bool + Send + Sync>;

/// What putting a ticket in line did.
enum Enqueued {
    /// A slot was free: the ticket holds it (wake it).
    Granted(Arc<Ticket>),
    /// In line; `preempt` when it deserves the CPU more than a guest that
    /// runs now, which should then yield at once rather than at its tick.
    Queued { preempt: bool },
}

impl Enqueued {
    fn granted(self) -> Option<Arc<Ticket>> {
        match self {
            Enqueued::Granted(t) => Some(t),
            Enqueued::Queued { .. } => None,
        }
    }
}

struct GateState {
    free: usize,
    /// Pods with guests waiting, by (virtual runtime, pod id); each with
    /// its waiting guests in arrival order.
    waiting: BTreeMap<(u64, u64), VecDeque<Arc<Ticket>>>,
    next_pod: u64,
    /// The least virtual runtime of the pods that run or wait, as last
    /// seen; only grows. A pod back from idle is placed near it.
    min_vruntime: u64,
    /// The pods of the guests that hold a slot, one entry per slot held.
    running: Vec<Arc<CpuShare>>,
    /// The two pods whose polls ended last, distinct, newest first: (pod
    /// id, when, in nanoseconds since the gate's epoch).
    recent: [(u64, u64); 2],
}

impl GateState {
    /// Whether a pod other than `share`'s runs or waits now, or has run
    /// within [`CONTENDED_FOR`] before `now_ns`.
    fn contended(&self, share: &CpuShare, now_ns: u64) -> bool {
        let window = CONTENDED_FOR.as_nanos() as u64;
        self.running.iter().any(|r| r.id != share.id)
            || self.waiting.keys().any(|(_, id)| *id != share.id)
            || self
                .recent
                .iter()
                .any(|(id, t)| *id != 0 && *id != share.id && now_ns.saturating_sub(*t) < window)
    }

    /// Notes that a poll of pod `id` ended at `now_ns`.
    fn ran(&mut self, id: u64, now_ns: u64) {
        if self.recent[0].0 != id {
            self.recent[1] = self.recent[0];
        }
        self.recent[0] = (id, now_ns);
    }

    /// Moves `min_vruntime` up to the least virtual runtime among the pod
    /// just run (`current`), the pods running and the first in line.
    fn advance_min_vruntime(&mut self, current: u64) {
        let least = self
            .running
            .iter()
            .map(|r| r.vruntime.load(Ordering::Relaxed))
            .chain(self.waiting.first_key_value().map(|(k, _)| k.0))
            .fold(current, u64::min);
        self.min_vruntime = self.min_vruntime.max(least);
    }
}

/// Where one gated future stands (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Idle,
    Queued,
    Granted,
    Running,
    RunningWoken,
    Done,
}

impl CpuGate {
    /// A gate with `slots` CPU slots.
    pub fn new(slots: usize) -> CpuGate {
        CpuGate {
            state: Mutex::new(GateState {
                free: slots.max(1),
                waiting: BTreeMap::new(),
                next_pod: 0,
                min_vruntime: 0,
                running: Vec::new(),
                recent: [(0, 0); 2],
            }),
            epoch: Instant::now(),
            preempters: Mutex::new(Vec::new()),
        }
    }

    /// Registers a way to make running guests yield now (the runtime's
    /// engine epoch).
    pub fn on_preempt(&self, preempter: Preempter) {
        self.preempters.lock().push(preempter);
    }

    fn preempt(&self) {
        self.preempters.lock().retain(|p| p());
    }

    /// The process-wide gate, one slot per core the process may use.
    pub fn global() -> Arc<CpuGate> {
        static GATE: OnceLock<Arc<CpuGate>> = OnceLock::new();
        GATE.get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            Arc::new(CpuGate::new(cores))
        })
        .clone()
    }

    fn since_epoch(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Puts an idle or just-run ticket in line, or gives it a free slot at
    /// once when no one else waits.
    fn enqueue(&self, s: &mut GateState, ticket: &Arc<Ticket>) -> Enqueued {
        let share = &ticket.share;
        let mut key = share.key();
        let idle_for = self
            .since_epoch()
            .saturating_sub(share.last_ran_ns.load(Ordering::Relaxed));
        if idle_for > IDLE_AFTER.as_nanos() as u64
            && !s.waiting.contains_key(&key)
            && !s.running.iter().any(|r| r.id == share.id)
        {
            // Back from idle: placed a little ahead of the least-served
            // pod, never further back, so idle time is not banked. (Also
            // when a slot is free: the pod's place matters from its first
            // poll on.)
            let floor = s.min_vruntime.saturating_sub(share.weighted(WAKEUP_CREDIT));
            if key.0 < floor {
                share.vruntime.store(floor, Ordering::Relaxed);
                key.0 = floor;
            }
        }
        if s.free > 0 && s.waiting.is_empty() {
            s.free -= 1;
            ticket.set(Stage::Granted);
            return Enqueued::Granted(ticket.clone());
        }
        ticket.set(Stage::Queued);
        s.waiting.entry(key).or_default().push_back(ticket.clone());
        // First in line, and well behind a pod that runs now: that pod
        // yields at once instead of at its next tick.
        let first = s.waiting.first_key_value().is_some_and(|(k, _)| *k == key);
        let preempt = first
            && s.running.iter().any(|r| {
                r.id != share.id
                    && r.vruntime.load(Ordering::Relaxed)
                        > key.0.saturating_add(r.weighted(PREEMPT_GRANULARITY))
            });
        Enqueued::Queued { preempt }
    }

    /// Gives a slot to the first waiter of the least-served pod, else back
    /// to the pool. Returns the ticket to wake.
    fn grant_next(s: &mut GateState) -> Option<Arc<Ticket>> {
        while let Some(mut entry) = s.waiting.first_entry() {
            let next = entry.get_mut().pop_front();
            if entry.get().is_empty() {
                entry.remove();
            }
            if let Some(ticket) = next {
                ticket.set(Stage::Granted);
                return Some(ticket);
            }
        }
        s.free += 1;
        None
    }
}

/// One pod's claim on the node's CPU: its weight and what it has used.
pub struct CpuShare {
    gate: Arc<CpuGate>,
    id: u64,
    shares: u64,
    /// Used CPU divided by weight, in weighted nanoseconds; written only
    /// under the gate's lock.
    vruntime: AtomicU64,
    used_ns: AtomicU64,
    /// Whether CPU time is counted (reading the thread's CPU clock costs
    /// a system call per poll; off only to measure that cost).
    accounted: bool,
    /// When a poll of its guests last ended (nanoseconds since the gate's
    /// epoch); tells a pod back from idle from one between two polls.
    last_ran_ns: AtomicU64,
    /// The nice steps its guests' polls run at while other pods want
    /// the CPU too (see [`super::priority`]).
    nice: i32,
}

impl std::fmt::Debug for CpuShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuShare")
            .field("shares", &self.shares)
            .field("used", &self.used())
            .finish()
    }
}

impl CpuShare {
    /// A share weighted by `millicores` of requested CPU (none: the least
    /// weight), on `gate`.
    pub fn new(gate: Arc<CpuGate>, millicores: Option<u64>) -> CpuShare {
        let shares = millicores
            .map_or(MIN_SHARES, |m| m.saturating_mul(SHARES_PER_CORE) / 1000)
            .max(MIN_SHARES);
        let id = {
            let mut s = gate.state.lock();
            s.next_pod += 1;
            s.next_pod
        };
        CpuShare {
            gate,
            id,
            shares,
            vruntime: AtomicU64::new(0),
            used_ns: AtomicU64::new(0),
            accounted: true,
            last_ran_ns: AtomicU64::new(0),
            nice: super::priority::nice_for_shares(shares),
        }
    }

    /// The same share without CPU accounting: `used` stays zero.
    #[must_use]
    pub fn unaccounted(mut self) -> CpuShare {
        self.accounted = false;
        self
    }

    /// CPU time the pod's guest code has run, summed over its instances:
    /// the thread's own CPU clock around each poll, so time the OS gave to
    /// other threads meanwhile is not counted.
    pub fn used(&self) -> Duration {
        Duration::from_nanos(self.used_ns.load(Ordering::Relaxed))
    }

    /// Runs `fut` holding a CPU slot for each of its polls.
    ///
    /// The future takes its place in line now, not at its first poll: the
    /// executor may not get to that poll before a running guest's tick,
    /// and a guest that deserves the CPU preempts the runners at once.
    pub fn gate<F: Future>(self: &Arc<Self>, fut: F) -> Gated<F> {
        let ticket = Arc::new(Ticket {
            share: self.clone(),
            stage: Mutex::new(Stage::Idle),
            outer: Mutex::new(None),
        });
        let gate = &self.gate;
        let mut s = gate.state.lock();
        // Granted: the first poll finds the slot held for it.
        let preempt = matches!(
            gate.enqueue(&mut s, &ticket),
            Enqueued::Queued { preempt: true }
        );
        drop(s);
        if preempt {
            gate.preempt();
        }
        Gated {
            fut,
            ticket,
            waker: None,
        }
    }

    /// `cpu` of this pod's CPU time in virtual runtime.
    fn weighted(&self, cpu: Duration) -> u64 {
        u64::try_from(cpu.as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_mul(SHARES_PER_CORE)
            / self.shares
    }

    /// The pod's place in the gate's line (read under the gate's lock).
    fn key(&self) -> (u64, u64) {
        (self.vruntime.load(Ordering::Relaxed), self.id)
    }

    /// Charges one poll (under the gate's lock): `ran` of the slot (wall
    /// time, which keeps the pod's place in line current) and `cpu` of
    /// CPU time really spent (what the pod is reported to use).
    fn charge(&self, s: &mut GateState, ran: Duration, cpu: Duration) {
        let ns = u64::try_from(cpu.as_nanos()).unwrap_or(u64::MAX);
        self.used_ns.fetch_add(ns, Ordering::Relaxed);
        let old = self.key();
        let new = old.0.saturating_add(self.weighted(ran));
        self.vruntime.store(new, Ordering::Relaxed);
        let now = self.gate.since_epoch();
        self.last_ran_ns.store(now, Ordering::Relaxed);
        s.ran(self.id, now);
        if let Some(queue) = s.waiting.remove(&old) {
            s.waiting.insert((new, self.id), queue);
        }
    }
}

/// One gated future's place at the gate; also the waker its inner future
/// sees, so that a wake puts it in line rather than on the executor.
struct Ticket {
    share: Arc<CpuShare>,
    /// Changed only under the gate's lock.
    stage: Mutex<Stage>,
    /// The executor's waker, woken once a slot is granted.
    outer: Mutex<Option<Waker>>,
}

impl Ticket {
    fn stage(&self) -> Stage {
        *self.stage.lock()
    }

    fn set(&self, stage: Stage) {
        *self.stage.lock() = stage;
    }

    /// Hands the granted future to the executor.
    fn wake_outer(&self) {
        let waker = self.outer.lock().clone();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Wake for Ticket {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let gate = &self.share.gate;
        let mut s = gate.state.lock();
        let queued = match self.stage() {
            Stage::Idle => Some(gate.enqueue(&mut s, self)),
            Stage::Running => {
                self.set(Stage::RunningWoken);
                None
            }
            Stage::Queued | Stage::Granted | Stage::RunningWoken | Stage::Done => None,
        };
        drop(s);
        match queued {
            Some(Enqueued::Granted(t)) => t.wake_outer(),
            Some(Enqueued::Queued { preempt: true }) => gate.preempt(),
            _ => {}
        }
    }
}

pin_project_lite::pin_project! {
    /// A future whose polls each hold a CPU slot (see the module docs).
    pub struct Gated<F> {
        #[pin]
        fut: F,
        ticket: Arc<Ticket>,
        // The ticket as a waker, made once.
        waker: Option<Waker>,
    }

    impl<F> PinnedDrop for Gated<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let ticket = &*this.ticket;
            let gate = &ticket.share.gate;
            let mut s = gate.state.lock();
            let next = match ticket.stage() {
                Stage::Queued => {
                    let key = ticket.share.key();
                    if let Some(queue) = s.waiting.get_mut(&key) {
                        queue.retain(|t| !Arc::ptr_eq(t, ticket));
                        if queue.is_empty() {
                            s.waiting.remove(&key);
                        }
                    }
                    None
                }
                // Granted a slot it will never use: pass it on.
                Stage::Granted => CpuGate::grant_next(&mut s),
                // Dropped while its poll ran: the poll unwound (a
                // host-side panic). Its slot would otherwise stay taken
                // for good, and with every slot lost no guest would run.
                Stage::Running | Stage::RunningWoken => {
                    if let Some(i) = s.running.iter().position(|r| Arc::ptr_eq(r, &ticket.share)) {
                        s.running.swap_remove(i);
                    }
                    CpuGate::grant_next(&mut s)
                }
                Stage::Idle | Stage::Done => None,
            };
            ticket.set(Stage::Done);
            drop(s);
            if let Some(t) = next {
                t.wake_outer();
            }
        }
    }
}

impl<F> Gated<F> {
    /// Whether this future may take its first poll on the thread that
    /// started it instead of being handed to the guest threads: it holds
    /// a slot already, and either that thread is a guest thread (whose
    /// priority the poll sets, as on any guest thread) or no other pod
    /// runs, waits or has run within [`CONTENDED_FOR`], so there is no
    /// one whom a lower OS priority would have to let ahead (see
    /// [`super::pool::start_guest`]).
    pub fn may_run_here(&self) -> bool {
        let share = &self.ticket.share;
        let gate = &share.gate;
        let s = gate.state.lock();
        self.ticket.stage() == Stage::Granted
            && (super::priority::on_guest_thread() || !s.contended(share, gate.since_epoch()))
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let ticket = this.ticket.clone();
        let gate = ticket.share.gate.clone();
        {
            let mut outer = ticket.outer.lock();
            match &mut *outer {
                Some(w) => w.clone_from(cx.waker()),
                None => *outer = Some(cx.waker().clone()),
            }
        }
        // Hold a slot, or wait in line for one; the OS priority to run at.
        let nice = {
            let mut s = gate.state.lock();
            match ticket.stage() {
                Stage::Granted => {}
                Stage::Idle => {
                    // Polled without a wake (a slot freed meanwhile): ask.
                    if let Enqueued::Queued { preempt } = gate.enqueue(&mut s, &ticket) {
                        drop(s);
                        if preempt {
                            gate.preempt();
                        }
                        return Poll::Pending;
                    }
                }
                Stage::Queued => return Poll::Pending,
                // Polled again after completing; the inner future decides.
                Stage::Done => {}
                Stage::Running | Stage::RunningWoken => return Poll::Pending,
            }
            ticket.set(Stage::Running);
            s.running.push(ticket.share.clone());
            let share = &ticket.share;
            if s.contended(share, gate.since_epoch()) {
                share.nice
            } else {
                0
            }
        };
        // Outside the gate's lock: a system call when the priority changes.
        super::priority::run_at(nice);
        let waker = this
            .waker
            .get_or_insert_with(|| Waker::from(ticket.clone()))
            .clone();
        let accounted = ticket.share.accounted;
        let cpu_before = if accounted {
            thread_cpu_time()
        } else {
            Duration::ZERO
        };
        let started = Instant::now();
        let out = this.fut.poll(&mut Context::from_waker(&waker));
        let ran = started.elapsed();
        let cpu = if accounted {
            thread_cpu_time().saturating_sub(cpu_before)
        } else {
            Duration::ZERO
        };

        let mut s = gate.state.lock();
        ticket.share.charge(&mut s, ran, cpu);
        if let Some(i) = s.running.iter().position(|r| Arc::ptr_eq(r, &ticket.share)) {
            s.running.swap_remove(i);
        }
        s.advance_min_vruntime(ticket.share.vruntime.load(Ordering::Relaxed));
        let woken = ticket.stage() == Stage::RunningWoken;
        let mut wake = Vec::with_capacity(2);
        if out.is_ready() {
            ticket.set(Stage::Done);
        } else if woken {
            // It yielded: back in line behind whoever deserves the CPU more.
            ticket.set(Stage::Idle);
            wake.extend(gate.enqueue(&mut s, &ticket).granted());
        } else {
            ticket.set(Stage::Idle);
        }
        wake.extend(CpuGate::grant_next(&mut s));
        drop(s);
        for t in wake {
            t.wake_outer();
        }
        out
    }
}

/// The CPU time the calling thread has run.
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guest whose poll panics (a host-side bug it provoked) gives its
    /// slot back when it is dropped, so the next guest still runs.
    #[test]
    fn a_guest_whose_poll_panics_gives_its_slot_back() {
        let gate = Arc::new(CpuGate::new(1));
        let share = Arc::new(CpuShare::new(gate, None));
        let mut cx = Context::from_waker(Waker::noop());
        let mut bad = Box::pin(share.gate(async { panic!("a host-side bug") }));
        let polled =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bad.as_mut().poll(&mut cx)));
        assert!(polled.is_err());
        drop(bad);
        let mut next = Box::pin(share.gate(async { 7 }));
        assert_eq!(next.as_mut().poll(&mut cx), Poll::Ready(7));
    }

    /// A future that burns `slices` slices of CPU, yielding between them.
    async fn spin(slices: u32, slice: Duration) {
        for _ in 0..slices {
            let until = Instant::now() + slice;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            yield_now().await;
        }
    }

    /// Yields as wasmtime's epoch yield does: wakes itself at once and
    /// returns pending (tokio's own `yield_now` defers the wake instead).
    async fn yield_now() {
        let mut yielded = false;
        std::future::poll_fn(|cx| {
            if yielded {
                return Poll::Ready(());
            }
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        })
        .await
    }

    /// A pod that starts while a slot is free is placed as one back from
    /// idle is: near the least-served pod, not at the virtual runtime it
    /// had (zero for a new pod), from which it would run alone until it
    /// caught up with pods that had the node to themselves.
    #[tokio::test]
    async fn a_pod_granted_a_free_slot_starts_near_the_others_not_at_zero() {
        let gate = Arc::new(CpuGate::new(2));
        let old = Arc::new(CpuShare::new(gate.clone(), None));
        old.gate(spin(20, Duration::from_millis(1))).await;
        let before = old.vruntime.load(Ordering::Relaxed);
        assert!(before > 0);
        tokio::time::sleep(IDLE_AFTER * 2).await;

        let new = Arc::new(CpuShare::new(gate.clone(), None));
        new.gate(async {}).await;
        let placed = new.vruntime.load(Ordering::Relaxed);
        assert!(
            placed >= before - new.weighted(WAKEUP_CREDIT),
            "placed at {placed}, the other pod is at {before}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pods_share_one_slot_by_their_weight_not_their_request_count() {
        let gate = Arc::new(CpuGate::new(1));
        let busy = Arc::new(CpuShare::new(gate.clone(), Some(100)));
        let light = Arc::new(CpuShare::new(gate.clone(), Some(100)));
        let heavy = Arc::new(CpuShare::new(gate.clone(), Some(300)));
        let slice = Duration::from_micros(500);
        let mut tasks = Vec::new();
        // `busy` has four requests in flight, the others one each.
        for _ in 0..4 {
            tasks.push(tokio::spawn(busy.gate(spin(200, slice))));
        }
        tasks.push(tokio::spawn(light.gate(spin(200, slice))));
        tasks.push(tokio::spawn(heavy.gate(spin(400, slice))));
        tokio::time::sleep(Duration::from_millis(150)).await;
        let (b, l, h) = (busy.used(), light.used(), heavy.used());
        for t in tasks {
            t.abort();
        }
        // Equal requests, equal CPU, though `busy` asked four times as
        // often; three times the request, about three times the CPU.
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
        assert!(
            (0.6..1.6).contains(&ratio(b, l)),
            "busy {b:?} light {l:?} heavy {h:?}"
        );
        assert!((2.0..4.5).contains(&ratio(h, l)), "heavy {h:?} light {l:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pod_back_from_idle_runs_before_a_spinner_and_slots_are_never_lost() {
        let gate = Arc::new(CpuGate::new(1));
        let spinner = Arc::new(CpuShare::new(gate.clone(), None));
        let quiet = Arc::new(CpuShare::new(gate.clone(), None));
        let slices = Arc::new(AtomicU64::new(0));
        let spinners: Vec<_> = (0..4)
            .map(|_| {
                let slices = slices.clone();
                tokio::spawn(spinner.gate(async move {
                    loop {
                        spin(1, Duration::from_millis(1)).await;
                        slices.fetch_add(1, Ordering::Relaxed);
                    }
                }))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(30)).await;
        // The quiet pod's request runs after at most the slice in
        // progress, not after each of the four spinners' turns.
        let before = slices.load(Ordering::Relaxed);
        let ran_after = quiet.gate(async { slices.load(Ordering::Relaxed) }).await;
        assert!(
            ran_after - before <= 2,
            "{} spinner slices first",
            ran_after - before
        );
        // Dropping queued and running guests gives every slot back.
        for t in spinners {
            t.abort();
            let _ = t.await;
        }
        quiet.gate(async {}).await;
        assert_eq!(gate.state.lock().free, 1);
        assert!(gate.state.lock().waiting.is_empty());
    }
}
