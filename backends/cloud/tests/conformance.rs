//! The cloud backend passes the shared conformance suite against real
//! protocol servers started here on 127.0.0.1: moto's S3 server (PyPI
//! `moto[server]`, installed by `.ci/run`) and, as a fast baseline of the
//! same code path, object_store's in-memory store. Each check gets a fresh
//! prefix in one bucket, so each starts from an empty backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use object_store::ClientOptions;
use object_store::aws::AmazonS3Builder;
use shardgate_backend::{BackendId, BackendInfo, BlobName};
use shardgate_backend_cloud::{CloudBackend, MIN_PART_SIZE};

const BUCKET: &str = "fragments";

/// A moto S3 server for this test process. It is started through a shell
/// that kills it when our end of its stdin closes, which happens however
/// this process ends.
struct Moto {
    endpoint: String,
    _shell: Child,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let port = free_port();
        let shell = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "moto_server -H 127.0.0.1 -p {port} >/dev/null 2>&1 & pid=$!; read _; kill $pid"
            ))
            .stdin(Stdio::piped())
            .spawn()
            .expect("start moto_server (pip install 'moto[server]')");
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        // Create the bucket; moto does not check signatures.
        loop {
            if let Ok(mut s) = TcpStream::connect(&addr) {
                let req = format!(
                    "PUT /{BUCKET} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                s.write_all(req.as_bytes()).expect("create bucket");
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                assert!(answer.starts_with("HTTP/1.1 200"), "create bucket: {answer}");
                break;
            }
            assert!(Instant::now() < deadline, "moto_server did not listen on {addr} within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto {
            endpoint: format!("http://{addr}"),
            _shell: shell,
        }
    })
}

fn info() -> BackendInfo {
    BackendInfo::new(BackendId::new("cloud").expect("valid id"))
}

fn s3_backend() -> CloudBackend {
    s3_backend_at(BlobName::random().as_str())
}

fn s3_backend_at(prefix: &str) -> CloudBackend {
    let store = AmazonS3Builder::new()
        .with_endpoint(&moto().endpoint)
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .with_region("us-east-1")
        .with_bucket_name(BUCKET)
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .with_client_options(
            ClientOptions::new()
                .with_allow_http(true)
                .with_timeout(Duration::from_secs(30))
                .with_connect_timeout(Duration::from_secs(5)),
        )
        .build()
        .expect("s3 store");
    CloudBackend::new(info(), Arc::new(store), prefix, MIN_PART_SIZE)
}

mod s3 {
    use super::*;
    shardgate_backend_conformance::conformance_tests!(Arc::new(s3_backend()));
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
    let addr = moto().endpoint.trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(&addr).expect("connect moto");
    let req =
        format!("GET /{BUCKET}?uploads HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).expect("list uploads");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("list uploads");
    assert!(answer.starts_with("HTTP/1.1 200"), "list uploads: {answer}");
    answer.matches(&format!("<Key>{prefix}/")).count()
}

/// A blob larger than a part that is aborted, or whose writer is dropped,
/// leaves no multipart upload behind on the provider (nothing billed,
/// nothing visible), and one that commits leaves none either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_writes_leave_no_multipart_upload_behind() {
    use shardgate_backend::Backend;
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
