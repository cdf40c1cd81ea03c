//! Accept mode (RFC 9568 §6.1 `Accept_Mode`). With `accept = false` the master owns the VIP for
//! ARP/ND, but does not accept packets addressed to it.
//!
//! Implemented as one nftables table with a drop rule per such VIP, kept for the daemon's
//! lifetime: while the node is not master the VIP is not a local address and the rules match
//! nothing, so transitions need no firewall work. ARP and ND are not IP and pass; VRRP adverts go
//! to the multicast group or to peer addresses, never to a VIP.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use duet_config::Config;

const TABLE: &str = "duet_accept";

/// Installs (or replaces, or removes when no instance needs it) the drop rules for `config`.
pub fn apply(config: &Config) -> Result<(), String> {
    let vips: Vec<IpAddr> = config
        .vrrp
        .iter()
        .filter(|v| !v.accept)
        .flat_map(|v| v.vips.iter().map(|vip| vip.address))
        .collect();
    if vips.is_empty() {
        clear();
        return Ok(());
    }
    let mut script = format!(
        "table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n  chain input {{\n    type filter hook input priority filter; policy accept;\n"
    );
    for vip in vips {
        let family = if vip.is_ipv4() { "ip" } else { "ip6" };
        script.push_str(&format!("    {family} daddr {vip} drop\n"));
    }
    script.push_str("  }\n}\n");
    nft(&script).map_err(|e| format!("accept = false: {e}"))
}

/// Removes the drop rules (on shutdown, or when no instance uses accept = false).
pub fn clear() {
    let _ = nft(&format!("table inet {TABLE}\ndelete table inet {TABLE}\n"));
}

fn nft(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft ({e}); install the nftables package"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("nft: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
