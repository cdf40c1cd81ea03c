//! One VRRP instance as the daemon runs it: the pure core plus what the shell resolved for it
//! (interface index, source address, MAC) and the shell-side timers (GARP bursts).

use std::net::IpAddr;

use duet_config::{V3Checksum, VrrpConfig};
use duet_sys::Netlink;
use duet_time::Instant;
use duet_vrrp::{
    Advert, AdvertInterval, ChecksumMode, Family, Instance, InstanceConfig, Version, Vrid,
};

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
    pub since: std::time::Instant,
    /// Next GARP of the current burst and how many remain.
    pub garp: Option<(Instant, u32)>,
    /// Next periodic GARP burst while master.
    pub garp_refresh: Option<Instant>,
    /// A peer was last heard (heartbeat) claiming this instance while this node is MASTER.
    pub peer_claims: bool,
    /// The kernel refused this instance's VIPs: it stays in FAULT until `retry_at`.
    pub vip_fault: Option<VipFault>,
    /// VIP failures in a row (the retry backoff doubles with each).
    pub vip_failures: u32,
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
    pub fn new(nl: &Netlink, cfg: &VrrpConfig, all_vips: &[IpAddr]) -> Result<Inst, String> {
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
        let version = if cfg.version == 2 {
            Version::V2
        } else {
            Version::V3
        };
        let core_cfg = InstanceConfig {
            name: cfg.name.clone(),
            vrid: Vrid::new(cfg.vrid).ok_or("vrid 0")?,
            version,
            priority: cfg.priority,
            advert_interval: AdvertInterval::from_duration(cfg.advert_interval.0, version)?,
            preempt: cfg.preempt,
            preempt_delay: cfg.preempt_delay.0,
            vips: cfg.vips.iter().map(|v| v.address).collect(),
            primary_address: source,
        };
        Ok(Inst {
            cfg: cfg.clone(),
            core: Instance::new(core_cfg),
            ifindex: link.index,
            source,
            key: (link.index, family),
            checksum: match cfg.v3_checksum {
                V3Checksum::PseudoHeader => ChecksumMode::PseudoHeader,
                V3Checksum::Rfc => ChecksumMode::MessageOnly,
            },
            last_reason: String::new(),
            since: std::time::Instant::now(),
            garp: None,
            garp_refresh: None,
            peer_claims: false,
            vip_fault: None,
            vip_failures: 0,
        })
    }

    /// The kernel refused this instance's VIPs: FAULT (which releases MASTER, so the peer can
    /// serve, and removes whatever was added), with the reason in the log, the status and the
    /// notify hooks, and a retry after a backoff that doubles up to a minute.
    pub fn fail_vips(&mut self, now: Instant, message: String, permission: bool) {
        self.vip_failures = self.vip_failures.saturating_add(1);
        let backoff = self.vip_backoff();
        tracing::error!(
            "{}: {message}; FAULT, next try in {}",
            self.cfg.name,
            duet_time::format_duration(backoff)
        );
        self.vip_fault = Some(VipFault {
            message: message.clone(),
            permission,
            retry_at: now + backoff,
        });
        let mut health = self.core.tracking().clone();
        health.fault = Some(message);
        self.core.set_tracking(now, health);
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
