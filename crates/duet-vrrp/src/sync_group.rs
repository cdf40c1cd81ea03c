//! Sync groups: instances that fail over together (keepalived's `vrrp_sync_group`).
//!
//! Typical use is a pair of VIPs, one on the public and one on the private network, that must sit
//! on the same node. The rules, applied after every input to any member:
//!
//! - If any member's own tracking reports FAULT, every other member is held in FAULT too.
//! - Otherwise, when a member moves to MASTER or BACKUP on its own, the others are forced to
//!   follow it.

use duet_time::Instant;

use crate::instance::{Instance, Reason, State};

/// A named set of instances, by index into the caller's instance list.
#[derive(Debug, Clone)]
pub struct SyncGroup {
    name: String,
    members: Vec<usize>,
    state: State,
}

impl SyncGroup {
    /// A group over `members` (indices into the slice later passed to [`SyncGroup::reconcile`]).
    pub fn new(name: impl Into<String>, members: Vec<usize>) -> SyncGroup {
        SyncGroup {
            name: name.into(),
            members,
            state: State::Initialize,
        }
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Member indices.
    pub fn members(&self) -> &[usize] {
        &self.members
    }

    /// Brings all members in line after an input. Call after feeding any member.
    pub fn reconcile(&mut self, now: Instant, instances: &mut [Instance]) {
        fn same(i: &mut Instance) -> &mut Instance {
            i
        }
        self.reconcile_with(now, instances, same);
    }

    /// [`SyncGroup::reconcile`] over a caller's own instance wrappers; `core` reaches the
    /// [`Instance`] inside one.
    pub fn reconcile_with<T>(
        &mut self,
        now: Instant,
        items: &mut [T],
        core: fn(&mut T) -> &mut Instance,
    ) {
        let fault = self.members.iter().find_map(|&i| {
            let inst = core(&mut items[i]);
            inst.own_fault()
                .map(|f| format!("sync group {}: {} {}", self.name, inst.config().name, f))
        });
        for &i in &self.members {
            let inst = core(&mut items[i]);
            let imposed = if inst.own_fault().is_some() {
                None
            } else {
                fault.clone()
            };
            inst.set_group_fault(now, imposed);
        }
        if fault.is_some() {
            self.state = State::Fault;
            return;
        }
        let leader = self.members.iter().copied().find(|&i| {
            let s = core(&mut items[i]).state();
            s != self.state && matches!(s, State::Master | State::Backup)
        });
        let Some(leader) = leader else { return };
        let leader_core = core(&mut items[leader]);
        self.state = leader_core.state();
        let reason = Reason::SyncGroup {
            group: self.name.clone(),
            member: leader_core.config().name.clone(),
        };
        for &i in &self.members {
            if i != leader {
                core(&mut items[i]).force_state(now, self.state, reason.clone());
            }
        }
    }
}
