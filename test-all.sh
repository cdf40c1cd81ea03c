#!/usr/bin/env bash
# Runs every test of duet, installing what the tests need first. CI runs exactly this.
#
# The namespace tests need root (they build labs with `ip netns`); without root they skip with a
# message and are counted as skipped in the closing line. DUET_REQUIRE_ROOT=1 (set by .ci/run)
# turns a skip for want of root into a failure; DUET_REQUIRE_TOOLS=1 (always set here) does the
# same for a missing reference tool (keepalived, HAProxy, etcd, nft).
set -euo pipefail
cd "$(dirname "$0")"

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v keepalived >/dev/null || need+=(keepalived)
command -v python3 >/dev/null || need+=(python3)
command -v nft >/dev/null || need+=(nftables)
command -v unshare >/dev/null || need+=(util-linux)
command -v etcd >/dev/null || need+=(etcd-server)
command -v haproxy >/dev/null || need+=(haproxy)
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15)
command -v promtool >/dev/null || need+=(prometheus)
command -v chromium >/dev/null || need+=(chromium)
command -v systemd-analyze >/dev/null || need+=(systemd)
if ((${#need[@]})); then
    if [ "$(id -u)" -eq 0 ]; then
        echo "installing: ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "missing ${need[*]}; install them or run as root" >&2
    fi
fi

# duet runs its own PostgreSQL servers: Debian's 15/main cluster (started by the package on
# 5432) stays stopped.
if [ "$(id -u)" -eq 0 ] && command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster 15 main stop 2>/dev/null || true
fi
# Only promtool is used from the prometheus package: its server stays stopped.
if [ "$(id -u)" -eq 0 ] && command -v prometheus >/dev/null; then
    { systemctl stop prometheus || pkill -x prometheus; } >/dev/null 2>&1 || true
fi

if [ "$(id -u)" -ne 0 ]; then
    if [ "${DUET_REQUIRE_ROOT:-}" = 1 ]; then
        echo "DUET_REQUIRE_ROOT=1 but not root: the network-namespace tests could not run" >&2
        exit 1
    fi
    echo "note: not root, so the network-namespace tests skip (counted in the closing line)" >&2
fi

export DUET_REQUIRE_TOOLS=1
skips=$(mktemp)
log=$(mktemp)
trap 'rm -f "$log" "$skips"' EXIT
export DUET_SKIP_LOG=$skips
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The Debian package that tests/package.rs installs: the release build (LTO, a few minutes),
# man pages, completions, cargo deb.
command -v cargo-deb >/dev/null || cargo install --locked --quiet cargo-deb
cargo xtask deb
set +e
cargo test --workspace 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (cargo's own last line is a crate's doc-tests).
# A test that skipped (no root, a tool missing) passes in cargo's count; it is counted here.
skipped=$(wc -l < "$skips")
awk -v s="$skipped" '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed (%d of them skipped), %d failed\n", p, s, f }' "$log"
if [ "$skipped" -gt 0 ]; then
    sed 's/^/  skipped: /' "$skips"
fi
exit "$status"
