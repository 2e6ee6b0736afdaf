//! `shardgate admin`: the admin API's client. Text for people (tables, an
//! indicatif progress bar while a job runs), `--json` for scripts (the
//! API's own JSON; `watch` prints one object per line). Every failure is
//! one line: what was asked, and why it failed.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{HumanBytes, HumanDuration, ProgressBar, ProgressStyle};
use serde_json::Value;
use shardgate_config::Config;

#[derive(Args, Debug)]
pub struct AdminArgs {
    #[command(subcommand)]
    command: AdminCommand,
    /// The admin API's URL (default: http:// and the configuration's
    /// `[admin] listen`).
    #[arg(long, env = "SHARDGATE_ADMIN_URL", global = true)]
    url: Option<String>,
    /// The admin token's file (default: the configuration's, or
    /// `<data dir>/admin.token`).
    #[arg(long, env = "SHARDGATE_ADMIN_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// A TOML configuration file (for the admin address and data dir).
    #[arg(long, env = "SHARDGATE_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// The data dir (where the token is, by default).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Print JSON (the API's own) instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// The node in a page: backends, repair queue, garbage, jobs.
    Status,
    /// Each backend's health and the fragments and bytes it holds.
    Backends,
    /// Every job's state and progress.
    Jobs,
    /// Every gateway sharing the metadata store, and the jobs each runs.
    Gateways,
    /// Start a job and, with --watch, follow it: `scrub` (a pass now),
    /// `drain --backend ID` (empty a backend while reads and writes go on),
    /// or `rebalance` (fragments toward where the placer puts them now,
    /// fuller backends to emptier ones).
    Start {
        kind: String,
        /// `drain`: the backend to empty.
        #[arg(long)]
        backend: Option<String>,
        #[arg(long)]
        watch: bool,
    },
    /// Hold a job after its current step (also across restarts).
    Pause { id: String },
    /// Let a paused job go on.
    Resume { id: String },
    /// End a job's current run.
    Cancel { id: String },
    /// Follow a job with a progress bar until it stops running.
    Watch { id: String },
    /// One object's fragment map: where each fragment is, in what state,
    /// and how many more backend losses the object survives.
    Object { bucket: String, key: String },
    /// S3 users besides the configured key: each owns the buckets it
    /// creates and may use no other.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Create a user: prints its access key and secret key (shown once).
    Create { name: String },
    /// Every user, with its access key.
    List,
    /// Delete a user, by name or access key (it must own no bucket).
    Delete { user: String },
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(args: &AdminArgs) -> Result<Self> {
        let mut config = Config::load(args.config.as_deref())?;
        if let Some(d) = &args.data_dir {
            config.data_dir = d.clone();
        }
        let base = match &args.url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("http://{}", config.admin.listen),
        };
        let token_file = args
            .token_file
            .clone()
            .unwrap_or_else(|| config.admin_token_file());
        let token = shardgate_admin::token::load(&token_file).context("the admin token")?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("making an HTTP client")?;
        Ok(Self { http, base, token })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            request = request.json(&b);
        }
        let response = request.send().await.map_err(|e| {
            let why = if e.is_connect() {
                "cannot connect (is `shardgate serve` running, with this admin address?)"
                    .to_string()
            } else if e.is_timeout() {
                "no answer within 30 s".to_string()
            } else {
                e.to_string()
            };
            anyhow::anyhow!("admin API at {}: {why}", self.base)
        })?;
        let status = response.status();
        let text = response.text().await.context("reading the answer")?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let why = value
                .get("error")
                .and_then(Value::as_str)
                .map_or_else(|| value.to_string(), str::to_string);
            bail!("{path}: {why} ({status})");
        }
        Ok(value)
    }

    async fn get(&self, path: &str) -> Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Option<Value>) -> Result<Value> {
        self.call(reqwest::Method::POST, path, body).await
    }

    async fn delete(&self, path: &str) -> Result<Value> {
        self.call(reqwest::Method::DELETE, path, None).await
    }
}

/// A path segment, percent-encoded (object keys hold anything).
fn segment(s: &str) -> String {
    urlencoding::encode(s).into_owned()
}

pub async fn run(args: AdminArgs) -> Result<()> {
    let client = Client::new(&args)?;
    let json = args.json;
    let print = |v: &Value| -> Result<()> {
        println!("{}", serde_json::to_string_pretty(v)?);
        Ok(())
    };
    match &args.command {
        AdminCommand::Status => {
            let v = client.get("/v1/status").await?;
            if json {
                return print(&v);
            }
            print_status(&v);
        }
        AdminCommand::Backends => {
            let v = client.get("/v1/backends").await?;
            if json {
                return print(&v);
            }
            print_backends(&v);
        }
        AdminCommand::User { command } => {
            let v = match command {
                UserCommand::Create { name } => {
                    client
                        .post("/v1/users", Some(serde_json::json!({ "name": name })))
                        .await?
                }
                UserCommand::List => client.get("/v1/users").await?,
                UserCommand::Delete { user } => {
                    client
                        .delete(&format!("/v1/users/{}", segment(user)))
                        .await?
                }
            };
            if json {
                return print(&v);
            }
            print_users(command, &v);
        }
        AdminCommand::Gateways => {
            let v = client.get("/v1/gateways").await?;
            if json {
                return print(&v);
            }
            print_gateways(&v);
        }
        AdminCommand::Jobs => {
            let v = client.get("/v1/jobs").await?;
            if json {
                return print(&v);
            }
            print_jobs(&v);
        }
        AdminCommand::Start {
            kind,
            backend,
            watch: follow,
        } => {
            let before = client.get("/v1/jobs").await?;
            let v = client
                .post(
                    "/v1/jobs",
                    Some(serde_json::json!({ "kind": kind, "backend": backend })),
                )
                .await?;
            let id = v["id"].as_str().unwrap_or(kind).to_string();
            if *follow {
                let runs_before = before
                    .as_array()
                    .and_then(|a| a.iter().find(|j| j["id"] == id.as_str()))
                    .and_then(|j| j["runs"].as_u64())
                    .or(Some(0));
                return watch(&client, &id, json, runs_before).await;
            }
            if json {
                return print(&v);
            }
            println!("{id}: start asked");
        }
        AdminCommand::Pause { id } | AdminCommand::Resume { id } | AdminCommand::Cancel { id } => {
            let action = match &args.command {
                AdminCommand::Pause { .. } => "pause",
                AdminCommand::Resume { .. } => "resume",
                _ => "cancel",
            };
            let v = client
                .post(&format!("/v1/jobs/{}/{action}", segment(id)), None)
                .await?;
            if json {
                return print(&v);
            }
            println!(
                "{id}: {} ({action} asked)",
                v["state"].as_str().unwrap_or("?")
            );
        }
        AdminCommand::Watch { id } => watch(&client, id, json, None).await?,
        AdminCommand::Object { bucket, key } => {
            let v = client
                .get(&format!("/v1/objects/{}/{}", segment(bucket), segment(key)))
                .await?;
            if json {
                return print(&v);
            }
            print_object(&v);
        }
    }
    Ok(())
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn print_status(v: &Value) {
    println!(
        "shardgate {}, up {}",
        v["version"].as_str().unwrap_or("?"),
        HumanDuration(Duration::from_secs(u(&v["uptime_secs"])))
    );
    println!(
        "backends: {} up, {} down",
        u(&v["backends_up"]),
        u(&v["backends_down"])
    );
    let margins: Vec<String> = v["repair_queue_by_margin"]
        .as_array()
        .map(|a| {
            a.iter()
                .enumerate()
                .filter(|(_, n)| u(n) > 0)
                .map(|(m, n)| format!("{} at margin {m}", u(n)))
                .collect()
        })
        .unwrap_or_default();
    println!(
        "repair queue: {} objects{}",
        u(&v["repair_queue_objects"]),
        if margins.is_empty() {
            String::new()
        } else {
            format!(" ({})", margins.join(", "))
        }
    );
    println!(
        "garbage: {} blobs waiting; {} writes open",
        u(&v["garbage_items"]),
        u(&v["open_intents"])
    );
    print_jobs(&v["jobs"]);
}

fn print_backends(v: &Value) {
    println!(
        "{:<20} {:<22} {:>10} {:>12} {:>12}",
        "BACKEND", "STATE", "FRAGMENTS", "BYTES", "FREE"
    );
    for b in v.as_array().into_iter().flatten() {
        let state = if b["gone"].as_bool() == Some(true) {
            format!("GONE ({}s)", u(&b["for_secs"]))
        } else if b["up"].as_bool() == Some(true) {
            if b["writable"].as_bool() == Some(true) {
                "up".to_string()
            } else {
                "up, read-only".to_string()
            }
        } else {
            format!("DOWN ({}s)", u(&b["for_secs"]))
        };
        let free = b["free_bytes"]
            .as_u64()
            .map_or("-".to_string(), |f| HumanBytes(f).to_string());
        println!(
            "{:<20} {:<22} {:>10} {:>12} {:>12}",
            b["id"].as_str().unwrap_or("?"),
            state,
            u(&b["fragments"]),
            HumanBytes(u(&b["bytes"])).to_string(),
            free
        );
        if let Some(e) = b["last_error"].as_str()
            && b["up"].as_bool() != Some(true)
        {
            println!("    last error: {e}");
        }
    }
}

fn job_line(j: &Value) -> String {
    let total = j["objects_total"]
        .as_u64()
        .map_or(String::new(), |t| format!("/{t}"));
    let eta = j["eta_secs"].as_u64().map_or(String::new(), |e| {
        format!(", ETA {}", HumanDuration(Duration::from_secs(e)))
    });
    format!(
        "{:<16} {:<10} {}{} objects, {} at {}/s{}  {}",
        j["id"].as_str().unwrap_or("?"),
        j["state"].as_str().unwrap_or("?"),
        u(&j["objects_done"]),
        total,
        HumanBytes(u(&j["bytes_done"])),
        HumanBytes(u(&j["rate_bytes_per_sec"])),
        eta,
        j["detail"].as_str().unwrap_or("")
    )
}

fn print_jobs(v: &Value) {
    for j in v.as_array().into_iter().flatten() {
        println!("{}", job_line(j));
        if let Some(g) = j["elsewhere"].as_str() {
            println!("    runs on gateway {g}");
        }
        if let Some(f) = j["last_failure"].as_str() {
            println!("    last failure: {f}");
        }
    }
}

fn print_gateways(v: &Value) {
    for g in v.as_array().into_iter().flatten() {
        println!(
            "{}{} on {} (pid {}), S3 {}, admin {}: {}",
            g["id"].as_str().unwrap_or("?"),
            if g["this"].as_bool() == Some(true) {
                " (this one)"
            } else {
                ""
            },
            g["host"].as_str().unwrap_or("?"),
            u(&g["pid"]),
            g["s3_endpoint"].as_str().unwrap_or("?"),
            g["admin_endpoint"]
                .as_str()
                .filter(|a| !a.is_empty())
                .unwrap_or("off"),
            if g["live"].as_bool() == Some(true) {
                "alive"
            } else {
                "GONE (its lease ran out)"
            },
        );
        // A job shows under the gateway that holds its lease.
        let here: Vec<&Value> = g["jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|j| j["runs_here"] == true)
            .collect();
        for j in here {
            println!("    {}", job_line(j));
        }
    }
}

fn print_object(v: &Value) {
    println!(
        "{}/{} version {} ({} bytes): survives {} more backend losses{}",
        v["bucket"].as_str().unwrap_or("?"),
        v["key"].as_str().unwrap_or("?"),
        v["version"].as_str().unwrap_or("?"),
        u(&v["size"]),
        v["survives_losses"].as_i64().unwrap_or(0),
        if v["queued_for_repair"].as_bool() == Some(true) {
            "; queued for repair"
        } else {
            ""
        }
    );
    for (i, s) in v["segments"].as_array().into_iter().flatten().enumerate() {
        if s["inline"].as_bool() == Some(true) {
            println!(
                "segment {i}: kept in the manifest ({} bytes), carried by the manifest journal",
                u(&s["plaintext_bytes"])
            );
            continue;
        }
        println!(
            "segment {i}: {} + {}, {} healthy, fragments of {}",
            u(&s["k"]),
            u(&s["m"]),
            u(&s["healthy"]),
            HumanBytes(u(&s["fragment_bytes"]))
        );
        for f in s["fragments"].as_array().into_iter().flatten() {
            println!(
                "  {:>3}  {:<20} {:<8} {}",
                u(&f["index"]),
                f["backend"].as_str().unwrap_or("?"),
                f["state"].as_str().unwrap_or("?"),
                f["blob"].as_str().unwrap_or("?")
            );
        }
    }
}

/// Follows job `id` until it stops running: a progress bar (objects, with
/// bytes, rate and ETA) on a terminal, one JSON line per look with --json.
/// With `runs_before`, a run it asked for must begin first (the job
/// picks the request up within a moment; 30 s at most).
async fn watch(client: &Client, id: &str, json: bool, runs_before: Option<u64>) -> Result<()> {
    let path = format!("/v1/jobs/{}", segment(id));
    let bar = ProgressBar::new(0);
    if json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} objects, {msg}")
            .context("progress style")?
            .progress_chars("=> "),
    );
    bar.set_prefix(id.to_string());
    // A job asked to start may take a moment to pick the request up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let j = client.get(&path).await?;
        if json {
            println!("{}", serde_json::to_string(&j)?);
        }
        let state = j["state"].as_str().unwrap_or("?").to_string();
        let begun = runs_before.is_none_or(|before| u(&j["runs"]) > before);
        if let Some(total) = j["objects_total"].as_u64() {
            bar.set_length(total);
        }
        bar.set_position(u(&j["objects_done"]));
        let eta = j["eta_secs"].as_u64().map_or(String::new(), |e| {
            format!(", ETA {}", HumanDuration(Duration::from_secs(e)))
        });
        bar.set_message(format!(
            "{} at {}/s{eta}",
            HumanBytes(u(&j["bytes_done"])),
            HumanBytes(u(&j["rate_bytes_per_sec"]))
        ));
        let over = match state.as_str() {
            "running" | "paused" => false,
            _ => begun,
        };
        if !begun && tokio::time::Instant::now() > deadline {
            bar.finish_and_clear();
            bail!("{id}: the job did not start within 30 s");
        }
        if over {
            bar.finish_and_clear();
            if !json {
                println!("{}", job_line(&j));
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn print_users(command: &UserCommand, v: &Value) {
    let text = |v: &Value, field: &str| v[field].as_str().unwrap_or("-").to_string();
    match command {
        UserCommand::Create { .. } => {
            println!("user:       {}", text(v, "name"));
            println!("access key: {}", text(v, "access_key"));
            println!("secret key: {}", text(v, "secret_key"));
            println!("(the secret key is not shown again)");
        }
        UserCommand::List => {
            let users = v.as_array().cloned().unwrap_or_default();
            if users.is_empty() {
                println!("no users (only the configured access key)");
                return;
            }
            println!("{:<32} ACCESS KEY", "NAME");
            for u in users {
                println!("{:<32} {}", text(&u, "name"), text(&u, "access_key"));
            }
        }
        UserCommand::Delete { .. } => println!("deleted user {}", text(v, "deleted")),
    }
}
