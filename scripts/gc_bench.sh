#!/usr/bin/env bash
# Garbage collection throughput against a store of ITEMS garbage items: a
# release gateway on its embedded default (six fs sites) takes ITEMS/3
# small objects (4 KiB: three whole copies each) from the load generator;
# then every site's blobs directory is made unusable (an outage) and all
# the objects are deleted (DeleteObjects, 1000 keys a request), so the
# garbage piles up instead of being collected as it comes; the gateway is
# stopped (kill -9), the sites come back, and once every item is due the
# gateway starts again on the same data: the run times how long it takes
# from that start until /metrics shows no garbage left.
#
#   scripts/gc_bench.sh [ITEMS]        default: 100000
set -euo pipefail
cd "$(dirname "$0")/.."
items=${1:-100000}
objects=$(( (items + 2) / 3 ))
data=${SHARDGATE_BENCH_GC_DIR:-/var/tmp/shardgate-gc-bench}
cargo build --release --locked -q -p shardgate -p shardgate-loadgen
target=${CARGO_TARGET_DIR:-target}
rm -rf "$data"
mkdir -p "$data"
pid=
trap 'kill -9 $pid 2>/dev/null; rm -rf "$data"' EXIT
start() {
  : > "$data/out.txt"
  RUST_LOG=warn "$target/release/shardgate" serve --data-dir "$data/gw" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 > "$data/out.txt" 2>> "$data/gateway.log" &
  pid=$!
  for _ in $(seq 300); do
    grep -q "listening on" "$data/out.txt" 2>/dev/null && break
    sleep 0.1
  done
  endpoint=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$data/out.txt")
}
garbage() {
  curl -s "$endpoint/metrics" | awk '/^shardgate_garbage_items\{/ {n += $2} END {print n + 0}'
}
start
"$target/release/shardgate-loadgen" --endpoint "$endpoint" --credentials "$data/gw/credentials" \
  --sizes 4KiB --counts "$objects" --concurrency 16 --put-only > "$data/load.txt"
for site in "$data"/gw/backends/site-*; do
  mv "$site/blobs" "$site/blobs.away" && echo "outage" > "$site/blobs"
done
. scripts/test-env.sh
S3_ENDPOINT=$endpoint \
AWS_ACCESS_KEY_ID=$(sed -n 's/^access_key=//p' "$data/gw/credentials") \
AWS_SECRET_ACCESS_KEY=$(sed -n 's/^secret_key=//p' "$data/gw/credentials") \
python3 - <<'PY'
import sys
sys.path.insert(0, "tests/clients")
from gateway_client import client
s3 = client()
pages = s3.get_paginator("list_objects_v2").paginate(Bucket="loadgen")
n = 0
for page in pages:
    keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
    if keys:
        s3.delete_objects(Bucket="loadgen", Delete={"Objects": keys, "Quiet": True})
        n += len(keys)
print(f"{n} objects deleted")
PY
echo "$(garbage) garbage items waiting after the deletes"
kill -9 $pid; wait $pid 2>/dev/null || true
for site in "$data"/gw/backends/site-*; do
  rm "$site/blobs" && mv "$site/blobs.away" "$site/blobs"
done
sleep 35  # past the grace and the collectors' longest backoff: every item is due
blobs_before=$(find "$data/gw/backends" -path '*/blobs/*' -type f | wc -l)
t0=$(date +%s.%N)
start
waiting=$(garbage)
echo "restarted with $waiting items waiting, $blobs_before blob files on disk; $(nproc) cores"
while :; do
  now=$(date +%s.%N)
  left=$(garbage)
  printf '  %6.1f s: %d items left\n' "$(echo "$now - $t0" | bc)" "$left"
  [ "$left" -eq 0 ] && break
  sleep 1
done
t1=$(date +%s.%N)
secs=$(echo "$t1 - $t0" | bc)
echo "collected $waiting items in $secs s: $(echo "$waiting / $secs" | bc) items/s (from the start, startup included)"
echo "blob files left: $(find "$data/gw/backends" -path '*/blobs/*' -type f | wc -l)"
