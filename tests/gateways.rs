//! Several gateways as one (issue 23): three `shardgate serve` processes on
//! 127.0.0.1 over one PostgreSQL (Debian's, started by each test) and six
//! fs backends, sharing keys and credentials. Clients spread their
//! requests over the three (`tests/clients/gateways.py`):
//! - 10,000 mixed operations see every acknowledged write wherever they
//!   read it (read-after-write, listing after write, delete), 0 errors;
//! - 16 clients racing `If-None-Match: *` PUTs of one key: exactly one
//!   wins, and every gateway reads its body;
//! - a gateway configured otherwise (its own keys) is refused, naming
//!   what differs; any gateway's admin API lists all three with their
//!   jobs;
//! - kill -9 of one gateway while clients write: the others keep serving,
//!   no acknowledged write is lost, the dead one's unfinished writes are
//!   swept and its jobs (repair among them) taken over;
//! - kill -9 of the gateway running a repair, 3 of 40 fragments in: the
//!   others take the job over and finish it, six fragments per object
//!   again, one per site;
//! - PostgreSQL restarted under load (`pg_ctl stop -m fast`, 10 s down):
//!   requests fail with 503 SlowDown or 500 InternalError only, none
//!   hangs, and the gateways serve again without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use shardgate_emulators::postgres::Postgres;
use support::{Server, Spawned, describe, fs_sites_config};

/// Three gateways sharing `pg`, the fs backends and the keys of the first.
struct Three {
    servers: Vec<Server>,
    dir: tempfile::TempDir,
    config: PathBuf,
}

fn env<'a>(pg: &'a Postgres, config: &'a Path) -> Vec<(&'static str, &'a str)> {
    vec![
        ("SHARDGATE_CONFIG", config.to_str().unwrap()),
        ("SHARDGATE_METADATA__KIND", "postgres"),
        ("SHARDGATE_METADATA__URL", pg.url.as_str()),
        ("SHARDGATE_FS__SHARED", "true"),
    ]
}

/// Copies the first gateway's keys and credentials into `data`.
fn share_keys(from: &Path, data: &Path) {
    std::fs::create_dir_all(data.join("keys")).unwrap();
    for entry in std::fs::read_dir(from.join("keys")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), data.join("keys").join(entry.file_name())).unwrap();
    }
    std::fs::copy(from.join("credentials"), data.join("credentials")).unwrap();
}

fn start_three(pg: &Postgres) -> Three {
    start_three_with(pg, &[])
}

/// [`start_three`] with more settings for each.
fn start_three_with(pg: &Postgres, extra: &[(&'static str, &str)]) -> Three {
    let dir = tempfile::tempdir().unwrap();
    let config = fs_sites_config(dir.path(), 6);
    let mut settings = env(pg, &config);
    settings.extend_from_slice(extra);
    let first = dir.path().join("g1");
    let mut servers = vec![Server::start_with(&first, &settings)];
    for name in ["g2", "g3"] {
        let data = dir.path().join(name);
        share_keys(&first, &data);
        servers.push(Server::start_with(&data, &settings));
    }
    Three {
        servers,
        dir,
        config,
    }
}

impl Three {
    /// `gateways.py` with the live gateways' endpoints.
    fn clients(&self, args: &[&str]) -> Command {
        let live: Vec<&Server> = self.servers.iter().filter(|s| s.is_running()).collect();
        let endpoints: Vec<String> = live.iter().map(|s| s.endpoint()).collect();
        let mut cmd = live[0].script("gateways.py", args);
        cmd.env("S3_ENDPOINTS", endpoints.join(","));
        cmd
    }

    fn run_clients(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let out = support::run(&mut self.clients(args));
        json_lines(&out)
    }
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    assert!(out.status.success(), "{}", describe(out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn three_gateways_over_one_postgres_serve_one_namespace() {
    let pg = Postgres::start();
    let three = start_three(&pg);
    let [g1, g2, g3] = [&three.servers[0], &three.servers[1], &three.servers[2]];

    // A gateway with keys of its own would seal objects the others cannot
    // open: refused, naming what differs.
    let err = support::serve_fails_with(&three.dir.path().join("other"), &env(&pg, &three.config));
    assert!(
        err.contains("shares this metadata store with another configuration")
            && err.contains("recipients differs"),
        "{err}"
    );

    // Any gateway's admin API lists the three, alive, each with its jobs;
    // each job runs on one of them.
    let gateways = g2.admin_json(&["gateways"]);
    let gateways = gateways.as_array().unwrap();
    assert_eq!(gateways.len(), 3, "{gateways:?}");
    assert!(gateways.iter().all(|g| g["live"] == true), "{gateways:?}");
    assert_eq!(gateways.iter().filter(|g| g["this"] == true).count(), 1);
    let endpoints: Vec<String> = three.servers.iter().map(|s| s.endpoint()).collect();
    for g in gateways {
        assert!(
            endpoints.contains(&g["s3_endpoint"].as_str().unwrap().to_string()),
            "{g}"
        );
    }
    // Each job runs on one of them (as their heartbeats, every 10 s, say).
    eventually(
        Duration::from_secs(30),
        "repair running on one gateway",
        || {
            let gateways = g2.admin_json(&["gateways"]);
            let runs_repair = gateways
                .as_array()
                .unwrap()
                .iter()
                .filter(|g| {
                    g["jobs"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|j| j["id"] == "repair" && j["runs_here"] == true)
                })
                .count();
            (runs_repair != 1).then(|| format!("on {runs_repair}: {gateways}"))
        },
    );

    let out = g1.python("op.py", &["mb", "many"]);
    assert!(out.status.success(), "{}", describe(&out));
    // 10,000 operations, 4 clients, each request to a random gateway.
    let per_worker = std::env::var("SHARDGATE_TEST_MIXED_OPS").unwrap_or("2500".into());
    let totals = &three.run_clients(&["mixed", "many", "4", &per_worker, "7"])[0];
    eprintln!("mixed operations: {totals}");
    assert_eq!(
        totals["ops"],
        4 * per_worker.parse::<u64>().unwrap(),
        "{totals}"
    );
    assert_eq!(totals["errors"], 0, "{totals}");
    assert_eq!(totals["mismatches"], 0, "{totals}");
    assert_eq!(totals["stuck_workers"], 0, "{totals}");
    for n in totals["by_gateway"].as_array().unwrap() {
        assert!(
            n.as_u64().unwrap() > per_worker.parse::<u64>().unwrap(),
            "{totals}"
        );
    }

    // 16 clients race If-None-Match: * over the three, 5 keys.
    for race in three.run_clients(&["race", "many", "5", "16"]) {
        assert_eq!(race["winners"], 1, "{race}");
        assert_eq!(race["refused"], 15, "{race}");
        assert_eq!(race["every_gateway_reads_the_winner"], true, "{race}");
    }

    for g in [g1, g2, g3] {
        let log = g.log_text();
        assert!(!log.contains("panicked"), "{log}");
        assert!(!log.contains(&pg.url), "the database URL reached the log");
    }
}

/// Polls `f` every 500 ms for `within`.
fn eventually(within: Duration, what: &str, mut f: impl FnMut() -> Option<String>) {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    while Instant::now() < deadline {
        match f() {
            None => return,
            Some(why) => last = why,
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("{what} within {within:?}: {last}");
}

#[test]
fn a_gateway_killed_while_clients_write_loses_nothing_and_its_jobs_move() {
    let pg = Postgres::start();
    let mut three = start_three(&pg);
    let out = three.servers[0].python("op.py", &["mb", "kept"]);
    assert!(out.status.success(), "{}", describe(&out));
    // The first gateway started first: it holds the jobs' leases.
    let first_id = {
        let all = three.servers[0].admin_json(&["gateways"]);
        let me = all
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["this"] == true)
            .cloned();
        me.unwrap()["id"].as_str().unwrap().to_string()
    };
    // It runs repair (it took the lease first).
    let jobs = three.servers[0].admin_json(&["jobs"]);
    assert!(
        jobs.as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == "repair" && j["runs_here"] == true),
        "{jobs}"
    );
    let log = three.dir.path().join("acked.log");
    let mut writer =
        Spawned::start(&mut three.clients(&["write", "kept", "12", log.to_str().unwrap()]));
    std::thread::sleep(Duration::from_secs(3));
    // A PUT in flight on the first when it dies: half its body sent, its
    // intent open, its connection held.
    let first = &three.servers[0];
    let signer = shardgate_loadgen::sigv4::Signer {
        access: first.access_key.clone(),
        secret: first.secret_key.clone(),
        host: first.addr.to_string(),
    };
    let body = support::pattern(9, 64 << 20);
    let (head, rest) =
        support::raw::put_parts(&signer, "/kept/in-flight", &body, &[], false, false);
    let mut in_flight = support::raw::Raw::connect(first.addr);
    in_flight.send(&head).unwrap();
    in_flight.send(&rest[..rest.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    three.servers[0].kill9();
    drop(in_flight);
    let written = json_lines(&writer.wait());
    assert!(
        written[0]["acknowledged"].as_u64().unwrap() > 20,
        "{written:?}"
    );

    // Every acknowledged write reads back through both survivors.
    let acked = std::fs::read_to_string(&log).unwrap().lines().count();
    let verified = &three.run_clients(&["verify", "kept", log.to_str().unwrap()])[0];
    assert_eq!(verified["wrong"], serde_json::json!([]), "{verified}");
    assert_eq!(verified["reads"], 2 * acked, "{verified}");

    // Within the lease's term (30 s) and a sweep (30 s), the survivors
    // take the dead one's jobs over and sweep what it left open.
    let (g2, g3) = (&three.servers[1], &three.servers[2]);
    eventually(Duration::from_secs(90), "the repair job taken over", || {
        let here: Vec<bool> = [g2, g3]
            .iter()
            .map(|g| {
                g.admin_json(&["jobs"])
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|j| j["id"] == "repair" && j["runs_here"] == true)
            })
            .collect();
        (here.iter().filter(|h| **h).count() != 1).then(|| format!("{here:?}"))
    });
    eventually(
        Duration::from_secs(90),
        "the dead gateway's writes swept",
        || {
            let status = g2.admin_json(&["status"]);
            let swept = [g2, g3].iter().any(|g| {
                g.log_text()
                    .contains("unfinished writes swept into garbage")
            });
            (status["open_intents"] != 0 || !swept).then(|| status.to_string())
        },
    );
    let gateways = g3.admin_json(&["gateways"]);
    let dead = gateways
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == first_id.as_str())
        .cloned();
    assert!(
        dead.is_none_or(|g| g["live"] == false),
        "the killed gateway still shows alive: {gateways}"
    );

    // A repair after the kill finishes on the survivors: a fragment file
    // of an object deleted, found by a read, rebuilt.
    // The dead gateway's swept write is garbage due at once (replaced
    // versions wait 10 minutes on a shared store; there are none here):
    // once it is collected, the count holds still.
    eventually(Duration::from_secs(90), "garbage collected", || {
        let status = g2.admin_json(&["status"]);
        (status["garbage_items"] != 0).then(|| status.to_string())
    });
    let blobs = support::blob_files(&three.dir.path().join("data"));
    let before = blobs.len();
    std::fs::remove_file(&blobs[0]).unwrap();
    let again = &three.run_clients(&["verify", "kept", log.to_str().unwrap()])[0];
    assert_eq!(again["wrong"], serde_json::json!([]), "{again}");
    let mut started = Instant::now();
    eventually(Duration::from_secs(90), "the lost fragment rebuilt", || {
        if started.elapsed() > Duration::from_secs(20) {
            // A scrub pass finds it if no read did.
            let _ = g2.admin(&["start", "scrub"]);
            let _ = g3.admin(&["start", "scrub"]);
            started = Instant::now();
        }
        let now = support::blob_files(&three.dir.path().join("data")).len();
        (now != before).then(|| format!("{now} blob files of {before}"))
    });
    for g in [g2, g3] {
        let log = g.log_text();
        assert!(!log.contains("panicked"), "{log}");
    }
}

fn metric(server: &Server, name: &str) -> f64 {
    server.metrics().get(name).copied().unwrap_or(0.0)
}

/// Whether `server` runs the repair job now.
fn runs_repair(server: &Server) -> bool {
    server
        .admin_json(&["jobs"])
        .as_array()
        .unwrap()
        .iter()
        .any(|j| j["id"] == "repair" && j["runs_here"] == true)
}

#[test]
fn a_gateway_killed_in_the_middle_of_a_repair_leaves_it_to_the_others_who_finish_it() {
    let pg = Postgres::start();
    // Repair throttled to 1 MiB/s, so the kill lands in the middle of it.
    let mut three = start_three_with(
        &pg,
        &[
            ("SHARDGATE_SCRUB__INTERVAL_SECS", "1"),
            ("SHARDGATE_REPAIR__RATE_BYTES_PER_SEC", "1048576"),
        ],
    );
    let data = three.dir.path().join("data");
    let out = three.servers[0].python("op.py", &["mb", "repaired"]);
    assert!(out.status.success(), "{}", describe(&out));
    three.servers[0].bulk(&["put", "repaired", "40", "700000", "0"]);
    assert_eq!(support::blob_files(&data).len(), 40 * 6);
    // Every object loses its fragment on site-1 (the site keeps working).
    for f in support::blob_files(&data) {
        if f.to_str().unwrap().contains("/site-1/") {
            std::fs::remove_file(f).unwrap();
        }
    }
    // Scrub finds the losses; the gateway that holds the repair lease
    // rebuilds, and is killed once it has rebuilt a few.
    let mut repairer = None;
    eventually(Duration::from_secs(90), "a repair under way", || {
        repairer = three.servers.iter().position(|s| {
            runs_repair(s) && metric(s, "shardgate_repair_fragments_rebuilt_total") >= 3.0
        });
        repairer
            .is_none()
            .then(|| "no gateway has rebuilt 3 fragments".to_string())
    });
    let repairer = repairer.unwrap();
    let rebuilt_before = metric(
        &three.servers[repairer],
        "shardgate_repair_fragments_rebuilt_total",
    );
    three.servers[repairer].kill9();
    assert!(
        rebuilt_before < 40.0,
        "the repair had finished before the kill: {rebuilt_before}"
    );

    // The others take the job over (its lease runs out within 30 s) and
    // finish it: every object has its six fragments again, one per site,
    // nothing is left open, and every object reads back through both.
    let survivors: Vec<&Server> = three.servers.iter().filter(|s| s.is_running()).collect();
    eventually(Duration::from_secs(240), "the repair finished", || {
        let status = survivors[0].admin_json(&["status"]);
        let files = support::blob_files(&data).len();
        let per_site = support::files_on_sites(&data, &[1, 2, 3, 4, 5, 6]);
        (status["repair_queue_objects"] != 0
            || status["open_intents"] != 0
            || files != 40 * 6
            || per_site != 40 * 6)
            .then(|| format!("{files} blobs, {per_site} on the sites, {status}"))
    });
    for site in 1..=6 {
        assert_eq!(support::files_on_sites(&data, &[site]), 40, "site-{site}");
    }
    let rebuilt_after: f64 = survivors
        .iter()
        .map(|s| metric(s, "shardgate_repair_fragments_rebuilt_total"))
        .sum();
    eprintln!(
        "rebuilt {rebuilt_before} fragments before the kill, {rebuilt_after} after, on the survivors"
    );
    assert!(rebuilt_after > 0.0);
    assert!(rebuilt_before + rebuilt_after >= 40.0);
    for s in &survivors {
        s.bulk(&["check", "repaired", "40", "700000", "0"]);
        let log = s.log_text();
        assert!(!log.contains("panicked"), "{log}");
    }
}

/// Seconds since the Unix epoch, as the clients stamp their requests.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn postgres_restarted_under_load_fails_requests_briefly_and_the_gateways_recover_alone() {
    let mut pg = Postgres::start();
    let three = start_three(&pg);
    let out = three.servers[0].python("op.py", &["mb", "kept"]);
    assert!(out.status.success(), "{}", describe(&out));
    let log = three.dir.path().join("acked.log");
    let requests = three.dir.path().join("requests.jsonl");
    let seconds = 45.0;
    let mut load = Spawned::start(&mut three.clients(&[
        "load",
        "kept",
        "6",
        &seconds.to_string(),
        log.to_str().unwrap(),
        requests.to_str().unwrap(),
    ]));
    std::thread::sleep(Duration::from_secs(8));
    let down = unix_now();
    pg.stop();
    std::thread::sleep(Duration::from_secs(10));
    pg.start_again();
    let up = unix_now();
    let totals = json_lines(&load.wait());
    let totals = &totals[0];
    assert_eq!(totals["wrong"], 0, "{totals}");

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&requests)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, totals["requests"].as_u64().unwrap());
    let start = |r: &serde_json::Value| r["start"].as_f64().unwrap();
    let ms = |r: &serde_json::Value| r["ms"].as_f64().unwrap();
    let failed: Vec<&serde_json::Value> = lines.iter().filter(|r| r["outcome"] != "ok").collect();
    let slowest = lines.iter().map(ms).fold(0.0, f64::max);
    let last_failure = failed
        .iter()
        .map(|r| start(r) - up)
        .fold(f64::MIN, f64::max);
    let slow_downs = failed
        .iter()
        .filter(|r| r["outcome"] == "S3 SlowDown 503")
        .count();
    eprintln!(
        "{} requests, {} failed ({slow_downs} SlowDown), slowest {slowest:.0} ms; the database was down {:.1} s; the last failure started {last_failure:.1} s after it was back",
        lines.len(),
        failed.len(),
        up - down
    );
    // While it was down: answered, with 503 SlowDown or 500 InternalError
    // only, none hanging (the statement and connect timeouts are 5 s).
    assert!(!failed.is_empty(), "no request saw the database down");
    for r in &failed {
        let outcome = r["outcome"].as_str().unwrap();
        assert!(
            outcome == "S3 SlowDown 503" || outcome == "S3 InternalError 500",
            "{r}"
        );
        assert!(
            start(r) + ms(r) / 1000.0 > down - 1.0 && start(r) < up + 10.0,
            "a failure outside the outage: {r}"
        );
    }
    assert!(slowest < 15_000.0, "a request hung for {slowest} ms");
    // Before, and from 10 s after it came back: every request served.
    let before = lines
        .iter()
        .filter(|r| start(r) + ms(r) / 1000.0 < down - 1.0);
    let after: Vec<_> = lines.iter().filter(|r| start(r) > up + 10.0).collect();
    assert!(before.count() > 20);
    assert!(
        after.len() > 20,
        "{} requests after the restart",
        after.len()
    );
    assert!(after.iter().all(|r| r["outcome"] == "ok"));

    // No acknowledged write is lost, whichever gateway reads it; the three
    // are members again, alive.
    let acked = std::fs::read_to_string(&log).unwrap().lines().count();
    let verified = &three.run_clients(&["verify", "kept", log.to_str().unwrap()])[0];
    assert_eq!(verified["wrong"], serde_json::json!([]), "{verified}");
    assert_eq!(verified["reads"], 3 * acked, "{verified}");
    eventually(Duration::from_secs(40), "three live gateways", || {
        let all = three.servers[1].admin_json(&["gateways"]);
        let live = all
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["live"] == true)
            .count();
        (live != 3).then(|| all.to_string())
    });
    for server in &three.servers {
        assert!(server.is_running());
        let log = server.log_text();
        assert!(!log.contains("panicked"), "{log}");
    }
}
