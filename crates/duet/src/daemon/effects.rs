//! Carrying out what the cores decide: adverts on the wire, VIPs on the interface, GARP bursts,
//! log lines and notify hooks. Everything here acts on one instance at a time.

use std::collections::HashMap;
use std::sync::Arc;

use duet_sys::guardian::Goodbye;
use duet_sys::{Announcer, Netlink, VrrpSocket};
use duet_time::Instant;
use duet_vrrp::{Action, Advert, State};
use tokio::task::AbortHandle;

use super::hooks::{HookJob, Hooks};
use super::input::{Clock, Inbox};
use super::instance::{Inst, SocketKey};
use super::vips::VipManager;

/// The VRRP socket of one interface and family, its reader task and its announcer.
pub struct SocketEntry {
    sock: Arc<VrrpSocket>,
    reader: AbortHandle,
    announcer: Option<Announcer>,
}

impl Drop for SocketEntry {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl SocketEntry {
    /// Opens the socket for `key` on `ifname` and starts its reader task (needs the runtime).
    pub fn open(
        nl: &Netlink,
        ifname: &str,
        key: SocketKey,
        clock: Clock,
        inbox: Inbox,
    ) -> Result<SocketEntry, String> {
        let sock = Arc::new(VrrpSocket::open(ifname, key.0, key.1).map_err(|e| e.to_string())?);
        let link = nl.link(ifname).map_err(|e| e.to_string())?;
        let v4 = key.1 == duet_vrrp::Family::V4;
        let announcer = match Announcer::new(ifname, key.0, &link.mac, v4, !v4) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::warn!("{ifname}: gratuitous ARP/NA disabled: {e}");
                None
            }
        };
        let reader =
            tokio::spawn(super::ingress::read_vrrp(key, sock.clone(), clock, inbox)).abort_handle();
        Ok(SocketEntry {
            sock,
            reader,
            announcer,
        })
    }
}

/// The side-effecting half of the control plane.
pub struct Effects {
    /// Node name, for hooks.
    pub node: String,
    /// Sockets by interface and family.
    pub sockets: HashMap<SocketKey, SocketEntry>,
    /// VIPs on the interfaces.
    pub vips: VipManager,
    /// The hooks thread.
    pub hooks: Hooks,
    /// When VIP lifetimes must next be refreshed.
    pub next_refresh: Option<Instant>,
    /// An instance changed state since the status was last published (it is published at
    /// once, not at the next tick).
    pub transitioned: bool,
    /// The event stream.
    pub events: Arc<duet_admin::Events>,
}

impl Effects {
    /// Performs every pending output of `inst`: actions first (VIPs, logs, hooks), then adverts.
    pub fn drain(&mut self, inst: &mut Inst, now: Instant) {
        while let Some(action) = inst.core.poll_action() {
            self.act(inst, action, now);
        }
        while let Some(advert) = inst.core.poll_transmit() {
            self.send(inst, &advert);
        }
    }

    fn send(&self, inst: &Inst, advert: &Advert) {
        let Some(entry) = self.sockets.get(&inst.key) else {
            return;
        };
        for (dst, bytes) in inst.encode(advert) {
            if let Err(e) = entry.sock.send(inst.source, dst, &bytes) {
                tracing::debug!("{}: sending advert to {dst}: {e}", inst.cfg.name);
            }
        }
    }

    fn act(&mut self, inst: &mut Inst, action: Action, now: Instant) {
        let (ifname, ifindex) = (inst.cfg.interface.clone(), inst.ifindex);
        match action {
            Action::Transition { from, to, reason } => {
                self.transitioned = true;
                let reason = reason.to_string();
                tracing::info!(
                    "{}: {from} -> {to} ({reason}), effective priority {}",
                    inst.cfg.name,
                    inst.core.effective_priority()
                );
                inst.last_reason = reason.clone();
                if from == State::Master {
                    inst.master_before += now.saturating_since(inst.since);
                }
                inst.since = now;
                if to != State::Master {
                    inst.garp.stop();
                }
                let seq = self.events.emit(duet_admin::EventKind::Vrrp {
                    instance: inst.cfg.name.clone(),
                    from: from.as_str().to_string(),
                    to: to.as_str().to_string(),
                    reason: reason.clone(),
                    priority: inst.core.effective_priority(),
                });
                self.submit_hooks(inst, from, to, &reason, seq);
            }
            Action::AddVips => {
                let goodbyes = inst
                    .encode(&inst.goodbye())
                    .into_iter()
                    .map(|(dst, message)| Goodbye {
                        ifname: ifname.clone(),
                        ifindex,
                        src: inst.source,
                        dst,
                        message,
                    })
                    .collect();
                match self.vips.add(&ifname, ifindex, &inst.cfg.vips) {
                    Ok(()) => {
                        inst.vip_failures = 0;
                        self.vips.set_goodbyes(&inst.cfg.name, goodbyes);
                        if self.next_refresh.is_none() {
                            self.next_refresh = self.vips.refresh_interval().map(|d| now + d);
                        }
                    }
                    // The instance goes to FAULT: its RemoveVips follows in this same drain.
                    Err(e) => inst.fail_vips(now, e.message, e.permission),
                }
            }
            Action::RemoveVips => {
                self.vips.remove(&ifname, ifindex, &inst.cfg.vips);
                self.vips.clear_goodbyes(&inst.cfg.name);
            }
            Action::Announce => inst.garp.take_over(now, &inst.cfg.garp),
        }
    }

    /// Sends the due announcements of `inst`'s GARP burst and schedules the next.
    pub fn announce_due(&self, inst: &mut Inst, now: Instant) {
        if !inst.garp.due(now, &inst.cfg.garp) {
            return;
        }
        if let Some(a) = self
            .sockets
            .get(&inst.key)
            .and_then(|s| s.announcer.as_ref())
        {
            for vip in &inst.cfg.vips {
                if let Err(e) = a.announce(vip.address) {
                    tracing::debug!("announcing {vip}: {e}");
                }
            }
        }
    }

    /// Queues the instance's hooks for a transition, the event numbered `seq`.
    fn submit_hooks(&self, inst: &Inst, from: State, to: State, reason: &str, seq: u64) {
        // keepalived passes STOP for an instance that is shutting down; existing scripts expect it.
        let state_word = match to {
            State::Initialize => "STOP",
            s => s.as_str(),
        };
        let per_state = match to {
            State::Master => inst
                .cfg
                .notify_master
                .as_ref()
                .map(|c| ("notify_master", c)),
            State::Backup => inst
                .cfg
                .notify_backup
                .as_ref()
                .map(|c| ("notify_backup", c)),
            State::Fault => inst.cfg.notify_fault.as_ref().map(|c| ("notify_fault", c)),
            State::Initialize => inst.cfg.notify_stop.as_ref().map(|c| ("notify_stop", c)),
        };
        let env = vec![
            ("DUET_INSTANCE".to_string(), inst.cfg.name.clone()),
            ("DUET_NODE".to_string(), self.node.clone()),
            ("DUET_OLD_STATE".to_string(), from.as_str().to_string()),
            ("DUET_NEW_STATE".to_string(), to.as_str().to_string()),
            ("DUET_REASON".to_string(), reason.to_string()),
            ("DUET_EVENT_SEQ".to_string(), seq.to_string()),
        ];
        let job = |hook, argv| HookJob {
            instance: inst.cfg.name.clone(),
            hook,
            argv,
            env: env.clone(),
            timeout: inst.cfg.notify_timeout.0,
        };
        if let Some((hook, cmd)) = per_state {
            self.hooks.submit(job(hook, cmd.0.clone()));
        }
        if let Some(cmd) = &inst.cfg.notify {
            let mut argv = cmd.0.clone();
            argv.extend([
                "INSTANCE".to_string(),
                inst.cfg.name.clone(),
                state_word.to_string(),
                inst.core.effective_priority().to_string(),
            ]);
            self.hooks.submit(job("notify", argv));
        }
    }
}
