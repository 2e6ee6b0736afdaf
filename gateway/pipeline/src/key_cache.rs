//! Payload keys of segments recently read or written, so that a hot object
//! is not unwrapped again on every GET.
//!
//! Opening an envelope unwraps its file key with the gateway's x25519
//! identity: two scalar multiplications (the shared secret, and the
//! identity's own public key that age mixes into the salt), 72 µs here and
//! about a quarter of a 4 KiB GET's CPU when every request paid them. A
//! cache of opened keys was chosen over a second copy of the file key
//! sealed under a symmetric gateway key in the manifest: the manifest
//! format and the export stay as they are, nothing new is stored anywhere
//! (the keys live only in this process's memory, 32 bytes each, zeroed
//! when dropped), and there is no symmetric key whose home would have to
//! be kept apart from the metadata. What it does not do is spare the first
//! read of a cold object its unwrap.
//!
//! Entries are named by the envelope's [`Envelope::fingerprint`], so a
//! manifest can only ever find the key its own envelope opens to. When a
//! version is removed, the metadata store calls [`KeyCache::forget`] with
//! its manifest, inside the removing transaction: the keys leave memory
//! with the version. A read of that version may still be streaming (its
//! fragments are kept until it ends) and open a later segment afterwards:
//! every read holds a [`Reading`] ticket, and a version removed while
//! tickets exist refuses new keys until the last one is dropped. A read
//! that fetched the manifest just before the removal and takes its ticket
//! just after is covered by a bounded list of recently removed versions.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use quick_cache::sync::Cache;
use shardgate_core::{Envelope, Identities, Manifest, PayloadKey, PayloadKeyBytes, VersionId};

use crate::error::Result;

/// Removed versions remembered to refuse a late insert from a read that
/// had not taken its ticket yet (the moment between reading a manifest
/// and starting its stream).
const RECENTLY_REMOVED: usize = 4096;

/// Keys cached unless configured otherwise: 32 bytes each, with the
/// fingerprint and the cache's own bookkeeping about 100 bytes, 6 MiB in
/// all.
pub const DEFAULT_KEY_CACHE_ENTRIES: usize = 65_536;

type Fingerprint = [u8; 32];

/// A bounded cache of opened payload keys.
pub struct KeyCache {
    keys: Option<Cache<Fingerprint, PayloadKeyBytes>>,
    versions: Mutex<Versions>,
}

/// What the cache knows of versions: which are being read, and which were
/// removed (and must not have keys put back).
#[derive(Default)]
struct Versions {
    reading: HashMap<VersionId, usize>,
    removed_while_read: HashSet<VersionId>,
    recently_removed: HashSet<VersionId>,
    removal_order: VecDeque<VersionId>,
}

impl Versions {
    fn refuses(&self, version: &VersionId) -> bool {
        self.removed_while_read.contains(version) || self.recently_removed.contains(version)
    }
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyCache({} keys)", self.len())
    }
}

/// A read of a version in progress: while one is held, the removal of the
/// version keeps its keys out of the cache.
#[derive(Debug)]
pub struct Reading {
    cache: Arc<KeyCache>,
    version: VersionId,
}

impl Drop for Reading {
    fn drop(&mut self) {
        let mut versions = self.cache.versions();
        if let Some(n) = versions.reading.get_mut(&self.version) {
            *n -= 1;
            if *n == 0 {
                versions.reading.remove(&self.version);
                versions.removed_while_read.remove(&self.version);
            }
        }
    }
}

impl KeyCache {
    /// A cache of at most `entries` keys; 0 turns it off (every read
    /// unwraps).
    pub fn new(entries: usize) -> Arc<Self> {
        Arc::new(Self {
            keys: (entries > 0).then(|| Cache::new(entries)),
            versions: Mutex::default(),
        })
    }

    fn versions(&self) -> MutexGuard<'_, Versions> {
        self.versions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ticket of a read of `version`, held as long as its stream.
    pub fn reading(self: &Arc<Self>, version: VersionId) -> Reading {
        *self.versions().reading.entry(version).or_insert(0) += 1;
        Reading {
            cache: self.clone(),
            version,
        }
    }

    /// The payload key of `envelope`, a segment of `version`: from the
    /// cache, or unwrapped with `identities` and kept.
    pub fn open(
        &self,
        version: &VersionId,
        envelope: &Envelope,
        identities: &Identities,
    ) -> Result<PayloadKey> {
        let Some(keys) = &self.keys else {
            return Ok(envelope.open(identities)?);
        };
        let fingerprint = envelope.fingerprint();
        if let Some(bytes) = keys.get(&fingerprint) {
            return Ok(PayloadKey::from_bytes(&bytes)?);
        }
        let key = envelope.open(identities)?;
        self.keep(version, fingerprint, &key);
        Ok(key)
    }

    /// Keeps the key a write of `version` sealed `envelope` with, so the
    /// first read of what was just written does not unwrap it.
    pub fn insert(&self, version: &VersionId, envelope: &Envelope, key: &PayloadKey) {
        if self.keys.is_some() {
            self.keep(version, envelope.fingerprint(), key);
        }
    }

    fn keep(&self, version: &VersionId, fingerprint: Fingerprint, key: &PayloadKey) {
        let Some(keys) = &self.keys else { return };
        // Under the lock `forget` takes: a version removed meanwhile is
        // refused, and a key inserted first is removed by it.
        let versions = self.versions();
        if !versions.refuses(version) {
            keys.insert(fingerprint, key.to_bytes());
        }
    }

    /// Drops the keys of every segment of `manifest` (its version is gone)
    /// and refuses them from now on.
    pub fn forget(&self, manifest: &Manifest) {
        let version = manifest.version_id;
        let mut versions = self.versions();
        if versions.reading.contains_key(&version) {
            versions.removed_while_read.insert(version);
        }
        if versions.recently_removed.insert(version) {
            versions.removal_order.push_back(version);
            if versions.removal_order.len() > RECENTLY_REMOVED
                && let Some(oldest) = versions.removal_order.pop_front()
            {
                versions.recently_removed.remove(&oldest);
            }
        }
        if let Some(keys) = &self.keys {
            for segment in &manifest.segments {
                keys.remove(&segment.envelope.fingerprint());
            }
        }
    }

    /// Drops the keys of `envelopes` of a write that did not commit.
    pub fn forget_unwritten(&self, envelopes: &[Envelope]) {
        if let Some(keys) = &self.keys {
            for envelope in envelopes {
                keys.remove(&envelope.fingerprint());
            }
        }
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.keys.as_ref().map_or(0, |k| k.len())
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the key of `envelope` is held.
    pub fn holds(&self, envelope: &Envelope) -> bool {
        self.keys
            .as_ref()
            .is_some_and(|k| k.peek(&envelope.fingerprint()).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardgate_core::{Recipients, Segment, StripeLayout};

    fn pair() -> (Identities, Recipients) {
        let id = age::x25519::Identity::generate();
        let r = Recipients::new(vec![id.to_public()]).unwrap();
        (Identities::new(vec![id]).unwrap(), r)
    }

    /// A manifest of `envelopes`, one segment each.
    fn manifest(version: VersionId, envelopes: &[&Envelope]) -> Manifest {
        let layout = StripeLayout::default_for(shardgate_core::ErasureCode::new(4, 2).unwrap());
        Manifest {
            version_id: version,
            size: 0,
            etag: String::new(),
            content_type: None,
            user_metadata: Default::default(),
            created_unix_ms: 0,
            segments: envelopes
                .iter()
                .map(|e| Segment {
                    plaintext_len: 0,
                    envelope: (*e).clone(),
                    layout,
                    fragments: Vec::new(),
                    inline: None,
                })
                .collect(),
        }
    }

    #[test]
    fn a_cached_key_opens_what_the_unwrapped_one_opens() {
        let (ids, recipients) = pair();
        let (envelope, key) = Envelope::seal(&recipients).unwrap();
        let mut chunk = b"secret bytes".to_vec();
        chunk.resize(chunk.len() + shardgate_core::layout::TAG_BYTES, 0);
        key.seal_chunk(0, true, &mut chunk).unwrap();
        let cache = KeyCache::new(8);
        let v = VersionId::new(1);
        let first = cache.open(&v, &envelope, &ids).unwrap();
        assert!(cache.holds(&envelope));
        let second = cache.open(&v, &envelope, &ids).unwrap();
        for k in [first, second] {
            let mut c = chunk.clone();
            assert_eq!(k.open_chunk(0, true, &mut c).unwrap(), b"secret bytes");
        }
    }

    #[test]
    fn a_removed_version_s_keys_are_gone_and_refused_back() {
        let (ids, recipients) = pair();
        let (a, key_a) = Envelope::seal(&recipients).unwrap();
        let (b, key_b) = Envelope::seal(&recipients).unwrap();
        let cache = KeyCache::new(8);
        let v = VersionId::new(1);
        cache.insert(&v, &a, &key_a);
        cache.insert(&v, &b, &key_b);
        cache.forget(&manifest(v, &[&a, &b]));
        assert!(cache.is_empty());
        // A read that raced the removal: it still opens, but keeps nothing.
        cache.open(&v, &a, &ids).unwrap();
        cache.insert(&v, &b, &key_b);
        assert!(cache.is_empty());
    }

    /// A read still streaming when its version is removed keeps its later
    /// segments' keys out, however many removals come after; once it ends,
    /// the version is forgotten by the cache too.
    #[test]
    fn a_read_in_progress_puts_no_key_of_a_removed_version_back() {
        let (ids, recipients) = pair();
        let cache = KeyCache::new(64);
        let v = VersionId::new(7);
        let (first, _) = Envelope::seal(&recipients).unwrap();
        let (later, _) = Envelope::seal(&recipients).unwrap();
        let reading = cache.reading(v);
        cache.open(&v, &first, &ids).unwrap();
        cache.forget(&manifest(v, &[&first, &later]));
        for n in 0..RECENTLY_REMOVED as u64 + 10 {
            cache.forget(&manifest(VersionId::new(1_000 + n), &[]));
        }
        cache.open(&v, &later, &ids).unwrap();
        assert!(!cache.holds(&later), "a removed version's key came back");
        drop(reading);
        assert!(cache.versions().reading.is_empty());
        assert!(cache.versions().removed_while_read.is_empty());
    }

    #[test]
    fn an_unwritten_write_s_key_is_dropped() {
        let (_, recipients) = pair();
        let (envelope, key) = Envelope::seal(&recipients).unwrap();
        let cache = KeyCache::new(8);
        cache.insert(&VersionId::new(3), &envelope, &key);
        cache.forget_unwritten(std::slice::from_ref(&envelope));
        assert!(cache.is_empty());
    }

    #[test]
    fn the_cache_holds_at_most_its_bound() {
        let (_, recipients) = pair();
        let cache = KeyCache::new(16);
        for n in 0..200 {
            let (envelope, key) = Envelope::seal(&recipients).unwrap();
            cache.insert(&VersionId::new(n), &envelope, &key);
        }
        assert!(cache.len() <= 16, "{} keys held", cache.len());
    }

    #[test]
    fn an_envelope_of_another_key_is_not_opened_by_the_cache() {
        let (ids, recipients) = pair();
        let (other_ids, other_recipients) = pair();
        let (envelope, key) = Envelope::seal(&recipients).unwrap();
        let (foreign, _) = Envelope::seal(&other_recipients).unwrap();
        let cache = KeyCache::new(8);
        let v = VersionId::new(1);
        cache.insert(&v, &envelope, &key);
        assert!(cache.open(&v, &foreign, &ids).is_err());
        assert!(cache.open(&v, &foreign, &other_ids).is_ok());
    }

    #[test]
    fn off_means_every_open_unwraps() {
        let (ids, recipients) = pair();
        let (envelope, key) = Envelope::seal(&recipients).unwrap();
        let cache = KeyCache::new(0);
        let v = VersionId::new(1);
        cache.insert(&v, &envelope, &key);
        assert!(!cache.holds(&envelope));
        cache.open(&v, &envelope, &ids).unwrap();
        assert!(cache.is_empty());
    }
}
