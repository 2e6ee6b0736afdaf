#!/usr/bin/env bash
# What a placement plugin costs on the whole PUT path: two release
# gateways, identical but for placement (A: the spread-sites C plugin, as
# the embedded default does; B: the built-in spread rule), six in-memory
# backends each (no disk, so the gateway's own CPU is all there is to
# measure), 4 + 2, quorum 5. Both stay up; the load generator PUTs (then
# GETs) 1 MiB objects at concurrency 16 against A and B in turn, ABBA
# order, ROUNDS times. Prints each round, the ratio of the summed PUT
# rates, and the gateway CPU time per PUT (read from /proc by the load
# generator), which the other core's noise moves far less than the rate.
#
#   scripts/placement_overhead.sh [ROUNDS] [OBJECTS]     default: 8 1000
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/placement_pair.sh
rounds=${1:-8}
objects=${2:-1000}
cargo build --release --locked -q -p shardgate -p shardgate-loadgen
target=${CARGO_TARGET_DIR:-target}
base=${SHARDGATE_BENCH_LOAD_DIR:-/var/tmp/shardgate-placement}
plugin=$(realpath plugins/examples/spread-sites-c/spread-sites.wasm)
rm -rf "$base"
mkdir -p "$base"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$base"' EXIT

start() { # name, plugin line
  local dir="$base/$1"
  placement_pair_config "$dir" "$2"
  RUST_LOG=warn "$target/release/shardgate" serve --config "$dir/config.toml" --data-dir "$dir/gw" \
    --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 > "$dir/out.txt" 2> "$dir/gateway.log" &
  pids+=($!)
  echo $! > "$dir/pid"
  for _ in $(seq 300); do
    grep -q "listening on" "$dir/out.txt" 2>/dev/null && break
    sleep 0.1
  done
  grep -q "listening on" "$dir/out.txt" || { cat "$dir/gateway.log" >&2; exit 1; }
  sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$dir/out.txt" > "$dir/endpoint"
}
start plugin "plugin = \"$plugin\""
start builtin "# built-in spread"

# One phase of PUTs (and GETs, then deleted): prints the PUT ops/s and the
# gateway's CPU milliseconds per PUT.
put_phase() {
  local dir="$base/$1"
  "$target/release/shardgate-loadgen" --endpoint "$(cat "$dir/endpoint")" --credentials "$dir/gw/credentials" \
    --bucket "round" --sizes 1MiB --counts "$objects" --concurrency 16 --cleanup --pid "$(cat "$dir/pid")" \
    | awk -F'|' '$2 ~ /PUT/ { gsub(/ /, "", $7); gsub(/ /, "", $14); print $7, $14 }'
}

echo "$(nproc) cores, $(uname -r); $rounds rounds of $objects × 1 MiB PUTs at concurrency 16 per gateway"
echo "| round | plugin PUT ops/s | built-in PUT ops/s | plugin / built-in | plugin CPU ms/PUT | built-in CPU ms/PUT |"
echo "|---|---|---|---|---|---|"
sum_a=0; sum_b=0; cpu_a=0; cpu_b=0
for r in $(seq "$rounds"); do
  if [ $((r % 2)) -eq 1 ]; then read -r a ca < <(put_phase plugin); read -r b cb < <(put_phase builtin)
  else read -r b cb < <(put_phase builtin); read -r a ca < <(put_phase plugin); fi
  sum_a=$(echo "$sum_a + $a" | bc -l); sum_b=$(echo "$sum_b + $b" | bc -l)
  cpu_a=$(echo "$cpu_a + $ca" | bc -l); cpu_b=$(echo "$cpu_b + $cb" | bc -l)
  printf '| %s | %s | %s | %.3f | %s | %s |\n' "$r" "$a" "$b" "$(echo "$a / $b" | bc -l)" "$ca" "$cb"
done
printf '| all | %.1f | %.1f | **%.3f** | %.3f | %.3f |\n' "$(echo "$sum_a / $rounds" | bc -l)" "$(echo "$sum_b / $rounds" | bc -l)" \
  "$(echo "$sum_a / $sum_b" | bc -l)" "$(echo "$cpu_a / $rounds" | bc -l)" "$(echo "$cpu_b / $rounds" | bc -l)"
printf 'CPU per PUT, plugin / built-in: **%.3f**\n' "$(echo "$cpu_a / $cpu_b" | bc -l)"
