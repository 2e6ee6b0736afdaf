//! A plugin behind the gateway's `Placer` seam, with every answer checked
//! and the policy's fallback when the plugin fails.

use std::collections::BTreeSet;
use std::sync::Arc;

use shardgate_core::BackendId;
use shardgate_placement::{
    Candidate, Failure, PlacementError, Placer, PlacerStats, Request, check,
};

use crate::plugin::{Plugin, PluginError};
use crate::wit::{self, Health};

/// What happens when the plugin fails or answers nonsense.
#[derive(Clone, Debug)]
pub enum Strictness {
    /// The write fails with the plugin's error (an S3 503 with its message).
    Strict,
    /// The write is placed by this placer instead (logged and counted).
    Fallback(Arc<dyn Placer>),
}

/// A placement policy implemented by a plugin.
#[derive(Debug)]
pub struct PluginPlacer {
    plugin: Arc<Plugin>,
    params: Vec<(String, String)>,
    strictness: Strictness,
    stats: PlacerStats,
}

impl PluginPlacer {
    /// Checks `params` with the plugin (at load time) and wraps it.
    pub fn new(
        plugin: Arc<Plugin>,
        mut params: Vec<(String, String)>,
        strictness: Strictness,
    ) -> Result<Self, PluginError> {
        params.sort();
        plugin.validate_params(&params)?;
        Ok(Self {
            plugin,
            params,
            strictness,
            stats: PlacerStats::default(),
        })
    }

    /// How many placements used the fallback or failed (when strict).
    pub fn fallbacks(&self) -> u64 {
        self.stats.fallbacks() + self.stats.refusals()
    }

    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    /// The plugin's answer, checked: k + m distinct known candidates, each
    /// either the fragment's current backend or one that is up and has room
    /// for the fragment (when sizes are known).
    pub fn ask(
        &self,
        request: &Request<'_>,
        candidates: &[Candidate],
    ) -> Result<Vec<BackendId>, (Failure, String)> {
        let invalid = |why: String| (Failure::InvalidAnswer, why);
        if !request.current.is_empty() && request.current.len() != request.width() {
            return Err(invalid(format!(
                "{} current fragments for k + m = {}",
                request.current.len(),
                request.width()
            )));
        }
        // A fragment on a backend that is no longer a candidate must move.
        let current: Vec<Option<u32>> = (0..request.width())
            .map(|i| {
                let id = request.current(i)?;
                let index = candidates.iter().position(|c| &c.id == id)?;
                u32::try_from(index).ok()
            })
            .collect();
        let wit_request = wit::Request {
            object: wit::ObjectFacts {
                bucket: request.bucket.to_string(),
                key: request.key.to_string(),
                size: request.size_hint,
                content_type: request.content_type.map(str::to_string),
            },
            k: u8::try_from(request.k).map_err(|_| invalid("k exceeds 255".into()))?,
            m: u8::try_from(request.m).map_err(|_| invalid("m exceeds 255".into()))?,
            params: self.params.clone(),
            candidates: candidates
                .iter()
                .map(|c| wit::Candidate {
                    id: c.id.to_string(),
                    labels: c
                        .labels
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    capacity_bytes: c.capacity_bytes,
                    free_bytes: c.free_bytes,
                    health: if c.healthy {
                        Health::Healthy
                    } else {
                        Health::Down
                    },
                    latency_us: c
                        .latency
                        .map(|l| u32::try_from(l.as_micros()).unwrap_or(u32::MAX)),
                })
                .collect(),
            current: current.clone(),
        };
        let answer = self.plugin.place(&wit_request).map_err(|e| {
            let failure = match &e {
                PluginError::Timeout { .. } => Failure::Timeout,
                PluginError::OutOfMemory { .. } => Failure::OutOfMemory,
                PluginError::Refused { .. } => Failure::Refused,
                _ => Failure::Trap,
            };
            (failure, e.to_string())
        })?;
        if answer.len() != request.width() {
            return Err(invalid(format!(
                "plugin {} placed {} fragments, k + m = {}",
                self.plugin.name(),
                answer.len(),
                request.width()
            )));
        }
        let fragment_bytes = request
            .size_hint
            .map(|s| s.div_ceil(request.k.max(1) as u64));
        let mut seen = BTreeSet::new();
        let mut chosen = Vec::with_capacity(answer.len());
        for (fragment, index) in answer.into_iter().enumerate() {
            let Some(c) = candidates.get(index as usize) else {
                return Err(invalid(format!(
                    "plugin {} chose candidate {index} of {}",
                    self.plugin.name(),
                    candidates.len()
                )));
            };
            if !seen.insert(index) {
                return Err(invalid(format!(
                    "plugin {} chose backend {} twice",
                    self.plugin.name(),
                    c.id
                )));
            }
            // Staying put is always allowed: it writes nothing new there.
            let stays = current[fragment] == Some(index);
            if !c.healthy && !stays {
                return Err(invalid(format!(
                    "plugin {} chose backend {}, which is down",
                    self.plugin.name(),
                    c.id
                )));
            }
            if let (Some(need), Some(free)) = (fragment_bytes, c.free_bytes)
                && free < need
                && !stays
            {
                return Err(invalid(format!(
                    "plugin {} chose backend {} with {free} bytes free for a {need}-byte fragment",
                    self.plugin.name(),
                    c.id
                )));
            }
            chosen.push(c.id.clone());
        }
        Ok(chosen)
    }
}

impl Placer for PluginPlacer {
    fn place(
        &self,
        request: &Request<'_>,
        candidates: &[Candidate],
    ) -> Result<Vec<BackendId>, PlacementError> {
        self.stats.record_call();
        let answer = self.ask(request, candidates).and_then(|chosen| {
            match check(request, candidates, &chosen) {
                Ok(()) => Ok(chosen),
                Err(e) => Err((Failure::InvalidAnswer, e.to_string())),
            }
        });
        let (failure, why) = match answer {
            Ok(chosen) => return Ok(chosen),
            Err(e) => e,
        };
        self.stats.record_failure(failure, &why);
        match &self.strictness {
            Strictness::Strict => {
                self.stats.record_refusal();
                tracing::warn!(plugin = %self.plugin.name(), failure = failure.as_str(), error = %why, "placement refused (strict policy)");
                Err(PlacementError::Placer(why))
            }
            Strictness::Fallback(fallback) => {
                self.stats.record_fallback();
                tracing::warn!(plugin = %self.plugin.name(), failure = failure.as_str(), error = %why, "placement plugin failed; using the fallback");
                fallback.place(request, candidates)
            }
        }
    }

    fn name(&self) -> &str {
        self.plugin.name()
    }

    fn stats(&self) -> Option<&PlacerStats> {
        Some(&self.stats)
    }
}
