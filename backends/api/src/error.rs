//! Backend errors: semantic variants that the pipeline branches on
//! (object_store's model), each naming the backend.

use std::io;

use shardgate_core::{BackendId, BlobName};

/// What went wrong on one backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// No committed blob has this name.
    #[error("{backend}: blob {blob} not found")]
    NotFound { backend: BackendId, blob: BlobName },

    /// A committed blob already has this name; blobs are never overwritten.
    #[error("{backend}: blob {blob} already exists")]
    AlreadyExists { backend: BackendId, blob: BlobName },

    /// The byte range is not inside the blob.
    #[error("{backend}: range {start}..{end} is outside blob {blob} of {size} bytes")]
    InvalidRange {
        backend: BackendId,
        blob: BlobName,
        start: u64,
        end: u64,
        size: u64,
    },

    /// The backend is out of space (or over its configured capacity).
    #[error("{backend}: no space left")]
    NoSpace { backend: BackendId },

    /// The backend refuses writes (read-only file system, permissions).
    #[error("{backend}: not writable: {reason}")]
    NotWritable { backend: BackendId, reason: String },

    /// A transient failure: timeout, unreachable, injected fault. Retrying
    /// later or elsewhere may succeed.
    #[error("{backend}: unavailable: {reason}")]
    Unavailable { backend: BackendId, reason: String },

    /// Any other I/O failure.
    #[error("{backend}: {op}: {source}")]
    Io {
        backend: BackendId,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

impl BackendError {
    /// Classifies an I/O error from operation `op` on `backend`.
    pub fn from_io(backend: &BackendId, op: &'static str, source: io::Error) -> Self {
        let backend = backend.clone();
        match source.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Self::NoSpace { backend },
            io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied => {
                Self::NotWritable {
                    backend,
                    reason: format!("{op}: {source}"),
                }
            }
            _ => Self::Io {
                backend,
                op,
                source,
            },
        }
    }

    /// True when the blob does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

/// Result alias of the backend layer.
pub type Result<T, E = BackendError> = std::result::Result<T, E>;
