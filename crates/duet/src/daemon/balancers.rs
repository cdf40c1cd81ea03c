//! Load balancers of the node: start them from the config and report their state.

use std::sync::atomic::Ordering;
use std::time::Duration;

use duet_admin::{BackendStatus, BalancerStatus};
use duet_config::{BalancerAlgorithm, BalancerConfig, BalancerMode};
use duet_health::{Algorithm, HealthPolicy};
use duet_proxy::{BackendSpec, BalancerSpec, CheckSpec, Proxy};

/// A running balancer with the config it was started from.
#[derive(Debug)]
pub struct Balancer {
    /// Its configuration.
    pub cfg: BalancerConfig,
    proxy: Proxy,
}

/// Starts every configured balancer; the first failure (e.g. a bind error) stops the start-up.
pub fn start_all(configs: &[BalancerConfig]) -> Result<Vec<Balancer>, String> {
    configs
        .iter()
        .map(|cfg| {
            let access_log =
                match cfg.access_log.as_str() {
                    "off" => None,
                    target => Some(duet_proxy::access_log::AccessLog::open(target).map_err(
                        |e| format!("balancer {:?}: access_log {target}: {e}", cfg.name),
                    )?),
                };
            let proxy = Proxy::start(spec(cfg, access_log))
                .map_err(|e| format!("balancer {:?} on {}: {e}", cfg.name, cfg.bind))?;
            tracing::info!(
                "balancer {}: {} mode on {}, {} backend(s)",
                cfg.name,
                mode_name(cfg.mode),
                proxy.local_addr(),
                cfg.backends.len()
            );
            Ok(Balancer {
                cfg: cfg.clone(),
                proxy,
            })
        })
        .collect()
}

fn spec(
    cfg: &BalancerConfig,
    access_log: Option<duet_proxy::access_log::AccessLog>,
) -> BalancerSpec {
    BalancerSpec {
        name: cfg.name.clone(),
        mode: match cfg.mode {
            BalancerMode::Tcp => duet_proxy::Mode::Tcp,
            BalancerMode::Http => duet_proxy::Mode::Http,
        },
        http_timeouts: duet_proxy::HttpTimeouts {
            idle: cfg.timeouts.idle.0,
            client: cfg.timeouts.client.0,
            server: cfg.timeouts.server.0,
        },
        bind: cfg.bind,
        algorithm: match cfg.algorithm {
            BalancerAlgorithm::Roundrobin => Algorithm::RoundRobin,
            BalancerAlgorithm::Leastconn => Algorithm::LeastConn,
            BalancerAlgorithm::Random => Algorithm::Random,
            BalancerAlgorithm::Hash => Algorithm::Hash,
        },
        backends: cfg
            .backends
            .iter()
            .map(|b| BackendSpec {
                address: b.address,
                weight: b.weight,
            })
            .collect(),
        health: HealthPolicy {
            rise: cfg.check.as_ref().map_or(2, |c| c.rise),
            fall: cfg.check.as_ref().map_or(3, |c| c.fall),
            active_checks: cfg.check.is_some(),
            passive_failures: cfg.passive.failures,
            passive_cooldown: cfg.passive.cooldown.0,
            slow_start: cfg.slow_start.0,
        },
        check: cfg.check.as_ref().map(|c| CheckSpec {
            interval: c.interval.0,
            timeout: c.timeout.0,
            path: c.path.clone(),
            expect: c.expect_range().unwrap_or((200, 399)),
        }),
        connect_timeout: cfg.timeouts.connect.0,
        retries: cfg.retries,
        threads: 0,
        accept_proxy: cfg.proxy_protocol.accept,
        sticky_cookie: cfg.sticky.as_ref().map(|s| s.cookie.clone()),
        limits: duet_proxy::h1::Limits {
            max_head_bytes: cfg.max_header_bytes as usize,
        },
        access_log,
        send_proxy: match cfg.proxy_protocol.send {
            duet_config::ProxySend::Off => None,
            duet_config::ProxySend::V1 => Some(duet_proxy::proxy_protocol::Version::V1),
            duet_config::ProxySend::V2 => Some(duet_proxy::proxy_protocol::Version::V2),
        },
    }
}

/// The status of every balancer.
pub fn status(balancers: &[Balancer]) -> Vec<BalancerStatus> {
    balancers
        .iter()
        .map(|b| {
            let stats = b.proxy.stats();
            BalancerStatus {
                name: b.cfg.name.clone(),
                bind: b.proxy.local_addr().to_string(),
                mode: mode_name(b.cfg.mode).into(),
                client_errors: stats.client_errors.load(Ordering::Relaxed),
                backends: b
                    .cfg
                    .backends
                    .iter()
                    .zip(&stats.backends)
                    .map(|(cfg, s)| BackendStatus {
                        address: cfg.address.to_string(),
                        up: s.up.load(Ordering::Relaxed),
                        weight: cfg.weight,
                        connections: s.connections.load(Ordering::Relaxed),
                        connect_errors: s.connect_errors.load(Ordering::Relaxed),
                        active: s.active.load(Ordering::Relaxed),
                    })
                    .collect(),
            }
        })
        .collect()
}

/// How often the status snapshot is refreshed when nothing else happens.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);

fn mode_name(mode: BalancerMode) -> &'static str {
    match mode {
        BalancerMode::Tcp => "tcp",
        BalancerMode::Http => "http",
    }
}
