//! Fragment bytes over the blob stream protocol against the cbor
//! request-response codec, side by side in one process (a peer server and
//! a gateway node on 127.0.0.1): the measurement behind the choice of a
//! stream for bytes (BENCHMARKS.md, "Peers").
//!
//! The cbor codec holds a whole message in memory on both sides, and its
//! limit (here 4 MiB + framing, the largest storage challenge) caps what
//! one request can move: reads through it go in 4 MiB requests, the most
//! it allows. The stream moves any size in 1 MiB frames.
//!
//!   cargo run --release -p shardgate-backend-peer --example transfer [MIB] [ROUNDS]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shardgate_backend::{Backend, BackendId, BackendInfo, BlobName};
use shardgate_backend_peer::wire::MAX_CHALLENGE_BYTES;
use shardgate_backend_peer::{NodeConfig, PeerBackend, PeerServer, ServeConfig, identity, node};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mib: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let gw_key = identity::load_or_create(&dir.path().join("gw.key")).unwrap();
    let gw_id = gw_key.public().to_peer_id();
    let server = PeerServer::start(ServeConfig {
        data_dir: dir.path().join("peer"),
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap: Vec::new(),
        gateways: vec![gw_id],
        peers: Vec::new(),
        capacity_bytes: None,
        key_file: None,
    })
    .await
    .unwrap();
    let peer = server.peer_id();
    let node = node::start(NodeConfig {
        keypair: gw_key,
        listen: Vec::new(),
        bootstrap: Vec::new(),
        allow: HashSet::from([peer]),
        watch: vec![(peer, server.listen_addrs())],
        serve: None,
        request_timeout: Duration::from_secs(60),
    })
    .await
    .unwrap();
    let backend = PeerBackend::new(BackendInfo::new(BackendId::new("p").unwrap()), peer, node);
    let size = mib << 20;
    let name = BlobName::random();
    let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    let started = Instant::now();
    backend.put(&name, Bytes::from(data)).await.unwrap();
    println!(
        "put {mib} MiB over the stream: {:.0} MB/s",
        size as f64 / started.elapsed().as_secs_f64() / 1e6
    );
    let chunk = MAX_CHALLENGE_BYTES;
    let ranges: Vec<_> = (0..size)
        .step_by(chunk as usize)
        .map(|s| s..(s + chunk).min(size))
        .collect();
    let (mut stream_s, mut cbor_s) = (0.0, 0.0);
    for round in 0..rounds {
        // ABBA: the order alternates.
        for which in [round % 2, 1 - round % 2] {
            let t = Instant::now();
            if which == 0 {
                let got = backend.get(&name, 0..size).await.unwrap();
                assert_eq!(got.len() as u64, size);
                stream_s += t.elapsed().as_secs_f64();
            } else {
                let mut n = 0;
                for r in &ranges {
                    let got = backend
                        .challenge(&name, rand::random(), std::slice::from_ref(r))
                        .await
                        .unwrap();
                    n += got[0].len() as u64;
                }
                assert_eq!(n, size);
                cbor_s += t.elapsed().as_secs_f64();
            }
        }
    }
    let mbs = |s: f64| (size * rounds as u64) as f64 / s / 1e6;
    println!(
        "get {mib} MiB × {rounds}: stream {:.0} MB/s, cbor request-response in {} MiB requests {:.0} MB/s (stream / cbor {:.2})",
        mbs(stream_s),
        chunk >> 20,
        mbs(cbor_s),
        mbs(stream_s) / mbs(cbor_s)
    );
}
