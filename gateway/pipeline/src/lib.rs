//! The object pipeline: drives the pure codec of `shardgate-core` over
//! backends, streaming in both directions with bounded memory.
//!
//! - [`write_segment`] / [`write_object`]: plaintext stream + placement (the
//!   backend of every fragment) -> durable fragments + manifest, or an error
//!   with nothing left behind.
//! - [`write_inline_object`]: a small body sealed into its manifest, no
//!   backend touched.
//! - [`read_object`]: manifest + optional range -> verified plaintext stream
//!   ([`read_inline`]: the same at once, for what is inline in a manifest)
//!   and a report of fragments to repair.

pub mod backend_set;
pub mod error;
pub mod etag;
pub mod health;
pub mod key_cache;
pub mod read;
pub mod scrub;
pub mod write;

pub use backend_set::BackendSet;
pub use error::{PipelineError, Result};
pub use health::{BackendState, HealthBoard, Monitored};
pub use key_cache::{DEFAULT_KEY_CACHE_ENTRIES, KeyCache};
pub use read::{
    BadFragment, ObjectRead, Problem, ReadParams, ReadReport, export_segment, read_inline,
    read_object,
};
pub use scrub::{
    Finding, FragmentCheck, audit_fragment, checked_trailer, stripe_runs, verify_fragment,
};
pub use write::{
    ObjectMeta, ObjectWrite, Placement, SegmentWrite, WriteParams, write_inline_object,
    write_object, write_segment,
};
