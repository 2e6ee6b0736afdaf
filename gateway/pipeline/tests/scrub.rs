//! Scrub's check of one fragment: healthy fragments pass; a missing blob,
//! a flipped byte anywhere (any shard of any stripe, or the trailer) and a
//! wrong size are found, each with where.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Cluster, data};
use shardgate_backend::Backend;
use shardgate_core::layout::CHUNK_BYTES;
use shardgate_pipeline::{Finding, verify_fragment};

#[tokio::test]
async fn every_fragment_is_checked_whole_and_damage_is_located() {
    let cluster = Cluster::new(6);
    let params = cluster.params(4, 2, 2);
    // Five stripes (the last partial), so runs of stripes are exercised.
    let plain = data(9 * CHUNK_BYTES + 123, 7);
    let manifest = cluster.write(&plain, &params).await.unwrap().manifest;
    let segment = &manifest.segments[0];
    let geometry = segment.geometry();
    assert_eq!(geometry.stripe_count, 5);
    for max_read in [1, 100_000, 1 << 30] {
        for (i, f) in segment.fragments.iter().enumerate() {
            let (b, _) = cluster.holder(&manifest, i);
            let check = verify_fragment(b, f, &geometry, max_read).await;
            assert_eq!(check.finding, Finding::Healthy, "fragment {i}");
            assert_eq!(check.bytes_read, geometry.fragment_len());
        }
    }
    // A byte flipped in stripe 3's shard of fragment 1; in fragment 2's
    // trailer; fragment 3 lost.
    let (b1, n1) = cluster.holder(&manifest, 1);
    assert!(b1.rot(&n1, geometry.shard_offset(3) as usize + 10));
    let (b2, n2) = cluster.holder(&manifest, 2);
    assert!(b2.rot(&n2, geometry.fragment_len() as usize - 1));
    let (b3, n3) = cluster.holder(&manifest, 3);
    assert!(b3.lose(&n3));
    let find = |i: usize| {
        let (b, _) = cluster.holder(&manifest, i);
        verify_fragment(b, &segment.fragments[i], &geometry, 64 * 1024)
    };
    assert_eq!(find(1).await.finding, Finding::Corrupt { stripe: Some(3) });
    assert_eq!(find(2).await.finding, Finding::Corrupt { stripe: None });
    assert_eq!(find(3).await.finding, Finding::Missing);
    assert!(find(3).await.finding.is_damage());
    assert_eq!(find(0).await.finding, Finding::Healthy);
    // A fragment of the wrong size (truncated behind our back).
    let (b4, n4) = cluster.holder(&manifest, 4);
    let whole = b4.get(&n4, 0..geometry.fragment_len()).await.unwrap();
    assert!(b4.lose(&n4));
    b4.put(&n4, whole.slice(..whole.len() - 1)).await.unwrap();
    assert_eq!(find(4).await.finding, Finding::Corrupt { stripe: None });
}
