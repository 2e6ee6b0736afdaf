#!/usr/bin/env bash
# Builds a C placement plugin into a component that imports nothing but
# shardgate:placement/* (wasi-libc's malloc and string functions use no
# WASI, so no adapter is needed).
#
#   plugins/build-c.sh SOURCE.c OUT.wasm
#
# Needs Debian's clang-19, lld-19, libclang-rt-19-dev-wasm32 and wasi-libc,
# and wasm-tools 1.263.0 (cargo install --locked wasm-tools@1.263.0
# --no-default-features --features component).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src=$1
out=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
clang-19 --target=wasm32-wasi -O2 -mexec-model=reactor -I"$here/c-bindings" \
  -o "$tmp/core.wasm" "$src" "$here/c-bindings/placement.c" "$here/c-bindings/placement_component_type.o"
wasm-tools component new "$tmp/core.wasm" -o "$out"
