#!/usr/bin/env bash
# The per-request cost of small objects (issue 26): two gateway binaries
# side by side on their embedded default (six fs sites, 4 + 2), and nginx
# serving the same bytes from a file on the same machine, the HTTP floor.
#
#   scripts/small_get.sh OLD_BINARY NEW_BINARY [ROUNDS]     default 4 rounds
#
# Each round, in ABBA order of the gateways: `wrk -t2 -c16 -d8s` on a
# presigned GET URL of a 4 KiB and of a 1 MiB object, the same against
# nginx, then 2000 PUTs of 4 KiB from the load generator at concurrency 16.
# For each gateway run: requests per second, and the gateway's CPU time
# and context switches (all its threads, /proc) per request. Prints
# Markdown rows. Needs wrk and nginx (Debian: wrk, nginx-light) and boto3
# (scripts/test-env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:?old gateway binary}
new=${2:?new gateway binary}
rounds=${3:-4}
duration=${SHARDGATE_BENCH_DURATION:-8s}
. scripts/test-env.sh
cargo build --release --locked -q -p shardgate-loadgen
target=${CARGO_TARGET_DIR:-target}
data=${SHARDGATE_BENCH_LOAD_DIR:-/var/tmp/shardgate-small-get}
rm -rf "$data"
mkdir -p "$data/www/tmp"
pids=()
trap 'for p in "${pids[@]}"; do kill $p 2>/dev/null; wait $p 2>/dev/null; done; rm -rf "$data"' EXIT
head -c 4096 /dev/urandom > "$data/www/obj-4KiB"
head -c 1048576 /dev/urandom > "$data/www/obj-1MiB"

cat > "$data/nginx.conf" <<EOF
worker_processes 2;
pid $data/nginx.pid;
error_log $data/nginx.err warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  client_body_temp_path $data/www/tmp;
  proxy_temp_path $data/www/tmp;
  fastcgi_temp_path $data/www/tmp;
  uwsgi_temp_path $data/www/tmp;
  scgi_temp_path $data/www/tmp;
  server { listen 127.0.0.1:0; root $data/www; }
}
EOF
# nginx cannot listen on port 0: take a free port first.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed -i "s/127.0.0.1:0/127.0.0.1:$port/" "$data/nginx.conf"
nginx -c "$data/nginx.conf" -p "$data" -g 'daemon off;' &
pids+=($!)

declare -A endpoint pid_of
start() {
  local name=$1 binary=$2
  RUST_LOG=warn "$binary" serve --data-dir "$data/$name" --listen 127.0.0.1:0 \
    --admin-listen 127.0.0.1:0 > "$data/$name.out" 2> "$data/$name.log" &
  pid_of[$name]=$!
  pids+=($!)
  for _ in $(seq 300); do
    grep -q "listening on" "$data/$name.out" 2>/dev/null && break
    kill -0 "${pid_of[$name]}" 2>/dev/null || { cat "$data/$name.log" >&2; exit 1; }
    sleep 0.1
  done
  endpoint[$name]=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$data/$name.out")
}
start old "$old"
start new "$new"

# presign NAME SIZE: puts the object once and prints a presigned GET URL.
presign() {
  python3 - "${endpoint[$1]}" "$data/$1/credentials" "$data/www/obj-$2" "$2" <<'EOF'
import sys, boto3, botocore.config
endpoint, creds, path, size = sys.argv[1:]
kv = dict(l.strip().split("=", 1) for l in open(creds) if "=" in l)
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id=kv["access_key"], aws_secret_access_key=kv["secret_key"],
                  config=botocore.config.Config(signature_version="s3v4"))
try:
    s3.create_bucket(Bucket="small")
except s3.exceptions.BucketAlreadyOwnedByYou:
    pass
s3.put_object(Bucket="small", Key=f"obj-{size}", Body=open(path, "rb").read())
print(s3.generate_presigned_url("get_object", Params={"Bucket": "small", "Key": f"obj-{size}"}, ExpiresIn=7200))
EOF
}
declare -A url
for name in old new; do
  for size in 4KiB 1MiB; do
    url[$name-$size]=$(presign "$name" "$size")
    curl -sf "${url[$name-$size]}" | cmp - "$data/www/obj-$size"
  done
done
url[nginx-4KiB]=http://127.0.0.1:$port/obj-4KiB
url[nginx-1MiB]=http://127.0.0.1:$port/obj-1MiB
curl -sf "${url[nginx-4KiB]}" | cmp - "$data/www/obj-4KiB"

# cpu PID: user and system clock ticks; switches PID: context switches of
# every thread.
cpu() { awk '{ print $14, $15 }' "/proc/$1/stat"; }
switches() {
  cat /proc/"$1"/task/*/status 2>/dev/null |
    awk '/^(voluntary|nonvoluntary)_ctxt_switches/ { n += $2 } END { print n }'
}
hz=$(getconf CLK_TCK)
echo "| round | run | size | req/s | of nginx | user µs/req | sys µs/req | switches/req |"
echo "|---|---|---|---|---|---|---|---|"
for round in $(seq "$rounds"); do
  order=(old new)
  [ $((round % 2)) = 0 ] && order=(new old)
  for size in 4KiB 1MiB; do
    nginx_rate=$(wrk -t2 -c16 -d"$duration" "${url[nginx-$size]}" | awk '/^Requests\/sec/ { print $2 }')
    echo "| $round | nginx | $size | $nginx_rate | 1 | | | |"
    for name in "${order[@]}"; do
      p=${pid_of[$name]}
      read -r u0 s0 < <(cpu "$p"); c0=$(switches "$p")
      out=$(wrk -t2 -c16 -d"$duration" "${url[$name-$size]}")
      read -r u1 s1 < <(cpu "$p"); c1=$(switches "$p")
      rate=$(echo "$out" | awk '/^Requests\/sec/ { print $2 }')
      total=$(echo "$out" | awk '/requests in/ { print $1 }')
      bad=$(echo "$out" | awk '/Non-2xx/ { print $NF }')
      [ -z "$bad" ] || { echo "$name: $bad answers were not 2xx" >&2; exit 1; }
      awk -v r="$round" -v n="$name" -v s="$size" -v rate="$rate" -v ng="$nginx_rate" \
        -v t="$total" -v du=$((u1 - u0)) -v ds=$((s1 - s0)) -v dc=$((c1 - c0)) -v hz="$hz" \
        'BEGIN { printf "| %s | %s | %s | %.0f | %.3f | %.0f | %.0f | %.2f |\n", r, n, s, rate, rate / ng, du * 1e6 / hz / t, ds * 1e6 / hz / t, dc / t }'
    done
  done
  for name in "${order[@]}"; do
    p=${pid_of[$name]}
    read -r u0 s0 < <(cpu "$p"); c0=$(switches "$p")
    row=$("$target/release/shardgate-loadgen" --endpoint "${endpoint[$name]}" \
      --credentials "$data/$name/credentials" --bucket "put-$round" --sizes 4KiB --counts 2000 \
      --concurrency 16 --put-only | grep '^| PUT')
    read -r u1 s1 < <(cpu "$p"); c1=$(switches "$p")
    rate=$(echo "$row" | awk -F'|' '{ gsub(/ /, "", $7); print $7 }')
    awk -v r="$round" -v n="$name" -v rate="$rate" -v du=$((u1 - u0)) -v ds=$((s1 - s0)) \
      -v dc=$((c1 - c0)) -v hz="$hz" \
      'BEGIN { printf "| %s | %s | 4KiB PUT | %.0f | | %.0f | %.0f | %.2f |\n", r, n, rate, du * 1e6 / hz / 2000, ds * 1e6 / hz / 2000, dc / 2000 }'
  done
done
