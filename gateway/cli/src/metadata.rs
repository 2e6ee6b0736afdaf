//! The metadata store the gateway runs on when it is not the embedded
//! redb file: a database that speaks PostgreSQL's protocol
//! (`[metadata] kind = "postgres"`).
//!
//! Several gateways on one database are issue 23's goal, and need what is
//! not built yet: intents with heartbeats (today a gateway sweeps the
//! intents of every other owner, which would turn another live gateway's
//! writes in flight into garbage) and leases for the background jobs. So
//! until then a gateway holds the database alone, under a lease it renews;
//! a second gateway is refused at startup, naming the one that holds it,
//! and a gateway killed without releasing it is replaced once the lease
//! runs out.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use shardgate_config::MetadataConfig;
use shardgate_meta::MetaStore;
use shardgate_meta_postgres::{PgEngine, PgOptions, PgStore};

/// The lease one gateway holds the database under.
const SOLE_LEASE: &str = "sole-gateway";
/// How long the lease lasts without a renewal.
const LEASE_TTL: Duration = Duration::from_secs(30);
/// How often it is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(10);

/// Connects, migrates the schema and opens the store on it.
pub async fn open_postgres(
    config: &MetadataConfig,
    url: String,
    journaled: bool,
) -> Result<MetaStore> {
    let options = PgOptions {
        url,
        pool_size: config.pool_size,
        statement_timeout: Duration::from_millis(config.statement_timeout_ms),
        connect_timeout: Duration::from_millis(config.connect_timeout_ms),
    };
    let store = PgStore::connect(&options)
        .await
        .context("connecting to the metadata database (metadata.url)")?;
    let engine = Arc::new(PgEngine::new(store, tokio::runtime::Handle::current()));
    tokio::task::spawn_blocking(move || MetaStore::on_engine(engine, journaled))
        .await
        .context("opening the metadata store")?
        .context("opening the metadata store on the database")
}

/// The sole-gateway lease, renewed in the background until released.
pub struct SoleLease {
    meta: MetaStore,
    renewer: tokio::task::JoinHandle<()>,
}

/// Takes the lease, or fails naming the gateway that holds it.
pub async fn hold_sole_lease(meta: MetaStore) -> Result<SoleLease> {
    claim(&meta).await.context(
        "another gateway uses this metadata database (several gateways on one database are not supported yet)",
    )?;
    let renewing = meta.clone();
    let renewer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(RENEW_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = claim(&renewing).await {
                tracing::error!(error = %e, "metadata database: the sole-gateway lease was not renewed");
            }
        }
    });
    Ok(SoleLease { meta, renewer })
}

impl SoleLease {
    /// Stops renewing and gives the lease up, so that another gateway may
    /// start at once.
    pub async fn release(self) {
        self.renewer.abort();
        let meta = self.meta;
        let released = tokio::task::spawn_blocking(move || meta.release_lease(SOLE_LEASE)).await;
        if !matches!(released, Ok(Ok(()))) {
            tracing::warn!(
                "metadata database: the sole-gateway lease was not released; it runs out by itself"
            );
        }
    }
}

async fn claim(meta: &MetaStore) -> Result<()> {
    let meta = meta.clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    tokio::task::spawn_blocking(move || {
        meta.claim_lease(SOLE_LEASE, now, LEASE_TTL.as_millis() as u64)
    })
    .await
    .context("the lease task")?
    .map_err(anyhow::Error::from)
}
