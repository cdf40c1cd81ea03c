//! VIPs on the interfaces: add with a kernel lifetime, refresh, remove, and never leave one
//! behind (guardian for a dead daemon, state file and config scan for a restarted one).

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::time::Duration;

use duet_config::{Config, Vip};
use duet_sys::Netlink;
use duet_sys::guardian::{Command as GuardianCommand, Goodbye};

/// Why the kernel refused a VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipError {
    /// What failed, with the kernel's error.
    pub message: String,
    /// A missing privilege (EPERM, EACCES): retrying is pointless until it is granted.
    pub permission: bool,
}

fn is_permission(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES))
        || e.kind() == std::io::ErrorKind::PermissionDenied
}

/// A VIP as configured on an interface.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HeldVip {
    /// Interface name.
    pub ifname: String,
    /// Interface index.
    pub ifindex: u32,
    /// Address.
    pub address: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

/// Owns every VIP this daemon configured.
#[derive(Debug)]
pub struct VipManager {
    nl: Netlink,
    lifetime: Option<u32>,
    state_file: PathBuf,
    held: BTreeSet<HeldVip>,
    guardian: Option<Guardian>,
}

impl VipManager {
    /// `lifetime` zero means permanent addresses.
    pub fn new(state_dir: &Path, lifetime: Duration) -> std::io::Result<VipManager> {
        std::fs::create_dir_all(state_dir).map_err(|e| {
            std::io::Error::new(e.kind(), format!("state_dir {}: {e}", state_dir.display()))
        })?;
        Ok(VipManager {
            nl: Netlink::open()?,
            lifetime: (!lifetime.is_zero()).then(|| lifetime.as_secs().max(1) as u32),
            state_file: state_dir.join("vips"),
            held: BTreeSet::new(),
            guardian: None,
        })
    }

    /// How often the live daemon must refresh lifetimes (a quarter of the lifetime).
    pub fn refresh_interval(&self) -> Option<Duration> {
        self.lifetime
            .map(|secs| Duration::from_millis(u64::from(secs) * 250))
    }

    /// Starts the guardian process (`duet guardian`, from the same executable).
    pub fn start_guardian(&mut self) -> std::io::Result<()> {
        let exe = std::env::current_exe()?;
        let mut child = std::process::Command::new(exe)
            .arg("guardian")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| std::io::Error::new(e.kind(), format!("starting guardian: {e}")))?;
        let stdin = child.stdin.take().expect("piped stdin");
        self.guardian = Some(Guardian {
            child,
            stdin: Some(stdin),
        });
        Ok(())
    }

    /// Removes VIPs that an earlier run left behind: those recorded in the state file, and any
    /// configured VIP found on its interface (except for address owners, whose VIP is real).
    pub fn remove_leftovers(&mut self, config: &Config) {
        let mut stale: Vec<(String, IpAddr, u8)> = Vec::new();
        if let Ok(text) = std::fs::read_to_string(&self.state_file) {
            for line in text.lines() {
                let mut f = line.split_whitespace();
                if let (Some(ifname), Some(vip)) = (f.next(), f.next())
                    && let Ok(vip) = vip.parse::<Vip>()
                {
                    stale.push((ifname.to_string(), vip.address, vip.prefix));
                }
            }
        }
        for v in config.vrrp.iter().filter(|v| v.priority != 255) {
            for vip in &v.vips {
                stale.push((v.interface.clone(), vip.address, vip.prefix));
            }
        }
        if let Some(w) = config.database.as_ref().and_then(|d| d.write_vip.as_ref()) {
            stale.push((w.interface.clone(), w.address.address, w.address.prefix));
        }
        for (ifname, address, prefix) in stale {
            let Ok(link) = self.nl.link(&ifname) else {
                continue;
            };
            let present = self
                .nl
                .addresses(link.index)
                .map(|list| list.iter().any(|a| a.address == address))
                .unwrap_or(false);
            if present {
                match self.nl.delete_address(link.index, address, prefix) {
                    Ok(()) => tracing::warn!(
                        "removed VIP {address}/{prefix} from {ifname}: left behind by an earlier run"
                    ),
                    Err(e) => tracing::error!("removing stale VIP {address}/{prefix}: {e}"),
                }
            }
        }
        self.write_state();
    }

    /// Configures `vips` and tells the guardian about them. Stops at the first VIP the kernel
    /// refuses and says why (the caller puts the instance in FAULT and removes what was added).
    pub fn add(&mut self, ifname: &str, ifindex: u32, vips: &[Vip]) -> Result<(), VipError> {
        let mut result = Ok(());
        for vip in vips {
            match self
                .nl
                .replace_address(ifindex, vip.address, vip.prefix, self.lifetime)
            {
                Ok(()) => {
                    self.held.insert(HeldVip {
                        ifname: ifname.to_string(),
                        ifindex,
                        address: vip.address,
                        prefix: vip.prefix,
                    });
                    self.tell(GuardianCommand::Vip {
                        ifindex,
                        address: vip.address,
                        prefix: vip.prefix,
                    });
                }
                Err(e) => {
                    result = Err(VipError {
                        permission: is_permission(&e),
                        message: format!("cannot add VIP {vip} on {ifname}: {e}"),
                    });
                    break;
                }
            }
        }
        self.write_state();
        result
    }

    /// The VIPs of `vips` this daemon holds on `ifname` now.
    pub fn held_of(&self, ifname: &str, vips: &[Vip]) -> Vec<String> {
        vips.iter()
            .filter(|v| {
                self.held
                    .iter()
                    .any(|h| h.ifname == ifname && h.address == v.address)
            })
            .map(ToString::to_string)
            .collect()
    }

    /// Removes `vips` (those not held are skipped: a failed add leaves some unconfigured).
    pub fn remove(&mut self, ifname: &str, ifindex: u32, vips: &[Vip]) {
        for vip in vips {
            let held = self
                .held
                .iter()
                .any(|h| h.ifname == ifname && h.address == vip.address);
            if held && let Err(e) = self.nl.delete_address(ifindex, vip.address, vip.prefix) {
                tracing::error!("removing VIP {vip} from {ifname}: {e}");
            }
            self.held.remove(&HeldVip {
                ifname: ifname.to_string(),
                ifindex,
                address: vip.address,
                prefix: vip.prefix,
            });
            self.tell(GuardianCommand::Unvip {
                ifindex,
                address: vip.address,
                prefix: vip.prefix,
            });
        }
        self.write_state();
    }

    /// Refreshes the lifetime of every held VIP (re-adding any that expired while frozen).
    /// Returns the interfaces where the kernel refused, with why: those instances no longer
    /// hold their VIPs.
    pub fn refresh(&mut self) -> Vec<(String, VipError)> {
        let Some(lifetime) = self.lifetime else {
            return Vec::new();
        };
        let mut failed = Vec::new();
        for v in &self.held {
            if let Err(e) = self
                .nl
                .replace_address(v.ifindex, v.address, v.prefix, Some(lifetime))
            {
                failed.push((
                    v.ifname.clone(),
                    VipError {
                        permission: is_permission(&e),
                        message: format!(
                            "cannot refresh VIP {}/{} on {}: {e}",
                            v.address, v.prefix, v.ifname
                        ),
                    },
                ));
            }
        }
        failed
    }

    /// Registers the priority-0 adverts the guardian sends if the daemon dies while master.
    pub fn set_goodbyes(&mut self, instance: &str, goodbyes: Vec<Goodbye>) {
        self.tell(GuardianCommand::NoGoodbye {
            instance: instance.to_string(),
        });
        for goodbye in goodbyes {
            self.tell(GuardianCommand::Goodbye {
                instance: instance.to_string(),
                goodbye,
            });
        }
    }

    /// Forgets an instance's goodbye adverts.
    pub fn clear_goodbyes(&mut self, instance: &str) {
        self.tell(GuardianCommand::NoGoodbye {
            instance: instance.to_string(),
        });
    }

    /// Tells the guardian how to stop a service that started, or that it stopped.
    pub fn tell_guardian(&mut self, cmd: GuardianCommand) {
        self.tell(cmd);
    }

    /// Clean exit: the guardian has nothing to do.
    pub fn dismiss_guardian(&mut self) {
        self.tell(GuardianCommand::Bye);
        if let Some(g) = &mut self.guardian {
            g.stdin = None;
            let _ = g.child.wait();
        }
        self.guardian = None;
    }

    fn tell(&mut self, cmd: GuardianCommand) {
        let Some(g) = &mut self.guardian else {
            return;
        };
        let Some(stdin) = &mut g.stdin else {
            return;
        };
        if let Err(e) = stdin.write_all(cmd.to_line().as_bytes()) {
            tracing::error!("guardian is gone ({e}); VIPs now rely on their kernel lifetime");
            g.stdin = None;
        }
    }

    fn write_state(&self) {
        let mut text = String::new();
        for v in &self.held {
            text.push_str(&format!("{} {}/{}\n", v.ifname, v.address, v.prefix));
        }
        let tmp = self.state_file.with_extension("tmp");
        let written =
            std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, &self.state_file));
        if let Err(e) = written {
            tracing::warn!("writing {}: {e}", self.state_file.display());
        }
    }
}

#[derive(Debug)]
struct Guardian {
    child: Child,
    stdin: Option<ChildStdin>,
}

/// Whether this process may add addresses (an unreadable answer counts as yes: the add then
/// says what is wrong).
pub fn may_add_addresses() -> bool {
    duet_sys::process::has_capability(duet_sys::process::Capability::NetAdmin).unwrap_or(true)
}
