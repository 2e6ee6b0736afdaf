//! The gateway over `s3` backends on a real S3 protocol server (moto,
//! started here on 127.0.0.1): six backends, each a prefix of one bucket,
//! 4 + 2. Objects written with the aws CLI read back byte for byte, the
//! fragments land under every backend's prefix, and nothing stored in the
//! bucket names the object or holds its plaintext.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{Emulator, Server, aws_on, pattern};

#[test]
fn objects_round_trip_through_s3_backends_and_the_bucket_learns_nothing() {
    let moto = Emulator::moto(&["fragments"]);
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.toml");
    let text = support::moto_sites_config(
        &moto,
        "default_policy = \"default\"\n[policies.default]\nk = 4\nm = 2\nsmall_object_bytes = 0\n",
    );
    std::fs::write(&config, text).unwrap();
    let server = Server::start_with(
        &tmp.path().join("data"),
        &[("SHARDGATE_CONFIG", config.to_str().unwrap())],
    );
    server.aws_ok(&["s3", "mb", "s3://holiday-photos"]);
    // A marker in the plaintext that a scan can look for.
    let marker = b"PLAINTEXT-MARKER-7f3a";
    let mut body = pattern(7, 3 << 20);
    body[1000..1000 + marker.len()].copy_from_slice(marker);
    let file = tmp.path().join("beach.jpg");
    std::fs::write(&file, &body).unwrap();
    server.aws_ok(&[
        "s3",
        "cp",
        file.to_str().unwrap(),
        "s3://holiday-photos/2026/beach.jpg",
    ]);
    let back = tmp.path().join("back.jpg");
    server.aws_ok(&[
        "s3",
        "cp",
        "s3://holiday-photos/2026/beach.jpg",
        back.to_str().unwrap(),
    ]);
    assert!(
        std::fs::read(&back).unwrap() == body,
        "the object came back different"
    );

    // Every backend got its fragment, under its own prefix.
    let listing = aws_on(&moto, &["s3", "ls", "--recursive", "s3://fragments/"]);
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    for i in 1..=6 {
        assert!(
            listing.contains(&format!(" site-{i}/blobs/")),
            "no fragment under site-{i}: {listing}"
        );
    }
    assert!(
        !listing.contains("beach") && !listing.contains("holiday"),
        "{listing}"
    );
    // Nothing stored holds the plaintext marker or the names.
    let dump = tmp.path().join("dump");
    let out = aws_on(
        &moto,
        &[
            "s3",
            "cp",
            "--recursive",
            "s3://fragments/",
            dump.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", support::describe(&out));
    let mut files = 0;
    let mut stack = vec![dump];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            // Every blob is scanned; fragments are counted (the manifest
            // journal's are named j...).
            if !path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('j'))
            {
                files += 1;
            }
            let bytes = std::fs::read(&path).unwrap();
            for needle in [&marker[..], b"beach.jpg", b"holiday-photos"] {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "{} holds {:?}",
                    path.display(),
                    String::from_utf8_lossy(needle)
                );
            }
        }
    }
    assert_eq!(files, 6, "one blob per fragment");
}
