//! The metadata store the gateway runs on when it is not the embedded
//! redb file: a database that speaks PostgreSQL's protocol
//! (`[metadata] kind = "postgres"`).
//!
//! Several gateways on one database are issue 23's goal, and need what is
//! not built yet: intents with heartbeats (today a gateway sweeps the
//! intents of every other owner, which would turn another live gateway's
//! writes in flight into garbage) and leases for the background jobs. So
//! until then a gateway holds the database alone, under the lease
//! `sole-gateway` (30 s, renewed every 10 s): a second gateway is refused
//! at startup, naming the holder; a start after a gateway died waits for
//! its lease to run out; a gateway that loses its lease (another took it,
//! or no renewal succeeded for 20 s) stops, and its store refuses every
//! write from that moment (`MetaStore::on_engine` fences each write
//! transaction by the lease). Expiry is judged by each gateway's clock:
//! clocks more than 20 s apart would let a start take a live lease, and
//! the fence would then stop the old gateway's writes.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use shardgate_config::MetadataConfig;
use shardgate_meta::kv::Engine;
use shardgate_meta::{MetaError, MetaStore};
use shardgate_meta_postgres::{PgEngine, PgOptions, PgStore};

/// The lease one gateway holds the database under.
const SOLE_LEASE: &str = "sole-gateway";
/// How long the lease lasts without a renewal.
const LEASE_TTL: Duration = Duration::from_secs(30);
/// How often it is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(10);

/// Connects, migrates the schema and opens the store on it, under the
/// sole-gateway lease. A lease left by a gateway that died (kill -9) runs
/// out within its term: the start waits for it once; a lease renewed
/// meanwhile belongs to a live gateway, and the start is refused.
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
    let engine: Arc<dyn Engine> = Arc::new(PgEngine::new(store, tokio::runtime::Handle::current()));
    let mut waited = false;
    loop {
        let on = engine.clone();
        let opened = tokio::task::spawn_blocking(move || {
            MetaStore::on_engine(on, journaled, Some((SOLE_LEASE, term_ms())))
        })
        .await
        .context("opening the metadata store")?;
        match opened {
            Err(MetaError::Leased { owner, left_ms, .. }) if !waited && left_ms <= term_ms() => {
                tracing::warn!(
                    holder = %owner,
                    wait_ms = left_ms,
                    "metadata database: another gateway's lease is in force; waiting for it to run out"
                );
                tokio::time::sleep(Duration::from_millis(left_ms + 500)).await;
                waited = true;
            }
            other => {
                return other.context(
                    "another gateway uses this metadata database (several gateways on one database are not supported yet), or it could not be opened",
                );
            }
        }
    }
}

/// The sole-gateway lease, renewed in the background until released.
pub struct SoleLease {
    stop: tokio::sync::oneshot::Sender<()>,
    renewer: tokio::task::JoinHandle<()>,
    lost: tokio::sync::watch::Receiver<Option<String>>,
}

/// Renews the lease `on_engine` took: every 10 s; lost when another
/// gateway holds it, or when no renewal succeeded for two thirds of the
/// term (the lease may have run out). A lost lease stops the gateway:
/// its store refuses every write already ([`MetaStore::on_engine`]).
pub fn hold_sole_lease(meta: MetaStore) -> SoleLease {
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    let (lost_tx, lost) = tokio::sync::watch::channel(None);
    let renewer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(RENEW_EVERY);
        tick.tick().await;
        let mut renewed = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = tick.tick() => {}
            }
            match claim(&meta).await {
                Ok(()) => renewed = tokio::time::Instant::now(),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "metadata database: the sole-gateway lease was not renewed");
                    let taken = matches!(
                        e.downcast_ref::<MetaError>(),
                        Some(MetaError::Leased { .. })
                    );
                    if taken || renewed.elapsed() > LEASE_TTL * 2 / 3 {
                        let _ = lost_tx.send(Some(format!("{e:#}")));
                        return;
                    }
                }
            }
        }
        // Released by the task that renews it: no renewal can land after
        // the release.
        let released = tokio::task::spawn_blocking(move || meta.release_lease(SOLE_LEASE)).await;
        if !matches!(released, Ok(Ok(()))) {
            tracing::warn!(
                "metadata database: the sole-gateway lease was not released; it runs out by itself"
            );
        }
    });
    SoleLease {
        stop,
        renewer,
        lost,
    }
}

impl SoleLease {
    /// Resolves when the lease is lost, with why.
    pub fn lost(&self) -> impl Future<Output = String> + use<> {
        let mut lost = self.lost.clone();
        async move {
            loop {
                if let Some(why) = lost.borrow_and_update().clone() {
                    return why;
                }
                if lost.changed().await.is_err() {
                    // The renewer ended without losing it (released).
                    std::future::pending::<()>().await;
                }
            }
        }
    }

    /// Why the lease was lost, if it was.
    pub fn lost_why(&self) -> Option<String> {
        self.lost.borrow().clone()
    }

    /// Stops renewing and gives the lease up, so that another gateway may
    /// start at once.
    pub async fn release(self) {
        let _ = self.stop.send(());
        let _ = self.renewer.await;
    }
}

fn term_ms() -> u64 {
    LEASE_TTL.as_millis() as u64
}

async fn claim(meta: &MetaStore) -> Result<()> {
    let meta = meta.clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    tokio::task::spawn_blocking(move || meta.claim_lease(SOLE_LEASE, now, term_ms()))
        .await
        .context("the lease task")?
        .map_err(anyhow::Error::from)
}
