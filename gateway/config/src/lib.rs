//! shardgate's configuration: one TOML file plus `SHARDGATE_*` environment
//! variables (figment), checked before anything starts.
//!
//! Environment variables override the file. Nested keys use `__`:
//! `SHARDGATE_LISTEN=127.0.0.1:9100`,
//! `SHARDGATE_POLICIES__DEFAULT__K=6`. Every error names the key and where
//! its value came from (the file, or the variable), so a user can fix it
//! from the one-line message alone. Unknown keys are errors: a typo must not
//! silently fall back to a default. `SHARDGATE_CONFIG`, `SHARDGATE_TEST_*`
//! and `SHARDGATE_BENCH_*` are not configuration keys and are skipped.
//!
//! Secrets are accepted inline, or as a `*_file` path; a secret file that
//! its group or others can read is refused (as Garage does).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;
use shardgate_core::{BackendId, ErasureCode};

/// The gateway's listen address when none is configured.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9000";
/// The data directory when none is configured (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "shardgate-data";
/// The prefix of the environment variables read.
pub const ENV_PREFIX: &str = "SHARDGATE_";
/// `SHARDGATE_CONFIG` names the file (read by the binary), and
/// `SHARDGATE_TEST_*` / `SHARDGATE_BENCH_*` belong to tests and benchmarks:
/// none of them are configuration keys.
fn is_config_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key != "config" && !key.starts_with("test_") && !key.starts_with("bench_")
}

/// A configuration problem, worded for the person who wrote the config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or a variable could not be read or parsed; the message
    /// names the key and its source (the file, or the exact variable).
    #[error("{}", describe(.0))]
    Load(Box<figment::Error>),
    /// The values parsed but do not make a working gateway.
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
    /// A secret file could not be used.
    #[error("{key}: {path}: {reason}")]
    SecretFile {
        key: String,
        path: PathBuf,
        reason: String,
    },
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        Self::Load(Box::new(e))
    }
}

/// figment names a variable's key as in `key "LISTEN" in SHARDGATE_
/// environment variable(s)`; say `SHARDGATE_LISTEN` instead.
fn describe(e: &figment::Error) -> String {
    let from_env = e
        .metadata
        .as_ref()
        .is_some_and(|m| m.name.contains("environment"));
    if !from_env || e.path.is_empty() {
        return e.to_string();
    }
    let key = e.path.join(".").to_lowercase();
    let var = format!("{ENV_PREFIX}{}", e.path.join("__").to_uppercase());
    format!("{key}: {} (from environment variable {var})", e.kind)
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the S3 endpoint listens.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where the gateway keeps its metadata, keys and (by default) the fs backends.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The S3 access key; generated on first start when absent.
    #[serde(default)]
    pub credentials: Option<Credentials>,
    /// Encryption keys.
    #[serde(default)]
    pub keys: Keys,
    /// Where fragments live.
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    /// Placement policies by name.
    #[serde(default)]
    pub policies: BTreeMap<String, PolicyConfig>,
    /// A folder of policy files, one per policy: `NAME.toml` holds the
    /// keys of a `[policies.NAME]` table, and a relative `plugin` path in
    /// it is relative to the file (see `policies/` in the repository). The
    /// folder itself, like every path here, is relative to the working
    /// directory.
    #[serde(default)]
    pub policy_dir: Option<PathBuf>,
    /// Bucket name -> policy name, for buckets that do not use the default.
    #[serde(default)]
    pub buckets: BTreeMap<String, String>,
    /// The policy of every other bucket.
    #[serde(default)]
    pub default_policy: Option<String>,
    /// Multipart uploads not completed after this many seconds are aborted
    /// and their parts deleted (default: one day).
    #[serde(default = "default_upload_expiry_secs")]
    pub upload_expiry_secs: u64,
    /// The S3 listener's timeouts, limits and TLS.
    #[serde(default)]
    pub server: ServerConfig,
    /// The background check of every fragment.
    #[serde(default)]
    pub scrub: ScrubConfig,
    /// The rebuilding of damaged fragments.
    #[serde(default)]
    pub repair: RepairConfig,
    /// The admin API.
    #[serde(default)]
    pub admin: AdminConfig,
    /// The gateway's libp2p node, for `peer` backends.
    #[serde(default)]
    pub peers: PeersConfig,
    /// OpenTelemetry export (`/metrics` serves Prometheus either way).
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// The manifest journal on the backends (`shardgate recover`).
    #[serde(default)]
    pub journal: JournalConfig,
    /// How fs backends (and the embedded default's sites) do their I/O.
    #[serde(default)]
    pub fs: FsConfig,
    /// Where the metadata lives: redb in the data dir (the default), or a
    /// database that speaks PostgreSQL's protocol.
    #[serde(default)]
    pub metadata: MetadataConfig,
}

/// The metadata engine (`[metadata]`).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MetadataConfig {
    pub kind: MetadataKind,
    /// `postgres`: `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`
    /// (also `SHARDGATE_METADATA__URL`); never logged.
    pub url: Option<String>,
    /// `postgres`: the URL in a file readable only by its owner.
    pub url_file: Option<PathBuf>,
    /// `postgres`: connections at most.
    pub pool_size: usize,
    /// `postgres`: the longest one statement may run (ms).
    pub statement_timeout_ms: u64,
    /// `postgres`: the longest to wait for a connection (ms).
    pub connect_timeout_ms: u64,
}

/// Which engine holds the metadata.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MetadataKind {
    /// An embedded redb file in the data dir: no server to run.
    #[default]
    Redb,
    /// PostgreSQL (or a database that speaks its protocol).
    Postgres,
}

impl Default for MetadataConfig {
    fn default() -> Self {
        Self {
            kind: MetadataKind::Redb,
            url: None,
            url_file: None,
            pool_size: 16,
            statement_timeout_ms: 5_000,
            connect_timeout_ms: 5_000,
        }
    }
}

impl fmt::Debug for MetadataConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetadataConfig")
            .field("kind", &self.kind)
            .field("url", &redacted(&self.url))
            .field("url_file", &self.url_file)
            .field("pool_size", &self.pool_size)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .finish()
    }
}

impl MetadataConfig {
    /// The database URL of a `postgres` engine (from the file when given
    /// there).
    pub fn url(&self) -> Result<String, ConfigError> {
        inline_or_file(&self.url, &self.url_file, "metadata.url_file")?
            .ok_or_else(|| invalid("metadata.url", "kind = \"postgres\" needs url or url_file"))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        match self.kind {
            MetadataKind::Redb => {
                for (key, set) in [
                    ("metadata.url", self.url.is_some()),
                    ("metadata.url_file", self.url_file.is_some()),
                ] {
                    if set {
                        return Err(invalid(key, "applies to kind = \"postgres\" only"));
                    }
                }
            }
            MetadataKind::Postgres => {
                if self.url.is_none() && self.url_file.is_none() {
                    return Err(invalid(
                        "metadata.url",
                        "kind = \"postgres\" needs url or url_file",
                    ));
                }
                if self.url.is_some() && self.url_file.is_some() {
                    return Err(invalid("metadata.url", "set url or url_file, not both"));
                }
            }
        }
        if self.pool_size == 0 {
            return Err(invalid("metadata.pool_size", "must be at least 1"));
        }
        for (key, ms) in [
            ("metadata.statement_timeout_ms", self.statement_timeout_ms),
            ("metadata.connect_timeout_ms", self.connect_timeout_ms),
        ] {
            if ms == 0 || ms > MAX_TIMEOUT_SECS * 1000 {
                return Err(invalid(key, "must be between 1 and 86400000 (a day)"));
            }
        }
        Ok(())
    }
}

/// fs backends' I/O (`[fs]`). The defaults are measured (BENCHMARKS.md,
/// "Large objects without the page-cache copy"); this is for filesystems
/// where the measurement comes out otherwise.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct FsConfig {
    /// Write fragments with `O_DIRECT` where the filesystem accepts it
    /// (probed when each backend opens; buffered where it refuses).
    pub direct_writes: bool,
    /// Fragments of at least this many bytes are read with `O_DIRECT` the
    /// first time a range of them is read; a range read again soon after
    /// goes through the page cache, which then keeps it for the reads
    /// after. 0 (the default): every read goes through the page cache.
    /// 1048576 suits objects mostly read once (BENCHMARKS.md, issue 24).
    pub direct_read_min_bytes: u64,
    /// Several gateways on this machine, over one metadata database, use
    /// the fs backends' directories at once (each takes them shared, and
    /// writes its temp files apart).
    pub shared: bool,
}

impl Default for FsConfig {
    fn default() -> Self {
        Self {
            direct_writes: true,
            direct_read_min_bytes: 0,
            shared: false,
        }
    }
}

/// The manifest journal (`[journal]`): every metadata change also goes to
/// the backends, sealed and erasure-coded like an object, so that
/// `shardgate recover` rebuilds the metadata store from them alone.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// On by default: without it, losing the data dir loses every object.
    pub enabled: bool,
    /// Changes wait at most this long before they are shipped: what a
    /// lost data dir can cost (a graceful stop ships everything).
    pub interval_ms: u64,
    /// The most bytes of changes in one shipped batch.
    pub batch_bytes: usize,
    /// A checkpoint (every live row) is written once the batches since
    /// the last one outgrow it, and hold at least this many bytes.
    pub min_checkpoint_bytes: u64,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_ms: 1000,
            batch_bytes: 4 << 20,
            min_checkpoint_bytes: 64 << 20,
        }
    }
}

/// OpenTelemetry (`[telemetry]`): traces and metrics exported over OTLP
/// when an endpoint is set, a span per request with its placement, each fragment
/// written or read, and its commit; an incoming `traceparent` is the
/// request span's parent.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// An OTLP/HTTP collector's base URL (`http://collector:4318`): traces
    /// go to `/v1/traces`. None: no export.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the traces and metrics (default `shardgate`).
    pub service_name: Option<String>,
    /// Metrics (the figures `/metrics` serves) go to `/v1/metrics` this
    /// often (default 60 s, OpenTelemetry's).
    pub metrics_interval_secs: Option<u64>,
}

/// The gateway's libp2p node (`[peers]`), started when a `peer` backend is
/// configured. Peers are reached at their configured `addresses`, over a
/// connection they opened to the gateway (a peer that can only dial out
/// needs `listen` here), or through the DHT by their PeerId.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PeersConfig {
    /// Where the node listens: multiaddrs, or `HOST:PORT` for TCP and QUIC
    /// on that port. None: the gateway only dials out.
    pub listen: Vec<String>,
    /// The node's ed25519 identity, created (mode 0600) on first start;
    /// default `<data_dir>/keys/peer.key`. `shardgate peer-id FILE` prints
    /// its PeerId, which each peer's allowlist names.
    pub key_file: Option<PathBuf>,
    /// More DHT nodes to dial at start (multiaddrs ending in `/p2p/ID`).
    pub bootstrap: Vec<String>,
    /// PeerIds allowed to connect besides the configured peers (DHT nodes
    /// that store nothing for this gateway).
    pub allow: Vec<String>,
}

impl Config {
    /// The gateway node's identity file.
    pub fn peer_key_file(&self) -> PathBuf {
        self.peers
            .key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys").join("peer.key"))
    }
}

/// The admin API (`[admin]`): status, backends, jobs, object maps, for
/// `shardgate admin`. On loopback by default: it is plain HTTP with a
/// bearer token, so it belongs on a trusted network only.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Off: no admin listener.
    pub enabled: bool,
    /// Where it listens (port 0 picks a free one).
    pub listen: SocketAddr,
    /// The bearer token's file, created (mode 0600) on first start;
    /// default `<data_dir>/admin.token`.
    pub token_file: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9001)),
            token_file: None,
        }
    }
}

impl Config {
    /// The admin token's file.
    pub fn admin_token_file(&self) -> PathBuf {
        self.admin
            .token_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("admin.token"))
    }
}

/// Repair (`[repair]`): how fast damaged fragments are rebuilt.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RepairConfig {
    /// Bytes read from backends per second at most, over all repairs.
    pub rate_bytes_per_sec: u64,
    /// A backend down this long is taken as gone: its fragments are
    /// rebuilt elsewhere. Long enough to ride out a reboot or a network
    /// blip (rebuilding costs k reads per fragment), short enough that a
    /// second failure is unlikely meanwhile; 30 minutes, like Ceph's
    /// `mon_osd_down_out_interval` (10 min) and Storj's offline grace
    /// are of that order.
    pub backend_grace_secs: u64,
}

impl Default for RepairConfig {
    fn default() -> Self {
        Self {
            rate_bytes_per_sec: 64 << 20,
            backend_grace_secs: 30 * 60,
        }
    }
}

/// Scrub (`[scrub]`): every fragment of every object read whole and
/// checked against the manifest's digests, one pass per interval, at a
/// bounded rate; damage goes to the repair queue.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ScrubConfig {
    /// A pass starts this long after the previous one started (0: never).
    pub interval_secs: u64,
    /// Bytes read per second at most, over all backends.
    pub rate_bytes_per_sec: u64,
    /// Cloud backends (untrusted, egress paid) are audited by sampling:
    /// each fragment's size and digest trailer, and this many of its
    /// shards chosen at random, checked against the manifest. 0: read
    /// them whole like local disks.
    pub audit_stripes: u32,
}

impl Default for ScrubConfig {
    fn default() -> Self {
        Self {
            interval_secs: 7 * 24 * 3600,
            rate_bytes_per_sec: 64 << 20,
            audit_stripes: 4,
        }
    }
}

/// The S3 listener (`[server]`): what one client may hold, and TLS.
///
/// The timeouts follow Apache's `mod_reqtimeout` defaults, which is what a
/// reverse proxy in front of S3 would use: a request head within 20 s, a
/// body that stalls 20 s or averages under 500 bytes/s (after its first
/// 20 s) ends with `RequestTimeout`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// A request head must arrive in full within this many seconds (of the
    /// connection's opening, or of its first byte on a kept-alive one).
    pub header_timeout_secs: u64,
    /// A kept-alive connection with no request for this long is closed.
    pub idle_timeout_secs: u64,
    /// A request body that sends no byte for this long ends the request
    /// with `RequestTimeout`.
    pub body_timeout_secs: u64,
    /// ... and so does one slower than this, in bytes per second on
    /// average, once `body_timeout_secs` have passed (0: no minimum).
    pub body_min_rate: u64,
    /// A connection whose client reads nothing of an answer for this long
    /// is closed (nginx's `send_timeout`): a client that stops reading a
    /// GET cannot hold its request's memory and place forever.
    pub send_timeout_secs: u64,
    /// Open client connections at most; more wait to be accepted. Default:
    /// the descriptor limit (`RLIMIT_NOFILE`, raised to its hard limit at
    /// startup) less 1024 for files and backends.
    pub max_connections: Option<usize>,
    /// S3 requests in flight at most; past it, `503 SlowDown` (which S3
    /// clients retry with backoff). `/health`, `/ready` and `/metrics` are
    /// not counted.
    pub max_requests: usize,
    /// The resident memory the gateway may reach, in bytes: requests in
    /// flight share it (less 128 MiB for the gateway itself), each by what
    /// it holds (an object read or write 8 MiB).
    pub memory_budget_bytes: u64,
    /// A request that finds no place or memory waits this long for one,
    /// then gets `503 SlowDown`.
    pub queue_timeout_secs: u64,
    /// Concurrent streams per HTTP/2 connection.
    pub http2_max_streams: u32,
    /// HTTPS on the S3 listener; plain HTTP when absent.
    pub tls: Option<TlsConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_timeout_secs: 20,
            idle_timeout_secs: 60,
            body_timeout_secs: 20,
            body_min_rate: 500,
            send_timeout_secs: 60,
            max_connections: None,
            max_requests: 1024,
            memory_budget_bytes: 1 << 30,
            queue_timeout_secs: 10,
            http2_max_streams: 128,
            tls: None,
        }
    }
}

/// The certificate chain and private key, PEM files, reloaded when they
/// change on disk.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

fn default_upload_expiry_secs() -> u64 {
    24 * 3600
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9000))
}

fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}

/// The S3 credentials. Their Debug output never shows the secret.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The access key id.
    pub access_key: String,
    /// The secret key, inline.
    #[serde(default)]
    pub secret_key: Option<String>,
    /// Or a file holding it (mode 0600 or stricter).
    #[serde(default)]
    pub secret_key_file: Option<PathBuf>,
}

/// Encryption keys.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Keys {
    /// The gateway's age identity file (created on first start when absent).
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
    /// An extra `age1...` recipient every object is also encrypted to: an
    /// offline recovery key whose secret the gateway never holds.
    #[serde(default)]
    pub recovery_recipient: Option<String>,
    /// Payload keys of objects recently read or written kept opened in
    /// memory (never stored), so a hot object's GET does not unwrap its
    /// key again; 0 turns the cache off. About 100 bytes each.
    #[serde(default = "default_key_cache_entries")]
    pub cache_entries: usize,
}

fn default_key_cache_entries() -> usize {
    65_536
}

impl Default for Keys {
    fn default() -> Self {
        Self {
            identity_file: None,
            recovery_recipient: None,
            cache_entries: default_key_cache_entries(),
        }
    }
}

/// One backend. Which keys apply depends on `kind`; the others must be
/// absent (checked by [`Config::validate`]). Its Debug output never shows
/// an inline secret.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Its id, as manifests record it: never change it once data is stored.
    pub id: String,
    /// What stores the fragments.
    pub kind: BackendKind,
    /// `fs`: the directory (created if missing).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Labels such as region, provider, site.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The most bytes it may hold.
    #[serde(default)]
    pub capacity_bytes: Option<u64>,
    /// `s3`, `gcs`: the bucket (it must exist).
    #[serde(default)]
    pub bucket: Option<String>,
    /// `azure`: the blob container (it must exist).
    #[serde(default)]
    pub container: Option<String>,
    /// Cloud kinds: a key prefix inside the bucket, so that several
    /// backends or gateways can share one bucket.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Cloud kinds: the service URL of a compatible server or emulator (for
    /// `azure` the account URL, e.g. `http://127.0.0.1:10000/devstoreaccount1`);
    /// the provider's public endpoint when unset.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `s3`: the region; `AWS_REGION` when unset.
    #[serde(default)]
    pub region: Option<String>,
    /// `s3`: the access key id; `AWS_ACCESS_KEY_ID` when unset.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// `s3`: the secret access key, inline; `AWS_SECRET_ACCESS_KEY` when
    /// neither this nor the file is set.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// `s3`: the secret access key in a file readable only by its owner.
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
    /// `azure`: the storage account; `AZURE_STORAGE_ACCOUNT_NAME` when unset.
    #[serde(default)]
    pub account: Option<String>,
    /// `azure`: the account key, inline; `AZURE_STORAGE_ACCOUNT_KEY` (or
    /// the other `AZURE_*` credentials) when neither this nor the file is set.
    #[serde(default)]
    pub account_key: Option<String>,
    /// `azure`: the account key in a file readable only by its owner.
    #[serde(default)]
    pub account_key_file: Option<PathBuf>,
    /// `azure`: Azurite, the emulator: its well-known account and key, and
    /// `http://127.0.0.1:10000/devstoreaccount1` unless `endpoint` is set.
    #[serde(default)]
    pub use_emulator: bool,
    /// `gcs`: a service account key (JSON) in a file readable only by its
    /// owner; `GOOGLE_SERVICE_ACCOUNT*` or application default credentials
    /// when unset.
    #[serde(default)]
    pub service_account_file: Option<PathBuf>,
    /// Cloud kinds: allow plain http (an emulator on loopback).
    #[serde(default)]
    pub allow_http: bool,
    /// Cloud kinds: seconds one request may take (default 30).
    #[serde(default)]
    pub request_timeout_secs: Option<u64>,
    /// Cloud kinds: retries of a failed request (default 3).
    #[serde(default)]
    pub retries: Option<usize>,
    /// `peer`: the peer's PeerId (`shardgate peer` prints it).
    #[serde(default)]
    pub peer_id: Option<String>,
    /// `peer`: multiaddrs where it listens; optional (a peer that dials in,
    /// or one the DHT knows, needs none).
    #[serde(default)]
    pub addresses: Vec<String>,
}

/// How an inline secret appears in Debug output.
fn redacted(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "<redacted>")
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &redacted(&self.secret_key))
            .field("secret_key_file", &self.secret_key_file)
            .finish()
    }
}

impl fmt::Debug for BackendConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendConfig")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("path", &self.path)
            .field("labels", &self.labels)
            .field("capacity_bytes", &self.capacity_bytes)
            .field("bucket", &self.bucket)
            .field("container", &self.container)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("secret_access_key_file", &self.secret_access_key_file)
            .field("account", &self.account)
            .field("account_key", &redacted(&self.account_key))
            .field("account_key_file", &self.account_key_file)
            .field("use_emulator", &self.use_emulator)
            .field("service_account_file", &self.service_account_file)
            .field("allow_http", &self.allow_http)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .field("retries", &self.retries)
            .field("peer_id", &self.peer_id)
            .field("addresses", &self.addresses)
            .finish()
    }
}

impl BackendConfig {
    /// The secret access key of an `s3` backend, from the file when given
    /// there; `None` leaves it to the environment.
    pub fn secret_access_key(&self, i: usize) -> Result<Option<String>, ConfigError> {
        inline_or_file(
            &self.secret_access_key,
            &self.secret_access_key_file,
            &format!("backends[{i}].secret_access_key_file"),
        )
    }

    /// The account key of an `azure` backend, from the file when given
    /// there; `None` leaves it to the environment (or the emulator's).
    pub fn account_key(&self, i: usize) -> Result<Option<String>, ConfigError> {
        inline_or_file(
            &self.account_key,
            &self.account_key_file,
            &format!("backends[{i}].account_key_file"),
        )
    }

    /// The service account key (JSON) of a `gcs` backend, when a file is given.
    pub fn service_account_key(&self, i: usize) -> Result<Option<String>, ConfigError> {
        inline_or_file(
            &None,
            &self.service_account_file,
            &format!("backends[{i}].service_account_file"),
        )
    }
}

fn inline_or_file(
    inline: &Option<String>,
    file: &Option<PathBuf>,
    key: &str,
) -> Result<Option<String>, ConfigError> {
    match (inline, file) {
        (Some(s), _) => Ok(Some(s.clone())),
        (None, Some(path)) => read_secret_file(key, path).map(Some),
        (None, None) => Ok(None),
    }
}

impl BackendConfig {
    /// Checks that every key set belongs to this kind and that what the
    /// kind needs is there.
    fn validate_keys(&self, i: usize) -> Result<(), ConfigError> {
        use BackendKind::{Azure, Fs, Gcs, Peer, S3};
        const CLOUD: &[BackendKind] = &[S3, Gcs, Azure];
        let kind = self.kind;
        let keys: [(&str, bool, &[BackendKind]); 19] = [
            ("peer_id", self.peer_id.is_some(), &[Peer]),
            ("addresses", !self.addresses.is_empty(), &[Peer]),
            ("path", self.path.is_some(), &[Fs]),
            ("bucket", self.bucket.is_some(), &[S3, Gcs]),
            ("container", self.container.is_some(), &[Azure]),
            ("prefix", self.prefix.is_some(), CLOUD),
            ("endpoint", self.endpoint.is_some(), CLOUD),
            ("region", self.region.is_some(), &[S3]),
            ("access_key_id", self.access_key_id.is_some(), &[S3]),
            ("secret_access_key", self.secret_access_key.is_some(), &[S3]),
            (
                "secret_access_key_file",
                self.secret_access_key_file.is_some(),
                &[S3],
            ),
            ("account", self.account.is_some(), &[Azure]),
            ("account_key", self.account_key.is_some(), &[Azure]),
            (
                "account_key_file",
                self.account_key_file.is_some(),
                &[Azure],
            ),
            ("use_emulator", self.use_emulator, &[Azure]),
            (
                "service_account_file",
                self.service_account_file.is_some(),
                &[Gcs],
            ),
            ("allow_http", self.allow_http, CLOUD),
            (
                "request_timeout_secs",
                self.request_timeout_secs.is_some(),
                CLOUD,
            ),
            ("retries", self.retries.is_some(), CLOUD),
        ];
        for (key, set, kinds) in keys {
            if set && !kinds.contains(&kind) {
                let takers: Vec<_> = kinds.iter().map(|k| k.as_str()).collect();
                let reason = match key {
                    "path" => format!("{} has no path", kind.backend_with_article()),
                    _ => format!(
                        "{} does not take this key (only {} do)",
                        kind.backend_with_article(),
                        takers.join(", ")
                    ),
                };
                return Err(invalid(format!("backends[{i}].{key}"), reason));
            }
        }
        let needs = |key: &str, value: &Option<String>, what: &str| match value {
            Some(v) if !v.is_empty() => Ok(()),
            _ => Err(invalid(
                format!("backends[{i}].{key}"),
                format!("{} needs {what}", kind.backend_with_article()),
            )),
        };
        let at_most_one = |a: &str, a_set: bool, b: &str, b_set: bool| match a_set && b_set {
            true => Err(invalid(
                format!("backends[{i}]"),
                format!("give at most one of {a} and {b}"),
            )),
            false => Ok(()),
        };
        match kind {
            Fs if self.path.is_none() => {
                return Err(invalid(
                    format!("backends[{i}].path"),
                    "an fs backend needs a path",
                ));
            }
            S3 | Gcs => needs("bucket", &self.bucket, "a bucket")?,
            Peer => needs("peer_id", &self.peer_id, "a peer_id")?,
            Azure => {
                needs("container", &self.container, "a container")?;
                if !self.use_emulator && self.account_key.is_some() {
                    needs("account", &self.account, "an account to go with its key")?;
                }
            }
            _ => {}
        }
        at_most_one(
            "secret_access_key",
            self.secret_access_key.is_some(),
            "secret_access_key_file",
            self.secret_access_key_file.is_some(),
        )?;
        at_most_one(
            "account_key",
            self.account_key.is_some(),
            "account_key_file",
            self.account_key_file.is_some(),
        )?;
        if self.request_timeout_secs == Some(0) {
            return Err(invalid(
                format!("backends[{i}].request_timeout_secs"),
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// The kinds of backend.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// A local directory (`path`).
    Fs,
    /// In memory, for tests: lost on exit.
    Memory,
    /// An S3 bucket, AWS or S3-compatible (`bucket`, `prefix`, `endpoint`,
    /// `region`, credentials).
    S3,
    /// A Google Cloud Storage bucket (`bucket`, `prefix`, `endpoint`,
    /// `service_account_file`).
    Gcs,
    /// An Azure Blob Storage container (`container`, `prefix`, `account`,
    /// `account_key`, `endpoint`, `use_emulator`).
    Azure,
    /// A `shardgate peer` over libp2p (`peer_id`, `addresses`).
    Peer,
}

impl BackendKind {
    /// Its name in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Fs => "fs",
            BackendKind::Memory => "memory",
            BackendKind::S3 => "s3",
            BackendKind::Gcs => "gcs",
            BackendKind::Azure => "azure",
            BackendKind::Peer => "peer",
        }
    }

    /// "an s3 backend", "a gcs backend": for messages.
    fn backend_with_article(self) -> String {
        let article = match self {
            BackendKind::Fs | BackendKind::S3 | BackendKind::Azure => "an",
            BackendKind::Memory | BackendKind::Gcs | BackendKind::Peer => "a",
        };
        format!("{article} {} backend", self.as_str())
    }
}

/// A placement policy.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Data fragments per stripe.
    pub k: u32,
    /// Parity fragments per stripe.
    pub m: u32,
    /// Fragments that must be durable for a write to succeed (k..=k+m;
    /// default k + m).
    #[serde(default)]
    pub write_quorum: Option<usize>,
    /// age chunks (64 KiB) per stripe; default 16, or k for k > 16.
    #[serde(default)]
    pub stripe_chunks: Option<u32>,
    /// Bodies up to this size, when their length is known up front, are
    /// stored as 1 + m whole encrypted copies instead of k + m fragments
    /// (see BENCHMARKS.md for why); 0 turns this off.
    #[serde(default)]
    pub small_object_bytes: Option<u64>,
    /// Bodies up to this size (length known up front, whole PUTs) are kept
    /// in their manifest, sealed, with no fragment on any backend; 0 turns
    /// this off. Only the default policy may set it (the manifest journal
    /// that carries them is placed by the default policy); its default
    /// there is 4096.
    #[serde(default)]
    pub inline_object_bytes: Option<u64>,
    /// A placement plugin (a WebAssembly component of
    /// `shardgate:placement@0.1.0`); without one, the built-in rule.
    #[serde(default)]
    pub plugin: Option<PathBuf>,
    /// The plugin's parameters (checked by the plugin at start).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// When the plugin fails or answers nonsense: `true` fails the write
    /// (503), `false` (default) places it with the built-in rule.
    #[serde(default)]
    pub strict: bool,
}

impl Config {
    /// Loads `file` (when given; it must exist) and the `SHARDGATE_*`
    /// variables, then checks the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        let env = Env::prefixed(ENV_PREFIX)
            .filter(|k| is_config_key(k.as_str()))
            .split("__");
        let mut config: Config = figment.merge(env).extract()?;
        if let Some(dir) = config.policy_dir.clone() {
            for (name, policy) in PolicyConfig::load_dir(&dir)? {
                if config.policies.contains_key(&name) {
                    return Err(invalid(
                        format!("policies.{name}"),
                        format!(
                            "defined both in the configuration and in {}",
                            dir.join(format!("{name}.toml")).display()
                        ),
                    ));
                }
                config.policies.insert(name, policy);
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses a configuration from TOML text alone (no file, no variables,
    /// no policy folder read) and checks it: what a config file's values
    /// go through, for tests and the fuzz targets.
    pub fn from_toml_text(text: &str) -> Result<Self, ConfigError> {
        let config: Config = Figment::from(Toml::string(text)).extract()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what parsing alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.metadata.validate()?;
        if self.scrub.rate_bytes_per_sec == 0 {
            return Err(invalid("scrub.rate_bytes_per_sec", "must be at least 1"));
        }
        if self.repair.rate_bytes_per_sec == 0 {
            return Err(invalid("repair.rate_bytes_per_sec", "must be at least 1"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, b) in self.backends.iter().enumerate() {
            let key = format!("backends[{i}].id");
            BackendId::new(b.id.clone()).map_err(|e| invalid(&key, e.to_string()))?;
            if !seen.insert(&b.id) {
                return Err(invalid(key, format!("backend id {:?} is used twice", b.id)));
            }
            b.validate_keys(i)?;
        }
        for (name, p) in &self.policies {
            let code = p.check(&format!("policies.{name}"))?;
            if !self.backends.is_empty() && self.backends.len() < code.width() {
                return Err(invalid(
                    format!("policies.{name}"),
                    format!(
                        "k + m = {} fragments need as many backends; {} are configured",
                        code.width(),
                        self.backends.len()
                    ),
                ));
            }
        }
        for (bucket, policy) in &self.buckets {
            if !self.policies.contains_key(policy) {
                return Err(invalid(
                    format!("buckets.{bucket}"),
                    format!("no policy named {policy:?}"),
                ));
            }
        }
        if let Some(p) = &self.default_policy
            && !self.policies.contains_key(p)
        {
            return Err(invalid("default_policy", format!("no policy named {p:?}")));
        }
        self.server.validate()?;
        if !(10..=MAX_TIMEOUT_SECS * 1000).contains(&self.journal.interval_ms) {
            return Err(invalid(
                "journal.interval_ms",
                "must be between 10 ms and a day",
            ));
        }
        if !(4096..=256 << 20).contains(&self.journal.batch_bytes) {
            return Err(invalid(
                "journal.batch_bytes",
                "must be between 4 KiB and 256 MiB",
            ));
        }
        if let Some(c) = &self.credentials
            && c.secret_key.is_some() == c.secret_key_file.is_some()
        {
            return Err(invalid(
                "credentials",
                "give exactly one of secret_key and secret_key_file",
            ));
        }
        Ok(())
    }
}

/// The longest any `[server]` timeout may be: long enough for anything a
/// client does, short enough that adding it to a clock never overflows.
const MAX_TIMEOUT_SECS: u64 = 86_400;

impl ServerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("server.header_timeout_secs", self.header_timeout_secs),
            ("server.idle_timeout_secs", self.idle_timeout_secs),
            ("server.body_timeout_secs", self.body_timeout_secs),
            ("server.send_timeout_secs", self.send_timeout_secs),
            ("server.queue_timeout_secs", self.queue_timeout_secs),
        ] {
            if value > MAX_TIMEOUT_SECS {
                return Err(invalid(key, "must be at most 86400 (a day)"));
            }
        }
        for (key, value) in [
            ("server.header_timeout_secs", self.header_timeout_secs),
            ("server.idle_timeout_secs", self.idle_timeout_secs),
            ("server.body_timeout_secs", self.body_timeout_secs),
            ("server.send_timeout_secs", self.send_timeout_secs),
            ("server.max_requests", self.max_requests as u64),
            (
                "server.http2_max_streams",
                u64::from(self.http2_max_streams),
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.max_connections == Some(0) {
            return Err(invalid("server.max_connections", "must be at least 1"));
        }
        if self.memory_budget_bytes < 256 << 20 {
            return Err(invalid(
                "server.memory_budget_bytes",
                "must be at least 256 MiB (128 MiB for the gateway itself, 8 MiB per object request)",
            ));
        }
        Ok(())
    }
}

impl PolicyConfig {
    /// Checks the code and the write quorum; `key` names the policy in
    /// errors.
    pub fn check(&self, key: &str) -> Result<ErasureCode, ConfigError> {
        let code = ErasureCode::new(self.k, self.m).map_err(|e| invalid(key, e.to_string()))?;
        if let Some(q) = self.write_quorum
            && (q < code.k() || q > code.width())
        {
            return Err(invalid(
                format!("{key}.write_quorum"),
                format!("{q} is outside k..=k+m ({}..={})", code.k(), code.width()),
            ));
        }
        Ok(code)
    }

    /// Parses one policy file's text; `origin` names it in errors and
    /// relative plugin paths are resolved against `base`.
    pub fn from_toml(text: &str, origin: &Path, base: &Path) -> Result<Self, ConfigError> {
        let mut policy: PolicyConfig = Figment::from(Toml::string(text))
            .extract()
            .map_err(|e| invalid(origin.display().to_string(), e.to_string()))?;
        if let Some(plugin) = &policy.plugin
            && plugin.is_relative()
        {
            policy.plugin = Some(base.join(plugin));
        }
        Ok(policy)
    }

    /// Reads one policy file: its name is the file's stem.
    pub fn load_file(path: &Path) -> Result<(String, Self), ConfigError> {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid(path.display().to_string(), "not a NAME.toml policy file"))?
            .to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid(path.display().to_string(), e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Ok((name, Self::from_toml(&text, path, base)?))
    }

    /// Every `*.toml` in `dir`, by name.
    pub fn load_dir(dir: &Path) -> Result<BTreeMap<String, Self>, ConfigError> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| invalid("policy_dir", format!("{}: {e}", dir.display())))?;
        let mut out = BTreeMap::new();
        for entry in entries {
            let path = entry
                .map_err(|e| invalid("policy_dir", format!("{}: {e}", dir.display())))?
                .path();
            if path.extension().is_some_and(|e| e == "toml") {
                let (name, policy) = Self::load_file(&path)?;
                out.insert(name, policy);
            }
        }
        Ok(out)
    }
}

impl Credentials {
    /// The secret key, read from `secret_key_file` when given there.
    pub fn secret(&self) -> Result<String, ConfigError> {
        if let Some(s) = &self.secret_key {
            return Ok(s.clone());
        }
        let Some(path) = &self.secret_key_file else {
            return Err(invalid(
                "credentials",
                "give exactly one of secret_key and secret_key_file",
            ));
        };
        read_secret_file("credentials.secret_key_file", path)
    }
}

/// Reads a secret file, refusing one that its group or others can read.
pub fn read_secret_file(key: &str, path: &Path) -> Result<String, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |reason: String| ConfigError::SecretFile {
        key: key.into(),
        path: path.into(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(err(format!(
            "readable by group or others (mode {:o}); run chmod 600 on it",
            mode & 0o777
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(err("the file is empty".into()));
    }
    Ok(secret.to_string())
}
