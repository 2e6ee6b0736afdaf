//! Loading the configuration: defaults, the file, variables over the file,
//! and errors that name the key and where its value came from.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::result_large_err)] // figment::Jail fixes the closure type

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use figment::Jail;
use shardgate_config::{BackendKind, Config, ConfigError, DEFAULT_LISTEN};

fn load(path: Option<&str>) -> Result<Config, ConfigError> {
    Config::load(path.map(Path::new))
}

#[test]
fn no_file_no_variables_gives_the_defaults() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        let c = load(None).map_err(|e| e.to_string())?;
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.data_dir, Path::new("shardgate-data"));
        assert!(c.backends.is_empty() && c.policies.is_empty() && c.credentials.is_none());
        Ok(())
    });
}

#[test]
fn the_example_config_loads_and_variables_override_it() {
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config/two-sites.toml");
    Jail::expect_with(|jail| {
        jail.clear_env();
        let c = load(Some(example.to_str().unwrap())).map_err(|e| e.to_string())?;
        assert_eq!(c.backends.len(), 6);
        assert_eq!(c.backends[4].labels["site"], "c");
        assert_eq!(c.backends[4].capacity_bytes, Some(1_000_000_000_000));
        assert_eq!(c.backends[0].kind, BackendKind::Fs);
        assert!(c.backends[0].path.as_ref().unwrap().ends_with("a-disk1"));
        assert_eq!((c.policies["default"].k, c.policies["default"].m), (4, 2));
        assert_eq!(c.policies["archive"].write_quorum, Some(5));
        assert_eq!(c.buckets["backups"], "archive");

        jail.set_env("SHARDGATE_LISTEN", "127.0.0.1:9100");
        jail.set_env("SHARDGATE_POLICIES__DEFAULT__M", "1");
        jail.set_env("SHARDGATE_TEST_ANYTHING", "not a config key");
        jail.set_env("SHARDGATE_CONFIG", "read by the binary, not here");
        let c = load(Some(example.to_str().unwrap())).map_err(|e| e.to_string())?;
        assert_eq!(c.listen.to_string(), "127.0.0.1:9100");
        assert_eq!((c.policies["default"].k, c.policies["default"].m), (4, 1));
        Ok(())
    });
}

#[test]
fn the_peers_example_loads_and_a_peer_needs_its_id() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config/peers.toml");
    Jail::expect_with(|jail| {
        jail.clear_env();
        let c = load(Some(example.to_str().unwrap())).map_err(|e| e.to_string())?;
        assert_eq!(c.backends.len(), 6);
        assert!(c.backends.iter().all(|b| b.kind == BackendKind::Peer));
        assert_eq!(c.backends[0].addresses.len(), 2);
        assert!(c.backends[1].addresses.is_empty());
        assert_eq!(c.peers.listen, vec!["0.0.0.0:7000".to_string()]);

        jail.create_file(
            "no-id.toml",
            "[[backends]]\nid = \"p\"\nkind = \"peer\"\naddresses = [\"/ip4/10.0.0.1/tcp/1\"]\n",
        )?;
        let err = load(Some("no-id.toml")).unwrap_err().to_string();
        assert!(
            err.contains("backends[0].peer_id: a peer backend needs a peer_id"),
            "{err}"
        );
        jail.create_file(
            "fs-with-id.toml",
            "[[backends]]\nid = \"d\"\nkind = \"fs\"\npath = \"d\"\npeer_id = \"x\"\n",
        )?;
        let err = load(Some("fs-with-id.toml")).unwrap_err().to_string();
        assert!(err.contains("backends[0].peer_id"), "{err}");
        Ok(())
    });
}

#[test]
fn a_bad_value_in_the_file_names_the_key_and_the_file() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("gw.toml", "[policies.default]\nk = \"four\"\nm = 2\n")?;
        let err = load(Some("gw.toml")).unwrap_err().to_string();
        assert!(err.contains("policies.default.k"), "{err}");
        assert!(err.contains("gw.toml"), "{err}");
        Ok(())
    });
}

#[test]
fn a_bad_variable_names_the_variable() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.set_env("SHARDGATE_LISTEN", "not-an-address");
        let err = load(None).unwrap_err().to_string();
        assert!(err.starts_with("listen: "), "{err}");
        assert!(
            err.contains("environment variable SHARDGATE_LISTEN"),
            "{err}"
        );
        Ok(())
    });
}

#[test]
fn a_typo_is_an_error_not_a_default() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("gw.toml", "lisen = \"127.0.0.1:1\"\n")?;
        let err = load(Some("gw.toml")).unwrap_err().to_string();
        assert!(err.contains("lisen"), "{err}");
        Ok(())
    });
}

#[test]
fn a_missing_file_is_an_error() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        let err = load(Some("nowhere.toml")).unwrap_err().to_string();
        assert!(err.contains("nowhere.toml"), "{err}");
        Ok(())
    });
}

#[test]
fn configurations_that_cannot_work_are_refused_with_the_key() {
    let cases = [
        ("[policies.p]\nk = 0\nm = 2\n", "policies.p"),
        ("[policies.p]\nk = 200\nm = 56\n", "policies.p"),
        (
            "[policies.p]\nk = 2\nm = 1\nwrite_quorum = 1\n",
            "policies.p.write_quorum",
        ),
        ("default_policy = \"nope\"\n", "default_policy"),
        (
            "[server]\nsend_timeout_secs = 9223372036854775807\n",
            "server.send_timeout_secs",
        ),
        (
            "[server]\nheader_timeout_secs = 90000\n",
            "server.header_timeout_secs",
        ),
        (
            "[server]\nsend_timeout_secs = 0\n",
            "server.send_timeout_secs",
        ),
        ("[buckets]\nlogs = \"nope\"\n", "buckets.logs"),
        (
            "[[backends]]\nid = \"x\"\nkind = \"memory\"\n[[backends]]\nid = \"x\"\nkind = \"memory\"\n",
            "backends[1].id",
        ),
        (
            "[[backends]]\nid = \"../up\"\nkind = \"memory\"\n",
            "backends[0].id",
        ),
        (
            "[[backends]]\nid = \"a\"\nkind = \"memory\"\n[policies.p]\nk = 2\nm = 1\n",
            "policies.p",
        ),
        ("[credentials]\naccess_key = \"a\"\n", "credentials"),
        (
            "[[backends]]\nid = \"a\"\nkind = \"fs\"\n",
            "backends[0].path",
        ),
        (
            "[[backends]]\nid = \"a\"\nkind = \"memory\"\npath = \"/x\"\n",
            "backends[0].path",
        ),
        (
            "[[backends]]\nid = \"a\"\nkind = \"s3\"\n",
            "backends[0].bucket",
        ),
        (
            "[[backends]]\nid = \"a\"\nkind = \"s3\"\nbucket = \"b\"\npath = \"/x\"\n",
            "backends[0].path",
        ),
        (
            "[[backends]]\nid = \"a\"\nkind = \"fs\"\npath = \"/x\"\nbucket = \"b\"\n",
            "backends[0].bucket",
        ),
        (
            "[[backends]]\nid = \"a\"\nkind = \"s3\"\nbucket = \"b\"\nsecret_access_key = \"s\"\nsecret_access_key_file = \"/f\"\n",
            "backends[0]",
        ),
        (
            "[[backends]]\nid = \"a\"\nkind = \"s3\"\nbucket = \"b\"\nrequest_timeout_secs = 0\n",
            "backends[0].request_timeout_secs",
        ),
        (
            "[[backends]]\nid = \"a\"\nkind = \"azure\"\nuse_emulator = true\n",
            "backends[0].container",
        ),
        (
            "[[backends]]\nid = \"a\"\nkind = \"azure\"\ncontainer = \"c\"\nbucket = \"b\"\n",
            "backends[0].bucket",
        ),
        (
            "[[backends]]\nid = \"a\"\nkind = \"azure\"\ncontainer = \"c\"\naccount_key = \"k\"\n",
            "backends[0].account",
        ),
        (
            "[[backends]]\nid = \"a\"\nkind = \"azure\"\ncontainer = \"c\"\naccount = \"a\"\naccount_key = \"k\"\naccount_key_file = \"/f\"\n",
            "backends[0]",
        ),
        (
            "[[backends]]\nid = \"a\"\nkind = \"gcs\"\n",
            "backends[0].bucket",
        ),
        (
            "[[backends]]\nid = \"a\"\nkind = \"gcs\"\nbucket = \"b\"\nregion = \"eu\"\n",
            "backends[0].region",
        ),
        (
            "[[backends]]\nid = \"a\"\nkind = \"s3\"\nbucket = \"b\"\nuse_emulator = true\n",
            "backends[0].use_emulator",
        ),
        (
            "[[backends]]\nid = \"a\"\nkind = \"fs\"\npath = \"/x\"\nallow_http = true\n",
            "backends[0].allow_http",
        ),
    ];
    Jail::expect_with(|jail| {
        jail.clear_env();
        for (toml, key) in cases {
            jail.create_file("gw.toml", toml)?;
            match load(Some("gw.toml")) {
                Err(ConfigError::Invalid { key: got, reason }) => {
                    assert_eq!(got, key, "{toml}: {reason}")
                }
                other => panic!("{toml}: expected Invalid at {key}, got {other:?}"),
            }
        }
        Ok(())
    });
}

#[test]
fn a_secret_file_must_be_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, "s3cr3t\n").unwrap();
    let creds = shardgate_config::Credentials {
        access_key: "a".into(),
        secret_key: None,
        secret_key_file: Some(path.clone()),
    };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = creds.secret().unwrap_err().to_string();
    assert!(err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(creds.secret().unwrap(), "s3cr3t");
}

#[test]
fn the_policies_folder_gives_one_policy_per_file() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file(
            "gw.toml",
            &format!(
                "policy_dir = \"{}\"\ndefault_policy = \"default\"\n[buckets]\neu-data = \"eu-only\"\n",
                dir.display()
            ),
        )?;
        let c = load(Some("gw.toml")).map_err(|e| e.to_string())?;
        let names: Vec<&str> = c.policies.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["default", "eu-only", "onprem-one", "provider-limit"]
        );
        let eu = &c.policies["eu-only"];
        assert!(eu.strict);
        assert_eq!(eu.params["allowed-regions"], "eu-west,eu-central,eu-north");
        // A relative plugin path is relative to the policy file.
        let plugin = eu.plugin.as_ref().unwrap();
        assert!(plugin.starts_with(&dir), "{}", plugin.display());
        assert!(plugin.exists(), "{}", plugin.display());
        assert_eq!(c.policies["default"].write_quorum, Some(5));
        assert_eq!(c.buckets["eu-data"], "eu-only");
        Ok(())
    });
}

#[test]
fn policy_files_are_checked_and_named_in_errors() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        std::fs::create_dir("p").unwrap();
        jail.create_file("p/fast.toml", "k = 2\nm = 1\ncolour = \"red\"\n")?;
        jail.create_file("gw.toml", "policy_dir = \"p\"\n")?;
        let err = load(Some("gw.toml")).unwrap_err().to_string();
        assert!(
            err.contains("p/fast.toml") && err.contains("colour"),
            "{err}"
        );

        jail.create_file("p/fast.toml", "k = 2\nm = 1\nwrite_quorum = 9\n")?;
        let err = load(Some("gw.toml")).unwrap_err().to_string();
        assert!(err.contains("policies.fast.write_quorum"), "{err}");

        jail.create_file("p/fast.toml", "k = 2\nm = 1\n")?;
        jail.create_file(
            "gw.toml",
            "policy_dir = \"p\"\n[policies.fast]\nk = 3\nm = 1\n",
        )?;
        let err = load(Some("gw.toml")).unwrap_err().to_string();
        assert!(
            err.contains("policies.fast") && err.contains("p/fast.toml"),
            "{err}"
        );

        jail.create_file("gw.toml", "policy_dir = \"missing\"\n")?;
        let err = load(Some("gw.toml")).unwrap_err().to_string();
        assert!(err.starts_with("policy_dir: missing"), "{err}");
        Ok(())
    });
}

#[test]
fn debug_output_never_shows_an_inline_secret() {
    Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file(
            "gw.toml",
            "[credentials]\naccess_key = \"gw-access\"\nsecret_key = \"gw-secret-123\"\n\
             [[backends]]\nid = \"a\"\nkind = \"s3\"\nbucket = \"b\"\naccess_key_id = \"cloud-id\"\n\
             secret_access_key = \"cloud-secret-456\"\n\
             [[backends]]\nid = \"z\"\nkind = \"azure\"\ncontainer = \"c\"\naccount = \"acct\"\n\
             account_key = \"azure-key-789\"\n",
        )?;
        let shown = format!("{:?}", load(Some("gw.toml")).unwrap());
        assert!(
            shown.contains("gw-access") && shown.contains("cloud-id"),
            "{shown}"
        );
        assert!(!shown.contains("gw-secret-123"), "{shown}");
        assert!(!shown.contains("cloud-secret-456"), "{shown}");
        assert!(!shown.contains("azure-key-789"), "{shown}");
        Ok(())
    });
}
