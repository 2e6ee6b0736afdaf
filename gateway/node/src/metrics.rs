//! `/metrics`: the gateway's counters in the OpenMetrics text format
//! (prometheus-client), for Prometheus or any scraper that reads it.
//!
//! Requests are counted as they finish; everything else (placement
//! outcomes per policy, backend health) is read from where it already
//! lives at scrape time, so there is one source of truth and nothing to
//! keep in sync. Issue "OpenTelemetry" will export the same figures over
//! OTLP; the names here follow OpenTelemetry's semantic style already.

use std::fmt::Write;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use shardgate_placement::Failure;

use crate::gateway::Gateway;

/// The content type of the answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub type Labels = Vec<(&'static str, String)>;

/// Counters updated as requests run.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Family<Labels, Counter>,
    /// `requests`' counter of successful GETs, the commonest, kept so as
    /// not to build and hash its labels for each.
    gets_ok: std::sync::OnceLock<Counter>,
    /// Signed GETs of whole objects answered by the gateway's fast path
    /// instead of the generic S3 machinery.
    pub fast_gets: Counter,
    /// Scrub: bytes read, fragments checked, fragments found damaged,
    /// passes finished.
    pub scrub_bytes: Counter,
    pub scrub_fragments: Counter,
    pub scrub_damaged: Counter,
    pub scrub_passes: Counter,
    /// Per backend and mode (full, audit): bytes read, fragments damaged.
    pub scrub_backend_bytes: Family<Labels, Counter>,
    pub scrub_backend_damaged: Family<Labels, Counter>,
    /// Repair: fragments rebuilt, and tries that failed (retried later).
    pub repair_fragments: Counter,
    pub repair_bytes: Counter,
    pub repair_failures: Counter,
    /// Drain: fragments moved off backends being drained.
    pub drain_fragments: Counter,
    /// Rebalance: fragments moved toward where the placer puts them now.
    pub rebalance_fragments: Counter,
}

impl Metrics {
    /// One finished request: its method and status code.
    pub fn request(&self, method: &str, status: u16) {
        let labels = |method: &str, status: u16| {
            vec![
                ("method", method.to_string()),
                ("status", status.to_string()),
            ]
        };
        if method == "GET" && status == 200 {
            let counter = self
                .gets_ok
                .get_or_init(|| self.requests.get_or_create(&labels("GET", 200)).clone());
            counter.inc();
            return;
        }
        self.requests.get_or_create(&labels(method, status)).inc();
    }
}

/// One placer's counters, copied at scrape time.
#[derive(Debug)]
struct PlacerRow {
    policy: String,
    placer: String,
    calls: u64,
    failures: Vec<(Failure, u64)>,
    fallbacks: u64,
    refusals: u64,
}

/// One backend's state at the last health check.
#[derive(Debug)]
struct BackendRow {
    id: String,
    healthy: bool,
    free_bytes: Option<u64>,
}

/// What the listener holds at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerLoad {
    pub connections: u64,
    pub max_connections: u64,
    pub requests_free: u64,
    pub memory_free_bytes: u64,
}

/// What a scrape reads from the gateway.
#[derive(Debug)]
struct GarbageRow {
    backend: String,
    configured: bool,
    items: u64,
    bytes: u64,
    oldest_age_secs: u64,
}

#[derive(Debug)]
struct Snapshot {
    placers: Vec<PlacerRow>,
    garbage: Vec<GarbageRow>,
    /// Objects queued for repair, by margin (healthy fragments beyond k
    /// in their worst segment).
    repair_by_margin: Vec<u64>,
    /// Objects with every fragment healthy.
    whole_objects: u64,
    backends: Vec<BackendRow>,
    hedged_reads: u64,
    opened_keys: u64,
    server: ServerLoad,
    journal: Option<JournalRow>,
}

/// The manifest journal as the store sees it.
#[derive(Debug)]
struct JournalRow {
    outbox_records: u64,
    units: u64,
    blobs: u64,
    checkpoint_needed: bool,
}

/// One metric family: its descriptor, then one sample per label set.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric_type: MetricType,
    rows: impl IntoIterator<Item = (Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, value) in rows {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, u64)>,
) -> Result<(), std::fmt::Error> {
    let rows = rows.into_iter().map(|(l, v)| (l, ConstCounter::new(v)));
    family(encoder, name, help, MetricType::Counter, rows)
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, i64)>,
) -> Result<(), std::fmt::Error> {
    let rows = rows.into_iter().map(|(l, v)| (l, ConstGauge::new(v)));
    family(encoder, name, help, MetricType::Gauge, rows)
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let who = |p: &PlacerRow| vec![("policy", p.policy.clone()), ("placer", p.placer.clone())];
        counter(
            &mut encoder,
            "placement_plugin_calls",
            "Placement questions asked of a policy's plugin",
            self.placers.iter().map(|p| (who(p), p.calls)),
        )?;
        counter(
            &mut encoder,
            "placement_plugin_failures",
            "Plugin answers not used, by reason (timeout, trap, out_of_memory, refused, invalid_answer)",
            self.placers.iter().flat_map(|p| {
                p.failures.iter().map(move |(f, n)| {
                    let mut labels = who(p);
                    labels.push(("reason", f.as_str().to_string()));
                    (labels, *n)
                })
            }),
        )?;
        counter(
            &mut encoder,
            "placement_fallbacks",
            "Writes placed by the policy's fallback because its plugin failed",
            self.placers.iter().map(|p| (who(p), p.fallbacks)),
        )?;
        counter(
            &mut encoder,
            "placement_refusals",
            "Writes failed because a strict policy's plugin failed",
            self.placers.iter().map(|p| (who(p), p.refusals)),
        )?;
        gauge(
            &mut encoder,
            "backend_healthy",
            "1 when the backend is up (answering requests and probes) and writable",
            self.backends
                .iter()
                .map(|b| (vec![("backend", b.id.clone())], i64::from(b.healthy))),
        )?;
        gauge(
            &mut encoder,
            "backend_free_bytes",
            "Free bytes the backend reported at its last health check",
            self.backends.iter().filter_map(|b| {
                let free = i64::try_from(b.free_bytes?).unwrap_or(i64::MAX);
                Some((vec![("backend", b.id.clone())], free))
            }),
        )?;
        counter(
            &mut encoder,
            "read_hedges",
            "Fragment reads sent because other fragments were late",
            [(Vec::new(), self.hedged_reads)],
        )?;
        gauge(
            &mut encoder,
            "opened_keys",
            "Payload keys of recently read or written segments held opened in memory (keys.cache_entries bounds them)",
            [(
                Vec::new(),
                i64::try_from(self.opened_keys).unwrap_or(i64::MAX),
            )],
        )?;
        let at = |g: &GarbageRow| {
            vec![
                ("backend", g.backend.clone()),
                ("configured", g.configured.to_string()),
            ]
        };
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        gauge(
            &mut encoder,
            "garbage_items",
            "Blobs waiting to be deleted, per backend (configured=false: a backend that left the configuration)",
            self.garbage.iter().map(|g| (at(g), int(g.items))),
        )?;
        gauge(
            &mut encoder,
            "garbage_bytes",
            "Bytes of the blobs waiting to be deleted, where known (blobs of writes that never committed count 0)",
            self.garbage.iter().map(|g| (at(g), int(g.bytes))),
        )?;
        gauge(
            &mut encoder,
            "garbage_oldest_age_seconds",
            "Age of the oldest blob waiting to be deleted, per backend",
            self.garbage.iter().map(|g| (at(g), int(g.oldest_age_secs))),
        )?;
        if let Some(j) = &self.journal {
            gauge(
                &mut encoder,
                "journal_outbox_records",
                "Metadata changes committed but not yet on the backends (the manifest journal's backlog: what a lost data dir would cost)",
                [(vec![], int(j.outbox_records))],
            )?;
            gauge(
                &mut encoder,
                "journal_units",
                "Manifest journal units (checkpoint parts and batches) on the backends, and their blobs",
                [
                    (vec![("of", "units".to_string())], int(j.units)),
                    (vec![("of", "blobs".to_string())], int(j.blobs)),
                ],
            )?;
            gauge(
                &mut encoder,
                "journal_checkpoint_needed",
                "1 while no complete checkpoint covers every row (after a first start, an upgrade or a recovery, until one is written)",
                [(vec![], int(u64::from(j.checkpoint_needed)))],
            )?;
        }
        gauge(
            &mut encoder,
            "repair_queue_objects",
            "Objects waiting for repair, by margin: healthy fragments beyond k in their worst segment (0: one more loss loses data)",
            self.repair_by_margin
                .iter()
                .enumerate()
                .map(|(m, n)| (vec![("margin", m.to_string())], int(*n))),
        )?;
        gauge(
            &mut encoder,
            "objects_by_redundancy",
            "Object versions (current or not) by the redundancy their worst segment has left: whole (every fragment healthy), or margin N (healthy fragments beyond k, queued for repair)",
            std::iter::once((
                vec![("redundancy", "whole".to_string())],
                int(self.whole_objects),
            ))
            .chain(
                self.repair_by_margin
                    .iter()
                    .enumerate()
                    .map(|(m, n)| (vec![("redundancy", format!("margin {m}"))], int(*n))),
            ),
        )?;
        let load = self.server;
        let one = |v: u64| [(Vec::new(), i64::try_from(v).unwrap_or(i64::MAX))];
        gauge(
            &mut encoder,
            "connections_open",
            "Client connections open (lingering closes included)",
            one(load.connections),
        )?;
        gauge(
            &mut encoder,
            "connections_max",
            "The connection cap (server.max_connections, or the descriptor limit less 1024)",
            one(load.max_connections),
        )?;
        gauge(
            &mut encoder,
            "requests_free",
            "Places free for S3 requests (server.max_requests less those in flight)",
            one(load.requests_free),
        )?;
        gauge(
            &mut encoder,
            "memory_budget_free_bytes",
            "Memory budget not reserved by requests in flight",
            one(load.memory_free_bytes),
        )?;
        Ok(())
    }
}

/// The text of one scrape.
pub fn render(gateway: &Gateway, server: ServerLoad) -> String {
    let placers = gateway
        .policies()
        .filter_map(|policy| {
            let placer = policy.placer.as_ref()?;
            let stats = placer.stats()?;
            Some(PlacerRow {
                policy: policy.name.clone(),
                placer: placer.name().to_string(),
                calls: stats.calls(),
                failures: Failure::ALL
                    .iter()
                    .map(|f| (*f, stats.failures(*f)))
                    .collect(),
                fallbacks: stats.fallbacks(),
                refusals: stats.refusals(),
            })
        })
        .collect();
    let backends = gateway
        .health_snapshot()
        .into_iter()
        .map(|c| BackendRow {
            id: c.id.to_string(),
            healthy: c.healthy,
            free_bytes: c.free_bytes,
        })
        .collect();
    // A read of a few small rows (totals per backend, and the first key of
    // each backend's age index): cheap enough for the scrape's thread.
    let now = crate::now_ms();
    let garbage = match gateway.meta().garbage_backlog() {
        Ok(rows) => rows
            .into_iter()
            .map(|b| GarbageRow {
                configured: gateway.backend(&b.backend).is_some(),
                backend: b.backend.to_string(),
                items: b.items,
                bytes: b.bytes,
                oldest_age_secs: b
                    .oldest_added_unix_ms
                    .map_or(0, |t| now.saturating_sub(t) / 1000),
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "garbage backlog not read for /metrics");
            Vec::new()
        }
    };
    let (queued, repair_by_margin) = match gateway.meta().repair_queue_counts() {
        Ok(counts) => counts,
        Err(e) => {
            tracing::warn!(error = %e, "repair queue not read for /metrics");
            (0, Vec::new())
        }
    };
    let whole_objects = gateway
        .meta()
        .object_count()
        .map(|n| n.saturating_sub(queued))
        .unwrap_or(0);
    let journal = match gateway.meta().journal_state() {
        Ok(state) => Some(JournalRow {
            outbox_records: state.outbox_len,
            units: state.units.len() as u64,
            blobs: state.units.iter().map(|(_, u)| u.blobs.len() as u64).sum(),
            checkpoint_needed: state.checkpoint_needed,
        }),
        Err(e) => {
            tracing::warn!(error = %e, "journal state not read for /metrics");
            None
        }
    };
    let mut registry = Registry::with_prefix("shardgate");
    registry.register(
        "s3_requests",
        "S3 requests answered, by method and status code",
        gateway.metrics().requests.clone(),
    );
    let m = gateway.metrics();
    registry.register(
        "s3_fast_gets",
        "Signed GETs of whole objects answered by the fast path (counted in s3_requests too)",
        m.fast_gets.clone(),
    );
    registry.register(
        "scrub_read_bytes",
        "Bytes scrub read to check fragments",
        m.scrub_bytes.clone(),
    );
    registry.register(
        "scrub_fragments_checked",
        "Fragments scrub read whole and checked against their digests",
        m.scrub_fragments.clone(),
    );
    registry.register(
        "scrub_fragments_damaged",
        "Fragments scrub found missing or not matching their digests (queued for repair)",
        m.scrub_damaged.clone(),
    );
    registry.register(
        "scrub_passes",
        "Scrub passes over every object finished",
        m.scrub_passes.clone(),
    );
    registry.register(
        "scrub_backend_read_bytes",
        "Bytes scrub read per backend and mode (full: local disks read whole; audit: cloud backends and peers sampled)",
        m.scrub_backend_bytes.clone(),
    );
    registry.register(
        "scrub_backend_damaged",
        "Fragments scrub found damaged per backend and mode (audit failures for cloud backends)",
        m.scrub_backend_damaged.clone(),
    );
    registry.register(
        "repair_fragments_rebuilt",
        "Fragments rebuilt from the others and placed anew",
        m.repair_fragments.clone(),
    );
    registry.register(
        "repair_written_bytes",
        "Bytes of rebuilt fragments written",
        m.repair_bytes.clone(),
    );
    registry.register(
        "drain_fragments_moved",
        "Fragments moved off backends being drained",
        m.drain_fragments.clone(),
    );
    registry.register(
        "rebalance_fragments_moved",
        "Fragments moved by rebalancing, from fuller backends to emptier ones the placer chose",
        m.rebalance_fragments.clone(),
    );
    registry.register(
        "repair_failures",
        "Repairs that could not be done (too few good fragments, placement refused...), tried again later",
        m.repair_failures.clone(),
    );
    registry.register_collector(Box::new(Snapshot {
        placers,
        garbage,
        repair_by_margin,
        whole_objects,
        backends,
        hedged_reads: gateway.hedged_fragment_reads(),
        opened_keys: gateway.opened_keys() as u64,
        server,
        journal,
    }));
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
        text.clear();
        let _ = writeln!(text, "# metrics could not be encoded");
    }
    text
}
