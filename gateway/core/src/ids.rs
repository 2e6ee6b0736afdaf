//! Identifiers shared by every layer.
//!
//! Blob names are random and opaque on purpose: a backend learns nothing of
//! the bucket, the key, the size or which other blobs belong to the same
//! object from a name.

use std::fmt;

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};

/// The longest backend id or blob name accepted.
pub const MAX_NAME_BYTES: usize = 128;

fn check_name(what: &'static str, s: &str) -> Result<()> {
    let bad = |reason: &str| CoreError::InvalidName {
        what,
        reason: format!("{s:?}: {reason}"),
    };
    if s.is_empty() {
        return Err(bad("empty"));
    }
    if s.len() > MAX_NAME_BYTES {
        return Err(bad("longer than 128 bytes"));
    }
    if s.starts_with('.') || s.starts_with('-') {
        return Err(bad("must not start with '.' or '-'"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(bad(
            "only ASCII letters, digits, '-', '_' and '.' are allowed",
        ));
    }
    Ok(())
}

/// The id of a backend, as written in the configuration (`site-a-disk1`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BackendId(String);

impl BackendId {
    /// Checks the shape of a backend id: 1 to 128 of `[A-Za-z0-9._-]`.
    pub fn new(id: impl Into<String>) -> Result<Self> {
        let id = id.into();
        check_name("backend id", &id)?;
        Ok(Self(id))
    }

    /// The id as written in the configuration.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BackendId {
    type Error = CoreError;
    fn try_from(s: String) -> Result<Self> {
        Self::new(s)
    }
}

impl From<BackendId> for String {
    fn from(id: BackendId) -> String {
        id.0
    }
}

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The opaque name of one blob on one backend.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BlobName(String);

impl BlobName {
    /// A fresh random name: 128 bits from the OS generator, in hex.
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        Self(hex::encode(bytes))
    }

    /// Checks the shape of a name read back from a backend or a manifest.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        check_name("blob name", &name)?;
        Ok(Self(name))
    }

    /// The name as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BlobName {
    type Error = CoreError;
    fn try_from(s: String) -> Result<Self> {
        Self::new(s)
    }
}

impl From<BlobName> for String {
    fn from(n: BlobName) -> String {
        n.0
    }
}

impl fmt::Display for BlobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of one object version: 48 bits of milliseconds since the Unix
/// epoch followed by 80 random bits, so ids sort by creation time (as S3
/// version listings need) and never collide in practice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VersionId([u8; 16]);

impl VersionId {
    /// A new id for a version created at `unix_ms`.
    pub fn new(unix_ms: u64) -> Self {
        let mut bytes = [0u8; 16];
        bytes[..6].copy_from_slice(&unix_ms.to_be_bytes()[2..]);
        rand::rng().fill_bytes(&mut bytes[6..]);
        Self(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Parses the 32-hex-digit form.
    pub fn parse(s: &str) -> Result<Self> {
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(s, &mut bytes).map_err(|e| CoreError::InvalidName {
            what: "version id",
            reason: format!("{s:?}: {e}"),
        })?;
        Ok(Self(bytes))
    }
}

impl fmt::Display for VersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_reject_path_tricks() {
        for bad in ["", ".", "..", "../x", "a/b", "-x", "a b", &"x".repeat(129)] {
            assert!(BlobName::new(bad).is_err(), "{bad:?} accepted");
            assert!(BackendId::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(BlobName::new("0123abcdef").is_ok());
        assert!(BackendId::new("site-a.disk_1").is_ok());
    }

    #[test]
    fn random_blob_names_are_distinct_and_valid() {
        let a = BlobName::random();
        let b = BlobName::random();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
        assert!(BlobName::new(a.as_str()).is_ok());
    }

    #[test]
    fn version_ids_sort_by_time_and_round_trip() {
        let a = VersionId::new(1_000);
        let b = VersionId::new(2_000);
        assert!(a < b);
        assert_eq!(VersionId::parse(&a.to_string()).ok(), Some(a));
        assert!(VersionId::parse("zz").is_err());
    }
}
