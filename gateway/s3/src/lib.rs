//! The S3 endpoint of shardgate.
//!
//! [`Gateway`] holds the state shared by every request (metadata store,
//! backends, policies, keys, placement) and the two paths everything is
//! built from: write a new version, read a version. [`ShardgateS3`]
//! implements the S3 operations on top of it (s3s does the protocol:
//! SigV4 headers and presigned URLs, aws-chunked bodies, XML), and
//! [`serve`] runs the HTTP server with health probes and a span per
//! request. Background sweeps collect garbage, expire abandoned uploads
//! and track backend health.

mod body;
mod checksum;
mod collector;
mod convert;
mod error;
mod gateway;
mod metrics;
mod repair;
mod scrub;
mod server;
mod service;
mod sweeps;

#[doc(hidden)]
pub mod fuzzing;

pub use error::GatewayError;
pub use gateway::{Gateway, GatewayConfig, Policy};
pub use repair::{Repaired, Retry};
pub use server::conn::{BodyStalled, Timeouts};
pub use server::{Credentials, Limits, ServeOptions, Tls, TlsError, TlsFiles, listen, serve};
pub use service::ShardgateS3;
pub use sweeps::{HEALTH_PERIOD, INTENT_SWEEP_AGE};
