#!/usr/bin/env bash
# Admission under load: COUNT concurrent PUTs of SIZE through one boto3
# client (tests/clients/saturate.py, standard retries) against a release
# gateway on its embedded default with a memory budget of BUDGET bytes.
# Prints the gateway's peak RSS, how many requests got 503 SlowDown, and
# the client's line (every object is read back and checked).
#
#   scripts/saturate.sh [COUNT] [SIZE] [BUDGET] [QUEUE_SECS]
#                              default: 1000 8388608 536870912 10
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/test-env.sh
count=${1:-1000}
size=${2:-8388608}
budget=${3:-536870912}
queue=${4:-10}
data=${SHARDGATE_BENCH_LOAD_DIR:-/var/tmp/shardgate-saturate}
cargo build --release --locked -q -p shardgate
target=${CARGO_TARGET_DIR:-target}
rm -rf "$data"
mkdir -p "$data"
SHARDGATE_SERVER__MEMORY_BUDGET_BYTES=$budget SHARDGATE_SERVER__QUEUE_TIMEOUT_SECS=$queue RUST_LOG=warn \
  "$target/release/shardgate" serve --data-dir "$data/gw" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 > "$data/out.txt" 2> "$data/gateway.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 300); do
  grep -q "listening on" "$data/out.txt" 2>/dev/null && break
  sleep 0.1
done
endpoint=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$data/out.txt")
export S3_ENDPOINT=$endpoint
AWS_ACCESS_KEY_ID=$(sed -n 's/^access_key=//p' "$data/gw/credentials")
AWS_SECRET_ACCESS_KEY=$(sed -n 's/^secret_key=//p' "$data/gw/credentials")
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
echo "gateway pid $pid, memory budget $((budget >> 20)) MiB, queue timeout $queue s; $count concurrent PUTs of $size bytes; $(nproc) cores"
python3 tests/clients/saturate.py "$count" "$size" 20
slow=$(curl -s "$endpoint/metrics" | sed -n 's/^shardgate_s3_requests_total{method="PUT",status="503"} //p')
echo "SlowDown answers: ${slow:-0}"
echo "gateway peak RSS: $(awk '/VmHWM/ {printf "%.0f MiB", $2 / 1024}' /proc/$pid/status)"
