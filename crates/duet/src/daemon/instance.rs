//! One VRRP instance as the daemon runs it: the pure core plus what the shell resolved for it
//! (interface index, source address, MAC) and the shell-side timers (GARP bursts).

use std::net::IpAddr;

use duet_config::{GarpConfig, VrrpConfig};
use duet_sys::Netlink;
use duet_time::Instant;
use duet_vrrp::{Advert, ChecksumMode, Family, Instance, TrackedHealth};

/// Sockets are shared by every instance on one interface and family.
pub type SocketKey = (u32, Family);

/// A running instance.
#[derive(Debug)]
pub struct Inst {
    /// Its configuration as written.
    pub cfg: VrrpConfig,
    /// The state machine.
    pub core: Instance,
    /// Interface index.
    pub ifindex: u32,
    /// Source address of adverts.
    pub source: IpAddr,
    /// Which socket it uses.
    pub key: SocketKey,
    /// How v3 IPv4 checksums are sent.
    pub checksum: ChecksumMode,
    /// Reason of the last transition.
    pub last_reason: String,
    /// When the last transition happened.
    pub since: Instant,
    /// Time spent MASTER before the current stretch (the availability counter).
    pub master_before: std::time::Duration,
    /// Gratuitous ARP / unsolicited NA for its VIPs.
    pub garp: GarpBurst,
    /// A peer was last heard (heartbeat) claiming this instance while this node is MASTER.
    pub peer_claims: bool,
    /// The kernel refused this instance's VIPs: it stays in FAULT until `retry_at`.
    pub vip_fault: Option<VipFault>,
    /// VIP failures in a row (the retry backoff doubles with each).
    pub vip_failures: u32,
}

/// Gratuitous ARP / unsolicited NA for one instance's VIPs: a burst of `garp.count`
/// announcements `garp.interval` apart when it takes over (and again whenever the LAN may have
/// learned another MAC), repeated every `garp.refresh` while it stays MASTER. Every change goes
/// through here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GarpBurst {
    /// Next announcement of the current burst and how many remain.
    next: Option<(Instant, u32)>,
    /// Next periodic burst.
    refresh_at: Option<Instant>,
}

impl GarpBurst {
    /// Starts a burst now (none when the count is 0).
    pub fn burst(&mut self, now: Instant, cfg: &GarpConfig) {
        if cfg.count > 0 {
            self.next = Some((now, cfg.count));
        }
    }

    /// Became MASTER: a burst now, and the periodic ones from now on.
    pub fn take_over(&mut self, now: Instant, cfg: &GarpConfig) {
        self.burst(now, cfg);
        let refresh = cfg.refresh.0;
        self.refresh_at = (!refresh.is_zero()).then(|| now + refresh);
    }

    /// No longer MASTER: no more announcements.
    pub fn stop(&mut self) {
        *self = GarpBurst::default();
    }

    /// Whether an announcement is due now; if so, counts it and schedules the next.
    pub fn due(&mut self, now: Instant, cfg: &GarpConfig) -> bool {
        if self.refresh_at.is_some_and(|t| t <= now) {
            self.refresh_at = Some(now + cfg.refresh.0);
            self.burst(now, cfg);
        }
        match self.next {
            Some((at, remaining)) if at <= now => {
                self.next = (remaining > 1).then(|| (now + cfg.interval.0, remaining - 1));
                true
            }
            _ => false,
        }
    }

    /// When [`GarpBurst::due`] must next be asked.
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.next.map(|(at, _)| at), self.refresh_at]
            .into_iter()
            .flatten()
            .min()
    }
}

/// Why an instance cannot hold its VIPs, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipFault {
    /// What the kernel said.
    pub message: String,
    /// A missing privilege: the retry only happens once the capability is there.
    pub permission: bool,
    /// When to try again.
    pub retry_at: Instant,
}

/// The first retry after a VIP failure; it doubles with each failure in a row.
const VIP_RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
/// The longest wait between retries.
const VIP_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(60);

impl Inst {
    /// Resolves the interface and source address and builds the core.
    pub fn new(
        nl: &Netlink,
        cfg: &VrrpConfig,
        all_vips: &[IpAddr],
        now: Instant,
    ) -> Result<Inst, String> {
        let link = nl
            .link(&cfg.interface)
            .map_err(|e| format!("vrrp {:?}: interface {}: {e}", cfg.name, cfg.interface))?;
        let family = Family::of(&cfg.vips[0].address);
        let source = match cfg.source {
            Some(s) => s,
            None => pick_source(nl, link.index, family, all_vips).ok_or_else(|| {
                format!(
                    "vrrp {:?}: {} has no {} address to send adverts from; add one or set `source`",
                    cfg.name,
                    cfg.interface,
                    match family {
                        Family::V4 => "IPv4",
                        Family::V6 => "IPv6 link-local",
                    }
                )
            })?,
        };
        // Validation lifted this very instance: on a parsed config this cannot fail.
        let lifted = cfg.lift().map_err(|problems| {
            let all: Vec<String> = problems.into_iter().map(|(_, m)| m).collect();
            format!("vrrp {:?}: {}", cfg.name, all.join("; "))
        })?;
        let core_cfg = cfg.core_config(&lifted, source);
        Ok(Inst {
            cfg: cfg.clone(),
            core: Instance::new(core_cfg),
            ifindex: link.index,
            source,
            key: (link.index, family),
            checksum: lifted.checksum,
            last_reason: String::new(),
            since: now,
            master_before: std::time::Duration::ZERO,
            garp: GarpBurst::default(),
            peer_claims: false,
            vip_fault: None,
            vip_failures: 0,
        })
    }

    /// The kernel refused this instance's VIPs: FAULT (which releases MASTER, so the peer can
    /// serve, and removes whatever was added), with the reason in the log, the status and the
    /// notify hooks, and a retry after a backoff that doubles up to a minute.
    pub fn fail_vips(&mut self, now: Instant, message: String, permission: bool) {
        self.hold_vips(now, message, permission);
        if let Some(f) = &self.vip_fault {
            tracing::error!(
                "{}: {}; FAULT, next try in {}",
                self.cfg.name,
                f.message,
                duet_time::format_duration(self.vip_backoff())
            );
        }
        let health = self.with_vip_fault(self.core.tracking().clone());
        self.core.set_tracking(now, health);
    }

    /// Records that the VIPs cannot be held, for `message`, with the next try after the
    /// backoff (the core is told by the caller, through [`Inst::with_vip_fault`]).
    pub fn hold_vips(&mut self, now: Instant, message: String, permission: bool) {
        self.vip_failures = self.vip_failures.saturating_add(1);
        self.vip_fault = Some(VipFault {
            message,
            permission,
            retry_at: now + self.vip_backoff(),
        });
    }

    /// `health` (the trackers' verdict) with the VIP fault on top: an instance that cannot
    /// hold its VIPs is in FAULT whatever the trackers say.
    pub fn with_vip_fault(&self, mut health: TrackedHealth) -> TrackedHealth {
        if let Some(f) = &self.vip_fault {
            health.fault = Some(f.message.clone());
        }
        health
    }

    /// The wait before the next retry after the failures so far.
    pub fn vip_backoff(&self) -> std::time::Duration {
        let doublings = self.vip_failures.saturating_sub(1).min(6);
        (VIP_RETRY_FIRST * 2u32.pow(doublings)).min(VIP_RETRY_MAX)
    }

    /// Where adverts go: the configured unicast peers, or the multicast group.
    pub fn destinations(&self) -> Vec<IpAddr> {
        if self.cfg.unicast_peers.is_empty() {
            vec![self.key.1.multicast_group()]
        } else {
            self.cfg.unicast_peers.clone()
        }
    }

    /// The wire bytes of `advert` for each destination.
    pub fn encode(&self, advert: &Advert) -> Vec<(IpAddr, Vec<u8>)> {
        self.destinations()
            .into_iter()
            .map(|dst| (dst, advert.to_bytes(self.source, dst, self.checksum)))
            .collect()
    }

    /// The priority-0 advert the guardian sends for us if the daemon dies while master.
    pub fn goodbye(&self) -> Advert {
        let c = self.core.config();
        Advert {
            version: c.version,
            vrid: c.vrid,
            priority: 0,
            interval: c.advert_interval,
            addresses: c.vips.clone(),
        }
    }
}

/// The interface's first IPv4 address that is not a VIP, or its IPv6 link-local address.
fn pick_source(nl: &Netlink, index: u32, family: Family, vips: &[IpAddr]) -> Option<IpAddr> {
    let addrs = nl.addresses(index).ok()?;
    addrs
        .iter()
        .filter(|a| !vips.contains(&a.address))
        .find(|a| match (family, a.address) {
            (Family::V4, IpAddr::V4(_)) => a.valid_lifetime.is_none(),
            (Family::V6, IpAddr::V6(v6)) => v6.segments()[0] & 0xffc0 == 0xfe80,
            _ => false,
        })
        .map(|a| a.address)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Instant {
        Instant::from_nanos(n * 1_000_000)
    }

    #[test]
    fn a_burst_counts_down_and_refreshes_until_stopped() {
        let cfg = GarpConfig {
            count: 3,
            interval: duet_config::Dur(std::time::Duration::from_millis(10)),
            refresh: duet_config::Dur(std::time::Duration::from_secs(1)),
        };
        let mut g = GarpBurst::default();
        assert_eq!(g.next_deadline(), None);
        g.take_over(ms(0), &cfg);
        let mut sent = Vec::new();
        for t in 0..100 {
            if g.due(ms(t), &cfg) {
                sent.push(t);
            }
        }
        assert_eq!(sent, [0, 10, 20], "three, 10 ms apart");
        assert_eq!(g.next_deadline(), Some(ms(1000)), "then the refresh");
        assert!(g.due(ms(1000), &cfg));
        g.stop();
        assert_eq!(g.next_deadline(), None);
        assert!(!g.due(ms(5000), &cfg));
        // A count of 0 sends nothing, even when a burst is asked for.
        let silent = GarpConfig { count: 0, ..cfg };
        g.burst(ms(0), &silent);
        assert!(!g.due(ms(0), &silent));
    }
}
