//! Hands a guest's response to the caller in one piece when the guest
//! finishes it at once.
//!
//! A guest runs on the guest threads, its caller (the proxy's connection,
//! the pod proxy, a service-to-service call) on another thread. Passed on
//! as wasi-http produces it, a small response crossed threads three times
//! or more: once when the guest set its headers, again for every body
//! chunk and once more at the end of the body, each a wake-up of a parked
//! thread, which cost more than instantiating the guest. Most responses are
//! finished within the same run of the guest, so the guest's task keeps the
//! headers and the frames while the guest keeps making progress, and sends
//! the whole response once (with an exact length) when the body ends.
//!
//! A streaming guest is not held back: as soon as one pass over the guest
//! and its body makes no progress (the guest waits for something: a
//! timer, an outbound call, CPU it was throttled from), or the gathered
//! part passes [`MAX_GATHERED_BYTES`] or [`MAX_GATHERED_FRAMES`], the
//! response goes out with what was gathered followed by the rest of the
//! body as it comes.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;

use super::ResponseBody;

/// Most body bytes held back before the response is sent streaming.
pub const MAX_GATHERED_BYTES: usize = 256 * 1024;
/// Most body frames held back (bounds the work of a guest writing empty
/// or tiny chunks while it keeps running).
pub const MAX_GATHERED_FRAMES: usize = 1024;

/// What the guest's outparam delivers.
pub type GuestResponse = Result<hyper::Response<ResponseBody>, ErrorCode>;

/// Where the response stands.
enum State {
    /// The guest has not set its response yet.
    Waiting(oneshot::Receiver<GuestResponse>),
    /// Headers are set; frames are being gathered.
    Gathering {
        parts: hyper::http::response::Parts,
        body: ResponseBody,
        frames: VecDeque<Frame<Bytes>>,
        bytes: usize,
    },
    /// Sent to the caller (or there is nothing to send); only the guest
    /// is left to drive to its end.
    Done,
}

/// Drives `run` (the guest's instantiation and call) to its end and sends
/// the caller its response: gathered whole when the guest finishes it
/// without waiting, else as soon as it waits. If the guest ends without
/// setting a response, `to_caller` is dropped unsent and `run`'s result
/// says why.
pub async fn drive<F: Future>(
    run: F,
    from_guest: oneshot::Receiver<GuestResponse>,
    to_caller: oneshot::Sender<GuestResponse>,
) -> F::Output {
    let mut run = std::pin::pin!(run);
    let mut output: Option<F::Output> = None;
    let mut state = State::Waiting(from_guest);
    let mut to_caller = Some(to_caller);
    std::future::poll_fn(move |cx| {
        loop {
            let mut progressed = false;
            if output.is_none()
                && let Poll::Ready(out) = run.as_mut().poll(cx)
            {
                output = Some(out);
                progressed = true;
            }
            let finished = output.is_some();
            match step(&mut state, cx, finished) {
                Step::Progressed => progressed = true,
                Step::Idle => {}
                Step::Send(resp) => {
                    if let Some(tx) = to_caller.take() {
                        // The caller may have gone (deadline); the guest
                        // still runs to its end below.
                        let _ = tx.send(resp);
                    }
                    state = State::Done;
                    progressed = true;
                }
                Step::Unset => {
                    to_caller = None;
                    state = State::Done;
                }
            }
            if matches!(state, State::Done) {
                if let Some(out) = output.take() {
                    return Poll::Ready(out);
                }
                if !progressed {
                    return Poll::Pending;
                }
                continue;
            }
            if !progressed {
                // Neither the guest nor its body moved: the guest waits on
                // something else, so what it has produced goes out now.
                if let Some(resp) = send(&mut state, Tail::Streaming)
                    && let Some(tx) = to_caller.take()
                {
                    let _ = tx.send(resp);
                }
                if matches!(state, State::Waiting(_)) {
                    return Poll::Pending;
                }
                continue;
            }
        }
    })
    .await
}

enum Step {
    Progressed,
    Idle,
    Send(GuestResponse),
    /// The guest ended and its outparam was dropped unset.
    Unset,
}

fn step(state: &mut State, cx: &mut Context<'_>, finished: bool) -> Step {
    match state {
        State::Done => Step::Idle,
        State::Waiting(rx) => match rx.try_recv() {
            Ok(Ok(resp)) => {
                let (parts, body) = resp.into_parts();
                *state = State::Gathering {
                    parts,
                    body,
                    frames: VecDeque::new(),
                    bytes: 0,
                };
                Step::Progressed
            }
            Ok(Err(code)) => Step::Send(Err(code)),
            Err(oneshot::error::TryRecvError::Empty) if !finished => Step::Idle,
            // Ended without a response (or will never set one: the
            // outparam is gone with the store).
            Err(_) => Step::Unset,
        },
        State::Gathering {
            body,
            frames,
            bytes,
            ..
        } => {
            let mut progressed = false;
            loop {
                if *bytes > MAX_GATHERED_BYTES || frames.len() >= MAX_GATHERED_FRAMES {
                    return send_step(state, Tail::Streaming);
                }
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(data) = frame.data_ref() {
                            *bytes += data.len();
                        }
                        frames.push_back(frame);
                        progressed = true;
                    }
                    Poll::Ready(None) => return send_step(state, Tail::Ended),
                    // An error mid-body: what came before and the error go
                    // to the caller in order.
                    Poll::Ready(Some(Err(e))) => return send_step(state, Tail::Failed(e)),
                    // The guest is gone but its body is not done: whoever
                    // holds the writer finishes it, streaming.
                    Poll::Pending if finished => return send_step(state, Tail::Streaming),
                    Poll::Pending => {
                        return if progressed {
                            Step::Progressed
                        } else {
                            Step::Idle
                        };
                    }
                }
            }
        }
    }
}

/// How the body goes on after the gathered frames.
enum Tail {
    /// The body ended: the response is whole, with its exact length.
    Ended,
    /// The guest is still writing: the rest of its body follows as it
    /// comes.
    Streaming,
    /// The body failed: the error follows the frames that came before it.
    Failed(wasmtime_wasi_http::Error),
}

/// Takes the gathered response out of `state` (leaving `Done`) with the
/// given tail. Any other state is left as it was and nothing is sent.
fn send(state: &mut State, tail: Tail) -> Option<GuestResponse> {
    let taken = std::mem::replace(state, State::Done);
    let State::Gathering {
        parts,
        body,
        frames,
        ..
    } = taken
    else {
        // Waiting or Done: there is no response to send yet.
        *state = taken;
        return None;
    };
    let (rest, error) = match tail {
        Tail::Ended => (None, None),
        Tail::Streaming => (Some(body), None),
        Tail::Failed(e) => (None, Some(e)),
    };
    let body = Gathered {
        frames,
        rest,
        error,
    };
    Some(Ok(hyper::Response::from_parts(
        parts,
        http_body_util::BodyExt::boxed_unsync(body),
    )))
}

fn send_step(state: &mut State, tail: Tail) -> Step {
    match send(state, tail) {
        Some(resp) => Step::Send(resp),
        None => Step::Idle,
    }
}

/// Frames gathered in the guest's task, then (if the guest was still
/// writing) the rest of its body, or the error that ended it.
struct Gathered {
    frames: VecDeque<Frame<Bytes>>,
    rest: Option<ResponseBody>,
    error: Option<wasmtime_wasi_http::Error>,
}

impl Body for Gathered {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(frame) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if let Some(e) = self.error.take() {
            return Poll::Ready(Some(Err(e)));
        }
        match &mut self.rest {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty()
            && self.error.is_none()
            && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let gathered: u64 = self
            .frames
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        match &self.rest {
            // Whole: the exact length, so the server sends Content-Length
            // instead of chunks.
            None if self.error.is_none() => SizeHint::with_exact(gathered),
            None => SizeHint::new(),
            Some(rest) => {
                let r = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(gathered + r.lower());
                if let Some(upper) = r.upper() {
                    hint.set_upper(gathered + upper);
                }
                hint
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::sync::mpsc;

    /// A guest's body as the test writes it.
    struct Channel(mpsc::Receiver<Bytes>);

    impl Body for Channel {
        type Data = Bytes;
        type Error = wasmtime_wasi_http::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    fn response(body: mpsc::Receiver<Bytes>) -> GuestResponse {
        Ok(hyper::Response::new(Channel(body).boxed_unsync()))
    }

    /// A response finished within one run of the guest reaches the caller
    /// whole, with its exact length.
    #[tokio::test]
    async fn a_response_finished_at_once_is_sent_whole() {
        let (set, from_guest) = oneshot::channel();
        let (to_caller, caller) = oneshot::channel();
        let run = async move {
            let (tx, rx) = mpsc::channel(8);
            let _ = set.send(response(rx));
            tx.send(Bytes::from_static(b"hello ")).await.unwrap();
            tx.send(Bytes::from_static(b"world")).await.unwrap();
            7
        };
        assert_eq!(drive(run, from_guest, to_caller).await, 7);
        let resp = caller.await.unwrap().unwrap();
        assert_eq!(resp.body().size_hint().exact(), Some(11));
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hello world");
    }

    /// A guest that waits after its first chunk has its response sent at
    /// once; the rest streams.
    #[tokio::test]
    async fn a_waiting_guest_streams() {
        let (set, from_guest) = oneshot::channel();
        let (to_caller, caller) = oneshot::channel();
        let (go_tx, go_rx) = oneshot::channel::<()>();
        let run = async move {
            let (tx, rx) = mpsc::channel(8);
            let _ = set.send(response(rx));
            tx.send(Bytes::from_static(b"first ")).await.unwrap();
            go_rx.await.unwrap();
            tx.send(Bytes::from_static(b"second")).await.unwrap();
        };
        let task = tokio::spawn(drive(run, from_guest, to_caller));
        // Sent before the guest may go on: it did not wait for the body.
        let resp = tokio::time::timeout(std::time::Duration::from_secs(5), caller)
            .await
            .expect("the response was held back while the guest waited")
            .unwrap()
            .unwrap();
        assert_eq!(resp.body().size_hint().exact(), None);
        go_tx.send(()).unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"first second");
        task.await.unwrap();
    }

    /// A guest that ends without a response leaves the caller's channel
    /// closed, and its own result says why.
    #[tokio::test]
    async fn no_response_closes_the_callers_channel() {
        let (set, from_guest) = oneshot::channel::<GuestResponse>();
        let (to_caller, caller) = oneshot::channel();
        let run = async move {
            drop(set);
            "trapped"
        };
        assert_eq!(drive(run, from_guest, to_caller).await, "trapped");
        assert!(caller.await.is_err());
    }

    /// A guest that answers with an error code passes it on.
    #[tokio::test]
    async fn an_error_code_is_passed_on() {
        let (set, from_guest) = oneshot::channel();
        let (to_caller, caller) = oneshot::channel();
        let run = async move {
            let _ = set.send(Err(ErrorCode::HttpRequestDenied));
        };
        drive(run, from_guest, to_caller).await;
        assert!(matches!(
            caller.await.unwrap(),
            Err(ErrorCode::HttpRequestDenied)
        ));
    }

    /// A guest writing without pause is not gathered past the bound: the
    /// response goes out while it still writes.
    #[tokio::test]
    async fn gathering_is_bounded() {
        let (set, from_guest) = oneshot::channel();
        let (to_caller, caller) = oneshot::channel();
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let total = 64usize;
        let run = {
            let chunk = chunk.clone();
            async move {
                let (tx, rx) = mpsc::channel(total + 1);
                let _ = set.send(response(rx));
                for _ in 0..total {
                    // Never waits: the channel has room for every chunk.
                    tx.send(chunk.clone()).await.unwrap();
                }
            }
        };
        drive(run, from_guest, to_caller).await;
        let resp = caller.await.unwrap().unwrap();
        // Not whole: it was sent past the bound, with the rest behind it.
        assert_eq!(resp.body().size_hint().exact(), None);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), total * chunk.len());
    }
}
