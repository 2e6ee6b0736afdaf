//! Compiled plugins, cached on disk.
//!
//! Compiling a component with Cranelift takes from milliseconds (C) to
//! seconds (Python, JavaScript interpreters); loading the serialized
//! artifact takes well under a millisecond to tens of milliseconds. The
//! artifact is named by the blake3 of the plugin's bytes and wasmtime's
//! version, so a changed plugin or a new wasmtime never loads a stale one.

use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// The wasmtime this crate is built with (the artifact format changes
/// with it).
const WASMTIME_VERSION: &str = "48.0.8";
/// Bump when the engine configuration changes.
const ENGINE_CONFIG_VERSION: u32 = 1;

fn artifact_path(dir: &Path, bytes: &[u8]) -> PathBuf {
    let mut h = blake3::Hasher::new();
    h.update(bytes);
    h.update(WASMTIME_VERSION.as_bytes());
    h.update(&ENGINE_CONFIG_VERSION.to_le_bytes());
    dir.join(format!(
        "{}.cwasm",
        hex::encode(&h.finalize().as_bytes()[..16])
    ))
}

/// Compiles `bytes`, or loads the artifact compiled earlier. Returns the
/// component and whether it came from the cache.
pub(crate) fn load(
    engine: &Engine,
    dir: Option<&Path>,
    bytes: &[u8],
) -> Result<(Component, bool), wasmtime::Error> {
    let Some(dir) = dir else {
        return Ok((Component::new(engine, bytes)?, false));
    };
    let path = artifact_path(dir, bytes);
    if let Ok(artifact) = std::fs::read(&path) {
        // Read into memory rather than `deserialize_file`: a mapped file
        // that changes under the gateway would be a SIGBUS, a copy cannot.
        //
        // SAFETY: `deserialize` trusts its input to be an artifact that
        // wasmtime produced for a compatible engine. This file was written
        // by `store` below, from these exact bytes (its name is their hash,
        // with wasmtime's version and our engine configuration), into the
        // gateway's private data directory. wasmtime also checks the
        // artifact's header against the engine and refuses a mismatch.
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize(engine, &artifact) };
        match loaded {
            Ok(c) => return Ok((c, true)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cached plugin artifact unusable; recompiling");
            }
        }
    }
    let component = Component::new(engine, bytes)?;
    store(&path, &component);
    Ok((component, false))
}

/// Writes the artifact atomically (temp file, rename); a failure only
/// costs a recompilation next time.
fn store(path: &Path, component: &Component) {
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let bytes = component.serialize().map_err(std::io::Error::other)?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        tracing::warn!(path = %path.display(), error = %e, "could not cache the compiled plugin");
    }
}
