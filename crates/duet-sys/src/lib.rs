//! Linux shell for duet: everything that talks to the kernel.
//!
//! - [`netlink`]: addresses (with kernel lifetimes) and link state over rtnetlink;
//! - [`vrrp_socket`]: raw IP protocol 112 sockets, IPv4 and IPv6, multicast and unicast;
//! - [`announce`]: gratuitous ARP and unsolicited neighbour advertisements;
//! - [`guardian`]: the process that removes VIPs and says goodbye when the daemon dies;
//! - [`notify`]: systemd's service notifications (ready, status, watchdog);
//! - [`fd`]: the small owned-socket wrapper the others share.
//!
//! This is the only crate of the workspace with `unsafe` code: each block is a libc call or a
//! plain-old-data initialisation, with a `// SAFETY:` line saying why it is sound.

pub mod announce;
pub mod fd;
pub mod guardian;
pub mod netlink;
pub mod notify;
pub mod process;
pub mod vrrp_socket;

pub use announce::Announcer;
pub use fd::interface_index;
pub use netlink::{InterfaceAddress, LinkEvents, LinkState, Netlink};
pub use vrrp_socket::{Received, VrrpSocket};
