#!/usr/bin/env bash
# The listener's cost, side by side in one run, release builds, embedded
# default, 16 clients: plain HTTP against HTTPS (same binary), and, when
# SHARDGATE_BENCH_BASE_BIN names a gateway built before the limits (issue
# 22: timeouts, connection cap, admission), plain HTTP against it. Rounds
# alternate (A B C C B A ...) so drift on this shared machine cancels.
# Prints one Markdown row per gateway and phase, and the summed rates.
#
#   scripts/server_bench.sh [ROUNDS] [SIZES] [COUNTS]   default: 2 4KiB,64MiB 2000,24
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
sizes=${2:-4KiB,64MiB}
counts=${3:-2000,24}
cargo build --release --locked -q -p shardgate -p shardgate-loadgen
target=${CARGO_TARGET_DIR:-target}
work=$(mktemp -d /var/tmp/shardgate-server-bench.XXXXXX)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$work"' EXIT
# A CA, and a certificate for 127.0.0.1 that it signs.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -keyout "$work/ca-key.pem" -out "$work/ca.pem" -subj "/CN=bench CA" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout "$work/key.pem" -out "$work/req.pem" -subj "/CN=127.0.0.1" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > "$work/ext"
openssl x509 -req -in "$work/req.pem" -CA "$work/ca.pem" -CAkey "$work/ca-key.pem" \
  -CAcreateserial -days 2 -extfile "$work/ext" -out "$work/cert.pem" 2>/dev/null
configs=(plain tls)
[ -n "${SHARDGATE_BENCH_BASE_BIN:-}" ] && configs+=(base)

run() { # config round
  local config=$1 bin=$target/release/shardgate scheme=http
  local env=(RUST_LOG=warn)
  case $config in
    tls) scheme=https; env+=(SHARDGATE_SERVER__TLS__CERT_FILE=$work/cert.pem SHARDGATE_SERVER__TLS__KEY_FILE=$work/key.pem) ;;
    base) bin=$SHARDGATE_BENCH_BASE_BIN ;;
  esac
  rm -rf "$work/data"
  env "${env[@]}" "$bin" serve --data-dir "$work/data" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 > "$work/out.txt" 2> "$work/gateway.log" &
  pid=$!
  for _ in $(seq 300); do grep -q "listening on" "$work/out.txt" 2>/dev/null && break; sleep 0.1; done
  local endpoint
  endpoint=$(sed -n "s/.*listening on \($scheme:[^ ]*\).*/\1/p" "$work/out.txt")
  "$target/release/shardgate-loadgen" --endpoint "$endpoint" --credentials "$work/data/credentials" \
    --ca "$work/ca.pem" --sizes "$sizes" --counts "$counts" --concurrency 16 --pid "$pid" --cleanup \
    | grep '^| [PG]' | sed "s/^/| $config /"
  kill $pid; wait $pid 2>/dev/null || true
  pid=
}

echo "| gateway | op | size | objects | concurrency | MB/s | ops/s | p50 ms | p90 ms | p99 ms | max ms | errors | peak RSS MiB | CPU ms/op |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
order=()
for r in $(seq "$rounds"); do
  if [ $((r % 2)) -eq 1 ]; then order+=("${configs[@]}"); else
    for ((i=${#configs[@]}-1; i>=0; i--)); do order+=("${configs[$i]}"); done
  fi
done
for config in "${order[@]}"; do run "$config"; done | tee "$work/rows"
echo
echo "summed MB/s per gateway and phase (ratios against plain):"
awk -F'|' '{g=$2; op=$3; size=$4; gsub(/ /,"",g); gsub(/ /,"",op); gsub(/^ +| +$/,"",size); k=op" "size; s[g" "k]+=$7; keys[k]=1; gs[g]=1}
  END {for (k in keys) { line=k": "; for (g in gs) line=line sprintf("%s %.0f (%.3f)  ", g, s[g" "k], s[g" "k]/s["plain "k]); print line }}' "$work/rows" | sort
