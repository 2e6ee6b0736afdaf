#!/usr/bin/env bash
# What the listener's limits (issue 22: connection watchdog, body clock,
# admission) cost per request, counted in instructions (valgrind's count
# does not move with the machine's load, unlike a wall-clock rate): the
# gateway built before them (SHARDGATE_BENCH_BASE_BIN) against this one,
# each under callgrind on its embedded default, counters zeroed once it
# listens, then OBJECTS 4 KiB PUTs and GETs at 16 clients. Prints
# instructions per request and the ratio.
#
#   SHARDGATE_BENCH_BASE_BIN=... scripts/limits_instructions.sh [OBJECTS]   default 400
set -euo pipefail
cd "$(dirname "$0")/.."
objects=${1:-400}
: "${SHARDGATE_BENCH_BASE_BIN:?name the gateway built before the limits}"
cargo build --release --locked -q -p shardgate -p shardgate-loadgen
target=${CARGO_TARGET_DIR:-target}
work=$(mktemp -d /var/tmp/shardgate-limits-instr.XXXXXX)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

run() { # name binary: prints instructions per request
  local dir="$work/$1"
  mkdir -p "$dir"
  RUST_LOG=warn valgrind --tool=callgrind --smc-check=all-non-file --collect-atstart=yes \
    --callgrind-out-file="$dir/callgrind.out.%p" \
    "$2" serve --data-dir "$dir/gw" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 > "$dir/out.txt" 2> "$dir/gateway.log" &
  pid=$!
  for _ in $(seq 600); do grep -q "listening on" "$dir/out.txt" 2>/dev/null && break; sleep 0.2; done
  local endpoint
  endpoint=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$dir/out.txt")
  callgrind_control -z "$pid" > /dev/null
  "$target/release/shardgate-loadgen" --endpoint "$endpoint" --credentials "$dir/gw/credentials" \
    --sizes 4KiB --counts "$objects" --concurrency 16 > "$dir/load.txt"
  [ "$(grep -c '| 0 | ' "$dir/load.txt")" -eq 2 ] || { cat "$dir/load.txt" >&2; exit 1; }
  callgrind_control -d "$pid" > /dev/null
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  cat "$dir"/callgrind.out.*.1 | awk '/^summary:/ { s += $2 } END { printf "%.0f\n", s / (2 * '"$objects"') }'
}

base=$(run base "$SHARDGATE_BENCH_BASE_BIN")
limits=$(run limits "$target/release/shardgate")
echo "instructions per request (4 KiB PUT and GET, 16 clients, $objects each):"
echo "  before the limits: $base"
echo "  with the limits:   $limits"
awk -v a="$base" -v b="$limits" 'BEGIN { printf "  ratio: %.4f (%+.2f%%)\n", b / a, (b / a - 1) * 100 }'
