//! Backends gone (issue 14), against the real binary: eight `fs` sites
//! under the default 4 + 2 policy, 200 objects of mixed sizes; two whole
//! site directories are deleted behind the gateway's back. Once the two
//! backends have been down longer than their grace (3 s here, 30 min by
//! default), every fragment they held is rebuilt elsewhere with no
//! operator action, and exactly those. Then two *other* directories are
//! deleted: every object still reads back byte for byte, which it could
//! not unless redundancy had been restored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use support::{Server, blob_files, files_on_sites, fs_sites_config};

const SITES: usize = 8;
/// (bucket, objects, bytes each): whole copies, one stripe, many stripes.
const SETS: [(&str, &str, &str); 3] = [
    ("gone-a", "100", "1000"),
    ("gone-b", "70", "200000"),
    ("gone-c", "30", "2000000"),
];

fn metric(server: &Server, name: &str) -> f64 {
    server.metrics().get(name).copied().unwrap_or(0.0)
}

fn queued(server: &Server) -> f64 {
    server
        .metrics()
        .iter()
        .filter(|(k, _)| k.starts_with("shardgate_repair_queue_objects{"))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn fragments_of_backends_gone_past_their_grace_are_rebuilt_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = fs_sites_config(dir.path(), SITES);
    let server = Server::start_with(
        &data,
        &[
            ("SHARDGATE_CONFIG", config.to_str().unwrap()),
            ("SHARDGATE_REPAIR__BACKEND_GRACE_SECS", "3"),
            ("SHARDGATE_SCRUB__INTERVAL_SECS", "0"),
        ],
    );
    for (bucket, count, size) in SETS {
        assert!(server.python("op.py", &["mb", bucket]).status.success());
        server.bulk(&["put", bucket, count, size, "0"]);
    }
    let total = blob_files(&data).len();
    assert_eq!(total, 100 * 3 + 70 * 6 + 30 * 6, "fragments written");
    let lost = files_on_sites(&data, &[1, 2]);
    assert!(lost > 100, "sites 1 and 2 hold {lost} fragments");

    for site in [1, 2] {
        std::fs::remove_dir_all(data.join(format!("backends/site-{site}"))).unwrap();
    }
    let deleted_at = Instant::now();
    // Down (health probes every 2 s), then 3 s of grace, then repair at
    // its 64 MiB/s: well within 120 s.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let rebuilt = metric(&server, "shardgate_repair_fragments_rebuilt_total");
        if rebuilt >= lost as f64 && queued(&server) == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "repair: {rebuilt} of {lost} rebuilt, {} queued, {} failures:\n{}",
            queued(&server),
            metric(&server, "shardgate_repair_failures_total"),
            server
                .log_text()
                .lines()
                .filter(|l| l.contains("repair") || l.contains("gone"))
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!(
        "sites 1 and 2 deleted: {lost} fragments rebuilt in {:.1} s after the deletion (grace 3 s)",
        deleted_at.elapsed().as_secs_f64()
    );
    // Exactly the lost fragments were rebuilt, each once, all on the
    // six sites left.
    assert_eq!(
        metric(&server, "shardgate_repair_fragments_rebuilt_total"),
        lost as f64
    );
    assert_eq!(files_on_sites(&data, &[3, 4, 5, 6, 7, 8]), total);
    let log = server.log_text();
    assert!(
        log.contains("backends gone: their fragments are queued for repair"),
        "{log}"
    );

    // Two other sites go: every object still reads back.
    for site in [3, 4] {
        std::fs::remove_dir_all(data.join(format!("backends/site-{site}"))).unwrap();
    }
    for (bucket, count, size) in SETS {
        server.bulk(&["check", bucket, count, size, "0"]);
    }
}
