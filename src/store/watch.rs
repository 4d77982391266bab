//! Watch fan-out: committed events go to every watcher whose range they hit.
//!
//! A watcher is either *synced* — it has seen everything up to the committed
//! revision, and the writer hands it new events directly — or *catching up*:
//! a task replays its backlog from the in-memory event log and then turns it
//! synced. A synced watcher whose channel is full becomes catching-up instead
//! of blocking the writer, so one slow client never delays a commit or other
//! watchers. Each watcher remembers the next revision it expects, which makes
//! the hand-over between the two modes free of gaps and duplicates.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::{Event, EventType, Header, Result, Revision, StoreError, WatchRequest};

/// One delivery to a watcher: the events of one or more revisions, in
/// order. An empty `events` list is a progress notification: nothing in the
/// watched range changed up to `header.revision`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchEvents {
    pub header: Header,
    pub events: Vec<Event>,
}

/// The receiving end of a watch. Dropping it cancels the watch.
/// An `Err` item (for example `StoreError::Compacted` when the watcher fell
/// behind a compaction) ends the stream.
pub struct WatchStream {
    pub(crate) rx: mpsc::Receiver<Result<WatchEvents>>,
    pub(crate) _cancel: Option<WatchCancel>,
}

impl WatchStream {
    /// A stream fed by a task of a backend's own; the task sees the
    /// receiver close when the stream is dropped.
    pub(crate) fn from_channel(rx: mpsc::Receiver<Result<WatchEvents>>) -> Self {
        WatchStream { rx, _cancel: None }
    }

    /// The next delivery; `None` when the store shut down.
    pub async fn next(&mut self) -> Option<Result<WatchEvents>> {
        self.rx.recv().await
    }
}

impl futures::Stream for WatchStream {
    type Item = Result<WatchEvents>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Removes its watcher from the hub when the stream is dropped.
pub(crate) struct WatchCancel {
    hub: Weak<WatchHub>,
    id: u64,
}

impl Drop for WatchCancel {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.inner.lock().watchers.remove(&self.id);
        }
    }
}

/// Where catching-up watchers read history from (the backend's MVCC state).
pub trait EventSource: Send + Sync + 'static {
    /// The newest durable revision.
    fn committed(&self) -> Revision;
    /// The compacted revision.
    fn compacted(&self) -> Revision;
    /// Committed events of revisions `from..=to`, at most `max` revisions.
    fn events_between(
        &self,
        from: Revision,
        to: Revision,
        max: usize,
    ) -> Result<Vec<(Revision, Arc<[Event]>)>>;
}

/// Limits of the watch hub.
#[derive(Clone, Debug)]
pub struct WatchLimits {
    /// Watchers open at once across the store.
    pub max_watchers: usize,
    /// Deliveries buffered per watcher before it falls back to catching up.
    pub channel_capacity: usize,
    /// Revisions replayed per catch-up step.
    pub catch_up_batch: usize,
    /// How often idle watchers that asked for it get a progress
    /// notification.
    pub progress_interval: Duration,
}

impl Default for WatchLimits {
    fn default() -> Self {
        WatchLimits {
            max_watchers: 100_000,
            channel_capacity: 256,
            catch_up_batch: 1000,
            progress_interval: Duration::from_secs(600),
        }
    }
}

struct Watcher {
    req: WatchRequest,
    tx: mpsc::Sender<Result<WatchEvents>>,
    /// The first revision this watcher has not been sent yet.
    next_rev: Revision,
    catching_up: bool,
    last_sent: Instant,
}

impl Watcher {
    /// The events of `events` this watcher wants, shaped as it asked.
    fn select(&self, events: &[Event], out: &mut Vec<Event>) {
        for ev in events {
            if !self.req.range.contains(&ev.kv.key) {
                continue;
            }
            match ev.kind {
                EventType::Put if self.req.filter_puts => continue,
                EventType::Delete if self.req.filter_deletes => continue,
                _ => {}
            }
            let mut ev = ev.clone();
            if !self.req.prev_kv {
                ev.prev_kv = None;
            }
            out.push(ev);
        }
    }
}

#[derive(Default)]
struct HubInner {
    next_id: u64,
    watchers: HashMap<u64, Watcher>,
}

/// The registry of watchers of one store.
pub struct WatchHub {
    inner: Mutex<HubInner>,
    limits: WatchLimits,
    runtime: tokio::runtime::Handle,
    source: Weak<dyn EventSource>,
}

impl WatchHub {
    /// A hub reading history from `source`; catch-up tasks run on `runtime`.
    pub fn new(
        limits: WatchLimits,
        runtime: tokio::runtime::Handle,
        source: Weak<dyn EventSource>,
    ) -> Arc<Self> {
        let hub = Arc::new(WatchHub {
            inner: Mutex::new(HubInner::default()),
            limits,
            runtime,
            source,
        });
        let weak = Arc::downgrade(&hub);
        let interval = hub.limits.progress_interval;
        hub.runtime.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(hub) = weak.upgrade() else { return };
                hub.send_progress();
            }
        });
        hub
    }

    /// Number of open watchers.
    pub fn len(&self) -> usize {
        self.inner.lock().watchers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Register a watcher.
    ///
    /// # Errors
    /// `Compacted` when `start_revision` is older than the compacted
    /// revision; `TooManyWatchers` past the limit.
    pub fn watch(self: &Arc<Self>, req: WatchRequest) -> Result<WatchStream> {
        let source = self.source.upgrade().ok_or(StoreError::Stopped)?;
        if req.range.key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        let (tx, rx) = mpsc::channel(self.limits.channel_capacity);
        let mut inner = self.inner.lock();
        if inner.watchers.len() >= self.limits.max_watchers {
            return Err(StoreError::TooManyWatchers);
        }
        let committed = source.committed();
        let compacted = source.compacted();
        if req.start_revision > 0 && req.start_revision < compacted {
            return Err(StoreError::Compacted {
                compact_revision: compacted,
            });
        }
        let next_rev = if req.start_revision <= 0 {
            committed + 1
        } else {
            req.start_revision
        };
        let catching_up = next_rev <= committed;
        let id = inner.next_id;
        inner.next_id += 1;
        inner.watchers.insert(
            id,
            Watcher {
                req,
                tx,
                next_rev,
                catching_up,
                last_sent: Instant::now(),
            },
        );
        drop(inner);
        if catching_up {
            self.spawn_catch_up(id);
        }
        Ok(WatchStream {
            rx,
            _cancel: Some(WatchCancel {
                hub: Arc::downgrade(self),
                id,
            }),
        })
    }

    /// Deliver newly committed revisions (ascending) to synced watchers.
    /// Called by the writer right after `committed` advanced.
    pub fn notify(self: &Arc<Self>, revisions: &[(Revision, Arc<[Event]>)], committed: Revision) {
        let mut lagging = Vec::new();
        let mut closed = Vec::new();
        {
            let mut inner = self.inner.lock();
            for (id, w) in inner.watchers.iter_mut() {
                if w.catching_up {
                    continue;
                }
                let mut out = Vec::new();
                for (rev, events) in revisions {
                    if *rev >= w.next_rev {
                        w.select(events, &mut out);
                    }
                }
                if out.is_empty() {
                    w.next_rev = w.next_rev.max(committed + 1);
                    continue;
                }
                let delivery = WatchEvents {
                    header: Header {
                        revision: committed,
                    },
                    events: out,
                };
                match w.tx.try_send(Ok(delivery)) {
                    Ok(()) => {
                        w.next_rev = committed + 1;
                        w.last_sent = Instant::now();
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        // Nothing of this delivery was sent: replay it from
                        // the log once the client reads again.
                        w.catching_up = true;
                        lagging.push(*id);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => closed.push(*id),
                }
            }
            for id in closed {
                inner.watchers.remove(&id);
            }
        }
        for id in lagging {
            self.spawn_catch_up(id);
        }
    }

    fn spawn_catch_up(self: &Arc<Self>, id: u64) {
        let hub = Arc::downgrade(self);
        self.runtime.spawn(async move {
            catch_up(hub, id).await;
        });
    }

    /// Ends every watch with `err` (for a source that lost events it can
    /// never replay): each client then starts again from a fresh list.
    pub fn fail_all(&self, err: impl Fn() -> StoreError) {
        let mut inner = self.inner.lock();
        for w in inner.watchers.values() {
            let _ = w.tx.try_send(Err(err()));
        }
        inner.watchers.clear();
    }

    fn send_progress(&self) {
        let Some(source) = self.source.upgrade() else {
            return;
        };
        let committed = source.committed();
        let now = Instant::now();
        let mut inner = self.inner.lock();
        for w in inner.watchers.values_mut() {
            if w.catching_up
                || !w.req.progress_notify
                || now.duration_since(w.last_sent) < self.limits.progress_interval / 2
            {
                continue;
            }
            let delivery = WatchEvents {
                header: Header {
                    revision: committed,
                },
                events: Vec::new(),
            };
            if w.tx.try_send(Ok(delivery)).is_ok() {
                w.last_sent = now;
            }
        }
    }
}

/// Replay a watcher's backlog from the event log until it reaches the
/// committed revision, then hand it back to the writer's direct delivery.
async fn catch_up(hub_weak: Weak<WatchHub>, id: u64) {
    loop {
        let Some(mut hub) = hub_weak.upgrade() else {
            return;
        };
        let Some(source) = hub.source.upgrade() else {
            return;
        };
        // Decide under the hub lock: the writer notifies under the same
        // lock after publishing `committed`, so a watcher turned synced
        // here cannot miss a revision.
        let (from, upto, tx, batch_max) = {
            let mut inner = hub.inner.lock();
            let Some(w) = inner.watchers.get_mut(&id) else {
                return;
            };
            let committed = source.committed();
            if w.next_rev > committed {
                w.catching_up = false;
                return;
            }
            (
                w.next_rev,
                committed,
                w.tx.clone(),
                hub.limits.catch_up_batch,
            )
        };
        let revisions = match source.events_between(from, upto, batch_max) {
            Ok(r) => r,
            Err(e) => {
                // Compacted past this watcher: it can never be complete
                // again. Tell it and end the watch, as etcd does.
                let _ = tx.send(Err(e)).await;
                hub.inner.lock().watchers.remove(&id);
                return;
            }
        };
        let reached = if revisions.len() < batch_max {
            upto
        } else {
            revisions.last().map_or(upto, |(r, _)| *r)
        };
        let mut out = Vec::new();
        {
            let inner = hub.inner.lock();
            let Some(w) = inner.watchers.get(&id) else {
                return;
            };
            for (_, events) in &revisions {
                w.select(events, &mut out);
            }
        }
        if !out.is_empty() {
            let delivery = WatchEvents {
                header: Header { revision: upto },
                events: out,
            };
            // Await without holding the hub: a slow client only ever
            // blocks its own catch-up task.
            drop(hub);
            drop(source);
            if tx.send(Ok(delivery)).await.is_err() {
                return;
            }
            let Some(h) = hub_weak.upgrade() else { return };
            hub = h;
        }
        let mut inner = hub.inner.lock();
        let Some(w) = inner.watchers.get_mut(&id) else {
            return;
        };
        w.next_rev = w.next_rev.max(reached + 1);
        w.last_sent = Instant::now();
    }
}
