#!/usr/bin/env bash
# Installs the systems `shoal-bench cluster` compares Shoal with, once: Garage from the crate
# registry (cached under bench/.peers, so reruns do not rebuild it) and etcd from Debian.
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
