//! `shardgate simulate`: where the fragments of one object would go under a
//! policy, and what the object would then survive.
//!
//! It runs the policy's placer exactly as `serve` does (the same
//! configuration and policy files, the same plugin host, answer check and
//! fallback) over the configured backends' labels, without opening a
//! backend or the metadata store. So a plugin author or an operator can
//! try a policy, or a topology with some backends down, before any gateway
//! runs it. Backends are as the configuration describes them: healthy
//! unless named by `--down`, free space unknown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use shardgate_config::{Config, PolicyConfig};
use shardgate_placement::{Candidate, Placer, Request, Spread, Tolerance, check, tolerance};
use shardgate_plugin_host::PluginHost;

use crate::setup;

/// The label keys reported as failure domains unless `--domain` says otherwise.
pub const DEFAULT_DOMAINS: [&str; 3] = ["site", "provider", "region"];

#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// A TOML configuration file (SHARDGATE_* variables override it);
    /// without one, the embedded default's six local sites and policy.
    #[arg(long, env = "SHARDGATE_CONFIG")]
    config: Option<PathBuf>,
    /// A policy: a name from the configuration, or a NAME.toml policy file
    /// to try one that is not configured. Default: the bucket's policy.
    #[arg(long)]
    policy: Option<String>,
    /// The bucket (chooses the policy when --policy is not given).
    #[arg(long, default_value = "bucket")]
    bucket: String,
    /// The object key.
    #[arg(long, default_value = "object")]
    key: String,
    /// The object's size (bytes, or with a unit: 16KiB, 4MiB, 1GB);
    /// unknown when not given, as for a chunked upload.
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    /// The object's Content-Type.
    #[arg(long)]
    content_type: Option<String>,
    /// Backends to mark down (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    down: Vec<String>,
    /// Label keys to report as failure domains, beside the backends
    /// themselves (comma-separated or repeated).
    #[arg(long = "domain", value_delimiter = ',', default_values_t = DEFAULT_DOMAINS.map(String::from))]
    domains: Vec<String>,
    /// Where compiled plugins are cached (`<data-dir>/plugin-cache`, used
    /// only when the data dir exists).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    parse_size::parse_size(s).map_err(|e| format!("{s:?}: {e}"))
}

/// What `simulate` prints, as text or JSON.
#[derive(Debug, Serialize)]
struct Simulation {
    policy: PolicyReport,
    object: ObjectReport,
    /// The placer whose answer was used.
    placed_by: String,
    /// Set when the policy's plugin failed and its fallback placed the object.
    fallback: Option<FallbackReport>,
    /// The object would be kept in its manifest (`inline_object_bytes`):
    /// no fragment written; the placement shown is what a larger body gets.
    inline: bool,
    fragments: Vec<FragmentReport>,
    write: WriteReport,
    fault_tolerance: Tolerance,
}

#[derive(Debug, Serialize)]
struct PolicyReport {
    name: String,
    plugin: Option<PathBuf>,
    strict: bool,
    /// The code this object is stored with: the policy's k + m, or 1 + m
    /// whole copies for a small object.
    k: usize,
    m: usize,
    stored_as: &'static str,
    write_quorum: usize,
}

#[derive(Debug, Serialize)]
struct ObjectReport {
    bucket: String,
    key: String,
    size: Option<u64>,
    content_type: Option<String>,
}

#[derive(Debug, Serialize)]
struct FallbackReport {
    failure: &'static str,
    reason: String,
}

#[derive(Debug, Serialize)]
struct FragmentReport {
    index: usize,
    backend: String,
    labels: BTreeMap<String, String>,
    down: bool,
}

#[derive(Debug, Serialize)]
struct WriteReport {
    /// Fragments on backends that are up.
    writable: usize,
    quorum: usize,
    succeeds: bool,
}

pub fn run(args: SimulateArgs) -> Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    }
    let mut candidates: Vec<Candidate> = setup::backend_infos(&config)?
        .into_iter()
        .map(|info| Candidate {
            id: info.id,
            labels: info.labels,
            capacity_bytes: info.capacity_bytes,
            free_bytes: None,
            healthy: true,
            latency: None,
        })
        .collect();
    // As the gateway offers them: in a stable order, by id.
    candidates.sort_by(|a, b| a.id.cmp(&b.id));
    for down in &args.down {
        let Some(c) = candidates.iter_mut().find(|c| c.id.as_str() == down) else {
            let ids: Vec<&str> = candidates.iter().map(|c| c.id.as_str()).collect();
            bail!(
                "--down {down}: no such backend (backends: {})",
                ids.join(", ")
            );
        };
        c.healthy = false;
    }

    let (name, policy_config, embedded) = choose_policy(&config, &args)?;
    let cache = config
        .data_dir
        .is_dir()
        .then(|| config.data_dir.join("plugin-cache"));
    let host =
        PluginHost::new(cache).map_err(|e| anyhow::anyhow!("starting the plugin engine: {e}"))?;
    let policy = setup::build_policy(&name, &policy_config, embedded, &host)?;
    let is_default = setup::configured_policies(&config)
        .and_then(|all| setup::default_policy_name(&config, all.iter().map(|(n, _, _)| n)))
        .is_ok_and(|d| d == name);
    let inline_bytes =
        setup::inline_object_bytes(&name, policy_config.inline_object_bytes, is_default)?;
    let inline = inline_bytes > 0 && args.size.is_some_and(|s| s <= inline_bytes);
    if policy.code.width() > candidates.len() {
        bail!(
            "policy {name}: k + m = {} fragments need as many backends; {} are configured",
            policy.code.width(),
            candidates.len()
        );
    }
    let (layout, quorum) = policy
        .layout_for(args.size)
        .with_context(|| format!("policy {name}"))?;
    let request = Request {
        bucket: &args.bucket,
        key: &args.key,
        size_hint: args.size,
        content_type: args.content_type.as_deref(),
        k: layout.code.k(),
        m: layout.code.m(),
        current: &[],
    };
    let placer: Arc<dyn Placer> = policy.placer.clone().unwrap_or_else(|| Arc::new(Spread));
    let fallbacks_before = placer.stats().map(|s| s.fallbacks());
    let chosen = placer
        .place(&request, &candidates)
        .with_context(|| format!("policy {name} cannot place {}/{}", args.bucket, args.key))?;
    check(&request, &candidates, &chosen)?;
    let fallback = match (placer.stats(), fallbacks_before) {
        (Some(stats), Some(before)) if stats.fallbacks() > before => {
            stats
                .last_failure()
                .map(|(failure, reason)| FallbackReport {
                    failure: failure.as_str(),
                    reason,
                })
        }
        _ => None,
    };
    let placed: Vec<&Candidate> = chosen
        .iter()
        .map(|id| candidates.iter().find(|c| &c.id == id))
        .collect::<Option<_>>()
        .context("the placer chose a backend that is not a candidate")?;
    let domains: Vec<&str> = args.domains.iter().map(String::as_str).collect();
    let writable = placed.iter().filter(|c| c.healthy).count();
    let simulation = Simulation {
        policy: PolicyReport {
            name,
            plugin: policy_config.plugin.as_deref().map(lexically_clean),
            strict: policy_config.strict,
            k: layout.code.k(),
            m: layout.code.m(),
            stored_as: if layout.code.k() < policy.code.k() {
                "whole copies"
            } else {
                "fragments"
            },
            write_quorum: quorum,
        },
        object: ObjectReport {
            bucket: args.bucket.clone(),
            key: args.key.clone(),
            size: args.size,
            content_type: args.content_type.clone(),
        },
        placed_by: match &fallback {
            Some(_) => "built-in spread (fallback)".to_string(),
            None => placer.name().to_string(),
        },
        fallback,
        inline,
        fragments: placed
            .iter()
            .enumerate()
            .map(|(index, c)| FragmentReport {
                index,
                backend: c.id.to_string(),
                labels: c.labels.clone(),
                down: !c.healthy,
            })
            .collect(),
        write: WriteReport {
            writable,
            quorum,
            succeeds: writable >= quorum,
        },
        fault_tolerance: tolerance(layout.code.k(), &placed, &domains),
    };
    let text = match args.json {
        true => serde_json::to_string_pretty(&simulation).context("encoding JSON")? + "\n",
        false => render(&simulation),
    };
    print!("{text}");
    Ok(())
}

/// The policy to simulate: `--policy` (a file or a configured name), else
/// the bucket's, else the default. `true` marks the embedded default.
fn choose_policy(config: &Config, args: &SimulateArgs) -> Result<(String, PolicyConfig, bool)> {
    if let Some(p) = &args.policy
        && (p.ends_with(".toml") || p.contains('/'))
    {
        let (name, policy) = PolicyConfig::load_file(Path::new(p))?;
        policy.check(p)?;
        return Ok((name, policy, false));
    }
    let all = setup::configured_policies(config)?;
    let wanted = match (&args.policy, config.buckets.get(&args.bucket)) {
        (Some(p), _) => p.clone(),
        (None, Some(mapped)) => mapped.clone(),
        (None, None) => setup::default_policy_name(config, all.iter().map(|(n, _, _)| n))?,
    };
    let names: Vec<&str> = all.iter().map(|(n, _, _)| n.as_str()).collect();
    let names = names.join(", ");
    all.into_iter()
        .find(|(n, _, _)| *n == wanted)
        .with_context(|| {
            format!("--policy {wanted}: no such policy (policies: {names}); a NAME.toml file can be given instead")
        })
}

/// `policies/../plugins/x.wasm` as `plugins/x.wasm`, without touching the
/// filesystem (a `..` after a symlink is the user's to resolve).
fn lexically_clean(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Columns padded to their widest cell, two spaces apart.
fn table(rows: &[Vec<String>], indent: &str) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = indent.to_string();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                line.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn render(s: &Simulation) -> String {
    let p = &s.policy;
    let mut out = String::new();
    let plugin = match &p.plugin {
        Some(path) => format!(
            "plugin {}{}",
            path.display(),
            if p.strict {
                " (strict)"
            } else {
                " (falls back to the built-in spread)"
            }
        ),
        None => "built-in spread".to_string(),
    };
    let stored = match p.stored_as {
        "whole copies" => format!("1 + {} whole copies (a small object)", p.m),
        _ => format!("{} + {}", p.k, p.m),
    };
    out.push_str(&format!(
        "policy {}: {plugin}; {stored}, write quorum {}\n",
        p.name, p.write_quorum
    ));
    let o = &s.object;
    let size = o.size.map_or_else(
        || "size unknown".to_string(),
        |n| plural(n as usize, "byte", "bytes"),
    );
    let content_type = o
        .content_type
        .as_ref()
        .map_or_else(String::new, |t| format!(", {t}"));
    out.push_str(&format!(
        "object {}/{}: {size}{content_type}\n",
        o.bucket, o.key
    ));
    match &s.fallback {
        Some(f) => out.push_str(&format!(
            "placed by the built-in spread: the plugin failed ({}): {}\n",
            f.failure, f.reason
        )),
        None => out.push_str(&format!("placed by {}\n", s.placed_by)),
    }
    if s.inline {
        out.push_str(
            "kept in its manifest (inline_object_bytes): no fragment is written; below is where a larger body would go\n",
        );
    }
    out.push('\n');

    // Label columns: the failure domains first, then any other label.
    let mut keys: Vec<String> = Vec::new();
    for d in &s.fault_tolerance.dimensions {
        if d.label != "backend" {
            keys.push(d.label.clone());
        }
    }
    for f in &s.fragments {
        for k in f.labels.keys() {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
    }
    let mut rows = vec![
        ["fragment", "backend"]
            .iter()
            .map(|h| h.to_string())
            .chain(keys.iter().cloned())
            .collect::<Vec<_>>(),
    ];
    for f in &s.fragments {
        let mut row = vec![f.index.to_string(), f.backend.clone()];
        row.extend(
            keys.iter()
                .map(|k| f.labels.get(k).cloned().unwrap_or_else(|| "-".into())),
        );
        if f.down {
            row.push("DOWN: recorded missing".into());
        }
        rows.push(row);
    }
    out.push_str(&table(&rows, ""));
    out.push('\n');

    let w = &s.write;
    let t = &s.fault_tolerance;
    out.push_str(&format!(
        "write: {} of {} fragments writable, quorum {}: {}\n",
        w.writable,
        t.width,
        w.quorum,
        if w.succeeds {
            "succeeds"
        } else {
            "FAILS (the PUT gets a 503 and nothing is stored)"
        }
    ));
    if !w.succeeds {
        return out;
    }
    if !t.readable {
        out.push_str(&format!(
            "read: NOT readable: {} of the {} fragments needed are on backends that are up\n",
            t.width - t.lost_at_write,
            t.needed
        ));
        return out;
    }
    out.push_str(&format!(
        "read: any {} of the {} fragments{} read the object back\n\n",
        t.needed,
        t.width,
        if t.lost_at_write > 0 {
            format!(" ({} lost already)", t.lost_at_write)
        } else {
            String::new()
        }
    ));
    out.push_str("fault tolerance:\n");
    let mut worst: Option<(&str, &shardgate_placement::Domain)> = None;
    for d in &t.dimensions {
        let count = d.domains.len();
        let noun = if d.label == "backend" {
            "backends".to_string()
        } else {
            format!("{}s", d.label)
        };
        let can = match d.any_lost {
            0 => format!("losing one {} can lose the object", d.label),
            n => format!("any {n} of the {count} {noun} can be lost"),
        };
        out.push_str(&format!("  by {}: {can}\n", d.label));
        if d.label == "backend" {
            continue;
        }
        let rows: Vec<Vec<String>> = d
            .domains
            .iter()
            .map(|dom| {
                let value = match dom.labelled {
                    true => dom.value.clone(),
                    false => format!("{} (no {} label)", dom.value, d.label),
                };
                vec![
                    value,
                    plural(dom.fragments, "fragment", "fragments"),
                    format!(
                        "if lost: {} left, {}",
                        dom.left,
                        if dom.readable {
                            "readable"
                        } else {
                            "NOT readable"
                        }
                    ),
                ]
            })
            .collect();
        out.push_str(&table(&rows, "    "));
        if let Some(dom) = d.worst()
            && worst.is_none_or(|(_, w)| dom.left < w.left)
        {
            worst = Some((d.label.as_str(), dom));
        }
    }
    if let Some((label, dom)) = worst {
        out.push_str(&format!(
            "worst single loss: {label} {} ({}), leaving {} where {} are needed: {}\n",
            dom.value,
            plural(dom.fragments, "fragment", "fragments"),
            dom.left,
            t.needed,
            if dom.readable {
                "still readable"
            } else {
                "the object is lost"
            }
        ));
    }
    out
}
