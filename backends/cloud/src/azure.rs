//! An Azure Blob Storage container (or Azurite, the emulator) as a backend.

use std::fmt;
use std::sync::Arc;

use object_store::azure::MicrosoftAzureBuilder;
use shardgate_backend::{BackendError, BackendInfo, Result};

use crate::{CloudBackend, Timeouts};

/// Azurite's account: the same name and key on every installation
/// (published by Microsoft), so not a secret.
pub const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Where Azurite's blob service listens by default.
pub const EMULATOR_ENDPOINT: &str = "http://127.0.0.1:10000/devstoreaccount1";

/// Where and how to reach an Azure container. Unset account and
/// credentials come from the usual `AZURE_*` environment variables.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AzureSettings {
    /// The container (it must exist).
    pub container: String,
    /// A key prefix inside it.
    pub prefix: String,
    /// The storage account.
    pub account: Option<String>,
    /// The account key.
    pub account_key: Option<String>,
    /// The account URL; `https://{account}.blob.core.windows.net` when unset.
    pub endpoint: Option<String>,
    /// Azurite: its account, key and (unless `endpoint`) address.
    pub use_emulator: bool,
    /// Allow plain http (always on for the emulator).
    pub allow_http: bool,
    /// Request time bounds.
    pub timeouts: Timeouts,
    /// Block size of streamed uploads.
    pub part_size: usize,
}

impl fmt::Debug for AzureSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureSettings")
            .field("container", &self.container)
            .field("prefix", &self.prefix)
            .field("account", &self.account)
            .field(
                "account_key",
                &self.account_key.as_ref().map(|_| "<redacted>"),
            )
            .field("endpoint", &self.endpoint)
            .field("use_emulator", &self.use_emulator)
            .field("allow_http", &self.allow_http)
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

impl CloudBackend {
    /// A backend in an Azure container. Nothing is sent yet: the first
    /// health probe tells whether the container and credentials work.
    ///
    /// The emulator is addressed as an ordinary account at an explicit
    /// endpoint (its URL carries the account name), so that each backend
    /// can name its own Azurite, which object_store's emulator switch (one
    /// address from the environment) cannot.
    pub fn azure(info: BackendInfo, s: AzureSettings) -> Result<Self> {
        let (account, key, endpoint, allow_http) = match s.use_emulator {
            true => (
                Some(s.account.clone().unwrap_or_else(|| EMULATOR_ACCOUNT.into())),
                Some(s.account_key.clone().unwrap_or_else(|| EMULATOR_KEY.into())),
                Some(
                    s.endpoint
                        .clone()
                        .unwrap_or_else(|| EMULATOR_ENDPOINT.into()),
                ),
                true,
            ),
            false => (
                s.account.clone(),
                s.account_key.clone(),
                s.endpoint.clone(),
                s.allow_http,
            ),
        };
        let mut builder = MicrosoftAzureBuilder::from_env()
            .with_container_name(&s.container)
            .with_client_options(s.timeouts.client_options(allow_http))
            .with_retry(s.timeouts.retry());
        if let Some(account) = account {
            builder = builder.with_account(account);
        }
        if let Some(key) = key {
            builder = builder.with_access_key(key);
        }
        if let Some(endpoint) = endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let store = builder.build().map_err(|e| BackendError::Unavailable {
            backend: info.id.clone(),
            reason: format!("azure container {}: {e}", s.container),
        })?;
        Ok(Self::new(info, Arc::new(store), &s.prefix, s.part_size))
    }
}
