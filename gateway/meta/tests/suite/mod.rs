//! The metadata store's rules, engine by engine: every test here runs on
//! redb (`tests/store.rs`) and on PostgreSQL (`shardgate-meta-postgres`'s
//! `tests/store.rs`), each opening its store with its crate's `open()`.
//! What only one engine has (a redb file reopened, formats of older
//! releases) is tested beside, in that engine's file.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use shardgate_core::hash::groups_for;
use shardgate_core::{
    BackendId, BlobName, Digest, Envelope, ErasureCode, FragmentRef, FragmentState, Identities,
    Manifest, Segment, StripeLayout, VersionId,
};
use shardgate_meta::{
    Condition, DefaultRetention, GarbageItem, Hold, IntentKind, LeaseKeeper, ListQuery, LockMode,
    MemberRecord, MetaError, MetaStore, ObjectLock, Outcome, PartRecord, Retention, UploadEntry,
    UploadQuery, UploadRecord, UserRecord, VersionEntry, VersionQuery, VersionSelector,
    VersionState, Versioning, Writer,
};

use super::open;

pub fn segment(len: u64) -> Segment {
    let (envelope, _) = Envelope::seal(&Identities::generate().recipients()).unwrap();
    let layout = StripeLayout::default_for(ErasureCode::new(2, 1).unwrap());
    let groups = groups_for(&(0..layout.geometry(len).stripe_count)).end as usize;
    let fragments = (0..3)
        .map(|i| FragmentRef {
            backend: BackendId::new(format!("b{i}")).unwrap(),
            blob: BlobName::random(),
            group_digests: vec![Digest([0; 32]); groups],
            state: FragmentState::Stored,
        })
        .collect();
    Segment {
        plaintext_len: len,
        envelope,
        layout,
        fragments,
        inline: None,
    }
}

pub fn manifest(etag: &str, segments: Vec<Segment>) -> Manifest {
    Manifest {
        version_id: VersionId::new(1),
        size: segments.iter().map(|s| s.plaintext_len).sum(),
        etag: etag.into(),
        content_type: None,
        user_metadata: BTreeMap::new(),
        created_unix_ms: 1,
        segments,
    }
}

/// A manifest without segments: cheap, for listing tests.
pub fn empty(etag: &str) -> Manifest {
    manifest(etag, vec![])
}

pub fn blobs(m: &Manifest) -> BTreeSet<(BackendId, BlobName)> {
    m.segments
        .iter()
        .flat_map(|s| &s.fragments)
        .map(|f| (f.backend.clone(), f.blob.clone()))
        .collect()
}

/// Every item due at `now`, over all backends.
pub fn garbage_items(store: &MetaStore, now: u64) -> Vec<GarbageItem> {
    store
        .garbage_backlog()
        .unwrap()
        .into_iter()
        .flat_map(|b| store.garbage_due(&b.backend, now, usize::MAX).unwrap())
        .collect()
}

pub fn garbage_blobs(store: &MetaStore, now: u64) -> BTreeSet<(BackendId, BlobName)> {
    garbage_items(store, now)
        .into_iter()
        .map(|g| (g.backend, g.blob))
        .collect()
}

/// The row (sequence number) of the current version of `b/key`.
pub fn seq_of(store: &MetaStore, key: &str) -> u64 {
    store
        .object_version("b", key, &VersionSelector::Latest)
        .unwrap()
        .unwrap()
        .version
        .seq
}

#[test]
fn buckets_are_created_once_and_deleted_only_when_empty() {
    let (_dir, store) = open();
    store.create_bucket("b", 5).unwrap();
    assert!(matches!(
        store.create_bucket("b", 6),
        Err(MetaError::BucketExists)
    ));
    assert_eq!(store.bucket("b").unwrap().unwrap().created_unix_ms, 5);
    store
        .put_object("b", "k", &empty("e"), None, &Condition::Always, 0)
        .unwrap();
    assert!(matches!(
        store.delete_bucket(&Writer::Admin, "b"),
        Err(MetaError::BucketNotEmpty)
    ));
    store.delete_object(&Writer::Admin, "b", "k", 0).unwrap();
    let upload = store
        .create_upload(
            "b",
            "u",
            &UploadRecord {
                initiated_unix_ms: 1,
                content_type: None,
                user_metadata: BTreeMap::new(),
            },
        )
        .unwrap();
    assert!(matches!(
        store.delete_bucket(&Writer::Admin, "b"),
        Err(MetaError::BucketNotEmpty)
    ));
    store.abort_upload("b", "u", &upload, 0).unwrap();
    store.delete_bucket(&Writer::Admin, "b").unwrap();
    assert!(store.bucket("b").unwrap().is_none());
    assert!(matches!(
        store.delete_bucket(&Writer::Admin, "b"),
        Err(MetaError::NoSuchBucket)
    ));
    assert!(matches!(
        store.object("b", "k"),
        Err(MetaError::NoSuchBucket)
    ));
}

#[test]
fn conditions_decide_in_the_commit() {
    let (_dir, store) = open();
    store.create_bucket("b", 0).unwrap();
    let put = |etag: &str, c: Condition| store.put_object("b", "k", &empty(etag), None, &c, 0);
    assert!(matches!(
        put("x", Condition::IfMatch("a".into())),
        Err(MetaError::PreconditionFailed(_))
    ));
    put("a", Condition::IfAbsent).unwrap();
    assert!(matches!(
        put("x", Condition::IfAbsent),
        Err(MetaError::PreconditionFailed(_))
    ));
    assert!(matches!(
        put("x", Condition::IfMatch("zz".into())),
        Err(MetaError::PreconditionFailed(_))
    ));
    put("c", Condition::IfMatch("a".into())).unwrap();
    assert_eq!(store.object("b", "k").unwrap().unwrap().etag, "c");
    assert!(matches!(
        store.put_object("nope", "k", &empty("a"), None, &Condition::Always, 0),
        Err(MetaError::NoSuchBucket)
    ));
}

#[test]
fn replaced_and_deleted_versions_become_garbage_after_the_grace() {
    let (_dir, store) = open();
    let store = store.with_grace_ms(1000);
    store.create_bucket("b", 0).unwrap();
    let first = manifest("1", vec![segment(10)]);
    let second = manifest("2", vec![segment(20), segment(5)]);
    store
        .put_object("b", "k", &first, None, &Condition::Always, 100)
        .unwrap();
    assert!(garbage_blobs(&store, u64::MAX).is_empty());
    let written = store
        .put_object("b", "k", &second, None, &Condition::Always, 100)
        .unwrap();
    assert_eq!(written.replaced.unwrap().etag, "1");
    // Not before the grace period is over.
    assert!(garbage_blobs(&store, 1099).is_empty());
    assert_eq!(garbage_blobs(&store, 1100), blobs(&first));
    store.delete_object(&Writer::Admin, "b", "k", 200).unwrap();
    let all: BTreeSet<_> = blobs(&first).union(&blobs(&second)).cloned().collect();
    assert_eq!(garbage_blobs(&store, 1200), all);
    // Sizes are known for fragments of committed versions.
    let backlog = store.garbage_backlog().unwrap();
    let want: u64 = [&first, &second]
        .iter()
        .flat_map(|m| &m.segments)
        .map(|s| s.geometry().fragment_len())
        .sum();
    assert_eq!(backlog.iter().map(|b| b.bytes).sum::<u64>() / 3, want);
    assert_eq!(backlog[0].oldest_added_unix_ms, Some(100));
    let done: Vec<_> = garbage_items(&store, u64::MAX)
        .into_iter()
        .map(|g| (g, Outcome::Deleted))
        .collect();
    store.settle_garbage(&done).unwrap();
    assert_eq!(store.pending_counts().unwrap(), (0, 0));
    assert!(store.garbage_backlog().unwrap().is_empty());
}

/// Intents begun at once by many writers are committed in groups: each
/// writer gets its own id, and every intent is recorded with its blobs.
#[test]
fn concurrent_intents_each_get_their_own_recorded_id() {
    let (_dir, store) = open();
    let writers: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..20)
                    .map(|_| {
                        let blob = (BackendId::new("b0").unwrap(), BlobName::random());
                        let id = store
                            .begin_intent(IntentKind::PUT, std::slice::from_ref(&blob), 0)
                            .unwrap();
                        (id, blob)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let begun: Vec<_> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let recorded: std::collections::BTreeMap<_, _> = store.intents().unwrap().into_iter().collect();
    assert_eq!(recorded.len(), 320);
    for (id, blob) in begun {
        assert_eq!(recorded[&id].blobs, vec![blob]);
    }
}

pub fn upload_record() -> UploadRecord {
    UploadRecord {
        initiated_unix_ms: 7,
        content_type: Some("text/plain".into()),
        user_metadata: BTreeMap::from([("a".into(), "b".into())]),
    }
}

pub fn part(etag: &str, size: u64) -> PartRecord {
    PartRecord {
        etag: etag.into(),
        size,
        modified_unix_ms: 0,
        segment: segment(size),
        checksum: None,
    }
}

#[test]
fn multipart_complete_picks_parts_and_drops_the_rest() {
    let (_dir, store) = open();
    store.create_bucket("b", 0).unwrap();
    let upload = store.create_upload("b", "k", &upload_record()).unwrap();
    assert_eq!(store.upload("b", "k", &upload).unwrap(), upload_record());
    let parts = [
        part("p1", 100),
        part("p2", 100),
        part("p3", 3),
        part("p2b", 100),
    ];
    for (n, p) in [
        (1, &parts[0]),
        (2, &parts[1]),
        (3, &parts[2]),
        (2, &parts[3]),
    ] {
        let intent = store.begin_intent(IntentKind::PART, &[], 0).unwrap();
        store.put_part("b", "k", &upload, n, p, intent, 0).unwrap();
    }
    // Part 2 uploaded again: the first one is garbage already.
    let replaced: BTreeSet<_> = parts[1]
        .segment
        .fragments
        .iter()
        .map(|f| (f.backend.clone(), f.blob.clone()))
        .collect();
    assert_eq!(garbage_blobs(&store, 0), replaced);
    let (listed, more) = store.list_parts(&upload, 0, 2).unwrap();
    assert_eq!(listed.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2]);
    assert!(more);
    let (listed, more) = store.list_parts(&upload, 2, 10).unwrap();
    assert_eq!(listed.iter().map(|p| p.0).collect::<Vec<_>>(), [3]);
    assert!(!more);

    let try_complete = |chosen: &[(u32, &str)], min: u64| {
        let chosen: Vec<_> = chosen.iter().map(|(n, e)| (*n, e.to_string())).collect();
        store.complete_upload(
            "b",
            "k",
            &upload,
            &chosen,
            min,
            &Condition::Always,
            0,
            |ps| {
                if ps.iter().any(|(n, _)| *n == 3) && min == 1 {
                    return Err("refused by the caller".into());
                }
                let m = manifest("m-2", ps.into_iter().map(|p| p.1.segment).collect());
                Ok((m, Default::default()))
            },
        )
    };
    use shardgate_meta::CompleteError as E;
    assert!(matches!(
        try_complete(&[(2, "p2b"), (1, "p1")], 0),
        Err(E::PartOrder)
    ));
    assert!(matches!(
        try_complete(&[(1, "p1"), (2, "p2")], 0),
        Err(E::InvalidPart(2))
    ));
    assert!(matches!(
        try_complete(&[(1, "p1"), (4, "x")], 0),
        Err(E::InvalidPart(4))
    ));
    assert!(matches!(
        try_complete(&[(3, "p3"), (4, "x")], 50),
        Err(E::TooSmall(3))
    ));
    assert!(matches!(try_complete(&[], 0), Err(E::NoParts)));
    // The caller's own check of the parts taken refuses: nothing changes.
    assert!(matches!(
        try_complete(&[(1, "p1"), (3, "p3")], 1),
        Err(E::Refused(_))
    ));
    // Failed attempts changed nothing.
    assert_eq!(store.list_parts(&upload, 0, 10).unwrap().0.len(), 3);

    let (m, _) = try_complete(&[(1, "\"p1\""), (3, "p3")], 50).unwrap();
    assert_eq!(m.size, 103);
    assert_eq!(store.object("b", "k").unwrap().unwrap(), m);
    assert!(matches!(
        store.upload("b", "k", &upload),
        Err(MetaError::NoSuchUpload)
    ));
    // The unused part 2 joined the garbage.
    let unused: BTreeSet<_> = parts[3]
        .segment
        .fragments
        .iter()
        .map(|f| (f.backend.clone(), f.blob.clone()))
        .collect();
    assert!(garbage_blobs(&store, 0).is_superset(&unused));
    // A part for a finished upload is refused and its blobs are garbage.
    let late = vec![(BackendId::new("b0").unwrap(), BlobName::random())];
    let intent = store.begin_intent(IntentKind::PART, &late, 0).unwrap();
    assert!(matches!(
        store.put_part("b", "k", &upload, 9, &part("x", 1), intent, 0),
        Err(MetaError::NoSuchUpload)
    ));
    assert!(garbage_blobs(&store, 0).contains(&late[0]));

    // A retry of the same completion (its answer lost) gets the same
    // answer and changes nothing; other parts find no upload.
    let before = store.object("b", "k").unwrap();
    match try_complete(&[(1, "p1"), (3, "\"p3\"")], 50) {
        Err(E::Done(done)) => {
            assert_eq!(done.etag, m.etag);
            assert_eq!(done.parts, [(1, "p1".to_string()), (3, "p3".to_string())]);
            assert_eq!(done.user_metadata, m.user_metadata);
        }
        other => panic!("a retried completion: {other:?}"),
    }
    assert!(matches!(
        try_complete(&[(1, "p1")], 50),
        Err(E::Meta(MetaError::NoSuchUpload))
    ));
    assert_eq!(store.object("b", "k").unwrap(), before);
    // A day on, the completion is forgotten.
    assert_eq!(store.forget_completed_uploads(0).unwrap(), 0);
    assert_eq!(store.forget_completed_uploads(u64::MAX).unwrap(), 1);
    assert!(matches!(
        try_complete(&[(1, "p1"), (3, "p3")], 50),
        Err(E::Meta(MetaError::NoSuchUpload))
    ));
}

#[test]
fn abort_and_expiry_remove_uploads_with_their_parts() {
    let (_dir, store) = open();
    store.create_bucket("b", 0).unwrap();
    let mut record = upload_record();
    let old = store.create_upload("b", "old", &record).unwrap();
    record.initiated_unix_ms = 1_000;
    let new = store.create_upload("b", "new", &record).unwrap();
    let p = part("e", 10);
    let intent = store.begin_intent(IntentKind::PART, &[], 0).unwrap();
    store.put_part("b", "old", &old, 1, &p, intent, 0).unwrap();
    let expired = store.uploads_older_than(500).unwrap();
    assert_eq!(expired, vec![("b".into(), "old".into(), old.clone())]);
    store.abort_upload("b", "old", &old, 0).unwrap();
    assert_eq!(garbage_blobs(&store, 0).len(), 3);
    assert!(store.list_parts(&old, 0, 10).unwrap().0.is_empty());
    assert!(matches!(
        store.abort_upload("b", "old", &old, 0),
        Err(MetaError::NoSuchUpload)
    ));
    assert_eq!(
        store.upload("b", "new", &new).unwrap().initiated_unix_ms,
        1_000
    );
}

#[test]
fn uploads_list_by_key_then_age_with_prefixes_and_markers() {
    let (_dir, store) = open();
    store.create_bucket("b", 0).unwrap();
    let mut ids = Vec::new();
    for (i, key) in ["a/1", "a/2", "b", "b", "c"].iter().enumerate() {
        let mut r = upload_record();
        r.initiated_unix_ms = i as u64;
        ids.push(store.create_upload("b", key, &r).unwrap());
    }
    let q = UploadQuery {
        delimiter: Some("/"),
        max: 2,
        ..Default::default()
    };
    let page = store.list_uploads("b", &q).unwrap();
    assert!(page.truncated);
    assert_eq!(page.entries[0], UploadEntry::Prefix("a/".into()));
    let UploadEntry::Upload { key, upload, .. } = &page.entries[1] else {
        panic!("{:?}", page.entries[1]);
    };
    assert_eq!((key.as_str(), upload), ("b", &ids[2]));
    let q = UploadQuery {
        key_after: Some("b"),
        upload_after: Some(&ids[2]),
        max: 10,
        ..Default::default()
    };
    let page = store.list_uploads("b", &q).unwrap();
    let keys: Vec<_> = page
        .entries
        .iter()
        .map(|e| match e {
            UploadEntry::Upload { upload, .. } => upload.clone(),
            UploadEntry::Prefix(p) => p.clone(),
        })
        .collect();
    assert_eq!(keys, [ids[3].clone(), ids[4].clone()]);
    assert!(!page.truncated);
}

/// What S3 returns, computed naively from the whole key set.
pub fn model(keys: &BTreeSet<String>, prefix: &str, delimiter: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for k in keys.iter().filter(|k| k.starts_with(prefix)) {
        let entry = match delimiter {
            Some(d) => match k[prefix.len()..].find(d) {
                Some(at) => k[..prefix.len() + at + d.len()].to_string(),
                None => k.clone(),
            },
            None => k.clone(),
        };
        if out.last() != Some(&entry) {
            out.push(entry);
        }
    }
    out
}

/// Pages through a listing, each page continuing after the last marker.
pub fn page_through(
    store: &MetaStore,
    prefix: &str,
    delimiter: Option<&str>,
    max: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..10_000 {
        let page = store
            .list_objects(
                "b",
                &ListQuery {
                    prefix,
                    delimiter,
                    after: after.as_deref(),
                    max,
                },
            )
            .unwrap();
        assert!(page.entries.len() <= max);
        out.extend(page.entries.iter().map(|e| e.marker().to_string()));
        if !page.truncated {
            return out;
        }
        after = page.entries.last().map(|e| e.marker().to_string());
    }
    panic!("listing did not end");
}

pub fn blob_on(backend: &str) -> (BackendId, BlobName) {
    (BackendId::new(backend).unwrap(), BlobName::random())
}

#[test]
fn a_failing_backend_holds_back_only_its_own_items() {
    let (_dir, store) = open();
    // 300 blobs on each of two backends, abandoned writes: due at once.
    for _ in 0..300 {
        let blobs = [blob_on("bad"), blob_on("good")];
        let intent = store.begin_intent(IntentKind::PUT, &blobs, 10).unwrap();
        store.abandon_intent(intent, 10).unwrap();
    }
    let bad = BackendId::new("bad").unwrap();
    let good = BackendId::new("good").unwrap();
    // Every delete on "bad" fails: its items are pushed back to t = 5000.
    for _ in 0..3 {
        let batch = store.garbage_due(&bad, 1000, 256).unwrap();
        let failed: Vec<_> = batch
            .into_iter()
            .map(|i| {
                (
                    i,
                    Outcome::Failed {
                        retry_unix_ms: 5000,
                    },
                )
            })
            .collect();
        store.settle_garbage(&failed).unwrap();
    }
    // All 300 "good" items are due and get collected, batch after batch.
    let mut collected = 0;
    for _ in 0..3 {
        let batch = store.garbage_due(&good, 1000, 256).unwrap();
        collected += batch.len();
        let done: Vec<_> = batch.into_iter().map(|i| (i, Outcome::Deleted)).collect();
        store.settle_garbage(&done).unwrap();
    }
    assert_eq!(collected, 300);
    let backlog = store.garbage_backlog().unwrap();
    assert_eq!(backlog.len(), 1);
    assert_eq!(
        (backlog[0].backend.as_str(), backlog[0].items),
        ("bad", 300)
    );
    assert_eq!(backlog[0].oldest_added_unix_ms, Some(10));
    // Pushed back: none due before 5000, each with the attempts counted.
    assert!(store.garbage_due(&bad, 4999, 10).unwrap().is_empty());
    let again = store.garbage_due(&bad, 5000, 1000).unwrap();
    assert_eq!(again.len(), 300);
    assert!(again.iter().all(|i| i.attempts >= 1));
    // Postponed items keep their attempts.
    let postponed: Vec<_> = again
        .iter()
        .take(1)
        .map(|i| {
            (
                i.clone(),
                Outcome::Postponed {
                    retry_unix_ms: 6000,
                },
            )
        })
        .collect();
    store.settle_garbage(&postponed).unwrap();
    let later = store.garbage_due(&bad, 6000, 1000).unwrap();
    assert_eq!(later.len(), 300);
    // An item settled twice (a stale batch) is left alone the second time.
    store.settle_garbage(&postponed).unwrap();
    assert_eq!(store.garbage_due(&bad, u64::MAX, 1000).unwrap().len(), 300);
    // An operator forgets the backend: nothing left, totals gone.
    assert_eq!(store.forget_garbage(&bad).unwrap(), 300);
    assert!(store.garbage_backlog().unwrap().is_empty());
    assert_eq!(store.pending_counts().unwrap(), (0, 0));
}

#[test]
fn an_abandoned_intent_cannot_commit_and_a_committed_one_cannot_be_abandoned() {
    let (_dir, store) = open();
    store.create_bucket("b", 0).unwrap();
    let m = manifest("x", vec![segment(1)]);
    let blobs: Vec<_> = blobs(&m).into_iter().collect();
    // Abandoned first (the request was dropped): the commit fails.
    let intent = store.begin_intent(IntentKind::PUT, &blobs, 0).unwrap();
    store.abandon_intent(intent, 0).unwrap();
    let err = store
        .put_object("b", "k", &m, Some(intent), &Condition::Always, 0)
        .unwrap_err();
    assert!(matches!(err, MetaError::IntentGone), "{err}");
    assert!(store.object("b", "k").unwrap().is_none());
    assert_eq!(garbage_blobs(&store, u64::MAX).len(), 3);
    // Committed first: abandoning it later adds no garbage.
    let (_dir, store) = open();
    store.create_bucket("b", 0).unwrap();
    let intent = store.begin_intent(IntentKind::PUT, &blobs, 0).unwrap();
    store
        .put_object("b", "k", &m, Some(intent), &Condition::Always, 0)
        .unwrap();
    store.abandon_intent(intent, 0).unwrap();
    assert!(garbage_blobs(&store, u64::MAX).is_empty());
    assert_eq!(store.object("b", "k").unwrap().unwrap(), m);
    // The same for a part.
    let upload = store.create_upload("b", "k", &upload_record()).unwrap();
    let intent = store.begin_intent(IntentKind::PART, &blobs, 0).unwrap();
    store.abandon_intent(intent, 0).unwrap();
    let p = part("p", 1);
    let err = store
        .put_part("b", "k", &upload, 1, &p, intent, 0)
        .unwrap_err();
    assert!(matches!(err, MetaError::IntentGone), "{err}");
    assert!(store.list_parts(&upload, 0, 10).unwrap().0.is_empty());
}

#[test]
fn the_sweep_takes_old_intents_no_request_holds() {
    let (_dir, store) = open();
    let live = store
        .begin_intent(IntentKind::PUT, &[blob_on("a")], 1_000)
        .unwrap();
    let orphan = store
        .begin_intent(IntentKind::PART, &[blob_on("a")], 1_000)
        .unwrap();
    let young = store
        .begin_intent(IntentKind::PUT, &[blob_on("a")], 100_000)
        .unwrap();
    let records = store.intents().unwrap();
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|(_, r)| r.owner == store.owner()));
    assert_eq!(records[1].1.kind, IntentKind::PART);
    assert_eq!(records[2].1.created_unix_ms, 100_000);
    // At t = 120 s with a 60 s limit: the orphan only.
    let swept = store
        .sweep_intents(120_000, 60_000, |id| id == live)
        .unwrap();
    assert_eq!(swept, vec![orphan]);
    let left: Vec<_> = store
        .intents()
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(left, vec![live, young]);
    assert_eq!(garbage_blobs(&store, u64::MAX).len(), 1);
}

#[test]
fn generations_count_every_change_and_make_a_compare_and_swap() {
    let (_dir, store) = open();
    store.create_bucket("b", 0).unwrap();
    let a = manifest("same", vec![segment(1)]);
    store
        .put_object("b", "k", &a, None, &Condition::Always, 0)
        .unwrap();
    let (first, _) = store.object_row("b", "k").unwrap().unwrap();
    // A repair read `first`; an overwrite with the same bytes (same ETag,
    // which If-Match could not tell apart) changes the generation...
    let b = manifest("same", vec![segment(1)]);
    let written = store
        .put_object("b", "k", &b, None, &Condition::Always, 0)
        .unwrap();
    assert_eq!(written.replaced.unwrap().generation, first.generation);
    let (second, _) = store.object_row("b", "k").unwrap().unwrap();
    assert!(second.generation > first.generation);
    // ...so a repair's swap of the first version is refused (it is gone),
    // and one of the current version at its generation goes, once.
    let seq = seq_of(&store, "k");
    let mut repaired = b.clone();
    repaired.segments[0].fragments[0].blob = BlobName::random();
    let stale = store.replace_version("b", "k", first.generation, first.generation, &a, None, 0);
    assert!(
        matches!(stale, Err(MetaError::PreconditionFailed(_))),
        "{stale:?}"
    );
    store
        .replace_version("b", "k", seq, second.generation, &repaired, None, 0)
        .unwrap();
    let again = store.replace_version("b", "k", seq, second.generation, &repaired, None, 0);
    assert!(matches!(again, Err(MetaError::PreconditionFailed(_))));
    let (third, m) = store.object_row("b", "k").unwrap().unwrap();
    assert!(third.generation > second.generation);
    assert_eq!(m, repaired);
    // Another version's manifest cannot be swapped in.
    assert!(matches!(
        store.replace_version("b", "k", seq, third.generation, &a, None, 0),
        Err(MetaError::PreconditionFailed(_))
    ));
    // A delete and a new write of the key: the generation still grows, so
    // a swap read before the delete cannot match the new object.
    let (_, deleted) = store
        .delete_object(&Writer::Admin, "b", "k", 0)
        .unwrap()
        .removed
        .unwrap();
    assert_eq!(deleted.generation, third.generation);
    let c = manifest("new", vec![segment(1)]);
    store
        .put_object("b", "k", &c, None, &Condition::Always, 0)
        .unwrap();
    let (fourth, _) = store.object_row("b", "k").unwrap().unwrap();
    assert!(fourth.generation > third.generation);
    // A swap that keeps some fragments leaves them out of the garbage.
    let mut swapped = c.clone();
    swapped.segments[0].fragments[0].blob = BlobName::random();
    let kept: BTreeSet<_> = blobs(&c).intersection(&blobs(&swapped)).cloned().collect();
    assert_eq!(kept.len(), 2);
    store
        .replace_version(
            "b",
            "k",
            seq_of(&store, "k"),
            fourth.generation,
            &swapped,
            None,
            0,
        )
        .unwrap();
    let garbage = garbage_blobs(&store, u64::MAX);
    assert!(garbage.is_disjoint(&kept), "kept fragments became garbage");
    let replaced: BTreeSet<_> = blobs(&c).difference(&kept).cloned().collect();
    assert!(
        garbage.is_superset(&replaced),
        "the swapped-out fragment is garbage"
    );
}

#[test]
fn intent_ids_are_never_reused() {
    let (_dir, store) = open();
    let first = store.begin_intent(IntentKind::PUT, &[], 0).unwrap();
    store.abandon_intent(first, 0).unwrap();
    // The table is empty again: the next id is still new, so a late
    // abandon of `first` cannot end the next write's intent.
    let second = store
        .begin_intent(IntentKind::PUT, &[blob_on("a")], 0)
        .unwrap();
    assert_ne!(first, second);
    store.abandon_intent(first, 0).unwrap();
    assert_eq!(store.intents().unwrap().len(), 1);
}

#[test]
fn damaged_objects_queue_for_repair_least_redundant_first() {
    use shardgate_meta::repair_reason;
    let (_dir, store) = open();
    store.create_bucket("b", 0).unwrap();
    // 2 + 1 segments: margin 1 when whole.
    let whole = manifest("w", vec![segment(1)]);
    store
        .put_object("b", "whole", &whole, None, &Condition::Always, 0)
        .unwrap();
    assert!(
        store.repair_queue(10).unwrap().is_empty(),
        "nothing to repair"
    );
    // A write that reached its quorum with one fragment Missing: margin 0.
    let mut short = manifest("s", vec![segment(1)]);
    short.segments[0].fragments[2].state = FragmentState::Missing;
    store
        .put_object("b", "short", &short, None, &Condition::Always, 5)
        .unwrap();
    // A read found a bad fragment in another object: margin 0 too, and
    // the two reasons are kept apart.
    store
        .put_object("b", "read", &whole, None, &Condition::Always, 0)
        .unwrap();
    let v = store.object("b", "read").unwrap().unwrap().version_id;
    let read_seq = seq_of(&store, "read");
    let blob1 = whole.segments[0].fragments[1].blob.clone();
    assert_eq!(
        store
            .report_damage(
                "b",
                "read",
                read_seq,
                v,
                &[(0, 1, blob1.clone())],
                repair_reason::READ,
                9
            )
            .unwrap(),
        [(0, 1)]
    );
    // A blob the manifest does not use (replaced meanwhile) is no report.
    assert!(
        store
            .report_damage(
                "b",
                "read",
                read_seq,
                v,
                &[(0, 2, BlobName::random())],
                repair_reason::READ,
                9
            )
            .unwrap()
            .is_empty()
    );
    let q = store.repair_queue(10).unwrap();
    let got: Vec<_> = q
        .iter()
        .map(|e| (e.key.as_str(), e.margin, e.reasons))
        .collect();
    assert_eq!(
        got,
        [
            ("read", 0, repair_reason::READ),
            ("short", 0, repair_reason::WRITE)
        ]
    );
    assert_eq!(q[0].suspects, [(0, 1)]);
    assert_eq!(q[1].first_seen_unix_ms, 5);
    assert_eq!(store.repair_queue_counts().unwrap(), (2, vec![2]));
    // A report about a version that is gone (overwritten in a bucket that
    // does not version) is ignored.
    let mut newer = whole.clone();
    newer.version_id = VersionId::new(2);
    store
        .put_object("b", "read", &newer, None, &Condition::Always, 0)
        .unwrap();
    assert!(
        store
            .report_damage(
                "b",
                "read",
                read_seq,
                v,
                &[(0, 1, blob1.clone())],
                repair_reason::SCRUB,
                9
            )
            .unwrap()
            .is_empty()
    );
    // Nor one naming the row with another manifest's version.
    assert!(
        store
            .report_damage(
                "b",
                "read",
                seq_of(&store, "read"),
                v,
                &[(0, 1, blob1)],
                repair_reason::SCRUB,
                9
            )
            .unwrap()
            .is_empty()
    );
    // The overwrite and a delete dropped their entries.
    store
        .delete_object(&Writer::Admin, "b", "short", 0)
        .unwrap();
    assert!(store.repair_queue(10).unwrap().is_empty());
    assert_eq!(store.repair_queue_counts().unwrap(), (0, vec![]));
}

#[test]
fn a_repair_swap_keeps_the_suspects_it_did_not_replace() {
    use shardgate_meta::repair_reason;
    let (_dir, store) = open();
    store.create_bucket("b", 0).unwrap();
    let m = manifest("x", vec![segment(1)]);
    store
        .put_object("b", "k", &m, None, &Condition::Always, 0)
        .unwrap();
    let v = m.version_id;
    let seq = seq_of(&store, "k");
    let blob = |i: usize| m.segments[0].fragments[i].blob.clone();
    store
        .report_damage(
            "b",
            "k",
            seq,
            v,
            &[(0, 0, blob(0)), (0, 1, blob(1))],
            repair_reason::SCRUB,
            1,
        )
        .unwrap();
    // A repair replaces fragment 0 only (same version): fragment 1 is
    // still a suspect afterwards.
    let (summary, _) = store.object_row("b", "k").unwrap().unwrap();
    let mut swapped = m.clone();
    swapped.segments[0].fragments[0].blob = BlobName::random();
    store
        .replace_version("b", "k", seq, summary.generation, &swapped, None, 2)
        .unwrap();
    let q = store.repair_queue(10).unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].suspects, [(0, 1)]);
    assert_eq!(q[0].reasons, repair_reason::SCRUB);
    // Repair checked fragment 1 and found it healthy: the entry goes.
    store.clear_repair("b", "k", seq, v, &[(0, 1)]).unwrap();
    assert!(store.repair_queue(10).unwrap().is_empty());
    // A report repeated (every GET of a damaged object) changes nothing.
    let again = [(0, 2, swapped.segments[0].fragments[2].blob.clone())];
    for _ in 0..3 {
        store
            .report_damage("b", "k", seq, v, &again, repair_reason::READ, 3)
            .unwrap();
    }
    let q = store.repair_queue(10).unwrap();
    assert_eq!(
        (q.len(), q[0].suspects.as_slice()),
        (1, [(0, 2)].as_slice())
    );
}

#[test]
fn tags_belong_to_a_version_survive_its_repair_and_go_with_it() {
    let (_dir, store) = open();
    store.create_bucket("b", 0).unwrap();
    let tags: BTreeMap<String, String> = [("team", "a"), ("tier", "cold")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let first = manifest("one", vec![segment(1)]);
    let state = VersionState {
        tags: tags.clone(),
        ..VersionState::default()
    };
    store
        .put_object_with("b", "k", &first, &state, None, &Condition::Always, 0)
        .unwrap();
    let (row, _) = store.object_row("b", "k").unwrap().unwrap();
    assert_eq!(row.tags().unwrap(), tags);

    // Repair rewrites the same version with other fragments: the tags stay.
    let mut repaired = first.clone();
    repaired.segments[0].fragments[0].blob = BlobName::random();
    let seq = seq_of(&store, "k");
    store
        .replace_version("b", "k", seq, row.generation, &repaired, None, 0)
        .unwrap();
    let (row, m) = store.object_row("b", "k").unwrap().unwrap();
    assert_eq!(m, repaired);
    assert_eq!(row.tags().unwrap(), tags);

    // Retagging changes the row (a new generation), not the manifest.
    let retag: BTreeMap<String, String> = [("team".to_string(), "b".to_string())].into();
    let id = store
        .object_version("b", "k", &VersionSelector::Latest)
        .unwrap()
        .unwrap()
        .version;
    let by_id = VersionSelector::parse(Some(&id.id())).unwrap();
    let tagged = store
        .set_object_tags(&Writer::Admin, "b", "k", &by_id, &retag)
        .unwrap();
    assert_eq!(tagged, id);
    let (after, m) = store.object_row("b", "k").unwrap().unwrap();
    assert_eq!(after.tags().unwrap(), retag);
    assert!(after.generation > row.generation);
    assert_eq!(m, repaired);
    assert!(matches!(
        store.set_object_tags(
            &Writer::Admin,
            "b",
            "k",
            &VersionSelector::parse(Some(&"0".repeat(32))).unwrap(),
            &retag
        ),
        Err(MetaError::NoSuchVersion)
    ));
    assert!(matches!(
        store.set_object_tags(
            &Writer::Admin,
            "b",
            "nope",
            &VersionSelector::Latest,
            &retag
        ),
        Err(MetaError::NoSuchKey)
    ));
    assert!(matches!(
        store.set_object_tags(
            &Writer::Admin,
            "nope",
            "k",
            &VersionSelector::Latest,
            &retag
        ),
        Err(MetaError::NoSuchBucket)
    ));

    // Deleting the tags; a new version starts without the old one's.
    store
        .set_object_tags(
            &Writer::Admin,
            "b",
            "k",
            &VersionSelector::Null,
            &BTreeMap::new(),
        )
        .unwrap();
    let (row, _) = store.object_row("b", "k").unwrap().unwrap();
    assert!(row.tags().unwrap().is_empty());
    assert!(row.extensions.is_empty());
    store
        .set_object_tags(&Writer::Admin, "b", "k", &VersionSelector::Latest, &tags)
        .unwrap();
    let second = manifest("two", vec![segment(1)]);
    store
        .put_object("b", "k", &second, None, &Condition::Always, 0)
        .unwrap();
    let (row, _) = store.object_row("b", "k").unwrap().unwrap();
    assert!(row.tags().unwrap().is_empty());
}

/// The (key, id, delete marker, latest) of every version of bucket `b`.
pub fn versions(store: &MetaStore) -> Vec<(String, String, bool, bool)> {
    let page = store
        .list_versions(
            "b",
            &VersionQuery {
                max: 1000,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(!page.truncated);
    page.entries
        .into_iter()
        .map(|e| match e {
            VersionEntry::Version {
                key,
                version,
                summary,
                latest,
            } => (key, version.id(), summary.delete_marker, latest),
            VersionEntry::Prefix(p) => panic!("prefix {p} without a delimiter"),
        })
        .collect()
}

pub fn listed_keys(store: &MetaStore) -> Vec<String> {
    let page = store
        .list_objects(
            "b",
            &ListQuery {
                max: 1000,
                ..Default::default()
            },
        )
        .unwrap();
    page.entries
        .into_iter()
        .map(|e| e.marker().to_string())
        .collect()
}

#[test]
fn a_versioning_bucket_keeps_every_version_until_that_version_is_deleted() {
    let (_dir, store) = open();
    store.create_bucket("b", 0).unwrap();
    store
        .set_versioning(&Writer::Admin, "b", Versioning::Enabled)
        .unwrap();
    let one = manifest("one", vec![segment(1)]);
    let two = manifest("two", vec![segment(1)]);
    let w1 = store
        .put_object("b", "k", &one, None, &Condition::Always, 0)
        .unwrap();
    let w2 = store
        .put_object("b", "k", &two, None, &Condition::Always, 0)
        .unwrap();
    assert!(w1.replaced.is_none() && w2.replaced.is_none());
    assert!(!w1.version.null && w1.version.seq < w2.version.seq);
    // An overwrite makes no garbage: the old version is still there.
    assert!(garbage_blobs(&store, u64::MAX).is_empty());
    assert_eq!(store.object("b", "k").unwrap().unwrap(), two);
    let by_id =
        |w: &shardgate_meta::Written| VersionSelector::parse(Some(&w.version.id())).unwrap();
    let old = store
        .object_version("b", "k", &by_id(&w1))
        .unwrap()
        .unwrap();
    assert_eq!(old.manifest, Some(one.clone()));

    // A delete without a version id adds a marker: the key is gone from
    // listings and GET, every version is kept.
    assert_eq!(store.object_count().unwrap(), 2);
    let deleted = store.delete_object(&Writer::Admin, "b", "k", 5).unwrap();
    let marker = deleted.marker.unwrap();
    assert_eq!(
        store.object_count().unwrap(),
        2,
        "a marker is no version stored"
    );
    assert!(deleted.removed.is_none() && !marker.null);
    assert_eq!(store.object("b", "k").unwrap(), None);
    assert!(listed_keys(&store).is_empty());
    assert_eq!(
        versions(&store),
        [
            ("k".into(), marker.id(), true, true),
            ("k".into(), w2.version.id(), false, false),
            ("k".into(), w1.version.id(), false, false),
        ]
    );
    assert!(garbage_blobs(&store, u64::MAX).is_empty());
    // A delete marker asked for by id has no manifest.
    let m = VersionSelector::parse(Some(&marker.id())).unwrap();
    assert!(matches!(
        store.set_object_tags(&Writer::Admin, "b", "k", &m, &BTreeMap::new()),
        Err(MetaError::DeleteMarker)
    ));

    // Deleting the marker brings the newest version back.
    let (gone, summary) = store
        .delete_version(&Writer::Admin, "b", "k", &m, false, 6)
        .unwrap()
        .unwrap();
    assert!(gone == marker && summary.delete_marker);
    assert_eq!(store.object("b", "k").unwrap().unwrap(), two);
    assert_eq!(listed_keys(&store), ["k"]);
    assert_eq!(store.object_count().unwrap(), 2);

    // Deleting a version by id removes it for good: its fragments, and
    // only its, become garbage; the one before becomes current.
    store
        .delete_version(&Writer::Admin, "b", "k", &by_id(&w2), false, 7)
        .unwrap()
        .unwrap();
    assert_eq!(garbage_blobs(&store, u64::MAX), blobs(&two));
    assert_eq!(store.object("b", "k").unwrap().unwrap(), one);
    assert_eq!(
        versions(&store),
        [("k".into(), w1.version.id(), false, true)]
    );
    // A version deleted already: nothing, not an error.
    assert_eq!(
        store
            .delete_version(&Writer::Admin, "b", "k", &by_id(&w2), false, 8)
            .unwrap(),
        None
    );
    // The bucket is not empty while a version or a marker remains.
    store.delete_object(&Writer::Admin, "b", "k", 9).unwrap();
    store
        .delete_version(&Writer::Admin, "b", "k", &by_id(&w1), false, 9)
        .unwrap()
        .unwrap();
    assert!(matches!(
        store.delete_bucket(&Writer::Admin, "b"),
        Err(MetaError::BucketNotEmpty)
    ));
    let markers = versions(&store);
    assert_eq!(markers.len(), 1);
    let m = VersionSelector::parse(Some(&markers[0].1)).unwrap();
    store
        .delete_version(&Writer::Admin, "b", "k", &m, false, 10)
        .unwrap()
        .unwrap();
    store.delete_bucket(&Writer::Admin, "b").unwrap();
}

#[test]
fn a_suspended_bucket_replaces_the_null_version_only() {
    let (_dir, store) = open();
    store.create_bucket("b", 0).unwrap();
    // Written before versioning: the null version.
    let before = manifest("before", vec![segment(1)]);
    let w0 = store
        .put_object("b", "k", &before, None, &Condition::Always, 0)
        .unwrap();
    assert!(w0.version.null && w0.versioning == Versioning::Unversioned);
    store
        .set_versioning(&Writer::Admin, "b", Versioning::Enabled)
        .unwrap();
    let kept = manifest("kept", vec![segment(1)]);
    let w1 = store
        .put_object("b", "k", &kept, None, &Condition::Always, 0)
        .unwrap();
    assert!(w1.replaced.is_none(), "versioning keeps the null version");
    store
        .set_versioning(&Writer::Admin, "b", Versioning::Suspended)
        .unwrap();
    let n1 = manifest("n1", vec![segment(1)]);
    let w2 = store
        .put_object("b", "k", &n1, None, &Condition::Always, 0)
        .unwrap();
    assert!(w2.version.null && w2.versioning == Versioning::Suspended);
    // The null version (written before versioning) went; w1 stays.
    assert_eq!(w2.replaced.unwrap().etag, "before");
    assert_eq!(garbage_blobs(&store, u64::MAX), blobs(&before));
    assert_eq!(
        versions(&store),
        [
            ("k".into(), "null".into(), false, true),
            ("k".into(), w1.version.id(), false, false),
        ]
    );
    // A delete in a suspended bucket: a null marker replaces the null
    // version.
    let deleted = store.delete_object(&Writer::Admin, "b", "k", 3).unwrap();
    assert!(deleted.marker.unwrap().null);
    assert_eq!(deleted.removed.unwrap().1.etag, "n1");
    assert_eq!(
        versions(&store),
        [
            ("k".into(), "null".into(), true, true),
            ("k".into(), w1.version.id(), false, false),
        ]
    );
    // Versioning cannot be turned off once on.
    assert!(
        store
            .set_versioning(&Writer::Admin, "b", Versioning::Unversioned)
            .is_err()
    );
}

#[test]
fn conditions_see_the_current_version_and_a_marker_is_no_object() {
    let (_dir, store) = open();
    store.create_bucket("b", 0).unwrap();
    store
        .set_versioning(&Writer::Admin, "b", Versioning::Enabled)
        .unwrap();
    let a = manifest("a", vec![]);
    store
        .put_object("b", "k", &a, None, &Condition::Always, 0)
        .unwrap();
    assert!(matches!(
        store.put_object("b", "k", &a, None, &Condition::IfAbsent, 0),
        Err(MetaError::PreconditionFailed(_))
    ));
    store.delete_object(&Writer::Admin, "b", "k", 1).unwrap();
    // Behind a delete marker the key is absent.
    store
        .put_object("b", "k", &a, None, &Condition::IfAbsent, 0)
        .unwrap();
    store.delete_object(&Writer::Admin, "b", "k", 2).unwrap();
    assert!(matches!(
        store.put_object("b", "k", &a, None, &Condition::IfMatch("a".into()), 0),
        Err(MetaError::PreconditionFailed(_))
    ));
}

#[test]
fn a_locked_version_cannot_go_and_its_lock_only_grows() {
    let (_dir, store) = open();
    let day = 86_400_000;
    let now = 1_000 * day;
    // Object Lock needs versioning enabled.
    store.create_bucket("plain", 0).unwrap();
    assert!(matches!(
        store.set_object_lock(&Writer::Admin, "plain", &ObjectLock::default()),
        Err(MetaError::InvalidBucketState(_))
    ));
    let held = VersionState {
        legal_hold: true,
        ..VersionState::default()
    };
    let m = manifest("m", vec![segment(1)]);
    assert!(matches!(
        store.put_object_with("plain", "k", &m, &held, None, &Condition::Always, now),
        Err(MetaError::NoObjectLock)
    ));

    store.create_bucket_with("b", true, None, 0).unwrap();
    assert_eq!(
        store.bucket("b").unwrap().unwrap().versioning,
        Versioning::Enabled
    );
    assert!(matches!(
        store.set_versioning(&Writer::Admin, "b", Versioning::Suspended),
        Err(MetaError::InvalidBucketState(_))
    ));
    let compliance = VersionState {
        retention: Some(Retention {
            mode: LockMode::Compliance,
            until_unix_ms: now + day,
        }),
        ..VersionState::default()
    };
    let w = store
        .put_object_with("b", "k", &m, &compliance, None, &Condition::Always, now)
        .unwrap();
    let id = VersionSelector::parse(Some(&w.version.id())).unwrap();
    // No request removes it, bypass or not, alone or in a batch.
    for bypass in [false, true] {
        assert!(matches!(
            store.delete_version(&Writer::Admin, "b", "k", &id, bypass, now),
            Err(MetaError::Locked(_))
        ));
    }
    let batch = store
        .delete_objects(
            &Writer::Admin,
            "b",
            &[("k".into(), id), ("other".into(), VersionSelector::Latest)],
            true,
            now,
        )
        .unwrap();
    assert!(matches!(batch[0], Err(MetaError::Locked(_))));
    assert!(batch[1].as_ref().is_ok_and(|d| d.marker.is_some()));
    // Shorter, or governance instead: refused; longer: fine.
    let shorter = Retention {
        mode: LockMode::Compliance,
        until_unix_ms: now + day / 2,
    };
    let governance = Retention {
        mode: LockMode::Governance,
        until_unix_ms: now + 2 * day,
    };
    for weaker in [None, Some(shorter), Some(governance)] {
        assert!(matches!(
            store.set_retention(&Writer::Admin, "b", "k", &id, weaker, true, now),
            Err(MetaError::Locked(_))
        ));
    }
    let longer = Retention {
        mode: LockMode::Compliance,
        until_unix_ms: now + 3 * day,
    };
    store
        .set_retention(&Writer::Admin, "b", "k", &id, Some(longer), false, now)
        .unwrap();
    // A repair of the version keeps its lock.
    let (summary, _) = store.object_row("b", "k").unwrap().unwrap();
    let mut repaired = m.clone();
    repaired.segments[0].fragments[0].blob = BlobName::random();
    store
        .replace_version(
            "b",
            "k",
            w.version.seq,
            summary.generation,
            &repaired,
            None,
            now,
        )
        .unwrap();
    let row = store.object_version("b", "k", &id).unwrap().unwrap();
    assert_eq!(row.summary.retention(), Some(longer));
    // Once the retention is over, it may go.
    store
        .delete_version(&Writer::Admin, "b", "k", &id, false, now + 3 * day + 1)
        .unwrap()
        .unwrap();

    // Governance: shortened or removed only with the bypass; a legal hold
    // holds whatever the retention.
    let gov = VersionState {
        retention: Some(governance),
        legal_hold: true,
        ..VersionState::default()
    };
    let w = store
        .put_object_with("b", "g", &m, &gov, None, &Condition::Always, now)
        .unwrap();
    let id = VersionSelector::parse(Some(&w.version.id())).unwrap();
    assert!(matches!(
        store.set_retention(&Writer::Admin, "b", "g", &id, None, false, now),
        Err(MetaError::Locked(_))
    ));
    store
        .set_retention(&Writer::Admin, "b", "g", &id, None, true, now)
        .unwrap();
    assert!(matches!(
        store.delete_version(&Writer::Admin, "b", "g", &id, true, now),
        Err(MetaError::Locked(_))
    ));
    store
        .set_legal_hold(&Writer::Admin, "b", "g", &id, false)
        .unwrap();
    store
        .delete_version(&Writer::Admin, "b", "g", &id, false, now)
        .unwrap()
        .unwrap();

    // A default retention applies to versions that ask for none.
    let default = ObjectLock {
        default_retention: Some(DefaultRetention {
            mode: LockMode::Governance,
            days: 2,
            years: 0,
        }),
    };
    store
        .set_object_lock(&Writer::Admin, "b", &default)
        .unwrap();
    assert_eq!(
        store.bucket("b").unwrap().unwrap().object_lock().unwrap(),
        Some(default)
    );
    store
        .put_object("b", "d", &m, None, &Condition::Always, now)
        .unwrap();
    let (summary, _) = store.object_row("b", "d").unwrap().unwrap();
    assert_eq!(
        summary.retention(),
        Some(Retention {
            mode: LockMode::Governance,
            until_unix_ms: now + 2 * day
        })
    );
}

#[test]
fn a_listing_pages_on_after_its_marker_version_was_deleted() {
    let (_dir, store) = open();
    store.create_bucket("b", 0).unwrap();
    store
        .set_versioning(&Writer::Admin, "b", Versioning::Enabled)
        .unwrap();
    for _ in 0..5 {
        store
            .put_object("b", "k", &empty("e"), None, &Condition::Always, 0)
            .unwrap();
    }
    let page = |after: Option<VersionSelector>| {
        store
            .list_versions(
                "b",
                &VersionQuery {
                    key_after: after.map(|_| "k"),
                    version_after: after,
                    max: 2,
                    ..Default::default()
                },
            )
            .unwrap()
    };
    let ids = |p: &shardgate_meta::VersionPage| -> Vec<String> {
        p.entries
            .iter()
            .map(|e| match e {
                VersionEntry::Version { version, .. } => version.id(),
                VersionEntry::Prefix(p) => p.clone(),
            })
            .collect()
    };
    let first = page(None);
    assert!(first.truncated);
    let first = ids(&first);
    // The client deletes what it listed, then asks for the next page.
    for id in &first {
        let s = VersionSelector::parse(Some(id)).unwrap();
        store
            .delete_version(&Writer::Admin, "b", "k", &s, false, 0)
            .unwrap()
            .unwrap();
    }
    let marker = VersionSelector::parse(Some(&first[1])).unwrap();
    let next = page(Some(marker));
    assert_eq!(next.entries.len(), 2, "the older versions are still listed");
    assert!(next.truncated);
}

#[test]
fn a_manifest_put_again_over_the_null_version_keeps_its_fragments() {
    let (_dir, store) = open();
    store.create_bucket("b", 0).unwrap();
    let m = manifest("m", vec![segment(1)]);
    store
        .put_objects_batch("b", &[("k".into(), m.clone())], 0)
        .unwrap();
    // The same manifest again (a restore from a journal, an import run
    // twice): the replaced null version's blobs are the new one's.
    store
        .put_objects_batch("b", &[("k".into(), m.clone())], 0)
        .unwrap();
    assert!(garbage_blobs(&store, u64::MAX).is_empty());
    assert_eq!(store.object("b", "k").unwrap().unwrap(), m);
}

pub fn user(name: &str) -> UserRecord {
    let recipients = Identities::generate().recipients();
    UserRecord {
        name: name.into(),
        secret: shardgate_core::SealedSecret::seal(&recipients, b"secret").unwrap(),
        created_unix_ms: 1,
    }
}

#[test]
fn users_are_unique_and_kept_while_they_own_buckets() {
    let (_dir, store) = open();
    store.create_user("KEY1", &user("alice")).unwrap();
    assert!(matches!(
        store.create_user("KEY1", &user("other")),
        Err(MetaError::UserExists(_))
    ));
    assert!(matches!(
        store.create_user("KEY2", &user("alice")),
        Err(MetaError::UserExists(_))
    ));
    store.create_user("KEY2", &user("bob")).unwrap();
    let names: Vec<String> = store
        .users()
        .unwrap()
        .into_iter()
        .map(|(_, u)| u.name)
        .collect();
    assert_eq!(names, ["alice", "bob"]);

    store
        .create_bucket_with("alices", false, Some("alice"), 0)
        .unwrap();
    store.create_bucket("admins", 0).unwrap();
    let owner = |b: &str| store.bucket(b).unwrap().unwrap().owner().unwrap();
    assert_eq!(owner("alices").as_deref(), Some("alice"));
    assert_eq!(owner("admins"), None);
    match store.delete_user("alice") {
        Err(MetaError::UserOwnsBuckets { user, buckets }) => {
            assert_eq!(
                (user.as_str(), buckets),
                ("alice", vec!["alices".to_string()])
            );
        }
        other => panic!("{other:?}"),
    }
    store.delete_bucket(&Writer::Admin, "alices").unwrap();
    // By access key or by name.
    assert_eq!(store.delete_user("KEY1").unwrap().name, "alice");
    assert_eq!(store.delete_user("bob").unwrap().name, "bob");
    assert!(matches!(
        store.delete_user("bob"),
        Err(MetaError::NoSuchUser(_))
    ));
    assert!(store.users().unwrap().is_empty());
}

#[test]
fn a_bucket_is_not_created_for_a_user_gone_nor_written_by_another() {
    let (_dir, store) = open();
    assert!(matches!(
        store.create_bucket_with("b", false, Some("ghost"), 0),
        Err(MetaError::NoSuchUser(_))
    ));
    store.create_user("KEY1", &user("alice")).unwrap();
    store
        .create_bucket_with("b", false, Some("alice"), 0)
        .unwrap();
    let as_user = |name: &str| VersionState {
        writer: shardgate_meta::Writer::User(name.into()),
        ..VersionState::default()
    };
    let m = manifest("m", vec![segment(1)]);
    store
        .put_object_with("b", "k", &m, &as_user("alice"), None, &Condition::Always, 0)
        .unwrap();
    assert!(matches!(
        store.put_object_with("b", "k2", &m, &as_user("bob"), None, &Condition::Always, 0),
        Err(MetaError::NotOwner)
    ));
    // The configured user writes anywhere.
    store
        .put_object_with(
            "b",
            "k3",
            &m,
            &VersionState::default(),
            None,
            &Condition::Always,
            0,
        )
        .unwrap();
    // Configuration changes and the bucket's deletion check the caller in
    // their own transaction too.
    let (alice, bob) = (Writer::User("alice".into()), Writer::User("bob".into()));
    let tags = BTreeMap::from([("team".to_string(), "a".to_string())]);
    assert!(matches!(
        store.set_versioning(&bob, "b", Versioning::Enabled),
        Err(MetaError::NotOwner)
    ));
    assert!(matches!(
        store.set_bucket_tags(&bob, "b", &tags),
        Err(MetaError::NotOwner)
    ));
    assert!(matches!(
        store.set_bucket_cors(&bob, "b", &[]),
        Err(MetaError::NotOwner)
    ));
    assert!(matches!(
        store.delete_bucket(&bob, "b"),
        Err(MetaError::NotOwner)
    ));
    assert_eq!(
        store.bucket("b").unwrap().unwrap().versioning,
        Versioning::Unversioned
    );
    store
        .set_versioning(&alice, "b", Versioning::Enabled)
        .unwrap();
    store.set_bucket_tags(&alice, "b", &tags).unwrap();
    assert_eq!(store.bucket("b").unwrap().unwrap().tags().unwrap(), tags);
    // So do a version's deletes and its tags.
    let latest = VersionSelector::Latest;
    assert!(matches!(
        store.delete_object(&bob, "b", "k", 0),
        Err(MetaError::NotOwner)
    ));
    assert!(matches!(
        store.delete_version(&bob, "b", "k", &latest, false, 0),
        Err(MetaError::NotOwner)
    ));
    assert!(matches!(
        store.delete_objects(&bob, "b", &[("k".into(), latest)], false, 0),
        Err(MetaError::NotOwner)
    ));
    assert!(matches!(
        store.set_object_tags(&bob, "b", "k", &latest, &tags),
        Err(MetaError::NotOwner)
    ));
    store
        .set_object_tags(&alice, "b", "k", &latest, &tags)
        .unwrap();
    store.delete_object(&alice, "b", "k", 0).unwrap();
    store
        .create_bucket_with("empty", false, Some("alice"), 0)
        .unwrap();
    assert!(matches!(
        store.delete_bucket(&bob, "empty"),
        Err(MetaError::NotOwner)
    ));
    store.delete_bucket(&alice, "empty").unwrap();
}

#[test]
fn bucket_policies_and_public_access_blocks_are_kept_and_counted_as_bucket_changes() {
    use shardgate_meta::{BucketAccess, public_access};
    let policy = |text: Option<&str>, public| BucketAccess::Policy {
        text: text.map(str::to_string),
        public,
    };
    let (_dir, store) = open();
    store.create_user("KEY1", &user("alice")).unwrap();
    let start = store.bucket_changes();
    store
        .create_bucket_with("b", false, Some("alice"), 1)
        .unwrap();
    let created = store.bucket_changes();
    assert!(created > start, "a creation is a bucket change");
    let alice = Writer::User("alice".into());
    let text = r#"{"Statement":[]}"#;
    store
        .set_bucket_access(&alice, "b", &policy(Some(text), true))
        .unwrap();
    let flags = public_access::CONFIGURED | public_access::RESTRICT_PUBLIC_BUCKETS;
    store
        .set_bucket_access(&alice, "b", &BucketAccess::PublicAccessBlock(Some(flags)))
        .unwrap();
    let record = store.bucket("b").unwrap().unwrap();
    assert_eq!(record.policy().unwrap().as_deref(), Some(text));
    assert_eq!(record.public_access_block().unwrap(), flags);
    assert!(store.bucket_changes() >= created + 2, "each setting counts");
    // Another user is refused; someone a policy let in is held to the
    // bucket's incarnation.
    let bob = Writer::User("bob".into());
    assert!(matches!(
        store.set_bucket_access(&bob, "b", &policy(None, false)),
        Err(MetaError::NotOwner)
    ));
    let incarnation = record.incarnation().unwrap();
    let stale = Writer::Granted {
        bucket_incarnation: incarnation.wrapping_add(1),
    };
    assert!(matches!(
        store.set_bucket_access(&stale, "b", &policy(None, false)),
        Err(MetaError::NotOwner)
    ));
    // BlockPublicPolicy refuses a public policy in the change's own
    // transaction.
    let blocking = flags | public_access::BLOCK_PUBLIC_POLICY;
    store
        .set_bucket_access(
            &alice,
            "b",
            &BucketAccess::PublicAccessBlock(Some(blocking)),
        )
        .unwrap();
    let set = store.bucket_changes();
    assert!(matches!(
        store.set_bucket_access(&alice, "b", &policy(Some(text), true)),
        Err(MetaError::PublicPolicyBlocked)
    ));
    assert_eq!(
        store.bucket_changes(),
        set,
        "a refused change is not counted"
    );
    // An object's write is not a bucket change.
    store
        .put_object("b", "k", &empty("e"), None, &Condition::Always, 2)
        .unwrap();
    assert_eq!(store.bucket_changes(), set);
    let granted = Writer::Granted {
        bucket_incarnation: incarnation,
    };
    store
        .set_bucket_access(&granted, "b", &policy(None, false))
        .unwrap();
    store
        .set_bucket_access(&alice, "b", &BucketAccess::PublicAccessBlock(None))
        .unwrap();
    let record = store.bucket("b").unwrap().unwrap();
    assert_eq!(record.policy().unwrap(), None);
    assert_eq!(record.public_access_block().unwrap(), 0);
    assert!(store.bucket_changes() > set);
    // Deleted and created again in the same millisecond: a write let in
    // before is refused all the same.
    store.delete_object(&alice, "b", "k", 3).unwrap();
    store.delete_bucket(&alice, "b").unwrap();
    store
        .create_bucket_with("b", false, Some("alice"), record.created_unix_ms)
        .unwrap();
    let again = store.bucket("b").unwrap().unwrap();
    assert_eq!(again.created_unix_ms, record.created_unix_ms);
    assert_ne!(again.incarnation().unwrap(), incarnation);
    assert!(matches!(
        store.set_bucket_access(&granted, "b", &policy(None, false)),
        Err(MetaError::NotOwner)
    ));
}

#[test]
fn acls_and_object_ownership_are_kept_and_checked_in_the_transaction_that_sets_them() {
    use shardgate_authz::{Acl, Ownership};
    use shardgate_meta::{BucketAccess, VersionState, public_access};
    let (_dir, store) = open();
    let public = Acl::canned("public-read", "owner-id", "owner-id").unwrap();
    // Created with its ACL and ownership in one transaction.
    store
        .create_bucket_set(
            "b",
            false,
            None,
            &[
                BucketAccess::Acl(public.clone()),
                BucketAccess::Ownership(Some(Ownership::BucketOwnerPreferred)),
            ],
            1,
        )
        .unwrap();
    let record = store.bucket("b").unwrap().unwrap();
    assert_eq!(record.acl().unwrap(), Some(public.clone()));
    assert_eq!(
        record.ownership().unwrap(),
        Some(Ownership::BucketOwnerPreferred)
    );
    // BucketOwnerEnforced is refused while the ACL grants others; the
    // default ACL is stored as none at all.
    let admin = Writer::Admin;
    let enforce = BucketAccess::Ownership(Some(Ownership::BucketOwnerEnforced));
    assert!(matches!(
        store.set_bucket_access(&admin, "b", &enforce),
        Err(MetaError::AclWithEnforcedOwnership)
    ));
    let private = Acl::private("owner-id");
    store
        .set_bucket_access(&admin, "b", &BucketAccess::Acl(private.clone()))
        .unwrap();
    assert_eq!(store.bucket("b").unwrap().unwrap().acl().unwrap(), None);
    store.set_bucket_access(&admin, "b", &enforce).unwrap();
    // Under BucketOwnerEnforced, only the owner's ACLs are taken on the
    // bucket.
    assert!(matches!(
        store.set_bucket_access(&admin, "b", &BucketAccess::Acl(public.clone())),
        Err(MetaError::AclsDisabled)
    ));
    let state = |acl: &Acl| VersionState {
        acl: Some(acl.clone()),
        ..VersionState::default()
    };
    let put = |key: &str, acl: &Acl| {
        store.put_object_with(
            "b",
            key,
            &empty("e"),
            &state(acl),
            None,
            &Condition::Always,
            2,
        )
    };
    // A write asking for an ACL (decided before BucketOwnerEnforced was
    // set) is the bucket owner's, without its ACL.
    put("k", &public).unwrap();
    let row = store
        .object_version("b", "k", &VersionSelector::Latest)
        .unwrap()
        .unwrap();
    assert_eq!(row.summary.acl().unwrap(), None);
    put("k", &private).unwrap();
    // Back to ACLs, under BlockPublicAcls: a public ACL is refused on the
    // bucket, on a write and on a version.
    store
        .set_bucket_access(&admin, "b", &BucketAccess::Ownership(None))
        .unwrap();
    let block = public_access::CONFIGURED | public_access::BLOCK_PUBLIC_ACLS;
    store
        .set_bucket_access(&admin, "b", &BucketAccess::PublicAccessBlock(Some(block)))
        .unwrap();
    assert!(matches!(
        store.set_bucket_access(&admin, "b", &BucketAccess::Acl(public.clone())),
        Err(MetaError::PublicAclBlocked)
    ));
    assert!(matches!(
        put("k2", &public),
        Err(MetaError::PublicAclBlocked)
    ));
    assert_eq!(store.object("b", "k2").unwrap(), None, "nothing written");
    let row = store
        .object_version("b", "k", &VersionSelector::Latest)
        .unwrap()
        .unwrap();
    assert_eq!(row.summary.acl().unwrap(), None, "BucketOwnerEnforced then");
    assert!(matches!(
        store.set_object_acl(
            &admin,
            "b",
            "k",
            &VersionSelector::Latest,
            &public,
            row.summary.generation
        ),
        Err(MetaError::PublicAclBlocked)
    ));
    store
        .set_bucket_access(&admin, "b", &BucketAccess::PublicAccessBlock(None))
        .unwrap();
    // An ACL built from a version that changed since is refused.
    assert!(matches!(
        store.set_object_acl(
            &admin,
            "b",
            "k",
            &VersionSelector::Latest,
            &public,
            row.summary.generation + 1
        ),
        Err(MetaError::Changed)
    ));
    store
        .set_object_acl(
            &admin,
            "b",
            "k",
            &VersionSelector::Latest,
            &public,
            row.summary.generation,
        )
        .unwrap();
    // Tags and ACL live side by side: changing one keeps the other.
    let tags = BTreeMap::from([("t".to_string(), "v".to_string())]);
    store
        .set_object_tags(&admin, "b", "k", &VersionSelector::Latest, &tags)
        .unwrap();
    let row = store
        .object_version("b", "k", &VersionSelector::Latest)
        .unwrap()
        .unwrap();
    assert_eq!(row.summary.acl().unwrap(), Some(public));
    assert_eq!(row.summary.tags().unwrap(), tags);
    // Another user cannot set a version's ACL.
    store.create_user("KEY1", &user("alice")).unwrap();
    assert!(matches!(
        store.set_object_acl(
            &Writer::User("alice".into()),
            "b",
            "k",
            &VersionSelector::Latest,
            &private,
            row.summary.generation
        ),
        Err(MetaError::NotOwner)
    ));
}

/// Another gateway on `store`'s engine (a store of its own owner).
fn second_gateway(store: &MetaStore) -> MetaStore {
    MetaStore::on_engine(store.shared_engine(), false, None).unwrap()
}

fn member(shared: &[(&str, &str)]) -> MemberRecord {
    MemberRecord {
        owner: String::new(),
        host: "h".into(),
        pid: 1,
        version: "v".into(),
        started_unix_ms: 0,
        s3_endpoint: "127.0.0.1:1".into(),
        admin_endpoint: String::new(),
        shared: shared
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        jobs: Vec::new(),
        heartbeat_unix_ms: 0,
    }
}

#[test]
fn gateways_join_only_with_the_configuration_the_live_ones_share() {
    let (_dir, a) = open();
    let b = second_gateway(&a);
    let c = second_gateway(&a);
    let config = [("backend s1", "d1"), ("recipients", "r1")];
    a.join(&member(&config), 1_000, 30_000).unwrap();
    // Another backend digest, a backend a lacks, other recipients: named.
    let err = b
        .join(
            &member(&[
                ("backend s1", "d2"),
                ("backend s2", "d3"),
                ("recipients", "r1"),
            ]),
            2_000,
            30_000,
        )
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, MetaError::Mismatch { .. }), "{text}");
    assert!(text.contains(a.owner()), "{text}");
    assert!(text.contains("backend s1 differs"), "{text}");
    assert!(
        text.contains("backend s2 is configured here only"),
        "{text}"
    );
    assert!(!text.contains("recipients"), "{text}");
    // The same configuration joins; both are members, alive.
    b.join(&member(&config), 2_000, 30_000).unwrap();
    let members = a.members(3_000).unwrap();
    assert_eq!(members.len(), 2);
    assert!(members.iter().all(|m| m.live));
    // Once a's lease ran out (and b's is renewed), c may join with b's
    // configuration only; a's row goes.
    b.heartbeat(&member(&config), 30_000, 30_000).unwrap();
    let err = c
        .join(&member(&[("recipients", "r2")]), 40_000, 30_000)
        .unwrap_err();
    assert!(err.to_string().contains(b.owner()), "{err}");
    assert!(!err.to_string().contains(a.owner()), "{err}");
    c.join(&member(&config), 40_000, 30_000).unwrap();
    let owners: BTreeSet<String> = a
        .members(40_000)
        .unwrap()
        .into_iter()
        .map(|m| m.record.owner)
        .collect();
    assert_eq!(
        owners,
        BTreeSet::from([b.owner().to_string(), c.owner().to_string()])
    );
    // a, taken for gone, comes back with its heartbeat: checked as a join.
    let err = a
        .heartbeat(&member(&[("recipients", "r9")]), 41_000, 30_000)
        .unwrap_err();
    assert!(matches!(err, MetaError::Mismatch { .. }), "{err}");
    a.heartbeat(&member(&config), 41_000, 30_000).unwrap();
    assert_eq!(a.members(41_000).unwrap().len(), 3);
    a.leave().unwrap();
    // Leaving removes the row and the lease.
    c.leave().unwrap();
    assert_eq!(a.members(40_000).unwrap().len(), 1);
    assert!(
        a.lease_holder(&shardgate_meta::member_lease(c.owner()), 40_000)
            .unwrap()
            .is_none()
    );
}

#[test]
fn a_live_gateways_intents_are_not_swept_and_a_gone_ones_are() {
    let (_dir, a) = open();
    a.create_bucket("b", 0).unwrap();
    let b = second_gateway(&a);
    a.join(&member(&[]), 1_000, 60_000).unwrap();
    let m = manifest("x", vec![segment(1)]);
    let blobs: Vec<_> = blobs(&m).into_iter().collect();
    let intent = a.begin_intent(IntentKind::PUT, &blobs, 1_000).unwrap();
    // While a is alive, b's sweep leaves a's write alone, however old.
    assert!(b.sweep_intents(50_000, 0, |_| false).unwrap().is_empty());
    assert_eq!(b.intents().unwrap().len(), 1);
    // a's lease ran out: its write is swept, and can no longer commit.
    assert_eq!(b.sweep_intents(61_001, 0, |_| false).unwrap(), vec![intent]);
    let err = a
        .put_object("b", "k", &m, Some(intent), &Condition::Always, 61_002)
        .unwrap_err();
    assert!(matches!(err, MetaError::IntentGone), "{err}");
    assert!(a.object("b", "k").unwrap().is_none());
    assert_eq!(garbage_blobs(&a, u64::MAX).len(), 3);
    // An owner that never joined (an earlier run) is gone.
    let c = second_gateway(&a);
    let orphan = c.begin_intent(IntentKind::PUT, &blobs, 70_000).unwrap();
    assert_eq!(
        b.sweep_intents(70_001, 60_000, |_| false).unwrap(),
        vec![orphan]
    );
}

#[test]
fn changes_to_what_gateways_keep_in_memory_are_counted_in_the_store() {
    let (_dir, a) = open();
    let b = second_gateway(&a);
    let before = b.changes().unwrap();
    let seen = b.bucket_changes();
    a.create_bucket("b", 0).unwrap();
    a.create_user("AK1", &user("alice")).unwrap();
    a.set_job_state("paused", b"scrub\n").unwrap();
    let after = b.changes().unwrap();
    assert!(after.buckets > before.buckets, "{after:?}");
    assert!(after.users > before.users, "{after:?}");
    assert!(after.jobs > before.jobs, "{after:?}");
    // b learns of a's bucket change once it observes the counters.
    assert_eq!(b.bucket_changes(), seen);
    b.observe_changes(&after);
    assert!(b.bucket_changes() > seen);
    a.delete_bucket(&Writer::Admin, "b").unwrap();
    a.delete_user("alice").unwrap();
    a.delete_job_state("paused").unwrap();
    let last = b.changes().unwrap();
    assert!(last.buckets > after.buckets && last.users > after.users && last.jobs > after.jobs);
}

#[test]
fn a_job_lease_is_held_by_one_gateway_and_taken_over_once_it_runs_out() {
    let (_dir, a) = open();
    let b = second_gateway(&a);
    let ka = LeaseKeeper::new(a.clone(), 300);
    let kb = LeaseKeeper::new(b.clone(), 300);
    assert_eq!(ka.hold("job/scrub").unwrap(), Hold::Held);
    assert!(ka.holds("job/scrub"));
    match kb.hold("job/scrub").unwrap() {
        Hold::Elsewhere { owner, left_ms } => {
            assert_eq!(owner, a.owner());
            assert!(left_ms <= 300);
        }
        Hold::Held => panic!("two gateways hold one lease"),
    }
    // a's writes under the lease pass its fence while it holds it.
    let fenced = a.fenced_by("job/scrub");
    fenced.set_job_state("scrub", b"1").unwrap();
    // a stops renewing (killed): b takes the job over once the term ran
    // out, and a's fenced writes are refused from then on.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while kb.hold("job/scrub").unwrap() != Hold::Held {
        assert!(std::time::Instant::now() < deadline, "never taken over");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!ka.holds("job/scrub"));
    let err = fenced.set_job_state("scrub", b"2").unwrap_err();
    assert!(matches!(err, MetaError::LeaseLost { .. }), "{err}");
    assert_eq!(a.job_state("scrub").unwrap().unwrap(), b"1");
    // a's renewal finds the lease taken and drops it.
    let failed = ka.renew_all();
    assert_eq!(failed.len(), 1);
    assert!(matches!(failed[0].1, MetaError::Leased { .. }));
    // Letting go frees it at once.
    kb.let_go("job/scrub").unwrap();
    assert_eq!(ka.hold("job/scrub").unwrap(), Hold::Held);
    ka.let_go_all();
    assert!(a.lease_holder("job/scrub", 0).unwrap().is_none());
}

/// Every object of `store`'s bucket `b`: key and manifest.
fn objects_of(store: &MetaStore) -> Vec<(String, Manifest)> {
    page_through(store, "", None, 1000)
        .into_iter()
        .map(|key| {
            let manifest = store.object("b", &key).unwrap().unwrap();
            (key, manifest)
        })
        .collect()
}

fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn a_copy_holds_every_row_of_its_source_and_is_verified() {
    use shardgate_meta::copy;
    use shardgate_meta::kv::{Engine, RedbEngine};
    use std::sync::Arc;

    let (_dir, source) = open();
    source.create_bucket("b", 0).unwrap();
    source.create_user("alice", &user("alice")).unwrap();
    // More rows than one batch, some overwritten (garbage), one deleted,
    // and an intent of a write in flight.
    let rows = copy::BATCH_ROWS + 200;
    for i in 0..rows {
        let m = empty(&format!("e{i}"));
        let key = format!("k{i:05}");
        source
            .put_object("b", &key, &m, None, &Condition::Always, 0)
            .unwrap();
    }
    let old = manifest("old", vec![segment(10)]);
    source
        .put_object("b", "overwritten", &old, None, &Condition::Always, 0)
        .unwrap();
    source
        .put_object(
            "b",
            "overwritten",
            &empty("new"),
            None,
            &Condition::Always,
            0,
        )
        .unwrap();
    source
        .delete_object(&Writer::Admin, "b", "k00003", 0)
        .unwrap();
    let in_flight = blobs(&manifest("f", vec![segment(1)]));
    let in_flight: Vec<_> = in_flight.into_iter().collect();
    source.begin_intent(IntentKind::PUT, &in_flight, 0).unwrap();
    let now = wall_clock_ms();
    source
        .join(&member(&[("recipients", "r")]), now, 30_000)
        .unwrap();

    // The source's gateway is live: a copy of it would miss its writes.
    let from = source.shared_engine();
    let token = copy::new_token();
    let err = copy::hold_source(&*from, &token, now).unwrap_err();
    assert!(err.to_string().contains(source.owner()), "{err}");
    // Gone from the members' lease but beating recently (cut off from the
    // database, perhaps still running): refused too; once it is old, its
    // row is dropped, so it must join again.
    let err = copy::hold_source(&*from, &token, now + 31_000).unwrap_err();
    assert!(err.to_string().contains("beat 31 s ago"), "{err}");
    copy::hold_source(&*from, &token, now + copy::RECENT_MS).unwrap();
    assert!(source.members(now).unwrap().is_empty());
    copy::release_source(&*from, &token).unwrap();
    // A hold that lapsed fails the copy at its next renewal.
    let lapsed_token = copy::new_token();
    copy::hold_source(&*from, &lapsed_token, now - copy::COPY_TERM_MS - 1_000).unwrap();
    let err = copy::keep(&*from, copy::SOURCE_LEASE, &lapsed_token).unwrap_err();
    assert!(err.to_string().contains("lapsed"), "{err}");
    copy::hold_source(&*from, &token, now).unwrap();
    let err = copy::keep(&*from, copy::SOURCE_LEASE, &lapsed_token).unwrap_err();
    assert!(err.to_string().contains("another copy took"), "{err}");
    // While the copy reads it, no gateway joins the source.
    let err = second_gateway(&source)
        .join(&member(&[("recipients", "r")]), now, 30_000)
        .unwrap_err();
    assert!(matches!(err, MetaError::CopyUnfinished), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let to: Arc<dyn Engine> = Arc::new(RedbEngine::create(&dir.path().join("copy.redb")).unwrap());
    copy::prepare_destination(&*to, &token, false, now).unwrap();
    // Half-way, no gateway may join the copy.
    let early = MetaStore::on_engine(to.clone(), false, None).unwrap();
    let err = early
        .join(&member(&[("recipients", "r")]), now, 30_000)
        .unwrap_err();
    assert!(matches!(err, MetaError::CopyUnfinished), "{err}");
    let snapshot = from.snapshot().unwrap();
    copy::check_snapshot(&*snapshot, &token, now).unwrap();
    assert!(copy::check_snapshot(&*snapshot, &lapsed_token, now).is_err());
    let mut seen = Vec::new();
    let copied = copy::copy(
        &*snapshot,
        Some(&*from),
        &*to,
        &token,
        &mut |table, done, total| {
            assert!(done <= total, "{table}: {done} of {total}");
            seen.push(done);
        },
    )
    .unwrap();
    drop(snapshot);
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert!(seen.len() > 2, "progress heard of each batch: {seen:?}");
    let checked = copy::finish(&*to, &token, &copied).unwrap();
    assert_eq!(checked, copied);
    copy::release_source(&*from, &token).unwrap();
    // The copy's leases changed nothing of what it copies in the source.
    let snapshot = from.snapshot().unwrap();
    assert_eq!(copy::digest(&*snapshot).unwrap(), copied);
    drop(snapshot);
    let count = |name: &str| {
        copied
            .tables
            .iter()
            .find(|(t, _)| *t == name)
            .map(|(_, n)| *n)
            .unwrap()
    };
    // One row per key: `rows` put, "overwritten" kept once, one deleted.
    assert_eq!(count("versions"), rows as u64, "{copied:?}");
    assert_eq!(count("intents"), 1, "{copied:?}");
    assert_eq!(count("users"), 1, "{copied:?}");
    assert!(count("garbage_due") > 0, "{copied:?}");

    // The copy is the same store: objects, manifests, users, garbage,
    // intents; the source's gateway is not among its members.
    let copy_store = MetaStore::on_engine(to.clone(), false, None).unwrap();
    assert_eq!(objects_of(&copy_store), objects_of(&source));
    assert_eq!(copy_store.users().unwrap(), source.users().unwrap());
    assert_eq!(
        garbage_blobs(&copy_store, u64::MAX),
        garbage_blobs(&source, u64::MAX)
    );
    assert_eq!(copy_store.intents().unwrap(), source.intents().unwrap());
    assert!(copy_store.members(now).unwrap().is_empty());
    copy_store
        .join(&member(&[("recipients", "r")]), now, 30_000)
        .unwrap();
    // The source serves again once the copy is over.
    second_gateway(&source)
        .join(&member(&[("recipients", "r")]), now, 30_000)
        .unwrap();

    // A store that holds anything is no destination; nor one a gateway
    // serves from.
    let err = copy::prepare_destination(&*to, &copy::new_token(), false, now).unwrap_err();
    assert!(err.to_string().contains("is serving"), "{err}");
    copy_store.leave().unwrap();
    let err = copy::prepare_destination(&*to, &copy::new_token(), false, now).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
    assert!(err.to_string().contains("versions"), "{err}");
}

#[test]
fn a_copy_that_stopped_half_way_is_started_over_and_a_changed_copy_is_refused() {
    use shardgate_meta::copy;
    use shardgate_meta::kv::{Engine, RedbEngine, tables};
    use std::sync::Arc;

    let (_dir, source) = open();
    source.create_bucket("b", 0).unwrap();
    for i in 0..50 {
        source
            .put_object(
                "b",
                &format!("k{i}"),
                &empty("e"),
                None,
                &Condition::Always,
                0,
            )
            .unwrap();
    }
    let from = source.shared_engine();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("copy.redb");
    let to: Arc<dyn Engine> = Arc::new(RedbEngine::create(&path).unwrap());
    let now = wall_clock_ms();

    // A first copy writes everything but does not finish; rows change
    // behind it: one removed, one changed with the counts kept.
    let first = copy::new_token();
    copy::prepare_destination(&*to, &first, false, now).unwrap();
    let snapshot = from.snapshot().unwrap();
    let copied = copy::copy(&*snapshot, None, &*to, &first, &mut |_, _, _| {}).unwrap();
    drop(snapshot);
    let row = shardgate_meta::kv::read(&*to, |kv| kv.get(tables::BUCKETS, b"b"))
        .unwrap()
        .unwrap();
    shardgate_meta::kv::write(&*to, |kv| kv.put(tables::BUCKETS, b"b", b"changed")).unwrap();
    let err = copy::finish(&*to, &first, &copied).unwrap_err();
    assert!(
        err.to_string().contains("the same counts, but digest"),
        "{err}"
    );
    shardgate_meta::kv::write(&*to, |kv| kv.remove(tables::BUCKETS, b"b")).unwrap();
    let err = copy::finish(&*to, &first, &copied).unwrap_err();
    assert!(
        err.to_string().contains("buckets: 1 rows, 0 in the copy"),
        "{err}"
    );
    shardgate_meta::kv::write(&*to, |kv| kv.put(tables::BUCKETS, b"stray", &row)).unwrap();

    // The unfinished file is never served: a gateway opening it refuses.
    drop(to);
    let err = MetaStore::open(&path).unwrap_err();
    assert!(matches!(err, MetaError::CopyUnfinished), "{err}");
    let to: Arc<dyn Engine> = Arc::new(RedbEngine::create(&path).unwrap());

    // Another copy waits while the first one's lease holds, then starts
    // over: the stray row goes, and this time it finishes.
    let second = copy::new_token();
    let err = copy::prepare_destination(&*to, &second, false, now).unwrap_err();
    assert!(err.to_string().contains("another copy"), "{err}");
    let lapsed = wall_clock_ms() + copy::COPY_TERM_MS + 1_000;
    copy::prepare_destination(&*to, &second, false, lapsed).unwrap();
    // The first copy, still running somewhere, can write nothing more.
    let snapshot = from.snapshot().unwrap();
    let err = copy::copy(&*snapshot, None, &*to, &first, &mut |_, _, _| {}).unwrap_err();
    assert!(err.to_string().contains("another copy took"), "{err}");
    let copied = copy::copy(&*snapshot, None, &*to, &second, &mut |_, _, _| {}).unwrap();
    drop(snapshot);
    copy::finish(&*to, &second, &copied).unwrap();
    let stray = shardgate_meta::kv::read(&*to, |kv| kv.get(tables::BUCKETS, b"stray")).unwrap();
    assert!(stray.is_none(), "the unfinished copy's rows were cleared");
    let copy_store = MetaStore::on_engine(to, false, None).unwrap();
    assert_eq!(objects_of(&copy_store), objects_of(&source));
}

#[test]
fn a_copy_that_reads_fewer_rows_than_its_source_counts_is_refused() {
    use shardgate_meta::copy;
    use shardgate_meta::kv::{Engine, KeyRange, KvRead, RedbEngine, Table, Visit};
    use std::sync::Arc;

    // A source whose walk misses a row its count holds: source and
    // destination are hashed by the same walk, so only the count tells.
    struct Miscounted<'a>(&'a dyn KvRead);
    impl KvRead for Miscounted<'_> {
        fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, MetaError> {
            self.0.get(table, key)
        }
        fn scan(
            &self,
            table: Table,
            range: KeyRange<'_>,
            reverse: bool,
            visit: &mut Visit<'_>,
        ) -> Result<(), MetaError> {
            self.0.scan(table, range, reverse, visit)
        }
        fn len(&self, table: Table) -> Result<u64, MetaError> {
            Ok(self.0.len(table)? + 1)
        }
    }

    let (_dir, source) = open();
    source.create_bucket("b", 0).unwrap();
    let from = source.shared_engine();
    let token = copy::new_token();
    let now = wall_clock_ms();
    copy::hold_source(&*from, &token, now).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let to: Arc<dyn Engine> = Arc::new(RedbEngine::create(&dir.path().join("copy.redb")).unwrap());
    copy::prepare_destination(&*to, &token, false, now).unwrap();
    let snapshot = from.snapshot().unwrap();
    let err = copy::copy(
        &Miscounted(&*snapshot),
        None,
        &*to,
        &token,
        &mut |_, _, _| {},
    )
    .unwrap_err();
    assert!(matches!(err, MetaError::CopyRefused(_)), "{err}");
    assert!(err.to_string().contains("rows in the source"), "{err}");
}
