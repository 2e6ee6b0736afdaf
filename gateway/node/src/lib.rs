//! One shardgate node: the state every front end and every job shares
//! (metadata store, monitored backends, policies, keys, placement), and
//! the two paths everything is built from: write a body as a new version,
//! read a version.
//!
//! The S3 crate answers requests over it, the jobs crate keeps its data
//! healthy (garbage, scrub, repair), and the admin API shows and drives
//! both; none of them knows the others, so the arrows point down to here.

mod error;
mod gateway;
pub mod metrics;
mod users;

pub use error::GatewayError;
pub use gateway::{
    Gateway, GatewayConfig, IntentGuard, LiveIntents, Pending, Policy, READ_BATCH_BYTES,
    READ_BATCHES_IN_FLIGHT, ReadGuard, WRITE_STRIPES_IN_FLIGHT, blocking, now_ms,
};
pub use metrics::{Metrics, ServerLoad};
pub use users::{User, admin_canonical_id, canonical_id};
