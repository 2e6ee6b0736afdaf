//! Issue 17: the gateway's disk is lost, the backends are not. `shardgate
//! recover` rebuilds the metadata store from the manifest journal on the
//! backends, and every live object reads back byte for byte, with m
//! backends gone as well. Real gateway, real boto3.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{BIN, Server, describe, fs_sites_config, journal_files, run};

fn recover(identity: &Path, config: &Path, data: &Path) -> Output {
    run(Command::new(BIN)
        .arg("recover")
        .arg("--identity")
        .arg(identity)
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data))
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.path().is_dir() {
                true => stack.push(e.path()),
                false => out.push(e.path()),
            }
        }
    }
    out
}

#[test]
fn a_lost_metadata_store_is_rebuilt_from_the_journal_on_the_backends() {
    let tmp = tempfile::tempdir().unwrap();
    let config = fs_sites_config(tmp.path(), 6);
    let data = tmp.path().join("data");
    let env = [("SHARDGATE_CONFIG", config.to_str().unwrap())];
    let state = tmp.path().join("state.json");
    let state = state.to_str().unwrap();

    let mut server = Server::start_with(&data, &env);
    let out = server.python("recover_check.py", &["write", state]);
    assert!(out.status.success(), "{}", describe(&out));
    // The journal keeps up: its backlog drains within seconds, into units
    // on the backends (/metrics).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let m = server.metrics();
        let backlog = m.get("shardgate_journal_outbox_records{}").copied();
        let units = m.get("shardgate_journal_units{of=\"units\"}").copied();
        if backlog == Some(0.0) && units.is_some_and(|u| u > 0.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "journal backlog {backlog:?}, units {units:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    server.stop();
    assert!(
        server.log_text().contains("journal: every change shipped"),
        "a graceful stop ships the journal"
    );

    // Nothing on any backend names a bucket or a key, or holds plaintext.
    assert!(!journal_files(&data).is_empty());
    let needles: [&[u8]; 6] = [
        b"PLAINTEXT-MARKER-7f3a",
        b"MARKER-META",
        b"recovery-plain",
        b"recovery-versioned",
        b"docs/file-",
        b"ver/obj-",
    ];
    let mut scanned = 0;
    for f in files_under(&data.join("backends")) {
        let bytes = std::fs::read(&f).unwrap();
        scanned += bytes.len();
        let name = f.to_string_lossy();
        for needle in needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle)
                    && !name.contains(std::str::from_utf8(needle).unwrap()),
                "{name} holds {:?}",
                String::from_utf8_lossy(needle)
            );
        }
    }
    assert!(scanned > 20 << 20, "{scanned} bytes scanned");

    // recover never overwrites a store, and needs a key that opens the
    // journal.
    let keys = data.join("keys");
    let out = recover(&keys.join("recovery-identity.txt"), &config, &data);
    assert!(!out.status.success());
    assert!(
        describe(&out).contains("never overwrites"),
        "{}",
        describe(&out)
    );
    std::fs::remove_file(data.join("meta.redb")).unwrap();
    let stranger = tmp.path().join("stranger.txt");
    std::fs::write(
        &stranger,
        shardgate_core::Identities::generate().to_identity_file(),
    )
    .unwrap();
    let out = recover(&stranger, &config, &data);
    assert!(!out.status.success());
    assert!(
        describe(&out).contains("opens none of the journal"),
        "{}",
        describe(&out)
    );
    assert!(!data.join("meta.redb").exists());

    // The disk is lost: recover with the offline recovery key.
    let out = recover(&keys.join("recovery-identity.txt"), &config, &data);
    assert!(out.status.success(), "{}", describe(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("recovered 2 buckets and"), "{said}");
    eprintln!("{said}");
    let mut server = Server::start_with(&data, &env);
    let out = server.python("recover_check.py", &["verify", state]);
    assert!(out.status.success(), "{}", describe(&out));
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    server.stop();

    // Lost again, and m = 2 of the 6 backends with it: the gateway's own
    // identity this time.
    std::fs::remove_file(data.join("meta.redb")).unwrap();
    for site in ["site-5", "site-6"] {
        std::fs::remove_dir_all(data.join("backends").join(site)).unwrap();
    }
    let out = recover(&keys.join("gateway-identity.txt"), &config, &data);
    assert!(out.status.success(), "{}", describe(&out));
    let server = Server::start_with(&data, &env);
    let out = server.python("recover_check.py", &["verify", state]);
    assert!(out.status.success(), "{}", describe(&out));
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
}
