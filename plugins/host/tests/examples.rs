//! The example plugins, run through the host as the gateway runs them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use shardgate_core::BackendId;
use shardgate_placement::{Candidate, Placer, Request};
use shardgate_plugin_host::wit::{self, Health, ObjectFacts};
use shardgate_plugin_host::{Limits, Plugin, PluginError, PluginHost, PluginPlacer, Strictness};

fn load(host: &PluginHost, rel: &str) -> Plugin {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(rel);
    host.load(
        &path,
        Limits {
            memory_bytes: 16 << 20,
            deadline: Duration::from_millis(500),
        },
    )
    .unwrap()
}

/// xorshift: deterministic cases, bounded in number.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn candidate(i: usize, site: usize, down: bool, free: u64) -> wit::Candidate {
    wit::Candidate {
        id: format!("b{i:02}"),
        labels: vec![("site".into(), format!("s{site}"))],
        capacity_bytes: None,
        free_bytes: Some(free),
        health: if down { Health::Down } else { Health::Healthy },
        latency_us: None,
    }
}

fn request(key: &str, k: u8, m: u8, candidates: Vec<wit::Candidate>) -> wit::Request {
    wit::Request {
        object: ObjectFacts {
            bucket: "b".into(),
            key: key.into(),
            size: Some(4 << 20),
            content_type: None,
        },
        k,
        m,
        params: vec![],
        current: vec![None; (k + m) as usize],
        candidates,
    }
}

#[test]
fn spread_sites_never_overloads_a_site_and_says_when_it_cannot() {
    let host = PluginHost::new(None).unwrap();
    let plugin = load(&host, "spread-sites-c/spread-sites.wasm");
    let mut rng = Rng(0x5eed);
    let (mut placed, mut refused) = (0, 0);
    for case in 0..400 {
        let n = 1 + rng.below(12) as usize;
        let sites = 1 + rng.below(6) as usize;
        let cands: Vec<_> = (0..n)
            .map(|i| {
                let free = if rng.below(10) == 0 { 1000 } else { 1 << 40 };
                candidate(i, rng.below(sites as u64) as usize, rng.below(6) == 0, free)
            })
            .collect();
        let k = 1 + rng.below(6) as u8;
        let m = rng.below(4) as u8;
        let width = (k + m) as usize;
        let req = request(&format!("key-{case}"), k, m, cands.clone());
        // What a correct answer must respect.
        let fragment = (4u64 << 20).div_ceil(k as u64);
        let eligible: Vec<usize> = (0..n)
            .filter(|i| {
                cands[*i].health != Health::Down && cands[*i].free_bytes.unwrap() >= fragment
            })
            .collect();
        let mut eligible_sites: Vec<&str> = eligible
            .iter()
            .map(|i| cands[*i].labels[0].1.as_str())
            .collect();
        eligible_sites.sort();
        eligible_sites.dedup();
        let limit = width.div_ceil(eligible_sites.len().max(1));
        match plugin.place(&req) {
            Ok(answer) => {
                placed += 1;
                assert_eq!(answer.len(), width);
                let mut per_site: BTreeMap<&str, usize> = BTreeMap::new();
                let mut seen = std::collections::BTreeSet::new();
                for i in &answer {
                    assert!(
                        eligible.contains(&(*i as usize)),
                        "case {case}: {i} not eligible"
                    );
                    assert!(seen.insert(*i), "case {case}: {i} twice");
                    *per_site
                        .entry(cands[*i as usize].labels[0].1.as_str())
                        .or_default() += 1;
                }
                assert!(
                    per_site.values().all(|c| *c <= limit),
                    "case {case}: {per_site:?} > {limit}"
                );
            }
            Err(PluginError::Refused { message, .. }) => {
                refused += 1;
                assert!(message.contains("not enough"), "{message}");
                // Refusing is right only when no answer exists.
                let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
                for i in &eligible {
                    *counts.entry(cands[*i].labels[0].1.as_str()).or_default() += 1;
                }
                let possible: usize = counts.values().map(|c| (*c).min(limit)).sum();
                assert!(
                    possible < width,
                    "case {case}: refused although {possible} >= {width}"
                );
            }
            Err(e) => panic!("case {case}: {e}"),
        }
    }
    assert!(
        placed > 100 && refused > 20,
        "{placed} placed, {refused} refused"
    );
}

#[test]
fn spread_sites_keeps_fragments_already_placed() {
    let host = PluginHost::new(None).unwrap();
    let plugin = load(&host, "spread-sites-c/spread-sites.wasm");
    let cands: Vec<_> = (0..6).map(|i| candidate(i, i, false, 1 << 40)).collect();
    let mut req = request("repair", 4, 2, cands);
    req.current = vec![Some(5), None, Some(0), None, None, None];
    let answer = plugin.place(&req).unwrap();
    assert_eq!((answer[0], answer[2]), (5, 0));
    let mut sorted = answer.clone();
    sorted.sort();
    assert_eq!(sorted, [0, 1, 2, 3, 4, 5]);
    // Parameters are checked.
    assert!(
        plugin
            .validate_params(&[("max-per-site".into(), "2".into())])
            .is_ok()
    );
    assert!(
        plugin
            .validate_params(&[("max-per-site".into(), "zero".into())])
            .is_err()
    );
    assert!(
        plugin
            .validate_params(&[("colour".into(), "red".into())])
            .is_err()
    );
}

#[test]
fn repair_through_the_placer_keeps_placed_fragments_even_on_a_down_backend() {
    // What repair asks: fragment 1 is on b0, which is down right now (it
    // stays: repair moves only what it names), fragment 3 on b4, and
    // fragment 2 on a backend that is gone (it must be placed again).
    let host = PluginHost::new(None).unwrap();
    let plugin = std::sync::Arc::new(load(&host, "spread-sites-c/spread-sites.wasm"));
    let placer = PluginPlacer::new(plugin, vec![], Strictness::Strict).unwrap();
    let id = |s: &str| BackendId::new(s).unwrap();
    let cands: Vec<Candidate> = (0..7)
        .map(|i| Candidate {
            id: id(&format!("b{i}")),
            labels: BTreeMap::from([("site".to_string(), format!("s{i}"))]),
            capacity_bytes: None,
            free_bytes: Some(1 << 40),
            healthy: i != 0,
            latency: Some(Duration::from_micros(300 + i)),
        })
        .collect();
    let current = [
        None,
        Some(id("b0")),
        Some(id("gone")),
        Some(id("b4")),
        None,
        None,
    ];
    let request = Request {
        bucket: "b",
        key: "repair",
        size_hint: Some(1 << 20),
        content_type: None,
        k: 4,
        m: 2,
        current: &current,
    };
    let chosen = placer.place(&request, &cands).unwrap();
    assert_eq!((&chosen[1], &chosen[3]), (&id("b0"), &id("b4")));
    assert_eq!(chosen.iter().filter(|c| **c == id("b0")).count(), 1);
    assert_eq!(placer.fallbacks(), 0, "the plugin's own answer was used");
    // A new object never lands on the down backend.
    let fresh = Request {
        current: &[],
        ..request
    };
    assert!(!placer.place(&fresh, &cands).unwrap().contains(&id("b0")));
}

/// Builds an example from source with its own `build.sh` (the Python one
/// needs componentize-py from `tests/clients/requirements.txt`, the
/// JavaScript one `npm ci` in its folder; the README's test command does
/// both) and loads it with room for an interpreter.
fn build_and_load(dir: &str) -> Plugin {
    let out = tempfile::tempdir().unwrap();
    let wasm = out.path().join(format!("{dir}.wasm"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(dir)
        .join("build.sh");
    let status = std::process::Command::new(&script)
        .arg(&wasm)
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(status.success(), "{} failed", script.display());
    let host = PluginHost::new(None).unwrap();
    host.load(
        &wasm,
        Limits {
            memory_bytes: 64 << 20,
            deadline: Duration::from_millis(1000),
        },
    )
    .unwrap()
}

/// A candidate with these labels and free bytes.
fn labelled(i: usize, labels: &[(&str, String)], free: u64, health: Health) -> wit::Candidate {
    wit::Candidate {
        id: format!("b{i:02}"),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        capacity_bytes: None,
        free_bytes: Some(free),
        health,
        latency_us: None,
    }
}

fn provider_candidate(i: usize, provider: usize, cost: u32, down: bool) -> wit::Candidate {
    let health = if down { Health::Down } else { Health::Healthy };
    labelled(
        i,
        &[
            ("cost", cost.to_string()),
            ("provider", format!("p{provider}")),
        ],
        1 << 40,
        health,
    )
}

#[test]
fn provider_limit_python_never_puts_more_than_m_with_one_provider() {
    let plugin = build_and_load("provider-limit-py");
    let mut rng = Rng(0xc0ffee);
    let (mut placed, mut refused) = (0, 0);
    for case in 0..150 {
        let n = 1 + rng.below(12) as usize;
        let providers = 1 + rng.below(5) as usize;
        let cands: Vec<_> = (0..n)
            .map(|i| {
                provider_candidate(
                    i,
                    rng.below(providers as u64) as usize,
                    1 + rng.below(5) as u32,
                    rng.below(8) == 0,
                )
            })
            .collect();
        let k = 1 + rng.below(5) as u8;
        let m = 1 + rng.below(3) as u8;
        let width = (k + m) as usize;
        let req = request(&format!("obj-{case}"), k, m, cands.clone());
        let provider = |i: usize| cands[i].labels[1].1.clone();
        let eligible: Vec<usize> = (0..n)
            .filter(|i| cands[*i].health != Health::Down)
            .collect();
        match plugin.place(&req) {
            Ok(answer) => {
                placed += 1;
                assert_eq!(answer.len(), width);
                let mut per: BTreeMap<String, usize> = BTreeMap::new();
                let mut seen = std::collections::BTreeSet::new();
                for i in &answer {
                    assert!(eligible.contains(&(*i as usize)), "case {case}");
                    assert!(seen.insert(*i), "case {case}: twice");
                    *per.entry(provider(*i as usize)).or_default() += 1;
                }
                assert!(
                    per.values().all(|c| *c <= m as usize),
                    "case {case}: {per:?}"
                );
            }
            Err(PluginError::Refused { message, .. }) => {
                refused += 1;
                assert!(message.contains("not enough"), "{message}");
                let mut counts: BTreeMap<String, usize> = BTreeMap::new();
                for i in &eligible {
                    *counts.entry(provider(*i)).or_default() += 1;
                }
                let possible: usize = counts.values().map(|c| (*c).min(m as usize)).sum();
                assert!(
                    possible < width,
                    "case {case}: refused, {possible} >= {width}"
                );
            }
            Err(e) => panic!("case {case}: {e}"),
        }
    }
    assert!(
        placed > 20 && refused > 20,
        "{placed} placed, {refused} refused"
    );
    // Cheapest first: with room everywhere, the cheapest providers fill up
    // to m each before a dearer one is used.
    let cands: Vec<_> = (0..9)
        .map(|i| provider_candidate(i, i / 3, (i / 3) as u32 + 1, false))
        .collect();
    let answer = plugin.place(&request("cheap", 2, 2, cands)).unwrap();
    let mut by_provider: Vec<usize> = answer.iter().map(|i| *i as usize / 3).collect();
    by_provider.sort();
    assert_eq!(by_provider, [0, 0, 1, 1]);
}

fn site_candidate(
    i: usize,
    site: usize,
    onprem: bool,
    health: Health,
    free: u64,
) -> wit::Candidate {
    let provider = if onprem { "onprem" } else { "cloud" };
    labelled(
        i,
        &[("provider", provider.into()), ("site", format!("s{site}"))],
        free,
        health,
    )
}

#[test]
fn onprem_one_javascript_always_keeps_a_fragment_on_prem() {
    let plugin = build_and_load("onprem-one-js");
    let fragment = (4u64 << 20).div_ceil(4);
    let mut rng = Rng(0x5eed);
    let (mut placed, mut refused) = (0, 0);
    for case in 0..200 {
        let n = 1 + rng.below(14) as usize;
        let sites = 1 + rng.below(4) as usize;
        let cands: Vec<_> = (0..n)
            .map(|i| {
                let health = match rng.below(10) {
                    0 => Health::Down,
                    1 => Health::Degraded,
                    _ => Health::Healthy,
                };
                let free = if rng.below(10) == 0 {
                    fragment - 1
                } else {
                    1 << 40
                };
                site_candidate(
                    i,
                    rng.below(sites as u64) as usize,
                    rng.below(4) == 0,
                    health,
                    free,
                )
            })
            .collect();
        let (k, m) = (4, 1 + rng.below(3) as u8);
        let width = (k + m) as usize;
        let min = 1 + rng.below(2) as usize;
        let mut req = request(&format!("obj-{case}"), k, m, cands.clone());
        req.params = vec![("min".into(), min.to_string())];
        let onprem = |i: usize| cands[i].labels[0].1 == "onprem";
        let eligible: Vec<usize> = (0..n)
            .filter(|i| cands[*i].health != Health::Down && cands[*i].free_bytes >= Some(fragment))
            .collect();
        let eligible_onprem = eligible.iter().filter(|i| onprem(**i)).count();
        match plugin.place(&req) {
            Ok(answer) => {
                placed += 1;
                assert_eq!(answer.len(), width, "case {case}");
                let mut seen = std::collections::BTreeSet::new();
                for i in &answer {
                    assert!(
                        eligible.contains(&(*i as usize)),
                        "case {case}: {i} not eligible"
                    );
                    assert!(seen.insert(*i), "case {case}: twice");
                }
                let on = answer.iter().filter(|i| onprem(**i as usize)).count();
                assert!(
                    on >= min,
                    "case {case}: {on} on-prem fragments, wanted {min}"
                );
                // A degraded backend only when the healthy ones ran out
                // (of all, or of the on-prem ones while on-prem is needed).
                let healthy = |i: &usize| cands[*i].health == Health::Healthy;
                let healthy_all = eligible.iter().filter(|i| healthy(i)).count();
                let healthy_onprem = eligible
                    .iter()
                    .filter(|i| healthy(i) && onprem(**i))
                    .count();
                for i in answer.iter().map(|i| *i as usize).filter(|i| !healthy(i)) {
                    assert!(
                        healthy_all < width || (onprem(i) && healthy_onprem < min),
                        "case {case}: degraded {i} used with {healthy_all} healthy backends"
                    );
                }
            }
            Err(PluginError::Refused { message, .. }) => {
                refused += 1;
                if message.contains("on-prem") {
                    assert!(eligible_onprem < min, "case {case}: {message}");
                } else {
                    assert!(message.contains("not enough"), "{message}");
                    assert!(eligible.len() < width, "case {case}: {message}");
                }
            }
            Err(e) => panic!("case {case}: {e}"),
        }
    }
    assert!(
        placed > 20 && refused > 20,
        "{placed} placed, {refused} refused"
    );

    // Spread: with two sites of four healthy backends (one on-prem each),
    // six fragments go three and three.
    let cands: Vec<_> = (0..8)
        .map(|i| site_candidate(i, i / 4, i % 4 == 0, Health::Healthy, 1 << 40))
        .collect();
    for key in ["a", "b", "c", "d"] {
        let answer = plugin.place(&request(key, 4, 2, cands.clone())).unwrap();
        let site0 = answer.iter().filter(|i| **i < 4).count();
        assert_eq!(site0, 3, "{key}: {answer:?}");
        assert!(answer.iter().any(|i| i % 4 == 0), "{key}: {answer:?}");
        // The same object gets the same answer.
        assert_eq!(
            answer,
            plugin.place(&request(key, 4, 2, cands.clone())).unwrap()
        );
    }

    // Repair: fragments already placed stay; only the missing one moves,
    // and it goes on-prem when none of the others is.
    let mut req = request("repair", 4, 2, cands.clone());
    req.current = vec![Some(1), Some(2), Some(3), Some(5), Some(6), None];
    let answer = plugin.place(&req).unwrap();
    assert_eq!(&answer[..5], &[1, 2, 3, 5, 6]);
    assert!(answer[5] == 0 || answer[5] == 4, "{answer:?}");

    // Parameters are checked at load time.
    assert!(
        plugin
            .validate_params(&[("min".into(), "2".into())])
            .is_ok()
    );
    for bad in [
        ("min", "0"),
        ("min", "x"),
        ("colour", "red"),
        ("values", " "),
    ] {
        let err = plugin
            .validate_params(&[(bad.0.into(), bad.1.into())])
            .unwrap_err();
        assert!(err.to_string().contains(bad.0), "{bad:?}: {err}");
    }
}
