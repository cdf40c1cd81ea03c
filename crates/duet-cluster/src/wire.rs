//! Cluster messages on the wire: heartbeats and witness lease traffic, authenticated with
//! HMAC-SHA256 over a shared key and protected against replay.
//!
//! Layout (integers big-endian):
//!
//! ```text
//! magic "dUeT" | version 1 | kind | name length, name | boot u64 | seq u64 | sent_ms u64 |
//! term u64 | body length u16, body | HMAC-SHA256 tag (32 bytes, over everything before it)
//! ```
//!
//! `boot` is random per process start and `seq` rises with every message of that boot, so a
//! receiver accepts each (sender, boot, seq) at most once and in order ([`ReplayGuard`]).
//! `sent_ms` is the sender's wall clock: a message outside the receiver's window (clocks are
//! expected to be NTP-synchronised; the window is generous) is refused, which stops the replay
//! of a captured message from an earlier boot.

use ring::hmac;

/// Message kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// "I am alive", sent on every link every interval.
    Heartbeat(Heartbeat),
    /// A node asks the witness for the lease (or renews it).
    LeaseRequest {
        /// Matches the answer to the request.
        request: u64,
        /// How long the lease should last, from the witness's receipt.
        duration_ms: u32,
    },
    /// The witness grants the lease to the sender of `request`.
    LeaseGranted {
        /// The request answered.
        request: u64,
        /// Lease length granted.
        duration_ms: u32,
    },
    /// The witness refuses: another node holds the lease.
    LeaseRefused {
        /// The request answered.
        request: u64,
        /// Who holds it.
        holder: String,
        /// For at most this long from now (the witness's view).
        remaining_ms: u32,
    },
    /// The witness cannot grant anyone a lease now (it cannot keep its promise, e.g. its
    /// state file cannot be written), and says why.
    LeaseUnavailable {
        /// The request answered.
        request: u64,
        /// Why, for the nodes' status and logs.
        reason: String,
    },
    /// The lease holder asks the witness to keep this database record.
    RecordWrite {
        /// Matches the answer.
        request: u64,
        /// The record.
        record: DbRecord,
    },
    /// A piece of the sender's cluster-wide config (`duet_config::drift`), sent to peers
    /// whose heartbeats carry another config hash, so that `duet diff-config` can show what
    /// differs. `index` of `total` pieces of the view whose hash is `hash`.
    ConfigChunk {
        /// The view's hash.
        hash: u64,
        /// This piece.
        index: u16,
        /// Pieces in all.
        total: u16,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// Any node asks the witness for its database record (answered with [`Body::Record`] when
    /// one exists): a standby with no primary in sight learns whether it may be promoted.
    RecordQuery {
        /// Matches the answer.
        request: u64,
    },
    /// The witness's database record: the answer to a [`Body::RecordWrite`] (`request` its
    /// id; the record equals the one written if it was kept), and sent after every lease
    /// answer while a record exists (`request` 0).
    Record {
        /// The write answered, or 0.
        request: u64,
        /// What the witness keeps now.
        record: DbRecord,
    },
}

/// The database record a lease authority keeps: who is (or last was) primary and which
/// standby holds every commit it acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbRecord {
    /// The database cluster's system identifier.
    pub system_id: u64,
    /// The primary's node name.
    pub primary: String,
    /// The standby with every acknowledged commit; empty: none.
    pub standby: String,
    /// The lease term it was written under.
    pub term: u64,
}

/// A node's database as its heartbeats report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbState {
    /// Role code (`duet_dbfail::Role::code`).
    pub role: u8,
    /// Its server stopped cleanly at `lsn`.
    pub clean_stop: bool,
    /// Where its server listens.
    pub listen: std::net::SocketAddr,
    /// System identifier of its data (0: none).
    pub system_id: u64,
    /// Timeline.
    pub timeline: u32,
    /// WAL position (primary: flushed; standby: received; stopped: final checkpoint).
    pub lsn: u64,
}

/// Most bytes of config view in one [`Body::ConfigChunk`] (the datagram stays under 1 280).
pub const MAX_CHUNK: usize = 1000;

/// Longest `LeaseUnavailable` reason carried (longer ones are cut at a character boundary).
pub const MAX_REASON: usize = 200;

/// What a heartbeat says about its sender.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Heartbeat {
    /// Index of the link (in the sender's `[heartbeat] links`) it was sent on.
    pub link: u8,
    /// Whether the sender's business link (its first link's interface) is up.
    pub business_up: bool,
    /// The sender stops (its last heartbeat): it has given up its VIPs and votes; peers may
    /// count it gone at once instead of waiting for silence.
    pub leaving: bool,
    /// Per VRRP instance: (vrid, state, effective priority).
    pub instances: Vec<InstanceReport>,
    /// Non-zero: the sender asks for votes; the id to echo in a grant.
    pub ask: u64,
    /// The sender's vote, if it gives one.
    pub grant: Option<Grant>,
    /// The sender's database, when it runs one (absent: the heartbeat is byte for byte what
    /// a node without `[database]` sends).
    pub database: Option<DbState>,
    /// The maintenance setting the sender knows, once any was made (absent before: nodes
    /// that never saw maintenance send what earlier builds send).
    pub maintenance: Option<Maintenance>,
    /// Per peer heard on this link: its latest heartbeat here, echoed so that it can time
    /// the round trip (empty: the heartbeat is what earlier builds send).
    pub echo: Vec<Echo>,
    /// Per VRRP instance with `[[service]]`s: (vrid, what the sender holds: 0 nothing, 1
    /// running or changing, 2 a stop failed). A peer waits for 0 before it starts them.
    pub services: Vec<(u8, u8)>,
    /// The hash of the sender's cluster-wide config (`duet_config::drift`).
    pub config_hash: Option<u64>,
}

/// A heartbeat echoed back to its sender: `boot` and `seq` name it, `held_us` is how long
/// the echoing node held it before this reply left, so that the sender's round trip
/// (its own clock: sent to echoed back) minus `held_us` is the network's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo {
    /// The echoed heartbeat's sender's boot.
    pub boot: u64,
    /// Its sequence number.
    pub seq: u64,
    /// Microseconds between its arrival and this reply's sending.
    pub held_us: u32,
}

/// Most echoes one heartbeat carries (one per peer heard on the link).
pub const MAX_ECHOES: usize = 16;

/// Maintenance (automatic failover off, cluster-wide) as heartbeats carry it: every node
/// adopts the setting with the highest version it hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maintenance {
    /// Automatic failover is off.
    pub enabled: bool,
    /// Orders settings: one more than the highest heard when an operator changes it.
    pub version: u64,
    /// Who asked (a token's name), for the status.
    pub by: String,
}

/// A vote in a heartbeat: a promise not to become MASTER for `duration_ms` from its sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The node voted for.
    pub to: String,
    /// The ask it answers.
    pub ask: u64,
    /// How long the promise lasts.
    pub duration_ms: u32,
}

/// One VRRP instance as a heartbeat reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceReport {
    /// Virtual router id.
    pub vrid: u8,
    /// Whether the sender holds it as MASTER.
    pub master: bool,
    /// Whether the sender would take it over but is held back (it waits for the current
    /// master to yield).
    pub wants: bool,
    /// Effective priority.
    pub priority: u8,
}

/// A whole message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Sender's node name.
    pub sender: String,
    /// Sender's boot id.
    pub boot: u64,
    /// Sender's message counter within the boot.
    pub seq: u64,
    /// Sender's wall clock, Unix milliseconds.
    pub sent_ms: u64,
    /// The sender's current term (fencing token).
    pub term: u64,
    /// What it says.
    pub body: Body,
}

/// Why a datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than its fields say.
    Truncated,
    /// Not a duet cluster message.
    BadMagic,
    /// A version this build does not speak.
    BadVersion,
    /// Unknown kind or malformed body.
    Malformed,
    /// The tag does not match: wrong key or altered.
    BadTag,
    /// Seen before, or older than one already accepted.
    Replayed,
    /// Sent too far from our clock.
    OutOfWindow,
}

impl WireError {
    /// A short label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            WireError::Truncated => "truncated",
            WireError::BadMagic => "magic",
            WireError::BadVersion => "version",
            WireError::Malformed => "malformed",
            WireError::BadTag => "auth",
            WireError::Replayed => "replay",
            WireError::OutOfWindow => "clock",
        }
    }
}

const MAGIC: &[u8; 4] = b"dUeT";
const VERSION: u8 = 1;
const TAG_LEN: usize = 32;
/// Longest node name on the wire.
pub const MAX_NAME: usize = 64;

/// The shared secret.
#[derive(Clone)]
pub struct Key(hmac::Key);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// A key from the key file's bytes (at least 16).
    pub fn new(secret: &[u8]) -> Result<Key, String> {
        if secret.len() < 16 {
            return Err(format!(
                "the cluster key has {} bytes; at least 16 are needed",
                secret.len()
            ));
        }
        Ok(Key(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }
}

/// Encodes and signs `msg`.
pub fn encode(msg: &Message, key: &Key) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    let kind = match msg.body {
        Body::Heartbeat(_) => 1,
        Body::LeaseRequest { .. } => 2,
        Body::LeaseGranted { .. } => 3,
        Body::LeaseRefused { .. } => 4,
        Body::LeaseUnavailable { .. } => 5,
        Body::RecordWrite { .. } => 6,
        Body::Record { .. } => 7,
        Body::RecordQuery { .. } => 8,
        Body::ConfigChunk { .. } => 9,
    };
    out.push(kind);
    put_name(&mut out, &msg.sender);
    out.extend_from_slice(&msg.boot.to_be_bytes());
    out.extend_from_slice(&msg.seq.to_be_bytes());
    out.extend_from_slice(&msg.sent_ms.to_be_bytes());
    out.extend_from_slice(&msg.term.to_be_bytes());
    let mut body = Vec::with_capacity(32);
    match &msg.body {
        Body::Heartbeat(h) => {
            body.push(h.link);
            body.push(u8::from(h.business_up) | (u8::from(h.leaving) << 1));
            body.push(h.instances.len().min(255) as u8);
            for i in h.instances.iter().take(255) {
                let flags = u8::from(i.master) | (u8::from(i.wants) << 1);
                body.extend_from_slice(&[i.vrid, flags, i.priority]);
            }
            body.extend_from_slice(&h.ask.to_be_bytes());
            match &h.grant {
                None => body.push(0),
                Some(g) => {
                    body.push(1);
                    put_name(&mut body, &g.to);
                    body.extend_from_slice(&g.ask.to_be_bytes());
                    body.extend_from_slice(&g.duration_ms.to_be_bytes());
                }
            }
            if let Some(d) = &h.database {
                body.push(1);
                body.push(d.role);
                body.push(u8::from(d.clean_stop));
                body.extend_from_slice(&d.system_id.to_be_bytes());
                body.extend_from_slice(&d.timeline.to_be_bytes());
                body.extend_from_slice(&d.lsn.to_be_bytes());
                match d.listen.ip() {
                    std::net::IpAddr::V4(a) => {
                        body.push(4);
                        body.extend_from_slice(&a.octets());
                    }
                    std::net::IpAddr::V6(a) => {
                        body.push(6);
                        body.extend_from_slice(&a.octets());
                    }
                }
                body.extend_from_slice(&d.listen.port().to_be_bytes());
            }
            if let Some(m) = &h.maintenance {
                body.push(2);
                body.push(u8::from(m.enabled));
                body.extend_from_slice(&m.version.to_be_bytes());
                put_name(&mut body, &m.by);
            }
            if !h.echo.is_empty() {
                let n = h.echo.len().min(MAX_ECHOES);
                body.push(3);
                body.extend_from_slice(&((1 + n * 20) as u16).to_be_bytes());
                body.push(n as u8);
                for e in &h.echo[..n] {
                    body.extend_from_slice(&e.boot.to_be_bytes());
                    body.extend_from_slice(&e.seq.to_be_bytes());
                    body.extend_from_slice(&e.held_us.to_be_bytes());
                }
            }
            if !h.services.is_empty() {
                let n = h.services.len().min(255);
                body.push(4);
                body.extend_from_slice(&((1 + n * 2) as u16).to_be_bytes());
                body.push(n as u8);
                for (vrid, holding) in &h.services[..n] {
                    body.extend_from_slice(&[*vrid, *holding]);
                }
            }
            if let Some(hash) = h.config_hash {
                body.push(5);
                body.extend_from_slice(&8u16.to_be_bytes());
                body.extend_from_slice(&hash.to_be_bytes());
            }
        }
        Body::RecordQuery { request } => body.extend_from_slice(&request.to_be_bytes()),
        Body::ConfigChunk {
            hash,
            index,
            total,
            data,
        } => {
            body.extend_from_slice(&hash.to_be_bytes());
            body.extend_from_slice(&index.to_be_bytes());
            body.extend_from_slice(&total.to_be_bytes());
            body.extend_from_slice(&data[..data.len().min(MAX_CHUNK)]);
        }
        Body::RecordWrite { request, record } | Body::Record { request, record } => {
            body.extend_from_slice(&request.to_be_bytes());
            body.extend_from_slice(&record.system_id.to_be_bytes());
            body.extend_from_slice(&record.term.to_be_bytes());
            put_name(&mut body, &record.primary);
            put_name(&mut body, &record.standby);
        }
        Body::LeaseRequest {
            request,
            duration_ms,
        }
        | Body::LeaseGranted {
            request,
            duration_ms,
        } => {
            body.extend_from_slice(&request.to_be_bytes());
            body.extend_from_slice(&duration_ms.to_be_bytes());
        }
        Body::LeaseRefused {
            request,
            holder,
            remaining_ms,
        } => {
            body.extend_from_slice(&request.to_be_bytes());
            body.extend_from_slice(&remaining_ms.to_be_bytes());
            put_name(&mut body, holder);
        }
        Body::LeaseUnavailable { request, reason } => {
            body.extend_from_slice(&request.to_be_bytes());
            let mut end = reason.len().min(MAX_REASON);
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            body.push(end as u8);
            body.extend_from_slice(&reason.as_bytes()[..end]);
        }
    }
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
    let tag = hmac::sign(&key.0, &out);
    out.extend_from_slice(tag.as_ref());
    out
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    let b = &name.as_bytes()[..name.len().min(MAX_NAME)];
    out.push(b.len() as u8);
    out.extend_from_slice(b);
}

/// A heartbeat's database section (after its tag).
fn db_state(b: &mut Reader<'_>) -> Result<DbState, WireError> {
    let role = b.u8()?;
    let clean_stop = match b.u8()? {
        0 => false,
        1 => true,
        _ => return Err(WireError::Malformed),
    };
    let system_id = b.u64()?;
    let timeline = b.u32()?;
    let lsn = b.u64()?;
    let ip: std::net::IpAddr = match b.u8()? {
        4 => <[u8; 4]>::try_from(b.take(4)?)
            .map_err(|_| WireError::Malformed)?
            .into(),
        6 => <[u8; 16]>::try_from(b.take(16)?)
            .map_err(|_| WireError::Malformed)?
            .into(),
        _ => return Err(WireError::Malformed),
    };
    let port = b.u16()?;
    Ok(DbState {
        role,
        clean_stop,
        listen: std::net::SocketAddr::new(ip, port),
        system_id,
        timeline,
        lsn,
    })
}

/// A heartbeat's echo section (its value, after tag and length).
fn echoes(v: &mut Reader<'_>) -> Result<Vec<Echo>, WireError> {
    let n = usize::from(v.u8()?);
    if n > MAX_ECHOES || v.0.len() != n * 20 {
        return Err(WireError::Malformed);
    }
    (0..n)
        .map(|_| {
            Ok(Echo {
                boot: v.u64()?,
                seq: v.u64()?,
                held_us: v.u32()?,
            })
        })
        .collect()
}

/// A cursor over a datagram.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().unwrap_or_default(),
        ))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }
    fn name(&mut self) -> Result<String, WireError> {
        let n = usize::from(self.u8()?);
        if n > MAX_NAME {
            return Err(WireError::Malformed);
        }
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| WireError::Malformed)
    }
}

/// Checks the tag and decodes. Replay and clock checks are the receiver's
/// ([`ReplayGuard::admit`]), since they need its state and clock.
pub fn decode(datagram: &[u8], key: &Key) -> Result<Message, WireError> {
    if datagram.len() < MAGIC.len() + 2 + TAG_LEN {
        return Err(WireError::Truncated);
    }
    if &datagram[..4] != MAGIC {
        return Err(WireError::BadMagic);
    }
    if datagram[4] != VERSION {
        return Err(WireError::BadVersion);
    }
    let (signed, tag) = datagram.split_at(datagram.len() - TAG_LEN);
    hmac::verify(&key.0, signed, tag).map_err(|_| WireError::BadTag)?;
    let mut r = Reader(&signed[5..]);
    let kind = r.u8()?;
    let sender = r.name()?;
    let boot = r.u64()?;
    let seq = r.u64()?;
    let sent_ms = r.u64()?;
    let term = r.u64()?;
    let len = usize::from(r.u16()?);
    let mut b = Reader(r.take(len)?);
    if !r.0.is_empty() {
        return Err(WireError::Malformed);
    }
    let body = match kind {
        1 => {
            let link = b.u8()?;
            let state = b.u8()?;
            if state & !0b11 != 0 {
                return Err(WireError::Malformed);
            }
            let (business_up, leaving) = (state & 1 != 0, state & 2 != 0);
            let n = b.u8()?;
            let mut instances = Vec::with_capacity(usize::from(n));
            for _ in 0..n {
                let x = b.take(3)?;
                if x[1] & !0b11 != 0 {
                    return Err(WireError::Malformed);
                }
                instances.push(InstanceReport {
                    vrid: x[0],
                    master: x[1] & 1 != 0,
                    wants: x[1] & 2 != 0,
                    priority: x[2],
                });
            }
            let ask = b.u64()?;
            let grant = match b.u8()? {
                0 => None,
                1 => Some(Grant {
                    to: b.name()?,
                    ask: b.u64()?,
                    duration_ms: b.u32()?,
                }),
                _ => return Err(WireError::Malformed),
            };
            // Optional sections, each at most once and in rising order: 1 the database,
            // 2 maintenance, then sections with a length (tag, u16 length, value): 3 echoes,
            // 4 services, 5 the config hash.
            // Unknown sections with a length are skipped, so a later build can add one
            // without its heartbeats being refused here.
            let mut database = None;
            let mut maintenance = None;
            let mut echo = Vec::new();
            let mut services = Vec::new();
            let mut config_hash = None;
            let mut last = 0;
            while !b.0.is_empty() {
                let tag = b.u8()?;
                if tag <= last {
                    return Err(WireError::Malformed);
                }
                last = tag;
                match tag {
                    1 => database = Some(db_state(&mut b)?),
                    2 => {
                        let enabled = match b.u8()? {
                            0 => false,
                            1 => true,
                            _ => return Err(WireError::Malformed),
                        };
                        maintenance = Some(Maintenance {
                            enabled,
                            version: b.u64()?,
                            by: b.name()?,
                        });
                    }
                    _ => {
                        let len = usize::from(b.u16()?);
                        let mut v = Reader(b.take(len)?);
                        if tag == 3 {
                            echo = echoes(&mut v)?;
                        } else if tag == 4 {
                            let n = usize::from(v.u8()?);
                            if v.0.len() != n * 2 {
                                return Err(WireError::Malformed);
                            }
                            services = v.0.chunks(2).map(|c| (c[0], c[1])).collect();
                        } else if tag == 5 {
                            config_hash = Some(v.u64()?);
                        }
                    }
                }
            }
            Body::Heartbeat(Heartbeat {
                link,
                business_up,
                leaving,
                instances,
                ask,
                grant,
                database,
                maintenance,
                echo,
                services,
                config_hash,
            })
        }
        9 => {
            let hash = b.u64()?;
            let index = b.u16()?;
            let total = b.u16()?;
            if index >= total || b.0.len() > MAX_CHUNK {
                return Err(WireError::Malformed);
            }
            Body::ConfigChunk {
                hash,
                index,
                total,
                data: std::mem::take(&mut b.0).to_vec(),
            }
        }
        8 => Body::RecordQuery { request: b.u64()? },
        6 | 7 => {
            let request = b.u64()?;
            let record = DbRecord {
                system_id: b.u64()?,
                term: b.u64()?,
                primary: b.name()?,
                standby: b.name()?,
            };
            if kind == 6 {
                Body::RecordWrite { request, record }
            } else {
                Body::Record { request, record }
            }
        }
        2 | 3 => {
            let request = b.u64()?;
            let duration_ms = b.u32()?;
            if kind == 2 {
                Body::LeaseRequest {
                    request,
                    duration_ms,
                }
            } else {
                Body::LeaseGranted {
                    request,
                    duration_ms,
                }
            }
        }
        4 => Body::LeaseRefused {
            request: b.u64()?,
            remaining_ms: b.u32()?,
            holder: b.name()?,
        },
        5 => {
            let request = b.u64()?;
            let n = usize::from(b.u8()?);
            if n > MAX_REASON {
                return Err(WireError::Malformed);
            }
            let reason = std::str::from_utf8(b.take(n)?)
                .map_err(|_| WireError::Malformed)?
                .to_string();
            Body::LeaseUnavailable { request, reason }
        }
        _ => return Err(WireError::Malformed),
    };
    if !b.0.is_empty() {
        return Err(WireError::Malformed);
    }
    Ok(Message {
        sender,
        boot,
        seq,
        sent_ms,
        term,
        body,
    })
}

/// Per-sender replay state of a receiver.
#[derive(Debug, Clone, Default)]
pub struct ReplayGuard {
    senders: Vec<SenderState>,
    /// Largest accepted distance between a sender's clock and ours.
    window_ms: u64,
}

#[derive(Debug, Clone)]
struct SenderState {
    name: String,
    boot: u64,
    seq: u64,
    /// The sent_ms of the first message of this boot: an older boot's messages are older.
    boot_started_ms: u64,
}

impl ReplayGuard {
    /// A guard accepting clocks up to `window_ms` apart.
    pub fn new(window_ms: u64) -> ReplayGuard {
        ReplayGuard {
            senders: Vec::new(),
            window_ms,
        }
    }

    /// Accepts `msg` at our wall clock `now_ms` if it is new: within the clock window, and
    /// either later in its sender's current boot or from a newer boot.
    pub fn admit(&mut self, msg: &Message, now_ms: u64) -> Result<(), WireError> {
        if msg.sent_ms.abs_diff(now_ms) > self.window_ms {
            return Err(WireError::OutOfWindow);
        }
        match self.senders.iter_mut().find(|s| s.name == msg.sender) {
            None => {
                self.senders.push(SenderState {
                    name: msg.sender.clone(),
                    boot: msg.boot,
                    seq: msg.seq,
                    boot_started_ms: msg.sent_ms,
                });
                Ok(())
            }
            Some(s) if s.boot == msg.boot => {
                if msg.seq <= s.seq {
                    return Err(WireError::Replayed);
                }
                s.seq = msg.seq;
                Ok(())
            }
            Some(s) => {
                // A restart brings a new boot id; a message of an earlier boot predates the
                // current boot's first message.
                if msg.sent_ms <= s.boot_started_ms {
                    return Err(WireError::Replayed);
                }
                s.boot = msg.boot;
                s.seq = msg.seq;
                s.boot_started_ms = msg.sent_ms;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::new(b"0123456789abcdef0123456789abcdef").unwrap()
    }

    fn heartbeat(seq: u64, sent_ms: u64) -> Message {
        Message {
            sender: "alpha".into(),
            boot: 7,
            seq,
            sent_ms,
            term: 3,
            body: Body::Heartbeat(Heartbeat {
                link: 1,
                business_up: true,
                leaving: true,
                instances: vec![InstanceReport {
                    vrid: 51,
                    master: true,
                    wants: false,
                    priority: 150,
                }],
                ask: 12,
                grant: Some(Grant {
                    to: "beta".into(),
                    ask: 40,
                    duration_ms: 2000,
                }),
                database: None,
                maintenance: None,
                echo: Vec::new(),
                services: Vec::new(),
                config_hash: None,
            }),
        }
    }

    /// The plain test heartbeat with `extra` bytes appended to its body (the body's length
    /// fixed, signed again): for sections written by hand.
    fn with_body_bytes(k: &Key, extra: &[u8]) -> Vec<u8> {
        let plain = encode(&heartbeat(1, 1000), k);
        let mut b = plain[..plain.len() - 32].to_vec();
        // The body's length (u16) follows magic, version, kind, the sender and four u64s.
        let len_at = 4 + 1 + 1 + 1 + heartbeat(1, 1000).sender.len() + 32;
        b.extend_from_slice(extra);
        let len = u16::from_be_bytes([b[len_at], b[len_at + 1]]) + extra.len() as u16;
        b[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
        let tag = ring::hmac::sign(&k.0, &b);
        b.extend_from_slice(tag.as_ref());
        b
    }

    fn heartbeat_body() -> Heartbeat {
        match heartbeat(1, 1000).body {
            Body::Heartbeat(h) => h,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_heartbeat_without_a_database_is_what_earlier_builds_send() {
        // Earlier builds refused trailing bytes: a node without [database] must not send any.
        let k = key();
        let bytes = encode(&heartbeat(1, 1000), &k);
        let with = Message {
            body: Body::Heartbeat(Heartbeat {
                database: Some(DbState {
                    role: 4,
                    clean_stop: false,
                    listen: "10.0.0.1:5432".parse().unwrap(),
                    system_id: 1,
                    timeline: 1,
                    lsn: 1,
                }),
                ..heartbeat_body()
            }),
            ..heartbeat(1, 1000)
        };
        assert_eq!(
            encode(&with, &k).len(),
            bytes.len() + 1 + 2 + 8 + 4 + 8 + 5 + 2
        );
        // A database section with a bad family or flag is malformed, not misread.
        let mut bad = encode(&with, &k);
        let family = bad.len() - 32 - 2 - 4 - 1;
        bad[family] = 5;
        let n = bad.len() - 32;
        let tag = ring::hmac::sign(&k.0, &bad[..n]);
        bad[n..].copy_from_slice(tag.as_ref());
        assert_eq!(decode(&bad, &k), Err(WireError::Malformed));
    }

    #[test]
    fn maintenance_rides_after_the_database_and_sections_come_once_in_order() {
        let k = key();
        let db = DbState {
            role: 4,
            clean_stop: false,
            listen: "10.0.0.1:5432".parse().unwrap(),
            system_id: 1,
            timeline: 1,
            lsn: 1,
        };
        let m = Maintenance {
            enabled: true,
            version: 7,
            by: "ops".into(),
        };
        for (database, maintenance) in [(None, Some(m.clone())), (Some(db), Some(m))] {
            let msg = Message {
                body: Body::Heartbeat(Heartbeat {
                    database,
                    maintenance,
                    ..heartbeat_body()
                }),
                ..heartbeat(1, 1000)
            };
            assert_eq!(decode(&encode(&msg, &k), &k), Ok(msg));
        }
        // A section twice, out of order, or unknown: malformed.
        let section = [2u8, 1, 0, 0, 0, 0, 0, 0, 0, 7, 3, b'o', b'p', b's'];
        let with = |extra: &[u8]| with_body_bytes(&k, extra);
        // Made by hand, the section reads as written (so the refusals below are its rules).
        match decode(&with(&section), &k).map(|m| m.body) {
            Ok(Body::Heartbeat(h)) => assert_eq!(h.maintenance.unwrap().by, "ops"),
            other => panic!("{other:?}"),
        }
        for extra in [
            [&section[..], &section[..]].concat(),
            [&section[..], &[1u8][..]].concat(),
            vec![2u8, 2, 0, 0, 0, 0, 0, 0, 0, 7, 0],
        ] {
            assert_eq!(
                decode(&with(&extra), &k),
                Err(WireError::Malformed),
                "{extra:?}"
            );
        }
    }

    #[test]
    fn echoes_round_trip_and_later_sections_are_skipped() {
        let k = key();
        let echo = vec![
            Echo {
                boot: 9,
                seq: 41,
                held_us: 250,
            },
            Echo {
                boot: 10,
                seq: 3,
                held_us: u32::MAX,
            },
        ];
        let msg = Message {
            body: Body::Heartbeat(Heartbeat {
                maintenance: Some(Maintenance {
                    enabled: false,
                    version: 2,
                    by: "ops".into(),
                }),
                echo: echo.clone(),
                services: vec![(51, 1), (52, 2)],
                config_hash: Some(0x0123_4567_89ab_cdef),
                ..heartbeat_body()
            }),
            ..heartbeat(1, 1000)
        };
        let bytes = encode(&msg, &k);
        assert_eq!(decode(&bytes, &k), Ok(msg.clone()));
        assert_eq!(
            bytes.len(),
            encode(&heartbeat(1, 1000), &k).len() + 14 + 3 + 1 + 40 + 3 + 1 + 4 + 3 + 8
        );

        let with = |extra: &[u8]| with_body_bytes(&k, extra);
        let one = [
            3u8, 0, 21, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 41, 0, 0, 1, 0,
        ];
        match decode(&with(&one), &k).map(|m| m.body) {
            Ok(Body::Heartbeat(h)) => assert_eq!(
                h.echo,
                [Echo {
                    boot: 9,
                    seq: 41,
                    held_us: 256
                }]
            ),
            other => panic!("{other:?}"),
        }
        // A section a later build adds (tag 9, with its length) is skipped, after the echo or
        // alone: this build keeps hearing heartbeats from a newer one.
        for extra in [
            vec![9u8, 0, 2, 0xab, 0xcd],
            [&one[..], &[9u8, 0, 0][..]].concat(),
        ] {
            assert!(
                matches!(
                    decode(&with(&extra), &k).map(|m| m.body),
                    Ok(Body::Heartbeat(_))
                ),
                "{extra:?}"
            );
        }
        // Wrong count, a length past the body, out of order, twice: refused.
        let mut miscounted = one;
        miscounted[3] = 2;
        for extra in [
            miscounted.to_vec(),
            vec![3u8, 0, 200, 0],
            vec![3u8],
            [&[9u8, 0, 0][..], &one[..]].concat(),
            [&one[..], &one[..]].concat(),
        ] {
            assert!(decode(&with(&extra), &k).is_err(), "{extra:?}");
        }
    }

    #[test]
    fn every_kind_round_trips() {
        let k = key();
        let bodies = [
            heartbeat(1, 1000).body,
            Body::LeaseRequest {
                request: 9,
                duration_ms: 2000,
            },
            Body::LeaseGranted {
                request: 9,
                duration_ms: 2000,
            },
            Body::LeaseRefused {
                request: 9,
                holder: "beta".into(),
                remaining_ms: 1500,
            },
            Body::LeaseUnavailable {
                request: 9,
                reason: "cannot write its state file /var/lib/duet/witness.state: No space left"
                    .into(),
            },
            Body::RecordWrite {
                request: 10,
                record: DbRecord {
                    system_id: 7_443_000_000_000_000_001,
                    primary: "beta".into(),
                    standby: String::new(),
                    term: 12,
                },
            },
            Body::RecordQuery { request: 3 },
            Body::ConfigChunk {
                hash: 9,
                index: 1,
                total: 3,
                data: b"vrid = 51\n".to_vec(),
            },
            Body::Record {
                request: 0,
                record: DbRecord {
                    system_id: 1,
                    primary: "alpha".into(),
                    standby: "beta".into(),
                    term: 11,
                },
            },
            Body::Heartbeat(Heartbeat {
                database: Some(DbState {
                    role: 3,
                    clean_stop: false,
                    listen: "10.10.10.11:5432".parse().unwrap(),
                    system_id: 7_443_000_000_000_000_001,
                    timeline: 2,
                    lsn: 0x16_B374_D848,
                }),
                ..heartbeat_body()
            }),
            Body::Heartbeat(Heartbeat {
                database: Some(DbState {
                    role: 2,
                    clean_stop: true,
                    listen: "[fd00::11]:5432".parse().unwrap(),
                    system_id: 1,
                    timeline: 1,
                    lsn: 1,
                }),
                ..heartbeat_body()
            }),
        ];
        for body in bodies {
            let msg = Message {
                body,
                ..heartbeat(1, 1000)
            };
            assert_eq!(decode(&encode(&msg, &k), &k), Ok(msg));
        }
    }

    #[test]
    fn a_long_reason_is_cut_at_a_character_boundary() {
        let k = key();
        let msg = Message {
            body: Body::LeaseUnavailable {
                request: 1,
                reason: "é".repeat(150),
            },
            ..heartbeat(1, 1000)
        };
        let Ok(Message {
            body: Body::LeaseUnavailable { reason, .. },
            ..
        }) = decode(&encode(&msg, &k), &k)
        else {
            panic!("did not decode");
        };
        assert_eq!(reason, "é".repeat(MAX_REASON / 2));
    }

    #[test]
    fn a_wrong_key_or_a_flipped_bit_is_refused() {
        let k = key();
        let bytes = encode(&heartbeat(1, 1000), &k);
        let other = Key::new(b"another key, also long enough").unwrap();
        assert_eq!(decode(&bytes, &other), Err(WireError::BadTag));
        for i in 5..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(decode(&b, &k).is_err(), "bit flip at {i} accepted");
        }
        assert_eq!(decode(&bytes[..10], &k), Err(WireError::Truncated));
        assert_eq!(
            decode(
                b"GET / HTTP/1.1\r\n\r\n0123456789012345678901234567890123",
                &k
            ),
            Err(WireError::BadMagic)
        );
        assert!(Key::new(b"short").is_err());
    }

    #[test]
    fn replays_and_old_boots_are_refused() {
        let mut g = ReplayGuard::new(30_000);
        let now = 1_000_000;
        assert_eq!(g.admit(&heartbeat(5, now), now), Ok(()));
        assert_eq!(g.admit(&heartbeat(5, now), now), Err(WireError::Replayed));
        assert_eq!(g.admit(&heartbeat(4, now), now), Err(WireError::Replayed));
        assert_eq!(g.admit(&heartbeat(6, now + 50), now + 50), Ok(()));
        // A restart: new boot, counter from 1.
        let restarted = Message {
            boot: 8,
            ..heartbeat(1, now + 5_000)
        };
        assert_eq!(g.admit(&restarted, now + 5_000), Ok(()));
        // The old boot's later messages (captured and replayed) are older than the new boot.
        assert_eq!(
            g.admit(&heartbeat(99, now + 100), now + 5_100),
            Err(WireError::Replayed)
        );
        // Far from our clock: refused whatever its counter.
        let stale = Message {
            boot: 9,
            ..heartbeat(1, now - 60_000)
        };
        assert_eq!(g.admit(&stale, now + 5_200), Err(WireError::OutOfWindow));
    }

    proptest::proptest! {
        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = decode(&bytes, &key());
        }

        #[test]
        fn signed_garbage_bodies_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..64), kind in 0u8..9) {
            // A well-signed datagram with an arbitrary body must decode or be refused cleanly.
            let k = key();
            let mut out = Vec::new();
            out.extend_from_slice(MAGIC);
            out.push(VERSION);
            out.push(kind);
            put_name(&mut out, "x");
            out.extend_from_slice(&[0u8; 32]);
            out.extend_from_slice(&(body.len() as u16).to_be_bytes());
            out.extend_from_slice(&body);
            let tag = hmac::sign(&k.0, &out);
            out.extend_from_slice(tag.as_ref());
            let _ = decode(&out, &k);
        }
    }
}
