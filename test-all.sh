#!/usr/bin/env bash
# Runs every test of duet, installing what the tests need first. CI runs exactly this.
#
# The namespace tests need root (they build labs with `ip netns`); without root they skip with a
# message. DUET_REQUIRE_TOOLS=1 turns a missing reference tool (keepalived, HAProxy) into a failure.
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
if ((${#need[@]})); then
    if [ "$(id -u)" -eq 0 ]; then
        echo "installing: ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "missing ${need[*]}; install them or run as root" >&2
    fi
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "note: not root, so the network-namespace tests will pass without running (they print 'skipping')" >&2
fi

export DUET_REQUIRE_TOOLS=1
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (cargo's own last line is a crate's doc-tests).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
