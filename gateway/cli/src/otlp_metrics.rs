//! Metrics over OTLP: the figures `/metrics` serves, exported to
//! `[telemetry] otlp_endpoint` + `/v1/metrics` by the OpenTelemetry SDK.
//!
//! One source of truth: the gateway's OpenMetrics text (`metrics::render`)
//! is read at each export and each family becomes an observable
//! instrument of the same name (counters stay monotonic sums, gauges
//! gauges), so Prometheus and OTLP always agree.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

/// How a family is exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// One metric family of a scrape.
#[derive(Clone, Debug, PartialEq)]
struct Family {
    kind: Kind,
    help: String,
    /// (labels, value)
    samples: Vec<(Vec<(String, String)>, f64)>,
}

/// Parses OpenMetrics text as `prometheus-client` writes it: `# HELP`,
/// `# TYPE` (counter or gauge; others are skipped), then samples
/// `name{label="value",...} number` (counters' as `name_total`).
fn parse(text: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut help: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some((name, text)) = rest.split_once(' ') {
                help.insert(name.to_string(), text.to_string());
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let kind = match rest.split_once(' ') {
                Some((name, "counter")) => Some((name, Kind::Counter)),
                Some((name, "gauge")) => Some((name, Kind::Gauge)),
                _ => None,
            };
            if let Some((name, kind)) = kind {
                families.insert(
                    name.to_string(),
                    Family {
                        kind,
                        help: help.get(name).cloned().unwrap_or_default(),
                        samples: Vec::new(),
                    },
                );
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, labels(rest.trim_end_matches('}'))),
            None => (series, Vec::new()),
        };
        let family = match families.get_mut(name) {
            Some(f) if f.kind == Kind::Gauge => f,
            _ => match name
                .strip_suffix("_total")
                .and_then(|n| families.get_mut(n))
            {
                Some(f) if f.kind == Kind::Counter => f,
                _ => continue,
            },
        };
        family.samples.push((labels, value));
    }
    families
}

/// `a="x",b="y \"z\""` -> [(a, x), (b, y "z")].
fn labels(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => {}
                },
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((key.trim_start_matches(',').trim().to_string(), value));
        rest = &after[end..];
    }
    out
}

type Families = BTreeMap<String, Family>;

/// The newest scrape, shared by the instruments' callbacks: one render
/// per export, not one per family.
struct Latest {
    scrape: Box<dyn Fn() -> String + Send + Sync>,
    max_age: Duration,
    cached: Mutex<Option<(Instant, Arc<Families>)>>,
}

impl Latest {
    fn families(&self) -> Arc<Families> {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, families)) = cached.as_ref()
            && at.elapsed() < self.max_age
        {
            return families.clone();
        }
        let families = Arc::new(parse(&(self.scrape)()));
        *cached = Some((Instant::now(), families.clone()));
        families
    }

    fn observe(&self, name: &str) -> Vec<(f64, Vec<KeyValue>)> {
        self.families()
            .get(name)
            .map(|f| {
                f.samples
                    .iter()
                    .map(|(labels, v)| {
                        let attrs = labels
                            .iter()
                            .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                            .collect();
                        (*v, attrs)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Gives each family not yet exported its observable instrument.
fn register(
    meter: &opentelemetry::metrics::Meter,
    latest: &Arc<Latest>,
    registered: &mut std::collections::BTreeSet<String>,
) {
    for (name, family) in latest.families().iter() {
        if !registered.insert(name.clone()) {
            continue;
        }
        let (source, name) = (latest.clone(), name.clone());
        match family.kind {
            Kind::Counter => {
                meter
                    .f64_observable_counter(name.clone())
                    .with_description(family.help.clone())
                    .with_callback(move |o| {
                        for (v, attrs) in source.observe(&name) {
                            o.observe(v, &attrs);
                        }
                    })
                    .build();
            }
            Kind::Gauge => {
                meter
                    .f64_observable_gauge(name.clone())
                    .with_description(family.help.clone())
                    .with_callback(move |o| {
                        for (v, attrs) in source.observe(&name) {
                            o.observe(v, &attrs);
                        }
                    })
                    .build();
            }
        }
    }
}

/// Starts exporting every `interval`; the provider must be shut down at
/// the end (its last export).
pub fn export(
    endpoint: &str,
    service_name: &str,
    interval: Duration,
    scrape: impl Fn() -> String + Send + Sync + 'static,
) -> Result<SdkMeterProvider> {
    let url = format!("{}/v1/metrics", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(&url)
        .build()
        .with_context(|| format!("telemetry.otlp_endpoint {endpoint}"))?;
    let reader = PeriodicReader::builder(exporter)
        .with_interval(interval)
        .build();
    let provider = SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service_name.to_string())
                .build(),
        )
        .build();
    let meter = provider.meter("shardgate");
    let latest = Arc::new(Latest {
        scrape: Box::new(scrape),
        max_age: (interval / 2).max(Duration::from_millis(100)),
        cached: Mutex::new(None),
    });
    // A family shows up once it has a sample (the requests counter after
    // the first request): looked for at every interval, and given its
    // instrument then (never from inside a callback).
    let mut registered = std::collections::BTreeSet::new();
    register(&meter, &latest, &mut registered);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let (meter, latest) = (meter.clone(), latest.clone());
            let mut names = std::mem::take(&mut registered);
            registered = tokio::task::spawn_blocking(move || {
                register(&meter, &latest, &mut names);
                names
            })
            .await
            .unwrap_or_default();
        }
    });
    tracing::info!(%url, every = ?interval, "exporting metrics over OTLP");
    Ok(provider)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_text_becomes_families_with_their_labels() {
        let text = "# HELP shardgate_s3_requests S3 requests answered.\n\
                    # TYPE shardgate_s3_requests counter\n\
                    shardgate_s3_requests_total{method=\"PUT\",status=\"200\"} 3\n\
                    shardgate_s3_requests_total{method=\"GET\",status=\"404\"} 1\n\
                    # HELP shardgate_backend_free_bytes Free bytes.\n\
                    # TYPE shardgate_backend_free_bytes gauge\n\
                    shardgate_backend_free_bytes{backend=\"a \\\"b\\\"\"} 5.5e3\n\
                    # TYPE shardgate_other info\n\
                    shardgate_other_info{x=\"1\"} 1\n\
                    # EOF\n";
        let f = parse(text);
        assert_eq!(f.len(), 2);
        let requests = &f["shardgate_s3_requests"];
        assert_eq!(requests.kind, Kind::Counter);
        assert_eq!(requests.help, "S3 requests answered.");
        assert_eq!(
            requests.samples,
            vec![
                (
                    vec![
                        ("method".into(), "PUT".into()),
                        ("status".into(), "200".into())
                    ],
                    3.0
                ),
                (
                    vec![
                        ("method".into(), "GET".into()),
                        ("status".into(), "404".into())
                    ],
                    1.0
                ),
            ]
        );
        let free = &f["shardgate_backend_free_bytes"];
        assert_eq!(free.kind, Kind::Gauge);
        assert_eq!(
            free.samples,
            vec![(vec![("backend".into(), "a \"b\"".into())], 5500.0)]
        );
    }
}
