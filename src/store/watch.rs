//! Watch fan-out: committed events go to every watcher whose range they hit.
//! (Implementation in progress.)

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::mpsc;

use super::{Event, Header, Result};

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
}

impl WatchStream {
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
