//! Payload keys of segments recently read or written, so that a hot object
//! is not unwrapped again on every GET.
//!
//! Opening an envelope unwraps its file key with the gateway's x25519
//! identity: two scalar multiplications (the shared secret, and the
//! identity's own public key that age mixes into the salt), about a fifth
//! of a 4 KiB GET's CPU when every request paid them. A cache of opened
//! keys was chosen over a second copy of the file key sealed under a
//! symmetric gateway key in the manifest: the manifest format and the
//! export stay as they are, nothing new is stored anywhere (the keys live
//! only in this process's memory), and there is no symmetric key whose
//! home would have to be kept apart from the metadata. What it does not do
//! is spare the first read of a cold object its unwrap.
//!
//! Entries are named by the envelope's [`Envelope::fingerprint`], so a
//! manifest can only ever find the key its own envelope opens to. When a
//! version is removed, the metadata store calls [`KeyCache::forget`] with
//! its manifest, inside the removing transaction: the key leaves memory
//! with the version. A read that fetched the manifest just before that
//! and unwraps just after could put the key back; a bounded list of
//! recently forgotten envelopes refuses it.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use quick_cache::sync::Cache;
use shardgate_core::{Envelope, Identities, Manifest, PayloadKey};

use crate::error::Result;

/// Forgotten envelopes remembered to refuse a late insert: a read racing
/// a DELETE has microseconds between its manifest and its unwrap.
const FORGOTTEN: usize = 4096;

/// Keys cached unless configured otherwise: about 6 MiB at most.
pub const DEFAULT_KEY_CACHE_ENTRIES: usize = 65_536;

type Fingerprint = [u8; 32];

/// A bounded cache of opened payload keys.
pub struct KeyCache {
    keys: Option<Cache<Fingerprint, PayloadKey>>,
    forgotten: Mutex<Forgotten>,
}

#[derive(Default)]
struct Forgotten {
    set: HashSet<Fingerprint>,
    order: VecDeque<Fingerprint>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyCache({} keys)", self.len())
    }
}

impl KeyCache {
    /// A cache of at most `entries` keys; 0 turns it off (every read
    /// unwraps).
    pub fn new(entries: usize) -> Arc<Self> {
        Arc::new(Self {
            keys: (entries > 0).then(|| Cache::new(entries)),
            forgotten: Mutex::default(),
        })
    }

    /// The payload key of `envelope`: from the cache, or unwrapped with
    /// `identities` and kept.
    pub fn open(&self, envelope: &Envelope, identities: &Identities) -> Result<PayloadKey> {
        let Some(keys) = &self.keys else {
            return Ok(envelope.open(identities)?);
        };
        let fingerprint = envelope.fingerprint();
        if let Some(key) = keys.get(&fingerprint) {
            return Ok(key);
        }
        let key = envelope.open(identities)?;
        self.insert_fingerprint(fingerprint, key.clone());
        Ok(key)
    }

    /// Keeps the key a write sealed `envelope` with, so the first read of
    /// what was just written does not unwrap it.
    pub fn insert(&self, envelope: &Envelope, key: &PayloadKey) {
        if self.keys.is_some() {
            self.insert_fingerprint(envelope.fingerprint(), key.clone());
        }
    }

    fn insert_fingerprint(&self, fingerprint: Fingerprint, key: PayloadKey) {
        let Some(keys) = &self.keys else { return };
        // Under the lock that `forget` takes: a key forgotten meanwhile is
        // refused, and one inserted first is removed by it.
        let Ok(forgotten) = self.forgotten.lock() else {
            return;
        };
        if !forgotten.set.contains(&fingerprint) {
            keys.insert(fingerprint, key);
        }
    }

    /// Drops the keys of every segment of `manifest` (its version is gone)
    /// and refuses them for a while.
    pub fn forget(&self, manifest: &Manifest) {
        for segment in &manifest.segments {
            self.forget_envelope(&segment.envelope);
        }
    }

    /// Drops the key of one envelope and refuses it for a while.
    pub fn forget_envelope(&self, envelope: &Envelope) {
        let Some(keys) = &self.keys else { return };
        let fingerprint = envelope.fingerprint();
        let mut forgotten = match self.forgotten.lock() {
            Ok(f) => f,
            Err(poisoned) => poisoned.into_inner(),
        };
        if forgotten.set.insert(fingerprint) {
            forgotten.order.push_back(fingerprint);
            if forgotten.order.len() > FORGOTTEN
                && let Some(oldest) = forgotten.order.pop_front()
            {
                forgotten.set.remove(&oldest);
            }
        }
        keys.remove(&fingerprint);
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
    use shardgate_core::Recipients;

    fn pair() -> (Identities, Recipients) {
        let id = age::x25519::Identity::generate();
        let r = Recipients::new(vec![id.to_public()]).unwrap();
        (Identities::new(vec![id]).unwrap(), r)
    }

    #[test]
    fn a_cached_key_opens_what_the_unwrapped_one_opens() {
        let (ids, recipients) = pair();
        let (envelope, key) = Envelope::seal(&recipients).unwrap();
        let mut chunk = b"secret bytes".to_vec();
        chunk.resize(chunk.len() + shardgate_core::layout::TAG_BYTES, 0);
        key.seal_chunk(0, true, &mut chunk).unwrap();
        let cache = KeyCache::new(8);
        let first = cache.open(&envelope, &ids).unwrap();
        assert!(cache.holds(&envelope));
        let second = cache.open(&envelope, &ids).unwrap();
        for k in [first, second] {
            let mut c = chunk.clone();
            assert_eq!(k.open_chunk(0, true, &mut c).unwrap(), b"secret bytes");
        }
    }

    #[test]
    fn a_forgotten_key_is_gone_and_refused_back() {
        let (ids, recipients) = pair();
        let (envelope, key) = Envelope::seal(&recipients).unwrap();
        let cache = KeyCache::new(8);
        cache.insert(&envelope, &key);
        assert!(cache.holds(&envelope));
        cache.forget_envelope(&envelope);
        assert!(!cache.holds(&envelope));
        // A read that raced the removal: it still opens, but keeps nothing.
        cache.open(&envelope, &ids).unwrap();
        cache.insert(&envelope, &key);
        assert!(!cache.holds(&envelope));
        assert!(cache.is_empty());
    }

    #[test]
    fn the_cache_holds_at_most_its_bound() {
        let (_, recipients) = pair();
        let cache = KeyCache::new(16);
        for _ in 0..200 {
            let (envelope, key) = Envelope::seal(&recipients).unwrap();
            cache.insert(&envelope, &key);
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
        cache.insert(&envelope, &key);
        assert!(cache.open(&foreign, &ids).is_err());
        assert!(cache.open(&foreign, &other_ids).is_ok());
    }

    #[test]
    fn off_means_every_open_unwraps() {
        let (ids, recipients) = pair();
        let (envelope, key) = Envelope::seal(&recipients).unwrap();
        let cache = KeyCache::new(0);
        cache.insert(&envelope, &key);
        assert!(!cache.holds(&envelope));
        cache.open(&envelope, &ids).unwrap();
        assert!(cache.is_empty());
    }
}
