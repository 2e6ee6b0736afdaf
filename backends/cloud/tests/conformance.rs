//! The cloud backend passes the shared conformance suite against real
//! protocol servers started here on 127.0.0.1 (see `shardgate-emulators`):
//! moto's S3 server and Azurite's blob service, the whole suite; and
//! fake-gcs-server, the read half (it serves object_store's reads but not
//! its writes, so blobs are seeded through its JSON API). object_store's
//! in-memory store runs the whole suite as a baseline of the same code.
//! Each check gets a fresh prefix in one bucket, so each starts from an
//! empty backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use shardgate_backend::{Backend, BackendId, BackendInfo, BlobName};
use shardgate_backend_cloud::{
    AzureSettings, CloudBackend, GcsSettings, MIN_PART_SIZE, S3Settings, Timeouts,
};
use shardgate_backend_conformance::Seed;
use shardgate_emulators::Emulator;

const BUCKET: &str = "fragments";

fn moto() -> &'static Emulator {
    static MOTO: OnceLock<Emulator> = OnceLock::new();
    MOTO.get_or_init(|| Emulator::moto(&[BUCKET]))
}

fn azurite() -> &'static Emulator {
    static AZURITE: OnceLock<Emulator> = OnceLock::new();
    AZURITE.get_or_init(|| Emulator::azurite(&[BUCKET]))
}

fn fake_gcs() -> &'static Emulator {
    static GCS: OnceLock<Emulator> = OnceLock::new();
    GCS.get_or_init(|| Emulator::fake_gcs(&[BUCKET]))
}

fn info() -> BackendInfo {
    BackendInfo::new(BackendId::new("cloud").expect("valid id"))
}

fn timeouts() -> Timeouts {
    Timeouts {
        request: Duration::from_secs(30),
        connect: Duration::from_secs(5),
        retries: 2,
    }
}

fn s3_backend_at(prefix: &str) -> CloudBackend {
    CloudBackend::s3(
        info(),
        S3Settings {
            bucket: BUCKET.into(),
            prefix: prefix.into(),
            endpoint: Some(moto().endpoint.clone()),
            region: Some("us-east-1".into()),
            access_key_id: Some("test".into()),
            secret_access_key: Some("test".into()),
            allow_http: true,
            timeouts: timeouts(),
            part_size: MIN_PART_SIZE,
        },
    )
    .expect("s3 backend")
}

fn azure_backend_at(prefix: &str) -> CloudBackend {
    CloudBackend::azure(
        info(),
        AzureSettings {
            container: BUCKET.into(),
            prefix: prefix.into(),
            endpoint: Some(azurite().azure_account_url()),
            use_emulator: true,
            timeouts: timeouts(),
            part_size: MIN_PART_SIZE,
            ..AzureSettings::default()
        },
    )
    .expect("azure backend")
}

/// A GCS backend on fake-gcs-server and a seed that stores its blobs
/// through the server's JSON API, where the backend would put them.
fn gcs_backend_and_seed() -> (Arc<dyn Backend>, Seed) {
    let prefix = BlobName::random().as_str().to_string();
    let backend = CloudBackend::gcs(
        info(),
        GcsSettings {
            bucket: BUCKET.into(),
            prefix: prefix.clone(),
            // The form object_store documents for emulators: no OAuth.
            service_account_key: Some(
                r#"{"disable_oauth":true,"client_email":"","private_key":"","private_key_id":""}"#
                    .into(),
            ),
            endpoint: Some(fake_gcs().endpoint.clone()),
            allow_http: true,
            timeouts: timeouts(),
            part_size: MIN_PART_SIZE,
        },
    )
    .expect("gcs backend");
    let seed: Seed = Arc::new(move |name: &BlobName, data: &[u8]| {
        fake_gcs().gcs_seed(BUCKET, &format!("{prefix}/blobs/{name}"), data)
    });
    (Arc::new(backend), seed)
}

mod s3 {
    use super::*;
    shardgate_backend_conformance::conformance_tests!(Arc::new(s3_backend_at(
        BlobName::random().as_str()
    )));
}

mod azure {
    use super::*;
    shardgate_backend_conformance::conformance_tests!(Arc::new(azure_backend_at(
        BlobName::random().as_str()
    )));
}

mod gcs {
    use super::*;
    shardgate_backend_conformance::conformance_tests!(reads: gcs_backend_and_seed());
}

mod in_memory {
    use super::*;
    shardgate_backend_conformance::conformance_tests!({
        let store = object_store::memory::InMemory::new();
        Arc::new(CloudBackend::new(
            info(),
            Arc::new(store),
            "",
            MIN_PART_SIZE,
        ))
    });
}

/// Multipart uploads in progress under `prefix`, as moto lists them.
fn uploads_in_progress(prefix: &str) -> usize {
    let a = moto().http("GET", &format!("/{BUCKET}?uploads"), &[], b"");
    assert_eq!(a.status, 200, "list uploads: {}", a.text());
    a.text().matches(&format!("<Key>{prefix}/")).count()
}

/// A blob larger than a part that is aborted, or whose writer is dropped,
/// leaves no multipart upload behind on the provider (nothing billed,
/// nothing visible), and one that commits leaves none either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_writes_leave_no_multipart_upload_behind() {
    let prefix = BlobName::random();
    let prefix = prefix.as_str();
    let b = s3_backend_at(prefix);
    let piece = bytes::Bytes::from(vec![7u8; 1 << 20]);
    let mut names = Vec::new();
    for end in ["abort", "drop", "commit"] {
        let name = BlobName::random();
        let mut w = b.create(&name).await.unwrap();
        for _ in 0..12 {
            w.write(piece.clone()).await.unwrap();
        }
        assert_eq!(
            uploads_in_progress(prefix),
            1,
            "{end}: 12 MiB is a multipart upload"
        );
        match end {
            "abort" => w.abort().await.unwrap(),
            "drop" => drop(w),
            _ => assert_eq!(w.commit().await.unwrap().size, 12 << 20),
        }
        names.push((end, name));
    }
    // The dropped writer aborts in the background: wait for it, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    while uploads_in_progress(prefix) > 0 {
        assert!(Instant::now() < deadline, "multipart uploads left behind");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (end, name) in names {
        let found = b.stat(&name).await;
        match end {
            "commit" => assert_eq!(found.unwrap().size, 12 << 20),
            _ => assert!(found.unwrap_err().is_not_found(), "{end}"),
        }
    }
}
