//! HTTPS on the S3 listener (issue 22): HTTP/2 offered through ALPN and
//! used for signed S3 requests, a certificate replaced on disk served to
//! the next connection (a mismatched pair never), a startup error naming
//! the key when the files cannot be used. The four S3 clients' suites run
//! over HTTPS in `s3_clients.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Server, describe, https_get, run};

/// The common name of the certificate the gateway serves to a new
/// connection (Python's ssl, trusting the test CA).
fn served_name(server: &Server) -> String {
    let script = "import socket, ssl, sys\n\
        ctx = ssl.create_default_context(cafile=sys.argv[1])\n\
        with ctx.wrap_socket(socket.create_connection(('127.0.0.1', int(sys.argv[2]))), server_hostname='127.0.0.1') as s:\n\
        \x20   print(dict(x[0] for x in s.getpeercert()['subject'])['commonName'])\n";
    let out = run(Command::new("python3").args([
        "-c",
        script,
        server.ca.as_ref().unwrap().to_str().unwrap(),
        &server.addr.port().to_string(),
    ]));
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A signed S3 request with curl (`--aws-sigv4`; curl 7.88 sends no
/// payload hash of its own, so an unsigned one is given) over HTTPS, with
/// `upload` as its body and the answer's body written to `download`: the
/// HTTP version spoken and the status.
fn curl_s3(
    server: &Server,
    method: &str,
    path: &str,
    upload: Option<&Path>,
    download: Option<&Path>,
) -> (String, u16) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--http2", "-w", "%{http_version} %{http_code}"])
        .args(["--cacert", server.ca.as_ref().unwrap().to_str().unwrap()])
        .args(["--aws-sigv4", "aws:amz:us-east-1:s3"])
        .args([
            "--user",
            &format!("{}:{}", server.access_key, server.secret_key),
        ])
        .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
        .args(["-X", method]);
    if let Some(file) = upload {
        cmd.arg("--data-binary").arg(format!("@{}", file.display()));
    }
    cmd.arg("-o")
        .arg(download.unwrap_or(Path::new("/dev/null")));
    let out = run(cmd.arg(format!("{}{path}", server.endpoint())));
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (version, status) = text.split_once(' ').unwrap();
    (version.to_string(), status.parse().unwrap())
}

#[test]
fn http2_is_offered_through_alpn_and_serves_signed_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _certs) = Server::start_tls(&dir.path().join("data"), &[]);
    let (status, version) = https_get(
        &format!("{}/health", server.endpoint()),
        server.ca.as_ref().unwrap(),
        true,
    )
    .unwrap();
    assert_eq!((status, version.as_str()), (200, "2"));
    let h2 = |r: (String, u16)| (r.0 == "2").then_some(r.1);
    assert_eq!(
        h2(curl_s3(&server, "PUT", "/over-h2", None, None)),
        Some(200)
    );
    let body = dir.path().join("body");
    std::fs::write(&body, support::pattern(9, 300_000)).unwrap();
    let back = dir.path().join("back");
    assert_eq!(
        h2(curl_s3(&server, "PUT", "/over-h2/k", Some(&body), None)),
        Some(200)
    );
    assert_eq!(
        h2(curl_s3(&server, "GET", "/over-h2/k", None, Some(&back))),
        Some(200)
    );
    assert_eq!(std::fs::read(&back).unwrap(), support::pattern(9, 300_000));
    assert_eq!(
        h2(curl_s3(&server, "GET", "/over-h2/missing", None, None)),
        Some(404)
    );
}

/// Waits until a new connection is served the certificate named `name`.
fn wait_for_name(server: &Server, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let served = served_name(server);
        if served == name {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still serving {served:?}, not {name:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_certificate_replaced_on_disk_is_served_to_the_next_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (server, certs) = Server::start_tls(&dir.path().join("data"), &[]);
    assert_eq!(served_name(&server), "first");

    // Renewed: the next connection gets the new one, no restart.
    let (cert, key) = certs.issue("second");
    std::fs::write(&certs.key, key).unwrap();
    std::fs::write(&certs.cert, cert).unwrap();
    assert_eq!(served_name(&server), "second");

    // Half a renewal (a new key, the old certificate): unusable, so the
    // pair already loaded is kept, and said so.
    let (cert, key) = certs.issue("third");
    std::fs::write(&certs.key, key).unwrap();
    assert_eq!(served_name(&server), "second");
    std::fs::write(&certs.cert, cert).unwrap();
    wait_for_name(&server, "third");
    let log = server.log_text();
    assert!(
        log.contains("cannot be used; still serving the previous one"),
        "{log}"
    );
    assert!(log.contains("TLS certificate reloaded"), "{log}");
}

#[test]
fn unusable_certificate_files_stop_the_start_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let certs = support::TestCerts::new(&dir.path().join("tls"));
    let data = dir.path().join("data");
    let missing = dir.path().join("missing.pem");
    let err = support::serve_fails_with(
        &data,
        &[
            (
                "SHARDGATE_SERVER__TLS__CERT_FILE",
                missing.to_str().unwrap(),
            ),
            (
                "SHARDGATE_SERVER__TLS__KEY_FILE",
                certs.key.to_str().unwrap(),
            ),
        ],
    );
    assert!(
        err.starts_with("shardgate: error: server.tls: ") && err.contains("missing.pem"),
        "{err}"
    );
    // A key that is not the certificate's.
    let (_, other_key) = certs.issue("other");
    let other = dir.path().join("other-key.pem");
    std::fs::write(&other, other_key).unwrap();
    let err = support::serve_fails_with(
        &data,
        &[
            (
                "SHARDGATE_SERVER__TLS__CERT_FILE",
                certs.cert.to_str().unwrap(),
            ),
            ("SHARDGATE_SERVER__TLS__KEY_FILE", other.to_str().unwrap()),
        ],
    );
    assert!(err.contains("does not match the certificate"), "{err}");
}
