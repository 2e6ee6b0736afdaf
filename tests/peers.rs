//! Peers over libp2p (issue 15): `shardgate peer` processes on 127.0.0.x
//! and the gateway's `peer` backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use shardgate_backend::{
    Backend, BackendId, BackendInfo, BlobMeta, BlobName, BlobWriter, Health, Result,
};
use shardgate_backend_peer::{NodeConfig, NodeHandle, PeerBackend, identity, node, parse_addr};
use support::peers::{PeerProcess, PeerSpec, peer_id_of};

/// A fresh loopback address per peer: 127.0.0.2, .3, ...
fn next_host() -> String {
    static N: AtomicU8 = AtomicU8::new(2);
    format!("127.0.0.{}", N.fetch_add(1, Ordering::Relaxed).max(2))
}

/// An in-process gateway node with the identity at `key`, watching `peers`.
async fn gateway_node(key: &std::path::Path, peers: &[&PeerProcess]) -> NodeHandle {
    let keypair = identity::load_or_create(key).unwrap();
    let watch: Vec<_> = peers
        .iter()
        .map(|p| {
            (
                p.peer_id.parse().unwrap(),
                p.addrs.iter().map(|a| parse_addr(a).unwrap()).collect(),
            )
        })
        .collect();
    node::start(NodeConfig {
        keypair,
        listen: Vec::new(),
        bootstrap: Vec::new(),
        allow: watch.iter().map(|(p, _)| *p).collect::<HashSet<_>>(),
        watch,
        serve: None,
        request_timeout: Duration::from_secs(30),
    })
    .await
    .unwrap()
}

/// A peer backend that keeps its peer process alive as long as it lives.
#[derive(Debug)]
struct Held {
    backend: PeerBackend,
    _peer: Arc<ProcessGuard>,
}

struct ProcessGuard(#[allow(dead_code)] PeerProcess);

impl std::fmt::Debug for ProcessGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProcessGuard")
    }
}

#[async_trait]
impl Backend for Held {
    fn info(&self) -> &BackendInfo {
        self.backend.info()
    }
    async fn create(&self, name: &BlobName) -> Result<Box<dyn BlobWriter>> {
        self.backend.create(name).await
    }
    async fn get(&self, name: &BlobName, range: Range<u64>) -> Result<Bytes> {
        self.backend.get(name, range).await
    }
    async fn stat(&self, name: &BlobName) -> Result<BlobMeta> {
        self.backend.stat(name).await
    }
    async fn delete(&self, name: &BlobName) -> Result<()> {
        self.backend.delete(name).await
    }
    fn list(&self) -> BoxStream<'_, Result<BlobMeta>> {
        self.backend.list()
    }
    async fn health(&self) -> Result<Health> {
        self.backend.health().await
    }
}

/// A fresh peer process and a gateway node's backend for it.
async fn peer_backend() -> Arc<dyn Backend> {
    let dir = tempfile::tempdir().unwrap().keep();
    let gw_key = dir.join("gateway.key");
    let gw_id = peer_id_of(&gw_key);
    let peer = PeerProcess::start(PeerSpec {
        data: dir.join("peer"),
        listen: vec![format!("{}:0", next_host())],
        gateways: vec![gw_id],
        ..PeerSpec::default()
    });
    let node = gateway_node(&gw_key, &[&peer]).await;
    let backend = PeerBackend::new(
        BackendInfo::new(BackendId::new("peer-1").unwrap()),
        peer.peer_id.parse().unwrap(),
        node,
    );
    Arc::new(Held {
        backend,
        _peer: Arc::new(ProcessGuard(peer)),
    })
}

shardgate_backend_conformance::conformance_tests!(peer_backend().await);
