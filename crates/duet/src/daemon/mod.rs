//! `duet run`: wires the config to the cores and shells and runs until SIGTERM.
//!
//! Threads:
//! - `duet-control`: the control plane (VRRP) on its own current-thread runtime, so nothing else
//!   can delay an advert;
//! - `duet-hooks`: notify hooks and track scripts (process spawning and waiting);
//! - `duet-admin`: the admin HTTP API, reading published snapshots;
//! - `duet-database`: the database agent (`[database]`), whose actions take seconds.
//!
//! Plus the guardian child process (see `duet_sys::guardian`).

mod accept;
mod alerts;
mod balancers;
mod cluster;
mod control;
mod database;
mod effects;
mod etcd;
mod hooks;
mod ingress;
mod input;
mod instance;
mod publish;
mod readings;
mod reload;
mod services;
mod systemd;
mod vips;
mod watch;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use duet_admin::Published;

pub use cluster::record_from_wire;
pub use watch::read_track_file;

/// The TLS settings of a balancer, as the proxy takes them (for `duet check`).
pub fn tls_spec(cfg: &duet_config::BalancerConfig) -> Option<duet_proxy::TlsSpec> {
    balancers::tls_spec(cfg)
}

/// Whether the etcd client's TLS settings load (for `duet check`).
pub fn etcd_tls(cfg: &duet_config::CoordinationConfig) -> Result<(), String> {
    etcd::tls_connector(cfg).map(|_| ())
}

/// Runs the daemon. Returns the process exit code.
pub fn run(config_path: &Path) -> i32 {
    // What `duet check` refuses, run refuses too, with the same messages.
    let config = match crate::preflight::load_checked(config_path) {
        Ok((config, warnings)) => {
            for w in warnings {
                tracing::warn!("{w}");
            }
            config
        }
        Err(diagnostics) => {
            for d in diagnostics {
                eprintln!("{d}");
            }
            return 2;
        }
    };
    match start(config, config_path) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e}");
            1
        }
    }
}

fn start(config: duet_config::Config, config_path: &Path) -> Result<(), String> {
    check_capabilities(&config);
    let _state_lock = lock_state_dir(&config)?;
    match duet_sys::process::raise_fd_limit() {
        Ok(n) if n < 4096 && !config.balancer.is_empty() => tracing::warn!(
            "open files are limited to {n}: raise LimitNOFILE for balancers with many connections"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("could not raise the open-file limit: {e}"),
    }
    let published = Arc::new(Published::default());
    // The admin API starts before the control plane; actions wait until it is there.
    let inbox: Arc<std::sync::OnceLock<input::Inbox>> = Arc::default();
    let options = admin_options(&config, inbox.clone())?;
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let admin = duet_admin::spawn(config.node.admin, published.clone(), options)
        .map_err(|e| e.to_string())?;
    tracing::info!(
        "duet {} starting as node {:?}; admin API on {scheme}://{admin}",
        env!("CARGO_PKG_VERSION"),
        config.node.name
    );
    if let Some(a) = &config.alerts {
        alerts::start(&config.node.name, a, published.events().clone())?;
    }
    published.emit(duet_admin::EventKind::Daemon {
        state: "started".into(),
        detail: format!(
            "duet {} as node {:?}",
            env!("CARGO_PKG_VERSION"),
            config.node.name
        ),
    });
    accept::apply(&config)?;
    let events = published.events().clone();
    duet_proxy::backends::observe_health(Arc::new(move |balancer, backend, state, reason| {
        events.emit(duet_admin::EventKind::Backend {
            balancer: balancer.into(),
            backend: backend.to_string(),
            state: state.into(),
            reason: reason.unwrap_or_default().into(),
        });
    }));
    let balancers = balancers::start_all(&config.balancer)?;
    let hooks = hooks::Hooks::start(published.events().clone())
        .map_err(|e| format!("hooks thread: {e}"))?;
    let mut vips = vips::VipManager::new(&config.node.state_dir, config.node.vip_lifetime.0)
        .map_err(|e| e.to_string())?;
    vips.remove_leftovers(&config);
    if config.node.guardian {
        vips.start_guardian().map_err(|e| e.to_string())?;
    }
    let max_notify = config
        .vrrp
        .iter()
        .map(|v| v.notify_timeout.0)
        .max()
        .unwrap_or_default();
    let path = config_path.to_path_buf();
    let control_hooks = hooks.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let control = std::thread::Builder::new()
        .name("duet-control".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("control runtime: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                let built = control::ControlPlane::new(
                    config,
                    path,
                    vips,
                    control_hooks,
                    published,
                    balancers,
                );
                let (cp, inputs, input_tx) = match built {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = inbox.set(input_tx.clone());
                if let Err(e) = forward_signals(input_tx) {
                    let _ = ready_tx.send(Err(format!("signals: {e}")));
                    return;
                }
                let _ = ready_tx.send(Ok(()));
                cp.run(inputs).await;
            });
        })
        .map_err(|e| format!("control thread: {e}"))?;
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = control.join();
            accept::clear();
            return Err(e);
        }
        Err(_) => return Err("control thread died during start".into()),
    }
    let _ = control.join();
    accept::clear();
    // Let STOP hooks finish, but never hang the exit on a stuck one.
    hooks.wait_idle(max_notify + Duration::from_millis(500));
    tracing::info!("duet stopped");
    Ok(())
}

/// Takes the state directory for this daemon alone: two daemons on one directory would remove
/// each other's VIP records at start. The lock lives as long as the returned value (the
/// process); the kernel drops it if the process dies.
fn lock_state_dir(config: &duet_config::Config) -> Result<duet_sys::process::FileLock, String> {
    let dir = &config.node.state_dir;
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("node.state_dir {}: cannot create it: {e}", dir.display()))?;
    let path = dir.join("lock");
    let note = format!("pid {} node {:?}", std::process::id(), config.node.name);
    match duet_sys::process::FileLock::try_new(&path, &note) {
        Ok(Some(lock)) => Ok(lock),
        Ok(None) => Err(format!(
            "node.state_dir {} is in use by another duet ({}): give each daemon on this host its own node.state_dir",
            dir.display(),
            duet_sys::process::FileLock::holder(&path)
        )),
        Err(e) => Err(format!(
            "node.state_dir {}: cannot lock {}: {e}",
            dir.display(),
            path.display()
        )),
    }
}

/// Says which capability the config needs and this process lacks (read from the kernel, not
/// guessed from the uid). Instances without CAP_NET_ADMIN start in FAULT; the rest fails where
/// it is used, with the kernel's error.
fn check_capabilities(config: &duet_config::Config) {
    use duet_sys::process::{Capability, has_capability};
    let low_port = |a: &std::net::SocketAddr| a.port() != 0 && a.port() < 1024;
    let mut needs: Vec<(Capability, &str)> = Vec::new();
    if !config.vrrp.is_empty() {
        needs.push((
            Capability::NetAdmin,
            "VIPs cannot be added: VRRP instances stay in FAULT",
        ));
        needs.push((
            Capability::NetRaw,
            "VRRP and gratuitous ARP/NA sockets cannot be opened",
        ));
    }
    if config.vrrp.iter().any(|v| !v.accept) {
        needs.push((
            Capability::NetAdmin,
            "the accept = false firewall table cannot be set",
        ));
    }
    let low_binds = config.balancer.iter().any(|b| {
        low_port(&b.bind)
            || b.tls
                .as_ref()
                .and_then(|t| t.redirect_from)
                .is_some_and(|r| low_port(&r))
    }) || low_port(&config.node.admin);
    if low_binds {
        needs.push((
            Capability::NetBindService,
            "ports below 1024 cannot be bound",
        ));
    }
    for (cap, what) in needs {
        match has_capability(cap) {
            Ok(true) => {}
            Ok(false) => tracing::error!("missing {}: {what}", cap.name()),
            Err(e) => tracing::warn!("cannot read this process's capabilities: {e}"),
        }
    }
}

/// The admin API's rules: the tokens of `[admin]` and `node.operator_token_file` (named
/// "operator", role admin), the public health endpoints, the audit log, HTTPS, and the way
/// actions reach the control loop.
fn admin_options(
    config: &duet_config::Config,
    inbox: Arc<std::sync::OnceLock<input::Inbox>>,
) -> Result<duet_admin::Options, String> {
    use duet_admin::auth::{Access, Token};
    let admin = config.admin.clone().unwrap_or_default();
    let mut tokens: Vec<Token> = admin
        .tokens
        .iter()
        .map(|t| Token {
            name: t.name.clone(),
            role: t.role,
            sha256: t.sha256.0,
        })
        .collect();
    // Without [admin] tokens, reads stay open as they were before roles existed.
    let open_reads = tokens.is_empty();
    if let Some(path) = &config.node.operator_token_file {
        let token = crate::preflight::read_operator_token(path)?;
        tokens.push(Token {
            name: "operator".into(),
            role: duet_admin::auth::Role::Admin,
            sha256: duet_admin::auth::token_hash(&token),
        });
    }
    let audit = admin
        .audit_log
        .clone()
        .unwrap_or_else(|| config.node.state_dir.join("audit.jsonl"));
    let access = Access::new(tokens, admin.public.clone(), open_reads, Some(&audit))?;
    let tls = match &admin.tls {
        Some(t) => Some(duet_admin::tls::server_config(&t.cert, &t.key)?),
        None => None,
    };
    let operator: duet_admin::Operator = Arc::new(move |action| {
        let unavailable = |message: &str| duet_admin::ActionError {
            status: 503,
            message: message.into(),
        };
        let tx = inbox
            .get()
            .ok_or_else(|| unavailable("the daemon is starting"))?;
        let (reply, answer) = std::sync::mpsc::channel();
        // Runs on the admin runtime's blocking pool: it may wait for room in the inbox.
        tx.blocking_send(input::Input::Action(action, reply))
            .map_err(|_| unavailable("the daemon is stopping"))?;
        answer
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| unavailable("the daemon did not answer"))?
    });
    Ok(duet_admin::Options {
        operator: access.writable().then_some(operator),
        access,
        names: config.node.admin_names.clone(),
        tls,
    })
}

fn forward_signals(inbox: input::Inbox) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            let input = tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: stepping down"); input::Input::Shutdown }
                _ = int.recv() => { tracing::info!("SIGINT: stepping down"); input::Input::Shutdown }
                _ = hup.recv() => { tracing::info!("SIGHUP: reloading"); input::Input::Reload }
            };
            if inbox.send(input).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}
