//! The HTTP server: S3 on every path, plus `/health`, `/ready` and
//! `/metrics`, with one tracing span per request and a graceful stop.
//!
//! One client must not be able to exhaust it: connections are capped below
//! the descriptor limit (more wait in the kernel's accept queue), and each
//! has a watchdog and its bodies a clock ([`conn`]).
//!
//! The probes answer only unsigned GET or HEAD requests with no query
//! string. A signed request to a bucket named `health` is still S3, so no
//! bucket name is taken away from users.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use s3s::auth::{S3Auth, SecretKey};
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{S3Result, s3_error};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::Instrument;

pub use budget::Limits;
use budget::{Admission, Budget};
use conn::{ConnState, Timeouts};
pub use tls::{Tls, TlsError, TlsFiles};
mod budget;
pub(crate) mod conn;
mod fast;
mod post_form;
mod spool;

pub(crate) use post_form::{PostForm, apply as post_form_apply};
mod tls;

use crate::service::ShardgateS3;
use shardgate_node::Gateway;
use shardgate_node::metrics::ServerLoad;

/// The one access key the gateway accepts.
#[derive(Clone)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

/// The secret keys requests are signed with: the configured one's, and
/// each user's ([`crate::access`] decides what each may do).
#[derive(Clone)]
struct Auth {
    access_key: String,
    secret_key: SecretKey,
    gateway: Arc<Gateway>,
}

#[async_trait::async_trait]
impl S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if access_key == self.access_key {
            return Ok(self.secret_key.clone());
        }
        match self.gateway.user(access_key) {
            Some(user) => Ok(SecretKey::from(user.secret_key)),
            None => Err(s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            )),
        }
    }
}

/// How long a stop waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Descriptors kept for everything but client connections: the metadata
/// store, fs backends and their files in flight, cloud backends'
/// connections. (A lingering close keeps its connection's place under the
/// cap, so it needs none of these.)
const RESERVED_DESCRIPTORS: u64 = 1024;

/// How the listener treats its clients (the `[server]` configuration).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub timeouts: Timeouts,
    /// Open client connections at most.
    pub max_connections: usize,
    /// Concurrent streams per HTTP/2 connection.
    pub http2_max_streams: u32,
    /// Requests and memory in flight.
    pub limits: Limits,
    /// HTTPS; plain HTTP when absent.
    pub tls: Option<Tls>,
    /// Where PUT bodies of unknown length wait for their length (files
    /// without names: nothing stays there).
    pub spool_dir: std::path::PathBuf,
}

/// What every request's handler shares.
struct Front {
    s3: S3Service,
    /// Signed GETs of whole objects, answered without s3s.
    fast: fast::FastGet,
    /// Whether requests come over TLS (`aws:SecureTransport`).
    secure: bool,
    gateway: Arc<Gateway>,
    timeouts: Timeouts,
    budget: Budget,
    spool: spool::Spool,
    connections: Arc<Semaphore>,
    max_connections: usize,
}

impl Front {
    fn load(&self) -> ServerLoad {
        let (requests_free, memory_free_bytes) = self.budget.available();
        ServerLoad {
            connections: (self.max_connections - self.connections.available_permits()) as u64,
            max_connections: self.max_connections as u64,
            requests_free: requests_free as u64,
            memory_free_bytes,
        }
    }
}

impl ServeOptions {
    /// The connection cap: `configured`, or the descriptor limit less
    /// [`RESERVED_DESCRIPTORS`], never more than that limit allows. The
    /// soft limit is raised to the hard one first. Returns the cap and a
    /// line that says how it was chosen, for the log.
    pub fn connection_cap(configured: Option<usize>) -> (usize, String) {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut limit = getrlimit(Resource::Nofile);
        if limit.current != limit.maximum {
            let raised = rustix::process::Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            };
            if setrlimit(Resource::Nofile, raised).is_ok() {
                limit = raised;
            }
        }
        let Some(soft) = limit.current else {
            let cap = configured.unwrap_or(100_000);
            return (
                cap,
                format!("at most {cap} connections (no descriptor limit)"),
            );
        };
        let room = usize::try_from(soft.saturating_sub(RESERVED_DESCRIPTORS).max(64))
            .unwrap_or(usize::MAX);
        match configured {
            Some(c) if c <= room => (
                c,
                format!("at most {c} connections (configured; descriptor limit {soft})"),
            ),
            Some(c) => (
                room,
                format!(
                    "at most {room} connections: server.max_connections = {c} does not fit the descriptor limit {soft} less {RESERVED_DESCRIPTORS} kept for files and backends"
                ),
            ),
            None => (
                room,
                format!(
                    "at most {room} connections (descriptor limit {soft} less {RESERVED_DESCRIPTORS} kept for files and backends)"
                ),
            ),
        }
    }
}

/// The length of the listener's accept queue (the kernel caps it at
/// `net.core.somaxconn`, 4096 by default). A short queue (128, what
/// `TcpListener::bind` gives) overflows when clients open connections
/// faster than one accept loop takes them, and every dropped SYN costs the
/// client a one-second retransmit.
const ACCEPT_QUEUE: u32 = 4096;

/// Binds the S3 listener, with a long accept queue.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_QUEUE)
}

/// Serves S3 on `listener` until `shutdown` resolves, then lets requests in
/// flight finish (up to 30 s).
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    credentials: Credentials,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let authorizer = Arc::new(crate::access::Authorizer::new(
        gateway.clone(),
        credentials.access_key.clone(),
    ));
    let mut builder = S3ServiceBuilder::new(ShardgateS3::new(gateway.clone(), authorizer.clone()));
    // s3s holds a browser POST's file in memory before the handler sees
    // it: the file is kept to what the memory budget charges for it.
    let mut config = s3s::config::S3Config::default();
    config.post_object_max_file_size = budget::MAX_FORM_FILE_BYTES;
    // s3s parses a form's fields again from the start as each chunk comes:
    // kept to what the gateway scans itself.
    config.form_max_fields_size = post_form::FORM_HEAD_BYTES;
    config.form_max_parts = post_form::MAX_PARTS;
    let config = Arc::new(config);
    builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(
        config.clone(),
    )));
    let auth = Auth {
        access_key: credentials.access_key.clone(),
        secret_key: SecretKey::from(credentials.secret_key.clone()),
        gateway: gateway.clone(),
    };
    let fast = fast::FastGet::new(
        ShardgateS3::new(gateway.clone(), authorizer.clone()),
        crate::access::Access {
            authorizer: authorizer.clone(),
        },
        auth.clone(),
        config,
    );
    builder.set_access(crate::access::Access { authorizer });
    let spool = {
        let (root, gateway) = (credentials.access_key.clone(), gateway.clone());
        spool::Spool::new(
            options.spool_dir,
            options.limits.queue_timeout,
            move |key| key == root || gateway.user(key).is_some(),
        )
    };
    builder.set_auth(auth);
    let front = Arc::new(Front {
        fast,
        s3: builder.build(),
        secure: options.tls.is_some(),
        gateway,
        timeouts: options.timeouts,
        budget: Budget::new(options.limits),
        spool,
        connections: Arc::new(Semaphore::new(options.max_connections)),
        max_connections: options.max_connections,
    });
    // The metrics exported over OTLP read the same load /metrics shows.
    let weak = Arc::downgrade(&front);
    front
        .gateway
        .set_server_load(move || weak.upgrade().map(|f| f.load()).unwrap_or_default());
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http2()
        .max_concurrent_streams(options.http2_max_streams);
    let graceful = GracefulShutdown::new();
    let timeouts = options.timeouts;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A connection past the cap waits in the kernel's accept queue.
        let permit = tokio::select! {
            p = front.connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_closed) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors despite the cap (the reserve ran
                    // out) and the like: back off.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let state = ConnState::new(permit);
        let (front, handler_state) = (front.clone(), state.clone());
        let svc = service_fn(move |req| handle(front.clone(), handler_state.clone(), peer, req));
        let (http, watcher, tls) = (http.clone(), graceful.watcher(), options.tls.clone());
        tokio::spawn(async move {
            let serve = async {
                match tls {
                    // The handshake runs under the connection's header
                    // timeout, like the head it precedes.
                    Some(Tls(acceptor)) => {
                        let stream = acceptor
                            .accept(stream)
                            .await
                            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
                        let io = TokioIo::new(conn::Stream::new(stream, state.clone()));
                        watcher
                            .watch(http.serve_connection(io, svc).into_owned())
                            .await
                    }
                    None => {
                        let io = TokioIo::new(conn::Stream::new(stream, state.clone()));
                        watcher
                            .watch(http.serve_connection(io, svc).into_owned())
                            .await
                    }
                }
            };
            tokio::select! {
                ended = serve => if let Err(e) = ended {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                },
                expired = conn::watchdog(state.clone(), timeouts) => {
                    tracing::debug!(%peer, "connection closed: {expired}");
                }
            }
        });
    }
    drop(listener);
    tracing::info!("stopping: waiting for requests in flight");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("stopped with connections still open"),
    }
    Ok(())
}

type ResponseBody = Logged;

fn plain(status: StatusCode, text: String, request: RequestGuard) -> Response<ResponseBody> {
    let mut r = Response::new(Logged::bare(s3s::Body::from(text), request));
    *r.status_mut() = status;
    r
}

/// `text` with XML's special characters escaped.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// An S3 error answered by the server itself (no S3 operation ran).
fn xml_error(status: StatusCode, code: &str, message: &str) -> Response<s3s::Body> {
    // The message may carry what the request sent (a form policy's
    // values): escaped, so that no request can put markup in the answer.
    let (code, message) = (xml_escape(code), xml_escape(message));
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    let mut r = Response::new(s3s::Body::from(xml));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/xml"),
    );
    r
}

/// `503 SlowDown`, S3's answer when it is saturated.
/// S3 refuses a presigned URL whose `X-Amz-Expires` is not 1 to 604,800
/// seconds before it looks at anything else (the signature, the object).
fn presigned_expiry_problem(uri: &http::Uri) -> Option<&'static str> {
    let query = uri.query()?;
    // Only a parameter whose name could be it is decoded (this runs for
    // every request with a query): a presigned URL's other values hold
    // escapes, its names none.
    let could_name_it = |piece: &&str| {
        let name = piece.split_once('=').map_or(*piece, |(name, _)| name);
        name.starts_with("X-Amz-Expires") || name.contains(['%', '+'])
    };
    let (_, value) = query
        .split('&')
        .filter(could_name_it)
        .flat_map(|piece| form_urlencoded::parse(piece.as_bytes()).next())
        .find(|(k, _)| k == "X-Amz-Expires")?;
    match value.parse::<i64>() {
        Err(_) => Some("X-Amz-Expires should be a number"),
        Ok(n) if n < 0 => Some("X-Amz-Expires must be non-negative"),
        Ok(0) => Some("X-Amz-Expires must be at least 1 second"),
        Ok(n) if n > 604_800 => {
            Some("X-Amz-Expires must be less than a week (in seconds) that is 604800")
        }
        Ok(_) => None,
    }
}

fn slow_down(request: RequestGuard) -> Response<ResponseBody> {
    let mut r = xml_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "SlowDown",
        "Please reduce your request rate: the gateway is at its limit of requests or memory in flight.",
    )
    .map(|body| Logged::bare(body, request));
    r.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    r
}

/// A request in flight on its connection, until its answer is sent or
/// dropped (the connection's watchdog does not run meanwhile), with its
/// admission (its place and memory share) once it has one.
struct RequestGuard {
    conn: ConnState,
    admission: Option<Admission>,
}

impl RequestGuard {
    fn new(conn: &ConnState) -> Self {
        conn.request_started();
        Self {
            conn: conn.clone(),
            admission: None,
        }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.admission = None;
        self.conn.request_ended();
    }
}

/// Every request: its answer, then the connection rule ([`conn::finish`]).
async fn handle(
    front: Arc<Front>,
    conn: ConnState,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let request = RequestGuard::new(&conn);
    let version = req.version();
    let (parts, body) = req.into_parts();
    let expects_continue = parts
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    // An empty body awaited with `Expect: 100-continue` gets its answer
    // without a 100 (there is nothing to continue). botocore (1.43) then
    // keeps the parser that answer primed and misreads the next answer on
    // the connection until its read timeout (60 s by default): every
    // request after a boto3 empty PUT stalled. Such an answer closes the
    // connection, and the client's next request opens another.
    let empty_expecting = expects_continue
        && parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() == b"0");
    let (body, body_state) = conn::Tracked::new(body, front.timeouts, expects_continue);
    let req = Request::from_parts(parts, s3s::Body::http_body(body));
    let mut response = answer(&front, peer, req, request).await;
    conn::finish(&mut response, version, &body_state, &conn);
    if empty_expecting && version == http::Version::HTTP_11 {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    Ok(response)
}

async fn answer(
    front: &Front,
    peer: SocketAddr,
    req: Request<s3s::Body>,
    mut request: RequestGuard,
) -> Response<ResponseBody> {
    let gateway = &front.gateway;
    let probe = matches!(*req.method(), Method::GET | Method::HEAD)
        && req.uri().query().is_none()
        && !req.headers().contains_key(http::header::AUTHORIZATION);
    if probe && req.uri().path() == "/health" {
        return plain(StatusCode::OK, "ok\n".into(), request);
    }
    if probe && req.uri().path() == "/metrics" {
        let mut r = plain(
            StatusCode::OK,
            shardgate_node::metrics::render(gateway, front.load()),
            request,
        );
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(shardgate_node::metrics::CONTENT_TYPE),
        );
        return r;
    }
    if probe && req.uri().path() == "/ready" {
        let (ready, text) = gateway.ready();
        let status = match ready {
            true => StatusCode::OK,
            false => StatusCode::SERVICE_UNAVAILABLE,
        };
        return plain(status, text, request);
    }

    // Refused before anything is admitted or read; but a GET the fast path
    // answers has a valid expiry, so a GET's check (a walk over its query)
    // waits until the fast path declines it.
    let expiry_problem = |req: &Request<s3s::Body>| {
        presigned_expiry_problem(req.uri()).map(|problem| {
            xml_error(
                StatusCode::BAD_REQUEST,
                "AuthorizationQueryParametersError",
                problem,
            )
        })
    };
    if req.method() != Method::GET
        && let Some(refusal) = expiry_problem(&req)
    {
        gateway.metrics().request(req.method().as_str(), 400);
        return refusal.map(|body| Logged::bare(body, request));
    }
    match front.budget.admit(budget::cost(&req)).await {
        Some(admission) => request.admission = Some(admission),
        None => {
            tracing::warn!(%peer, method = %req.method(), path = %req.uri().path(), "saturated: SlowDown");
            gateway.metrics().request(req.method().as_str(), 503);
            return slow_down(request);
        }
    }
    let req = match front.spool.wanted(&req) {
        false => req,
        true => match front.spool.spool(req).await {
            Ok(req) => req,
            Err(e) => {
                let (status, code, message) = match &e {
                    spool::SpoolError::Body(cause) => {
                        let refusal = post_form::body_refusal(cause.as_ref());
                        (refusal.status, refusal.code, refusal.message)
                    }
                    spool::SpoolError::TooLarge(_) => {
                        (StatusCode::BAD_REQUEST, "EntityTooLarge", e.to_string())
                    }
                    spool::SpoolError::Busy => {
                        (StatusCode::SERVICE_UNAVAILABLE, "SlowDown", e.to_string())
                    }
                    spool::SpoolError::NoRoom => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "ServiceUnavailable",
                        e.to_string(),
                    ),
                    spool::SpoolError::Io(_) => {
                        tracing::error!(error = %e, "spooling a body of unknown length");
                        (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "InternalError",
                            e.to_string(),
                        )
                    }
                };
                tracing::warn!(%peer, error = %e, "a body of unknown length was not taken");
                gateway.metrics().request("PUT", status.as_u16());
                return xml_error(status, code, &message).map(|body| Logged::bare(body, request));
            }
        },
    };
    let req = match post_form::boundary(&req) {
        None => req,
        Some(boundary) => match post_form::prepare(req, &boundary).await {
            Ok(req) => req,
            Err(refusal) => {
                gateway.metrics().request("POST", refusal.status.as_u16());
                return xml_error(refusal.status, refusal.code, &refusal.message)
                    .map(|body| Logged::bare(body, request));
            }
        },
    };
    let path = urlencoding::decode(req.uri().path())
        .map(|p| p.into_owned())
        .unwrap_or_else(|_| req.uri().path().to_string());
    let (bucket, key) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path.trim_start_matches('/'), ""));
    let bytes_in = req
        .headers()
        .get("x-amz-decoded-content-length")
        .or_else(|| req.headers().get(http::header::CONTENT_LENGTH))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        bucket = %bucket,
        key = %key,
        %peer,
        bytes_in,
        status = tracing::field::Empty,
        bytes_out = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
    );
    // A `traceparent` from the client (W3C trace context) makes this
    // request a child of the client's span in OpenTelemetry traces.
    if req.headers().contains_key("traceparent") {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&HeaderExtractor(req.headers()))
        });
        if let Err(e) = span.set_parent(parent) {
            tracing::debug!(error = %e, "traceparent not applied");
        }
    }
    let start = Instant::now();
    let method = req.method().clone();
    let origin = req.headers().get(http::header::ORIGIN).cloned();
    let mut response = if method == Method::OPTIONS {
        preflight(gateway, bucket, req.headers())
            .instrument(span.clone())
            .await
    } else {
        let mut req = req;
        let client = crate::access::Client {
            addr: peer,
            secure: front.secure,
        };
        let fast = front
            .fast
            .answer(&req, client)
            .instrument(span.clone())
            .await;
        let answered = match fast {
            Some(response) => {
                gateway.metrics().fast_gets.inc();
                Ok(response)
            }
            None => match (method == Method::GET)
                .then(|| expiry_problem(&req))
                .flatten()
            {
                Some(refusal) => Ok(refusal),
                None => {
                    req.extensions_mut().insert(client);
                    front.s3.call(req).instrument(span.clone()).await
                }
            },
        };
        match answered {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(parent: &span, error = ?e, "request failed");
                let mut r = Response::new(s3s::Body::from("internal error\n".to_string()));
                *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                r
            }
        }
    };
    if let Some(origin) = origin.as_ref().and_then(|o| o.to_str().ok())
        && method != Method::OPTIONS
        && !bucket.is_empty()
    {
        allow_origin(
            gateway,
            bucket,
            origin,
            method.as_str(),
            response.headers_mut(),
        )
        .await;
    }
    span.record("status", response.status().as_u16());
    gateway
        .metrics()
        .request(method.as_str(), response.status().as_u16());
    let response = with_message(response);
    response.map(|body| Logged::new(body, span, start, request))
}

/// Request headers as OpenTelemetry's propagators read them.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The bucket's CORS rules (none when it has none, or is not there).
async fn cors_rules(gateway: &Gateway, bucket: &str) -> Vec<shardgate_meta::CorsRule> {
    match gateway.metadata().bucket(bucket).await {
        Ok(Some(record)) => record.cors().unwrap_or_else(|e| {
            tracing::warn!(bucket = %bucket, error = %e, "unreadable CORS rules: none applied");
            Vec::new()
        }),
        _ => Vec::new(),
    }
}

/// A CORS preflight (`OPTIONS`, unsigned): 200 with the headers that allow
/// the request it announces, if a rule of the bucket does.
async fn preflight(
    gateway: &Gateway,
    bucket: &str,
    headers: &http::HeaderMap,
) -> Response<s3s::Body> {
    let text = |name: http::header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(origin), Some(method)) = (
        text(http::header::ORIGIN),
        text(http::header::ACCESS_CONTROL_REQUEST_METHOD),
    ) else {
        return xml_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Insufficient information. Origin request header and Access-Control-Request-Method are needed.",
        );
    };
    if bucket.is_empty() {
        return xml_error(
            StatusCode::FORBIDDEN,
            "AccessForbidden",
            "CORSResponse: CORS applies to buckets and their objects only.",
        );
    }
    let rules = cors_rules(gateway, bucket).await;
    if rules.is_empty() {
        return xml_error(
            StatusCode::FORBIDDEN,
            "AccessForbidden",
            "CORSResponse: CORS is not enabled for this bucket.",
        );
    }
    let asked =
        crate::cors::requested_headers(headers.get(http::header::ACCESS_CONTROL_REQUEST_HEADERS));
    let Some(rule) = crate::cors::find(&rules, origin, method, &asked) else {
        return xml_error(
            StatusCode::FORBIDDEN,
            "AccessForbidden",
            "CORSResponse: This CORS request is not allowed. This is usually because the evaluation of Origin, request method / Access-Control-Request-Method or Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.",
        );
    };
    let mut r = Response::new(s3s::Body::empty());
    crate::cors::allow(rule, origin, Some(&asked), r.headers_mut());
    r
}

/// Adds the `Access-Control-*` headers of the bucket's first rule that
/// lets `origin` use `method` to an answer.
async fn allow_origin(
    gateway: &Gateway,
    bucket: &str,
    origin: &str,
    method: &str,
    out: &mut http::HeaderMap,
) {
    let rules = cors_rules(gateway, bucket).await;
    if let Some(rule) = crate::cors::find(&rules, origin, method, &[]) {
        crate::cors::allow(rule, origin, None, out);
    }
}

/// Errors that s3s raises by itself (path parsing, signatures) come
/// without a `<Message>`; S3 always sends one, and users need it.
fn with_message(mut response: Response<s3s::Body>) -> Response<s3s::Body> {
    if response.status().as_u16() < 400 {
        return response;
    }
    let Some(xml) = response.body().bytes() else {
        return response;
    };
    let text = String::from_utf8_lossy(&xml);
    if text.contains("<Message>") {
        return response;
    }
    let Some(code) = text
        .split("<Code>")
        .nth(1)
        .and_then(|rest| rest.split("</Code>").next())
    else {
        return response;
    };
    let message = match code {
        "InvalidBucketName" => {
            "The specified bucket is not valid: bucket names have 3 to 63 characters, lowercase letters, digits, dots and hyphens, and start and end with a letter or digit"
        }
        "InvalidURI" => "Couldn't parse the specified URI",
        "SignatureDoesNotMatch" => {
            "The request signature we calculated does not match the signature you provided. Check your key and signing method"
        }
        "AccessDenied" => {
            "Access Denied (an unsigned request, or an expired or invalid presigned URL)"
        }
        "MalformedXML" => {
            "The XML you provided was not well-formed or did not validate against our published schema"
        }
        "MissingContentLength" => "You must provide the Content-Length HTTP header",
        "NotImplemented" => {
            "A header or operation you provided implies functionality that is not implemented"
        }
        "MethodNotAllowed" => "The specified method is not allowed against this resource",
        "RequestTimeTooSkewed" => {
            "The difference between the request time and the server's time is too large"
        }
        "InvalidArgument" => "Invalid argument",
        "InvalidRequest" => "Invalid request",
        _ => "The request failed",
    };
    let filled = text.replacen(
        &format!("<Code>{code}</Code>"),
        &format!("<Code>{code}</Code><Message>{message}</Message>"),
        1,
    );
    if let Ok(len) = http::HeaderValue::from_str(&filled.len().to_string()) {
        response
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, len);
    }
    *response.body_mut() = s3s::Body::from(filled);
    response
}

/// A response body that counts what it sends and closes the request's
/// span when it is done (or dropped by a client that went away).
pub struct Logged {
    inner: Pin<Box<s3s::Body>>,
    span: Option<(tracing::Span, Instant)>,
    sent: u64,
    /// A frame was handed to hyper and not yet followed by a poll: the
    /// client must read for the answer to go on (the send timeout).
    frame_out: bool,
    request: RequestGuard,
}

impl Logged {
    fn new(inner: s3s::Body, span: tracing::Span, start: Instant, request: RequestGuard) -> Self {
        Self {
            inner: Box::pin(inner),
            span: Some((span, start)),
            sent: 0,
            frame_out: false,
            request,
        }
    }

    fn bare(inner: s3s::Body, request: RequestGuard) -> Self {
        Self {
            inner: Box::pin(inner),
            span: None,
            sent: 0,
            frame_out: false,
            request,
        }
    }
}

impl HttpBody for Logged {
    type Data = Bytes;
    type Error = <s3s::Body as HttpBody>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if std::mem::take(&mut self.frame_out) {
            self.request.conn.frame_handed(false);
        }
        let polled = self.inner.as_mut().poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.sent += data.len() as u64;
            self.frame_out = true;
            self.request.conn.frame_handed(true);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if std::mem::take(&mut self.frame_out) {
            self.request.conn.frame_handed(false);
        }
        if let Some((span, start)) = self.span.take() {
            span.record("bytes_out", self.sent);
            span.record("duration_ms", start.elapsed().as_millis() as u64);
            tracing::info!(parent: &span, "request");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::presigned_expiry_problem;

    fn problem(query: &str) -> Option<&'static str> {
        let uri: http::Uri = format!("/b/k?{query}")
            .parse()
            .unwrap_or_else(|_| unreachable!());
        presigned_expiry_problem(&uri)
    }

    #[test]
    fn presigned_expiries_out_of_range_are_found_however_named() {
        let signed = "X-Amz-Credential=AK%2F20261207%2Fus-east-1%2Fs3%2Faws4_request";
        assert_eq!(problem(&format!("{signed}&X-Amz-Expires=604800")), None);
        assert_eq!(problem(signed), None);
        for query in [
            "X-Amz-Expires=604801",
            "X-Amz-Expires=0",
            "X-Amz-Expires=-1",
            "X-Amz-Expires=soon",
            "X-Amz-%45xpires=0",
            "X-Amz+Expires=0&X-Amz-Expires=0",
        ] {
            assert!(problem(&format!("{signed}&{query}")).is_some(), "{query}");
        }
        // A value that only looks like the name is not it.
        assert_eq!(problem("x=X-Amz-Expires%3D0"), None);
    }
}
