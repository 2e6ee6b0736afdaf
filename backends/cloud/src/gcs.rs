//! A Google Cloud Storage bucket as a backend.

use std::fmt;
use std::sync::Arc;

use object_store::gcp::GoogleCloudStorageBuilder;
use shardgate_backend::{BackendError, BackendInfo, Result};

use crate::{CloudBackend, Timeouts};

/// Where and how to reach a GCS bucket. Without a service account key,
/// credentials come from `GOOGLE_SERVICE_ACCOUNT*`, application default
/// credentials or the instance metadata server.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct GcsSettings {
    /// The bucket (it must exist).
    pub bucket: String,
    /// A key prefix inside it.
    pub prefix: String,
    /// A service account key, as JSON.
    pub service_account_key: Option<String>,
    /// The service's base URL (an emulator); Google's when unset.
    pub endpoint: Option<String>,
    /// Allow plain http (an emulator on loopback).
    pub allow_http: bool,
    /// Request time bounds.
    pub timeouts: Timeouts,
    /// Part size of multipart uploads.
    pub part_size: usize,
}

impl fmt::Debug for GcsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsSettings")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field(
                "service_account_key",
                &self.service_account_key.as_ref().map(|_| "<redacted>"),
            )
            .field("endpoint", &self.endpoint)
            .field("allow_http", &self.allow_http)
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

impl CloudBackend {
    /// A backend in a GCS bucket. Nothing is sent yet: the first health
    /// probe tells whether the bucket and credentials work.
    pub fn gcs(info: BackendInfo, s: GcsSettings) -> Result<Self> {
        let mut builder = GoogleCloudStorageBuilder::from_env()
            .with_bucket_name(&s.bucket)
            .with_client_options(s.timeouts.client_options(s.allow_http))
            .with_retry(s.timeouts.retry());
        if let Some(key) = &s.service_account_key {
            builder = builder.with_service_account_key(key);
        }
        if let Some(endpoint) = &s.endpoint {
            builder = builder.with_base_url(endpoint);
        }
        let store = builder.build().map_err(|e| BackendError::Unavailable {
            backend: info.id.clone(),
            reason: format!("gcs bucket {}: {e}", s.bucket),
        })?;
        Ok(Self::new(info, Arc::new(store), &s.prefix, s.part_size))
    }
}
