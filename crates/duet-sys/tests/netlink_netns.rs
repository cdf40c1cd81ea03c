//! Netlink against a real kernel, inside a private network namespace of the test thread.
//! Needs root (CAP_SYS_ADMIN + CAP_NET_ADMIN); skips with a message otherwise.

use std::net::IpAddr;
use std::process::Command;

use duet_sys::Netlink;

/// Moves the calling thread into a fresh network namespace; children it spawns inherit it.
fn private_netns() -> bool {
    // SAFETY: unshare only affects the calling thread's namespaces; no memory is involved.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    if rc != 0 {
        let why = format!(
            "cannot create a network namespace ({}); run as root",
            std::io::Error::last_os_error()
        );
        // As duet::lab::skip, which this crate cannot use: strict under DUET_REQUIRE_ROOT=1,
        // and counted through DUET_SKIP_LOG.
        assert!(
            std::env::var("DUET_REQUIRE_ROOT").as_deref() != Ok("1"),
            "{why}, and DUET_REQUIRE_ROOT=1 forbids skipping"
        );
        eprintln!("skipping: {why}");
        if let Some(path) = std::env::var_os("DUET_SKIP_LOG") {
            let line = format!("netlink_netns: {why}\n");
            let _ = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
        }
        return false;
    }
    true
}

fn ip(args: &str) {
    let st = Command::new("ip")
        .args(args.split_whitespace())
        .status()
        .expect("ip");
    assert!(st.success(), "ip {args}");
}

#[test]
fn addresses_with_lifetime_and_link_state() {
    if !private_netns() {
        return;
    }
    ip("link add d0 type veth peer name d0p");
    ip("link set d0p up");
    ip("link set d0 up");
    let nl = Netlink::open().unwrap();
    let link = nl.link("d0").unwrap();
    assert!(link.admin_up);
    assert_eq!(link.mac.len(), 6);

    let vip: IpAddr = "10.77.0.10".parse().unwrap();
    nl.replace_address(link.index, vip, 24, Some(30)).unwrap();
    let found = nl.addresses(link.index).unwrap();
    let a = found
        .iter()
        .find(|a| a.address == vip)
        .expect("VIP present");
    assert_eq!(a.prefix, 24);
    let lft = a.valid_lifetime.expect("VIP has a lifetime");
    assert!((25..=30).contains(&lft), "{lft}");
    // Refresh to permanent, then delete twice (absent is fine).
    nl.replace_address(link.index, vip, 24, None).unwrap();
    let a = nl
        .addresses(link.index)
        .unwrap()
        .into_iter()
        .find(|a| a.address == vip)
        .unwrap();
    assert_eq!(a.valid_lifetime, None);
    nl.delete_address(link.index, vip, 24).unwrap();
    nl.delete_address(link.index, vip, 24).unwrap();
    assert!(
        nl.addresses(link.index)
            .unwrap()
            .iter()
            .all(|a| a.address != vip)
    );

    // IPv6 without DAD: usable at once.
    let v6: IpAddr = "2001:db8::10".parse().unwrap();
    nl.replace_address(link.index, v6, 64, Some(5)).unwrap();
    assert!(
        nl.addresses(link.index)
            .unwrap()
            .iter()
            .any(|a| a.address == v6)
    );

    // A clear error for a bad request.
    let e = nl.replace_address(9999, vip, 24, None).unwrap_err();
    assert!(e.raw_os_error().is_some(), "{e}");
    assert!(nl.link("nope0").unwrap_err().to_string().contains("nope0"));
}

#[test]
fn kernel_expires_a_vip_whose_lifetime_runs_out() {
    if !private_netns() {
        return;
    }
    ip("link add d1 type veth peer name d1p");
    ip("link set d1p up");
    ip("link set d1 up");
    let nl = Netlink::open().unwrap();
    let idx = nl.link("d1").unwrap().index;
    let vip: IpAddr = "10.77.1.10".parse().unwrap();
    nl.replace_address(idx, vip, 32, Some(1)).unwrap();
    let start = std::time::Instant::now();
    while nl.addresses(idx).unwrap().iter().any(|a| a.address == vip) {
        assert!(start.elapsed().as_secs() < 10, "VIP did not expire");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
