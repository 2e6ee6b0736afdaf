//! The manifest journal's cost in the metadata commit: a PUT's commit
//! (`put_object` of a 4 + 2 manifest, one redb transaction with its fsync)
//! with and without the outbox row, side by side; and a batch's read of
//! the outbox. Run `cargo bench -p shardgate-meta --bench journal`
//! (BENCHMARKS.md, "Manifest journal").
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use shardgate_core::hash::groups_for;
use shardgate_core::{
    BackendId, BlobName, Digest, Envelope, ErasureCode, FragmentRef, FragmentState, Identities,
    Manifest, Segment, StripeLayout, VersionId,
};
use shardgate_meta::{Condition, MetaStore};

/// A 1 MiB object's manifest: one segment of 4 + 2 fragments.
fn manifest() -> Manifest {
    let (envelope, _) = Envelope::seal(&Identities::generate().recipients()).unwrap();
    let layout = StripeLayout::default_for(ErasureCode::new(4, 2).unwrap());
    let len = 1 << 20;
    let groups = groups_for(&(0..layout.geometry(len).stripe_count)).end as usize;
    let fragments = (0..6)
        .map(|i| FragmentRef {
            backend: BackendId::new(format!("site-{i}")).unwrap(),
            blob: BlobName::random(),
            group_digests: vec![Digest([7; 32]); groups],
            state: FragmentState::Stored,
        })
        .collect();
    Manifest {
        version_id: VersionId::new(1),
        size: len,
        etag: "\"0123456789abcdef0123456789abcdef\"".into(),
        content_type: Some("application/octet-stream".into()),
        user_metadata: BTreeMap::new(),
        created_unix_ms: 1,
        segments: vec![Segment {
            plaintext_len: len,
            envelope,
            layout,
            fragments,
            inline: None,
        }],
    }
}

fn commits(c: &mut Criterion) {
    let manifest = manifest();
    let mut group = c.benchmark_group("put_commit");
    for journal in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::open_with(&dir.path().join("meta.redb"), journal).unwrap();
        store.create_bucket("b", 0).unwrap();
        let mut i = 0u64;
        let name = if journal { "with_journal" } else { "without" };
        group.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                store
                    .put_object(
                        "b",
                        &format!("k{}", i % 1000),
                        &manifest,
                        None,
                        &Condition::Always,
                        0,
                    )
                    .unwrap();
            })
        });
    }
    group.finish();

    // The writer's read of a 4 MiB batch from a full outbox.
    let dir = tempfile::tempdir().unwrap();
    let store = MetaStore::open_with(&dir.path().join("meta.redb"), true).unwrap();
    store.create_bucket("b", 0).unwrap();
    let batch: Vec<(String, Manifest)> = (0..5000)
        .map(|i| (format!("k{i}"), manifest.clone()))
        .collect();
    store.put_objects_batch("b", &batch, 0).unwrap();
    c.bench_function("outbox_read_4MiB", |b| {
        b.iter(|| store.outbox(4 << 20).unwrap().records.len())
    });
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4))
}

criterion_group! { name = benches; config = config(); targets = commits }
criterion_main!(benches);
