//! `shardgate meta copy`: a whole metadata store moved from one engine to
//! another (redb to PostgreSQL when a deployment grows to several
//! gateways, and back), verified by a count and a digest of every table
//! (`shardgate_meta::copy`).
//!
//! Both ends are given as `redb:PATH`, `postgres:URL` or
//! `postgres-file:PATH` (a file holding the URL, readable by its owner
//! alone, as the gateway's `metadata.url_file`: a URL on the command line
//! is visible to every user of the machine). The source is read in one
//! snapshot and left as it was; no gateway may be serving from it. A redb
//! destination is built beside its path and renamed into place once
//! verified; a PostgreSQL destination must be empty, and refuses gateways
//! until the copy is verified.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use shardgate_config::MetadataConfig;
use shardgate_meta::MetaStore;
use shardgate_meta::copy::{self, StoreDigest};
use shardgate_meta::kv::Engine;

use crate::metadata::now_ms;

#[derive(clap::Args, Debug)]
pub struct MetaArgs {
    #[command(subcommand)]
    action: MetaAction,
}

#[derive(clap::Subcommand, Debug)]
enum MetaAction {
    /// Copy every bucket, object version, upload, user, garbage item,
    /// repair entry, job cursor and journal mark of a stopped store into
    /// an empty one, with a progress bar on a terminal; verified by a count
    /// and a blake3 digest of every table. E.g. `shardgate meta copy
    /// --from redb:/var/lib/shardgate/meta.redb --to
    /// postgres-file:/run/secrets/metadata-url`.
    Copy {
        /// The store to copy (`redb:PATH`, `postgres:URL` or
        /// `postgres-file:PATH`); no gateway may be serving from it.
        #[arg(long, value_parser = parse_place)]
        from: Place,
        /// The store to create: a redb file that does not exist yet, or an
        /// empty PostgreSQL database.
        #[arg(long, value_parser = parse_place)]
        to: Place,
    },
}

/// One end of a copy.
#[derive(Clone, Debug)]
pub enum Place {
    Redb(PathBuf),
    Postgres(Secret),
    PostgresFile(PathBuf),
}

/// A URL that is never printed whole.
#[derive(Clone)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&describe_url(&self.0))
    }
}

fn parse_place(text: &str) -> Result<Place, String> {
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        return Ok(Place::Postgres(Secret(text.to_string())));
    }
    let (kind, rest) = text
        .split_once(':')
        .ok_or_else(|| "give redb:PATH, postgres:URL or postgres-file:PATH".to_string())?;
    if rest.is_empty() {
        return Err(format!("{kind}: needs what follows the colon"));
    }
    match kind {
        "redb" => Ok(Place::Redb(PathBuf::from(rest))),
        "postgres" => Ok(Place::Postgres(Secret(rest.to_string()))),
        "postgres-file" => Ok(Place::PostgresFile(PathBuf::from(rest))),
        other => Err(format!(
            "{other:?} is no store kind: give redb:PATH, postgres:URL or postgres-file:PATH"
        )),
    }
}

/// `url` without its password or parameters: `postgres://user@host/db`.
fn describe_url(url: &str) -> String {
    let url = url.split('?').next().unwrap_or_default();
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = match authority.rsplit_once('@') {
                Some((user, host)) => {
                    let user = user.split(':').next().unwrap_or_default();
                    format!("{user}@{host}")
                }
                None => authority.to_string(),
            };
            format!("{scheme}://{host}/{path}")
        }
        None => "a PostgreSQL connection string".to_string(),
    }
}

pub async fn run(args: MetaArgs) -> Result<()> {
    match args.action {
        MetaAction::Copy { from, to } => copy_store(from, to).await,
    }
}

/// An end, opened.
struct Opened {
    engine: Arc<dyn Engine>,
    shown: String,
    /// Several gateways may share it (a database, not a locked file).
    shared: bool,
    /// A redb destination: where it is built, and where it goes once
    /// verified.
    rename: Option<(PathBuf, PathBuf)>,
}

async fn copy_store(from: Place, to: Place) -> Result<()> {
    let token = copy::new_token();
    let source = open_source(&from).await?;
    let engine = source.engine.clone();
    let (shared, token_in) = (source.shared, token.clone());
    // A database's gateways are kept off it while the copy reads (a redb
    // file is locked by its gateway, and now by this copy).
    tokio::task::spawn_blocking(move || match shared {
        true => copy::hold_source(&*engine, &token_in, now_ms()),
        false => shardgate_meta::kv::read(&*engine, |kv| copy::check_source_unfinished(kv)),
    })
    .await
    .context("the metadata task")?
    .context("checking the source")?;
    let copied = copy_held(&source, &to, &token).await;
    if source.shared {
        let (engine, token) = (source.engine.clone(), token.clone());
        let released =
            tokio::task::spawn_blocking(move || copy::release_source(&*engine, &token)).await;
        if !matches!(released, Ok(Ok(()))) {
            eprintln!(
                "shardgate: the source's copy lease was not given up; it lapses within 2 minutes"
            );
        }
    }
    copied
}

/// The copy, once the source is held.
async fn copy_held(source: &Opened, to: &Place, token: &str) -> Result<()> {
    let destination = open_destination(to).await?;
    let (source_shown, destination_shown) = (source.shown.clone(), destination.shown.clone());
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>18} [{bar:40}] {pos}/{len} rows")
            .context("progress style")?
            .progress_chars("=> "),
    );
    let started = std::time::Instant::now();
    let (from_engine, to_engine) = (source.engine.clone(), destination.engine.clone());
    let shared = source.shared;
    let token = token.to_string();
    let bar_in = bar.clone();
    let exclusive = destination.rename.is_some();
    let digest = tokio::task::spawn_blocking(move || -> Result<StoreDigest> {
        // The leases are renewed in the background too, between batches
        // and while the destination is cleared: a source's hold must not
        // lapse while it is read.
        let keeper = Keeper::start(
            shared.then(|| from_engine.clone()),
            to_engine.clone(),
            token.clone(),
        );
        let copied = (|| -> Result<StoreDigest> {
            copy::prepare_destination(&*to_engine, &token, exclusive, now_ms())
                .context("preparing the destination")?;
            keeper.destination_ready();
            let snapshot = from_engine.snapshot().context("reading the source")?;
            if shared {
                copy::check_snapshot(&*snapshot, &token, now_ms()).context("reading the source")?;
            }
            let source = shared.then_some(&*from_engine);
            let mut progress = |table: &'static str, done: u64, total: u64| {
                bar_in.set_prefix(table);
                bar_in.set_length(total);
                bar_in.set_position(done);
            };
            copy::copy(&*snapshot, source, &*to_engine, &token, &mut progress).context("copying")
        })();
        keeper.stop()?;
        let copied = copied?;
        bar_in.set_prefix("verifying");
        copy::finish(&*to_engine, &token, &copied).context("verifying the copy")
    })
    .await
    .context("the copy's task")?;
    bar.finish_and_clear();
    let digest = digest?;
    if let Some((built, target)) = &destination.rename {
        drop(destination.engine);
        // A link fails where the target exists: a store that appeared
        // meanwhile (a gateway started on that path) is never replaced.
        crate::recover::place(built, target)?;
    }
    println!(
        "copied {} rows from {source_shown} to {destination_shown} in {:.1} s; counts and digest verified (blake3 {})",
        digest.rows(),
        started.elapsed().as_secs_f64(),
        digest.hex()
    );
    for (table, rows) in digest.tables.iter().filter(|(_, n)| *n > 0) {
        println!("  {table:<18} {rows:>10}");
    }
    println!("the source is left as it was: serve from one of the two stores, never both");
    Ok(())
}

async fn open_source(place: &Place) -> Result<Opened> {
    match place {
        Place::Redb(path) => {
            if !path.is_file() {
                bail!("no redb store at {}", path.display());
            }
            let path_in = path.clone();
            let opened =
                tokio::task::spawn_blocking(move || MetaStore::redb_engine_for_copy(&path_in))
                    .await
                    .context("the metadata task")?;
            let engine = opened.map_err(|e| {
                let hint = match e.to_string().contains("already open") {
                    true => " (a gateway running on it holds it: stop it first)",
                    false => "",
                };
                anyhow::Error::new(e).context(format!("opening {}{hint}", path.display()))
            })?;
            Ok(Opened {
                engine: Arc::new(engine),
                shown: format!("redb:{}", path.display()),
                shared: false,
                rename: None,
            })
        }
        Place::Postgres(_) | Place::PostgresFile(_) => postgres(place).await,
    }
}

async fn open_destination(place: &Place) -> Result<Opened> {
    match place {
        Place::Redb(path) => {
            if path.exists() {
                bail!(
                    "{} exists: a copy builds a new store and never overwrites one (move it aside first)",
                    path.display()
                );
            }
            // An unfinished copy's file is opened again (its lock keeps out
            // a copy still writing it) and started over.
            let built = building(path);
            let engine = shardgate_meta::kv::RedbEngine::create(&built).with_context(|| {
                format!(
                    "opening {} (another copy may be writing it)",
                    built.display()
                )
            })?;
            Ok(Opened {
                engine: Arc::new(engine),
                shown: format!("redb:{}", path.display()),
                shared: false,
                rename: Some((built, path.clone())),
            })
        }
        Place::Postgres(_) | Place::PostgresFile(_) => postgres(place).await,
    }
}

/// Renews a copy's leases every [`KEEP_EVERY`] on a thread of its own,
/// until stopped; a renewal refused (the lease taken over, or a source's
/// lapsed) fails the copy at [`Keeper::stop`].
struct Keeper {
    stop: Arc<std::sync::atomic::AtomicBool>,
    ready: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Option<String>>,
}

/// How often the leases are renewed (their term is 2 minutes).
const KEEP_EVERY: Duration = Duration::from_secs(20);

impl Keeper {
    fn start(source: Option<Arc<dyn Engine>>, destination: Arc<dyn Engine>, token: String) -> Self {
        use std::sync::atomic::Ordering;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (stop_in, ready_in) = (stop.clone(), ready.clone());
        let thread = std::thread::spawn(move || {
            let mut last = std::time::Instant::now();
            while !stop_in.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(200));
                if last.elapsed() < KEEP_EVERY {
                    continue;
                }
                last = std::time::Instant::now();
                if let Some(source) = &source
                    && let Err(e) = copy::keep(&**source, copy::SOURCE_LEASE, &token)
                {
                    return Some(format!("keeping the source: {e}"));
                }
                if ready_in.load(Ordering::Acquire)
                    && let Err(e) = copy::keep(&*destination, copy::COPY_LEASE, &token)
                {
                    return Some(format!("keeping the destination: {e}"));
                }
            }
            None
        });
        Self {
            stop,
            ready,
            thread,
        }
    }

    /// From now on the destination's lease is this copy's: renew it too.
    fn destination_ready(&self) {
        self.ready.store(true, std::sync::atomic::Ordering::Release);
    }

    fn stop(self) -> Result<()> {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        match self.thread.join() {
            Ok(None) => Ok(()),
            Ok(Some(failure)) => bail!("{failure}"),
            Err(_) => bail!("the thread renewing the copy's leases failed"),
        }
    }
}

/// Where a redb destination is built: beside it, renamed into place once
/// verified, so an interrupted copy leaves no store a gateway would open.
fn building(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".copying");
    path.with_file_name(name)
}

async fn postgres(place: &Place) -> Result<Opened> {
    let url = match place {
        Place::Postgres(url) => url.0.clone(),
        // As the gateway reads metadata.url_file: refused when others can
        // read it, or when it is empty.
        Place::PostgresFile(path) => shardgate_config::read_secret_file("postgres-file", path)?,
        Place::Redb(_) => bail!("not a PostgreSQL store"),
    };
    let shown = describe_url(&url);
    // A copy's batches are larger than a request's: a longer statement
    // timeout and a small pool; connecting as the gateway does.
    let config = MetadataConfig {
        pool_size: 4,
        statement_timeout_ms: 600_000,
        ..MetadataConfig::default()
    };
    let engine = crate::metadata::connect(&config, url)
        .await
        .with_context(|| format!("connecting to {shown}"))?;
    Ok(Opened {
        engine,
        shown,
        shared: true,
        rename: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_shown_without_its_password_or_parameters() {
        assert_eq!(
            describe_url("postgres://app:s3cret@db.example:5432/meta?sslmode=require"),
            "postgres://app@db.example:5432/meta"
        );
        assert_eq!(
            describe_url("postgresql://127.0.0.1/x"),
            "postgresql://127.0.0.1/x"
        );
        assert!(!format!("{:?}", Secret("postgres://u:pw@h/d".into())).contains("pw"));
        assert!(parse_place("mysql:x").is_err());
        assert!(matches!(
            parse_place("postgres://u@h/d"),
            Ok(Place::Postgres(Secret(url))) if url == "postgres://u@h/d"
        ));
        assert!(parse_place("redb:").is_err());
        assert!(matches!(parse_place("redb:/a/b"), Ok(Place::Redb(_))));
    }
}
