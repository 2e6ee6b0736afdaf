//! Object Lock inside the gateway (issue 16), against the real binary and
//! the aws CLI, on seven `fs` sites under the default 4 + 2 policy: a
//! COMPLIANCE-locked version, no longer current, survives a delete of
//! every version through S3 (with the governance bypass), a kill -9 and a
//! restart, the garbage collection of every other version, and a repair
//! of a fragment lost with its site; its k + m fragments are all there at
//! the end, and it reads back with two more sites gone. The S3 semantics
//! of each call are `clients/object_lock.py`'s (`s3_clients.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Server, blob_files, describe, files_on_sites, fs_sites_config, pattern};

const SITES: usize = 7;

fn env(config: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("SHARDGATE_CONFIG", config.to_str().unwrap().to_string()),
        ("SHARDGATE_REPAIR__BACKEND_GRACE_SECS", "3".into()),
        ("SHARDGATE_SCRUB__INTERVAL_SECS", "0".into()),
    ]
}

fn start(data: &Path, env: &[(&'static str, String)]) -> Server {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start_with(data, &env)
}

/// `aws s3api ARGS` answering JSON.
fn api(server: &Server, args: &[&str]) -> serde_json::Value {
    let out = server.aws_ok(&[&["s3api"], args].concat());
    serde_json::from_str(&out).unwrap_or(serde_json::Value::Null)
}

fn metric(server: &Server, name: &str) -> f64 {
    server.metrics().get(name).copied().unwrap_or(0.0)
}

/// Waits (bounded) until `done` holds.
fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_locked_version_survives_deletes_restarts_garbage_collection_and_repair() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = fs_sites_config(dir.path(), SITES);
    let env = env(&config);
    let mut server = start(&data, &env);
    let body = pattern(16, 200_000);
    let file = dir.path().join("body");
    std::fs::write(&file, &body).unwrap();
    let other = dir.path().join("other");
    std::fs::write(&other, pattern(17, 200_000)).unwrap();
    let until = Command::new("date")
        .args(["-u", "-d", "+1 day", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    let until = String::from_utf8(until.stdout).unwrap();

    api(
        &server,
        &[
            "create-bucket",
            "--bucket",
            "vault",
            "--object-lock-enabled-for-bucket",
        ],
    );
    let put = |server: &Server, path: &Path, lock: &[&str]| -> String {
        let args = [
            &[
                "put-object",
                "--bucket",
                "vault",
                "--key",
                "ledger",
                "--body",
                path.to_str().unwrap(),
            ][..],
            lock,
        ]
        .concat();
        api(server, &args)["VersionId"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let locked = put(
        &server,
        &file,
        &[
            "--object-lock-mode",
            "COMPLIANCE",
            "--object-lock-retain-until-date",
            until.trim(),
        ],
    );
    let plain = put(&server, &other, &[]);
    assert_eq!(
        blob_files(&data).len(),
        12,
        "two versions of k + m fragments"
    );

    // Every version deleted through S3, bypass and all: the locked one
    // refuses, the rest go.
    let delete = |server: &Server, version: &str| {
        server.aws(&[
            "s3api",
            "delete-object",
            "--bucket",
            "vault",
            "--key",
            "ledger",
            "--version-id",
            version,
            "--bypass-governance-retention",
        ])
    };
    let refused = delete(&server, &locked);
    assert!(!refused.status.success());
    assert!(
        describe(&refused).contains("AccessDenied"),
        "{}",
        describe(&refused)
    );
    assert!(delete(&server, &plain).status.success());
    let marker = api(
        &server,
        &["delete-object", "--bucket", "vault", "--key", "ledger"],
    );
    assert_eq!(marker["DeleteMarker"], true);
    let marker = marker["VersionId"].as_str().unwrap().to_string();
    assert!(delete(&server, &marker).status.success());

    // A kill -9 and a restart: still there, still locked.
    server.kill9();
    let server = start(&data, &env);
    let read = |server: &Server| {
        let out = dir.path().join("read");
        api(
            server,
            &[
                "get-object",
                "--bucket",
                "vault",
                "--key",
                "ledger",
                "--version-id",
                &locked,
                out.to_str().unwrap(),
            ],
        );
        std::fs::read(&out).unwrap() == body
    };
    assert!(
        read(&server),
        "the locked version reads back after a restart"
    );
    assert!(!delete(&server, &locked).status.success());

    // The deleted version's fragments are collected; the locked one's stay.
    wait_for("the garbage collection", Duration::from_secs(60), || {
        blob_files(&data).len() == 6
    });

    // A site holding one of its fragments goes: repair rebuilds it on the
    // site left, and nothing else goes.
    let site = (1..=SITES)
        .find(|s| files_on_sites(&data, &[*s]) == 1)
        .unwrap();
    std::fs::remove_dir_all(data.join(format!("backends/site-{site}"))).unwrap();
    wait_for("the repair", Duration::from_secs(120), || {
        metric(&server, "shardgate_repair_fragments_rebuilt_total") >= 1.0
    });
    let left: Vec<usize> = (1..=SITES).filter(|s| *s != site).collect();
    assert_eq!(
        files_on_sites(&data, &left),
        6,
        "k + m fragments, all there"
    );
    assert_eq!(blob_files(&data).len(), 6);

    // Two more sites go: it reads back; it is still locked.
    let gone: Vec<usize> = left
        .iter()
        .copied()
        .filter(|s| files_on_sites(&data, &[*s]) == 1)
        .take(2)
        .collect();
    for s in &gone {
        std::fs::remove_dir_all(data.join(format!("backends/site-{s}"))).unwrap();
    }
    assert!(
        read(&server),
        "the locked version reads back with two more sites gone"
    );
    let refused = delete(&server, &locked);
    assert!(
        describe(&refused).contains("AccessDenied"),
        "{}",
        describe(&refused)
    );
    assert!(!server.log_text().contains("panicked"));
}
