#!/usr/bin/env bash
# Installs the systems `shoal-bench cluster` compares Shoal with, once: Garage from the crate
# registry (cached under bench/.peers, so reruns do not rebuild it), etcd from Debian, and
# iptables, with which the catch-up and repair scenarios count bytes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
peers="$here/.peers"
mkdir -p "$peers"
if [ ! -x "$peers/bin/garage" ]; then
    echo "building garage (once; several minutes)…"
    CARGO_TARGET_DIR="$peers/target" cargo install garage --locked --root "$peers" ${GARAGE_JOBS:+-j "$GARAGE_JOBS"}
    rm -rf "$peers/target"
fi
"$peers/bin/garage" --version
if ! command -v etcd >/dev/null; then
    echo "installing etcd…"
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client
    else
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client
    fi
fi
etcd --version | head -1
# The catch-up and repair scenarios count bytes with iptables (as root).
if ! command -v iptables >/dev/null && ! [ -x /usr/sbin/iptables ]; then
    echo "installing iptables…"
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables
    else
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables
    fi
fi
