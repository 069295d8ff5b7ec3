#!/usr/bin/env bash
# The real-process fault campaign (issue 6): five `shoal server` processes on 127.0.0.11-15,
# a steady K2V write load, a fault every 10 s (kill -9 and restart, SIGSTOP/SIGCONT, iptables
# partitions), node 5's data on a small tmpfs that fills up; then heal and check within 60 s.
# Prints one summary line: acknowledged, lost, phantom, divergent partitions, time to converge.
#
# Usage: scripts/fault-campaign.sh [SECONDS] [extra shoal-bench campaign arguments]
# Needs root (iptables, mount); installs iptables if missing. Bounded: SECONDS of load (default
# 120) plus at most 60 s of checking plus start-up.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-120}"
shift || true

if [ "$(id -u)" != 0 ]; then
    echo "fault-campaign: needs root (iptables rules, a tmpfs mount)" >&2
    exit 2
fi
if ! command -v iptables >/dev/null; then
    (apt-get install -y iptables || (apt-get update && apt-get install -y iptables)) >/dev/null
fi

work="$(mktemp -d /tmp/shoal-campaign.XXXXXX)"
small="$work/small-disk"
mkdir -p "$small"
# 6 MiB: a few thousand items fill it within the first minute.
mount -t tmpfs -o size=6m tmpfs "$small"
cleanup() {
    umount "$small" 2>/dev/null || umount -l "$small" 2>/dev/null || true
}
trap cleanup EXIT

cargo build --release -q -p shoal -p shoal-bench
timeout $((seconds + 240)) ./target/release/shoal-bench campaign \
    --dir "$work/cluster" --seconds "$seconds" --small-disk "$small" "$@"
