//! Load balancers of the node: start them from the config and report their state.

use std::sync::atomic::Ordering;

use duet_admin::{BackendStatus, BalancerStatus};
use duet_config::{BalancerAlgorithm, BalancerConfig, BalancerMode};
use duet_health::{Algorithm, HealthPolicy};
use duet_proxy::{BackendSpec, BalancerSpec, CheckSpec, Proxy, ReloadError};

/// A running balancer with the config it runs (clones share the running proxy).
#[derive(Debug, Clone)]
pub struct Balancer {
    /// Its configuration.
    pub cfg: BalancerConfig,
    proxy: Proxy,
}

fn open_log(cfg: &BalancerConfig) -> Result<Option<duet_proxy::access_log::AccessLog>, String> {
    match cfg.access_log.as_str() {
        "off" => Ok(None),
        target => duet_proxy::access_log::AccessLog::open(target)
            .map(Some)
            .map_err(|e| format!("balancer {:?}: access_log {target}: {e}", cfg.name)),
    }
}

fn start(cfg: &BalancerConfig) -> Result<Balancer, String> {
    let proxy = Proxy::start(spec(cfg, open_log(cfg)?))
        .map_err(|e| format!("balancer {:?} on {}: {e}", cfg.name, cfg.bind))?;
    tracing::info!(
        "balancer {}: {} mode on {}, {} backend(s)",
        cfg.name,
        mode_name(cfg.mode),
        proxy.local_addr(),
        cfg.backends.len() + cfg.route.iter().map(|r| r.backends.len()).sum::<usize>()
    );
    Ok(Balancer {
        cfg: cfg.clone(),
        proxy,
    })
}

/// Starts every configured balancer; the first failure (e.g. a bind error) stops the start-up.
pub fn start_all(configs: &[BalancerConfig]) -> Result<Vec<Balancer>, String> {
    configs.iter().map(start).collect()
}

/// Applies a reloaded configuration: balancers keep running and take the new settings in
/// place where they can (certificates are re-read every time); a changed listen address or mode
/// starts a new listener and drains the old one; removed balancers drain and stop. A balancer
/// whose new settings fail keeps its old ones; the errors are returned.
pub fn reload_all(running: &mut Vec<Balancer>, configs: &[BalancerConfig]) -> Vec<String> {
    let mut errors = Vec::new();
    let mut next = Vec::with_capacity(configs.len());
    let mut old: Vec<Balancer> = std::mem::take(running);
    for cfg in configs {
        let Some(at) = old.iter().position(|b| b.cfg.name == cfg.name) else {
            match start(cfg) {
                Ok(b) => next.push(b),
                Err(e) => errors.push(e),
            }
            continue;
        };
        let mut b = old.swap_remove(at);
        let log = match open_log(cfg) {
            Ok(l) => l,
            Err(e) => {
                errors.push(e);
                next.push(b);
                continue;
            }
        };
        match b.proxy.reload(spec(cfg, log)) {
            Ok(()) => {
                b.cfg = cfg.clone();
                next.push(b);
            }
            Err(ReloadError::NeedsRestart) => match start(cfg) {
                Ok(fresh) => {
                    b.proxy.stop();
                    next.push(fresh);
                }
                Err(e) => {
                    errors.push(e);
                    next.push(b);
                }
            },
            Err(ReloadError::Invalid(e)) => {
                errors.push(format!(
                    "balancer {:?}: {e}; keeping its running configuration",
                    cfg.name
                ));
                next.push(b);
            }
        }
    }
    for gone in old {
        tracing::info!(
            "balancer {}: removed from the config, draining",
            gone.cfg.name
        );
        gone.proxy.stop();
    }
    *running = next;
    errors
}

/// The TLS settings of a balancer, as the proxy takes them.
pub fn tls_spec(cfg: &BalancerConfig) -> Option<duet_proxy::TlsSpec> {
    cfg.tls.as_ref().map(|t| duet_proxy::TlsSpec {
        certificates: t
            .certificates
            .iter()
            .map(|c| duet_proxy::CertPaths {
                cert: c.cert.clone(),
                key: c.key.clone(),
            })
            .collect(),
        hsts: t.hsts.map(|d| d.0),
        redirect_from: t.redirect_from,
        http2: t.http2,
    })
}

/// Drains (`drain`) or re-enables a backend of balancer `name`.
pub fn set_draining(
    running: &[Balancer],
    name: &str,
    backend: &str,
    drain: bool,
) -> Result<String, duet_admin::ActionError> {
    let err = |status, message| duet_admin::ActionError { status, message };
    let b = running
        .iter()
        .find(|b| b.cfg.name == name)
        .ok_or_else(|| err(404, format!("no balancer named {name:?}")))?;
    let address: std::net::SocketAddr = backend
        .parse()
        .map_err(|_| err(400, format!("{backend:?} is not an ip:port address")))?;
    b.proxy
        .set_draining(address, drain)
        .map_err(|e| err(404, e))?;
    let what = if drain { "draining" } else { "enabled" };
    tracing::info!("balancer {name}: backend {address} {what} by the operator");
    Ok(format!("balancer {name}: backend {address} {what}"))
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
        backends: backends(&cfg.backends),
        routes: cfg
            .route
            .iter()
            .map(|r| duet_proxy::RouteSpec {
                host: r.host.clone(),
                path_prefix: r.path.clone(),
                backends: backends(&r.backends),
            })
            .collect(),
        hash_key: match cfg.hash_key.as_deref() {
            Some("uri") => duet_proxy::HashKey::Uri,
            Some(k) => match k.strip_prefix("header:") {
                Some(name) => duet_proxy::HashKey::Header(name.to_string()),
                None => duet_proxy::HashKey::Source,
            },
            None => duet_proxy::HashKey::Source,
        },
        queue: duet_proxy::QueueSpec {
            size: cfg.queue.size,
            timeout: cfg.queue.timeout.0,
        },
        tls: tls_spec(cfg),
        health: HealthPolicy {
            rise: cfg.check.as_ref().map_or(2, |c| c.rise),
            fall: cfg.check.as_ref().map_or(3, |c| c.fall),
            active_checks: cfg.check.is_some(),
            passive_failures: cfg.passive.failures,
            passive_cooldown: cfg.passive.cooldown.0,
            slow_start: cfg.slow_start.0,
        },
        passive_on_status: cfg
            .passive
            .on_status
            .iter()
            .filter_map(|s| duet_config::schema::status_range(s))
            .map(|(lo, hi)| lo..=hi)
            .collect(),
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

fn backends(list: &[duet_config::BackendConfig]) -> Vec<BackendSpec> {
    list.iter()
        .map(|b| BackendSpec {
            address: b.address,
            weight: b.weight,
            maxconn: b.maxconn,
        })
        .collect()
}

/// The status of every balancer.
/// Where the admin thread reads the balancers' counters from: a copy of the running set (the
/// proxies are shared handles), registered again after every reload.
pub fn source(balancers: &[Balancer]) -> duet_admin::BalancerSource {
    let running: Vec<Balancer> = balancers.to_vec();
    std::sync::Arc::new(move || status(&running))
}

pub fn status(balancers: &[Balancer]) -> Vec<BalancerStatus> {
    balancers
        .iter()
        .map(|b| BalancerStatus {
            name: b.cfg.name.clone(),
            bind: b.proxy.local_addr().to_string(),
            mode: mode_name(b.cfg.mode).into(),
            client_errors: b.proxy.client_errors(),
            backends: b.proxy.backends().iter().map(backend_status).collect(),
        })
        .collect()
}

fn backend_status(v: &duet_proxy::BackendView) -> BackendStatus {
    let s = &v.backend.stats;
    let (counts, sum_micros) = s.latency_totals();
    let mut cumulative = 0;
    let buckets = duet_proxy::LATENCY_BUCKETS
        .iter()
        .zip(counts)
        .map(|(le, n)| {
            cumulative += n;
            (*le, cumulative)
        })
        .collect();
    let count = cumulative + counts[duet_proxy::LATENCY_BUCKETS.len()];
    BackendStatus {
        address: v.backend.address.to_string(),
        pool: v.pool.clone(),
        up: s.up.load(Ordering::Relaxed),
        draining: v.backend.draining(),
        down_reason: v.backend.down_reason(),
        weight: v.weight,
        maxconn: v.maxconn,
        connections: s.connections.load(Ordering::Relaxed),
        connect_errors: s.errors_of(duet_proxy::ErrorKind::Connect),
        errors: duet_proxy::ErrorKind::ALL
            .iter()
            .map(|&k| (k.label().to_string(), s.errors_of(k)))
            .collect(),
        active: s.active.load(Ordering::Relaxed),
        latency: duet_admin::Histogram {
            buckets,
            count,
            sum_seconds: sum_micros as f64 / 1e6,
        },
    }
}

fn mode_name(mode: BalancerMode) -> &'static str {
    match mode {
        BalancerMode::Tcp => "tcp",
        BalancerMode::Http => "http",
    }
}
