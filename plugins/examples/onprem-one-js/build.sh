#!/usr/bin/env bash
# Builds the onprem-one plugin (JavaScript) with jco 1.35.0 and
# componentize-js 0.23.0 (StarlingMonkey) into a component that imports
# nothing but shardgate:placement/* (`-d all` drops every WASI feature).
# The tools come from package-lock.json: run `npm ci` in this folder once
# (.ci/run does).
#
#   plugins/examples/onprem-one-js/build.sh OUT.wasm
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out=$(realpath -m "$1")
cd "$here"
if [ ! -x node_modules/.bin/jco ]; then
    echo "build.sh: jco is not installed; run: (cd $here && npm ci)" >&2
    exit 1
fi
node_modules/.bin/jco componentize app.js -w ../../../wit -n placement -d all -o "$out" > /dev/null
