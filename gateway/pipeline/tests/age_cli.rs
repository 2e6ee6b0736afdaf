//! What shardgate exports is a standard age file: the real `age` CLI
//! (Debian's `age` package, installed by the README's test command) decrypts it with the
//! gateway's identity file, and with the offline recovery identity alone.
//! Fragments live on real fs backends here, with two of the k + m lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::{body, data};
use futures::TryStreamExt;
use shardgate_backend::{Backend, BackendId, BackendInfo};
use shardgate_backend_fs::FsBackend;
use shardgate_core::{ErasureCode, Identities, Manifest, Recipients, StripeLayout};
use shardgate_pipeline::{
    BackendSet, ObjectMeta, ObjectRead, Placement, ReadParams, WriteParams, export_segment,
    read_inline, read_object, write_inline_object, write_object,
};

fn age_decrypt(identity_file: &std::path::Path, file: &[u8]) -> Vec<u8> {
    let mut child = Command::new("age")
        .args(["--decrypt", "--identity"])
        .arg(identity_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the age CLI: the README's test command (bash scripts/test.sh) installs it");
    let mut stdin = child.stdin.take().unwrap();
    let input = file.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "age failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_age_cli_decrypts_an_export_with_either_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut placement: Vec<Arc<dyn Backend>> = Vec::new();
    for i in 0..6 {
        let info = BackendInfo::new(BackendId::new(format!("disk{i}")).unwrap());
        placement.push(Arc::new(
            FsBackend::open(info, dir.path().join(format!("disk{i}")))
                .await
                .unwrap(),
        ));
    }
    let gateway = Identities::generate();
    let recovery = Identities::generate();
    let recipients = gateway.recipients().join(recovery.recipients());
    assert_eq!(
        Recipients::parse(&recipients.to_strings())
            .unwrap()
            .to_strings()
            .len(),
        2
    );
    let layout = StripeLayout::new(ErasureCode::new(4, 2).unwrap(), 2).unwrap();
    let params = WriteParams::new(layout, Arc::new(recipients));
    let plain = data(3 * 2 * 65536 + 4321, 11);
    let w = write_object(
        body(&plain, 65_000),
        &Placement::new(placement.clone()),
        &params,
        ObjectMeta::default(),
        1,
    )
    .await
    .unwrap();

    // Lose two fragments, one of them a data fragment: export must decode.
    for i in [1, 5] {
        let f = &w.manifest.segments[0].fragments[i];
        placement[i].delete(&f.blob).await.unwrap();
    }
    let set = BackendSet::new(placement.clone());
    let read = ReadParams::new(Arc::new(gateway.clone()));
    // Stored in fragments: not read at once, whatever the range.
    for range in [None, Some(0..1)] {
        assert!(read_inline(&w.manifest, range, &read).unwrap().is_none());
    }
    let export = export_segment(Arc::new(w.manifest.clone()), 0, set, read).unwrap();
    both_keys_decrypt(dir.path(), export, [&gateway, &recovery], &plain).await;
}

/// The export is a whole age file that the age CLI decrypts to `plain`
/// with either identity (the gateway's, the recovery key).
async fn both_keys_decrypt(dir: &Path, export: ObjectRead, keys: [&Identities; 2], plain: &[u8]) {
    let file: Vec<u8> = export
        .stream
        .map_ok(|b| b.to_vec())
        .try_concat()
        .await
        .unwrap();
    assert_eq!(file.len() as u64, export.range.end);
    assert!(file.starts_with(b"age-encryption.org/v1\n"));
    for (name, ids) in ["gateway.key", "recovery.key"].into_iter().zip(keys) {
        let path = dir.join(name);
        std::fs::write(&path, ids.to_identity_file()).unwrap();
        assert!(
            age_decrypt(&path, &file) == plain,
            "{name} did not decrypt to the plaintext"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_object_reads_back_in_ranges_and_exports_as_an_age_file() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Identities::generate();
    let recovery = Identities::generate();
    let recipients = gateway.recipients().join(recovery.recipients());
    let plain = data(70_000, 5);
    let w = write_inline_object(
        body(&plain, 3_000),
        &recipients,
        70_000,
        ObjectMeta::default(),
        1,
    )
    .await
    .unwrap();
    assert!(w.manifest.segments[0].is_inline());
    assert!(w.manifest.segments[0].fragments.is_empty());
    let mut md5 = md5_many::Md5State::default();
    md5.update(&plain);
    assert_eq!(w.manifest.etag, hex::encode(md5.finalize()));
    // No backend at all: reading never asks one.
    let set = BackendSet::new(Vec::<Arc<dyn Backend>>::new());
    let manifest = Arc::new(Manifest::decode(&w.manifest.encode().unwrap()).unwrap());
    for range in [None, Some(0..1), Some(65_530..65_540), Some(69_999..70_000)] {
        let read = ReadParams::new(Arc::new(gateway.clone()));
        let got: Vec<u8> = read_object(manifest.clone(), range.clone(), set.clone(), read)
            .unwrap()
            .stream
            .map_ok(|b| b.to_vec())
            .try_concat()
            .await
            .unwrap();
        let r = range.clone().unwrap_or(0..70_000);
        assert!(got == plain[r.start as usize..r.end as usize], "{r:?}");
        // At once, as a small GET reads it: the same bytes.
        let read = ReadParams::new(Arc::new(gateway.clone()));
        let at_once = read_inline(&manifest, range, &read).unwrap().unwrap();
        assert!(at_once == got, "{r:?}");
    }
    let read = ReadParams::new(Arc::new(gateway.clone()));
    assert!(read_inline(&manifest, Some(69_999..70_001), &read).is_err());
    let other = ReadParams::new(Arc::new(Identities::generate()));
    assert!(read_inline(&manifest, None, &other).is_err());
    // One byte more than the limit is refused, not stored.
    let refused = write_inline_object(
        body(&plain, 3_000),
        &recipients,
        69_999,
        ObjectMeta::default(),
        1,
    )
    .await;
    assert!(refused.is_err());

    let read = ReadParams::new(Arc::new(gateway.clone()));
    let export = export_segment(manifest, 0, set, read).unwrap();
    both_keys_decrypt(dir.path(), export, [&gateway, &recovery], &plain).await;
}
