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
    async fn challenge(
        &self,
        name: &BlobName,
        nonce: [u8; 32],
        ranges: &[Range<u64>],
    ) -> Result<Vec<Bytes>> {
        self.backend.challenge(name, nonce, ranges).await
    }
    fn preferred_read_bytes(&self) -> u64 {
        self.backend.preferred_read_bytes()
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

/// Reads into recycled buffers (dirty; holding more bytes than the range,
/// or fewer) return the range's bytes alone, again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_into_a_recycled_buffer_returns_only_the_range() {
    let b = peer_backend().await;
    let name = BlobName::random();
    let data = Bytes::from(support::pattern(7, 1 << 20));
    b.put(&name, data.clone()).await.unwrap();
    let len = (256 << 10) + 1000;
    for extra in [7, 70_000] {
        shardgate_backend::buffers::give(vec![0xAA; len + extra]);
    }
    // Room for the range, but holding less than it.
    let mut short = vec![0xBB; 100];
    short.reserve_exact(len + 10);
    shardgate_backend::buffers::give(short);
    let range = 4099..4099 + len as u64;
    for _ in 0..4 {
        let got = b.get(&name, range.clone()).await.unwrap();
        assert_eq!(got.len(), len);
        assert!(
            got[..] == data[4099..4099 + len],
            "a read returned other bytes"
        );
    }
}

/// A peer known only by a DNS name (`/dns4/localhost/...`, as containers
/// and Kubernetes name their peers) is dialed and stores and serves: it
/// dials nobody itself and no other node knows it, so the name is the only
/// way to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_known_by_a_dns_name_is_reached() {
    let dir = tempfile::tempdir().unwrap();
    let gw_key = dir.path().join("gateway.key");
    let mut peer = PeerProcess::start(PeerSpec {
        data: dir.path().join("peer"),
        listen: vec!["127.0.0.1:0".into()],
        gateways: vec![peer_id_of(&gw_key)],
        ..PeerSpec::default()
    });
    peer.addrs = peer
        .addrs
        .iter()
        .map(|a| a.replace("/ip4/127.0.0.1/", "/dns4/localhost/"))
        .collect();
    assert!(
        peer.addrs.iter().all(|a| a.starts_with("/dns4/localhost/")),
        "{:?}",
        peer.addrs
    );
    let node = gateway_node(&gw_key, &[&peer]).await;
    let backend = PeerBackend::new(
        BackendInfo::new(BackendId::new("peer-dns").unwrap()),
        peer.peer_id.parse().unwrap(),
        node,
    );
    let name = BlobName::random();
    backend
        .put(&name, Bytes::from_static(b"by name"))
        .await
        .unwrap();
    assert_eq!(
        backend.get(&name, 0..7).await.unwrap(),
        Bytes::from_static(b"by name")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn challenges_of_any_shape_are_answered_in_batches_the_peer_accepts() {
    let b = peer_backend().await;
    let name = BlobName::random();
    let data = support::pattern(3, 12 << 20);
    b.put(&name, Bytes::from(data.clone())).await.unwrap();
    // 100 small ranges (over 64 per challenge), one over 4 MiB, and 6 MiB
    // in two (over 4 MiB per challenge).
    let mut ranges: Vec<Range<u64>> = (0..100).map(|i| i * 1000..i * 1000 + 10).collect();
    ranges.push(0..(5 << 20));
    ranges.extend([(6 << 20)..(9 << 20), (9 << 20)..(12 << 20)]);
    let got = b.challenge(&name, [7; 32], &ranges).await.unwrap();
    assert_eq!(got.len(), ranges.len());
    for (r, g) in ranges.iter().zip(&got) {
        assert!(g[..] == data[r.start as usize..r.end as usize], "{r:?}");
    }
    let outside = b
        .challenge(&name, [8; 32], &[0..1, (12 << 20)..(12 << 20) + 1])
        .await;
    assert!(
        matches!(outside, Err(shardgate_backend::BackendError::InvalidRange { start, .. }) if start == 12 << 20),
        "{outside:?}"
    );
}

/// `n` peers (4 + 2 by the default policy, one site each), the last
/// dialing out only, and a gateway over them.
struct Cluster {
    tmp: tempfile::TempDir,
    peers: Vec<PeerProcess>,
    ids: Vec<String>,
    server: support::Server,
}

impl Cluster {
    fn start(env: &[(&str, &str)]) -> Self {
        Self::start_n(6, env)
    }

    fn start_n(n: usize, env: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("gateway");
        let gw_id = peer_id_of(&data.join("keys/peer.key"));
        let ids: Vec<String> = (1..=n)
            .map(|i| peer_id_of(&tmp.path().join(format!("peer-{i}/peer.key"))))
            .collect();
        let spec = |i: usize| PeerSpec {
            data: tmp.path().join(format!("peer-{i}")),
            listen: vec![format!("{}:0", next_host())],
            gateways: vec![gw_id.clone()],
            peers: ids
                .iter()
                .enumerate()
                .filter(|(j, _)| j + 1 != i)
                .map(|(_, id)| id.clone())
                .collect(),
            bootstrap: Vec::new(),
        };
        // Peer 1 on 127.0.0.1, which the gateway knows by a DNS name
        // (`/dns4/localhost/...`, as containers name their peers).
        let mut first = spec(1);
        first.listen = vec!["127.0.0.1:0".into()];
        let mut peers = vec![PeerProcess::start(first)];
        for i in 2..n {
            let mut s = spec(i);
            s.bootstrap = vec![peers[0].tcp_addr()];
            peers.push(PeerProcess::start(s));
        }
        let mut config = String::from("[peers]\nlisten = [\"127.0.0.1:0\"]\n\n");
        for (i, id) in ids.iter().enumerate() {
            let addrs: Vec<String> = peers
                .get(i)
                .map(|p| {
                    p.addrs
                        .iter()
                        .map(|a| format!("{:?}", a.replace("/ip4/127.0.0.1/", "/dns4/localhost/")))
                        .collect()
                })
                .unwrap_or_default();
            config.push_str(&format!(
                "[[backends]]\nid = \"peer-{n}\"\nkind = \"peer\"\npeer_id = \"{id}\"\naddresses = [{}]\nlabels = {{ site = \"site-{n}\" }}\n\n",
                addrs.join(", "),
                n = i + 1
            ));
        }
        let config_file = tmp.path().join("shardgate.toml");
        std::fs::write(&config_file, config).unwrap();
        let mut all_env = vec![("SHARDGATE_CONFIG", config_file.to_str().unwrap())];
        all_env.extend_from_slice(env);
        let server = support::Server::start_with(&data, &all_env);
        assert!(
            !server.peer_addrs.is_empty(),
            "the gateway's peer network listens"
        );
        // The last peer has no listen address: it dials the gateway and
        // serves over that connection.
        let gateway_tcp = server
            .peer_addrs
            .iter()
            .find(|a| a.contains("/tcp/"))
            .unwrap()
            .clone();
        let mut last = spec(n);
        last.listen = Vec::new();
        last.bootstrap = vec![gateway_tcp];
        peers.push(PeerProcess::start(last));
        let all_up: Vec<String> = (1..=n).map(|i| format!("backend peer-{i}: up\n")).collect();
        server.wait_for_ready_text(&all_up, Duration::from_secs(60));
        Self {
            tmp,
            peers,
            ids,
            server,
        }
    }

    fn peer_dir(&self, i: usize) -> std::path::PathBuf {
        self.tmp.path().join(format!("peer-{i}"))
    }

    /// The fragment files stored on peer `i`.
    fn blobs_on(&self, i: usize) -> Vec<std::path::PathBuf> {
        support::peers::files_under(&self.peer_dir(i).join("blobs"))
            .into_iter()
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                // Not the manifest journal's blobs (named j...).
                !name.starts_with('.') && !name.ends_with(".tmp") && !name.starts_with('j')
            })
            .collect()
    }
}

const BUCKET: &str = "peer-photos-8c1f";
const KEY_PREFIX: &str = "holiday-secret-name";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn six_peers_round_trip_survive_two_kills_and_a_move_to_another_port() {
    let mut c = Cluster::start(&[]);
    let sizes: [usize; 6] = [0, 1, 65_537, 1 << 20, (17 << 20) + 5, 100 << 20];
    c.server.aws_ok(&["s3", "mb", &format!("s3://{BUCKET}")]);
    let mut objects = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let file = c.tmp.path().join(format!("in-{i}"));
        std::fs::write(&file, support::pattern(i as u64 + 11, *size)).unwrap();
        let key = format!("{KEY_PREFIX}-{i}");
        let url = format!("s3://{BUCKET}/{key}");
        c.server.aws_ok(&["s3", "cp", file.to_str().unwrap(), &url]);
        objects.push((file, url));
    }
    let read_all = |c: &Cluster, round: &str| {
        for (i, (file, url)) in objects.iter().enumerate() {
            let out = c.tmp.path().join(format!("out-{round}-{i}"));
            c.server.aws_ok(&["s3", "cp", url, out.to_str().unwrap()]);
            assert!(
                std::fs::read(&out).unwrap() == std::fs::read(file).unwrap(),
                "{url} differs ({round})"
            );
            std::fs::remove_file(&out).unwrap();
        }
    };
    read_all(&c, "all up");
    assert!(
        !c.blobs_on(6).is_empty(),
        "the dial-out-only peer stores fragments over its own connection"
    );
    eprintln!(
        "round trips of {sizes:?} bytes through 6 peers: byte for byte; fragments per peer: {:?}",
        (1..=6).map(|i| c.blobs_on(i).len()).collect::<Vec<_>>()
    );

    // No peer holds a key, a bucket name or plaintext.
    let needles: Vec<Vec<u8>> = {
        let big = support::pattern(16, 100 << 20);
        vec![
            BUCKET.as_bytes().to_vec(),
            KEY_PREFIX.as_bytes().to_vec(),
            big[4096..4096 + 32].to_vec(),
            big[(50 << 20)..(50 << 20) + 32].to_vec(),
            support::pattern(13, 65_537)[1000..1032].to_vec(),
        ]
    };
    let mut scanned = 0u64;
    for i in 1..=6 {
        for f in support::peers::files_under(&c.peer_dir(i)) {
            let path = f.to_string_lossy().into_owned();
            assert!(
                !path.contains(BUCKET) && !path.contains(KEY_PREFIX),
                "{path}"
            );
            let bytes = std::fs::read(&f).unwrap();
            scanned += bytes.len() as u64;
            for n in &needles {
                assert!(!contains(&bytes, n), "{path} holds a name or plaintext");
            }
        }
    }
    eprintln!("scanned {scanned} bytes on the peers: no key, bucket name or plaintext");

    // kill -9 two peers: every object still reads.
    c.peers[1].kill9();
    c.peers[3].kill9();
    c.server.wait_for_ready_text(
        &["backend peer-2: DOWN".into(), "backend peer-4: DOWN".into()],
        Duration::from_secs(30),
    );
    read_all(&c, "two peers killed");

    // Peer 2 comes back on another address, knowing only peer 1: the
    // gateway finds it through the DHT, with no configuration change.
    let log_before = c.server.log_text().len();
    let mut spec = c.peers[1].spec.clone();
    spec.listen = vec![format!("{}:0", next_host())];
    spec.bootstrap = vec![c.peers[0].tcp_addr()];
    let moved = PeerProcess::start(spec);
    assert_eq!(moved.peer_id, c.ids[1]);
    c.peers[1] = moved;
    c.server
        .wait_for_ready_text(&["backend peer-2: up\n".into()], Duration::from_secs(60));
    // (Here peer 2's own DHT bootstrap reaches the gateway, a DHT server,
    // first; the gateway's lookup by PeerId is shown by the test below.)
    let log = c.server.log_text()[log_before..].to_string();
    assert!(
        log.contains("backend answers again: marked up backend=peer-2"),
        "peer 2 is back: {log}"
    );
    read_all(&c, "peer 2 moved");
    // And it takes new fragments at its new address.
    let before = c.blobs_on(2).len();
    let file = c.tmp.path().join("after-move");
    std::fs::write(&file, support::pattern(99, 3 << 20)).unwrap();
    c.peers[3] = PeerProcess::start(c.peers[3].spec.clone());
    c.server
        .wait_for_ready_text(&["backend peer-4: up\n".into()], Duration::from_secs(60));
    c.server.aws_ok(&[
        "s3",
        "cp",
        file.to_str().unwrap(),
        &format!("s3://{BUCKET}/after-move"),
    ]);
    assert!(c.blobs_on(2).len() > before, "peer 2 took a new fragment");
}

#[test]
fn a_peer_that_altered_or_deleted_a_fragment_fails_its_challenge() {
    let c = Cluster::start(&[
        ("SHARDGATE_SCRUB__INTERVAL_SECS", "0"),
        ("SHARDGATE_SCRUB__AUDIT_STRIPES", "1"),
    ]);
    c.server.aws_ok(&["s3", "mb", "s3://audited"]);
    let file = c.tmp.path().join("object");
    std::fs::write(&file, support::pattern(5, 32 << 20)).unwrap();
    c.server
        .aws_ok(&["s3", "cp", file.to_str().unwrap(), "s3://audited/object"]);
    // Repair held, so the damage stays until the pass has seen it.
    c.server.admin_json(&["pause", "repair"]);
    let stored: u64 = (1..=6)
        .flat_map(|i| c.blobs_on(i))
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();

    // Peer 1 flips a byte in every 4 KiB of its fragment; peer 3 deletes its own.
    let altered = c.blobs_on(1).pop().unwrap();
    let mut bytes = std::fs::read(&altered).unwrap();
    for at in (100..bytes.len()).step_by(4096) {
        bytes[at] ^= 0x5a;
    }
    std::fs::write(&altered, bytes).unwrap();
    let deleted = c.blobs_on(3).pop().unwrap();
    std::fs::remove_file(&deleted).unwrap();

    let pass = c.server.scrub_pass();
    assert_eq!(pass["objects_done"], 1, "{pass}");
    let name = |p: &std::path::Path| p.file_name().unwrap().to_string_lossy().into_owned();
    let found = c.server.scrub_findings();
    assert!(
        found.contains(&name(&altered)) && found.contains(&name(&deleted)),
        "scrub found {found:?}"
    );
    // Every backend here is a peer, so every byte scrub read was a
    // challenge's (mode="audit").
    let audited = c
        .server
        .metric_sum("shardgate_scrub_backend_read_bytes_total{");
    assert_eq!(
        audited,
        c.server
            .metrics()
            .iter()
            .filter(
                |(k, _)| k.starts_with("shardgate_scrub_backend_read_bytes_total{")
                    && k.contains("mode=\"audit\"")
            )
            .map(|(_, v)| v)
            .sum::<f64>(),
        "peers are audited, never read whole"
    );
    eprintln!(
        "challenges moved {audited} bytes of {stored} stored ({:.1}%) and caught the altered and the deleted fragment",
        100.0 * audited / stored as f64
    );
    assert!(
        audited > 0.0 && audited < stored as f64 / 4.0,
        "{audited} of {stored}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_gateways_store_read_or_delete() {
    let dir = tempfile::tempdir().unwrap();
    let key = |n: &str| dir.path().join(format!("{n}.key"));
    let gateway = peer_id_of(&key("gateway"));
    let dht_only = peer_id_of(&key("dht-only"));
    let _stranger = peer_id_of(&key("stranger"));
    let peer = PeerProcess::start(PeerSpec {
        data: dir.path().join("peer"),
        listen: vec![format!("{}:0", next_host())],
        gateways: vec![gateway],
        peers: vec![dht_only],
        ..PeerSpec::default()
    });
    let backend = |node| {
        PeerBackend::new(
            BackendInfo::new(BackendId::new("p").unwrap()),
            peer.peer_id.parse().unwrap(),
            node,
        )
    };
    let allowed = backend(gateway_node(&key("gateway"), &[&peer]).await);
    let name = BlobName::random();
    allowed
        .put(&name, Bytes::from_static(b"kept safe"))
        .await
        .unwrap();

    for who in ["dht-only", "stranger"] {
        let other = backend(gateway_node(&key(who), &[&peer]).await);
        let put = other
            .put(&BlobName::random(), Bytes::from_static(b"x"))
            .await;
        assert!(
            matches!(
                put,
                Err(shardgate_backend::BackendError::Unavailable { .. })
            ),
            "{who} put: {put:?}"
        );
        let get = other.get(&name, 0..4).await;
        assert!(get.is_err(), "{who} read: {get:?}");
        let del = other.delete(&name).await;
        assert!(del.is_err(), "{who} deleted: {del:?}");
        eprintln!("{who}: put {put:?}; get {get:?}; delete {del:?}");
    }
    assert_eq!(&allowed.get(&name, 0..9).await.unwrap()[..], b"kept safe");
    assert_eq!(
        futures::TryStreamExt::try_collect::<Vec<_>>(allowed.list())
            .await
            .unwrap()
            .len(),
        1,
        "nothing was stored by the others"
    );
    let log = peer.log_text();
    assert!(
        log.contains("refused a connection from") && log.contains("not in the allow list"),
        "{log}"
    );
    assert!(
        log.contains("refused a storage request from a peer that is not a gateway"),
        "{log}"
    );
}

#[test]
fn a_peer_gone_for_good_is_repaired_away() {
    let mut c = Cluster::start_n(
        7,
        &[
            ("SHARDGATE_REPAIR__BACKEND_GRACE_SECS", "3"),
            ("SHARDGATE_SCRUB__INTERVAL_SECS", "0"),
        ],
    );
    assert!(c.server.python("op.py", &["mb", "kept"]).status.success());
    c.server.bulk(&["put", "kept", "24", "300000", "0"]);
    let lost = c.blobs_on(3).len();
    assert!(lost > 0, "peer 3 holds fragments");
    c.peers[2].kill9();
    let gone_at = std::time::Instant::now();
    let deadline = gone_at + Duration::from_secs(120);
    loop {
        let rebuilt = c
            .server
            .metric_sum("shardgate_repair_fragments_rebuilt_total");
        let queued = c.server.metric_sum("shardgate_repair_queue_objects{");
        if rebuilt >= lost as f64 && queued == 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "repair: {rebuilt} of {lost} rebuilt, {queued} queued"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!(
        "peer 3 killed for good: its {lost} fragments rebuilt on the other peers in {:.1} s (grace 3 s)",
        gone_at.elapsed().as_secs_f64()
    );
    // Redundancy is whole again: two more peers can go.
    c.peers[0].kill9();
    c.peers[1].kill9();
    c.server.bulk(&["check", "kept", "24", "300000", "0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragment_on_another_peer_than_its_manifest_says_is_found_through_the_dht() {
    let dir = tempfile::tempdir().unwrap();
    let gw_key = dir.path().join("gateway.key");
    let gateway = peer_id_of(&gw_key);
    let ids: Vec<String> = ["a", "b"]
        .iter()
        .map(|n| peer_id_of(&dir.path().join(format!("{n}/peer.key"))))
        .collect();
    let spec = |n: &str, other: &str| PeerSpec {
        data: dir.path().join(n),
        listen: vec![format!("{}:0", next_host())],
        gateways: vec![gateway.clone()],
        peers: vec![other.to_string()],
        ..PeerSpec::default()
    };
    let a = PeerProcess::start(spec("a", &ids[1]));
    let mut b_spec = spec("b", &ids[0]);
    b_spec.bootstrap = vec![a.tcp_addr()];
    let mut b = PeerProcess::start(b_spec);
    let node = gateway_node(&gw_key, &[&a, &b]).await;
    let on = |p: &PeerProcess| {
        PeerBackend::new(
            BackendInfo::new(BackendId::new("p").unwrap()),
            p.peer_id.parse().unwrap(),
            node.clone(),
        )
    };
    let (on_a, on_b) = (on(&a), on(&b));
    let name = BlobName::random();
    on_a.put(&name, Bytes::from_static(b"moved with its disk"))
        .await
        .unwrap();

    // The blob's file moves from a's disk to b's, and b restarts: it
    // announces what its disk holds.
    let files = support::peers::files_under(&dir.path().join("a/blobs"));
    let file = files
        .iter()
        .find(|f| f.file_name().unwrap().to_string_lossy() == name.as_str())
        .expect("the blob's file on a");
    let to = dir
        .path()
        .join("b/blobs")
        .join(file.strip_prefix(dir.path().join("a/blobs")).unwrap());
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::rename(file, &to).unwrap();
    let b_spec = b.spec.clone();
    b.kill9();
    let old_addrs = b.addrs.clone();
    let b = PeerProcess::start(b_spec);
    assert!(
        b.addrs.iter().all(|a| !old_addrs.contains(a)),
        "b moved: {old_addrs:?} -> {:?}",
        b.addrs
    );
    // b listens on another port now and dials only a; the gateway (no DHT
    // server, so nothing dials it) knows only b's old addresses: it can
    // reach b only by looking b up in the DHT by its PeerId.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while let Err(e) = on_b.stat(&name).await {
        assert!(
            std::time::Instant::now() < deadline,
            "b holds it now: {e}\na's log:\n{}",
            a.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The manifest still says a: reads, stats and deletes through a's
    // backend follow the DHT to b (within a bounded wait for b's
    // announcement to land).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let got = loop {
        match on_a.get(&name, 0..19).await {
            Ok(bytes) => break bytes,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "not found: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    assert_eq!(&got[..], b"moved with its disk");
    assert_eq!(on_a.stat(&name).await.unwrap().size, 19);
    on_a.delete(&name).await.unwrap();
    assert!(on_b.stat(&name).await.unwrap_err().is_not_found());
    drop(b);
}
