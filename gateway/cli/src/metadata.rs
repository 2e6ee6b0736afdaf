//! The metadata store the gateway runs on when it is not the embedded
//! redb file: a database that speaks PostgreSQL's protocol
//! (`[metadata] kind = "postgres"`), which several gateways may share
//! (issue 23); and the membership every gateway holds in its store.
//!
//! A gateway joins the store before it serves: its member lease
//! (`gateway/<owner>`, 30 s, renewed by its heartbeat every 10 s) tells
//! the others it is alive, so they leave its writes in flight alone; and
//! the join refuses a gateway whose backends, policies or recipients
//! differ from a live member's, naming what differs. A gateway killed
//! stops renewing: within the term the others sweep its unfinished writes
//! into garbage and take its jobs over (`shardgate_jobs`). A graceful stop
//! gives its leases up at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use shardgate_config::MetadataConfig;
use shardgate_meta::kv::Engine;
use shardgate_meta::{MemberRecord, MetaStore};
use shardgate_meta_postgres::{PgEngine, PgOptions, PgStore};

/// Connects, migrates the schema and opens the store on it as `member`
/// joins it (refused, with what differs, when a live gateway shares other
/// backends, policies, keys or journal setting).
pub async fn open_postgres(
    config: &MetadataConfig,
    url: String,
    journaled: bool,
    member: &MemberRecord,
) -> Result<MetaStore> {
    let engine = connect(config, url).await?;
    let member = member.clone();
    let term = shardgate_jobs::LEASE_TERM.as_millis() as u64;
    tokio::task::spawn_blocking(move || {
        MetaStore::joined(engine, journaled, &member, now_ms(), term)
    })
    .await
    .context("opening the metadata store")?
    .context("joining the gateways that share the metadata store")
}

/// The engine of the database `url` names, its schema migrated.
pub async fn connect(config: &MetadataConfig, url: String) -> Result<Arc<dyn Engine>> {
    let options = PgOptions {
        url,
        pool_size: config.pool_size,
        statement_timeout: Duration::from_millis(config.statement_timeout_ms),
        connect_timeout: Duration::from_millis(config.connect_timeout_ms),
    };
    let store = PgStore::connect(&options)
        .await
        .context("connecting to the metadata database (metadata.url)")?;
    Ok(Arc::new(PgEngine::new(
        store,
        tokio::runtime::Handle::current(),
    )))
}

/// This gateway as the others sharing its store see it.
pub fn member_record(shared: BTreeMap<String, String>, listen: SocketAddr) -> MemberRecord {
    MemberRecord {
        owner: String::new(),
        host: hostname(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_unix_ms: now_ms(),
        s3_endpoint: listen.to_string(),
        admin_endpoint: String::new(),
        shared,
        jobs: Vec::new(),
        heartbeat_unix_ms: 0,
    }
}

/// Joins the gateways sharing `meta` (see the module's doc); refused, with
/// what differs, when a live one shares other backends, policies or keys.
pub async fn join(meta: &MetaStore, record: &MemberRecord) -> Result<()> {
    let (meta, record) = (meta.clone(), record.clone());
    let term = shardgate_jobs::LEASE_TERM.as_millis() as u64;
    tokio::task::spawn_blocking(move || meta.join(&record, now_ms(), term))
        .await
        .context("the metadata task")?
        .context("joining the gateways that share the metadata store")
}

/// Leaves the store's members (a graceful stop): the others need not wait
/// for this gateway's lease to run out.
pub async fn leave(meta: &MetaStore) {
    let meta = meta.clone();
    let left = tokio::task::spawn_blocking(move || meta.leave()).await;
    if !matches!(left, Ok(Ok(()))) {
        tracing::warn!("this gateway's membership was not given up; it runs out by itself");
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
