//! Property tests of the whole pipeline over memory backends: any m
//! fragments lost or corrupt still read back byte for byte; m + 1 give a
//! clear "not enough fragments" error, never wrong bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Cluster, data, shuffled};
use proptest::prelude::*;
use shardgate_core::layout::{CHUNK_BYTES, Codec};
use shardgate_pipeline::PipelineError;

fn code() -> impl Strategy<Value = (u32, u32)> {
    prop_oneof![
        Just((1, 0)),
        Just((4, 2)),
        Just((10, 4)),
        Just((200, 55)),
        (1u32..=8, 0u32..=4),
    ]
}

/// Sizes at the edges that matter for a stripe of `cps` chunks.
fn size_for(pick: usize, cps: u32) -> usize {
    let c = CHUNK_BYTES;
    let s = cps as usize * c;
    [
        0,
        1,
        c - 1,
        c,
        c + 1,
        s - 1,
        s,
        s + 1,
        2 * s + 1,
        3 * (1 << 20) + 5,
    ][pick]
}

fn run(k: u32, m: u32, cps: u32, codec: Codec, len: usize, seed: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let width = (k + m) as usize;
        let cluster = Cluster::new(width);
        let mut params = cluster.params(k, m, cps);
        params.layout = params.layout.with_codec(codec);
        let plain = data(len, seed);
        let w = cluster.write(&plain, &params).await.unwrap();
        let manifest = w.manifest;
        assert_eq!(manifest.size, len as u64);
        assert_eq!(cluster.total_blobs(), width);

        // Lose d fragments and corrupt m - d others (in stripe 0, which
        // every full read touches).
        // Fragment 0 always holds data (the first sealed bytes), so putting it
        // among the first m + 1 makes the final step lose real data.
        let mut order = shuffled(width, seed);
        if let Some(pos) = order
            .iter()
            .position(|&i| i == 0)
            .filter(|&p| p > m as usize)
        {
            order.swap(pos, m as usize);
        }
        let lost = (seed as usize) % (m as usize + 1);
        let (gone, rotten) = order[..m as usize].split_at(lost);
        for &i in gone {
            let (b, name) = cluster.holder(&manifest, i);
            assert!(b.lose(&name));
        }
        for &i in rotten {
            let (b, name) = cluster.holder(&manifest, i);
            assert!(b.rot(&name, 0));
        }
        let (got, report) = cluster.read(&manifest, None).await;
        let got = got.unwrap_or_else(|e| panic!("k={k} m={m} cps={cps} {codec:?} len={len}: {e}"));
        assert!(
            got == plain,
            "k={k} m={m} cps={cps} len={len}: bytes differ"
        );
        let bad: Vec<usize> = report.bad_fragments().iter().map(|b| b.fragment).collect();
        assert!(
            bad.iter().all(|i| gone.contains(i) || rotten.contains(i)),
            "healthy fragment reported: {bad:?}"
        );

        // A range inside the object, same erasures.
        if len > 2 {
            let r = (seed % len as u64)..len as u64;
            let (part, _) = cluster.read(&manifest, Some(r.clone())).await;
            assert!(part.unwrap() == plain[r.start as usize..], "range {r:?}");
        }

        // One more fragment gone (fragment 0 now among the lost): the read
        // must fail, never return bytes.
        let (b, name) = cluster.holder(&manifest, order[m as usize]);
        assert!(b.lose(&name));
        let (got, _) = cluster.read(&manifest, None).await;
        match got {
            Err(PipelineError::NotEnoughFragments { needed, .. }) => assert_eq!(needed, k as usize),
            Ok(bytes) if len == 0 => assert!(bytes.is_empty()),
            other => panic!(
                "k={k} m={m} len={len}: expected NotEnoughFragments, got {:?}",
                other.map(|v| v.len())
            ),
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_m_erasures_read_back_and_m_plus_one_fail(
        (k, m) in code(),
        cps in prop_oneof![Just(1u32), Just(2), Just(16)],
        codec in prop_oneof![Just(Codec::ReedSolomonGf8), Just(Codec::ReedSolomonLeopard16)],
        pick in 0usize..10,
        seed in any::<u64>(),
    ) {
        run(k, m, cps, codec, size_for(pick, cps), seed);
    }
}

/// The named geometries, each at every size edge, with both codecs.
#[test]
fn named_codes_at_every_size_edge() {
    for codec in [Codec::ReedSolomonGf8, Codec::ReedSolomonLeopard16] {
        for (k, m) in [(1, 0), (4, 2), (10, 4), (200, 55)] {
            for pick in 0..10 {
                run(k, m, 2, codec, size_for(pick, 2), 0x5eed + pick as u64);
            }
        }
    }
}
