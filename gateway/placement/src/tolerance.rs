//! What a placement survives.
//!
//! An object stays readable while k of its k + m fragments are left. Given
//! where the fragments went, this says for each failure domain (the
//! backends themselves, and labels such as site, provider, region) which
//! single domain can be lost with the object still readable, and how many
//! domains can be lost whichever they are (the worst case: the largest
//! ones). `shardgate simulate` prints it; scrub and rebalancing can use it
//! to find objects at risk. Pure: no I/O.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::Candidate;

/// One value of a label (one site, one provider...), and what losing it does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Domain {
    /// The label's value; for a backend without the label, its id.
    pub value: String,
    /// False when `value` is a backend id standing for a missing label.
    pub labelled: bool,
    /// Fragments in this domain (not counting those already lost).
    pub fragments: usize,
    /// Fragments left if this domain is lost.
    pub left: usize,
    /// Whether `left` is at least k.
    pub readable: bool,
}

/// Every domain of one label.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Dimension {
    /// `backend`, or a label key such as `site`.
    pub label: String,
    /// Its domains, most fragments first (then by value).
    pub domains: Vec<Domain>,
    /// How many domains can be lost, whichever they are.
    pub any_lost: usize,
}

impl Dimension {
    /// The single loss that leaves the fewest fragments.
    pub fn worst(&self) -> Option<&Domain> {
        self.domains.first()
    }
}

/// The report for one placement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Tolerance {
    /// Fragments needed to read (k).
    pub needed: usize,
    /// Fragments placed (k + m).
    pub width: usize,
    /// Fragments on backends that are down: lost from the start.
    pub lost_at_write: usize,
    /// Readable at all, before anything else is lost.
    pub readable: bool,
    pub dimensions: Vec<Dimension>,
}

/// The report for fragments placed on `placed` (one candidate per
/// fragment, in order), of which k are needed to read; fragments on
/// unhealthy candidates count as lost. `labels` are the label keys to
/// report beside the backends themselves.
pub fn tolerance(needed: usize, placed: &[&Candidate], labels: &[&str]) -> Tolerance {
    let alive: Vec<&Candidate> = placed.iter().copied().filter(|c| c.healthy).collect();
    let spare = alive.len().checked_sub(needed);
    let dimension = |label: &str, domain_of: &dyn Fn(&Candidate) -> (String, bool)| {
        let mut counts: BTreeMap<(String, bool), usize> = BTreeMap::new();
        for c in &alive {
            *counts.entry(domain_of(c)).or_default() += 1;
        }
        let mut domains: Vec<Domain> = counts
            .into_iter()
            .map(|((value, labelled), fragments)| {
                let left = alive.len() - fragments;
                Domain {
                    value,
                    labelled,
                    fragments,
                    left,
                    readable: left >= needed,
                }
            })
            .collect();
        domains.sort_by(|a, b| b.fragments.cmp(&a.fragments).then(a.value.cmp(&b.value)));
        // The largest domains first: the most that can go whatever goes.
        let mut budget = spare.unwrap_or(0);
        let mut any_lost = 0;
        for d in &domains {
            if spare.is_none() || d.fragments > budget {
                break;
            }
            budget -= d.fragments;
            any_lost += 1;
        }
        Dimension {
            label: label.to_string(),
            domains,
            any_lost,
        }
    };
    let mut dimensions = vec![dimension("backend", &|c| (c.id.to_string(), true))];
    for label in labels {
        if alive.iter().any(|c| c.labels.contains_key(*label)) {
            dimensions.push(dimension(label, &|c| match c.labels.get(*label) {
                Some(v) => (v.clone(), true),
                None => (c.id.to_string(), false),
            }));
        }
    }
    Tolerance {
        needed,
        width: placed.len(),
        lost_at_write: placed.len() - alive.len(),
        readable: spare.is_some(),
        dimensions,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use shardgate_core::BackendId;

    fn backend(id: &str, labels: &[(&str, &str)], healthy: bool) -> Candidate {
        Candidate {
            id: BackendId::new(id).unwrap(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            capacity_bytes: None,
            free_bytes: None,
            healthy,
            latency: None,
        }
    }

    #[test]
    fn three_sites_of_two_survive_any_one_site_and_any_two_backends() {
        let cands: Vec<Candidate> = ["a", "a", "b", "b", "c", "c"]
            .iter()
            .enumerate()
            .map(|(i, s)| backend(&format!("{s}{i}"), &[("site", s), ("provider", "p")], true))
            .collect();
        let placed: Vec<&Candidate> = cands.iter().collect();
        let t = tolerance(4, &placed, &["site", "provider", "region"]);
        assert!(t.readable);
        assert_eq!((t.needed, t.width, t.lost_at_write), (4, 6, 0));
        // No candidate has a region label: no region dimension.
        let labels: Vec<&str> = t.dimensions.iter().map(|d| d.label.as_str()).collect();
        assert_eq!(labels, ["backend", "site", "provider"]);
        assert_eq!(t.dimensions[0].any_lost, 2);
        let site = &t.dimensions[1];
        assert_eq!(site.any_lost, 1);
        assert!(
            site.domains
                .iter()
                .all(|d| d.fragments == 2 && d.left == 4 && d.readable)
        );
        // One provider holds everything: losing it loses the object.
        let provider = &t.dimensions[2];
        assert_eq!(provider.any_lost, 0);
        let worst = provider.worst().unwrap();
        assert_eq!(
            (worst.value.as_str(), worst.left, worst.readable),
            ("p", 0, false)
        );
    }

    #[test]
    fn fragments_on_down_backends_are_lost_already_and_unlabelled_backends_stand_alone() {
        let cands = [
            backend("x1", &[("region", "eu")], true),
            backend("x2", &[("region", "eu")], true),
            backend("x3", &[("region", "us")], true),
            backend("x4", &[], true),
            backend("x5", &[("region", "us")], false),
        ];
        let placed: Vec<&Candidate> = cands.iter().collect();
        let t = tolerance(3, &placed, &["region"]);
        assert_eq!(t.lost_at_write, 1);
        assert!(t.readable);
        assert_eq!(t.dimensions[0].any_lost, 1);
        let region = &t.dimensions[1];
        let summary: Vec<(&str, bool, usize, bool)> = region
            .domains
            .iter()
            .map(|d| (d.value.as_str(), d.labelled, d.fragments, d.readable))
            .collect();
        assert_eq!(
            summary,
            [
                ("eu", true, 2, false),
                ("us", true, 1, true),
                ("x4", false, 1, true)
            ]
        );
        // Losing eu (2) leaves 2 < 3; the largest goes first in the worst case.
        assert_eq!(region.any_lost, 0);
    }

    #[test]
    fn fewer_than_k_alive_is_unreadable_from_the_start() {
        let cands = [
            backend("a", &[], true),
            backend("b", &[], false),
            backend("c", &[], false),
        ];
        let placed: Vec<&Candidate> = cands.iter().collect();
        let t = tolerance(2, &placed, &["site"]);
        assert!(!t.readable);
        assert_eq!(t.dimensions[0].any_lost, 0);
        assert!(!t.dimensions[0].domains[0].readable);
    }
}
