//! The backends a gateway knows, by id.

use std::collections::BTreeMap;
use std::sync::Arc;

use shardgate_backend::{Backend, BackendId};

/// Every configured backend, looked up by the ids that manifests record.
#[derive(Clone, Debug, Default)]
pub struct BackendSet(BTreeMap<BackendId, Arc<dyn Backend>>);

impl BackendSet {
    /// A set from backends; a later duplicate id replaces an earlier one.
    pub fn new(backends: impl IntoIterator<Item = Arc<dyn Backend>>) -> Self {
        Self(backends.into_iter().map(|b| (b.id().clone(), b)).collect())
    }

    /// The backend with this id.
    pub fn get(&self, id: &BackendId) -> Option<&Arc<dyn Backend>> {
        self.0.get(id)
    }

    /// All backends, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Backend>> {
        self.0.values()
    }

    /// How many backends.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No backend at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
