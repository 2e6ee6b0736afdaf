#!/usr/bin/env bash
# Starts the hybrid example for a person to try: two moto S3 servers (as the
# providers "aws" and "wasabi"), Azurite, and the gateway over them with
# examples/hybrid/shardgate.toml, all on 127.0.0.1. Ctrl-C stops everything.
#
# Needs what the README's test command installs (`bash scripts/test.sh
# --install`: moto, azure-storage-blob and componentize-py in its virtual
# environment, which this script puts on the PATH; Azurite in
# tests/emulators), and the provider-limit plugin built once:
#   plugins/examples/provider-limit-py/build.sh plugins/examples/provider-limit-py/provider-limit.wasm
#
# Then, in another shell (the access key is printed by the gateway, the
# secret is in shardgate-data/hybrid/gateway/credentials):
#   aws --endpoint-url http://127.0.0.1:9000 s3 mb s3://demo
#   aws --endpoint-url http://127.0.0.1:9000 s3 cp README.md s3://demo/
#   curl -s http://127.0.0.1:9000/ready
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/test-env.sh

plugin=plugins/examples/provider-limit-py/provider-limit.wasm
[ -f "$plugin" ] || plugins/examples/provider-limit-py/build.sh "$plugin"
azurite=tests/emulators/node_modules/.bin/azurite-blob
[ -x "$azurite" ] || (cd tests/emulators && npm ci --no-audit --no-fund --loglevel=error)

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# moto keeps its buckets in memory, so each start is a fresh deployment:
# fragments on the emulators do not outlive them, and neither may the
# manifests that point at them.
rm -rf shardgate-data/hybrid
mkdir -p shardgate-data/hybrid
moto_server -H 127.0.0.1 -p 19001 >shardgate-data/hybrid/aws.log 2>&1 & pids+=($!)
moto_server -H 127.0.0.1 -p 19002 >shardgate-data/hybrid/wasabi.log 2>&1 & pids+=($!)
"$azurite" --blobHost 127.0.0.1 --blobPort 19003 --inMemoryPersistence \
  --disableTelemetry --skipApiVersionCheck --loose >shardgate-data/hybrid/azure.log 2>&1 & pids+=($!)

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.2
  done
  echo "nothing listens on 127.0.0.1:$1 after 20 s" >&2
  exit 1
}
for port in 19001 19002 19003; do wait_port "$port"; done

# Buckets and the container (moto takes any credentials; Azurite's are well known).
curl -sf -X PUT http://127.0.0.1:19001/shardgate-aws >/dev/null || true
curl -sf -X PUT http://127.0.0.1:19002/shardgate-wasabi >/dev/null || true
python3 - <<'PY'
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient
key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
conn = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=" + key
        + ";BlobEndpoint=http://127.0.0.1:19003/devstoreaccount1;")
try:
    BlobServiceClient.from_connection_string(conn).create_container("shardgate-azure")
except ResourceExistsError:
    pass
PY

echo "emulators up: aws 127.0.0.1:19001, wasabi 127.0.0.1:19002, azure 127.0.0.1:19003"
cargo run --release --locked -p shardgate -- serve --config examples/hybrid/shardgate.toml & pids+=($!)
wait "${pids[-1]}"
