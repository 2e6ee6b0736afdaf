//! The S3 endpoint of shardgate.
//!
//! [`ShardgateS3`] implements the S3 operations over a node
//! ([`shardgate_node::Gateway`]: the shared state and the write and read
//! paths); s3s does the protocol (SigV4 headers and presigned URLs,
//! aws-chunked bodies, XML). [`serve`] runs the HTTP server with its
//! limits, TLS, health probes, `/metrics` and a span per request. The
//! background jobs that keep the data healthy are another crate's
//! (`shardgate-jobs`).

mod access;
mod body;
mod checksum;
mod convert;
mod cors;
mod error;
mod server;
mod service;

#[doc(hidden)]
pub mod fuzzing;

pub use server::conn::{BodyStalled, Timeouts};
pub use server::{Credentials, Limits, ServeOptions, Tls, TlsError, TlsFiles, listen, serve};
pub use service::ShardgateS3;
