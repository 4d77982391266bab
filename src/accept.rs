//! The accept step shared by wkube's TCP servers (the API server, the node
//! agent's endpoint and the service proxy): a connection is taken only
//! when one of a bounded number of slots is free, so a flood of clients
//! waits in the kernel's backlog instead of exhausting the process.
//!
//! How the limit behaves (`--max-api-connections` for the API server):
//! a slot is held from accept until the connection closes, whoever the
//! client is and whatever it does — the admin's connections count like
//! anyone's, since who a client is is known only after its TLS handshake.
//! With every slot held, a new client's TCP connect still succeeds (the
//! kernel completes it and queues it, up to [`BACKLOG`]) and its TLS
//! handshake waits: nothing is refused or reset; it is served as soon as a
//! slot frees, or gives up by its own timeout (kubectl's TLS handshake
//! timeout is 10 s). The servers log once in a while that their slots are
//! all in use. So that idle clients cannot keep the slots (slowloris), the
//! API server closes a connection that does not finish its TLS handshake
//! or send its first request within 10 s each, or that has no request in
//! flight for long (`crate::api::serve::Deadlines`).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections the kernel holds for a server before it accepts them (it
/// caps this at `net.core.somaxconn`), above Tokio's default of 1024: a
/// burst of thousands of clients (watches opened at once) waits in the
/// queue instead of having its connection attempts dropped and retried.
pub const BACKLOG: u32 = 4096;

/// Listens on `addr` with [`BACKLOG`].
///
/// # Errors
/// When the address cannot be bound.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As the standard listener does: a restarted server binds at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Longest quiet between two warnings that a server's slots are all in
/// use: a flood is worth one line, not one per connection.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// Whether to warn now that `server`'s slots are all in use, given when
/// each server last did.
fn warn_due(last: &mut HashMap<String, Instant>, server: &str, now: Instant) -> bool {
    match last.get(server) {
        Some(t) if now.duration_since(*t) < WARN_EVERY => false,
        _ => {
            last.insert(server.to_string(), now);
            true
        }
    }
}

/// A connection and the slot it holds until it is dropped.
pub struct Accepted {
    pub permit: OwnedSemaphorePermit,
    pub stream: TcpStream,
    pub peer: SocketAddr,
}

/// Waits for a connection on `listener`, then for a free slot in `slots`.
/// `None` once `stop` resolves or `slots` is closed. A failed accept (out
/// of file descriptors and the like) is logged, naming `server`, and
/// retried after `backoff` rather than spun on.
///
/// The slot is taken after the accept, not before: an idle listener holds
/// no slot, so a proxy with a listener per pod (thousands on a dense node)
/// shares one pool among them all. While every slot is taken, each
/// listener holds at most one accepted connection waiting for a slot; the
/// rest wait in the kernel's backlog.
pub async fn next(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    stop: &mut (impl Future + Unpin),
    server: &str,
    backoff: Duration,
) -> Option<Accepted> {
    let (stream, peer) = loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok(accepted) => break accepted,
                Err(e) => {
                    tracing::warn!(error = %e, server, "accept failed");
                    tokio::time::sleep(backoff).await;
                }
            },
            _ = &mut *stop => return None,
        }
    };
    if slots.available_permits() == 0 {
        static LAST: parking_lot::Mutex<Option<HashMap<String, Instant>>> =
            parking_lot::Mutex::new(None);
        if warn_due(
            LAST.lock().get_or_insert_with(HashMap::new),
            server,
            Instant::now(),
        ) {
            tracing::warn!(
                server,
                "every connection slot is in use; new connections wait in the backlog"
            );
        }
    }
    let permit = tokio::select! {
        p = slots.clone().acquire_owned() => p.ok()?,
        _ = &mut *stop => return None,
    };
    Some(Accepted {
        permit,
        stream,
        peer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_out_of_slots_warns_once_in_a_while_not_per_connection() {
        let mut last = HashMap::new();
        let t0 = Instant::now();
        assert!(warn_due(&mut last, "API server", t0));
        assert!(!warn_due(
            &mut last,
            "API server",
            t0 + Duration::from_secs(1)
        ));
        // Each server on its own.
        assert!(warn_due(
            &mut last,
            "service proxy",
            t0 + Duration::from_secs(1)
        ));
        assert!(warn_due(&mut last, "API server", t0 + WARN_EVERY));
    }

    #[tokio::test]
    async fn a_connection_waits_for_a_free_slot_and_stop_ends_the_wait() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let slots = Arc::new(Semaphore::new(1));
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let mut never = std::pin::pin!(std::future::pending::<()>());
        let ms = Duration::from_millis(1);
        let first = next(&listener, &slots, &mut never, "test", ms)
            .await
            .unwrap();
        // The only slot is taken: the second connection waits for it.
        let listener = Arc::new(listener);
        let waiting = tokio::spawn({
            let (listener, slots) = (listener.clone(), slots.clone());
            async move {
                let mut never = std::pin::pin!(std::future::pending::<()>());
                next(&listener, &slots, &mut never, "test", ms).await
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "served beyond the limit");
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a freed slot lets the waiting connection in")
            .unwrap();
        assert!(second.is_some());
        // Stopping ends a wait for a slot.
        let mut stopped = std::pin::pin!(async {});
        let _held = second;
        assert!(
            next(&listener, &slots, &mut stopped, "test", ms)
                .await
                .is_none()
        );
    }
}
