//! The Watch service: one bidirectional stream multiplexes many watches.
//!
//! Each stream gets a session task that reads the client's requests, and
//! each watch a forwarding task that turns store deliveries into
//! responses. All of them feed one bounded channel that tonic drains into
//! the response stream, so a client that stops reading stalls its own
//! watches (and, through their bounded store channels, nothing else).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use etcd_client::proto::{PbWatchRequest, PbWatchRequestUnion, PbWatchResponse, PbWatchService};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::convert::event_to_pb;
use super::error::{DUPLICATE_WATCH_ID, STOPPED, TOO_MANY_WATCHERS};
use super::{Ctx, stopped};
use crate::store::{KeyRange, Revision, StoreError, WatchRequest, WatchStream};

/// Responses buffered per stream before watches wait for the client.
const RESPONSE_BUFFER: usize = 256;

/// The watch id etcd uses for responses that belong to no single watch
/// (failed creations, stream-wide progress).
const NO_WATCH_ID: i64 = -1;

/// `WatchCreateRequest.filters` values.
const FILTER_NOPUT: i32 = 0;
const FILTER_NODELETE: i32 = 1;

type Tx = mpsc::Sender<Result<PbWatchResponse, Status>>;

pub(crate) struct WatchService {
    ctx: Arc<Ctx>,
}

impl WatchService {
    pub(crate) fn new(ctx: Arc<Ctx>) -> Self {
        WatchService { ctx }
    }
}

#[tonic::async_trait]
impl PbWatchService for WatchService {
    type WatchStream = ReceiverStream<Result<PbWatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<Streaming<PbWatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (tx, rx) = mpsc::channel(RESPONSE_BUFFER);
        let session = Session {
            ctx: self.ctx.clone(),
            tx,
            watchers: HashMap::new(),
            next_id: 0,
        };
        tokio::spawn(session.run(request.into_inner()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The fields of a create request that we use (the generated message type
/// is not exported by etcd-client).
struct Create {
    key: Vec<u8>,
    range_end: Vec<u8>,
    start_revision: Revision,
    progress_notify: bool,
    filters: Vec<i32>,
    prev_kv: bool,
    watch_id: i64,
}

struct Watcher {
    task: JoinHandle<()>,
    /// Highest revision this watch is known to be complete up to.
    revision: Arc<AtomicI64>,
}

/// One watch stream. Dropping it (client gone, shutdown, or a panic) aborts
/// every watch it started.
struct Session {
    ctx: Arc<Ctx>,
    tx: Tx,
    watchers: HashMap<i64, Watcher>,
    next_id: i64,
}

impl Drop for Session {
    fn drop(&mut self) {
        for w in self.watchers.values() {
            w.task.abort();
        }
    }
}

impl Session {
    async fn run(mut self, mut incoming: Streaming<PbWatchRequest>) {
        let stop = stopped(self.ctx.stop.clone());
        tokio::pin!(stop);
        loop {
            let msg = tokio::select! {
                msg = incoming.message() => msg,
                () = self.tx.closed() => return,
                () = &mut stop => {
                    let _ = self.tx.send(Err(Status::unavailable(STOPPED))).await;
                    return;
                }
            };
            // A transport error means the client is gone; nothing to tell it.
            let Ok(Some(req)) = msg else { return };
            let open = match req.request_union {
                Some(PbWatchRequestUnion::CreateRequest(c)) => {
                    self.create(Create {
                        key: c.key,
                        range_end: c.range_end,
                        start_revision: c.start_revision,
                        progress_notify: c.progress_notify,
                        filters: c.filters,
                        prev_kv: c.prev_kv,
                        watch_id: c.watch_id,
                    })
                    .await
                }
                Some(PbWatchRequestUnion::CancelRequest(c)) => self.cancel(c.watch_id).await,
                Some(PbWatchRequestUnion::ProgressRequest(_)) => self.progress().await,
                None => true,
            };
            if !open {
                return;
            }
        }
    }

    /// Sends one response; false when the client is gone.
    async fn send(&self, resp: PbWatchResponse) -> bool {
        self.tx.send(Ok(resp)).await.is_ok()
    }

    async fn send_status(&self, status: Status) -> bool {
        // The stream ends after an error status, so report it as closed.
        let _ = self.tx.send(Err(status)).await;
        false
    }

    /// etcd's answer to a create it refuses: created and canceled at once.
    fn refused(&self, revision: Revision, reason: &str) -> PbWatchResponse {
        PbWatchResponse {
            header: self.ctx.headers.at(revision),
            watch_id: NO_WATCH_ID,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        }
    }

    async fn create(&mut self, c: Create) -> bool {
        let now = match self.ctx.current_revision().await {
            Ok(rev) => rev,
            Err(status) => return self.send_status(status).await,
        };
        self.watchers.retain(|_, w| !w.task.is_finished());
        let id = if c.watch_id != 0 {
            if self.watchers.contains_key(&c.watch_id) {
                return self.send(self.refused(now, DUPLICATE_WATCH_ID)).await;
            }
            c.watch_id
        } else {
            // Bounded: at most max_watchers_per_stream ids are taken.
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        };
        if self.watchers.len() >= self.ctx.limits.max_watchers_per_stream {
            return self.send(self.refused(now, TOO_MANY_WATCHERS)).await;
        }

        // etcd watches everything from \x00 when no key is given.
        let key = if c.key.is_empty() {
            Bytes::from_static(&[0])
        } else {
            Bytes::from(c.key)
        };
        let req = WatchRequest {
            range: KeyRange {
                key,
                range_end: Bytes::from(c.range_end),
            },
            start_revision: c.start_revision,
            prev_kv: c.prev_kv,
            filter_puts: c.filters.contains(&FILTER_NOPUT),
            filter_deletes: c.filters.contains(&FILTER_NODELETE),
            progress_notify: c.progress_notify,
        };
        let created = PbWatchResponse {
            header: self.ctx.headers.at(now),
            watch_id: id,
            created: true,
            ..Default::default()
        };
        match self.ctx.store.watch(req).await {
            Ok(stream) => {
                if !self.send(created).await {
                    return false;
                }
                let revision = Arc::new(AtomicI64::new(now));
                let forward = Forward {
                    ctx: self.ctx.clone(),
                    id,
                    tx: self.tx.clone(),
                    prev_kv: c.prev_kv,
                    progress_notify: c.progress_notify,
                    revision: revision.clone(),
                };
                let task = tokio::spawn(forward.run(stream));
                self.watchers.insert(id, Watcher { task, revision });
                true
            }
            // Like etcd: the watch is created, then canceled with the
            // compaction revision so the client can re-list and resume.
            Err(StoreError::Compacted { compact_revision }) => {
                self.send(created).await
                    && self
                        .send(PbWatchResponse {
                            header: self.ctx.headers.at(now),
                            watch_id: id,
                            canceled: true,
                            compact_revision,
                            ..Default::default()
                        })
                        .await
            }
            // clientv3 reads a cancel without reason as "future revision".
            Err(StoreError::FutureRevision) => self.send(self.refused(now, "")).await,
            Err(e) => self.send(self.refused(now, &e.to_string())).await,
        }
    }

    async fn cancel(&mut self, id: i64) -> bool {
        // Unknown ids are ignored, as etcd does.
        let Some(w) = self.watchers.remove(&id) else {
            return true;
        };
        w.task.abort();
        // Wait for the task to stop so no event follows the cancellation.
        let _ = w.task.await;
        let revision = match self.ctx.current_revision().await {
            Ok(rev) => rev,
            Err(_) => w.revision.load(Ordering::Relaxed),
        };
        self.send(PbWatchResponse {
            header: self.ctx.headers.at(revision),
            watch_id: id,
            canceled: true,
            ..Default::default()
        })
        .await
    }

    /// A client's progress request: one response for the whole stream. Its
    /// revision must not exceed what any watch has delivered, so it is the
    /// smallest revision the watches are known to be complete up to.
    async fn progress(&mut self) -> bool {
        self.watchers.retain(|_, w| !w.task.is_finished());
        let known = self
            .watchers
            .values()
            .map(|w| w.revision.load(Ordering::Relaxed))
            .min();
        let revision = match known {
            Some(rev) => rev,
            None => match self.ctx.current_revision().await {
                Ok(rev) => rev,
                Err(status) => return self.send_status(status).await,
            },
        };
        self.send(PbWatchResponse {
            header: self.ctx.headers.at(revision),
            watch_id: NO_WATCH_ID,
            ..Default::default()
        })
        .await
    }
}

/// Moves one watch's deliveries from the store to the response stream.
struct Forward {
    ctx: Arc<Ctx>,
    id: i64,
    tx: Tx,
    prev_kv: bool,
    progress_notify: bool,
    revision: Arc<AtomicI64>,
}

impl Forward {
    async fn run(self, mut stream: WatchStream) {
        let interval = self.ctx.limits.progress_interval;
        let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut sent_since_tick = false;
        loop {
            let item = tokio::select! {
                item = stream.next() => item,
                _ = ticker.tick(), if self.progress_notify => {
                    // Like etcd, only a watch that was quiet for a whole
                    // interval gets a notification.
                    if !sent_since_tick {
                        let rev = self.revision.load(Ordering::Relaxed);
                        if !self.send(self.response(rev)).await {
                            return;
                        }
                    }
                    sent_since_tick = false;
                    continue;
                }
            };
            let resp = match item {
                Some(Ok(batch)) => {
                    self.revision
                        .store(batch.header.revision, Ordering::Relaxed);
                    // An empty batch is the store's progress notification.
                    if batch.events.is_empty() && !self.progress_notify {
                        continue;
                    }
                    let mut resp = self.response(batch.header.revision);
                    resp.events = batch
                        .events
                        .iter()
                        .map(|ev| event_to_pb(ev, self.prev_kv))
                        .collect();
                    resp
                }
                Some(Err(StoreError::Compacted { compact_revision })) => {
                    let mut resp = self.canceled("");
                    resp.compact_revision = compact_revision;
                    let _ = self.send(resp).await;
                    return;
                }
                Some(Err(e)) => {
                    let _ = self.send(self.canceled(&e.to_string())).await;
                    return;
                }
                None => {
                    let _ = self.send(self.canceled(STOPPED)).await;
                    return;
                }
            };
            if !self.send(resp).await {
                return;
            }
            sent_since_tick = true;
        }
    }

    fn response(&self, revision: Revision) -> PbWatchResponse {
        PbWatchResponse {
            header: self.ctx.headers.at(revision),
            watch_id: self.id,
            ..Default::default()
        }
    }

    fn canceled(&self, reason: &str) -> PbWatchResponse {
        PbWatchResponse {
            canceled: true,
            cancel_reason: reason.to_string(),
            ..self.response(self.revision.load(Ordering::Relaxed))
        }
    }

    async fn send(&self, resp: PbWatchResponse) -> bool {
        self.tx.send(Ok(resp)).await.is_ok()
    }
}
