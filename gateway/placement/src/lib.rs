//! The placement seam: given the backends and a write's code, which backend
//! gets each of the k + m fragments.
//!
//! The gateway asks a [`Placer`] once per segment, then checks the answer
//! with [`check`] whatever placer gave it, so a placement plugin (issue 5
//! puts WebAssembly placers behind this same trait) can never make the
//! gateway write two fragments to one backend or to a backend it does not
//! know. [`Spread`] is the built-in rule.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

use rand::Rng;
use shardgate_core::BackendId;

/// A backend as placement sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: BackendId,
    /// Labels such as region, provider, site.
    pub labels: BTreeMap<String, String>,
    /// Free bytes, when the backend reports them.
    pub free_bytes: Option<u64>,
    /// Reachable and writable at the last health check.
    pub healthy: bool,
}

impl Candidate {
    /// The failure domain: the `site` label, or the backend itself.
    pub fn site(&self) -> &str {
        self.labels
            .get("site")
            .map_or(self.id.as_str(), String::as_str)
    }
}

/// What is being placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    /// The segment's size when known in advance.
    pub size_hint: Option<u64>,
    pub k: usize,
    pub m: usize,
}

impl Request<'_> {
    pub fn width(&self) -> usize {
        self.k + self.m
    }
}

/// Why no placement could be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlacementError {
    #[error(
        "{needed} distinct backends are needed for k + m fragments, {available} are configured"
    )]
    TooFewBackends { needed: usize, available: usize },
    #[error("the placer chose {chosen} backends for {needed} fragments")]
    WrongCount { chosen: usize, needed: usize },
    #[error("the placer chose backend {0} twice")]
    Duplicate(BackendId),
    #[error("the placer chose unknown backend {0}")]
    Unknown(BackendId),
    #[error("placer failed: {0}")]
    Placer(String),
}

/// Picks a backend for each fragment: element i gets fragment i.
pub trait Placer: Send + Sync + std::fmt::Debug {
    fn place(
        &self,
        request: &Request<'_>,
        candidates: &[Candidate],
    ) -> Result<Vec<BackendId>, PlacementError>;

    /// What metrics and `simulate` call it: a plugin's name, or the
    /// built-in rule's.
    fn name(&self) -> &str;

    /// Its counters, for placers that can fail over (plugins).
    fn stats(&self) -> Option<&PlacerStats> {
        None
    }
}

/// Why a plugin's answer was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// It ran past its deadline.
    Timeout,
    /// It trapped (a crash in the guest).
    Trap,
    /// It tried to grow past its memory limit.
    OutOfMemory,
    /// It answered with an error of its own.
    Refused,
    /// Its answer broke a rule the host checks (length, unknown, duplicate,
    /// down or full backend).
    InvalidAnswer,
}

impl Failure {
    pub const ALL: [Failure; 5] = [
        Failure::Timeout,
        Failure::Trap,
        Failure::OutOfMemory,
        Failure::Refused,
        Failure::InvalidAnswer,
    ];

    /// Its name as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Trap => "trap",
            Failure::OutOfMemory => "out_of_memory",
            Failure::Refused => "refused",
            Failure::InvalidAnswer => "invalid_answer",
        }
    }
}

/// Counters of a placer that can fail: read by the gateway's `/metrics`.
#[derive(Debug, Default)]
pub struct PlacerStats {
    calls: AtomicU64,
    failures: [AtomicU64; Failure::ALL.len()],
    fallbacks: AtomicU64,
    refusals: AtomicU64,
}

impl PlacerStats {
    pub fn record_call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_failure(&self, failure: Failure) {
        self.failures[failure as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A failed answer replaced by the policy's fallback.
    pub fn record_fallback(&self) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
    }

    /// A failed answer that failed the write (a strict policy).
    pub fn record_refusal(&self) {
        self.refusals.fetch_add(1, Ordering::Relaxed);
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    pub fn failures(&self, failure: Failure) -> u64 {
        self.failures[failure as usize].load(Ordering::Relaxed)
    }

    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }
}

/// Checks a placer's answer: k + m distinct, known backends.
pub fn check(
    request: &Request<'_>,
    candidates: &[Candidate],
    chosen: &[BackendId],
) -> Result<(), PlacementError> {
    if chosen.len() != request.width() {
        return Err(PlacementError::WrongCount {
            chosen: chosen.len(),
            needed: request.width(),
        });
    }
    let known: BTreeSet<&BackendId> = candidates.iter().map(|c| &c.id).collect();
    let mut seen = BTreeSet::new();
    for id in chosen {
        if !known.contains(id) {
            return Err(PlacementError::Unknown(id.clone()));
        }
        if !seen.insert(id) {
            return Err(PlacementError::Duplicate(id.clone()));
        }
    }
    Ok(())
}

/// The built-in rule: k + m distinct backends, one per site before any
/// site gets a second, healthy backends before unhealthy ones (a write to
/// an unhealthy one fails and is recorded missing, within the write
/// quorum), each draw weighted by free space so that fuller backends fill
/// more slowly.
#[derive(Clone, Copy, Debug, Default)]
pub struct Spread;

/// Weight of a backend that does not report its free space: as if it had
/// 1 TiB free.
const UNKNOWN_FREE_BYTES: u64 = 1 << 40;

fn weight(c: &Candidate) -> f64 {
    // At least one byte, so that a full backend can still be drawn last.
    c.free_bytes.unwrap_or(UNKNOWN_FREE_BYTES).max(1) as f64
}

/// Orders `items` by a weighted random draw without replacement
/// (Efraimidis-Spirakis: sort by u^(1/w), largest first).
fn weighted_order<T>(items: Vec<T>, weight: impl Fn(&T) -> f64, rng: &mut impl Rng) -> Vec<T> {
    let mut keyed: Vec<(f64, T)> = items
        .into_iter()
        .map(|t| {
            let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
            (u.powf(1.0 / weight(&t)), t)
        })
        .collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
    keyed.into_iter().map(|(_, t)| t).collect()
}

impl Spread {
    /// The choice for `request`, drawing randomness from `rng`.
    pub fn place_with(
        &self,
        request: &Request<'_>,
        candidates: &[Candidate],
        rng: &mut impl Rng,
    ) -> Result<Vec<BackendId>, PlacementError> {
        let needed = request.width();
        if candidates.len() < needed {
            return Err(PlacementError::TooFewBackends {
                needed,
                available: candidates.len(),
            });
        }
        let mut chosen = Vec::with_capacity(needed);
        for healthy in [true, false] {
            // Sites in a weighted order, each a weighted queue of backends.
            let mut sites: BTreeMap<&str, Vec<&Candidate>> = BTreeMap::new();
            for c in candidates.iter().filter(|c| c.healthy == healthy) {
                sites.entry(c.site()).or_default().push(c);
            }
            let queues: Vec<Vec<&Candidate>> = sites
                .into_values()
                .map(|members| weighted_order(members, |c| weight(c), rng))
                .collect();
            let mut queues = weighted_order(queues, |q| q.iter().map(|c| weight(c)).sum(), rng);
            // Round-robin over the sites: one each, then a second each...
            while chosen.len() < needed && queues.iter().any(|q| !q.is_empty()) {
                for queue in &mut queues {
                    if chosen.len() == needed {
                        break;
                    }
                    if !queue.is_empty() {
                        chosen.push(queue.remove(0).id.clone());
                    }
                }
            }
        }
        Ok(chosen)
    }
}

impl Placer for Spread {
    fn place(
        &self,
        request: &Request<'_>,
        candidates: &[Candidate],
    ) -> Result<Vec<BackendId>, PlacementError> {
        self.place_with(request, candidates, &mut rand::rng())
    }

    fn name(&self) -> &str {
        "built-in spread"
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn candidate(id: &str, site: &str, free: u64, healthy: bool) -> Candidate {
        Candidate {
            id: BackendId::new(id).unwrap(),
            labels: BTreeMap::from([("site".to_string(), site.to_string())]),
            free_bytes: Some(free),
            healthy,
        }
    }

    fn request(k: usize, m: usize) -> Request<'static> {
        Request {
            bucket: "b",
            key: "k",
            size_hint: None,
            k,
            m,
        }
    }

    #[test]
    fn distinct_sites_before_a_second_backend_in_any_site() {
        // Three sites of three backends; 4 + 2 needs six: two per site,
        // never three in one.
        let cands: Vec<_> = (0..9)
            .map(|i| candidate(&format!("b{i}"), &format!("s{}", i % 3), 100, true))
            .collect();
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let chosen = Spread.place_with(&request(4, 2), &cands, &mut rng).unwrap();
            check(&request(4, 2), &cands, &chosen).unwrap();
            let mut per_site = BTreeMap::new();
            for id in &chosen {
                let c = cands.iter().find(|c| &c.id == id).unwrap();
                *per_site.entry(c.site()).or_insert(0) += 1;
            }
            assert_eq!(per_site.values().copied().collect::<Vec<_>>(), [2, 2, 2]);
        }
    }

    #[test]
    fn healthy_backends_first_then_the_rest() {
        let cands = vec![
            candidate("a", "a", 100, false),
            candidate("b", "b", 100, true),
            candidate("c", "c", 100, true),
        ];
        let chosen = Spread.place(&request(2, 1), &cands).unwrap();
        assert_eq!(chosen.last().unwrap().as_str(), "a");
        assert!(matches!(
            Spread.place(&request(3, 1), &cands),
            Err(PlacementError::TooFewBackends {
                needed: 4,
                available: 3
            })
        ));
    }

    #[test]
    fn emptier_backends_are_chosen_more_often() {
        // One fragment among two backends, one with 9x the free space: it
        // should get about 90% of the first fragments.
        let cands = vec![
            candidate("full", "x", 100, true),
            candidate("empty", "y", 900, true),
        ];
        let mut rng = StdRng::seed_from_u64(1);
        let first_empty = (0..2000)
            .filter(|_| {
                Spread.place_with(&request(1, 0), &cands, &mut rng).unwrap()[0].as_str() == "empty"
            })
            .count();
        assert!((1700..1900).contains(&first_empty), "{first_empty}");
    }

    #[test]
    fn check_refuses_bad_answers() {
        let cands = vec![candidate("a", "a", 1, true), candidate("b", "b", 1, true)];
        let id = |s: &str| BackendId::new(s).unwrap();
        let r = request(1, 1);
        assert!(matches!(
            check(&r, &cands, &[id("a")]),
            Err(PlacementError::WrongCount { .. })
        ));
        assert!(matches!(
            check(&r, &cands, &[id("a"), id("a")]),
            Err(PlacementError::Duplicate(_))
        ));
        assert!(matches!(
            check(&r, &cands, &[id("a"), id("z")]),
            Err(PlacementError::Unknown(_))
        ));
        check(&r, &cands, &[id("b"), id("a")]).unwrap();
    }
}
