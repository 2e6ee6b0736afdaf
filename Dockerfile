# shardgate's image: the gateway and the peer in one binary. Built from
# source in the Rust image, run from Debian's slim image (the binary needs
# libc, libm and libgcc_s only) as an unprivileged user, with a health
# check on /ready (`shardgate probe`: the runtime image has no curl).
#
#   docker build -t shardgate .
#   docker run -p 9000:9000 -v shardgate-data:/data shardgate
#
# The default command is the embedded default (six directories under /data
# as six sites, 4 + 2) listening on all interfaces; with a configuration,
# `serve --config FILE` (deploy/compose and deploy/kubernetes do).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p shardgate \
 && strip target/release/shardgate

FROM debian:bookworm-slim
# Only the CA certificates (for cloud backends over HTTPS); no shell tools.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home shardgate \
 && mkdir -p /data \
 && chown 10001:10001 /data
COPY --from=build /src/target/release/shardgate /usr/local/bin/shardgate
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# S3, the admin API, and libp2p (peers; TCP and QUIC).
EXPOSE 9000 9001 7000 7000/udp
HEALTHCHECK --interval=10s --timeout=6s --start-period=60s --retries=3 \
  CMD ["shardgate", "probe", "http://127.0.0.1:9000/ready"]
ENTRYPOINT ["shardgate"]
CMD ["serve", "--data-dir", "/data", "--listen", "0.0.0.0:9000", "--admin-listen", "0.0.0.0:9001"]
