#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser shardgate wrote itself (the
# targets of fuzz/src/lib.rs) with cargo-fuzz and libFuzzer, on stable Rust
# (no sanitizer; debug assertions and overflow checks on). Each target
# runs RUNS inputs from its seeds and the kept crashes (fuzz/corpus/); a
# crash stops the script with its input in fuzz/libfuzzer/artifacts/,
# to be kept in fuzz/corpus/<target>/ once fixed (the CI smoke test
# replays them). Not run by CI: the smoke test is its short version.
#
#   scripts/fuzz.sh [RUNS] [TARGET...]      default: 1000000, every target
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1000000}
shift || true
command -v cargo-fuzz >/dev/null || cargo install --locked -q cargo-fuzz@0.13.2
export CARGO_TARGET_DIR=${SHARDGATE_FUZZ_TARGET_DIR:-/var/tmp/shardgate-fuzz-target}
corpus=fuzz/libfuzzer/corpus
cargo run -q --release -p shardgate-fuzz --example write_seeds -- "$corpus"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(ls fuzz/libfuzzer/fuzz_targets | sed 's/\.rs$//')
echo "| target | inputs run | corpus (inputs kept) | coverage (edges) | crashes |"
echo "|---|---|---|---|---|"
for t in "${targets[@]}"; do
  log=$(mktemp)
  if cargo fuzz run --fuzz-dir fuzz/libfuzzer -s none -a "$t" -- -runs="$runs" -max_len=4096 -print_final_stats=1 > "$log" 2>&1; then
    crashes=0
  else
    crashes=1
  fi
  done_runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  kept=$(ls "$corpus/$t" | wc -l)
  echo "| $t | ${done_runs:-?} | $kept | ${cov:-?} | $crashes |"
  if [ "$crashes" -ne 0 ]; then
    grep -A12 -m1 'panicked at' "$log" >&2 || tail -20 "$log" >&2
    echo "crash input: $(ls -t fuzz/libfuzzer/artifacts/"$t"/* | head -1)" >&2
    exit 1
  fi
  rm -f "$log"
done
