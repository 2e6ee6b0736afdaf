//! Sampled audits of cloud backends (issue 14): six `s3` backends on
//! moto, 4 + 2, stripes of one 64 KiB shard per fragment, scrub sampling
//! two shards of each fragment. Behind the gateway's back three blobs are
//! deleted and three replaced by other bytes of the same length. One
//! audit pass finds exactly those six, downloads a fraction of what is
//! stored (the bytes are reported per backend in `/metrics`), repair
//! rebuilds them, and a second pass finds nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::{Emulator, Server, aws_on, describe};

#[test]
fn a_sampled_audit_finds_blobs_deleted_or_replaced_behind_the_gateways_back() {
    let moto = Emulator::moto(&["fragments"]);
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.toml");
    let text = support::moto_sites_config(
        &moto,
        "default_policy = \"default\"\n[policies.default]\nk = 4\nm = 2\nsmall_object_bytes = 0\nstripe_chunks = 4\n",
    );
    std::fs::write(&config, text).unwrap();
    let server = Server::start_with(
        &tmp.path().join("data"),
        &[
            ("SHARDGATE_CONFIG", config.to_str().unwrap()),
            ("SHARDGATE_SCRUB__INTERVAL_SECS", "0"),
            ("SHARDGATE_SCRUB__AUDIT_STRIPES", "2"),
        ],
    );
    assert!(server.python("op.py", &["mb", "audited"]).status.success());
    server.bulk(&["put", "audited", "12", "3000000", "0"]);
    // Repair held, so the damage stays until the pass has seen it.
    server.admin_json(&["pause", "repair"]);

    let listing = aws_on(&moto, &["s3", "ls", "--recursive", "s3://fragments/"]);
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    let blobs: Vec<(u64, String)> = listing
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().skip(2);
            Some((f.next()?.parse().ok()?, f.next()?.to_string()))
        })
        // Fragments: not the manifest journal's blobs (named j...).
        .filter(|(_, k)| !k.rsplit('/').next().is_some_and(|n| n.starts_with('j')))
        .collect();
    assert_eq!(blobs.len(), 12 * 6, "{listing}");
    let stored: u64 = blobs.iter().map(|(size, _)| size).sum();

    // Blobs of sites 1 and 2 only, so no object loses more than two.
    let victims: Vec<&(u64, String)> = blobs
        .iter()
        .filter(|(_, k)| k.starts_with("site-1/") || k.starts_with("site-2/"))
        .step_by(4)
        .take(6)
        .collect();
    assert_eq!(victims.len(), 6);
    let mut damaged = BTreeSet::new();
    for (i, (size, key)) in victims.iter().enumerate() {
        let url = format!("s3://fragments/{key}");
        let out = if i < 3 {
            aws_on(&moto, &["s3", "rm", &url])
        } else {
            let other = tmp.path().join(format!("other-{i}"));
            std::fs::write(&other, support::pattern(i as u64, *size as usize)).unwrap();
            aws_on(&moto, &["s3", "cp", other.to_str().unwrap(), &url])
        };
        assert!(out.status.success(), "{url}: {}", describe(&out));
        damaged.insert(key.rsplit('/').next().unwrap().to_string());
    }

    let pass = server.scrub_pass();
    assert_eq!(pass["objects_done"], 12, "{pass}");
    assert_eq!(server.scrub_findings(), damaged, "the audit's findings");
    assert_eq!(
        server.metric_sum("shardgate_scrub_backend_damaged_total{backend="),
        6.0
    );
    let audited = server.metric_sum("shardgate_scrub_backend_read_bytes_total{backend=");
    eprintln!(
        "audit pass: {audited} bytes downloaded of {stored} stored ({:.1}%), 6 of 6 damaged blobs found",
        100.0 * audited / stored as f64
    );
    assert!(
        audited > 0.0 && audited < stored as f64 / 3.0,
        "{audited} of {stored}"
    );

    // Repair rebuilds the six; the next audit finds nothing.
    server.admin_json(&["resume", "repair"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    while server.metric_sum("shardgate_repair_fragments_rebuilt_total") < 6.0
        || server.metric_sum("shardgate_repair_queue_objects{") > 0.0
    {
        assert!(Instant::now() < deadline, "repair did not finish");
        std::thread::sleep(Duration::from_millis(250));
    }
    server.scrub_pass();
    assert_eq!(
        server.metric_sum("shardgate_scrub_backend_damaged_total{backend="),
        6.0,
        "the second pass found damage"
    );
    server.bulk(&["check", "audited", "12", "3000000", "0"]);
}
