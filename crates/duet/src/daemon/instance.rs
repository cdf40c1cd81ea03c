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
}

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
        })
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
