//! The admin API (issue 14): what an operator needs to see and steer the
//! node's durability, on a listener of its own (127.0.0.1 by default, so
//! it is not exposed with the S3 endpoint), every request carrying the
//! bearer token of [`token`].
//!
//! JSON over HTTP, versioned under `/v1`:
//! - `GET /v1/status`: the node in a page (backends up, repair queue,
//!   garbage, jobs);
//! - `GET /v1/backends`: each backend's health, and the fragments and bytes
//!   it holds (a walk of the manifests, metadata only);
//! - `GET /v1/jobs`, `GET /v1/jobs/{id}`: progress, rate and ETA;
//!   `POST /v1/jobs` (`{"kind": "scrub"}`, `{"kind": "drain", "backend":
//!   "ID"}`, `{"kind": "rebalance"}`) starts one;
//!   `POST /v1/jobs/{id}/pause|resume|cancel` steer one;
//! - `GET /v1/gateways`: every gateway sharing the metadata store, alive
//!   or not yet swept, each with its jobs (as of its last heartbeat), so
//!   any gateway shows the jobs of all;
//! - `GET /v1/objects/{bucket}/{key}`: one object's fragment map, and how
//!   many more backend losses it survives.
//!
//! Errors are `{"error": "..."}` with a status that says whose fault it is.

pub mod token;

use std::future::Future;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shardgate_core::FragmentState;
use shardgate_jobs::{ControlError, GatewayJobs, JobRequest, JobStatus, Jobs};
use shardgate_meta::MetaError;
use shardgate_node::{GatewayError, blocking, now_ms};
use tokio::net::TcpListener;

struct Admin {
    jobs: Arc<Jobs>,
    token: String,
    started_ms: u64,
}

/// An answer that went wrong.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<ControlError> for Failure {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::NoSuchJob(_) => Self(StatusCode::NOT_FOUND, e.to_string()),
            ControlError::Refused(_) => Self(StatusCode::CONFLICT, e.to_string()),
            ControlError::Node(e) => e.into(),
        }
    }
}

impl From<GatewayError> for Failure {
    fn from(e: GatewayError) -> Self {
        match e {
            GatewayError::NoSuchKey | GatewayError::DeleteMarker { .. } => {
                Self(StatusCode::NOT_FOUND, "no such object".into())
            }
            GatewayError::Meta(MetaError::NoSuchBucket) => {
                Self(StatusCode::NOT_FOUND, "no such bucket".into())
            }
            GatewayError::Meta(e @ MetaError::NoSuchUser(_)) => {
                Self(StatusCode::NOT_FOUND, e.to_string())
            }
            GatewayError::Meta(
                e @ (MetaError::UserExists(_) | MetaError::UserOwnsBuckets { .. }),
            ) => Self(StatusCode::CONFLICT, e.to_string()),
            e @ GatewayError::InvalidUser(_) => Self(StatusCode::BAD_REQUEST, e.to_string()),
            e => {
                tracing::error!(error = %e, "admin request failed");
                Self(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        }
    }
}

type Answer<T> = Result<Json<T>, Failure>;

/// Serves the admin API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    jobs: Arc<Jobs>,
    token: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(jobs, token))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The API's routes (tests call it in-process).
pub fn router(jobs: Arc<Jobs>, token: String) -> Router {
    let admin = Arc::new(Admin {
        jobs,
        token,
        started_ms: now_ms(),
    });
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/backends", get(backends))
        .route("/v1/jobs", get(jobs_list).post(job_start))
        .route("/v1/jobs/{id}", get(job_one))
        .route("/v1/gateways", get(gateways))
        .route("/v1/jobs/{id}/{action}", post(job_action))
        .route("/v1/objects/{bucket}/{*key}", get(object_map))
        .route("/v1/users", get(users_list).post(user_create))
        .route("/v1/users/{user}", delete(user_delete))
        .fallback(|| async { Failure(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .layer(middleware::from_fn_with_state(admin.clone(), authorize))
        .with_state(admin)
}

/// Compares in time that does not depend on where the strings differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authorize(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if same_secret(t.trim().as_bytes(), admin.token.as_bytes()) => {
            next.run(request).await
        }
        Some(_) => Failure(StatusCode::FORBIDDEN, "wrong admin token".into()).into_response(),
        None => Failure(
            StatusCode::UNAUTHORIZED,
            "an admin token is required: Authorization: Bearer <the token in admin.token>".into(),
        )
        .into_response(),
    }
}

#[derive(Serialize)]
struct Status {
    version: &'static str,
    uptime_secs: u64,
    backends_up: usize,
    backends_down: usize,
    repair_queue_objects: u64,
    /// Queued objects by margin (index: healthy fragments beyond k).
    repair_queue_by_margin: Vec<u64>,
    garbage_items: u64,
    open_intents: u64,
    jobs: Vec<JobStatus>,
}

async fn status(State(admin): State<Arc<Admin>>) -> Answer<Status> {
    let gw = admin.jobs.gateway();
    let meta = gw.meta().clone();
    let ((queued, by_margin), (garbage, intents)) =
        blocking(move || Ok((meta.repair_queue_counts()?, meta.pending_counts()?))).await?;
    let board = gw.backend_set().board();
    let up = gw
        .backends()
        .filter(|b| board.state(b.id()).is_none_or(|s| s.up))
        .count();
    Ok(Json(Status {
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: now_ms().saturating_sub(admin.started_ms) / 1000,
        backends_up: up,
        backends_down: gw.backends().count() - up,
        repair_queue_objects: queued,
        repair_queue_by_margin: by_margin,
        garbage_items: garbage,
        open_intents: intents,
        jobs: admin.jobs.list(),
    }))
}

#[derive(Serialize)]
struct BackendView {
    id: String,
    labels: std::collections::BTreeMap<String, String>,
    up: bool,
    writable: bool,
    /// How long it has been up or down.
    for_secs: u64,
    /// Down past its grace (or gone from the configuration): its
    /// fragments are being rebuilt elsewhere.
    gone: bool,
    consecutive_failures: u32,
    last_error: Option<String>,
    capacity_bytes: Option<u64>,
    free_bytes: Option<u64>,
    /// Fragments and bytes of current objects.
    fragments: u64,
    bytes: u64,
    /// Fragments and bytes of parts of uploads in progress.
    part_fragments: u64,
    part_bytes: u64,
}

async fn backends(State(admin): State<Arc<Admin>>) -> Answer<Vec<BackendView>> {
    let gw = admin.jobs.gateway();
    let meta = gw.meta().clone();
    let usage = blocking(move || meta.usage_by_backend()).await?;
    let board = gw.backend_set().board();
    let grace = admin.jobs.settings().backend_grace;
    let mut out: Vec<BackendView> = gw
        .backends()
        .map(|b| {
            let state = board.state(b.id());
            let u = usage.get(b.id()).copied().unwrap_or_default();
            let up = state.as_ref().is_none_or(|s| s.up);
            BackendView {
                id: b.id().to_string(),
                labels: b.info().labels.clone(),
                up,
                writable: state.as_ref().is_none_or(|s| s.writable),
                for_secs: state.as_ref().map_or(0, |s| s.for_how_long.as_secs()),
                gone: state
                    .as_ref()
                    .is_some_and(|s| !s.up && s.for_how_long >= grace),
                consecutive_failures: state.as_ref().map_or(0, |s| s.consecutive_failures),
                last_error: state.as_ref().and_then(|s| s.last_error.clone()),
                capacity_bytes: b.info().capacity_bytes,
                free_bytes: state.and_then(|s| s.free_bytes),
                fragments: u.fragments,
                bytes: u.bytes,
                part_fragments: u.part_fragments,
                part_bytes: u.part_bytes,
            }
        })
        .collect();
    // Backends no longer configured that manifests still name.
    for (id, u) in usage {
        if gw.backend(&id).is_none() {
            out.push(BackendView {
                id: id.to_string(),
                labels: Default::default(),
                up: false,
                writable: false,
                for_secs: 0,
                gone: true,
                consecutive_failures: 0,
                last_error: Some("not in the configuration".into()),
                capacity_bytes: None,
                free_bytes: None,
                fragments: u.fragments,
                bytes: u.bytes,
                part_fragments: u.part_fragments,
                part_bytes: u.part_bytes,
            });
        }
    }
    Ok(Json(out))
}

async fn jobs_list(State(admin): State<Arc<Admin>>) -> Json<Vec<JobStatus>> {
    Json(admin.jobs.list())
}

async fn gateways(State(admin): State<Arc<Admin>>) -> Answer<Vec<GatewayJobs>> {
    Ok(Json(admin.jobs.gateways().await?))
}

async fn job_one(State(admin): State<Arc<Admin>>, Path(id): Path<String>) -> Answer<JobStatus> {
    Ok(Json(admin.jobs.status(&id)?))
}

#[derive(Deserialize)]
struct StartJob {
    kind: String,
    /// `drain`: the backend to empty.
    backend: Option<String>,
}

async fn job_start(
    State(admin): State<Arc<Admin>>,
    Json(body): Json<StartJob>,
) -> Answer<JobStatus> {
    let request = match body.kind.as_str() {
        "scrub" => JobRequest::Scrub,
        "rebalance" => JobRequest::Rebalance,
        "drain" => {
            let Some(backend) = body.backend.as_deref() else {
                return Err(Failure(
                    StatusCode::BAD_REQUEST,
                    "a drain needs the backend to empty: {\"kind\": \"drain\", \"backend\": \"ID\"}".into(),
                ));
            };
            let backend = shardgate_core::BackendId::new(backend)
                .map_err(|e| Failure(StatusCode::BAD_REQUEST, e.to_string()))?;
            JobRequest::Drain { backend }
        }
        other => {
            return Err(Failure(
                StatusCode::BAD_REQUEST,
                format!("no job kind {other:?} can be started (scrub, drain, rebalance)"),
            ));
        }
    };
    Ok(Json(admin.jobs.start(request).await?))
}

async fn job_action(
    State(admin): State<Arc<Admin>>,
    Path((id, action)): Path<(String, String)>,
) -> Answer<JobStatus> {
    let status = match action.as_str() {
        "pause" => admin.jobs.pause(&id).await?,
        "resume" => admin.jobs.resume(&id).await?,
        "cancel" => admin.jobs.cancel(&id).await?,
        other => {
            return Err(Failure(
                StatusCode::NOT_FOUND,
                format!("no action {other:?} (pause, resume, cancel)"),
            ));
        }
    };
    Ok(Json(status))
}

#[derive(Serialize)]
struct FragmentView {
    index: usize,
    backend: String,
    blob: String,
    /// stored, missing (never written), suspect (reported bad, queued),
    /// down (its backend does not answer now), gone (down past its grace,
    /// or not configured).
    state: &'static str,
}

#[derive(Serialize)]
struct SegmentView {
    k: usize,
    m: usize,
    plaintext_bytes: u64,
    fragment_bytes: u64,
    healthy: usize,
    /// Kept in the manifest: no fragments; it survives what the manifest
    /// journal does (placed by the default policy).
    inline: bool,
    fragments: Vec<FragmentView>,
}

#[derive(Serialize)]
struct ObjectView {
    bucket: String,
    key: String,
    version: String,
    size: u64,
    segments: Vec<SegmentView>,
    /// Backend losses the object survives now: the fewest healthy
    /// fragments of any segment, less k (negative: unreadable now).
    survives_losses: i64,
    queued_for_repair: bool,
}

async fn object_map(
    State(admin): State<Arc<Admin>>,
    Path((bucket, key)): Path<(String, String)>,
) -> Answer<ObjectView> {
    let gw = admin.jobs.gateway();
    let meta = gw.meta().clone();
    let (b, k) = (bucket.clone(), key.clone());
    let (row, entry) = blocking(move || {
        let row = meta.object_version(&b, &k, &shardgate_meta::VersionSelector::Latest)?;
        let entry = match &row {
            Some(r) => meta.repair_entry(&b, &k, r.version.seq)?,
            None => None,
        };
        Ok((row, entry))
    })
    .await?;
    let manifest = row
        .and_then(|r| r.manifest)
        .ok_or(GatewayError::NoSuchKey)?;
    let entry = entry.filter(|e| e.version == manifest.version_id);
    let board = gw.backend_set().board();
    let grace = admin.jobs.settings().backend_grace;
    let mut survives = i64::MAX;
    let mut segments = Vec::new();
    for (si, seg) in manifest.segments.iter().enumerate() {
        if seg.is_inline() {
            // As many as the manifest journal survives: it is placed like
            // an object of the default policy.
            survives = survives.min(gw.default_policy().code.m() as i64);
            segments.push(SegmentView {
                k: 0,
                m: 0,
                plaintext_bytes: seg.plaintext_len,
                fragment_bytes: 0,
                healthy: 0,
                inline: true,
                fragments: Vec::new(),
            });
            continue;
        }
        let mut healthy = 0;
        let fragments = seg
            .fragments
            .iter()
            .enumerate()
            .map(|(fi, f)| {
                let state = board.state(&f.backend);
                let suspect = entry
                    .as_ref()
                    .is_some_and(|e| e.suspects.contains(&(si as u32, fi as u16)));
                let label = if f.state == FragmentState::Missing {
                    "missing"
                } else if gw.backend(&f.backend).is_none()
                    || state
                        .as_ref()
                        .is_some_and(|s| !s.up && s.for_how_long >= grace)
                {
                    "gone"
                } else if state.as_ref().is_some_and(|s| !s.up) {
                    "down"
                } else if suspect {
                    "suspect"
                } else {
                    healthy += 1;
                    "stored"
                };
                FragmentView {
                    index: fi,
                    backend: f.backend.to_string(),
                    blob: f.blob.to_string(),
                    state: label,
                }
            })
            .collect();
        let k = seg.layout.code.k();
        survives = survives.min(healthy as i64 - k as i64);
        segments.push(SegmentView {
            k,
            m: seg.layout.code.m(),
            plaintext_bytes: seg.plaintext_len,
            fragment_bytes: seg.geometry().fragment_len(),
            healthy,
            inline: false,
            fragments,
        });
    }
    Ok(Json(ObjectView {
        bucket,
        key,
        version: manifest.version_id.to_string(),
        size: manifest.size,
        segments,
        survives_losses: if survives == i64::MAX { 0 } else { survives },
        queued_for_repair: entry.is_some(),
    }))
}

/// A user as the API shows it: never its secret, but when created.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct UserView {
    pub name: String,
    pub access_key: String,
    pub created_unix_ms: u64,
    /// Only in the answer to its creation: it is shown once.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub secret_key: Option<String>,
}

impl UserView {
    fn of(user: shardgate_node::User, with_secret: bool) -> Self {
        Self {
            name: user.name,
            access_key: user.access_key,
            created_unix_ms: user.created_unix_ms,
            secret_key: with_secret.then_some(user.secret_key),
        }
    }
}

#[derive(Deserialize)]
struct NewUser {
    name: String,
}

async fn users_list(State(admin): State<Arc<Admin>>) -> Json<Vec<UserView>> {
    let users = admin.jobs.gateway().users();
    Json(users.into_iter().map(|u| UserView::of(u, false)).collect())
}

async fn user_create(
    State(admin): State<Arc<Admin>>,
    Json(new): Json<NewUser>,
) -> Answer<UserView> {
    let user = admin.jobs.gateway().create_user(&new.name).await?;
    tracing::info!(user = %user.name, access_key = %user.access_key, "user created");
    Ok(Json(UserView::of(user, true)))
}

async fn user_delete(
    State(admin): State<Arc<Admin>>,
    Path(user): Path<String>,
) -> Answer<serde_json::Value> {
    let name = admin.jobs.gateway().delete_user(&user).await?;
    tracing::info!(user = %name, "user deleted");
    Ok(Json(json!({ "deleted": name })))
}
