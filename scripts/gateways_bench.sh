#!/usr/bin/env bash
# Several gateways over one PostgreSQL against one gateway on redb (issue
# 23): 4 KiB PUT, LIST and GET operations per second, with the gateways'
# and the database's CPU per operation, side by side in one run. Prints
# the load generator's Markdown rows for BENCHMARKS.md.
#
#   scripts/gateways_bench.sh [COUNT] [LISTS]     default: 2000 1000
#
# Four configurations, SHARDGATE_BENCH_ROUNDS rounds (default 2), the order
# reversed every other round:
#   redb  one gateway on its redb file
#   pg1   one gateway on PostgreSQL
#   pg2   two gateways on one PostgreSQL, the 16 connections spread over both
#   pg3   three
# Each run starts afresh: its own six fs sites (4 + 2; `[fs] shared` for
# gateways that share them), its own data dirs with the first gateway's
# keys copied to the others, its own database. PostgreSQL is Debian's, one
# throwaway cluster on 127.0.0.1 with its defaults (fsync on). Each run
# PUTs COUNT objects, LISTs LISTS pages of 100 keys, then GETs the objects.
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-2000}
lists=${2:-1000}
rounds=${SHARDGATE_BENCH_ROUNDS:-2}
cargo build --release --locked -q -p shardgate -p shardgate-loadgen
target=${CARGO_TARGET_DIR:-target}
bin=$target/release/shardgate
loadgen=$target/release/shardgate-loadgen
data=${SHARDGATE_BENCH_LOAD_DIR:-/var/tmp/shardgate-gateways-bench}
rm -rf "$data"
mkdir -p "$data/pg"

pg_bin=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d | sort -V | tail -1)
[ -x "$pg_bin/initdb" ] || { echo "no PostgreSQL server: apt-get install postgresql" >&2; exit 1; }
as_pg=()
if [ "$(id -u)" = 0 ]; then
  # PostgreSQL refuses to run as root.
  chown postgres: "$data/pg"
  as_pg=(setpriv --reuid postgres --regid postgres --init-groups --)
fi
"${as_pg[@]}" "$pg_bin/initdb" -D "$data/pg/data" -A trust -U shardgate -E UTF8 > "$data/initdb.log"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"${as_pg[@]}" "$pg_bin/postgres" -D "$data/pg/data" -c listen_addresses=127.0.0.1 -p "$port" \
  -k "$data/pg" > "$data/postgres.log" 2>&1 &
postmaster=$!
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$data/pg/data" stop -m immediate > /dev/null 2>&1 || true
  rm -rf "$data"
}
trap cleanup EXIT
for _ in $(seq 100); do
  "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$port" && break
  sleep 0.1
done
echo "PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port, pid $postmaster; $(nproc) cores; $(uname -r)"

# start DIR CONFIG [VAR=VALUE...]: a gateway in DIR; sets $pid, $endpoint.
start() {
  local dir=$1 config=$2
  shift 2
  env "$@" RUST_LOG=warn "$bin" serve --config "$config" --data-dir "$dir" \
    --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 > "$dir.out" 2> "$dir.log" &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 300); do
    grep -q "listening on" "$dir.out" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$dir.log" >&2; exit 1; }
    sleep 0.1
  done
  endpoint=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$dir.out")
}

# run NAME ROUND: one configuration's run, from nothing.
run() {
  local name=$1 round=$2
  local dir=$data/$name-$round gateways=1 env=()
  mkdir -p "$dir"
  for i in 1 2 3 4 5 6; do
    printf '[[backends]]\nid = "site-%s"\nkind = "fs"\npath = "%s"\nlabels = { site = "site-%s" }\n\n' \
      "$i" "$dir/sites/site-$i" "$i"
  done > "$dir/shardgate.toml"
  case $name in
    redb) ;;
    pg*)
      gateways=${name#pg}
      "$pg_bin/createdb" -h 127.0.0.1 -p "$port" -U shardgate "$name$round"
      env=(SHARDGATE_METADATA__KIND=postgres
        "SHARDGATE_METADATA__URL=postgres://shardgate@127.0.0.1:$port/$name$round"
        SHARDGATE_FS__SHARED=true)
      ;;
  esac
  local endpoints=() gateway_pids=()
  for g in $(seq "$gateways"); do
    if [ "$g" -gt 1 ]; then
      mkdir -p "$dir/g$g"
      cp -r "$dir/g1/keys" "$dir/g1/credentials" "$dir/g$g/"
    fi
    start "$dir/g$g" "$dir/shardgate.toml" "${env[@]}"
    endpoints+=("$endpoint")
    gateway_pids+=("$pid")
  done
  local more
  more=$(IFS=,; echo "${endpoints[*]:1}")
  local db=()
  [ "$name" = redb ] || db=(--db-pid "$postmaster")
  echo "round $round, $name: $gateways gateway(s), pids ${gateway_pids[*]}"
  "$loadgen" --endpoint "${endpoints[0]}" ${more:+--more-endpoints "$more"} \
    --credentials "$dir/g1/credentials" --bucket bench --sizes 4KiB --counts "$count" \
    --lists "$lists" --concurrency 16 --pid "$(IFS=,; echo "${gateway_pids[*]}")" "${db[@]}"
  for p in "${gateway_pids[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}

for round in $(seq "$rounds"); do
  order=(redb pg1 pg2 pg3)
  [ $((round % 2)) = 0 ] && order=(pg3 pg2 pg1 redb)
  for name in "${order[@]}"; do
    run "$name" "$round"
  done
done
