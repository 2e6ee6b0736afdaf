//! An upgrade: the data directory the release of 2026-12-04 left
//! (`tests/fixtures/v1-store`, made by `make_v1_store.sh` with that
//! release's binary: record and manifest format 1, first-release garbage
//! entries, a format-1 intent of a PUT cut by kill -9, an upload in
//! progress) opened by this build. Every object reads back, the upload
//! completes, the old garbage and the cut PUT's blobs are collected, and
//! new writes go beside the old rows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::{Server, blob_files, describe};

/// The bytes of `make_v1_store.sh`'s `pattern SEED LEN`.
fn pattern(seed: u64, len: u64) -> Vec<u8> {
    (0..len).map(|i| ((i * seed + 3) % 251) as u8).collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn get(server: &Server, dir: &Path, key: &str) -> Result<Vec<u8>, String> {
    let file = dir.join(format!("got-{key}"));
    let out = server.python("op.py", &["get", "old", key, file.to_str().unwrap()]);
    match out.status.success() {
        true => Ok(std::fs::read(&file).unwrap()),
        false => Err(describe(&out)),
    }
}

#[test]
fn a_data_directory_of_the_first_release_opens_reads_and_collects() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/v1-store");
    copy_dir(&fixture, &data);
    // git keeps no modes: the secrets must be private again.
    use std::os::unix::fs::PermissionsExt;
    for secret in [
        "credentials",
        "keys/gateway-identity.txt",
        "keys/recovery-identity.txt",
    ] {
        std::fs::set_permissions(data.join(secret), std::fs::Permissions::from_mode(0o600))
            .unwrap();
    }
    // On disk: small 3 + striped 6 + overwritten twice 6 + 6 + the part 6.
    assert_eq!(blob_files(&data).len(), 27);
    // The fixture's upload was started when the fixture was made: it must
    // not expire (after a day, by default) before this test completes it.
    let server = Server::start_with(&data, &[("SHARDGATE_UPLOAD_EXPIRY_SECS", "3153600000")]);

    assert_eq!(
        get(&server, dir.path(), "small.txt").unwrap(),
        b"hello from shardgate v1\n"
    );
    assert_eq!(
        get(&server, dir.path(), "striped.bin").unwrap(),
        pattern(7, 102_400)
    );
    assert_eq!(
        get(&server, dir.path(), "overwritten.bin").unwrap(),
        pattern(17, 30_720)
    );
    // Each read unwrapped its key once and keeps it opened: a second read
    // goes through the cached key and gets the same bytes.
    assert_eq!(server.metrics()["shardgate_opened_keys{}"], 3.0);
    assert_eq!(
        get(&server, dir.path(), "striped.bin").unwrap(),
        pattern(7, 102_400)
    );
    assert_eq!(server.metrics()["shardgate_opened_keys{}"], 3.0);
    let cut = get(&server, dir.path(), "interrupted.bin").unwrap_err();
    assert!(cut.contains("NoSuchKey"), "{cut}");
    let head = server.aws_ok(&[
        "s3api",
        "head-object",
        "--bucket",
        "old",
        "--key",
        "small.txt",
    ]);
    assert!(
        head.contains("text/plain") && head.contains("\"color\": \"blue\""),
        "{head}"
    );

    // The upload in progress completes with its v1 part.
    let uploads = server.aws_ok(&[
        "s3api",
        "list-multipart-uploads",
        "--bucket",
        "old",
        "--query",
        "Uploads[].UploadId",
        "--output",
        "text",
    ]);
    let upload = uploads.trim().to_string();
    assert_eq!(upload.len(), 32, "{uploads}");
    let parts = server.aws_ok(&[
        "s3api",
        "list-parts",
        "--bucket",
        "old",
        "--key",
        "multipart.bin",
        "--upload-id",
        &upload,
        "--query",
        "Parts[0].[PartNumber,Size,ETag]",
        "--output",
        "text",
    ]);
    let fields: Vec<&str> = parts.split_whitespace().collect();
    assert_eq!(fields[..2], ["1", "20480"], "{parts}");
    let etag = fields[2].trim_matches('"').to_string();
    let parts_json = format!("{{\"Parts\":[{{\"PartNumber\":1,\"ETag\":\"{etag}\"}}]}}");
    server.aws_ok(&[
        "s3api",
        "complete-multipart-upload",
        "--bucket",
        "old",
        "--key",
        "multipart.bin",
        "--upload-id",
        &upload,
        "--multipart-upload",
        &parts_json,
    ]);
    assert_eq!(
        get(&server, dir.path(), "multipart.bin").unwrap(),
        pattern(13, 20_480)
    );

    // First-release garbage (the overwritten version) and the cut PUT's
    // intent are collected: what stays is exactly the live fragments.
    let deadline = Instant::now() + Duration::from_secs(30);
    while blob_files(&data).len() != 21 || server.garbage_total() != 0.0 {
        assert!(
            Instant::now() < deadline,
            "{} blobs (21 live), {} garbage items",
            blob_files(&data).len(),
            server.garbage_total()
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // New rows beside the old: an overwrite of a v1 row, read back.
    let file = dir.path().join("new");
    std::fs::write(&file, b"written by the new build").unwrap();
    let out = server.python(
        "op.py",
        &["put", "old", "small.txt", file.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        get(&server, dir.path(), "small.txt").unwrap(),
        b"written by the new build"
    );
    assert_eq!(
        get(&server, dir.path(), "striped.bin").unwrap(),
        pattern(7, 102_400)
    );
}
