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
/// (bucket, objects, bytes each): whole copies (above what is kept
/// inline), one stripe, many stripes.
const SETS: [(&str, &str, &str); 3] = [
    ("gone-a", "100", "5000"),
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

/// kill -9 at 10 moments while repair runs (throttled to 1 MiB/s so each
/// kill lands in the middle of it): every start resumes from the queue and
/// sweeps the intents the killed one left, and it converges: the queue
/// empties, the garbage is collected, exactly k + m = 6 blobs remain per
/// object, every object reads back and a scrub finds nothing.
#[test]
fn repair_killed_at_ten_moments_converges_to_exactly_k_plus_m_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [
        ("SHARDGATE_SCRUB__INTERVAL_SECS", "1"),
        ("SHARDGATE_REPAIR__RATE_BYTES_PER_SEC", "1048576"),
    ];
    let mut server = Server::start_with(&data, &env);
    assert!(server.python("op.py", &["mb", "killed"]).status.success());
    server.bulk(&["put", "killed", "40", "700000", "0"]);
    assert_eq!(blob_files(&data).len(), 40 * 6);
    // Every object loses its fragment on site-1 (the site keeps working).
    for f in blob_files(&data) {
        if f.to_str().unwrap().contains("/site-1/") {
            std::fs::remove_file(f).unwrap();
        }
    }
    // Each process is killed once its repair is under way (its first
    // fragment rebuilt), at a moment from a fixed sequence after that, so
    // a failure can be replayed.
    let mut seed: u64 = 0x5eed;
    let mut kills = Vec::new();
    for _ in 0..10 {
        let deadline = Instant::now() + Duration::from_secs(30);
        while metric(&server, "shardgate_repair_fragments_rebuilt_total") == 0.0
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let after = Duration::from_millis((seed >> 33) % 1500);
        std::thread::sleep(after);
        let rebuilt = metric(&server, "shardgate_repair_fragments_rebuilt_total");
        server.kill9();
        kills.push((after.as_millis(), rebuilt));
        server = Server::start_with(&data, &env);
    }
    eprintln!(
        "killed after (ms past the first rebuild, fragments rebuilt by that process): {kills:?}"
    );
    assert!(
        kills.iter().filter(|(_, n)| *n > 0.0).count() >= 8,
        "repair was not running at the kills: {kills:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let status = server.admin_json(&["status"]);
        let files = blob_files(&data).len();
        if status["repair_queue_objects"] == 0
            && status["garbage_items"] == 0
            && status["open_intents"] == 0
            && files == 40 * 6
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no convergence: {files} blobs, {status}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(files_on_sites(&data, &[1, 2, 3, 4, 5, 6]), 40 * 6);
    server.bulk(&["check", "killed", "40", "700000", "0"]);
    // A whole scrub pass after convergence finds nothing.
    let damaged = metric(&server, "shardgate_scrub_fragments_damaged_total");
    let passes = metric(&server, "shardgate_scrub_passes_total");
    let deadline = Instant::now() + Duration::from_secs(120);
    while metric(&server, "shardgate_scrub_passes_total") < passes + 2.0 {
        assert!(Instant::now() < deadline, "no scrub pass");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        metric(&server, "shardgate_scrub_fragments_damaged_total"),
        damaged
    );
}

/// The policy's placement plugin (the hostile test plugin, strict) traps,
/// then refuses, when repair asks it where rebuilt fragments go: each try
/// fails, is counted and shown (`shardgate admin jobs`: the last failure),
/// and is tried again later; the objects stay readable all along. With a
/// plugin that answers again, repair completes and nothing was lost.
#[test]
fn a_placer_that_traps_or_refuses_during_repair_costs_retries_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let plugin = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins/host/tests/fixtures/hostile.wasm")
        .canonicalize()
        .unwrap();
    let sites = std::fs::read_to_string(fs_sites_config(dir.path(), 6)).unwrap();
    let config = dir.path().join("hostile.toml");
    let write_config = |mode: &str| {
        std::fs::write(
            &config,
            format!(
                "default_policy = \"p\"\n[policies.p]\nk = 4\nm = 2\nplugin = \"{}\"\nstrict = true\nparams = {{ mode = \"{mode}\" }}\n\n{sites}",
                plugin.display()
            ),
        )
        .unwrap();
    };
    let env = [
        ("SHARDGATE_CONFIG", config.to_str().unwrap()),
        ("SHARDGATE_SCRUB__INTERVAL_SECS", "1"),
    ];
    write_config("good");
    let mut server = Server::start_with(&data, &env);
    assert!(server.python("op.py", &["mb", "placed"]).status.success());
    server.bulk(&["put", "placed", "10", "300000", "0"]);
    server.kill9();
    for f in blob_files(&data) {
        if f.to_str().unwrap().contains("/site-1/") {
            std::fs::remove_file(f).unwrap();
        }
    }

    for (mode, says) in [("trap", "trapped"), ("refuse", "refuses everything")] {
        write_config(mode);
        server = Server::start_with(&data, &env);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let jobs = server.admin_json(&["jobs"]);
            let repair = jobs
                .as_array()
                .unwrap()
                .iter()
                .find(|j| j["id"] == "repair")
                .unwrap()
                .clone();
            let failure = repair["last_failure"].as_str().unwrap_or("").to_string();
            if metric(&server, "shardgate_repair_failures_total") >= 3.0 && failure.contains(says) {
                break;
            }
            assert!(Instant::now() < deadline, "{mode}: {repair}");
            std::thread::sleep(Duration::from_millis(250));
        }
        assert_eq!(
            metric(&server, "shardgate_repair_fragments_rebuilt_total"),
            0.0
        );
        assert!(queued(&server) > 0.0);
        server.bulk(&["check", "placed", "10", "300000", "0"]);
        server.kill9();
    }

    write_config("good");
    server = Server::start_with(&data, &env);
    let deadline = Instant::now() + Duration::from_secs(60);
    while queued(&server) > 0.0 || blob_files(&data).len() < 60 {
        assert!(
            Instant::now() < deadline,
            "repair did not finish once the plugin answered"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        metric(&server, "shardgate_repair_fragments_rebuilt_total"),
        10.0
    );
    server.bulk(&["check", "placed", "10", "300000", "0"]);
}
