//! The journal end to end on memory backends: ship, checkpoint, lose the
//! store, recover it from the backends (with m of them gone too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use shardgate_backend::{Backend, BackendInfo};
use shardgate_backend_memory::MemoryBackend;
use shardgate_core::journal::{Payload, UnitInfo, UnitKind, blob_name, is_journal_blob, seal_unit};
use shardgate_core::{BackendId, Identities};
use shardgate_journal::{Journal, JournalSettings, Placement, UnitPlacement, recover};
use shardgate_meta::{Condition, MetaStore, RowImage, VersionSelector, Writer};

struct Six(Vec<Arc<MemoryBackend>>);

impl Placement for Six {
    fn place_unit(&self, _bytes: u64) -> Result<UnitPlacement, String> {
        Ok(UnitPlacement {
            k: 4,
            m: 2,
            quorum: 5,
            backends: self
                .0
                .iter()
                .map(|b| b.clone() as Arc<dyn Backend>)
                .collect(),
        })
    }
    fn backend(&self, id: &BackendId) -> Option<Arc<dyn Backend>> {
        self.0
            .iter()
            .find(|b| b.id() == id)
            .map(|b| b.clone() as Arc<dyn Backend>)
    }
}

fn backends() -> Vec<Arc<MemoryBackend>> {
    (0..6)
        .map(|i| {
            Arc::new(MemoryBackend::new(BackendInfo::new(
                BackendId::new(format!("m{i}")).unwrap(),
            )))
        })
        .collect()
}

fn rows(store: &MetaStore) -> Vec<RowImage> {
    let mut snapshot = store.snapshot().unwrap();
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let chunk = snapshot.next_chunk(1 << 20).unwrap();
        if chunk.is_empty() {
            return out;
        }
        out.extend(chunk);
    }
    panic!("the snapshot did not end");
}

fn manifest(etag: &str) -> shardgate_core::Manifest {
    shardgate_core::Manifest {
        version_id: shardgate_core::VersionId::new(1),
        size: 0,
        etag: etag.into(),
        content_type: None,
        user_metadata: BTreeMap::from([("secret-meta".into(), "plain-value".into())]),
        created_unix_ms: 1,
        segments: vec![],
    }
}

/// Writes objects in rounds, shipping between them; small batches and
/// checkpoints so that several of each exist.
async fn populate(store: &MetaStore, journal: &Journal) {
    store.create_bucket("photos-bucket", 0).unwrap();
    for round in 0..6 {
        for i in 0..40 {
            let key = format!("holiday/key-{i}");
            store
                .put_object(
                    "photos-bucket",
                    &key,
                    &manifest(&format!("e{round}")),
                    None,
                    &Condition::Always,
                    0,
                )
                .unwrap();
        }
        for i in 0..(round * 3) {
            let _ = store.delete_object(
                &Writer::Admin,
                "photos-bucket",
                &format!("holiday/key-{i}"),
                0,
            );
        }
        journal.flush().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_store_comes_back_from_the_backends_even_with_m_of_them_gone() {
    let dir = tempfile::tempdir().unwrap();
    let ids = Identities::generate();
    let recovery = Identities::generate();
    let recipients = Arc::new(ids.recipients().join(recovery.recipients()));
    let set = backends();
    let store = MetaStore::open_with(&dir.path().join("meta.redb"), true).unwrap();
    let settings = JournalSettings {
        batch_bytes: 2 << 10,
        min_checkpoint_bytes: 8 << 10,
        ..JournalSettings::default()
    };
    let journal = Journal::new(
        store.clone(),
        recipients,
        Arc::new(Six(set.clone())),
        settings,
    );
    populate(&store, &journal).await;
    let expected = rows(&store);
    assert_eq!(expected.len(), 1 + 40 - 15);
    assert!(
        store.outbox(usize::MAX).unwrap().records.is_empty(),
        "all shipped"
    );
    let state = store.journal_state().unwrap();
    assert!(!state.checkpoint_needed);
    let checkpoints: std::collections::BTreeSet<u64> = state
        .units
        .iter()
        .filter(|(_, u)| u.kind == UnitKind::Checkpoint)
        .map(|(_, u)| u.checkpoint)
        .collect();
    assert_eq!(
        checkpoints.len(),
        1,
        "older checkpoints are deleted: {checkpoints:?}"
    );
    assert!(
        checkpoints.first() > Some(&1),
        "a later checkpoint replaced the first"
    );
    let recorded: usize = state.units.iter().map(|(_, u)| u.blobs.len()).sum();
    let on_backends: usize = set
        .iter()
        .map(|b| b.blob_names().iter().filter(|n| is_journal_blob(n)).count())
        .sum();
    assert_eq!(on_backends, recorded, "no journal blob is left behind");

    // No plaintext on any backend: bucket, key, user metadata.
    for b in &set {
        for name in b.blob_names() {
            let size = b.stat(&name).await.unwrap().size;
            let bytes = b.get(&name, 0..size).await.unwrap();
            for needle in [&b"photos-bucket"[..], b"holiday/key", b"plain-value"] {
                assert!(!bytes.windows(needle.len()).any(|w| w == needle));
            }
        }
    }

    // Another gateway's units (another key) on the same backends, claiming
    // to be the newest checkpoint and a batch after it: passed over.
    let stranger = Identities::generate();
    for (kind, unit, checkpoint, parts) in [
        (UnitKind::Checkpoint, 9_000, 9_000, 1),
        (UnitKind::Batch, 9_001, 0, 1),
    ] {
        let info = UnitInfo {
            journal: state.journal,
            epoch: 0,
            kind,
            unit,
            checkpoint,
            part: 0,
            parts,
            first_seq: 1,
            last_seq: u64::MAX / 2,
        };
        let payload = Payload {
            info,
            generation: u64::MAX / 2,
            records: vec![],
        }
        .encode()
        .unwrap();
        let blobs = seal_unit(&stranger.recipients(), info, 4, 2, &payload).unwrap();
        for (b, blob) in set.iter().zip(blobs) {
            b.put(&blob_name(), blob.into()).await.unwrap();
        }
    }

    let all: Vec<Arc<dyn Backend>> = set.iter().map(|b| b.clone() as Arc<dyn Backend>).collect();
    let quiet = |_: shardgate_journal::Phase, _: u64, _: u64| {};
    for (name, backends, key) in [
        ("all", all.clone(), &ids),
        ("m gone", all[2..].to_vec(), &ids),
        ("recovery key", all[..4].to_vec(), &recovery),
    ] {
        let path = dir.path().join(format!("{name}.redb"));
        let report = recover(&backends, key, None, &path, &quiet).await.unwrap();
        assert!(report.checkpoint.is_some(), "{name}: {report:?}");
        assert!(report.losses().is_empty(), "{name}: {report:?}");
        assert_eq!(report.foreign_units, 2, "{name}: {report:?}");
        assert_eq!(report.journal, state.journal);
        assert!(report.other_journals.is_empty());
        let restored = MetaStore::open(&path).unwrap();
        assert_eq!(rows(&restored), expected, "{name}");
        assert_eq!(restored.object_count().unwrap(), 25);
        assert!(
            restored
                .object_version("photos-bucket", "holiday/key-0", &VersionSelector::Latest)
                .unwrap()
                .is_none(),
            "{name}: deleted stays deleted"
        );
    }

    // m + 1 gone: the journal cannot be read; recovery says so.
    let path = dir.path().join("too-few.redb");
    let report = recover(&all[3..], &ids, None, &path, &quiet).await.unwrap();
    assert!(report.checkpoint.is_none());
    assert!(report.unreadable_units > 0, "{report:?}");
    assert!(!report.losses().is_empty());

    // A second gateway with the same keys journals to the same backends:
    // its journal has an id of its own, and neither recovery mixes them.
    let other_dir = tempfile::tempdir().unwrap();
    let other = MetaStore::open_with(&other_dir.path().join("meta.redb"), true).unwrap();
    let recipients = Arc::new(ids.recipients().join(recovery.recipients()));
    let other_journal = Journal::new(
        other.clone(),
        recipients,
        Arc::new(Six(set.clone())),
        JournalSettings::default(),
    );
    other.create_bucket("another-gateways-bucket", 0).unwrap();
    other_journal.flush().await.unwrap();
    let theirs = other.journal_state().unwrap().journal;
    assert_ne!(theirs, state.journal);
    for (journal, want) in [(state.journal, expected.clone()), (theirs, rows(&other))] {
        let path = dir.path().join(format!("journal-{journal:x}.redb"));
        let report = recover(&all, &ids, Some(journal), &path, &quiet)
            .await
            .unwrap();
        assert!(report.losses().is_empty(), "{report:?}");
        assert_eq!(report.journal, journal);
        assert_eq!(rows(&MetaStore::open(&path).unwrap()), want);
    }
}

/// A unit recorded as pending (its writer stopped mid-write) has its blobs
/// deleted at the next step; its records, still in the outbox, ship again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_of_a_write_cut_short_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let ids = Identities::generate();
    let set = backends();
    let store = MetaStore::open_with(&dir.path().join("meta.redb"), true).unwrap();
    let journal = Journal::new(
        store.clone(),
        Arc::new(ids.recipients()),
        Arc::new(Six(set.clone())),
        JournalSettings::default(),
    );
    journal.flush().await.unwrap();
    let before: usize = set.iter().map(|b| b.blob_names().len()).sum();
    let left = blob_name();
    set[0].put(&left, vec![1u8; 10].into()).await.unwrap();
    let unit = store.next_journal_unit().unwrap();
    let record = shardgate_meta::UnitRecord {
        kind: UnitKind::Batch,
        checkpoint: 0,
        last_seq: 1,
        blobs: vec![
            (set[0].id().clone(), left.clone()),
            (set[1].id().clone(), blob_name()),
        ],
        written: vec![false, false],
        pending: true,
    };
    store.record_unit(unit, &record, None).unwrap();
    store.create_bucket("b", 0).unwrap();
    journal.flush().await.unwrap();
    assert!(!set[0].blob_names().contains(&left));
    let state = store.journal_state().unwrap();
    assert!(state.units.iter().all(|(n, u)| *n != unit && !u.pending));
    assert_eq!(state.outbox_len, 0);
    let after: usize = set.iter().map(|b| b.blob_names().len()).sum();
    assert_eq!(after, before + 6, "one batch more");
}
