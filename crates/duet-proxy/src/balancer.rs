//! A balancer for as long as it runs: its current configuration snapshot (swapped on reload),
//! the stop signal its worker threads wait on, and the counters that outlive snapshots.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use crate::backends::Shared;

/// A balancer for as long as it runs, across reloads.
pub(crate) struct Balancer {
    pub(crate) name: String,
    /// The bound address of the main listener (the real port, also when 0 was asked for).
    pub(crate) local: SocketAddr,
    /// Worker threads.
    pub(crate) threads: usize,
    current: RwLock<Arc<Shared>>,
    generation: AtomicU64,
    /// Requests or connections that got no backend.
    pub(crate) client_errors: AtomicU64,
    /// Set by [`Balancer::stop`]; read on every request, so a plain atomic.
    stopping: AtomicBool,
    /// Wakes a worker thread's waiters (accept loop, idle connections) at stop; one per
    /// thread, so waiting never touches another thread's lock.
    stop_signals: Vec<tokio::sync::Notify>,
    /// Client connections open now.
    live: AtomicUsize,
}

impl Balancer {
    /// A balancer serving `shared` (generation 0) on `threads` worker threads.
    pub(crate) fn new(name: String, local: SocketAddr, threads: usize, shared: Shared) -> Balancer {
        Balancer {
            name,
            local,
            threads,
            generation: AtomicU64::new(shared.generation),
            current: RwLock::new(Arc::new(shared)),
            client_errors: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            stop_signals: (0..threads).map(|_| tokio::sync::Notify::new()).collect(),
            live: AtomicUsize::new(0),
        }
    }

    /// Makes `next` the current snapshot: new requests use it, requests in flight finish with
    /// the one they started with.
    pub(crate) fn replace(&self, next: Shared) {
        let generation = next.generation;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        self.generation.store(generation, Ordering::Release);
    }

    /// Stops accepting and wakes every idle connection so it closes.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for signal in &self.stop_signals {
            signal.notify_waiters();
        }
    }

    /// Client connections open now.
    pub(crate) fn open_connections(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// The current snapshot.
    pub(crate) fn snapshot(&self) -> Arc<Shared> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Moves `shared` to the current snapshot if a reload happened (one atomic load if not).
    pub(crate) fn refresh(&self, shared: &mut Arc<Shared>) {
        if self.generation.load(Ordering::Acquire) != shared.generation {
            *shared = self.snapshot();
        }
    }

    /// Resolves when the balancer is stopped; `thread` is the caller's worker thread.
    pub(crate) async fn stopped(&self, thread: usize) {
        let notified = self.stop_signals[thread].notified();
        let mut notified = std::pin::pin!(notified);
        // Registered before the flag is read: a stop in between still wakes it.
        notified.as_mut().enable();
        if self.is_stopped() {
            return;
        }
        notified.await;
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }
}

/// Counts a client connection while it lives.
pub(crate) struct Live<'a>(&'a Balancer);

impl<'a> Live<'a> {
    pub(crate) fn new(b: &'a Balancer) -> Live<'a> {
        b.live.fetch_add(1, Ordering::Relaxed);
        Live(b)
    }
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Relaxed);
    }
}
