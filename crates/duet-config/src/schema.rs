//! The TOML schema: one struct per table, defaults as documented in `docs/config.md`.
//!
//! Values that have a fixed form (durations, VIPs, versions) are parsed into types that can only
//! hold valid values, so their errors point at the value itself. Rules that span several keys
//! live in [`crate::validate`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

/// A whole config file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node.
    pub node: NodeConfig,
    /// VRRP instances.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vrrp: Vec<VrrpConfig>,
    /// Track scripts by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub track_script: BTreeMap<String, TrackScriptConfig>,
    /// Sync groups by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sync_group: BTreeMap<String, SyncGroupConfig>,
    /// Load balancers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub balancer: Vec<BalancerConfig>,
    /// Heartbeats to the other nodes over one or more links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<HeartbeatConfig>,
    /// The witness that breaks ties in a two-node cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness: Option<WitnessConfig>,
    /// An external coordinator (etcd) that grants leadership instead of a witness or votes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordination: Option<CoordinationConfig>,
    /// The database server duet runs and fails over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<crate::database::DatabaseConfig>,
    /// Who may use the admin API, over HTTP or HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<crate::admin::AdminConfig>,
    /// Events told to people by webhook and email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<crate::admin::AlertsConfig>,
    /// Resources that run on the master of an instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service: Vec<crate::service::ServiceConfig>,
}

/// `[heartbeat]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// Time between heartbeats on each link.
    #[serde(default = "default_heartbeat_interval")]
    pub interval: Dur,
    /// A link is down after this many intervals of silence; the peer is dead when every link
    /// is down.
    #[serde(default = "default_misses")]
    pub misses: u32,
    /// Shared secret for HMAC-SHA256 (at least 16 bytes).
    pub key_file: PathBuf,
    /// The links, business network first; the same peers, in the same order, on each.
    pub links: Vec<LinkConfig>,
    /// Two nodes without a witness: `"safe"` or `"available"`.
    #[serde(default)]
    pub two_node_policy: TwoNodePolicy,
}

fn default_heartbeat_interval() -> Dur {
    Dur(Duration::from_millis(100))
}
fn default_misses() -> u32 {
    5
}

/// `{ local, peers }` in `heartbeat.links`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    /// This node's address on the link (UDP).
    pub local: SocketAddr,
    /// The other nodes' addresses on the link.
    pub peers: Vec<SocketAddr>,
}

/// `heartbeat.two_node_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TwoNodePolicy {
    /// A node that last saw a serving peer does not take over while it cannot hear it.
    #[default]
    Safe,
    /// keepalived's behaviour: take over; both may serve during a full partition.
    Available,
}

/// `[witness]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessConfig {
    /// Where `duet witness` listens (UDP).
    pub address: SocketAddr,
    /// Lease length; must exceed `node.vip_lifetime`.
    #[serde(default = "default_lease")]
    pub lease: Dur,
    /// Key file; default: the heartbeat's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

fn default_lease() -> Dur {
    Dur(Duration::from_secs(2))
}

/// `[coordination]`: leadership from etcd leases and transactions.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinationConfig {
    /// Only `"etcd"`.
    pub backend: CoordinationBackend,
    /// Client URLs of the etcd cluster (`http://` or `https://`), tried in order.
    pub endpoints: Vec<String>,
    /// Key prefix for this cluster; the leadership key is `{prefix}/leader`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Lease length (whole seconds, at least 2 s); must exceed `node.vip_lifetime`.
    #[serde(default = "default_etcd_lease")]
    pub lease: Dur,
    /// CA certificate(s) (PEM) that sign the etcd servers' certificates (`https://`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM), when etcd requires client certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

/// `coordination.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CoordinationBackend {
    /// etcd v3, through its JSON gateway.
    Etcd,
}

fn default_prefix() -> String {
    "/duet".into()
}

fn default_etcd_lease() -> Dur {
    Dur(Duration::from_secs(3))
}

/// `[node]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Node name, shown in status and logs.
    pub name: String,
    /// Admin API address.
    #[serde(default = "default_admin")]
    pub admin: SocketAddr,
    /// Host names clients may use for the admin API besides its IP and `localhost` (a request
    /// with another `Host` is refused: DNS rebinding).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admin_names: Vec<String>,
    /// Where duet keeps runtime state (VIP records for crash cleanup).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Kernel lifetime of VIPs, refreshed by the live daemon; `0s` = permanent.
    #[serde(default = "default_vip_lifetime")]
    pub vip_lifetime: Dur,
    /// Start a guardian process that removes the VIPs if the daemon dies.
    #[serde(default = "yes")]
    pub guardian: bool,
    /// File holding the operator token that every admin `POST` must present; absent: the admin
    /// API is read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_token_file: Option<PathBuf>,
}

impl Default for NodeConfig {
    fn default() -> NodeConfig {
        NodeConfig {
            name: String::new(),
            admin: default_admin(),
            admin_names: Vec::new(),
            state_dir: default_state_dir(),
            vip_lifetime: default_vip_lifetime(),
            guardian: true,
            operator_token_file: None,
        }
    }
}

/// `[[vrrp]]`: one virtual router.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VrrpConfig {
    /// Instance name.
    pub name: String,
    /// Interface the VIPs live on and adverts go out of.
    pub interface: String,
    /// Virtual router id, 1..=255.
    pub vrid: u8,
    /// Priority, 1..=255 (255 = address owner).
    pub priority: u8,
    /// 2 or 3.
    #[serde(default = "default_version")]
    pub version: u8,
    /// Advertisement interval.
    #[serde(default = "default_advert_interval")]
    pub advert_interval: Dur,
    /// Take over from a lower-priority master.
    #[serde(default = "yes")]
    pub preempt: bool,
    /// Delay before preempting.
    #[serde(default)]
    pub preempt_delay: Dur,
    /// Virtual addresses with prefix length.
    pub vips: Vec<Vip>,
    /// Unicast peers; empty = multicast.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unicast_peers: Vec<IpAddr>,
    /// Source address for adverts; default: the interface's primary (IPv6: link-local) address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<IpAddr>,
    /// v3 IPv4 checksum computation when sending.
    #[serde(default)]
    pub v3_checksum: V3Checksum,
    /// Track scripts by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub track_scripts: Vec<String>,
    /// Tracked interfaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub track_interfaces: Vec<TrackInterfaceConfig>,
    /// Tracked files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub track_files: Vec<TrackFileConfig>,
    /// Accept traffic to the VIPs when master.
    #[serde(default = "yes")]
    pub accept: bool,
    /// Gratuitous ARP / unsolicited NA.
    #[serde(default)]
    pub garp: GarpConfig,
    /// Hook run on every transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Command>,
    /// Hook run on becoming MASTER.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_master: Option<Command>,
    /// Hook run on becoming BACKUP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_backup: Option<Command>,
    /// Hook run on entering FAULT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_fault: Option<Command>,
    /// Hook run on stopping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_stop: Option<Command>,
    /// Time limit of each hook.
    #[serde(default = "default_notify_timeout")]
    pub notify_timeout: Dur,
}

/// `{ name, weight }` in `track_interfaces`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrackInterfaceConfig {
    /// Interface name.
    pub name: String,
    /// Weight; 0 (default) = link down means FAULT.
    #[serde(default)]
    pub weight: i32,
}

/// `{ path, weight }` in `track_files`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrackFileConfig {
    /// File holding an integer.
    pub path: PathBuf,
    /// Multiplier; 0 = a non-zero value means FAULT.
    #[serde(default = "default_file_weight")]
    pub weight: i32,
}

/// `garp = { count, interval, refresh }`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GarpConfig {
    /// Announcements sent on becoming master.
    #[serde(default = "default_garp_count")]
    pub count: u32,
    /// Gap between them.
    #[serde(default = "default_garp_interval")]
    pub interval: Dur,
    /// Repeat the burst this often while master; `0s` = never.
    #[serde(default)]
    pub refresh: Dur,
}

impl Default for GarpConfig {
    fn default() -> GarpConfig {
        GarpConfig {
            count: default_garp_count(),
            interval: default_garp_interval(),
            refresh: Dur::default(),
        }
    }
}

/// `[track_script.NAME]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrackScriptConfig {
    /// argv; run without a shell.
    pub command: Vec<String>,
    /// Time between runs.
    #[serde(default = "default_script_interval")]
    pub interval: Dur,
    /// A run taking longer counts as failed and is killed.
    #[serde(default = "default_script_interval")]
    pub timeout: Dur,
    /// Passes needed to go up after a failure.
    #[serde(default = "one")]
    pub rise: u32,
    /// Failures needed to go down.
    #[serde(default = "one")]
    pub fall: u32,
    /// Weight; 0 (default) = failure means FAULT.
    #[serde(default)]
    pub weight: i32,
}

/// `[sync_group.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SyncGroupConfig {
    /// Names of `[[vrrp]]` instances that fail over together.
    pub instances: Vec<String>,
}

/// `v3_checksum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum V3Checksum {
    /// With the IPv4 pseudo-header (keepalived).
    #[default]
    #[serde(rename = "pseudo-header")]
    PseudoHeader,
    /// Over the message alone.
    #[serde(rename = "rfc")]
    Rfc,
}

/// A hook or script: a program path, or an argv array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Command(pub Vec<String>);

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Command, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Path(String),
            Argv(Vec<String>),
        }
        let argv = match Form::deserialize(d)
            .map_err(|_| de::Error::custom("expected a program path or an array of arguments"))?
        {
            Form::Path(p) => vec![p],
            Form::Argv(a) => a,
        };
        if argv.first().is_none_or(|p| p.is_empty()) {
            return Err(de::Error::custom("command must not be empty"));
        }
        Ok(Command(argv))
    }
}

/// A duration written as `"100ms"`, `"3s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
        let text = String::deserialize(d)
            .map_err(|_| de::Error::custom("expected a duration string such as \"100ms\""))?;
        duet_time::parse_duration(&text)
            .map(Dur)
            .map_err(de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&duet_time::format_duration(self.0))
    }
}

/// A virtual address with its prefix length: `10.10.10.10/24`, `2001:db8::10/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Vip {
    /// The address.
    pub address: IpAddr,
    /// Prefix length (default /32 or /128).
    pub prefix: u8,
}

impl FromStr for Vip {
    type Err = String;
    fn from_str(s: &str) -> Result<Vip, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let address: IpAddr = addr
            .parse()
            .map_err(|_| format!("invalid VIP {s:?}: {addr:?} is not an IP address"))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("invalid VIP {s:?}: prefix must be 0..={max}"))?,
        };
        if address.is_unspecified() || address.is_multicast() || address.is_loopback() {
            return Err(format!(
                "invalid VIP {s:?}: must be a unicast, non-loopback address"
            ));
        }
        Ok(Vip { address, prefix })
    }
}

impl fmt::Display for Vip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Vip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Vip, D::Error> {
        let text = String::deserialize(d)
            .map_err(|_| de::Error::custom("expected a VIP string such as \"10.0.0.10/24\""))?;
        text.parse().map_err(de::Error::custom)
    }
}

impl Serialize for Vip {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9900))
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/run/duet")
}
fn default_vip_lifetime() -> Dur {
    Dur(Duration::from_secs(1))
}
fn default_version() -> u8 {
    3
}
fn default_advert_interval() -> Dur {
    Dur(Duration::from_secs(1))
}
fn default_notify_timeout() -> Dur {
    Dur(Duration::from_secs(5))
}
fn default_garp_count() -> u32 {
    5
}
fn default_garp_interval() -> Dur {
    Dur(Duration::from_millis(10))
}
fn default_script_interval() -> Dur {
    Dur(Duration::from_secs(1))
}
fn default_file_weight() -> i32 {
    1
}
fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}

/// `[[balancer]]`: one listener and its backends.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BalancerConfig {
    /// Name, for logs, status and metrics.
    pub name: String,
    /// Listen address (may be a VIP this node does not hold yet).
    pub bind: SocketAddr,
    /// `"tcp"` or `"http"`.
    #[serde(default)]
    pub mode: BalancerMode,
    /// Backend selection.
    #[serde(default)]
    pub algorithm: BalancerAlgorithm,
    /// What `hash` hashes: `"source"` (tcp and http), `"uri"` or `"header:NAME"` (http).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_key: Option<String>,
    /// The backends.
    pub backends: Vec<BackendConfig>,
    /// Active checks; absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckConfig>,
    /// Passive checks.
    #[serde(default)]
    pub passive: PassiveConfig,
    /// Weight ramp after a backend recovers.
    #[serde(default)]
    pub slow_start: Dur,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// Further backends to try when connecting fails.
    #[serde(default = "one")]
    pub retries: u32,
    /// PROXY protocol towards backends and from a front load balancer.
    #[serde(default)]
    pub proxy_protocol: ProxyProtocolConfig,
    /// Sticky sessions by cookie (http mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<StickyConfig>,
    /// Largest request head accepted (http mode); larger gets 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: u32,
    /// `"off"`, `"stderr"` or a file path: one JSON line per request (http mode).
    #[serde(default = "default_access_log")]
    pub access_log: String,
    /// `[[balancer.route]]`: requests by host and path prefix to other backends (http mode).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteConfig>,
    /// The wait queue for backends at their `maxconn`.
    #[serde(default)]
    pub queue: QueueConfig,
    /// TLS termination (http mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

/// `[[balancer.route]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// `example.com` or `*.example.com`; absent: any host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Path prefix; default `/`.
    #[serde(default = "default_route_path")]
    pub path: String,
    /// The route's backends (same algorithm, checks and limits as the balancer's).
    pub backends: Vec<BackendConfig>,
}

fn default_route_path() -> String {
    "/".into()
}

/// `queue = { size, timeout }`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Requests waiting per pool at most when every backend is at its `maxconn`.
    #[serde(default = "default_queue_size")]
    pub size: u32,
    /// Longest wait in the queue; then 503.
    #[serde(default = "default_queue_timeout")]
    pub timeout: Dur,
}

impl Default for QueueConfig {
    fn default() -> QueueConfig {
        QueueConfig {
            size: default_queue_size(),
            timeout: default_queue_timeout(),
        }
    }
}

fn default_queue_size() -> u32 {
    1024
}
fn default_queue_timeout() -> Dur {
    Dur(Duration::from_secs(5))
}

/// `tls = { certificates, hsts, redirect_from, http2 }`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chains and keys (PEM); chosen by SNI, the first is the default.
    pub certificates: Vec<CertificateConfig>,
    /// `Strict-Transport-Security` max-age; absent: no header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsts: Option<Dur>,
    /// Plain-HTTP address answering every request with a redirect to https.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_from: Option<SocketAddr>,
    /// Offer HTTP/2 by ALPN.
    #[serde(default = "yes")]
    pub http2: bool,
}

/// `{ cert, key }` in `tls.certificates`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM chain, leaf first.
    pub cert: std::path::PathBuf,
    /// PEM private key.
    pub key: std::path::PathBuf,
}

fn default_max_header_bytes() -> u32 {
    16 * 1024
}

fn default_access_log() -> String {
    "off".into()
}

/// `sticky = { cookie = "SERVERID" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StickyConfig {
    /// Cookie name.
    pub cookie: String,
}

/// `proxy_protocol = { accept, send }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyProtocolConfig {
    /// Every client connection starts with a PROXY header (v1 or v2) from a front balancer.
    #[serde(default)]
    pub accept: bool,
    /// Send a PROXY header to backends.
    #[serde(default)]
    pub send: ProxySend,
}

/// `proxy_protocol.send`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxySend {
    /// No header.
    #[default]
    Off,
    /// Text header.
    V1,
    /// Binary header.
    V2,
}

/// `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BalancerMode {
    /// HTTP/1.1 and HTTP/2 proxying.
    #[default]
    Http,
    /// L4 pass-through.
    Tcp,
}

/// `algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BalancerAlgorithm {
    /// Smooth weighted round robin.
    #[default]
    Roundrobin,
    /// Fewest connections per weight.
    Leastconn,
    /// Power of two random choices.
    Random,
    /// Consistent hashing of `hash_key`.
    Hash,
}

/// `{ address, weight }` in `backends`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// `ip:port`.
    pub address: SocketAddr,
    /// Relative share, 1..=256.
    #[serde(default = "one")]
    pub weight: u32,
    /// Requests (http) or connections (tcp) in flight at most; 0: no limit.
    #[serde(default)]
    pub maxconn: u32,
}

/// `check = { ... }`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// HTTP mode: the path to `GET`; tcp mode: must be absent (a connect is the check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Passing status codes for HTTP checks: `"200-399"` or a single code.
    #[serde(default = "default_expect")]
    pub expect: String,
    /// Time between checks of one backend.
    #[serde(default = "default_check_interval")]
    pub interval: Dur,
    /// A check slower than this fails.
    #[serde(default = "default_check_timeout")]
    pub timeout: Dur,
    /// Passing checks to come back.
    #[serde(default = "two")]
    pub rise: u32,
    /// Failing checks to go down.
    #[serde(default = "three")]
    pub fall: u32,
}

/// `passive = { failures, cooldown, on_status }`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveConfig {
    /// Consecutive failed connections or requests that take a backend out; 0 disables.
    #[serde(default = "three")]
    pub failures: u32,
    /// Without active checks, how long it stays out.
    #[serde(default = "default_cooldown")]
    pub cooldown: Dur,
    /// Response statuses that also count as failures (`"503"`, `"500-599"`); none by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_status: Vec<String>,
}

impl Default for PassiveConfig {
    fn default() -> PassiveConfig {
        PassiveConfig {
            failures: 3,
            cooldown: default_cooldown(),
            on_status: Vec::new(),
        }
    }
}

/// A status code or an inclusive range of them, `"204"` or `"200-399"`, within 100..=599.
pub fn status_range(text: &str) -> Option<(u16, u16)> {
    let parse = |t: &str| {
        t.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
    };
    let (lo, hi) = match text.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => (parse(text)?, parse(text)?),
    };
    (lo <= hi).then_some((lo, hi))
}

/// `timeouts = { connect }`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// Connecting to a backend.
    #[serde(default = "default_connect_timeout")]
    pub connect: Dur,
    /// http: receiving a request once its first byte arrived (slowloris protection).
    #[serde(default = "default_client_timeout")]
    pub client: Dur,
    /// http: waiting for a backend's response.
    #[serde(default = "default_server_timeout")]
    pub server: Dur,
    /// http: an idle keep-alive client connection is closed after this.
    #[serde(default = "default_idle_timeout")]
    pub idle: Dur,
}

impl Default for TimeoutsConfig {
    fn default() -> TimeoutsConfig {
        TimeoutsConfig {
            connect: default_connect_timeout(),
            client: default_client_timeout(),
            server: default_server_timeout(),
            idle: default_idle_timeout(),
        }
    }
}

fn default_client_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_server_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_idle_timeout() -> Dur {
    Dur(Duration::from_secs(60))
}

fn default_expect() -> String {
    "200-399".into()
}

impl CheckConfig {
    /// The `expect` range, if it is valid: `"200-399"` or `"204"`.
    pub fn expect_range(&self) -> Option<(u16, u16)> {
        status_range(&self.expect)
    }
}

fn default_check_interval() -> Dur {
    Dur(Duration::from_secs(2))
}
fn default_check_timeout() -> Dur {
    Dur(Duration::from_secs(1))
}
fn default_cooldown() -> Dur {
    Dur(Duration::from_secs(10))
}
fn default_connect_timeout() -> Dur {
    Dur(Duration::from_secs(2))
}
fn two() -> u32 {
    2
}
fn three() -> u32 {
    3
}

/// An etcd endpoint URL: scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://`.
    pub tls: bool,
    /// Host name or address, as written (IPv6 without brackets).
    pub host: String,
    /// Port (default 2379).
    pub port: u16,
}

/// Parses `http://host:port` or `https://host:port` (an optional trailing `/`).
pub fn parse_endpoint(url: &str) -> Result<Endpoint, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        return Err(format!(
            "{url:?}: an endpoint starts with http:// or https://"
        ));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains('/') {
        return Err(format!(
            "{url:?}: an endpoint is scheme://host:port, without a path"
        ));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed '['"))?;
        (h, after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("{url:?}: the port {p:?} is not a number 0-65535"))?,
        None => 2379,
    };
    if host.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    Ok(Endpoint {
        tls,
        host: host.to_string(),
        port,
    })
}
