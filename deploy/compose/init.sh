#!/bin/sh
# Runs once before the gateway and the peers (as root, in the shardgate
# image): creates each node's libp2p identity (kept in its data volume, so
# a second run reuses them), writes the configurations that name them into
# the shared `config` volume, and gives everything to the image's user.
#
#   init.sh [CONFIG_DIR] [GATEWAY_DIR] [PEER_1_DIR] [PEER_2_DIR]
#
# (defaults: the compose file's mounts; tests/deploy.rs runs it on
# temporary directories and loads what it writes.)
set -eu
config=${1:-/config}
gateway=${2:-/gateway}
peer1=${3:-/peer-1}
peer2=${4:-/peer-2}
mkdir -p "$config"

gw=$(shardgate peer-id "$gateway/keys/peer.key")
p1=$(shardgate peer-id "$peer1/peer.key")
p2=$(shardgate peer-id "$peer2/peer.key")

for n in 1 2; do
  cat > "$config/peer-$n.toml" <<TOML
# Written by init.sh: peer $n of site "home".
data_dir = "/data"
listen = ["0.0.0.0:7001"]
allow_gateways = ["$gw"]
bootstrap = ["/dns4/gateway/tcp/7000/p2p/$gw"]
TOML
done

cat > "$config/gateway.toml" <<TOML
# Written by init.sh: three sites (home peers, an S3 cloud, an Azure
# cloud), two backends each, 4 + 2.
listen = "0.0.0.0:9000"
data_dir = "/data"
default_policy = "hybrid"

[admin]
listen = "0.0.0.0:9001"

[peers]
listen = ["0.0.0.0:7000"]

[policies.hybrid]
k = 4
m = 2
write_quorum = 5
TOML

for n in 1 2; do
  if [ "$n" = 1 ]; then id=$p1; else id=$p2; fi
  cat >> "$config/gateway.toml" <<TOML

[[backends]]
id = "home-$n"
kind = "peer"
peer_id = "$id"
addresses = ["/dns4/peer-$n/tcp/7001"]
labels = { site = "home", provider = "onprem" }

[[backends]]
id = "aws-$n"
kind = "s3"
bucket = "shardgate"
prefix = "aws-$n"
endpoint = "http://moto:5000"
region = "us-east-1"
access_key_id = "compose"
secret_access_key = "not-checked-by-moto"
allow_http = true
labels = { site = "aws", provider = "aws" }

[[backends]]
id = "azure-$n"
kind = "azure"
container = "shardgate"
prefix = "azure-$n"
use_emulator = true
endpoint = "http://azurite:10000/devstoreaccount1"
labels = { site = "azure", provider = "azure" }
TOML
done

if [ "$(id -u)" = 0 ]; then
  chown -R 10001:10001 "$config" "$gateway" "$peer1" "$peer2"
fi
echo "init: gateway $gw, peers $p1 $p2"
