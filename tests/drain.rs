//! Drain (issue 14), against the real binary: seven fs sites under the
//! default 4 + 2 policy. While four clients PUT and GET (each GET checked
//! byte for byte), `shardgate admin start drain --backend site-3 --watch`
//! empties site-3: no client sees an error, the drain ends `done`, the
//! backend holds no fragment (the admin API says so, and once the garbage
//! collector has run its directory holds no blob), and every object, old
//! and new, reads back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Server, describe, files_on_sites, fs_sites_config};

#[test]
fn a_backend_drained_under_load_ends_empty_with_no_client_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = fs_sites_config(dir.path(), 7);
    let server = Server::start_with(
        &data,
        &[
            ("SHARDGATE_CONFIG", config.to_str().unwrap()),
            ("SHARDGATE_SCRUB__INTERVAL_SECS", "0"),
        ],
    );
    assert!(server.python("op.py", &["mb", "old"]).status.success());
    assert!(server.python("op.py", &["mb", "churn"]).status.success());
    server.bulk(&["put", "old", "60", "300000", "0"]);
    let before = files_on_sites(&data, &[3]);
    assert!(before > 20, "site-3 holds {before} fragments");

    let stop = dir.path().join("stop");
    let mut churn = server.python_spawn("churn.py", &["churn", "4", "240", stop.to_str().unwrap()]);
    std::thread::sleep(Duration::from_secs(2));
    let out = server.admin(&["start", "drain", "--backend", "site-3", "--watch", "--json"]);
    assert!(out.status.success(), "drain: {}", describe(&out));
    let last: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["id"], "drain:site-3");
    assert_eq!(last["state"], "done", "{last}");
    // Some more load after the drain: new writes stay off site-3.
    std::thread::sleep(Duration::from_secs(2));
    std::fs::write(&stop, "").unwrap();
    let out = churn.wait();
    assert!(
        out.status.success(),
        "clients during the drain: {}",
        describe(&out)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    let puts: u64 = said.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(puts >= 5, "{said}");
    eprintln!(
        "drain of site-3 ({before} fragments) under load: {} objects walked, {} bytes moved at {} B/s; clients: {}",
        last["objects_done"],
        last["bytes_done"],
        last["rate_bytes_per_sec"],
        said.trim()
    );

    let backends = server.admin_json(&["backends"]);
    let site3 = backends
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == "site-3")
        .unwrap();
    assert_eq!(site3["fragments"], 0, "{site3}");
    // The old blobs go with the garbage collector (5 s of grace).
    let deadline = Instant::now() + Duration::from_secs(60);
    while files_on_sites(&data, &[3]) > 0 {
        assert!(
            Instant::now() < deadline,
            "{} blobs left on site-3",
            files_on_sites(&data, &[3])
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        server.metrics()["shardgate_drain_fragments_moved_total"] >= before as f64,
        "moved"
    );
    server.bulk(&["check", "old", "60", "300000", "0"]);
    let keys = format!("{}.keys", stop.display());
    let out = server.python("churn.py", &["churn", "check", &keys]);
    assert!(out.status.success(), "{}", describe(&out));
}
