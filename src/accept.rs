//! The accept step shared by wkube's TCP servers (the API server, the node
//! agent's endpoint and the service proxy): a connection is taken only
//! when one of a bounded number of slots is free, so a flood of clients
//! waits in the kernel's backlog instead of exhausting the process.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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

/// A connection and the slot it holds until it is dropped.
pub struct Accepted {
    pub permit: OwnedSemaphorePermit,
    pub stream: TcpStream,
    pub peer: SocketAddr,
}

/// Waits for a free slot in `slots`, then for a connection on `listener`.
/// `None` once `stop` resolves or `slots` is closed. A failed accept (out
/// of file descriptors and the like) is logged, naming `server`, and
/// retried after `backoff` rather than spun on.
pub async fn next(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    stop: &mut (impl Future + Unpin),
    server: &str,
    backoff: Duration,
) -> Option<Accepted> {
    let permit = tokio::select! {
        p = slots.clone().acquire_owned() => p.ok()?,
        _ = &mut *stop => return None,
    };
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => return Some(Accepted { permit, stream, peer }),
                Err(e) => {
                    tracing::warn!(error = %e, server, "accept failed");
                    tokio::time::sleep(backoff).await;
                }
            },
            _ = &mut *stop => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // The only slot is taken: the second connection is not accepted.
        let waiting = tokio::time::timeout(
            Duration::from_millis(200),
            next(&listener, &slots, &mut never, "test", ms),
        )
        .await;
        assert!(waiting.is_err(), "accepted beyond the limit");
        drop(first);
        let second = tokio::time::timeout(
            Duration::from_secs(5),
            next(&listener, &slots, &mut never, "test", ms),
        )
        .await
        .expect("a freed slot lets the next connection in");
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
