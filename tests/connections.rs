//! Keep-alive connections after early answers, on raw sockets: a request
//! the gateway answers before reading its body (a bad signature, a key too
//! long, metadata too large, a failed precondition) must never leave body
//! bytes behind to be parsed as the next request on the same connection.
//!
//! The failure these pin down: botocore sends `Expect: 100-continue`, gets
//! the early error instead of `100 Continue`, never sends the body, and
//! reuses the connection, which the response did not say would close. The
//! next request's first bytes were then read as the withheld body and the
//! rest parsed as a request (`UT /bucket/key`: SignatureDoesNotMatch).
//! Writing the head and the next request in one write makes that
//! deterministic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use shardgate_loadgen::sigv4::Signer;
use support::raw::{Raw, Response, bodiless, put, put_parts};
use support::{Server, pattern};

const BUCKET: &str = "conn";
const EXISTING: &str = "exists";

struct Gateway {
    server: Server,
    signer: Signer,
}

impl Gateway {
    /// A gateway on its embedded default with bucket `conn` holding
    /// `exists`.
    fn start(dir: &std::path::Path) -> Self {
        let server = Server::start(&dir.join("data"));
        let signer = Signer {
            access: server.access_key.clone(),
            secret: server.secret_key.clone(),
            host: server.addr.to_string(),
        };
        let mut c = Raw::connect(server.addr);
        c.send(&bodiless(&signer, "PUT", &format!("/{BUCKET}")))
            .unwrap();
        assert_eq!(c.response().unwrap().status, 200);
        c.send(&put(
            &signer,
            &format!("/{BUCKET}/{EXISTING}"),
            &existing_body(),
        ))
        .unwrap();
        let r = c.response().unwrap();
        assert_eq!(r.status, 200, "{}", r.describe());
        Self { server, signer }
    }

    fn connect(&self) -> Raw {
        Raw::connect(self.server.addr)
    }

    /// A GET of the existing object on a fresh connection works.
    fn assert_still_serves(&self) {
        let mut c = self.connect();
        c.send(&bodiless(
            &self.signer,
            "GET",
            &format!("/{BUCKET}/{EXISTING}"),
        ))
        .unwrap();
        let r = c.response().unwrap();
        assert_eq!(r.status, 200, "{}", r.describe());
        assert_eq!(r.body, existing_body());
    }
}

fn existing_body() -> Vec<u8> {
    pattern(1, 1000)
}

/// The ways a PUT is answered before its body is read.
#[derive(Debug, Clone, Copy)]
enum Early {
    BadSignature,
    KeyTooLong,
    MetadataTooLarge,
    IfNoneMatchOnAnExistingKey,
    IfMatchFails,
}

const EARLY: [Early; 5] = [
    Early::BadSignature,
    Early::KeyTooLong,
    Early::MetadataTooLarge,
    Early::IfNoneMatchOnAnExistingKey,
    Early::IfMatchFails,
];

impl Early {
    fn expected(self) -> (u16, &'static str) {
        match self {
            Early::BadSignature => (403, "SignatureDoesNotMatch"),
            Early::KeyTooLong => (400, "KeyTooLongError"),
            Early::MetadataTooLarge => (400, "MetadataTooLarge"),
            Early::IfNoneMatchOnAnExistingKey | Early::IfMatchFails => (412, "PreconditionFailed"),
        }
    }

    /// The PUT as (head, body).
    fn request(self, gw: &Gateway, body: &[u8], chunked: bool, expect: bool) -> (Vec<u8>, Vec<u8>) {
        let long_key = format!("/{BUCKET}/{}", "k".repeat(1100));
        let big_meta = "v".repeat(2100);
        let existing = format!("/{BUCKET}/{EXISTING}");
        let wrong = Signer {
            secret: format!("wrong{}", gw.signer.secret),
            ..gw.signer.clone()
        };
        let (signer, path, extra): (&Signer, &str, Vec<(&str, &str)>) = match self {
            Early::BadSignature => (&wrong, &existing, vec![]),
            Early::KeyTooLong => (&gw.signer, &long_key, vec![]),
            Early::MetadataTooLarge => (&gw.signer, &existing, vec![("x-amz-meta-big", &big_meta)]),
            Early::IfNoneMatchOnAnExistingKey => {
                (&gw.signer, &existing, vec![("if-none-match", "*")])
            }
            Early::IfMatchFails => (&gw.signer, &existing, vec![("if-match", "\"0123\"")]),
        };
        put_parts(signer, path, body, &extra, chunked, expect)
    }

    /// The answer is this early error, and says the connection closes.
    fn check(self, r: &Response, what: &str) {
        let (status, code) = self.expected();
        assert_eq!(
            (r.status, r.code().as_str()),
            (status, code),
            "{what}: {}",
            r.describe()
        );
        assert!(
            r.says_close(),
            "{what}: the early answer must say Connection: close: {}",
            r.describe()
        );
    }
}

/// The botocore case, made deterministic: `Expect: 100-continue`, the body
/// withheld, and the next request already on the wire behind the head.
/// The early answer must say `Connection: close` and nothing after it may
/// be answered: the pipelined bytes are not a request the gateway can tell
/// apart from a body.
#[test]
fn a_withheld_body_is_never_read_as_the_next_request() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path());
    for chunked in [false, true] {
        for early in EARLY {
            let what = format!("{early:?}, chunked {chunked}, expect 100-continue, body withheld");
            let (mut bytes, _body) = early.request(&gw, b"x", chunked, true);
            bytes.extend(bodiless(
                &gw.signer,
                "GET",
                &format!("/{BUCKET}/{EXISTING}"),
            ));
            let mut c = gw.connect();
            c.send(&bytes).unwrap();
            let r = c.response().unwrap();
            early.check(&r, &what);
            if let Some(next) = c.response() {
                panic!(
                    "{what}: the pipelined bytes were answered as a request: {}",
                    next.describe()
                );
            }
        }
    }
    gw.assert_still_serves();
    let log = gw.server.log_text();
    assert!(
        !log.contains("method=UT ") && !log.contains("method=ET "),
        "{log}"
    );
}

/// No `Expect`: half the body sent, then the client waits. The early
/// answer says `Connection: close`, the gateway keeps reading (and
/// dropping) what the client still sends instead of resetting the
/// connection under it, then the connection ends.
#[test]
fn an_answer_before_the_body_closes_and_lingers() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path());
    let body = pattern(2, 1 << 20);
    for chunked in [false, true] {
        for early in EARLY {
            let what = format!("{early:?}, chunked {chunked}, half the body sent");
            let (head, body) = early.request(&gw, &body, chunked, false);
            let mut c = gw.connect();
            c.send(&head).unwrap();
            let half = body.len() / 2;
            c.send(&body[..half]).unwrap();
            let r = c.response().unwrap();
            early.check(&r, &what);
            // The rest, in pieces with pauses: a reset would surface here.
            for piece in body[half..].chunks(64 * 1024) {
                c.send(piece)
                    .unwrap_or_else(|e| panic!("{what}: the gateway reset the connection: {e}"));
                std::thread::sleep(Duration::from_millis(5));
            }
            assert!(
                c.response().is_none(),
                "{what}: nothing follows the early answer"
            );
        }
    }
    gw.assert_still_serves();
}

/// An early answer to a PUT of 0 bytes (boto3 sends `Expect:
/// 100-continue` on every PUT, even an empty one): hyper took the next
/// request on such a connection for a broken one (a bare 400, found by the
/// Object Lock suite). With the header, the early answer closes the
/// connection; without it the body is read (there is none) and the next
/// request on the connection is answered as itself.
#[test]
fn an_early_answer_to_an_empty_body_never_breaks_the_next_request() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path());
    let next = bodiless(&gw.signer, "GET", &format!("/{BUCKET}/{EXISTING}"));
    for early in EARLY {
        for expect in [true, false] {
            let what = format!("{early:?}, 0 bytes, expect {expect}");
            let (head, body) = early.request(&gw, b"", false, expect);
            assert!(body.is_empty());
            let mut c = gw.connect();
            c.send(&head).unwrap();
            let r = c.response().unwrap();
            let (status, code) = early.expected();
            assert_eq!(
                (r.status, r.code().as_str()),
                (status, code),
                "{what}: {}",
                r.describe()
            );
            if expect {
                assert!(r.says_close(), "{what}: {}", r.describe());
                continue;
            }
            // The same connection serves the next request as itself.
            c.send(&next).unwrap();
            let r = c.response().unwrap();
            assert_eq!(r.status, 200, "{what}: the next request: {}", r.describe());
            assert_eq!(r.body, existing_body(), "{what}");
        }
    }
    gw.assert_still_serves();
}

/// Requests whose bodies were read to the end keep their connection: the
/// close is for early answers only, and an error without a body (NoSuchKey)
/// keeps it too.
#[test]
fn read_bodies_keep_the_connection_alive() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path());
    let mut c = gw.connect();
    let body = pattern(3, 200_000);
    let mut steps: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "plain PUT",
            put(&gw.signer, &format!("/{BUCKET}/a"), &body),
            200,
        ),
        (
            "GET",
            bodiless(&gw.signer, "GET", &format!("/{BUCKET}/a")),
            200,
        ),
        (
            "NoSuchKey",
            bodiless(&gw.signer, "GET", &format!("/{BUCKET}/missing")),
            404,
        ),
    ];
    let (mut chunked, rest) =
        put_parts(&gw.signer, &format!("/{BUCKET}/b"), &body, &[], true, false);
    chunked.extend(rest);
    steps.push(("aws-chunked PUT", chunked, 200));
    steps.push((
        "GET chunked",
        bodiless(&gw.signer, "GET", &format!("/{BUCKET}/b")),
        200,
    ));
    // aws-chunked inside HTTP chunked framing (no Content-Length: the body
    // ends only at the last HTTP chunk).
    let (head, rest) = put_parts(&gw.signer, &format!("/{BUCKET}/c"), &body, &[], true, false);
    let head = String::from_utf8(head).unwrap().replacen(
        &format!("content-length: {}\r\n", rest.len()),
        "transfer-encoding: chunked\r\n",
        1,
    );
    let mut framed = head.into_bytes();
    for piece in rest.chunks(50_000) {
        framed.extend(format!("{:x}\r\n", piece.len()).into_bytes());
        framed.extend(piece);
        framed.extend(b"\r\n");
    }
    framed.extend(b"0\r\n\r\n");
    steps.push(("HTTP-chunked aws-chunked PUT", framed, 200));
    steps.push((
        "GET HTTP-chunked",
        bodiless(&gw.signer, "GET", &format!("/{BUCKET}/c")),
        200,
    ));
    for (what, bytes, status) in steps {
        c.send(&bytes).unwrap();
        let r = c
            .response()
            .unwrap_or_else(|| panic!("{what}: the connection ended"));
        assert_eq!(r.status, status, "{what}: {}", r.describe());
        assert!(!r.says_close(), "{what}: {}", r.describe());
        if what.starts_with("GET") {
            assert_eq!(r.body, body, "{what}");
        }
    }
    // botocore's PUT: the head with Expect, 100 Continue, the body, 200.
    let (head, rest) = put_parts(&gw.signer, &format!("/{BUCKET}/d"), &body, &[], false, true);
    c.send(&head).unwrap();
    let r = c.response().unwrap();
    assert_eq!(r.status, 100, "{}", r.describe());
    c.send(&rest).unwrap();
    let r = c.response().unwrap();
    assert_eq!(r.status, 200, "{}", r.describe());
    assert!(
        !r.says_close(),
        "a PUT with Expect whose body was read: {}",
        r.describe()
    );
    c.send(&bodiless(&gw.signer, "GET", &format!("/{BUCKET}/d")))
        .unwrap();
    let r = c.response().unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, body.as_slice()));
}

/// An empty PUT awaited with `Expect: 100-continue` (botocore's, for an
/// empty file) is answered without a 100, and closes its connection:
/// botocore 1.43 keeps its parser primed by such an answer and misread
/// the next answer on the connection until its read timeout. boto3 then
/// runs an empty PUT and the next request in well under its timeout.
#[test]
fn an_empty_put_awaited_with_expect_closes_and_boto3_goes_on_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path());
    let (head, rest) = put_parts(
        &gw.signer,
        &format!("/{BUCKET}/empty"),
        b"",
        &[],
        false,
        true,
    );
    assert!(rest.is_empty());
    let mut c = gw.connect();
    c.send(&head).unwrap();
    let r = c.response().unwrap();
    assert_eq!(r.status, 200, "{}", r.describe());
    assert!(r.says_close(), "{}", r.describe());
    // Without Expect, an empty PUT keeps its connection.
    let mut c = gw.connect();
    c.send(&put(&gw.signer, &format!("/{BUCKET}/empty2"), b""))
        .unwrap();
    let r = c.response().unwrap();
    assert_eq!(r.status, 200, "{}", r.describe());
    assert!(!r.says_close(), "{}", r.describe());
    let out = gw.server.python("empty_put.py", &[BUCKET]);
    assert!(out.status.success(), "{}", support::describe(&out));
}

/// The load check in small (`scripts/load.sh mix 12000` runs 12,000 against a
/// release build): 2,000 requests over 16 keep-alive connections, valid
/// ones interleaved with every kind of early error and with uploads
/// abandoned halfway. Every valid request gets its answer (GETs byte for
/// byte), every invalid one its error.
#[test]
fn mixed_valid_and_invalid_requests_on_keep_alive_connections() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path());
    let config = shardgate_loadgen::mix::MixConfig {
        addr: gw.server.addr.to_string(),
        bucket: "mix".into(),
        requests: 2_000,
        connections: 16,
        seed: 7,
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let report = runtime
        .block_on(shardgate_loadgen::mix::run(gw.signer.clone(), config))
        .unwrap();
    assert_eq!(report.valid + report.invalid, 2_000);
    assert!(report.valid > 1_000 && report.invalid > 600, "{report:?}");
    assert_eq!(report.kinds.len(), 9, "every kind was sent: {report:?}");
    assert_eq!(
        (report.valid_failures, report.wrong_errors),
        (0, 0),
        "{:#?}",
        report.samples
    );
    // Only early answers and abandoned uploads end a connection: a valid
    // request (a PUT with Expect included) never does.
    let closing: usize = report
        .kinds
        .iter()
        .filter(|(kind, _)| !["PUT", "GET", "HEAD", "NoSuchKey"].contains(kind))
        .map(|(_, n)| n)
        .sum();
    assert!(
        report.connections <= 16 + closing,
        "{} connections opened for {closing} closing requests: {report:?}",
        report.connections
    );
}
