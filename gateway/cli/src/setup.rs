//! Turns a configuration into a running gateway's parts, filling in the
//! embedded default where the configuration is silent, and creating the
//! key material a first start needs (kept for every later start).
//!
//! Embedded default (no backends configured): six `fs` backends under
//! `<data-dir>/backends/site-1..6`, each labelled as its own site; and (no
//! policies configured) `policies/default.toml`, compiled in: 4 + 2 with a
//! write quorum of 5, placed by the spread-sites plugin. A write succeeds
//! with one directory unavailable, and every acknowledged object survives
//! the loss of any further one (any two when written whole).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rand::Rng;
use shardgate_backend::{Backend, BackendInfo};
use shardgate_backend_cloud::{
    AzureSettings, CloudBackend, DEFAULT_PART_SIZE, GcsSettings, S3Settings, Timeouts,
};
use shardgate_backend_fs::{FsBackend, FsOptions};
use shardgate_backend_memory::MemoryBackend;
use shardgate_backend_peer::{
    NodeConfig, NodeHandle, PeerBackend, parse_addr, parse_listen, parse_peer_id,
};
use shardgate_config::{BackendConfig, BackendKind, Config, PolicyConfig, read_secret_file};
use shardgate_core::{BackendId, ErasureCode, Identities, Recipients};
use shardgate_jobs::JobSettings;
use shardgate_node::{GatewayConfig, Policy};
use shardgate_placement::{Placer, Spread};
use shardgate_plugin_host::{Limits, Plugin, PluginError, PluginHost, PluginPlacer, Strictness};
use shardgate_s3::Credentials;

/// The backends of the embedded default: one directory per site.
pub const DEFAULT_SITES: usize = 6;
/// Small-object threshold when a policy does not set one (BENCHMARKS.md,
/// "Small objects").
pub const DEFAULT_SMALL_OBJECT_BYTES: u64 = 16 * 1024;
/// The default policy keeps bodies up to this size in their manifests: one
/// page, so that listings, which read version rows, stay light (Garage
/// keeps objects under 3 KiB in its metadata; BENCHMARKS.md, "Small
/// objects kept in their manifest").
pub const DEFAULT_INLINE_OBJECT_BYTES: u64 = 4096;
/// The most `inline_object_bytes` may be: every listing and journal
/// checkpoint carries these bytes.
pub const MAX_INLINE_OBJECT_BYTES: u64 = 64 * 1024;

/// What a first start created, to print once.
#[derive(Debug, Default)]
pub struct Created {
    pub credentials: Option<(PathBuf, Credentials)>,
    pub identity: Option<PathBuf>,
    pub recovery: Option<(PathBuf, PathBuf)>,
}

/// Writes a new file readable by its owner only; refuses to overwrite.
fn write_private(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn random_string(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

/// The S3 credentials: from the config, else from `<data>/credentials`,
/// else generated there.
fn credentials(config: &Config, created: &mut Created) -> Result<Credentials> {
    if let Some(c) = &config.credentials {
        return Ok(Credentials {
            access_key: c.access_key.clone(),
            secret_key: c.secret()?,
        });
    }
    let path = config.data_dir.join("credentials");
    if path.exists() {
        let text = read_secret_file("credentials", &path)?;
        let mut fields = BTreeMap::new();
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                fields.insert(k.trim().to_string(), v.trim().to_string());
            }
        }
        let (Some(access_key), Some(secret_key)) =
            (fields.remove("access_key"), fields.remove("secret_key"))
        else {
            bail!(
                "{}: expected lines access_key=... and secret_key=...",
                path.display()
            );
        };
        return Ok(Credentials {
            access_key,
            secret_key,
        });
    }
    let creds = Credentials {
        access_key: format!(
            "SG{}",
            random_string(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 18)
        ),
        secret_key: random_string(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
            40,
        ),
    };
    write_private(
        &path,
        &format!(
            "access_key={}\nsecret_key={}\n",
            creds.access_key, creds.secret_key
        ),
    )?;
    created.credentials = Some((path, creds.clone()));
    Ok(creds)
}

fn read_identity(path: &Path) -> Result<Identities> {
    let text = read_secret_file("keys.identity_file", path)?;
    Identities::parse(&text)
        .with_context(|| format!("{}: not an age identity file", path.display()))
}

/// The gateway's identity, and the recipients every object is encrypted
/// to: the identity's own, plus a recovery recipient whose secret should
/// live offline.
fn keys(config: &Config, created: &mut Created) -> Result<(Identities, Recipients)> {
    let keys_dir = config.data_dir.join("keys");
    let identity_path = config
        .keys
        .identity_file
        .clone()
        .unwrap_or_else(|| keys_dir.join("gateway-identity.txt"));
    let identities = if identity_path.exists() {
        read_identity(&identity_path)?
    } else {
        let id = Identities::generate();
        write_private(&identity_path, &id.to_identity_file())?;
        created.identity = Some(identity_path.clone());
        id
    };
    let mut recipients = identities.recipients();
    let recovery = match &config.keys.recovery_recipient {
        Some(r) => Some(r.clone()),
        None => {
            // Embedded default: create a recovery key pair once. Its public
            // half is used for every object; its secret half is for the
            // user to move offline.
            let recipient_path = keys_dir.join("recovery-recipient.txt");
            if recipient_path.exists() {
                let text = fs::read_to_string(&recipient_path)
                    .with_context(|| format!("reading {}", recipient_path.display()))?;
                text.lines()
                    .map(str::trim)
                    .find(|l| l.starts_with("age1"))
                    .map(str::to_string)
            } else if config.keys.identity_file.is_none() {
                let recovery = Identities::generate();
                let secret_path = keys_dir.join("recovery-identity.txt");
                write_private(&secret_path, &recovery.to_identity_file())?;
                let public = recovery.recipients().to_strings().join("\n");
                fs::write(&recipient_path, format!("{public}\n"))
                    .with_context(|| format!("writing {}", recipient_path.display()))?;
                created.recovery = Some((secret_path, recipient_path));
                Some(public)
            } else {
                None
            }
        }
    };
    if let Some(r) = recovery {
        let parsed = Recipients::parse(&[r.as_str()])
            .with_context(|| format!("keys.recovery_recipient: {r:?} is not an age recipient"))?;
        recipients = recipients.join(parsed);
    }
    Ok((identities, recipients))
}

/// What the configured backends, or the embedded default's, are called
/// and labelled, without opening them.
pub fn backend_infos(config: &Config) -> Result<Vec<BackendInfo>> {
    if config.backends.is_empty() {
        return (1..=DEFAULT_SITES)
            .map(|i| {
                let site = format!("site-{i}");
                Ok(BackendInfo::new(BackendId::new(site.clone())?).with_label("site", &site))
            })
            .collect();
    }
    config
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let mut info = BackendInfo::new(
                BackendId::new(b.id.clone()).with_context(|| format!("backends[{i}].id"))?,
            );
            info.labels = b.labels.clone();
            info.capacity_bytes = b.capacity_bytes;
            Ok(info)
        })
        .collect()
}

/// Starts the gateway's libp2p node when a `peer` backend is configured:
/// it allows exactly the configured peers (and `[peers] allow`), and keeps
/// them reachable.
async fn peer_node(config: &Config) -> Result<Option<NodeHandle>> {
    let mut watch = Vec::new();
    for (i, b) in config.backends.iter().enumerate() {
        if b.kind != BackendKind::Peer {
            continue;
        }
        let id = b.peer_id.as_deref().unwrap_or_default();
        let peer = parse_peer_id(id).with_context(|| format!("backends[{i}].peer_id"))?;
        let addrs = b
            .addresses
            .iter()
            .map(|a| parse_addr(a))
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("backends[{i}].addresses"))?;
        watch.push((peer, addrs));
    }
    if watch.is_empty() {
        return Ok(None);
    }
    let mut listen = Vec::new();
    for a in &config.peers.listen {
        listen.extend(parse_listen(a).context("peers.listen")?);
    }
    let bootstrap = config
        .peers
        .bootstrap
        .iter()
        .map(|a| parse_addr(a))
        .collect::<Result<Vec<_>, _>>()
        .context("peers.bootstrap")?;
    let mut allow: std::collections::HashSet<_> = watch.iter().map(|(p, _)| *p).collect();
    for a in &config.peers.allow {
        allow.insert(parse_peer_id(a).context("peers.allow")?);
    }
    let key_file = config.peer_key_file();
    let keypair = shardgate_backend_peer::identity::load_or_create(&key_file)?;
    let node = shardgate_backend_peer::node::start(NodeConfig {
        keypair,
        listen,
        bootstrap,
        allow,
        watch,
        serve: None,
        request_timeout: Duration::from_secs(30),
    })
    .await
    .context("starting the peer network")?;
    // On stdout, like the S3 address: peers are configured with these.
    println!(
        "shardgate: peer network PeerId {} (each peer allows it with --allow-gateway)",
        node.peer_id()
    );
    for addr in node.listen_addrs() {
        println!("shardgate: peer network listening on {addr}");
    }
    Ok(Some(node))
}

fn fs_options(config: &Config) -> FsOptions {
    FsOptions {
        direct_writes: config.fs.direct_writes,
        direct_read_min_bytes: config.fs.direct_read_min_bytes,
        shared: config.fs.shared,
    }
}

/// Opens the configured backends, or the embedded default's.
pub async fn backends(config: &Config) -> Result<Vec<Arc<dyn Backend>>> {
    let infos = backend_infos(config)?;
    let node = peer_node(config).await?;
    let mut out: Vec<Arc<dyn Backend>> = Vec::new();
    if config.backends.is_empty() {
        for info in infos {
            let root = config.data_dir.join("backends").join(info.id.as_str());
            let id = info.id.clone();
            let fs = FsBackend::open_with(info, &root, fs_options(config))
                .await
                .with_context(|| format!("opening fs backend {id} at {}", root.display()))?;
            out.push(Arc::new(fs));
        }
        return Ok(out);
    }
    for (i, (b, info)) in config.backends.iter().zip(infos).enumerate() {
        let backend: Arc<dyn Backend> = match (b.kind, &b.path) {
            (BackendKind::Fs, Some(path)) => Arc::new(
                FsBackend::open_with(info, path, fs_options(config))
                    .await
                    .with_context(|| format!("backends[{i}] ({}): {}", b.id, path.display()))?,
            ),
            (BackendKind::Fs, None) => bail!("backends[{i}].path: an fs backend needs a path"),
            (BackendKind::Memory, _) => Arc::new(MemoryBackend::new(info)),
            (BackendKind::S3, _) => Arc::new(
                CloudBackend::s3(
                    info,
                    S3Settings {
                        bucket: b.bucket.clone().unwrap_or_default(),
                        prefix: b.prefix.clone().unwrap_or_default(),
                        endpoint: b.endpoint.clone(),
                        region: b.region.clone(),
                        access_key_id: b.access_key_id.clone(),
                        secret_access_key: b.secret_access_key(i)?,
                        allow_http: b.allow_http,
                        timeouts: timeouts(b),
                        part_size: DEFAULT_PART_SIZE,
                    },
                )
                .with_context(|| format!("backends[{i}] ({})", b.id))?,
            ),
            (BackendKind::Gcs, _) => Arc::new(
                CloudBackend::gcs(
                    info,
                    GcsSettings {
                        bucket: b.bucket.clone().unwrap_or_default(),
                        prefix: b.prefix.clone().unwrap_or_default(),
                        service_account_key: b.service_account_key(i)?,
                        endpoint: b.endpoint.clone(),
                        allow_http: b.allow_http,
                        timeouts: timeouts(b),
                        part_size: DEFAULT_PART_SIZE,
                    },
                )
                .with_context(|| format!("backends[{i}] ({})", b.id))?,
            ),
            (BackendKind::Peer, _) => {
                let peer = parse_peer_id(b.peer_id.as_deref().unwrap_or_default())
                    .with_context(|| format!("backends[{i}].peer_id"))?;
                let node = node.clone().context("the peer network did not start")?;
                Arc::new(PeerBackend::new(info, peer, node))
            }
            (BackendKind::Azure, _) => Arc::new(
                CloudBackend::azure(
                    info,
                    AzureSettings {
                        container: b.container.clone().unwrap_or_default(),
                        prefix: b.prefix.clone().unwrap_or_default(),
                        account: b.account.clone(),
                        account_key: b.account_key(i)?,
                        endpoint: b.endpoint.clone(),
                        use_emulator: b.use_emulator,
                        allow_http: b.allow_http,
                        timeouts: timeouts(b),
                        part_size: DEFAULT_PART_SIZE,
                    },
                )
                .with_context(|| format!("backends[{i}] ({})", b.id))?,
            ),
        };
        out.push(backend);
    }
    Ok(out)
}

/// A cloud backend's request bounds: the configured ones over the defaults.
fn timeouts(b: &BackendConfig) -> Timeouts {
    let defaults = Timeouts::default();
    Timeouts {
        request: b
            .request_timeout_secs
            .map_or(defaults.request, Duration::from_secs),
        retries: b.retries.unwrap_or(defaults.retries),
        ..defaults
    }
}

/// The embedded default's policy (dogfooding): `policies/default.toml`,
/// whose plugin is the spread-sites example, prebuilt from
/// `plugins/examples/spread-sites-c` (CI checks the file against its
/// source). Both are compiled into the binary.
const EMBEDDED_POLICY: &str = include_str!("../../../policies/default.toml");
const EMBEDDED_POLICY_PATH: &str = "policies/default.toml (embedded)";
const EMBEDDED_PLUGIN: &[u8] =
    include_bytes!("../../../plugins/examples/spread-sites-c/spread-sites.wasm");

/// Wraps a loaded plugin as the policy's placer, checking its parameters.
fn plugin_placer(
    plugin: Plugin,
    params: &BTreeMap<String, String>,
    strict: bool,
) -> Result<Arc<dyn Placer>, PluginError> {
    let strictness = match strict {
        true => Strictness::Strict,
        false => Strictness::Fallback(Arc::new(Spread)),
    };
    let params = params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    Ok(Arc::new(PluginPlacer::new(
        Arc::new(plugin),
        params,
        strictness,
    )?))
}

/// The policies the gateway runs: the configured ones, or the embedded
/// default (marked `true`: its plugin is compiled in).
pub fn configured_policies(config: &Config) -> Result<Vec<(String, PolicyConfig, bool)>> {
    if !config.policies.is_empty() {
        return Ok(config
            .policies
            .iter()
            .map(|(name, p)| (name.clone(), p.clone(), false))
            .collect());
    }
    let policy = PolicyConfig::from_toml(
        EMBEDDED_POLICY,
        Path::new(EMBEDDED_POLICY_PATH),
        Path::new("policies"),
    )?;
    Ok(vec![("default".into(), policy, true)])
}

/// Builds one policy, loading (and checking) its plugin.
pub fn build_policy(
    name: &str,
    p: &PolicyConfig,
    embedded: bool,
    host: &PluginHost,
) -> Result<Policy> {
    let code = ErasureCode::new(p.k, p.m).with_context(|| format!("policies.{name}"))?;
    let placer = match &p.plugin {
        None => None,
        Some(path) => {
            let plugin = match embedded {
                true => host.load_bytes(path, EMBEDDED_PLUGIN, Limits::default()),
                false => host.load(path, Limits::default()),
            }
            .with_context(|| format!("policies.{name}.plugin"))?;
            Some(
                plugin_placer(plugin, &p.params, p.strict)
                    .with_context(|| format!("policies.{name}.params"))?,
            )
        }
    };
    Ok(Policy {
        name: name.to_string(),
        code,
        write_quorum: p.write_quorum.unwrap_or(code.width()),
        stripe_chunks: p.stripe_chunks,
        small_object_bytes: p.small_object_bytes.unwrap_or(DEFAULT_SMALL_OBJECT_BYTES),
        inline_object_bytes: 0,
        placer,
    })
}

/// The policy of buckets not mapped to one: `default_policy`, or the only
/// policy, or the one named "default".
pub fn default_policy_name<'a>(
    config: &Config,
    mut names: impl ExactSizeIterator<Item = &'a String>,
) -> Result<String> {
    if let Some(p) = &config.default_policy {
        return Ok(p.clone());
    }
    let count = names.len();
    match names.find(|n| count == 1 || n.as_str() == "default") {
        Some(name) => Ok(name.clone()),
        None => bail!("default_policy: several policies are defined; name the default one"),
    }
}

fn policies(config: &Config, host: &PluginHost) -> Result<(BTreeMap<String, Policy>, String)> {
    let mut out = BTreeMap::new();
    let mut inline = BTreeMap::new();
    for (name, p, embedded) in configured_policies(config)? {
        let policy = build_policy(&name, &p, embedded, host)?;
        inline.insert(name.clone(), p.inline_object_bytes);
        out.insert(name, policy);
    }
    let default = default_policy_name(config, out.keys())?;
    for (name, policy) in &mut out {
        policy.inline_object_bytes = inline_object_bytes(name, inline[name], *name == default)?;
    }
    Ok((out, default))
}

/// A policy's `inline_object_bytes`, checked: only the default policy
/// keeps objects inline, since their bytes travel with the manifest
/// journal, which the default policy places.
pub fn inline_object_bytes(name: &str, configured: Option<u64>, default: bool) -> Result<u64> {
    match configured {
        Some(n) if n > MAX_INLINE_OBJECT_BYTES => {
            bail!("policies.{name}.inline_object_bytes: {n} is more than {MAX_INLINE_OBJECT_BYTES}")
        }
        Some(n) if n > 0 && !default => bail!(
            "policies.{name}.inline_object_bytes: only the default policy keeps objects inline (their bytes travel with the manifest journal, which the default policy places)"
        ),
        Some(n) => Ok(n),
        None if default => Ok(DEFAULT_INLINE_OBJECT_BYTES),
        None => Ok(0),
    }
}

/// Everything `serve` needs.
#[derive(Debug)]
pub struct Parts {
    pub gateway: GatewayConfig,
    pub jobs: JobSettings,
    pub credentials: Credentials,
    pub created: Created,
    pub meta_path: PathBuf,
}

pub async fn prepare(config: &Config) -> Result<Parts> {
    fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    if let Ok(meta) = fs::metadata(&config.data_dir) {
        let mode = meta.permissions().mode();
        if mode & 0o002 != 0 {
            bail!(
                "data dir {} is writable by everyone (mode {:o})",
                config.data_dir.display(),
                mode & 0o777
            );
        }
    }
    let mut created = Created::default();
    let credentials = credentials(config, &mut created)?;
    let (identities, recipients) = keys(config, &mut created)?;
    let backends = backends(config).await?;
    let plugins = PluginHost::new(Some(config.data_dir.join("plugin-cache")))
        .map_err(|e| anyhow::anyhow!("starting the plugin engine: {e}"))?;
    let (policies, default_policy) = policies(config, &plugins)?;
    Ok(Parts {
        gateway: GatewayConfig {
            backends,
            policies,
            bucket_policies: config.buckets.clone(),
            default_policy,
            recipients,
            identities,
            placer: Arc::new(shardgate_placement::Spread),
            fragment_timeout: Duration::from_secs(10),
            key_cache_entries: config.keys.cache_entries,
        },
        jobs: JobSettings {
            upload_expiry: Duration::from_secs(config.upload_expiry_secs),
            scrub_interval: (config.scrub.interval_secs > 0)
                .then(|| Duration::from_secs(config.scrub.interval_secs)),
            scrub_rate_bytes_per_sec: config.scrub.rate_bytes_per_sec,
            repair_rate_bytes_per_sec: config.repair.rate_bytes_per_sec,
            backend_grace: Duration::from_secs(config.repair.backend_grace_secs),
            audit_stripes: config.scrub.audit_stripes as usize,
            sampled: config
                .backends
                .iter()
                .filter(|b| {
                    matches!(
                        b.kind,
                        BackendKind::S3 | BackendKind::Gcs | BackendKind::Azure | BackendKind::Peer
                    )
                })
                .filter_map(|b| BackendId::new(&b.id).ok())
                .collect(),
        },
        credentials,
        created,
        meta_path: config.data_dir.join("meta.redb"),
    })
}

/// What every gateway on one metadata store must share, each item with a
/// digest (`shardgate_meta::MemberRecord::shared`): where each backend
/// stores (not how this gateway authenticates to it, which may differ),
/// each policy with its plugin's bytes, which policy buckets use, and the
/// recipients objects are sealed to. A gateway whose items differ from a
/// live one's is refused at its start, naming them.
pub fn shared_config(config: &Config, recipients: &Recipients) -> Result<BTreeMap<String, String>> {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut out = BTreeMap::new();
    if config.backends.is_empty() {
        for site in 1..=DEFAULT_SITES {
            let dir = absolute(
                &config
                    .data_dir
                    .join("backends")
                    .join(format!("site-{site}")),
            );
            out.insert(
                format!("backend site-{site}"),
                digest(&format!("fs {dir:?}")),
            );
        }
    }
    for b in &config.backends {
        let text = format!(
            "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
            b.kind,
            b.path.as_deref().map(absolute),
            b.bucket,
            b.container,
            b.prefix,
            b.endpoint,
            b.account,
            b.labels,
            b.capacity_bytes,
            b.peer_id,
            b.addresses,
        );
        out.insert(format!("backend {}", b.id), digest(&text));
    }
    let mut names = Vec::new();
    let mut inline = BTreeMap::new();
    for (name, p, embedded) in configured_policies(config)? {
        let plugin = match (&p.plugin, embedded) {
            (None, _) => "built-in".to_string(),
            (Some(_), true) => digest_bytes(EMBEDDED_PLUGIN),
            (Some(path), false) => {
                digest_bytes(&fs::read(path).with_context(|| format!("policies.{name}.plugin"))?)
            }
        };
        let text = format!(
            "{} {} {:?} {:?} {:?} {} {:?} {plugin}",
            p.k, p.m, p.write_quorum, p.stripe_chunks, p.small_object_bytes, p.strict, p.params
        );
        out.insert(format!("policy {name}"), digest(&text));
        inline.insert(name.clone(), p.inline_object_bytes);
        names.push(name);
    }
    let default = default_policy_name(config, names.iter())?;
    // Present only when objects are kept inline: a gateway of a release
    // that cannot read their manifests (format 2) lacks the item, so the
    // two refuse to share a store; with it off, they still may.
    let inline_bytes =
        inline_object_bytes(&default, inline.get(&default).copied().flatten(), true)?;
    if inline_bytes > 0 {
        out.insert("inline objects".into(), inline_bytes.to_string());
    }
    out.insert("default policy".into(), default);
    out.insert(
        "bucket policies".into(),
        digest(&format!("{:?}", config.buckets)),
    );
    out.insert("journal".into(), config.journal.enabled.to_string());
    let mut keys = recipients.to_strings();
    keys.sort();
    out.insert("recipients".into(), digest(&keys.join(" ")));
    Ok(out)
}

fn digest(text: &str) -> String {
    digest_bytes(text.as_bytes())
}

fn digest_bytes(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex()[..16].to_string()
}
