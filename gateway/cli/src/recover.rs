//! `shardgate recover`: rebuilds a lost metadata store from the manifest
//! journal on the backends (`shardgate_journal`), with a progress bar.
//!
//! It writes `<data dir>/meta.redb.recovering` and renames it into place
//! at the end, so an interrupted run leaves no half-built store where the
//! gateway would open it; it never overwrites an existing store.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use shardgate_config::Config;
use shardgate_core::Identities;
use shardgate_journal::{Phase, recover};
use shardgate_meta::MetaStore;

#[derive(clap::Args, Debug)]
pub struct RecoverArgs {
    /// An age identity file that opens the journal: the gateway's own
    /// (`<data dir>/keys/gateway-identity.txt`) or the offline recovery key.
    #[arg(long)]
    identity: PathBuf,
    /// The gateway's configuration (its backends and data dir).
    #[arg(long, env = "SHARDGATE_CONFIG")]
    config: Option<PathBuf>,
    /// The data dir (overrides the configuration's).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Put the store in place even when part of the journal could not be
    /// read (a backend not listed, a batch or checkpoint unreadable):
    /// without it, recover stops and changes nothing, so a run once the
    /// backends are back can do better.
    #[arg(long)]
    accept_loss: bool,
    /// The journal to recover, by id (hex), when the backends hold several
    /// (gateways sharing backends and a recovery key); by default the one
    /// whose newest checkpoint opens.
    #[arg(long, value_parser = parse_journal_id)]
    journal: Option<u64>,
}

fn parse_journal_id(text: &str) -> Result<u64, String> {
    u64::from_str_radix(text.trim_start_matches("0x"), 16)
        .map_err(|e| format!("a journal id is 16 hex digits: {e}"))
}

pub async fn run(args: RecoverArgs) -> Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    let target = config.data_dir.join("meta.redb");
    if target.exists() {
        bail!(
            "{} exists: recover builds a new store and never overwrites one (move it aside first)",
            target.display()
        );
    }
    let text = std::fs::read_to_string(&args.identity)
        .with_context(|| format!("reading {}", args.identity.display()))?;
    let identities = Identities::parse(&text)
        .with_context(|| format!("{} is not an age identity file", args.identity.display()))?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let backends = crate::setup::backends(&config).await?;
    let partial = config.data_dir.join("meta.redb.recovering");
    if partial.exists() {
        std::fs::remove_file(&partial)
            .with_context(|| format!("removing the unfinished {}", partial.display()))?;
    }

    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len}")
            .context("progress style")?
            .progress_chars("=> "),
    );
    let progress = |phase: Phase, done: u64, total: u64| {
        bar.set_prefix(match phase {
            Phase::Listing => "backends",
            Phase::Headers => "blobs",
            Phase::Replaying => "units",
        });
        bar.set_length(total);
        bar.set_position(done);
    };
    let report = recover(&backends, &identities, args.journal, &partial, &progress)
        .await
        .context("recovering from the journal")?;
    bar.finish_and_clear();
    let losses = report.losses();
    if !losses.is_empty() && !args.accept_loss {
        let _ = std::fs::remove_file(&partial);
        bail!(
            "the journal is not whole ({}); nothing was changed: run again once the backends are back, or with --accept-loss to take what could be read",
            losses.join("; ")
        );
    }
    let store = MetaStore::open(&partial).context("opening the recovered store")?;
    let buckets = store.list_buckets()?.len();
    let objects = store.object_count()?;
    drop(store);
    place(&partial, &target)?;

    println!(
        "shardgate: recovered {buckets} buckets and {objects} objects into {}",
        target.display()
    );
    println!(
        "shardgate: from {} journal blobs on {} of {} backends: {} rows of checkpoint {}, {} changes in {} batches after it",
        report.journal_blobs,
        backends.len() - report.unreachable_backends.len(),
        backends.len(),
        report.checkpoint_rows,
        report
            .checkpoint
            .map_or_else(|| "none".to_string(), |(e, c)| format!("{c} (epoch {e})")),
        report.records,
        report.batches,
    );
    for loss in &losses {
        println!("shardgate: accepted loss: {loss}");
    }
    println!(
        "shardgate: journal {:016x}, epoch {} from now on",
        report.journal, report.epoch
    );
    if !report.other_journals.is_empty() {
        let others: Vec<String> = report
            .other_journals
            .iter()
            .map(|j| format!("{j:016x}"))
            .collect();
        println!(
            "shardgate: other journals on these backends (left alone; --journal ID recovers one): {}",
            others.join(", ")
        );
    }
    if report.damaged_blobs > 0 {
        println!(
            "shardgate: {} journal blobs had unreadable headers and were passed over",
            report.damaged_blobs
        );
    }
    Ok(())
}

/// Moves a store built beside its place (a recovered or copied one) into
/// it without ever replacing one (a link fails if the name exists),
/// durably.
pub(crate) fn place(built: &std::path::Path, target: &std::path::Path) -> Result<()> {
    std::fs::hard_link(built, target).with_context(|| {
        format!(
            "moving the store at {} to {} (it must not exist)",
            built.display(),
            target.display()
        )
    })?;
    std::fs::remove_file(built).with_context(|| format!("removing {}", built.display()))?;
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => std::path::Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(())
}
