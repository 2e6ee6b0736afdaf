//! Errors of the pure core. Callers branch on the variant; the message is
//! for humans and never contains key material.

/// Everything that can go wrong in the codec, the layout or the manifest.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// k and m do not describe a usable erasure code.
    #[error("invalid erasure code k={k} m={m}: {reason}")]
    InvalidErasureCode {
        k: u32,
        m: u32,
        reason: &'static str,
    },

    /// A stripe layout parameter is out of range.
    #[error("invalid stripe layout: {0}")]
    InvalidLayout(&'static str),

    /// Encryption needs at least one recipient.
    #[error("no age recipient configured")]
    NoRecipients,

    /// A recipient or identity string could not be parsed.
    #[error("invalid age key: {0}")]
    InvalidKey(String),

    /// age refused to wrap the file key for a recipient.
    #[error("age could not wrap the file key: {0}")]
    Wrap(String),

    /// The stored age header is not one this gateway can read.
    #[error("malformed age header: {0}")]
    MalformedHeader(&'static str),

    /// None of our identities unwraps the file key.
    #[error("no configured identity can decrypt this object")]
    NoMatchingIdentity,

    /// The header MAC failed: the header was altered or the key is wrong.
    #[error("age header MAC does not verify")]
    HeaderMac,

    /// A payload chunk failed its Poly1305 tag.
    #[error("age payload chunk {chunk} failed authentication")]
    ChunkAuthentication { chunk: u64 },

    /// Fewer than k verified shards are available for a stripe.
    #[error(
        "not enough fragments: stripe {stripe} has {available} verified shards, {needed} needed"
    )]
    NotEnoughFragments {
        stripe: u64,
        available: usize,
        needed: usize,
    },

    /// The caller handed the codec data that contradicts the layout.
    #[error("stripe {stripe}: {reason}")]
    StripeShape { stripe: u64, reason: String },

    /// The Reed-Solomon engine reported an error.
    #[error("erasure codec: {0}")]
    Codec(String),

    /// A byte range outside the object.
    #[error("range {start}..{end} is not inside the object of {len} bytes")]
    RangeNotSatisfiable { start: u64, end: u64, len: u64 },

    /// A manifest could not be decoded.
    #[error("manifest: {0}")]
    Manifest(String),

    /// A name or id does not have the required shape.
    #[error("invalid {what}: {reason}")]
    InvalidName { what: &'static str, reason: String },
}

/// Result alias of the core crate.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
