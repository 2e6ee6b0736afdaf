//! The binary's first start, restart, configuration errors and the example
//! configuration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{BIN, Server, describe, run};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Starts `serve` and returns everything it printed on stdout before the
/// listening line, then stops it.
fn first_lines(data: &Path) -> String {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut text = String::new();
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            text.push_str(&line);
            text.push('\n');
            if line.contains("listening on") {
                break;
            }
        }
        let _ = tx.send(text);
    });
    let text = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    text
}

#[test]
fn first_start_creates_keys_once_and_a_restart_reuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = first_lines(&data);
    assert!(first.contains("secret key: "), "{first}");
    assert!(
        first.contains("WARNING: keep the identity files safe"),
        "{first}"
    );
    assert!(first.contains("4 + 2"), "{first}");
    for f in [
        "credentials",
        "keys/gateway-identity.txt",
        "keys/recovery-identity.txt",
    ] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    let recipient = std::fs::read_to_string(data.join("keys/recovery-recipient.txt")).unwrap();
    assert!(recipient.starts_with("age1"), "{recipient}");
    let creds = std::fs::read_to_string(data.join("credentials")).unwrap();
    let identity = std::fs::read_to_string(data.join("keys/gateway-identity.txt")).unwrap();

    let second = first_lines(&data);
    assert!(
        !second.contains("secret key"),
        "the secret is printed once: {second}"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("credentials")).unwrap(),
        creds
    );
    assert_eq!(
        std::fs::read_to_string(data.join("keys/gateway-identity.txt")).unwrap(),
        identity
    );
    let access = creds
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("access_key=");
    assert!(second.contains(&format!("access key {access}")), "{second}");
}

#[test]
fn a_second_gateway_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let _server = Server::start(&data);
    let out = run(Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another process"), "{err}");
}

/// Runs `serve` expecting a configuration error: exit 1 and one line on
/// stderr naming the cause.
fn config_error(config: Option<&str>, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir.path()).args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    if let Some(text) = config {
        std::fs::write(dir.path().join("bad.toml"), text).unwrap();
        cmd.args(["--config", "bad.toml"]);
    }
    let out = run(cmd.envs(env.iter().copied()).env("RUST_LOG", "off"));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("shardgate: error: "), "{err}");
    err
}

#[test]
fn configuration_errors_name_the_key_and_where_it_came_from() {
    let err = config_error(Some("[policies.default]\nk = 0\nm = 2\n"), &[]);
    assert!(err.contains("policies.default"), "{err}");
    let err = config_error(Some("listen = 12\n"), &[]);
    assert!(err.contains("listen") && err.contains("bad.toml"), "{err}");
    let err = config_error(Some("colour = \"blue\"\n"), &[]);
    assert!(err.contains("colour"), "{err}");
    let err = config_error(None, &[("SHARDGATE_LISTEN", "not-an-address")]);
    assert!(err.contains("SHARDGATE_LISTEN"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let out =
        run(Command::new(BIN)
            .current_dir(dir.path())
            .args(["serve", "--config", "missing.toml"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[test]
fn the_example_configuration_serves() {
    let dir = tempfile::tempdir().unwrap();
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config/two-sites.toml");
    std::fs::write(dir.path().join("secret_key"), "example-secret-key\n").unwrap();
    std::fs::set_permissions(
        dir.path().join("secret_key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .current_dir(dir.path())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&example)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take(20)
            .find(|l| l.contains("listening on http://"))
    };
    let Some(line) = line else {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!("did not start: {}", describe(&out));
    };
    let endpoint = line
        .split("listening on ")
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    let op = |args: &[&str]| {
        run(Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/op.py"))
            .args(args)
            .env("S3_ENDPOINT", &endpoint)
            .env("AWS_ACCESS_KEY_ID", "shardgate-example")
            .env("AWS_SECRET_ACCESS_KEY", "example-secret-key"))
    };
    let file = dir.path().join("f");
    std::fs::write(&file, support::pattern(1, 2 << 20)).unwrap();
    for args in [
        vec!["mb", "backups"],
        vec!["put", "backups", "k", file.to_str().unwrap()],
        vec![
            "get",
            "backups",
            "k",
            dir.path().join("g").to_str().unwrap(),
        ],
    ] {
        let out = op(&args);
        assert!(out.status.success(), "{args:?}: {}", describe(&out));
    }
    assert_eq!(
        std::fs::read(dir.path().join("g")).unwrap(),
        support::pattern(1, 2 << 20)
    );
    // The bucket "backups" uses the archive policy (3 + 3): six fragments,
    // one in each of the six directories.
    for d in [
        "a-disk1", "a-disk2", "b-disk1", "b-disk2", "c-disk1", "c-disk2",
    ] {
        let blobs = dir.path().join("shardgate-data").join(d).join("blobs");
        let count = std::fs::read_dir(&blobs)
            .unwrap()
            .flatten()
            .filter(|p| !p.file_name().to_string_lossy().starts_with('j'))
            .map(|p| std::fs::read_dir(p.path()).unwrap().count())
            .sum::<usize>();
        assert_eq!(count, 1, "{d}");
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Blob files under one fs backend directory.
fn blobs_in(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("blobs"))
        .map(|prefixes| {
            prefixes
                .flatten()
                // Fragments only: the journal's blobs fan out under j*.
                .filter(|p| !p.file_name().to_string_lossy().starts_with('j'))
                .map(|p| std::fs::read_dir(p.path()).map_or(0, |f| f.count()))
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn an_eu_only_bucket_stores_fragments_only_in_the_eu() {
    let dir = tempfile::tempdir().unwrap();
    // The repository's policies/eu-only.toml, as is, next to its plugin.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let policies = dir.path().join("repo/policies");
    let plugin_dir = dir.path().join("repo/plugins/examples/eu-only-c");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::create_dir_all(&plugin_dir).unwrap();
    std::fs::copy(
        repo.join("policies/eu-only.toml"),
        policies.join("eu-only.toml"),
    )
    .unwrap();
    std::fs::copy(
        repo.join("plugins/examples/eu-only-c/eu-only.wasm"),
        plugin_dir.join("eu-only.wasm"),
    )
    .unwrap();
    let regions = [
        "eu-west",
        "eu-west",
        "eu-central",
        "eu-central",
        "eu-north",
        "eu-north",
        "us-east",
        "us-east",
        "ap-south",
    ];
    let mut config = format!(
        "default_policy = \"spread\"\npolicy_dir = \"{}\"\n\n[policies.spread]\nk = 4\nm = 2\n\n\
         [buckets]\neu-data = \"eu-only\"\n",
        policies.display()
    );
    for (i, region) in regions.iter().enumerate() {
        config.push_str(&format!(
            "\n[[backends]]\nid = \"d{i}\"\nkind = \"fs\"\npath = \"{}\"\nlabels = {{ region = \"{region}\", site = \"s{i}\" }}\n",
            dir.path().join(format!("d{i}")).display()
        ));
    }
    let config_path = dir.path().join("eu.toml");
    std::fs::write(&config_path, config).unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(
        &data,
        &[("SHARDGATE_CONFIG", config_path.to_str().unwrap())],
    );
    let file = dir.path().join("f");
    for (bucket, key) in [
        ("eu-data", "a"),
        ("eu-data", "b"),
        ("eu-data", "c"),
        ("anywhere", "x"),
    ] {
        let out = server.python("op.py", &["mb", bucket]);
        assert!(
            out.status.success()
                || String::from_utf8_lossy(&out.stdout).contains("BucketAlreadyOwnedByYou"),
            "{}",
            describe(&out)
        );
        std::fs::write(&file, support::pattern(key.len() as u64, 3 << 20)).unwrap();
        let out = server.python("op.py", &["put", bucket, key, file.to_str().unwrap()]);
        assert!(out.status.success(), "{}", describe(&out));
    }
    let counts: Vec<usize> = (0..regions.len())
        .map(|i| blobs_in(&dir.path().join(format!("d{i}"))))
        .collect();
    let eu: usize = counts[..6].iter().sum();
    let elsewhere: usize = counts[6..].iter().sum();
    // Three EU objects (18 fragments, all in the EU) and one object of the
    // spread policy (6 fragments over all nine backends).
    assert_eq!(eu + elsewhere, 24, "{counts:?}");
    assert!(elsewhere <= 6, "{counts:?}");
    // Once the spread object is deleted and collected, the 18 fragments
    // left (the EU bucket's) must all be on EU backends.
    let out = server.aws(&[
        "s3api",
        "delete-object",
        "--bucket",
        "anywhere",
        "--key",
        "x",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let counts: Vec<usize> = (0..regions.len())
            .map(|i| blobs_in(&dir.path().join(format!("d{i}"))))
            .collect();
        if counts.iter().sum::<usize>() == 18 {
            assert_eq!(counts[6..].iter().sum::<usize>(), 0, "{counts:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{counts:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Strict: with too few EU backends left, a write fails with the
    // plugin's reason and nothing is stored.
    for i in 0..3 {
        std::fs::rename(
            dir.path().join(format!("d{i}")),
            dir.path().join(format!("gone{i}")),
        )
        .unwrap();
    }
    // The probe finds them gone (three failures in a row) and /ready says so.
    let down: Vec<String> = (0..3).map(|i| format!("backend d{i}: DOWN")).collect();
    server.wait_for_ready_text(&down, Duration::from_secs(30));
    let out = server.python(
        "op.py",
        &["put", "eu-data", "refused", file.to_str().unwrap()],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ServiceUnavailable") && text.contains("allowed regions"),
        "{}",
        describe(&out)
    );
}

/// Runs `shardgate simulate ARGS` from the repository's root (where the
/// example configurations' relative paths point).
fn simulate(args: &[&str]) -> std::process::Output {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    run(Command::new(BIN)
        .arg("simulate")
        .args(args)
        .current_dir(repo)
        .env_remove("SHARDGATE_CONFIG"))
}

fn simulate_json(args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = simulate(&all);
    assert!(out.status.success(), "{}", describe(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The fragments' values of one label, in fragment order.
fn placed_labels(sim: &serde_json::Value, label: &str) -> Vec<String> {
    sim["fragments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["labels"][label].as_str().unwrap_or("-").to_string())
        .collect()
}

/// One dimension of the fault-tolerance report.
fn dimension<'a>(sim: &'a serde_json::Value, label: &str) -> &'a serde_json::Value {
    sim["fault_tolerance"]["dimensions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["label"] == label)
        .unwrap_or_else(|| panic!("no {label} dimension in {sim}"))
}

#[test]
fn simulate_the_embedded_default_one_fragment_per_site() {
    let out = simulate(&["--key", "photos/cat.jpg", "--size", "4MiB"]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("policy default: plugin"), "{text}");
    assert!(text.contains("placed by spread-sites"), "{text}");
    assert!(text.contains("any 2 of the 6 sites can be lost"), "{text}");
    assert!(
        text.contains("write: 6 of 6 fragments writable, quorum 5: succeeds"),
        "{text}"
    );

    let sim = simulate_json(&["--key", "photos/cat.jpg", "--size", "4MiB"]);
    assert_eq!(sim["placed_by"], "spread-sites");
    assert_eq!(
        (sim["policy"]["k"].as_u64(), sim["policy"]["m"].as_u64()),
        (Some(4), Some(2))
    );
    let mut sites = placed_labels(&sim, "site");
    sites.sort();
    assert_eq!(
        sites,
        ["site-1", "site-2", "site-3", "site-4", "site-5", "site-6"]
    );
    assert_eq!(dimension(&sim, "site")["any_lost"], 2);
    // The same object is placed the same way every time (plugins are pure).
    assert_eq!(
        sim["fragments"],
        simulate_json(&["--key", "photos/cat.jpg", "--size", "4MiB"])["fragments"]
    );
    // A small object is stored as 1 + m whole copies.
    let small = simulate_json(&["--size", "1KiB"]);
    assert_eq!(small["policy"]["stored_as"], "whole copies");
    assert_eq!(small["fragments"].as_array().unwrap().len(), 3);
}

#[test]
fn simulate_with_sites_down_shows_the_fallback_and_a_failing_write() {
    // Two of six sites down: spread-sites cannot place 6 fragments on 4
    // sites and refuses; the default policy is not strict, so the
    // built-in spread places 2 fragments on down backends, and the write
    // (quorum 5) would fail.
    let out = simulate(&["--down", "site-1,site-2", "--size", "4MiB"]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("placed by the built-in spread: the plugin failed (refused)"),
        "{text}"
    );
    assert!(text.contains("DOWN: recorded missing"), "{text}");
    assert!(
        text.contains("quorum 5: FAILS (the PUT gets a 503"),
        "{text}"
    );
    assert!(!text.contains("fault tolerance"), "nothing stored: {text}");
    let sim = simulate_json(&["--down", "site-1", "--down", "site-2", "--size", "4MiB"]);
    assert_eq!(sim["fallback"]["failure"], "refused");
    assert_eq!(sim["write"]["writable"], 4);
    assert_eq!(sim["write"]["succeeds"], false);
    assert_eq!(sim["fault_tolerance"]["lost_at_write"], 2);
    // Four left, four needed: nothing more can be lost.
    assert_eq!(dimension(&sim, "backend")["any_lost"], 0);
    let down: Vec<bool> = sim["fragments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["down"].as_bool().unwrap())
        .collect();
    assert_eq!(down.iter().filter(|d| **d).count(), 2);
}

#[test]
fn simulate_eu_only_places_in_the_eu_or_fails_naming_the_reason() {
    let config = "examples/config/three-providers.toml";
    let sim = simulate_json(&["--config", config, "--bucket", "eu-data", "--size", "4MiB"]);
    assert_eq!(sim["policy"]["name"], "eu-only");
    assert_eq!(sim["placed_by"], "eu-only");
    for region in placed_labels(&sim, "region") {
        assert!(region.starts_with("eu-"), "{region}: {sim}");
    }
    // All in the EU: losing the EU loses the object, and the report says so.
    let region = dimension(&sim, "region");
    assert!(
        region["domains"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["value"].as_str().unwrap().starts_with("eu-")),
        "{region}"
    );
    // Any other bucket gets the default policy, over all nine backends.
    let anywhere = simulate_json(&["--config", config, "--bucket", "other", "--size", "4MiB"]);
    assert_eq!(anywhere["policy"]["name"], "default");
    // With an EU backend down, six EU backends are five: a strict policy
    // fails, with the plugin's reason, and no placement is printed.
    let out = simulate(&[
        "--config", config, "--bucket", "eu-data", "--down", "gcp-eu",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("policy eu-only cannot place eu-data/object")
            && err.contains("not enough healthy backends with room in the allowed regions"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "{}", describe(&out));
    // A policy file that is not configured can be tried directly.
    let sim = simulate_json(&[
        "--config",
        config,
        "--policy",
        "policies/eu-only.toml",
        "--key",
        "k",
    ]);
    assert_eq!(sim["policy"]["name"], "eu-only");
}

#[test]
fn simulate_errors_are_one_line_causes() {
    for (args, expected) in [
        (
            &["--down", "nosuch"][..],
            "--down nosuch: no such backend (backends: site-1, site-2",
        ),
        (
            &["--policy", "nosuch"][..],
            "--policy nosuch: no such policy (policies: default)",
        ),
        (&["--policy", "nosuch.toml"][..], "nosuch.toml"),
        (&["--size", "4 parsecs"][..], "--size"),
    ] {
        let out = simulate(args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// `shardgate garbage list` shows the garbage per backend and whether it
/// is configured; `forget` refuses a configured backend and drops the
/// items of one that left the configuration, without touching its blobs.
#[test]
fn garbage_of_a_backend_that_left_is_listed_and_forgotten_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/v1-store");
    copy_tree(&fixture, &data);
    let garbage = |args: &[&str], config: Option<&Path>| {
        let mut cmd = Command::new(BIN);
        cmd.arg("garbage").args(args).arg("--data-dir").arg(&data);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        run(&mut cmd)
    };
    // The embedded default: six sites, each holding 6 / 6 = 1 item of
    // the overwritten version and 1 of the cut PUT's intent.
    let out = garbage(&["list"], None);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("site-1\t2\t"), "{text}");
    assert!(
        text.lines().filter(|l| l.ends_with("\tyes")).count() == 6,
        "{text}"
    );
    let out = garbage(&["forget", "site-1"], None);
    assert!(!out.status.success());
    assert!(
        describe(&out).contains("is configured"),
        "{}",
        describe(&out)
    );

    // A configuration without the sites: their garbage is kept, shown as
    // not configured, and forgotten on request.
    let config = dir.path().join("other.toml");
    std::fs::write(
        &config,
        "[[backends]]\nid = \"m1\"\nkind = \"memory\"\n[[backends]]\nid = \"m2\"\nkind = \"memory\"\n[[backends]]\nid = \"m3\"\nkind = \"memory\"\n[policies.default]\nk = 2\nm = 1\n",
    )
    .unwrap();
    let out = garbage(&["list"], Some(&config));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.lines().filter(|l| l.ends_with("\tno")).count() == 6,
        "{text}"
    );
    let out = garbage(&["forget", "site-1"], Some(&config));
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("2 garbage items of backend site-1 forgotten")
    );
    let out = garbage(&["list"], Some(&config));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("site-1\t"));
    // Nothing deleted on disk by forgetting.
    assert_eq!(support::blob_files(&data).len(), 27);
}

/// An OTLP/HTTP receiver standing in for a collector: every request's
/// body, appended to one string; each answered 200.
fn otlp_receiver() -> (u16, std::sync::Arc<std::sync::Mutex<String>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(64) {
            let Ok(conn) = conn else { continue };
            let sink = sink.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut writer = conn;
                // Requests on one keep-alive connection, each with a
                // Content-Length.
                for _ in 0..1000 {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let header = line.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    sink.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&body));
                    let _ = writer.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
                    );
                }
            });
        }
    });
    (port, got)
}

/// OpenTelemetry: with `[telemetry] otlp_endpoint`, a request's spans
/// reach the collector in the client's trace (its `traceparent`), with
/// the placement, each fragment written and read, and the commit; and the
/// metrics `/metrics` serves arrive as OTLP metrics.
#[test]
fn traces_and_metrics_reach_an_otlp_collector() {
    let (port, got) = otlp_receiver();
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let server = Server::start_with(
        &dir.path().join("data"),
        &[
            ("SHARDGATE_TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()),
            ("SHARDGATE_TELEMETRY__SERVICE_NAME", "shardgate-test"),
            // Export every 100 ms instead of every 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("SHARDGATE_TELEMETRY__METRICS_INTERVAL_SECS", "1"),
        ],
    );
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let out = server.python("traced.py", &[&traceparent]);
    assert!(out.status.success(), "{}", describe(&out));
    let want = [
        "\"request\"",
        "\"placement\"",
        "\"fragment write\"",
        "\"commit\"",
        "\"fragment read\"",
        "shardgate-test",
        "00f067aa0ba902b7",
        // Metrics: /metrics's families, a counter and a gauge, with their
        // labels.
        "\"shardgate_s3_requests\"",
        "\"isMonotonic\": true",
        "\"shardgate_backend_free_bytes\"",
        "\"stringValue\": \"site-1\"",
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = got.lock().unwrap().clone();
        let missing: Vec<_> = want.iter().filter(|w| !text.contains(*w)).collect();
        if text.contains(trace_id) && missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "missing {missing:?} (trace id seen: {}) in {} bytes exported: {}",
            text.contains(trace_id),
            text.len(),
            text.chars().take(1500).collect::<String>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
