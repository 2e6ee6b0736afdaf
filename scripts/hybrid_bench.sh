#!/usr/bin/env bash
# PUT/GET throughput of the hybrid example (examples/hybrid/shardgate.toml:
# two local sites, two moto S3 servers and Azurite, provider-limit plugin)
# against the all-fs embedded default (six local sites, spread-sites
# plugin), both 4 + 2 with write quorum 5, in the same run: two release
# gateways stay up, and the load generator runs against A and B in turn,
# ABBA order, ROUNDS times (1 MiB objects, concurrency 16, deleted after
# each round). Prints each round and the ratios of the summed rates.
#
#   scripts/hybrid_bench.sh [ROUNDS] [OBJECTS] [SIZE]     default: 4 200 1MiB
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/test-env.sh
rounds=${1:-4}
objects=${2:-200}
size=${3:-1MiB}
cargo build --release --locked -q -p shardgate -p shardgate-loadgen
target=${CARGO_TARGET_DIR:-target}
base=${SHARDGATE_BENCH_LOAD_DIR:-/var/tmp/shardgate-hybrid-bench}
rm -rf "$base"
mkdir -p "$base"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$base"' EXIT

plugin=plugins/examples/provider-limit-py/provider-limit.wasm
[ -f "$plugin" ] || plugins/examples/provider-limit-py/build.sh "$plugin"
azurite=tests/emulators/node_modules/.bin/azurite-blob
[ -x "$azurite" ] || (cd tests/emulators && npm ci --no-audit --no-fund --loglevel=error)

moto_server -H 127.0.0.1 -p 19001 >"$base/aws.log" 2>&1 & pids+=($!)
moto_server -H 127.0.0.1 -p 19002 >"$base/wasabi.log" 2>&1 & pids+=($!)
"$azurite" --blobHost 127.0.0.1 --blobPort 19003 --inMemoryPersistence --disableTelemetry \
  --skipApiVersionCheck --loose >"$base/azure.log" 2>&1 & pids+=($!)
emulators=("${pids[@]}")
# CPU seconds the emulators have used (utime + stime of their processes).
emulator_cpu() {
  local ticks=0 pid
  for pid in "${emulators[@]}"; do
    ticks=$((ticks + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
  done
  echo "$ticks / $(getconf CLK_TCK)" | bc -l
}
for port in 19001 19002 19003; do
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.2; done
done
curl -sf -X PUT http://127.0.0.1:19001/shardgate-aws >/dev/null
curl -sf -X PUT http://127.0.0.1:19002/shardgate-wasabi >/dev/null
python3 - <<'PY'
from azure.storage.blob import BlobServiceClient
key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
conn = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=" + key
        + ";BlobEndpoint=http://127.0.0.1:19003/devstoreaccount1;")
BlobServiceClient.from_connection_string(conn).create_container("shardgate-azure")
PY

start() { # name, extra serve arguments...
  local dir="$base/$1"; shift
  mkdir -p "$dir"
  RUST_LOG=warn "$target/release/shardgate" serve "$@" --data-dir "$dir/gw" \
    --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 > "$dir/out.txt" 2> "$dir/gateway.log" &
  pids+=($!)
  echo $! > "$dir/pid"
  for _ in $(seq 600); do
    grep -q "listening on" "$dir/out.txt" 2>/dev/null && break
    sleep 0.1
  done
  grep -q "listening on" "$dir/out.txt" || { cat "$dir/gateway.log" >&2; exit 1; }
  sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$dir/out.txt" > "$dir/endpoint"
}
sed "s|shardgate-data/hybrid/|$base/hybrid/|" examples/hybrid/shardgate.toml > "$base/hybrid.toml"
start hybrid --config "$base/hybrid.toml"
start fs

# One round: PUTs then GETs; prints PUT MB/s, GET MB/s, errors, and the
# gateway's CPU ms per PUT and per GET.
phase() {
  local dir="$base/$1"
  "$target/release/shardgate-loadgen" --endpoint "$(cat "$dir/endpoint")" --credentials "$dir/gw/credentials" \
    --bucket "round" --sizes "$size" --counts "$objects" --concurrency 16 --cleanup --pid "$(cat "$dir/pid")" \
    | awk -F'|' '$2 ~ /PUT/ { gsub(/ /, "", $6); gsub(/ /, "", $14); put = $6; cp = $14; e += $12 }
                 $2 ~ /GET/ { gsub(/ /, "", $6); gsub(/ /, "", $14); get = $6; cg = $14; e += $12 }
                 END { print put, get, e, cp, cg }'
}

echo "$(nproc) cores, $(uname -r); $rounds rounds of $objects × $size at concurrency 16 per gateway"
echo "| round | hybrid PUT MB/s | all-fs PUT MB/s | PUT hybrid / fs | hybrid GET MB/s | all-fs GET MB/s | GET hybrid / fs | errors | gateway CPU ms/PUT hybrid, fs | ms/GET hybrid, fs | emulators' CPU / hybrid wall time |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
sp_a=0; sp_b=0; sg_a=0; sg_b=0; errors=0
for r in $(seq "$rounds"); do
  hybrid_phase() {
    local c0 t0; c0=$(emulator_cpu); t0=$(date +%s.%N)
    read -r pa ga ea cpa cga < <(phase hybrid)
    busy=$(echo "($(emulator_cpu) - $c0) / ($(date +%s.%N) - $t0)" | bc -l)
  }
  if [ $((r % 2)) -eq 1 ]; then hybrid_phase; read -r pb gb eb cpb cgb < <(phase fs)
  else read -r pb gb eb cpb cgb < <(phase fs); hybrid_phase; fi
  sp_a=$(echo "$sp_a + $pa" | bc -l); sp_b=$(echo "$sp_b + $pb" | bc -l)
  sg_a=$(echo "$sg_a + $ga" | bc -l); sg_b=$(echo "$sg_b + $gb" | bc -l)
  errors=$((errors + ea + eb))
  printf '| %s | %s | %s | %.3f | %s | %s | %.3f | %s | %s, %s | %s, %s | %.2f cores |\n' "$r" "$pa" "$pb" "$(echo "$pa / $pb" | bc -l)" \
    "$ga" "$gb" "$(echo "$ga / $gb" | bc -l)" "$((ea + eb))" "$cpa" "$cpb" "$cga" "$cgb" "$busy"
done
printf '| all | %.0f | %.0f | **%.3f** | %.0f | %.0f | **%.3f** | %s | | | |\n' \
  "$(echo "$sp_a / $rounds" | bc -l)" "$(echo "$sp_b / $rounds" | bc -l)" "$(echo "$sp_a / $sp_b" | bc -l)" \
  "$(echo "$sg_a / $rounds" | bc -l)" "$(echo "$sg_b / $rounds" | bc -l)" "$(echo "$sg_a / $sg_b" | bc -l)" "$errors"
echo "hybrid gateway: $(grep -c WARN "$base/hybrid/gateway.log" || true) warnings logged;" \
  "$(curl -s "$(cat "$base/hybrid/endpoint")/metrics" | sed -n 's/^shardgate_read_hedges_total[^ ]* //p') hedged fragment reads"
