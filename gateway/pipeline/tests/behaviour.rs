//! Pipeline behaviour beyond erasures: range reads at every boundary, write
//! quorum, failures mid-write leave nothing, slow and corrupt fragments are
//! skipped and reported, wrong keys and bad ranges are clear errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Cluster, body, data};
use futures::{StreamExt, stream};
use shardgate_backend::Backend;
use shardgate_backend_memory::Faults;
use shardgate_core::layout::CHUNK_BYTES;
use shardgate_core::{CoreError, FragmentState, Identities};
use shardgate_pipeline::{ObjectMeta, PipelineError, Problem, write_object, write_segment};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_reads_at_every_chunk_and_stripe_boundary() {
    let cluster = Cluster::new(5);
    let params = cluster.params(3, 2, 2);
    let len = 5 * 2 * CHUNK_BYTES + 12_345;
    let plain = data(len, 7);
    let manifest = cluster.write(&plain, &params).await.unwrap().manifest;
    let len = len as u64;
    let bounds: Vec<u64> = (1..=len / CHUNK_BYTES as u64)
        .map(|i| i * CHUNK_BYTES as u64)
        .chain([len])
        .collect();
    // Healthy, then with data fragment 1 lost (forces decoding).
    for lose_one in [false, true] {
        if lose_one {
            let (b, name) = cluster.holder(&manifest, 1);
            assert!(b.lose(&name));
        }
        for &b in &bounds {
            let ranges = [
                b - 1..(b + 1).min(len),
                b - 1..b,
                b.min(len - 1)..(b + 1).min(len),
                0..b,
                b.min(len - 1)..len,
            ];
            for r in ranges {
                let (got, _) = cluster.read(&manifest, Some(r.clone())).await;
                assert!(
                    got.unwrap() == plain[r.start as usize..r.end as usize],
                    "range {r:?} (lost fragment: {lose_one})"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_bounds_range_is_not_satisfiable() {
    let cluster = Cluster::new(3);
    let manifest = cluster
        .write(&data(1000, 1), &cluster.params(2, 1, 16))
        .await
        .unwrap()
        .manifest;
    for r in [1000..1001, 5..5, 999..2000] {
        let (got, _) = cluster.read(&manifest, Some(r.clone())).await;
        assert!(
            matches!(
                got,
                Err(PipelineError::Core(CoreError::RangeNotSatisfiable { .. }))
            ),
            "{r:?}: {got:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_below_quorum_fails_and_leaves_nothing() {
    let cluster = Cluster::new(6);
    let params = cluster.params(4, 2, 2).with_write_quorum(5).unwrap();
    cluster.mem[1].update_faults(|f| f.fail_writes_after_bytes = Some(100_000));
    cluster.mem[4].set_faults(Faults {
        fail_writes: true,
        ..Faults::default()
    });
    let err = cluster.write(&data(3 << 20, 2), &params).await.unwrap_err();
    assert!(
        matches!(err, PipelineError::QuorumNotReached { quorum: 5, .. }),
        "{err}"
    );
    assert_eq!(cluster.total_blobs(), 0, "fragments left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_at_quorum_records_the_missing_fragment_and_reads_back() {
    let cluster = Cluster::new(6);
    let params = cluster.params(4, 2, 2).with_write_quorum(5).unwrap();
    cluster.mem[3].update_faults(|f| f.fail_writes_after_bytes = Some(200_000));
    let plain = data(3 << 20, 3);
    let w = cluster.write(&plain, &params).await.unwrap();
    assert_eq!(w.lost_fragments, vec![3]);
    let states: Vec<FragmentState> = w.manifest.segments[0]
        .fragments
        .iter()
        .map(|f| f.state)
        .collect();
    assert_eq!(states[3], FragmentState::Missing);
    assert_eq!(
        states
            .iter()
            .filter(|s| **s == FragmentState::Stored)
            .count(),
        5
    );
    assert!(
        cluster.mem[3].blob_names().is_empty(),
        "partial fragment visible"
    );
    let (got, report) = cluster.read(&w.manifest, None).await;
    assert!(got.unwrap() == plain);
    let bad = report.bad_fragments();
    assert_eq!(bad.len(), 1);
    assert_eq!((bad[0].fragment, &bad[0].problem), (3, &Problem::NotStored));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_fails_midway_leaves_nothing() {
    let cluster = Cluster::new(3);
    let params = cluster.params(2, 1, 2);
    let pieces: Vec<std::io::Result<Bytes>> = vec![
        Ok(Bytes::from(data(700_000, 4))),
        Ok(Bytes::from(data(700_000, 5))),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "client went away",
        )),
    ];
    let err = write_segment(stream::iter(pieces).boxed(), &cluster.placement(), &params)
        .await
        .unwrap_err();
    assert!(matches!(err, PipelineError::Input(_)), "{err}");
    assert_eq!(cluster.total_blobs(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_placement_is_refused_before_writing() {
    let cluster = Cluster::new(3);
    let params = cluster.params(2, 2, 2);
    let err = write_segment(body(b"x", 1), &cluster.placement(), &params)
        .await
        .unwrap_err();
    assert!(matches!(err, PipelineError::Placement(_)), "{err}");
    assert!(cluster.params(2, 1, 2).with_write_quorum(1).is_err());
    assert_eq!(cluster.total_blobs(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_fragment_is_skipped_within_the_timeout() {
    let cluster = Cluster::new(6);
    let plain = data(2 << 20, 6);
    let manifest = cluster
        .write(&plain, &cluster.params(4, 2, 16))
        .await
        .unwrap()
        .manifest;
    let (slow, _) = cluster.holder(&manifest, 0);
    slow.update_faults(|f| f.read_delay = Some(Duration::from_secs(30)));
    let mut params = cluster.read_params();
    params.fragment_timeout = Duration::from_millis(200);
    let started = Instant::now();
    let (got, report) = cluster.read_with(&manifest, None, params).await;
    assert!(got.unwrap() == plain);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let bad = report.bad_fragments();
    assert_eq!(bad.len(), 1);
    assert_eq!((bad[0].fragment, &bad[0].problem), (0, &Problem::Slow));
}

/// A fragment far slower than usual, but within its timeout, is hedged:
/// after the hedge delay another fragment is asked, the read completes
/// long before the slow one would answer, and the slow one is not reported
/// for repair (it is late, not bad) but asked last for the rest of the read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_fragment_is_hedged_long_before_its_timeout() {
    let cluster = Cluster::new(6);
    let plain = data(8 << 20, 7);
    let manifest = cluster
        .write(&plain, &cluster.params(4, 2, 16))
        .await
        .unwrap()
        .manifest;
    let (slow, _) = cluster.holder(&manifest, 1);
    slow.update_faults(|f| f.read_delay = Some(Duration::from_secs(30)));
    let mut params = cluster.read_params();
    params.fragment_timeout = Duration::from_secs(60);
    let in_flight = params.batches_in_flight as u64;
    let (got, report) = tokio::time::timeout(
        Duration::from_secs(20),
        cluster.read_with(&manifest, None, params),
    )
    .await
    .expect("the read finished by hedging, not by waiting 30 s for the slow fragment");
    assert!(got.unwrap() == plain);
    assert_eq!(report.bad_fragments(), vec![]);
    let hedges = cluster.set.board().hedges();
    assert!(
        (1..=in_flight).contains(&hedges),
        "{hedges} hedged requests: one per batch in flight when the slowness showed, then none"
    );
}

/// A backend the board has marked down is not asked while others can
/// serve: no request waits on it, so no hedge is needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_on_a_backend_marked_down_are_asked_last() {
    let cluster = Cluster::new(6);
    let plain = data(4 << 20, 8);
    let manifest = cluster
        .write(&plain, &cluster.params(4, 2, 16))
        .await
        .unwrap()
        .manifest;
    let (down, _) = cluster.holder(&manifest, 0);
    down.update_faults(|f| f.read_delay = Some(Duration::from_secs(30)));
    cluster
        .set
        .board()
        .record_failure(&down.info().id, "connection refused");
    assert!(!cluster.set.board().is_up(&down.info().id));
    let mut params = cluster.read_params();
    params.fragment_timeout = Duration::from_secs(60);
    let (got, report) = tokio::time::timeout(
        Duration::from_secs(20),
        cluster.read_with(&manifest, None, params),
    )
    .await
    .expect("the read did not wait on the down backend");
    assert!(got.unwrap() == plain);
    assert_eq!(report.bad_fragments(), vec![]);
    assert_eq!(cluster.set.board().hedges(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_missing_fragments_are_reported_with_their_identity() {
    let cluster = Cluster::new(6);
    let plain = data(5 << 20, 8);
    let manifest = cluster
        .write(&plain, &cluster.params(4, 2, 16))
        .await
        .unwrap()
        .manifest;
    let (rotten, rotten_blob) = cluster.holder(&manifest, 2);
    rotten.update_faults(|f| f.corrupt_reads = true);
    let (gone, gone_blob) = cluster.holder(&manifest, 0);
    assert!(gone.lose(&gone_blob));
    let (got, report) = cluster.read(&manifest, None).await;
    assert!(got.unwrap() == plain);
    let mut bad = report.bad_fragments();
    bad.sort_by_key(|b| b.fragment);
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert_eq!(
        (bad[0].fragment, &bad[0].blob, &bad[0].problem),
        (0, &gone_blob, &Problem::Missing)
    );
    assert_eq!(bad[1].fragment, 2);
    assert_eq!(bad[1].blob, rotten_blob);
    assert_eq!(&bad[1].backend, rotten.id());
    assert!(matches!(bad[1].problem, Problem::Corrupt { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_key_cannot_read() {
    let cluster = Cluster::new(3);
    let manifest = cluster
        .write(&data(10, 9), &cluster.params(2, 1, 2))
        .await
        .unwrap()
        .manifest;
    let mut params = cluster.read_params();
    params.identities = Arc::new(Identities::generate());
    let (got, _) = cluster.read_with(&manifest, None, params).await;
    assert!(
        matches!(got, Err(PipelineError::Core(CoreError::NoMatchingIdentity))),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifest_carries_metadata_and_the_md5_etag() {
    let cluster = Cluster::new(3);
    let meta = ObjectMeta {
        content_type: Some("text/plain".into()),
        user_metadata: [("color".to_string(), "blue".to_string())].into(),
    };
    let w = write_object(
        body(b"hello", 2),
        &cluster.placement(),
        &cluster.params(2, 1, 2),
        meta,
        42,
    )
    .await
    .unwrap();
    assert_eq!(w.manifest.etag, "5d41402abc4b2a76b9719d911017c592");
    assert_eq!(w.manifest.content_type.as_deref(), Some("text/plain"));
    assert_eq!(w.manifest.user_metadata["color"], "blue");
    assert_eq!(w.manifest.created_unix_ms, 42);
    let decoded = shardgate_core::Manifest::decode(&w.manifest.encode().unwrap()).unwrap();
    assert_eq!(decoded, w.manifest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_on_backends_reveal_neither_name_nor_plaintext() {
    let cluster = Cluster::new(3);
    let secret = b"the quick brown fox jumps over the lazy dog; ".repeat(2000);
    cluster
        .write(&secret, &cluster.params(2, 1, 2))
        .await
        .unwrap();
    for m in &cluster.mem {
        for name in m.blob_names() {
            assert_eq!(name.as_str().len(), 32);
            let size = m.stat(&name).await.unwrap().size;
            let blob = m.get(&name, 0..size).await.unwrap();
            assert!(
                !blob
                    .windows(16)
                    .any(|w| secret.windows(16).take(64).any(|s| s == w)),
                "plaintext leaked"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_names_are_chosen_before_any_byte_is_written() {
    let cluster = Cluster::new(3);
    let placement = cluster.placement();
    let names = placement.names().to_vec();
    let distinct: std::collections::BTreeSet<_> = names.iter().collect();
    assert_eq!(distinct.len(), 3);
    let w = write_segment(
        body(&data(300_000, 12), 4096),
        &placement,
        &cluster.params(2, 1, 2),
    )
    .await
    .unwrap();
    let used: Vec<_> = w.segment.fragments.iter().map(|f| f.blob.clone()).collect();
    assert_eq!(
        used, names,
        "the manifest must use the names recorded beforehand"
    );
    for (m, name) in cluster.mem.iter().zip(&names) {
        assert_eq!(m.blob_names(), vec![name.clone()]);
    }
}

/// More concurrent writes than the runtime has blocking threads: every one
/// finishes. Each write's MD5 hasher once waited for its pieces on a
/// blocking thread, so as many writes as the pool has threads took them
/// all, and the encoders they waited for never ran (512 concurrent PUTs
/// stalled the gateway for good).
#[test]
fn more_concurrent_writes_than_blocking_threads_all_finish() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let cluster = Arc::new(Cluster::new(3));
        let params = cluster.params(2, 1, 2);
        let writes = (0..16u64).map(|i| {
            let (cluster, params) = (cluster.clone(), params.clone());
            tokio::spawn(async move {
                let plain = data(3 * 2 * CHUNK_BYTES + 100, i);
                // The body comes slowly, so every hasher is waiting at once.
                let slow = body(&plain, 50_000).then(|piece| async {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    piece
                });
                let write = write_object(
                    Box::pin(slow),
                    &cluster.placement(),
                    &params,
                    ObjectMeta::default(),
                    1_700_000_000_000,
                )
                .await
                .unwrap();
                let (got, _) = cluster.read(&write.manifest, None).await;
                assert!(got.unwrap() == plain, "write {i} reads back");
            })
        });
        let all = futures::future::join_all(writes);
        let done = tokio::time::timeout(Duration::from_secs(120), all)
            .await
            .expect(
                "16 writes on 4 blocking threads did not finish: a hasher holds a blocking thread",
            );
        for d in done {
            d.unwrap();
        }
    });
}
