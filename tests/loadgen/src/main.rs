//! `shardgate-loadgen`: PUTs then GETs `count` objects of each size at a
//! fixed concurrency against a running gateway, and prints throughput,
//! latency percentiles and the gateway's peak RSS for each phase as
//! Markdown table rows (BENCHMARKS.md quotes them).
//!
//! It signs with SigV4 (`UNSIGNED-PAYLOAD`, as S3 allows over any
//! transport) and streams bodies from one shared random buffer, so the
//! generator itself stays small and cheap next to the gateway on the same
//! two cores. Peak RSS is the gateway's `VmHWM`, reset before each phase
//! by writing 5 to `/proc/<pid>/clear_refs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Parser;
use futures::stream;
use http_body_util::{BodyExt, Empty, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rand::RngCore;
use shardgate_loadgen::mix;
use shardgate_loadgen::sigv4::{Signer, UNSIGNED_PAYLOAD};

#[derive(Parser, Debug)]
struct Args {
    /// e.g. http://127.0.0.1:9000
    #[arg(long)]
    endpoint: String,
    /// More gateways serving the same namespace (comma-separated): the
    /// connections are spread over all, connection i to endpoint i mod n.
    #[arg(long, value_delimiter = ',')]
    more_endpoints: Vec<String>,
    /// Reads access_key= and secret_key= from this credentials file.
    #[arg(long)]
    credentials: std::path::PathBuf,
    #[arg(long, default_value = "loadgen")]
    bucket: String,
    /// Object sizes, e.g. 4KiB,1MiB,64MiB.
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<String>,
    /// Objects per size (one per request).
    #[arg(long, value_delimiter = ',')]
    counts: Vec<usize>,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// The gateway's pid, for its peak RSS and the CPU time it spent per
    /// request (several, comma-separated: the CPU time of all, the peak
    /// RSS of the first).
    #[arg(long, value_delimiter = ',')]
    pid: Vec<u32>,
    /// The metadata database's server process (PostgreSQL's postmaster):
    /// its CPU time and its children's per request.
    #[arg(long)]
    db_pid: Option<u32>,
    /// A LIST phase after the PUTs: this many ListObjectsV2 requests of
    /// 100 keys each, from places spread over the keys just written.
    #[arg(long, default_value_t = 0)]
    lists: usize,
    /// Delete each size's objects after its GET phase.
    #[arg(long)]
    cleanup: bool,
    /// Only the PUT phase (for measuring the write path alone).
    #[arg(long, conflicts_with = "cleanup")]
    put_only: bool,
    /// GET phases per size: the second ("GET again") reads what the first
    /// left in the page cache.
    #[arg(long, default_value_t = 1)]
    gets: usize,
    /// Drop the kernel's page cache (root) before each size's first GET
    /// phase: the GETs then read the disk, whatever the PUTs left cached.
    #[arg(long)]
    drop_caches: bool,
    /// Seconds to wait before each size's first GET phase (after
    /// `--drop-caches`): what a GET right after the PUTs pays for writes
    /// the disk is still absorbing shows against the same GET later.
    #[arg(long, default_value_t = 0)]
    pause_before_gets: u64,
    /// Instead of the phases: this many requests, valid and invalid mixed
    /// over `concurrency` keep-alive connections (see `mix`); exits
    /// non-zero unless every valid request got its answer and every
    /// invalid one its error.
    #[arg(long, conflicts_with_all = ["sizes", "counts", "put_only", "cleanup"])]
    mix: Option<usize>,
    /// The mixed load's random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// For an https:// endpoint: the CA that signed its certificate (PEM).
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// Enable versioning on the bucket before the phases (its cost is
    /// measured against a run without); cleanup then deletes the versions
    /// written.
    #[arg(long)]
    versioning: bool,
    /// A bucket policy to set on the bucket before the phases (a JSON file;
    /// `BUCKET` in it stands for the bucket's name).
    #[arg(long)]
    policy: Option<std::path::PathBuf>,
}

/// PUTs `body` to the bucket's `?name` subresource (versioning, policy).
async fn put_subresource(
    conn: &mut Conn,
    signer: &Signer,
    path: &str,
    name: &str,
    body: Bytes,
) -> Result<()> {
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body));
    let mut req = http::Request::builder()
        .method("PUT")
        .uri(format!("{path}?{name}"));
    for (k, v) in signer
        .sign("PUT", path, &format!("{name}="), &[], &sha)
        .headers
    {
        req = req.header(k, v);
    }
    let resp = conn.send(req.body(Full::new(body).boxed())?).await?;
    if !resp.status().is_success() {
        bail!("{}", resp.status());
    }
    Ok(())
}

fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().with_context(|| format!("size {s:?}"))?;
    let mult = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => bail!("unknown unit {other:?}"),
    };
    Ok(n * mult)
}

type Body = BoxBody<Bytes, std::convert::Infallible>;

/// One keep-alive connection; reconnects after an error.
struct Conn {
    addr: String,
    /// Over HTTPS: the connector that trusts the gateway's CA.
    tls: Option<tokio_rustls::TlsConnector>,
    sender: Option<http1::SendRequest<Body>>,
}

/// A TLS connector trusting the CA certificates in `ca` (PEM).
fn tls_connector(ca: &std::path::Path) -> Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("{}", ca.display()))? {
        roots.add(cert.with_context(|| format!("{}", ca.display()))?)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

impl Conn {
    async fn send(
        &mut self,
        req: http::Request<Body>,
    ) -> Result<http::Response<hyper::body::Incoming>> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = tokio::net::TcpStream::connect(&self.addr).await?;
            stream.set_nodelay(true)?;
            let sender = match &self.tls {
                None => {
                    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
                    tokio::spawn(conn);
                    sender
                }
                Some(tls) => {
                    let host = self
                        .addr
                        .rsplit_once(':')
                        .map_or(self.addr.as_str(), |(h, _)| h);
                    let name = rustls::pki_types::ServerName::try_from(host.to_string())?;
                    let stream = tls.connect(name, stream).await?;
                    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
                    tokio::spawn(conn);
                    sender
                }
            };
            self.sender = Some(sender);
        }
        let Some(sender) = self.sender.as_mut() else {
            bail!("no connection");
        };
        sender.ready().await?;
        match sender.send_request(req).await {
            Ok(r) => Ok(r),
            Err(e) => {
                self.sender = None;
                Err(e.into())
            }
        }
    }
}

/// A body of `len` bytes cut from the shared random buffer.
fn body(shared: &Bytes, len: u64) -> Body {
    let chunk = shared.len() as u64;
    let pieces = (0..len.div_ceil(chunk)).map({
        let shared = shared.clone();
        move |i| {
            let n = (len - i * chunk).min(chunk) as usize;
            Ok::<_, std::convert::Infallible>(Frame::data(shared.slice(..n)))
        }
    });
    StreamBody::new(stream::iter(pieces)).boxed()
}

/// A gateway's address, and the signer of requests to it (the host is
/// signed).
type Target = (String, Arc<Signer>);

#[derive(Default)]
struct Phase {
    latencies: Vec<Duration>,
    bytes: u64,
    errors: usize,
}

/// The version id each PUT of a phase got (object index -> id), so that
/// cleanup in a versioned bucket deletes versions instead of adding
/// delete markers: the bucket holds as much as a plain one between rounds.
type Versions = Arc<std::sync::Mutex<Vec<Option<String>>>>;

#[allow(clippy::too_many_arguments)]
async fn run_phase(
    args: &Args,
    tls: &Option<tokio_rustls::TlsConnector>,
    targets: &[Target],
    op: &'static str,
    size: u64,
    count: usize,
    objects: usize,
    shared: &Bytes,
    versions: &Versions,
) -> Result<(Phase, Duration)> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let (addr, signer) = &targets[w % targets.len()];
        let (next, signer, shared, bucket, versions) = (
            next.clone(),
            signer.clone(),
            shared.clone(),
            args.bucket.clone(),
            versions.clone(),
        );
        let mut conn = Conn {
            addr: addr.clone(),
            tls: tls.clone(),
            sender: None,
        };
        workers.push(tokio::spawn(async move {
            let mut phase = Phase::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let path = match op {
                    "LIST" => format!("/{bucket}"),
                    _ => format!("/{bucket}/obj-{size}-{i}"),
                };
                let t = Instant::now();
                let method = match op {
                    "PUT" => "PUT",
                    "DELETE" => "DELETE",
                    _ => "GET",
                };
                let version = match op {
                    "DELETE" => versions
                        .lock()
                        .ok()
                        .and_then(|v| v.get(i).cloned().flatten()),
                    _ => None,
                };
                let query = match op {
                    // Parameters sorted, as SigV4 signs them.
                    "LIST" => format!(
                        "list-type=2&max-keys=100&prefix=obj-{size}-&start-after=obj-{size}-{}",
                        i.wrapping_mul(7919) % objects.max(1)
                    ),
                    _ => version
                        .map(|v| format!("versionId={v}"))
                        .unwrap_or_default(),
                };
                let uri = match query.as_str() {
                    "" => path.clone(),
                    q => format!("{path}?{q}"),
                };
                let mut req = http::Request::builder().method(method).uri(&uri);
                for (k, v) in signer
                    .sign(method, &path, &query, &[], UNSIGNED_PAYLOAD)
                    .headers
                {
                    req = req.header(k, v);
                }
                let req = if op == "PUT" {
                    req.header("content-length", size).body(body(&shared, size))
                } else {
                    req.body(Empty::new().boxed())
                };
                let req = match req {
                    Ok(req) => req,
                    Err(e) => {
                        eprintln!("{op} {path}: the request could not be built: {e}");
                        phase.errors += 1;
                        continue;
                    }
                };
                let ok = match conn.send(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        if op == "PUT"
                            && let Some(v) = resp.headers().get("x-amz-version-id")
                            && let (Ok(v), Ok(mut all)) = (v.to_str(), versions.lock())
                            && let Some(slot) = all.get_mut(i)
                        {
                            *slot = Some(v.to_string());
                        }
                        let mut body = resp.into_body();
                        let mut got = 0u64;
                        let mut error_body = Vec::new();
                        while let Some(frame) = body.frame().await {
                            match frame {
                                Ok(f) => {
                                    let data = f.data_ref().map_or(&[][..], |d| &d[..]);
                                    got += data.len() as u64;
                                    if !status.is_success() {
                                        let room = 512usize.saturating_sub(error_body.len());
                                        error_body.extend_from_slice(&data[..room.min(data.len())]);
                                    }
                                }
                                Err(e) => {
                                    eprintln!("{op} {path}: the body broke off: {e}");
                                    break;
                                }
                            }
                        }
                        let want = if op == "GET" { size } else { got };
                        if !status.is_success() {
                            eprintln!(
                                "{op} {path}: {status} {}",
                                String::from_utf8_lossy(&error_body)
                            );
                        } else if got != want {
                            eprintln!("{op} {path}: {status} with {got} of {want} bytes");
                        }
                        status.is_success() && got == want
                    }
                    Err(e) => {
                        eprintln!("{op} {path}: {e}");
                        false
                    }
                };
                if ok {
                    phase.latencies.push(t.elapsed());
                    phase.bytes += if op == "DELETE" || op == "LIST" {
                        0
                    } else {
                        size
                    };
                } else {
                    phase.errors += 1;
                }
            }
            phase
        }));
    }
    let mut total = Phase::default();
    for w in workers {
        let p = w.await?;
        total.latencies.extend(p.latencies);
        total.bytes += p.bytes;
        total.errors += p.errors;
    }
    Ok((total, start.elapsed()))
}

/// User and system CPU seconds of all of `pids`.
fn cpu_of(pids: &[u32]) -> Option<(f64, f64)> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().try_fold((0.0, 0.0), |(u, s), pid| {
        cpu_times(Some(*pid)).map(|(du, ds)| (u + du, s + ds))
    })
}

/// CPU seconds of a database server: the postmaster's own, its reaped
/// children's (`cutime`, `cstime`), and its live children's (the
/// sessions, found by their parent pid).
fn db_cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let pid = pid?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    let ticks: Vec<f64> = after_name
        .split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|f| f.parse().ok())
        .collect();
    let mut total: f64 = ticks.iter().sum::<f64>() / 100.0;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let Some(after_name) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            total += cpu_seconds(Some(child)).unwrap_or(0.0);
        }
    }
    Some(total)
}

fn peak_rss_reset(pid: Option<u32>) {
    if let Some(pid) = pid {
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    }
}

fn peak_rss_mib(pid: Option<u32>) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// User + system CPU seconds the process has used.
fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    cpu_times(pid).map(|(user, sys)| user + sys)
}

/// User and system CPU seconds the process has used (`/proc/PID/stat`
/// fields 14 and 15, in clock ticks of 1/100 s, Linux's USER_HZ).
fn cpu_times(pid: Option<u32>) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    // The command name (field 2) may hold spaces; count from after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime / 100.0, stime / 100.0))
}

/// Writes dirty pages back, then drops the clean page cache.
fn drop_page_cache() -> Result<()> {
    let synced = std::process::Command::new("sync")
        .status()
        .context("running sync")?;
    if !synced.success() {
        bail!("sync failed");
    }
    std::fs::write("/proc/sys/vm/drop_caches", "3")
        .context("dropping the page cache (--drop-caches needs root)")
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn human(size: u64) -> String {
    match size {
        s if s >= 1 << 30 && s % (1 << 30) == 0 => format!("{} GiB", s >> 30),
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

async fn run_mix(args: &Args, signer: Signer, addr: String, requests: usize) -> Result<()> {
    let pid = args.pid.first().copied();
    let cpu_before = cpu_seconds(pid);
    let config = mix::MixConfig {
        addr,
        bucket: args.bucket.clone(),
        requests,
        connections: args.concurrency,
        seed: args.seed,
    };
    let report = mix::run(signer, config).await?;
    let secs = report.elapsed.as_secs_f64();
    let cpu_ms_per_op = cpu_before
        .zip(cpu_seconds(pid))
        .map(|(before, after)| (after - before) * 1000.0 / requests as f64);
    println!(
        "| requests | connections (keep-alive) | valid | invalid | valid failed | wrong errors | connections opened | req/s | gateway peak RSS MiB | gateway CPU ms/op |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {requests} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {} |",
        args.concurrency,
        report.valid,
        report.invalid,
        report.valid_failures,
        report.wrong_errors,
        report.connections,
        requests as f64 / secs,
        peak_rss_mib(pid).map_or("-".into(), |m| format!("{m:.0}")),
        cpu_ms_per_op.map_or("-".into(), |c| format!("{c:.2}")),
    );
    let kinds: Vec<String> = report
        .kinds
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    println!("\nsent: {}", kinds.join(", "));
    for sample in &report.samples {
        println!("failure: {sample}");
    }
    if report.valid_failures > 0 || report.wrong_errors > 0 {
        bail!(
            "{} valid requests failed, {} invalid ones got the wrong answer",
            report.valid_failures,
            report.wrong_errors
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.sizes.len() != args.counts.len() {
        bail!("give one count per size");
    }
    let creds = std::fs::read_to_string(&args.credentials)
        .with_context(|| format!("reading {}", args.credentials.display()))?;
    let field = |name: &str| {
        creds
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
            .with_context(|| format!("{name} missing in credentials"))
    };
    let host_of = |endpoint: &str| {
        endpoint
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string()
    };
    let host = host_of(&args.endpoint);
    let signer = Arc::new(Signer {
        access: field("access_key")?,
        secret: field("secret_key")?,
        host: host.clone(),
    });
    let mut targets: Vec<Target> = vec![(host.clone(), signer.clone())];
    for endpoint in &args.more_endpoints {
        let host = host_of(endpoint);
        let signer = Arc::new(Signer {
            host: host.clone(),
            ..(*signer).clone()
        });
        targets.push((host, signer));
    }
    if let Some(requests) = args.mix {
        return run_mix(&args, (*signer).clone(), host, requests).await;
    }
    let tls = match (&args.ca, args.endpoint.starts_with("https://")) {
        (Some(ca), true) => Some(tls_connector(ca)?),
        (None, true) => bail!("an https:// endpoint needs --ca"),
        (_, false) => None,
    };
    let mut random = vec![0u8; 1 << 20];
    rand::rng().fill_bytes(&mut random);
    let shared = Bytes::from(random);

    // Create the bucket (an existing one is fine).
    let mut conn = Conn {
        addr: host,
        tls: tls.clone(),
        sender: None,
    };
    let path = format!("/{}", args.bucket);
    let mut req = http::Request::builder().method("PUT").uri(&path);
    for (k, v) in signer.sign("PUT", &path, "", &[], UNSIGNED_PAYLOAD).headers {
        req = req.header(k, v);
    }
    let resp = conn
        .send(req.body(Full::new(Bytes::new()).boxed())?)
        .await?;
    if !(resp.status().is_success() || resp.status() == http::StatusCode::CONFLICT) {
        bail!("creating the bucket: {}", resp.status());
    }
    if args.versioning {
        let config = Bytes::from_static(
            b"<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>",
        );
        put_subresource(&mut conn, &signer, &path, "versioning", config)
            .await
            .context("enabling versioning")?;
    }
    if let Some(file) = &args.policy {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading {}", file.display()))?
            .replace("BUCKET", &args.bucket);
        put_subresource(&mut conn, &signer, &path, "policy", Bytes::from(text))
            .await
            .context("setting the bucket policy")?;
    }

    println!(
        "| op | size | objects | concurrency | MB/s | ops/s | p50 ms | p90 ms | p99 ms | max ms | errors | gateway peak RSS MiB | gateway CPU ms/op | gateway user s/GiB | gateway sys s/GiB | database CPU ms/op |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (size, count) in args.sizes.iter().zip(&args.counts) {
        let size = parse_size(size)?;
        let versions: Versions = Arc::new(std::sync::Mutex::new(vec![None; *count]));
        let mut ops = vec![("PUT", "PUT")];
        if args.lists > 0 {
            ops.push(("LIST", "LIST"));
        }
        if !args.put_only {
            for pass in 0..args.gets {
                ops.push(("GET", if pass == 0 { "GET" } else { "GET again" }));
            }
        }
        if args.cleanup {
            ops.push(("DELETE", "DELETE"));
        }
        for (op, label) in ops {
            if args.drop_caches && label == "GET" {
                drop_page_cache()?;
            }
            if args.pause_before_gets > 0 && label == "GET" {
                tokio::time::sleep(Duration::from_secs(args.pause_before_gets)).await;
            }
            let pid = args.pid.first().copied();
            peak_rss_reset(pid);
            let cpu_before = cpu_of(&args.pid);
            let db_before = db_cpu_seconds(args.db_pid);
            let requests = if op == "LIST" { args.lists } else { *count };
            let (mut phase, elapsed) = run_phase(
                &args, &tls, &targets, op, size, requests, *count, &shared, &versions,
            )
            .await?;
            phase.latencies.sort();
            let secs = elapsed.as_secs_f64();
            let cpu_spent = cpu_before
                .zip(cpu_of(&args.pid))
                .map(|(before, after)| (after.0 - before.0, after.1 - before.1));
            let cpu_ms_per_op = cpu_spent.map(|(u, s)| (u + s) * 1000.0 / requests as f64);
            let db_ms_per_op = db_before
                .zip(db_cpu_seconds(args.db_pid))
                .map(|(before, after)| (after - before) * 1000.0 / requests as f64);
            let gib = phase.bytes as f64 / f64::from(1u32 << 30);
            let per_gib = |f: fn((f64, f64)) -> f64| {
                cpu_spent
                    .filter(|_| gib > 0.0)
                    .map_or("-".into(), |c| format!("{:.2}", f(c) / gib))
            };
            if op == "DELETE" {
                if phase.errors > 0 {
                    eprintln!("cleanup: {} of {count} DELETEs failed", phase.errors);
                }
                continue;
            }
            println!(
                "| {label} | {} | {requests} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} |",
                human(size),
                args.concurrency,
                phase.bytes as f64 / secs / 1e6,
                phase.latencies.len() as f64 / secs,
                percentile(&phase.latencies, 0.5),
                percentile(&phase.latencies, 0.9),
                percentile(&phase.latencies, 0.99),
                percentile(&phase.latencies, 1.0),
                phase.errors,
                peak_rss_mib(pid).map_or("-".into(), |m| format!("{m:.0}")),
                cpu_ms_per_op.map_or("-".into(), |c| format!("{c:.2}")),
                per_gib(|(user, _)| user),
                per_gib(|(_, sys)| sys),
                db_ms_per_op.map_or("-".into(), |c| format!("{c:.2}")),
            );
        }
    }
    Ok(())
}
