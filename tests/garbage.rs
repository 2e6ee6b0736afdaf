//! Garbage and unfinished writes against the real binary on its embedded
//! default (six fs sites, 4 + 2, write quorum 5): a failed backend holds
//! back only its own garbage, and a request dropped during its commit
//! leaves no blob behind, without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shardgate_loadgen::sigv4::{Signer, UNSIGNED_PAYLOAD};
use support::raw::{Raw, bodiless, head};
use support::{Server, blob_files, pattern};

fn site(data: &Path, n: usize) -> PathBuf {
    data.join("backends").join(format!("site-{n}"))
}

/// Blob files per site, sites 1 to 6.
fn blobs_per_site(data: &Path) -> Vec<usize> {
    let files = blob_files(data);
    (1..=6)
        .map(|n| {
            let dir = site(data, n);
            files.iter().filter(|f| f.starts_with(&dir)).count()
        })
        .collect()
}

/// Waits (at most `within`) until `done` holds, describing the state
/// with `what` when it does not.
fn wait_until(within: Duration, mut done: impl FnMut() -> bool, what: impl Fn() -> String) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "after {within:?}: {}", what());
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn garbage_items(server: &Server, backend: &str) -> f64 {
    let key = format!("shardgate_garbage_items{{backend=\"{backend}\",configured=\"true\"}}");
    server.metrics().get(&key).copied().unwrap_or(0.0)
}

#[test]
fn a_failed_backend_holds_back_only_its_own_garbage() {
    const OBJECTS: &str = "300";
    const SIZE: &str = "65536";
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data);
    assert!(server.python("op.py", &["mb", "gc-test"]).status.success());
    server.bulk(&["put", "gc-test", OBJECTS, SIZE, "0"]);
    assert_eq!(blobs_per_site(&data), vec![300; 6]);

    // site-6's blobs directory becomes a plain file: every operation there
    // fails, and not with NotFound.
    let blobs6 = site(&data, 6).join("blobs");
    let away = dir.path().join("site-6-blobs");
    std::fs::rename(&blobs6, &away).unwrap();
    std::fs::write(&blobs6, b"not a directory").unwrap();
    server.bulk(&["put", "gc-test", OBJECTS, SIZE, "1"]);
    server.bulk(&["put", "gc-test", OBJECTS, SIZE, "2"]);

    // The healthy sites are collected down to the live fragments within a
    // few periods of the 5 s grace, while site-6 stays broken.
    wait_until(
        Duration::from_secs(60),
        || blobs_per_site(&data)[..5] == [300; 5],
        || format!("blobs per site {:?}", blobs_per_site(&data)),
    );
    // site-6's own garbage waits: its 300 round-0 blobs, and the 300 of
    // round 1 it never received (recorded Missing, deleted in case they
    // exist); round 2's are live. (Repair, trying meanwhile to rebuild
    // round 2's Missing fragments there, adds the blobs of its failed
    // tries.)
    let waiting = || -> Vec<f64> {
        (1..=6)
            .map(|n| garbage_items(&server, &format!("site-{n}")))
            .collect()
    };
    wait_until(
        Duration::from_secs(10),
        || {
            let w = waiting();
            w[..5] == [0.0; 5] && w[5] >= 600.0
        },
        || format!("garbage items per site {:?}", waiting()),
    );
    assert!(std::fs::read_dir(&away).is_ok());

    // site-6 returns: its garbage goes, and repair rebuilds there the
    // fragments round 2 could not write: full redundancy again.
    std::fs::remove_file(&blobs6).unwrap();
    std::fs::rename(&away, &blobs6).unwrap();
    wait_until(
        Duration::from_secs(120),
        || blobs_per_site(&data) == [300; 6] && garbage_items(&server, "site-6") == 0.0,
        || {
            format!(
                "blobs per site {:?}, garbage {:?}",
                blobs_per_site(&data),
                waiting()
            )
        },
    );
    // Nothing live was deleted: every object reads back as last written.
    server.bulk(&["check", "gc-test", OBJECTS, SIZE, "2"]);
}

struct Gateway {
    server: Server,
    signer: Signer,
}

impl Gateway {
    fn start(data: &Path) -> Self {
        let server = Server::start(data);
        let signer = Signer {
            access: server.access_key.clone(),
            secret: server.secret_key.clone(),
            host: server.addr.to_string(),
        };
        let mut c = Raw::connect(server.addr);
        c.send(&bodiless(&signer, "PUT", "/drop")).unwrap();
        assert_eq!(c.response().unwrap().status, 200);
        Self { server, signer }
    }

    /// Sends a whole PUT of `body` to `path?query` (the query's
    /// parameters sorted), waits `delay`, then resets the connection (RST,
    /// as a client that died would).
    fn put_then_reset(&self, path: &str, query: &str, body: &[u8], delay: Duration) {
        let signed = self.signer.sign("PUT", path, query, &[], UNSIGNED_PAYLOAD);
        let target = match query {
            "" => path.to_string(),
            q => format!("{path}?{q}"),
        };
        let head = head(
            "PUT",
            &target,
            &signed.headers,
            &[("content-length", body.len().to_string())],
        );
        let mut stream = TcpStream::connect(self.server.addr).unwrap();
        stream.write_all(&head).unwrap();
        stream.write_all(body).unwrap();
        std::thread::sleep(delay);
        rustix::net::sockopt::set_socket_linger(&stream, Some(Duration::ZERO)).unwrap();
        drop(stream);
    }

    /// Writes dropped during their commit, as the gateway logged them.
    fn dropped(&self) -> usize {
        self.server
            .log_text()
            .matches("request dropped before its commit")
            .count()
    }
}

/// Delays from 0 to about 0.7 s after the last byte (2 ms × i²): dense
/// where a 30 MB PUT encodes its tail, fsyncs and commits (tens of ms
/// here), sparse up to where it has long answered.
fn delays(n: u32) -> impl Iterator<Item = Duration> {
    (0..n).map(|i| Duration::from_millis(2 * u64::from(i * i)))
}

#[test]
fn puts_reset_during_their_commit_leave_no_blob() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let gw = Gateway::start(&data);
    let body = pattern(30, 30_000_000);
    // Whether a reset lands inside a commit (tens of ms) is up to the
    // machine's timing: rounds go on, each offset by a few ms, until one
    // did (3 rounds at most).
    let mut sent = 0;
    for round in 0..3u64 {
        for delay in delays(20) {
            let delay = delay + Duration::from_millis(round * 3);
            gw.put_then_reset(&format!("/drop/obj-{sent}"), "", &body, delay);
            sent += 1;
        }
        if gw.dropped() >= 1 {
            break;
        }
    }
    let listed = gw.server.aws_ok(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        "drop",
        "--query",
        "Contents[].Key",
        "--output",
        "text",
    ]);
    let committed = listed
        .split_whitespace()
        .filter(|k| k.starts_with("obj-"))
        .count();
    eprintln!(
        "{committed} of {sent} PUTs committed, {} dropped in their commit",
        gw.dropped()
    );
    // Each committed object holds 6 fragments; nothing else stays, and no
    // restart is needed for it.
    wait_until(
        Duration::from_secs(30),
        || blob_files(&data).len() == committed * 6,
        || format!("{} blobs for {committed} objects", blob_files(&data).len()),
    );
    assert!(
        gw.dropped() >= 1,
        "no PUT was dropped during its commit ({committed} of {sent} committed): the test proves nothing"
    );
    wait_until(
        Duration::from_secs(10),
        || gw.server.garbage_total() == 0.0,
        || format!("{} garbage items left", gw.server.garbage_total()),
    );
}

#[test]
fn parts_reset_during_their_commit_leave_no_blob() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let gw = Gateway::start(&data);
    let created = gw.server.aws_ok(&[
        "s3api",
        "create-multipart-upload",
        "--bucket",
        "drop",
        "--key",
        "big",
        "--query",
        "UploadId",
        "--output",
        "text",
    ]);
    let upload = created.trim().to_string();
    let body = pattern(31, 30_000_000);
    // As for PUTs: rounds until a reset landed inside a commit (3 at most).
    let mut sent = 0;
    for round in 0..3u64 {
        for delay in delays(20) {
            let delay = delay + Duration::from_millis(round * 3);
            let query = format!("partNumber={}&uploadId={upload}", sent + 1);
            gw.put_then_reset("/drop/big", &query, &body, delay);
            sent += 1;
        }
        if gw.dropped() >= 1 {
            break;
        }
    }
    let listed = gw.server.aws_ok(&[
        "s3api",
        "list-parts",
        "--bucket",
        "drop",
        "--key",
        "big",
        "--upload-id",
        &upload,
        "--query",
        "Parts[].PartNumber",
        "--output",
        "text",
    ]);
    let committed = listed.split_whitespace().filter(|p| *p != "None").count();
    eprintln!(
        "{committed} of {sent} parts committed, {} dropped in their commit",
        gw.dropped()
    );
    wait_until(
        Duration::from_secs(30),
        || blob_files(&data).len() == committed * 6,
        || format!("{} blobs for {committed} parts", blob_files(&data).len()),
    );
    assert!(
        gw.dropped() >= 1,
        "no part was dropped during its commit ({committed} of {sent} committed): the test proves nothing"
    );
    wait_until(
        Duration::from_secs(10),
        || gw.server.garbage_total() == 0.0,
        || format!("{} garbage items left", gw.server.garbage_total()),
    );
}
