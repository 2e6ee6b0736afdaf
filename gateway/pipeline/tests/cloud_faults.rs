//! A write whose cloud backend dies in the middle of the upload, on real
//! S3 protocol servers (two moto servers started here on 127.0.0.1; one
//! holds a single fragment's backend and is killed while the body streams):
//!
//! - with a write quorum the policy allows (5 of 4 + 2), the write succeeds,
//!   the lost fragment is recorded as `Missing` in the manifest for repair,
//!   and the object reads back byte for byte;
//! - with every fragment required, the write fails, and the surviving
//!   provider is left with no blob and no multipart upload in progress.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use shardgate_backend::{Backend, BackendId, BackendInfo, BlobName};
use shardgate_backend_cloud::{CloudBackend, MIN_PART_SIZE, S3Settings, Timeouts};
use shardgate_core::{ErasureCode, FragmentState, Identities, StripeLayout};
use shardgate_emulators::Emulator;
use shardgate_pipeline::{
    BackendSet, ObjectMeta, Placement, Problem, ReadParams, WriteParams, read_object, write_object,
};

const BUCKET: &str = "fragments";
const PIECES: usize = 48;
const PIECE: usize = 1 << 20;
/// The body piece at which the lone backend's provider is killed: a
/// fragment is then about 5 MiB into its 12 MiB multipart upload.
const KILL_AT: usize = 20;

fn backend(s3: &Emulator, id: &str, prefix: &str) -> Arc<dyn Backend> {
    Arc::new(
        CloudBackend::s3(
            BackendInfo::new(BackendId::new(id).unwrap()),
            S3Settings {
                bucket: BUCKET.into(),
                prefix: prefix.into(),
                endpoint: Some(s3.endpoint.clone()),
                region: Some("us-east-1".into()),
                access_key_id: Some("test".into()),
                secret_access_key: Some("test".into()),
                allow_http: true,
                timeouts: Timeouts {
                    request: Duration::from_secs(10),
                    connect: Duration::from_secs(2),
                    retries: 1,
                },
                part_size: MIN_PART_SIZE,
            },
        )
        .unwrap(),
    )
}

fn piece(i: usize) -> Bytes {
    Bytes::from(common::data(PIECE, i as u64 + 1))
}

/// Five backends on `survivor` and fragment 3's on `doomed`, each under
/// its own prefix.
fn placement(survivor: &Emulator, doomed: &Emulator, run: &str) -> Placement {
    let backends = (0..6)
        .map(|i| match i {
            3 => backend(doomed, "doomed", &format!("{run}/doomed")),
            _ => backend(survivor, &format!("s{i}"), &format!("{run}/s{i}")),
        })
        .collect();
    Placement::new(backends)
}

/// Writes the body, killing `doomed` when piece KILL_AT is read.
async fn write(
    placement: &Placement,
    params: &WriteParams,
    doomed: &Emulator,
) -> shardgate_pipeline::Result<shardgate_pipeline::ObjectWrite> {
    let body = stream::iter(0..PIECES)
        .map(|i| {
            if i == KILL_AT {
                doomed.kill();
            }
            Ok(piece(i))
        })
        .boxed();
    write_object(
        body,
        placement,
        params,
        ObjectMeta::default(),
        1_700_000_000_000,
    )
    .await
}

fn params(ids: &Identities, quorum: usize) -> WriteParams {
    let layout = StripeLayout::new(ErasureCode::new(4, 2).unwrap(), 16).unwrap();
    WriteParams::new(layout, Arc::new(ids.recipients()))
        .with_write_quorum(quorum)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_lost_mid_upload_costs_one_fragment_at_quorum() {
    let survivor = Emulator::moto(&[BUCKET]);
    let doomed = Emulator::moto(&[BUCKET]);
    let ids = Identities::generate();
    let run = BlobName::random().to_string();
    let placement = placement(&survivor, &doomed, &run);
    let w = write(&placement, &params(&ids, 5), &doomed)
        .await
        .expect("5 of 6 fragments reach the quorum");
    assert_eq!(w.lost_fragments, vec![3]);
    let states: Vec<_> = w.manifest.segments[0]
        .fragments
        .iter()
        .map(|f| f.state)
        .collect();
    assert_eq!(states[3], FragmentState::Missing, "{states:?}");
    assert_eq!(
        states
            .iter()
            .filter(|s| **s == FragmentState::Stored)
            .count(),
        5
    );
    let set = BackendSet::new(placement.backends().iter().cloned());
    let read = read_object(
        Arc::new(w.manifest),
        None,
        set,
        ReadParams::new(Arc::new(ids)),
    )
    .unwrap();
    let report = read.report.clone();
    let got: Vec<Bytes> = read.stream.try_collect().await.unwrap();
    let want: Vec<u8> = (0..PIECES).flat_map(|i| piece(i).to_vec()).collect();
    assert!(got.concat() == want, "the object came back different");
    let bad = report.bad_fragments();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!((bad[0].fragment, &bad[0].problem), (3, &Problem::NotStored));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_lost_mid_upload_below_quorum_leaves_nothing_on_the_others() {
    let survivor = Emulator::moto(&[BUCKET]);
    let doomed = Emulator::moto(&[BUCKET]);
    let ids = Identities::generate();
    let run = BlobName::random().to_string();
    let placement = placement(&survivor, &doomed, &run);
    let err = write(&placement, &params(&ids, 6), &doomed)
        .await
        .expect_err("every fragment was required");
    assert!(err.to_string().contains("quorum"), "{err}");
    // Nothing visible on the surviving provider, nothing being uploaded.
    for b in &placement.backends()[..3] {
        let blobs: Vec<_> = b.list().try_collect().await.unwrap();
        assert_eq!(blobs, vec![], "{} kept a blob", b.id());
    }
    let mut left = String::new();
    for _ in 0..50 {
        let a = survivor.http("GET", &format!("/{BUCKET}?uploads"), &[], b"");
        assert_eq!(a.status, 200, "{}", a.text());
        let listing = survivor.http("GET", &format!("/{BUCKET}?list-type=2"), &[], b"");
        left = format!("{}\n{}", a.text(), listing.text());
        if !left.contains(&format!("<Key>{run}/")) {
            return;
        }
        // Aborts of dropped writers run in the background: bounded wait.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("left on the surviving provider after 5 s:\n{left}");
}
