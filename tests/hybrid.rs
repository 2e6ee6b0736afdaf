//! The hybrid example (`examples/hybrid/shardgate.toml`) end to end: two
//! local sites, two moto S3 servers as the providers "aws" and "wasabi",
//! and Azurite, all started here on 127.0.0.1, with the provider-limit
//! plugin keeping at most m = 2 fragments of an object per provider.
//!
//! - Objects written with the aws CLI read back byte for byte.
//! - Privacy: nothing stored on any emulator or in any backend directory
//!   holds an object key, the bucket name or a plaintext marker.
//! - A provider that hangs (its server stopped with SIGSTOP) does not hang
//!   GETs: they finish by hedging, well within the backend's request
//!   timeout, and `/metrics` counts the hedged requests.
//! - A provider killed outright: every object still reads back, `/ready`
//!   reports both of its backends down, and writes go on on the others.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::{Emulator, Server, aws_on, describe};

const BUCKET: &str = "tax-returns-2026";
const MARKER: &[u8] = b"PLAINTEXT-MARKER-hybrid-5c1d";
/// Keys and sizes: a small object (stored as whole encrypted copies: more
/// than the 4 KiB kept in the manifest), one of a few stripes, and one the
/// aws CLI uploads in parts.
const OBJECTS: [(&str, usize); 3] = [
    ("alice/salary-statement.pdf", 10_000),
    ("alice/scanned-receipts.tiff", 3 << 20),
    ("bob/full-archive.tar", 12 << 20),
];

fn body(i: usize, size: usize) -> Vec<u8> {
    let mut b = support::pattern(i as u64 + 11, size);
    let at = size / 2 - MARKER.len();
    b[at..at + MARKER.len()].copy_from_slice(MARKER);
    b
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The example's configuration with the emulators' real addresses and the
/// test's directories in place of the fixed ones.
fn hybrid_config(
    tmp: &Path,
    plugin: &Path,
    aws: &Emulator,
    wasabi: &Emulator,
    azure: &Emulator,
) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("examples/hybrid/shardgate.toml")).unwrap();
    let replaced = text
        .replace("http://127.0.0.1:19001", &aws.endpoint)
        .replace("http://127.0.0.1:19002", &wasabi.endpoint)
        .replace(
            "http://127.0.0.1:19003/devstoreaccount1",
            &azure.azure_account_url(),
        )
        .replace(
            "plugins/examples/provider-limit-py/provider-limit.wasm",
            plugin.to_str().unwrap(),
        )
        .replace("shardgate-data/hybrid/", &format!("{}/", tmp.display()));
    for fixed in ["19001", "19002", "19003", "shardgate-data/hybrid"] {
        assert!(!replaced.contains(fixed), "{fixed} left in the config");
    }
    let path = tmp.join("hybrid.toml");
    std::fs::write(&path, replaced).unwrap();
    path
}

fn build_provider_limit(out: &Path) -> PathBuf {
    let wasm = out.join("provider-limit.wasm");
    let script = repo().join("plugins/examples/provider-limit-py/build.sh");
    let status = std::process::Command::new(&script)
        .arg(&wasm)
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(status.success(), "{} failed", script.display());
    wasm
}

/// How many of `files` are fragments (not the manifest journal's blobs,
/// whose names start with `j`).
fn fragments(files: Vec<PathBuf>) -> usize {
    files
        .iter()
        .filter(|f| {
            !f.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('j'))
        })
        .count()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            match p.is_dir() {
                true => stack.push(p),
                false => out.push(p),
            }
        }
    }
    out
}

fn get_ok(server: &Server, tmp: &Path, i: usize) -> Duration {
    let (key, size) = OBJECTS[i];
    let back = tmp.join(format!("back-{i}"));
    let started = Instant::now();
    server.aws_ok(&[
        "s3",
        "cp",
        &format!("s3://{BUCKET}/{key}"),
        back.to_str().unwrap(),
    ]);
    let took = started.elapsed();
    assert!(
        std::fs::read(&back).unwrap() == body(i, size),
        "{key} came back different"
    );
    took
}

#[test]
fn hybrid_example_survives_a_slow_and_a_lost_provider_and_stores_nothing_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let plugin = build_provider_limit(tmp.path());
    let aws = Emulator::moto(&["shardgate-aws"]);
    let wasabi = Emulator::moto(&["shardgate-wasabi"]);
    let azure = Emulator::azurite(&["shardgate-azure"]);
    let config = hybrid_config(tmp.path(), &plugin, &aws, &wasabi, &azure);
    let server = Server::start_with(
        &tmp.path().join("gateway"),
        &[("SHARDGATE_CONFIG", config.to_str().unwrap())],
    );
    let all_up: Vec<String> = [
        "home-a", "home-b", "aws-1", "aws-2", "wasabi-1", "wasabi-2", "azure-1", "azure-2",
    ]
    .iter()
    .map(|id| format!("backend {id}: up\n"))
    .collect();
    server.wait_for_ready_text(&all_up, Duration::from_secs(30));
    server.aws_ok(&["s3", "mb", &format!("s3://{BUCKET}")]);
    for (i, (key, size)) in OBJECTS.iter().enumerate() {
        let file = tmp.path().join(format!("in-{i}"));
        std::fs::write(&file, body(i, *size)).unwrap();
        server.aws_ok(&[
            "s3",
            "cp",
            file.to_str().unwrap(),
            &format!("s3://{BUCKET}/{key}"),
        ]);
    }
    for i in 0..OBJECTS.len() {
        get_ok(&server, tmp.path(), i);
    }

    // Privacy: dump every provider and scan it with the local directories.
    let dump = tmp.path().join("dump");
    for (name, s3, bucket) in [
        ("aws", &aws, "shardgate-aws"),
        ("wasabi", &wasabi, "shardgate-wasabi"),
    ] {
        let out = aws_on(
            s3,
            &[
                "s3",
                "cp",
                "--recursive",
                &format!("s3://{bucket}/"),
                dump.join(name).to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "{}", describe(&out));
        let listing = aws_on(s3, &["s3", "ls", "--recursive", &format!("s3://{bucket}/")]);
        std::fs::write(dump.join(format!("{name}.listing")), &listing.stdout).unwrap();
    }
    let on_azure = azure.azure_dump("shardgate-azure", &dump.join("azure"));
    let mut per_provider = Vec::new();
    for name in ["aws", "wasabi"] {
        per_provider.push((name, fragments(files_under(&dump.join(name)))));
    }
    per_provider.push(("azure", on_azure));
    for site in ["home-a", "home-b"] {
        let blobs = fragments(files_under(&tmp.path().join(site).join("blobs")));
        per_provider.push((site, blobs));
    }
    // 1 + 2 copies of the small object, 4 + 2 fragments of each segment of
    // the others: one, and two for the 12 MiB upload (two 8 MiB parts).
    let segments = 1 + 1 + 2;
    let total: usize = per_provider.iter().map(|(_, n)| n).sum();
    assert_eq!(total, 3 + 6 * (segments - 1), "{per_provider:?}");
    for (provider, n) in &per_provider {
        assert!(
            *n <= 2 * segments,
            "{provider} holds {n} blobs: more than m per segment"
        );
    }
    let mut needles: Vec<&[u8]> = vec![MARKER, BUCKET.as_bytes()];
    for (key, _) in &OBJECTS {
        needles.push(key.as_bytes());
        needles.push(key.rsplit('/').next().unwrap().as_bytes());
    }
    let mut scanned = 0;
    for path in files_under(&dump)
        .into_iter()
        .chain(files_under(&tmp.path().join("home-a")))
        .chain(files_under(&tmp.path().join("home-b")))
    {
        let bytes = std::fs::read(&path).unwrap();
        scanned += bytes.len();
        for needle in &needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == *needle),
                "{} holds {:?}",
                path.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
    assert!(scanned > 16 << 20, "scanned only {scanned} bytes");

    // A provider that hangs: cheapest after the local sites, wasabi holds
    // data fragments of every object, so every large GET needs it or a hedge.
    let hedges = |server: &Server| {
        server
            .metrics()
            .iter()
            .find(|(k, _)| k.starts_with("shardgate_read_hedges_total"))
            .map_or(0.0, |(_, v)| *v)
    };
    let before = hedges(&server);
    wasabi.pause();
    for i in 1..OBJECTS.len() {
        let took = get_ok(&server, tmp.path(), i);
        // Without hedging a fetch waits out the 10 s request timeout (and
        // its retry); with it, the read moves on after a fraction of a second.
        assert!(took < Duration::from_secs(8), "GET {i} took {took:?}");
        eprintln!("GET {i} with wasabi stopped: {took:?}");
    }
    let after = hedges(&server);
    eprintln!("hedged fragment reads: {before} before wasabi stopped, {after} after");
    assert!(after > before, "no hedged read was counted");
    wasabi.resume();
    server.wait_for_ready_text(
        &["backend wasabi-1: up".into(), "backend wasabi-2: up".into()],
        Duration::from_secs(30),
    );

    // A provider lost outright.
    wasabi.kill();
    for i in 0..OBJECTS.len() {
        get_ok(&server, tmp.path(), i);
    }
    let ready = server.wait_for_ready_text(
        &[
            "backend wasabi-1: DOWN".into(),
            "backend wasabi-2: DOWN".into(),
        ],
        Duration::from_secs(30),
    );
    assert!(ready.starts_with("ready"), "six backends are left: {ready}");
    // Writes go on over the six backends of the other four providers.
    let file = tmp.path().join("after");
    let after = support::pattern(99, 2 << 20);
    std::fs::write(&file, &after).unwrap();
    server.aws_ok(&[
        "s3",
        "cp",
        file.to_str().unwrap(),
        &format!("s3://{BUCKET}/after-the-outage.bin"),
    ]);
    let back = tmp.path().join("after-back");
    server.aws_ok(&[
        "s3",
        "cp",
        &format!("s3://{BUCKET}/after-the-outage.bin"),
        back.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&back).unwrap() == after);

    let log = server.log_text();
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains("not-checked-by-moto"), "a secret in the log");
}
