//! No secret in any log line at any level, nor in an answer (issue 22):
//! the gateway runs at trace level through the boto3 suite (presigned
//! URLs, bad signatures, aws-chunked bodies over HTTPS) and the aws CLI,
//! and its whole log is scanned for the secret key, the age identities
//! (the gateway's and the offline recovery one), and signatures, which are
//! bearer tokens (a presigned URL's `X-Amz-Signature` is the whole key to
//! its object until it expires). And the payload keys the gateway keeps
//! opened in memory, so that hot objects are not unwrapped again (issue
//! 26), leave memory with their version.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{Server, describe};

/// Whether `line` holds a signature's value: `signature=` (any case,
/// `X-Amz-Signature=`, `chunk-signature=`...) followed by hex, quoted or
/// not.
fn holds_signature(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    lower.match_indices("signature=").any(|(i, key)| {
        let value = lower[i + key.len()..].trim_start_matches('"');
        value.bytes().next().is_some_and(|b| b.is_ascii_hexdigit())
    })
}

/// Every place in `text` where one of `secrets` or a signature appears,
/// with its line.
fn leaks<'a>(text: &'a str, secrets: &[(&str, String)]) -> Vec<(String, &'a str)> {
    text.lines()
        .flat_map(|line| {
            let mut found: Vec<(String, &str)> = secrets
                .iter()
                .filter(|(_, s)| line.contains(s.as_str()))
                .map(|(what, _)| (what.to_string(), line))
                .collect();
            if holds_signature(line) {
                found.push(("a signature".to_string(), line));
            }
            found
        })
        .collect()
}

#[test]
fn no_secret_is_logged_at_trace_level_nor_answered() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (server, _certs) = Server::start_tls(&data, &[("RUST_LOG", "trace")]);
    let out = server.python("boto3_suite.py", &[]);
    assert!(out.status.success(), "{}", describe(&out));
    server.aws_ok(&["s3", "mb", "s3://scan"]);
    let file = dir.path().join("f");
    std::fs::write(&file, support::pattern(3, 9_000_000)).unwrap();
    server.aws_ok(&["s3", "cp", file.to_str().unwrap(), "s3://scan/f"]);
    server.aws_ok(&[
        "s3",
        "cp",
        "s3://scan/f",
        dir.path().join("back").to_str().unwrap(),
    ]);
    let out = support::run(
        std::process::Command::new("python3")
            .args([
                "-c",
                "import boto3, os; from botocore.client import Config; \
                 print(boto3.client('s3', endpoint_url=os.environ['S3_ENDPOINT'], region_name='us-east-1', \
                 config=Config(signature_version='s3v4')).generate_presigned_url('get_object', \
                 Params={'Bucket': 'scan', 'Key': 'f'}, ExpiresIn=300))",
            ])
            .envs(server.env()),
    );
    assert!(out.status.success(), "{}", describe(&out));
    let presigned = String::from_utf8_lossy(&out.stdout).into_owned();
    let signature = presigned
        .split("X-Amz-Signature=")
        .nth(1)
        .map(|s| s.trim().to_string())
        .expect("a presigned URL");
    // The presigned URL used, and a request whose signature is wrong.
    assert_eq!(
        support::https_get(presigned.trim(), server.ca.as_ref().unwrap(), false).map(|(s, _)| s),
        Some(200)
    );
    let tampered = presigned
        .trim()
        .replace(&signature, &"0".repeat(signature.len()));
    let (status, answer) =
        support::https_get(&tampered, server.ca.as_ref().unwrap(), false).unwrap();
    assert_eq!(status, 403, "{answer}");

    let identity = std::fs::read_to_string(data.join("keys/gateway-identity.txt")).unwrap();
    let recovery = std::fs::read_to_string(data.join("keys/recovery-identity.txt")).unwrap();
    let secret_line = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .unwrap()
            .to_string()
    };
    let secrets = [
        ("the secret key", server.secret_key.clone()),
        ("the gateway's age identity", secret_line(&identity)),
        ("the recovery identity", secret_line(&recovery)),
        ("an age identity", "AGE-SECRET-KEY-".to_string()),
        ("a presigned URL's signature", signature),
    ];
    let log = server.log_text();
    assert!(
        log.lines().filter(|l| l.contains("TRACE")).count() > 100,
        "the log is at trace level"
    );
    let found = leaks(&log, &secrets);
    assert!(
        found.is_empty(),
        "{} log lines hold a secret, the first: {:?}",
        found.len(),
        found.first()
    );
    let found = leaks(&answer, &secrets);
    assert!(found.is_empty(), "an answer holds a secret: {found:?}");
}

fn opened_keys(server: &Server) -> f64 {
    server.metrics()["shardgate_opened_keys{}"]
}

/// Puts `key` in `bucket` from a file of `seed`'s bytes (5,000 of them,
/// over the inline limit); returns its version id (`null` when the bucket
/// is not versioning).
fn put(server: &Server, dir: &std::path::Path, bucket: &str, key: &str, seed: u64) -> String {
    put_sized(server, dir, bucket, key, seed, 5_000)
}

fn put_sized(
    server: &Server,
    dir: &std::path::Path,
    bucket: &str,
    key: &str,
    seed: u64,
    len: usize,
) -> String {
    let file = dir.join(format!("{key}-{seed}"));
    std::fs::write(&file, support::pattern(seed, len)).unwrap();
    let out = server.aws_ok(&[
        "s3api",
        "put-object",
        "--bucket",
        bucket,
        "--key",
        key,
        "--body",
        file.to_str().unwrap(),
        "--query",
        "VersionId",
        "--output",
        "text",
    ]);
    out.trim().to_string()
}

fn get(server: &Server, dir: &std::path::Path, bucket: &str, key: &str) -> Vec<u8> {
    let file = dir.join("got");
    server.aws_ok(&[
        "s3",
        "cp",
        &format!("s3://{bucket}/{key}"),
        file.to_str().unwrap(),
    ]);
    std::fs::read(file).unwrap()
}

#[test]
fn an_opened_key_never_outlives_the_delete_of_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data);
    assert_eq!(opened_keys(&server), 0.0);
    server.aws_ok(&["s3", "mb", "s3://plain"]);
    put(&server, dir.path(), "plain", "a", 1);
    put(&server, dir.path(), "plain", "b", 2);
    // A write keeps the key it sealed with; reads use it.
    assert_eq!(opened_keys(&server), 2.0);
    assert_eq!(
        get(&server, dir.path(), "plain", "a"),
        support::pattern(1, 5_000)
    );
    assert_eq!(opened_keys(&server), 2.0);
    // A DELETE takes its version's key; an overwrite replaces the null
    // version's.
    server.aws_ok(&["s3", "rm", "s3://plain/a"]);
    assert_eq!(opened_keys(&server), 1.0);
    put(&server, dir.path(), "plain", "b", 3);
    assert_eq!(opened_keys(&server), 1.0);
    assert_eq!(
        get(&server, dir.path(), "plain", "b"),
        support::pattern(3, 5_000)
    );

    // Versions: a delete marker leaves the versions (and their keys); the
    // delete of one version takes only its key.
    server.aws_ok(&["s3", "mb", "s3://versioned"]);
    server.aws_ok(&[
        "s3api",
        "put-bucket-versioning",
        "--bucket",
        "versioned",
        "--versioning-configuration",
        "Status=Enabled",
    ]);
    let delete_version = |id: &str| {
        server.aws_ok(&[
            "s3api",
            "delete-object",
            "--bucket",
            "versioned",
            "--key",
            "c",
            "--version-id",
            id,
        ])
    };
    let first = put(&server, dir.path(), "versioned", "c", 4);
    let second = put(&server, dir.path(), "versioned", "c", 5);
    assert_eq!(opened_keys(&server), 3.0);
    server.aws_ok(&["s3", "rm", "s3://versioned/c"]);
    assert_eq!(opened_keys(&server), 3.0);
    delete_version(&first);
    assert_eq!(opened_keys(&server), 2.0);
    delete_version(&second);
    server.aws_ok(&["s3", "rm", "s3://plain/b"]);
    assert_eq!(opened_keys(&server), 0.0);

    // After a restart nothing is opened until a read unwraps it again.
    put(&server, dir.path(), "plain", "d", 6);
    drop(server);
    let server = Server::start(&data);
    assert_eq!(opened_keys(&server), 0.0);
    assert_eq!(
        get(&server, dir.path(), "plain", "d"),
        support::pattern(6, 5_000)
    );
    assert_eq!(opened_keys(&server), 1.0);
    assert_eq!(
        get(&server, dir.path(), "plain", "d"),
        support::pattern(6, 5_000)
    );
    assert_eq!(opened_keys(&server), 1.0);

    // An object kept in its manifest, read at once (no read stream): its
    // key is cached by the read and goes with its DELETE all the same.
    put_sized(&server, dir.path(), "plain", "small", 7, 1_000);
    let map = server.admin_json(&["object", "plain", "small"]);
    assert_eq!(map["segments"][0]["inline"], true, "{map}");
    assert_eq!(opened_keys(&server), 2.0);
    drop(server);
    let server = Server::start(&data);
    assert_eq!(opened_keys(&server), 0.0);
    for _ in 0..2 {
        assert_eq!(
            get(&server, dir.path(), "plain", "small"),
            support::pattern(7, 1_000)
        );
        assert_eq!(opened_keys(&server), 1.0);
    }
    server.aws_ok(&["s3", "rm", "s3://plain/small"]);
    assert_eq!(opened_keys(&server), 0.0);
}
