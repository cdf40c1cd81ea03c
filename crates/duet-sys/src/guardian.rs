//! The VIP guardian: a tiny process that cleans up after a daemon that died without doing so.
//!
//! The daemon starts it as a child (`duet guardian`) with a pipe on its stdin and tells it, line by
//! line, which VIPs it holds and which priority-0 adverts to send for the instances it is master
//! of. When the pipe reaches end-of-file without a `bye` line, the daemon is gone (kill -9, panic,
//! OOM kill): the guardian sends the goodbye adverts, so backups take over after their skew time
//! instead of three advert intervals, removes the VIPs and exits. A graceful daemon cleans up
//! itself and says `bye`.
//!
//! If the guardian dies too (the whole process group killed), kernel address lifetimes remove the
//! VIPs shortly after; see [`crate::netlink::Netlink::replace_address`].
//!
//! Protocol (one command per line, fields separated by single spaces):
//!
//! ```text
//! vip <ifindex> <address>/<prefix>                      a VIP is configured
//! unvip <ifindex> <address>/<prefix>                    it was removed
//! goodbye <instance> <ifname> <ifindex> <src> <dst> <hex>   priority-0 advert to send on death
//! nogoodbye <instance>                                  the instance is no longer master
//! stop <service> <timeout_ms> <hex>                     a service runs: the command (argv
//!                                                       joined by NUL, hex) that stops it
//! nostop <service>                                      it no longer runs
//! bye                                                   clean exit: do nothing
//! ```
//!
//! On the daemon's death the guardian sends the goodbyes, removes the VIPs, then runs the
//! stop commands, last registered first (services start in order and stop in reverse), each
//! bounded by its timeout: a service must not keep running on a node whose daemon is gone,
//! since the peer starts it once this node's lease has run out.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, Write};
use std::net::IpAddr;

use duet_vrrp::Family;

use crate::netlink::Netlink;
use crate::vrrp_socket::VrrpSocket;

/// A priority-0 advert kept ready for the daemon's death.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Goodbye {
    /// Interface name.
    pub ifname: String,
    /// Interface index.
    pub ifindex: u32,
    /// Source address.
    pub src: IpAddr,
    /// Destination (multicast group or a unicast peer).
    pub dst: IpAddr,
    /// The VRRP message with its checksum.
    pub message: Vec<u8>,
}

/// One line of the guardian protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A VIP is configured.
    Vip {
        /// Interface index.
        ifindex: u32,
        /// Address.
        address: IpAddr,
        /// Prefix length.
        prefix: u8,
    },
    /// A VIP was removed.
    Unvip {
        /// Interface index.
        ifindex: u32,
        /// Address.
        address: IpAddr,
        /// Prefix length.
        prefix: u8,
    },
    /// Adverts to send if the daemon dies (several for unicast peers).
    Goodbye {
        /// Instance name.
        instance: String,
        /// The advert.
        goodbye: Goodbye,
    },
    /// Forget an instance's goodbye adverts.
    NoGoodbye {
        /// Instance name.
        instance: String,
    },
    /// A service runs: how to stop it if the daemon dies.
    Stop {
        /// The service.
        service: String,
        /// How long the command may run.
        timeout_ms: u64,
        /// The command.
        argv: Vec<String>,
    },
    /// The service no longer runs.
    NoStop {
        /// The service.
        service: String,
    },
    /// Clean exit.
    Bye,
}

impl Command {
    /// The protocol line for this command (with trailing newline).
    pub fn to_line(&self) -> String {
        match self {
            Command::Vip {
                ifindex,
                address,
                prefix,
            } => format!("vip {ifindex} {address}/{prefix}\n"),
            Command::Unvip {
                ifindex,
                address,
                prefix,
            } => format!("unvip {ifindex} {address}/{prefix}\n"),
            Command::Goodbye { instance, goodbye } => {
                let mut hex = String::with_capacity(goodbye.message.len() * 2);
                for b in &goodbye.message {
                    let _ = write!(hex, "{b:02x}");
                }
                format!(
                    "goodbye {instance} {} {} {} {} {hex}\n",
                    goodbye.ifname, goodbye.ifindex, goodbye.src, goodbye.dst
                )
            }
            Command::NoGoodbye { instance } => format!("nogoodbye {instance}\n"),
            Command::Stop {
                service,
                timeout_ms,
                argv,
            } => {
                let mut hex = String::new();
                for b in argv.join("\0").bytes() {
                    let _ = write!(hex, "{b:02x}");
                }
                format!("stop {service} {timeout_ms} {hex}\n")
            }
            Command::NoStop { service } => format!("nostop {service}\n"),
            Command::Bye => "bye\n".to_string(),
        }
    }

    /// Parses one line; the error says what is wrong with it.
    pub fn parse(line: &str) -> Result<Command, String> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let bad = || format!("malformed guardian command {line:?}");
        let addr_prefix = |s: &str| -> Result<(IpAddr, u8), String> {
            let (a, p) = s.split_once('/').ok_or_else(bad)?;
            Ok((a.parse().map_err(|_| bad())?, p.parse().map_err(|_| bad())?))
        };
        match fields.as_slice() {
            ["vip", idx, ap] | ["unvip", idx, ap] => {
                let ifindex = idx.parse().map_err(|_| bad())?;
                let (address, prefix) = addr_prefix(ap)?;
                Ok(if fields[0] == "vip" {
                    Command::Vip {
                        ifindex,
                        address,
                        prefix,
                    }
                } else {
                    Command::Unvip {
                        ifindex,
                        address,
                        prefix,
                    }
                })
            }
            ["goodbye", instance, ifname, idx, src, dst, hex] => {
                let message = unhex(hex).ok_or_else(bad)?;
                Ok(Command::Goodbye {
                    instance: instance.to_string(),
                    goodbye: Goodbye {
                        ifname: ifname.to_string(),
                        ifindex: idx.parse().map_err(|_| bad())?,
                        src: src.parse().map_err(|_| bad())?,
                        dst: dst.parse().map_err(|_| bad())?,
                        message,
                    },
                })
            }
            ["nogoodbye", instance] => Ok(Command::NoGoodbye {
                instance: instance.to_string(),
            }),
            ["stop", service, timeout, hex] => {
                let bytes = unhex(hex).ok_or_else(bad)?;
                let text = String::from_utf8(bytes).map_err(|_| bad())?;
                let argv: Vec<String> = text.split('\0').map(String::from).collect();
                if argv[0].is_empty() {
                    return Err(bad());
                }
                Ok(Command::Stop {
                    service: service.to_string(),
                    timeout_ms: timeout.parse().map_err(|_| bad())?,
                    argv,
                })
            }
            ["nostop", service] => Ok(Command::NoStop {
                service: service.to_string(),
            }),
            ["bye"] => Ok(Command::Bye),
            _ => Err(bad()),
        }
    }
}

/// Bytes from hex digits; `None` for an odd length or a bad digit.
fn unhex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) || !hex.is_ascii() {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

/// What the guardian knows: VIPs held and goodbye adverts per instance.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GuardianState {
    /// VIPs currently configured by the daemon.
    pub vips: Vec<(u32, IpAddr, u8)>,
    /// Goodbye adverts by instance (several per instance with unicast peers).
    pub goodbyes: BTreeMap<String, Vec<Goodbye>>,
    /// Services running, in the order they started: (name, timeout in ms, stop command).
    pub stops: Vec<(String, u64, Vec<String>)>,
    /// The daemon said `bye`.
    pub clean_exit: bool,
}

impl GuardianState {
    /// Applies one command.
    pub fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::Vip {
                ifindex,
                address,
                prefix,
            } => {
                if !self.vips.contains(&(ifindex, address, prefix)) {
                    self.vips.push((ifindex, address, prefix));
                }
            }
            Command::Unvip {
                ifindex,
                address,
                prefix,
            } => self.vips.retain(|v| *v != (ifindex, address, prefix)),
            Command::Goodbye { instance, goodbye } => {
                let list = self.goodbyes.entry(instance).or_default();
                if !list.contains(&goodbye) {
                    list.push(goodbye);
                }
            }
            Command::NoGoodbye { instance } => {
                self.goodbyes.remove(&instance);
            }
            Command::Stop {
                service,
                timeout_ms,
                argv,
            } => {
                self.stops.retain(|(s, ..)| *s != service);
                self.stops.push((service, timeout_ms, argv));
            }
            Command::NoStop { service } => self.stops.retain(|(s, ..)| *s != service),
            Command::Bye => self.clean_exit = true,
        }
    }
}

/// The guardian's main loop: read commands from `input` until EOF, then clean up unless the
/// daemon said `bye`. Logs go to `log`.
pub fn run(input: impl BufRead, log: &mut impl Write) -> io::Result<()> {
    let mut state = GuardianState::default();
    for line in input.lines() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                let _ = writeln!(log, "duet guardian: reading from daemon failed: {e}");
                break;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        match Command::parse(&line) {
            Ok(cmd) => state.apply(cmd),
            Err(e) => {
                let _ = writeln!(log, "duet guardian: ignoring {e}");
            }
        }
        if state.clean_exit {
            return Ok(());
        }
    }
    if state.vips.is_empty() && state.goodbyes.is_empty() && state.stops.is_empty() {
        return Ok(());
    }
    let _ = writeln!(
        log,
        "duet guardian: daemon exited without cleaning up; sending {} goodbye advert(s), removing {} VIP(s), stopping {} service(s)",
        state.goodbyes.values().map(Vec::len).sum::<usize>(),
        state.vips.len(),
        state.stops.len()
    );
    cleanup(&state, log);
    stop_services(&state, log);
    Ok(())
}

/// Runs the stop commands, last started first, each within its timeout.
fn stop_services(state: &GuardianState, log: &mut impl Write) {
    for (service, timeout_ms, argv) in state.stops.iter().rev() {
        let mut cmd = std::process::Command::new(&argv[0]);
        cmd.args(&argv[1..]).env("DUET_SERVICE", service);
        let result = match crate::process::run_with_timeout(
            &mut cmd,
            std::time::Duration::from_millis(*timeout_ms),
        ) {
            Ok(()) => "done".to_string(),
            Err(why) => why,
        };
        let _ = writeln!(log, "duet guardian: stopped service {service}: {result}");
    }
}

fn cleanup(state: &GuardianState, log: &mut impl Write) {
    // Goodbyes first: they let backups start their (short) skew timers while we tidy up.
    for goodbye in state.goodbyes.values().flatten() {
        let family = Family::of(&goodbye.src);
        let sent = VrrpSocket::open(&goodbye.ifname, goodbye.ifindex, family)
            .and_then(|s| s.send(goodbye.src, goodbye.dst, &goodbye.message));
        if let Err(e) = sent {
            let _ = writeln!(
                log,
                "duet guardian: goodbye advert on {}: {e}",
                goodbye.ifname
            );
        }
    }
    match Netlink::open() {
        Ok(nl) => {
            for &(ifindex, address, prefix) in &state.vips {
                match nl.delete_address(ifindex, address, prefix) {
                    Ok(()) => {
                        let _ = writeln!(log, "duet guardian: removed VIP {address}/{prefix}");
                    }
                    Err(e) => {
                        let _ =
                            writeln!(log, "duet guardian: removing VIP {address}/{prefix}: {e}");
                    }
                }
            }
        }
        Err(e) => {
            let _ = writeln!(log, "duet guardian: netlink: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip() {
        let cmds = [
            Command::Vip {
                ifindex: 3,
                address: "10.0.0.100".parse().unwrap(),
                prefix: 24,
            },
            Command::Unvip {
                ifindex: 3,
                address: "2001:db8::10".parse().unwrap(),
                prefix: 64,
            },
            Command::Goodbye {
                instance: "web".into(),
                goodbye: Goodbye {
                    ifname: "eth0".into(),
                    ifindex: 3,
                    src: "10.0.0.1".parse().unwrap(),
                    dst: "224.0.0.18".parse().unwrap(),
                    message: vec![0x31, 0x33, 0x00, 0x01, 0xff],
                },
            },
            Command::NoGoodbye {
                instance: "web".into(),
            },
            Command::Stop {
                service: "app".into(),
                timeout_ms: 10_000,
                argv: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    "umount '/srv/my data'".into(),
                ],
            },
            Command::NoStop {
                service: "app".into(),
            },
            Command::Bye,
        ];
        for c in cmds {
            assert_eq!(Command::parse(c.to_line().trim_end()).unwrap(), c);
        }
    }

    #[test]
    fn a_dead_daemons_services_are_stopped_last_started_first() {
        let dir = std::env::temp_dir().join(format!("duet-guardian-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("order");
        let stop = |name: &str| Command::Stop {
            service: name.into(),
            timeout_ms: 5_000,
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("echo {name} >> {}", log.display()),
            ],
        };
        let input: String = [
            stop("storage"),
            stop("app"),
            stop("proxy"),
            Command::NoStop {
                service: "proxy".into(),
            },
        ]
        .iter()
        .map(Command::to_line)
        .collect();
        let mut out = Vec::new();
        run(input.as_bytes(), &mut out).unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "app\nstorage\n");
        let said = String::from_utf8(out).unwrap();
        assert!(said.contains("stopping 2 service(s)"), "{said}");
        // A clean exit runs nothing.
        std::fs::remove_file(&log).unwrap();
        let input = stop("app").to_line() + &Command::Bye.to_line();
        run(input.as_bytes(), &mut Vec::new()).unwrap();
        assert!(!log.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn malformed_lines_are_reported_not_applied() {
        for line in [
            "vip x 10.0.0.1/24",
            "vip 3 10.0.0.1",
            "goodbye a b 1 x y 0",
            "nope",
        ] {
            assert!(Command::parse(line).is_err(), "{line}");
        }
        let mut log = Vec::new();
        run(&b"vip 3 nonsense\nbye\n"[..], &mut log).unwrap();
        assert!(String::from_utf8(log).unwrap().contains("malformed"));
    }

    #[test]
    fn state_tracks_vips_and_goodbyes() {
        let mut s = GuardianState::default();
        let vip = "vip 3 10.0.0.100/24";
        s.apply(Command::parse(vip).unwrap());
        s.apply(Command::parse(vip).unwrap());
        assert_eq!(s.vips.len(), 1);
        s.apply(Command::parse("unvip 3 10.0.0.100/24").unwrap());
        assert!(s.vips.is_empty());
        s.apply(Command::parse("goodbye web eth0 3 10.0.0.1 224.0.0.18 3133").unwrap());
        assert_eq!(s.goodbyes["web"].len(), 1);
        s.apply(Command::parse("nogoodbye web").unwrap());
        assert!(s.goodbyes.is_empty());
    }

    #[test]
    fn clean_exit_does_nothing() {
        let mut log = Vec::new();
        run(&b"vip 1 10.0.0.1/32\nbye\n"[..], &mut log).unwrap();
        assert!(log.is_empty());
    }
}
