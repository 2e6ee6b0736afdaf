//! The gateway with its metadata in PostgreSQL (`[metadata] kind =
//! "postgres"`, issue 23), against Debian's server started by each test:
//! boto3's S3 suites (objects, multipart, versioning, Object Lock,
//! tagging) pass as they do on redb; the data dir holds no redb file; a
//! gateway restarted after a kill -9 starts at once and finds every
//! object; one stopped gracefully leaves the gateways' list. (Several
//! gateways at once: `tests/gateways.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use shardgate_emulators::postgres::Postgres;
use support::{Server, describe};

fn on(pg: &Postgres) -> [(&'static str, &str); 2] {
    [
        ("SHARDGATE_METADATA__KIND", "postgres"),
        ("SHARDGATE_METADATA__URL", pg.url.as_str()),
    ]
}

#[test]
fn boto3_suites_pass_with_the_metadata_in_postgres() {
    // Each suite on a database and a data dir of its own: they reuse
    // bucket names.
    for suite in [
        "boto3_suite.py",
        "versioning.py",
        "object_lock.py",
        "tagging.py",
    ] {
        let pg = Postgres::start();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let server = Server::start_with(&data, &on(&pg));
        let out = server.python(suite, &[]);
        assert!(out.status.success(), "{suite}: {}", describe(&out));
        assert_eq!(server.get("/health").unwrap().0, 200);
        let log = server.log_text();
        assert!(!log.contains("panicked"), "{log}");
        assert!(!log.contains(&pg.url), "the database URL reached the log");
        assert!(
            !data.join("meta.redb").exists(),
            "a redb file was made beside the database"
        );
    }
}

#[test]
fn a_gateway_restarted_after_a_kill_finds_its_objects_at_once() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let body = dir.path().join("body");
    std::fs::write(&body, support::pattern(7, 300_000)).unwrap();
    let mut first = Server::start_with(&data, &on(&pg));
    let out = first.python("op.py", &["mb", "kept"]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = first.python("op.py", &["put", "kept", "k", body.to_str().unwrap()]);
    assert!(out.status.success(), "{}", describe(&out));
    let read_back = |server: &Server, name: &str| {
        let got = dir.path().join(name);
        let out = server.python("op.py", &["get", "kept", "k", got.to_str().unwrap()]);
        assert!(out.status.success(), "{}", describe(&out));
        assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(&body).unwrap());
    };

    // Killed, the first leaves its membership to run out; the next start
    // (a new member) need not wait for it, and serves what the first
    // wrote.
    first.kill9();
    let started = std::time::Instant::now();
    let mut second = Server::start_with(&data, &on(&pg));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the restart waited {:?}",
        started.elapsed()
    );
    read_back(&second, "got2");
    // The killed one still shows among the gateways until its lease ran
    // out; the restarted one is alive.
    let gateways = second.admin_json(&["gateways"]);
    let me = gateways
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["this"] == true)
        .cloned()
        .unwrap();
    assert_eq!(me["live"], true, "{gateways}");

    // Stopped gracefully, a gateway leaves the list at once.
    second.stop();
    let third = Server::start_with(&data, &on(&pg));
    read_back(&third, "got3");
    let gateways = third.admin_json(&["gateways"]);
    assert!(
        gateways
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["id"] != me["id"]),
        "{gateways}"
    );
}

/// `shardgate meta copy ARGS`.
fn meta_copy(from: &str, to: &str) -> std::process::Output {
    support::run(
        std::process::Command::new(env!("CARGO_BIN_EXE_shardgate"))
            .args(["meta", "copy", "--from", from, "--to", to]),
    )
}

#[test]
fn meta_copy_moves_a_store_to_postgres_and_back_and_refuses_what_would_lose_writes() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let state = dir.path().join("state.json");
    let state = state.to_str().unwrap();
    let redb_file = data.join("meta.redb");
    let from_redb = format!("redb:{}", redb_file.display());
    let url_file = dir.path().join("metadata-url");
    std::fs::write(&url_file, format!("{}\n", pg.url)).unwrap();
    let to_pg = format!("postgres-file:{}", url_file.display());

    let mut on_redb = Server::start(&data);
    let out = on_redb.python("meta_copy.py", &["fill", state]);
    assert!(out.status.success(), "{}", describe(&out));
    // A running gateway holds its redb file: nothing is copied.
    let out = meta_copy(&from_redb, &to_pg);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stop it first"), "{err}");
    on_redb.stop();
    // A URL file others can read is refused, as the gateway refuses it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&url_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = meta_copy(&from_redb, &to_pg);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&url_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    let out = meta_copy(&from_redb, &to_pg);
    assert!(out.status.success(), "{}", describe(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("counts and digest verified"), "{said}");
    assert!(said.contains("versions"), "{said}");
    // The redb file is kept aside: the gateway below serves from
    // PostgreSQL alone.
    let kept = dir.path().join("meta.redb.before");
    std::fs::rename(&redb_file, &kept).unwrap();
    let mut on_pg = Server::start_with(&data, &on(&pg));
    let out = on_pg.python("meta_copy.py", &["check", state]);
    assert!(out.status.success(), "{}", describe(&out));
    let body = dir.path().join("after");
    std::fs::write(&body, support::pattern(3, 100_000)).unwrap();
    let out = on_pg.python("op.py", &["mb", "later"]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = on_pg.python(
        "op.py",
        &[
            "put",
            "later",
            "written-on-postgres",
            body.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", describe(&out));

    // Refused, and nothing made: a store a gateway serves from, and a
    // destination that holds anything.
    let back = format!("redb:{}", redb_file.display());
    let out = meta_copy(&to_pg, &back);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("are serving from the source"), "{err}");
    assert!(!redb_file.exists());
    assert!(!data.join("meta.redb.copying").exists());
    let into_served = meta_copy(&format!("redb:{}", kept.display()), &to_pg);
    on_pg.stop();
    let into_filled = meta_copy(&format!("redb:{}", kept.display()), &to_pg);
    for (out, cause) in [
        (into_served, "is serving from the destination"),
        (into_filled, "the destination is not empty"),
    ] {
        assert!(!out.status.success(), "{}", describe(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(cause), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }

    // `shardgate garbage` reads the database the configuration names.
    let out = support::run(
        std::process::Command::new(env!("CARGO_BIN_EXE_shardgate"))
            .args(["garbage", "list", "--data-dir"])
            .arg(&data)
            .envs(on(&pg)),
    );
    assert!(out.status.success(), "{}", describe(&out));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.starts_with("backend\titems\tbytes"), "{listed}");

    // And back: the redb copy serves everything, the write made on
    // PostgreSQL and the upload left open included.
    let out = meta_copy(&to_pg, &back);
    assert!(out.status.success(), "{}", describe(&out));
    let out = meta_copy(&to_pg, &back);
    assert!(!out.status.success(), "a second copy overwrote the first");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exists: a copy builds a new store"), "{err}");
    let on_redb = Server::start(&data);
    let out = on_redb.python("meta_copy.py", &["check", state, "complete"]);
    assert!(out.status.success(), "{}", describe(&out));
    let got = dir.path().join("got");
    let out = on_redb.python(
        "op.py",
        &["get", "later", "written-on-postgres", got.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(&body).unwrap());
    for log in [on_redb.log_text(), on_pg.log_text()] {
        assert!(!log.contains("panicked"), "{log}");
    }
}
