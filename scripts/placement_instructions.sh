#!/usr/bin/env bash
# The placement plugin's share of the PUT path, counted in instructions
# rather than seconds: these machines are shared and noisy (the wall-clock
# comparison of scripts/placement_overhead.sh moves by ±30% between rounds),
# while valgrind's instruction count is the same from run to run.
#
# The same two release gateways as placement_overhead.sh (A: spread-sites C
# plugin; B: the built-in spread rule; six memory backends, 4 + 2), each run
# under callgrind in turn. Counters are zeroed once the gateway listens
# (startup and plugin loading excluded; the plugin's compiled artifact is
# cached by a native start first), then OBJECTS × 1 MiB PUTs at concurrency
# 4 are counted, and nothing else. Prints instructions per PUT and the ratio.
#
#   scripts/placement_instructions.sh [OBJECTS]     default: 40
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/placement_pair.sh
objects=${1:-40}
cargo build --release --locked -q -p shardgate -p shardgate-loadgen
target=${CARGO_TARGET_DIR:-target}
base=${SHARDGATE_BENCH_LOAD_DIR:-/var/tmp/shardgate-placement-instr}
plugin=$(realpath plugins/examples/spread-sites-c/spread-sites.wasm)
rm -rf "$base"
mkdir -p "$base"
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$base"' EXIT

wait_listening() { # dir, seconds
  local deadline=$((SECONDS + $2))
  until grep -q "listening on" "$1/out.txt" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { cat "$1/gateway.log" >&2; exit 1; }
    [ "$SECONDS" -lt "$deadline" ] || { echo "not listening after $2 s" >&2; exit 1; }
    sleep 0.2
  done
  sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$1/out.txt" > "$1/endpoint"
}

run() { # name [valgrind...]: starts the gateway, prints instructions per PUT
  local name=$1 dir="$base/$1"
  shift
  rm -f "$dir/out.txt"
  RUST_LOG=warn "$@" "$target/release/shardgate" serve --config "$dir/config.toml" --data-dir "$dir/gw" \
    --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 > "$dir/out.txt" 2> "$dir/gateway.log" &
  pid=$!
  wait_listening "$dir" 300
  if [ $# -eq 0 ]; then kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; return; fi
  callgrind_control -z "$pid" > /dev/null
  "$target/release/shardgate-loadgen" --endpoint "$(cat "$dir/endpoint")" --credentials "$dir/gw/credentials" \
    --bucket "$name" --sizes 1MiB --counts "$objects" --concurrency 4 --put-only > "$dir/load.txt"
  grep -q '| PUT |.*| 0 |' "$dir/load.txt" || { cat "$dir/load.txt" >&2; exit 1; }
  callgrind_control -d "$pid" > /dev/null
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  # The dump after zeroing holds exactly the PUT phase; sum every thread's.
  cat "$dir"/callgrind.out.*.1 | awk '/^summary:/ { s += $2 } END { printf "%.0f\n", s / '"$objects"' }'
}

placement_pair_config "$base/plugin" "plugin = \"$plugin\""
placement_pair_config "$base/builtin" "# built-in spread"
for name in plugin builtin; do run "$name"; done # native first start: plugin compiled and cached
cg=(valgrind --tool=callgrind --smc-check=all-non-file --collect-atstart=yes)
a=$(run plugin "${cg[@]}" --callgrind-out-file="$base/plugin/callgrind.out.%p")
b=$(run builtin "${cg[@]}" --callgrind-out-file="$base/builtin/callgrind.out.%p")
echo "$(nproc) cores, valgrind $(valgrind --version | sed 's/valgrind-//'); $objects × 1 MiB PUTs at concurrency 4, 4 + 2, six memory backends"
echo "| placement | instructions per PUT |"
echo "|---|---|"
echo "| spread-sites C plugin | $a |"
echo "| built-in spread | $b |"
printf 'plugin / built-in: **%.4f** (the plugin adds %d instructions per PUT)\n' "$(echo "$a / $b" | bc -l)" "$((a - b))"
