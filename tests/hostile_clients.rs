//! One client must not be able to exhaust the gateway: connections that
//! send half a head and stop, bodies that trickle, kept-alive connections
//! left idle, more connections than the cap (issue 22). Raw sockets where
//! the client must misbehave, boto3 (`clients/op.py`) for the client that
//! must keep working meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use shardgate_loadgen::sigv4::{Signer, UNSIGNED_PAYLOAD};
use support::raw::{Raw, bodiless, head, put};
use support::{Server, blob_files, describe, pattern};

/// How many half-open connections the flood test would hold; fewer when
/// the descriptor limit (this process's, which the gateway inherits and
/// keeps 1024 of for itself) does not allow so many (see `flood_size`).
const FLOOD: usize = 20_000;

/// The flood this machine allows: no more than the gateway's connection
/// cap (its limit less 1024) less room for the well-behaved client, nor
/// than this process's own limit less room for its files.
fn flood_size() -> usize {
    use rustix::process::{Resource, getrlimit};
    let limit = getrlimit(Resource::Nofile)
        .current
        .map_or(FLOOD, |l| usize::try_from(l).unwrap_or(FLOOD));
    FLOOD
        .min(limit.saturating_sub(1024 + 16))
        .min(limit.saturating_sub(200))
}

fn signer(server: &Server) -> Signer {
    Signer {
        access: server.access_key.clone(),
        secret: server.secret_key.clone(),
        host: server.addr.to_string(),
    }
}

/// Raises this process's descriptor limit as far as it may go: to the
/// hard limit, and past it where the process may (root with
/// CAP_SYS_RESOURCE); the gateway it starts inherits it.
fn raise_descriptor_limit(to: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    let wanted = Rlimit {
        current: Some(to),
        maximum: Some(to),
    };
    if setrlimit(Resource::Nofile, wanted).is_err() {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: now.maximum,
                maximum: now.maximum,
            },
        );
    }
}

/// Whether the server ended the connection: EOF or reset, as opposed to
/// silence until the read timeout.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

fn boto3_ok(server: &Server, args: &[&str]) -> String {
    let out = server.python("op.py", args);
    assert!(out.status.success(), "op.py {args:?}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// 20,000 connections (or as many as the descriptor limit allows: 18,960
/// under this machine's 20,000) that each send half a request head and
/// then nothing: the gateway keeps serving a boto3 client on another
/// connection (PUT, GET, LIST) while it holds them, closes every one of
/// them within the header timeout, and never runs out of descriptors.
#[test]
fn half_open_connections_are_closed_and_others_are_served_meanwhile() {
    raise_descriptor_limit(FLOOD as u64 + 2_000);
    let flood_size = flood_size();
    eprintln!("holding {flood_size} half-open connections");
    assert!(
        flood_size >= 10_000,
        "a descriptor limit too low for a flood worth testing: {flood_size}"
    );
    let dir = tempfile::tempdir().unwrap();
    let header_timeout = Duration::from_secs(25);
    let server = Server::start_with(
        &dir.path().join("data"),
        &[("SHARDGATE_SERVER__HEADER_TIMEOUT_SECS", "25")],
    );
    let mut flood = Vec::with_capacity(flood_size);
    let opened = Instant::now();
    for i in 0..flood_size {
        let mut s = TcpStream::connect(server.addr)
            .unwrap_or_else(|e| panic!("connection {i} of the flood: {e}"));
        s.write_all(format!("PUT /b/k{i} HTTP/1.1\r\nHost: x\r\nContent-Le").as_bytes())
            .unwrap();
        flood.push(s);
    }
    let flooded_in = opened.elapsed();
    assert!(
        flooded_in < header_timeout,
        "opening {flood_size} connections took {flooded_in:?}, longer than the header timeout: the test cannot tell what it measures"
    );

    // Meanwhile, a well-behaved client.
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let file = files.join("object");
    std::fs::write(&file, pattern(5, 300_000)).unwrap();
    boto3_ok(&server, &["mb", "flooded"]);
    boto3_ok(&server, &["put", "flooded", "key", file.to_str().unwrap()]);
    let back = files.join("back");
    boto3_ok(&server, &["get", "flooded", "key", back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), pattern(5, 300_000));
    assert_eq!(boto3_ok(&server, &["ls", "flooded"]).trim(), "key");
    let served_in = opened.elapsed();
    eprintln!(
        "flood opened in {flooded_in:?}; the client served by {served_in:?}; gateway peak RSS {:?} MiB",
        server.peak_rss_mib()
    );
    assert!(
        served_in < header_timeout,
        "the client was served after {served_in:?}, once the flood was gone: it must be served while the flood is held"
    );

    // Every half-open connection is closed by the gateway, within the
    // header timeout of its opening (plus a margin for a loaded machine).
    let deadline = opened + header_timeout + Duration::from_secs(20);
    for (i, s) in flood.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        assert!(
            closed_by_server(s),
            "half-open connection {i} still open {:?} after the flood began",
            opened.elapsed()
        );
    }
    drop(flood);
    assert_eq!(server.get("/health").unwrap().0, 200);
    let log = server.log_text();
    assert!(!log.contains("accept failed"), "{log}");
    assert!(
        log.contains("connections (descriptor limit"),
        "the cap is logged: {log}"
    );
}

/// More connections than `server.max_connections`: the excess wait to be
/// accepted (nothing fails), and are served once the first ones close.
#[test]
fn connections_past_the_cap_wait_their_turn() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &dir.path().join("data"),
        &[
            ("SHARDGATE_SERVER__MAX_CONNECTIONS", "20"),
            ("SHARDGATE_SERVER__HEADER_TIMEOUT_SECS", "3"),
        ],
    );
    let holders: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    // The 21st connects (the kernel queues it), but is not served while
    // the 20 hold every place.
    let mut late = Raw::connect(server.addr);
    late.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let waited = Instant::now();
    let r = late.response().expect("served once a place is free");
    assert_eq!(r.status, 200);
    assert!(
        waited.elapsed() >= Duration::from_secs(2),
        "served after {:?}: the cap of 20 was not applied",
        waited.elapsed()
    );
    drop(holders);
    let log = server.log_text();
    assert!(log.contains("at most 20 connections (configured"), "{log}");
    assert!(!log.contains("accept failed"), "{log}");
}

/// A kept-alive connection serves requests with pauses shorter than the
/// idle timeout, and is closed by the gateway after a longer one.
#[test]
fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &dir.path().join("data"),
        &[("SHARDGATE_SERVER__IDLE_TIMEOUT_SECS", "3")],
    );
    let signer = signer(&server);
    let mut c = Raw::connect(server.addr);
    c.send(&bodiless(&signer, "PUT", "/idle")).unwrap();
    assert_eq!(c.response().unwrap().status, 200);
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1500));
        c.send(&bodiless(&signer, "GET", "/idle")).unwrap();
        let r = c.response().expect("kept alive across a short pause");
        assert_eq!(r.status, 200, "{}", r.describe());
    }
    std::thread::sleep(Duration::from_secs(5));
    assert!(c.response().is_none(), "closed after the idle timeout");
}

/// A body that trickles gets S3's `RequestTimeout`, whether it stalls
/// (one byte, then nothing for longer than the body timeout) or keeps
/// sending too slowly (a byte a second, under the minimum rate). The
/// write it started leaves no object and, once collected, no blob.
#[test]
fn a_trickling_body_gets_request_timeout_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(
        &data,
        &[
            ("SHARDGATE_SERVER__BODY_TIMEOUT_SECS", "3"),
            ("SHARDGATE_SERVER__BODY_MIN_RATE", "500"),
        ],
    );
    let signer = signer(&server);
    let mut c = Raw::connect(server.addr);
    c.send(&bodiless(&signer, "PUT", "/slow")).unwrap();
    assert_eq!(c.response().unwrap().status, 200);
    // A committed object beside them, which must stay.
    c.send(&put(&signer, "/slow/kept", &pattern(6, 100_000)))
        .unwrap();
    assert_eq!(c.response().unwrap().status, 200);
    let kept_blobs = blob_files(&data).len();
    assert!(kept_blobs > 0);

    for (key, pause) in [
        ("stalled", Duration::from_secs(10)),
        ("trickled", Duration::from_secs(1)),
    ] {
        let path = format!("/slow/{key}");
        let signed = signer.sign("PUT", &path, "", &[], UNSIGNED_PAYLOAD);
        let mut c = Raw::connect(server.addr);
        c.send(&head(
            "PUT",
            &path,
            &signed.headers,
            &[("content-length", "1000000".to_string())],
        ))
        .unwrap();
        let started = Instant::now();
        // A byte, then the pause, until the gateway answers (bounded).
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (mut writer, stop) = (c.stream_clone(), stop.clone());
            std::thread::spawn(move || {
                for _ in 0..30 {
                    if writer.write_all(b"x").is_err() {
                        return;
                    }
                    let until = Instant::now() + pause;
                    while Instant::now() < until {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            })
        };
        let answer = c.response();
        let answered_after = started.elapsed();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
        let r = answer.unwrap_or_else(|| panic!("{key}: no answer"));
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "RequestTimeout"),
            "{key} after {answered_after:?}: {}",
            r.describe()
        );
        assert!(
            answered_after < Duration::from_secs(9),
            "{key}: answered after {answered_after:?}, not at the body timeout (3 s)"
        );
        let mut g = Raw::connect(server.addr);
        g.send(&bodiless(&signer, "GET", &path)).unwrap();
        assert_eq!(g.response().unwrap().status, 404, "{key}: no object");
    }
    // The two writes' fragments are garbage: collected after its grace.
    let deadline = Instant::now() + Duration::from_secs(60);
    while blob_files(&data).len() != kept_blobs {
        assert!(
            Instant::now() < deadline,
            "{} blobs left, {kept_blobs} expected",
            blob_files(&data).len()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let mut g = Raw::connect(server.addr);
    g.send(&bodiless(&signer, "GET", "/slow/kept")).unwrap();
    assert_eq!(g.response().unwrap().body, pattern(6, 100_000));
}

/// `503 SlowDown` answers so far.
fn slow_downs(server: &Server) -> f64 {
    server
        .metrics()
        .iter()
        .filter(|(name, _)| name.contains("s3_requests") && name.contains("status=\"503\""))
        .map(|(_, v)| v)
        .sum()
}

/// More concurrent PUTs than the budget admits: the excess wait, then get
/// `503 SlowDown`; boto3's own retries (standard mode) finish every upload;
/// every object reads back; the gateway's peak memory stays under its
/// budget. (`scripts/saturate.sh` runs 1,000 × 8 MiB against a release
/// build.)
#[test]
fn past_the_budget_clients_get_slow_down_and_their_retries_finish() {
    let dir = tempfile::tempdir().unwrap();
    let budget_mib = 320;
    let server = Server::start_with(
        &dir.path().join("data"),
        &[
            (
                "SHARDGATE_SERVER__MEMORY_BUDGET_BYTES",
                &(budget_mib << 20).to_string(),
            ),
            ("SHARDGATE_SERVER__MAX_REQUESTS", "4"),
            ("SHARDGATE_SERVER__QUEUE_TIMEOUT_SECS", "1"),
        ],
    );
    // The probes answer all along.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = {
        let (addr, stop) = (server.addr, stop.clone());
        std::thread::spawn(move || {
            let mut answered = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let status = support::http_get(addr, "/health").map(|(s, _)| s);
                assert_eq!(status, Some(200), "/health while saturated");
                answered += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            answered
        })
    };
    // Four uploads that trickle hold all four places (the bucket made
    // first)...
    let signer = signer(&server);
    let mut c = Raw::connect(server.addr);
    c.send(&bodiless(&signer, "PUT", "/saturate")).unwrap();
    assert_eq!(c.response().unwrap().status, 200);
    let holders: Vec<Raw> = (0..4)
        .map(|i| {
            let path = format!("/held{i}");
            let mut c = Raw::connect(server.addr);
            c.send(&bodiless(&signer, "PUT", &path)).unwrap();
            assert_eq!(c.response().unwrap().status, 200);
            let key = format!("{path}/k");
            let signed = signer.sign("PUT", &key, "", &[], UNSIGNED_PAYLOAD);
            c.send(&head(
                "PUT",
                &key,
                &signed.headers,
                &[("content-length", "1000000".to_string())],
            ))
            .unwrap();
            c.send(b"x").unwrap();
            c
        })
        .collect();
    // ... so the 120 uploads' first attempts wait out the queue timeout and
    // get SlowDown; once the holders go, boto3's retries get through.
    let mut client = server.python_spawn(
        "saturate.py",
        &["120", &(4 << 20).to_string(), "30", "existing"],
    );
    let held_until = Instant::now() + Duration::from_secs(120);
    while slow_downs(&server) < 20.0 {
        assert!(
            Instant::now() < held_until,
            "no SlowDown while every place was held"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(holders);
    let out = client.wait();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let probes = prober.join().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert!(probes > 5, "{probes} probes");
    let slow_downs = slow_downs(&server);
    let peak = server.peak_rss_mib().unwrap();
    eprintln!("{slow_downs} SlowDowns; peak RSS {peak:.0} MiB under a budget of {budget_mib} MiB");
    assert!(
        peak < budget_mib as f64,
        "peak RSS {peak:.0} MiB over the budget of {budget_mib} MiB"
    );
    assert_eq!(server.get("/health").unwrap().0, 200);
}

/// A client that asks for a 32 MiB object and reads none of it: its
/// connection closes after the send timeout (3 s here, checked at least
/// every header timeout, 3 s too), and the request's place and memory
/// are given back, where before they were held as long as the client
/// kept the socket open.
#[test]
fn a_client_that_stops_reading_an_answer_is_closed_after_the_send_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &dir.path().join("data"),
        &[
            ("SHARDGATE_SERVER__SEND_TIMEOUT_SECS", "3"),
            ("SHARDGATE_SERVER__HEADER_TIMEOUT_SECS", "3"),
        ],
    );
    let signer = signer(&server);
    let mut c = Raw::connect(server.addr);
    c.send(&bodiless(&signer, "PUT", "/unread")).unwrap();
    assert_eq!(c.response().unwrap().status, 200);
    let body = pattern(7, 32 << 20);
    c.send(&put(&signer, "/unread/big", &body)).unwrap();
    assert_eq!(c.response().unwrap().status, 200);
    let free = |server: &Server| server.metrics()["shardgate_requests_free{}"];
    let all_free = free(&server);
    let open = |server: &Server| server.metrics()["shardgate_connections_open{}"];
    let open_before = open(&server);

    let mut reader = TcpStream::connect(server.addr).unwrap();
    rustix::net::sockopt::set_socket_recv_buffer_size(&reader, 4096).unwrap();
    reader
        .write_all(&bodiless(&signer, "GET", "/unread/big"))
        .unwrap();
    // The answer starts, then waits on a client that does not read.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(free(&server), all_free - 1.0, "the GET holds a place");
    let started = Instant::now();
    while free(&server) < all_free {
        assert!(
            started.elapsed() < Duration::from_secs(12),
            "the unread GET still holds its place after {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "closed after {:?}, before the send timeout",
        started.elapsed()
    );
    // The connection is gone (the kernel still trickles what was
    // buffered to the client, which no longer holds anything here).
    let deadline = Instant::now() + Duration::from_secs(5);
    while open(&server) != open_before {
        assert!(
            Instant::now() < deadline,
            "{} connections open, {open_before} before the GET",
            open(&server)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(reader);
    // A client that reads gets the whole object meanwhile.
    let mut g = Raw::connect(server.addr);
    g.send(&bodiless(&signer, "GET", "/unread/big")).unwrap();
    assert_eq!(g.response().unwrap().body, body);
}
