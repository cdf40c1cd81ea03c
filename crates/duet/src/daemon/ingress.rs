//! Packet ingress: the readers of the VRRP sockets and of the heartbeat and witness sockets.
//! They run on the control runtime and hand datagrams to the control loop's bounded inbox.
//!
//! A reader never monopolises the runtime: it yields after every [`YIELD_EVERY`] datagrams, so
//! under a flood the control loop still runs its timers (adverts, heartbeats) on time, and
//! what does not fit in the inbox is dropped and counted there.

use std::sync::Arc;
use std::time::Duration;

use duet_cluster::member::Via;
use duet_sys::VrrpSocket;
use tokio::net::UdpSocket;

use super::input::{Clock, Inbox, Input};
use super::instance::SocketKey;

/// Datagrams a reader takes before it lets the control loop run.
pub const YIELD_EVERY: usize = 32;

/// Reads the VRRP socket of `key` until the control loop goes away.
pub async fn read_vrrp(key: SocketKey, sock: Arc<VrrpSocket>, clock: Clock, inbox: Inbox) {
    let fd = match duet_sys::vrrp_socket::register_rx(sock.clone()) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::error!("VRRP socket: {e}");
            return;
        }
    };
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok(mut guard) = fd.readable().await else {
            return;
        };
        let mut taken = 0usize;
        loop {
            match sock.recv(&mut buf) {
                Ok(r) => {
                    let input = Input::Packet {
                        key,
                        at: clock.now(),
                        src: r.src,
                        dst: r.dst,
                        hop_limit: r.hop_limit,
                        bytes: buf[r.offset..r.offset + r.len].to_vec(),
                    };
                    if inbox.offer(input).is_err() {
                        return;
                    }
                    taken += 1;
                    if taken.is_multiple_of(YIELD_EVERY) {
                        tokio::task::yield_now().await;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    guard.clear_ready();
                    break;
                }
                Err(e) => tracing::debug!("VRRP receive: {e}"),
            }
        }
    }
}

/// Reads a heartbeat link's or the witness's socket until the control loop goes away.
pub async fn read_cluster(socket: Arc<UdpSocket>, via: Via, inbox: Inbox) {
    let mut buf = vec![0u8; 2048];
    let mut taken = 0usize;
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let input = Input::Cluster {
                    via,
                    from,
                    bytes: buf[..n].to_vec(),
                };
                if inbox.offer(input).is_err() {
                    return;
                }
                taken += 1;
                if taken.is_multiple_of(YIELD_EVERY) {
                    tokio::task::yield_now().await;
                }
            }
            Err(e) => {
                tracing::debug!("cluster socket: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
