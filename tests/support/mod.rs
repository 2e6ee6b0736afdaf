//! Starts the real `shardgate` binary on 127.0.0.1 and drives real S3
//! clients against it. Every wait is bounded.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod peers;
pub mod raw;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_shardgate");

/// A running gateway.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub data: PathBuf,
    pub access_key: String,
    pub secret_key: String,
    pub log: PathBuf,
    /// Over HTTPS: the CA that signed its certificate (PEM).
    pub ca: Option<PathBuf>,
    /// The admin API's address.
    pub admin: Option<SocketAddr>,
    /// Its peer network's listen addresses (ending in /p2p/ID), if any.
    pub peer_addrs: Vec<String>,
}

/// A certificate authority and a certificate it signed for 127.0.0.1 and
/// localhost, written as PEM files.
pub struct TestCerts {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCerts {
    /// A new CA in `dir`, and a server certificate from it.
    pub fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "shardgate test CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let certs = Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            issuer: rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap(),
        };
        std::fs::write(&certs.ca, certs.issuer.pem()).unwrap();
        let (cert, key) = certs.issue("first");
        std::fs::write(&certs.key, key).unwrap();
        std::fs::write(&certs.cert, cert).unwrap();
        certs
    }

    /// A new server certificate and its key (PEM), signed by the CA, with
    /// `name` as its common name (so a test can tell which one is served).
    pub fn issue(&self, name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

impl Server {
    /// Starts `shardgate serve` on a free port with `data` as data dir.
    pub fn start(data: &Path) -> Self {
        Self::start_with(data, &[])
    }

    /// Starts it over HTTPS, with a certificate from a new test CA
    /// (beside `data`, in `tls/`).
    pub fn start_tls(data: &Path, env: &[(&str, &str)]) -> (Self, TestCerts) {
        let certs = TestCerts::new(&data.with_extension("tls"));
        let (cert, key) = (
            certs.cert.to_str().unwrap().to_string(),
            certs.key.to_str().unwrap().to_string(),
        );
        let mut all = vec![
            ("SHARDGATE_SERVER__TLS__CERT_FILE", cert.as_str()),
            ("SHARDGATE_SERVER__TLS__KEY_FILE", key.as_str()),
        ];
        all.extend_from_slice(env);
        let mut server = Self::start_with(data, &all);
        server.ca = Some(certs.ca.clone());
        (server, certs)
    }

    pub fn start_with(data: &Path, env: &[(&str, &str)]) -> Self {
        std::fs::create_dir_all(data).unwrap();
        let log = data.with_extension(format!("log.{}", unique()));
        let stderr = std::fs::File::create(&log).unwrap();
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
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("starting shardgate");
        let rx = stdout_lines(&mut child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut admin = None;
        let mut peer_addrs = Vec::new();
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("shardgate: peer network listening on ") {
                        peer_addrs.push(a.trim().to_string());
                    }
                    if let Some(a) = line.split("admin API on http://").nth(1) {
                        admin = a.split_whitespace().next().and_then(|a| a.parse().ok());
                    }
                    if let Some(a) = line
                        .split("listening on http://")
                        .nth(1)
                        .or_else(|| line.split("listening on https://").nth(1))
                    {
                        break a.trim().parse().unwrap();
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "shardgate did not start: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
        };
        let creds = std::fs::read_to_string(data.join("credentials")).unwrap();
        let field = |name: &str| {
            creds
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .unwrap()
                .to_string()
        };
        Self {
            child: Some(child),
            addr,
            data: data.to_path_buf(),
            access_key: field("access_key"),
            secret_key: field("secret_key"),
            log,
            ca: None,
            admin,
            peer_addrs,
        }
    }

    pub fn endpoint(&self) -> String {
        match self.ca {
            Some(_) => format!("https://{}", self.addr),
            None => format!("http://{}", self.addr),
        }
    }

    /// The environment a client needs.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = vec![
            ("AWS_ACCESS_KEY_ID".into(), self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret_key.clone()),
            ("AWS_DEFAULT_REGION".into(), "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
            ("AWS_CONFIG_FILE".into(), "/dev/null".into()),
            ("AWS_SHARED_CREDENTIALS_FILE".into(), "/dev/null".into()),
            ("S3_ENDPOINT".into(), self.endpoint()),
        ];
        if let Some(ca) = &self.ca {
            // botocore, Python's ssl (urllib, the presigned checks) and
            // rclone each read their own variable.
            let ca = ca.to_string_lossy().into_owned();
            for name in [
                "AWS_CA_BUNDLE",
                "SSL_CERT_FILE",
                "REQUESTS_CA_BUNDLE",
                "RCLONE_CA_CERT",
            ] {
                env.push((name.into(), ca.clone()));
            }
        }
        env
    }

    /// Runs the aws CLI against the gateway.
    pub fn aws(&self, args: &[&str]) -> Output {
        run(Command::new("aws")
            .args(["--endpoint-url", &self.endpoint()])
            .args(args)
            .envs(self.env()))
    }

    /// Like `aws`, and panics with the output unless it succeeds.
    pub fn aws_ok(&self, args: &[&str]) -> String {
        let out = self.aws(args);
        assert!(out.status.success(), "aws {args:?}: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// python3 on `tests/clients/<script>`, the gateway in its env.
    pub fn script(&self, script: &str, args: &[&str]) -> Command {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/clients")
            .join(script);
        let mut command = Command::new("python3");
        command.arg(path).args(args).envs(self.env());
        command
    }

    /// Runs `tests/clients/<script>` with python3, the gateway in its env.
    pub fn python(&self, script: &str, args: &[&str]) -> Output {
        run(&mut self.script(script, args))
    }

    /// Runs `tests/clients/<script>` like `python`, with awscrt importable
    /// (`$SHARDGATE_TEST_CRT`, which the README's test command fills):
    /// botocore then has CRC32C and CRC64NVME, and signs with awscrt.
    pub fn python_with_crt(&self, script: &str, args: &[&str]) -> Output {
        let crt = std::env::var("SHARDGATE_TEST_CRT").unwrap_or_default();
        assert!(
            Path::new(&crt).join("awscrt").is_dir(),
            "awscrt is not in SHARDGATE_TEST_CRT ({crt:?}): {}",
            shardgate_emulators::INSTALL_HINT
        );
        run(self.script(script, args).env("PYTHONPATH", crt))
    }

    /// Starts `tests/clients/<script>` like `python`, without waiting.
    pub fn python_spawn(&self, script: &str, args: &[&str]) -> Spawned {
        let child = self
            .script(script, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("python3: {e}: {}", shardgate_emulators::INSTALL_HINT));
        Spawned(Some(child))
    }

    /// The gateway's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The gateway's peak resident memory so far, in MiB (`VmHWM`).
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }

    /// SIGKILL, no chance to clean up.
    /// The blobs scrub reported damaged in its log so far.
    pub fn scrub_findings(&self) -> std::collections::BTreeSet<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains("scrub: fragment damaged"))
            .filter_map(|l| l.split("blob=").nth(1))
            .filter_map(|rest| rest.split_whitespace().next())
            .map(str::to_string)
            .collect()
    }

    /// Runs `clients/bulk.py ARGS` (many objects at once), which must succeed.
    pub fn bulk(&self, args: &[&str]) {
        let out = self.python("bulk.py", args);
        assert!(out.status.success(), "bulk.py {args:?}: {}", describe(&out));
    }

    /// Runs `shardgate admin ARGS` against this gateway.
    pub fn admin(&self, args: &[&str]) -> Output {
        let url = format!("http://{}", self.admin.expect("the admin API is on"));
        run(Command::new(BIN)
            .arg("admin")
            .args(args)
            .args(["--url", &url, "--data-dir"])
            .arg(&self.data))
    }

    /// One scrub pass, started and watched through `shardgate admin`: its
    /// final state.
    pub fn scrub_pass(&self) -> serde_json::Value {
        let out = self.admin(&["start", "scrub", "--watch", "--json"]);
        assert!(out.status.success(), "{}", describe(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.lines().last().unwrap()).unwrap()
    }

    /// The sum of every metric series whose name starts with `prefix`.
    pub fn metric_sum(&self, prefix: &str) -> f64 {
        self.metrics()
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }

    /// `shardgate admin ARGS --json`, parsed; panics on failure.
    pub fn admin_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.admin(&all);
        assert!(out.status.success(), "admin {args:?}: {}", describe(&out));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("admin {args:?}: {e}: {}", describe(&out)))
    }

    /// Whether it was not killed or stopped.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the gateway as a supervisor does (SIGTERM), waiting for it to
    /// exit (60 s at most, then SIGKILL and a panic).
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        panic!("shardgate did not stop within 60 s of SIGTERM");
    }

    /// An unsigned GET of `path` (`/health`, `/ready`, `/metrics`).
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        match &self.ca {
            None => http_get(self.addr, path),
            Some(ca) => https_get(&format!("{}{path}", self.endpoint()), ca, false),
        }
    }

    /// Polls `/ready` until its text has every one of `lines`, for at most
    /// `within`; returns the text.
    pub fn wait_for_ready_text(&self, lines: &[String], within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let (_, text) = self.get("/ready").unwrap_or_default();
            if lines.iter().all(|l| text.contains(l.as_str())) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "/ready did not show {lines:?} within {within:?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// One scrape of `/metrics`: each sample's name and labels (as
    /// written, e.g. `x_total{policy="p"}`) to its value.
    /// Garbage items waiting, over every backend (`/metrics`).
    pub fn garbage_total(&self) -> f64 {
        self.metrics()
            .iter()
            .filter(|(k, _)| k.starts_with("shardgate_garbage_items{"))
            .map(|(_, v)| v)
            .sum()
    }

    pub fn metrics(&self) -> std::collections::BTreeMap<String, f64> {
        let (status, text) = self.get("/metrics").expect("GET /metrics");
        assert_eq!(status, 200, "{text}");
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect()
    }
}

/// The lines a child prints on stdout, as they come (read by a thread).
pub fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A client process started in the background; killed if not waited for.
pub struct Spawned(Option<Child>);

impl Spawned {
    /// Starts `cmd` with its output piped, without waiting.
    pub fn start(cmd: &mut Command) -> Self {
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        Spawned(Some(child))
    }

    /// Its output, once it ends (within 10 minutes).
    pub fn wait(&mut self) -> Output {
        let child = self.0.take().unwrap();
        wait_bounded(child, "a client")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Runs a command with a 10-minute bound.
pub fn run(cmd: &mut Command) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{:?}: {e}: {}",
                cmd.get_program(),
                shardgate_emulators::INSTALL_HINT
            )
        });
    wait_bounded(child, &format!("{cmd:?}"))
}

/// A child's output once it ends; killed, and the test failed, if it
/// takes more than 10 minutes.
fn wait_bounded(child: std::process::Child, what: &str) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(600)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{what} did not finish in 10 minutes");
        }
    }
}

pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A minimal HTTP/1.1 GET over a raw socket: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|x| x.1.to_string())?;
    Some((status, body))
}

/// A GET over HTTPS with curl, trusting `ca`: (status, body), or with
/// `http_version` the version curl spoke ("1.1", "2") as the body.
pub fn https_get(url: &str, ca: &Path, http_version: bool) -> Option<(u16, String)> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--http2", "--cacert"]).arg(ca);
    if http_version {
        cmd.args(["-o", "/dev/null", "-w", "%{http_code} %{http_version}"]);
    } else {
        cmd.args(["-w", "\n%{http_code}"]);
    }
    let out = run(cmd.arg(url));
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if http_version {
        let (code, version) = text.split_once(' ')?;
        return Some((code.parse().ok()?, version.to_string()));
    }
    let (body, code) = text.rsplit_once('\n')?;
    Some((code.trim().parse().ok()?, body.to_string()))
}

/// Deterministic pseudo-random bytes (xorshift), so content is checkable
/// without keeping a copy.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A configuration of `sites` fs backends `site-1..` under
/// `<dir>/data/backends`, each its own site (the default policy, 4 + 2),
/// written to `<dir>/shardgate.toml`; returns its path.
pub fn fs_sites_config(dir: &Path, sites: usize) -> PathBuf {
    let mut text = String::new();
    for i in 1..=sites {
        text.push_str(&format!(
            "[[backends]]\nid = \"site-{i}\"\nkind = \"fs\"\npath = \"{}\"\nlabels = {{ site = \"site-{i}\" }}\n\n",
            dir.join("data/backends").join(format!("site-{i}")).display()
        ));
    }
    let path = dir.join("shardgate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Six `s3` backends `s3-1..6` on `moto`'s bucket `fragments`, each under
/// its own prefix `site-N` and labelled its own site, after `head` (the
/// top-level keys and policies of the configuration).
pub fn moto_sites_config(moto: &Emulator, head: &str) -> String {
    let mut text = head.to_string();
    for i in 1..=6 {
        text.push_str(&format!(
            "[[backends]]\nid = \"s3-{i}\"\nkind = \"s3\"\nbucket = \"fragments\"\nprefix = \"site-{i}\"\n\
             endpoint = \"{}\"\nregion = \"us-east-1\"\nallow_http = true\naccess_key_id = \"test\"\n\
             secret_access_key = \"test\"\nrequest_timeout_secs = 10\nlabels = {{ site = \"s{i}\" }}\n",
            moto.endpoint
        ));
    }
    text
}

/// Blob files of the fs sites `sites` (numbers) under `data`.
pub fn files_on_sites(data: &Path, sites: &[usize]) -> usize {
    blob_files(data)
        .iter()
        .filter(|f| {
            let p = f.to_str().unwrap();
            sites.iter().any(|s| p.contains(&format!("/site-{s}/")))
        })
        .count()
}

/// Every fragment file under the data dir's fs backends (not the
/// manifest journal's blobs: [`journal_files`]).
pub fn blob_files(data: &Path) -> Vec<PathBuf> {
    all_blob_files(data)
        .into_iter()
        .filter(|f| !is_journal_file(f))
        .collect()
}

/// The manifest journal's blob files under the data dir's fs backends
/// (their names start with `j`; fragments' are hex).
pub fn journal_files(data: &Path) -> Vec<PathBuf> {
    all_blob_files(data)
        .into_iter()
        .filter(|f| is_journal_file(f))
        .collect()
}

fn is_journal_file(f: &Path) -> bool {
    f.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('j'))
}

fn all_blob_files(data: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(sites) = std::fs::read_dir(data.join("backends")) else {
        return out;
    };
    for site in sites.flatten() {
        let Ok(prefixes) = std::fs::read_dir(site.path().join("blobs")) else {
            continue;
        };
        for p in prefixes.flatten() {
            for f in std::fs::read_dir(p.path()).into_iter().flatten().flatten() {
                out.push(f.path());
            }
        }
    }
    out
}

pub use shardgate_emulators::Emulator;

/// Runs the aws CLI against an S3 emulator (moto takes any credentials).
pub fn aws_on(s3: &Emulator, args: &[&str]) -> Output {
    run(Command::new("aws")
        .args(["--endpoint-url", &s3.endpoint])
        .args(args)
        .envs([
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ]))
}

/// Starts `serve` expecting it to refuse: exit status 1 and one error
/// line on stderr, which is returned.
pub fn serve_fails_with(data: &Path, env: &[(&str, &str)]) -> String {
    let out = run(Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data)
        .envs(env.iter().copied()));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("shardgate: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    errors[0].to_string()
}
