//! Connections to backends: connecting (with a PROXY protocol preface when asked), and the
//! per-thread pools of idle keep-alive connections of both HTTP paths (raw TCP streams for the
//! HTTP/1.1 path, hyper senders for the HTTP/2 path).
//!
//! Which request may use a pooled connection is the request policy's decision (the `policy`
//! module, above this one); this module only keeps the connections and says whether one is
//! still open.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use tokio::net::TcpStream;

/// Request and response bodies as they pass through the HTTP/2 path.
pub(crate) type ProxyBody = BoxBody<Bytes, BoxError>;

/// Any body error (the client's stream, the backend's connection).
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An HTTP/1.1 client connection to a backend (the HTTP/2 path's).
pub(crate) type Sender = hyper::client::conn::http1::SendRequest<ProxyBody>;

/// Idle HTTP/2-path connections: per worker thread in a [`Pool`], or per client connection
/// when they carry that client's PROXY header.
pub(crate) type Senders = Mutex<Vec<(SocketAddr, Sender)>>;

/// Idle connections kept per backend and worker thread, for each path.
const IDLE_PER_THREAD: usize = 64;

/// The PROXY protocol preface to send first on a new backend connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Preface {
    pub(crate) version: crate::proxy_protocol::Version,
    /// The client.
    pub(crate) source: SocketAddr,
    /// The address the client connected to.
    pub(crate) destination: SocketAddr,
}

/// Connects to `address` within `timeout`, and writes the PROXY preface first when given.
pub(crate) async fn connect(
    address: SocketAddr,
    timeout: Duration,
    preface: Option<Preface>,
) -> std::io::Result<TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut server = match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Ok(s) => s?,
        Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
    };
    let _ = server.set_nodelay(true);
    if let Some(p) = preface {
        let mut bytes = Vec::with_capacity(64);
        crate::proxy_protocol::encode(p.version, p.source, p.destination, &mut bytes);
        server.write_all(&bytes).await?;
    }
    Ok(server)
}

/// One backend's idle connections, a list per worker thread (uncontended locks).
#[derive(Debug)]
pub(crate) struct Pool {
    streams: Vec<Mutex<Vec<TcpStream>>>,
    senders: Vec<Senders>,
}

impl Pool {
    pub(crate) fn new(threads: usize) -> Pool {
        Pool {
            streams: (0..threads).map(|_| Mutex::new(Vec::new())).collect(),
            senders: (0..threads).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    /// An idle connection of worker `thread` that is still open; closed ones are dropped.
    pub(crate) fn take_open(&self, thread: usize) -> Option<TcpStream> {
        let mut list = self.streams.get(thread)?.lock().ok()?;
        while let Some(s) = list.pop() {
            if still_open(&s) {
                return Some(s);
            }
        }
        None
    }

    /// Keeps `conn` for the next request of worker `thread` (dropped if the list is full).
    pub(crate) fn give(&self, thread: usize, conn: TcpStream) {
        if let Some(Ok(mut idle)) = self.streams.get(thread).map(|m| m.lock())
            && idle.len() < IDLE_PER_THREAD
        {
            idle.push(conn);
        }
    }

    /// A ready HTTP/2-path sender of worker `thread` for `address`.
    pub(crate) fn take_sender(&self, thread: usize, address: SocketAddr) -> Option<Sender> {
        take_sender(self.senders.get(thread)?, address)
    }

    /// Keeps a sender; it takes a request again once its response body has been read.
    pub(crate) fn give_sender(&self, thread: usize, address: SocketAddr, sender: Sender) {
        if let Some(list) = self.senders.get(thread) {
            give_sender(list, address, sender);
        }
    }
}

/// Whether an idle backend connection can take a request: nothing to read (a FIN, a reset or
/// stray bytes all mean it cannot).
pub(crate) fn still_open(s: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(s.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// A ready sender for `address`; closed ones are dropped on the way.
pub(crate) fn take_sender(senders: &Senders, address: SocketAddr) -> Option<Sender> {
    let mut list = senders.lock().ok()?;
    list.retain(|(_, s)| !s.is_closed());
    let i = list
        .iter()
        .position(|(a, s)| *a == address && s.is_ready())?;
    Some(list.swap_remove(i).1)
}

/// Keeps `sender` in `senders` (dropped if the list is full).
pub(crate) fn give_sender(senders: &Senders, address: SocketAddr, sender: Sender) {
    if let Ok(mut list) = senders.lock()
        && list.len() < IDLE_PER_THREAD
    {
        list.push((address, sender));
    }
}
