#!/usr/bin/env bash
# Builds the onprem-one plugin (JavaScript) with jco 1.35.0 and its
# QuickJS backend (componentize-qjs) into a component that imports nothing
# but shardgate:placement/* (`--backend-qjs-stub-wasi` replaces every WASI
# import with a trap; `--backend-qjs-disable-async` keeps the component-model
# async builtins out, which wasmtime's host is built without). QuickJS, not
# StarlingMonkey: 7 times smaller and about 6 times faster per call
# (BENCHMARKS.md).
# The tools come from package-lock.json: run `npm ci` in this folder once
# (the README's test command does).
#
#   plugins/examples/onprem-one-js/build.sh OUT.wasm
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out=$(realpath -m "$1")
cd "$here"
if [ ! -x node_modules/.bin/jco ]; then
    echo "build.sh: jco is not installed: the README's test command (bash scripts/test.sh) installs it, or run: (cd $here && npm ci)" >&2
    exit 1
fi
node_modules/.bin/jco componentize app.js -w ../../../wit -n placement --backend qjs --backend-qjs-disable-async --backend-qjs-stub-wasi -o "$out" > /dev/null
