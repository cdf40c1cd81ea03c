//! Config values lifted into the VRRP core's types, once, at the edge. Validation reads every
//! instance through [`VrrpConfig::lift`], so an instance of a config that `parse` returned
//! always lifts: the daemon builds its core from these types and never checks a raw value again.

use std::net::IpAddr;

use duet_vrrp::{AdvertInterval, ChecksumMode, InstanceConfig, Version, Vrid};

use crate::schema::{V3Checksum, VrrpConfig};

/// An instance's settings in the core's types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifted {
    /// 1..=255.
    pub vrid: Vrid,
    /// 2 or 3.
    pub version: Version,
    /// Valid for the version (whole seconds for v2, centiseconds for v3).
    pub advert_interval: AdvertInterval,
    /// How v3 IPv4 checksums are sent.
    pub checksum: ChecksumMode,
}

impl VrrpConfig {
    /// The instance's settings in the core's types, or each value that has none, by key.
    pub fn lift(&self) -> Result<Lifted, Vec<(&'static str, String)>> {
        let mut problems = Vec::new();
        let vrid = Vrid::new(self.vrid);
        if vrid.is_none() {
            problems.push(("vrid", "vrid must be 1..=255".to_string()));
        }
        let version = match self.version {
            2 => Some(Version::V2),
            3 => Some(Version::V3),
            n => {
                problems.push(("version", format!("version must be 2 or 3, got {n}")));
                None
            }
        };
        let interval = version.and_then(|v| {
            AdvertInterval::from_duration(self.advert_interval.0, v)
                .map_err(|e| problems.push(("advert_interval", e)))
                .ok()
        });
        match (vrid, version, interval) {
            (Some(vrid), Some(version), Some(advert_interval)) if problems.is_empty() => {
                Ok(Lifted {
                    vrid,
                    version,
                    advert_interval,
                    checksum: match self.v3_checksum {
                        V3Checksum::PseudoHeader => ChecksumMode::PseudoHeader,
                        V3Checksum::Rfc => ChecksumMode::MessageOnly,
                    },
                })
            }
            _ => Err(problems),
        }
    }

    /// The core's configuration of this instance, advertising from `primary_address`.
    pub fn core_config(&self, lifted: &Lifted, primary_address: IpAddr) -> InstanceConfig {
        InstanceConfig {
            name: self.name.clone(),
            vrid: lifted.vrid,
            version: lifted.version,
            priority: self.priority,
            advert_interval: lifted.advert_interval,
            preempt: self.preempt,
            preempt_delay: self.preempt_delay.0,
            vips: self.vips.iter().map(|v| v.address).collect(),
            primary_address,
        }
    }
}
