#!/usr/bin/env bash
# Repair and scrub against what they cannot beat (issue 14), side by side
# in one run on one disk: a release gateway on its embedded default (six fs
# sites, 4 + 2) takes OBJECTS objects of SIZE_MIB MiB from the load
# generator, then
#   1. scrub: one pass (unthrottled), against `cat` of every fragment file;
#   2. the chain: the gateway stopped, site-1's fragment files deleted,
#      `repair_chain` (gateway/jobs/examples) rebuilds them the shortest way
#      (read k files, Reed-Solomon, write, fsync);
#   3. repair, unthrottled, of the same fragments: the gateway started again,
#      a scrub pass queues them with repair paused, then repair is resumed
#      and timed until the queue is empty;
#   4. repair throttled to 32 MiB/s (of reads) after site-2's files go;
# with the gateway's peak RSS (VmHWM) in each phase (a process of its own).
# Every timed read starts from a cold page cache (`drop_caches`, as root;
# without it the figures compare cached reads and say so).
#
#   scripts/repair_bench.sh [OBJECTS] [SIZE_MIB]      default: 48 16
set -euo pipefail
cd "$(dirname "$0")/.."
objects=${1:-48}
size_mib=${2:-16}
limit=$((32 << 20))
cargo build --release --locked -q -p shardgate -p shardgate-loadgen
cargo build --release --locked -q -p shardgate-jobs --example repair_chain
target=${CARGO_TARGET_DIR:-target}
bin=$target/release/shardgate
data=${SHARDGATE_BENCH_REPAIR_DIR:-/var/tmp/shardgate-repair-bench}
rm -rf "$data"
mkdir -p "$data"
pid=
trap 'kill -9 $pid 2>/dev/null; rm -rf "$data"' EXIT
now() { date +%s.%N; }
cold() {
  sync
  echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || echo "(page cache not dropped: not root)" >&2
}
start() {
  : > "$data/out.txt"
  env RUST_LOG=warn SHARDGATE_SCRUB__INTERVAL_SECS=0 SHARDGATE_SCRUB__RATE_BYTES_PER_SEC=107374182400 "$@" \
    "$bin" serve --data-dir "$data/gw" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    > "$data/out.txt" 2>> "$data/gateway.log" &
  pid=$!
  for _ in $(seq 300); do
    grep -q "listening on" "$data/out.txt" 2>/dev/null && break
    sleep 0.1
  done
  endpoint=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$data/out.txt")
  admin_url=$(sed -n 's/.*admin API on \(http:[^ ]*\).*/\1/p' "$data/out.txt")
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }
admin() { "$bin" admin --url "$admin_url" --data-dir "$data/gw" "$@"; }
metric() { curl -s "$endpoint/metrics" | awk -v m="$1" 'index($1, m) == 1 {n += $2} END {printf "%.0f\n", n}'; }
rss_mib() { awk '/VmHWM/ {printf "%.0f\n", $2 / 1024}' "/proc/$pid/status"; }
mibs() { awk -v b="$1" -v s="$2" 'BEGIN {printf "%.1f", b / s / 1048576}'; }
queued() { admin status --json | awk -F: '/"repair_queue_objects"/ {gsub(/[ ,]/, "", $2); print $2}'; }
repair_run() {
  # A scrub pass queues the damage (repair paused), then repair is timed.
  admin start scrub --watch --json > /dev/null
  cold
  local before t0 t1
  before=$(metric shardgate_repair_written_bytes_total)
  t0=$(now)
  admin resume repair --json > /dev/null
  while [ "$(queued)" != "0" ]; do sleep 0.05; done
  t1=$(now)
  written=$(( $(metric shardgate_repair_written_bytes_total) - before ))
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')
}

start SHARDGATE_REPAIR__RATE_BYTES_PER_SEC=107374182400
"$target/release/shardgate-loadgen" --endpoint "$endpoint" --credentials "$data/gw/credentials" \
  --sizes "${size_mib}MiB" --counts "$objects" --concurrency 4 --put-only > "$data/load.txt"
admin pause repair --json > /dev/null
stop
files=$(find "$data/gw/backends" -path '*/blobs/*' -type f)
total=$(echo "$files" | xargs cat | wc -c)
cold
t0=$(now); echo "$files" | xargs cat > /dev/null; t1=$(now)
cat_secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')
start SHARDGATE_REPAIR__RATE_BYTES_PER_SEC=107374182400
cold
admin start scrub --watch --json > /dev/null
# The pass's own time (the job's "last pass: ... read in S s"), not the
# CLI's, which polls every 500 ms.
scrub_secs=$(admin jobs --json | tr -d '\n' | sed -n 's/.*"last pass: [0-9]* objects, [0-9]* bytes read in \([0-9.]*\) s".*/\1/p')
scrubbed=$(metric shardgate_scrub_read_bytes_total)
scrub_rss=$(rss_mib)
stop

find "$data/gw/backends/site-1/blobs" -type f -delete
cold
chain=$("$target/release/examples/repair_chain" "$data/gw" "$data/chain-out")
chain_bytes=$(echo "$chain" | awk '{print $4}')
chain_secs=$(echo "$chain" | awk '{print $8}')
rm -rf "$data/chain-out"

start SHARDGATE_REPAIR__RATE_BYTES_PER_SEC=107374182400
repair_run
fast_written=$written fast_secs=$secs fast_rss=$(rss_mib)
admin pause repair --json > /dev/null
stop

find "$data/gw/backends/site-2/blobs" -type f -delete
start SHARDGATE_REPAIR__RATE_BYTES_PER_SEC=$limit
repair_run
slow_written=$written slow_secs=$secs slow_rss=$(rss_mib)
stop

k=4
echo "objects: $objects x $size_mib MiB on 6 fs sites, 4 + 2; fragment files: $total bytes"
echo "scrub pass:        $(mibs "$scrubbed" "$scrub_secs") MiB/s ($scrubbed bytes in ${scrub_secs}s); cat of the same files: $(mibs "$total" "$cat_secs") MiB/s; peak RSS $scrub_rss MiB"
echo "chain (site-1):    $(mibs "$chain_bytes" "$chain_secs") MiB/s written ($chain)"
echo "repair (site-1):   $(mibs "$fast_written" "$fast_secs") MiB/s written ($fast_written bytes in ${fast_secs}s), unthrottled; peak RSS $fast_rss MiB"
echo "repair (site-2):   $(mibs "$slow_written" "$slow_secs") MiB/s written, $(mibs $((slow_written * k)) "$slow_secs") MiB/s read (k = $k shards per rebuilt one) against a limit of $(mibs "$limit" 1) MiB/s; peak RSS $slow_rss MiB"
