//! Real S3 clients (aws CLI, boto3, rclone, s3cmd) against the real
//! binary on 127.0.0.1, on its embedded default (six fs sites, 4 + 2).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;

use support::{Server, describe, pattern, run};

/// Sizes around every edge the codec has: empty, one byte, the
/// small-object threshold (16 KiB: whole copies up to it, fragments above),
/// the age chunk (64 KiB), the stripe (1 MiB for 4 + 2) and a few stripes.
const EDGE_SIZES: &[usize] = &[
    0,
    1,
    16_384,
    16_385,
    65_535,
    65_536,
    65_537,
    (1 << 20) - 1,
    1 << 20,
    (1 << 20) + 1,
    3 * (1 << 20) + 17,
];

#[test]
fn aws_cli_round_trips_edges_and_a_100_mib_object() {
    let dir = tempfile::tempdir().unwrap();
    aws_cli_suite(&Server::start(&dir.path().join("data")), dir.path());
}

#[test]
fn aws_cli_round_trips_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _certs) = Server::start_tls(&dir.path().join("data"), &[]);
    aws_cli_suite(&server, dir.path());
}

fn aws_cli_suite(server: &Server, dir: &Path) {
    let files = dir.join("files");
    std::fs::create_dir_all(&files).unwrap();
    server.aws_ok(&["s3", "mb", "s3://edges"]);
    for (i, size) in EDGE_SIZES.iter().enumerate() {
        let path = files.join(format!("f{size}"));
        std::fs::write(&path, pattern(i as u64, *size)).unwrap();
        server.aws_ok(&[
            "s3api",
            "put-object",
            "--bucket",
            "edges",
            "--key",
            &format!("edge/{size}"),
            "--body",
            path.to_str().unwrap(),
            "--metadata",
            "origin=test,size-class=edge",
            "--content-type",
            "application/x-edge",
        ]);
        let back = files.join(format!("back{size}"));
        let head = server.aws_ok(&[
            "s3api",
            "get-object",
            "--bucket",
            "edges",
            "--key",
            &format!("edge/{size}"),
            back.to_str().unwrap(),
        ]);
        assert_eq!(
            std::fs::read(&back).unwrap(),
            pattern(i as u64, *size),
            "size {size}"
        );
        assert!(head.contains("\"origin\": \"test\""), "{head}");
        assert!(head.contains("application/x-edge"), "{head}");
    }
    // A range in the middle of a stripe edge object.
    let part = files.join("range");
    let out = server.aws_ok(&[
        "s3api",
        "get-object",
        "--bucket",
        "edges",
        "--key",
        "edge/1048577",
        "--range",
        "bytes=1048570-1048576",
        part.to_str().unwrap(),
    ]);
    assert!(out.contains("bytes 1048570-1048576/1048577"), "{out}");
    let index = EDGE_SIZES.iter().position(|s| *s == (1 << 20) + 1).unwrap();
    let full = pattern(index as u64, (1 << 20) + 1);
    assert_eq!(std::fs::read(&part).unwrap(), &full[1_048_570..]);

    // 100 MiB of random content through `s3 cp` (multipart) and back.
    let big = files.join("big");
    let mut data = vec![0u8; 100 << 20];
    ring_fill(&mut data);
    std::fs::write(&big, &data).unwrap();
    server.aws_ok(&["s3", "cp", big.to_str().unwrap(), "s3://edges/big/100MiB"]);
    let ls = server.aws_ok(&["s3", "ls", "--recursive", "s3://edges"]);
    assert!(ls.contains("104857600 big/100MiB"), "{ls}");
    assert_eq!(ls.lines().count(), EDGE_SIZES.len() + 1, "{ls}");
    let back = files.join("big.back");
    server.aws_ok(&["s3", "cp", "s3://edges/big/100MiB", back.to_str().unwrap()]);
    assert!(std::fs::read(&back).unwrap() == data, "100 MiB differs");
    let listed = server.aws_ok(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        "edges",
        "--delimiter",
        "/",
    ]);
    assert!(listed.contains("\"Prefix\": \"big/\"") && listed.contains("\"Prefix\": \"edge/\""));
    server.aws_ok(&["s3", "rm", "--recursive", "s3://edges"]);
    server.aws_ok(&["s3", "rb", "s3://edges"]);
}

/// Random bytes (no RNG crate needed in tests).
fn ring_fill(buf: &mut [u8]) {
    let mut f = std::fs::File::open("/dev/urandom").unwrap();
    std::io::Read::read_exact(&mut f, buf).unwrap();
}

#[test]
fn boto3_suite_passes() {
    let dir = tempfile::tempdir().unwrap();
    boto3_suite(&Server::start(&dir.path().join("data")));
}

#[test]
fn boto3_suite_passes_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _certs) = Server::start_tls(&dir.path().join("data"), &[]);
    boto3_suite(&server);
}

/// Over HTTPS, botocore streams PUT bodies aws-chunked with trailing
/// checksums, so the suite covers that path too.
fn boto3_suite(server: &Server) {
    let out = server.python("boto3_suite.py", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    // The server is still healthy after every bad request of the suite.
    assert_eq!(server.get("/health").unwrap().0, 200);
    let log = server.log_text();
    assert!(!log.contains("panicked"), "{log}");
}

/// Every additional checksum algorithm, sent in headers over HTTP.
#[test]
fn boto3_checks_every_checksum_in_headers() {
    let dir = tempfile::tempdir().unwrap();
    checksums(&Server::start(&dir.path().join("data")));
}

/// Every additional checksum algorithm, sent in the trailer of an
/// aws-chunked body (what botocore does over HTTPS).
#[test]
fn boto3_checks_every_checksum_in_trailers() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _certs) = Server::start_tls(&dir.path().join("data"), &[]);
    checksums(&server);
}

fn checksums(server: &Server) {
    let out = server.python_with_crt("checksums.py", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!server.log_text().contains("panicked"));
}

#[test]
fn boto3_and_browser_requests_follow_bucket_cors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let out = server.python("cors.py", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!server.log_text().contains("panicked"));
}

/// The aws CLI through versioning, checksums, CORS and Object Lock's
/// configuration errors: each call's JSON, and S3's code when refused.
#[test]
fn aws_cli_versions_checksums_cors_and_lock_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let file = |name: &str, body: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        path.to_string_lossy().into_owned()
    };
    let api = |args: &[&str]| -> serde_json::Value {
        let out = server.aws_ok(&[&["s3api"], args].concat());
        match out.trim() {
            "" => serde_json::Value::Null,
            json => serde_json::from_str(json).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}")),
        }
    };
    let refused = |args: &[&str], code: &str| {
        let out = server.aws(&[&["s3api"], args].concat());
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(
            describe(&out).contains(code),
            "{args:?}: want {code}: {}",
            describe(&out)
        );
    };
    let (one, two) = (file("one", b"first"), file("two", b"second"));
    let b = ["--bucket", "cli-ver"];
    api(&[&["create-bucket"], &b[..]].concat());

    // Versioning.
    refused(
        &[
            &["put-bucket-versioning"],
            &b[..],
            &["--versioning-configuration", "Status=Sometimes"],
        ]
        .concat(),
        "MalformedXML",
    );
    api(&[
        &["put-bucket-versioning"],
        &b[..],
        &["--versioning-configuration", "Status=Enabled"],
    ]
    .concat());
    assert_eq!(
        api(&[&["get-bucket-versioning"], &b[..]].concat())["Status"],
        "Enabled"
    );
    let put = |body: &str| {
        api(&[&["put-object"], &b[..], &["--key", "k", "--body", body]].concat())["VersionId"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (v1, v2) = (put(&one), put(&two));
    assert_ne!(v1, v2);
    let listed = api(&[&["list-object-versions"], &b[..]].concat());
    let ids: Vec<&str> = listed["Versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["VersionId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [v2.as_str(), v1.as_str()], "newest first: {listed}");
    let out = dir.path().join("out").to_string_lossy().into_owned();
    api(&[
        &["get-object"],
        &b[..],
        &["--key", "k", "--version-id", &v1, &out],
    ]
    .concat());
    assert_eq!(std::fs::read(&out).unwrap(), b"first");
    let marker = api(&[&["delete-object"], &b[..], &["--key", "k"]].concat());
    assert_eq!(marker["DeleteMarker"], true, "{marker}");
    refused(&[&["head-object"], &b[..], &["--key", "k"]].concat(), "404");
    let marker = marker["VersionId"].as_str().unwrap();
    api(&[
        &["delete-object"],
        &b[..],
        &["--key", "k", "--version-id", marker],
    ]
    .concat());
    api(&[&["get-object"], &b[..], &["--key", "k", &out]].concat());
    assert_eq!(
        std::fs::read(&out).unwrap(),
        b"second",
        "the marker's removal restores v2"
    );
    refused(
        &[
            &["get-object"],
            &b[..],
            &["--key", "k", "--version-id", "nope", &out],
        ]
        .concat(),
        "InvalidArgument",
    );

    // Checksums.
    let sum = api(&[
        &["put-object"],
        &b[..],
        &[
            "--key",
            "sum",
            "--body",
            &one,
            "--checksum-algorithm",
            "SHA256",
        ],
    ]
    .concat());
    let head = api(&[
        &["head-object"],
        &b[..],
        &["--key", "sum", "--checksum-mode", "ENABLED"],
    ]
    .concat());
    assert_eq!(head["ChecksumSHA256"], sum["ChecksumSHA256"], "{head}");
    refused(
        &[
            &["put-object"],
            &b[..],
            &[
                "--key",
                "bad",
                "--body",
                &one,
                "--checksum-crc32",
                "AAAAAA==",
            ],
        ]
        .concat(),
        "BadDigest",
    );

    // CORS.
    refused(
        &[&["get-bucket-cors"], &b[..]].concat(),
        "NoSuchCORSConfiguration",
    );
    let cors = r#"{"CORSRules":[{"AllowedOrigins":["https://a.example"],"AllowedMethods":["GET"],"MaxAgeSeconds":60}]}"#;
    api(&[
        &["put-bucket-cors"],
        &b[..],
        &["--cors-configuration", cors],
    ]
    .concat());
    let got = api(&[&["get-bucket-cors"], &b[..]].concat());
    assert_eq!(
        got["CORSRules"][0]["AllowedOrigins"][0], "https://a.example",
        "{got}"
    );
    refused(
        &[
            &["put-bucket-cors"],
            &b[..],
            &[
                "--cors-configuration",
                r#"{"CORSRules":[{"AllowedOrigins":["*"],"AllowedMethods":["PATCH"]}]}"#,
            ],
        ]
        .concat(),
        "InvalidRequest",
    );
    api(&[&["delete-bucket-cors"], &b[..]].concat());
    refused(
        &[&["get-bucket-cors"], &b[..]].concat(),
        "NoSuchCORSConfiguration",
    );

    // Conditional writes, UploadPartCopy with a range, GetObjectAttributes.
    let etag = api(&[&["head-object"], &b[..], &["--key", "sum"]].concat())["ETag"]
        .as_str()
        .unwrap()
        .to_string();
    refused(
        &[
            &["put-object"],
            &b[..],
            &["--key", "sum", "--body", &two, "--if-match", "\"0000\""],
        ]
        .concat(),
        "PreconditionFailed",
    );
    api(&[
        &["put-object"],
        &b[..],
        &["--key", "sum", "--body", &two, "--if-match", &etag],
    ]
    .concat());
    refused(
        &[
            &["put-object"],
            &b[..],
            &["--key", "sum", "--body", &two, "--if-none-match", "*"],
        ]
        .concat(),
        "PreconditionFailed",
    );
    let upload =
        api(&[&["create-multipart-upload"], &b[..], &["--key", "mp"]].concat())["UploadId"]
            .as_str()
            .unwrap()
            .to_string();
    let part = api(&[
        &["upload-part-copy"],
        &b[..],
        &["--key", "mp", "--upload-id", &upload, "--part-number", "1"],
        &[
            "--copy-source",
            "cli-ver/sum",
            "--copy-source-range",
            "bytes=1-3",
        ],
    ]
    .concat());
    let part_etag = part["CopyPartResult"]["ETag"].as_str().unwrap().to_string();
    let parts = format!(r#"{{"Parts":[{{"PartNumber":1,"ETag":{part_etag:?}}}]}}"#);
    api(&[
        &["complete-multipart-upload"],
        &b[..],
        &[
            "--key",
            "mp",
            "--upload-id",
            &upload,
            "--multipart-upload",
            &parts,
        ],
    ]
    .concat());
    api(&[&["get-object"], &b[..], &["--key", "mp", &out]].concat());
    assert_eq!(
        std::fs::read(&out).unwrap(),
        b"eco",
        "bytes 1-3 of \"second\""
    );
    let attrs = api(&[
        &["get-object-attributes"],
        &b[..],
        &[
            "--key",
            "mp",
            "--object-attributes",
            "ObjectSize",
            "ObjectParts",
            "ETag",
        ],
    ]
    .concat());
    assert_eq!(attrs["ObjectSize"], 3, "{attrs}");
    assert_eq!(attrs["ObjectParts"]["TotalPartsCount"], 1, "{attrs}");

    // Object Lock's configuration errors.
    let plain = ["--bucket", "cli-plain"];
    api(&[&["create-bucket"], &plain[..]].concat());
    let lock = r#"{"ObjectLockEnabled":"Enabled","Rule":{"DefaultRetention":{"Mode":"GOVERNANCE","Days":1}}}"#;
    refused(
        &[
            &["put-object-lock-configuration"],
            &plain[..],
            &["--object-lock-configuration", lock],
        ]
        .concat(),
        "InvalidBucketState",
    );
    let zero = r#"{"ObjectLockEnabled":"Enabled","Rule":{"DefaultRetention":{"Mode":"GOVERNANCE","Days":0}}}"#;
    refused(
        &[
            &["put-object-lock-configuration"],
            &b[..],
            &["--object-lock-configuration", zero],
        ]
        .concat(),
        "InvalidRetentionPeriod",
    );
    api(&[
        &["put-object-lock-configuration"],
        &b[..],
        &["--object-lock-configuration", lock],
    ]
    .concat());
    refused(
        &[
            &["put-bucket-versioning"],
            &b[..],
            &["--versioning-configuration", "Status=Suspended"],
        ]
        .concat(),
        "InvalidBucketState",
    );
    assert!(!server.log_text().contains("panicked"));
}

#[test]
fn boto3_tags_objects() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let out = server.python("tagging.py", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!server.log_text().contains("panicked"));
}

#[test]
fn boto3_versions_objects() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let out = server.python("versioning.py", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!server.log_text().contains("panicked"));
}

/// Issue 26: signed GETs of whole objects (header-signed by boto3, and
/// presigned) take the gateway's fast path and answer the same headers
/// and bytes as s3s's generic path, for inline, fragmented, multipart,
/// versioned, locked and described objects; a wrong secret, a tampered,
/// re-targeted or expired URL, a skewed date, another user's bucket and a
/// missing key are refused the generic way, never by the fast path
/// (`clients/fast_get.py`).
#[test]
fn boto3_gets_take_the_fast_path_and_answer_as_the_generic_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let user = server.admin_json(&["user", "create", "stranger"]);
    let (key, secret) = (
        user["access_key"].as_str().unwrap(),
        user["secret_key"].as_str().unwrap(),
    );
    let out = server.python("fast_get.py", &[key, secret]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!server.log_text().contains("panicked"));
}

#[test]
fn boto3_locks_objects() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let out = server.python("object_lock.py", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!server.log_text().contains("panicked"));
}

#[test]
fn boto3_copies_parts_and_reads_attributes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let out = server.python("part_copy_and_attributes.py", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!server.log_text().contains("panicked"));
}

/// Issue 19's protocol details, one test each: a section of
/// tests/clients/protocol.py, with boto3 (or curl) sending it.
fn protocol_detail(section: &str) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let out = server.python("protocol.py", &[section]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        describe(&out).contains(&format!("protocol {section}: all checks passed")),
        "{}",
        describe(&out)
    );
    assert!(!server.log_text().contains("panicked"));
}

macro_rules! protocol_details {
    ($($test:ident => $section:literal,)*) => {$(
        #[test]
        fn $test() {
            protocol_detail($section);
        }
    )*};
}

protocol_details! {
    list_buckets_pages_by_max_buckets_prefix_and_token => "list_buckets",
    listings_encode_names_once_and_only_when_asked => "listing_encoding",
    presigned_url_expiry_is_bounded_and_checked_before_the_object => "presigned_expiry",
    a_completion_retried_after_success_gets_the_same_answer => "completion_retried",
    a_part_sent_twice_at_once_is_the_one_that_finished_last => "part_sent_twice",
    get_and_head_part_number_answer_as_s3_does => "part_number",
    torrent_answers_as_s3_does => "torrent",
    puts_of_unknown_length_are_taken_whole => "unknown_length",
    aws_chunked_is_not_kept_as_the_content_encoding => "aws_chunked",
    rfc_2047_metadata_is_decoded_and_answered_encoded => "rfc2047",
}

/// Issue 19: browser POST uploads (boto3's presigned POST forms, sent as a
/// browser sends them) hold to every condition of their policy, with S3's
/// codes; `${filename}`, the form's ACL, success_action_status and
/// success_action_redirect; an unsigned form decided per key.
#[test]
fn browser_post_uploads_hold_to_their_policy() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let out = server.python("browser_post.py", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!server.log_text().contains("panicked"));
}

#[test]
fn aws_cli_tags_objects() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let file = dir.path().join("body");
    std::fs::write(&file, b"tagged").unwrap();
    let file = file.to_str().unwrap();
    server.aws_ok(&["s3", "mb", "s3://cli-tags"]);
    let put = [
        "s3api",
        "put-object",
        "--bucket",
        "cli-tags",
        "--key",
        "k",
        "--body",
        file,
    ];
    server.aws_ok(&[&put[..], &["--tagging", "env=prod&team=a"]].concat());
    let tags = |key: &str| -> serde_json::Value {
        let out = server.aws_ok(&[
            "s3api",
            "get-object-tagging",
            "--bucket",
            "cli-tags",
            "--key",
            key,
        ]);
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["TagSet"].clone()
    };
    assert_eq!(
        tags("k"),
        serde_json::json!([{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "a"}])
    );
    server.aws_ok(&[
        "s3api",
        "put-object-tagging",
        "--bucket",
        "cli-tags",
        "--key",
        "k",
        "--tagging",
        "TagSet=[{Key=owner,Value=ops}]",
    ]);
    assert_eq!(
        tags("k"),
        serde_json::json!([{"Key": "owner", "Value": "ops"}])
    );
    server.aws_ok(&[
        "s3api",
        "delete-object-tagging",
        "--bucket",
        "cli-tags",
        "--key",
        "k",
    ]);
    assert_eq!(tags("k"), serde_json::json!([]));
    // A refused tag set: the CLI reports S3's code and fails.
    let bad = server.aws(&[&put[..], &["--tagging", "aws:reserved=1"]].concat());
    assert!(!bad.status.success());
    assert!(describe(&bad).contains("InvalidTag"), "{}", describe(&bad));
    // The bucket's own tags.
    server.aws_ok(&[
        "s3api",
        "put-bucket-tagging",
        "--bucket",
        "cli-tags",
        "--tagging",
        "TagSet=[{Key=cost,Value=ops}]",
    ]);
    let out = server.aws_ok(&["s3api", "get-bucket-tagging", "--bucket", "cli-tags"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["TagSet"],
        serde_json::json!([{"Key": "cost", "Value": "ops"}])
    );
    server.aws_ok(&["s3api", "delete-bucket-tagging", "--bucket", "cli-tags"]);
    let none = server.aws(&["s3api", "get-bucket-tagging", "--bucket", "cli-tags"]);
    assert!(
        describe(&none).contains("NoSuchTagSet"),
        "{}",
        describe(&none)
    );
}

#[test]
fn rclone_copies_syncs_and_checks_a_tree() {
    let dir = tempfile::tempdir().unwrap();
    rclone_suite(&Server::start(&dir.path().join("data")), dir.path());
}

#[test]
fn rclone_copies_syncs_and_checks_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _certs) = Server::start_tls(&dir.path().join("data"), &[]);
    rclone_suite(&server, dir.path());
}

/// rclone with the remote `sg:` on `server`, configured by environment
/// alone (no config file).
fn rclone_command(server: &Server) -> Command {
    let mut cmd = Command::new("rclone");
    cmd.env("RCLONE_CONFIG_SG_TYPE", "s3")
        .env("RCLONE_CONFIG_SG_PROVIDER", "Other")
        .env("RCLONE_CONFIG_SG_ENDPOINT", server.endpoint())
        .env("RCLONE_CONFIG_SG_ACCESS_KEY_ID", &server.access_key)
        .env("RCLONE_CONFIG_SG_SECRET_ACCESS_KEY", &server.secret_key)
        .env("RCLONE_CONFIG_SG_REGION", "us-east-1")
        .env("RCLONE_CONFIG_SG_FORCE_PATH_STYLE", "true")
        .env("RCLONE_CONFIG", "/dev/null")
        .envs(server.env());
    cmd
}

fn rclone_suite(server: &Server, dir: &Path) {
    let tree = dir.join("tree");
    for (i, (name, size)) in [
        ("a.txt", 10),
        ("empty", 0),
        ("sub/b.bin", 300_000),
        ("sub/deeper/c.bin", 2_000_000),
        ("sub/deeper/d", 65_536),
    ]
    .iter()
    .enumerate()
    {
        let p = tree.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, pattern(100 + i as u64, *size)).unwrap();
    }
    let rclone = |args: &[&str]| {
        let out = run(rclone_command(server).args(args));
        assert!(out.status.success(), "rclone {args:?}: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let t = tree.to_str().unwrap();
    rclone(&["mkdir", "sg:rclone-tree"]);
    rclone(&["copy", t, "sg:rclone-tree/copy"]);
    rclone(&["check", t, "sg:rclone-tree/copy"]);
    // Change the tree, sync, check again: the deleted file is gone remotely.
    std::fs::remove_file(tree.join("a.txt")).unwrap();
    std::fs::write(tree.join("new.txt"), b"new file").unwrap();
    std::fs::write(tree.join("sub/b.bin"), pattern(999, 123_456)).unwrap();
    rclone(&["sync", t, "sg:rclone-tree/copy"]);
    rclone(&["check", t, "sg:rclone-tree/copy"]);
    let listed = rclone(&["lsf", "-R", "sg:rclone-tree/copy"]);
    assert!(
        !listed.contains("a.txt") && listed.contains("new.txt"),
        "{listed}"
    );
    let back = dir.join("back");
    rclone(&["copy", "sg:rclone-tree/copy", back.to_str().unwrap()]);
    let out = run(Command::new("diff").args(["-r", t, back.to_str().unwrap()]));
    assert!(out.status.success(), "{}", describe(&out));
}

#[test]
fn s3cmd_puts_lists_gets_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    s3cmd_suite(&Server::start(&dir.path().join("data")), dir.path());
}

#[test]
fn s3cmd_puts_lists_gets_and_deletes_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _certs) = Server::start_tls(&dir.path().join("data"), &[]);
    s3cmd_suite(&server, dir.path());
}

fn s3cmd_suite(server: &Server, dir: &Path) {
    let cfg = dir.join("s3cfg");
    std::fs::write(
        &cfg,
        format!(
            "[default]\naccess_key = {}\nsecret_key = {}\nhost_base = {}\nhost_bucket = {}\nbucket_location = us-east-1\nsignature_v2 = False\n{}",
            server.access_key,
            server.secret_key,
            server.addr,
            server.addr,
            match &server.ca {
                Some(ca) => format!(
                    "use_https = True\ncheck_ssl_certificate = True\ncheck_ssl_hostname = True\nca_certs_file = {}\n",
                    ca.display()
                ),
                None => "use_https = False\n".to_string(),
            }
        ),
    )
    .unwrap();
    let s3cmd = |args: &[&str]| {
        let out = run(Command::new("s3cmd").arg("-c").arg(&cfg).args(args));
        assert!(out.status.success(), "s3cmd {args:?}: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let file = dir.join("f.bin");
    std::fs::write(&file, pattern(5, 1_234_567)).unwrap();
    s3cmd(&["mb", "s3://s3cmd-bucket"]);
    s3cmd(&["put", file.to_str().unwrap(), "s3://s3cmd-bucket/dir/f.bin"]);
    let ls = s3cmd(&["ls", "-r", "s3://s3cmd-bucket"]);
    assert!(
        ls.contains("s3://s3cmd-bucket/dir/f.bin") && ls.contains("1234567"),
        "{ls}"
    );
    let back = dir.join("back.bin");
    s3cmd(&["get", "s3://s3cmd-bucket/dir/f.bin", back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), pattern(5, 1_234_567));
    // s3cmd's multipart (15 MiB chunks) for a bigger file.
    let big = dir.join("big.bin");
    std::fs::write(&big, pattern(6, 20 << 20)).unwrap();
    s3cmd(&["put", big.to_str().unwrap(), "s3://s3cmd-bucket/big.bin"]);
    let back = dir.join("big.back");
    s3cmd(&["get", "s3://s3cmd-bucket/big.bin", back.to_str().unwrap()]);
    assert!(std::fs::read(&back).unwrap() == pattern(6, 20 << 20));
    // --acl-public, unmodified: anyone reads what it published, with curl;
    // setacl takes it back.
    let public = dir.join("public.txt");
    std::fs::write(&public, b"published by s3cmd").unwrap();
    s3cmd(&[
        "put",
        "--acl-public",
        public.to_str().unwrap(),
        "s3://s3cmd-bucket/public.txt",
    ]);
    assert_eq!(
        unsigned_get(server, "/s3cmd-bucket/public.txt"),
        (200, "published by s3cmd".to_string())
    );
    assert_eq!(unsigned_get(server, "/s3cmd-bucket/dir/f.bin").0, 403);
    let info = s3cmd(&["info", "s3://s3cmd-bucket/public.txt"]);
    assert!(info.contains("*anon*: READ"), "{info}");
    s3cmd(&["setacl", "--acl-private", "s3://s3cmd-bucket/public.txt"]);
    assert_eq!(unsigned_get(server, "/s3cmd-bucket/public.txt").0, 403);
    s3cmd(&["setacl", "--acl-public", "s3://s3cmd-bucket/big.bin"]);
    let (status, body) = unsigned_get(server, "/s3cmd-bucket/big.bin");
    assert_eq!((status, body.chars().count()), (200, 20 << 20));
    s3cmd(&["del", "--recursive", "--force", "s3://s3cmd-bucket"]);
    s3cmd(&["rb", "s3://s3cmd-bucket"]);
}

/// An unsigned GET of `path` with curl, as anyone on the web sends it:
/// (status, body as Latin-1: one char per byte).
fn unsigned_get(server: &Server, path: &str) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-w", "\n%{http_code}"]);
    if let Some(ca) = &server.ca {
        cmd.arg("--cacert").arg(ca);
    }
    let out = run(cmd.arg(format!("{}{path}", server.endpoint())));
    assert!(out.status.success(), "curl {path}: {}", describe(&out));
    let text: String = out.stdout.iter().map(|b| *b as char).collect();
    let (body, code) = text.rsplit_once('\n').expect("curl wrote the status");
    (code.trim().parse().expect("a status"), body.to_string())
}

/// rclone with `acl = public-read`, unmodified: the bucket it makes and
/// the objects it copies are public (curl reads and lists them); without
/// it, they are not.
#[test]
fn rclone_publishes_with_acl_public_read() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let tree = dir.path().join("site");
    std::fs::create_dir_all(tree.join("css")).unwrap();
    std::fs::write(tree.join("index.html"), b"<h1>hi</h1>").unwrap();
    std::fs::write(tree.join("css/site.css"), b"h1 { color: red }").unwrap();
    let rclone = |acl: Option<&str>, args: &[&str]| {
        let mut cmd = rclone_command(&server);
        cmd.args(args);
        if let Some(acl) = acl {
            cmd.env("RCLONE_CONFIG_SG_ACL", acl);
        }
        let out = run(&mut cmd);
        assert!(out.status.success(), "rclone {args:?}: {}", describe(&out));
    };
    let t = tree.to_str().unwrap();
    rclone(Some("public-read"), &["mkdir", "sg:site"]);
    rclone(Some("public-read"), &["copy", t, "sg:site"]);
    rclone(None, &["copy", t, "sg:site/draft"]);
    assert_eq!(
        unsigned_get(&server, "/site/css/site.css"),
        (200, "h1 { color: red }".to_string())
    );
    let (status, listing) = unsigned_get(&server, "/site?list-type=2");
    assert!(
        status == 200 && listing.contains("<Key>index.html</Key>"),
        "{status} {listing}"
    );
    assert_eq!(unsigned_get(&server, "/site/draft/index.html").0, 403);
}

#[test]
fn streaming_signed_bodies_are_verified_chunk_by_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let out = server.python("op.py", &["mb", "stream"]);
    assert!(out.status.success(), "{}", describe(&out));
    for size in ["0", "1", "65536", "3000000"] {
        let out = server.python("streaming_put.py", &["stream", &format!("k{size}"), size]);
        assert!(out.status.success(), "size {size}: {}", describe(&out));
    }
    let out = server.python(
        "streaming_put.py",
        &["stream", "tampered", "1000000", "tamper"],
    );
    assert!(out.status.success(), "{}", describe(&out));
}
