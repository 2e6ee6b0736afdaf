//! How S3 names a version, and which version a request asks for.
//!
//! A version's row is keyed by its sequence number (a store-wide counter,
//! taken when the version is created), so a version never moves: an
//! overwrite adds a row, a delete marker is a row, and repair, scrub and
//! the journal address a version by the same row key all its life.
//!
//! The S3 version id is that sequence number and 8 random bytes of the
//! version (`seq` hex, then the random half of its [`VersionId`]): a
//! lookup is one point read, and an id from another store or a guessed
//! sequence number does not name a version by accident. Versions written
//! while the bucket was not versioning are S3's `null` version.

use shardgate_core::VersionId;

use crate::error::{MetaError, Result};

/// A version of a key, as S3 sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ObjectVersion {
    /// The row's sequence number: later versions of a key have higher ones.
    pub seq: u64,
    /// S3's `null` version (written while versioning was off or suspended).
    pub null: bool,
    tail: [u8; 8],
}

impl ObjectVersion {
    pub(crate) fn new(seq: u64, null: bool, version: Option<&VersionId>) -> Self {
        let mut tail = [0u8; 8];
        if let Some(v) = version {
            tail.copy_from_slice(&v.as_bytes()[8..]);
        }
        Self { seq, null, tail }
    }

    /// The id S3 clients see: `null`, or 32 hex digits.
    pub fn id(&self) -> String {
        if self.null {
            "null".to_string()
        } else {
            format!("{:016x}{}", self.seq, hex::encode(self.tail))
        }
    }

    /// Whether `selector` names this version.
    pub fn is(&self, selector: &VersionSelector) -> bool {
        match selector {
            VersionSelector::Latest => true,
            VersionSelector::Null => self.null,
            VersionSelector::Id { seq, tail } => {
                !self.null && self.seq == *seq && self.tail == *tail
            }
        }
    }
}

/// Which version of a key a request names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionSelector {
    /// No `versionId`: the current version.
    Latest,
    /// `versionId=null`.
    Null,
    /// An id this store gave.
    Id { seq: u64, tail: [u8; 8] },
}

impl VersionSelector {
    /// The selector of an S3 `versionId` parameter (`None`: absent).
    /// Anything but `null` and 32 hex digits is `InvalidVersionId`.
    pub fn parse(id: Option<&str>) -> Result<Self> {
        let Some(id) = id else {
            return Ok(Self::Latest);
        };
        if id == "null" {
            return Ok(Self::Null);
        }
        let invalid = || MetaError::InvalidVersionId(id.chars().take(64).collect());
        let mut bytes = [0u8; 16];
        if id.len() != 32 {
            return Err(invalid());
        }
        hex::decode_to_slice(id, &mut bytes).map_err(|_| invalid())?;
        let (seq, tail) = bytes.split_at(8);
        Ok(Self::Id {
            seq: u64::from_be_bytes(seq.try_into().map_err(|_| invalid())?),
            tail: tail.try_into().map_err(|_| invalid())?,
        })
    }
}

/// Bucket versioning: S3's three states. A bucket that versioned once
/// never returns to `Unversioned`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Versioning {
    #[default]
    Unversioned,
    Enabled,
    Suspended,
}

/// An Object Lock retention mode (stored as its byte in
/// [`crate::ObjectSummary::retention`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LockMode {
    /// Deletable, and shortened, by a request that bypasses governance.
    Governance = 1,
    /// Nobody deletes or shortens it before it ends.
    Compliance = 2,
}

impl LockMode {
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Governance),
            2 => Some(Self::Compliance),
            _ => None,
        }
    }
}

/// A retention: its mode and the time it holds until (ms since the epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub mode: LockMode,
    pub until_unix_ms: u64,
}

/// A bucket's Object Lock configuration: on, with an optional default
/// retention given to every new version.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectLock {
    pub default_retention: Option<DefaultRetention>,
}

/// A default retention: a mode and a period in days or years.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DefaultRetention {
    pub mode: LockMode,
    pub days: u32,
    pub years: u32,
}

impl DefaultRetention {
    /// The retention a version created at `now_unix_ms` gets.
    pub fn from(&self, now_unix_ms: u64) -> Retention {
        const DAY_MS: u64 = 86_400_000;
        // S3 counts a year as 365 days.
        let days = u64::from(self.days) + 365 * u64::from(self.years);
        Retention {
            mode: self.mode,
            until_unix_ms: now_unix_ms.saturating_add(days.saturating_mul(DAY_MS)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_back_to_their_version() {
        let v = VersionId::new(1_800_000_000_000);
        let version = ObjectVersion::new(0x1234, false, Some(&v));
        let id = version.id();
        assert_eq!(id.len(), 32);
        let selector = VersionSelector::parse(Some(&id)).unwrap();
        assert!(version.is(&selector));
        // Another version's random half: not this one.
        let other = ObjectVersion::new(0x1234, false, Some(&VersionId::new(1)));
        assert!(!other.is(&selector));
        assert_eq!(ObjectVersion::new(7, true, None).id(), "null");
        assert_eq!(
            VersionSelector::parse(Some("null")).unwrap(),
            VersionSelector::Null
        );
        assert_eq!(
            VersionSelector::parse(None).unwrap(),
            VersionSelector::Latest
        );
        for bad in [
            "",
            "nul",
            "zz",
            &"0".repeat(31),
            &"g".repeat(32),
            &"0".repeat(33),
        ] {
            assert!(matches!(
                VersionSelector::parse(Some(bad)),
                Err(MetaError::InvalidVersionId(_))
            ));
        }
    }
}
