//! The pure core of shardgate: identifiers, the manifest and its encoding,
//! erasure-code layout, and the codec that turns plaintext into verifiable
//! encrypted shards and back.
//!
//! This crate does no I/O and has no async runtime: every function is a
//! computation on its arguments (plus OS randomness for keys and names), so
//! it is tested with property tests and benchmarked alone. The pipeline
//! crate drives it over backends.
//!
//! Per segment: plaintext -> age STREAM chunks ([`envelope`]) -> stripes of
//! whole chunks cut into k shards -> m parity shards ([`stripe`]) -> a blake3
//! digest per shard ([`hash`]). Fragment i = shard i of every stripe + the
//! trailer of its digests ([`layout`]). The [`manifest`] records it all.

pub mod envelope;
pub mod error;
pub mod hash;
pub mod ids;
pub mod inline;
pub mod journal;
pub mod layout;
pub mod manifest;
pub mod stripe;

pub use envelope::{Envelope, Identities, PayloadKey, PayloadKeyBytes, Recipients, SealedSecret};
pub use error::{CoreError, Result};
pub use hash::Digest;
pub use ids::{BackendId, BlobName, VersionId};
pub use layout::{ErasureCode, Geometry, StripeLayout};
pub use manifest::{FragmentRef, FragmentState, Manifest, Segment};
pub use stripe::{
    EncodedStripe, StripeBuffer, decode_range, decode_range_into, encode_stripe, rebuild_shards,
    sealed_stripe,
};
