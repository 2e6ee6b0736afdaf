//! The placement seam: given the backends and a write's code, which backend
//! gets each of the k + m fragments.
//!
//! The gateway asks a [`Placer`] once per segment it writes, and repair
//! and rebalancing ask it where to move fragments (a [`Request`] whose
//! `current` names the backends that already hold some of them). Whatever
//! placer answered, [`check`] runs on the answer, so a placement plugin
//! (a WebAssembly placer behind this same trait) can never make the
//! gateway write two fragments to one backend or to a backend it does not
//! know. [`Spread`] is the built-in rule, and every plugin's fallback.

mod tolerance;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use shardgate_core::BackendId;

pub use tolerance::{Dimension, Domain, Tolerance, tolerance};

/// A backend as placement sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub id: BackendId,
    /// Labels such as region, provider, site.
    pub labels: BTreeMap<String, String>,
    /// The most bytes it may hold, when configured.
    pub capacity_bytes: Option<u64>,
    /// Free bytes, when the backend reports them.
    pub free_bytes: Option<u64>,
    /// Reachable and writable at the last health check.
    pub healthy: bool,
    /// Its observed round-trip latency, when measured.
    pub latency: Option<Duration>,
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
    /// The object's Content-Type, if any.
    pub content_type: Option<&'a str>,
    pub k: usize,
    pub m: usize,
    /// Where fragments are now, by fragment index: empty for a new object
    /// (every fragment to be placed), or k + m entries when repair or
    /// rebalancing asks, `None` for each fragment to be (re)placed.
    pub current: &'a [Option<BackendId>],
}

impl Request<'_> {
    pub fn width(&self) -> usize {
        self.k + self.m
    }

    /// The backend that holds fragment `index` now, if any.
    pub fn current(&self, index: usize) -> Option<&BackendId> {
        self.current.get(index).and_then(Option::as_ref)
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
    last_failure: Mutex<Option<(Failure, String)>>,
}

impl PlacerStats {
    pub fn record_call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// A failed answer, and why (kept until the next failure).
    pub fn record_failure(&self, failure: Failure, why: &str) {
        self.failures[failure as usize].fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last_failure.lock() {
            *last = Some((failure, why.to_string()));
        }
    }

    /// The most recent failure and its reason.
    pub fn last_failure(&self) -> Option<(Failure, String)> {
        self.last_failure.lock().ok().and_then(|l| l.clone())
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
    /// The choice for `request`, drawing randomness from `rng`. Fragments
    /// that `request.current` places on a known backend stay there; the
    /// others go, one by one, to the site holding the fewest fragments so
    /// far (healthy backends first).
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
        let mut slots: Vec<Option<&Candidate>> = vec![None; needed];
        let mut used: BTreeSet<&BackendId> = BTreeSet::new();
        let mut per_site: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, slot) in slots.iter_mut().enumerate() {
            let kept = request
                .current(i)
                .and_then(|id| candidates.iter().find(|c| &c.id == id));
            if let Some(c) = kept
                && used.insert(&c.id)
            {
                *slot = Some(c);
                *per_site.entry(c.site()).or_default() += 1;
            }
        }
        let mut open = slots.iter().filter(|s| s.is_none()).count();
        let mut fill = Vec::with_capacity(open);
        for healthy in [true, false] {
            // Sites in a weighted order, each a weighted queue of backends.
            let mut sites: BTreeMap<&str, Vec<&Candidate>> = BTreeMap::new();
            for c in candidates
                .iter()
                .filter(|c| c.healthy == healthy && !used.contains(&c.id))
            {
                sites.entry(c.site()).or_default().push(c);
            }
            let queues: Vec<(&str, Vec<&Candidate>)> = sites
                .into_iter()
                .map(|(site, members)| (site, weighted_order(members, |c| weight(c), rng)))
                .collect();
            let mut queues =
                weighted_order(queues, |(_, q)| q.iter().map(|c| weight(c)).sum(), rng);
            // The least loaded site with a backend left; ties in the
            // weighted order. From empty sites this is a round-robin.
            while open > 0 {
                let Some(next) = queues
                    .iter_mut()
                    .filter(|(_, q)| !q.is_empty())
                    .min_by_key(|(site, _)| per_site.get(site).copied().unwrap_or(0))
                else {
                    break;
                };
                let c = next.1.remove(0);
                *per_site.entry(next.0).or_default() += 1;
                fill.push(c);
                open -= 1;
            }
        }
        let mut fill = fill.into_iter();
        slots
            .into_iter()
            .map(|slot| {
                slot.or_else(|| fill.next()).map(|c| c.id.clone()).ok_or(
                    PlacementError::TooFewBackends {
                        needed,
                        available: candidates.len(),
                    },
                )
            })
            .collect()
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
            capacity_bytes: None,
            free_bytes: Some(free),
            healthy,
            latency: None,
        }
    }

    fn request(k: usize, m: usize) -> Request<'static> {
        Request {
            bucket: "b",
            key: "k",
            size_hint: None,
            content_type: None,
            k,
            m,
            current: &[],
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
    fn placed_fragments_stay_and_the_rest_fill_the_emptiest_sites() {
        // Sites a, b, c with two backends each. Fragments 0 and 2 are on
        // a0 and a1 already; fragment 4 is on a backend that is gone, and
        // fragment 5 names a0 again. Site a is full (2 of 6), so the four
        // open fragments go two to b and two to c.
        let cands: Vec<_> = ["a0", "a1", "b0", "b1", "c0", "c1"]
            .iter()
            .map(|id| candidate(id, &id[..1], 100, true))
            .collect();
        let id = |s: &str| BackendId::new(s).unwrap();
        let current = [
            Some(id("a0")),
            None,
            Some(id("a1")),
            None,
            Some(id("gone")),
            Some(id("a0")),
        ];
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..100 {
            let mut r = request(4, 2);
            r.current = &current;
            let chosen = Spread.place_with(&r, &cands, &mut rng).unwrap();
            check(&r, &cands, &chosen).unwrap();
            assert_eq!((chosen[0].as_str(), chosen[2].as_str()), ("a0", "a1"));
            let sites: Vec<&str> = [1, 3, 4, 5]
                .iter()
                .map(|i| &chosen[*i].as_str()[..1])
                .collect();
            assert_eq!(sites.iter().filter(|s| **s == "b").count(), 2, "{chosen:?}");
            assert_eq!(sites.iter().filter(|s| **s == "c").count(), 2, "{chosen:?}");
        }
    }

    #[test]
    fn a_placed_fragment_on_a_down_backend_stays_when_asked_to() {
        // Repair moves only what it names: a fragment on a down backend
        // that the caller left in `current` is not moved by the placer.
        let cands = vec![
            candidate("a", "a", 100, false),
            candidate("b", "b", 100, true),
            candidate("c", "c", 100, true),
        ];
        let id = |s: &str| BackendId::new(s).unwrap();
        let current = [None, Some(id("a")), None];
        let mut r = request(2, 1);
        r.current = &current;
        let chosen = Spread.place(&r, &cands).unwrap();
        assert_eq!(chosen[1].as_str(), "a");
        let mut rest = [chosen[0].as_str(), chosen[2].as_str()];
        rest.sort();
        assert_eq!(rest, ["b", "c"]);
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
