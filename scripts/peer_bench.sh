#!/usr/bin/env bash
# PUT/GET throughput through six `shardgate peer` processes (127.0.0.2..7,
# libp2p over TCP + TLS + yamux) against six local directories on the
# same disk (the embedded default), both 4 + 2 with write quorum 5, in the
# same run: two release gateways stay up, and the load generator runs
# against A and B in turn, ABBA order, ROUNDS times, for 1 MiB objects
# (concurrency 16) and 64 MiB objects (concurrency 4). Prints each round,
# the ratios of the summed rates, each peer's peak RSS and CPU time, and
# how busy each CPU was over each phase (PUTs and GETs together).
#
#   scripts/peer_bench.sh [ROUNDS] [SMALL_COUNT] [LARGE_COUNT]   default: 2 200 8
#
# SHARDGATE_BENCH_LOADGEN_ARGS adds arguments to each load generator run
# (e.g. "--gets 4": GETs then outweigh the PUTs, for a profile).
# SHARDGATE_BENCH_TRANSPORT=quic (or tcp, the default) picks the peers'
# transport; SHARDGATE_BENCH_KEEP=1 keeps the logs. SHARDGATE_BENCH_PIN=1
# pins the six peers to CPU 1 and both gateways and the load generator to
# CPU 0: the peers stand for other machines, and both gateways share
# their one core with the same load.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/test-env.sh
rounds=${1:-2}
small=${2:-200}
large=${3:-8}
cargo build --release --locked -q -p shardgate -p shardgate-loadgen
target=${CARGO_TARGET_DIR:-target}
bin="$target/release/shardgate"
base=${SHARDGATE_BENCH_LOAD_DIR:-/var/tmp/shardgate-peer-bench}
rm -rf "$base"
mkdir -p "$base"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; [ -n "${SHARDGATE_BENCH_KEEP:-}" ] || rm -rf "$base"' EXIT

if [ -n "${SHARDGATE_BENCH_PIN:-}" ]; then
  pin_gateway=(taskset -c 0); pin_peers=(taskset -c 1); pin_load=(taskset -c 0)
else
  pin_gateway=(); pin_peers=(); pin_load=()
fi
gw=$("$bin" peer-id "$base/peers/gw/keys/peer.key")
peer_pids=()
config="$base/peers.toml"
: > "$config"
for i in 1 2 3 4 5 6; do
  dir="$base/peer-$i"
  case "${SHARDGATE_BENCH_TRANSPORT:-tcp}" in
    quic) listen="/ip4/127.0.0.$((i + 1))/udp/0/quic-v1" ;;
    *) listen="/ip4/127.0.0.$((i + 1))/tcp/0" ;;
  esac
  RUST_LOG=${SHARDGATE_BENCH_LOG:-warn} "${pin_peers[@]}" "$bin" peer --data-dir "$dir" --listen "$listen" --allow-gateway "$gw" \
    > "$base/peer-$i.out" 2> "$base/peer-$i.log" &
  pids+=($!); peer_pids+=($!)
  for _ in $(seq 100); do grep -q "listening on" "$base/peer-$i.out" 2>/dev/null && break; sleep 0.1; done
  id=$(sed -n 's/^shardgate peer: PeerId //p' "$base/peer-$i.out")
  addr=$(sed -n 's|^shardgate peer: listening on \(.*\)|\1|p' "$base/peer-$i.out" | head -1)
  printf '[[backends]]\nid = "peer-%s"\nkind = "peer"\npeer_id = "%s"\naddresses = ["%s"]\nlabels = { site = "site-%s" }\n\n' \
    "$i" "$id" "$addr" "$i" >> "$config"
done

start() { # name, extra serve arguments...
  local dir="$base/$1"; shift
  mkdir -p "$dir"
  RUST_LOG=${SHARDGATE_BENCH_LOG:-warn} "${pin_gateway[@]}" "$bin" serve "$@" --data-dir "$dir/gw" \
    --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 > "$dir/out.txt" 2> "$dir/gateway.log" &
  pids+=($!)
  echo $! > "$dir/pid"
  for _ in $(seq 600); do
    grep -q "listening on http" "$dir/out.txt" 2>/dev/null && break
    sleep 0.1
  done
  grep -q "listening on http" "$dir/out.txt" || { cat "$dir/gateway.log" >&2; exit 1; }
  sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$dir/out.txt" > "$dir/endpoint"
  for _ in $(seq 300); do
    curl -sf "$(cat "$dir/endpoint")/ready" >/dev/null && break
    sleep 0.1
  done
}
start peers --config "$config"
start fs

# Busy jiffies and all jiffies of CPU N, from /proc/stat.
jiffies() { awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat; }
# One phase: PUTs then GETs of COUNT objects of SIZE at CONCURRENCY;
# prints PUT MB/s, GET MB/s, errors, and how busy CPU 0 and CPU 1 were
# (percent, over the phase).
phase() { # name size count concurrency
  local dir="$base/$1" b0 t0 b1 t1 B0 T0 B1 T1 rates
  read -r b0 t0 < <(jiffies 0); read -r b1 t1 < <(jiffies 1)
  rates=$("${pin_load[@]}" "$target/release/shardgate-loadgen" --endpoint "$(cat "$dir/endpoint")" --credentials "$dir/gw/credentials" \
    --bucket "round" --sizes "$2" --counts "$3" --concurrency "$4" --cleanup --pid "$(cat "$dir/pid")" ${SHARDGATE_BENCH_LOADGEN_ARGS:-} \
    | awk -F'|' '$2 ~ /PUT/ { gsub(/ /, "", $6); put = $6; e += $12 }
                 $2 ~ /GET/ { gsub(/ /, "", $6); get = $6; e += $12 }
                 END { print put, get, e }')
  read -r B0 T0 < <(jiffies 0); read -r B1 T1 < <(jiffies 1)
  echo "$rates $(( 100 * (B0 - b0) / (T0 - t0 + 1) )) $(( 100 * (B1 - b1) / (T1 - t1 + 1) ))"
}
hwm() { awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
cpu() { echo "scale=1; $(awk '{ print $14 + $15 }' "/proc/$1/stat") / $(getconf CLK_TCK)" | bc -l; }

echo "$(nproc) cores${SHARDGATE_BENCH_PIN:+ (peers on CPU 1; gateways and load on CPU 0)}, $(uname -r); $rounds rounds; 1 MiB × $small at concurrency 16, 64 MiB × $large at concurrency 4"
echo "| round | size | peers PUT MB/s | fs PUT MB/s | PUT peers / fs | peers GET MB/s | fs GET MB/s | GET peers / fs | errors |"
echo "|---|---|---|---|---|---|---|---|---|"
declare -A sum
busy=()
for r in $(seq "$rounds"); do
  for spec in "1MiB $small 16" "64MiB $large 4"; do
    read -r size count conc <<< "$spec"
    if [ $((r % 2)) -eq 1 ]; then
      read -r pa ga ea ca0 ca1 < <(phase peers "$size" "$count" "$conc"); read -r pb gb eb cb0 cb1 < <(phase fs "$size" "$count" "$conc")
    else
      read -r pb gb eb cb0 cb1 < <(phase fs "$size" "$count" "$conc"); read -r pa ga ea ca0 ca1 < <(phase peers "$size" "$count" "$conc")
    fi
    busy+=("round $r, $size: over peers CPU 0 ${ca0}% CPU 1 ${ca1}%; over fs CPU 0 ${cb0}% CPU 1 ${cb1}%")
    for k in pa pb ga gb; do sum[$size$k]=$(echo "${sum[$size$k]:-0} + ${!k}" | bc -l); done
    sum[$size.e]=$(( ${sum[$size.e]:-0} + ea + eb ))
    printf '| %s | %s | %s | %s | %.3f | %s | %s | %.3f | %s |\n' "$r" "$size" "$pa" "$pb" "$(echo "$pa / $pb" | bc -l)" \
      "$ga" "$gb" "$(echo "$ga / $gb" | bc -l)" "$((ea + eb))"
  done
done
for size in 1MiB 64MiB; do
  printf '| all | %s | %.0f | %.0f | **%.3f** | %.0f | %.0f | **%.3f** | %s |\n' "$size" \
    "$(echo "${sum[${size}pa]} / $rounds" | bc -l)" "$(echo "${sum[${size}pb]} / $rounds" | bc -l)" \
    "$(echo "${sum[${size}pa]} / ${sum[${size}pb]}" | bc -l)" \
    "$(echo "${sum[${size}ga]} / $rounds" | bc -l)" "$(echo "${sum[${size}gb]} / $rounds" | bc -l)" \
    "$(echo "${sum[${size}ga]} / ${sum[${size}gb]}" | bc -l)" "${sum[$size.e]}"
done
printf 'peak RSS of each peer (MiB):'
for p in "${peer_pids[@]}"; do printf ' %s' "$(hwm "$p")"; done
printf '; gateway over peers %s MiB, over fs %s MiB\n' "$(hwm "$(cat "$base/peers/pid")")" "$(hwm "$(cat "$base/fs/pid")")"
printf 'CPU seconds: each peer'
for p in "${peer_pids[@]}"; do printf ' %s' "$(cpu "$p")"; done
printf '; gateway over peers %s, over fs %s\n' "$(cpu "$(cat "$base/peers/pid")")" "$(cpu "$(cat "$base/fs/pid")")"
printf 'busy (PUT and GET phases together): %s\n' "${busy[@]}"
for name in peers fs; do
  printf 'fragment reads hedged, gateway over %s: %s\n' "$name" \
    "$(curl -sf "$(cat "$base/$name/endpoint")/metrics" | awk '/^[a-z_]*read_hedges/ { print $2 }')"
done
