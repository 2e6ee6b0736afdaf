//! Admission: what the gateway takes on at once, so memory does not grow
//! with whatever concurrency clients choose.
//!
//! Every S3 request takes a place among `max_requests`, and a share of the
//! memory budget sized by what it will hold: an object read or write
//! streams through the pipeline with a bounded window, measured at about
//! 6 MiB of resident memory per request whatever the object's size
//! (BENCHMARKS.md, "Admission"), so it reserves [`OBJECT_COST`]; a copy
//! reads and writes; a small body reserves in proportion; everything else
//! [`SMALL_COST`]. A request that finds no room waits in line (fairly, in
//! arrival order) for up to the queue timeout, then gets `503 SlowDown`,
//! which every S3 SDK retries with backoff. The probes (`/health`,
//! `/ready`, `/metrics`) are never counted, so they answer while the S3
//! side is saturated.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What an object read or write holds at its peak (measured: 5.7 to 5.8
/// MiB per request at 128 concurrent 8 and 64 MiB PUTs and GETs; rounded
/// up for allocator slack).
pub const OBJECT_COST: u64 = 8 << 20;
/// The largest file a browser POST upload may carry: s3s holds it in
/// memory whole (S3 allows 5 GB; larger uploads go multipart).
pub const MAX_FORM_FILE_BYTES: u64 = 64 << 20;
/// What a request without object data holds (headers, XML, metadata).
pub const SMALL_COST: u64 = 64 << 10;
/// Memory the gateway needs for itself, outside any request: taken off
/// the budget before requests share it.
pub const BASE_MEMORY: u64 = 128 << 20;

/// The memory unit of the semaphore (tokio's permits are `u32`-counted).
const UNIT: u64 = 64 << 10;

/// The admission limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// S3 requests in flight at most.
    pub max_requests: usize,
    /// Resident memory the gateway may reach (requests' shares come from
    /// this less [`BASE_MEMORY`]).
    pub memory_bytes: u64,
    /// How long a request waits for room before `SlowDown`.
    pub queue_timeout: Duration,
}

/// The shared admission state.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    requests: Arc<Semaphore>,
    memory: Arc<Semaphore>,
    memory_units: u64,
    queue_timeout: Duration,
}

/// A request's place and memory share, held until its answer is sent.
#[derive(Debug)]
pub(crate) struct Admission {
    _request: OwnedSemaphorePermit,
    _memory: OwnedSemaphorePermit,
}

impl Budget {
    pub(crate) fn new(limits: Limits) -> Self {
        let memory_units = (limits.memory_bytes.saturating_sub(BASE_MEMORY) / UNIT)
            .clamp(OBJECT_COST * 2 / UNIT, u64::from(u32::MAX));
        Self {
            requests: Arc::new(Semaphore::new(limits.max_requests)),
            memory: Arc::new(Semaphore::new(memory_units as usize)),
            memory_units,
            queue_timeout: limits.queue_timeout,
        }
    }

    /// Waits (up to the queue timeout) for a place and `cost` bytes of
    /// memory; `None` means the gateway is saturated.
    pub(crate) async fn admit(&self, cost: u64) -> Option<Admission> {
        let units = cost.div_ceil(UNIT).min(self.memory_units) as u32;
        // Room now: no timer to set up (the common case).
        if let Ok(request) = self.requests.clone().try_acquire_owned()
            && let Ok(memory) = self.memory.clone().try_acquire_many_owned(units)
        {
            return Some(Admission {
                _request: request,
                _memory: memory,
            });
        }
        let wait = async {
            let request = self.requests.clone().acquire_owned().await.ok()?;
            let memory = self.memory.clone().acquire_many_owned(units).await.ok()?;
            Some(Admission {
                _request: request,
                _memory: memory,
            })
        };
        tokio::time::timeout(self.queue_timeout, wait)
            .await
            .ok()
            .flatten()
    }

    /// Places and memory units free now (for `/metrics`).
    pub(crate) fn available(&self) -> (usize, u64) {
        (
            self.requests.available_permits(),
            self.memory.available_permits() as u64 * UNIT,
        )
    }
}

/// What a request will hold, from its method, path and headers alone
/// (before anything is parsed or read).
pub(crate) fn cost<B>(req: &Request<B>) -> u64 {
    let headers = req.headers();
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let path = req.uri().path().trim_start_matches('/');
    let has_key = path.split_once('/').is_some_and(|(_, key)| !key.is_empty());
    // The decoded length counts only for an aws-chunked body (its payload
    // hash says STREAMING-...): elsewhere a client could understate its
    // body with it. In an aws-chunked body a longer payload than declared
    // fails the write at its first extra byte.
    let chunked = headers
        .get("x-amz-content-sha256")
        .is_some_and(|v| v.as_bytes().starts_with(b"STREAMING-"));
    let decoded = number("x-amz-decoded-content-length").filter(|_| chunked);
    let body = decoded
        .or_else(|| number(http::header::CONTENT_LENGTH.as_str()))
        .unwrap_or(0);
    // A browser POST's file is held whole: charged at its size.
    let form = req.method() == Method::POST
        && headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    if form {
        let held = number(http::header::CONTENT_LENGTH.as_str())
            .unwrap_or(MAX_FORM_FILE_BYTES)
            .min(MAX_FORM_FILE_BYTES);
        return SMALL_COST + 2 * held;
    }
    // A body of unknown length (chunked, no Content-Length) may be any size.
    let unsized_body = !headers.contains_key(http::header::CONTENT_LENGTH)
        && headers.contains_key(http::header::TRANSFER_ENCODING);
    let writes = matches!(*req.method(), Method::PUT | Method::POST);
    if writes && unsized_body && decoded.is_none() {
        return OBJECT_COST;
    }
    let writes = body > 0 && writes;
    if headers.contains_key("x-amz-copy-source") {
        // Reads the source and writes the copy.
        return 2 * OBJECT_COST;
    }
    if writes {
        return (SMALL_COST + 2 * body).min(OBJECT_COST);
    }
    if req.method() == Method::GET && has_key {
        return OBJECT_COST;
    }
    SMALL_COST
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, path: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(())
            .unwrap_or_else(|_| unreachable!("a valid request"))
    }

    #[test]
    fn costs_follow_what_a_request_holds() {
        assert_eq!(cost(&req(Method::GET, "/b", &[])), SMALL_COST);
        assert_eq!(cost(&req(Method::GET, "/b/k", &[])), OBJECT_COST);
        assert_eq!(cost(&req(Method::HEAD, "/b/k", &[])), SMALL_COST);
        assert_eq!(
            cost(&req(Method::PUT, "/b/k", &[("content-length", "100")])),
            SMALL_COST + 200
        );
        assert_eq!(
            cost(&req(
                Method::PUT,
                "/b/k",
                &[("content-length", "1000000000")]
            )),
            OBJECT_COST
        );
        assert_eq!(
            cost(&req(
                Method::PUT,
                "/b/k",
                &[
                    ("content-length", "999"),
                    ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
                    ("x-amz-decoded-content-length", "10")
                ]
            )),
            SMALL_COST + 20
        );
        // Not aws-chunked: a decoded length cannot understate the body.
        assert_eq!(
            cost(&req(
                Method::PUT,
                "/b/k",
                &[
                    ("content-length", "1000000000"),
                    ("x-amz-decoded-content-length", "1")
                ]
            )),
            OBJECT_COST
        );
        assert_eq!(
            cost(&req(Method::PUT, "/b/k", &[("x-amz-copy-source", "/a/b")])),
            2 * OBJECT_COST
        );
        assert_eq!(cost(&req(Method::PUT, "/b", &[])), SMALL_COST);
    }

    #[tokio::test]
    async fn a_request_past_the_budget_waits_then_is_refused() {
        let budget = Budget::new(Limits {
            max_requests: 2,
            memory_bytes: BASE_MEMORY + 4 * OBJECT_COST,
            queue_timeout: Duration::from_millis(100),
        });
        let a = budget.admit(OBJECT_COST).await;
        let b = budget.admit(OBJECT_COST).await;
        assert!(a.is_some() && b.is_some());
        assert!(budget.admit(SMALL_COST).await.is_none(), "no place left");
        drop(a);
        // b holds one object's worth of four: three are free.
        assert!(
            budget.admit(4 * OBJECT_COST).await.is_none(),
            "more memory than is free"
        );
        let d = budget.admit(3 * OBJECT_COST).await;
        assert!(d.is_some());
        drop((b, d));
        assert_eq!(budget.available(), (2, 4 * OBJECT_COST));
    }
}
