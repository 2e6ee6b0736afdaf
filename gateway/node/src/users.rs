//! S3 users besides the configured one: created by an admin (`shardgate
//! admin user create`), each with one access key and the buckets it
//! creates. The store keeps each secret sealed to the gateway's recipients
//! ([`SealedSecret`]); the gateway opens them all once, when it starts, and
//! answers signature checks from memory (no X25519 per request).
//!
//! A user is named by what owns its buckets: its name, which never
//! changes, not its key.

use std::collections::HashMap;
use std::sync::RwLock;

use rand::Rng;
use shardgate_core::{Identities, Recipients, SealedSecret};
use shardgate_meta::{MetaStore, Metadata, UserRecord};

use crate::GatewayError;

/// A user the gateway knows: its name and access key, and the secret key
/// that signs its requests.
#[derive(Clone)]
pub struct User {
    pub name: String,
    pub access_key: String,
    pub secret_key: String,
    pub created_unix_ms: u64,
}

/// A user's canonical id, as S3 shows owners and grantees: 64 hex digits,
/// from the name and the creation time, so that a user deleted and created
/// again under the same name does not inherit the old one's grants.
pub fn canonical_id(name: &str, created_unix_ms: u64) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"shardgate user\0");
    h.update(name.as_bytes());
    h.update(&created_unix_ms.to_le_bytes());
    h.finalize().to_hex().to_string()
}

/// The canonical id of the gateway's configured key (the account's root).
pub fn admin_canonical_id(access_key: &str) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"shardgate admin\0");
    h.update(access_key.as_bytes());
    h.finalize().to_hex().to_string()
}

impl User {
    pub fn canonical_id(&self) -> String {
        canonical_id(&self.name, self.created_unix_ms)
    }
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

/// The users, by access key.
#[derive(Default)]
pub(crate) struct Users(RwLock<HashMap<String, User>>);

const KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn random_string(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

/// IAM's rule for user names: 1 to 64 of letters, digits and `+=,.@_-`.
fn check_name(name: &str) -> Result<(), GatewayError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
    match ok {
        true => Ok(()),
        false => Err(GatewayError::InvalidUser(format!(
            "user name {name:?}: 1 to 64 letters, digits and +=,.@_- only"
        ))),
    }
}

impl Users {
    /// Opens every stored user's secret. A secret the identities cannot
    /// open (the gateway's key was replaced) leaves that user out, said
    /// once in the log: its key stops working, nothing else does.
    pub(crate) fn load(meta: &MetaStore, identities: &Identities) -> Result<Self, GatewayError> {
        let users = Self(RwLock::new(HashMap::new()));
        users.refresh(meta, identities)?;
        Ok(users)
    }

    /// Reads the users again (another gateway sharing the store created or
    /// deleted some): a user gone stops signing at once; only new users'
    /// secrets are opened.
    pub(crate) fn refresh(
        &self,
        meta: &MetaStore,
        identities: &Identities,
    ) -> Result<(), GatewayError> {
        let before = self.0.read().map(|m| m.clone()).unwrap_or_default();
        let mut known = HashMap::new();
        for (access_key, record) in meta.users()? {
            if let Some(user) = before.get(&access_key)
                && user.name == record.name
                && user.created_unix_ms == record.created_unix_ms
            {
                known.insert(access_key, user.clone());
                continue;
            }
            match record
                .secret
                .open(identities)
                .map(|s| String::from_utf8(s).map_err(|e| e.to_string()))
            {
                Ok(Ok(secret_key)) => {
                    known.insert(
                        access_key.clone(),
                        User {
                            name: record.name,
                            access_key,
                            secret_key,
                            created_unix_ms: record.created_unix_ms,
                        },
                    );
                }
                Ok(Err(e)) => {
                    tracing::error!(user = %record.name, error = %e, "a user's secret is not text: the user is left out")
                }
                Err(e) => {
                    tracing::error!(user = %record.name, error = %e, "a user's secret does not open with this gateway's key: the user is left out")
                }
            }
        }
        if let Ok(mut users) = self.0.write() {
            *users = known;
        }
        Ok(())
    }

    pub(crate) fn get(&self, access_key: &str) -> Option<User> {
        self.0.read().ok()?.get(access_key).cloned()
    }

    pub(crate) fn list(&self) -> Vec<User> {
        let mut all: Vec<User> = self
            .0
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Creates a user with a fresh access key and secret (stored sealed).
    pub(crate) async fn create(
        &self,
        meta: &dyn Metadata,
        recipients: &Recipients,
        name: &str,
        now_unix_ms: u64,
    ) -> Result<User, GatewayError> {
        check_name(name)?;
        let user = User {
            name: name.to_string(),
            access_key: format!("SG{}", random_string(KEY_ALPHABET, 18)),
            secret_key: random_string(SECRET_ALPHABET, 40),
            created_unix_ms: now_unix_ms,
        };
        let record = UserRecord {
            name: user.name.clone(),
            secret: SealedSecret::seal(recipients, user.secret_key.as_bytes())?,
            created_unix_ms: now_unix_ms,
        };
        meta.create_user(&user.access_key, &record).await?;
        if let Ok(mut known) = self.0.write() {
            known.insert(user.access_key.clone(), user.clone());
        }
        Ok(user)
    }

    /// Deletes a user named by name or access key; returns its name.
    pub(crate) async fn delete(
        &self,
        meta: &dyn Metadata,
        user: &str,
    ) -> Result<String, GatewayError> {
        let record = meta.delete_user(user).await?;
        if let Ok(mut known) = self.0.write() {
            known.retain(|_, u| u.name != record.name);
        }
        Ok(record.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_iam_rules() {
        assert!(check_name("alice").is_ok());
        assert!(check_name("svc.backup@site-2").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("has space").is_err());
        assert!(check_name(&"x".repeat(65)).is_err());
    }
}
