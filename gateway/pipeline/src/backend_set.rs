//! The backends a gateway knows, by id, and what has been seen of their
//! health.

use std::collections::BTreeMap;
use std::sync::Arc;

use shardgate_backend::{Backend, BackendId};

use crate::health::{HealthBoard, Monitored};

/// Every configured backend, looked up by the ids that manifests record,
/// with the [`HealthBoard`] that reads consult to skip and hedge.
#[derive(Clone, Debug, Default)]
pub struct BackendSet {
    /// Shared: every read takes a copy of the set.
    backends: Arc<BTreeMap<BackendId, Arc<dyn Backend>>>,
    board: Arc<HealthBoard>,
}

impl BackendSet {
    /// A set from backends, not monitored: all count as up (for tests and
    /// tools). A later duplicate id replaces an earlier one.
    pub fn new(backends: impl IntoIterator<Item = Arc<dyn Backend>>) -> Self {
        let backends: BTreeMap<_, _> = backends.into_iter().map(|b| (b.id().clone(), b)).collect();
        let board = Arc::new(HealthBoard::new(backends.keys()));
        Self {
            backends: Arc::new(backends),
            board,
        }
    }

    /// A set whose backends are each wrapped in [`Monitored`], so that every
    /// call made through the set reports to its board.
    pub fn monitored(backends: impl IntoIterator<Item = Arc<dyn Backend>>) -> Self {
        let plain = Self::new(backends);
        let board = plain.board.clone();
        let backends = plain
            .backends
            .iter()
            .map(|(id, b)| {
                let wrapped: Arc<dyn Backend> = Arc::new(Monitored::new(b.clone(), board.clone()));
                (id.clone(), wrapped)
            })
            .collect();
        Self {
            backends: Arc::new(backends),
            board,
        }
    }

    /// The backend with this id.
    pub fn get(&self, id: &BackendId) -> Option<&Arc<dyn Backend>> {
        self.backends.get(id)
    }

    /// All backends, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Backend>> {
        self.backends.values()
    }

    /// How many backends.
    pub fn len(&self) -> usize {
        self.backends.len()
    }

    /// No backend at all.
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// What has been seen of the backends' health.
    pub fn board(&self) -> &Arc<HealthBoard> {
        &self.board
    }
}
