#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each) and prints the executions of
# each. A crash leaves its input under fuzz/artifacts/<target>/: turn it into a regression test.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1   # the stable toolchain, with the sanitizer flags cargo-fuzz needs
for target in frame_decoder rpc_message sync_session item_decoder api_request; do
    mkdir -p "corpus/$target"
    log="$(mktemp)"
    if cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$seconds" >"$log" 2>&1; then
        status=ok
    else
        status=CRASH
    fi
    execs=$(grep -o 'Done [0-9]* runs' "$log" | grep -o '[0-9]*' | tail -1 || true)
    echo "$target: $status, ${execs:-?} executions in ${seconds} s"
    [ "$status" = ok ] || tail -30 "$log"
    rm -f "$log"
done
