//! The S3 endpoint of shardgate.
//!
//! [`ShardgateS3`] implements the S3 operations over a node
//! ([`shardgate_node::Gateway`]: the shared state and the write and read
//! paths); s3s does the protocol (SigV4 headers and presigned URLs,
//! aws-chunked bodies, XML). [`serve`] runs the HTTP server with its
//! limits, TLS, health probes, `/metrics` and a span per request. The
//! background jobs that keep the data healthy are another crate's
//! (`shardgate-jobs`).

mod access;
mod body;
mod checksum;
mod convert;
mod cors;
mod error;
mod server;
mod service;

#[doc(hidden)]
pub mod fuzzing;

pub use server::conn::{BodyStalled, Timeouts};
pub use server::{Credentials, Limits, ServeOptions, Tls, TlsError, TlsFiles, listen, serve};
pub use service::ShardgateS3;

/// Issue 17's seam: another metadata engine stands in for redb without a
/// change here, because this crate reaches the metadata only through the
/// traits of `shardgate_meta` (`Gateway::metadata`).
#[cfg(test)]
mod metadata_seam {
    use std::path::Path;

    /// Source files under `dir`, with their text.
    fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
        let entries = std::fs::read_dir(dir).expect("the crate's sources are readable");
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("a source file reads");
                out.push((path.display().to_string(), text));
            }
        }
    }

    #[test]
    fn the_s3_layer_calls_the_metadata_only_through_its_traits() {
        let mut files = Vec::new();
        sources(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        assert!(files.len() > 10, "found only {} source files", files.len());
        // Built from pieces, so that this file does not match itself.
        let store = ["Meta", "Store"].concat();
        let forbidden = [
            store.as_str(),
            concat!(".meta", "()"),
            concat!("::meta", "("),
            concat!("blocking", "("),
        ];
        let mut found = Vec::new();
        for (path, text) in &files {
            for (n, line) in text.lines().enumerate() {
                for word in forbidden {
                    if line.contains(word) {
                        found.push(format!("{path}:{}: {}", n + 1, line.trim()));
                    }
                }
            }
        }
        assert!(
            found.is_empty(),
            "the S3 layer reaches past the metadata traits:\n{}",
            found.join("\n")
        );
    }
}
