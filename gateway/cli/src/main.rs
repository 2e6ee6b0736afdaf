//! `shardgate`: the binary. Parses the command line, loads the
//! configuration, prepares keys and backends (`setup`), and runs the S3
//! gateway (`serve`) or a placement without one (`simulate`). Every
//! failure ends the process with one line naming its cause.

mod admin;
mod meta_copy;
mod metadata;
mod otlp_metrics;
mod peer;
mod recover;
mod redact;
mod setup;
mod simulate;
mod telemetry;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use shardgate_config::{Config, MetadataKind};
use shardgate_jobs::Jobs;
use shardgate_journal::{Journal, JournalSettings};
use shardgate_meta::{LeaseKeeper, MetaStore};
use shardgate_node::Gateway;

#[derive(Parser, Debug)]
#[command(
    name = "shardgate",
    version,
    about = "One S3 endpoint over encrypted, erasure-coded fragments on many backends"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the S3 gateway. With no configuration: six local directories as
    /// six sites under the data dir, 4 + 2 erasure coding, on 127.0.0.1:9000.
    Serve {
        /// A TOML configuration file (SHARDGATE_* variables override it).
        #[arg(long, env = "SHARDGATE_CONFIG")]
        config: Option<PathBuf>,
        /// Where metadata, keys and the default backends live.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The address to listen on (port 0 picks a free one).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// The admin API's address (port 0 picks a free one).
        #[arg(long)]
        admin_listen: Option<std::net::SocketAddr>,
    },
    /// Offer a local disk to gateways over libp2p (the gateway's `peer`
    /// backend kind). Prints its PeerId and addresses.
    Peer(peer::PeerArgs),
    /// Print the PeerId of a node's identity file, creating the file (mode
    /// 0600) when missing: a gateway's is `<data dir>/keys/peer.key`, a
    /// peer's `<data dir>/peer.key`.
    PeerId {
        /// The identity file.
        key_file: PathBuf,
    },
    /// Drive a running gateway through its admin API: status, backends,
    /// jobs (start, pause, resume, cancel, watch with a progress bar), an
    /// object's fragment map.
    Admin(admin::AdminArgs),
    /// Show where the fragments of an object would go under a policy, and
    /// which sites, providers or regions it could lose and still be read.
    Simulate(simulate::SimulateArgs),
    /// Rebuild a lost metadata store from the manifest journal on the
    /// backends (the gateway must be stopped; its data dir must hold no
    /// `meta.redb`). A progress bar on a terminal.
    Recover(recover::RecoverArgs),
    /// Copy a stopped metadata store into a new one: redb to PostgreSQL
    /// (several gateways) and back, verified by a count and digest.
    Meta(meta_copy::MetaArgs),
    /// Exit 0 if URL answers 200 within 5 s (a container's health check:
    /// the runtime image has no curl). E.g. http://127.0.0.1:9000/ready.
    Probe { url: String },
    /// The garbage waiting per backend, or drop that of a backend gone for
    /// good. Works on the data dir of a stopped gateway, or on the
    /// database of `[metadata] kind = "postgres"` (gateways may be running:
    /// `--data-dir` is then not used).
    Garbage {
        #[command(subcommand)]
        action: GarbageAction,
        /// A TOML configuration file (for its data_dir).
        #[arg(long, env = "SHARDGATE_CONFIG", global = true)]
        config: Option<PathBuf>,
        /// The data dir (overrides the configuration's).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum GarbageAction {
    /// Items, bytes and oldest age waiting, per backend.
    List,
    /// Drop, without deleting anything, every item of a backend that left
    /// the configuration for good (its blobs went with it).
    Forget {
        /// The backend id.
        backend: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardgate: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    // simulate's answer is its output; its log shows only what went wrong.
    let default_level = match cli.command {
        Command::Serve { .. } | Command::Peer(_) => "info",
        Command::PeerId { .. } | Command::Probe { .. } => "warn",
        Command::Simulate(_) | Command::Garbage { .. } | Command::Admin(_) => "warn",
        Command::Recover(_) | Command::Meta(_) => "warn",
    };
    let secrets = redact::Secrets::default();
    // `serve`'s traces: where they go is in its configuration (errors in
    // it are `serve`'s to report, once logging is on).
    let export = match &cli.command {
        Command::Serve { config, .. } => Config::load(config.as_deref()).ok().and_then(|c| {
            c.telemetry.otlp_endpoint.map(|endpoint| telemetry::Export {
                endpoint,
                service_name: c
                    .telemetry
                    .service_name
                    .unwrap_or_else(|| "shardgate".into()),
            })
        }),
        _ => None,
    };
    let mut telemetry = telemetry::init(default_level, secrets.clone(), export)?;
    match cli.command {
        Command::Serve {
            config,
            data_dir,
            listen,
            admin_listen,
        } => {
            let served = serve(config, data_dir, listen, admin_listen, &secrets).await;
            telemetry.flush();
            served
        }
        Command::Admin(args) => admin::run(args).await,
        Command::Peer(args) => peer::run(args, stop_signal()).await,
        Command::PeerId { key_file } => peer::print_id(&key_file),
        Command::Probe { url } => probe(&url).await,
        Command::Simulate(args) => simulate::run(args),
        Command::Recover(args) => recover::run(args).await,
        Command::Meta(args) => meta_copy::run(args).await,
        Command::Garbage {
            action,
            config,
            data_dir,
        } => garbage(action, config, data_dir).await,
    }
}

/// `shardgate probe URL`: 200 within 5 s, or a one-line cause.
async fn probe(url: &str) -> Result<()> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .context("making an HTTP client")?;
    let response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("{url}: no answer"))?;
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        let text = response.text().await.unwrap_or_default();
        anyhow::bail!("{url}: {status}: {}", text.trim());
    }
    Ok(())
}

/// `shardgate garbage`: on the metadata store of a stopped gateway (the
/// store's lock keeps a running one's out; issue 14's admin API will reach
/// a running gateway).
async fn garbage(
    action: GarbageAction,
    config_file: Option<PathBuf>,
    data_dir: Option<PathBuf>,
) -> Result<()> {
    let config = Config::load(config_file.as_deref())?;
    let meta = match config.metadata.kind {
        MetadataKind::Redb => {
            let path = data_dir
                .unwrap_or_else(|| config.data_dir.clone())
                .join("meta.redb");
            if !path.exists() {
                anyhow::bail!("no metadata store at {}", path.display());
            }
            // Opened as the gateway opens it: garbage commands change no
            // journaled row, so the journal needs no checkpoint after them.
            MetaStore::open_with(&path, true).with_context(|| {
                format!(
                    "opening {} (stop the gateway that uses it first)",
                    path.display()
                )
            })?
        }
        // Gateways may be serving from it meanwhile: listing reads, and
        // the backend whose items are forgotten is configured on none of
        // them (they share this configuration's backends).
        MetadataKind::Postgres => {
            let engine = metadata::connect(&config.metadata, config.metadata.url()?).await?;
            // Opened as a journaled store whatever this configuration
            // says: opened without, it would mark the gateways' journal
            // as missing changes.
            let engine_in = engine.clone();
            let copying = tokio::task::spawn_blocking(move || {
                shardgate_meta::kv::read(&*engine_in, |kv| {
                    shardgate_meta::copy::refuses_gateways(kv, metadata::now_ms())
                })
            })
            .await
            .context("the metadata task")??;
            if copying {
                anyhow::bail!(
                    "`shardgate meta copy` is copying from this store, or a copy into it did not finish: garbage waits for it"
                );
            }
            tokio::task::spawn_blocking(move || MetaStore::on_engine(engine, true, None))
                .await
                .context("the metadata task")?
                .context("opening the metadata store")?
        }
    };
    let configured: Vec<String> = setup::backend_infos(&config)?
        .into_iter()
        .map(|i| i.id.to_string())
        .collect();
    match action {
        GarbageAction::List => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            println!("backend\titems\tbytes\toldest\tconfigured");
            for b in meta.garbage_backlog()? {
                let oldest = b.oldest_added_unix_ms.map_or("-".to_string(), |t| {
                    format!("{}s", now.saturating_sub(t) / 1000)
                });
                let known = configured.iter().any(|c| *c == b.backend.as_str());
                println!(
                    "{}\t{}\t{}\t{oldest}\t{}",
                    b.backend,
                    b.items,
                    b.bytes,
                    if known { "yes" } else { "no" }
                );
            }
        }
        GarbageAction::Forget { backend } => {
            let id = shardgate_core::BackendId::new(backend.clone())
                .with_context(|| format!("{backend:?} is not a backend id"))?;
            if configured.contains(&backend) {
                anyhow::bail!(
                    "backend {backend} is configured: its garbage is collected; remove it from the configuration first"
                );
            }
            let n = meta.forget_garbage(&id)?;
            println!("shardgate: {n} garbage items of backend {backend} forgotten");
        }
    }
    Ok(())
}

async fn serve(
    config_file: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    listen: Option<std::net::SocketAddr>,
    admin_listen: Option<std::net::SocketAddr>,
    secrets: &redact::Secrets,
) -> Result<()> {
    let mut config = Config::load(config_file.as_deref())?;
    if let Some(d) = data_dir {
        config.data_dir = d;
    }
    if let Some(l) = listen {
        config.listen = l;
    }
    if let Some(l) = admin_listen {
        config.admin.listen = l;
    }
    // Every backend secret, wherever it comes from: inline, a file, or the
    // providers' environment variables.
    for (i, b) in config.backends.iter().enumerate() {
        let resolved = [
            b.secret_access_key(i),
            b.account_key(i),
            b.service_account_key(i),
        ];
        for secret in resolved.into_iter().flatten().flatten() {
            secrets.add(&secret);
        }
    }
    for (name, value) in std::env::vars() {
        if [
            "SECRET_ACCESS_KEY",
            "SESSION_TOKEN",
            "ACCOUNT_KEY",
            "ACCESS_KEY",
            "SAS_TOKEN",
        ]
        .iter()
        .any(|s| name.ends_with(s))
            && !name.ends_with("_ID")
        {
            secrets.add(&value);
        }
    }
    let parts = setup::prepare(&config).await?;
    secrets.add(&parts.credentials.secret_key);
    let journaled = config.journal.enabled;
    // What the gateways sharing a store must agree on: a gateway
    // configured otherwise than the live ones is refused as it joins,
    // before it writes anything.
    let shared = setup::shared_config(&config, &parts.gateway.recipients)?;
    let mut member = metadata::member_record(shared, config.listen);
    let meta = match config.metadata.kind {
        MetadataKind::Redb => {
            let meta_path = parts.meta_path.clone();
            let meta = tokio::task::spawn_blocking(move || {
                MetaStore::open_with(&meta_path, journaled)
            })
            .await
            .context("opening the metadata store")?
            .with_context(|| {
                format!(
                    "opening the metadata store {} (is another shardgate using this data dir?)",
                    parts.meta_path.display()
                )
            })?;
            // Alone on its file: the join only records it.
            metadata::join(&meta, &member).await?;
            meta
        }
        MetadataKind::Postgres => {
            let url = config.metadata.url()?;
            secrets.add(&url);
            metadata::open_postgres(&config.metadata, url, journaled, &member).await?
        }
    };
    let summary = describe(&parts.gateway);
    let gateway = Gateway::new(parts.gateway, meta.clone())?;
    let keeper = Arc::new(LeaseKeeper::new(
        meta.clone(),
        shardgate_jobs::LEASE_TERM.as_millis() as u64,
    ));
    let journal = journaled.then(|| {
        let journal = Journal::shared(
            meta.clone(),
            gateway.recipients(),
            gateway.clone(),
            JournalSettings {
                interval: Duration::from_millis(config.journal.interval_ms),
                batch_bytes: config.journal.batch_bytes,
                min_checkpoint_bytes: config.journal.min_checkpoint_bytes,
                ..JournalSettings::default()
            },
            keeper.clone(),
        );
        let handle = journal.spawn();
        (journal, handle)
    });
    let meter = match &config.telemetry.otlp_endpoint {
        Some(endpoint) => {
            let source = gateway.clone();
            Some(otlp_metrics::export(
                endpoint,
                config
                    .telemetry
                    .service_name
                    .as_deref()
                    .unwrap_or("shardgate"),
                Duration::from_secs(config.telemetry.metrics_interval_secs.unwrap_or(60).max(1)),
                move || shardgate_node::metrics::render(&source, source.server_load()),
            )?)
        }
        None => None,
    };
    let jobs = Jobs::new(gateway.clone(), parts.jobs, keeper);
    jobs.refresh_health().await;
    jobs.spawn_background();
    let admin = match config.admin.enabled {
        true => Some(start_admin(&config, jobs.clone()).await?),
        false => None,
    };
    let tls = config
        .server
        .tls
        .as_ref()
        .map(|t| {
            shardgate_s3::Tls::load(&shardgate_s3::TlsFiles {
                cert_file: t.cert_file.clone(),
                key_file: t.key_file.clone(),
            })
            .context("server.tls")
        })
        .transpose()?;
    let listener = shardgate_s3::listen(config.listen)
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    if let Some(warning) = plaintext_warning(addr, tls.is_some()) {
        tracing::warn!("{warning}");
    }
    let options = serve_options(&config.server, tls, config.data_dir.join("spool"));

    // Best effort: a closed stdout (a supervisor that stopped reading)
    // must not stop the gateway. The listening line comes last, so a reader
    // that waits for it has seen the rest.
    let mut out = std::io::stdout().lock();
    let _ = print_created(&mut out, &parts.created, &config);
    let _ = writeln!(
        out,
        "shardgate: {summary}, data in {}",
        config.data_dir.display()
    );
    let _ = writeln!(
        out,
        "shardgate: access key {}",
        parts.credentials.access_key
    );
    if let Some((addr, token_file)) = &admin {
        let _ = writeln!(
            out,
            "shardgate: admin API on http://{addr} (token in {})",
            token_file.display()
        );
    }
    let _ = writeln!(out, "shardgate: S3 endpoint listening on {scheme}://{addr}");
    let _ = out.flush();
    drop(out);

    member.s3_endpoint = format!("{scheme}://{addr}");
    if let Some((admin_addr, _)) = &admin {
        member.admin_endpoint = format!("http://{admin_addr}");
    }
    let heartbeat = jobs.spawn_heartbeat(member);
    let served = shardgate_s3::serve(listener, gateway, parts.credentials, options, stop_signal())
        .await
        .context("serving");
    // Everything committed goes to the backends before the process ends.
    if let Some((journal, handle)) = journal {
        match tokio::time::timeout(Duration::from_secs(60), journal.stop(handle)).await {
            Ok(Ok(())) => tracing::info!("journal: every change shipped"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "journal: changes not shipped at stop; the next start ships them")
            }
            Err(_) => tracing::warn!(
                "journal: shipping at stop took over 60 s; the next start ships the rest"
            ),
        }
    }
    if let Some(meter) = meter
        && let Err(e) = meter.shutdown()
    {
        tracing::warn!(error = %e, "the last metrics were not exported");
    }
    // The other gateways sharing the store take this one's jobs over at
    // once, and leave nothing of its in flight: it wrote all it will.
    heartbeat.abort();
    jobs.let_go_leases().await;
    metadata::leave(&meta).await;
    served?;
    Ok(())
}

/// Starts the admin API on its own listener; returns its address and the
/// token's file.
async fn start_admin(config: &Config, jobs: Arc<Jobs>) -> Result<(std::net::SocketAddr, PathBuf)> {
    let token_file = config.admin_token_file();
    let (token, created) =
        shardgate_admin::token::load_or_create(&token_file).context("the admin token")?;
    if created {
        tracing::info!(file = %token_file.display(), "admin token created");
    }
    let listener = tokio::net::TcpListener::bind(config.admin.listen)
        .await
        .with_context(|| format!("admin API: listening on {}", config.admin.listen))?;
    let addr = listener.local_addr().context("reading the admin address")?;
    if !addr.ip().is_loopback() {
        tracing::warn!(
            "admin API on {addr}: plain HTTP, its token crosses the network in clear text; keep it on a trusted network"
        );
    }
    tokio::spawn(async move {
        if let Err(e) = shardgate_admin::serve(listener, jobs, token, std::future::pending()).await
        {
            tracing::error!(error = %e, "admin API stopped");
        }
    });
    Ok((addr, token_file))
}

/// What to say of a listener without TLS that other hosts can reach.
fn plaintext_warning(addr: std::net::SocketAddr, tls: bool) -> Option<String> {
    (!tls && !addr.ip().is_loopback()).then(|| {
        format!(
            "listening on {addr} without TLS: requests, object data and presigned URLs cross the network in clear text; set [server.tls] cert_file and key_file"
        )
    })
}

/// The listener's options from `[server]`; the connection cap is chosen
/// (and logged) against the descriptor limit.
fn serve_options(
    server: &shardgate_config::ServerConfig,
    tls: Option<shardgate_s3::Tls>,
    spool_dir: PathBuf,
) -> shardgate_s3::ServeOptions {
    let (max_connections, cap_line) =
        shardgate_s3::ServeOptions::connection_cap(server.max_connections);
    tracing::info!("{cap_line}");
    shardgate_s3::ServeOptions {
        timeouts: shardgate_s3::Timeouts {
            header: Duration::from_secs(server.header_timeout_secs),
            idle: Duration::from_secs(server.idle_timeout_secs),
            body: Duration::from_secs(server.body_timeout_secs),
            body_min_rate: server.body_min_rate,
            send: Duration::from_secs(server.send_timeout_secs),
        },
        max_connections,
        http2_max_streams: server.http2_max_streams,
        limits: shardgate_s3::Limits {
            max_requests: server.max_requests,
            memory_bytes: server.memory_budget_bytes,
            queue_timeout: Duration::from_secs(server.queue_timeout_secs),
        },
        tls,
        spool_dir,
    }
}

fn describe(g: &shardgate_node::GatewayConfig) -> String {
    let policy = g
        .policies
        .get(&g.default_policy)
        .map(|p| {
            format!(
                "{} + {} (write quorum {})",
                p.code.k(),
                p.code.m(),
                p.write_quorum
            )
        })
        .unwrap_or_default();
    format!("{} backends, default policy {policy}", g.backends.len())
}

fn print_created(
    out: &mut impl Write,
    created: &setup::Created,
    config: &Config,
) -> std::io::Result<()> {
    if let Some((path, c)) = &created.credentials {
        writeln!(
            out,
            "shardgate: first start in {}: created",
            config.data_dir.display()
        )?;
        writeln!(out, "  access key: {}", c.access_key)?;
        writeln!(out, "  secret key: {}", c.secret_key)?;
        writeln!(
            out,
            "  (stored in {}, mode 0600; printed only this once)",
            path.display()
        )?;
    }
    if let Some(path) = &created.identity {
        writeln!(out, "  age identity: {}", path.display())?;
    }
    if let Some((secret, public)) = &created.recovery {
        writeln!(out, "  recovery recipient: {}", public.display())?;
        writeln!(out, "  recovery identity:  {}", secret.display())?;
    }
    if created.identity.is_some() || created.recovery.is_some() {
        writeln!(
            out,
            "  WARNING: keep the identity files safe and back them up (move the recovery identity offline): without one of them no object can be decrypted."
        )?;
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::plaintext_warning;

    #[test]
    fn plain_http_is_warned_about_beyond_loopback_only() {
        let at = |a: &str| {
            a.parse::<std::net::SocketAddr>()
                .unwrap_or_else(|_| unreachable!())
        };
        assert!(plaintext_warning(at("0.0.0.0:9000"), false).is_some());
        assert!(plaintext_warning(at("[::]:9000"), false).is_some());
        assert!(plaintext_warning(at("192.168.1.5:9000"), false).is_some());
        assert!(plaintext_warning(at("0.0.0.0:9000"), true).is_none());
        assert!(plaintext_warning(at("127.0.0.1:9000"), false).is_none());
        assert!(plaintext_warning(at("[::1]:9000"), false).is_none());
    }
}
