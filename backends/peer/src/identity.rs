//! A node's ed25519 identity: created on first start (mode 0600), reused
//! after. Its PeerId is what allowlists and the gateway's configuration
//! name, so losing the file means re-registering the node.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use libp2p::identity::Keypair;

use crate::PeerError;

/// Loads the identity at `path`, creating it when there is none. A file
/// that its group or others can read is refused, as for every secret.
pub fn load_or_create(path: &Path) -> Result<Keypair, PeerError> {
    let fail = |reason: String| PeerError::Identity {
        path: path.to_path_buf(),
        reason,
    };
    match fs::read(path) {
        Ok(bytes) => {
            let mode = fs::metadata(path)
                .map_err(|e| fail(e.to_string()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(fail(format!(
                    "mode {:o} lets others read the key; chmod 600 it",
                    mode & 0o777
                )));
            }
            Keypair::from_protobuf_encoding(&bytes)
                .map_err(|e| fail(format!("not a libp2p key: {e}")))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
            }
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .map_err(|e| fail(e.to_string()))?;
            let tmp = path.with_extension("tmp");
            let _ = fs::remove_file(&tmp);
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| fail(e.to_string()))?;
            f.write_all(&bytes).map_err(|e| fail(e.to_string()))?;
            f.sync_all().map_err(|e| fail(e.to_string()))?;
            // A second process racing us keeps the first key written.
            fs::hard_link(&tmp, path)
                .or_else(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => Ok(()),
                    _ => Err(e),
                })
                .map_err(|e| fail(e.to_string()))?;
            let _ = fs::remove_file(&tmp);
            load_or_create(path)
        }
        Err(e) => Err(fail(e.to_string())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reused_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/peer.key");
        let a = load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = load_or_create(&path).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
    }

    #[test]
    fn a_readable_or_garbled_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peer.key");
        load_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, b"garbage").unwrap();
        let err = load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("not a libp2p key"), "{err}");
    }
}
