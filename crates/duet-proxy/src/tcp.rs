//! TCP mode: one backend connection per client connection, bytes copied both ways; a connect
//! that fails is retried on another backend.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use duet_health::Outcome;
use tokio::net::TcpStream;

use crate::backends::{NoPick, Shared};
use crate::balancer::Balancer;
use crate::spec::HashKey;

pub(crate) async fn forward_tcp(
    mut client: TcpStream,
    peer: SocketAddr,
    initial: Vec<u8>,
    shared: &Shared,
    inner: &Balancer,
    thread: usize,
) {
    use tokio::io::AsyncWriteExt;
    let key = match shared.spec.hash_key {
        HashKey::Source => crate::backends::hash_ip(peer.ip()),
        _ => crate::backends::random_bits(),
    };
    let local = client.local_addr().ok();
    let mut tried = Vec::new();
    for _attempt in 0..=shared.spec.retries {
        let lease = match shared.pick(thread, 0, key, &tried).await {
            Ok(l) => l,
            Err(NoPick::Full | NoPick::Unavailable) => break,
        };
        tried.push(lease.index);
        let backend = lease.backend;
        let Ok(mut server) = shared.connect(backend, peer, local).await else {
            backend.record(&inner.name, Outcome::ConnectFailed);
            continue;
        };
        if !initial.is_empty() && server.write_all(&initial).await.is_err() {
            backend.record(&inner.name, Outcome::Reset);
            continue;
        }
        backend.record(&inner.name, Outcome::Success);
        backend.stats.connections.fetch_add(1, Ordering::Relaxed);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        return;
    }
    inner.client_errors.fetch_add(1, Ordering::Relaxed);
}
