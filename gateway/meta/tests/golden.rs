//! Record formats frozen by checked-in bytes (`tests/golden/v1/`): every
//! kind of record as the release of 2026-12-04 (commit 3605888) wrote it,
//! taken from the data directory that release left in
//! `tests/fixtures/v1-store` (see `make_v1_store.sh` there). Each file
//! must decode to what that release stored; the formats still written
//! must re-encode to the same bytes. A change that breaks one of these is
//! a change of format: it needs a new format number, with the old one
//! still read.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use shardgate_core::{FragmentState, Manifest};
use shardgate_meta::formats;
use shardgate_meta::{
    CRITICAL_EXTENSION, IntentKind, MetaError, OBJECT_LOCK_EXTENSION, ObjectSummary, PartChecksum,
    PartRecord, Versioning,
};

fn golden(name: &str) -> Vec<u8> {
    let path = dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1")
}

fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(data))
}

/// The bytes of `make_v1_store.sh`'s `pattern SEED LEN`.
fn pattern(seed: u64, len: u64) -> Vec<u8> {
    (0..len).map(|i| ((i * seed + 3) % 251) as u8).collect()
}

#[test]
fn v1_buckets_uploads_and_parts_decode_and_encode_the_same() {
    let bytes = golden("bucket.bin");
    let bucket = formats::decode_bucket(&bytes).unwrap();
    assert!(bucket.created_unix_ms > 1_796_000_000_000);
    // Format 1 had the creation time only: a bucket that never versioned.
    assert_eq!(bucket.versioning, Versioning::Unversioned);
    assert!(bucket.extensions.is_empty());
    // Buckets are written as format 2 now, which reads back the same.
    let v2 = formats::encode_bucket(&bucket).unwrap();
    assert_eq!(v2[0], 2);
    assert_eq!(formats::decode_bucket(&v2).unwrap(), bucket);

    let bytes = golden("upload.bin");
    let upload = formats::decode_upload(&bytes).unwrap();
    assert!(upload.initiated_unix_ms >= bucket.created_unix_ms);
    assert_eq!(upload.content_type, None);
    assert_eq!(upload.user_metadata, BTreeMap::new());
    assert_eq!(formats::encode_upload(&upload).unwrap(), bytes);

    let bytes = golden("part.bin");
    let part = formats::decode_part(&bytes).unwrap();
    assert_eq!(part.size, 20480);
    assert_eq!(part.etag, md5_hex(&pattern(13, 20480)));
    assert_eq!(part.segment.plaintext_len, 20480);
    assert_eq!(part.segment.fragments.len(), 6);
    assert_eq!(part.checksum, None);
    assert_eq!(formats::encode_part(&part).unwrap(), bytes);
    // A part with an additional checksum is format 2; it reads back the same.
    let summed = PartRecord {
        checksum: Some(PartChecksum {
            algorithm: "CRC32".into(),
            value: "DUoRhQ==".into(),
        }),
        ..part
    };
    let v2 = formats::encode_part(&summed).unwrap();
    assert_eq!(v2[0], 2);
    assert_eq!(formats::decode_part(&v2).unwrap(), summed);
}

fn check_striped(summary: &ObjectSummary, m: &Manifest) {
    assert_eq!((m.size, summary.size), (102_400, 102_400));
    assert_eq!(m.etag, md5_hex(&pattern(7, 102_400)));
    assert_eq!(summary.etag, m.etag);
    assert_eq!(m.segments.len(), 1);
    let s = &m.segments[0];
    assert_eq!((s.layout.code.k(), s.layout.code.m()), (4, 2));
    let mut sites: Vec<_> = s.fragments.iter().map(|f| f.backend.to_string()).collect();
    sites.sort();
    assert_eq!(
        sites,
        ["site-1", "site-2", "site-3", "site-4", "site-5", "site-6"]
    );
    assert!(s.fragments.iter().all(|f| f.state == FragmentState::Stored));
}

#[test]
fn v1_object_rows_and_manifests_decode() {
    let bytes = golden("object-small.bin");
    let (summary, m) = formats::decode_object_row(&bytes).unwrap();
    assert_eq!(m.size, 24);
    assert_eq!(m.etag, md5_hex(b"hello from shardgate v1\n"));
    assert_eq!(m.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        m.user_metadata.get("color").map(String::as_str),
        Some("blue")
    );
    // Small: three whole copies (1 + 2).
    assert_eq!(m.segments[0].fragments.len(), 3);
    // A format-1 summary: no generation yet, nothing of versioning or lock.
    assert_eq!((summary.size, summary.generation), (24, 0));
    assert_eq!(summary.version_id, None);
    assert!(!summary.delete_marker && summary.retention.is_none() && !summary.legal_hold);

    let bytes = golden("object-striped.bin");
    let (summary, m) = formats::decode_object_row(&bytes).unwrap();
    check_striped(&summary, &m);

    // The manifest alone, format 1, is still what is written.
    let bytes = golden("manifest.bin");
    assert_eq!(&bytes[..6], b"SGMF\x01\x00");
    let m2 = Manifest::decode(&bytes).unwrap();
    assert_eq!(m2, m);
    assert_eq!(m2.encode().unwrap(), bytes);
}

#[test]
fn v1_intents_and_garbage_decode() {
    let bytes = golden("intent.bin");
    assert_eq!(bytes[0], 1, "format 1: the bare blob list");
    let intent = formats::decode_intent(&bytes).unwrap();
    assert_eq!(intent.kind, IntentKind::UNKNOWN);
    assert_eq!((intent.owner.as_str(), intent.created_unix_ms), ("", 0));
    assert_eq!(intent.blobs.len(), 6);

    let bytes = golden("garbage.bin");
    let (version, blobs, not_before) = formats::decode_legacy_garbage(&bytes).unwrap();
    assert!(version.is_some(), "the overwritten version's");
    assert_eq!(blobs.len(), 6);
    assert!(not_before > 1_796_000_000_000);
}

#[test]
fn current_formats_round_trip_and_refuse_what_they_cannot_read() {
    let (_, m) = formats::decode_object_row(&golden("object-striped.bin")).unwrap();
    // Object rows carry the generation.
    let row = formats::encode_object_row(&m, 7).unwrap();
    let (summary, back) = formats::decode_object_row(&row).unwrap();
    assert_eq!(back, m);
    assert_eq!(summary.generation, 7);
    assert_eq!(summary.version_id, Some(m.version_id));
    check_striped(&summary, &m);
    // Intents are written as format 2.
    let intent = shardgate_meta::IntentRecord {
        kind: IntentKind::PART,
        owner: "gw-1".into(),
        created_unix_ms: 5,
        blobs: formats::decode_intent(&golden("intent.bin")).unwrap().blobs,
    };
    let bytes = formats::encode_intent(&intent).unwrap();
    assert_eq!(bytes[0], 2);
    assert_eq!(formats::decode_intent(&bytes).unwrap(), intent);
    // Rows written before versioning (summary format 2) are null
    // versions: the fields of format 2, in its order.
    #[derive(serde::Serialize)]
    struct SummaryV2<'a> {
        size: u64,
        etag: &'a str,
        modified_unix_ms: u64,
        generation: u64,
        version_id: Option<shardgate_core::VersionId>,
        delete_marker: bool,
        retention: Option<(u8, u64)>,
        legal_hold: bool,
        extensions: Vec<(u16, Vec<u8>)>,
    }
    let v2 = SummaryV2 {
        size: m.size,
        etag: &m.etag,
        modified_unix_ms: 5,
        generation: 9,
        version_id: Some(m.version_id),
        delete_marker: false,
        retention: None,
        legal_hold: false,
        extensions: vec![(
            1,
            postcard::to_allocvec(&BTreeMap::from([("t", "v")])).unwrap(),
        )],
    };
    let mut v = vec![2u8];
    v.extend(postcard::to_allocvec(&v2).unwrap());
    let mut row2 = (v.len() as u32).to_le_bytes().to_vec();
    row2.extend_from_slice(&v);
    row2.extend_from_slice(&m.encode().unwrap());
    let (old, back) = formats::decode_object_row(&row2).unwrap();
    assert_eq!(back, m);
    assert!(
        old.null_version,
        "written before versioning: the null version"
    );
    assert_eq!((old.generation, old.modified_unix_ms), (9, 5));
    assert_eq!(old.tags().unwrap().get("t").map(String::as_str), Some("v"));
    // Rows are written as summary format 3.
    let row3 = formats::encode_object_row(&m, 7).unwrap();
    assert_eq!(row3[4], 3);

    // A summary with an extension this build must understand and does
    // not: refused, not misread. One it may skip: read.
    let mut summary = summary;
    for (tag, readable) in [(0x0001u16, true), (CRITICAL_EXTENSION | 1, false)] {
        summary.extensions = vec![(tag, vec![1, 2, 3])];
        let mut v = vec![3u8];
        v.extend(postcard::to_allocvec(&summary).unwrap());
        let mut row = (v.len() as u32).to_le_bytes().to_vec();
        row.extend_from_slice(&v);
        row.extend_from_slice(&m.encode().unwrap());
        match formats::decode_object_row(&row) {
            Ok((s, _)) => assert!(readable && s.extensions == summary.extensions),
            Err(e) => assert!(!readable && matches!(e, MetaError::Corrupt { .. }), "{e}"),
        }
    }
    // A bucket with Object Lock (a critical extension this build knows)
    // reads back; one with a critical extension it does not is refused.
    let mut locked = formats::decode_bucket(&golden("bucket.bin")).unwrap();
    locked.extensions = vec![(OBJECT_LOCK_EXTENSION, vec![0])];
    let bytes = formats::encode_bucket(&locked).unwrap();
    let back = formats::decode_bucket(&bytes).unwrap();
    assert_eq!(back.object_lock().unwrap(), Some(Default::default()));
    locked.extensions = vec![(CRITICAL_EXTENSION | 0x7ff, vec![])];
    let bytes = formats::encode_bucket(&locked).unwrap();
    assert!(matches!(
        formats::decode_bucket(&bytes),
        Err(MetaError::Corrupt { .. })
    ));
    // A record format from the future is refused.
    let mut future = golden("bucket.bin");
    future[0] = 9;
    assert!(formats::decode_bucket(&future).is_err());
}

/// Regenerates `tests/golden/v1/` from the release's data directory. Run
/// once, by hand, when the fixture is remade:
/// `cargo test -p shardgate-meta --test golden -- --ignored`.
#[test]
#[ignore = "writes the golden files; run by hand when the v1 fixture is remade"]
fn write_golden_files_from_the_v1_fixture() {
    use redb::{ReadableDatabase, ReadableTable, TableDefinition};
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/v1-store/meta.redb");
    let copy = tempfile::tempdir().unwrap();
    let path = copy.path().join("meta.redb");
    std::fs::copy(&fixture, &path).unwrap();
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let out = dir();
    std::fs::create_dir_all(&out).unwrap();
    let write = |name: &str, bytes: &[u8]| std::fs::write(out.join(name), bytes).unwrap();
    let first_str = |t: TableDefinition<&str, &[u8]>| {
        let table = txn.open_table(t).unwrap();
        let (_, v) = table.first().unwrap().unwrap();
        v.value().to_vec()
    };
    let by_key = |t: TableDefinition<&[u8], &[u8]>, key: &[u8]| {
        let table = txn.open_table(t).unwrap();
        table.get(key).unwrap().map(|v| v.value().to_vec())
    };
    let first_bytes = |t: TableDefinition<&[u8], &[u8]>| {
        let table = txn.open_table(t).unwrap();
        let (_, v) = table.first().unwrap().unwrap();
        v.value().to_vec()
    };
    let first_u64 = |t: TableDefinition<u64, &[u8]>| {
        let table = txn.open_table(t).unwrap();
        let (_, v) = table.first().unwrap().unwrap();
        v.value().to_vec()
    };
    write("bucket.bin", &first_str(TableDefinition::new("buckets")));
    let objects = TableDefinition::<&[u8], &[u8]>::new("objects");
    let small = by_key(objects, b"old\0small.txt").unwrap();
    let striped = by_key(objects, b"old\0striped.bin").unwrap();
    write("object-small.bin", &small);
    write("object-striped.bin", &striped);
    let summary_len = u32::from_le_bytes(striped[..4].try_into().unwrap()) as usize;
    write("manifest.bin", &striped[4 + summary_len..]);
    write("upload.bin", &first_bytes(TableDefinition::new("uploads")));
    write("part.bin", &first_bytes(TableDefinition::new("parts")));
    write("intent.bin", &first_u64(TableDefinition::new("intents")));
    write("garbage.bin", &first_u64(TableDefinition::new("garbage")));
}

/// ACLs and Object Ownership are stored as the postcard of the authz
/// crate's types: these bytes pin that form (a reordered enum would
/// misread every stored grant).
#[test]
fn acl_and_ownership_records_keep_their_bytes() {
    use shardgate_authz::acl::ALL_USERS;
    use shardgate_authz::{Acl, Grant, Grantee, Ownership, Permission};
    let acl = Acl {
        owner: "o".into(),
        grants: vec![
            Grant {
                grantee: Grantee::User("o".into()),
                permission: Permission::FullControl,
            },
            Grant {
                grantee: Grantee::Group(ALL_USERS.into()),
                permission: Permission::Read,
            },
            Grant {
                grantee: Grantee::User("u".into()),
                permission: Permission::WriteAcp,
            },
        ],
    };
    let mut expected = vec![1, b'o', 3, 0, 1, b'o', 4, 1, ALL_USERS.len() as u8];
    expected.extend_from_slice(ALL_USERS.as_bytes());
    expected.extend_from_slice(&[0, 0, 1, b'u', 3]);
    assert_eq!(postcard::to_allocvec(&acl).unwrap(), expected);
    for (ownership, byte) in [
        (Ownership::ObjectWriter, 0u8),
        (Ownership::BucketOwnerPreferred, 1),
        (Ownership::BucketOwnerEnforced, 2),
    ] {
        assert_eq!(postcard::to_allocvec(&ownership).unwrap(), [byte]);
    }
    // Read back through a bucket record, as stored.
    let mut bucket = formats::decode_bucket(&golden("bucket.bin")).unwrap();
    bucket.extensions = vec![
        (shardgate_meta::BUCKET_ACL_EXTENSION, expected),
        (shardgate_meta::BUCKET_OWNERSHIP_EXTENSION, vec![1]),
    ];
    let back = formats::decode_bucket(&formats::encode_bucket(&bucket).unwrap()).unwrap();
    assert_eq!(back.acl().unwrap(), Some(acl));
    assert_eq!(
        back.ownership().unwrap(),
        Some(Ownership::BucketOwnerPreferred)
    );
}
