#!/usr/bin/env bash
# A PUT of unknown length (Transfer-Encoding: chunked, no Content-Length;
# issue 19) against the same PUT with its length: two release gateways on
# the embedded default, one PUT each of the same random bytes with curl
# to a presigned URL (`-T -` from a pipe, `-T FILE` with its length), and
# each gateway's peak resident memory (VmHWM) after it. Prints Markdown
# rows for BENCHMARKS.md.
#
#   scripts/unsized_put.sh [MIB]     default 1024
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-1024}
cargo build --release --locked -q -p shardgate
target=${CARGO_TARGET_DIR:-target}
. scripts/test-env.sh
work=$(mktemp -d /var/tmp/shardgate-unsized.XXXXXX)
pids=()
trap 'for p in "${pids[@]}"; do kill $p 2>/dev/null; wait $p 2>/dev/null; done; rm -rf "$work"' EXIT
head -c $((mib << 20)) /dev/urandom > "$work/body"
# start NAME: a gateway in $work/NAME; sets $pid, $endpoint, $key, $secret.
start() {
  local name=$1
  RUST_LOG=warn "$target/release/shardgate" serve --data-dir "$work/$name" \
    --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 > "$work/$name.out" 2> "$work/$name.log" &
  pid=$!
  pids+=($pid)
  for _ in $(seq 300); do
    grep -q "listening on" "$work/$name.out" 2>/dev/null && break
    kill -0 $pid 2>/dev/null || { cat "$work/$name.log" >&2; exit 1; }
    sleep 0.1
  done
  endpoint=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$work/$name.out")
  key=$(sed -n 's/.*access key: //p' "$work/$name.out")
  secret=$(sed -n 's/.*secret key: //p' "$work/$name.out")
}
# presign KEY: a bucket "unsized" made, and a presigned PUT URL for KEY.
presign() {
  python3 - "$endpoint" "$key" "$secret" "$1" <<'EOF'
import sys
import boto3
from botocore.client import Config
endpoint, key, secret, name = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key,
                  aws_secret_access_key=secret, config=Config(signature_version="s3v4"))
s3.create_bucket(Bucket="unsized")
print(s3.generate_presigned_url("put_object", Params={"Bucket": "unsized", "Key": name}, ExpiresIn=3600))
EOF
}
echo "gateways on the embedded default; $(nproc) cores; $(uname -r); $mib MiB of random bytes"
echo "| PUT | Status | Time | Gateway peak RSS |"
echo "|---|---|---|---|"
for mode in sized unsized; do
  start "$mode"
  url=$(presign "$mode")
  t0=$(date +%s.%N)
  if [ "$mode" = unsized ]; then
    code=$(curl -sS -o /dev/null -w '%{http_code}' -T - "$url" < "$work/body")
  else
    code=$(curl -sS -o /dev/null -w '%{http_code}' -T "$work/body" "$url")
  fi
  t1=$(date +%s.%N)
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  printf '| %s | %s | %.1f s | %d MiB |\n' "$mode" "$code" "$(echo "$t1 - $t0" | bc -l)" $((hwm / 1024))
  kill "$pid"
  wait "$pid" 2>/dev/null || true
done
