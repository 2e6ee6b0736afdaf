//! The admin API and `shardgate admin` (issue 14), against the real
//! binary on its embedded default (six fs sites, 4 + 2): the token file
//! (mode 0600) created on first start, status, backends with the
//! fragments each holds, an object's fragment map and what it survives,
//! a scrub started and watched (`--json` lines), a pause that survives a
//! restart, and one-line errors for a wrong token and a refused action.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::PermissionsExt;

use serde_json::Value;
use support::{Server, blob_files, describe};

fn job<'a>(jobs: &'a Value, id: &str) -> &'a Value {
    jobs.as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == id)
        .unwrap_or_else(|| panic!("no job {id} in {jobs}"))
}

#[test]
fn admin_shows_and_steers_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start_with(&data, &[("SHARDGATE_SCRUB__INTERVAL_SECS", "0")]);
    let token = data.join("admin.token");
    let mode = std::fs::metadata(&token).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the token file's mode");

    assert!(server.python("op.py", &["mb", "adm"]).status.success());
    server.bulk(&["put", "adm", "12", "300000", "0"]);

    let status = server.admin_json(&["status"]);
    assert_eq!(status["backends_up"], 6, "{status}");
    assert_eq!(status["backends_down"], 0, "{status}");
    assert_eq!(status["repair_queue_objects"], 0, "{status}");
    job(&status["jobs"], "scrub");
    job(&status["jobs"], "repair");

    // Fragments held, per backend, add up to the files on disk.
    let backends = server.admin_json(&["backends"]);
    let listed = backends.as_array().unwrap();
    assert_eq!(listed.len(), 6, "{backends}");
    let held: u64 = listed
        .iter()
        .map(|b| b["fragments"].as_u64().unwrap())
        .sum();
    assert_eq!(held as usize, blob_files(&data).len());
    assert!(
        listed
            .iter()
            .all(|b| b["up"] == true && b["bytes"].as_u64().unwrap() > 0)
    );

    // One object's map: six fragments stored on six sites, two losses
    // survivable; then one fragment file goes, and scrub finds it.
    let map = server.admin_json(&["object", "adm", "k0003"]);
    let fragments = map["segments"][0]["fragments"].as_array().unwrap().clone();
    assert_eq!(fragments.len(), 6, "{map}");
    assert!(fragments.iter().all(|f| f["state"] == "stored"), "{map}");
    assert_eq!(map["survives_losses"], 2, "{map}");
    let blob = fragments[0]["blob"].as_str().unwrap();
    let file = blob_files(&data)
        .into_iter()
        .find(|f| f.file_name().unwrap().to_str().unwrap() == blob)
        .unwrap();
    // Repair held first, so the damage stays visible.
    let paused = server.admin_json(&["pause", "repair"]);
    assert_eq!(paused["state"], "paused", "{paused}");
    std::fs::remove_file(&file).unwrap();

    // A scrub pass started and watched: one JSON line per look, the last
    // after the pass, which checked all 12 objects.
    let out = server.admin(&["start", "scrub", "--watch", "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = lines.last().unwrap();
    assert_eq!(last["id"], "scrub");
    assert_eq!(last["state"], "idle", "{last}");
    assert_eq!(last["objects_done"], 12, "{last}");
    assert_eq!(last["objects_total"], 12, "{last}");
    assert!(
        last["bytes_done"].as_u64().unwrap() > 12 * 300_000,
        "{last}"
    );

    let map = server.admin_json(&["object", "adm", "k0003"]);
    assert_eq!(map["queued_for_repair"], true, "{map}");
    assert_eq!(map["survives_losses"], 1, "{map}");
    assert_eq!(
        map["segments"][0]["fragments"][0]["state"], "suspect",
        "{map}"
    );

    // The pause outlives a restart.
    server.kill9();
    let server = Server::start_with(&data, &[("SHARDGATE_SCRUB__INTERVAL_SECS", "0")]);
    let jobs = server.admin_json(&["jobs"]);
    assert_eq!(job(&jobs, "repair")["state"], "paused", "{jobs}");
    let status = server.admin_json(&["status"]);
    assert_eq!(status["repair_queue_objects"], 1, "{status}");

    // Resumed, repair rebuilds the fragment: the map is whole again.
    server.admin_json(&["resume", "repair"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let map = server.admin_json(&["object", "adm", "k0003"]);
        if map["survives_losses"] == 2 && map["queued_for_repair"] == false {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not repaired: {map}");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    // Text output names what it shows.
    let text = server.admin(&["status"]);
    assert!(text.status.success(), "{}", describe(&text));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("backends: 6 up, 0 down"), "{text}");
    assert!(text.contains("repair"), "{text}");

    // Refused and unknown: one line each, exit status 1.
    let out = server.admin(&["cancel", "repair"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("pause it instead"), "{err}");
    let out = server.admin(&["pause", "nothing"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no job \"nothing\""));
    let out = server.admin(&["object", "adm", "no-such-key"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such object"));

    // A wrong token is refused, and so is a token file others can read.
    let other = dir.path().join("other.token");
    std::fs::write(&other, "0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = server.admin(&["status", "--token-file", other.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("wrong admin token"),
        "{err}"
    );
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = server.admin(&["status", "--token-file", other.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("readable by others"), "{err}");
    // No token at all: 401 from the API itself.
    let (code, body) = support::http_get(server.admin.unwrap(), "/v1/status").unwrap();
    assert_eq!(code, 401, "{body}");
}

/// A second and third S3 user (issue 16): created with `shardgate admin
/// user create`, each owning the buckets it creates; another user's bucket
/// is AccessDenied (`clients/users.py` with boto3, and the aws CLI); the
/// keys survive a restart; the store holds no secret in clear; a user who
/// owns buckets is not deleted, and a deleted user's key stops working.
#[test]
fn users_own_their_buckets() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data);
    let create = |server: &Server, name: &str| {
        let v = server.admin_json(&["user", "create", name]);
        assert_eq!(v["name"], name, "{v}");
        (
            v["access_key"].as_str().unwrap().to_string(),
            v["secret_key"].as_str().unwrap().to_string(),
        )
    };
    let (alice_key, alice_secret) = create(&server, "alice");
    let (bob_key, bob_secret) = create(&server, "bob");
    let again = server.admin(&["user", "create", "alice"]);
    assert!(!again.status.success());
    assert!(
        describe(&again).contains("already exists"),
        "{}",
        describe(&again)
    );
    let bad = server.admin(&["user", "create", "no spaces"]);
    assert!(
        !bad.status.success() && describe(&bad).contains("user name"),
        "{}",
        describe(&bad)
    );
    let listed = server.admin_json(&["user", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert!(
        listed[0].get("secret_key").is_none(),
        "a listing shows no secret: {listed}"
    );

    let users = |server: &Server, phase: &str| {
        let out = server.python(
            "users.py",
            &[&alice_key, &alice_secret, &bob_key, &bob_secret, phase],
        );
        assert!(out.status.success(), "{}", describe(&out));
    };
    users(&server, "setup");
    users(&server, "check");
    // Issue 19: bucket policies open alice's bucket to bob and to anyone,
    // as far as they say; Public Access Block and Deny close it again.
    let out = server.python(
        "policies.py",
        &[&alice_key, &alice_secret, &bob_key, &bob_secret],
    );
    assert!(out.status.success(), "{}", describe(&out));
    // ACLs and Object Ownership: public-read objects for anyone, grants to
    // bob, a Deny that wins over an ACL, Public Access Block over both.
    let out = server.python(
        "acls.py",
        &[&alice_key, &alice_secret, &bob_key, &bob_secret],
    );
    assert!(out.status.success(), "{}", describe(&out));

    // The aws CLI as bob: alice's bucket is refused.
    let as_bob = |server: &Server, args: &[&str]| {
        support::run(
            std::process::Command::new("aws")
                .args(["--endpoint-url", &server.endpoint()])
                .args(args)
                .envs(server.env())
                .env("AWS_ACCESS_KEY_ID", &bob_key)
                .env("AWS_SECRET_ACCESS_KEY", &bob_secret),
        )
    };
    let out = as_bob(&server, &["s3", "ls", "s3://alice-b"]);
    assert!(
        !out.status.success() && describe(&out).contains("AccessDenied"),
        "{}",
        describe(&out)
    );
    let out = as_bob(&server, &["s3", "ls"]);
    assert!(out.status.success(), "{}", describe(&out));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("bob-b") && !listing.contains("alice-b"),
        "{listing}"
    );

    // Restarted: the keys still sign (secrets sealed in the store, opened
    // again), and the store does not hold them in clear.
    server.kill9();
    let server = Server::start(&data);
    users(&server, "check");
    let store = std::fs::read(data.join("meta.redb")).unwrap();
    for secret in [&alice_secret, &bob_secret] {
        assert!(
            !store.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "a secret key in clear in the store"
        );
    }

    // Alice owns buckets: not deleted. Once they are gone, she is, and
    // her key stops working.
    let refused = server.admin(&["user", "delete", "alice"]);
    assert!(!refused.status.success());
    assert!(
        describe(&refused).contains("alice-b"),
        "{}",
        describe(&refused)
    );
    server.aws_ok(&["s3", "rb", "s3://alice-b", "--force"]);
    let deleted = server.admin_json(&["user", "delete", &alice_key]);
    assert_eq!(deleted["deleted"], "alice", "{deleted}");
    let out = support::run(
        std::process::Command::new("aws")
            .args(["--endpoint-url", &server.endpoint(), "s3", "ls"])
            .envs(server.env())
            .env("AWS_ACCESS_KEY_ID", &alice_key)
            .env("AWS_SECRET_ACCESS_KEY", &alice_secret),
    );
    assert!(
        !out.status.success() && describe(&out).contains("InvalidAccessKeyId"),
        "{}",
        describe(&out)
    );
    assert!(!server.log_text().contains("panicked"));
}
