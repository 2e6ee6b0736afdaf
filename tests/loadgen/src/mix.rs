//! The mixed load: valid and invalid requests interleaved on keep-alive
//! connections, to show that an early error never corrupts the next
//! request on the same connection.
//!
//! Each connection is a plain HTTP/1.1 client written here, because the
//! cases need bytes no SDK sends on purpose: a PUT that sends
//! `Expect: 100-continue`, gets the error instead of `100 Continue` and
//! withholds its body (as botocore does), and an upload abandoned halfway.
//! The client follows HTTP/1.1 the way SDKs do: it keeps a connection
//! unless the response says `Connection: close` or the server closed it,
//! and never retries, so a connection the gateway left in a bad state
//! shows up as a failed valid request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::sigv4::{Signer, UNSIGNED_PAYLOAD};

/// What a mixed run is asked to do.
#[derive(Debug, Clone)]
pub struct MixConfig {
    /// `127.0.0.1:port`
    pub addr: String,
    pub bucket: String,
    pub requests: usize,
    pub connections: usize,
    pub seed: u64,
}

/// What a mixed run saw.
#[derive(Debug, Default, Clone)]
pub struct MixReport {
    pub valid: usize,
    pub invalid: usize,
    /// Valid requests that did not get their answer (must be 0).
    pub valid_failures: usize,
    /// Invalid requests answered with something other than their error.
    pub wrong_errors: usize,
    /// Connections opened (each early error closes one).
    pub connections: usize,
    pub elapsed: Duration,
    /// The first few failures, described.
    pub samples: Vec<String>,
    /// (kind, count) of the requests sent.
    pub kinds: Vec<(&'static str, usize)>,
}

impl MixReport {
    fn merge(&mut self, other: MixReport) {
        self.valid += other.valid;
        self.invalid += other.invalid;
        self.valid_failures += other.valid_failures;
        self.wrong_errors += other.wrong_errors;
        self.connections += other.connections;
        for s in other.samples {
            if self.samples.len() < 10 {
                self.samples.push(s);
            }
        }
        for (kind, n) in other.kinds {
            match self.kinds.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, total)) => *total += n,
                None => self.kinds.push((kind, n)),
            }
        }
    }

    fn count(&mut self, kind: &'static str) {
        match self.kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => self.kinds.push((kind, 1)),
        }
    }
}

/// Runs the mix: `requests` requests over `connections` keep-alive
/// connections, about 60% valid (PUTs of 0 to 64 KiB, half with
/// `Expect: 100-continue`; GETs checked byte for byte; HEADs) and 40%
/// invalid (a bad signature, a key too long, metadata too large, a failed
/// If-Match, NoSuchKey, an upload abandoned halfway).
pub async fn run(signer: Signer, config: MixConfig) -> Result<MixReport> {
    let signer = Arc::new(signer);
    let mut random = vec![0u8; 1 << 20];
    StdRng::seed_from_u64(config.seed).fill(&mut random[..]);
    let shared = Bytes::from(random);
    let mut conn = Client::new(config.addr.clone());
    let path = format!("/{}", config.bucket);
    let answer = conn
        .request(&signer, "PUT", &path, &[], Body::None)
        .await
        .context("creating the bucket")?;
    if !matches!(answer.status, 200 | 409) {
        bail!("creating the bucket: {}", answer.status);
    }
    let start = Instant::now();
    let mut workers = Vec::new();
    for w in 0..config.connections {
        let per = config.requests / config.connections
            + usize::from(w < config.requests % config.connections);
        let (signer, shared, config) = (signer.clone(), shared.clone(), config.clone());
        workers.push(tokio::spawn(async move {
            Box::pin(worker(w, per, &signer, &shared, &config)).await
        }));
    }
    let mut report = MixReport::default();
    for w in workers {
        report.merge(w.await?);
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

/// The body of an object: a slice of the shared random buffer chosen by
/// its key, so a GET checks it without a copy kept.
fn content(shared: &Bytes, key: &str, len: usize) -> Bytes {
    let h = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let off = (h % (shared.len() - len) as u64) as usize;
    shared.slice(off..off + len)
}

async fn worker(
    w: usize,
    count: usize,
    signer: &Signer,
    shared: &Bytes,
    config: &MixConfig,
) -> MixReport {
    let mut rng = StdRng::seed_from_u64(config.seed ^ (w as u64 + 1).wrapping_mul(0x9E37_79B9));
    let mut report = MixReport::default();
    let mut client = Client::new(config.addr.clone());
    let wrong = Signer {
        secret: format!("wrong{}", signer.secret),
        ..signer.clone()
    };
    let bucket = &config.bucket;
    let mut stored: Vec<(String, usize)> = Vec::new();
    let big_meta = "v".repeat(2100);
    for i in 0..count {
        let roll = rng.random_range(0..100);
        let expect = rng.random_bool(0.5);
        let len = rng.random_range(0..=64 * 1024);
        let key = format!("mix/{w}/{i}");
        let path = format!("/{bucket}/{key}");
        let some_stored =
            (!stored.is_empty()).then(|| stored[rng.random_range(0..stored.len())].clone());
        let early = match roll {
            60..67 => Some(EarlyPut {
                kind: "bad signature",
                signer: &wrong,
                path: path.clone(),
                extra: vec![],
                code: "SignatureDoesNotMatch",
            }),
            67..74 => Some(EarlyPut {
                kind: "key too long",
                signer,
                path: format!("/{bucket}/{}", "k".repeat(1025 + len % 500)),
                extra: vec![],
                code: "KeyTooLongError",
            }),
            74..80 => Some(EarlyPut {
                kind: "metadata too large",
                signer,
                path: path.clone(),
                extra: vec![("x-amz-meta-big", big_meta.as_str())],
                code: "MetadataTooLarge",
            }),
            80..86 => some_stored.as_ref().map(|(key, _)| EarlyPut {
                kind: "failed If-Match",
                signer,
                path: format!("/{bucket}/{key}"),
                extra: vec![("if-match", "\"00000000000000000000000000000000\"")],
                code: "PreconditionFailed",
            }),
            _ => None,
        };
        let (kind, valid, outcome) = if let Some(put) = early {
            let body = Body::Bytes(content(shared, &key, len), expect);
            let r = client
                .request(put.signer, "PUT", &put.path, &put.extra, body)
                .await;
            (
                put.kind,
                false,
                check(r, |a| error_code(&a.body) == put.code),
            )
        } else if roll < 30 || some_stored.is_none() && roll < 60 {
            let body = content(shared, &key, len);
            let r = client
                .request(signer, "PUT", &path, &[], Body::Bytes(body, expect))
                .await;
            if matches!(&r, Ok(a) if a.status == 200) {
                stored.push((key.clone(), len));
            }
            ("PUT", true, check(r, |a| a.status == 200))
        } else if let (true, Some((key, len))) = (roll < 60, some_stored) {
            let stored_path = format!("/{bucket}/{key}");
            if roll < 50 {
                let want = content(shared, &key, len);
                let r = client
                    .request(signer, "GET", &stored_path, &[], Body::None)
                    .await;
                ("GET", true, check(r, |a| a.status == 200 && a.body == want))
            } else {
                let r = client
                    .request(signer, "HEAD", &stored_path, &[], Body::None)
                    .await;
                (
                    "HEAD",
                    true,
                    check(r, |a| a.status == 200 && a.length == Some(len)),
                )
            }
        } else if roll < 93 {
            let missing = format!("/{bucket}/missing/{w}/{i}");
            let r = client
                .request(signer, "GET", &missing, &[], Body::None)
                .await;
            (
                "NoSuchKey",
                false,
                check(r, |a| error_code(&a.body) == "NoSuchKey"),
            )
        } else {
            // Half the body, then the client goes away; the key must never
            // appear.
            let body = content(shared, &key, len.max(2));
            let sent = client
                .request(signer, "PUT", &path, &[], Body::Abandoned(body))
                .await;
            report.connections += client.take_opened();
            let head = client.request(signer, "HEAD", &path, &[], Body::None).await;
            let outcome = match sent {
                Err(_abandoned) => check(head, |a| a.status == 404),
                Ok(a) => Err(format!("the abandoned upload was answered {}", a.status)),
            };
            ("abandoned upload", false, outcome)
        };
        report.count(kind);
        if valid {
            report.valid += 1;
        } else {
            report.invalid += 1;
        }
        if let Err(why) = outcome {
            if valid {
                report.valid_failures += 1;
            } else {
                report.wrong_errors += 1;
            }
            if report.samples.len() < 10 {
                report
                    .samples
                    .push(format!("{kind} #{i} on connection {w}: {why}"));
            }
        }
    }
    report.connections += client.take_opened();
    report
}

/// A PUT the gateway answers before reading its body.
struct EarlyPut<'a> {
    kind: &'static str,
    signer: &'a Signer,
    path: String,
    extra: Vec<(&'a str, &'a str)>,
    /// The error code it must get.
    code: &'static str,
}

fn check(answer: Result<Answer>, right: impl Fn(&Answer) -> bool) -> Result<(), String> {
    match answer {
        Ok(a) if right(&a) => Ok(()),
        Ok(a) => Err(format!(
            "answered {} {}",
            a.status,
            String::from_utf8_lossy(&a.body[..a.body.len().min(300)])
        )),
        Err(e) => Err(format!("{e:#}")),
    }
}

enum Body {
    None,
    /// The body, and whether to ask `Expect: 100-continue` first.
    Bytes(Bytes, bool),
    /// Send the head and half of this, then drop the connection.
    Abandoned(Bytes),
}

struct Answer {
    status: u16,
    length: Option<usize>,
    body: Vec<u8>,
    close: bool,
}

/// The `<Code>` of an S3 error body ("" if it has none).
pub fn error_code(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.split("<Code>")
        .nth(1)
        .and_then(|r| r.split("</Code>").next())
        .unwrap_or("")
        .to_string()
}

/// How long a client waits for `100 Continue` before sending the body
/// anyway (botocore's figure).
const CONTINUE_WAIT: Duration = Duration::from_secs(1);
/// The most any one answer may take.
const ANSWER_WAIT: Duration = Duration::from_secs(30);

struct Request<'a> {
    signer: &'a Signer,
    method: &'a str,
    path: &'a str,
    extra: &'a [(&'a str, &'a str)],
    body: Body,
}

/// One keep-alive HTTP/1.1 connection at a time.
struct Client {
    addr: String,
    conn: Option<Conn>,
    opened: usize,
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn new(addr: String) -> Self {
        Self {
            addr,
            conn: None,
            opened: 0,
        }
    }

    fn take_opened(&mut self) -> usize {
        std::mem::take(&mut self.opened)
    }

    async fn request(
        &mut self,
        signer: &Signer,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: Body,
    ) -> Result<Answer> {
        let request = Request {
            signer,
            method,
            path,
            extra,
            body,
        };
        let result = tokio::time::timeout(ANSWER_WAIT, self.exchange(request))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer in {ANSWER_WAIT:?}")));
        match &result {
            Ok(a) if !a.close => {}
            // The server said close, or the exchange failed: this
            // connection is done.
            _ => self.conn = None,
        }
        result
    }

    async fn exchange(&mut self, request: Request<'_>) -> Result<Answer> {
        let Request {
            signer,
            method,
            path,
            extra,
            body,
        } = request;
        if self.conn.is_none() {
            let stream = TcpStream::connect(&self.addr).await?;
            stream.set_nodelay(true)?;
            self.opened += 1;
            self.conn = Some(Conn {
                stream,
                buf: Vec::new(),
            });
        }
        let Some(conn) = self.conn.as_mut() else {
            bail!("no connection");
        };
        let signed = signer.sign(method, path, "", extra, UNSIGNED_PAYLOAD);
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        for (k, v) in &signed.headers {
            head += &format!("{k}: {v}\r\n");
        }
        let head_only = method == "HEAD";
        match body {
            Body::None => {
                head += "\r\n";
                conn.stream.write_all(head.as_bytes()).await?;
                conn.answer(head_only).await
            }
            Body::Bytes(bytes, false) => {
                head += &format!("content-length: {}\r\n\r\n", bytes.len());
                conn.stream.write_all(head.as_bytes()).await?;
                conn.stream.write_all(&bytes).await?;
                conn.final_answer().await
            }
            Body::Bytes(bytes, true) => {
                head += &format!(
                    "content-length: {}\r\nexpect: 100-continue\r\n\r\n",
                    bytes.len()
                );
                conn.stream.write_all(head.as_bytes()).await?;
                match tokio::time::timeout(CONTINUE_WAIT, conn.answer(false)).await {
                    // An answer instead of 100 Continue: the body stays
                    // unsent, as botocore does.
                    Ok(Ok(a)) if a.status != 100 => Ok(a),
                    Ok(Err(e)) => Err(e),
                    // 100 Continue, or no word within the wait: send it.
                    Ok(Ok(_)) | Err(_) => {
                        conn.stream.write_all(&bytes).await?;
                        conn.final_answer().await
                    }
                }
            }
            Body::Abandoned(bytes) => {
                head += &format!("content-length: {}\r\n\r\n", bytes.len());
                conn.stream.write_all(head.as_bytes()).await?;
                conn.stream.write_all(&bytes[..bytes.len() / 2]).await?;
                self.conn = None;
                bail!("abandoned halfway")
            }
        }
    }
}

impl Conn {
    /// The answer after a body was sent: a `100 Continue` that comes late
    /// (after the client stopped waiting for it) is skipped.
    async fn final_answer(&mut self) -> Result<Answer> {
        loop {
            let a = self.answer(false).await?;
            if a.status != 100 {
                return Ok(a);
            }
        }
    }

    /// Reads one answer (a `100 Continue` is one too), framed by
    /// Content-Length. Nothing is taken from the buffer until the whole
    /// answer is there, so a caller that stops waiting loses nothing.
    async fn answer(&mut self, head_only: bool) -> Result<Answer> {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("not a status line: {head:?}"))?;
        let mut length = None;
        let mut close = false;
        for (name, value) in lines.filter_map(|l| l.split_once(':')) {
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>().context("content-length")?);
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                bail!("a chunked answer: {head:?}");
            }
        }
        let to_read = if head_only || status == 100 || status == 304 {
            0
        } else {
            length.unwrap_or(0)
        };
        while self.buf.len() < end + 4 + to_read {
            self.fill().await?;
        }
        self.buf.drain(..end + 4);
        let body = self.buf.drain(..to_read).collect();
        Ok(Answer {
            status,
            length,
            body,
            close,
        })
    }

    async fn fill(&mut self) -> Result<()> {
        self.buf.reserve(64 * 1024);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            bail!("the server closed the connection");
        }
        Ok(())
    }
}
