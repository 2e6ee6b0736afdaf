//! The gateway with its metadata in PostgreSQL (`[metadata] kind =
//! "postgres"`, issue 23), against Debian's server started by each test:
//! boto3's S3 suites (objects, multipart, versioning, Object Lock,
//! tagging) pass as they do on redb; the data dir holds no redb file; a
//! second gateway on the same database is refused, naming the one that
//! holds it; a gateway killed leaves a lease the next start waits out,
//! one stopped gracefully leaves none; and the next finds every object.
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
fn one_gateway_holds_the_database_and_the_next_finds_its_objects() {
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

    // A second gateway (its own data dir) on the same database waits once
    // for the lease to run out, finds it renewed, and is refused, with
    // the holder named.
    let err = support::serve_fails_with(&dir.path().join("other"), &on(&pg));
    assert!(
        err.contains("another gateway uses this metadata database")
            && err.contains("held by gateway gw-"),
        "{err}"
    );

    // Killed, the first leaves its lease to run out: the next start waits
    // for it, then serves what the first wrote.
    first.kill9();
    let mut second = Server::start_with(&data, &on(&pg));
    assert!(
        second.log_text().contains("waiting for it to run out"),
        "{}",
        second.log_text()
    );
    read_back(&second, "got2");

    // Stopped gracefully, a gateway gives its lease up: the next starts
    // without waiting.
    second.stop();
    let third = Server::start_with(&data, &on(&pg));
    assert!(
        !third.log_text().contains("waiting for it to run out"),
        "{}",
        third.log_text()
    );
    read_back(&third, "got3");
}
