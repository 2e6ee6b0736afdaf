#!/usr/bin/env bash
# Small objects: k + m fragments (4 + 2) against 1 + m whole encrypted
# copies (1 + 2), side by side in one run, on the embedded default's six fs
# sites. For each size: PUT and GET rates at concurrency 16, and the disk
# space and files the objects take. Prints Markdown rows.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q -p shardgate -p shardgate-loadgen
target=${CARGO_TARGET_DIR:-target}
base=${SHARDGATE_BENCH_LOAD_DIR:-/var/tmp/shardgate-small}
sizes=(4KiB 16KiB 64KiB 256KiB 1MiB)
counts=(2000 2000 1000 400 200)
echo "| size | stored as | PUT ops/s | PUT p50 ms | GET ops/s | GET p50 ms | disk per object (du) | files per object |"
echo "|---|---|---|---|---|---|---|---|"
for i in "${!sizes[@]}"; do
  for threshold in 0 1048576; do
    data="$base/$threshold"
    rm -rf "$data"; mkdir -p "$data"
    SHARDGATE_POLICIES__DEFAULT__K=4 SHARDGATE_POLICIES__DEFAULT__M=2 \
    SHARDGATE_POLICIES__DEFAULT__WRITE_QUORUM=5 \
    SHARDGATE_POLICIES__DEFAULT__SMALL_OBJECT_BYTES=$threshold RUST_LOG=warn \
      "$target/release/shardgate" serve --data-dir "$data/gw" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 > "$data/out.txt" 2> "$data/log" &
    pid=$!
    for _ in $(seq 300); do grep -q "listening on" "$data/out.txt" 2>/dev/null && break; sleep 0.1; done
    endpoint=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$data/out.txt")
    before_kib=$(du -sk "$data/gw/backends" | cut -f1)
    before_files=$(find "$data/gw/backends" -type f | wc -l)
    rows=$("$target/release/shardgate-loadgen" --endpoint "$endpoint" --credentials "$data/gw/credentials" \
      --sizes "${sizes[$i]}" --counts "${counts[$i]}" --concurrency 16)
    sync
    kib=$(( $(du -sk "$data/gw/backends" | cut -f1) - before_kib ))
    files=$(( $(find "$data/gw/backends" -type f | wc -l) - before_files ))
    kill $pid; wait $pid 2>/dev/null || true
    put=$(echo "$rows" | grep '^| PUT'); get=$(echo "$rows" | grep '^| GET')
    col() { echo "$1" | awk -F'|' -v c="$2" '{gsub(/ /, "", $c); print $c}'; }
    shape=$([ "$threshold" = 0 ] && echo "4 + 2 fragments" || echo "1 + 2 copies")
    printf '| %s | %s | %s | %s | %s | %s | %.1f KiB | %.1f |\n' "${sizes[$i]}" "$shape" \
      "$(col "$put" 7)" "$(col "$put" 8)" "$(col "$get" 7)" "$(col "$get" 8)" \
      "$(awk -v a="$kib" -v b="${counts[$i]}" 'BEGIN { print a / b }')" \
      "$(awk -v a="$files" -v b="${counts[$i]}" 'BEGIN { print a / b }')"
  done
done
rm -rf "$base"
