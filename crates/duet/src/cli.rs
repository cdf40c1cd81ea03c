//! Command-line interface: parsed here, then handed to the module that does the work.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

const DEFAULT_CONFIG: &str = "/etc/duet/duet.toml";

/// duet turns two or more Linux servers into one highly available service.
#[derive(Debug, Parser)]
#[command(name = "duet", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// A file holding the admin API token to send (else $DUET_TOKEN, else the config's
    /// node.operator_token_file).
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon in the foreground (systemd runs it this way).
    Run {
        /// Config file.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a config file; prints `file:line:col: message` per problem, exits 2 if any.
    Check {
        /// Config file.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Show the state of a running node (reads its admin API).
    Status {
        /// Config file to find the admin address in.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Admin address, instead of reading it from the config.
        #[arg(long)]
        admin: Option<SocketAddr>,
        /// Print the raw JSON of GET /v1/status.
        #[arg(long)]
        json: bool,
        /// Redraw every SECONDS (default 2) until interrupted.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
        watch: Option<f64>,
    },
    /// Turn automatic failover off (on) or back on (off), cluster-wide: no backup takes a VIP
    /// over and no standby is promoted while it is on (a switchover still works).
    Maintenance {
        /// on or off.
        state: String,
        /// Config file to find the admin address (and token) in.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Admin address, instead of reading it from the config.
        #[arg(long)]
        admin: Option<SocketAddr>,
    },
    /// Admin API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Show how this node's cluster-wide config differs from a peer's (its text comes over
    /// the heartbeats): exit 0 when they agree, 1 when they differ.
    DiffConfig {
        /// The peer (default: the only one).
        #[arg(long)]
        peer: Option<String>,
        /// Config file to find the admin address in.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Admin address, instead of reading it from the config.
        #[arg(long)]
        admin: Option<SocketAddr>,
    },
    /// `[[service]]`s on this node.
    Service {
        #[command(subcommand)]
        command: ServiceCommand,
        /// Config file to find the admin address (and token) in.
        #[arg(short, long, default_value = DEFAULT_CONFIG, global = true)]
        config: PathBuf,
        /// Admin address, instead of reading it from the config.
        #[arg(long, global = true)]
        admin: Option<SocketAddr>,
    },
    /// The cluster key (heartbeats and the witness).
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Translate a keepalived.conf or haproxy.cfg: duet.toml on stdout, and on stderr every
    /// setting not translated as written, with its line and why.
    Import {
        /// What FILE is.
        kind: ImportKind,
        /// The keepalived.conf or haproxy.cfg.
        file: PathBuf,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages (duet.1 and one per command) into DIR.
    #[command(hide = true)]
    Man {
        /// Where to write them.
        dir: PathBuf,
    },
    /// Print a running node's events (VRRP transitions, links, leases, backends, database,
    /// operator actions), oldest first; --follow keeps printing new ones.
    Events {
        /// Config file to find the admin address in.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Admin address, instead of reading it from the config.
        #[arg(long)]
        admin: Option<SocketAddr>,
        /// How many of the kept events to print first.
        #[arg(long, default_value_t = 20)]
        last: usize,
        /// Keep printing events as they happen (resumes after a dropped connection).
        #[arg(short, long)]
        follow: bool,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Hand over to the peer, planned: every VIP this node is master of (priority 0, no
    /// preempting back) and the database primary if it runs here, without loss.
    Switchover {
        /// The standby to hand over to (default: the only other node).
        #[arg(long)]
        to: Option<String>,
        /// Config file to find the admin address and the operator token in.
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Admin address, instead of reading it from the config.
        #[arg(long)]
        admin: Option<SocketAddr>,
        /// Return once asked, without waiting for the handover to finish.
        #[arg(long)]
        no_wait: bool,
    },
    /// Database maintenance on this node (needs node.operator_token_file).
    Db {
        #[command(subcommand)]
        command: DbCommand,
        /// Config file to find the admin address and the operator token in.
        #[arg(short, long, default_value = DEFAULT_CONFIG, global = true)]
        config: PathBuf,
        /// Admin address, instead of reading it from the config.
        #[arg(long, global = true)]
        admin: Option<SocketAddr>,
    },
    /// Build a throw-away lab of two nodes and a client, kill the master, watch the VIP move.
    Demo {
        /// Advert interval used in the demo.
        #[arg(long, default_value = "100ms")]
        advert_interval: String,
        /// A PostgreSQL failover instead, with a client's view of its writes (needs root and
        /// PostgreSQL 15).
        #[arg(long)]
        database: bool,
    },
    /// Run the witness of a two-node cluster (on a small third host).
    Witness {
        /// UDP address to listen on (the nodes' `witness.address`).
        #[arg(long)]
        listen: SocketAddr,
        /// The cluster key file (the nodes' `heartbeat.key_file`).
        #[arg(long, default_value = "/etc/duet/cluster.key")]
        key_file: PathBuf,
        /// Where the witness keeps its promises across restarts.
        #[arg(long, default_value = "/var/lib/duet/witness.state")]
        state_file: PathBuf,
        /// Longest lease granted (the nodes' `witness.lease`).
        #[arg(long, default_value = "2s")]
        lease: String,
    },
    /// (internal) VIP guardian; started by `duet run`.
    #[command(hide = true)]
    Guardian,
    /// (internal) lab HTTP responder that answers with a node name.
    #[command(hide = true)]
    LabResponder {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        name: String,
    },
    /// (internal) lab flood of forged and garbage VRRP and heartbeat packets.
    #[command(hide = true)]
    LabFlood {
        #[arg(long)]
        from: std::net::Ipv4Addr,
        #[arg(long)]
        udp: Vec<SocketAddr>,
        #[arg(long)]
        vrid: Option<u8>,
        #[arg(long, default_value_t = 50_000)]
        pps: u32,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// (internal) lab watcher of one sender's VRRP advert intervals.
    #[command(hide = true)]
    LabVrrpWatch {
        #[arg(long)]
        src: std::net::Ipv4Addr,
        #[arg(long)]
        on: std::net::Ipv4Addr,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// (internal) lab PostgreSQL writer (`write`: one JSON line per acknowledged commit) or
    /// reader (`read`: the ids a server holds).
    #[command(hide = true)]
    LabPg {
        /// `write` or `read`.
        mode: String,
        /// `ip:port`, or several separated by commas (then the writable one is used).
        #[arg(long, value_delimiter = ',')]
        target: Vec<SocketAddr>,
        #[arg(long)]
        password_file: std::path::PathBuf,
        #[arg(long, default_value = "20ms")]
        interval: String,
        #[arg(long, default_value = "5s")]
        timeout: String,
    },
    /// (internal) lab client that polls a target and prints one JSON line per answer.
    #[command(hide = true)]
    LabProbe {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, default_value = "10ms")]
        interval: String,
        #[arg(long, default_value = "50ms")]
        timeout: String,
    },
}

/// `duet db …`.
#[derive(Debug, clap::Subcommand)]
pub enum DbCommand {
    /// Clone this node's data again from the primary (the old directory is moved aside to
    /// DATA_DIR.duet-old, not deleted): for a standby whose data cannot rejoin, or belongs to
    /// another cluster.
    Reinit,
}

#[derive(Debug, clap::Subcommand)]
pub enum ServiceCommand {
    /// After too many failed restarts a service's group stepped down (its instance is in
    /// FAULT here): once the cause is fixed, let the group run again.
    Reset {
        /// The service.
        name: String,
    },
}

/// What `duet import` reads.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ImportKind {
    /// keepalived.conf: global_defs, vrrp_script, vrrp_instance, vrrp_sync_group, virtual_server.
    Keepalived,
    /// haproxy.cfg: defaults, frontend, backend, listen.
    Haproxy,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Write a new random cluster key to FILE (mode 0600); copy the same file to every node
    /// and the witness.
    New {
        /// Where (e.g. /etc/duet/cluster.key).
        file: PathBuf,
        /// Replace an existing file (every node and the witness then need the new one).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Make a token: prints it on stdout, and on stderr the `admin.tokens` line (with only
    /// its SHA-256) to paste into each node's config.
    New {
        /// Who will use it (shown in the audit log and events).
        name: String,
        /// viewer (read), operator (also switchover, maintenance, drain) or admin (also
        /// reload, database reinit).
        role: String,
    },
}

/// Entry point; returns the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let token_file = cli.token_file;
    match cli.command {
        Command::Run { config } => {
            init_logging();
            crate::daemon::run(&config)
        }
        Command::Check { config } => match crate::preflight::load_checked(&config) {
            Ok((c, warnings)) => {
                for w in &warnings {
                    eprintln!("{}:{}:{}: warning: {}", w.file, w.line, w.col, w.message);
                }
                println!(
                    "{}: OK (node {:?}, {} vrrp instance(s), {} balancer(s), {} track script(s){})",
                    config.display(),
                    c.node.name,
                    c.vrrp.len(),
                    c.balancer.len(),
                    c.track_script.len(),
                    c.database.as_ref().map_or(String::new(), |d| format!(
                        ", database on {} (synchronous = {})",
                        d.listen, d.synchronous
                    ))
                );
                0
            }
            Err(diagnostics) => {
                for d in diagnostics {
                    eprintln!("{d}");
                }
                2
            }
        },
        Command::Status {
            config,
            admin,
            json,
            watch,
        } => with_target(&config, admin, token_file, |t| match watch {
            Some(every) if every >= 0.1 => crate::status::watch(t, every),
            Some(every) => {
                eprintln!("duet status: --watch {every}: at least 0.1 s");
                2
            }
            None => crate::status::run(t, json),
        }),
        Command::Token {
            command: TokenCommand::New { name, role },
        } => crate::token::run_new(&name, &role),
        Command::DiffConfig {
            peer,
            config,
            admin,
        } => with_target(&config, admin, token_file, |t| {
            crate::diffconfig::run(t, peer.as_deref())
        }),
        Command::Service {
            command: ServiceCommand::Reset { name },
            config,
            admin,
        } => with_target(&config, admin, token_file, |t| {
            crate::status::post(t, &format!("/v1/services/{name}/reset"))
        }),
        Command::Key {
            command: KeyCommand::New { file, force },
        } => crate::key::run_new(&file, force),
        Command::Import { kind, file } => crate::import::run(
            match kind {
                ImportKind::Keepalived => "keepalived",
                ImportKind::Haproxy => "haproxy",
            },
            &file,
        ),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "duet", &mut std::io::stdout());
            0
        }
        Command::Man { dir } => match man_pages(&dir) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("duet man: {}: {e}", dir.display());
                1
            }
        },
        Command::Maintenance {
            state,
            config,
            admin,
        } => {
            let enabled = match state.as_str() {
                "on" => true,
                "off" => false,
                other => {
                    eprintln!("duet maintenance: {other:?}: on or off");
                    return 2;
                }
            };
            with_target(&config, admin, token_file, |t| {
                let body = format!("{{\"enabled\": {enabled}}}");
                match t.post_json("/v1/maintenance", &body) {
                    Ok(b) => {
                        println!("{}", b.trim());
                        0
                    }
                    Err(e) => {
                        eprintln!("duet maintenance: {e}");
                        1
                    }
                }
            })
        }
        Command::Events {
            config,
            admin,
            last,
            follow,
            json,
        } => with_target(&config, admin, token_file, |t| {
            crate::events::run(t, last, follow, json)
        }),
        Command::Switchover {
            to,
            config,
            admin,
            no_wait,
        } => with_target(&config, admin, token_file, |t| {
            crate::status::switchover(t, to.as_deref(), !no_wait)
        }),
        Command::Db {
            command: DbCommand::Reinit,
            config,
            admin,
        } => with_target(&config, admin, token_file, |t| {
            crate::status::post(t, "/v1/database/reinit")
        }),
        Command::Demo { database: true, .. } => crate::demodb::run(),
        Command::Demo {
            advert_interval, ..
        } => crate::demo::run(&advert_interval),
        Command::Witness {
            listen,
            key_file,
            state_file,
            lease,
        } => {
            init_logging();
            let Ok(lease) = duet_time::parse_duration(&lease) else {
                eprintln!("--lease {lease:?}: write a duration such as \"2s\"");
                return 2;
            };
            crate::witness::run(&crate::witness::Options {
                listen,
                key_file,
                state_file,
                lease,
            })
        }
        Command::Guardian => {
            let stdin = std::io::stdin();
            match duet_sys::guardian::run(stdin.lock(), &mut std::io::stderr()) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("duet guardian: {e}");
                    1
                }
            }
        }
        Command::LabResponder { listen, name } => crate::labtools::responder(listen, &name),
        Command::LabFlood {
            from,
            udp,
            vrid,
            pps,
            seconds,
        } => crate::labflood::flood(&crate::labflood::Flood {
            from,
            udp,
            vrid,
            pps,
            seconds,
        }),
        Command::LabVrrpWatch { src, on, seconds } => crate::labflood::vrrp_watch(src, on, seconds),
        Command::LabProbe {
            target,
            interval,
            timeout,
        } => crate::labtools::probe(target, &interval, &timeout),
        Command::LabPg {
            mode,
            target,
            password_file,
            interval,
            timeout,
        } => match mode.as_str() {
            "write" => crate::labpg::write(&target, &password_file, &interval, &timeout),
            "read" => crate::labpg::read(&target, &password_file),
            other => {
                eprintln!("lab-pg: mode {other:?}: write or read");
                2
            }
        },
    }
}

/// Runs `f` against the node the command line names; exit code 2 when it names none.
fn with_target(
    config: &std::path::Path,
    admin: Option<SocketAddr>,
    token_file: Option<PathBuf>,
    f: impl FnOnce(&crate::status::Target) -> i32,
) -> i32 {
    match crate::status::Target::new(config, admin, token_file.as_deref()) {
        Ok(t) => f(&t),
        Err(e) => {
            eprintln!("{e}");
            2
        }
    }
}

/// Writes duet.1 and a page per visible command (duet-run.1, …) into `dir`.
fn man_pages(dir: &std::path::Path) -> std::io::Result<()> {
    let cmd = <Cli as clap::CommandFactory>::command();
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(cmd, dir)
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("DUET_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
