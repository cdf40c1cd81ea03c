//! One virtual router: the RFC 9568 §6 state machine, plus the FAULT state keepalived users know.
//!
//! The instance never reads a clock or touches a socket. The caller feeds it events with the
//! current time and then drains its outputs:
//!
//! ```text
//!   start / handle_advert / handle_timeout / set_tracking / shutdown   (inputs, with `now`)
//!   poll_transmit → adverts to send      poll_action → VIP and state changes
//!   poll_timeout  → when to call handle_timeout next
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use duet_time::Instant;

use crate::packet::{Advert, AdvertInterval, DropReason, Family, Version, Vrid};
use crate::tracking::TrackedHealth;

/// Priority of the address owner (RFC 9568 §6.1): it always wins and ignores tracking weights.
pub const OWNER_PRIORITY: u8 = 255;

/// Configuration of one instance, already validated by the config layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceConfig {
    /// Name used in logs, notify hooks and the API.
    pub name: String,
    /// Virtual router identifier.
    pub vrid: Vrid,
    /// Protocol version.
    pub version: Version,
    /// Configured priority, 1..=255 (255 = address owner).
    pub priority: u8,
    /// Our advertisement interval.
    pub advert_interval: AdvertInterval,
    /// Whether a higher-priority backup takes over from a lower-priority master.
    pub preempt: bool,
    /// How long after start, or after first seeing a lower-priority master, before preempting.
    pub preempt_delay: Duration,
    /// The virtual addresses (without prefix length; the shell keeps that).
    pub vips: Vec<IpAddr>,
    /// Our primary address on the interface, the tie-breaker between equal priorities.
    pub primary_address: IpAddr,
}

impl InstanceConfig {
    /// The family of the instance's VIPs.
    pub fn family(&self) -> Family {
        Family::of(&self.primary_address)
    }
}

/// Instance state (RFC 9568 §6.4 plus FAULT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not started, or stopped.
    Initialize,
    /// Watching the master; takes over when it goes silent.
    Backup,
    /// Owns the VIPs and sends adverts.
    Master,
    /// Tracking reports a failure: holds no VIPs, sends nothing, cannot become master.
    Fault,
}

impl State {
    /// Upper-case name as keepalived and the admin API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Initialize => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a transition happened; shown in logs and passed to notify hooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// First start (or recovery from FAULT): waiting to hear a master.
    Startup,
    /// Priority 255 takes over immediately (RFC 9568 §6.4.1).
    AddressOwner,
    /// No advert within the master down interval.
    MasterDown {
        /// The interval that elapsed.
        interval: Duration,
    },
    /// The master announced priority 0 and our skew time passed.
    MasterLeft,
    /// An advert with higher priority (or equal priority and higher address) arrived.
    HigherPriority {
        /// Its sender.
        from: IpAddr,
        /// Its priority.
        priority: u8,
    },
    /// Tracking reported a failure.
    Fault(String),
    /// Tracking recovered.
    FaultCleared,
    /// Another instance of the same sync group changed state.
    SyncGroup {
        /// The group's name.
        group: String,
        /// The member that moved first.
        member: String,
    },
    /// Local shutdown.
    Shutdown,
    /// The cluster layer vetoed MASTER (no quorum, or a peer heard serving over the
    /// heartbeat).
    Vetoed(String),
    /// An operator asked this master to hand over (a switchover).
    HandOver,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Startup => f.write_str("startup"),
            Reason::AddressOwner => f.write_str("address owner (priority 255)"),
            Reason::MasterDown { interval } => write!(
                f,
                "no advert for master down interval {}",
                duet_time::format_duration(*interval)
            ),
            Reason::MasterLeft => f.write_str("master sent priority 0"),
            Reason::HigherPriority { from, priority } => {
                write!(f, "advert from {from} with priority {priority}")
            }
            Reason::Fault(what) => write!(f, "fault: {what}"),
            Reason::FaultCleared => f.write_str("fault cleared"),
            Reason::SyncGroup { group, member } => {
                write!(f, "sync group {group} follows {member}")
            }
            Reason::Shutdown => f.write_str("shutdown"),
            Reason::Vetoed(why) => write!(f, "not allowed to be master: {why}"),
            Reason::HandOver => f.write_str("switchover: handed over to the peer"),
        }
    }
}

/// Something the shell must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The state changed. Emitted before the VIP actions it implies.
    Transition {
        /// Previous state.
        from: State,
        /// New state.
        to: State,
        /// Why.
        reason: Reason,
    },
    /// Configure the VIPs on the interface.
    AddVips,
    /// Remove the VIPs from the interface.
    RemoveVips,
    /// Send gratuitous ARP / unsolicited NA for the VIPs (count and pacing are the shell's).
    Announce,
}

/// Counters of one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Adverts accepted for processing.
    pub adverts_received: u64,
    /// Adverts queued for sending.
    pub adverts_sent: u64,
    /// Priority-0 adverts received.
    pub priority_zero_received: u64,
    /// Priority-0 adverts sent.
    pub priority_zero_sent: u64,
    /// Times this instance became master.
    pub became_master: u64,
    /// Dropped adverts, indexed by [`DropReason::index`].
    pub dropped: [u64; DropReason::ALL.len()],
}

impl Stats {
    /// Counts a drop.
    pub fn count_drop(&mut self, reason: DropReason) {
        self.dropped[reason.index()] += 1;
    }

    /// Drops counted for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()]
    }
}

/// The master this instance last heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MasterInfo {
    /// Its address.
    pub address: IpAddr,
    /// Its advertised priority.
    pub priority: u8,
    /// When its last advert arrived.
    pub last_seen: Instant,
}

/// One VRRP virtual router.
#[derive(Debug)]
pub struct Instance {
    cfg: InstanceConfig,
    state: State,
    /// Master down timer in BACKUP, advert timer in MASTER, nothing otherwise.
    timer: Option<Instant>,
    /// Why the master down timer was armed: it decides the transition reason when it fires.
    timer_reason: TimerReason,
    master_adver_interval: AdvertInterval,
    tracking: TrackedHealth,
    group_fault: Option<String>,
    started_at: Instant,
    lower_master_since: Option<Instant>,
    master: Option<MasterInfo>,
    /// Why the cluster layer forbids MASTER now, if it does.
    veto: Option<String>,
    /// A takeover the veto held back: its reason, used when the veto lifts.
    held_takeover: Option<Reason>,
    /// Handed over by an operator: no preemption of a serving master until this instance is
    /// MASTER again (by master down, when nobody took over).
    yielding: bool,
    /// Maintenance: never take over (no preemption, no takeover on silence).
    frozen: bool,
    transmits: VecDeque<Advert>,
    actions: VecDeque<Action>,
    stats: Stats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerReason {
    Silence,
    PriorityZero,
}

impl Instance {
    /// A new instance in INIT. Call [`Instance::start`] to begin.
    pub fn new(cfg: InstanceConfig) -> Instance {
        let interval = cfg.advert_interval;
        Instance {
            cfg,
            state: State::Initialize,
            timer: None,
            timer_reason: TimerReason::Silence,
            master_adver_interval: interval,
            tracking: TrackedHealth::default(),
            group_fault: None,
            started_at: Instant::ZERO,
            lower_master_since: None,
            master: None,
            veto: None,
            held_takeover: None,
            yielding: false,
            frozen: false,
            transmits: VecDeque::new(),
            actions: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &InstanceConfig {
        &self.cfg
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Counts a drop decided by the shell before the advert reached this instance.
    pub fn count_drop(&mut self, reason: DropReason) {
        self.stats.count_drop(reason);
    }

    /// The master last heard while BACKUP, if any.
    pub fn master(&self) -> Option<MasterInfo> {
        self.master
    }

    /// The tracking input currently applied.
    pub fn tracking(&self) -> &TrackedHealth {
        &self.tracking
    }

    /// The fault text of the tracking input or of the sync group, if any.
    pub fn fault(&self) -> Option<&str> {
        self.tracking
            .fault
            .as_deref()
            .or(self.group_fault.as_deref())
    }

    /// The fault this instance's own tracking reports (ignoring its sync group).
    pub fn own_fault(&self) -> Option<&str> {
        self.tracking.fault.as_deref()
    }

    /// Priority after tracking weights, clamped to 1..=254; the address owner stays at 255.
    pub fn effective_priority(&self) -> u8 {
        self.tracking.apply(self.cfg.priority)
    }

    /// Skew time (RFC 9568 §6.1): `((256 - priority) * Master_Adver_Interval) / 256`.
    pub fn skew_time(&self) -> Duration {
        let centis = (256 - u32::from(self.effective_priority()))
            * u32::from(self.master_adver_interval.centis())
            / 256;
        match self.cfg.version {
            // RFC 3768 §6.1: (256 - Priority) / 256 seconds.
            Version::V2 => Duration::from_micros(
                (256 - u64::from(self.effective_priority())) * 1_000_000 / 256,
            ),
            Version::V3 => Duration::from_millis(u64::from(centis) * 10),
        }
    }

    /// Master down interval: `3 * Master_Adver_Interval + Skew_Time`.
    pub fn master_down_interval(&self) -> Duration {
        self.master_adver_interval.duration() * 3 + self.skew_time()
    }

    /// When [`Instance::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timer
    }

    /// The next advert to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Advert> {
        self.transmits.pop_front()
    }

    /// The next action for the shell, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Leaves INIT (RFC 9568 §6.4.1 "Startup").
    pub fn start(&mut self, now: Instant) {
        if self.state != State::Initialize {
            return;
        }
        self.started_at = now;
        self.enter_from_init(now, Reason::Startup);
    }

    fn enter_from_init(&mut self, now: Instant, reason: Reason) {
        if let Some(fault) = self.fault() {
            let fault = fault.to_string();
            self.transition(State::Fault, Reason::Fault(fault));
            self.timer = None;
        } else if self.cfg.priority == OWNER_PRIORITY {
            self.become_master(now, Reason::AddressOwner);
        } else {
            self.become_backup(now, reason);
        }
    }

    /// Local shutdown: a master sends priority 0 and removes its VIPs (RFC 9568 §6.4.3).
    pub fn shutdown(&mut self, _now: Instant) {
        if self.state == State::Master {
            self.send_advert(0);
        }
        self.timer = None;
        self.transition(State::Initialize, Reason::Shutdown);
    }

    /// Handles a received advert that passed packet validation and VRID demultiplexing.
    ///
    /// Returns the reason if the instance discards it; the drop is counted.
    pub fn handle_advert(
        &mut self,
        now: Instant,
        src: IpAddr,
        advert: &Advert,
    ) -> Result<(), DropReason> {
        let check = self.check_advert(src, advert);
        if let Err(reason) = check {
            self.stats.count_drop(reason);
            return check;
        }
        self.stats.adverts_received += 1;
        if advert.priority == 0 {
            self.stats.priority_zero_received += 1;
        }
        match self.state {
            State::Initialize | State::Fault => {}
            State::Backup => self.backup_on_advert(now, src, advert),
            State::Master => self.master_on_advert(now, src, advert),
        }
        Ok(())
    }

    fn check_advert(&self, src: IpAddr, advert: &Advert) -> Result<(), DropReason> {
        if advert.vrid != self.cfg.vrid {
            return Err(DropReason::UnknownVrid);
        }
        if advert.version != self.cfg.version {
            return Err(DropReason::BadVersion);
        }
        if Family::of(&src) != self.cfg.family() {
            return Err(DropReason::BadFamily);
        }
        if src == self.cfg.primary_address {
            return Err(DropReason::OwnAdvert);
        }
        // RFC 3768 §7.1: v2 routers must agree on the interval. v3 backups learn the master's.
        if self.cfg.version == Version::V2 && advert.interval != self.cfg.advert_interval {
            return Err(DropReason::IntervalMismatch);
        }
        Ok(())
    }

    /// RFC 9568 §6.4.2, BACKUP receiving an ADVERTISEMENT.
    fn backup_on_advert(&mut self, now: Instant, src: IpAddr, advert: &Advert) {
        if advert.priority == 0 {
            // The master is leaving: take over after our skew time, so the best backup goes first.
            self.master = None;
            self.timer = Some(now + self.skew_time());
            self.timer_reason = TimerReason::PriorityZero;
            return;
        }
        let local = self.effective_priority();
        let lower = advert.priority < local;
        if lower && self.cfg.preempt && !self.yielding && !self.frozen && self.preempt_allowed(now)
        {
            // Discard: the master down timer keeps running and we preempt when it fires.
            return;
        }
        if !lower {
            self.lower_master_since = None;
        }
        self.master_adver_interval = advert.interval;
        self.master = Some(MasterInfo {
            address: src,
            priority: advert.priority,
            last_seen: now,
        });
        self.held_takeover = None;
        self.timer = Some(now + self.master_down_interval());
        self.timer_reason = TimerReason::Silence;
    }

    /// Whether `preempt_delay` has passed since we first saw this lower-priority master (which
    /// is never earlier than our start, so the delay also counts from startup).
    fn preempt_allowed(&mut self, now: Instant) -> bool {
        if self.cfg.preempt_delay.is_zero() {
            return true;
        }
        let since = *self.lower_master_since.get_or_insert(now);
        now.saturating_since(since.max(self.started_at)) >= self.cfg.preempt_delay
    }

    /// RFC 9568 §6.4.3, MASTER receiving an ADVERTISEMENT.
    fn master_on_advert(&mut self, now: Instant, src: IpAddr, advert: &Advert) {
        if advert.priority == 0 {
            // Another master is leaving; make sure backups hear us at once.
            self.send_advert(self.effective_priority());
            self.timer = Some(now + self.cfg.advert_interval.duration());
            return;
        }
        let local = self.effective_priority();
        let wins = advert.priority > local
            || (advert.priority == local && ip_greater(src, self.cfg.primary_address));
        if !wins {
            // Another master with a lower priority (a healed partition, keepalived's
            // garp_lower_prio case): it will step down, but clients may have learned its MAC
            // for the VIPs. Say again where they live.
            self.actions.push_back(Action::Announce);
            return;
        }
        self.master_adver_interval = advert.interval;
        self.master = Some(MasterInfo {
            address: src,
            priority: advert.priority,
            last_seen: now,
        });
        self.leave_master(
            State::Backup,
            Reason::HigherPriority {
                from: src,
                priority: advert.priority,
            },
        );
        self.timer = Some(now + self.master_down_interval());
        self.timer_reason = TimerReason::Silence;
    }

    /// Advances timers. Call when `now >= poll_timeout()`; earlier calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(deadline) = self.timer else { return };
        if now < deadline {
            return;
        }
        match self.state {
            State::Backup => {
                let reason = match self.timer_reason {
                    TimerReason::PriorityZero => Reason::MasterLeft,
                    TimerReason::Silence => Reason::MasterDown {
                        interval: self.master_down_interval(),
                    },
                };
                if self.frozen {
                    // Maintenance: no automatic failover. Keep listening.
                    self.timer = Some(now + self.master_down_interval());
                    self.timer_reason = TimerReason::Silence;
                } else if self.veto.is_some() {
                    // Held back: stay BACKUP, keep listening, take over when the veto lifts.
                    self.held_takeover = Some(reason);
                    self.timer = Some(now + self.master_down_interval());
                    self.timer_reason = TimerReason::Silence;
                } else {
                    self.become_master(now, reason);
                }
            }
            State::Master => {
                self.send_advert(self.effective_priority());
                // Schedule from the deadline, not from `now`, so a late wake-up does not drift
                // the cadence; but never schedule into the past after a long pause.
                let next = deadline + self.cfg.advert_interval.duration();
                self.timer = Some(if next > now {
                    next
                } else {
                    now + self.cfg.advert_interval.duration()
                });
            }
            State::Initialize | State::Fault => self.timer = None,
        }
    }

    /// Applies new tracking results (scripts, interfaces, files).
    pub fn set_tracking(&mut self, now: Instant, tracked: TrackedHealth) {
        let was_fault = self.fault().is_some();
        let old_priority = self.effective_priority();
        self.tracking = tracked;
        self.after_health_change(now, was_fault, old_priority);
    }

    /// Sets or clears a fault imposed by the instance's sync group.
    pub fn set_group_fault(&mut self, now: Instant, fault: Option<String>) {
        if self.group_fault == fault {
            return;
        }
        let was_fault = self.fault().is_some();
        let old_priority = self.effective_priority();
        self.group_fault = fault;
        self.after_health_change(now, was_fault, old_priority);
    }

    fn after_health_change(&mut self, now: Instant, was_fault: bool, old_priority: u8) {
        if self.state == State::Initialize {
            return;
        }
        match (was_fault, self.fault().map(str::to_string)) {
            (false, Some(fault)) => {
                if self.state == State::Master {
                    self.leave_master(State::Fault, Reason::Fault(fault));
                } else {
                    self.transition(State::Fault, Reason::Fault(fault));
                }
                self.timer = None;
            }
            (true, None) => {
                self.enter_from_init(now, Reason::FaultCleared);
            }
            (true, Some(_)) => {}
            (false, None) => {
                // A master whose priority dropped advertises it at once, so a preempting backup
                // does not wait a whole interval to learn it.
                if self.state == State::Master && self.effective_priority() != old_priority {
                    self.send_advert(self.effective_priority());
                    self.timer = Some(now + self.cfg.advert_interval.duration());
                }
            }
        }
    }

    /// Sets or lifts the cluster layer's veto on MASTER. A vetoed MASTER steps down to BACKUP;
    /// a vetoed BACKUP whose master-down timer fires stays BACKUP and takes over as soon as
    /// the veto lifts (unless a master was heard meanwhile).
    pub fn set_veto(&mut self, now: Instant, veto: Option<String>) {
        if self.veto == veto {
            return;
        }
        self.veto = veto;
        match (&self.veto, self.state) {
            (Some(why), State::Master) => {
                let why = why.clone();
                self.leave_master(State::Backup, Reason::Vetoed(why));
                self.timer = Some(now + self.master_down_interval());
                self.timer_reason = TimerReason::Silence;
            }
            (None, State::Backup) => {
                if let Some(reason) = self.held_takeover.take() {
                    self.become_master(now, reason);
                }
            }
            _ => {}
        }
    }

    /// Another channel (the cluster heartbeat) reports that the master stopped being MASTER,
    /// e.g. its business link died and it says so over a dedicated link. A BACKUP then acts as
    /// on a priority-0 advert: it takes over after its skew time instead of the whole
    /// master-down interval (the veto still decides whether it may).
    pub fn master_left(&mut self, now: Instant) {
        if self.state != State::Backup {
            return;
        }
        let at = now + self.skew_time();
        if self.timer.is_none_or(|t| at < t) {
            self.master = None;
            self.timer = Some(at);
            self.timer_reason = TimerReason::PriorityZero;
        }
    }

    /// An operator's switchover: a MASTER hands over. It advertises priority 0 (the best
    /// backup takes over after its skew time), goes BACKUP, and does not preempt a serving
    /// master afterwards; it takes over again only if nobody does (master down). Returns
    /// whether it was MASTER.
    pub fn hand_over(&mut self, now: Instant) -> bool {
        if self.state != State::Master {
            return false;
        }
        self.send_advert(0);
        self.yielding = true;
        self.leave_master(State::Backup, Reason::HandOver);
        self.timer = Some(now + self.master_down_interval());
        self.timer_reason = TimerReason::Silence;
        true
    }

    /// Whether this instance handed over and does not preempt now.
    pub fn yielding(&self) -> bool {
        self.yielding
    }

    /// Maintenance on or off: while on, this instance never takes over (a MASTER stays one;
    /// a BACKUP neither preempts nor takes over when the master falls silent). Faults and
    /// the cluster's vetoes still apply.
    pub fn set_frozen(&mut self, frozen: bool) {
        self.frozen = frozen;
    }

    /// The current veto, if any.
    pub fn veto(&self) -> Option<&str> {
        self.veto.as_deref()
    }

    /// Whether this instance is MASTER or would be but for the veto: the node then wants the
    /// witness lease.
    pub fn wants_master(&self) -> bool {
        self.state == State::Master || self.held_takeover.is_some()
    }

    /// Forces MASTER or BACKUP on behalf of a sync group. Ignored in FAULT and INIT.
    pub fn force_state(&mut self, now: Instant, to: State, reason: Reason) {
        if self.state == to || matches!(self.state, State::Fault | State::Initialize) {
            return;
        }
        match to {
            State::Master => self.become_master(now, reason),
            State::Backup => {
                self.leave_master(State::Backup, reason);
                self.timer = Some(now + self.master_down_interval());
                self.timer_reason = TimerReason::Silence;
            }
            State::Fault | State::Initialize => {}
        }
    }

    fn become_master(&mut self, now: Instant, reason: Reason) {
        if let Some(why) = &self.veto {
            // Never MASTER under a veto (sync groups and address owners included).
            let why = why.clone();
            self.held_takeover = Some(reason);
            if self.state != State::Backup {
                self.become_backup(now, Reason::Vetoed(why));
            }
            return;
        }
        self.held_takeover = None;
        self.yielding = false;
        self.transition(State::Master, reason);
        self.stats.became_master += 1;
        self.master = None;
        self.lower_master_since = None;
        self.send_advert(self.effective_priority());
        self.actions.push_back(Action::AddVips);
        self.actions.push_back(Action::Announce);
        self.timer = Some(now + self.cfg.advert_interval.duration());
    }

    fn become_backup(&mut self, now: Instant, reason: Reason) {
        self.master_adver_interval = self.cfg.advert_interval;
        self.transition(State::Backup, reason);
        self.timer = Some(now + self.master_down_interval());
        self.timer_reason = TimerReason::Silence;
    }

    /// Leaves MASTER (if in it) for `to`. A master going to FAULT is not overruled by anyone, so
    /// it sends priority 0: backups take over after their skew time instead of 3 intervals.
    fn leave_master(&mut self, to: State, reason: Reason) {
        if self.state == State::Master && to == State::Fault {
            self.send_advert(0);
        }
        self.transition(to, reason);
    }

    fn transition(&mut self, to: State, reason: Reason) {
        let from = self.state;
        if from == to {
            return;
        }
        if to != State::Backup {
            self.held_takeover = None;
        }
        self.state = to;
        self.actions
            .push_back(Action::Transition { from, to, reason });
        if from == State::Master {
            self.actions.push_back(Action::RemoveVips);
        }
    }

    fn send_advert(&mut self, priority: u8) {
        self.stats.adverts_sent += 1;
        if priority == 0 {
            self.stats.priority_zero_sent += 1;
        }
        self.transmits.push_back(Advert {
            version: self.cfg.version,
            vrid: self.cfg.vrid,
            priority,
            interval: self.cfg.advert_interval,
            addresses: self.cfg.vips.clone(),
        });
    }
}

/// Compares addresses as unsigned integers in network byte order (RFC 9568 §6.4.3).
fn ip_greater(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a.octets() > b.octets(),
        (IpAddr::V6(a), IpAddr::V6(b)) => a.octets() > b.octets(),
        _ => false,
    }
}

#[cfg(test)]
mod veto_tests {
    use super::*;
    use crate::packet::{AdvertInterval, Version, Vrid};

    fn ms(n: u64) -> Instant {
        Instant::from_nanos(n * 1_000_000)
    }

    pub(super) fn instance(priority: u8) -> Instance {
        Instance::new(InstanceConfig {
            name: "web".into(),
            vrid: Vrid::new(51).unwrap(),
            version: Version::V3,
            priority,
            advert_interval: AdvertInterval::from_centis(10).unwrap(),
            preempt: true,
            preempt_delay: Duration::ZERO,
            vips: vec!["10.0.0.100".parse().unwrap()],
            primary_address: "10.0.0.1".parse().unwrap(),
        })
    }

    /// An advert from another router of VRID 51 at `priority`.
    pub(super) fn peer_advert(priority: u8) -> Advert {
        Advert {
            version: Version::V3,
            vrid: Vrid::new(51).unwrap(),
            priority,
            interval: AdvertInterval::from_centis(10).unwrap(),
            addresses: vec!["10.0.0.100".parse().unwrap()],
        }
    }

    fn transitions(i: &mut Instance) -> Vec<(State, State)> {
        std::iter::from_fn(|| i.poll_action())
            .filter_map(|a| match a {
                Action::Transition { from, to, .. } => Some((from, to)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_vetoed_backup_holds_its_takeover_until_the_veto_lifts() {
        let mut i = instance(100);
        i.start(ms(0));
        i.set_veto(ms(0), Some("no quorum".into()));
        transitions(&mut i);
        // Silence: the master-down timer fires, but the instance stays BACKUP.
        let t = i.poll_timeout().unwrap();
        i.handle_timeout(t);
        assert_eq!(i.state(), State::Backup);
        assert!(i.wants_master(), "the node should ask for the lease");
        assert!(transitions(&mut i).is_empty());
        // The veto lifts (lease granted): MASTER at once.
        i.set_veto(t, None);
        assert_eq!(i.state(), State::Master);
        assert_eq!(transitions(&mut i), [(State::Backup, State::Master)]);
    }

    #[test]
    fn a_vetoed_master_steps_down_and_an_advert_cancels_a_held_takeover() {
        let mut i = instance(100);
        i.start(ms(0));
        let t = i.poll_timeout().unwrap();
        i.handle_timeout(t);
        assert_eq!(i.state(), State::Master);
        transitions(&mut i);
        i.set_veto(t, Some("lease lost".into()));
        assert_eq!(i.state(), State::Backup);
        let actions: Vec<Action> = std::iter::from_fn(|| i.poll_action()).collect();
        assert!(actions.contains(&Action::RemoveVips), "{actions:?}");
        // Held takeover, then a master's advert arrives: nothing is pending any more.
        let t2 = i.poll_timeout().unwrap();
        i.handle_timeout(t2);
        assert!(i.wants_master());
        let advert = peer_advert(150);
        i.handle_advert(t2, "10.0.0.2".parse().unwrap(), &advert)
            .unwrap();
        assert!(!i.wants_master());
        i.set_veto(t2, None);
        assert_eq!(i.state(), State::Backup, "a master serves: no takeover");
    }

    #[test]
    fn a_master_reported_gone_elsewhere_is_replaced_after_the_skew_time() {
        let mut i = instance(100);
        i.start(ms(0));
        let advert = peer_advert(150);
        i.handle_advert(ms(50), "10.0.0.2".parse().unwrap(), &advert)
            .unwrap();
        // Master down would be 3 × 100 ms + skew after the advert.
        assert_eq!(i.poll_timeout(), Some(ms(50) + i.master_down_interval()));
        i.master_left(ms(100));
        let skew = i.skew_time();
        assert_eq!(i.poll_timeout(), Some(ms(100) + skew));
        // A second report does not push the takeover back.
        i.master_left(ms(120));
        assert_eq!(i.poll_timeout(), Some(ms(100) + skew));
        i.handle_timeout(ms(100) + skew);
        assert_eq!(i.state(), State::Master);
        // A MASTER is not affected.
        i.master_left(ms(500));
        assert_eq!(i.state(), State::Master);
    }

    #[test]
    fn a_master_hearing_a_lower_master_announces_its_vips_again() {
        let mut i = instance(150);
        i.start(ms(0));
        let t = i.poll_timeout().unwrap();
        i.handle_timeout(t);
        assert_eq!(i.state(), State::Master);
        while i.poll_action().is_some() {}
        let lower = peer_advert(100);
        i.handle_advert(t, "10.0.0.2".parse().unwrap(), &lower)
            .unwrap();
        assert_eq!(i.state(), State::Master);
        assert_eq!(i.poll_action(), Some(Action::Announce));
    }

    #[test]
    fn even_the_address_owner_waits_for_the_veto() {
        let mut i = instance(255);
        i.set_veto(ms(0), Some("no quorum".into()));
        i.start(ms(0));
        assert_eq!(i.state(), State::Backup);
        i.set_veto(ms(1), None);
        assert_eq!(i.state(), State::Master);
    }
}

#[cfg(test)]
mod operator_tests {
    use super::veto_tests::{instance, peer_advert as advert};
    use super::*;

    fn master(priority: u8) -> (Instance, Instant) {
        let mut i = instance(priority);
        i.start(Instant::ZERO);
        let t = i.poll_timeout().unwrap();
        i.handle_timeout(t);
        assert_eq!(i.state(), State::Master);
        while i.poll_action().is_some() {}
        while i.poll_transmit().is_some() {}
        (i, t)
    }

    const PEER: &str = "10.0.0.2";

    #[test]
    fn a_handed_over_master_says_priority_zero_and_does_not_preempt_back() {
        let (mut i, t) = master(150);
        assert!(i.hand_over(t));
        assert_eq!(i.state(), State::Backup);
        let sent: Vec<Advert> = std::iter::from_fn(|| i.poll_transmit()).collect();
        assert_eq!(sent.iter().map(|a| a.priority).collect::<Vec<_>>(), [0]);
        let actions: Vec<Action> = std::iter::from_fn(|| i.poll_action()).collect();
        assert!(actions.contains(&Action::RemoveVips), "{actions:?}");
        assert!(actions.iter().any(|a| matches!(
            a,
            Action::Transition {
                reason: Reason::HandOver,
                ..
            }
        )));
        // The peer (priority 100, lower) takes over and advertises: no preemption back.
        for n in 1..20u64 {
            let now = t + Duration::from_millis(100 * n);
            i.handle_advert(now, PEER.parse().unwrap(), &advert(100))
                .unwrap();
            if let Some(d) = i.poll_timeout().filter(|d| *d <= now) {
                i.handle_timeout(d);
            }
            assert_eq!(i.state(), State::Backup, "at {n}");
        }
        assert!(i.yielding());
        // The peer dies: nobody serves, so this one takes over again, and preempts normally
        // afterwards.
        let d = i.poll_timeout().unwrap();
        i.handle_timeout(d);
        assert_eq!(i.state(), State::Master);
        assert!(!i.yielding());
    }

    #[test]
    fn a_frozen_backup_takes_nothing_over_until_thawed() {
        let mut i = instance(150);
        i.start(Instant::ZERO);
        i.set_frozen(true);
        // A lower-priority master: no preemption.
        let t = Instant::ZERO + Duration::from_millis(10);
        i.handle_advert(t, PEER.parse().unwrap(), &advert(100))
            .unwrap();
        // Silence for many master-down intervals: still BACKUP, not even asking for the lease.
        for _ in 0..10 {
            let d = i.poll_timeout().unwrap();
            i.handle_timeout(d);
            assert_eq!(i.state(), State::Backup);
            assert!(!i.wants_master());
        }
        // A master leaving with priority 0: still nothing.
        let d = i.poll_timeout().unwrap();
        i.handle_advert(d, PEER.parse().unwrap(), &advert(0))
            .unwrap();
        let d = i.poll_timeout().unwrap();
        i.handle_timeout(d);
        assert_eq!(i.state(), State::Backup);
        // Maintenance off: the next master-down takes over.
        i.set_frozen(false);
        let d = i.poll_timeout().unwrap();
        i.handle_timeout(d);
        assert_eq!(i.state(), State::Master);
    }
}
