#!/usr/bin/env bash
# Builds the provider-limit plugin (Python, componentize-py 0.25.1) into a
# component that imports nothing but shardgate:placement/* (--stub-wasi).
#
#   plugins/examples/provider-limit-py/build.sh OUT.wasm
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out=$(realpath -m "$1")
cd "$here"
if ! command -v componentize-py >/dev/null; then
    echo "build.sh: componentize-py is not installed: the README's test command (bash scripts/test.sh) installs it, or: pip install -r tests/clients/requirements.txt" >&2
    exit 1
fi
componentize-py -d ../../../wit -w placement componentize --stub-wasi app -o "$out" > /dev/null
