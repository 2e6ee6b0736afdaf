//! Scrub and repair against the real binary on its embedded default (six
//! fs sites, 4 + 2): 10% of the fragment files corrupted behind the
//! gateway's back (a byte flipped anywhere: a shard or the trailer) are
//! found, exactly those, logged with their identity and queued; repair
//! rebuilds them with no operator action; a later scrub finds nothing;
//! every object reads back (issue 14).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::{Server, blob_files};

fn metric(server: &Server, name: &str) -> f64 {
    server.metrics().get(name).copied().unwrap_or(0.0)
}

#[test]
fn scrub_finds_exactly_the_corrupted_fragments_and_repair_rebuilds_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(&data, &[("SHARDGATE_SCRUB__INTERVAL_SECS", "1")]);
    // Kept in their manifests (100 bytes: no file, nothing for scrub to
    // read), whole copies (5,000 bytes: 3 each), one stripe, several
    // stripes.
    for (bucket, count, size) in [
        ("scrub-i", "10", "100"),
        ("scrub-a", "20", "5000"),
        ("scrub-b", "10", "300000"),
        ("scrub-c", "4", "3000000"),
    ] {
        assert!(server.python("op.py", &["mb", bucket]).status.success());
        server.bulk(&["put", bucket, count, size, "0"]);
    }
    let mut files = blob_files(&data);
    files.sort();
    assert_eq!(files.len(), 20 * 3 + 10 * 6 + 4 * 6);
    let passes = |s: &Server| metric(s, "shardgate_scrub_passes_total");
    // A clean pass first: nothing damaged.
    let deadline = Instant::now() + Duration::from_secs(60);
    while passes(&server) < 1.0 {
        assert!(Instant::now() < deadline, "no scrub pass in 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        metric(&server, "shardgate_scrub_fragments_damaged_total"),
        0.0
    );

    // 15 files (10%) get one byte flipped, somewhere in them: taken from
    // sites 1 and 2 only, so no object has more than two damaged (each
    // holds at most one fragment per site) and every one stays repairable.
    let mut corrupted = BTreeSet::new();
    let on_two_sites: Vec<_> = files
        .iter()
        .filter(|f| {
            let p = f.to_str().unwrap();
            p.contains("/site-1/") || p.contains("/site-2/")
        })
        .collect();
    let step = on_two_sites.len() / 15;
    for (i, file) in on_two_sites
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % step == 0)
        .take(15)
    {
        let mut bytes = std::fs::read(file).unwrap();
        let at = (i * 7919) % bytes.len();
        bytes[at] ^= 0x5A;
        std::fs::write(file, &bytes).unwrap();
        corrupted.insert(file.file_name().unwrap().to_str().unwrap().to_string());
    }
    assert_eq!(corrupted.len(), 15);
    // Two more passes: at least one whole pass after the corruption.
    let after = passes(&server) + 2.0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while passes(&server) < after {
        assert!(
            Instant::now() < deadline,
            "scrub did not finish two passes in 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let found = server.scrub_findings();
    assert_eq!(
        found, corrupted,
        "scrub's findings against the corrupted files"
    );
    assert!(metric(&server, "shardgate_scrub_read_bytes_total") > 9_000_000.0);
    let queued: f64 = server
        .metrics()
        .iter()
        .filter(|(k, _)| k.starts_with("shardgate_repair_queue_objects{"))
        .map(|(_, v)| v)
        .sum();
    assert!(queued >= 1.0 || metric(&server, "shardgate_repair_fragments_rebuilt_total") > 0.0);

    // Repair, with no operator action: all 15 rebuilt, the queue empty.
    let queue = |s: &Server| -> f64 {
        s.metrics()
            .iter()
            .filter(|(k, _)| k.starts_with("shardgate_repair_queue_objects{"))
            .map(|(_, v)| v)
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&server, "shardgate_repair_fragments_rebuilt_total") < 15.0 || queue(&server) > 0.0
    {
        assert!(
            Instant::now() < deadline,
            "repair: {} rebuilt, {} queued, {} failures:\n{}",
            metric(&server, "shardgate_repair_fragments_rebuilt_total"),
            queue(&server),
            metric(&server, "shardgate_repair_failures_total"),
            server
                .log_text()
                .lines()
                .filter(|l| l.contains("repair"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        metric(&server, "shardgate_repair_fragments_rebuilt_total"),
        15.0
    );
    // A later scrub finds nothing new (passes before the repair may have
    // found the same fragments again: the counter counts findings).
    let damaged = metric(&server, "shardgate_scrub_fragments_damaged_total");
    let after = passes(&server) + 2.0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while passes(&server) < after {
        assert!(
            Instant::now() < deadline,
            "no scrub passes after the repair"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        metric(&server, "shardgate_scrub_fragments_damaged_total"),
        damaged
    );
    // The corrupted blobs were collected: as many files as before, none
    // of them a corrupted one.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let names: BTreeSet<String> = blob_files(&data)
            .iter()
            .map(|f| f.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        if names.len() == files.len() && names.is_disjoint(&corrupted) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} blob files, old ones left",
            names.len()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    for (bucket, count, size) in [
        ("scrub-i", "10", "100"),
        ("scrub-a", "20", "5000"),
        ("scrub-b", "10", "300000"),
        ("scrub-c", "4", "3000000"),
    ] {
        server.bulk(&["check", bucket, count, size, "0"]);
    }
}
