#!/usr/bin/env bash
# End-to-end load run: a release gateway on its embedded default (six fs
# sites under a fresh data dir, 4 + 2) and the load generator, on this
# machine's two cores together. Prints Markdown rows for BENCHMARKS.md.
#
#   scripts/load.sh [SIZES] [COUNTS]     default: 4KiB,1MiB,64MiB  2000,400,48
#   scripts/load.sh 1GiB 16              the 1 GiB streaming run (16 GiB written)
#   scripts/load.sh mix 12000            valid and invalid requests mixed on 16
#                                        keep-alive connections (exits 1 unless
#                                        every answer is right)
#
# SHARDGATE_BENCH_VERSIONING=1 enables versioning on the bucket first (PUTs
# then keep every version; the DELETE phase adds delete markers).
# SHARDGATE_BENCH_VERSIONING=ab measures both side by side on one gateway:
# SHARDGATE_BENCH_ROUNDS (default 6) rounds, each a run on a plain bucket
# and one on a versioned bucket, the order swapped every round.
#
# SHARDGATE_BENCH_JOURNAL=ab measures the manifest journal's cost: two
# gateways, one with it (the default) and one without
# (SHARDGATE_JOURNAL__ENABLED=false), SHARDGATE_BENCH_ROUNDS rounds each,
# the order swapped every round.
#
# SHARDGATE_BENCH_POLICY=ab measures authorization against a bucket policy:
# one gateway, SHARDGATE_BENCH_ROUNDS rounds, each a run on a bucket without
# a policy and one on a bucket with scripts/bench-policy.json (20
# statements, every one evaluated for every request), the order swapped
# every round.
#
# SHARDGATE_BENCH_BINARIES="OLD NEW" measures two gateway binaries side by
# side: one gateway each, SHARDGATE_BENCH_ROUNDS rounds, the order swapped
# every round (ABBA). With SHARDGATE_BENCH_PERF=1, each then takes one more
# PUT-only run of the last size under `perf record -e cpu-clock` (perf's
# top symbols printed), and one under `perf stat` (context switches, page
# faults). SHARDGATE_BENCH_ENV_A, SHARDGATE_BENCH_ENV_B: VAR=VALUE words
# for one gateway only (the same binary twice with two settings).
#
# SHARDGATE_BENCH_SETTLE=SECONDS: before each run of the side-by-side
# measurements, `sync` and wait this long (see `settle`).
#
# SHARDGATE_BENCH_CONCURRENCY: requests in flight (default 16).
#
# SHARDGATE_BENCH_LOADGEN_ARGS: more arguments for every run of the load
# generator, e.g. "--gets 2 --drop-caches" (GETs from the disk, then again
# from the page cache).
#
# SHARDGATE_BENCH_BACKENDS=memory runs the same gateway over six in-memory
# backends (a config file, 4 + 2, quorum 5): the gateway's own cost without
# the disk, to compare with the pipeline's criterion figures.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=${1:-4KiB,1MiB,64MiB}
counts=${2:-2000,400,48}
if [ "$sizes" = mix ]; then
  workload=(--mix "${2:-12000}")
else
  workload=(--sizes "$sizes" --counts "$counts" --cleanup)
fi
versioning=${SHARDGATE_BENCH_VERSIONING:-0}
if [ "$versioning" = 1 ]; then
  workload+=(--versioning)
fi
# SHARDGATE_BENCH_* variables are not configuration keys (the gateway
# refuses unknown SHARDGATE_* keys).
data=${SHARDGATE_BENCH_LOAD_DIR:-/var/tmp/shardgate-load}
cargo build --release --locked -q -p shardgate -p shardgate-loadgen
target=${CARGO_TARGET_DIR:-target}
rm -rf "$data"
mkdir -p "$data"
config=()
if [ "${SHARDGATE_BENCH_BACKENDS:-fs}" = memory ]; then
  {
    echo 'default_policy = "default"'
    echo '[policies.default]'
    echo 'k = 4'
    echo 'm = 2'
    echo 'write_quorum = 5'
    echo 'small_object_bytes = 16384'
    for i in 1 2 3 4 5 6; do
      printf '[[backends]]\nid = "mem-%s"\nkind = "memory"\nlabels = { site = "s%s" }\n' $i $i
    done
  } > "$data/memory.toml"
  config=(--config "$data/memory.toml")
fi
# SHARDGATE_BENCH_BIN: another gateway binary to measure (A/B runs).
pids=()
trap 'for p in "${pids[@]}"; do kill $p 2>/dev/null; wait $p 2>/dev/null; done; rm -rf "$data"' EXIT
# start NAME [VAR=VALUE...]: a gateway in $data/NAME; sets $pid, $endpoint.
# The binary is $bin, else SHARDGATE_BENCH_BIN, else this build's.
start() {
  local name=$1
  shift
  env "$@" RUST_LOG=warn "${bin:-${SHARDGATE_BENCH_BIN:-$target/release/shardgate}}" serve "${config[@]}" \
    --data-dir "$data/$name" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    > "$data/$name.out" 2> "$data/$name.log" &
  pid=$!
  pids+=($pid)
  for _ in $(seq 300); do
    grep -q "listening on" "$data/$name.out" 2>/dev/null && break
    kill -0 $pid 2>/dev/null || { cat "$data/$name.log" >&2; exit 1; }
    sleep 0.1
  done
  endpoint=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$data/$name.out")
  echo "gateway $name: pid $pid on $endpoint, ${SHARDGATE_BENCH_BACKENDS:-fs} backends; $(nproc) cores; $(uname -r)"
}
# loadgen NAME ARGS...: the load generator against gateway NAME.
loadgen() {
  local name=$1
  shift
  "$target/release/shardgate-loadgen" --endpoint "${endpoints[$name]}" \
    --credentials "$data/$name/credentials" "${workload[@]}" --concurrency "${SHARDGATE_BENCH_CONCURRENCY:-16}" \
    --pid "${gateway_pids[$name]}" ${SHARDGATE_BENCH_LOADGEN_ARGS:-} "$@"
}
# settle: with SHARDGATE_BENCH_SETTLE=SECONDS, writes what the page cache
# holds and waits before a run, so that it does not start while the disk
# still absorbs the run before it (its writes, and the deletes of its
# cleanup, which this machine's ext4 discards: mounted with `discard`).
settle() {
  if [ -n "${SHARDGATE_BENCH_SETTLE:-}" ]; then
    sync
    sleep "$SHARDGATE_BENCH_SETTLE"
  fi
}
declare -A endpoints gateway_pids
if [ -n "${SHARDGATE_BENCH_BINARIES:-}" ]; then
  read -r -a binaries <<< "$SHARDGATE_BENCH_BINARIES"
  [ ${#binaries[@]} = 2 ] || { echo "SHARDGATE_BENCH_BINARIES: two paths" >&2; exit 2; }
  names=(A B)
  for i in 0 1; do
    env_var=SHARDGATE_BENCH_ENV_${names[$i]}
    # shellcheck disable=SC2086 # VAR=VALUE words
    bin=${binaries[$i]} start "${names[$i]}" ${!env_var:-}
    endpoints[${names[$i]}]=$endpoint gateway_pids[${names[$i]}]=$pid
    echo "${names[$i]} = ${binaries[$i]}"
  done
  for round in $(seq "${SHARDGATE_BENCH_ROUNDS:-4}"); do
    order=(A B)
    [ $((round % 2)) = 0 ] && order=(B A)
    for name in "${order[@]}"; do
      echo "round $round, $name"
      settle
      loadgen "$name" --bucket "bench-$round"
    done
  done
  if [ "${SHARDGATE_BENCH_PERF:-0}" = 1 ]; then
    last_size=${sizes##*,} last_count=${counts##*,}
    workload=(--sizes "$last_size" --counts "$last_count" --put-only)
    # under_perf NAME TOOL ARGS...: one PUT-only run of gateway NAME with
    # `perf TOOL ARGS` attached to it.
    under_perf() {
      local name=$1 tool=$2
      shift 2
      echo "perf $tool, $name: PUT $last_size x $last_count"
      perf "$tool" "$@" -p "${gateway_pids[$name]}" &
      local perf_pid=$!
      sleep 0.5
      loadgen "$name" --bucket "$tool-${name,,}"
      kill -INT $perf_pid; wait $perf_pid || true
    }
    for name in A B; do
      under_perf "$name" record -q -e cpu-clock -F 999 -o "$data/perf-$name.data"
      perf report -i "$data/perf-$name.data" --no-children --sort symbol --percent-limit 1.5 --stdio 2>/dev/null \
        | grep -v '^#' | grep -v '^$' | head -25
      under_perf "$name" stat -e context-switches,page-faults,cpu-clock -o "$data/stat-$name.txt"
      grep -E 'context-switches|page-faults|cpu-clock' "$data/stat-$name.txt"
    done
  fi
  exit
fi
if [ "${SHARDGATE_BENCH_JOURNAL:-}" = ab ]; then
  start journal
  endpoints[journal]=$endpoint gateway_pids[journal]=$pid
  start nojournal SHARDGATE_JOURNAL__ENABLED=false
  endpoints[nojournal]=$endpoint gateway_pids[nojournal]=$pid
  for round in $(seq "${SHARDGATE_BENCH_ROUNDS:-6}"); do
    order=(journal nojournal)
    [ $((round % 2)) = 0 ] && order=(nojournal journal)
    for name in "${order[@]}"; do
      echo "round $round, $name"
      loadgen "$name" --bucket "bench-$round"
    done
  done
  exit
fi
start gw
endpoints[gw]=$endpoint gateway_pids[gw]=$pid
if [ "${SHARDGATE_BENCH_POLICY:-}" = ab ]; then
  for round in $(seq "${SHARDGATE_BENCH_ROUNDS:-6}"); do
    order=(plain policy)
    [ $((round % 2)) = 0 ] && order=(policy plain)
    for bucket in "${order[@]}"; do
      echo "round $round, $bucket bucket"
      extra=(--bucket "$bucket-$round")
      [ "$bucket" = policy ] && extra+=(--policy scripts/bench-policy.json)
      loadgen gw "${extra[@]}"
    done
  done
  exit
fi
if [ "$versioning" != ab ]; then
  loadgen gw
  exit
fi
for round in $(seq "${SHARDGATE_BENCH_ROUNDS:-6}"); do
  order=(plain versioned)
  [ $((round % 2)) = 0 ] && order=(versioned plain)
  for bucket in "${order[@]}"; do
    echo "round $round, $bucket bucket"
    extra=(--bucket "$bucket")
    [ "$bucket" = versioned ] && extra+=(--versioning)
    loadgen gw "${extra[@]}"
  done
done
