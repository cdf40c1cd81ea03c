//! Builds the admin API snapshot from the running instances.

use duet_admin::{Status, VrrpCounters, VrrpStatus};
use duet_time::Instant;
use duet_vrrp::{DropReason, TrackerReading};

use super::instance::Inst;
use super::readings::Readings;
use super::vips::VipManager;

/// The `GET /v1/status` document.
pub fn status(
    node: &str,
    started: Instant,
    now: Instant,
    instances: &[Inst],
    readings: &Readings,
    vips: &VipManager,
    unmatched_drops: &[u64; DropReason::ALL.len()],
) -> Status {
    let by_reason = |count: &dyn Fn(DropReason) -> u64| {
        DropReason::ALL
            .iter()
            .filter(|r| count(**r) > 0)
            .map(|r| (r.label().to_string(), count(*r)))
            .collect()
    };
    let vrrp = instances
        .iter()
        .map(|i| {
            let stats = i.core.stats();
            let trackers = readings
                .trackers_of(&i.cfg)
                .into_iter()
                .map(|t| {
                    let v = match t.reading {
                        TrackerReading::Health(Some(true)) => "up".to_string(),
                        TrackerReading::Health(Some(false)) => "down".to_string(),
                        TrackerReading::Health(None) => "unknown".to_string(),
                        TrackerReading::Value(v) => v.to_string(),
                    };
                    (t.name, v)
                })
                .collect();
            VrrpStatus {
                name: i.cfg.name.clone(),
                state: i.core.state().as_str().to_string(),
                priority: i.cfg.priority,
                effective_priority: i.core.effective_priority(),
                vips: i.cfg.vips.iter().map(ToString::to_string).collect(),
                interface: i.cfg.interface.clone(),
                vrid: i.cfg.vrid,
                version: i.cfg.version,
                advert_interval_ms: i.cfg.advert_interval.0.as_millis() as u64,
                master: i.core.master().map(|m| m.address.to_string()),
                fault: i.core.fault().map(str::to_string),
                vips_held: vips.held_of(&i.cfg.interface, &i.cfg.vips),
                veto: i.core.veto().map(str::to_string),
                reason: i.last_reason.clone(),
                in_state_seconds: now.saturating_since(i.since).as_secs_f64(),
                master_seconds: (i.master_before
                    + if i.core.state() == duet_vrrp::State::Master {
                        now.saturating_since(i.since)
                    } else {
                        std::time::Duration::ZERO
                    })
                .as_secs_f64(),
                trackers,
                counters: VrrpCounters {
                    adverts_received: stats.adverts_received,
                    adverts_sent: stats.adverts_sent,
                    priority_zero_received: stats.priority_zero_received,
                    priority_zero_sent: stats.priority_zero_sent,
                    became_master: stats.became_master,
                    dropped: by_reason(&|r| stats.drops(r)),
                },
            }
        })
        .collect();
    Status {
        node: node.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_seconds: now.saturating_since(started).as_secs_f64(),
        vrrp,
        unmatched_drops: by_reason(&|r| unmatched_drops[r.index()]),
        balancers: Vec::new(),
        cluster: None,
        database: None,
        inputs_dropped: 0,
        maintenance: None,
        services: Vec::new(),
    }
}
