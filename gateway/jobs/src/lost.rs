//! Backends gone (issue 14): a backend down longer than its grace
//! (`[repair] backend_grace_secs`), or one that left the configuration,
//! has its fragments queued for repair, so their redundancy is restored
//! before another failure takes it.
//!
//! The repair queue is fed by a walk of every manifest (metadata only, no
//! backend I/O): once when a backend's grace runs out, and once at a start
//! whose configuration lacks a backend the last walk knew. The walk's
//! cursor is not kept: it is cheap (a few hundred thousand manifests a
//! second) and a restart redoes it. While the backend stays gone, repair
//! takes its fragments as lost without asking it; if it returns first,
//! repair finds them healthy and the entries go.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use shardgate_core::BackendId;
use shardgate_node::{GatewayError, blocking, now_ms};
use tracing::Instrument;

use crate::Jobs;

/// Object rows looked at per transaction.
const WALK_BATCH: usize = 512;
/// How often backends are looked at.
const PERIOD: Duration = Duration::from_secs(5);
/// The job-state key holding the configured backends of the last walk.
const STATE: &str = "backend-walk";
/// The lease of the walk (several gateways: one walks).
const WALK_LEASE: &str = "backend-walk";

/// Why the store is walked for backends gone at startup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Walk {
    /// No walk recorded yet (a new store, or one from before walks).
    FirstStart,
    /// A backend of the last walk is no longer configured.
    Shrank,
    /// Nothing to walk for until a backend goes.
    No,
}

impl Jobs {
    /// Whether `backend` is gone: not configured, or down past its grace.
    pub(crate) fn backend_gone(&self, backend: &BackendId) -> bool {
        if self.gw.backend(backend).is_none() {
            return true;
        }
        self.gw
            .backend_set()
            .board()
            .state(backend)
            .is_some_and(|s| !s.up && s.for_how_long >= self.settings.backend_grace)
    }

    pub(crate) fn spawn_backend_watch(self: &Arc<Self>) {
        let jobs = self.clone();
        tokio::spawn(
            async move {
                let mut walked_for: BTreeSet<BackendId> = BTreeSet::new();
                let first = jobs.configuration_shrank().await;
                let mut start_walk = first != Walk::No;
                loop {
                    let gone: BTreeSet<BackendId> = jobs
                        .gw
                        .backends()
                        .map(|b| b.id().clone())
                        .filter(|id| jobs.backend_gone(id))
                        .collect();
                    // A backend that came back and goes again is walked again.
                    walked_for.retain(|b| gone.contains(b));
                    let new: Vec<&BackendId> = gone.difference(&walked_for).collect();
                    // With several gateways, one walks (the others' turn comes
                    // should it go).
                    if (start_walk || !new.is_empty()) && jobs.hold(WALK_LEASE).await {
                        if new.is_empty() && first == Walk::FirstStart {
                            // Nothing is known gone: a first walk, not news.
                            tracing::info!("first walk for fragments on backends not configured");
                        } else {
                            tracing::warn!(
                                backends = ?new,
                                grace = ?jobs.settings.backend_grace,
                                "backends gone: their fragments are queued for repair"
                            );
                        }
                        match jobs.queue_lost_fragments().await {
                            Ok(n) => {
                                tracing::info!(
                                    objects = n,
                                    "objects queued for fragments on backends gone"
                                );
                                walked_for = gone;
                                start_walk = false;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "walk for backends gone failed; retried")
                            }
                        }
                    }
                    tokio::time::sleep(PERIOD).await;
                }
            }
            .instrument(tracing::info_span!(target: "shardgate::task", "lost_backends")),
        );
    }

    /// Whether a backend the last walk knew is no longer configured (its
    /// fragments need queuing), or no walk was ever recorded.
    async fn configuration_shrank(&self) -> Walk {
        let meta = self.gw.meta().clone();
        let saved = match blocking(move || meta.job_state(STATE)).await {
            Ok(saved) => saved,
            Err(e) => {
                tracing::warn!(error = %e, "last walk for backends gone not read; walking");
                return Walk::Shrank;
            }
        };
        let Some(saved) = saved else {
            return Walk::FirstStart;
        };
        let shrank = String::from_utf8_lossy(&saved)
            .lines()
            .filter(|l| !l.is_empty())
            .any(|id| BackendId::new(id).map_or(true, |id| self.gw.backend(&id).is_none()));
        match shrank {
            true => Walk::Shrank,
            false => Walk::No,
        }
    }

    /// Walks every manifest once, queuing the objects with fragments on
    /// backends gone; then records the configured backends. Returns how
    /// many objects were newly queued.
    pub async fn queue_lost_fragments(self: &Arc<Self>) -> Result<usize, GatewayError> {
        let mut cursor: Option<Vec<u8>> = None;
        let mut queued = 0;
        loop {
            let meta = self.gw.meta().clone();
            let jobs = self.clone();
            let after = cursor.take();
            let (next, n) = blocking(move || {
                let gone = |b: &BackendId| jobs.backend_gone(b);
                meta.queue_lost_fragments(&gone, after.as_deref(), WALK_BATCH, now_ms())
            })
            .await?;
            queued += n;
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let configured: String = self
            .gw
            .backends()
            .map(|b| format!("{}\n", b.id()))
            .collect();
        let meta = self.gw.meta().clone();
        blocking(move || meta.set_job_state(STATE, configured.as_bytes())).await?;
        Ok(queued)
    }
}
