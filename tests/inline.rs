//! Issue 26: small objects kept in their manifest. On the embedded default
//! a whole PUT of at most 4 KiB writes no fragment on any backend; it reads
//! back whole and in ranges, copies, shows as inline in the admin API and
//! leaves nothing behind when deleted. A part is never inline, and only the
//! default policy may keep objects inline. Real gateway, real aws CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use support::{Server, blob_files, describe, pattern, serve_fails_with};

fn put(server: &Server, dir: &std::path::Path, key: &str, body: &[u8]) {
    let file = dir.join(format!("{}.in", key.replace('/', "_")));
    std::fs::write(&file, body).unwrap();
    server.aws_ok(&[
        "s3api",
        "put-object",
        "--bucket",
        "small",
        "--key",
        key,
        "--body",
        file.to_str().unwrap(),
    ]);
}

fn get(server: &Server, dir: &std::path::Path, key: &str, range: Option<&str>) -> Vec<u8> {
    let file = dir.join("out");
    let mut args = vec!["s3api", "get-object", "--bucket", "small", "--key", key];
    if let Some(r) = range {
        args.extend(["--range", r]);
    }
    args.push(file.to_str().unwrap());
    server.aws_ok(&args);
    std::fs::read(&file).unwrap()
}

#[test]
fn small_puts_stay_in_their_manifests_and_larger_ones_and_parts_do_not() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Server::start(&data);
    server.aws_ok(&["s3", "mb", "s3://small"]);

    let sizes = [0usize, 1, 100, 4096];
    for (i, &n) in sizes.iter().enumerate() {
        put(
            &server,
            tmp.path(),
            &format!("in/{n}"),
            &pattern(i as u64, n),
        );
    }
    assert!(
        blob_files(&data).is_empty(),
        "inline objects wrote {:?}",
        blob_files(&data)
    );
    // One byte more: 1 + 2 whole copies on the backends.
    put(&server, tmp.path(), "out/4097", &pattern(9, 4097));
    assert_eq!(blob_files(&data).len(), 3);

    for (i, &n) in sizes.iter().enumerate() {
        assert!(get(&server, tmp.path(), &format!("in/{n}"), None) == pattern(i as u64, n));
    }
    let whole = pattern(3, 4096);
    assert!(get(&server, tmp.path(), "in/4096", Some("bytes=1000-1099")) == whole[1000..1100]);
    assert!(get(&server, tmp.path(), "in/4096", Some("bytes=-5")) == whole[4091..]);
    assert!(get(&server, tmp.path(), "out/4097", None) == pattern(9, 4097));

    // The admin API says where it lives.
    let map = server.admin_json(&["object", "small", "in/100"]);
    assert_eq!(map["segments"][0]["inline"], true, "{map}");
    assert_eq!(map["segments"][0]["fragments"].as_array().unwrap().len(), 0);
    assert_eq!(map["survives_losses"], 2, "{map}");

    // A copy of an inline object is inline too, and independent of it.
    server.aws_ok(&[
        "s3api",
        "copy-object",
        "--bucket",
        "small",
        "--key",
        "copy/100",
        "--copy-source",
        "small/in/100",
    ]);
    server.aws_ok(&["s3", "rm", "s3://small/in/100"]);
    assert!(get(&server, tmp.path(), "copy/100", None) == pattern(2, 100));
    assert_eq!(blob_files(&data).len(), 3);

    // A one-part multipart upload of 100 bytes: parts go to the backends.
    let up = server.aws_ok(&[
        "s3api",
        "create-multipart-upload",
        "--bucket",
        "small",
        "--key",
        "mp",
        "--query",
        "UploadId",
        "--output",
        "text",
    ]);
    let up = up.trim();
    let part = tmp.path().join("part");
    std::fs::write(&part, pattern(7, 100)).unwrap();
    let etag = server.aws_ok(&[
        "s3api",
        "upload-part",
        "--bucket",
        "small",
        "--key",
        "mp",
        "--upload-id",
        up,
        "--part-number",
        "1",
        "--body",
        part.to_str().unwrap(),
        "--query",
        "ETag",
        "--output",
        "text",
    ]);
    let parts = format!(
        "{{\"Parts\":[{{\"ETag\":{},\"PartNumber\":1}}]}}",
        etag.trim()
    );
    server.aws_ok(&[
        "s3api",
        "complete-multipart-upload",
        "--bucket",
        "small",
        "--key",
        "mp",
        "--upload-id",
        up,
        "--multipart-upload",
        &parts,
    ]);
    assert!(blob_files(&data).len() > 3, "the part went to the backends");
    assert!(get(&server, tmp.path(), "mp", None) == pattern(7, 100));

    // Deleting everything leaves nothing on the backends.
    server.aws_ok(&["s3", "rm", "s3://small", "--recursive"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !blob_files(&data).is_empty() {
        assert!(
            Instant::now() < deadline,
            "left behind: {:?}",
            blob_files(&data)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = server.aws(&[
        "s3api",
        "head-object",
        "--bucket",
        "small",
        "--key",
        "copy/100",
    ]);
    assert!(!out.status.success(), "{}", describe(&out));
}

#[test]
fn only_the_default_policy_keeps_objects_inline() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("shardgate.toml");
    std::fs::write(
        &config,
        "default_policy = \"main\"\n\
         [policies.main]\nk = 1\nm = 0\n\
         [policies.eu]\nk = 1\nm = 0\ninline_object_bytes = 1024\n\
         [[backends]]\nid = \"one\"\nkind = \"memory\"\n",
    )
    .unwrap();
    let error = serve_fails_with(
        &tmp.path().join("data"),
        &[("SHARDGATE_CONFIG", config.to_str().unwrap())],
    );
    assert!(
        error.contains("policies.eu.inline_object_bytes")
            && error.contains("only the default policy"),
        "{error}"
    );

    // A bucket of another policy stores even an empty body as fragments,
    // and so does the default policy with inline_object_bytes = 0.
    for (default_inline, files_for_default) in [("", 0), ("inline_object_bytes = 0\n", 3)] {
        let dir = tmp.path().join(format!("run-{files_for_default}"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = support::fs_sites_config(&dir, 3);
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.insert_str(
            0,
            &format!(
                "default_policy = \"main\"\n\
                 [buckets]\nelsewhere = \"other\"\n\
                 [policies.main]\nk = 1\nm = 2\n{default_inline}\
                 [policies.other]\nk = 1\nm = 2\n\n"
            ),
        );
        std::fs::write(&config, text).unwrap();
        let data = dir.join("data");
        let server = Server::start_with(&data, &[("SHARDGATE_CONFIG", config.to_str().unwrap())]);
        for bucket in ["here", "elsewhere"] {
            server.aws_ok(&["s3", "mb", &format!("s3://{bucket}")]);
        }
        let empty = dir.join("empty");
        std::fs::write(&empty, b"").unwrap();
        let put = |bucket: &str| {
            server.aws_ok(&[
                "s3api",
                "put-object",
                "--bucket",
                bucket,
                "--key",
                "e",
                "--body",
                empty.to_str().unwrap(),
            ])
        };
        put("here");
        assert_eq!(
            blob_files(&data).len(),
            files_for_default,
            "{default_inline}"
        );
        put("elsewhere");
        assert_eq!(
            blob_files(&data).len(),
            files_for_default + 3,
            "{default_inline}"
        );
    }
}
