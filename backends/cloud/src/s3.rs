//! An S3 bucket (AWS or any S3-compatible server) as a backend.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::{ClientOptions, RetryConfig};
use shardgate_backend::{BackendError, BackendInfo, Result};

use crate::CloudBackend;

/// How long a request may take and how often it is retried: a dead or
/// hanging endpoint costs a client at most about
/// `(retries + 1) × request` before the error, never a hang.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// One HTTP request, from connect to the last byte.
    pub request: Duration,
    /// Establishing a connection.
    pub connect: Duration,
    /// Retries of a failed request (with backoff).
    pub retries: usize,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            request: Duration::from_secs(30),
            connect: Duration::from_secs(5),
            retries: 3,
        }
    }
}

impl Timeouts {
    pub(crate) fn client_options(&self, allow_http: bool) -> ClientOptions {
        ClientOptions::new()
            .with_allow_http(allow_http)
            .with_timeout(self.request)
            .with_connect_timeout(self.connect)
    }

    pub(crate) fn retry(&self) -> RetryConfig {
        RetryConfig {
            max_retries: self.retries,
            retry_timeout: self.request * (self.retries as u32 + 1),
            ..RetryConfig::default()
        }
    }
}

/// Where and how to reach an S3 bucket. Unset credentials and region come
/// from the usual `AWS_*` environment variables.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Settings {
    /// The bucket (it must exist).
    pub bucket: String,
    /// A key prefix inside it, so several gateways or backends can share one bucket.
    pub prefix: String,
    /// An S3-compatible endpoint (path-style requests); AWS when unset.
    pub endpoint: Option<String>,
    /// The region.
    pub region: Option<String>,
    /// The access key id.
    pub access_key_id: Option<String>,
    /// The secret access key.
    pub secret_access_key: Option<String>,
    /// Allow plain http (an emulator on loopback).
    pub allow_http: bool,
    /// Request time bounds.
    pub timeouts: Timeouts,
    /// Part size of multipart uploads.
    pub part_size: usize,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("allow_http", &self.allow_http)
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

impl CloudBackend {
    /// A backend in an S3 bucket. Nothing is sent yet: the first health
    /// probe tells whether the bucket and credentials work.
    pub fn s3(info: BackendInfo, s: S3Settings) -> Result<Self> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&s.bucket)
            .with_client_options(s.timeouts.client_options(s.allow_http))
            .with_retry(s.timeouts.retry());
        if let Some(endpoint) = &s.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        if let Some(region) = &s.region {
            builder = builder.with_region(region);
        }
        if let Some(id) = &s.access_key_id {
            builder = builder.with_access_key_id(id);
        }
        if let Some(secret) = &s.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        let store = builder.build().map_err(|e| BackendError::Unavailable {
            backend: info.id.clone(),
            reason: format!("s3 bucket {}: {e}", s.bucket),
        })?;
        Ok(Self::new(info, Arc::new(store), &s.prefix, s.part_size))
    }
}
