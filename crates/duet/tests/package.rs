//! The Debian package (`cargo xtask deb`, which `./test-all.sh` runs before the tests): its
//! files and maintainer scripts, then a real `dpkg -i` into a throw-away root (a mount
//! namespace whose /etc, /usr and /var are overlays on the host's, and a network namespace
//! with the examples' interfaces), where the installed `duet` checks every example, writes a
//! cluster key, the unit passes `systemd-analyze verify`, and `dpkg --purge` takes it all
//! away again. The host's own files are never touched. Needs root.

use std::path::PathBuf;
use std::process::Command;

/// The package `cargo xtask deb` built, or `None` (and a recorded skip).
fn package() -> Option<PathBuf> {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
        .join("debian");
    let version = env!("CARGO_PKG_VERSION");
    let deb = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("duet_{version}-")) && n.ends_with(".deb"))
        });
    if deb.is_none() {
        duet::lab::skip(
            &format!(
                "no duet_{version}-*.deb in {} (cargo xtask deb)",
                dir.display()
            ),
            "DUET_REQUIRE_TOOLS",
        );
    }
    deb
}

fn dpkg_deb(args: &[&str], deb: &PathBuf) -> String {
    let out = Command::new("dpkg-deb")
        .args(args)
        .arg(deb)
        .output()
        .unwrap();
    assert!(out.status.success(), "dpkg-deb {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_package_holds_the_binary_unit_man_pages_completions_and_examples() {
    let Some(deb) = package() else {
        return;
    };
    let list = dpkg_deb(&["--contents"], &deb);
    for want in [
        "./usr/bin/duet",
        "./usr/lib/systemd/system/duet.service",
        "./usr/share/man/man1/duet.1.gz",
        "./usr/share/man/man1/duet-run.1.gz",
        "./usr/share/man/man1/duet-import.1.gz",
        "./usr/share/man/man1/duet-service-reset.1.gz",
        "./usr/share/man/man1/duet-diff-config.1.gz",
        "./usr/share/doc/duet/migrating.md",
        "./usr/share/bash-completion/completions/duet",
        "./usr/share/zsh/vendor-completions/_duet",
        "./usr/share/fish/vendor_completions.d/duet.fish",
        "./usr/share/doc/duet/copyright",
        "./usr/share/doc/duet/examples/vip-pair.toml",
        "./usr/share/doc/duet/examples/heartbeat-witness.toml",
        "./usr/share/doc/duet/examples/balancer.toml",
        "./usr/share/doc/duet/examples/three-nodes-etcd.toml",
        "./usr/share/doc/duet/database.conf",
    ] {
        assert!(
            list.lines().any(|l| l.ends_with(want)),
            "{want} is not in the package:\n{list}"
        );
    }
    // Everything is root's, and nothing but the binary is executable.
    for line in list.lines().filter(|l| l.starts_with('-')) {
        assert!(line.contains(" 0/0 "), "{line}");
        let exec = line.starts_with("-rwx");
        assert_eq!(exec, line.ends_with("./usr/bin/duet"), "{line}");
    }
    let control = dpkg_deb(&["--field"], &deb);
    assert!(control.contains("Package: duet"), "{control}");
    assert!(control.contains("Depends: libc6"), "{control}");

    // The maintainer scripts: directories on configure, never an enabled or started service
    // (a node needs its config and the cluster key first), and purge removes the state.
    let dir = std::env::temp_dir().join(format!("duet-deb-control-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new("dpkg-deb")
        .arg("--control")
        .arg(&deb)
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let postinst = std::fs::read_to_string(dir.join("postinst")).unwrap();
    assert!(postinst.contains("install -d -m 0700 \"$DPKG_ROOT/var/lib/duet\""));
    for never in [
        "deb-systemd-invoke start",
        "systemctl start",
        "systemctl enable",
    ] {
        // (The hint printed for the administrator may name it.)
        let runs = postinst
            .lines()
            .any(|l| l.contains(never) && !l.trim_start().starts_with("echo"));
        assert!(
            !runs,
            "{never} in postinst:
{postinst}"
        );
    }
    // deb-systemd-helper enables only what the administrator had enabled (an upgrade).
    if let Some(j) = postinst.find("deb-systemd-helper enable") {
        let i = postinst
            .find("was-enabled duet.service")
            .unwrap_or(usize::MAX);
        assert!(i < j, "{postinst}");
    }
    let postrm = std::fs::read_to_string(dir.join("postrm")).unwrap();
    assert!(
        postrm.contains("rm -rf \"$DPKG_ROOT/var/lib/duet\""),
        "{postrm}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_package_installs_into_a_throw_away_root_checks_every_example_and_purges_clean() {
    if let Err(e) = duet::lab::can_build_labs() {
        duet::lab::skip(&format!("{e} (this test needs root)"), "DUET_REQUIRE_ROOT");
        return;
    }
    let Some(deb) = package() else {
        return;
    };
    let scratch = std::env::temp_dir().join(format!("duet-deb-root-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    // Each step says what it checks; the first failure stops the script with its name.
    let (done, text) = duet::lab::sandboxed(
        &scratch,
        &["etc", "usr", "var"],
        r#"
step "not installed before"
! command -v duet >/dev/null 2>&1 || [ "$(command -v duet)" != /usr/bin/duet ]
step "dpkg -i"
DEBIAN_FRONTEND=noninteractive dpkg -i "$DEB"
step "installed binary"
[ "$(/usr/bin/duet --version)" = "duet $VERSION" ]
step "state directory 0700"
[ "$(stat -c %a /var/lib/duet)" = 700 ]
step "service not enabled"
[ ! -e /etc/systemd/system/multi-user.target.wants/duet.service ]
step "cluster key"
/usr/bin/duet key new /etc/duet/cluster.key
[ "$(stat -c %a /etc/duet/cluster.key)" = 600 ]
for f in /usr/share/doc/duet/examples/*.toml; do
    step "duet check $f"
    /usr/bin/duet check -c "$f"
done
step "systemd-analyze verify"
cp /usr/share/doc/duet/examples/heartbeat-witness.toml /etc/duet/duet.toml
out=$(systemd-analyze verify /usr/lib/systemd/system/duet.service 2>&1) || { echo "$out"; exit 1; }
[ -z "$out" ] || { echo "$out"; exit 1; }
step "the unit starts what it checks"
grep -qx 'ExecStart=/usr/bin/duet run -c /etc/duet/duet.toml' /usr/lib/systemd/system/duet.service
/usr/bin/duet check -c /etc/duet/duet.toml
step "man page"
zcat /usr/share/man/man1/duet.1.gz | grep -q '^\.TH duet 1'
step "bash completion"
bash -c '. /usr/share/bash-completion/completions/duet && complete -p duet' | grep -q duet
step "dpkg --purge"
DEBIAN_FRONTEND=noninteractive dpkg --purge duet
[ ! -e /usr/bin/duet ] && [ ! -e /var/lib/duet ] && [ ! -e /etc/duet ]
[ ! -e /usr/lib/systemd/system/duet.service ]
"#,
        &[
            ("DEB", deb.as_os_str()),
            ("VERSION", std::ffi::OsStr::new(env!("CARGO_PKG_VERSION"))),
        ],
    );
    assert!(done, "the last step shown failed:\n{text}");
    // What dpkg wrote went to the overlays, not to the host.
    assert!(scratch.join("usr.up/share/doc").exists());
    let _ = std::fs::remove_dir_all(&scratch);
}
