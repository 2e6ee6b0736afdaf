#!/usr/bin/env bash
# How long `shardgate serve` takes to start with every example plugin: the
# four policies of policies/ (spread-sites and eu-only in C, provider-limit
# in Python, onprem-one in JavaScript) over nine in-memory backends. The
# first start compiles each plugin (Cranelift) and caches the artifact in
# the data dir; every restart after it loads the artifacts. Prints the time
# from exec to the "listening on" line, and what the log says per plugin.
#
#   scripts/plugin_startup.sh [RESTARTS]       default: 5
set -euo pipefail
cd "$(dirname "$0")/.."
restarts=${1:-5}
cargo build --release --locked -q -p shardgate
target=${CARGO_TARGET_DIR:-target}
base=${SHARDGATE_BENCH_LOAD_DIR:-/var/tmp/shardgate-startup}
rm -rf "$base"
mkdir -p "$base/policies"
trap 'rm -rf "$base"' EXIT
plugins/examples/provider-limit-py/build.sh "$base/provider-limit.wasm"
plugins/examples/onprem-one-js/build.sh "$base/onprem-one.wasm"
for p in default eu-only provider-limit onprem-one; do
  sed -e "s|^plugin = .*/\([a-z-]*\.wasm\)\"|plugin = \"PLUGIN/\1\"|" "policies/$p.toml" > "$base/policies/$p.toml"
done
sed -i -e "s|PLUGIN/spread-sites.wasm|$PWD/plugins/examples/spread-sites-c/spread-sites.wasm|" \
  -e "s|PLUGIN/eu-only.wasm|$PWD/plugins/examples/eu-only-c/eu-only.wasm|" \
  -e "s|PLUGIN/|$base/|" "$base"/policies/*.toml
{
  echo "policy_dir = \"$base/policies\""
  echo 'default_policy = "default"'
  i=0
  for region in eu-west eu-west eu-central eu-north eu-north us-east us-east ap-south eu-west; do
    i=$((i + 1))
    if [ $((i % 3)) -eq 0 ]; then provider=onprem; else provider="cloud-$((i % 3))"; fi
    printf '[[backends]]\nid = "mem-%s"\nkind = "memory"\nlabels = { site = "s%s", region = "%s", provider = "%s", cost = "%s" }\n' \
      $i $i $region $provider $((i % 4))
  done
} > "$base/config.toml"

start_once() { # prints seconds to the listening line
  local out="$base/out.txt"
  rm -f "$out"
  local t0 t1
  t0=$(date +%s%N)
  RUST_LOG=info "$target/release/shardgate" serve --config "$base/config.toml" --data-dir "$base/gw" \
    --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 > "$out" 2> "$base/gateway.log" &
  local pid=$!
  # A first start compiles the Python plugin (about 10 s on 2 cores): wait
  # up to two minutes, then give up.
  local deadline=$((t0 + 120000000000))
  until grep -q "listening on" "$out" 2>/dev/null; do
    kill -0 $pid 2>/dev/null || { cat "$base/gateway.log" >&2; exit 1; }
    [ "$(date +%s%N)" -lt "$deadline" ] || { kill $pid; echo "not listening after 120 s" >&2; exit 1; }
    sleep 0.005
  done
  t1=$(date +%s%N)
  kill $pid; wait $pid 2>/dev/null || true
  printf "%.3f" "$(echo "scale=3; ($t1 - $t0) / 1000000000" | bc)"
}

echo "$(nproc) cores, $(uname -r); four policies, nine memory backends"
echo "| start | seconds to listening | plugins (log: cached, elapsed ms) |"
echo "|---|---|---|"
for n in $(seq 0 "$restarts"); do
  s=$(start_once)
  loaded=$(sed -n '/plugin loaded/s/.*plugin=\([a-z-]*\).*cached=\([a-z]*\).*elapsed_ms=\([0-9]*\).*/\1 \2 \3/p' "$base/gateway.log" \
    | awk '{ printf "%s%s %s %s ms", sep, $1, ($2 == "true" ? "cached" : "compiled"), $3; sep = ", " }')
  label=$([ "$n" -eq 0 ] && echo "first (empty cache)" || echo "restart $n")
  echo "| $label | $s | $loaded |"
done
