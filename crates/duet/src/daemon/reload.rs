//! Applying a configuration to the running control plane: at start and on reload (SIGHUP or
//! `POST /v1/reload`), and the operator's actions. Instances whose config is unchanged keep
//! running untouched; everything that can fail is prepared before anything changes.

use std::collections::HashMap;
use std::net::IpAddr;

use duet_config::Config;
use duet_vrrp::SyncGroup;

use super::balancers;
use super::control::ControlPlane;
use super::effects::SocketEntry;
use super::instance::Inst;
use super::watch::WatchList;

impl ControlPlane {
    /// Switches to `config`. Instances whose config is unchanged keep running untouched (no
    /// flap on reload); changed and removed ones step down; new ones start. Everything that can
    /// fail (interfaces, addresses, sockets) is prepared first: on error nothing changes.
    pub(super) fn apply_config(&mut self, config: Config) -> Result<(), String> {
        let all_vips: Vec<IpAddr> = config
            .vrrp
            .iter()
            .flat_map(|v| v.vips.iter().map(|x| x.address))
            .collect();
        // Prepare: for each configured instance, an unchanged running one or a new one.
        let mut claimed = vec![false; self.instances.len()];
        let mut plan: Vec<Result<usize, Inst>> = Vec::new();
        for v in &config.vrrp {
            let same =
                (0..self.instances.len()).find(|&i| !claimed[i] && self.instances[i].cfg == *v);
            match same {
                Some(i) => {
                    claimed[i] = true;
                    plan.push(Ok(i));
                }
                None => plan.push(Err(Inst::new(&self.nl, v, &all_vips, self.clock.now())?)),
            }
        }
        let mut new_sockets = HashMap::new();
        for inst in plan.iter().filter_map(|p| p.as_ref().err()) {
            if !self.fx.sockets.contains_key(&inst.key) && !new_sockets.contains_key(&inst.key) {
                let entry = SocketEntry::open(
                    &self.nl,
                    &inst.cfg.interface,
                    inst.key,
                    self.clock,
                    self.inbox.clone(),
                )?;
                new_sockets.insert(inst.key, entry);
            }
        }

        // Commit.
        let now = self.clock.now();
        self.fx.sockets.extend(new_sockets);
        let mut old: Vec<Option<Inst>> = std::mem::take(&mut self.instances)
            .into_iter()
            .map(Some)
            .collect();
        let mut fresh = Vec::new();
        for (n, p) in plan.into_iter().enumerate() {
            match p {
                Ok(i) => self.instances.push(old[i].take().expect("claimed once")),
                Err(inst) => {
                    fresh.push(n);
                    self.instances.push(inst);
                }
            }
        }
        for mut gone in old.into_iter().flatten() {
            gone.core.shutdown(now);
            self.fx.drain(&mut gone, now);
        }
        let instances = &self.instances;
        self.fx
            .sockets
            .retain(|key, _| instances.iter().any(|i| i.key == *key));
        self.readings
            .restart_scripts(&config.track_script, &self.fx.hooks, &self.script_tx);
        self.groups = config
            .sync_group
            .iter()
            .map(|(name, g)| {
                let members = g
                    .instances
                    .iter()
                    .filter_map(|n| self.instances.iter().position(|i| &i.cfg.name == n))
                    .collect();
                SyncGroup::new(name.clone(), members)
            })
            .collect();
        self.config = config;
        self.update_watch_list();
        let net_admin = super::vips::may_add_addresses();
        for i in fresh {
            let inst = &mut self.instances[i];
            if !net_admin {
                inst.hold_vips(now, "missing CAP_NET_ADMIN: cannot add VIPs".into(), true);
            }
            let health = super::control::health_of(inst, &self.readings, &self.services);
            inst.core.set_tracking(now, health);
            inst.core
                .set_frozen(self.maintenance.as_ref().is_some_and(|m| m.enabled));
            inst.core.start(now);
        }
        Ok(())
    }

    pub(super) fn update_watch_list(&mut self) {
        let mut list = WatchList::default();
        for v in &self.config.vrrp {
            list.interfaces.insert(v.interface.clone());
            list.interfaces
                .extend(v.track_interfaces.iter().map(|t| t.name.clone()));
            list.files
                .extend(v.track_files.iter().map(|f| f.path.clone()));
        }
        let _ = self.watch_list.send(list);
    }

    pub(super) fn act(
        &mut self,
        action: duet_admin::Action,
    ) -> Result<String, duet_admin::ActionError> {
        match action {
            duet_admin::Action::Reload => {
                self.reload().map_err(|message| duet_admin::ActionError {
                    status: 409,
                    message,
                })
            }
            duet_admin::Action::Backend {
                balancer,
                backend,
                drain,
            } => balancers::set_draining(&self.balancers, &balancer, &backend, drain),
            duet_admin::Action::Reinit => match &mut self.database {
                Some(db) => Ok(db.reinit()),
                None => Err(duet_admin::ActionError {
                    status: 409,
                    message: "this node runs no [database]".into(),
                }),
            },
            duet_admin::Action::Maintenance { enabled, by } => {
                // One more than any version known here: the newest wins on every node.
                let known = self.maintenance.as_ref().map_or(0, |m| m.version);
                let heard = self
                    .cluster
                    .as_ref()
                    .and_then(|c| c.newer_maintenance(known))
                    .map_or(known, |m| m.version);
                let m = duet_cluster::wire::Maintenance {
                    enabled,
                    version: heard + 1,
                    by,
                };
                self.set_maintenance(m, "this node");
                Ok(if enabled {
                    "maintenance on: automatic failover is off cluster-wide".into()
                } else {
                    "maintenance off: automatic failover is back".into()
                })
            }
            duet_admin::Action::ServiceReset { service } => {
                let now = self.clock.now();
                let events = self.published.events().clone();
                let r = self.services.reset(now, &service, &self.inbox, &events);
                self.retrack();
                r
            }
            duet_admin::Action::Switchover { to } => {
                // Every VRRP instance this node is master of hands over (priority 0, no
                // preemption back); the database too, when its primary runs here.
                let now = self.clock.now();
                let handed: Vec<String> = self
                    .instances
                    .iter_mut()
                    .filter_map(|i| i.core.hand_over(now).then(|| i.cfg.name.clone()))
                    .collect();
                let db = match (&mut self.database, &self.cluster) {
                    (Some(db), Some(c)) => Some(db.switchover(to, c)),
                    _ => None,
                };
                let vrrp = format!("handed over {}", handed.join(", "));
                match (handed.is_empty(), db) {
                    (true, Some(r)) => r,
                    (true, None) => Err(duet_admin::ActionError {
                        status: 409,
                        message: "this node is master of no VRRP instance and runs no database"
                            .into(),
                    }),
                    (false, None) => Ok(vrrp),
                    (false, Some(Ok(m))) => Ok(format!("{vrrp}; {m}")),
                    (false, Some(Err(e))) => Ok(format!("{vrrp}; database: {}", e.message)),
                }
            }
        }
    }

    /// Re-reads the config file. A file that does not load or VRRP changes that cannot be
    /// applied change nothing; a balancer whose new settings fail keeps its old ones.
    pub(super) fn reload(&mut self) -> Result<String, String> {
        let result = self.reload_config();
        let (ok, message) = match &result {
            Ok(m) => (true, m.clone()),
            Err(e) => (false, e.clone()),
        };
        self.fx
            .events
            .emit(duet_admin::EventKind::Reload { ok, message });
        result
    }

    fn reload_config(&mut self) -> Result<String, String> {
        let path = self.config_path.clone();
        let config = match duet_config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                for d in &e.diagnostics {
                    tracing::error!("reload rejected, keeping the running config: {d}");
                }
                let all: Vec<String> = e.diagnostics.iter().map(|d| d.to_string()).collect();
                return Err(format!("reload rejected: {}", all.join("; ")));
            }
        };
        if config.node.admin != self.config.node.admin
            || config.node.operator_token_file != self.config.node.operator_token_file
        {
            tracing::warn!(
                "reload: node.admin and node.operator_token_file take effect after a restart"
            );
        }
        let cluster_changed = config.heartbeat != self.config.heartbeat
            || config.witness != self.config.witness
            || config.coordination != self.config.coordination
            || config.node.vip_lifetime != self.config.node.vip_lifetime;
        if config.service != self.config.service {
            tracing::warn!("reload: [[service]] changes take effect after a restart");
        }
        if cluster_changed {
            // The running cluster's promises and leases were counted against the running
            // settings; changing them under it could break the no-two-masters guarantee.
            tracing::warn!(
                "reload: [heartbeat], [witness], [coordination] and node.vip_lifetime take effect after a restart"
            );
        }
        if let Err(e) = super::accept::apply(&config) {
            tracing::error!("reload rejected, keeping the running config: {e}");
            let _ = super::accept::apply(&self.config);
            return Err(format!("reload rejected: {e}"));
        }
        let balancer_configs = config.balancer.clone();
        if let Err(e) = self.apply_config(config) {
            tracing::error!("reload rejected, keeping the running config: {e}");
            let _ = super::accept::apply(&self.config);
            return Err(format!("reload rejected: {e}"));
        }
        if let Some(c) = &mut self.cluster {
            c.set_config(&self.config);
        }
        let errors = balancers::reload_all(&mut self.balancers, &balancer_configs);
        self.published
            .set_balancers(balancers::source(&self.balancers));
        for e in &errors {
            tracing::error!("reload: {e}");
        }
        if errors.is_empty() {
            tracing::info!("reloaded {}", path.display());
            Ok(format!("reloaded {}", path.display()))
        } else {
            Err(format!("reloaded with errors: {}", errors.join("; ")))
        }
    }
}
