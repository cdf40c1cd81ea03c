//! `GET /v1/events` as Server-Sent Events: each event as `id:`, `event:` (its type) and
//! `data:` (its JSON), resumable with `Last-Event-ID`.
//!
//! One task per client feeds a small channel that the response body drains. A client that
//! reads slowly stalls only its own task; its subscription then falls behind, and the task
//! fills the gap from the kept events, or says `event: gap` with how many it lost (counted
//! as dropped by the `sse` consumer). A client that takes nothing for [`STUCK`] is cut off,
//! and the events it did not get are counted as dropped; it may resume with its last id.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Bytes, Frame};
use tokio::sync::{broadcast, mpsc};

use crate::events::{Event, Events, Since};

/// Streams open at once, at most; more are refused (503).
pub const MAX_STREAMS: usize = 64;

/// A comment line this often keeps proxies and idle timeouts from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// A client that takes no data for this long is cut off.
pub const STUCK: Duration = Duration::from_secs(5);

/// A response body fed by a channel.
#[derive(Debug)]
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// Counts open streams; the count drops when the stream's task ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Takes a stream slot, or `None` when [`MAX_STREAMS`] are open.
pub fn slot(open: &Arc<AtomicUsize>) -> Option<impl Send + 'static> {
    let n = open.fetch_add(1, Ordering::SeqCst);
    let slot = Slot(open.clone());
    (n < MAX_STREAMS).then_some(slot)
}

/// Starts a client's stream: the events after `last_id` (a `Last-Event-ID`), or only new
/// ones without it; `slot` is held until the stream ends, and `streaming` (which exempts the
/// connection from the admin server's connection time limit) is cleared then.
pub fn start(
    events: Arc<Events>,
    last_id: Option<String>,
    slot: impl Send + 'static,
    streaming: Arc<std::sync::atomic::AtomicBool>,
) -> ChannelBody {
    let (tx, rx) = mpsc::channel(16);
    // Subscribed before the kept events are read, so nothing falls between the two.
    let sub = events.subscribe();
    let first = match last_id {
        Some(id) => events.resume(&id),
        None => Since::Kept(Vec::new()),
    };
    tokio::spawn(async move {
        let _slot = slot;
        let mut last = 0;
        if let Err(Stuck) = feed(&events, sub, first, &tx, &mut last).await {
            // Everything after what it got is lost to it (it may resume from its last id).
            events.dropped("sse", events.newest().saturating_sub(last));
        }
        streaming.store(false, Ordering::Relaxed);
    });
    ChannelBody { rx }
}

/// Why a stream ended early.
enum Ended {
    /// The client went away.
    Gone,
    /// The client took nothing for [`STUCK`].
    Stuck,
}
use Ended::Stuck;

/// Writes to the client until it goes away or gets stuck; `last` is the number of the last
/// event it was given.
async fn feed(
    events: &Events,
    mut sub: broadcast::Receiver<Arc<Event>>,
    first: Since,
    tx: &mpsc::Sender<Bytes>,
    last: &mut u64,
) -> Result<(), Ended> {
    let send = |b: Bytes| async move {
        match tokio::time::timeout(STUCK, tx.send(b)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Ended::Gone),
            Err(_) => Err(Stuck),
        }
    };
    send(Bytes::from_static(b"retry: 1000\n\n")).await?;
    let mut catch_up = first;
    loop {
        let (kept, missed) = match catch_up {
            Since::Kept(v) => (v, None),
            Since::Gap { events, missed } => (events, Some(missed)),
        };
        if let Some(missed) = missed {
            events.dropped("sse", missed);
            let data = serde_json::json!({ "missed": missed });
            send(Bytes::from(format!("event: gap\ndata: {data}\n\n"))).await?;
        }
        for e in kept {
            if e.seq > *last {
                send(frame(events, &e)).await?;
                *last = e.seq;
            }
        }
        // Then live events, until the subscription falls behind.
        loop {
            let next = tokio::select! {
                r = sub.recv() => r,
                () = tokio::time::sleep(KEEP_ALIVE) => {
                    send(Bytes::from_static(b": keep-alive\n\n")).await?;
                    continue;
                }
                () = tx.closed() => return Err(Ended::Gone),
            };
            match next {
                Ok(e) if e.seq > *last => {
                    send(frame(events, &e)).await?;
                    *last = e.seq;
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => break,
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            }
        }
        catch_up = events.after(*last);
    }
}

/// One event in SSE form.
fn frame(events: &Events, e: &Event) -> Bytes {
    let data = serde_json::to_string(e).unwrap_or_default();
    Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {data}\n\n",
        events.id(e),
        e.kind.name()
    ))
}
