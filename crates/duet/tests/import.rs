//! `duet import` on realistic configs (`tests/data/`): the reference tools accept the input
//! (`keepalived --config-test`, `haproxy -c`), and `duet check` accepts the output on a host
//! that has what the configs name (interfaces, hook scripts, the certificate), built in a
//! mount and network namespace whose /etc is an overlay (`duet::lab::sandboxed`). Needs root,
//! keepalived and haproxy.

#[test]
fn imported_keepalived_and_haproxy_configs_pass_duet_check() {
    if let Err(e) = duet::lab::can_build_labs() {
        duet::lab::skip(&format!("{e} (this test needs root)"), "DUET_REQUIRE_ROOT");
        return;
    }
    for tool in ["keepalived", "haproxy"] {
        if !duet::lab::have_program(tool) {
            duet::lab::skip(&format!("{tool} is not installed"), "DUET_REQUIRE_TOOLS");
            return;
        }
    }
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    let scratch = std::env::temp_dir().join(format!("duet-import-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    // The certificate the HAProxy config names: one PEM with the chain and the key, as
    // HAProxy wants it (duet reads both from the one file).
    let cert = rcgen::generate_simple_self_signed(vec!["www.example.com".into()]).unwrap();
    std::fs::write(
        scratch.join("site.pem"),
        format!("{}{}", cert.cert.pem(), cert.signing_key.serialize_pem()),
    )
    .unwrap();
    let (done, text) = duet::lab::sandboxed(
        &scratch,
        &["etc"],
        r#"
mkdir -p /etc/keepalived /etc/haproxy
for s in notify.sh group.sh; do printf '#!/bin/sh\nexit 0\n' > /etc/keepalived/$s; chmod 755 /etc/keepalived/$s; done
cp "$SCRATCH/site.pem" /etc/haproxy/site.pem

step "keepalived accepts the input"
keepalived --config-test -f "$DATA/keepalived.conf"
step "haproxy accepts the input"
haproxy -c -q -f "$DATA/haproxy.cfg"
for kind in keepalived haproxy; do
    case $kind in keepalived) f="$DATA/keepalived.conf";; haproxy) f="$DATA/haproxy.cfg";; esac
    step "duet import $kind"
    "$DUET" import "$kind" "$f" > "$SCRATCH/$kind.toml" 2> "$SCRATCH/$kind.report"
    grep -q 'not translated as written' "$SCRATCH/$kind.report"
    step "duet check of the $kind import"
    "$DUET" check -c "$SCRATCH/$kind.toml"
done
"#,
        &[
            ("DATA", std::ffi::OsStr::new(data)),
            ("DUET", std::ffi::OsStr::new(env!("CARGO_BIN_EXE_duet"))),
        ],
    );
    let show = |kind: &str| {
        std::fs::read_to_string(scratch.join(format!("{kind}.toml"))).unwrap_or_default()
    };
    assert!(
        done,
        "the last step shown failed:\n{text}\n--- keepalived import:\n{}\n--- haproxy import:\n{}",
        show("keepalived"),
        show("haproxy")
    );
    let _ = std::fs::remove_dir_all(&scratch);
}
